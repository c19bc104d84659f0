//! A latency histogram shared by many clients: one atomic increment per
//! packet, so a load generator holding hundreds of receivers can take exact
//! percentiles over any window (the difference of two [`Histogram::counts`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets below this many microseconds are 1 µs wide.
const LINEAR_US: u64 = 1024;
/// Sub-buckets per power of two above [`LINEAR_US`] (about 3% resolution).
const SUB_BUCKETS: u64 = 32;
/// Powers of two covered above [`LINEAR_US`]: up to 2^(10+22) µs, over an hour.
const OCTAVES: u64 = 22;
/// Total number of buckets.
pub const BUCKETS: usize = (LINEAR_US + OCTAVES * SUB_BUCKETS) as usize;

/// Counts of one-way latency samples, in log-linear microsecond buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Records one sample.
    pub fn record(&self, latency_us: u64) {
        self.buckets[bucket_of(latency_us)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every bucket's count.
    pub fn counts(&self) -> HistogramCounts {
        HistogramCounts(
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

/// Bucket counts at one moment; subtract two to get a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramCounts(Vec<u64>);

impl Default for HistogramCounts {
    fn default() -> Self {
        HistogramCounts(vec![0; BUCKETS])
    }
}

impl HistogramCounts {
    /// The samples counted here but not in `earlier`.
    pub fn since(&self, earlier: &HistogramCounts) -> HistogramCounts {
        HistogramCounts(
            self.0
                .iter()
                .zip(earlier.0.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        )
    }

    /// Number of samples.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0.0..=1.0) in microseconds: the upper edge of the
    /// bucket holding it; 0 without samples.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_edge(i);
            }
        }
        upper_edge(BUCKETS - 1)
    }

    /// The largest sample's bucket edge; 0 without samples.
    pub fn max_us(&self) -> u64 {
        self.0.iter().rposition(|n| *n > 0).map_or(0, upper_edge)
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR_US {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()) - LINEAR_US.trailing_zeros() as u64;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let base = LINEAR_US << octave;
    let sub = (us - base) * SUB_BUCKETS / base;
    (LINEAR_US + octave * SUB_BUCKETS + sub) as usize
}

fn upper_edge(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < LINEAR_US {
        return b;
    }
    let octave = (b - LINEAR_US) / SUB_BUCKETS;
    let sub = (b - LINEAR_US) % SUB_BUCKETS;
    let base = LINEAR_US << octave;
    base + (sub + 1) * base / SUB_BUCKETS - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_large_ones_within_a_few_percent() {
        for us in [0, 1, 999, 1023] {
            assert_eq!(upper_edge(bucket_of(us)), us);
        }
        for us in [1024, 1500, 5_000, 49_999, 1_000_000, 60_000_000] {
            let edge = upper_edge(bucket_of(us));
            assert!(edge >= us && edge <= us + us / 16, "{us} -> {edge}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_window() {
        let h = Histogram::default();
        h.record(5_000_000);
        let before = h.counts();
        for us in 1..=100 {
            h.record(us);
        }
        let window = h.counts().since(&before);
        assert_eq!(window.total(), 100);
        assert_eq!(window.quantile_us(0.5), 50);
        assert_eq!(window.quantile_us(0.99), 99);
        assert_eq!(window.max_us(), 100);
        assert_eq!(HistogramCounts::default().quantile_us(0.5), 0);
    }
}
