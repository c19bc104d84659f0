//! Histograms of durations the engine measures, by [`Bounds`]:
//!
//! - [`ForwardDelay`]: how long forwarded packets spend in the media loop:
//!   from the moment the loop read the first datagram of a turn to the
//!   moment that turn's sends returned, counted once per packet forwarded in
//!   the turn. An upper bound for each packet of the turn (one read later in
//!   the turn waited less); it leaves out the time a datagram queued in the
//!   socket before the read.
//! - [`SetupTime`]: how long a connection took from the description that
//!   completed its negotiation (sfud's answer to a publisher's offer, a
//!   subscriber's answer to sfud's) to connected (ICE and DTLS done): the
//!   part of a join the transport takes.

use std::marker::PhantomData;
use std::time::Duration;

/// The bucket upper bounds of a kind of histogram, in microseconds
/// (Prometheus `le`).
pub trait Bounds {
    const US: &'static [u64];
}

/// Forwarding delays: 100 µs to 100 ms.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding;

impl Bounds for Forwarding {
    const US: &'static [u64] = &[
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
    ];
}

/// Connection setup times: 10 ms to 10 s.
#[derive(Debug, Clone, Copy)]
pub struct Setup;

impl Bounds for Setup {
    const US: &'static [u64] = &[
        10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
        10_000_000,
    ];
}

/// Time forwarded packets spent in the loop, weighted by packets.
pub type ForwardDelay = Histogram<Forwarding>;

/// Connection setup times, one count per connection.
pub type SetupTime = Histogram<Setup>;

/// A histogram of durations with the bucket bounds of `B`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(bound = "")]
pub struct Histogram<B> {
    /// Counts per bucket (not cumulative); the last one is over every bound.
    pub buckets: Vec<u64>,
    /// Counted.
    pub count: u64,
    /// Sum of what was counted, in microseconds.
    pub sum_us: u64,
    #[serde(skip)]
    bounds: PhantomData<B>,
}

impl<B: Bounds> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; B::US.len() + 1],
            count: 0,
            sum_us: 0,
            bounds: PhantomData,
        }
    }
}

impl<B: Bounds> Histogram<B> {
    /// Counts `n` of `duration` each.
    pub fn record(&mut self, duration: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let at = B::US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(B::US.len());
        if let Some(bucket) = self.buckets.get_mut(at) {
            *bucket += n;
        }
        self.count += n;
        self.sum_us = self.sum_us.saturating_add(us.saturating_mul(n));
    }

    /// Adds another histogram's counts to this one.
    pub fn add(&mut self, o: &Histogram<B>) {
        for (b, n) in self.buckets.iter_mut().zip(&o.buckets) {
            *b += n;
        }
        self.count += o.count;
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }

    /// Cumulative counts per bound, for the exposition format.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        B::US.iter().zip(&self.buckets).scan(0, |acc, (bound, n)| {
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
        assert_eq!(d.buckets[Forwarding::US.len()], 1);
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
