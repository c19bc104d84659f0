//! What `sfuctl cluster status` shows: the nodes of a cluster as the
//! directory in Redis has them.

use serde::{Deserialize, Serialize};

/// One node, as it last announced itself (every second; gone after 5 s of
/// silence).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The node's `cluster.node_id`.
    pub node_id: String,
    /// Where other nodes reach its signaling (`cluster.url`).
    pub url: String,
    /// The node's sfud version.
    pub version: String,
    /// Rooms open on it.
    pub rooms: usize,
    /// Participants in them.
    pub peers: usize,
    /// Tracks published to it.
    pub tracks: usize,
    /// RTP packets it forwarded per second, over the last second.
    pub forwarded_pps: u64,
    /// Its CPU use over the last second, percent of one core, rounded.
    pub cpu_percent: u32,
    /// When it started, milliseconds since the UNIX epoch.
    pub started_ms: u64,
    /// When it last announced itself, milliseconds since the UNIX epoch.
    pub heartbeat_ms: u64,
}

/// What [`super::Request::ClusterStatus`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: String,
    /// The Redis URL it uses, without any password.
    pub redis: String,
    /// The nodes alive, sorted by id (this one included once it has
    /// announced itself).
    pub nodes: Vec<ClusterNode>,
    /// The answering node's clock then, milliseconds since the UNIX epoch,
    /// to tell each node's age.
    pub now_ms: u64,
}
