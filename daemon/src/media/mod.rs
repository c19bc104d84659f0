//! Media: the peer connections, the UDP loop that drives them, and the RTP
//! forwarding hot path.
//!
//! All media of all rooms goes through one UDP port per bind address. A single
//! task ([`engine::MediaEngine`]) owns every sans-IO `rtc` peer connection,
//! routes each datagram to its connection by ICE username fragment (then by
//! remote address), and forwards each publisher's RTP to its subscribers'
//! connections without leaving the loop. Rooms talk to it through
//! [`MediaHandle`]; it reports back through [`MediaEvent`]s.

mod allocation;
mod batch;
mod codecs;
mod delay;
mod downlink;
mod engine;
mod forward;
mod handle;
pub(crate) mod peer;
mod recv;
mod rtcp;
pub(crate) mod sdp_limits;
pub(crate) mod simulcast;
pub(crate) use sfu_keytap as srtp_keys;
pub(crate) mod twcc;

use std::net::SocketAddr;
use std::sync::Arc;

use sfu_proto::signaling::{CandidateInit, PcKind};
use tokio::sync::{mpsc, oneshot};

pub use delay::{Bounds, Histogram};
pub(crate) use engine::chat;
#[cfg(test)]
pub(crate) use engine::{testnet, MediaCore};
pub use engine::{MediaEngine, MediaStats};
pub use handle::MediaHandle;
pub(crate) use handle::WorkerTx;
pub use peer::sends_media;

/// Identifies a participant across the daemon (unique for its lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Identifies one published track across the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

impl TrackId {
    /// The media worker that owns it (its publisher's).
    pub fn worker(self) -> usize {
        (self.0 >> TRACK_WORKER_SHIFT) as usize
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

impl MediaKind {
    /// Lower-case name as SDP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// The codec a publisher negotiated for a track, forwarded unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// e.g. `video/VP8`.
    pub mime_type: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The `a=fmtp` parameters.
    pub fmtp: String,
}

/// A track a participant publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Daemon-wide id.
    pub id: TrackId,
    /// Who publishes it.
    pub publisher: PeerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its codec.
    pub codec: Codec,
    /// What it shows (video): a camera or a shared screen.
    pub source: sfu_proto::signaling::TrackSource,
}

impl TrackInfo {
    /// What it is, as subscribe offers name it (`screen-7`) and reports
    /// show it: `audio`, `video`, or `screen` for a shared screen.
    pub fn label(&self) -> &'static str {
        self.track_kind().as_str()
    }

    /// What muting names it by.
    pub fn track_kind(&self) -> sfu_proto::signaling::TrackKind {
        use sfu_proto::signaling::{TrackKind, TrackSource};
        match (self.kind, self.source) {
            (MediaKind::Audio, _) => TrackKind::Audio,
            (MediaKind::Video, TrackSource::Camera) => TrackKind::Video,
            (MediaKind::Video, TrackSource::Screen) => TrackKind::Screen,
        }
    }
}

/// What a subscriber asked of one video track it receives (signaling's
/// `track_settings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackPrefs {
    /// Forward nothing of it.
    pub paused: bool,
    /// The size it is shown at: the smallest simulcast layer at least this
    /// wide and high is enough.
    pub max_width: Option<u32>,
    /// See `max_width`.
    pub max_height: Option<u32>,
    /// The highest simulcast layer wanted, 0 the lowest.
    pub max_layer: Option<u8>,
}

/// Why a media connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostCause {
    /// It failed or closed: ICE did not complete in time, or nothing more
    /// was received.
    Failed,
    /// Its DTLS handshake failed: the peer's certificate is not the one its
    /// description's fingerprint names.
    Dtls,
}

/// What media reports to the room that owns a peer.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// The first packets of a new track arrived from a publisher.
    TrackPublished(TrackInfo),
    /// A publisher stopped sending a track (renegotiated it away).
    TrackUnpublished {
        /// Who published it.
        publisher: PeerId,
        /// Which track.
        track: TrackId,
    },
    /// A peer connection failed or closed: the peer is gone.
    ConnectionLost {
        /// Whose connection.
        peer: PeerId,
        /// Which of its two connections.
        pc: PcKind,
        /// Why.
        cause: LostCause,
    },
    /// Which layers of a simulcast track anyone receives changed: the
    /// publisher should send just those.
    LayersWanted {
        /// Who publishes the track.
        publisher: PeerId,
        /// The track's id in the publisher's offer (`a=msid`).
        track: String,
        /// Each layer's RID, and whether to send it.
        active: Vec<(String, bool)>,
    },
    /// A published track whose publisher stopped sending it, or sends
    /// only digital silence, without muting it (`idle`), or that sends
    /// again (see `engine::idle`).
    TrackIdle {
        /// Who publishes it.
        publisher: PeerId,
        /// Which track.
        track: TrackId,
        /// What it is.
        kind: sfu_proto::signaling::TrackKind,
        /// Idle now (true) or sending again.
        idle: bool,
    },
    /// How much a published audio track speaks (every 300 ms while it
    /// sends, see `crate::speech`).
    Speech {
        /// Who publishes it.
        publisher: PeerId,
        /// Which track.
        track: TrackId,
        /// Its meter's latest.
        activity: crate::speech::Activity,
    },
    /// A participant sent a chat message on its chat data channel.
    Chat {
        /// Who.
        peer: PeerId,
        /// The message.
        text: String,
    },
    /// A chat message was refused (and dropped).
    ChatRefused {
        /// Whose.
        peer: PeerId,
        /// Why.
        why: chat::ChatRefusal,
    },
    /// A peer connection finished ICE and DTLS.
    Connected {
        /// Whose connection.
        peer: PeerId,
        /// Which of its two connections.
        pc: PcKind,
        /// The remote address ICE selected.
        remote: Option<SocketAddr>,
    },
}

/// What a tap on a publisher delivers (to a recorder).
#[derive(Debug, Clone)]
pub enum TapEvent {
    /// A track of the tapped peer is (or became) available.
    Track {
        /// Which track.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
        /// Its codec.
        codec: Codec,
        /// The payload type the publisher uses for it.
        payload_type: u8,
        /// A shared screen (recorded to a file of its own).
        screen: bool,
        /// The publisher's SSRC for it.
        ssrc: u32,
    },
    /// One RTP packet as the publisher sent it (decrypted).
    Rtp {
        /// Which track.
        track: TrackId,
        /// The packet.
        data: bytes::Bytes,
    },
    /// An RTCP sender report about one of the tracks.
    SenderReport {
        /// Which track.
        track: TrackId,
        /// The compound RTCP packet holding the report.
        data: bytes::Bytes,
    },
    /// The track ended.
    TrackEnded {
        /// Which track.
        track: TrackId,
    },
}

/// A bounded copy of a publisher's media for a recorder: when the consumer
/// falls behind, packets are dropped and counted, forwarding never waits.
#[derive(Clone, Debug)]
pub struct Tap {
    tx: mpsc::Sender<TapEvent>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Tap {
    /// A tap holding at most `capacity` events.
    pub fn new(capacity: usize) -> (Tap, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Tap {
                tx,
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// Events dropped because the consumer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn send(&self, ev: TapEvent) {
        if self.tx.try_send(ev).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the consumer went away.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Where a peer's media events go: its room's inbox.
pub type EventSink = Arc<dyn Fn(MediaEvent) + Send + Sync>;

/// A local description and the server's candidates for it.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The SDP text.
    pub sdp: String,
    /// Host candidates to trickle after the description.
    pub candidates: Vec<CandidateInit>,
}

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The SDP did not parse or could not be applied.
    #[error("SDP rejected: {0}")]
    BadSdp(String),
    /// The SDP parsed but offers nothing the server can forward.
    #[error("no usable codec: the server forwards VP8, VP9, H264 and Opus")]
    NoUsableCodec,
    /// A candidate did not parse or could not be added.
    #[error("candidate rejected: {0}")]
    BadCandidate(String),
    /// The connection this request is about is not negotiated yet.
    #[error("the {0:?} connection is not negotiated yet")]
    NotNegotiated(PcKind),
    /// No subscribe offer is waiting for an answer.
    #[error("no subscribe offer is outstanding")]
    NoOfferOutstanding,
    /// The media task is gone (shutting down).
    #[error("media engine stopped")]
    Stopped,
    /// The WebRTC stack failed.
    #[error("internal WebRTC error: {0}")]
    Internal(String),
}

/// A request from a room to the media engine.
pub(crate) enum MediaCommand {
    /// Apply a publisher's offer; create its publish connection on the first one.
    Publish {
        peer: PeerId,
        events: EventSink,
        sdp: String,
        /// Its video tracks (by `a=msid` track id) that share a screen.
        screens: Vec<String>,
        reply: oneshot::Sender<Result<Negotiated, MediaError>>,
    },
    /// Make the subscribe connection carry exactly `tracks`; returns an offer
    /// when that changed anything.
    Subscribe {
        peer: PeerId,
        events: EventSink,
        tracks: Vec<TrackInfo>,
        reply: oneshot::Sender<Result<Option<Negotiated>, MediaError>>,
    },
    /// Apply the subscriber's answer to the outstanding offer.
    SubscribeAnswer {
        peer: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Answer a viewer's own offer (WHEP) with `tracks`.
    View {
        peer: PeerId,
        events: EventSink,
        sdp: String,
        tracks: Vec<TrackInfo>,
        reply: oneshot::Sender<Result<Negotiated, MediaError>>,
    },
    /// Add a trickled remote candidate.
    RemoteCandidate {
        peer: PeerId,
        pc: PcKind,
        candidate: CandidateInit,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    /// Close both connections of a peer and forget it.
    RemovePeer { peer: PeerId },
    /// Close a peer's publish connection (it may publish again with a new offer).
    ClosePublish { peer: PeerId },
    /// Give a peer's video tracks priority in every subscriber's allocation
    /// (the room's dominant speaker), or take it away.
    Priority { peer: PeerId, high: bool },
    /// Send a chat message on a peer's chat channel (if it has one open).
    Chat { peer: PeerId, text: String },
    /// Stop (or go on) forwarding a peer's tracks of one kind.
    Mute {
        peer: PeerId,
        kind: sfu_proto::signaling::TrackKind,
        muted: bool,
    },
    /// Copy a peer's published media (now and later tracks) into `tap`,
    /// or stop with `None`.
    SetTap { peer: PeerId, tap: Option<Tap> },
    /// Ask the publisher of `track` for a keyframe (rate-limited).
    RequestKeyframe { track: TrackId },
    /// How a subscriber wants one of its video legs.
    TrackSettings {
        peer: PeerId,
        track: TrackId,
        prefs: TrackPrefs,
    },
    /// Pipe `track`, which this worker owns, to worker `to` (or renew the
    /// pipe); what `to` needs to mirror it (see `engine::pipe`).
    Pipe {
        track: TrackId,
        to: usize,
        reply: oneshot::Sender<Option<Box<engine::MirrorSpec>>>,
    },
    /// Mirror a track another worker owns and pipes here.
    Mirror { spec: Box<engine::MirrorSpec> },
    /// Messages from worker `from` about tracks piped between the two.
    Piped {
        from: usize,
        msgs: Vec<engine::PipeMsg>,
    },
    /// Snapshot of counters.
    Stats { reply: oneshot::Sender<MediaStats> },
    /// What media knows about some peers.
    Reports {
        peers: Vec<PeerId>,
        reply: oneshot::Sender<Vec<PeerMediaReport>>,
    },
}

/// One peer connection as media sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectionReport {
    /// `new`, `connected` or `failed`.
    pub state: &'static str,
    /// The client's address ICE selected, once known.
    pub remote: Option<SocketAddr>,
}

/// One published track as media sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackReport {
    /// Daemon-wide track id.
    pub id: u64,
    /// `audio` or `video`.
    pub kind: &'static str,
    /// e.g. `video/VP8`.
    pub codec: String,
    /// RTP packets received from the publisher.
    pub packets: u64,
    /// RTP payload bytes received from the publisher.
    pub bytes: u64,
    /// Payload bitrate over the last second or so.
    pub bitrate_bps: u64,
    /// Subscriber legs it is forwarded to.
    pub subscribers: usize,
    /// Simulcast layers, lowest first (empty for a track sent once).
    pub layers: Vec<LayerReport>,
}

/// One simulcast layer of a published track.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// Its RID.
    pub rid: String,
    /// Payload bitrate over the last second or so.
    pub bitrate_bps: u64,
    /// Whether the publisher is sending it.
    pub active: bool,
    /// Whether the publisher was asked to stop sending it.
    pub paused: bool,
}

/// A simulcast track a subscriber receives, and in which layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceivedLayerReport {
    /// The track.
    pub track: u64,
    /// RID of the layer forwarded now (`None`: waiting for a keyframe).
    pub layer: Option<String>,
    /// RID of the layer it is switching to, if another.
    pub target: Option<String>,
    /// What the subscriber asked for it.
    pub prefs: TrackPrefs,
    /// Paused because the subscriber's link cannot carry even its lowest
    /// layer.
    pub starved: bool,
}

/// What media knows about one peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerMediaReport {
    /// Whose.
    #[serde(skip)]
    pub peer: PeerId,
    /// The publish connection, if any.
    pub publish: Option<ConnectionReport>,
    /// The subscribe connection, if any.
    pub subscribe: Option<ConnectionReport>,
    /// Tracks the peer publishes.
    pub tracks: Vec<TrackReport>,
    /// Simulcast tracks the peer receives, with their layers.
    pub receiving: Vec<ReceivedLayerReport>,
    /// The peer's estimate of its downlink (REMB), bits per second.
    pub downlink_bps: Option<u64>,
}

/// Bits of a track id below the worker's index: ids stay unique across
/// workers, and a track's worker is read from its id (within JavaScript's
/// exact integers with up to [`crate::config::MAX_WORKERS`] workers).
pub const TRACK_WORKER_SHIFT: u32 = 40;

/// The engine's settings from the configuration and the resolved bind addresses.
pub fn engine_settings(
    config: &crate::config::Config,
    bind_ips: &[std::net::IpAddr],
) -> engine::MediaSettings {
    let public = &config.rtc.public_ips;
    if config.rtc.subscriber_queue_packets.is_some() {
        tracing::warn!(
            "rtc.subscriber_queue_packets is no longer used and can be removed: \
             sends never queue, a full socket buffer drops and counts"
        );
    }
    engine::MediaSettings {
        bind: bind_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let announced = match public.len() {
                    0 => None,
                    1 => Some(public[0]),
                    _ => public.get(i).copied(),
                };
                (*ip, announced)
            })
            .collect(),
        port: config.rtc.udp_port,
        tcp_port: config.rtc.ice_tcp.then(|| config.rtc.tcp_port()),
        ice_disconnected: config.rtc.ice_disconnected_timeout(),
        ice_failed: config.rtc.ice_failed_timeout(),
        fast_path: config.rtc.fast_path,
        workers: config.rtc.worker_count(),
        spread_after: config.rtc.room_spread_peers,
    }
}
