//! Several sfud nodes behind one signaling URL, through Redis (see
//! docs/cluster.md). Redis holds only what expires by itself: each node's
//! entry in the directory, renewed every second. A room's state stays on
//! the node that serves it.
//!
//! The directory: [`Cluster::announce`] runs for the daemon's life and
//! [`Cluster::status`] lists the nodes alive. A node that cannot reach
//! Redis says so once, keeps serving what it serves, and announces itself
//! again when Redis is back. Which node serves a room: `placement`, on the
//! leases of `lease`.

mod directory;
pub mod lease;
mod placement;
pub mod remote;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use sfu_proto::control::cluster::{ClusterNode, ClusterStatus};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::media::MediaHandle;
use crate::metrics::ProcessSample;
use crate::rooms::RoomRegistry;

pub use directory::{HEARTBEAT, NODE_TTL};
pub use placement::{least_loaded, Claim, Placement, LEASE_TTL};

/// Why the directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `cluster.redis_url`.
    #[error("this daemon is not part of a cluster (no cluster.redis_url)")]
    NotClustered,
    /// Redis did not answer, or answered an error.
    #[error("Redis at {url} is unavailable: {reason}")]
    Unavailable {
        /// The URL, without a password.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// This node's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    node_id: String,
    url: String,
    client: redis::Client,
    /// Shown in status and errors: the URL without a password.
    redis_shown: String,
    /// The connection once made (it reconnects by itself after that).
    conn: Mutex<Option<ConnectionManager>>,
    started_ms: u64,
    /// Whether the last announcement succeeded.
    reachable: AtomicBool,
    /// Nodes in the directory when last listed.
    nodes_seen: AtomicUsize,
    /// Rooms and participants of the whole directory when last listed.
    cluster_rooms: AtomicUsize,
    cluster_peers: AtomicUsize,
    /// Sessions this node relays to other nodes now.
    relayed: AtomicUsize,
    /// Relayed sessions whose owner could not be reached or went away.
    relay_failures: std::sync::atomic::AtomicU64,
    /// What nodes present to each other.
    secret: String,
    /// Rooms other nodes serve, as last learnt: node, URL and when.
    owners: Mutex<std::collections::HashMap<String, (String, String, std::time::Instant)>>,
    /// The leases of this node's rooms, by room.
    leases: Mutex<std::collections::HashMap<String, lease::Lease>>,
}

/// What `/metrics` shows of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Whether the last announcement succeeded.
    pub reachable: bool,
    /// Nodes in the directory when this node last listed it.
    pub nodes: usize,
    /// Rooms of all nodes, as announced when this node last listed them.
    pub cluster_rooms: usize,
    /// Participants of all nodes, likewise.
    pub cluster_peers: usize,
    /// Rooms whose lease this node holds.
    pub leases: usize,
    /// Sessions this node relays to the nodes serving their rooms.
    pub relayed_sessions: usize,
    /// Relayed sessions whose owner could not be reached or went away.
    pub relay_failures: u64,
}

/// A session relayed from this node, counted while it lasts.
pub struct Relayed(Option<Arc<Inner>>);

impl Drop for Relayed {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.relayed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How often the announcing node also lists the directory, in heartbeats.
const LIST_EVERY: u32 = 5;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The host name, for the default node id (letters, digits, `.`, `_`, `-`).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if crate::config::valid_node_id(name) {
        name.to_owned()
    } else {
        "sfud".to_owned()
    }
}

/// `redis://user:secret@host:6379/0` as `redis://host:6379/0`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Cluster {
    /// The cluster `config` describes, or a single node. `http` is the
    /// address signaling is served on (the default node URL).
    pub fn new(config: &Config, http: std::net::SocketAddr) -> Cluster {
        let Some(url) = &config.cluster.redis_url else {
            return Cluster::single();
        };
        // `Config::validate` parsed it already.
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return Cluster::single();
        };
        let inner = Inner {
            node_id: config.cluster.node_id.clone().unwrap_or_else(host_name),
            url: config
                .cluster
                .url
                .clone()
                .unwrap_or_else(|| format!("ws://{http}")),
            client,
            redis_shown: without_password(url),
            conn: Mutex::new(None),
            started_ms: now_ms(),
            reachable: AtomicBool::new(false),
            nodes_seen: AtomicUsize::new(0),
            cluster_rooms: AtomicUsize::new(0),
            cluster_peers: AtomicUsize::new(0),
            relayed: AtomicUsize::new(0),
            relay_failures: std::sync::atomic::AtomicU64::new(0),
            secret: config.cluster.secret.clone().unwrap_or_default(),
            owners: Mutex::new(std::collections::HashMap::new()),
            leases: Mutex::new(std::collections::HashMap::new()),
        };
        Cluster {
            inner: Some(Arc::new(inner)),
        }
    }

    /// A single node: no cluster.
    pub fn single() -> Cluster {
        Cluster { inner: None }
    }

    /// This node's id, when it is part of a cluster.
    pub fn node_id(&self) -> Option<&str> {
        self.inner.as_deref().map(|i| i.node_id.as_str())
    }

    /// The secret this node presents to others, when it is part of a
    /// cluster.
    pub fn secret(&self) -> Option<&str> {
        self.inner.as_deref().map(|i| i.secret.as_str())
    }

    /// Whether `presented` is the cluster's secret (compared in constant
    /// time). Always false on a single node.
    pub fn authenticates(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.inner.as_deref().is_some_and(|i| {
            !i.secret.is_empty() && bool::from(i.secret.as_bytes().ct_eq(presented))
        })
    }

    /// The cluster's gauges, when this node is part of one.
    pub fn gauges(&self) -> Option<Gauges> {
        let inner = self.inner.as_ref()?;
        Some(Gauges {
            reachable: inner.reachable.load(Ordering::Relaxed),
            nodes: inner.nodes_seen.load(Ordering::Relaxed),
            cluster_rooms: inner.cluster_rooms.load(Ordering::Relaxed),
            cluster_peers: inner.cluster_peers.load(Ordering::Relaxed),
            leases: inner
                .leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            relayed_sessions: inner.relayed.load(Ordering::Relaxed),
            relay_failures: inner.relay_failures.load(Ordering::Relaxed),
        })
    }

    /// Counts a session relayed from this node while the guard lives.
    pub fn relayed(&self) -> Relayed {
        if let Some(inner) = &self.inner {
            inner.relayed.fetch_add(1, Ordering::Relaxed);
        }
        Relayed(self.inner.clone())
    }

    /// Counts a relayed session whose owner could not be reached or went
    /// away.
    pub fn relay_failed(&self) {
        if let Some(inner) = &self.inner {
            inner.relay_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unavailable(inner: &Inner, reason: impl ToString) -> ClusterError {
        ClusterError::Unavailable {
            url: inner.redis_shown.clone(),
            reason: reason.to_string(),
        }
    }

    /// The connection, made on first use (at most [`HEARTBEAT`] to connect).
    async fn connection(inner: &Inner) -> Result<ConnectionManager, ClusterError> {
        let made = inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(conn) = made {
            return Ok(conn);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(HEARTBEAT))
            .set_response_timeout(Some(HEARTBEAT));
        let conn = tokio::time::timeout(
            HEARTBEAT,
            ConnectionManager::new_with_config(inner.client.clone(), config),
        )
        .await
        .map_err(|_| Self::unavailable(inner, "no answer within a second"))?
        .map_err(|e| Self::unavailable(inner, e))?;
        *inner.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// A Redis command's answer, or why there was none within a heartbeat.
    async fn within<T>(
        inner: &Inner,
        command: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, ClusterError> {
        tokio::time::timeout(HEARTBEAT, command)
            .await
            .map_err(|_| Self::unavailable(inner, "no answer within a second"))?
            .map_err(|e| Self::unavailable(inner, e))
    }

    /// The nodes the directory lists now.
    async fn list_nodes(inner: &Inner) -> Result<Vec<ClusterNode>, ClusterError> {
        let mut conn = Self::connection(inner).await?;
        Self::within(inner, directory::list(&mut conn)).await
    }

    /// The nodes alive, as the directory has them.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let inner = self.inner.as_ref().ok_or(ClusterError::NotClustered)?;
        Ok(ClusterStatus {
            node_id: inner.node_id.clone(),
            redis: inner.redis_shown.clone(),
            nodes: Self::list_nodes(inner).await?,
            now_ms: now_ms(),
        })
    }

    /// Announces this node every [`HEARTBEAT`] with its load until `stop`,
    /// then takes its entry out of the directory. Does nothing on a single
    /// node.
    pub async fn announce(self, rooms: RoomRegistry, media: MediaHandle, stop: CancellationToken) {
        let Some(inner) = self.inner else {
            return;
        };
        info!(node = %inner.node_id, url = %inner.url, redis = %inner.redis_shown, "joining the cluster");
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut load = Load::default();
        let mut reachable = None;
        let mut beats = 0u32;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let node = load.sample(&inner, &rooms, &media).await;
            let announced = match Self::connection(&inner).await {
                Ok(mut conn) => Self::within(&inner, directory::announce(&mut conn, &node)).await,
                Err(e) => Err(e),
            };
            inner.reachable.store(announced.is_ok(), Ordering::Relaxed);
            if announced.is_ok() && beats.is_multiple_of(LIST_EVERY) {
                if let Ok(nodes) = Self::list_nodes(&inner).await {
                    inner.nodes_seen.store(nodes.len(), Ordering::Relaxed);
                    let rooms = nodes.iter().map(|n| n.rooms).sum();
                    inner.cluster_rooms.store(rooms, Ordering::Relaxed);
                    let peers = nodes.iter().map(|n| n.peers).sum();
                    inner.cluster_peers.store(peers, Ordering::Relaxed);
                }
            }
            beats = beats.wrapping_add(1);
            // Said once per change, not every second.
            match (announced, reachable) {
                (Ok(()), Some(true)) => {}
                (Ok(()), _) => {
                    info!(node = %inner.node_id, "announced in the cluster directory");
                    reachable = Some(true);
                }
                (Err(e), Some(false)) => tracing::debug!(error = %e, "still cannot announce"),
                (Err(e), _) => {
                    warn!(error = %e, "cannot announce this node; serving what it serves and retrying every second");
                    reachable = Some(false);
                }
            }
        }
        // Within the accept stage's deadline, Redis or not.
        let withdraw = async {
            let mut conn = Self::connection(&inner).await.ok()?;
            directory::withdraw(&mut conn, &inner.node_id).await.ok()
        };
        match tokio::time::timeout(Duration::from_millis(800), withdraw).await {
            Ok(Some(())) => info!(node = %inner.node_id, "left the cluster directory"),
            _ => warn!(
                node = %inner.node_id,
                "could not leave the cluster directory; its entry expires within 5 s"
            ),
        }
    }
}

/// The load a node announces, and what the next sample differs from.
#[derive(Default)]
struct Load {
    last: Option<(std::time::Instant, u64, Option<f64>)>,
}

impl Load {
    async fn sample(
        &mut self,
        inner: &Inner,
        rooms: &RoomRegistry,
        media: &MediaHandle,
    ) -> ClusterNode {
        let counts = rooms.counts();
        let stats = tokio::time::timeout(Duration::from_millis(500), media.stats())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let cpu = ProcessSample::read().cpu_seconds;
        let now = std::time::Instant::now();
        let (forwarded_pps, cpu_percent) = match self.last {
            Some((at, forwarded, cpu_then)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let pps = (stats.rtp_forwarded.saturating_sub(forwarded) as f64 / secs) as u64;
                let cpu = match (cpu, cpu_then) {
                    (Some(c), Some(t)) => ((c - t).max(0.0) / secs * 100.0).round() as u32,
                    _ => 0,
                };
                (pps, cpu)
            }
            None => (0, 0),
        };
        self.last = Some((now, stats.rtp_forwarded, cpu));
        ClusterNode {
            node_id: inner.node_id.clone(),
            url: inner.url.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            rooms: counts.rooms,
            peers: counts.peers,
            tracks: stats.tracks,
            forwarded_pps,
            cpu_percent,
            started_ms: inner.started_ms,
            heartbeat_ms: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_not_shown() {
        assert_eq!(
            without_password("redis://:secret@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(
            without_password("redis://user:p@ss@host:1"),
            "redis://host:1"
        );
        assert_eq!(without_password("redis://host:6379"), "redis://host:6379");
    }
}
