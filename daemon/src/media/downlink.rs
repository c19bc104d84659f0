//! A subscriber's downlink: what fits on it, and how the engine finds out.
//!
//! The subscriber's browser estimates its downlink from the send times the
//! engine stamps on forwarded video (abs-send-time) and reports the estimate
//! as REMB. That estimate is reliable when it falls: the browser cuts it to
//! what arrived when it saw queues grow. It is not when it rises: the browser
//! raises it by about 8% a second and never above 1.5 times what it receives,
//! so a subscriber held on a low layer would wait minutes to be allowed back
//! up. [`Downlink`] therefore treats a fall as the capacity of the link, and
//! learns that the link has room again by probing: for a short while the
//! engine sends more (retransmissions of what it just sent, on the leg's RTX
//! stream) up to what the next layer needs; if the browser's estimate does
//! not fall meanwhile, that rate fits.
//!
//! [`allocate`] then shares the capacity between the simulcast tracks a
//! subscriber receives. Both are plain and tested without sockets.

use std::time::{Duration, Instant};

/// A fall of the estimate by this fraction of its recent peak is congestion.
const FALL: f64 = 0.85;
/// How long a peak counts as recent.
const PEAK_WINDOW: Duration = Duration::from_secs(3);
/// How long a probe lasts.
const PROBE_FOR: Duration = Duration::from_millis(1500);
/// Wait before the first probe after congestion, doubled after each probe
/// that failed, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A probe aims this much above what the next allocation needs.
const PROBE_HEADROOM: f64 = 1.15;

/// What a subscriber's link is known to carry; see the module docs.
#[derive(Debug, Clone)]
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
        }
    }
}

impl Downlink {
    /// The subscriber's latest estimate, bits per second.
    pub(crate) fn estimate(&self) -> Option<u64> {
        self.estimate
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
            self.capacity = Some(bps);
            self.peak = Some((bps, now));
            if self.probe.take().is_some() {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            } else {
                self.backoff = FIRST_BACKOFF;
            }
            self.hold_until = Some(now + self.backoff);
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

    /// Ends a probe whose time is up: it succeeded, since the estimate did
    /// not fall meanwhile, so the link carries its target.
    pub(crate) fn tick(&mut self, now: Instant) {
        if let Some(probe) = self.probe {
            if now >= probe.until {
                self.probe = None;
                self.backoff = FIRST_BACKOFF;
                self.hold_until = Some(now + FIRST_BACKOFF);
                self.capacity = self.capacity.map(|c| c.max(probe.target));
            }
        }
    }

    /// What the engine may send to this subscriber now, bits per second
    /// (`u64::MAX`: no limit known).
    pub(crate) fn budget(&self) -> u64 {
        self.capacity.unwrap_or(u64::MAX)
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
            target: (needed as f64 * PROBE_HEADROOM) as u64,
            until: now + PROBE_FOR,
        });
        true
    }
}

/// Shares `budget` (bits per second) between simulcast tracks, most
/// important first. `rates[i][l]` is what layer `l` of track `i` takes, or
/// `None` when the publisher does not send it. Every track gets its lowest
/// layer first; tracks for which even that does not fit are paused
/// (`None`), the least important first; what is left lifts tracks one layer
/// at a time, the most important first.
pub(crate) fn allocate(budget: u64, rates: &[Vec<Option<u64>>]) -> Vec<Option<usize>> {
    let mut left = budget;
    let mut chosen: Vec<Option<usize>> = rates
        .iter()
        .map(|layers| {
            let (lowest, rate) = layers
                .iter()
                .enumerate()
                .find_map(|(l, r)| r.map(|r| (l, r)))?;
            (rate <= left).then(|| {
                left -= rate;
                lowest
            })
        })
        .collect();
    loop {
        let mut lifted = false;
        for (i, layers) in rates.iter().enumerate() {
            let Some(now) = chosen[i] else {
                continue;
            };
            let current = layers[now].unwrap_or(0);
            let Some((up, rate)) = layers
                .iter()
                .enumerate()
                .skip(now + 1)
                .find_map(|(l, r)| r.map(|r| (l, r)))
            else {
                continue;
            };
            let extra = rate.saturating_sub(current);
            if extra <= left {
                left -= extra;
                chosen[i] = Some(up);
                lifted = true;
            }
        }
        if !lifted {
            return chosen;
        }
    }
}

/// What one allocation costs, bits per second.
pub(crate) fn cost(rates: &[Vec<Option<u64>>], chosen: &[Option<usize>]) -> u64 {
    rates
        .iter()
        .zip(chosen)
        .filter_map(|(layers, c)| layers.get((*c)?).copied().flatten())
        .sum()
}

/// The next better allocation than `chosen` (the most important track that
/// can go up, one layer up), if any: what a probe must show room for.
pub(crate) fn next_better(
    rates: &[Vec<Option<u64>>],
    chosen: &[Option<usize>],
) -> Option<Vec<Option<usize>>> {
    for (i, layers) in rates.iter().enumerate() {
        let from = chosen[i].map_or(0, |c| c + 1);
        if let Some(up) = (from..layers.len()).find(|l| layers[*l].is_some()) {
            let mut better = chosen.to_vec();
            better[i] = Some(up);
            return Some(better);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u64 = 150_000;
    const H: u64 = 500_000;
    const F: u64 = 1_500_000;

    fn three() -> Vec<Option<u64>> {
        vec![Some(Q), Some(H), Some(F)]
    }

    #[test]
    fn everyone_gets_the_lowest_layer_before_anyone_goes_up() {
        let rates = vec![three(), three()];
        assert_eq!(allocate(u64::MAX, &rates), vec![Some(2), Some(2)]);
        assert_eq!(allocate(2 * Q, &rates), vec![Some(0), Some(0)]);
        // The first track goes up first.
        assert_eq!(allocate(Q + H, &rates), vec![Some(1), Some(0)]);
        assert_eq!(allocate(2 * H, &rates), vec![Some(1), Some(1)]);
    }

    #[test]
    fn when_even_the_lowest_does_not_fit_the_least_important_pause() {
        let rates = vec![three(), three(), three()];
        assert_eq!(allocate(2 * Q + 10, &rates), vec![Some(0), Some(0), None]);
        assert_eq!(allocate(Q - 1, &rates), vec![None, None, None]);
    }

    #[test]
    fn layers_not_sent_are_skipped() {
        let rates = vec![vec![Some(Q), None, Some(F)]];
        assert_eq!(allocate(Q + H, &rates), vec![Some(0)]);
        assert_eq!(allocate(F, &rates), vec![Some(2)]);
        assert_eq!(
            allocate(u64::MAX, &[vec![None, Some(H), None]]),
            vec![Some(1)]
        );
        let chosen = vec![Some(0)];
        assert_eq!(next_better(&rates, &chosen), Some(vec![Some(2)]));
        assert_eq!(cost(&rates, &[Some(2)]), F);
        assert_eq!(next_better(&rates, &[Some(2)]), None);
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
        assert_eq!(d.budget(), 390_000);
        d.on_estimate(420_000, t + Duration::from_millis(2600));
        assert_eq!(d.budget(), 420_000, "the browser's own growth counts");
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
        // It fails: the estimate falls during the probe.
        d.on_estimate(240_000, start + Duration::from_millis(500));
        assert_eq!(d.probe(), None);
        assert_eq!(d.budget(), 240_000);
        let retry = start + Duration::from_millis(500) + FIRST_BACKOFF * 2;
        assert!(
            !d.maybe_probe(700_000, retry - Duration::from_millis(1)),
            "backed off twice as long"
        );
        assert!(d.maybe_probe(700_000, retry));
        // This one holds.
        d.tick(retry + PROBE_FOR);
        assert_eq!(d.probe(), None);
        assert_eq!(d.budget(), (700_000.0 * PROBE_HEADROOM) as u64);
        assert!(
            !d.maybe_probe(700_000, retry + PROBE_FOR + FIRST_BACKOFF),
            "the link carries it"
        );
    }
}
