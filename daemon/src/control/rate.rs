//! Media bitrates for `status`: the media engine counts bytes, a sampler
//! turns two readings a second apart into bits per second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::media::MediaHandle;

/// How often the counters are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Bits per second in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// Received on the media sockets.
    pub in_bps: u64,
    /// Sent on the media sockets.
    pub out_bps: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    bytes_in: u64,
    bytes_out: u64,
}

/// The latest bitrates.
#[derive(Debug, Default)]
pub struct MediaRates {
    state: Mutex<(Option<Reading>, Rates)>,
}

fn bps(bytes_then: u64, bytes_now: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (bytes_now.saturating_sub(bytes_then) as f64 * 8.0 / secs) as u64
}

impl MediaRates {
    /// The bitrates between the last two readings.
    pub fn latest(&self) -> Rates {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Reading>, Rates)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, at: Instant, bytes_in: u64, bytes_out: u64) {
        let mut state = self.lock();
        let now = Reading {
            at,
            bytes_in,
            bytes_out,
        };
        if let Some(then) = state.0 {
            let elapsed = at.saturating_duration_since(then.at);
            state.1 = Rates {
                in_bps: bps(then.bytes_in, bytes_in, elapsed),
                out_bps: bps(then.bytes_out, bytes_out, elapsed),
            };
        }
        state.0 = Some(now);
    }

    /// Reads the media counters every second until `stop`.
    pub async fn sample(&self, media: MediaHandle, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match media.stats().await {
                Ok(stats) => self.record(Instant::now(), stats.bytes_in, stats.bytes_out),
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_readings_make_a_rate() {
        let rates = MediaRates::default();
        let t0 = Instant::now();
        rates.record(t0, 1000, 0);
        assert_eq!(rates.latest(), Rates::default());
        rates.record(t0 + Duration::from_secs(2), 1000 + 250_000, 125_000);
        assert_eq!(
            rates.latest(),
            Rates {
                in_bps: 1_000_000,
                out_bps: 500_000
            }
        );
        // Same instant: no division by zero.
        rates.record(t0 + Duration::from_secs(2), 0, 0);
        assert_eq!(rates.latest(), Rates::default());
    }
}
