//! Every long-lived task, started by name in one place and stopped in
//! stages on shutdown.
//!
//! A task belongs to a [`Stage`]. Stopping a stage cancels its token (the
//! tasks watch it), closes its tracker and waits for its tasks with the
//! stage's deadline; tasks still running then are logged by name and left
//! to end with the runtime. [`Supervisor::shutdown`] stops the stages in
//! the order the daemon must stop: no new connections, then (between the
//! first two stages) recordings are finalized, then peers are told and
//! their sessions end, then the rooms, then media closes, then the rest.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// When a task stops, in shutdown order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accept loops (HTTP and control): the daemon takes nothing new.
    Accept,
    /// Connections: WebSocket sessions (which tell their peer), other HTTP
    /// requests, control clients.
    Sessions,
    /// Room actors: most end when their last member leaves; operators'
    /// rooms stay until this stage stops.
    Rooms,
    /// The media loop.
    Media,
    /// Samplers and reporters that outlive everything else.
    Background,
}

impl Stage {
    /// Every stage, in shutdown order.
    pub const ALL: [Stage; 5] = [
        Stage::Accept,
        Stage::Sessions,
        Stage::Rooms,
        Stage::Media,
        Stage::Background,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// How long shutdown waits for this stage's tasks.
    fn deadline(self) -> Duration {
        match self {
            Stage::Accept => Duration::from_secs(1),
            // Closing frames to every peer, and HTTP's graceful shutdown.
            Stage::Sessions => Duration::from_secs(5),
            Stage::Rooms => Duration::from_secs(1),
            Stage::Media => Duration::from_secs(2),
            Stage::Background => Duration::from_secs(1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Accept => "accept",
            Stage::Sessions => "sessions",
            Stage::Rooms => "rooms",
            Stage::Media => "media",
            Stage::Background => "background",
        }
    }
}

struct StageTasks {
    token: CancellationToken,
    tracker: TaskTracker,
    /// Tasks running, by name (connections share one name).
    running: Mutex<BTreeMap<&'static str, usize>>,
}

/// Starts tasks and stops them in stages. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    stages: Arc<[StageTasks; 5]>,
}

impl Default for Supervisor {
    fn default() -> Self {
        let stage = || StageTasks {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            running: Mutex::new(BTreeMap::new()),
        };
        Supervisor {
            stages: Arc::new(Stage::ALL.map(|_| stage())),
        }
    }
}

/// Takes a task off its stage's list when it ends, however it ends.
struct Running {
    supervisor: Supervisor,
    stage: Stage,
    name: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.supervisor.running(self.stage);
        if let Some(n) = running.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                running.remove(self.name);
            }
        }
    }
}

impl Supervisor {
    /// The token `stage`'s tasks stop on.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.stages[stage.index()].token.clone()
    }

    /// Whether `stage` has been told to stop.
    pub fn stopping(&self, stage: Stage) -> bool {
        self.stages[stage.index()].token.is_cancelled()
    }

    fn running(&self, stage: Stage) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, usize>> {
        self.stages[stage.index()]
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `task` as one of `stage`'s tasks, known as `name`.
    pub fn spawn<F>(&self, stage: Stage, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        *self.running(stage).entry(name).or_default() += 1;
        let running = Running {
            supervisor: self.clone(),
            stage,
            name,
        };
        self.stages[stage.index()].tracker.spawn(async move {
            let _running = running;
            task.await;
        });
    }

    /// Runs `task` as one of `stage`'s tasks until it ends or the stage is
    /// told to stop, whichever comes first (for tasks that do not watch the
    /// token themselves).
    pub fn spawn_until_stopped<F>(&self, stage: Stage, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token(stage);
        self.spawn(stage, name, async move {
            tokio::select! {
                () = task => {}
                () = token.cancelled() => {}
            }
        });
    }

    /// How many of `stage`'s tasks run, by name.
    pub fn tasks(&self, stage: Stage) -> Vec<(&'static str, usize)> {
        self.running(stage).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Tells `stage`'s tasks to stop and waits for them, at most the
    /// stage's deadline. Returns the tasks still running then, by name.
    pub async fn stop(&self, stage: Stage) -> Vec<(&'static str, usize)> {
        let tasks = &self.stages[stage.index()];
        tasks.token.cancel();
        tasks.tracker.close();
        if tokio::time::timeout(stage.deadline(), tasks.tracker.wait())
            .await
            .is_ok()
        {
            debug!(stage = stage.name(), "stage stopped");
            return Vec::new();
        }
        let left = self.tasks(stage);
        warn!(
            stage = stage.name(),
            deadline_ms = stage.deadline().as_millis() as u64,
            tasks = ?left,
            "tasks did not stop within the deadline; leaving them to the runtime"
        );
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stages_stop_in_turn_and_a_stuck_task_is_named_after_the_deadline() {
        let sup = Supervisor::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for stage in Stage::ALL {
            let (token, tx) = (sup.token(stage), tx.clone());
            sup.spawn(stage, "worker", async move {
                token.cancelled().await;
                let _ = tx.send(stage);
            });
        }
        // Ignores its token.
        sup.spawn(Stage::Media, "stuck", std::future::pending());
        assert_eq!(sup.tasks(Stage::Media), [("stuck", 1), ("worker", 1)]);

        assert!(sup.stop(Stage::Accept).await.is_empty());
        assert_eq!(rx.try_recv().ok(), Some(Stage::Accept));
        assert!(rx.try_recv().is_err(), "only the stopped stage's tasks end");
        assert!(!sup.stopping(Stage::Sessions));

        assert!(sup.stop(Stage::Sessions).await.is_empty());
        assert!(sup.stop(Stage::Rooms).await.is_empty());
        let started = tokio::time::Instant::now();
        assert_eq!(sup.stop(Stage::Media).await, [("stuck", 1)]);
        assert!(started.elapsed() >= Stage::Media.deadline());
        assert!(sup.stop(Stage::Background).await.is_empty());
        let stopped: Vec<Stage> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            stopped,
            [
                Stage::Sessions,
                Stage::Rooms,
                Stage::Media,
                Stage::Background
            ]
        );
        assert_eq!(sup.tasks(Stage::Sessions), []);
    }

    #[tokio::test]
    async fn a_task_spawned_after_its_stage_stopped_sees_the_token_cancelled() {
        let sup = Supervisor::default();
        sup.stop(Stage::Sessions).await;
        let token = sup.token(Stage::Sessions);
        let (tx, rx) = tokio::sync::oneshot::channel();
        sup.spawn(Stage::Sessions, "late", async move {
            token.cancelled().await;
            let _ = tx.send(());
        });
        rx.await.expect("the late task ends at once");
    }
}
