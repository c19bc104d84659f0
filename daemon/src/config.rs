//! Daemon configuration: the typed form of `sfud.toml`, its defaults and its
//! validation.
//!
//! Every key has a default that works on one machine, so an empty file (or no
//! file) is a valid configuration. The text is parsed once; an unknown key, a
//! wrong type or a bad value is a [`ConfigError`] naming the key and its line.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod cluster;
mod turn;
pub use cluster::{valid_node_id, ClusterConfig};
pub use turn::TurnSection;

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[http]`: the signaling and demo-page listener.
    pub http: HttpConfig,
    /// `[rtc]`: media transport and ICE.
    pub rtc: RtcConfig,
    /// `[rooms]`: room limits.
    pub rooms: RoomsConfig,
    /// `[control]`: the local control socket used by `sfuctl`.
    pub control: ControlConfig,
    /// `[recording]`: where recordings are written.
    pub recording: RecordingConfig,
    /// `[log]`: log filter and output format.
    pub log: LogConfig,
    /// `[auth]`: who may join.
    pub auth: AuthConfig,
    /// `[limits]`: rate limits on signaling.
    pub limits: LimitsConfig,
    /// `[cluster]`: other nodes, through Redis.
    pub cluster: ClusterConfig,
    /// `[turn]`: the embedded TURN server.
    pub turn: TurnSection,
}

/// `[auth]`: join tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `open` (anyone may join any room; only on a loopback `http.listen`)
    /// or `token` (a signed join token is required).
    pub mode: AuthMode,
    /// HS256 signing keys; a token names its key with the `kid` header.
    pub keys: Vec<AuthKey>,
}

/// Whether joins need a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token needed (development on loopback).
    #[default]
    Open,
    /// A valid join token is required.
    Token,
}

/// One token signing key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKey {
    /// Key id, carried in the token's `kid` header.
    pub id: String,
    /// The shared secret (at least 32 bytes).
    pub secret: String,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// `[limits]`: signaling rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Joins per second from one source address (bursts of twice that).
    pub joins_per_second: u32,
    /// WebSocket messages per second on one connection (bursts of twice that).
    pub messages_per_second: u32,
    /// Seconds a WebSocket may stay open without joining a room.
    pub join_timeout_secs: u64,
    /// Seconds of silence (no frame, not even the answer to the server's
    /// pings, sent every third of it) after which a WebSocket is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send an HTTP request's headers.
    pub header_timeout_secs: u64,
    /// HTTP connections (WebSockets included) one address may hold at once.
    pub max_connections_per_ip: usize,
    /// HTTP connections (WebSockets included) the server holds at once.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            joins_per_second: 5,
            messages_per_second: 100,
            join_timeout_secs: 10,
            idle_timeout_secs: 30,
            header_timeout_secs: 10,
            max_connections_per_ip: 256,
            max_connections: 10_000,
        }
    }
}

/// `[http]`: the HTTP listener serving the demo page and `/ws`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Web origins whose pages may open `/ws` (e.g. `https://meet.example.org`);
    /// empty allows every origin.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            allowed_origins: Vec::new(),
        }
    }
}

/// `[rtc]`: the UDP media transport and ICE.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtcConfig {
    /// The one UDP port all media uses on each bind address; 0 picks a free port.
    pub udp_port: u16,
    /// Whether media is also served over TCP (ICE-TCP, RFC 6544: passive
    /// host candidates on `tcp_port`), for clients whose UDP is blocked.
    pub ice_tcp: bool,
    /// The TCP port of ICE-TCP on each bind address (each worker's is
    /// `tcp_port + its index`); absent: the same number as `udp_port`.
    pub tcp_port: Option<u16>,
    /// Local addresses ICE gathers on; empty means every IPv4 address of every
    /// interface that is up, loopback included.
    pub bind_ips: Vec<IpAddr>,
    /// Addresses announced instead of `bind_ips` (1:1 NAT): one per bind
    /// address in the same order, or a single one for all.
    pub public_ips: Vec<IpAddr>,
    /// STUN/TURN servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServerConfig>,
    /// Milliseconds without an ICE check from a peer before ICE reports it
    /// disconnected (logged; nothing is torn down).
    pub ice_disconnected_timeout_ms: u64,
    /// Milliseconds without any packet from a peer (media, RTCP or ICE)
    /// before its connection counts as lost and the peer is removed.
    pub ice_failed_timeout_ms: u64,
    /// No longer used: sends never queue (a full socket buffer drops and
    /// counts). Still accepted so that files written for earlier versions
    /// load; sfud warns when a file sets it.
    pub subscriber_queue_packets: Option<usize>,
    /// Whether sfud protects and sends forwarded media itself (the fast
    /// path) rather than through the WebRTC stack's write pipeline.
    pub fast_path: bool,
    /// Media workers (threads, each with its own UDP port: `udp_port` to
    /// `udp_port + workers - 1`); a room lives on one of them. Absent: one
    /// per CPU.
    pub workers: Option<usize>,
    /// Participants of one room that its media worker takes before the
    /// room's next participants go to the least-loaded worker, so that a
    /// large room's fan-out runs on several cores (each other worker gets
    /// the room's tracks once, piped). 0: a room never spreads.
    pub room_spread_peers: usize,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_port: 50000,
            ice_tcp: true,
            tcp_port: None,
            bind_ips: Vec::new(),
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            ice_disconnected_timeout_ms: 2000,
            ice_failed_timeout_ms: 4000,
            subscriber_queue_packets: None,
            fast_path: true,
            workers: None,
            room_spread_peers: DEFAULT_ROOM_SPREAD_PEERS,
        }
    }
}

/// Participants of one room its media worker takes before the room
/// spreads: below this, one worker's fan-out is cheaper than piping
/// (`docs/benchmarks.md`, "Media workers").
pub const DEFAULT_ROOM_SPREAD_PEERS: usize = 50;

/// The most media workers a daemon runs.
pub const MAX_WORKERS: usize = 64;

impl RtcConfig {
    /// The first worker's ICE-TCP port: `tcp_port`, or `udp_port`'s number.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port.unwrap_or(self.udp_port)
    }

    /// How many media workers run: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WORKERS)
        })
    }

    /// How long without a packet before ICE reports a peer disconnected.
    pub fn ice_disconnected_timeout(&self) -> Duration {
        Duration::from_millis(self.ice_disconnected_timeout_ms)
    }

    /// How long without any packet from a participant before its connection
    /// counts as lost.
    pub fn ice_failed_timeout(&self) -> Duration {
        Duration::from_millis(self.ice_failed_timeout_ms)
    }
}

/// One STUN or TURN server, in the shape of WebRTC's `RTCIceServer`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceServerConfig {
    /// URLs of the server, each starting with `stun:`, `stuns:`, `turn:` or `turns:`.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

// Written by hand so that a logged configuration never shows a TURN password.
impl fmt::Debug for IceServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerConfig")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `[rooms]`: room limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Most participants in one room.
    pub max_peers: usize,
    /// Most rooms at once.
    pub max_rooms: usize,
    /// Whether a `join` to an unknown room creates it.
    pub auto_create: bool,
    /// Most participants in one mesh room (mesh cost grows as N squared).
    pub mesh_max_peers: usize,
    /// Rooms that exist from start-up and stay while empty.
    pub preset: Vec<RoomPreset>,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            max_peers: 50,
            max_rooms: 100,
            auto_create: true,
            mesh_max_peers: 6,
            preset: Vec::new(),
        }
    }
}

/// `[[rooms.preset]]`: a room created at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPreset {
    /// Room name.
    pub name: String,
    /// `sfu` or `mesh`.
    #[serde(default)]
    pub mode: sfu_proto::signaling::RoomMode,
    /// Participant limit (default: the mode's).
    #[serde(default)]
    pub max_peers: Option<usize>,
}

/// `[control]`: the Unix socket `sfuctl` talks to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Path of the control socket.
    pub socket: PathBuf,
    /// Group given access to the socket; `None` keeps the daemon's own group.
    pub group: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/sfud/sfud.sock"),
            group: None,
        }
    }
}

/// `[recording]`: where recordings go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Directory recordings are written to.
    pub dir: PathBuf,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/sfud/recordings"),
        }
    }
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive list, e.g. `info,sfud=debug`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// Where and how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The journal when stderr is connected to it (under systemd), the console otherwise.
    #[default]
    Auto,
    /// Human-readable lines on stderr.
    Console,
    /// Structured entries sent to the systemd journal.
    Journald,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{origin}:{line}: {}", with_key(key.as_deref(), message))]
    Parse {
        /// The file name (or other origin) of the text.
        origin: String,
        /// 1-based line of the error (1 if toml gives no position).
        line: usize,
        /// Dotted key the error is about, when it can be told, e.g. `rtc.udp_port`.
        key: Option<String>,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A value has the right type but is not allowed.
    #[error("{}{key}: {message}", location(origin.as_deref(), *line))]
    Invalid {
        /// The file name of the text, if the configuration came from one.
        origin: Option<String>,
        /// 1-based line of the key, when it is in the text.
        line: Option<usize>,
        /// Dotted key, with an index for list items, e.g. `rtc.ice_servers[0].urls`.
        key: String,
        /// What was wrong and what to do.
        message: String,
    },
}

fn with_key(key: Option<&str>, message: &str) -> String {
    match key {
        Some(key) => format!("{key}: {message}"),
        None => message.to_owned(),
    }
}

fn location(origin: Option<&str>, line: Option<usize>) -> String {
    match (origin, line) {
        (Some(origin), Some(line)) => format!("{origin}:{line}: "),
        (Some(origin), None) => format!("{origin}: "),
        (None, _) => String::new(),
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: None,
        line: None,
        key: key.into(),
        message: message.into(),
    }
}

fn at_least_one(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let keys = KeyIndex::new(text);
        let config: Config =
            toml::from_str(text).map_err(|e| keys.parse_error(text, origin, &e))?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                origin: Some(origin.to_owned()),
                line: keys.line_of(&key),
                key,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks the values that parse but are not allowed; the first one found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.rtc.validate()?;
        at_least_one("rooms.max_peers", self.rooms.max_peers as u64)?;
        at_least_one("rooms.max_rooms", self.rooms.max_rooms as u64)?;
        at_least_one("rooms.mesh_max_peers", self.rooms.mesh_max_peers as u64)?;
        for (i, p) in self.rooms.preset.iter().enumerate() {
            let n = p.name.chars().count();
            if n == 0 || n > 64 || p.name.chars().any(char::is_control) {
                return Err(invalid(
                    format!("rooms.preset[{i}].name"),
                    "must be 1 to 64 printable characters",
                ));
            }
            if p.max_peers == Some(0) {
                return Err(invalid(
                    format!("rooms.preset[{i}].max_peers"),
                    "must be at least 1",
                ));
            }
            if self.rooms.preset[..i].iter().any(|q| q.name == p.name) {
                return Err(invalid(
                    format!("rooms.preset[{i}].name"),
                    format!("\"{}\" is listed twice", p.name),
                ));
            }
        }
        self.auth.validate(&self.http)?;
        self.cluster.validate()?;
        self.turn.validate()?;
        at_least_one(
            "limits.joins_per_second",
            u64::from(self.limits.joins_per_second),
        )?;
        at_least_one(
            "limits.messages_per_second",
            u64::from(self.limits.messages_per_second),
        )?;
        at_least_one("limits.join_timeout_secs", self.limits.join_timeout_secs)?;
        at_least_one("limits.idle_timeout_secs", self.limits.idle_timeout_secs)?;
        at_least_one(
            "limits.header_timeout_secs",
            self.limits.header_timeout_secs,
        )?;
        at_least_one(
            "limits.max_connections_per_ip",
            self.limits.max_connections_per_ip as u64,
        )?;
        at_least_one("limits.max_connections", self.limits.max_connections as u64)?;
        for (i, o) in self.http.allowed_origins.iter().enumerate() {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(invalid(
                    format!("http.allowed_origins[{i}]"),
                    format!("\"{o}\" is not an origin; write scheme://host[:port] with no path, e.g. \"https://meet.example.org\""),
                ));
            }
        }
        self.control.validate()?;
        if self.recording.dir.as_os_str().is_empty() {
            return Err(invalid(
                "recording.dir",
                "is empty; give the directory recordings are written to",
            ));
        }
        self.log.validate()
    }
}

impl RtcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, ip) in self.bind_ips.iter().enumerate() {
            let key = format!("rtc.bind_ips[{i}]");
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid(key, format!(
                    "{ip} is not an interface address; list the addresses of the interfaces to use, or leave bind_ips empty for all of them"
                )));
            }
            if self.bind_ips[..i].contains(ip) {
                return Err(invalid(
                    key,
                    format!("{ip} is listed twice; list each address once"),
                ));
            }
        }
        let publics = self.public_ips.len();
        if publics > 1 && self.bind_ips.is_empty() {
            return Err(invalid("rtc.public_ips", format!(
                "has {publics} addresses but bind_ips is empty (all interfaces); give a single public address, or list bind_ips to pair them"
            )));
        }
        if publics > 1 && publics != self.bind_ips.len() {
            return Err(invalid("rtc.public_ips", format!(
                "has {publics} addresses for {} bind_ips; give one public address per bind_ips entry, in the same order, or a single one for all",
                self.bind_ips.len()
            )));
        }
        for (i, public) in self.public_ips.iter().enumerate() {
            let key = format!("rtc.public_ips[{i}]");
            if public.is_unspecified() || public.is_multicast() {
                return Err(invalid(key, format!(
                    "{public} is not an address clients can reach; give the public address that is forwarded to this host"
                )));
            }
            let stands_for = if publics == 1 {
                &self.bind_ips[..]
            } else {
                &self.bind_ips[i..=i]
            };
            if let Some(local) = stands_for.iter().find(|l| l.is_ipv4() != public.is_ipv4()) {
                return Err(invalid(key, format!(
                    "{public} stands for bind address {local} of the other IP family; give an address of the same family"
                )));
            }
            if stands_for.is_empty() && !public.is_ipv4() {
                return Err(invalid(key, format!(
                    "{public} is IPv6 but the default bind_ips are IPv4 addresses; give an IPv4 address or list the IPv6 bind_ips"
                )));
            }
        }
        for (i, server) in self.ice_servers.iter().enumerate() {
            server.validate(&format!("rtc.ice_servers[{i}]"))?;
        }
        at_least_one(
            "rtc.ice_disconnected_timeout_ms",
            self.ice_disconnected_timeout_ms,
        )?;
        if self.ice_failed_timeout_ms <= self.ice_disconnected_timeout_ms {
            return Err(invalid("rtc.ice_failed_timeout_ms", format!(
                "must be greater than rtc.ice_disconnected_timeout_ms ({}): both count from the last packet received",
                self.ice_disconnected_timeout_ms
            )));
        }
        if let Some(n) = self.workers {
            if !(1..=MAX_WORKERS).contains(&n) {
                return Err(invalid(
                    "rtc.workers",
                    format!("must be 1 to {MAX_WORKERS}, or absent for one per CPU"),
                ));
            }
        }
        let last_tcp = usize::from(self.tcp_port()) + self.worker_count() - 1;
        if self.ice_tcp && self.tcp_port() != 0 && last_tcp > usize::from(u16::MAX) {
            return Err(invalid(
                "rtc.tcp_port",
                format!(
                    "with {} workers the ports run to {last_tcp}, past 65535: lower it",
                    self.worker_count()
                ),
            ));
        }
        let last = usize::from(self.udp_port) + self.worker_count() - 1;
        if self.udp_port != 0 && last > usize::from(u16::MAX) {
            return Err(invalid(
                "rtc.udp_port",
                format!(
                    "with {} workers the ports run to {last}, past 65535: lower it",
                    self.worker_count()
                ),
            ));
        }
        Ok(())
    }
}

impl IceServerConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(invalid(
                format!("{key}.urls"),
                "is empty; list at least one URL such as \"stun:stun.example.org:3478\"",
            ));
        }
        let mut turn = false;
        for url in &self.urls {
            match url.split_once(':') {
                Some(("stun" | "stuns", rest)) if !rest.is_empty() => {}
                Some(("turn" | "turns", rest)) if !rest.is_empty() => turn = true,
                _ => {
                    return Err(invalid(format!("{key}.urls"), format!(
                        "\"{url}\" is not an ICE server URL; write stun:, stuns:, turn: or turns: followed by host and port"
                    )))
                }
            }
        }
        if turn {
            for (name, value) in [
                ("username", &self.username),
                ("credential", &self.credential),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(
                        format!("{key}.{name}"),
                        "is missing; a turn: or turns: server needs both username and credential",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl AuthConfig {
    /// Shortest secret accepted: HS256 wants a key as long as its hash.
    const MIN_SECRET: usize = 32;

    fn validate(&self, http: &HttpConfig) -> Result<(), ConfigError> {
        if self.mode == AuthMode::Open && !http.listen.ip().is_loopback() {
            return Err(invalid("auth.mode", format!(
                "is \"open\" but http.listen ({}) is not a loopback address: anyone who reaches it could join any room; set auth.mode = \"token\" with auth.keys, or listen on 127.0.0.1",
                http.listen
            )));
        }
        if self.mode == AuthMode::Token && self.keys.is_empty() {
            return Err(invalid(
                "auth.keys",
                "is empty but auth.mode is \"token\"; add a key: [[auth.keys]] id = \"k1\" secret = \"(32+ random characters)\"",
            ));
        }
        for (i, k) in self.keys.iter().enumerate() {
            if k.id.is_empty() {
                return Err(invalid(
                    format!("auth.keys[{i}].id"),
                    "is empty; give the key a name",
                ));
            }
            if k.secret.len() < Self::MIN_SECRET {
                return Err(invalid(format!("auth.keys[{i}].secret"), format!(
                    "is {} bytes; use at least {} random characters (e.g. `openssl rand -base64 33`)",
                    k.secret.len(),
                    Self::MIN_SECRET
                )));
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(invalid(
                    format!("auth.keys[{i}].id"),
                    format!("\"{}\" is listed twice", k.id),
                ));
            }
        }
        Ok(())
    }
}

impl ControlConfig {
    /// sun_path holds 108 bytes including the terminating NUL.
    const MAX_SOCKET_PATH: usize = 107;

    fn validate(&self) -> Result<(), ConfigError> {
        let len = self.socket.as_os_str().len();
        if len == 0 {
            return Err(invalid(
                "control.socket",
                "is empty; give the path of the control socket, e.g. \"/run/sfud/sfud.sock\"",
            ));
        }
        if len > Self::MAX_SOCKET_PATH {
            return Err(invalid("control.socket", format!(
                "is {len} bytes long but a Unix socket path holds at most {}; choose a shorter path",
                Self::MAX_SOCKET_PATH
            )));
        }
        if self.group.as_deref() == Some("") {
            return Err(invalid(
                "control.group",
                "is empty; give a group name, or remove the key to keep the daemon's group",
            ));
        }
        Ok(())
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        const HINT: &str =
            "use error, warn, info, debug or trace, or a list such as \"info,sfud=debug\"";
        if self.level.split(',').any(|part| part.trim().is_empty()) {
            return Err(invalid(
                "log.level",
                format!("\"{}\" has an empty part; {HINT}", self.level),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.level) {
            return Err(invalid(
                "log.level",
                format!("\"{}\" is not a log filter ({e}); {HINT}", self.level),
            ));
        }
        Ok(())
    }
}

/// Where each table header and key of a TOML text is, so errors can name the
/// dotted key and its line. A line scanner, not a parser: it only has to be
/// right for text that toml accepted up to the error.
struct KeyIndex {
    entries: Vec<KeyEntry>,
}

/// A table header or a `key = value`: its path and the lines it covers.
struct KeyEntry {
    /// Path segments; items of arrays of tables carry their index, e.g. `ice_servers[0]`.
    path: Vec<String>,
    line: usize,
    /// Last line of a value spanning several lines (multi-line arrays and strings).
    end_line: usize,
}

impl KeyEntry {
    fn new(path: Vec<String>, line: usize) -> Self {
        Self {
            path,
            line,
            end_line: line,
        }
    }

    fn dotted(&self) -> String {
        self.path.join(".")
    }
}

impl KeyIndex {
    fn new(text: &str) -> Self {
        let mut entries: Vec<KeyEntry> = Vec::new();
        let mut table: Vec<String> = Vec::new();
        let mut array_items: HashMap<String, usize> = HashMap::new();
        let mut value = ValueScan::default();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            if value.is_open() {
                value.scan(line);
                if let Some(last) = entries.last_mut() {
                    last.end_line = number;
                }
                continue;
            }
            let rest = line.trim_start();
            if let Some(header) = rest.strip_prefix("[[") {
                if let Some((mut path, after)) = parse_keys(header) {
                    if after.starts_with("]]") {
                        let item = array_items.entry(path.join(".")).or_insert(0);
                        if let Some(last) = path.last_mut() {
                            last.push_str(&format!("[{item}]"));
                        }
                        *item += 1;
                        table.clone_from(&path);
                        entries.push(KeyEntry::new(path, number));
                    }
                }
            } else if let Some(header) = rest.strip_prefix('[') {
                if let Some((path, after)) = parse_keys(header) {
                    if after.starts_with(']') {
                        table.clone_from(&path);
                        entries.push(KeyEntry::new(path, number));
                    }
                }
            } else if let Some((keys, after)) = parse_keys(rest) {
                if let Some(rhs) = after.strip_prefix('=') {
                    let path = table.iter().cloned().chain(keys).collect();
                    entries.push(KeyEntry::new(path, number));
                    value.scan(rhs);
                }
            }
        }
        Self { entries }
    }

    /// The entry whose header or key/value covers `line`.
    fn covering(&self, line: usize) -> Option<&KeyEntry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.line <= line && line <= e.end_line)
    }

    /// Line of `key` (dotted, with `[i]` indices), or of its nearest enclosing
    /// key or table that is written in the text.
    fn line_of(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.dotted() == key) {
                return Some(entry.line);
            }
            let cut = if key.ends_with(']') {
                key.rfind('[')
            } else {
                key.rfind('.')
            };
            key = &key[..cut?];
        }
    }

    fn parse_error(&self, text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
        let line = error
            .span()
            .map(|span| line_at(text, span.start))
            .unwrap_or(1);
        let raw = error.message().trim();
        let unknown = quoted_after(raw, "unknown field `");
        let key = self.covering(line).map(|entry| match unknown {
            // The unknown key is the entry itself (possibly dotted), or a key
            // inside an inline table on that line.
            Some(name) => match entry
                .path
                .iter()
                .rposition(|s| s.split('[').next() == Some(name))
            {
                Some(at) => entry.path[..=at].join("."),
                None => format!("{}.{name}", entry.dotted()),
            },
            None => entry.dotted(),
        });
        let message = readable(raw);
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            key,
            message,
        }
    }
}

/// Rewords serde's Rust-flavoured phrases for someone editing a TOML file.
fn readable(message: &str) -> String {
    let mut message = message.replace('\n', "; ");
    if let Some(at) = message.find("expected struct ") {
        message.replace_range(at.., "expected a table");
    }
    [
        ("unknown field", "unknown key"),
        ("unknown variant", "unknown value"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
    ]
    .into_iter()
    .fold(message, |text, (from, to)| text.replace(from, to))
}

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The text between `prefix` and the next backtick, e.g. a field name in a serde message.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

/// Parses a dotted key (`a.b`, `"quoted".c`) at the start of `s`; returns the
/// segments and the text after them, trimmed.
fn parse_keys(s: &str) -> Option<(Vec<String>, &str)> {
    let mut keys = Vec::new();
    let mut rest = s.trim_start();
    loop {
        let (key, after) = parse_key(rest)?;
        keys.push(key);
        rest = after.trim_start();
        match rest.strip_prefix('.') {
            Some(after_dot) => rest = after_dot.trim_start(),
            None => return Some((keys, rest)),
        }
    }
}

fn parse_key(s: &str) -> Option<(String, &str)> {
    if let Some(inner) = s.strip_prefix('"') {
        let end = basic_string_end(inner)?;
        return Some((inner[..end].to_owned(), &inner[end + 1..]));
    }
    if let Some(inner) = s.strip_prefix('\'') {
        let end = inner.find('\'')?;
        return Some((inner[..end].to_owned(), &inner[end + 1..]));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
}

/// Byte index of the `"` closing a basic string whose opening quote is already consumed.
fn basic_string_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Tracks whether a value continues on the next line: open brackets, or a
/// multi-line string.
#[derive(Default)]
struct ValueScan {
    depth: usize,
    multiline: Option<&'static str>,
}

impl ValueScan {
    fn is_open(&self) -> bool {
        self.depth > 0 || self.multiline.is_some()
    }

    fn scan(&mut self, line: &str) {
        let mut rest = line;
        loop {
            if let Some(delim) = self.multiline {
                let Some(end) = multiline_end(rest, delim) else {
                    return;
                };
                self.multiline = None;
                rest = &rest[end..];
            }
            let Some(c) = rest.chars().next() else { return };
            if let Some(delim) = ["\"\"\"", "'''"].into_iter().find(|d| rest.starts_with(d)) {
                self.multiline = Some(delim);
                rest = &rest[3..];
                continue;
            }
            rest = &rest[c.len_utf8()..];
            match c {
                '#' => return,
                '"' => match basic_string_end(rest) {
                    Some(end) => rest = &rest[end + 1..],
                    None => return,
                },
                '\'' => match rest.find('\'') {
                    Some(end) => rest = &rest[end + 1..],
                    None => return,
                },
                '[' | '{' => self.depth += 1,
                ']' | '}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// Byte index just past the delimiter closing a multi-line string in `s`.
fn multiline_end(s: &str, delim: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && delim.starts_with('"') {
            escaped = true;
        } else if s[i..].starts_with(delim) {
            return Some(i + delim.len());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "sfud.toml")
    }

    fn parsed(text: &str) -> Config {
        parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    /// Line, key and Display of a parse error.
    fn parse_error(text: &str) -> (usize, Option<String>, String) {
        match parse(text) {
            Err(e @ ConfigError::Parse { .. }) => {
                let shown = e.to_string();
                let ConfigError::Parse { line, key, .. } = e else {
                    unreachable!()
                };
                (line, key, shown)
            }
            other => panic!("{text:?} should be a parse error, got {other:?}"),
        }
    }

    /// Line, key and Display of a validation error.
    fn invalid_error(text: &str) -> (Option<usize>, String, String) {
        match parse(text) {
            Err(e @ ConfigError::Invalid { .. }) => {
                let shown = e.to_string();
                let ConfigError::Invalid { line, key, .. } = e else {
                    unreachable!()
                };
                (line, key, shown)
            }
            other => panic!("{text:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        for text in ["", "\n# only a comment\n", "[rtc]\n[rooms]\n"] {
            assert_eq!(parsed(text), Config::default());
        }
        let defaults = Config::default();
        assert_eq!(
            defaults.http.listen,
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        assert_eq!(defaults.rtc.udp_port, 50000);
        assert_eq!(defaults.rooms.max_peers, 50);
        assert_eq!(defaults.log.format, LogFormat::Auto);
        assert_eq!(defaults.validate().ok(), Some(()));
    }

    #[test]
    fn shipped_file_is_exactly_the_defaults() {
        assert_eq!(
            parsed(include_str!("../../config/sfud.toml")),
            Config::default()
        );
    }

    #[test]
    fn every_key_parses() {
        let config = parsed(
            r#"
[http]
listen = "0.0.0.0:9000"

[rtc]
udp_port = 0
bind_ips = ["127.0.0.1", "10.0.0.2"]
public_ips = ["203.0.113.7", "203.0.113.8"]
ice_disconnected_timeout_ms = 1000
ice_failed_timeout_ms = 3000
subscriber_queue_packets = 64

[[rtc.ice_servers]]
urls = ["stun:stun.example.org:3478"]

[[rtc.ice_servers]]
urls = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
username = "sfu"
credential = "secret"

[rooms]
max_peers = 4
max_rooms = 2
auto_create = false

[control]
socket = "/tmp/sfud.sock"
group = "sfud"

[recording]
dir = "/srv/recordings"

[log]
level = "info,sfud=debug"
format = "journald"

[auth]
mode = "token"

[[auth.keys]]
id = "k1"
secret = "0123456789abcdef0123456789abcdef"

[limits]
joins_per_second = 2
messages_per_second = 20

[cluster]
redis_url = "redis://10.0.0.9:6379"
node_id = "sfu-1"
url = "ws://10.0.0.5:8080"
secret = "fedcba9876543210fedcba9876543210"
"#,
        );
        assert_eq!(
            config.cluster,
            ClusterConfig {
                redis_url: Some("redis://10.0.0.9:6379".into()),
                node_id: Some("sfu-1".into()),
                url: Some("ws://10.0.0.5:8080".into()),
                secret: Some("fedcba9876543210fedcba9876543210".into()),
            }
        );
        assert_eq!(config.http.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(config.auth.mode, AuthMode::Token);
        assert_eq!(config.auth.keys[0].id, "k1");
        assert_eq!(config.limits.joins_per_second, 2);
        assert_eq!(config.limits.messages_per_second, 20);
        let rtc = &config.rtc;
        assert_eq!(rtc.udp_port, 0);
        assert_eq!(rtc.bind_ips.len(), 2);
        assert_eq!(
            rtc.public_ips[1],
            "203.0.113.8".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(rtc.ice_servers.len(), 2);
        assert_eq!(rtc.ice_servers[1].username.as_deref(), Some("sfu"));
        assert_eq!(rtc.ice_servers[1].credential.as_deref(), Some("secret"));
        assert_eq!(rtc.ice_disconnected_timeout(), Duration::from_secs(1));
        assert_eq!(rtc.ice_failed_timeout(), Duration::from_secs(3));
        assert_eq!(rtc.subscriber_queue_packets, Some(64), "still accepted");
        assert_eq!(
            config.rooms,
            RoomsConfig {
                max_peers: 4,
                max_rooms: 2,
                auto_create: false,
                ..RoomsConfig::default()
            }
        );
        assert_eq!(config.control.socket, PathBuf::from("/tmp/sfud.sock"));
        assert_eq!(config.control.group.as_deref(), Some("sfud"));
        assert_eq!(config.recording.dir, PathBuf::from("/srv/recordings"));
        assert_eq!(config.log.level, "info,sfud=debug");
        assert_eq!(config.log.format, LogFormat::Journald);
    }

    #[test]
    fn unknown_top_level_key_names_key_and_line() {
        let (line, key, shown) = parse_error("# comment\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("listen")));
        assert!(
            shown.starts_with("sfud.toml:2: listen: unknown key `listen`, expected one of"),
            "{shown}"
        );

        let (line, key, _) = parse_error("[http]\n\n[htp]\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!((line, key.as_deref()), (3, Some("htp")));
    }

    #[test]
    fn unknown_key_in_a_section_names_key_and_line() {
        let (line, key, shown) = parse_error("[rooms]\nmax_peers = 3\nmax_peer = 4\n");
        assert_eq!((line, key.as_deref()), (3, Some("rooms.max_peer")));
        assert!(
            shown.starts_with("sfud.toml:3: rooms.max_peer: unknown key `max_peer`"),
            "{shown}"
        );

        let (line, key, _) = parse_error("[[rtc.servers]]\nurls = []\n");
        assert_eq!((line, key.as_deref()), (1, Some("rtc.servers[0]")));

        let (line, key, _) = parse_error("rtc.udp_prot = 1\n");
        assert_eq!((line, key.as_deref()), (1, Some("rtc.udp_prot")));

        let (line, key, _) =
            parse_error("[[rtc.ice_servers]]\nurls = [\"stun:a\"]\npassword = \"x\"\n");
        assert_eq!(
            (line, key.as_deref()),
            (3, Some("rtc.ice_servers[0].password"))
        );

        let (line, key, _) =
            parse_error("[rtc]\nice_servers = [{ urls = [\"stun:a\"], pass = \"x\" }]\n");
        assert_eq!((line, key.as_deref()), (2, Some("rtc.ice_servers.pass")));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let (line, key, shown) = parse_error("[rtc]\nudp_port = \"50000\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("rtc.udp_port")));
        assert!(
            shown.starts_with("sfud.toml:2: rtc.udp_port: invalid type: string"),
            "{shown}"
        );

        let (line, key, shown) = parse_error("[rtc]\n\nudp_port = 70000\n");
        assert_eq!((line, key.as_deref()), (3, Some("rtc.udp_port")));
        assert!(
            shown.ends_with("expected an integer from 0 to 65535"),
            "{shown}"
        );

        let (line, key, _) = parse_error("[http]\nlisten = \"localhost\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("http.listen")));

        let (line, key, _) =
            parse_error("[rtc]\nbind_ips = [\n  \"127.0.0.1\",\n  \"not-an-ip\",\n]\n");
        assert_eq!((line, key.as_deref()), (4, Some("rtc.bind_ips")));

        let (line, key, _) = parse_error("[log]\nformat = \"json\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("log.format")));

        let (line, key, shown) = parse_error("rooms = 3\n");
        assert_eq!((line, key.as_deref()), (1, Some("rooms")));
        assert!(shown.ends_with("expected a table"), "{shown}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let (line, key, shown) = parse_error("[rooms]\nmax_peers = 3\n[rtc\n");
        assert_eq!((line, key), (3, None));
        assert!(!shown.contains('\n'), "{shown}");

        let (line, key, _) = parse_error("[rooms]\nmax_peers = 3\nmax_peers = 4\n");
        assert_eq!((line, key.as_deref()), (3, Some("rooms.max_peers")));
    }

    #[test]
    fn multi_line_values_do_not_hide_later_keys() {
        let text = "[log]\nlevel = \"\"\"\n[rooms]\nmax_peers = 1\"\"\"\n[rooms]\nmax_peers = 0\n";
        let (line, key, _) = invalid_error(text);
        assert_eq!((line, key.as_str()), (Some(6), "rooms.max_peers"));
        let keys = KeyIndex::new(text);
        assert_eq!(keys.line_of("log.level"), Some(2));
        assert_eq!(keys.line_of("rooms.max_peers"), Some(6));
        assert_eq!(keys.line_of("rooms.x"), Some(5));
    }

    #[test]
    fn rooms_limits_must_be_at_least_one() {
        let (line, key, shown) = invalid_error("# limits\n[rooms]\nmax_peers = 0\n");
        assert_eq!((line, key.as_str()), (Some(3), "rooms.max_peers"));
        assert_eq!(shown, "sfud.toml:3: rooms.max_peers: must be at least 1");
        let (line, key, _) = invalid_error("rooms.max_rooms = 0\n");
        assert_eq!((line, key.as_str()), (Some(1), "rooms.max_rooms"));
    }

    #[test]
    fn the_ice_tcp_port_follows_the_udp_port_and_must_fit_every_worker() {
        let rtc = parse("[rtc]\nudp_port = 40000\n").expect("valid").rtc;
        assert!(rtc.ice_tcp);
        assert_eq!(rtc.tcp_port(), 40000);
        let (line, key, shown) =
            invalid_error("[rtc]\nworkers = 4\ntcp_port = 65534\nudp_port = 1000\n");
        assert_eq!((line, key.as_str()), (Some(3), "rtc.tcp_port"));
        assert!(
            shown.ends_with("the ports run to 65537, past 65535: lower it"),
            "{shown}"
        );
        // Off, its port does not matter.
        parse("[rtc]\nworkers = 4\nice_tcp = false\ntcp_port = 65534\n").expect("valid");
    }

    #[test]
    fn validate_without_text_has_no_location() {
        let mut config = Config::default();
        config.rooms.max_peers = 0;
        let error = config.validate().expect_err("max_peers 0 is invalid");
        assert_eq!(error.to_string(), "rooms.max_peers: must be at least 1");
    }

    #[test]
    fn ice_server_urls_need_a_scheme() {
        let text = "[[rtc.ice_servers]]\nurls = [\"stun:a:3478\"]\n\n[[rtc.ice_servers]]\nurls = [\"turn.example.org:3478\"]\n";
        let (line, key, shown) = invalid_error(text);
        assert_eq!((line, key.as_str()), (Some(5), "rtc.ice_servers[1].urls"));
        assert!(shown.contains("stun:, stuns:, turn: or turns:"), "{shown}");

        let (_, key, _) = invalid_error("[[rtc.ice_servers]]\nurls = [\"stun:\"]\n");
        assert_eq!(key, "rtc.ice_servers[0].urls");

        let (line, key, _) = invalid_error("[[rtc.ice_servers]]\nusername = \"u\"\n");
        assert_eq!((line, key.as_str()), (Some(1), "rtc.ice_servers[0].urls"));

        let (line, key, _) = invalid_error("[rtc]\nice_servers = [{ urls = [\"http://x\"] }]\n");
        assert_eq!((line, key.as_str()), (Some(2), "rtc.ice_servers[0].urls"));
    }

    #[test]
    fn turn_servers_need_credentials() {
        let (line, key, _) =
            invalid_error("[[rtc.ice_servers]]\nurls = [\"turns:t:5349\"]\nusername = \"u\"\n");
        assert_eq!(
            (line, key.as_str()),
            (Some(1), "rtc.ice_servers[0].credential")
        );
        let (line, key, _) = invalid_error(
            "[[rtc.ice_servers]]\nurls = [\"turn:t:3478\"]\nusername = \"\"\ncredential = \"c\"\n",
        );
        assert_eq!(
            (line, key.as_str()),
            (Some(3), "rtc.ice_servers[0].username")
        );
    }

    #[test]
    fn public_ips_match_bind_ips() {
        let (line, key, shown) = invalid_error(
            "[rtc]\nbind_ips = [\"10.0.0.1\"]\npublic_ips = [\"203.0.113.1\", \"203.0.113.2\"]\n",
        );
        assert_eq!((line, key.as_str()), (Some(3), "rtc.public_ips"));
        assert!(shown.contains("has 2 addresses for 1 bind_ips"), "{shown}");

        let (_, key, shown) =
            invalid_error("[rtc]\npublic_ips = [\"203.0.113.1\", \"203.0.113.2\"]\n");
        assert_eq!(key, "rtc.public_ips");
        assert!(shown.contains("give a single public address"), "{shown}");
        let (_, key, _) = invalid_error("[rtc]\npublic_ips = [\"0.0.0.0\"]\n");
        assert_eq!(key, "rtc.public_ips[0]");
        let (_, key, _) = invalid_error("[rtc]\npublic_ips = [\"2001:db8::1\"]\n");
        assert_eq!(key, "rtc.public_ips[0]");
        let (line, key, _) = invalid_error(
            "[rtc]\nbind_ips = [\"10.0.0.1\", \"fd00::1\"]\npublic_ips = [\"203.0.113.1\", \"203.0.113.2\"]\n",
        );
        assert_eq!((line, key.as_str()), (Some(3), "rtc.public_ips[1]"));

        // One public address for every bind address, and pairwise, are both fine.
        parsed("[rtc]\nbind_ips = [\"10.0.0.1\", \"10.0.0.2\"]\npublic_ips = [\"203.0.113.1\"]\n");
        parsed("[rtc]\nbind_ips = [\"10.0.0.1\", \"fd00::1\"]\npublic_ips = [\"203.0.113.1\", \"2001:db8::1\"]\n");
        parsed("[rtc]\npublic_ips = [\"203.0.113.1\"]\n");
    }

    #[test]
    fn bind_ips_are_distinct_interface_addresses() {
        for text in [
            "[rtc]\nbind_ips = [\"0.0.0.0\"]\n",
            "[rtc]\nbind_ips = [\"239.1.1.1\"]\n",
        ] {
            let (line, key, _) = invalid_error(text);
            assert_eq!((line, key.as_str()), (Some(2), "rtc.bind_ips[0]"));
        }
        let (_, key, shown) = invalid_error("[rtc]\nbind_ips = [\"127.0.0.1\", \"127.0.0.1\"]\n");
        assert_eq!(key, "rtc.bind_ips[1]");
        assert!(shown.contains("listed twice"), "{shown}");
    }

    #[test]
    fn ice_timeouts() {
        let (line, key, _) = invalid_error("[rtc]\nice_disconnected_timeout_ms = 0\n");
        assert_eq!(
            (line, key.as_str()),
            (Some(2), "rtc.ice_disconnected_timeout_ms")
        );
        let (line, key, _) = invalid_error("[rtc]\nice_failed_timeout_ms = 2000\n");
        assert_eq!((line, key.as_str()), (Some(2), "rtc.ice_failed_timeout_ms"));
        // A key left at its default is located by its section.
        let (line, key, _) = invalid_error("[rtc]\nice_disconnected_timeout_ms = 5000\n");
        assert_eq!((line, key.as_str()), (Some(1), "rtc.ice_failed_timeout_ms"));

        let rtc = RtcConfig::default();
        assert_eq!(rtc.ice_disconnected_timeout(), Duration::from_secs(2));
        assert_eq!(rtc.ice_failed_timeout(), Duration::from_secs(4));
    }

    #[test]
    fn control_socket_and_group() {
        let (line, key, _) = invalid_error("[control]\nsocket = \"\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "control.socket"));
        let long = format!("[control]\nsocket = \"/{}\"\n", "s".repeat(107));
        let (_, key, shown) = invalid_error(&long);
        assert_eq!(key, "control.socket");
        assert!(shown.contains("108 bytes"), "{shown}");
        parsed(&format!("[control]\nsocket = \"/{}\"\n", "s".repeat(106)));
        let (line, key, _) = invalid_error("[control]\ngroup = \"\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "control.group"));
    }

    #[test]
    fn recording_dir_is_not_empty() {
        let (line, key, _) = invalid_error("[recording]\ndir = \"\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "recording.dir"));
    }

    #[test]
    fn log_level_is_a_filter() {
        for good in [
            "error",
            "warn",
            "info",
            "debug",
            "trace",
            "info,sfud=debug",
            "sfud::media=trace",
        ] {
            assert_eq!(
                parsed(&format!("[log]\nlevel = \"{good}\"\n")).log.level,
                good
            );
        }
        for bad in ["", "info,", ",debug", "info,,debug", "sfud=loud"] {
            let (line, key, _) = invalid_error(&format!("[log]\nlevel = \"{bad}\"\n"));
            assert_eq!((line, key.as_str()), (Some(2), "log.level"), "{bad:?}");
        }
    }

    #[test]
    fn load_reads_the_file_or_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sfud.toml");
        match Config::load(&path) {
            Err(ConfigError::Read { path: named, .. }) => assert_eq!(named, path),
            other => panic!("a missing file should be a read error, got {other:?}"),
        }
        std::fs::write(&path, "[rooms]\nmax_peers = 0\n").expect("write config");
        let shown = Config::load(&path)
            .expect_err("max_peers 0 is invalid")
            .to_string();
        assert_eq!(
            shown,
            format!("{}:2: rooms.max_peers: must be at least 1", path.display())
        );
        std::fs::write(&path, "[rooms]\nmax_peers = 2\n").expect("write config");
        assert_eq!(
            Config::load(&path).expect("valid config").rooms.max_peers,
            2
        );
    }

    #[test]
    fn debug_hides_the_turn_credential() {
        let server = IceServerConfig {
            urls: vec!["turn:t:3478".to_owned()],
            username: Some("user".to_owned()),
            credential: Some("hunter2".to_owned()),
        };
        let shown = format!("{server:?}");
        assert!(
            shown.contains("user") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn open_auth_needs_a_loopback_listener_and_token_auth_needs_keys() {
        let e = parse("[http]\nlisten = \"0.0.0.0:8080\"\n").expect_err("refused");
        assert!(e.to_string().contains("auth.mode"), "{e}");
        let e = parse("[auth]\nmode = \"token\"\n").expect_err("refused");
        assert!(e.to_string().contains("auth.keys"), "{e}");
        let e = parse("[auth]\nmode = \"token\"\n[[auth.keys]]\nid = \"k\"\nsecret = \"short\"\n")
            .expect_err("refused");
        assert!(e.to_string().contains("auth.keys[0].secret"), "{e}");
        assert!(
            parse("[http]\nlisten = \"[::1]:8080\"\n").is_ok(),
            "IPv6 loopback is loopback"
        );
    }

    #[test]
    fn origins_presets_and_limits_are_checked() {
        let e = parse("[http]\nallowed_origins = [\"meet.example.org\"]\n").expect_err("refused");
        assert!(e.to_string().contains("http.allowed_origins[0]"), "{e}");
        let e = parse("[[rooms.preset]]\nname = \"a\"\n[[rooms.preset]]\nname = \"a\"\n")
            .expect_err("refused");
        assert!(e.to_string().contains("rooms.preset[1].name"), "{e}");
        let e = parse("[limits]\njoins_per_second = 0\n").expect_err("refused");
        assert!(e.to_string().contains("limits.joins_per_second"), "{e}");
        let c = parsed("[[rooms.preset]]\nname = \"lobby\"\nmode = \"mesh\"\nmax_peers = 4\n");
        assert_eq!(c.rooms.preset[0].mode, sfu_proto::signaling::RoomMode::Mesh);
        assert_eq!(c.rooms.preset[0].max_peers, Some(4));
    }
}
