//! Transport-wide congestion control feedback (draft-holmer-rmcat-
//! transport-wide-cc-extensions-01), as a browser sends it: which of the
//! transport-wide numbers the SFU stamped arrived, and when. sfud's
//! downlink estimate reads it; a receiver that reads RTP outside `rtc` must
//! write it itself. Plain state, no I/O.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
    SymbolTypeTcc, TransportLayerCc, TYPE_TCC_DELTA_SCALE_FACTOR,
};

/// Symbols in one two-bit status vector chunk.
const SYMBOLS_PER_CHUNK: usize = 7;
/// Most numbers one feedback reports (a gap wider than this is reported
/// from its far end).
const MAX_SPAN: usize = 2048;
/// The reference time's unit, in microseconds.
const REFERENCE_UNIT_US: i64 = 64_000;

/// The arrivals since the last feedback.
#[derive(Debug)]
pub(crate) struct Feedback {
    sender_ssrc: u32,
    media_ssrc: u32,
    /// Feedback packets written, modulo 256.
    count: u8,
    /// The number after the last one reported, once one was.
    next: Option<u16>,
    /// (transport-wide number, arrival in µs) not reported yet.
    pending: Vec<(u16, i64)>,
}

impl Feedback {
    /// Feedback sent from `sender_ssrc`.
    pub(crate) fn new(sender_ssrc: u32) -> Feedback {
        Feedback {
            sender_ssrc,
            media_ssrc: 0,
            count: 0,
            next: None,
            pending: Vec::with_capacity(256),
        }
    }

    /// Notes that the packet numbered `seq`, of stream `media_ssrc`,
    /// arrived at `at_us` (µs on any steady clock).
    pub(crate) fn record(&mut self, media_ssrc: u32, seq: u16, at_us: i64) {
        self.media_ssrc = media_ssrc;
        self.pending.push((seq, at_us));
    }

    /// Arrivals waiting to be reported.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The feedback for everything recorded since the last one, from the
    /// number after the last one reported (what is missing in between is
    /// reported lost; what arrives for numbers already reported is
    /// dropped). `None` when nothing new arrived.
    pub(crate) fn build(&mut self) -> Option<TransportLayerCc> {
        let pending = std::mem::take(&mut self.pending);
        let first = pending.first()?.0;
        // Offsets from `base`, which is the number after the last reported
        // or else the lowest one recorded (numbers wrap at 2^16).
        let base = self.next.unwrap_or_else(|| {
            pending
                .iter()
                .map(|(seq, _)| seq.wrapping_sub(first) as i16)
                .min()
                .map_or(first, |lowest| first.wrapping_add(lowest as u16))
        });
        let mut arrived: Vec<(usize, i64)> = pending
            .iter()
            .map(|(seq, at)| (seq.wrapping_sub(base) as i16, *at))
            .filter(|(offset, _)| *offset >= 0)
            .map(|(offset, at)| (offset as usize, at))
            .collect();
        arrived.sort_unstable_by_key(|(offset, _)| *offset);
        arrived.dedup_by_key(|(offset, _)| *offset);
        let (last, _) = *arrived.last()?;
        // A gap too wide to report is skipped from its far end.
        let skip = (last + 1).saturating_sub(MAX_SPAN);
        let arrived = &arrived[arrived.partition_point(|(o, _)| *o < skip)..];
        let base = base.wrapping_add(skip as u16);
        let count = last + 1 - skip;
        let reference = arrived.first()?.1.div_euclid(REFERENCE_UNIT_US);
        let mut at = reference * REFERENCE_UNIT_US;
        let mut symbols = vec![SymbolTypeTcc::PacketNotReceived; count];
        let mut deltas = Vec::with_capacity(arrived.len());
        for (offset, arrival) in arrived {
            // In the unit the feedback carries, rounded, so the receiver's
            // sum of deltas stays on the arrival times.
            let units = (arrival - at + TYPE_TCC_DELTA_SCALE_FACTOR / 2)
                .div_euclid(TYPE_TCC_DELTA_SCALE_FACTOR)
                .clamp(i64::from(i16::MIN), i64::from(i16::MAX));
            let symbol = if (0..=i64::from(u8::MAX)).contains(&units) {
                SymbolTypeTcc::PacketReceivedSmallDelta
            } else {
                SymbolTypeTcc::PacketReceivedLargeDelta
            };
            let delta = units * TYPE_TCC_DELTA_SCALE_FACTOR;
            at += delta;
            symbols[offset - skip] = symbol;
            deltas.push(RecvDelta {
                type_tcc_packet: symbol,
                delta,
            });
        }
        let chunks = symbols
            .chunks(SYMBOLS_PER_CHUNK)
            .map(|part| {
                let mut symbol_list = part.to_vec();
                symbol_list.resize(SYMBOLS_PER_CHUNK, SymbolTypeTcc::PacketNotReceived);
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list,
                })
            })
            .collect();
        self.next = Some(base.wrapping_add(count as u16));
        let fb = TransportLayerCc {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: self.media_ssrc,
            base_sequence_number: base,
            packet_status_count: count as u16,
            reference_time: (reference & 0x00ff_ffff) as u32,
            fb_pkt_count: self.count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        };
        self.count = self.count.wrapping_add(1);
        Some(fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    /// What a feedback says, after a trip through its wire form: each
    /// number with its arrival time, `None` if lost.
    fn decoded(fb: &TransportLayerCc) -> Vec<(u16, Option<i64>)> {
        let wire = fb.marshal().expect("marshals");
        let fb = TransportLayerCc::unmarshal(&mut &wire[..]).expect("unmarshals");
        let mut symbols = Vec::new();
        for chunk in &fb.packet_chunks {
            match chunk {
                PacketStatusChunk::StatusVectorChunk(v) => symbols.extend(v.symbol_list.clone()),
                PacketStatusChunk::RunLengthChunk(r) => {
                    symbols.extend(std::iter::repeat_n(
                        r.packet_status_symbol,
                        usize::from(r.run_length),
                    ));
                }
            }
        }
        symbols.truncate(usize::from(fb.packet_status_count));
        let mut deltas = fb.recv_deltas.iter();
        let mut at = i64::from(fb.reference_time) * REFERENCE_UNIT_US;
        symbols
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let seq = fb.base_sequence_number.wrapping_add(i as u16);
                match s {
                    SymbolTypeTcc::PacketNotReceived => (seq, None),
                    _ => {
                        at += deltas.next().expect("a delta per arrival").delta;
                        (seq, Some(at))
                    }
                }
            })
            .collect()
    }

    #[test]
    fn arrivals_and_losses_survive_the_wire() {
        let mut f = Feedback::new(1);
        let t0 = 10 * REFERENCE_UNIT_US + 1_000;
        for (seq, at) in [
            (100, t0),
            (101, t0 + 500),
            (103, t0 + 70_000),
            (102, t0 + 250),
        ] {
            f.record(7, seq, at);
        }
        let fb = f.build().expect("a feedback");
        assert_eq!(fb.media_ssrc, 7);
        assert_eq!(
            decoded(&fb),
            vec![
                (100, Some(t0)),
                (101, Some(t0 + 500)),
                // In number order: a negative delta, then a large one.
                (102, Some(t0 + 250)),
                (103, Some(t0 + 70_000)),
            ]
        );
        assert!(f.build().is_none(), "nothing new");
        f.record(7, 106, t0 + 80_000);
        f.record(7, 101, t0 + 80_100);
        let fb = f.build().expect("a second feedback");
        assert_eq!(fb.fb_pkt_count, 1);
        assert_eq!(
            decoded(&fb),
            vec![(104, None), (105, None), (106, Some(t0 + 80_000))],
            "continues after the last reported, the late duplicate dropped"
        );
    }

    #[test]
    fn numbers_wrap_and_times_round_to_the_wire_unit() {
        let mut f = Feedback::new(1);
        f.record(7, 1, 1_000_100);
        f.record(7, 65_535, 1_000_000);
        f.record(7, 0, 1_000_374);
        assert_eq!(
            decoded(&f.build().expect("a feedback")),
            vec![
                (65_535, Some(1_000_000)),
                (0, Some(1_000_250)),
                (1, Some(1_000_000)),
            ]
        );
    }

    #[test]
    fn a_long_run_is_reported_whole() {
        let mut f = Feedback::new(1);
        for seq in 0..300u16 {
            f.record(7, seq, 5_000_000 + i64::from(seq) * 1_000);
        }
        let got = decoded(&f.build().expect("a feedback"));
        assert_eq!(got.len(), 300);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (seq, at))| usize::from(*seq) == i
                && *at == Some(5_000_000 + i as i64 * 1_000)));
    }
}
