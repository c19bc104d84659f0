//! Receive-side accounting from the payload tags: loss, duplicates,
//! reordering and one-way latency. Plain state, no I/O.

/// How many sequence numbers behind the highest one are remembered for
/// duplicate detection.
const WINDOW: u64 = 4096;
/// How many latency samples are kept for the percentiles (the newest ones).
const LATENCY_SAMPLES: usize = 2048;

/// Counts what arrived of one publisher stream, by the tag sequence number.
///
/// Loss is "expected minus distinct received", where expected spans the
/// lowest to the highest sequence number seen, so a late joiner does not
/// count what was sent before it subscribed, and a packet that arrives late
/// stops counting as lost.
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    lowest: u64,
    highest: u64,
    started: bool,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within `WINDOW` of `highest`) arrived.
    seen: Vec<u64>,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        Self {
            lowest: 0,
            highest: 0,
            started: false,
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
            seen: vec![0; (WINDOW / 64) as usize],
        }
    }
}

impl SequenceTracker {
    /// Records one arrival of `seq`.
    pub fn record(&mut self, seq: u32) {
        let seq = u64::from(seq);
        if !self.started {
            self.started = true;
            self.lowest = seq;
            self.highest = seq;
            self.distinct = 1;
            self.set(seq);
            return;
        }
        if seq > self.highest {
            // Forget the window slots the new highest reuses.
            let advance = seq - self.highest;
            if advance >= WINDOW {
                self.seen.iter_mut().for_each(|word| *word = 0);
            } else {
                for s in self.highest + 1..=seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.distinct += 1;
            self.set(seq);
            return;
        }
        if self.highest - seq >= WINDOW {
            // Too old to tell a duplicate from a late packet: call it late.
            self.out_of_order += 1;
            self.distinct += 1;
            self.lowest = self.lowest.min(seq);
            return;
        }
        if self.is_set(seq) {
            self.duplicates += 1;
        } else {
            self.set(seq);
            self.distinct += 1;
            self.out_of_order += 1;
            self.lowest = self.lowest.min(seq);
        }
    }

    /// Sequence numbers between the lowest and highest seen that never arrived.
    pub fn lost(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (self.highest - self.lowest + 1).saturating_sub(self.distinct)
    }

    /// Packets that arrived more than once (each extra copy counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher sequence number.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        self.seen[word] &= !mask;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.seen[word] & mask != 0
    }
}

/// Percentiles of one-way latency, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples recorded in total.
    pub samples: u64,
    /// Median over the newest samples kept.
    pub p50_us: u64,
    /// 99th percentile over the newest samples kept.
    pub p99_us: u64,
    /// Largest sample ever recorded.
    pub max_us: u64,
}

/// Keeps the newest latency samples and the overall maximum.
#[derive(Debug, Clone, Default)]
pub struct LatencyReservoir {
    ring: Vec<u64>,
    next: usize,
    total: u64,
    max_us: u64,
}

impl LatencyReservoir {
    /// Records one sample.
    pub fn record(&mut self, latency_us: u64) {
        self.total += 1;
        self.max_us = self.max_us.max(latency_us);
        if self.ring.len() < LATENCY_SAMPLES {
            self.ring.push(latency_us);
        } else {
            self.ring[self.next] = latency_us;
            self.next = (self.next + 1) % LATENCY_SAMPLES;
        }
    }

    /// The percentiles so far.
    pub fn summary(&self) -> LatencySummary {
        if self.ring.is_empty() {
            return LatencySummary::default();
        }
        let mut sorted = self.ring.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let index = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted[index.min(sorted.len() - 1)]
        };
        LatencySummary {
            samples: self.total,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: self.max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: &[u32]) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_stream_has_no_anomalies() {
        let t = track(&(0..1000).collect::<Vec<_>>());
        assert_eq!((t.lost(), t.duplicates(), t.out_of_order()), (0, 0, 0));
    }

    #[test]
    fn gaps_count_as_loss() {
        let t = track(&[0, 1, 2, 5, 6, 9]);
        assert_eq!(t.lost(), 4);
        assert_eq!(t.out_of_order(), 0);
    }

    #[test]
    fn late_packets_are_reordered_not_lost() {
        let t = track(&[0, 1, 3, 4, 2, 5]);
        assert_eq!((t.lost(), t.duplicates(), t.out_of_order()), (0, 0, 1));
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let t = track(&[0, 1, 1, 2, 2, 2, 1]);
        assert_eq!((t.lost(), t.duplicates(), t.out_of_order()), (0, 4, 0));
    }

    #[test]
    fn late_joiner_starts_counting_at_its_first_packet() {
        let t = track(&[5000, 5001, 5002]);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn packet_below_the_first_one_extends_the_range() {
        let t = track(&[10, 11, 9, 12]);
        assert_eq!((t.lost(), t.out_of_order()), (0, 1));
    }

    #[test]
    fn window_reuse_does_not_fake_duplicates() {
        // After a jump of exactly one window, the old slot of `1` must be clear.
        let t = track(&[0, 1, 1 + WINDOW as u32, 2 + WINDOW as u32]);
        assert_eq!(t.duplicates(), 0);
        assert_eq!(t.lost(), WINDOW - 1);
        // A jump larger than the window clears everything.
        let t = track(&[0, 10 * WINDOW as u32, 10 * WINDOW as u32]);
        assert_eq!(t.duplicates(), 1);
    }

    #[test]
    fn very_old_packets_count_as_late() {
        let t = track(&[0, 2, 2 + 2 * WINDOW as u32, 1]);
        assert_eq!(t.out_of_order(), 1);
        assert_eq!(t.duplicates(), 0);
    }

    #[test]
    fn latency_percentiles() {
        let mut r = LatencyReservoir::default();
        assert_eq!(r.summary(), LatencySummary::default());
        for us in 1..=100 {
            r.record(us);
        }
        let s = r.summary();
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_us, 51);
        assert_eq!(s.p99_us, 99);
        assert_eq!(s.max_us, 100);
    }

    #[test]
    fn latency_keeps_only_the_newest_samples_but_the_overall_max() {
        let mut r = LatencyReservoir::default();
        r.record(1_000_000);
        for _ in 0..LATENCY_SAMPLES {
            r.record(10);
        }
        let s = r.summary();
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (10, 10, 1_000_000));
        assert_eq!(s.samples, LATENCY_SAMPLES as u64 + 1);
    }
}
