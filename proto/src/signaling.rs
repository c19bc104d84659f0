//! The WebSocket signaling protocol (see `docs/signaling.md`).
//!
//! Every text frame is one JSON object tagged by `type`.

use serde::{Deserialize, Serialize};

/// Largest text frame the server accepts.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcKind {
    /// The client offers, the server answers; carries the client's media up.
    Publish,
    /// The server offers, the client answers; carries everyone else's media down.
    Subscribe,
}

/// What a participant may do in a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes and receives.
    #[default]
    Speaker,
    /// Only receives.
    Listener,
}

/// How a room carries media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Media goes through the server.
    #[default]
    Sfu,
    /// The server only relays signaling between peers.
    Mesh,
}

/// A kind of track a participant can mute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// The microphone.
    Audio,
    /// The camera.
    Video,
    /// The shared screen: muted while not sharing.
    Screen,
}

impl TrackKind {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
            TrackKind::Screen => "screen",
        }
    }
}

/// What a published video track shows, as its publisher declares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    /// A camera (or anything not declared otherwise).
    #[default]
    Camera,
    /// A shared screen, window or tab.
    Screen,
}

/// An ICE candidate as the browser's `RTCIceCandidateInit` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInit {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media section it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The index of the media section it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a room; must be the first message.
    Join {
        /// Room name.
        room: String,
        /// Display name.
        name: String,
        /// Requested role (default speaker).
        #[serde(default)]
        role: Option<Role>,
        /// Join token, where the server requires one.
        #[serde(default)]
        token: Option<String>,
        /// Requested room mode, used when the join creates the room.
        #[serde(default)]
        mode: Option<RoomMode>,
    },
    /// An SDP offer (only for the publish connection).
    Offer {
        /// Must be `publish`.
        pc: PcKind,
        /// The SDP text.
        sdp: String,
        /// What each video track shows, by its `a=msid` track id; a track
        /// not named is a camera.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        sources: std::collections::BTreeMap<String, TrackSource>,
    },
    /// An SDP answer (only for the subscribe connection).
    Answer {
        /// Must be `subscribe`.
        pc: PcKind,
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate; `null` ends gathering.
    Candidate {
        /// Which connection it belongs to.
        pc: PcKind,
        /// The candidate, or `None` at the end of gathering.
        candidate: Option<CandidateInit>,
    },
    /// Relay `data` to another participant of a mesh room.
    Signal {
        /// The receiving participant's id.
        to: String,
        /// Anything the clients agree on (offers, answers, candidates).
        data: serde_json::Value,
    },
    /// How the subscriber wants one video track it receives: paused (its
    /// tile is hidden), or no bigger than its tile needs. Replaces what was
    /// asked before for that track.
    TrackSettings {
        /// The track's id as the subscribe offer names it (`video-7`).
        track: String,
        /// Stop forwarding the track until a later message resumes it.
        #[serde(default)]
        paused: bool,
        /// Width in pixels the receiver shows it at: the smallest layer
        /// at least this wide and high is enough.
        #[serde(default)]
        max_width: Option<u32>,
        /// Height in pixels the receiver shows it at.
        #[serde(default)]
        max_height: Option<u32>,
        /// Highest simulcast layer to receive, 0 the lowest.
        #[serde(default)]
        max_layer: Option<u8>,
    },
    /// Mute or unmute one's own microphone (`audio`) or camera (`video`):
    /// the server stops forwarding it and tells the room (`track_muted`).
    Mute {
        /// Which.
        kind: TrackKind,
        /// Muted (true) or not.
        muted: bool,
    },
    /// Leave the room; the server closes the socket.
    Leave,
}

/// Someone in a room, as other participants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Server-assigned id, also the msid of every track they publish.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Current role.
    pub role: Role,
    /// What they have muted (absent: nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted: Vec<TrackKind>,
    /// What they send nothing of, or only digital silence of, without
    /// having said so (absent: nothing): shown muted too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent: Vec<TrackKind>,
    /// They share their screen (absent: no).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sharing: bool,
}

/// A STUN or TURN server handed to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// Room name.
        room: String,
        /// This participant's id.
        peer_id: String,
        /// The room's mode.
        mode: RoomMode,
        /// This participant's role.
        role: Role,
        /// Everyone else already in the room.
        peers: Vec<PeerInfo>,
        /// STUN/TURN servers to configure.
        ice_servers: Vec<IceServer>,
    },
    /// Someone entered the room.
    PeerJoined {
        /// Who.
        peer: PeerInfo,
    },
    /// Someone left the room.
    PeerLeft {
        /// Their id.
        peer_id: String,
    },
    /// A participant's role changed (sent to everyone, the subject included).
    RoleChanged {
        /// Whose role.
        peer_id: String,
        /// The new role.
        role: Role,
    },
    /// Signaling relayed from another participant of a mesh room.
    Signal {
        /// The sending participant's id.
        from: String,
        /// What they sent.
        data: serde_json::Value,
    },
    /// The server's offer (subscribe connection).
    Offer {
        /// Always `subscribe`.
        pc: PcKind,
        /// The SDP text.
        sdp: String,
    },
    /// The server's answer (publish connection).
    Answer {
        /// Always `publish`.
        pc: PcKind,
        /// The SDP text.
        sdp: String,
    },
    /// One of the server's ICE candidates; `null` ends them.
    Candidate {
        /// Which connection it belongs to.
        pc: PcKind,
        /// The candidate, or `None` at the end.
        candidate: Option<CandidateInit>,
    },
    /// The simulcast layers of one of the receiver's own tracks that
    /// someone receives: the publisher should send those and pause the
    /// others (`RTCRtpEncodingParameters.active`), until told again.
    Layers {
        /// The track's id in the publisher's offer (its `a=msid` track id).
        track: String,
        /// Every layer of the track by RID: whether to send it.
        active: std::collections::BTreeMap<String, bool>,
    },
    /// A participant muted or unmuted a track, or an operator muted it
    /// (then the participant should mute it too). Sent to everyone, the
    /// participant included.
    TrackMuted {
        /// Whose.
        peer_id: String,
        /// Which.
        kind: TrackKind,
        /// Muted now (true) or not.
        muted: bool,
        /// An operator muted it (`sfuctl peers mute`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_operator: bool,
        /// The server saw it: the participant stopped sending the track,
        /// or sends only digital silence, without a `mute` (and `muted`
        /// false: it sends again).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detected: bool,
    },
    /// Who is speaking in the room, and the dominant speaker: sent to
    /// everyone when it changes, at most about four times a second.
    Speakers {
        /// Participants speaking now, loudest first.
        speaking: Vec<String>,
        /// The dominant speaker (who holds the floor), once anyone spoke.
        dominant: Option<String>,
    },
    /// A request failed; the session carries on unless the code says otherwise.
    Error {
        /// Stable snake_case code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

/// Stable error codes sent in [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, an unknown type, a missing or wrongly typed field.
    BadRequest,
    /// A frame larger than [`MAX_FRAME_BYTES`].
    TooLarge,
    /// A message that needs a joined session before `join`.
    NotJoined,
    /// A second `join` on one socket.
    AlreadyJoined,
    /// A message that does not fit the negotiation state.
    OutOfOrder,
    /// An SDP that does not parse or has nothing usable.
    BadSdp,
    /// An ICE candidate that does not parse.
    BadCandidate,
    /// The room has `rooms.max_peers` participants.
    RoomFull,
    /// The server has `rooms.max_rooms` rooms.
    TooManyRooms,
    /// The room does not exist and may not be created.
    UnknownRoom,
    /// The action is not allowed for this participant.
    NotAllowed,
    /// A room or display name that is empty or too long.
    BadName,
    /// The server is shutting down.
    ShuttingDown,
    /// The participant was removed by an operator.
    Kicked,
    /// The room was closed.
    RoomClosed,
    /// A room of that name already exists.
    RoomExists,
    /// The request does not fit the room's mode (sfu or mesh).
    WrongMode,
    /// The join token does not parse or its signature is wrong.
    BadToken,
    /// The join token has expired.
    TokenExpired,
    /// The join token is for another room.
    WrongRoom,
    /// Someone in the room already has that display name.
    NameTaken,
    /// A join token is required.
    TokenRequired,
    /// Too many joins or messages in too short a time.
    RateLimited,
    /// No such participant in the room.
    UnknownPeer,
    /// The participant receives no such track.
    UnknownTrack,
    /// A media connection's DTLS handshake failed: the certificate the
    /// client presented is not the one its description's fingerprint names.
    DtlsFailed,
    /// The room is served by another node of the cluster (the message
    /// names it and its URL).
    RoomElsewhere,
    /// This node lost the room to another node of the cluster, or the node
    /// serving it went away: join again.
    RoomMoved,
    /// The node serving the room cannot be reached now (it may have just
    /// died; its rooms are placed again within 10 s): try again shortly.
    RoomUnavailable,
    /// Something failed inside the server.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::OutOfOrder => "out_of_order",
            Self::BadSdp => "bad_sdp",
            Self::BadCandidate => "bad_candidate",
            Self::RoomFull => "room_full",
            Self::TooManyRooms => "too_many_rooms",
            Self::UnknownRoom => "unknown_room",
            Self::NotAllowed => "not_allowed",
            Self::BadName => "bad_name",
            Self::ShuttingDown => "shutting_down",
            Self::Kicked => "kicked",
            Self::RoomClosed => "room_closed",
            Self::RoomExists => "room_exists",
            Self::WrongMode => "wrong_mode",
            Self::BadToken => "bad_token",
            Self::TokenExpired => "token_expired",
            Self::WrongRoom => "wrong_room",
            Self::NameTaken => "name_taken",
            Self::TokenRequired => "token_required",
            Self::RateLimited => "rate_limited",
            Self::UnknownPeer => "unknown_peer",
            Self::UnknownTrack => "unknown_track",
            Self::DtlsFailed => "dtls_failed",
            Self::RoomElsewhere => "room_elsewhere",
            Self::RoomMoved => "room_moved",
            Self::RoomUnavailable => "room_unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_defaults_role_and_token() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"join","room":"r","name":"n"}"#).expect("parses");
        assert_eq!(
            m,
            ClientMessage::Join {
                room: "r".into(),
                name: "n".into(),
                role: None,
                token: None,
                mode: None
            }
        );
    }

    #[test]
    fn null_candidate_ends_gathering() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"candidate","pc":"publish","candidate":null}"#)
                .expect("parses");
        assert_eq!(
            m,
            ClientMessage::Candidate {
                pc: PcKind::Publish,
                candidate: None
            }
        );
    }

    #[test]
    fn browser_candidate_fields_are_camel_case() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"candidate","pc":"subscribe","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
        )
        .expect("parses");
        let ClientMessage::Candidate {
            candidate: Some(c), ..
        } = m
        else {
            panic!("not a candidate: {m:?}");
        };
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
    }

    #[test]
    fn track_settings_default_to_unpaused_and_uncapped() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"track_settings","track":"video-7","max_width":320}"#)
                .expect("parses");
        assert_eq!(
            m,
            ClientMessage::TrackSettings {
                track: "video-7".into(),
                paused: false,
                max_width: Some(320),
                max_height: None,
                max_layer: None,
            }
        );
    }

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::RoomFull,
            ErrorCode::OutOfOrder,
            ErrorCode::UnknownTrack,
            ErrorCode::DtlsFailed,
        ] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
