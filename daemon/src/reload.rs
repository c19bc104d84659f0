//! Configuration reload: which changed keys take effect at run time and
//! which wait for a restart ([`plan`], pure), and the [`Reloader`] that
//! re-reads the file and applies the live part. The control socket's
//! `reload` and SIGHUP both go through [`Reloader::reload`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sfu_proto::signaling::IceServer;
use tracing::info;

use crate::config::{
    AuthConfig, ClusterConfig, Config, ConfigError, ControlConfig, HttpConfig, IceServerConfig,
    LimitsConfig, LogConfig, RecordingConfig, RoomsConfig, RtcConfig,
};
use crate::rooms::{RoomLimits, RoomRegistry};
use crate::signaling::gate::Gatekeeper;

/// What a new configuration changes, by dotted key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Keys whose new value is applied to the running daemon.
    pub changed_live: Vec<String>,
    /// Keys that changed but keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

impl ReloadPlan {
    /// Whether the new configuration equals the old one.
    pub fn is_empty(&self) -> bool {
        self.changed_live.is_empty() && self.needs_restart.is_empty()
    }
}

fn note<T: PartialEq>(list: &mut Vec<String>, key: &str, old: &T, new: &T) {
    if old != new {
        list.push(key.to_owned());
    }
}

/// Compares two configurations key by key.
///
/// Every field is named (no `..`), so a key added to [`Config`] does not
/// compile until it is sorted here into live or restart.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let Config {
        http,
        rtc,
        rooms,
        control,
        recording,
        log,
        auth,
        limits,
        cluster,
        turn,
    } = new;
    let HttpConfig {
        listen,
        allowed_origins,
    } = http;
    let RtcConfig {
        udp_port,
        ice_tcp,
        tcp_port,
        bind_ips,
        public_ips,
        ice_servers,
        ice_disconnected_timeout_ms,
        ice_failed_timeout_ms,
        // Not used any more; changing it changes nothing.
        subscriber_queue_packets: _,
        fast_path,
        workers,
        room_spread_peers,
    } = rtc;
    let RoomsConfig {
        max_peers,
        max_rooms,
        auto_create,
        mesh_max_peers,
        preset,
    } = rooms;
    let ControlConfig { socket, group } = control;
    let RecordingConfig { dir } = recording;
    let LogConfig { level, format } = log;
    let AuthConfig { mode, keys } = auth;
    let LimitsConfig {
        joins_per_second,
        messages_per_second,
        join_timeout_secs,
        idle_timeout_secs,
        header_timeout_secs,
        max_connections_per_ip,
        max_connections,
    } = limits;

    // Room limits apply to joins and rooms created from now on; ICE
    // servers, origins, join tokens and rate limits to connections and
    // joins from now on.
    let live = &mut plan.changed_live;
    note(live, "rooms.max_peers", &old.rooms.max_peers, max_peers);
    note(live, "rooms.max_rooms", &old.rooms.max_rooms, max_rooms);
    note(
        live,
        "rooms.auto_create",
        &old.rooms.auto_create,
        auto_create,
    );
    note(
        live,
        "rooms.mesh_max_peers",
        &old.rooms.mesh_max_peers,
        mesh_max_peers,
    );
    note(live, "rtc.ice_servers", &old.rtc.ice_servers, ice_servers);
    note(
        live,
        "http.allowed_origins",
        &old.http.allowed_origins,
        allowed_origins,
    );
    note(live, "auth.mode", &old.auth.mode, mode);
    note(live, "auth.keys", &old.auth.keys, keys);
    note(
        live,
        "limits.joins_per_second",
        &old.limits.joins_per_second,
        joins_per_second,
    );
    note(
        live,
        "limits.messages_per_second",
        &old.limits.messages_per_second,
        messages_per_second,
    );
    note(
        live,
        "limits.join_timeout_secs",
        &old.limits.join_timeout_secs,
        join_timeout_secs,
    );
    note(
        live,
        "limits.idle_timeout_secs",
        &old.limits.idle_timeout_secs,
        idle_timeout_secs,
    );
    note(
        live,
        "limits.header_timeout_secs",
        &old.limits.header_timeout_secs,
        header_timeout_secs,
    );
    note(
        live,
        "limits.max_connections_per_ip",
        &old.limits.max_connections_per_ip,
        max_connections_per_ip,
    );
    note(
        live,
        "limits.max_connections",
        &old.limits.max_connections,
        max_connections,
    );

    // Sockets, the media engine's settings, preset rooms and the logger are
    // set up once at start.
    let restart = &mut plan.needs_restart;
    note(restart, "http.listen", &old.http.listen, listen);
    let ClusterConfig {
        redis_url,
        node_id,
        url,
        secret,
    } = cluster;
    note(
        restart,
        "cluster.redis_url",
        &old.cluster.redis_url,
        redis_url,
    );
    note(restart, "cluster.node_id", &old.cluster.node_id, node_id);
    note(restart, "cluster.url", &old.cluster.url, url);
    note(restart, "cluster.secret", &old.cluster.secret, secret);
    note(restart, "rtc.udp_port", &old.rtc.udp_port, udp_port);
    note(restart, "rtc.ice_tcp", &old.rtc.ice_tcp, ice_tcp);
    note(restart, "turn", &old.turn, turn);
    note(restart, "rtc.tcp_port", &old.rtc.tcp_port, tcp_port);
    note(restart, "rtc.bind_ips", &old.rtc.bind_ips, bind_ips);
    note(restart, "rtc.public_ips", &old.rtc.public_ips, public_ips);
    note(
        restart,
        "rtc.ice_disconnected_timeout_ms",
        &old.rtc.ice_disconnected_timeout_ms,
        ice_disconnected_timeout_ms,
    );
    note(
        restart,
        "rtc.ice_failed_timeout_ms",
        &old.rtc.ice_failed_timeout_ms,
        ice_failed_timeout_ms,
    );
    note(restart, "rtc.fast_path", &old.rtc.fast_path, fast_path);
    note(restart, "rtc.workers", &old.rtc.workers, workers);
    note(
        restart,
        "rtc.room_spread_peers",
        &old.rtc.room_spread_peers,
        room_spread_peers,
    );
    note(restart, "rooms.preset", &old.rooms.preset, preset);
    note(restart, "control.socket", &old.control.socket, socket);
    note(restart, "control.group", &old.control.group, group);
    note(restart, "recording.dir", &old.recording.dir, dir);
    note(restart, "log.level", &old.log.level, level);
    note(restart, "log.format", &old.log.format, format);
    plan
}

/// `old` with the keys [`plan`] calls live taken from `new`: the
/// configuration in effect after a reload.
pub fn in_effect(old: &Config, new: &Config) -> Config {
    let mut config = old.clone();
    config.rooms = RoomsConfig {
        preset: old.rooms.preset.clone(),
        ..new.rooms.clone()
    };
    config.rtc.ice_servers = new.rtc.ice_servers.clone();
    config.http.allowed_origins = new.http.allowed_origins.clone();
    config.auth = new.auth.clone();
    config.limits = new.limits.clone();
    config
}

/// The room limits a configuration asks for.
pub fn room_limits(config: &Config) -> RoomLimits {
    RoomLimits {
        max_peers: config.rooms.max_peers,
        max_rooms: config.rooms.max_rooms,
        auto_create: config.rooms.auto_create,
        mesh_max_peers: config.rooms.mesh_max_peers,
    }
}

/// The ICE servers a configuration hands to clients.
pub fn ice_servers(config: &[IceServerConfig]) -> Vec<IceServer> {
    config
        .iter()
        .map(|s| IceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}

/// The result of a reload: the file read and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The file read; `None` when the daemon runs on built-in defaults.
    pub path: Option<PathBuf>,
    /// What changed.
    pub plan: ReloadPlan,
}

struct ReloaderInner {
    path: Mutex<Option<PathBuf>>,
    current: Mutex<Config>,
    rooms: RoomRegistry,
    gate: Arc<Gatekeeper>,
}

/// Re-reads the configuration file and applies what can change at run
/// time. Cheap to clone; every clone shares the configuration in effect.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<ReloaderInner>,
}

impl Reloader {
    /// A reloader for a daemon started with `config`, read from `path`.
    pub fn new(
        config: Config,
        path: Option<PathBuf>,
        rooms: RoomRegistry,
        gate: Arc<Gatekeeper>,
    ) -> Self {
        Reloader {
            inner: Arc::new(ReloaderInner {
                path: Mutex::new(path),
                current: Mutex::new(config),
                rooms,
                gate,
            }),
        }
    }

    /// Sets the file the daemon was started with.
    pub fn set_path(&self, path: Option<PathBuf>) {
        *lock(&self.inner.path) = path;
    }

    /// The file the daemon was started with.
    pub fn path(&self) -> Option<PathBuf> {
        lock(&self.inner.path).clone()
    }

    /// The configuration in effect.
    pub fn current(&self) -> Config {
        lock(&self.inner.current).clone()
    }

    /// Loads the file (or the defaults, without a file).
    fn load(&self) -> Result<(Option<PathBuf>, Config), ConfigError> {
        let path = self.path();
        let config = match &path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        Ok((path, config))
    }

    /// Validates the file without applying it; returns its path.
    pub fn check(&self) -> Result<Option<PathBuf>, ConfigError> {
        self.load().map(|(path, _)| path)
    }

    /// Re-reads the file and applies the live keys; an invalid file changes
    /// nothing.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let (path, new) = self.load()?;
        let mut current = lock(&self.inner.current);
        let plan = plan(&current, &new);
        if !plan.changed_live.is_empty() {
            self.inner.rooms.set_limits(room_limits(&new));
            self.inner
                .rooms
                .set_ice_servers(ice_servers(&new.rtc.ice_servers));
            *current = in_effect(&current, &new);
            self.inner.gate.reload(&current);
        }
        info!(
            path = %path.as_deref().map_or("(defaults)".into(), Path::to_string_lossy),
            changed = ?plan.changed_live,
            needs_restart = ?plan.needs_restart,
            "configuration reloaded"
        );
        Ok(Reloaded { path, plan })
    }
}

/// Locks a mutex that is never held across an await; poisoning is ignored
/// because every update is a single assignment.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid config")
    }

    #[test]
    fn same_config_changes_nothing() {
        let config = parsed("[rooms]\nmax_peers = 3\n");
        let plan = plan(&config, &config.clone());
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn limits_and_ice_servers_change_live() {
        let old = Config::default();
        let new = parsed(
            "[rooms]\nmax_peers = 3\nmax_rooms = 7\nauto_create = false\n\n[[rtc.ice_servers]]\nurls = [\"stun:stun.example.org:3478\"]\n",
        );
        let plan = plan(&old, &new);
        assert_eq!(
            plan.changed_live,
            [
                "rooms.max_peers",
                "rooms.max_rooms",
                "rooms.auto_create",
                "rtc.ice_servers"
            ]
        );
        assert!(plan.needs_restart.is_empty(), "{plan:?}");
        assert_eq!(in_effect(&old, &new), new);
    }

    #[test]
    fn sockets_media_and_logging_need_a_restart() {
        let old = Config::default();
        let new = parsed(
            "[http]\nlisten = \"127.0.0.1:9999\"\n[rtc]\nudp_port = 4000\nbind_ips = [\"127.0.0.1\"]\nfast_path = false\n[control]\nsocket = \"/tmp/x.sock\"\ngroup = \"adm\"\n[recording]\ndir = \"/srv\"\n[log]\nlevel = \"debug\"\n",
        );
        let plan = plan(&old, &new);
        assert!(plan.changed_live.is_empty(), "{plan:?}");
        assert_eq!(
            plan.needs_restart,
            [
                "http.listen",
                "rtc.udp_port",
                "rtc.bind_ips",
                "rtc.fast_path",
                "control.socket",
                "control.group",
                "recording.dir",
                "log.level"
            ]
        );
        // Nothing of it takes effect.
        assert_eq!(in_effect(&old, &new), old);
    }

    #[test]
    fn mixed_changes_are_split() {
        let old = parsed("[rooms]\nmax_peers = 10\n");
        let new = parsed("[rooms]\nmax_peers = 20\n[rtc]\nice_failed_timeout_ms = 9000\n");
        let plan = plan(&old, &new);
        assert_eq!(plan.changed_live, ["rooms.max_peers"]);
        assert_eq!(plan.needs_restart, ["rtc.ice_failed_timeout_ms"]);
        let effect = in_effect(&old, &new);
        assert_eq!(effect.rooms.max_peers, 20);
        assert_eq!(effect.rtc.ice_failed_timeout_ms, 4000);
        // Reloading the same file again reports only what still waits.
        let again = super::plan(&effect, &new);
        assert!(again.changed_live.is_empty());
        assert_eq!(again.needs_restart, ["rtc.ice_failed_timeout_ms"]);
    }

    #[test]
    fn tokens_origins_and_rate_limits_change_live_presets_do_not() {
        let old = Config::default();
        let new = parsed(
            "[http]\nallowed_origins = [\"https://meet.example.org\"]\n[limits]\njoins_per_second = 1\n[[rooms.preset]]\nname = \"lobby\"\n",
        );
        let plan = plan(&old, &new);
        assert_eq!(
            plan.changed_live,
            ["http.allowed_origins", "limits.joins_per_second"]
        );
        assert_eq!(plan.needs_restart, ["rooms.preset"]);
        let effect = in_effect(&old, &new);
        assert_eq!(effect.http.allowed_origins, new.http.allowed_origins);
        assert!(effect.rooms.preset.is_empty());
    }

    #[test]
    fn ice_servers_keep_their_credentials() {
        let servers = ice_servers(&[IceServerConfig {
            urls: vec!["turn:t:3478".into()],
            username: Some("u".into()),
            credential: Some("c".into()),
        }]);
        assert_eq!(servers[0].credential.as_deref(), Some("c"));
    }
}
