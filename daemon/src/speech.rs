//! Who is speaking, from the audio levels publishers put in their packets
//! (RFC 6464's `ssrc-audio-level` header extension: no decoding).
//!
//! Two halves, plain and tested without sockets:
//!
//! - [`SpeechMeter`], one per published audio track, in the media worker
//!   that owns it: fed every packet's level, it says whether the track is
//!   *speaking* and scores its activity over three time scales.
//! - [`Speakers`], one per room: the speaking set and the *dominant
//!   speaker*, from the meters' latest [`Activity`].
//!
//! **Speaking** is level over a threshold for a share of a short window (as
//! LiveKit does): at least [`SPEAKING_SHARE`] of the packets of the last
//! [`SPEAKING_WINDOW`] packets (20 ms each: half a second) at most
//! [`SPEAKING_DBOV`] below full scale.
//!
//! **The dominant speaker** is Volfin and Cohen's method ("Dominant speaker
//! identification for multipoint videoconferencing", Computer Speech and
//! Language 27(4), 2013), which Jitsi and mediasoup use, with their
//! parameters. Each packet's loudness (0 silence to 127 full scale) above
//! the speaker's own noise floor is split into [`N1`] sub-bands; a packet is
//! *active* when more than [`MEDIUM_THRESHOLD`] of them are, a block of
//! [`N2`] packets when more than [`LONG_THRESHOLD`] of its packets are.
//! Three activity scores (the newest packet's sub-bands out of `N1`, the
//! newest block's active packets out of `N2`, the last [`N3`] blocks'
//! active blocks out of `N3`) are log-likelihood ratios of speech (binomial,
//! p = 0.5) against noise (exponential, lambda 0.78, 24 and 47). A
//! challenger replaces the dominant speaker only when the log ratio of its
//! scores to the dominant's exceeds [`C1`], [`C2`] and [`C3`] on all three
//! scales at once, the largest medium-scale ratio winning: a cough or a
//! short reply does not take the floor, a sustained turn does. sfud adds
//! one rule: nobody is dominant until somebody speaks, so a room of silent
//! microphones has no dominant speaker.
//!
//! The noise floor is the lowest loudness heard (silence aside); it rises
//! towards a higher minimum held for [`FLOOR_WINDOW`] packets (15 s), by
//! their geometric mean, so a speaker who moves to a noisier room is not
//! active forever.

use std::collections::HashMap;

use crate::media::PeerId;

/// Sub-bands of a packet's loudness.
pub const N1: usize = 13;
/// Packets in a block (the medium time scale).
pub const N2: usize = 5;
/// Blocks in the long time scale.
pub const N3: usize = 10;
/// Sub-bands a packet needs above this to be active.
pub const MEDIUM_THRESHOLD: u8 = 7;
/// Active packets a block needs above this to be active.
pub const LONG_THRESHOLD: u8 = 4;
/// Log ratio thresholds of a challenger's scores to the dominant's:
/// immediate, medium, long.
pub const C1: f64 = 3.0;
/// See [`C1`].
pub const C2: f64 = 2.0;
/// See [`C1`].
pub const C3: f64 = 0.0;
/// The exponential noise model's parameter per time scale.
const LAMBDA: [f64; 3] = [0.78, 24.0, 47.0];
/// Scores never go below this (the log ratios stay finite).
const MIN_SCORE: f64 = 1e-10;
/// Loudness units per sub-band.
const SUBBAND: u8 = 128_u8.div_ceil(N1 as u8);
/// Packets the noise floor's rise waits for (15 s of 20 ms packets).
pub const FLOOR_WINDOW: u32 = 15_000 / 20;
/// Packets remembered: the long time scale.
const HISTORY: usize = N2 * N3;

/// Packets of the window the speaking share is taken over (0.5 s).
pub const SPEAKING_WINDOW: usize = 25;
/// The share of those at or above [`SPEAKING_DBOV`].
pub const SPEAKING_SHARE: f64 = 0.4;
/// How far below full scale (dBov) a packet may be and count as speech.
pub const SPEAKING_DBOV: u8 = 40;

/// What a meter reports for its track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// Level over the threshold for a share of the last half second.
    pub speaking: bool,
    /// Activity scores: immediate, medium, long.
    pub scores: [f64; 3],
    /// The loudest packet since the last report, dBov below full scale
    /// (127: silence or nothing heard).
    pub loudest_dbov: u8,
}

impl Activity {
    /// A track heard saying nothing.
    pub const SILENT: Activity = Activity {
        speaking: false,
        scores: [MIN_SCORE; 3],
        loudest_dbov: 127,
    };
}

/// One audio track's levels (see the module docs).
#[derive(Debug, Clone)]
pub struct SpeechMeter {
    /// Loudness (127 - dBov) of the last packets; `head` is the newest.
    loudness: [u8; HISTORY],
    head: usize,
    floor: u8,
    next_floor: u8,
    next_floor_len: u32,
    loudest_dbov: u8,
}

impl Default for SpeechMeter {
    fn default() -> Self {
        SpeechMeter {
            loudness: [0; HISTORY],
            head: 0,
            floor: 0,
            next_floor: 0,
            next_floor_len: 0,
            loudest_dbov: 127,
        }
    }
}

impl SpeechMeter {
    /// One packet's level: RFC 6464's byte (the voice-activity bit is
    /// ignored: browsers set it from their own detector, not everywhere).
    pub fn hear(&mut self, byte: u8) {
        let dbov = byte & 0x7f;
        self.loudest_dbov = self.loudest_dbov.min(dbov);
        let loudness = 127 - dbov;
        self.head = (self.head + 1) % HISTORY;
        self.loudness[self.head] = loudness;
        self.update_floor(loudness);
    }

    /// `n` packets' worth of silence: a track that sent nothing (muted, or
    /// discontinuous transmission) is not still speaking.
    pub fn hear_silence(&mut self, n: usize) {
        for _ in 0..n.min(HISTORY) {
            self.head = (self.head + 1) % HISTORY;
            self.loudness[self.head] = 0;
        }
    }

    /// The `age`-th newest packet's loudness (0: the newest).
    fn at(&self, age: usize) -> u8 {
        self.loudness[(self.head + HISTORY - age % HISTORY) % HISTORY]
    }

    fn update_floor(&mut self, loudness: u8) {
        if loudness == 0 {
            return;
        }
        if self.floor == 0 || loudness < self.floor {
            self.floor = loudness;
            self.next_floor = 0;
            self.next_floor_len = 0;
            return;
        }
        if self.next_floor == 0 || loudness < self.next_floor {
            self.next_floor = loudness;
        }
        self.next_floor_len += 1;
        if self.next_floor_len >= FLOOR_WINDOW {
            let risen = (f64::from(self.floor) * f64::from(self.next_floor)).sqrt();
            self.floor = risen.clamp(1.0, 127.0) as u8;
            self.next_floor = 0;
            self.next_floor_len = 0;
        }
    }

    /// The `age`-th newest packet's active sub-bands.
    fn subbands(&self, age: usize) -> u8 {
        let loudness = self.at(age);
        if u16::from(loudness) < u16::from(self.floor) + u16::from(SUBBAND) {
            0
        } else {
            loudness / SUBBAND
        }
    }

    /// Active packets in the `block`-th newest block of `N2`.
    fn active_packets(&self, block: usize) -> u8 {
        (0..N2)
            .filter(|i| self.subbands(block * N2 + i) > MEDIUM_THRESHOLD)
            .count() as u8
    }

    /// What the track reports now; starts the next report's loudest packet.
    pub fn activity(&mut self) -> Activity {
        let immediate = self.subbands(0);
        let medium = self.active_packets(0);
        let long = (0..N3)
            .filter(|b| self.active_packets(*b) > LONG_THRESHOLD)
            .count() as u8;
        let loud = (0..SPEAKING_WINDOW)
            .filter(|age| self.at(*age) >= 127 - SPEAKING_DBOV)
            .count();
        let loudest_dbov = std::mem::replace(&mut self.loudest_dbov, 127);
        Activity {
            speaking: loud as f64 >= SPEAKING_SHARE * SPEAKING_WINDOW as f64,
            scores: [
                score(immediate, N1, LAMBDA[0]),
                score(medium, N2, LAMBDA[1]),
                score(long, N3, LAMBDA[2]),
            ],
            loudest_dbov,
        }
    }
}

/// The log-likelihood ratio of `active` of `n` (speech: binomial with
/// p = 0.5) against noise (exponential with `lambda`).
fn score(active: u8, n: usize, lambda: f64) -> f64 {
    let k = f64::from(active);
    let n_f = n as f64;
    let s = ln_binomial(n, usize::from(active)) + n_f * 0.5f64.ln() - lambda.ln() + lambda * k;
    s.max(MIN_SCORE)
}

/// ln(n choose k).
fn ln_binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n.saturating_sub(k));
    (0..k).map(|i| ((n - i) as f64 / (i + 1) as f64).ln()).sum()
}

/// Who is speaking in one room, and who dominates (see the module docs).
#[derive(Debug, Default)]
pub struct Speakers {
    latest: HashMap<PeerId, Activity>,
    dominant: Option<PeerId>,
}

/// What a room tells its participants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpeakersView {
    /// Speaking now, loudest first.
    pub speaking: Vec<PeerId>,
    /// The dominant speaker, once anyone has spoken.
    pub dominant: Option<PeerId>,
}

impl Speakers {
    /// `peer`'s newest activity (of its microphone track). The room
    /// [`decide`](Self::decide)s on a clock of its own: reports of several
    /// workers arrive at different times.
    pub fn report(&mut self, peer: PeerId, activity: Activity) {
        self.latest.insert(peer, activity);
    }

    /// `peer` left, or stopped publishing audio.
    pub fn forget(&mut self, peer: PeerId) {
        self.latest.remove(&peer);
        if self.dominant == Some(peer) {
            self.dominant = None;
            self.decide();
        }
    }

    /// Picks the dominant speaker from everyone's latest activity.
    pub fn decide(&mut self) {
        let Some(current) = self.dominant.and_then(|d| self.latest.get(&d)) else {
            // Nobody dominates yet: the speaking one most active over the
            // medium scale, if anyone speaks.
            self.dominant = self
                .latest
                .iter()
                .filter(|(_, a)| a.speaking)
                .max_by(|(pa, a), (pb, b)| {
                    a.scores[1]
                        .total_cmp(&b.scores[1])
                        .then_with(|| pb.0.cmp(&pa.0))
                })
                .map(|(p, _)| *p);
            return;
        };
        let current = current.scores;
        let mut best: Option<(PeerId, f64)> = None;
        for (peer, a) in &self.latest {
            if Some(*peer) == self.dominant {
                continue;
            }
            let ratio = |i: usize| (a.scores[i] / current[i]).ln();
            let (c1, c2, c3) = (ratio(0), ratio(1), ratio(2));
            if c1 > C1 && c2 > C2 && c3 > C3 && best.is_none_or(|(_, b)| c2 > b) {
                best = Some((*peer, c2));
            }
        }
        if let Some((peer, _)) = best {
            self.dominant = Some(peer);
        }
    }

    /// The speaking set and the dominant speaker now.
    pub fn view(&self) -> SpeakersView {
        let mut speaking: Vec<(PeerId, u8)> = self
            .latest
            .iter()
            .filter(|(_, a)| a.speaking)
            .map(|(p, a)| (*p, a.loudest_dbov))
            .collect();
        speaking.sort_by_key(|(p, dbov)| (*dbov, p.0));
        SpeakersView {
            speaking: speaking.into_iter().map(|(p, _)| p).collect(),
            dominant: self.dominant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A talker's levels: `on` packets of speech at `speech` dBov, `off`
    /// packets of room noise at `noise` dBov, repeated `n` times.
    fn talk(speech: u8, noise: u8, on: usize, off: usize, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| std::iter::repeat_n(speech, on).chain(std::iter::repeat_n(noise, off)))
            .collect()
    }

    /// Feeds each peer its levels packet by packet, reporting every 15
    /// packets (300 ms) as the media worker does; the view after each
    /// report round.
    fn run(
        room: &mut Speakers,
        meters: &mut [SpeechMeter],
        levels: &[Vec<u8>],
    ) -> Vec<SpeakersView> {
        let len = levels.iter().map(Vec::len).max().unwrap_or(0);
        let mut views = Vec::new();
        for t in 0..len {
            for (i, l) in levels.iter().enumerate() {
                if let Some(byte) = l.get(t) {
                    meters[i].hear(*byte);
                }
            }
            if t % 15 == 14 {
                for (i, m) in meters.iter_mut().enumerate() {
                    room.report(PeerId(i as u64 + 1), m.activity());
                }
                room.decide();
                views.push(room.view());
            }
        }
        views
    }

    #[test]
    fn scores_grow_with_activity_and_floor_at_the_minimum() {
        assert_eq!(score(0, N1, LAMBDA[0]), MIN_SCORE);
        // Speech is likelier than noise only with enough of a scale active.
        assert!(score(12, N1, LAMBDA[0]) > 1.0);
        assert_eq!(score(1, N1, LAMBDA[0]), MIN_SCORE);
        assert!(score(5, N2, LAMBDA[1]) > score(3, N2, LAMBDA[1]));
        assert!((ln_binomial(5, 2) - 10f64.ln()).abs() < 1e-9);
        assert_eq!(ln_binomial(13, 0), 0.0);
    }

    #[test]
    fn a_loud_talker_speaks_and_dominates_a_silent_microphone_never_does() {
        let mut room = Speakers::default();
        let mut meters = vec![SpeechMeter::default(); 2];
        // Peer 1: speech at -12 dBov in bursts of 1 s over -60 dBov noise;
        // peer 2: a muted microphone (RFC 6464's 127) all along.
        let levels = [talk(12, 60, 50, 15, 6), vec![127; 390]];
        let views = run(&mut room, &mut meters, &levels);
        assert!(views.iter().all(|v| !v.speaking.contains(&PeerId(2))));
        assert!(views.iter().all(|v| v.dominant != Some(PeerId(2))));
        let first = views
            .iter()
            .position(|v| v.dominant == Some(PeerId(1)))
            .expect("the talker dominates");
        assert!(first <= 2, "within 0.9 s: {views:?}");
        assert!(views[first].speaking.contains(&PeerId(1)));
    }

    #[test]
    fn a_room_of_silence_has_no_dominant_speaker_and_noise_is_not_speech() {
        let mut room = Speakers::default();
        let mut meters = vec![SpeechMeter::default(); 2];
        let levels = [vec![127; 300], vec![70; 300]];
        for v in run(&mut room, &mut meters, &levels) {
            assert_eq!(v, SpeakersView::default());
        }
    }

    #[test]
    fn the_floor_passes_on_a_sustained_turn_and_not_on_a_short_interjection() {
        let mut room = Speakers::default();
        let mut meters = vec![SpeechMeter::default(); 2];
        // Peer 1 talks for 6 s, then is silent; peer 2 is silent for 3 s,
        // interjects for 0.2 s at 3 s, and takes a long turn from 6 s.
        let one = [talk(15, 60, 40, 10, 6), talk(60, 60, 1, 0, 300)].concat();
        let two = [
            talk(60, 60, 1, 0, 150),
            talk(15, 60, 10, 0, 1),
            talk(60, 60, 1, 0, 140),
            talk(15, 60, 40, 10, 6),
        ]
        .concat();
        let views = run(&mut room, &mut meters, &[one, two]);
        // 300 ms per view: 1 dominates from early on through the
        // interjection (views 10 to 19 are 3 to 6 s).
        assert!(
            views[3..20].iter().all(|v| v.dominant == Some(PeerId(1))),
            "{views:?}"
        );
        assert!(
            views[10..13]
                .iter()
                .any(|v| v.speaking.contains(&PeerId(2))),
            "the interjection is speech: {views:?}"
        );
        // 2's turn from 6 s takes the floor within 1.5 s.
        assert!(
            views[20..25].iter().any(|v| v.dominant == Some(PeerId(2))),
            "{views:?}"
        );
        assert!(
            views[25..].iter().all(|v| v.dominant == Some(PeerId(2))),
            "{views:?}"
        );
    }

    #[test]
    fn two_equal_talkers_do_not_flap_and_a_leaving_dominant_is_replaced() {
        let mut room = Speakers::default();
        let mut meters = vec![SpeechMeter::default(); 2];
        let levels = [talk(12, 60, 50, 10, 10), talk(12, 60, 50, 10, 10)];
        let views = run(&mut room, &mut meters, &levels);
        let first = views[0].dominant;
        assert!(first.is_some());
        assert!(views.iter().all(|v| v.dominant == first), "{views:?}");
        room.forget(first.expect("a dominant"));
        let other = room.view().dominant;
        assert!(other.is_some() && other != first, "{:?}", room.view());
    }

    #[test]
    fn missing_packets_count_as_silence() {
        let mut meter = SpeechMeter::default();
        for b in talk(10, 60, 30, 0, 1) {
            meter.hear(b);
        }
        assert!(meter.activity().speaking);
        meter.hear_silence(SPEAKING_WINDOW);
        let quiet = meter.activity();
        assert!(!quiet.speaking);
        assert_eq!(quiet.loudest_dbov, 127, "reset by the previous report");
    }
}
