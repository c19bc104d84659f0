//! Key frame detection from RTP payloads, per codec.
//!
//! A subscriber leg may only start forwarding a layer, or switch to another
//! one, at a key frame: a decoder cannot start in the middle of a group of
//! pictures. Detection reads only the first bytes of the payload format's
//! descriptor, never allocates, and treats anything short or malformed as
//! "not a key frame" (a missed key frame only delays a switch; a false one
//! would hand the decoder a stream it cannot decode).

use super::vp8::Vp8Descriptor;

/// Codecs the switcher understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    /// VP8 (RFC 7741); the only codec whose descriptors are rewritten.
    Vp8,
    /// VP9 (draft-ietf-payload-vp9).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// AV1 (the AOM RTP payload format).
    Av1,
    /// Anything else: never a key frame, so a leg never starts on it.
    Other,
}

impl VideoCodec {
    /// The codec of a MIME type as negotiated (`video/VP8`), case-insensitive.
    /// A bare encoding name (`VP8`) is accepted too; other media types are
    /// [`VideoCodec::Other`].
    pub(crate) fn from_mime(mime: &str) -> Self {
        let name = match mime.split_once('/') {
            Some((kind, name)) if kind.eq_ignore_ascii_case("video") => name,
            Some(_) => return VideoCodec::Other,
            None => mime,
        };
        if name.eq_ignore_ascii_case("vp8") {
            VideoCodec::Vp8
        } else if name.eq_ignore_ascii_case("vp9") {
            VideoCodec::Vp9
        } else if name.eq_ignore_ascii_case("h264") {
            VideoCodec::H264
        } else if name.eq_ignore_ascii_case("av1") {
            VideoCodec::Av1
        } else {
            VideoCodec::Other
        }
    }
}

/// Whether an RTP payload starts a keyframe (the first packet of a key frame).
pub(crate) fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => {
            Vp8Descriptor::parse(payload).is_some_and(|d| d.starts_key_frame(payload))
        }
        VideoCodec::Vp9 => vp9_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe_start(payload),
        // N: the packet starts a new coded video sequence, which begins
        // with a key frame.
        VideoCodec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        VideoCodec::Other => false,
    }
}

/// H.264 NAL unit types that begin a decodable picture: IDR slice, SPS
/// (encoders send SPS/PPS right before an IDR).
fn h264_key_nal(nal_header: u8) -> bool {
    matches!(nal_header & 0x1f, 5 | 7)
}

/// RFC 6184: a single NAL unit, an STAP-A holding a key NAL, or the first
/// fragment (FU-A) of one.
fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        1..=23 => h264_key_nal(header),
        24 => stap_a_find(&payload[1..], |nal| h264_key_nal(nal[0])).is_some(),
        // FU-A: the FU header's S bit marks the first fragment.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && h264_key_nal(*fu)),
        _ => false,
    }
}

/// The first NAL unit of an STAP-A (RFC 6184 5.7.1: 16-bit size, NAL unit,
/// and so on, after the header byte) that `wanted` accepts; `None` when
/// none does or a size is 0 or runs past the end (malformed: stop trusting
/// it). `wanted` is only given non-empty units.
pub(super) fn stap_a_find(mut rest: &[u8], wanted: impl Fn(&[u8]) -> bool) -> Option<&[u8]> {
    while let [hi, lo, tail @ ..] = rest {
        let size = usize::from(u16::from_be_bytes([*hi, *lo]));
        if size == 0 || size > tail.len() {
            return None;
        }
        let (nal, next) = tail.split_at(size);
        if wanted(nal) {
            return Some(nal);
        }
        rest = next;
    }
    None
}

/// VP9 payload descriptor: B (start of a frame) set and P (inter-picture
/// predicted) clear; with layer indices, only spatial layer 0 starts the
/// picture a decoder can begin with.
fn vp9_keyframe_start(payload: &[u8]) -> bool {
    const I: u8 = 0x80;
    const P: u8 = 0x40;
    const L: u8 = 0x20;
    const B: u8 = 0x08;
    let Some(&first) = payload.first() else {
        return false;
    };
    if first & B == 0 || first & P != 0 {
        return false;
    }
    let mut at = 1;
    if first & I != 0 {
        // M: a 15-bit picture id in two bytes, else 7 bits in one.
        match payload.get(1) {
            Some(pid) if pid & 0x80 != 0 => at += 2,
            Some(_) => at += 1,
            None => return false,
        }
    }
    if first & L != 0 {
        // TID(3) U(1) SID(3) D(1).
        return payload.get(at).is_some_and(|b| (b >> 1) & 0x07 == 0);
    }
    // Without layer indices the picture id, if any, must still be complete.
    payload.len() >= at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_from_mime_is_case_insensitive() {
        assert_eq!(VideoCodec::from_mime("video/VP8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("Video/vp9"), VideoCodec::Vp9);
        assert_eq!(VideoCodec::from_mime("video/h264"), VideoCodec::H264);
        assert_eq!(VideoCodec::from_mime("VIDEO/AV1"), VideoCodec::Av1);
        assert_eq!(VideoCodec::from_mime("vp8"), VideoCodec::Vp8);
        assert_eq!(VideoCodec::from_mime("video/H265"), VideoCodec::Other);
        assert_eq!(VideoCodec::from_mime("audio/VP8"), VideoCodec::Other);
        assert_eq!(VideoCodec::from_mime(""), VideoCodec::Other);
    }

    #[test]
    fn vp8_key_frames() {
        let vp8 = |p: &[u8]| is_keyframe_start(VideoCodec::Vp8, p);
        // Minimal descriptor with S, then a key frame header (P = 0).
        assert!(vp8(&[0x10, 0x50, 0x01, 0x00]));
        // With a 15-bit picture id, TL0PICIDX and TID byte.
        assert!(vp8(&[0x90, 0xe0, 0x80, 0x01, 0x02, 0x20, 0x9c]));
        // Inter frame (P = 1), no S, another partition.
        assert!(!vp8(&[0x10, 0x51]));
        assert!(!vp8(&[0x00, 0x50]));
        assert!(!vp8(&[0x11, 0x50]));
        // Truncated: no VP8 header, or the extension cut short.
        assert!(!vp8(&[]));
        assert!(!vp8(&[0x10]));
        assert!(!vp8(&[0x90, 0xe0, 0x80, 0x01, 0x02, 0x20]));
        assert!(!vp8(&[0x90, 0x80, 0x80]));
    }

    #[test]
    fn h264_key_frames() {
        let h264 = |p: &[u8]| is_keyframe_start(VideoCodec::H264, p);
        assert!(h264(&[0x65, 0x88]), "IDR");
        assert!(h264(&[0x67, 0x42]), "SPS");
        assert!(!h264(&[0x68, 0xce]), "PPS alone");
        assert!(!h264(&[0x41, 0x9a]), "non-IDR slice");
        // STAP-A with SPS and PPS, then one with only a non-IDR slice.
        assert!(h264(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]));
        assert!(
            h264(&[0x78, 0x00, 0x01, 0x06, 0x00, 0x01, 0x65]),
            "IDR second"
        );
        assert!(!h264(&[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // STAP-A truncated, with a size past the end, or a zero size.
        assert!(!h264(&[0x78]));
        assert!(!h264(&[0x78, 0x00]));
        assert!(!h264(&[0x78, 0x00, 0x05, 0x67]));
        assert!(!h264(&[0x78, 0x00, 0x00, 0x67]));
        assert!(!h264(&[0x78, 0x00, 0x01, 0x06, 0xff, 0xff, 0x65]));
        // FU-A: start of an IDR, middle of an IDR, start of a P slice.
        assert!(h264(&[0x7c, 0x85, 0x88]));
        assert!(!h264(&[0x7c, 0x05, 0x88]));
        assert!(!h264(&[0x7c, 0x81, 0x88]));
        assert!(!h264(&[0x7c]));
        assert!(!h264(&[]));
        // STAP-B, MTAP, reserved types.
        assert!(!h264(&[0x79, 0x00, 0x00, 0x00, 0x02, 0x65, 0x00]));
        assert!(!h264(&[0x7f, 0x65]));
    }

    #[test]
    fn vp9_key_frames() {
        let vp9 = |p: &[u8]| is_keyframe_start(VideoCodec::Vp9, p);
        // B, no P; with a 15-bit picture id (I, M).
        assert!(vp9(&[0x08, 0x00]));
        assert!(vp9(&[0x88, 0x80, 0x01, 0x00]));
        assert!(vp9(&[0x8c, 0x12, 0x00]), "7-bit id, B and E");
        // With layer indices: spatial layer 0 only.
        assert!(vp9(&[0xa8, 0x80, 0x01, 0x00, 0x00]));
        assert!(!vp9(&[0xa8, 0x80, 0x01, 0x02, 0x00]), "spatial layer 1");
        // Predicted, or not the start of a frame.
        assert!(!vp9(&[0x48, 0x00]));
        assert!(!vp9(&[0x80, 0x05, 0x00]));
        // Truncated picture id or layer byte.
        assert!(!vp9(&[]));
        assert!(!vp9(&[0x88]));
        assert!(!vp9(&[0x88, 0x80]));
        assert!(!vp9(&[0xa8, 0x05]));
    }

    #[test]
    fn av1_new_coded_video_sequence() {
        let av1 = |p: &[u8]| is_keyframe_start(VideoCodec::Av1, p);
        assert!(av1(&[0x18, 0x0a]), "N with W = 1");
        assert!(av1(&[0x08]));
        assert!(!av1(&[0x10, 0x32]));
        assert!(!av1(&[0xc0, 0x08]), "continuation, N clear");
        assert!(!av1(&[]));
    }

    #[test]
    fn other_codecs_never_key() {
        assert!(!is_keyframe_start(VideoCodec::Other, &[0x10, 0x00]));
        assert!(!is_keyframe_start(VideoCodec::Other, &[]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9u32;
        let mut buf = [0u8; 12];
        let mut keys = [0usize; 5];
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 13) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = seed.rotate_left(i as u32 * 3) as u8 ^ i as u8;
            }
            let codecs = [
                VideoCodec::Vp8,
                VideoCodec::Vp9,
                VideoCodec::H264,
                VideoCodec::Av1,
                VideoCodec::Other,
            ];
            for (n, codec) in codecs.into_iter().enumerate() {
                keys[n] += usize::from(is_keyframe_start(codec, &buf[..len]));
            }
        }
        // Random bytes are sometimes, not always, key frame starts.
        assert!(keys[..4].iter().all(|&k| k > 0 && k < 50_000), "{keys:?}");
        assert_eq!(keys[4], 0);
    }
}
