//! What a test can observe about a client at one moment.

use crate::accounting::LatencySummary;
use sfu_proto::signaling::{ErrorCode, PeerInfo, ServerMessage};
use std::fmt::Write as _;

/// A copy of everything the client has observed so far.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This participant's id, once `joined` arrived.
    pub peer_id: Option<String>,
    /// Everyone else in the room, as `joined`, `peer_joined` and `peer_left` said.
    pub peers: Vec<PeerInfo>,
    /// Every server message received, in order (offers and candidates included).
    pub messages: Vec<ServerMessage>,
    /// Every server `error`, in order.
    pub errors: Vec<(ErrorCode, String)>,
    /// Failures inside this client (an SDP it could not apply, a send that failed).
    pub client_errors: Vec<String>,
    /// How many `subscribe` offers were answered.
    pub subscribe_offers: usize,
    /// The tracks the latest `subscribe` offer carries as active m-sections.
    pub offered_tracks: Vec<OfferedTrack>,
    /// Publish connection state (`none` before it exists, then `new`, `connecting`, `connected`, ...).
    pub publish_state: String,
    /// Subscribe connection state, as [`Snapshot::publish_state`].
    pub subscribe_state: String,
    /// The server's `publish` answer was applied.
    pub publish_answered: bool,
    /// One entry per subscribe-side track ever seen, in order of first packet.
    pub remote_tracks: Vec<RemoteTrack>,
    /// PLI + FIR packets received about the published video (and audio) tracks.
    pub keyframe_requests: u64,
    /// RTP packets handed to the publish connection.
    pub sent_packets: u64,
    /// Of which video.
    pub sent_video_packets: u64,
    /// Of which audio.
    pub sent_audio_packets: u64,
    /// Keyframe-shaped video frames sent.
    pub sent_keyframes: u64,
    /// `write_rtp` calls that failed.
    pub send_errors: u64,
    /// The server closed the WebSocket (or it broke) without this client asking.
    pub closed_by_server: bool,
}

/// A track announced by a `subscribe` offer (`a=msid` of an active m-section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    /// The m-section's mid.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The msid stream id: the publisher's peer id.
    pub stream_id: String,
    /// The msid track id.
    pub track_id: String,
}

/// What arrived on one subscribe-side track.
#[derive(Debug, Clone, Default)]
pub struct RemoteTrack {
    /// The msid stream id: the publisher's peer id.
    pub stream_id: String,
    /// The msid track id.
    pub track_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// Negotiated codec, e.g. `video/VP8`.
    pub mime_type: String,
    /// SSRC of the first packet.
    pub ssrc: u32,
    /// RTP packets received.
    pub packets: u64,
    /// When the first packet arrived, in nanoseconds since the UNIX epoch (0: none yet).
    pub first_packet_ns: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets carrying a payload tag.
    pub tagged: u64,
    /// Packets whose tag names another publisher or kind than this track's msid.
    pub misrouted: u64,
    /// Tag sequence numbers missing between the lowest and highest seen.
    pub lost: u64,
    /// Extra copies of a tag sequence number.
    pub duplicates: u64,
    /// Packets that arrived after a higher tag sequence number.
    pub out_of_order: u64,
    /// Packets with the RTP marker bit (video: frames).
    pub frames: u64,
    /// VP8 keyframe starts.
    pub keyframes: u64,
    /// One-way latency from the tag's send time.
    pub latency: LatencySummary,
    /// RTP sequence number of the newest packet.
    pub last_seq: u16,
    /// RTP timestamp of the newest packet.
    pub last_timestamp: u32,
    /// Sender reports received about this track's SSRC.
    pub sender_reports: u64,
    /// The newest of them.
    pub last_sender_report: Option<SenderReportSeen>,
    /// The track ended or left the subscribe offer.
    pub ended: bool,
    /// The simulcast layer (0 the lowest) of the newest tagged packet, by its
    /// tag; `None` for a publisher that does not send simulcast.
    pub layer: Option<u8>,
    /// Times the packets' simulcast layer changed (the server switched).
    pub layer_changes: u64,
}

/// What a sender report said, and where the track was when it came.
#[derive(Debug, Clone, Copy, Default)]
pub struct SenderReportSeen {
    /// The report's RTP time.
    pub rtp_time: u32,
    /// The report's packet count.
    pub packet_count: u32,
    /// The report's octet count.
    pub octet_count: u32,
    /// [`RemoteTrack::last_timestamp`] when it arrived.
    pub timestamp_then: u32,
    /// [`RemoteTrack::packets`] when it arrived.
    pub packets_then: u64,
}

impl Snapshot {
    /// Live (not ended) remote tracks whose msid is `peer_id`.
    pub fn tracks_from<'a>(&'a self, peer_id: &'a str) -> impl Iterator<Item = &'a RemoteTrack> {
        self.remote_tracks
            .iter()
            .filter(move |t| t.stream_id == peer_id && !t.ended)
    }

    /// The live remote track of `kind` from publisher `peer_id`.
    pub fn track_from(&self, peer_id: &str, kind: &str) -> Option<&RemoteTrack> {
        self.remote_tracks
            .iter()
            .find(|t| t.stream_id == peer_id && t.kind == kind && !t.ended)
    }

    /// Packets received on the live track of `kind` from `peer_id` (0 if none).
    pub fn packets_from(&self, peer_id: &str, kind: &str) -> u64 {
        self.track_from(peer_id, kind).map_or(0, |t| t.packets)
    }

    /// Whether the server sent an `error` with `code`.
    pub fn has_error(&self, code: ErrorCode) -> bool {
        self.errors.iter().any(|(c, _)| *c == code)
    }

    /// Whether `peer_left` arrived for `peer_id`.
    pub fn saw_peer_left(&self, peer_id: &str) -> bool {
        self.messages
            .iter()
            .any(|m| matches!(m, ServerMessage::PeerLeft { peer_id: id } if id == peer_id))
    }

    /// The publishers (msid stream ids) the latest subscribe offer carries.
    pub fn offered_publishers(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .offered_tracks
            .iter()
            .map(|t| t.stream_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A compact multi-line description for failure messages (no SDP bodies).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "peer_id={:?} publish={} subscribe={} subscribe_offers={} closed_by_server={}",
            self.peer_id,
            self.publish_state,
            self.subscribe_state,
            self.subscribe_offers,
            self.closed_by_server
        );
        let _ = writeln!(
            s,
            "sent={} (video {} audio {} keyframes {} errors {}) keyframe_requests={}",
            self.sent_packets,
            self.sent_video_packets,
            self.sent_audio_packets,
            self.sent_keyframes,
            self.send_errors,
            self.keyframe_requests
        );
        let peers: Vec<&str> = self.peers.iter().map(|p| p.id.as_str()).collect();
        let _ = writeln!(s, "peers={peers:?}");
        let kinds: Vec<String> = self.messages.iter().map(message_label).collect();
        let _ = writeln!(s, "messages=[{}]", kinds.join(", "));
        for (code, message) in &self.errors {
            let _ = writeln!(s, "server error {code}: {message}");
        }
        for e in &self.client_errors {
            let _ = writeln!(s, "client error: {e}");
        }
        for t in &self.offered_tracks {
            let _ = writeln!(
                s,
                "offered mid={} {} msid={} {}",
                t.mid, t.kind, t.stream_id, t.track_id
            );
        }
        for t in &self.remote_tracks {
            let _ = writeln!(
                s,
                "track {} {} msid={} {} packets={} lost={} dup={} reordered={} misrouted={} \
                 keyframes={} layer={:?} (changed {}) latency p50={}us p99={}us max={}us ended={}",
                t.kind,
                t.mime_type,
                t.stream_id,
                t.track_id,
                t.packets,
                t.lost,
                t.duplicates,
                t.out_of_order,
                t.misrouted,
                t.keyframes,
                t.layer,
                t.layer_changes,
                t.latency.p50_us,
                t.latency.p99_us,
                t.latency.max_us,
                t.ended
            );
        }
        s
    }
}

/// A short label for a server message: its type and the connection or peer it names.
fn message_label(m: &ServerMessage) -> String {
    match m {
        ServerMessage::Joined { peer_id, .. } => format!("joined({peer_id})"),
        ServerMessage::PeerJoined { peer } => format!("peer_joined({})", peer.id),
        ServerMessage::PeerLeft { peer_id } => format!("peer_left({peer_id})"),
        ServerMessage::Offer { pc, .. } => format!("offer({pc:?})"),
        ServerMessage::Answer { pc, .. } => format!("answer({pc:?})"),
        ServerMessage::Candidate { pc, candidate } => {
            format!(
                "candidate({pc:?}{})",
                if candidate.is_none() { ",end" } else { "" }
            )
        }
        ServerMessage::Error { code, .. } => format!("error({code})"),
        ServerMessage::RoleChanged { peer_id, role } => format!("role_changed({peer_id},{role:?})"),
        ServerMessage::Signal { from, .. } => format!("signal({from})"),
        ServerMessage::Layers { track, .. } => format!("layers({track})"),
        ServerMessage::TrackMuted {
            peer_id,
            kind,
            muted,
            ..
        } => format!("track_muted({peer_id},{},{muted})", kind.as_str()),
        ServerMessage::Speakers { dominant, .. } => {
            format!("speakers({})", dominant.as_deref().unwrap_or("-"))
        }
    }
}
