//! The control protocol between `sfuctl` and the daemon's Unix socket (see
//! `docs/control.md`).
//!
//! Every message is one frame: a big-endian `u32` byte length, then that many
//! bytes of JSON ([`frame`]). The client speaks first: a [`Request::Hello`]
//! carrying [`PROTOCOL_VERSION`], answered by [`Response::Hello`] or by an
//! [`ErrorCode::VersionMismatch`] error. Then each request gets exactly one
//! response, in order, until either side closes.

pub mod cluster;
pub mod frame;
pub mod path;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::signaling::{Role, RoomMode, TrackKind};

/// The protocol version this build speaks; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from `sfuctl` to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The first frame of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Who is asking, e.g. `sfuctl 0.1.0`, for the daemon's log.
        client: String,
    },
    /// Version, uptime and counters.
    Status,
    /// Every room with its occupancy.
    RoomsList,
    /// One room with its participants and their tracks.
    RoomsShow {
        /// Room name.
        room: String,
    },
    /// Create an empty room.
    RoomsCreate {
        /// Room name.
        room: String,
        /// Participant limit; the daemon's `rooms.max_peers` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_peers: Option<usize>,
        /// Media mode; `sfu` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<RoomMode>,
    },
    /// Tell every participant the room is closed and disconnect them.
    RoomsClose {
        /// Room name.
        room: String,
    },
    /// Remove one participant from a room.
    PeersKick {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
    },
    /// Change a participant's role live.
    PeersRole {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
        /// The new role.
        role: Role,
    },
    /// Mute a participant's microphone or camera: the server stops
    /// forwarding it and the participant's page mutes it. Only the
    /// participant can unmute it.
    PeersMute {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
        /// Which track.
        kind: TrackKind,
    },
    /// Sign a join token with the daemon's first `auth.keys` key.
    TokenCreate {
        /// The room it admits to.
        room: String,
        /// The display name it grants.
        name: String,
        /// The role it grants.
        role: Role,
        /// Seconds until it expires.
        ttl_secs: u64,
        /// Whether the name may already be in use in the room.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_duplicate_name: bool,
    },
    /// Start recording a room.
    RecordStart {
        /// Room name.
        room: String,
    },
    /// Stop recording a room.
    RecordStop {
        /// Room name.
        room: String,
    },
    /// Recordings in progress.
    RecordList,
    /// Validate the configuration file the daemon was started with.
    ConfigCheck,
    /// Re-read the configuration file and apply what can change at run time.
    Reload,
    /// The nodes of the cluster this daemon belongs to.
    ClusterStatus,
}

impl Request {
    /// The request's wire `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Status => "status",
            Self::RoomsList => "rooms_list",
            Self::RoomsShow { .. } => "rooms_show",
            Self::RoomsCreate { .. } => "rooms_create",
            Self::RoomsClose { .. } => "rooms_close",
            Self::PeersKick { .. } => "peers_kick",
            Self::PeersRole { .. } => "peers_role",
            Self::PeersMute { .. } => "peers_mute",
            Self::TokenCreate { .. } => "token_create",
            Self::RecordStart { .. } => "record_start",
            Self::RecordStop { .. } => "record_stop",
            Self::RecordList => "record_list",
            Self::ConfigCheck => "config_check",
            Self::Reload => "reload",
            Self::ClusterStatus => "cluster_status",
        }
    }
}

/// A message from the daemon to `sfuctl`: one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The handshake succeeded.
    Hello {
        /// The daemon's [`PROTOCOL_VERSION`] (equal to the client's).
        protocol: u32,
        /// The daemon's name and version, e.g. `sfud 0.1.0`.
        daemon: String,
    },
    /// Answer to [`Request::Status`].
    Status(Status),
    /// Answer to [`Request::RoomsList`], sorted by name.
    Rooms {
        /// One entry per room.
        rooms: Vec<RoomSummary>,
        /// In a cluster: nodes of the directory that did not answer (their
        /// rooms are missing from the list).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unreachable: Vec<String>,
    },
    /// Answer to [`Request::RoomsShow`].
    Room(RoomDetail),
    /// Answer to [`Request::RoomsCreate`].
    RoomCreated {
        /// Room name.
        room: String,
    },
    /// Answer to [`Request::RoomsClose`].
    RoomClosed {
        /// Room name.
        room: String,
        /// How many participants were disconnected.
        peers: usize,
    },
    /// Answer to [`Request::PeersKick`].
    PeerKicked {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
    },
    /// Answer to [`Request::PeersRole`].
    RoleChanged {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
        /// The new role.
        role: Role,
    },
    /// Answer to [`Request::PeersMute`].
    PeerMuted {
        /// Room name.
        room: String,
        /// The participant's id.
        peer: String,
        /// Which track.
        kind: TrackKind,
    },
    /// Answer to [`Request::TokenCreate`].
    Token {
        /// The signed token (a JWT).
        token: String,
        /// Expiry, seconds since the UNIX epoch.
        expires_at: u64,
    },
    /// Answer to [`Request::ConfigCheck`]: the file is valid.
    ConfigValid {
        /// The file checked; `None` when the daemon runs on built-in defaults.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Answer to [`Request::Reload`].
    Reloaded(ReloadReport),
    /// Answer to [`Request::RecordStart`].
    RecordingStarted(Recording),
    /// Answer to [`Request::RecordStop`]: the recording's final state.
    RecordingStopped(Recording),
    /// Answer to [`Request::RecordList`]: recordings in progress, and failed
    /// ones until stopped or restarted.
    Recordings {
        /// One entry per room.
        recordings: Vec<Recording>,
    },
    /// Answer to [`Request::ClusterStatus`].
    Cluster(cluster::ClusterStatus),
    /// The request failed; the connection carries on unless the code says
    /// otherwise ([`ErrorCode::closes_connection`]).
    Error(ControlError),
}

/// What [`Request::Status`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The control socket's path.
    pub socket: String,
    /// The configuration file; `None` when running on built-in defaults.
    #[serde(default)]
    pub config: Option<String>,
    /// Rooms open.
    pub rooms: usize,
    /// Participants in all rooms.
    pub peers: usize,
    /// Peer connections alive in the media engine.
    pub connections: usize,
    /// Published tracks.
    pub tracks: usize,
    /// RTP packets received from publishers since start.
    pub rtp_in: u64,
    /// RTP packets forwarded to subscribers since start.
    pub rtp_forwarded: u64,
    /// Bytes received on the media sockets since start.
    pub bytes_in: u64,
    /// Bytes sent on the media sockets since start.
    pub bytes_out: u64,
    /// Media received, bits per second, over the last few seconds.
    pub bitrate_in_bps: u64,
    /// Media sent, bits per second, over the last few seconds.
    pub bitrate_out_bps: u64,
    /// Recording sessions in progress; `None` when this build cannot record.
    #[serde(default)]
    pub recordings: Option<usize>,
    /// Each media worker's share, in order.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
}

/// One media worker in [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Rooms it serves.
    pub rooms: usize,
    /// Participants of those rooms.
    pub peers: usize,
    /// Peer connections it holds.
    pub connections: usize,
    /// RTP packets it forwarded since start.
    pub rtp_forwarded: u64,
}

/// One room in [`Response::Rooms`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// Room name.
    pub name: String,
    /// Media mode.
    pub mode: RoomMode,
    /// Participants in the room.
    pub peers: usize,
    /// Published tracks.
    pub tracks: usize,
    /// Participant limit.
    pub max_peers: usize,
    /// Seconds since the room was created.
    pub age_secs: u64,
    /// Created by an operator: stays while empty until closed.
    #[serde(default)]
    pub persistent: bool,
    /// In a cluster: the node that serves the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One room in detail, for [`Response::Room`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDetail {
    /// The room's line in [`Response::Rooms`].
    #[serde(flatten)]
    pub summary: RoomSummary,
    /// Participants.
    pub members: Vec<PeerDetail>,
}

/// A participant of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDetail {
    /// Server-assigned id (what `peers kick` takes).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Current role.
    pub role: Role,
    /// What they have muted (or an operator muted).
    #[serde(default)]
    pub muted: Vec<TrackKind>,
    /// What they send nothing of, or only digital silence of, unmuted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent: Vec<TrackKind>,
    /// Seconds since they joined.
    pub joined_secs: u64,
    /// The connection carrying their media up, once negotiated.
    #[serde(default)]
    pub publish: Option<ConnectionReport>,
    /// The connection carrying everyone else's media down, once negotiated.
    #[serde(default)]
    pub subscribe: Option<ConnectionReport>,
    /// Tracks they publish.
    pub tracks: Vec<TrackDetail>,
    /// Simulcast tracks they receive, and the layer of each.
    #[serde(default)]
    pub receiving: Vec<ReceivedLayer>,
    /// Their browser's estimate of their downlink (REMB), bits per second.
    #[serde(default)]
    pub downlink_bps: Option<u64>,
    /// The media worker holding their connections (SFU rooms): a large
    /// room's participants are spread over several.
    #[serde(default)]
    pub worker: Option<usize>,
}

/// A simulcast track a participant receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedLayer {
    /// The track.
    pub track: u64,
    /// RID of the layer forwarded now (`None`: waiting for its first keyframe).
    pub layer: Option<String>,
    /// RID of the layer being switched to, if another.
    #[serde(default)]
    pub target: Option<String>,
    /// The participant paused it (its tile is hidden).
    #[serde(default)]
    pub paused: bool,
    /// Paused because the participant's link cannot carry even its lowest
    /// layer.
    #[serde(default)]
    pub starved: bool,
    /// The size the participant shows it at, as it said.
    #[serde(default)]
    pub max_width: Option<u32>,
    /// See `max_width`.
    #[serde(default)]
    pub max_height: Option<u32>,
    /// The highest layer it asked for, 0 the lowest.
    #[serde(default)]
    pub max_layer: Option<u8>,
}

/// One simulcast layer of a published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDetail {
    /// Its RID.
    pub rid: String,
    /// Payload bits per second over the last second or so.
    pub bitrate_bps: u64,
    /// Whether the publisher is sending it.
    pub active: bool,
    /// Whether the publisher was asked to stop sending it (nobody receives it).
    #[serde(default)]
    pub paused: bool,
}

/// One of a participant's peer connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// Connection state, e.g. `new`, `connected`, `failed`.
    pub state: String,
    /// The client's address ICE selected, once known.
    #[serde(default)]
    pub remote: Option<SocketAddr>,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackDetail {
    /// Daemon-wide track id.
    pub id: u64,
    /// `audio` or `video`.
    pub kind: String,
    /// Codec, e.g. `audio/opus`, `video/VP8`.
    pub codec: String,
    /// RTP packets received from the publisher.
    pub packets: u64,
    /// RTP payload bytes received from the publisher.
    pub bytes: u64,
    /// Payload bits per second over the last second or so.
    pub bitrate_bps: u64,
    /// Participants it is forwarded to.
    pub subscribers: usize,
    /// Simulcast layers, lowest first (empty for a track sent once).
    #[serde(default)]
    pub layers: Vec<LayerDetail>,
}

/// What [`Request::Reload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The file read; `None` when the daemon runs on built-in defaults.
    #[serde(default)]
    pub path: Option<String>,
    /// Keys whose new value is in effect now.
    pub changed_live: Vec<String>,
    /// Keys that changed in the file but keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

/// One room's recording session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// Room name.
    pub room: String,
    /// `recording`, `stopping`, `stopped` or `failed`.
    pub state: String,
    /// The session directory (files and `session.json`).
    pub dir: String,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// Seconds recorded so far (or in all).
    pub duration_secs: u64,
    /// Media packets the recorder could not keep up with (not in the files).
    pub dropped: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One entry per file.
    pub files: Vec<RecordingFile>,
}

/// One participant's file in a [`Recording`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFile {
    /// The participant's id.
    pub peer: String,
    /// Their display name.
    pub name: String,
    /// The file, relative to the session directory.
    pub file: String,
    /// `recording`, `finalized` or `failed`.
    pub state: String,
    /// Bytes written so far.
    pub bytes: u64,
    /// Codecs of its tracks, e.g. `video/VP8`, `audio/opus`.
    pub codecs: Vec<String>,
    /// Packets dropped because the recorder fell behind.
    pub dropped: u64,
    /// What went wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A failed request: a stable code for scripts and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ControlError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ControlError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ControlError {}

/// Stable error codes of [`ControlError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The first frame was not a `hello`.
    HandshakeRequired,
    /// Client and daemon speak different protocol versions.
    VersionMismatch,
    /// The peer's user may not administer the daemon.
    PermissionDenied,
    /// Not JSON, an unknown `type`, or a missing or wrongly typed field.
    BadRequest,
    /// A frame longer than [`frame::MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// No complete request arrived within the deadline.
    Timeout,
    /// No room of that name.
    UnknownRoom,
    /// No participant of that id in the room.
    UnknownPeer,
    /// A room of that name already exists.
    RoomExists,
    /// The daemon already has `rooms.max_rooms` rooms.
    TooManyRooms,
    /// A room name that is empty or too long.
    BadName,
    /// The daemon refused the request for another reason (see the message).
    Refused,
    /// The feature does not exist in this build (e.g. recording).
    NotAvailable,
    /// The configuration file does not load.
    InvalidConfig,
    /// The daemon is shutting down.
    ShuttingDown,
    /// `record start` on a room already being recorded.
    AlreadyRecording,
    /// `record stop` on a room not being recorded.
    NotRecording,
    /// The recording could not start or write (see the message).
    RecordingFailed,
    /// `cluster` requests on a daemon with no `cluster.redis_url`.
    NotClustered,
    /// The cluster's Redis did not answer (see the message).
    ClusterUnavailable,
    /// Something failed inside the daemon.
    Internal,
    /// A code this build does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HandshakeRequired => "handshake_required",
            Self::VersionMismatch => "version_mismatch",
            Self::PermissionDenied => "permission_denied",
            Self::BadRequest => "bad_request",
            Self::FrameTooLarge => "frame_too_large",
            Self::Timeout => "timeout",
            Self::UnknownRoom => "unknown_room",
            Self::UnknownPeer => "unknown_peer",
            Self::RoomExists => "room_exists",
            Self::TooManyRooms => "too_many_rooms",
            Self::BadName => "bad_name",
            Self::Refused => "refused",
            Self::NotAvailable => "not_available",
            Self::InvalidConfig => "invalid_config",
            Self::ShuttingDown => "shutting_down",
            Self::AlreadyRecording => "already_recording",
            Self::NotRecording => "not_recording",
            Self::RecordingFailed => "recording_failed",
            Self::NotClustered => "not_clustered",
            Self::ClusterUnavailable => "cluster_unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the daemon closes the connection after sending this error:
    /// before a successful handshake, and when the framing is lost.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::HandshakeRequired
                | Self::VersionMismatch
                | Self::PermissionDenied
                | Self::FrameTooLarge
                | Self::Timeout
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The daemon's answer to a client's `hello`: `Ok` with the daemon's
/// [`Response::Hello`], or the error to send before closing.
pub fn check_hello(request: &Request, daemon: &str) -> Result<Response, ControlError> {
    match request {
        Request::Hello { protocol, .. } if *protocol == PROTOCOL_VERSION => Ok(Response::Hello {
            protocol: PROTOCOL_VERSION,
            daemon: daemon.to_owned(),
        }),
        Request::Hello { protocol, client } => Err(ControlError::new(
            ErrorCode::VersionMismatch,
            format!(
                "{client} speaks control protocol {protocol} but {daemon} speaks {PROTOCOL_VERSION}; use the sfuctl installed with this sfud"
            ),
        )),
        other => Err(ControlError::new(
            ErrorCode::HandshakeRequired,
            format!(
                "the first request must be `hello` with the protocol version, not `{}`",
                other.kind()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_are_tagged_by_type() {
        let hello = Request::Hello {
            protocol: 1,
            client: "sfuctl 0.1.0".into(),
        };
        assert_eq!(
            serde_json::to_value(&hello).expect("serializes"),
            json!({"type": "hello", "protocol": 1, "client": "sfuctl 0.1.0"})
        );
        let create = Request::RoomsCreate {
            room: "demo".into(),
            max_peers: Some(4),
            mode: Some(RoomMode::Mesh),
        };
        assert_eq!(
            serde_json::to_value(&create).expect("serializes"),
            json!({"type": "rooms_create", "room": "demo", "max_peers": 4, "mode": "mesh"})
        );
        let parsed: Request =
            serde_json::from_value(json!({"type": "rooms_create", "room": "x"})).expect("parses");
        assert_eq!(
            parsed,
            Request::RoomsCreate {
                room: "x".into(),
                max_peers: None,
                mode: None
            }
        );
        assert_eq!(
            serde_json::to_value(Request::Status).expect("serializes"),
            json!({"type": "status"})
        );
    }

    #[test]
    fn every_request_kind_is_its_wire_type() {
        let all = [
            Request::Hello {
                protocol: 1,
                client: String::new(),
            },
            Request::Status,
            Request::RoomsList,
            Request::RoomsShow { room: "r".into() },
            Request::RoomsCreate {
                room: "r".into(),
                max_peers: None,
                mode: None,
            },
            Request::RoomsClose { room: "r".into() },
            Request::PeersKick {
                room: "r".into(),
                peer: "p".into(),
            },
            Request::RecordStart { room: "r".into() },
            Request::RecordStop { room: "r".into() },
            Request::RecordList,
            Request::ConfigCheck,
            Request::Reload,
        ];
        for request in all {
            let value = serde_json::to_value(&request).expect("serializes");
            assert_eq!(value["type"], request.kind(), "{request:?}");
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Hello {
                protocol: 1,
                daemon: "sfud 0.1.0".into(),
            },
            Response::Status(Status {
                version: "0.1.0".into(),
                recordings: None,
                ..Status::default()
            }),
            Response::Rooms {
                rooms: vec![RoomSummary {
                    name: "demo".into(),
                    mode: RoomMode::Sfu,
                    peers: 2,
                    tracks: 4,
                    max_peers: 50,
                    age_secs: 12,
                    persistent: false,
                    node: Some("sfu-1".into()),
                }],
                unreachable: vec!["sfu-2".into()],
            },
            Response::Room(RoomDetail {
                summary: RoomSummary {
                    name: "demo".into(),
                    mode: RoomMode::Sfu,
                    peers: 1,
                    tracks: 1,
                    max_peers: 50,
                    age_secs: 3,
                    persistent: true,
                    node: None,
                },
                members: vec![PeerDetail {
                    id: "00ab".into(),
                    name: "alice".into(),
                    role: Role::Speaker,
                    muted: vec![TrackKind::Audio],
                    silent: vec![TrackKind::Video],
                    joined_secs: 3,
                    publish: Some(ConnectionReport {
                        state: "connected".into(),
                        remote: Some(SocketAddr::from(([127, 0, 0, 1], 5000))),
                    }),
                    subscribe: None,
                    tracks: vec![TrackDetail {
                        id: 7,
                        kind: "audio".into(),
                        codec: "audio/opus".into(),
                        packets: 100,
                        bytes: 8000,
                        bitrate_bps: 32_000,
                        subscribers: 0,
                        layers: vec![LayerDetail {
                            rid: "q".into(),
                            bitrate_bps: 150_000,
                            active: true,
                            paused: false,
                        }],
                    }],
                    receiving: vec![ReceivedLayer {
                        track: 8,
                        layer: Some("h".into()),
                        target: Some("f".into()),
                        paused: false,
                        starved: false,
                        max_width: Some(640),
                        max_height: Some(480),
                        max_layer: None,
                    }],
                    downlink_bps: Some(1_200_000),
                    worker: Some(1),
                }],
            }),
            Response::RoomClosed {
                room: "demo".into(),
                peers: 2,
            },
            Response::Reloaded(ReloadReport {
                path: Some("/etc/sfud/sfud.toml".into()),
                changed_live: vec!["rooms.max_peers".into()],
                needs_restart: vec!["http.listen".into()],
            }),
            Response::Recordings {
                recordings: vec![Recording {
                    room: "demo".into(),
                    state: "failed".into(),
                    dir: "/var/lib/sfud/recordings/demo/20260125T030102Z".into(),
                    started: "2026-01-25T03:01:02.123Z".into(),
                    duration_secs: 5,
                    dropped: 2,
                    error: Some("No space left on device".into()),
                    files: vec![RecordingFile {
                        peer: "00ab".into(),
                        name: "alice".into(),
                        file: "alice-00ab.webm".into(),
                        state: "failed".into(),
                        bytes: 1000,
                        codecs: vec!["video/VP8".into(), "audio/opus".into()],
                        dropped: 2,
                        error: None,
                    }],
                }],
            },
            Response::RecordingStopped(Recording::default()),
            Response::Error(ControlError::new(ErrorCode::NotAvailable, "no recording")),
        ];
        for response in responses {
            let text = serde_json::to_string(&response).expect("serializes");
            let back: Response = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, response, "{text}");
        }
    }

    #[test]
    fn errors_carry_a_stable_code() {
        let error = Response::Error(ControlError::new(ErrorCode::UnknownRoom, "no room `x`"));
        assert_eq!(
            serde_json::to_value(&error).expect("serializes"),
            json!({"type": "error", "code": "unknown_room", "message": "no room `x`"})
        );
        // A newer daemon's code still parses.
        let newer: Response = serde_json::from_value(
            json!({"type": "error", "code": "quota_exceeded", "message": "m"}),
        )
        .expect("parses");
        assert_eq!(
            newer,
            Response::Error(ControlError::new(ErrorCode::Unknown, "m"))
        );
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotAvailable,
            ErrorCode::FrameTooLarge,
            ErrorCode::AlreadyRecording,
            ErrorCode::NotRecording,
            ErrorCode::RecordingFailed,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                json!(code.as_str())
            );
        }
    }

    #[test]
    fn hello_with_the_same_version_is_welcome() {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: "sfuctl 0.1.0".into(),
        };
        assert_eq!(
            check_hello(&hello, "sfud 0.1.0"),
            Ok(Response::Hello {
                protocol: PROTOCOL_VERSION,
                daemon: "sfud 0.1.0".into()
            })
        );
    }

    #[test]
    fn version_mismatch_is_a_clear_error() {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION + 1,
            client: "sfuctl 9.0.0".into(),
        };
        let error = check_hello(&hello, "sfud 0.1.0").expect_err("mismatch");
        assert_eq!(error.code, ErrorCode::VersionMismatch);
        assert!(error.code.closes_connection());
        assert!(
            error
                .message
                .contains("sfuctl 9.0.0 speaks control protocol 2")
                && error.message.contains("sfud 0.1.0 speaks 1"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_request_before_hello_is_refused() {
        let error = check_hello(&Request::Status, "sfud").expect_err("no hello");
        assert_eq!(error.code, ErrorCode::HandshakeRequired);
        assert!(error.message.contains("`status`"), "{}", error.message);
    }
}
