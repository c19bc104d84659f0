//! How long forwarded packets spend in the media loop: from the moment the
//! loop read the first datagram of a turn to the moment that turn's sends
//! returned, counted once per packet forwarded in the turn. An upper bound
//! for each packet of the turn (one read later in the turn waited less); it
//! leaves out the time a datagram queued in the socket before the read.

use std::time::Duration;

/// Bucket upper bounds, in microseconds (Prometheus `le`).
pub const BOUNDS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// A histogram of forwarding delays, weighted by packets.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ForwardDelay {
    /// Packets per bucket (not cumulative); the last one is over every bound.
    pub buckets: [u64; BOUNDS_US.len() + 1],
    /// Packets counted.
    pub count: u64,
    /// Sum of their delays, in microseconds.
    pub sum_us: u64,
}

impl ForwardDelay {
    /// Counts `packets` packets that each waited at most `delay`.
    pub fn record(&mut self, delay: Duration, packets: u64) {
        if packets == 0 {
            return;
        }
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let at = BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[at] += packets;
        self.count += packets;
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(packets));
    }

    /// Adds another histogram's counts to this one.
    pub fn add(&mut self, o: &ForwardDelay) {
        for (b, n) in self.buckets.iter_mut().zip(&o.buckets) {
            *b += n;
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }

    /// Cumulative counts per bound, for the exposition format.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        BOUNDS_US
            .iter()
            .zip(&self.buckets)
            .scan(0, |acc, (bound, n)| {
                *acc += n;
                Some((*bound, *acc))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_land_in_the_first_bucket_that_holds_them() {
        let mut d = ForwardDelay::default();
        d.record(Duration::from_micros(100), 3);
        d.record(Duration::from_micros(101), 2);
        d.record(Duration::from_millis(7), 1);
        d.record(Duration::from_secs(1), 1);
        d.record(Duration::from_millis(1), 0);
        assert_eq!(d.count, 7);
        assert_eq!(d.buckets[0], 3);
        assert_eq!(d.buckets[1], 2);
        assert_eq!(d.buckets[6], 1);
        assert_eq!(d.buckets[BOUNDS_US.len()], 1);
        assert_eq!(d.sum_us, 300 + 202 + 7_000 + 1_000_000);
        let cumulative: Vec<(u64, u64)> = d.cumulative().collect();
        assert_eq!(cumulative[0], (100, 3));
        assert_eq!(cumulative[1], (250, 5));
        assert_eq!(cumulative[5], (5_000, 5));
        assert_eq!(cumulative[6], (10_000, 6));
        assert_eq!(
            cumulative.last(),
            Some(&(100_000, 6)),
            "one over every bound"
        );
    }
}
