//! Length-prefixed JSON frames: a big-endian `u32` byte count, then that many
//! bytes of one JSON value.
//!
//! The blocking [`read_frame`]/[`write_frame`] work over any `std::io` stream
//! (`sfuctl` is synchronous); an async caller reads the 4-byte header itself
//! and uses [`body_len`], [`decode`] and [`encode`].

use std::fmt;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame body either side sends or accepts.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Bytes of the length header.
pub const HEADER_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug)]
pub enum FrameError {
    /// The stream ended cleanly before the first byte of a frame.
    Closed,
    /// The header announces more than [`MAX_FRAME_BYTES`].
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The body is not the expected JSON; the stream is still in sync.
    Json(serde_json::Error),
    /// Reading or writing failed, or the stream ended inside a frame.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection was closed"),
            Self::TooLarge { len } => write!(
                f,
                "frame of {len} bytes is larger than the limit of {MAX_FRAME_BYTES} bytes"
            ),
            Self::Json(_) => f.write_str("frame is not a valid message"),
            Self::Io(_) => f.write_str("cannot read or write a frame"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Json(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Closed | Self::TooLarge { .. } => None,
        }
    }
}

/// The body length announced by a header, checked against [`MAX_FRAME_BYTES`].
pub fn body_len(header: [u8; HEADER_BYTES]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Parses a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Json)
}

/// Header and body of `message`, ready to write.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut bytes = vec![0; HEADER_BYTES];
    serde_json::to_writer(&mut bytes, message).map_err(FrameError::Json)?;
    let len = bytes.len() - HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    // The length fits: MAX_FRAME_BYTES is far below u32::MAX.
    bytes[..HEADER_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(bytes)
}

/// Writes `message` as one frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, message: &T) -> Result<(), FrameError> {
    let bytes = encode(message)?;
    w.write_all(&bytes).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame and parses it. A [`FrameError::Json`] leaves the stream
/// at the next frame; after any other error the stream is unusable.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = body_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(FrameError::Io)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::control::{ErrorCode, Request, Response};

    #[test]
    fn a_frame_is_a_big_endian_length_and_json() {
        let bytes = encode(&Request::Status).expect("encodes");
        let body = br#"{"type":"status"}"#;
        assert_eq!(&bytes[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..], body);
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut stream = Vec::new();
        write_frame(&mut stream, &Request::Status).expect("writes");
        write_frame(
            &mut stream,
            &Request::RoomsShow {
                room: "é 🎥".into(),
            },
        )
        .expect("writes");
        let mut cursor = Cursor::new(stream);
        let first: Request = read_frame(&mut cursor).expect("first");
        let second: Request = read_frame(&mut cursor).expect("second");
        assert_eq!(first, Request::Status);
        assert_eq!(
            second,
            Request::RoomsShow {
                room: "é 🎥".into()
            }
        );
        assert!(matches!(
            read_frame::<_, Request>(&mut cursor),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        let header = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(
            body_len(header),
            Err(FrameError::TooLarge { len }) if len == MAX_FRAME_BYTES + 1
        ));
        assert_eq!(
            body_len((MAX_FRAME_BYTES as u32).to_be_bytes()).ok(),
            Some(MAX_FRAME_BYTES)
        );
        // Text where a header belongs reads as a huge length.
        let mut cursor = Cursor::new(b"hello daemon\n".to_vec());
        let error = read_frame::<_, Request>(&mut cursor).expect_err("too large");
        assert!(matches!(error, FrameError::TooLarge { .. }));
        assert!(
            error.to_string().contains("larger than the limit"),
            "{error}"
        );
    }

    #[test]
    fn oversized_message_is_not_written() {
        let huge = Request::RoomsShow {
            room: "x".repeat(MAX_FRAME_BYTES),
        };
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge { .. })));
        let mut sink = Vec::new();
        assert!(write_frame(&mut sink, &huge).is_err());
        assert!(sink.is_empty());
    }

    #[test]
    fn bad_json_leaves_the_stream_in_sync() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&5u32.to_be_bytes());
        stream.extend_from_slice(b"{oops");
        stream.extend_from_slice(&9u32.to_be_bytes());
        stream.extend_from_slice(br#"{"a":"b"}"#);
        write_frame(&mut stream, &Request::Reload).expect("writes");
        let mut cursor = Cursor::new(stream);
        assert!(matches!(
            read_frame::<_, Request>(&mut cursor),
            Err(FrameError::Json(_))
        ));
        // Valid JSON but not a request.
        assert!(matches!(
            read_frame::<_, Request>(&mut cursor),
            Err(FrameError::Json(_))
        ));
        assert_eq!(
            read_frame::<_, Request>(&mut cursor).expect("in sync"),
            Request::Reload
        );
    }

    #[test]
    fn truncated_frames_are_io_errors() {
        let bytes = encode(&Response::Error(crate::control::ControlError::new(
            ErrorCode::Internal,
            "m",
        )))
        .expect("encodes");
        for cut in [2, 4, bytes.len() - 1] {
            let mut cursor = Cursor::new(bytes[..cut].to_vec());
            assert!(
                matches!(
                    read_frame::<_, Response>(&mut cursor),
                    Err(FrameError::Io(_))
                ),
                "cut at {cut}"
            );
        }
    }
}
