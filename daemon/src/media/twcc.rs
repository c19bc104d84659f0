//! Transport-wide congestion control feedback from a subscriber: which of
//! the packets the engine sent arrived, and when.
//!
//! The engine numbers every packet it forwards to a subscriber on one
//! transport-wide sequence (the transport-cc header extension) and keeps
//! when it sent each and how big it was ([`SendHistory`]); the subscriber's
//! browser answers every 50-100 ms with which numbers arrived and their
//! arrival times ([`FeedbackReader`] reads that on the fast path,
//! [`arrivals`] from what `rtc` parsed). `downlink` turns the two into
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

/// Reads subscribers' SRTCP datagrams on the fast path when they hold
/// transport-wide feedback and nothing else (what browsers send with
/// `rtcp-rsize`, every 50-250 ms), in buffers kept from one datagram to the
/// next. Through `rtc` each feedback crossed its SRTCP, interceptor and
/// stats stages (a string allocated per datagram among them), and `rtc`'s
/// own parse allocates per chunk and per delta: with a few hundred
/// subscribers that is a couple of thousand datagrams a second.
#[derive(Debug, Default)]
pub(crate) struct FeedbackReader {
    arrivals: Arrivals,
    /// The status symbol of each packet of the feedback being read.
    symbols: Vec<u8>,
}

/// RTCP's transport-layer feedback packet type, and transport-wide
/// feedback's format in it.
const RTPFB: u8 = 205;
const FORMAT_TWCC: u8 = 15;
/// The fixed part of a feedback: RTCP header, sender and media SSRC, base
/// sequence number, status count, reference time, feedback count.
const FIXED: usize = 20;
/// Status symbols (draft-holmer-rmcat-transport-wide-cc-extensions-01,
/// 3.1.1): 0 is not received, 3 reserved.
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

impl FeedbackReader {
    /// Decrypts `datagram` and hands each feedback's arrivals to `each`,
    /// when every packet of it is transport-wide feedback: `false` for
    /// anything else, which `rtc` then reads as before (a datagram that
    /// does not start with feedback is not even decrypted).
    pub(crate) fn read(
        &mut self,
        srtcp: &mut Context,
        datagram: &[u8],
        mut each: impl FnMut(&[(u16, Option<i64>)]),
    ) -> bool {
        let [first, kind, ..] = *datagram else {
            return false;
        };
        if !is_feedback(first, kind) {
            return false;
        }
        let Ok(plain) = srtcp.decrypt_rtcp(datagram) else {
            return false;
        };
        let mut rest = &plain[..];
        while !rest.is_empty() {
            match split_feedback(rest) {
                Some((_, after)) => rest = after,
                None => return false,
            }
        }
        let mut rest = &plain[..];
        while let Some((packet, after)) = split_feedback(rest) {
            each(self.parse(packet));
            rest = after;
        }
        true
    }

    /// One feedback packet (its RTCP header included, its padding not):
    /// each transport-wide number with its arrival time in microseconds on
    /// the receiver's clock, or `None` if it did not arrive, in sequence
    /// order. Malformed feedback yields what could be read: nothing if its
    /// status chunks are cut short, else up to the first missing delta.
    pub(crate) fn parse(&mut self, packet: &[u8]) -> &[(u16, Option<i64>)] {
        self.arrivals.clear();
        self.symbols.clear();
        if packet.len() < FIXED {
            return &self.arrivals;
        }
        let base = u16::from_be_bytes([packet[12], packet[13]]);
        let count = usize::from(u16::from_be_bytes([packet[14], packet[15]]));
        // 24-bit reference time in units of 64 ms.
        let reference = u32::from_be_bytes([0, packet[16], packet[17], packet[18]]);
        let mut pos = FIXED;
        while self.symbols.len() < count {
            let Some(&[hi, lo]) = packet.get(pos..pos + 2) else {
                break;
            };
            pos += 2;
            let chunk = u16::from_be_bytes([hi, lo]);
            let room = count - self.symbols.len();
            if chunk & 0x8000 == 0 {
                // Run length: one symbol, repeated.
                let symbol = ((chunk >> 13) & 0x3) as u8;
                let run = usize::from(chunk & 0x1fff).min(room);
                self.symbols.extend(std::iter::repeat_n(symbol, run));
            } else if chunk & 0x4000 == 0 {
                // Fourteen one-bit symbols: received (small delta) or not.
                let bits = (0..14).map(|i| ((chunk >> (13 - i)) & 1) as u8);
                self.symbols.extend(bits.take(room));
            } else {
                // Seven two-bit symbols.
                let pairs = (0..7).map(|i| ((chunk >> (12 - 2 * i)) & 0x3) as u8);
                self.symbols.extend(pairs.take(room));
            }
        }
        if self.symbols.len() < count {
            // The deltas start after the last chunk: not where they are.
            return &self.arrivals;
        }
        let mut arrival = i64::from(reference) * 64_000;
        for (i, symbol) in self.symbols.iter().enumerate() {
            let seq = base.wrapping_add(i as u16);
            let delta = match *symbol {
                SMALL_DELTA => packet.get(pos).map(|b| (1, i64::from(*b))),
                LARGE_DELTA => packet
                    .get(pos..pos + 2)
                    .map(|b| (2, i64::from(i16::from_be_bytes([b[0], b[1]])))),
                _ => {
                    self.arrivals.push((seq, None));
                    continue;
                }
            };
            let Some((size, delta)) = delta else {
                break;
            };
            pos += size;
            // Deltas are in units of 250 µs.
            arrival += delta * 250;
            self.arrivals.push((seq, Some(arrival)));
        }
        &self.arrivals
    }
}

/// Whether an RTCP header's first two bytes are transport-wide feedback's:
/// version 2, transport-layer feedback, its format (the header is in the
/// clear in SRTCP too).
fn is_feedback(first: u8, kind: u8) -> bool {
    first >> 6 == 2 && first & 0x1f == FORMAT_TWCC && kind == RTPFB
}

/// The first packet of a compound RTCP datagram when it is transport-wide
/// feedback (without its padding), and what follows it; `None` for any
/// other packet or a length that does not fit.
fn split_feedback(rtcp: &[u8]) -> Option<(&[u8], &[u8])> {
    let [first, kind, hi, lo, ..] = *rtcp else {
        return None;
    };
    if !is_feedback(first, kind) {
        return None;
    }
    let total = 4 * (usize::from(u16::from_be_bytes([hi, lo])) + 1);
    if total < FIXED || total > rtcp.len() {
        return None;
    }
    let (packet, rest) = rtcp.split_at(total);
    let padding = if first & 0x20 != 0 {
        usize::from(packet[total - 1])
    } else {
        0
    };
    let end = total.checked_sub(padding).filter(|end| *end >= FIXED)?;
    Some((&packet[..end], rest))
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

    #[test]
    fn the_fast_path_reads_feedback_as_rtc_does() {
        use rtc::shared::marshal::Marshal;
        let symbols = [
            SymbolTypeTcc::PacketReceivedSmallDelta,
            SymbolTypeTcc::PacketReceivedSmallDelta,
            SymbolTypeTcc::PacketNotReceived,
            SymbolTypeTcc::PacketReceivedLargeDelta,
            SymbolTypeTcc::PacketReceivedSmallDelta,
            SymbolTypeTcc::PacketNotReceived,
            SymbolTypeTcc::PacketNotReceived,
        ];
        let deltas = [
            (SymbolTypeTcc::PacketReceivedSmallDelta, 1000),
            (SymbolTypeTcc::PacketReceivedSmallDelta, 250),
            (SymbolTypeTcc::PacketReceivedLargeDelta, -2000),
            (SymbolTypeTcc::PacketReceivedSmallDelta, 500),
            (SymbolTypeTcc::PacketReceivedSmallDelta, 63_750),
            (SymbolTypeTcc::PacketReceivedSmallDelta, 0),
        ];
        let fb = TransportLayerCc {
            media_ssrc: 7,
            base_sequence_number: 65530,
            packet_status_count: 17,
            reference_time: 0x00ab_cdef,
            packet_chunks: vec![
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: symbols.to_vec(),
                }),
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                    run_length: 8,
                }),
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::OneBit,
                    symbol_list: [1, 0, 1]
                        .into_iter()
                        .chain([0; 11])
                        .map(|b| match b {
                            1 => SymbolTypeTcc::PacketReceivedSmallDelta,
                            _ => SymbolTypeTcc::PacketNotReceived,
                        })
                        .collect(),
                }),
            ],
            recv_deltas: deltas
                .into_iter()
                .map(|(type_tcc_packet, delta)| RecvDelta {
                    type_tcc_packet,
                    delta,
                })
                .collect(),
            ..Default::default()
        };
        let raw = fb.marshal().expect("marshal");
        let mut reader = FeedbackReader::default();
        let fast = reader.parse(&raw).to_vec();
        assert_eq!(fast.len(), 17);
        assert_eq!(fast, arrivals(&fb));
        assert_eq!(fast[0], (65530, Some(0x00ab_cdef * 64_000 + 1000)));
        // Read again into the same buffers: the same.
        assert_eq!(reader.parse(&raw), &fast[..]);
        // Whatever is cut off, it reads what it can and no more.
        for len in 0..raw.len() {
            let part = reader.parse(&raw[..len]);
            assert!(part.len() <= fast.len());
            assert_eq!(part, &fast[..part.len()], "cut at {len}");
        }
    }

    #[test]
    fn only_datagrams_of_feedback_alone_are_split() {
        let fb = TransportLayerCc {
            packet_status_count: 1,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketNotReceived,
                run_length: 1,
            })],
            ..Default::default()
        };
        let one = rtc::shared::marshal::Marshal::marshal(&fb).expect("marshal");
        // `rtc` pads it to a multiple of four bytes, as libwebrtc does.
        assert_eq!(one[0] & 0x20, 0x20, "padded");
        let unpadded = &one[..one.len() - usize::from(one[one.len() - 1])];
        let two = [&one[..], &one[..]].concat();
        let (first, rest) = split_feedback(&two).expect("feedback");
        assert_eq!((first, rest), (unpadded, &one[..]));
        // A receiver report (201) is not feedback; nor is a length past the end.
        let mut report = one.to_vec();
        report[1] = 201;
        assert_eq!(split_feedback(&report), None);
        let mut long = one.to_vec();
        long[3] += 1;
        assert_eq!(split_feedback(&long), None);
        // More padding than packet.
        let mut padded = one.to_vec();
        *padded.last_mut().expect("byte") = 200;
        assert_eq!(split_feedback(&padded), None);
    }
}
