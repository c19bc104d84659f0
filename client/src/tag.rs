//! The synthetic media payloads: a codec-shaped header followed by a tag that
//! lets a receiver count loss, duplicates and reordering end to end and
//! measure one-way latency (sender and receiver share the machine's clock).

use bytes::{BufMut, Bytes, BytesMut};
use std::time::{SystemTime, UNIX_EPOCH};

/// Marks the start of a [`MediaTag`] inside a payload.
pub const TAG_MAGIC: [u8; 4] = *b"SFUt";
/// Encoded size of a [`MediaTag`], magic included.
pub const TAG_LEN: usize = 20;
/// How far into a payload a receiver looks for the tag: past any codec header.
const TAG_SEARCH_LIMIT: usize = 64;

/// Width and height announced by keyframe-shaped VP8 payloads.
pub const VP8_PICTURE: (u16, u16) = (640, 480);

/// What a publisher writes into every payload it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaTag {
    /// Publisher-local sequence number, counted per stream from 0.
    pub seq: u32,
    /// Send time in nanoseconds since the UNIX epoch.
    pub sent_at_ns: u64,
    /// [`stream_hash`] of the publisher and media kind.
    pub stream_hash: u32,
}

impl MediaTag {
    /// Appends the 20-byte encoding to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_slice(&TAG_MAGIC);
        out.put_u32(self.seq);
        out.put_u64(self.sent_at_ns);
        out.put_u32(self.stream_hash);
    }

    /// Decodes a tag that starts exactly at `bytes[0]`.
    pub fn decode(bytes: &[u8]) -> Option<MediaTag> {
        let tag = bytes.get(..TAG_LEN)?;
        if tag[..4] != TAG_MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([tag[i], tag[i + 1], tag[i + 2], tag[i + 3]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&tag[8..16]);
        Some(MediaTag {
            seq: u32_at(4),
            sent_at_ns: u64::from_be_bytes(ns),
            stream_hash: u32_at(16),
        })
    }

    /// Finds and decodes the tag in an RTP payload, skipping whatever codec
    /// header precedes it (the receiver need not know the codec).
    pub fn find(payload: &[u8]) -> Option<MediaTag> {
        let window = &payload[..payload.len().min(TAG_SEARCH_LIMIT + TAG_LEN)];
        let start = window
            .windows(TAG_MAGIC.len())
            .position(|w| w == TAG_MAGIC)?;
        MediaTag::decode(&payload[start..])
    }
}

/// Nanoseconds since the UNIX epoch now (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Identifies a publisher's stream inside tags: FNV-1a of `"{peer_id}/{kind}"`.
///
/// A receiver recomputes it from the track's msid (the publisher's peer id)
/// and kind, so a packet forwarded on the wrong track is detected.
pub fn stream_hash(peer_id: &str, kind: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in peer_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(kind.bytes())
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Identifies one simulcast layer of a publisher's video inside tags:
/// [`stream_hash`] of `"{peer_id}/{kind}/{rid}"`, so a receiver tells the
/// layers the server switches between apart and counts each on its own.
pub fn layer_stream_hash(peer_id: &str, kind: &str, rid: &str) -> u32 {
    stream_hash(peer_id, &format!("{kind}/{rid}"))
}

/// Position of a packet inside a video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition {
    /// First packet of the frame (carries the VP8 payload header).
    pub first: bool,
    /// The frame is a keyframe.
    pub keyframe: bool,
}

/// A VP8 RTP payload (RFC 7741) of `size` bytes carrying `tag`.
///
/// The first packet of a frame has the S bit and a VP8 frame header; a
/// keyframe's header also has the start code and dimensions, so depacketizers
/// and keyframe detectors treat it like the real thing.
pub fn vp8_payload(position: FramePosition, tag: &MediaTag, size: usize) -> Bytes {
    vp8_payload_sized(position, tag, size, VP8_PICTURE)
}

/// [`vp8_payload`] whose keyframes announce `(width, height)` (simulcast
/// layers differ in size, as a real encoder's do).
pub fn vp8_payload_sized(
    position: FramePosition,
    tag: &MediaTag,
    size: usize,
    (width, height): (u16, u16),
) -> Bytes {
    let mut out = BytesMut::with_capacity(size.max(32));
    if position.first {
        // Payload descriptor: X=0, N=0, S=1, PID=0.
        out.put_u8(0x10);
        // Frame tag: P (bit 0) is 0 for a keyframe; show_frame (bit 4) set;
        // version 0; first partition size left 0.
        out.put_u8(if position.keyframe { 0x10 } else { 0x11 });
        out.put_u8(0);
        out.put_u8(0);
        if position.keyframe {
            out.put_slice(&[0x9d, 0x01, 0x2a]);
            out.put_u16_le(width);
            out.put_u16_le(height);
        }
    } else {
        out.put_u8(0x00);
    }
    tag.encode_into(&mut out);
    pad_to(&mut out, size);
    out.freeze()
}

/// An Opus-looking RTP payload of `size` bytes carrying `tag`.
pub fn opus_payload(tag: &MediaTag, size: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(size.max(32));
    // TOC: config 31 (CELT fullband 20 ms), stereo, one frame.
    out.put_u8(0xfc);
    tag.encode_into(&mut out);
    pad_to(&mut out, size);
    out.freeze()
}

fn pad_to(out: &mut BytesMut, size: usize) {
    if out.len() < size {
        out.resize(size, 0);
    }
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741 section 4).
pub fn is_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(i) else {
            return false;
        };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits, M flags the long form.
            let Some(&pid) = payload.get(i) else {
                return false;
            };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    payload
        .get(i)
        .is_some_and(|frame_tag| frame_tag & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: u32) -> MediaTag {
        MediaTag {
            seq,
            sent_at_ns: 1_700_000_000_123_456_789,
            stream_hash: stream_hash("peer-1", "video"),
        }
    }

    #[test]
    fn tag_round_trips() {
        let mut buf = BytesMut::new();
        tag(42).encode_into(&mut buf);
        assert_eq!(buf.len(), TAG_LEN);
        assert_eq!(MediaTag::decode(&buf), Some(tag(42)));
    }

    #[test]
    fn decode_rejects_short_or_unmarked_input() {
        let mut buf = BytesMut::new();
        tag(1).encode_into(&mut buf);
        assert_eq!(MediaTag::decode(&buf[..TAG_LEN - 1]), None);
        buf[0] = b'x';
        assert_eq!(MediaTag::decode(&buf), None);
        assert_eq!(MediaTag::find(&[]), None);
    }

    #[test]
    fn tag_is_found_behind_every_codec_header() {
        let first_key = FramePosition {
            first: true,
            keyframe: true,
        };
        let first_delta = FramePosition {
            first: true,
            keyframe: false,
        };
        let middle = FramePosition {
            first: false,
            keyframe: true,
        };
        for pos in [first_key, first_delta, middle] {
            let payload = vp8_payload(pos, &tag(7), 1100);
            assert_eq!(payload.len(), 1100);
            assert_eq!(MediaTag::find(&payload), Some(tag(7)), "{pos:?}");
        }
        let payload = opus_payload(&tag(9), 160);
        assert_eq!(payload.len(), 160);
        assert_eq!(MediaTag::find(&payload), Some(tag(9)));
    }

    #[test]
    fn payload_is_never_shorter_than_its_headers() {
        let payload = vp8_payload(
            FramePosition {
                first: true,
                keyframe: true,
            },
            &tag(1),
            0,
        );
        assert_eq!(payload.len(), 11 + TAG_LEN);
        assert_eq!(MediaTag::find(&payload), Some(tag(1)));
    }

    #[test]
    fn vp8_keyframes_are_recognised() {
        let key = vp8_payload(
            FramePosition {
                first: true,
                keyframe: true,
            },
            &tag(1),
            100,
        );
        let delta = vp8_payload(
            FramePosition {
                first: true,
                keyframe: false,
            },
            &tag(2),
            100,
        );
        let middle = vp8_payload(
            FramePosition {
                first: false,
                keyframe: true,
            },
            &tag(3),
            100,
        );
        assert!(is_vp8_keyframe(&key));
        assert!(!is_vp8_keyframe(&delta));
        assert!(!is_vp8_keyframe(&middle));
        // A browser-style descriptor with a 15-bit PictureID, TL0PICIDX and KEYIDX.
        assert!(is_vp8_keyframe(&[0x90, 0xd0, 0x81, 0x23, 0x05, 0x10, 0x10]));
        assert!(!is_vp8_keyframe(&[
            0x90, 0xd0, 0x81, 0x23, 0x05, 0x10, 0x11
        ]));
        assert!(!is_vp8_keyframe(&[0x90, 0x80]));
    }

    #[test]
    fn stream_hash_separates_publishers_and_kinds() {
        assert_eq!(stream_hash("a", "video"), stream_hash("a", "video"));
        assert_ne!(stream_hash("a", "video"), stream_hash("a", "audio"));
        assert_ne!(stream_hash("a", "video"), stream_hash("b", "video"));
    }

    #[test]
    fn layer_hashes_differ_from_each_other_and_the_whole_track() {
        let q = layer_stream_hash("a", "video", "q");
        let h = layer_stream_hash("a", "video", "h");
        assert_ne!(q, h);
        assert_ne!(q, stream_hash("a", "video"));
        assert_ne!(q, layer_stream_hash("b", "video", "q"));
    }

    #[test]
    fn sized_keyframes_announce_their_size() {
        let key = FramePosition {
            first: true,
            keyframe: true,
        };
        let payload = vp8_payload_sized(key, &tag(1), 100, (320, 240));
        // Descriptor, frame tag (3), start code (3), then width and height.
        assert_eq!(&payload[7..11], &[0x40, 0x01, 0xf0, 0x00]);
        assert!(is_vp8_keyframe(&payload));
        assert_eq!(
            vp8_payload(key, &tag(1), 100),
            vp8_payload_sized(key, &tag(1), 100, VP8_PICTURE)
        );
    }
}
