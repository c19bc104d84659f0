//! Transport-wide congestion control feedback from a subscriber: which of
//! the packets the engine sent arrived, and when.
//!
//! The engine numbers every packet it forwards to a subscriber on one
//! transport-wide sequence (the transport-cc header extension) and keeps
//! when it sent each and how big it was ([`SendHistory`]); the subscriber's
//! browser answers every 50-100 ms with which numbers arrived and their
//! arrival times ([`arrivals`] decodes that). `downlink` turns the two into
//! queueing delay, loss and delivery rate.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use rtc::srtp::context::Context;

/// The URI of the transport-wide sequence number extension.
pub(crate) use rtc::sdp::extmap::TRANSPORT_CC_URI;

/// Packets remembered: about a second of video at full rate, more than the
/// 50-100 ms between two feedbacks.
const HISTORY: usize = 1024;

/// One packet sent: when (microseconds since the engine's epoch) and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    pub seq: u16,
    pub at_us: i64,
    pub bytes: u32,
}

/// The last packets sent to one subscriber, by transport-wide sequence number.
#[derive(Debug, Default)]
pub(crate) struct SendHistory {
    slots: Vec<Option<Sent>>,
    next: u16,
}

impl SendHistory {
    /// Numbers a packet about to be sent and remembers it.
    pub(crate) fn push(&mut self, at_us: i64, bytes: u32) -> u16 {
        if self.slots.is_empty() {
            self.slots = vec![None; HISTORY];
        }
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        self.slots[usize::from(seq) % HISTORY] = Some(Sent { seq, at_us, bytes });
        seq
    }

    /// What was sent as `seq`, if still remembered.
    pub(crate) fn get(&self, seq: u16) -> Option<Sent> {
        self.slots
            .get(usize::from(seq) % HISTORY)
            .copied()
            .flatten()
            .filter(|s| s.seq == seq)
    }
}

/// What one feedback reports: each transport-wide number with its arrival
/// time (µs on the receiver's clock), `None` if it did not arrive.
pub(crate) type Arrivals = Vec<(u16, Option<i64>)>;

/// Reads a subscriber's SRTCP datagram on the fast path when it is
/// transport-wide feedback and nothing else (what browsers send with
/// `rtcp-rsize`, every 50-250 ms): each feedback's [`arrivals`]. `None`
/// for anything else, which `rtc` then reads as before (a datagram that
/// does not start with transport-wide feedback is not even decrypted).
/// Through `rtc` each feedback crossed its SRTCP, interceptor and stats
/// stages (a string allocated per datagram among them).
pub(crate) fn read_feedback(srtcp: &mut Context, datagram: &[u8]) -> Option<Vec<Arrivals>> {
    // RTCP version 2, transport-layer feedback (205), format 15.
    let [first, kind, ..] = datagram else {
        return None;
    };
    if first >> 6 != 2 || first & 0x1f != 15 || *kind != 205 {
        return None;
    }
    let plain = srtcp.decrypt_rtcp(datagram).ok()?;
    let packets = rtc::rtcp::packet::unmarshal(&mut &plain[..]).ok()?;
    packets
        .iter()
        .map(|p| p.as_any().downcast_ref::<TransportLayerCc>().map(arrivals))
        .collect()
}

/// The packets a feedback reports, in sequence order: each number with its
/// arrival time in microseconds on the receiver's clock, or `None` if it
/// did not arrive. Malformed feedback yields what could be read.
pub(crate) fn arrivals(fb: &TransportLayerCc) -> Arrivals {
    let count = usize::from(fb.packet_status_count);
    let mut out = Vec::with_capacity(count);
    let mut symbols = Vec::with_capacity(count);
    for chunk in &fb.packet_chunks {
        let room = count.saturating_sub(symbols.len());
        match chunk {
            PacketStatusChunk::RunLengthChunk(run) => symbols.extend(std::iter::repeat_n(
                run.packet_status_symbol,
                usize::from(run.run_length).min(room),
            )),
            PacketStatusChunk::StatusVectorChunk(vector) => {
                // A one-bit vector only says received (small delta) or not.
                let one_bit = vector.symbol_size == SymbolSizeTypeTcc::OneBit;
                symbols.extend(
                    vector
                        .symbol_list
                        .iter()
                        .take(room)
                        .map(|s| match (one_bit, s) {
                            (true, SymbolTypeTcc::PacketNotReceived) => {
                                SymbolTypeTcc::PacketNotReceived
                            }
                            (true, _) => SymbolTypeTcc::PacketReceivedSmallDelta,
                            (false, s) => *s,
                        }),
                );
            }
        }
    }
    let mut deltas = fb.recv_deltas.iter();
    // 24-bit reference time in units of 64 ms.
    let mut arrival = i64::from(fb.reference_time & 0x00ff_ffff) * 64_000;
    for (i, symbol) in symbols.into_iter().enumerate() {
        let seq = fb.base_sequence_number.wrapping_add(i as u16);
        match symbol {
            SymbolTypeTcc::PacketReceivedSmallDelta | SymbolTypeTcc::PacketReceivedLargeDelta => {
                let Some(delta) = deltas.next() else {
                    break;
                };
                arrival += delta.delta;
                out.push((seq, Some(arrival)));
            }
            _ => out.push((seq, None)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    };

    #[test]
    fn history_keeps_the_last_packets_by_number() {
        let mut h = SendHistory::default();
        for i in 0..(HISTORY as i64 + 2) {
            h.push(i * 10, 1000);
        }
        assert_eq!(h.get(0), None, "overwritten");
        assert_eq!(h.get(2).map(|s| s.at_us), Some(20));
        assert_eq!(
            h.get(HISTORY as u16 + 1).map(|s| s.at_us),
            Some((HISTORY as i64 + 1) * 10)
        );
        assert_eq!(h.get(HISTORY as u16 + 2), None, "not sent yet");
    }

    #[test]
    fn feedback_decodes_to_arrival_times_and_losses() {
        let fb = TransportLayerCc {
            base_sequence_number: 65534,
            packet_status_count: 5,
            reference_time: 2,
            packet_chunks: vec![
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                    run_length: 2,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: vec![
                        SymbolTypeTcc::PacketNotReceived,
                        SymbolTypeTcc::PacketReceivedLargeDelta,
                        SymbolTypeTcc::PacketReceivedSmallDelta,
                    ],
                }),
            ],
            recv_deltas: [1000, 250, -2000, 500]
                .into_iter()
                .map(|delta| RecvDelta {
                    type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                    delta,
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            arrivals(&fb),
            vec![
                (65534, Some(129_000)),
                (65535, Some(129_250)),
                (0, None),
                (1, Some(127_250)),
                (2, Some(127_750)),
            ]
        );
        // Truncated: no deltas left for what says it arrived.
        let short = TransportLayerCc {
            recv_deltas: vec![],
            ..fb
        };
        assert_eq!(arrivals(&short), vec![]);
    }
}
