//! A subscriber's downlink: what fits on it, and how the engine finds out.
//!
//! Browsers answer the transport-wide sequence numbers the engine stamps on
//! everything it sends them with feedback: which packets arrived, and when
//! (`twcc`). [`Downlink`] reads congestion from it as a queue that stands
//! (every packet of half a second delayed well past the lowest one-way delay
//! seen) or heavy loss, and takes what the link delivered meanwhile as its
//! capacity. Without congestion nothing limits a subscriber. When the link
//! is not known to carry the next better allocation, the engine probes: for
//! a moment it sends more (retransmissions of what it just forwarded, on the
//! legs' RTX streams) up to what that allocation needs, and the link passes
//! if it delivered most of it without a queue building.
//!
//! Clients without transport-wide feedback report their own estimate as
//! REMB (from the abs-send-time the engine stamps). It is reliable when it
//! falls, so a fall is congestion; it rises too slowly (about 8% a second,
//! never above 1.5 times what arrives) to lift a subscriber, so probes
//! decide there too, and pass when it does not fall.
//!
//! `allocation` then shares the capacity between the simulcast tracks a
//! subscriber receives. All of it is plain and tested without sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::twcc::SendHistory;

/// A fall of the estimate by this fraction of its recent peak is congestion.
const FALL: f64 = 0.85;
/// How long a peak counts as recent.
const PEAK_WINDOW: Duration = Duration::from_secs(3);
/// How long a probe lasts.
const PROBE_FOR: Duration = Duration::from_millis(600);
/// Wait before the first probe after congestion, doubled after each probe
/// that failed, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Wait before the next probe after one passed.
const AFTER_PASS: Duration = Duration::from_millis(500);
/// A probe aims this much above what the next allocation needs.
const PROBE_HEADROOM: f64 = 1.1;
/// A queue that stands this long (every packet of the window delayed by
/// more than [`STANDING_QUEUE_US`]) is congestion; a keyframe's burst that
/// drains within the window is not.
const QUEUE_WINDOW_US: i64 = 500_000;
const STANDING_QUEUE_US: i64 = 40_000;
/// A queue that grows fast is congestion sooner: every packet of the last
/// [`DEEP_WINDOW_US`] (and at least [`DEEP_PACKETS`]) delayed by more than
/// [`DEEP_QUEUE_US`]. That is a link that just narrowed under a layer it
/// can no longer carry; the half-second rule would let it queue most of a
/// second of video, which the lower layer's key frame then has to cross.
/// A key frame's burst would have to fill the link for 0.3 s to match it.
const DEEP_WINDOW_US: i64 = 200_000;
const DEEP_QUEUE_US: i64 = 100_000;
const DEEP_PACKETS: usize = 6;
/// How long after congestion a move down drops the layer at once rather
/// than at the lower layer's key frame (`LayerSwitcher::drop_to`).
const CONGESTED_FOR: Duration = Duration::from_secs(1);
/// Share of a link's capacity the allocation fills.
const MARGIN: f64 = 0.85;
/// With no queue at all, the link is taken to carry this much more than it
/// delivered.
const GROWTH: f64 = 1.25;
/// How long a paused track waits, without congestion, to resume; doubled
/// after each resume that congestion followed, up to [`MAX_RESUME_AFTER`]
/// (a link that cannot carry a track is not flooded every few seconds).
const RESUME_AFTER: Duration = Duration::from_secs(5);
const MAX_RESUME_AFTER: Duration = Duration::from_secs(60);
/// A resume that this long passed without congestion held.
const RESUME_HELD: Duration = Duration::from_secs(10);
/// How long a failed probe's queue is given to drain.
const DRAIN: Duration = Duration::from_secs(2);
/// Least time between two cuts of the capacity.
const CUT_INTERVAL: Duration = Duration::from_secs(1);
/// How long after congestion the capacity may grow without a probe.
const CALM: Duration = Duration::from_secs(10);
/// Fewest packets a delivery rate is measured over.
const MIN_PACKETS: usize = 20;
/// Loss above this share of the last second's packets is congestion.
const LOSS: f64 = 0.2;
/// How long the lowest one-way delay is remembered (two buckets of it).
const BASE_DELAY_BUCKET: Duration = Duration::from_secs(5);
/// A probe passes when the link delivered at least this share of its target.
const PROBE_DELIVERED: f64 = 0.85;
/// A probe whose packets queue this long (one-way delay over the lowest)
/// has failed already: it stops at once, before its queue freezes video.
const PROBE_ABORT_US: i64 = 50_000;

/// What a subscriber's link is known to carry; see the module docs.
#[derive(Debug)]
pub(crate) struct Downlink {
    /// The last estimate (REMB), bits per second.
    estimate: Option<u64>,
    /// The highest estimate of the last [`PEAK_WINDOW`], and when.
    peak: Option<(u64, Instant)>,
    /// What the link carries since congestion was seen; `None`: no
    /// congestion seen (or a probe showed more room than needed).
    capacity: Option<u64>,
    /// No probe before this.
    hold_until: Option<Instant>,
    backoff: Duration,
    probe: Option<Probe>,
    /// Packets sent, for the subscriber's transport-wide feedback (TWCC).
    pub(crate) sent: SendHistory,
    /// Whether the subscriber sends TWCC feedback (then probes must show
    /// the rate delivered, not only the absence of a fall).
    twcc: bool,
    /// Lowest one-way delay (µs, mixing both clocks: only differences count)
    /// of the current bucket and when it began, and of the previous bucket.
    base_delay: Option<(i64, Instant)>,
    previous_base_delay: Option<i64>,
    /// Arrivals of the last second: arrival time (µs, receiver's clock),
    /// bytes, one-way delay.
    recent: VecDeque<(i64, u32, i64)>,
    /// The best delivery rate measured while the current probe ran.
    probe_delivered: u64,
    /// When congestion was last seen.
    last_congestion: Option<Instant>,
    /// How long a paused track waits to resume now, and when one last
    /// resumed (until congestion followed, or it held).
    resume_after: Duration,
    resumed_at: Option<Instant>,
    /// While a failed probe's queue drains, congestion is not news.
    quiet_until: Option<Instant>,
    /// What the link delivered over the last second, per the last feedback.
    delivered: Option<u64>,
    /// Each feedback of the last second: when, packets lost and received.
    losses: VecDeque<(Instant, u32, u32)>,
}

/// A probe under way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Probe {
    /// The rate probed for, bits per second.
    pub target: u64,
    /// When it ends.
    pub until: Instant,
}

impl Default for Downlink {
    fn default() -> Self {
        Downlink {
            estimate: None,
            peak: None,
            capacity: None,
            hold_until: None,
            backoff: FIRST_BACKOFF,
            probe: None,
            sent: SendHistory::default(),
            twcc: false,
            base_delay: None,
            previous_base_delay: None,
            recent: VecDeque::new(),
            probe_delivered: 0,
            last_congestion: None,
            resume_after: RESUME_AFTER,
            resumed_at: None,
            quiet_until: None,
            delivered: None,
            losses: VecDeque::new(),
        }
    }
}

impl Downlink {
    /// What the subscriber's link is estimated to carry, bits per second:
    /// its browser's REMB, else the capacity congestion showed, else what
    /// the link delivered lately (a lower bound).
    pub(crate) fn estimate(&self) -> Option<u64> {
        self.estimate.or(self.capacity).or(self.delivered)
    }

    /// Whether congestion was seen in the last [`CONGESTED_FOR`]: a move
    /// down then cannot wait for the lower layer's key frame.
    pub(crate) fn congested(&self, now: Instant) -> bool {
        self.last_congestion
            .is_some_and(|t| now.saturating_duration_since(t) < CONGESTED_FOR)
    }

    /// The probe under way, if any.
    pub(crate) fn probe(&self) -> Option<Probe> {
        self.probe
    }

    /// A new estimate from the subscriber.
    pub(crate) fn on_estimate(&mut self, bps: u64, now: Instant) {
        self.estimate = Some(bps);
        let peak = match self.peak {
            Some((p, at)) if now.saturating_duration_since(at) < PEAK_WINDOW => p,
            _ => 0,
        };
        if peak > 0 && (bps as f64) < FALL * peak as f64 {
            // Congestion: what arrived is what the link carries.
            self.peak = Some((bps, now));
            self.congestion(bps, now);
            return;
        }
        if bps >= peak {
            self.peak = Some((bps, now));
        }
        // The browser's own estimate grew past what congestion showed.
        if let Some(capacity) = self.capacity {
            if bps > capacity {
                self.capacity = Some(bps);
            }
        }
    }

    /// The link carries `bps` and no more: a probe under way failed.
    fn congestion(&mut self, bps: u64, now: Instant) {
        if self.probe.is_some() {
            self.fail_probe(now);
            return;
        }
        if self.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        // One cut per [`CUT_INTERVAL`] (a queue stands through several
        // feedbacks), and at most by half: the link is measured again next.
        if self
            .last_congestion
            .is_some_and(|t| now.saturating_duration_since(t) < CUT_INTERVAL)
        {
            return;
        }
        self.capacity = Some(match self.capacity {
            Some(c) => bps.max(c / 2),
            None => bps,
        });
        self.last_congestion = Some(now);
        if let Some(resumed) = self.resumed_at.take() {
            self.resume_after = if now.saturating_duration_since(resumed) < RESUME_HELD {
                (self.resume_after * 2).min(MAX_RESUME_AFTER)
            } else {
                RESUME_AFTER
            };
        }
        self.backoff = FIRST_BACKOFF;
        self.hold_until = Some(now + self.backoff);
    }

    /// The probe under way failed: its own extra load built the queue, and
    /// what the link carried before it still holds. Its queue takes a while
    /// to drain, which is no news either.
    fn fail_probe(&mut self, now: Instant) {
        self.probe = None;
        self.probe_delivered = 0;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.hold_until = Some(now + self.backoff);
        self.quiet_until = Some(now + DRAIN);
    }

    /// A transport-wide feedback from the subscriber, decoded
    /// (`twcc::arrivals`): each packet's number and arrival time (µs on the
    /// receiver's clock), `None` if lost. A queue that stands for
    /// [`QUEUE_WINDOW_US`] or heavy loss is congestion, and what the link
    /// delivered meanwhile its capacity.
    pub(crate) fn on_transport_feedback(&mut self, arrivals: &[(u16, Option<i64>)], now: Instant) {
        self.twcc = true;
        let (mut lost, mut got) = (0u32, 0u32);
        for (seq, arrival) in arrivals {
            let Some(sent) = self.sent.get(*seq) else {
                continue;
            };
            let Some(arrival) = arrival else {
                lost += 1;
                continue;
            };
            got += 1;
            let delay = arrival - sent.at_us;
            self.note_delay(delay, now);
            self.recent.push_back((*arrival, sent.bytes, delay));
        }
        let Some(&(newest, _, newest_delay)) = self.recent.back() else {
            return;
        };
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| *at < newest - 1_000_000)
        {
            self.recent.pop_front();
        }
        let base = match (self.base_delay, self.previous_base_delay) {
            (Some((b, _)), Some(p)) => b.min(p),
            (Some((b, _)), None) => b,
            _ => return,
        };
        // A probe stops at the first sign of a queue: waiting for one that
        // stands would let it grow for the whole probe (0.6 s at up to
        // twice the link's rate: a third of a second of frozen video).
        if self.probe.is_some() && newest_delay - base > PROBE_ABORT_US {
            tracing::debug!(
                queue_us = newest_delay - base,
                "probe stopped: its packets queue"
            );
            self.fail_probe(now);
            return;
        }
        // The queue: the least delay of the window; the rate: what arrived
        // over the whole second kept.
        let window_start = newest - QUEUE_WINDOW_US;
        let mut first = newest;
        let mut standing = i64::MAX;
        let (mut window_bytes, mut window_packets) = (0u64, 0usize);
        for (at, size, delay) in self.recent.iter().filter(|(at, _, _)| *at >= window_start) {
            first = first.min(*at);
            standing = standing.min(delay - base);
            window_bytes += u64::from(*size);
            window_packets += 1;
        }
        let span = newest - first;
        // The last half second alone: right after the link narrowed, the
        // second kept still holds what arrived before.
        let lately = (span >= QUEUE_WINDOW_US / 2 && window_packets >= MIN_PACKETS / 2)
            .then(|| window_bytes * 8 * 1_000_000 / span as u64);
        let oldest = self.recent.front().map_or(newest, |r| r.0);
        let bytes: u64 = self.recent.iter().map(|(_, b, _)| u64::from(*b)).sum();
        let delivered = (newest - oldest >= QUEUE_WINDOW_US && self.recent.len() >= MIN_PACKETS)
            .then(|| bytes * 8 * 1_000_000 / (newest - oldest) as u64);
        if delivered.is_some() {
            self.delivered = delivered;
        }
        // A probe is judged by the last half second: the second kept still
        // holds what came before it.
        if let (Some(rate), Some(_)) = (lately.or(delivered), self.probe) {
            self.probe_delivered = self.probe_delivered.max(rate);
        }
        let queued = span >= QUEUE_WINDOW_US * 4 / 5 && standing > STANDING_QUEUE_US;
        // The last fifth of a second alone, for a queue that grows fast. Every packet
        // of it waited, so the link was busy throughout: what arrived over
        // it is exactly what the link carries.
        let (mut deep_first, mut deep_least) = (newest, i64::MAX);
        let (mut deep_bytes, mut deep_packets) = (0u64, 0usize);
        let (mut sent_first, mut sent_last) = (i64::MAX, i64::MIN);
        for (at, size, delay) in self
            .recent
            .iter()
            .rev()
            .take_while(|(at, _, _)| *at >= newest - DEEP_WINDOW_US)
        {
            deep_first = deep_first.min(*at);
            deep_least = deep_least.min(delay - base);
            deep_bytes += u64::from(*size);
            deep_packets += 1;
            sent_first = sent_first.min(at - delay);
            sent_last = sent_last.max(at - delay);
        }
        let deep_span = newest - deep_first;
        // And the link did not keep up: those packets took longer to arrive
        // than to send. A stall (the loop's or the receiver's) that let
        // them out late in one burst shows the other way round.
        let falling_behind = deep_span * 4 > (sent_last - sent_first) * 5;
        let deep = (deep_span >= DEEP_WINDOW_US * 4 / 5
            && deep_packets >= DEEP_PACKETS
            && deep_least > DEEP_QUEUE_US
            && falling_behind)
            .then(|| deep_bytes * 8 * 1_000_000 / deep_span as u64);
        // Loss over the last second, not one feedback's handful of packets.
        self.losses.push_back((now, lost, got));
        while self
            .losses
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > Duration::from_secs(1))
        {
            self.losses.pop_front();
        }
        let (lost_s, got_s) = self
            .losses
            .iter()
            .fold((0u32, 0u32), |(l, g), (_, lost, got)| (l + lost, g + got));
        let lossy = lost_s + got_s >= MIN_PACKETS as u32 * 2
            && f64::from(lost_s) > LOSS * f64::from(lost_s + got_s);
        if queued || lossy || deep.is_some() {
            // A standing queue or loss: the lower of the last half second's
            // rate and the last second's (right after the link narrowed,
            // the second still holds what arrived before). A fast-growing
            // queue alone: the fifth of a second that queued throughout (the
            // longer windows still hold the rate before the link narrowed).
            let rate = if queued || lossy {
                delivered.map(|d| lately.map_or(d, |l| l.min(d)))
            } else {
                deep
            };
            if let Some(rate) = rate {
                tracing::debug!(rate, ?lately, ?deep, standing, lost, got, queued, lossy, capacity = ?self.capacity, probe = ?self.probe.map(|p| p.target), "congestion");
                self.congestion(rate, now);
            }
        } else if let (Some(rate), Some(capacity)) = (delivered, self.capacity) {
            // No queue for a while: the link carries what it delivers, and
            // some more (as a publisher's layer grows, its subscribers keep
            // it). Not right after congestion: a draining queue delivers at
            // exactly the link's rate.
            let calm = self
                .last_congestion
                .is_none_or(|t| now.saturating_duration_since(t) >= CALM);
            if calm && standing < STANDING_QUEUE_US / 4 && lost == 0 {
                self.capacity = Some(capacity.max((rate as f64 * GROWTH) as u64));
            }
        }
    }

    /// Keeps the lowest one-way delay of the last two buckets.
    fn note_delay(&mut self, delay: i64, now: Instant) {
        match self.base_delay {
            Some((_, since)) if now.saturating_duration_since(since) >= BASE_DELAY_BUCKET => {
                self.previous_base_delay = self.base_delay.map(|(b, _)| b);
                self.base_delay = Some((delay, now));
            }
            Some((b, since)) if delay < b => self.base_delay = Some((delay, since)),
            Some(_) => {}
            None => self.base_delay = Some((delay, now)),
        }
    }

    /// Ends a probe whose time is up. It passed if the link did not show
    /// congestion meanwhile and, where the subscriber sends transport-wide
    /// feedback, delivered most of the probe's rate; the link then carries
    /// what it delivered.
    pub(crate) fn tick(&mut self, now: Instant) {
        let Some(probe) = self.probe.filter(|p| now >= p.until) else {
            return;
        };
        self.probe = None;
        let delivered = std::mem::take(&mut self.probe_delivered);
        if self.twcc && (delivered as f64) < PROBE_DELIVERED * probe.target as f64 {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            self.hold_until = Some(now + self.backoff);
            self.quiet_until = Some(now + DRAIN);
            self.capacity = Some(self.capacity.map_or(delivered, |c| c.max(delivered)));
            return;
        }
        // The next step up may be probed for soon: a link that had room
        // for this one often has more.
        self.backoff = FIRST_BACKOFF;
        self.hold_until = Some(now + AFTER_PASS);
        self.capacity = self.capacity.map(|c| c.max(probe.target));
        // The link showed room: what it delivers from now on may raise the
        // capacity at once (a layer's encoder ramping up after the switch).
        self.last_congestion = None;
    }

    /// What the engine may send to this subscriber now, bits per second
    /// (`u64::MAX`: no limit known): what the link carries, less a margin
    /// so that a layer that just fits does not fill the link's queue.
    pub(crate) fn budget(&self) -> u64 {
        self.capacity
            .map_or(u64::MAX, |c| (c as f64 * MARGIN) as u64)
    }

    /// Lets a paused track resume after a calm while: nothing it sends can
    /// probe for it, so the link is taken to carry `needed` (what its lowest
    /// layer takes); if it does not, congestion says so again.
    pub(crate) fn resume(&mut self, needed: u64, now: Instant) {
        if self
            .resumed_at
            .is_some_and(|t| now.saturating_duration_since(t) >= RESUME_HELD)
        {
            self.resumed_at = None;
            self.resume_after = RESUME_AFTER;
        }
        let calm = self
            .last_congestion
            .is_none_or(|t| now.saturating_duration_since(t) >= self.resume_after);
        if calm && self.probe.is_none() && needed > self.budget() {
            self.capacity = Some((needed as f64 / MARGIN) as u64 + 1);
            self.resumed_at = Some(now);
        }
    }

    /// Starts a probe for `needed` (what the next better allocation takes),
    /// unless one runs, the link is known to carry it, or congestion was too
    /// recent; returns whether one started.
    pub(crate) fn maybe_probe(&mut self, needed: u64, now: Instant) -> bool {
        if self.probe.is_some() || needed <= self.budget() {
            return false;
        }
        if self.hold_until.is_some_and(|t| now < t) {
            return false;
        }
        self.probe = Some(Probe {
            // What the link must carry for the budget to cover `needed`.
            target: (needed as f64 * PROBE_HEADROOM / MARGIN) as u64,
            until: now + PROBE_FOR,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated link: packets of `bytes` sent every `gap_us` from `start_us`
    /// through a bottleneck of `link_bps` (FIFO, no loss); feedback every
    /// 100 ms of sending. Returns when the last feedback was given.
    fn through_link(
        d: &mut Downlink,
        t0: Instant,
        start_us: i64,
        duration_us: i64,
        gap_us: i64,
        bytes: u32,
        link_bps: u64,
    ) -> Instant {
        let mut free_at = start_us; // when the bottleneck is next idle
        let mut batch = Vec::new();
        let mut next_feedback = start_us + 100_000;
        let mut at = start_us;
        let mut last = t0;
        while at < start_us + duration_us {
            let seq = d.sent.push(at, bytes);
            let serialise = (u64::from(bytes) * 8 * 1_000_000 / link_bps) as i64;
            free_at = free_at.max(at) + serialise;
            // The receiver's clock is offset: only differences count.
            batch.push((seq, Some(free_at + 5_000_000)));
            at += gap_us;
            if at >= next_feedback {
                last = t0 + Duration::from_micros(at as u64);
                d.on_transport_feedback(&batch, last);
                batch.clear();
                next_feedback += 100_000;
            }
        }
        if !batch.is_empty() {
            last = t0 + Duration::from_micros(at as u64);
            d.on_transport_feedback(&batch, last);
        }
        last
    }

    #[test]
    fn a_track_that_congests_again_waits_twice_as_long_to_resume() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Downlink::default();
        // Congestion: the link carries 200 kbit/s; a paused track needs 600.
        d.congestion(200_000, at(0));
        d.resume(600_000, at(4));
        assert!(d.budget() < 600_000, "not calm for 5 s yet");
        d.resume(600_000, at(5));
        assert!(d.budget() >= 600_000, "resumed after 5 s of calm");
        // It congests again at once: the next try waits 10 s, then 20.
        d.congestion(200_000, at(6));
        d.resume(600_000, at(15));
        assert!(d.budget() < 600_000, "not 10 s yet");
        d.resume(600_000, at(16));
        assert!(d.budget() >= 600_000, "resumed after 10 s of calm");
        d.congestion(200_000, at(17));
        d.resume(600_000, at(36));
        assert!(d.budget() < 600_000, "not 20 s yet");
        d.resume(600_000, at(37));
        assert!(d.budget() >= 600_000, "resumed after 20 s of calm");
        // That one held for 10 s: the next pause waits 5 s again.
        d.congestion(200_000, at(60));
        d.resume(600_000, at(65));
        assert!(
            d.budget() >= 600_000,
            "back to 5 s after a resume that held"
        );
    }

    #[test]
    fn a_link_that_keeps_up_shows_no_congestion() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        // 800 kbit/s through a 2 Mbit/s link for 3 s.
        through_link(&mut d, t0, 0, 3_000_000, 10_000, 1000, 2_000_000);
        assert_eq!(d.budget(), u64::MAX);
        assert!(
            d.estimate()
                .is_some_and(|bps| (700_000..900_000).contains(&bps)),
            "{:?}",
            d.estimate()
        );
    }

    #[test]
    fn a_standing_queue_is_congestion_and_what_arrived_the_capacity() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        through_link(&mut d, t0, 0, 1_000_000, 10_000, 1000, 2_000_000);
        // Then 800 kbit/s into 400 kbit/s: the queue grows and stands.
        through_link(&mut d, t0, 1_000_000, 2_000_000, 10_000, 1000, 400_000);
        let budget = d.budget();
        assert!(budget < 450_000 && budget > 250_000, "budget {budget}");
    }

    #[test]
    fn a_link_that_narrows_far_below_the_rate_is_congestion_within_0_4_s() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        // 2.4 Mbit/s of 1200-byte packets on an open link...
        through_link(&mut d, t0, 0, 2_000_000, 4_000, 1200, 100_000_000);
        assert!(!d.congested(t0 + Duration::from_secs(2)));
        // ...then the link drops to 400 kbit/s, and the sender goes on. The
        // receiver reports every 100 ms what has arrived by then.
        let mut in_flight = std::collections::VecDeque::new();
        let (mut free_at, mut sent_at, mut now_us) = (2_000_000i64, 2_000_000i64, 2_000_000i64);
        let mut seen = None;
        while now_us < 3_000_000 && seen.is_none() {
            now_us += 100_000;
            while sent_at < now_us {
                let seq = d.sent.push(sent_at, 1200);
                free_at = free_at.max(sent_at) + 1200 * 8 * 1_000_000 / 400_000;
                in_flight.push_back((seq, free_at));
                sent_at += 4_000;
            }
            let mut batch = Vec::new();
            while in_flight.front().is_some_and(|(_, at)| *at <= now_us) {
                let (seq, at) = in_flight.pop_front().expect("front");
                batch.push((seq, Some(at + 5_000_000)));
            }
            let now = t0 + Duration::from_micros(now_us as u64);
            d.on_transport_feedback(&batch, now);
            if d.congested(now) {
                seen = Some(now_us - 2_000_000);
            }
        }
        let after = seen.expect("the narrowed link is congestion");
        assert!(after <= 400_000, "seen {after} µs after the drop");
        let budget = d.budget();
        assert!(
            (250_000..=400_000).contains(&budget),
            "the capacity is the narrow link's: budget {budget}"
        );
    }

    #[test]
    fn a_loop_that_falls_behind_and_catches_up_is_not_congestion() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        through_link(&mut d, t0, 0, 2_000_000, 4_000, 1200, 100_000_000);
        // The loop falls 400 ms behind: what it stamped over 400 ms leaves
        // late, over 200 ms, as it catches up.
        let mut batch = Vec::new();
        for i in 0..100i64 {
            let seq = d.sent.push(2_000_000 + i * 4_000, 1200);
            batch.push((seq, Some(2_400_000 + i * 2_000 + 5_000_000)));
        }
        let at = t0 + Duration::from_micros(2_700_000);
        d.on_transport_feedback(&batch, at);
        assert!(!d.congested(at));
        assert_eq!(d.budget(), u64::MAX);
    }

    #[test]
    fn a_keyframe_burst_that_drains_is_not_congestion() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        // 300 kbit/s through 1 Mbit/s, with 40 kB bursts every 2 s (each
        // drains in 320 ms).
        for second in 0..4i64 {
            let start = second * 1_000_000;
            if second % 2 == 0 {
                through_link(&mut d, t0, start, 40_000, 1_000, 1000, 1_000_000);
            }
            through_link(&mut d, t0, start + 40_000, 960_000, 26_000, 1000, 1_000_000);
        }
        assert_eq!(d.budget(), u64::MAX, "no standing queue");
    }

    #[test]
    fn a_falling_estimate_is_the_capacity_and_a_rising_one_is_not_needed() {
        let t = Instant::now();
        let mut d = Downlink::default();
        assert_eq!(d.budget(), u64::MAX, "nothing known: no limit");
        for (i, bps) in [800_000, 900_000, 1_000_000].into_iter().enumerate() {
            d.on_estimate(bps, t + Duration::from_millis(500 * i as u64));
        }
        assert_eq!(d.budget(), u64::MAX, "a rising estimate limits nothing");
        d.on_estimate(390_000, t + Duration::from_millis(1600));
        assert_eq!(d.budget(), (390_000.0 * MARGIN) as u64);
        d.on_estimate(420_000, t + Duration::from_millis(2600));
        assert_eq!(
            d.budget(),
            (420_000.0 * MARGIN) as u64,
            "the browser's own growth counts"
        );
    }

    #[test]
    fn a_probe_the_link_cannot_carry_stops_before_its_queue_freezes_video() {
        let t0 = Instant::now();
        let mut d = Downlink::default();
        // 250 kbit/s through a 300 kbit/s link, after a cut that makes the
        // capacity known (and holds probes off for a while).
        through_link(&mut d, t0, 0, 2_000_000, 32_000, 1000, 300_000);
        d.on_estimate(300_000, t0 + Duration::from_secs(2));
        d.on_estimate(250_000, t0 + Duration::from_millis(2_100));
        let start = t0 + Duration::from_secs(8);
        through_link(&mut d, t0, 2_100_000, 5_900_000, 32_000, 1000, 300_000);
        assert!(
            d.maybe_probe(500_000, start),
            "a probe for 500 kbit/s starts"
        );
        // The probe doubles what is sent: 500 kbit/s into 300.
        let mut queue_us = 0;
        let mut free_at = 8_000_000i64;
        let mut at = 8_000_000i64;
        let mut batch = Vec::new();
        while d.probe().is_some() && at < 8_600_000 {
            let seq = d.sent.push(at, 1000);
            free_at = free_at.max(at) + 1000 * 8 * 1_000_000 / 300_000;
            queue_us = queue_us.max(free_at - at);
            batch.push((seq, Some(free_at + 5_000_000)));
            at += 16_000;
            if batch.len() == 6 {
                d.on_transport_feedback(&batch, t0 + Duration::from_micros(at as u64));
                batch.clear();
            }
        }
        assert_eq!(d.probe(), None, "the probe stopped");
        assert!(
            at < 8_400_000,
            "it stopped {} ms in",
            (at - 8_000_000) / 1000
        );
        assert!(
            queue_us < 150_000,
            "its queue reached {} ms",
            queue_us / 1000
        );
        assert!(
            d.budget() < 300_000,
            "what the link carried before still holds"
        );
    }

    #[test]
    fn a_probe_that_holds_raises_the_capacity_and_one_that_fails_backs_off() {
        let t = Instant::now();
        let mut d = Downlink::default();
        d.on_estimate(1_000_000, t);
        d.on_estimate(300_000, t + Duration::from_millis(100));
        let after = t + Duration::from_millis(100);
        assert!(
            !d.maybe_probe(700_000, after + Duration::from_secs(1)),
            "held after congestion"
        );
        let start = after + FIRST_BACKOFF;
        assert!(d.maybe_probe(700_000, start));
        assert!(!d.maybe_probe(700_000, start), "one at a time");
        // It fails: the estimate falls during the probe; what the link
        // carried before it still holds.
        d.on_estimate(240_000, start + Duration::from_millis(500));
        assert_eq!(d.probe(), None);
        assert_eq!(d.budget(), (300_000.0 * MARGIN) as u64);
        let retry = start + Duration::from_millis(500) + FIRST_BACKOFF * 2;
        assert!(
            !d.maybe_probe(700_000, retry - Duration::from_millis(1)),
            "backed off twice as long"
        );
        assert!(d.maybe_probe(700_000, retry));
        // This one holds.
        d.tick(retry + PROBE_FOR);
        assert_eq!(d.probe(), None);
        let target = (700_000.0 * PROBE_HEADROOM / MARGIN) as u64;
        assert_eq!(d.budget(), (target as f64 * MARGIN) as u64);
        assert!(
            d.budget() >= 700_000,
            "the budget covers what was probed for"
        );
        assert!(
            !d.maybe_probe(700_000, retry + PROBE_FOR + FIRST_BACKOFF),
            "the link carries it"
        );
    }
}
