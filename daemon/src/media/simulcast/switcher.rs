//! One subscriber leg's simulcast layer selection, and the rewriting that
//! makes the layers it forwards one after another look like one stream.
//!
//! Each layer has its own SSRC, sequence numbers, RTP timestamp base and
//! VP8 picture ids. The leg forwards one layer at a time and switches only at
//! a key frame of the target layer; every switch starts a *segment* whose
//! offsets continue the numbering where the previous segment stopped (the
//! next sequence number, picture id and TL0PICIDX; a timestamp that moves on
//! by the time that passed). Inside a segment the offsets are constant, so a
//! loss or reordering in the source reaches the subscriber 1:1 and its NACKs
//! map back to source packets. The state is a few integers: nothing is
//! allocated per packet.

use rtc::rtp::header::Header;

use super::keyframe::VideoCodec;
use super::vp8::Vp8Descriptor;

/// A key frame of the layer being forwarded, older than the newest packet by
/// more than this, is not a late packet but a publisher that restarted its
/// numbering: the leg re-anchors on it instead of waiting for the numbers to
/// come round again.
const RESTART_DISTANCE: u16 = 3000;

/// RFC 1982 serial number arithmetic: whether `a` is newer than `b`.
fn seq_newer(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

/// RFC 1982 for 32-bit RTP timestamps.
fn ts_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What a forwarded packet becomes on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Munged {
    /// The sequence number to send.
    pub sequence_number: u16,
    /// The RTP timestamp to send.
    pub timestamp: u32,
    /// VP8 only: (picture id, tl0picidx) to write into the payload descriptor
    /// with [`Vp8Descriptor::write`]. The TL0PICIDX is meaningful only where
    /// the descriptor has one (`write` leaves it alone otherwise).
    pub vp8: Option<(u16, u8)>,
}

/// A run of one layer forwarded with constant offsets.
#[derive(Debug, Clone, Copy)]
struct Segment {
    layer: usize,
    seq_offset: u16,
    ts_offset: u32,
    /// Set by the segment's first packet that carries a picture id (or
    /// TL0PICIDX): normally its key frame.
    picture_id_offset: Option<u16>,
    tl0picidx_offset: Option<u8>,
    /// Source sequence number of the segment's first packet.
    first_in: u16,
    /// The newest source sequence number forwarded.
    highest_in: u16,
    /// `highest_in - first_in`, saturating: how far back a late packet may
    /// be and still belong to the segment.
    span: u16,
}

impl Segment {
    /// Whether source `seq` is one of the segment's: at or after its first
    /// packet, and (unless `open`, the segment still growing) not after its
    /// newest.
    fn holds(&self, seq: u16, open: bool) -> bool {
        if seq_newer(seq, self.highest_in) {
            return open;
        }
        self.highest_in.wrapping_sub(seq) <= self.span
    }

    /// Whether the leg's `out_seq` was sent in this segment.
    fn sent(&self, out_seq: u16) -> bool {
        let first_out = self.first_in.wrapping_add(self.seq_offset);
        out_seq.wrapping_sub(first_out) <= self.span
    }

    /// Rewrites one packet of the segment. Offsets the segment does not
    /// have yet (VP8 fields, at its first packet that carries them) continue
    /// from `prior`, the leg's last packet. True with a packet newer than
    /// the segment's newest, which moves the segment on.
    fn rewrite(
        &mut self,
        header: &Header,
        vp8: Option<Vp8Descriptor>,
        prior: Option<LastOut>,
    ) -> (Munged, bool) {
        let seq = header.sequence_number;
        let vp8 = vp8.and_then(|d| {
            let id = d.picture_id?;
            // Picture ids continue in 15-bit space; the descriptor's own
            // width (7 or 15 bits) is applied by the mask.
            let offset = *self.picture_id_offset.get_or_insert_with(|| {
                prior
                    .and_then(|l| l.picture_id)
                    .map_or(0, |l| l.wrapping_add(1).wrapping_sub(id) & 0x7fff)
            });
            let tl0 = match d.tl0picidx {
                Some(tl0) => {
                    let offset = *self.tl0picidx_offset.get_or_insert_with(|| {
                        prior
                            .and_then(|l| l.tl0picidx)
                            .map_or(0, |l| l.wrapping_add(1).wrapping_sub(tl0))
                    });
                    tl0.wrapping_add(offset)
                }
                // Not written (the descriptor has no field for it).
                None => prior.and_then(|l| l.tl0picidx).unwrap_or(0),
            };
            Some((id.wrapping_add(offset) & d.picture_id_mask(), tl0))
        });
        let munged = Munged {
            sequence_number: seq.wrapping_add(self.seq_offset),
            timestamp: header.timestamp.wrapping_add(self.ts_offset),
            vp8,
        };
        let newest = seq_newer(seq, self.highest_in);
        if newest {
            let advance = seq.wrapping_sub(self.highest_in);
            self.span = self.span.saturating_add(advance);
            self.highest_in = seq;
        }
        (munged, newest)
    }
}

/// The newest packet the leg sent: what the next segment continues from.
#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u16,
    ts: u32,
    /// Arrival time of that packet in the codec clock.
    now_ts: u32,
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
}

/// One leg's layer selection and the rewriting that keeps its stream continuous.
#[derive(Debug)]
pub(crate) struct LayerSwitcher {
    codec: VideoCodec,
    clock_rate: u32,
    target: Option<usize>,
    current: Option<Segment>,
    /// The segment before `current` (or the last one, while paused), kept
    /// for NACKs and for late packets of a layer resumed after a pause.
    previous: Option<Segment>,
    last: Option<LastOut>,
    switches: u64,
}

impl LayerSwitcher {
    /// `clock_rate` of the codec (90000 for video); `codec` decides whether
    /// VP8 descriptors are rewritten. The leg starts paused (no target). The
    /// first segment keeps the publisher's numbering (offsets 0): the leg's
    /// own random offsets apply on top of what this returns.
    pub(crate) fn new(codec: VideoCodec, clock_rate: u32) -> Self {
        LayerSwitcher {
            codec,
            clock_rate,
            target: None,
            current: None,
            previous: None,
            last: None,
            switches: 0,
        }
    }

    /// Layer to forward from now on (index into the source's layers, 0 =
    /// lowest); None pauses the leg (it then forwards nothing until a target
    /// is set again, and then only from a key frame).
    pub(crate) fn set_target(&mut self, target: Option<usize>) {
        self.target = target;
        if target.is_none() {
            if let Some(current) = self.current.take() {
                self.previous = Some(current);
            }
        }
    }

    /// Like [`LayerSwitcher::set_target`], but the current layer stops at
    /// once instead of flowing until the target's key frame: for a link
    /// that cannot carry it, where each packet more deepens the queue that
    /// key frame must cross. The subscriber's numbering continues over the
    /// frame cut short, so it asks for none of it again.
    pub(crate) fn drop_to(&mut self, target: Option<usize>) {
        self.set_target(None);
        self.target = target;
    }

    /// Ends the current segment, keeping the target: the next one starts at
    /// the target's next key frame, numbered on from the last packet sent
    /// (a track muted, whose packets stop reaching the leg for a while).
    pub(crate) fn restart(&mut self) {
        self.drop_to(self.target);
    }

    /// The layer asked for with [`LayerSwitcher::set_target`].
    pub(crate) fn target(&self) -> Option<usize> {
        self.target
    }

    /// The layers whose packets [`LayerSwitcher::accept`] may take, one bit
    /// each ([`layer_bit`]): the current one and the target; none while
    /// paused. A packet of any other layer it refuses whatever its content.
    pub(crate) fn interest(&self) -> u32 {
        [self.current(), self.target]
            .into_iter()
            .flatten()
            .fold(0, |mask, l| mask | layer_bit(l))
    }

    /// The layer being forwarded now (None before the first keyframe or when paused).
    pub(crate) fn current(&self) -> Option<usize> {
        self.current.map(|s| s.layer)
    }

    /// The layer whose RTP timeline `aligned_ts` must be expressed in: the
    /// current layer, or while paused the layer forwarded last.
    pub(crate) fn reference_layer(&self) -> Option<usize> {
        self.current.or(self.previous).map(|s| s.layer)
    }

    /// True while the target differs from the current layer and a keyframe
    /// of the target is awaited (the caller then asks the publisher for one,
    /// rate-limited).
    pub(crate) fn wants_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current()
    }

    /// Layer switches done so far (for metrics): segments started on another
    /// layer than the one forwarded before; neither the first start nor a
    /// resume on the same layer counts.
    pub(crate) fn switches(&self) -> u64 {
        self.switches
    }

    /// Decides for one packet of `layer`. `keyframe` is is_keyframe_start()
    /// of its payload; `now_ts` is the packet's arrival time expressed in the
    /// codec clock (a wrapping u32, used to align timestamps across a switch
    /// when no better mapping is known); `aligned_ts`: Some(ts) when the
    /// caller could map this packet's timestamp onto the timeline of
    /// [`LayerSwitcher::reference_layer`] (from RTCP sender reports), else
    /// None. `payload` is the RTP payload (for VP8 descriptor reading).
    /// Returns None when the packet is not forwarded on this leg.
    pub(crate) fn accept(
        &mut self,
        layer: usize,
        header: &Header,
        payload: &[u8],
        keyframe: bool,
        now_ts: u32,
        aligned_ts: Option<u32>,
    ) -> Option<Munged> {
        let target = self.target?;
        let seq = header.sequence_number;
        let vp8 = match self.codec {
            VideoCodec::Vp8 => Vp8Descriptor::parse(payload),
            _ => None,
        };
        let prior = self.last;
        if let Some(current) = self.current.as_mut().filter(|s| s.layer == layer) {
            if current.holds(seq, true) {
                let (munged, newest) = current.rewrite(header, vp8, prior);
                if newest {
                    self.record(munged, vp8, now_ts);
                }
                return Some(munged);
            }
            // Late, from before the segment began: forwarded only with the
            // mapping of an earlier segment of the layer that sent its
            // neighbours (a resume after a pause), never into this one,
            // whose numbers follow on from the previous segment's.
            if let Some(previous) = self.previous.as_mut() {
                if previous.layer == layer && previous.holds(seq, false) {
                    // Such a segment has its VP8 offsets already, unless it
                    // never carried the fields: then they are not rewritten.
                    let vp8 = vp8.filter(|_| previous.picture_id_offset.is_some());
                    return Some(previous.rewrite(header, vp8, None).0);
                }
            }
            let restarted = current.highest_in.wrapping_sub(seq) > RESTART_DISTANCE;
            if !(restarted && keyframe && layer == target) {
                return None;
            }
        } else if layer != target || !keyframe {
            return None;
        } else if let Some(previous) = self.previous.filter(|s| s.layer == layer) {
            // A key frame of a layer switched away from (or paused), not
            // newer than the newest packet of it already sent: stale, not a
            // place to resume, unless so old that the publisher restarted.
            if previous.highest_in.wrapping_sub(seq) <= RESTART_DISTANCE {
                return None;
            }
        }
        Some(self.start_segment(layer, header, vp8, now_ts, aligned_ts))
    }

    /// A packet of `layer` that carries only padding (what a publisher
    /// without RTX probes its link with): not forwarded, and the leg's
    /// numbering closes over it, so the subscriber sees no gap to ask
    /// retransmissions for. The next packet starts a continuation segment
    /// whose sequence offset is one less; a run of padding shares one, so
    /// the segment before the run still answers NACKs (`previous`). A late
    /// padding packet is left as a gap.
    pub(crate) fn skip_padding(&mut self, layer: usize, seq: u16) {
        let Some(current) = self.current.as_mut().filter(|s| s.layer == layer) else {
            return;
        };
        if !seq_newer(seq, current.highest_in) {
            return;
        }
        let continuation = Segment {
            seq_offset: current.seq_offset.wrapping_sub(1),
            first_in: seq.wrapping_add(1),
            highest_in: seq,
            span: 0,
            ..*current
        };
        // A continuation that forwarded nothing yet just moves on (packets
        // lost upstream between two paddings keep their gap).
        if current.first_in != current.highest_in.wrapping_add(1) {
            self.previous = Some(*current);
        }
        self.current = Some(continuation);
    }

    /// Starts forwarding `layer` at this key frame packet: the new offsets
    /// continue the leg's numbering from its last packet.
    fn start_segment(
        &mut self,
        layer: usize,
        header: &Header,
        vp8: Option<Vp8Descriptor>,
        now_ts: u32,
        aligned_ts: Option<u32>,
    ) -> Munged {
        let seq = header.sequence_number;
        let reference = self.current.or(self.previous);
        let (seq_offset, ts_offset) = match self.last {
            None => (0, 0),
            Some(last) => {
                // By arrival time: the source's frame interval is unknown
                // here, the wall clock is not.
                let elapsed = now_ts.wrapping_sub(last.now_ts);
                let elapsed = if (elapsed as i32) > 0 { elapsed } else { 1 };
                let by_arrival = last.ts.wrapping_add(elapsed);
                // The sender report mapping is more precise than arrival
                // times (which carry network jitter), but a stale one could
                // be far off: more than a second away, it is not trusted.
                let by_report = aligned_ts
                    .zip(reference)
                    .map(|(ts, r)| ts.wrapping_add(r.ts_offset))
                    .filter(|ts| {
                        let off = ts.wrapping_sub(by_arrival) as i32;
                        off.unsigned_abs() <= self.clock_rate
                    });
                let mut first_ts = by_report.unwrap_or(by_arrival);
                if !ts_newer(first_ts, last.ts) {
                    first_ts = last.ts.wrapping_add(1);
                }
                (
                    last.seq.wrapping_add(1).wrapping_sub(seq),
                    first_ts.wrapping_sub(header.timestamp),
                )
            }
        };
        if reference.is_some_and(|r| r.layer != layer) {
            self.switches += 1;
        }
        if let Some(current) = self.current.take() {
            self.previous = Some(current);
        }
        let segment = self.current.insert(Segment {
            layer,
            seq_offset,
            ts_offset,
            picture_id_offset: None,
            tl0picidx_offset: None,
            first_in: seq,
            highest_in: seq,
            span: 0,
        });
        let (munged, _) = segment.rewrite(header, vp8, self.last);
        self.record(munged, vp8, now_ts);
        munged
    }

    /// Makes `munged` the packet the next segment continues from.
    fn record(&mut self, munged: Munged, vp8: Option<Vp8Descriptor>, now_ts: u32) {
        let prior = self.last;
        let has_tl0 = vp8.is_some_and(|d| d.tl0picidx.is_some());
        self.last = Some(LastOut {
            seq: munged.sequence_number,
            ts: munged.timestamp,
            now_ts,
            picture_id: munged
                .vp8
                .map(|(id, _)| id)
                .or(prior.and_then(|l| l.picture_id)),
            tl0picidx: match munged.vp8 {
                Some((_, tl0)) if has_tl0 => Some(tl0),
                _ => prior.and_then(|l| l.tl0picidx),
            },
        });
    }

    /// For a NACK: which (layer, source sequence number) the leg sent as
    /// `out_seq`, if it is still known (the current and the previous
    /// segment).
    pub(crate) fn source_of(&self, out_seq: u16) -> Option<(usize, u16)> {
        [self.current, self.previous]
            .into_iter()
            .flatten()
            .find(|s| s.sent(out_seq))
            .map(|s| (s.layer, out_seq.wrapping_sub(s.seq_offset)))
    }

    /// For a NACK: the packet the leg sent as `out_seq` once more, given the
    /// original (`header`, `payload`) from the layer's history, rewritten
    /// with the mapping of the segment that sent it; state is unchanged.
    pub(crate) fn resend(&self, out_seq: u16, header: &Header, payload: &[u8]) -> Option<Munged> {
        let segment = [self.current, self.previous]
            .into_iter()
            .flatten()
            .find(|s| s.sent(out_seq))?;
        let vp8 = match self.codec {
            VideoCodec::Vp8 => Vp8Descriptor::parse(payload),
            _ => None,
        }
        .and_then(|d| {
            let id = d.picture_id?.wrapping_add(segment.picture_id_offset?) & d.picture_id_mask();
            let tl0 = d
                .tl0picidx
                .unwrap_or(0)
                .wrapping_add(segment.tl0picidx_offset.unwrap_or(0));
            Some((id, tl0))
        });
        Some(Munged {
            sequence_number: header.sequence_number.wrapping_add(segment.seq_offset),
            timestamp: header.timestamp.wrapping_add(segment.ts_offset),
            vp8,
        })
    }

    /// The RTP timestamp offset of `layer` while it is the layer forwarded:
    /// what translates that layer's sender reports to this leg's timeline.
    pub(crate) fn timestamp_offset(&self, layer: usize) -> Option<u32> {
        self.current
            .filter(|s| s.layer == layer)
            .map(|s| s.ts_offset)
    }
}

/// The bit of `layer` in a mask of layers (see [`LayerSwitcher::interest`]).
pub(crate) fn layer_bit(layer: usize) -> u32 {
    1u32 << layer.min(31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_hold_what_they_sent_across_the_wrap() {
        let s = Segment {
            layer: 1,
            seq_offset: 10,
            ts_offset: 0,
            picture_id_offset: None,
            tl0picidx_offset: None,
            first_in: 65_530,
            highest_in: 4,
            span: 10,
        };
        assert!(s.holds(65_530, false) && s.holds(0, false) && s.holds(4, false));
        assert!(!s.holds(65_529, true) && !s.holds(5, false));
        assert!(s.holds(5, true), "a growing segment takes what comes next");
        assert!(s.sent(4) && s.sent(14) && !s.sent(15) && !s.sent(3));
        assert!(seq_newer(0, 65_535) && !seq_newer(65_535, 0));
        assert!(ts_newer(5, u32::MAX - 5) && !ts_newer(u32::MAX, 0));
    }

    #[test]
    fn timestamps_follow_the_sender_report_mapping_when_plausible() {
        let mut sw = LayerSwitcher::new(VideoCodec::H264, 90_000);
        let h = |seq, ts| Header {
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        };
        sw.set_target(Some(0));
        let first = sw
            .accept(0, &h(10, 50_000), &[], true, 0, None)
            .expect("first");
        assert_eq!((first.timestamp, first.vp8), (50_000, None));
        sw.set_target(Some(1));
        // Layer 1's 7_000_000 is layer 0's 53_000 by the sender reports.
        let m = sw
            .accept(1, &h(500, 7_000_000), &[], true, 100, Some(53_000))
            .expect("switch");
        assert_eq!((m.sequence_number, m.timestamp), (11, 53_000));
        assert_eq!(sw.reference_layer(), Some(1));
        // Back to 0: a mapping into the past still moves on by one tick.
        sw.set_target(Some(0));
        let m = sw
            .accept(0, &h(20, 60_000), &[], true, 200, Some(7_000_000 - 90))
            .expect("down");
        assert_eq!((m.sequence_number, m.timestamp), (12, 53_001));
        // A mapping more than a second off the arrival time is not trusted.
        sw.set_target(Some(1));
        let far = Some(7_000_000 + 10 * 90_000);
        let m = sw
            .accept(1, &h(501, 7_003_000), &[], true, 3200, far)
            .expect("up");
        assert_eq!((m.sequence_number, m.timestamp), (13, 53_001 + 3000));
    }

    #[test]
    fn seven_bit_picture_ids_continue_masked_and_other_codecs_have_none() {
        let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
        let h = |seq| Header {
            sequence_number: seq,
            ..Default::default()
        };
        // S, X; I with a 7-bit id; key frame header.
        let p = |id: u8| [0x90, 0x80, id & 0x7f, 0x00];
        sw.set_target(Some(0));
        assert_eq!(
            sw.accept(0, &h(1), &p(126), true, 0, None)
                .and_then(|m| m.vp8),
            Some((126, 0))
        );
        assert_eq!(
            sw.accept(0, &h(2), &p(127), false, 0, None)
                .and_then(|m| m.vp8),
            Some((127, 0))
        );
        assert_eq!(
            sw.accept(0, &h(3), &p(0), false, 0, None)
                .and_then(|m| m.vp8),
            Some((0, 0))
        );
        sw.set_target(Some(1));
        let m = sw.accept(1, &h(50), &p(90), true, 0, None).expect("switch");
        assert_eq!(m.vp8.map(|v| v.0), Some(1), "last (0) + 1");
        // No picture id in the descriptor: nothing to rewrite.
        assert_eq!(
            sw.accept(1, &h(51), &[0x10, 0x00], false, 0, None)
                .map(|m| m.vp8),
            Some(None)
        );
        let mut h264 = LayerSwitcher::new(VideoCodec::H264, 90_000);
        h264.set_target(Some(0));
        assert_eq!(
            h264.accept(0, &h(1), &p(5), true, 0, None).map(|m| m.vp8),
            Some(None)
        );
    }
}
