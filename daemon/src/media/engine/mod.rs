//! The media core, sans-IO in the shape of str0m's `Rtc`: every peer
//! connection, source and forwarding leg, driven by what is handed to it
//! with the time (a datagram: `on_datagram`; a room's command:
//! `handle_command`; the clock: `handle_timeout` when `poll_timeout` says)
//! and producing datagrams to send (`out`, sent by the driver at the end of
//! its turn) and events for the rooms (each peer's `EventSink`). No
//! sockets, channels, tasks or clock reads inside: `driver` is the loop
//! that does the I/O, and `tests` drive the core with a simulated clock
//! and an in-memory network.
//!
//! Each datagram is routed to its connection (by remote address once known,
//! by the STUN USERNAME's local ufrag before that), fed to that
//! connection's `rtc` core, and whatever that produces is handled before
//! the next datagram: outgoing datagrams are queued (a subscriber's share
//! of a video frame goes out in one UDP GSO send, see `batch`), RTP from a
//! publisher is rewritten for and written to every subscriber leg, keyframe
//! requests are relayed upstream rate-limited. No lock exists.

mod allocate;
pub(crate) mod chat;
mod conns;
mod driver;
mod fanout;
#[cfg(test)]
mod fuzz;
mod idle;
mod input;
mod keyframe;
mod mute;
mod negotiate;
mod pipe;
mod prefs;
mod routes;
mod speech;
pub(crate) use speech::AUDIO_LEVEL_URI;
mod source;
mod ssrc_simulcast;
mod stats;
mod tap;
mod tcp;
#[cfg(test)]
pub(crate) mod testnet;
#[cfg(test)]
mod tests;
mod tracks;
mod view;

pub use driver::MediaEngine;
use fanout::start_fast_path;
pub(crate) use keyframe::KeyframeCause;
pub use keyframe::KeyframeRequests;
pub(crate) use pipe::{MirrorSpec, PipeMsg};
use routes::{Route, Routes};
use source::{Layer, Source, Subscriber};
use ssrc_simulcast::{read_sim_layers, SimInput};
pub use stats::MediaStats;

use super::simulcast::VideoCodec;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

// The media loop's maps are looked up several times per forwarded packet;
// FxHash costs a fraction of SipHash. Flooding them is not possible from
// the network: entries are only created for server-made ids, and a remote
// address only after its STUN request named a server-made ufrag.
use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context as SrtpContext;
use sfu_proto::signaling::{CandidateInit, PcKind, TrackSource};
use tracing::{debug, info, warn};

use super::batch::SendBatch;
use super::delay::{ForwardDelay, SetupTime};
use super::downlink::Downlink;
use super::forward::{ExtensionMap, History, Leg};
use super::peer::{self, Announced, IceTimeouts};
use super::srtp_keys::KeyTap;
use super::twcc;
use super::{
    Codec, ConnectionReport, EventSink, LayerReport, LostCause, MediaCommand, MediaError,
    MediaEvent, MediaKind, Negotiated, PeerId, PeerMediaReport, ReceivedLayerReport, Tap, TapEvent,
    TrackId, TrackInfo, TrackReport,
};

/// How long a negotiated connection may take to finish ICE and DTLS. ICE
/// failure is noticed on its own (`rtc.ice_*_timeout_ms`); a DTLS handshake
/// that gives up leaves the connection connecting forever, so this bounds it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// When `rtc`'s own ICE agent gives a connection up: it counts only STUN
/// binding requests as signs of life, and browsers send one every 2.5 s
/// (Chrome) to 5 s (RFC 7675), so one lost check must not end a call. The
/// engine decides a connection is lost on silence of every kind instead
/// (`MediaSettings::ice_failed`); this is the backstop, RFC 7675's consent
/// expiry.
const RTC_ICE_FAILED: Duration = Duration::from_secs(30);

/// How often the periodic checks run: connections that went silent or
/// never connected, layers' bitrates, keyframe requests held back, layer
/// selection.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Largest datagram accepted.
const MAX_DATAGRAM: usize = 2048;

type ConnId = u64;

/// One server peer connection.
struct Conn {
    peer: PeerId,
    kind: PcKind,
    pc: RTCPeerConnection,
    ufrag: String,
    deadline: Option<Instant>,
    connected: bool,
    lost: bool,
    /// Publish side: the core's track id -> our track.
    tracks: HashMap<String, TrackId>,
    /// Publish side: the SSRC of every known layer of its tracks -> the
    /// track (packets and sender reports the engine reads itself find
    /// their track here, without a scan).
    by_layer_ssrc: HashMap<u32, TrackId>,
    /// Subscribe side: forwarded tracks.
    legs: HashMap<TrackId, Leg>,
    /// Subscribe side: SSRC announced to the subscriber -> track.
    by_ssrc: HashMap<u32, TrackId>,
    /// The tap on the connection's crypto provider: its SRTP keys and the
    /// certificates checked (see `srtp_keys`).
    keys: Arc<KeyTap>,
    /// Subscribe side: whether forwarded media goes out on the fast path.
    fast_path: bool,
    /// The certificate fingerprints its descriptions name, local and remote:
    /// a certificate hashed that is none of them failed the DTLS handshake.
    fingerprints: Vec<Vec<u8>>,
    /// Subscribe side, once connected: the fast path's SRTP context.
    srtp: Option<SrtpContext>,
    /// Once connected, the peer's keys, where the engine reads what it sent
    /// without `rtc`: a subscriber's transport-wide feedback
    /// (`twcc::FeedbackReader`), a publisher's SSRC simulcast layers
    /// (`ssrc_simulcast`).
    srtp_in: Option<SrtpContext>,
    /// Publish side: the SSRC simulcast groups of the last offer, each
    /// lowest layer first (see `ssrc_simulcast`).
    sim: Vec<Vec<u32>>,
    /// Publish side: the SSRCs of those groups that `rtc` bound to a track
    /// (it binds one per group) and delivers itself.
    sim_bound: Vec<u32>,
    /// Publish side: what the other SSRCs of those groups miss.
    sim_losses: Vec<(u32, ssrc_simulcast::Losses)>,
    /// Where the connection's DTLS and SRTP go: the selected candidate pair's
    /// remote address, learnt from what `rtc` sends.
    media_dest: Option<(usize, SocketAddr)>,
    offer_outstanding: bool,
    negotiated: bool,
    /// Whether the server's candidates went out with a description already.
    candidates_sent: bool,
    /// When a negotiated connection that has not connected counts as failed.
    connect_by: Option<Instant>,
    /// When the last datagram of any kind arrived from the peer.
    last_rx: Instant,
    /// Subscribe side: whether any leg is video, so that the link is
    /// measured (send times and transport-wide numbers stamped, feedback
    /// read): a subscriber of audio alone costs nothing more.
    adaptive: bool,
    /// Subscribe side: what the subscriber's link carries (see `downlink`).
    downlink: Downlink,
    /// Subscribe side, while probing: bytes of probe (retransmissions on
    /// the legs' RTX streams) to send per byte of video forwarded, and the
    /// probe bytes owed so far.
    probe_ratio: f64,
    probe_credit: f64,
    /// Publish side: its chat channel, once open (`chat`).
    chat: Option<chat::Chat>,
    /// Subscribe side, before the first answer: the latest connectivity
    /// check that came ahead of it, answered once the answer is set (see
    /// `on_datagram` and `subscribe_answer`).
    early_check: Option<TaggedBytesMut>,
    /// Subscribe side: the kinds (audio, video) that have an m-section
    /// offering every codec; later sections of that kind offer only their
    /// source's codec (see `subscribe`).
    every_codec: [bool; 2],
    /// Subscribe side: the sections offering every codec until their first
    /// answer, and their source's codec, which is all they offer after it.
    wide: Vec<(RTCRtpTransceiverId, Codec)>,
}

#[derive(Default)]
struct PeerConns {
    publish: Option<ConnId>,
    subscribe: Option<ConnId>,
    events: Option<EventSink>,
    /// A recorder's copy of everything this peer publishes.
    tap: Option<Tap>,
    /// The kinds of track it muted (`mute`); its screen counts as muted
    /// until it unmutes it (shares).
    muted: Vec<sfu_proto::signaling::TrackKind>,
    /// It shares its screen (unmuted kind `screen`).
    sharing: bool,
    /// Its video tracks (by `a=msid` track id) that share a screen, as
    /// its last offer said.
    screens: Vec<String>,
}

/// The media core: every peer connection, source and leg, driven by
/// datagrams, commands and the time given to it; what it sends collects in
/// `out` for the driver to send. No sockets, channels or clock inside
/// (see the module docs and `driver`).
pub struct MediaCore {
    /// This worker's index.
    worker: usize,
    /// Datagrams produced this turn, sent together at its end.
    out: SendBatch,
    /// Messages to other workers produced this turn, with the worker each
    /// goes to (see `pipe`), handed over at its end.
    pipe_out: Vec<(usize, PipeMsg)>,
    /// What each socket index (the driver's UDP sockets, then its TCP
    /// listeners) is to `rtc`: its local address and transport.
    local_addrs: Vec<Local>,
    announced: Vec<Announced>,
    timeouts: IceTimeouts,
    /// Silence after which a connected connection is lost.
    lost_after: Duration,
    /// Whether subscribe connections forward on the fast path.
    fast_path: bool,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<PeerId, PeerConns>,
    /// Which connection a datagram belongs to.
    routes: Routes,
    sources: HashMap<TrackId, Source>,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    next_conn: ConnId,
    next_track: u64,
    stats: MediaStats,
    scratch_reads: Vec<RTCMessage>,
    scratch_events: Vec<RTCPeerConnectionEvent>,
    /// A forwarded packet's plaintext, before protection.
    scratch_rtp: Vec<u8>,
    /// Subscribers' transport-wide feedback, read on the fast path.
    feedback: twcc::FeedbackReader,
    /// Origin of the arrival times simulcast legs align timestamps by, and
    /// of the send times subscribers' feedback is matched with.
    epoch: Instant,
    /// Where transport-wide sequence numbers are written, two bytes each,
    /// so that stamping one on a forwarded packet rarely allocates.
    stamps: BytesMut,
    /// When the periodic checks run next (see `on_housekeeping`).
    next_housekeeping: Instant,
    /// When audio tracks' activity goes to their rooms next (`speech`).
    next_speech_report: Instant,
}

/// Settings the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Addresses to bind, each with an optional public address to announce.
    pub bind: Vec<(std::net::IpAddr, Option<std::net::IpAddr>)>,
    /// UDP port (0 = any).
    pub port: u16,
    /// ICE-TCP's port (0 = any), when media is served over TCP too.
    pub tcp_port: Option<u16>,
    /// ICE disconnected timeout (informational: the connection may recover).
    pub ice_disconnected: Duration,
    /// How long a connected connection may go without any datagram from its
    /// peer before it counts as lost.
    pub ice_failed: Duration,
    /// Whether subscribe connections forward on the fast path.
    pub fast_path: bool,
    /// Media workers: each binds `port + its index` (any port when `port`
    /// is 0).
    pub workers: usize,
    /// Participants of one room its worker takes before the room's next
    /// ones go to other workers (0: never).
    pub spread_after: usize,
}

impl MediaCore {
    /// Worker `worker`'s core, serving on the addresses of `announced`
    /// (bound by the driver, or by nothing in tests), starting at `now`.
    pub(crate) fn new(
        settings: &MediaSettings,
        worker: usize,
        announced: Vec<Announced>,
        now: Instant,
    ) -> Self {
        MediaCore {
            worker,
            out: SendBatch::default(),
            pipe_out: Vec::new(),
            local_addrs: announced
                .iter()
                .map(|a| Local {
                    addr: a.local(),
                    tcp: a.tcp,
                })
                .collect(),
            announced,
            timeouts: IceTimeouts {
                disconnected: settings.ice_disconnected,
                failed: RTC_ICE_FAILED,
            },
            lost_after: settings.ice_failed,
            fast_path: settings.fast_path,
            conns: HashMap::default(),
            peers: HashMap::default(),
            routes: Routes::default(),
            sources: HashMap::default(),
            timers: BinaryHeap::new(),
            next_conn: 1,
            // Unique across workers, and naming the worker.
            next_track: ((worker as u64) << super::TRACK_WORKER_SHIFT) | 1,
            stats: MediaStats::default(),
            scratch_reads: Vec::new(),
            scratch_events: Vec::new(),
            scratch_rtp: vec![0; MAX_DATAGRAM],
            feedback: twcc::FeedbackReader::default(),
            epoch: now,
            stamps: BytesMut::new(),
            next_housekeeping: now + HOUSEKEEPING,
            next_speech_report: now + speech::SPEECH_REPORT,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let periodic = self.next_housekeeping.min(self.next_speech_report);
        self.timers
            .peek()
            .map_or(periodic, |Reverse((at, _))| (*at).min(periodic))
    }

    /// The time is `now`: connections' timers that fell due, and the
    /// periodic checks when due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.on_timers(now);
        if now >= self.next_housekeeping {
            self.on_housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        if now >= self.next_speech_report {
            self.report_speech();
            self.report_idle(now);
            self.next_speech_report = now + speech::SPEECH_REPORT;
        }
    }

    /// Hands `event` to `peer`'s room, if it still listens.
    pub(super) fn emit(&self, peer: PeerId, event: MediaEvent) {
        if let Some(sink) = self.peers.get(&peer).and_then(|p| p.events.as_ref()) {
            sink(event);
        }
    }

    /// One command from the rooms, at `now`.
    pub(crate) fn handle_command(&mut self, cmd: MediaCommand, now: Instant) {
        match cmd {
            MediaCommand::Publish {
                peer,
                events,
                sdp,
                screens,
                reply,
            } => {
                self.peers.entry(peer).or_default().screens = screens;
                let r = self.publish(peer, events, sdp, now);
                let _ = reply.send(r);
            }
            MediaCommand::Subscribe {
                peer,
                events,
                tracks,
                reply,
            } => {
                let r = self.subscribe(peer, events, tracks, now);
                let _ = reply.send(r);
            }
            MediaCommand::View {
                peer,
                events,
                sdp,
                tracks,
                reply,
            } => {
                let r = self.view(peer, events, sdp, tracks, now);
                let _ = reply.send(r);
            }
            MediaCommand::SubscribeAnswer { peer, sdp, reply } => {
                let r = self.subscribe_answer(peer, sdp, now);
                let _ = reply.send(r);
            }
            MediaCommand::RemoteCandidate {
                peer,
                pc,
                candidate,
                reply,
            } => {
                let r = self.remote_candidate(peer, pc, candidate, now);
                let _ = reply.send(r);
            }
            MediaCommand::RemovePeer { peer } => self.remove_peer(peer),
            MediaCommand::SetTap { peer, tap } => self.set_tap(peer, tap, now),
            MediaCommand::TrackSettings { peer, track, prefs } => {
                self.set_track_prefs(peer, track, prefs, now)
            }
            MediaCommand::RequestKeyframe { track } => {
                self.request_keyframe(track, now, KeyframeCause::Recording)
            }
            MediaCommand::Mute { peer, kind, muted } => {
                self.set_muted(peer, kind, muted, now);
            }
            MediaCommand::Chat { peer, text } => self.send_chat(peer, text, now),
            MediaCommand::Priority { peer, high } => {
                for s in self.sources.values_mut() {
                    if s.origin.is_none() && s.info.publisher == peer {
                        s.priority = high;
                    }
                }
            }
            MediaCommand::ClosePublish { peer } => {
                if let Some(id) = self.conn_of(peer, PcKind::Publish) {
                    self.drop_conn(id);
                }
            }
            MediaCommand::Reports { peers, reply } => {
                let reports = peers.into_iter().map(|p| self.report(p, now)).collect();
                let _ = reply.send(reports);
            }
            MediaCommand::Pipe { track, to, reply } => {
                let _ = reply.send(self.open_pipe(track, to, now));
            }
            MediaCommand::Mirror { spec } => self.open_mirror(*spec, now),
            MediaCommand::Piped { from, msgs } => self.handle_pipe(from, msgs, now),
            MediaCommand::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.connections = self.conns.len();
                stats.fast_path_connections =
                    self.conns.values().filter(|c| c.srtp.is_some()).count();
                stats.tracks = self
                    .sources
                    .values()
                    .filter(|s| s.origin.is_none() && s.announced)
                    .count();
                let _ = reply.send(stats);
            }
        }
    }
}

/// One socket index of the core: what `rtc` knows it by.
#[derive(Debug, Clone, Copy)]
struct Local {
    addr: SocketAddr,
    /// An ICE-TCP listener's (its connections' datagrams are framed by the
    /// driver), not a UDP socket's.
    tcp: bool,
}

/// Queues everything a connection has to send for the end of this turn.
fn flush(conn: &mut Conn, out: &mut SendBatch, local_addrs: &[Local]) {
    while let Some(datagram) = conn.pc.poll_write() {
        let sock = match local_addrs {
            [_] => 0,
            many => {
                let t = &datagram.transport;
                let tcp = t.transport_protocol == TransportProtocol::TCP;
                many.iter()
                    .position(|a| a.addr == t.local_addr && a.tcp == tcp)
                    .unwrap_or(0)
            }
        };
        // DTLS and SRTP go where the selected candidate pair points; STUN
        // (first byte 0..=3) answers every pair the client checks.
        if datagram.message.first().is_some_and(|b| *b > 3) {
            conn.media_dest = Some((sock, datagram.transport.peer_addr));
        }
        out.push(sock, datagram.transport.peer_addr, datagram.message);
    }
}
