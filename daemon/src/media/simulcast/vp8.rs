//! The VP8 RTP payload descriptor (RFC 7741 section 4.2): reading the
//! picture id and TL0PICIDX a packet carries, and rewriting them in place.
//!
//! A leg that switches between simulcast layers must renumber pictures: each
//! layer has its own picture ids, and a receiver that sees them jump treats
//! the jump as lost frames. The descriptor is read straight from the payload
//! bytes (no allocation) and every read is bounds-checked, because the bytes
//! come from the network.

/// X: the extension byte (I/L/T/K) follows the first byte.
const X: u8 = 0x80;
/// S: the packet starts a VP8 partition.
const S: u8 = 0x10;
/// PID: the partition index (3 bits).
const PID: u8 = 0x07;
/// I: a picture id follows the extension byte.
const I: u8 = 0x80;
/// L: a TL0PICIDX byte follows.
const L: u8 = 0x40;
/// T: a TID/Y/KEYIDX byte follows (carrying a temporal layer index).
const T: u8 = 0x20;
/// K: a TID/Y/KEYIDX byte follows (carrying a key index).
const K: u8 = 0x10;
/// M: the picture id is 15 bits long (two bytes) instead of 7.
const M: u8 = 0x80;
/// P in the VP8 payload header's first byte: 0 for a key frame.
const INTER_FRAME: u8 = 0x01;

/// The picture id and TL0PICIDX a VP8 payload descriptor carries, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vp8Descriptor {
    /// The picture id, 7 or 15 bits, if the descriptor has one.
    pub picture_id: Option<u16>,
    /// Whether the picture id is the 15-bit (two byte) form.
    pub long_picture_id: bool,
    /// The index of the last base temporal layer frame, if present.
    pub tl0picidx: Option<u8>,
    /// Offset of the picture id's first byte (meaningful with `picture_id`).
    picture_id_at: usize,
    /// Offset of the TL0PICIDX byte (meaningful with `tl0picidx`).
    tl0picidx_at: usize,
    /// S: the packet starts a partition.
    partition_start: bool,
    /// PID: which partition.
    partition: u8,
    /// Offset of the VP8 payload (header) after the descriptor.
    payload_at: usize,
}

impl Vp8Descriptor {
    /// Reads the descriptor at the start of `payload`; `None` when the
    /// payload is too short for the descriptor it announces or carries no
    /// VP8 data after it (RFC 7741 forbids empty payloads).
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut d = Vp8Descriptor {
            picture_id: None,
            long_picture_id: false,
            tl0picidx: None,
            picture_id_at: 0,
            tl0picidx_at: 0,
            partition_start: first & S != 0,
            partition: first & PID,
            payload_at: 1,
        };
        if first & X != 0 {
            let ext = *payload.get(1)?;
            let mut at = 2;
            if ext & I != 0 {
                let b = *payload.get(at)?;
                d.picture_id_at = at;
                if b & M != 0 {
                    let low = *payload.get(at + 1)?;
                    d.picture_id = Some((u16::from(b & 0x7f) << 8) | u16::from(low));
                    d.long_picture_id = true;
                    at += 2;
                } else {
                    d.picture_id = Some(u16::from(b & 0x7f));
                    at += 1;
                }
            }
            if ext & L != 0 {
                d.tl0picidx = Some(*payload.get(at)?);
                d.tl0picidx_at = at;
                at += 1;
            }
            if ext & (T | K) != 0 {
                payload.get(at)?;
                at += 1;
            }
            d.payload_at = at;
        }
        if d.payload_at >= payload.len() {
            return None;
        }
        Some(d)
    }

    /// Where the VP8 payload (its frame header) starts after the descriptor.
    pub(super) fn payload_offset(&self) -> usize {
        self.payload_at
    }

    /// Whether the packet is the first of a key frame: it starts partition
    /// 0 and the VP8 payload header's P bit says "key frame". `payload` is
    /// the bytes this descriptor was parsed from.
    pub(super) fn starts_key_frame(&self, payload: &[u8]) -> bool {
        self.partition_start
            && self.partition == 0
            && payload
                .get(self.payload_at)
                .is_some_and(|b| b & INTER_FRAME == 0)
    }

    /// Writes `picture_id` (masked to the descriptor's 7 or 15 bits) and
    /// `tl0picidx` in place; `buf` is the same payload bytes (or a copy of
    /// it) the descriptor was parsed from. Fields the descriptor lacks are
    /// left alone, and a `buf` shorter than the descriptor is not written
    /// past its end.
    pub(crate) fn write(&self, buf: &mut [u8], picture_id: u16, tl0picidx: u8) {
        if self.picture_id.is_some() {
            if self.long_picture_id {
                let [high, low] = (picture_id & 0x7fff).to_be_bytes();
                if let Some(b) = buf.get_mut(self.picture_id_at) {
                    *b = M | high;
                }
                if let Some(b) = buf.get_mut(self.picture_id_at + 1) {
                    *b = low;
                }
            } else if let Some(b) = buf.get_mut(self.picture_id_at) {
                // The 7-bit form: M stays 0; the value is in the low bits.
                *b = (picture_id & 0x7f) as u8;
            }
        }
        if self.tl0picidx.is_some() {
            if let Some(b) = buf.get_mut(self.tl0picidx_at) {
                *b = tl0picidx;
            }
        }
    }

    /// The mask of the picture id's width: 15 or 7 bits.
    pub(super) fn picture_id_mask(&self) -> u16 {
        if self.long_picture_id {
            0x7fff
        } else {
            0x7f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X, S, PID 0; I+L+T; 15-bit id 0x1234; TL0PICIDX 7; TID byte; key
    /// frame payload header.
    const LONG_FULL: [u8; 7] = [0x90, 0xe0, 0x92, 0x34, 0x07, 0x20, 0x10];

    #[test]
    fn parses_a_15_bit_picture_id_with_tl0picidx() {
        let d = Vp8Descriptor::parse(&LONG_FULL).expect("descriptor");
        assert_eq!(d.picture_id, Some(0x1234));
        assert!(d.long_picture_id);
        assert_eq!(d.tl0picidx, Some(7));
        assert_eq!(d.payload_at, 6);
        assert!(d.starts_key_frame(&LONG_FULL));
        assert_eq!(d.picture_id_mask(), 0x7fff);
    }

    #[test]
    fn parses_a_7_bit_picture_id_without_tl0picidx() {
        let p = [0x80, 0x80, 0x55, 0x01];
        let d = Vp8Descriptor::parse(&p).expect("descriptor");
        assert_eq!(d.picture_id, Some(0x55));
        assert!(!d.long_picture_id);
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.payload_at, 3);
        assert!(!d.starts_key_frame(&p), "no S bit and an inter frame");
        assert_eq!(d.picture_id_mask(), 0x7f);
    }

    #[test]
    fn parses_a_descriptor_without_extension() {
        let d = Vp8Descriptor::parse(&[0x10, 0x00]).expect("descriptor");
        assert_eq!(d.picture_id, None);
        assert_eq!(d.tl0picidx, None);
        assert_eq!(d.payload_at, 1);
        // Writing a descriptor without fields changes nothing.
        let mut buf = [0x10, 0x00];
        d.write(&mut buf, 0x7fff, 0xff);
        assert_eq!(buf, [0x10, 0x00]);
    }

    #[test]
    fn tl0picidx_without_picture_id_and_key_index_only() {
        // L only, then K only: the TID/KEYIDX byte is skipped.
        let d = Vp8Descriptor::parse(&[0x90, 0x40, 0x09, 0x00]).expect("L");
        assert_eq!(
            (d.picture_id, d.tl0picidx, d.payload_at),
            (None, Some(9), 3)
        );
        let d = Vp8Descriptor::parse(&[0x90, 0x10, 0x33, 0x00]).expect("K");
        assert_eq!((d.picture_id, d.tl0picidx, d.payload_at), (None, None, 3));
    }

    #[test]
    fn rejects_every_truncation() {
        assert_eq!(Vp8Descriptor::parse(&[]), None);
        for len in 0..LONG_FULL.len() {
            assert_eq!(Vp8Descriptor::parse(&LONG_FULL[..len]), None, "{len}");
        }
        // A descriptor with no VP8 data after it.
        assert_eq!(Vp8Descriptor::parse(&[0x10]), None);
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0x80, 0x01]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        let mut buf = [0u8; 8];
        for _ in 0..20_000 {
            // A small xorshift: deterministic bytes without a dependency.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 9) as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = seed.rotate_left(i as u32 * 4) as u8;
            }
            if let Some(d) = Vp8Descriptor::parse(&buf[..len]) {
                assert!(d.payload_at < len);
                let _ = d.starts_key_frame(&buf[..len]);
                d.write(&mut buf[..len], 0xffff, 0xff);
                // Writing into a shorter copy stays inside it.
                d.write(&mut buf[..1], 1, 1);
            }
        }
    }

    #[test]
    fn write_round_trips_a_15_bit_id_and_tl0picidx() {
        let d = Vp8Descriptor::parse(&LONG_FULL).expect("descriptor");
        let mut buf = LONG_FULL;
        d.write(&mut buf, 0x7abc, 200);
        let again = Vp8Descriptor::parse(&buf).expect("rewritten");
        assert_eq!(again.picture_id, Some(0x7abc));
        assert!(again.long_picture_id);
        assert_eq!(again.tl0picidx, Some(200));
        // Only the two fields changed.
        assert_eq!(buf[..2], LONG_FULL[..2]);
        assert_eq!(buf[5..], LONG_FULL[5..]);
        // Values wider than 15 bits are masked, M stays set.
        d.write(&mut buf, 0xffff, 0);
        assert_eq!(&buf[2..4], &[0xff, 0xff]);
        assert_eq!(
            Vp8Descriptor::parse(&buf).expect("masked").picture_id,
            Some(0x7fff)
        );
    }

    #[test]
    fn write_round_trips_a_7_bit_id_with_and_without_tl0picidx() {
        let with = [0x90, 0xc0, 0x05, 0x03, 0x00];
        let d = Vp8Descriptor::parse(&with).expect("descriptor");
        let mut buf = with;
        d.write(&mut buf, 0x1ff, 4);
        let again = Vp8Descriptor::parse(&buf).expect("rewritten");
        assert_eq!(again.picture_id, Some(0x7f), "masked to 7 bits");
        assert!(!again.long_picture_id, "M stays clear");
        assert_eq!(again.tl0picidx, Some(4));

        let without = [0x90, 0x80, 0x05, 0x00];
        let d = Vp8Descriptor::parse(&without).expect("descriptor");
        let mut buf = without;
        d.write(&mut buf, 6, 99);
        assert_eq!(buf, [0x90, 0x80, 0x06, 0x00], "no TL0PICIDX written");
    }

    #[test]
    fn key_frame_needs_start_of_partition_zero_and_p_clear() {
        let key = [0x10, 0x00];
        let d = Vp8Descriptor::parse(&key).expect("key");
        assert!(d.starts_key_frame(&key));
        for p in [[0x00, 0x00], [0x11, 0x00], [0x10, 0x01]] {
            let d = Vp8Descriptor::parse(&p).expect("descriptor");
            assert!(!d.starts_key_frame(&p), "{p:?}");
        }
    }
}
