//! systemd integration: the `sd_notify(3)` protocol.
//!
//! `READY=1` once every socket is bound, `STATUS=` with rooms and peers,
//! `RELOADING=1` + `MONOTONIC_USEC=` around a reload, `STOPPING=1` on
//! shutdown, and `WATCHDOG=1` from [`Liveness`], which only pings when the
//! media loop answers a request: if that loop hangs, systemd stops hearing
//! from the daemon and restarts it. Without `$NOTIFY_SOCKET` (not started by
//! systemd) every notification is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, info, warn};

use crate::media::MediaHandle;
use crate::rooms::RoomRegistry;

/// How often `STATUS=` is refreshed (and the media loop probed) when no
/// watchdog asks for more.
pub const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// Where notifications go: `$NOTIFY_SOCKET` in the daemon, a recorder in tests.
pub type NotifySink = Arc<dyn Fn(&[NotifyState<'_>]) + Send + Sync>;

/// The sink that sends to `$NOTIFY_SOCKET`, if set.
pub fn notify_socket() -> NotifySink {
    Arc::new(notify)
}

/// Sends `states` in one datagram to `$NOTIFY_SOCKET`; failures are logged.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification not sent");
    }
}

/// Startup (or a reload) is complete.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts. systemd 253+ requires `MONOTONIC_USEC` in the same
/// message; older ones ignore it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(e) => {
            warn!(error = %e, "cannot read the monotonic clock for systemd");
            notify(&[NotifyState::Reloading]);
        }
    }
}

/// Shutdown starts.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("shutting down: telling peers"),
    ]);
}

/// The one-line status `systemctl status sfud` shows.
pub fn status_line(rooms: usize, peers: usize, tracks: usize) -> String {
    format!(
        "serving: {rooms} {}, {peers} {}, {tracks} {}",
        plural(rooms, "room", "rooms"),
        plural(peers, "peer", "peers"),
        plural(tracks, "track", "tracks"),
    )
}

/// The status line for the daemon as it is now (tracks as 0 when media
/// does not answer within a second).
pub async fn status_now(media: &MediaHandle, rooms: &RoomRegistry) -> String {
    let wait = Duration::from_secs(1);
    let tracks = match tokio::time::timeout(wait, media.stats()).await {
        Ok(Ok(stats)) => stats.tracks,
        _ => 0,
    };
    let counts = rooms.counts();
    status_line(counts.rooms, counts.peers, tracks)
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Proves the daemon alive to systemd's watchdog and keeps `STATUS=` fresh.
///
/// Every period (half the watchdog timeout, at most [`STATUS_PERIOD`]) it
/// asks the media loop for its counters; only an answer within that period
/// earns a `WATCHDOG=1`. A timer alone would keep pinging while the part of
/// the daemon that matters is stuck.
pub struct Liveness {
    media: MediaHandle,
    rooms: RoomRegistry,
    watchdog: Option<Duration>,
    sink: NotifySink,
}

impl Liveness {
    /// Pings when `$WATCHDOG_USEC` asks for it, to `$NOTIFY_SOCKET`.
    pub fn from_env(media: MediaHandle, rooms: RoomRegistry) -> Self {
        Self::new(media, rooms, sd_notify::watchdog_enabled(), notify_socket())
    }

    /// Pings every `watchdog / 2` (none when `None`) into `sink`.
    pub fn new(
        media: MediaHandle,
        rooms: RoomRegistry,
        watchdog: Option<Duration>,
        sink: NotifySink,
    ) -> Self {
        Liveness {
            media,
            rooms,
            watchdog: watchdog.filter(|w| !w.is_zero()),
            sink,
        }
    }

    /// The probe period.
    pub fn period(&self) -> Duration {
        self.watchdog
            .map_or(STATUS_PERIOD, |w| (w / 2).min(STATUS_PERIOD))
            .max(Duration::from_millis(10))
    }

    /// Runs until the media engine stops.
    pub async fn run(self) {
        let period = self.period();
        if let Some(w) = self.watchdog {
            info!(timeout = ?w, every = ?period, "systemd watchdog enabled");
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = String::new();
        let mut status_due = tokio::time::Instant::now();
        let mut stuck = false;
        loop {
            tick.tick().await;
            let stats = match tokio::time::timeout(period, self.media.stats()).await {
                Ok(Ok(stats)) => stats,
                // The engine stopped: the daemon is shutting down.
                Ok(Err(_)) => return,
                Err(_) => {
                    if !stuck {
                        warn!(
                            waited = ?period,
                            "media loop did not answer: withholding the watchdog ping"
                        );
                        stuck = true;
                    }
                    continue;
                }
            };
            if stuck {
                info!("media loop answers again");
                stuck = false;
            }
            if self.watchdog.is_some() {
                (self.sink)(&[NotifyState::Watchdog]);
            }
            let now = tokio::time::Instant::now();
            if now < status_due {
                continue;
            }
            status_due = now + STATUS_PERIOD;
            let counts = self.rooms.counts();
            let status = status_line(counts.rooms, counts.peers, stats.tracks);
            if status != last_status {
                (self.sink)(&[NotifyState::Status(&status)]);
                last_status = status;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::media::{engine_settings, MediaEngine};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// A sink that forwards each notification's text to a channel.
    fn recorder() -> (NotifySink, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink: NotifySink = Arc::new(move |states: &[NotifyState<'_>]| {
            let text: Vec<String> = states.iter().map(|s| s.to_string()).collect();
            let _ = tx.send(text.join("\n"));
        });
        (sink, rx)
    }

    #[tokio::test]
    async fn the_watchdog_is_fed_only_while_the_media_loop_answers() {
        let mut config = Config::default();
        config.rtc.udp_port = 0;
        let localhost = [std::net::IpAddr::from([127, 0, 0, 1])];
        let (engine, media) =
            MediaEngine::bind(&engine_settings(&config, &localhost)).expect("binds loopback");
        let rooms = RoomRegistry::new(
            media.clone(),
            crate::reload::room_limits(&config),
            Vec::new(),
            crate::supervisor::Supervisor::default(),
            crate::cluster::Cluster::single(),
        );
        let (sink, mut notes) = recorder();
        let liveness = Liveness::new(media, rooms, Some(Duration::from_millis(100)), sink);
        assert_eq!(liveness.period(), Duration::from_millis(50));
        tokio::spawn(liveness.run());

        // The engine exists but its loop does not run, as if it hung: ten
        // periods pass without a single ping.
        let silent = tokio::time::timeout(Duration::from_millis(500), notes.recv()).await;
        assert!(silent.is_err(), "pinged without the media loop: {silent:?}");

        let stop = CancellationToken::new();
        let engine = tokio::spawn(engine.run(stop.clone()));
        for _ in 0..3 {
            let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
                .await
                .expect("a ping once the loop runs")
                .expect("liveness still running");
            if note != "WATCHDOG=1" {
                assert!(note.starts_with("STATUS=serving: 0 rooms"), "{note}");
            }
        }
        stop.cancel();
        engine.await.expect("engine stops");
    }

    #[test]
    fn status_line_counts_in_words() {
        assert_eq!(status_line(0, 0, 0), "serving: 0 rooms, 0 peers, 0 tracks");
        assert_eq!(status_line(1, 1, 1), "serving: 1 room, 1 peer, 1 track");
        assert_eq!(status_line(2, 5, 8), "serving: 2 rooms, 5 peers, 8 tracks");
    }
}
