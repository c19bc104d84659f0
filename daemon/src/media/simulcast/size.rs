//! The picture size a key frame announces, per codec: what a subscriber's
//! "no bigger than my tile" (`track_settings`) is compared with.
//!
//! Read from the first packet of a key frame only (a few times a second at
//! most), without allocating; anything short, malformed or not understood
//! is `None`, and the layer's size stays unknown.

use super::keyframe::{stap_a_find, VideoCodec};
use super::vp8::Vp8Descriptor;

/// Width and height in pixels the key frame starting with `payload` has.
pub(crate) fn frame_size(codec: VideoCodec, payload: &[u8]) -> Option<(u32, u32)> {
    match codec {
        VideoCodec::Vp8 => {
            let d = Vp8Descriptor::parse(payload)?;
            vp8_key_frame_size(payload.get(d.payload_offset()..)?)
        }
        VideoCodec::Vp9 => vp9_scalability_size(payload),
        VideoCodec::H264 => h264_size(payload),
        VideoCodec::Av1 | VideoCodec::Other => None,
    }
}

/// RFC 6386 9.1: a 3-byte frame tag, the start code, then 14-bit width and
/// height (little endian, the top two bits are scaling).
fn vp8_key_frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    let [tag, _, _, 0x9d, 0x01, 0x2a, w0, w1, h0, h1, ..] = *frame else {
        return None;
    };
    if tag & 0x01 != 0 {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([w0, w1]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h0, h1]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

/// VP9 payload descriptor: the scalability structure (V) that browsers send
/// with key frames lists each spatial layer's size (Y); the largest is the
/// picture's.
fn vp9_scalability_size(payload: &[u8]) -> Option<(u32, u32)> {
    const I: u8 = 0x80;
    const P: u8 = 0x40;
    const L: u8 = 0x20;
    const F: u8 = 0x10;
    const V: u8 = 0x02;
    let first = *payload.first()?;
    if first & V == 0 {
        return None;
    }
    let mut at = 1;
    if first & I != 0 {
        at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    if first & L != 0 {
        // Layer indices, and TL0PICIDX in non-flexible mode.
        at += if first & F == 0 { 2 } else { 1 };
    }
    if first & (F | P) == F | P {
        // Reference indices: one byte each while N is set, three at most.
        for _ in 0..3 {
            let b = *payload.get(at)?;
            at += 1;
            if b & 0x01 == 0 {
                break;
            }
        }
    }
    let ss = *payload.get(at)?;
    at += 1;
    if ss & 0x10 == 0 {
        return None;
    }
    let layers = usize::from(ss >> 5) + 1;
    let mut best = None;
    for _ in 0..layers {
        let b = payload.get(at..at + 4)?;
        at += 4;
        let size = (
            u32::from(u16::from_be_bytes([b[0], b[1]])),
            u32::from(u16::from_be_bytes([b[2], b[3]])),
        );
        if size.0 > 0 && size.1 > 0 && best.is_none_or(|(w, _)| size.0 > w) {
            best = Some(size);
        }
    }
    best
}

/// The size in the SPS a key frame's first packet carries (RFC 6184: a
/// single NAL unit or an STAP-A; encoders send SPS and PPS before an IDR).
fn h264_size(payload: &[u8]) -> Option<(u32, u32)> {
    let header = *payload.first()?;
    match header & 0x1f {
        7 => sps_size(&payload[1..]),
        24 => {
            stap_a_find(&payload[1..], |nal| nal[0] & 0x1f == 7).and_then(|sps| sps_size(&sps[1..]))
        }
        _ => None,
    }
}

/// Reads an SPS's RBSP (emulation prevention removed, at most 64 bytes:
/// the fields up to the cropping window fit in far fewer).
fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let mut rbsp = [0u8; 64];
    let mut len = 0;
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if len == rbsp.len() {
            break;
        }
        rbsp[len] = b;
        len += 1;
    }
    let mut r = Bits {
        data: &rbsp[..len],
        at: 0,
    };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            separate_planes = r.bits(1)? == 1;
        }
        r.ue()?; // bit depths
        r.ue()?;
        r.bits(1)?; // qpprime_y_zero_transform_bypass
        if r.bits(1)? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    r.skip_scaling_list(if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_allowed
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?;
    }
    r.bits(1)?; // direct_8x8_inference
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bits(1)? == 1 {
        (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let field_factor = 2 - frame_mbs_only;
    let (crop_x, crop_y) = match (chroma_format, separate_planes) {
        (1, false) => (2, 2 * field_factor),
        (2, false) => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = (width_mbs * 16).checked_sub(crop_x * (left + right))?;
    let height = (field_factor * height_units * 16).checked_sub(crop_y * (top + bottom))?;
    (width > 0 && height > 0 && width <= 16_384 && height <= 16_384).then_some((width, height))
}

/// A big-endian bit reader with Exp-Golomb codes (H.264 9.1).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// H.264 7.3.2.1.1.1.
    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let (mut last, mut next) = (8i64, 8i64);
        for _ in 0..size {
            if next != 0 {
                next = (last + self.se()? + 256) % 256;
            }
            if next != 0 {
                last = next;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn vp8_key_frames_carry_their_size() {
        // Descriptor with a 15-bit picture id, then a key frame header for 640x360.
        let payload = [
            0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
            0x00,
        ];
        assert_eq!(frame_size(VideoCodec::Vp8, &payload), Some((640, 360)));
        // An inter frame has no size.
        let mut inter = payload;
        inter[4] |= 0x01;
        assert_eq!(frame_size(VideoCodec::Vp8, &inter), None);
        assert_eq!(frame_size(VideoCodec::Vp8, &payload[..8]), None);
    }

    #[test]
    fn h264_sizes_come_from_the_sps_alone_or_in_an_stap_a() {
        // openh264's SPS for 640x360 (cropped from 23 macroblock rows) and 1280x720.
        let sps_360 = hex("6742c01e8c8d405017fcb00f08846a");
        let sps_720 = hex("6742c01f8c8d402802dd00f08846a0");
        assert_eq!(frame_size(VideoCodec::H264, &sps_360), Some((640, 360)));
        assert_eq!(frame_size(VideoCodec::H264, &sps_720), Some((1280, 720)));
        let mut stap = vec![0x18, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80];
        stap.extend_from_slice(&(sps_720.len() as u16).to_be_bytes());
        stap.extend_from_slice(&sps_720);
        assert_eq!(frame_size(VideoCodec::H264, &stap), Some((1280, 720)));
        // An IDR slice alone, a truncated SPS, an STAP-A that lies about sizes.
        assert_eq!(frame_size(VideoCodec::H264, &[0x65, 0x88, 0x84]), None);
        assert_eq!(frame_size(VideoCodec::H264, &sps_720[..6]), None);
        assert_eq!(
            frame_size(VideoCodec::H264, &[0x18, 0x00, 0x40, 0x67]),
            None
        );
    }

    /// Writes Exp-Golomb fields, for SPSs no encoder here produces.
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let x = v + 1;
            let len = 32 - x.leading_zeros();
            self.u(len - 1, 0).u(len, x)
        }
        fn bytes(&self) -> Vec<u8> {
            self.bits
                .chunks(8)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0u8, |b, (i, bit)| b | (u8::from(*bit) << (7 - i)))
                })
                .collect()
        }
    }

    #[test]
    fn high_profile_sps_with_scaling_lists_and_cropping() {
        let mut w = Writer::default();
        w.u(8, 0x67).u(8, 100).u(16, 0x001f).ue(0); // High profile
        w.ue(1).ue(0).ue(0).u(1, 0); // 4:2:0, 8 bit
        w.u(1, 1); // scaling matrix present
        w.u(1, 1); // the first list, all deltas 0 but one: -8 ends it (next = 0)
        w.ue(16); // se(-8)
        for _ in 1..8 {
            w.u(1, 0);
        }
        w.ue(0).ue(2); // frame_num bits, POC type 2
        w.ue(1).u(1, 0); // refs, gaps
        w.ue(119).ue(67); // 120 x 68 macroblocks
        w.u(1, 1).u(1, 1); // frame_mbs_only, direct_8x8
        w.u(1, 1).ue(0).ue(0).ue(0).ue(4); // crop 8 rows: 1920x1080
        w.u(1, 1);
        assert_eq!(frame_size(VideoCodec::H264, &w.bytes()), Some((1920, 1080)));
    }

    #[test]
    fn vp9_sizes_come_from_the_scalability_structure() {
        // I with a 15-bit picture id, V; SS: one spatial layer with Y, 1280x720, no G.
        let payload = [0x8a, 0x80, 0x01, 0x10, 0x05, 0x00, 0x02, 0xd0, 0x00];
        assert_eq!(frame_size(VideoCodec::Vp9, &payload), Some((1280, 720)));
        assert_eq!(frame_size(VideoCodec::Vp9, &payload[..6]), None);
        assert_eq!(frame_size(VideoCodec::Vp9, &[0x88, 0x01]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264] {
                let _ = frame_size(codec, &bytes);
                let mut nal = bytes.clone();
                if let Some(b) = nal.first_mut() {
                    *b = 0x67;
                }
                let _ = frame_size(codec, &nal);
            }
        }
    }
}
