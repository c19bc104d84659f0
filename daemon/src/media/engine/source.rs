//! A published track as the engine holds it: its codec, who receives it,
//! and its layers.
//!
//! A track that is not simulcast has one layer. A simulcast track (RID-based,
//! `a=simulcast` in the offer) has one layer per RID, ordered as the offer
//! lists them, lowest first (the order every client SDK uses for its
//! encodings); each layer is a separate RTP stream with its own SSRC,
//! sequence numbers, keyframes and NACK history, and subscribers get one of
//! them at a time (`simulcast::LayerSwitcher`).

use super::*;
use crate::media::simulcast::{layer_bit, VideoCodec};

/// How long a layer may go without a packet before it counts as stopped
/// (the publisher paused it, or its bandwidth estimate dropped it).
const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// How long a layer the publisher was asked to send again counts as
/// available before its first packet.
const RESUME_GRACE: Duration = Duration::from_secs(3);

/// One RTP stream of a published track.
pub(super) struct Layer {
    /// The RID, for simulcast layers.
    pub rid: Option<String>,
    /// The publisher's SSRC, once its first packet arrived.
    pub ssrc: Option<u32>,
    pub packets: u64,
    pub bytes: u64,
    /// Bytes and time at the start of the current bitrate window.
    pub rate_mark: (Instant, u64),
    pub bitrate_bps: u64,
    /// The highest bitrate of the last seconds, decaying by a twentieth a
    /// second: what a subscriber must have room for (keyframes and an
    /// encoder ramping up come on top of the last second's average).
    pub peak_bps: u64,
    /// When its last packet arrived.
    pub last_packet: Option<Instant>,
    /// Keyframe requests for it (see `keyframe`).
    pub keyframes: super::keyframe::Throttle,
    /// Recent packets, for NACKs (video only).
    pub history: History,
    /// The publisher's last sender report: NTP time and RTP time.
    pub sender_report: Option<(u64, u32)>,
    /// Width and height of its last key frame, where the codec tells.
    pub size: Option<(u32, u32)>,
    /// When a subscriber (or the recorder) last received it or waited for
    /// it (see `layers`).
    pub wanted_at: Instant,
    /// Set while the publisher is told not to send it: what it took before.
    pub paused: Option<u64>,
    /// When the publisher was last told to send it again.
    pub resumed_at: Option<Instant>,
}

impl Layer {
    pub(super) fn new(
        rid: Option<String>,
        ssrc: Option<u32>,
        kind: MediaKind,
        now: Instant,
    ) -> Self {
        Layer {
            rid,
            ssrc,
            packets: 0,
            bytes: 0,
            rate_mark: (now, 0),
            bitrate_bps: 0,
            peak_bps: 0,
            last_packet: None,
            keyframes: super::keyframe::Throttle::default(),
            history: History::new(match kind {
                MediaKind::Video => History::VIDEO,
                MediaKind::Audio => 0,
            }),
            sender_report: None,
            size: None,
            wanted_at: now,
            paused: None,
            resumed_at: None,
        }
    }

    /// How reports name it: its RID, or for SSRC simulcast (no RIDs) its
    /// index, 0 the lowest.
    pub(super) fn name(&self, index: usize) -> String {
        self.rid.clone().unwrap_or_else(|| index.to_string())
    }

    /// Whether the publisher is sending this layer.
    pub(super) fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// Whether a subscriber can be given it: the publisher sends it, or
    /// was told not to (and will again when asked), or was just asked to
    /// send it again and may still be starting its encoder.
    pub(super) fn available(&self, now: Instant) -> bool {
        self.active(now)
            || self.paused.is_some()
            || self
                .resumed_at
                .is_some_and(|t| now.saturating_duration_since(t) < RESUME_GRACE)
    }

    /// Someone receives it or waits for it now: true when the publisher
    /// was told to pause it and must be told to send it again.
    pub(super) fn want(&mut self, now: Instant) -> bool {
        self.wanted_at = now;
        let resumed = self.paused.take().is_some();
        if resumed {
            self.resumed_at = Some(now);
        }
        resumed
    }

    /// Updates `bitrate_bps` once a second.
    pub(super) fn measure(&mut self, now: Instant) {
        let (since, bytes) = self.rate_mark;
        let elapsed = now.duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            self.bitrate_bps = ((self.bytes - bytes) as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            self.peak_bps = self.bitrate_bps.max(self.peak_bps - self.peak_bps / 20);
            self.rate_mark = (now, self.bytes);
        }
    }
}

/// A subscriber of a track, with the layers its leg takes packets of: the
/// forwarding path skips a subscriber whose leg has no use for a packet's
/// layer without looking its connection and leg up (two map lookups, and
/// cache misses, per subscriber and packet: with three layers most of a
/// simulcast track's packets are of no use to most of its subscribers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Subscriber {
    pub conn: ConnId,
    /// One bit per layer (`Leg::layer_interest`).
    pub layers: u32,
}

/// One published track and who receives it.
pub(super) struct Source {
    pub info: TrackInfo,
    pub codec: RTCRtpCodec,
    /// Which of the switcher's codecs it is (video).
    pub video_codec: VideoCodec,
    pub extensions: Vec<(String, u16)>,
    pub conn: ConnId,
    pub receiver: RTCRtpReceiverId,
    /// Lowest first; one for a track that is not simulcast.
    pub layers: Vec<Layer>,
    pub subscribers: Vec<Subscriber>,
    pub payload_type: u8,
    pub tap: Option<Tap>,
    /// The layer the recorder's tap copies (the best one when it attached).
    pub tap_layer: usize,
    /// The track's id in the publisher's offer (`a=msid`), which the
    /// publisher is told which layers to send by.
    pub msid_track: String,
    /// For a mirror of a track another worker owns: that worker (see
    /// `pipe`). A mirror has no connection (`conn` is 0).
    pub origin: Option<usize>,
    /// The workers this worker pipes the track to (owner side).
    pub pipes: Vec<super::pipe::Pipe>,
    /// A mirror's: since when it has had no subscriber.
    pub unused_since: Option<Instant>,
    /// An audio track's level meter (owner side), when its publisher sends
    /// audio levels.
    pub speech: Option<Box<super::speech::SourceSpeech>>,
    /// Nothing of it is forwarded (`mute`).
    pub muted: bool,
    /// Whether its publisher stopped sending it without a word (`idle`;
    /// owner side).
    pub idle: super::idle::Idle,
    /// The room knows of it (a screen is not announced until shared).
    pub announced: bool,
    /// Its publisher is the room's dominant speaker: its video comes first
    /// in every subscriber's allocation.
    pub priority: bool,
}

impl Source {
    /// Whether subscribers get one of several layers.
    pub(super) fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The layer an SSRC belongs to.
    pub(super) fn layer_of(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == Some(ssrc))
    }

    /// The best layer the publisher is sending now, if any.
    pub(super) fn best_active(&self, now: Instant) -> Option<usize> {
        self.layers.iter().rposition(|l| l.active(now))
    }

    /// The best layer whose SSRC is known (for the recorder).
    pub(super) fn best_known(&self) -> usize {
        self.layers
            .iter()
            .rposition(|l| l.ssrc.is_some())
            .unwrap_or(0)
    }

    /// `ts` of layer `from` on the RTP timeline of layer `to`, by their
    /// sender reports (simulcast layers of one camera share capture times,
    /// not RTP timestamp bases).
    pub(super) fn align(&self, from: usize, ts: u32, to: usize) -> Option<u32> {
        let (ntp_from, rtp_from) = self.layers.get(from)?.sender_report?;
        let (ntp_to, rtp_to) = self.layers.get(to)?.sender_report?;
        let clock = f64::from(self.codec.clock_rate);
        let seconds = |ntp: u64| ntp as f64 / 4_294_967_296.0;
        let at = seconds(ntp_from) + f64::from(ts.wrapping_sub(rtp_from) as i32) / clock;
        let ticks = ((at - seconds(ntp_to)) * clock).round() as i64;
        Some(rtp_to.wrapping_add(ticks as u32))
    }

    /// Whether a packet of `layer` is of use to subscriber entry `i`.
    pub(super) fn wants(&self, i: usize, layer: usize) -> bool {
        self.subscribers[i].layers & layer_bit(layer) != 0
    }

    /// Records which layers `conn`'s leg takes packets of now.
    pub(super) fn set_interest(&mut self, conn: ConnId, layers: u32) {
        if let Some(s) = self.subscribers.iter_mut().find(|s| s.conn == conn) {
            s.layers = layers;
        }
    }

    /// Packets received, all layers together.
    pub(super) fn packets(&self) -> u64 {
        self.layers.iter().map(|l| l.packets).sum()
    }

    /// Payload bytes received, all layers together.
    pub(super) fn bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.bytes).sum()
    }

    /// Subscriber legs, on this worker and on those it pipes to.
    pub(super) fn all_subscribers(&self) -> usize {
        self.subscribers.len()
            + self
                .pipes
                .iter()
                .map(|p| p.subscribers as usize)
                .sum::<usize>()
    }

    /// Bitrate of the last second, all layers together.
    pub(super) fn bitrate_bps(&self) -> u64 {
        self.layers.iter().map(|l| l.bitrate_bps).sum()
    }
}
