//! What the control plane sees of rooms: plain serializable snapshots.

use serde::Serialize;
use sfu_proto::signaling::{Role, RoomMode};

use crate::media::{ConnectionReport, ReceivedLayerReport, TrackReport};

/// One room in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    /// Room name.
    pub name: String,
    /// SFU or mesh.
    pub mode: RoomMode,
    /// Participants now.
    pub peers: usize,
    /// Published tracks now.
    pub tracks: usize,
    /// Participant limit.
    pub max_peers: usize,
    /// Seconds since the room was created.
    pub age_secs: u64,
    /// Created by an operator: stays when empty until closed.
    pub persistent: bool,
}

/// One participant in detail.
#[derive(Debug, Clone, Serialize)]
pub struct PeerDetail {
    /// Peer id (the msid of its tracks).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Speaker or listener.
    pub role: Role,
    /// What it (or an operator) muted.
    pub muted: Vec<sfu_proto::signaling::TrackKind>,
    /// What it sends nothing of, or only digital silence of, unmuted.
    pub silent: Vec<sfu_proto::signaling::TrackKind>,
    /// Seconds since joining.
    pub joined_secs: u64,
    /// The publish connection, if any.
    pub publish: Option<ConnectionReport>,
    /// The subscribe connection, if any.
    pub subscribe: Option<ConnectionReport>,
    /// Tracks the peer publishes.
    pub tracks: Vec<TrackReport>,
    /// Simulcast tracks the peer receives, and the layer of each.
    pub receiving: Vec<ReceivedLayerReport>,
    /// The peer's estimate of its downlink, bits per second.
    pub downlink_bps: Option<u64>,
    /// The media worker holding its connections (SFU rooms).
    pub worker: Option<usize>,
}

/// A room in detail.
#[derive(Debug, Clone, Serialize)]
pub struct RoomDetail {
    /// The summary line.
    #[serde(flatten)]
    pub summary: RoomSummary,
    /// Every participant.
    pub members: Vec<PeerDetail>,
}
