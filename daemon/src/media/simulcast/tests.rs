//! Scenario and property tests of a leg switching between simulcast layers.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::rtp::header::Header;

use super::*;

/// One simulated layer with numbering of its own; every frame is a
/// base-layer frame (TL0PICIDX moves with the picture id).
struct Layer {
    index: usize,
    seq: u16,
    ts: u32,
    pid: u16,
    tl0: u8,
}

type Packet = (Header, [u8; 6], bool);

impl Layer {
    fn new(index: usize, seq: u16, ts: u32, pid: u16, tl0: u8) -> Self {
        Layer {
            index,
            seq,
            ts,
            pid,
            tl0,
        }
    }

    /// The next frame's packets: header, VP8 payload (15-bit picture
    /// id, TL0PICIDX), and whether it starts a key frame.
    fn frame(&mut self, packets: u16, key: bool) -> Vec<Packet> {
        let out = (0..packets)
            .map(|i| {
                let [hi, lo] = self.pid.to_be_bytes();
                let s = if i == 0 { 0x90 } else { 0x80 };
                let p = [s, 0xc0, 0x80 | hi, lo, self.tl0, u8::from(!key)];
                let h = Header {
                    sequence_number: self.seq.wrapping_add(i),
                    timestamp: self.ts,
                    ..Default::default()
                };
                (h, p, is_keyframe_start(VideoCodec::Vp8, &p))
            })
            .collect();
        self.seq = self.seq.wrapping_add(packets);
        self.ts = self.ts.wrapping_add(3000);
        self.pid = (self.pid + 1) & 0x7fff;
        self.tl0 = self.tl0.wrapping_add(1);
        out
    }
}

fn accept(sw: &mut LayerSwitcher, layer: usize, p: &Packet, now: u32) -> Option<Munged> {
    sw.accept(layer, &p.0, &p.1, p.2, now, None)
}

/// Feeds a frame of `layer` arriving at `now`.
fn send(sw: &mut LayerSwitcher, l: &mut Layer, n: u16, key: bool, now: u32) -> Vec<Option<Munged>> {
    let index = l.index;
    l.frame(n, key)
        .iter()
        .map(|p| accept(sw, index, p, now))
        .collect()
}

/// `next` continues `prev` on the wire: +1 sequence number, a timestamp
/// not older, the same or the next picture (and TL0PICIDX with it).
fn assert_follows(prev: Munged, next: Munged) {
    assert_eq!(next.sequence_number, prev.sequence_number.wrapping_add(1));
    assert!(next.timestamp.wrapping_sub(prev.timestamp) as i32 >= 0);
    let ((p, t), (n, u)) = (prev.vp8.expect("vp8"), next.vp8.expect("vp8"));
    let step = n.wrapping_sub(p) & 0x7fff;
    assert!(step <= 1, "picture id {p} -> {n}");
    assert_eq!(u8::try_from(step).ok(), Some(u.wrapping_sub(t)));
}

fn all(out: Vec<Option<Munged>>) -> Vec<Munged> {
    out.into_iter().map(|m| m.expect("forwarded")).collect()
}

fn chain(last: &mut Munged, out: Vec<Option<Munged>>) {
    for m in all(out) {
        assert_follows(*last, m);
        *last = m;
    }
}

#[test]
fn waits_for_a_keyframe_of_the_target_before_the_first_packet() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let (mut l0, mut l1) = (Layer::new(0, 100, 5000, 7, 3), Layer::new(1, 900, 1, 70, 9));
    assert_eq!(
        send(&mut sw, &mut l1, 2, true, 0),
        [None, None],
        "no target yet"
    );
    assert!(!sw.wants_keyframe());
    sw.set_target(Some(1));
    assert!(sw.wants_keyframe());
    assert_eq!(send(&mut sw, &mut l1, 2, false, 1), [None, None]);
    assert_eq!(
        send(&mut sw, &mut l0, 2, true, 1),
        [None, None],
        "not the target"
    );
    let first = all(send(&mut sw, &mut l1, 2, true, 2));
    // The first segment keeps the publisher's numbering.
    assert_eq!(
        first[0],
        Munged {
            sequence_number: 904,
            timestamp: 6001,
            vp8: Some((72, 11))
        }
    );
    assert_eq!(
        (sw.current(), sw.wants_keyframe(), sw.switches()),
        (Some(1), false, 0)
    );
    let mut last = first[1];
    chain(&mut last, send(&mut sw, &mut l1, 3, false, 3));
    assert_eq!(send(&mut sw, &mut l0, 1, true, 3), [None]);
}

#[test]
fn switches_up_and_down_continuously() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut ls = [
        Layer::new(0, 40_000, 1_000_000, 300, 10),
        Layer::new(1, 7, 3_000_000_000, 20_000, 200),
        Layer::new(2, 60_000, 42, 5, 0),
    ];
    sw.set_target(Some(0));
    let mut last = all(send(&mut sw, &mut ls[0], 1, true, 0))[0];
    for (target, now) in [(2, 3000), (1, 30_000), (0, 60_000), (2, 90_000)] {
        let cur = sw.current().expect("forwarding");
        chain(&mut last, send(&mut sw, &mut ls[cur], 2, false, now));
        sw.set_target(Some(target));
        let old = sw.current().expect("forwarding");
        // The old layer flows until the target's key frame.
        assert!(sw.wants_keyframe());
        chain(&mut last, send(&mut sw, &mut ls[old], 2, false, now + 100));
        assert_eq!(
            send(&mut sw, &mut ls[target], 2, false, now + 100),
            [None, None]
        );
        let out = all(send(&mut sw, &mut ls[target], 3, true, now + 3100));
        // By arrival time: the new timestamp moves on by 3000 ticks.
        assert_eq!(out[0].timestamp, last.timestamp.wrapping_add(3000));
        chain(&mut last, out.into_iter().map(Some).collect());
        assert_eq!(sw.current(), Some(target));
        assert_eq!(send(&mut sw, &mut ls[old], 1, true, now + 3200), [None]);
    }
    assert_eq!(sw.switches(), 4);
}

#[test]
fn dropping_to_a_lower_layer_stops_the_current_one_at_once() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut ls = [
        Layer::new(0, 500, 9_000, 40, 4),
        Layer::new(1, 30_000, 77, 900, 90),
    ];
    sw.set_target(Some(1));
    let mut last = all(send(&mut sw, &mut ls[1], 2, true, 0))[1];
    // Half of a frame of layer 1, then the link is found congested.
    let half = ls[1].frame(4, false);
    for p in &half[..2] {
        let m = accept(&mut sw, 1, p, 3000).expect("forwarded");
        assert_follows(last, m);
        last = m;
    }
    sw.drop_to(Some(0));
    assert!(sw.wants_keyframe());
    assert_eq!(sw.current(), None);
    for p in &half[2..] {
        assert_eq!(
            accept(&mut sw, 1, p, 3000),
            None,
            "the rest of the frame is dropped"
        );
    }
    assert_eq!(send(&mut sw, &mut ls[1], 2, true, 6000), [None, None]);
    assert_eq!(send(&mut sw, &mut ls[0], 2, false, 6000), [None, None]);
    // Layer 0's key frame follows on without a gap.
    chain(&mut last, send(&mut sw, &mut ls[0], 2, true, 9000));
    assert_eq!((sw.current(), sw.switches()), (Some(0), 1));
}

#[test]
fn numbering_wraps_across_switches() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut ls = [
        Layer::new(0, 65_530, u32::MAX - 7000, 0x7ffd, 254),
        Layer::new(1, 1000, 2_000_000_000, 10, 100),
    ];
    sw.set_target(Some(0));
    let mut last = all(send(&mut sw, &mut ls[0], 1, true, 0))[0];
    let mut now = 0u32;
    for round in 0..8 {
        let cur = round % 2;
        for _ in 0..3 {
            now = now.wrapping_add(3000);
            chain(&mut last, send(&mut sw, &mut ls[cur], 2, false, now));
        }
        sw.set_target(Some(1 - cur));
        now = now.wrapping_add(3000);
        chain(&mut last, send(&mut sw, &mut ls[1 - cur], 2, true, now));
    }
    // Out numbering went past every wrap point.
    assert!(last.sequence_number < 100, "{last:?}");
    assert!(last.timestamp < 200_000, "{last:?}");
    assert!(last.vp8.expect("vp8").0 < 100, "{last:?}");
}

#[test]
fn pause_forwards_nothing_and_resume_needs_a_keyframe() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut l0 = Layer::new(0, 65_000, 0, 9, 9);
    sw.set_target(Some(0));
    let before = l0.frame(2, true);
    let out = [
        accept(&mut sw, 0, &before[0], 0),
        accept(&mut sw, 0, &before[1], 0),
    ];
    sw.set_target(None);
    assert_eq!((sw.current(), sw.wants_keyframe()), (None, false));
    // A resume's sender report mapping is onto the layer paused.
    assert_eq!(sw.reference_layer(), Some(0));
    assert_eq!(send(&mut sw, &mut l0, 2, true, 3000), [None, None]);
    sw.set_target(Some(0));
    assert_eq!(send(&mut sw, &mut l0, 2, false, 6000), [None, None]);
    let resumed = all(send(&mut sw, &mut l0, 2, true, 90_000));
    let last = out[1].expect("sent");
    assert_eq!(
        resumed[0].sequence_number,
        last.sequence_number.wrapping_add(1)
    );
    // The pause's 90000 ticks pass on the wire too; the ids continue.
    assert_eq!(resumed[0].timestamp, 90_000);
    assert_eq!(resumed[0].vp8, Some((10, 10)));
    assert_eq!(sw.switches(), 0, "a resume on the same layer is no switch");
    // A late packet from before the pause keeps its old mapping.
    assert_eq!(accept(&mut sw, 0, &before[1], 90_100), out[1]);
}

#[test]
fn late_packets_never_enter_the_new_segment() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let (mut l0, mut l1) = (Layer::new(0, 10, 0, 1, 1), Layer::new(1, 5000, 0, 500, 50));
    sw.set_target(Some(0));
    let a = l0.frame(3, true);
    let sent: Vec<_> = a.iter().filter_map(|p| accept(&mut sw, 0, p, 0)).collect();
    let b_early = l1.frame(2, false);
    sw.set_target(Some(1));
    let b = l1.frame(3, true);
    let m = accept(&mut sw, 1, &b[0], 3000).expect("switch");
    assert_eq!(m.sequence_number, sent[2].sequence_number.wrapping_add(1));
    // The old layer, even a packet it never sent; the new layer from
    // before its key frame.
    assert_eq!(accept(&mut sw, 0, &a[1], 3000), None);
    assert_eq!(accept(&mut sw, 0, &l0.frame(1, false)[0], 3000), None);
    assert_eq!(accept(&mut sw, 1, &b_early[1], 3000), None);
    // Reordering inside the segment maps 1:1 and leaves the newest.
    let m2 = accept(&mut sw, 1, &b[2], 3000).expect("b2");
    let m1 = accept(&mut sw, 1, &b[1], 3000).expect("b1");
    assert_eq!(m1.sequence_number, m.sequence_number.wrapping_add(1));
    assert_eq!(m2.sequence_number, m.sequence_number.wrapping_add(2));
    let next = send(&mut sw, &mut l1, 1, false, 6000)[0].expect("next");
    assert_follows(m2, next);
    // NACKs map back across the switch; the future maps to nothing.
    assert_eq!(sw.source_of(sent[1].sequence_number), Some((0, 11)));
    assert_eq!(sw.source_of(m1.sequence_number), Some((1, 5003)));
    assert_eq!(sw.source_of(next.sequence_number.wrapping_add(1)), None);
    assert_eq!(sw.source_of(sent[0].sequence_number.wrapping_sub(1)), None);
}

#[test]
fn losses_inside_a_layer_reach_the_subscriber_as_gaps() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut l0 = Layer::new(0, 100, 0, 1, 1);
    sw.set_target(Some(0));
    let f = l0.frame(4, true);
    let a = accept(&mut sw, 0, &f[0], 0).expect("a");
    let d = accept(&mut sw, 0, &f[3], 0).expect("d");
    assert_eq!(d.sequence_number.wrapping_sub(a.sequence_number), 3);
}

#[test]
fn a_restarted_publisher_is_followed_from_its_next_keyframe() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut l0 = Layer::new(0, 30_000, 0, 1, 1);
    sw.set_target(Some(0));
    let mut last = all(send(&mut sw, &mut l0, 2, true, 0))[1];
    l0.seq = 20_000;
    assert_eq!(
        send(&mut sw, &mut l0, 1, false, 3000),
        [None],
        "dropped as late"
    );
    chain(&mut last, send(&mut sw, &mut l0, 2, true, 6000));
    chain(&mut last, send(&mut sw, &mut l0, 2, false, 9000));
    assert_eq!(sw.switches(), 0);
}

/// Seeded random runs: three layers sending frames at the same instants,
/// their packets interleaved at random, key frames at random, the target
/// changing at random (pauses included), and in odd runs random losses.
/// Whatever happens, the leg only sends the current layer, from a key
/// frame of it on; its sequence numbers move on by exactly one (without
/// loss) or at least one; its timestamps never go back; NACKs map back;
/// and the VP8 ids survive being written into the payload.
#[test]
fn random_switching_keeps_the_stream_continuous() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let lossy = seed % 2 == 1;
        let mut ls: Vec<Layer> = (0..3)
            .map(|i| {
                // Half the layers start right before every wrap point.
                if rng.random_bool(0.5) {
                    let seq = 65_000 + rng.random_range(0..500);
                    let ts = u32::MAX - rng.random_range(0..300_000);
                    Layer::new(i, seq, ts, 0x7f00 | rng.random_range(0..0x100), 250)
                } else {
                    let pid = rng.random_range(0..0x8000);
                    Layer::new(i, rng.random(), rng.random(), pid, rng.random())
                }
            })
            .collect();
        let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
        let mut last: Option<Munged> = None;
        let mut forwarded = 0;
        for tick in 0..4000u32 {
            if rng.random_bool(0.03) {
                sw.set_target(match rng.random_range(0..7) {
                    0 => None,
                    n => Some(n % 3),
                });
            }
            let now = tick.wrapping_mul(3000);
            let mut frames: Vec<Vec<Packet>> = ls
                .iter_mut()
                .map(|l| {
                    let n = rng.random_range(1..=2 * (l.index as u16 + 1));
                    let mut f = l.frame(n, rng.random_bool(0.05));
                    f.reverse();
                    f
                })
                .collect();
            while frames.iter().any(|f| !f.is_empty()) {
                let i = rng.random_range(0..3);
                let Some(p) = frames[i].pop() else { continue };
                if lossy && rng.random_bool(0.03) {
                    continue;
                }
                let before = sw.current();
                let interest = sw.interest();
                let accepted = sw.accept(i, &p.0, &p.1, p.2, now, None);
                if interest & layer_bit(i) == 0 {
                    // The forwarding path skips such packets without asking.
                    assert!(accepted.is_none(), "took a layer outside its interest");
                    assert_eq!(sw.interest(), interest, "changed by a layer it ignores");
                }
                let Some(m) = accepted else {
                    continue;
                };
                assert_eq!(sw.current(), Some(i), "seed {seed} tick {tick}");
                if before != Some(i) {
                    assert!(p.2 && sw.target() == Some(i), "switched off a key frame");
                }
                match last {
                    Some(prev) if lossy => {
                        assert!(m.sequence_number.wrapping_sub(prev.sequence_number) as i16 > 0);
                        assert!(m.timestamp.wrapping_sub(prev.timestamp) as i32 >= 0);
                    }
                    Some(prev) => assert_follows(prev, m),
                    None => {}
                }
                let source = Some((i, p.0.sequence_number));
                assert_eq!(sw.source_of(m.sequence_number), source);
                let (id, tl0) = m.vp8.expect("vp8");
                let mut buf = p.1;
                Vp8Descriptor::parse(&p.1)
                    .expect("parse")
                    .write(&mut buf, id, tl0);
                let written = Vp8Descriptor::parse(&buf).expect("reparse");
                assert_eq!(
                    (written.picture_id, written.tl0picidx),
                    (Some(id), Some(tl0))
                );
                last = Some(m);
                forwarded += 1;
            }
        }
        assert!(forwarded > 2000, "seed {seed}: {forwarded} forwarded");
        assert!(
            sw.switches() > 10,
            "seed {seed}: {} switches",
            sw.switches()
        );
    }
}

#[test]
fn padding_is_skipped_without_a_gap_and_nacks_still_map() {
    let mut sw = LayerSwitcher::new(VideoCodec::Vp8, 90_000);
    let mut l0 = Layer::new(0, 65_530, 0, 1, 1);
    sw.set_target(Some(0));
    let first = all(send(&mut sw, &mut l0, 3, true, 0));
    let mut last = *first.last().expect("sent");
    // A run of padding (three packets), across the sequence number wrap.
    for _ in 0..3 {
        sw.skip_padding(0, l0.seq);
        l0.seq = l0.seq.wrapping_add(1);
    }
    let after = send(&mut sw, &mut l0, 2, false, 1);
    chain(&mut last, after.clone());
    // Padding again, then a late padding packet: no effect.
    sw.skip_padding(0, l0.seq);
    l0.seq = l0.seq.wrapping_add(1);
    sw.skip_padding(0, l0.seq.wrapping_sub(10));
    chain(&mut last, send(&mut sw, &mut l0, 2, false, 2));
    // NACKs of what went before the last padding map to their sources.
    let sent = all(after);
    assert_eq!(
        sw.source_of(sent[0].sequence_number),
        Some((0, 65_530u16.wrapping_add(6)))
    );
    // Padding on a layer not forwarded is ignored.
    sw.skip_padding(1, 5);
    assert_eq!(sw.current(), Some(0));
}
