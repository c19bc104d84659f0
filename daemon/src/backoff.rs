//! What an accept loop does when accepting fails (out of file descriptors,
//! say): pause, 10 ms doubling up to [`ACCEPT_BACKOFF_MAX`], and log it at
//! most once a second with how many failures it did not log. Retrying at
//! once would spin a core and write a log line per try.

use std::time::{Duration, Instant};

use tracing::warn;

/// Longest pause after a failed accept.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One accept loop's pauses (see the module docs).
pub(crate) struct AcceptBackoff {
    /// What accepts, for the log line.
    what: &'static str,
    pause: Duration,
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// For the accept loop of `what` (`"control socket"`).
    pub(crate) fn new(what: &'static str) -> Self {
        AcceptBackoff {
            what,
            pause: Duration::ZERO,
            logged: None,
            unlogged: 0,
        }
    }

    /// How long to pause after this failure.
    pub(crate) fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            warn!(%error, suppressed = self.unlogged, pause_ms = self.pause.as_millis() as u64, "{} accept failed; pausing", self.what);
            self.logged = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        self.pause
    }

    /// An accept worked: the next failure starts from the shortest pause.
    pub(crate) fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_pause_longer_each_time_up_to_a_second() {
        let mut backoff = AcceptBackoff::new("test");
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], ACCEPT_BACKOFF_MAX);
        // Logged once; the rest counted for the next line.
        assert_eq!(backoff.unlogged, 9);
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(10));
    }
}
