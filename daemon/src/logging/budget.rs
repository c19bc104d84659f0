//! A budget of log lines per place in the code: whatever an outsider can
//! make sfud log (a garbage datagram, a replayed SRTP packet, a refused
//! frame, a failed accept), it logs at most [`LINES_PER_SECOND`] lines a
//! second from any one `tracing` callsite. The rest are counted, reported
//! in a summary line every [`REPORT_EVERY`] and in `/metrics`
//! (`sfud_log_lines_suppressed_total`), so a flood costs neither the disk
//! nor a core.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines one callsite may log per second.
pub const LINES_PER_SECOND: u32 = 20;

/// How often suppressed lines are summed up in a line of their own.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// One callsite's use of its budget.
#[derive(Debug)]
struct Spent {
    window: Instant,
    lines: u32,
    /// Suppressed since the last report.
    suppressed: u64,
    /// `target` and `file:line`, for the report.
    place: String,
}

/// The per-callsite budgets (see the module docs).
#[derive(Debug, Default)]
pub struct LogBudget {
    spent: Mutex<HashMap<Identifier, Spent>>,
    suppressed_total: AtomicU64,
}

impl LogBudget {
    /// Whether a line from `callsite` fits the budget at `now`.
    fn admit(&self, callsite: Identifier, place: impl FnOnce() -> String, now: Instant) -> bool {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let s = spent.entry(callsite).or_insert_with(|| Spent {
            window: now,
            lines: 0,
            suppressed: 0,
            place: place(),
        });
        if now.saturating_duration_since(s.window) >= Duration::from_secs(1) {
            s.window = now;
            s.lines = 0;
        }
        if s.lines < LINES_PER_SECOND {
            s.lines += 1;
            return true;
        }
        s.suppressed += 1;
        self.suppressed_total.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines suppressed since the last call, by place, most first.
    pub fn take_suppressed(&self) -> Vec<(String, u64)> {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u64)> = spent
            .values_mut()
            .filter(|s| s.suppressed > 0)
            .map(|s| (s.place.clone(), std::mem::take(&mut s.suppressed)))
            .collect();
        out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        out
    }

    /// Lines suppressed since start.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }
}

/// The process's budget, shared by the logging layer and `/metrics`.
pub fn global() -> &'static LogBudget {
    static BUDGET: OnceLock<LogBudget> = OnceLock::new();
    BUDGET.get_or_init(LogBudget::default)
}

/// The layer that applies [`global`] to every event.
pub struct BudgetLayer;

impl<S: Subscriber> Layer<S> for BudgetLayer {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        global().admit(
            meta.callsite(),
            || {
                format!(
                    "{} ({}:{})",
                    meta.target(),
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0)
                )
            },
            Instant::now(),
        )
    }
}

/// Logs what was suppressed every [`REPORT_EVERY`], until `stop`.
pub async fn report_suppressed(stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        for (place, lines) in global().take_suppressed() {
            tracing::warn!(
                lines,
                place,
                "log lines suppressed (over 20 a second from one place)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Here;
    impl tracing::Callsite for Here {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not asked in these tests")
        }
    }
    static A: Here = Here;
    static B: Here = Here;

    #[test]
    fn each_place_gets_its_lines_a_second_and_the_rest_are_counted() {
        let budget = LogBudget::default();
        let t0 = Instant::now();
        let a = || Identifier(&A);
        let admitted = (0..100)
            .filter(|_| budget.admit(a(), || "a".into(), t0))
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        // Another place has its own budget.
        assert!(budget.admit(Identifier(&B), || "b".into(), t0));
        // A second later the first has its budget again.
        assert!(budget.admit(a(), || "a".into(), t0 + Duration::from_secs(1)));
        assert_eq!(budget.suppressed_total(), 80);
        assert_eq!(budget.take_suppressed(), vec![("a".to_owned(), 80)]);
        assert!(budget.take_suppressed().is_empty());
    }
}
