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
mod driver;
mod fanout;
mod idle;
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
use super::delay::ForwardDelay;
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

/// Counters of the media engine.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MediaStats {
    /// Peer connections alive.
    pub connections: usize,
    /// Published tracks alive.
    pub tracks: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscriber legs.
    pub rtp_forwarded: u64,
    /// RTP payload bytes written to subscriber legs.
    pub bytes_forwarded: u64,
    /// Datagrams from nobody we know.
    pub dropped_unroutable: u64,
    /// Datagrams the socket would not take (buffer full) or refused.
    pub dropped_send: u64,
    /// RTP packets a subscriber leg refused (not negotiated or not connected yet).
    pub dropped_leg: u64,
    /// Keyframe requests sent to publishers.
    pub plis_sent: u64,
    /// The same, by cause.
    pub keyframe_requests: KeyframeRequests,
    /// Times a subscriber leg moved to another simulcast layer.
    pub layer_switches: u64,
    /// Packets sent to probe subscribers' links (RTX copies).
    pub probe_packets: u64,
    /// Times a subscriber leg of a simulcast track was paused for lack of
    /// room on the subscriber's link.
    pub layer_pauses: u64,
    /// Times a leg moved down on a congested link stopped its layer at once
    /// rather than at the lower layer's key frame.
    pub layer_drops: u64,
    /// Subscribers' transport-wide feedback datagrams read on the fast path.
    pub feedback_fast: u64,
    /// Packets sent again for subscribers' NACKs (fast path).
    pub rtp_retransmitted: u64,
    /// Subscribe connections whose media the engine protects itself.
    pub fast_path_connections: usize,
    /// RTP packets received from other workers (tracks they own, piped
    /// to legs here).
    pub piped_in: u64,
    /// Messages to other workers dropped because the worker's inbox was
    /// full.
    pub pipe_dropped: u64,
    /// Time forwarded packets spent in the loop (see `delay`).
    pub forward_delay: ForwardDelay,
    /// Chat messages relayed to rooms (`chat`).
    pub chat_messages: u64,
    /// Chat messages refused: too large, over the sender's rate, not text.
    pub chat_refused: u64,
    /// Chat messages not delivered to a receiver that did not keep up.
    pub chat_dropped: u64,
}

impl MediaStats {
    /// The workers' counters summed.
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a MediaStats>) -> MediaStats {
        let mut total = MediaStats::default();
        for w in workers {
            total.add(w);
        }
        total
    }

    /// Adds another worker's counters to these.
    pub fn add(&mut self, o: &MediaStats) {
        self.connections += o.connections;
        self.tracks += o.tracks;
        self.datagrams_in += o.datagrams_in;
        self.bytes_in += o.bytes_in;
        self.datagrams_out += o.datagrams_out;
        self.bytes_out += o.bytes_out;
        self.rtp_in += o.rtp_in;
        self.rtp_forwarded += o.rtp_forwarded;
        self.bytes_forwarded += o.bytes_forwarded;
        self.dropped_unroutable += o.dropped_unroutable;
        self.dropped_send += o.dropped_send;
        self.dropped_leg += o.dropped_leg;
        self.plis_sent += o.plis_sent;
        let (k, ok) = (&mut self.keyframe_requests, &o.keyframe_requests);
        k.subscriber += ok.subscriber;
        k.new_subscriber += ok.new_subscriber;
        k.layer_switch += ok.layer_switch;
        k.recording += ok.recording;
        self.layer_switches += o.layer_switches;
        self.probe_packets += o.probe_packets;
        self.layer_pauses += o.layer_pauses;
        self.layer_drops += o.layer_drops;
        self.feedback_fast += o.feedback_fast;
        self.rtp_retransmitted += o.rtp_retransmitted;
        self.fast_path_connections += o.fast_path_connections;
        self.piped_in += o.piped_in;
        self.pipe_dropped += o.pipe_dropped;
        self.forward_delay.add(&o.forward_delay);
        self.chat_messages += o.chat_messages;
        self.chat_refused += o.chat_refused;
        self.chat_dropped += o.chat_dropped;
    }
}

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
    /// (`twcc::read_feedback`), a publisher's SSRC simulcast layers
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

    /// One datagram in: `arrived` is when the host received it (what TWCC
    /// feedback reports), `now` when the loop read it.
    fn on_datagram(
        &mut self,
        sock: usize,
        from: SocketAddr,
        data: &[u8],
        arrived: Instant,
        now: Instant,
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let id = match self.routes.route((sock, from), || stun_local_ufrag(data)) {
            Route::Conn(id) => id,
            Route::Unknown => {
                self.stats.dropped_unroutable += 1;
                return;
            }
            Route::Full(id) => {
                debug!(%from, conn = id, "a new address for a connection that has enough: dropped");
                self.stats.dropped_unroutable += 1;
                return;
            }
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        conn.last_rx = now;
        if conn.adaptive {
            if let Some(feedback) = conn
                .srtp_in
                .as_mut()
                .and_then(|ctx| twcc::read_feedback(ctx, data))
            {
                self.stats.feedback_fast += 1;
                for arrivals in &feedback {
                    conn.downlink.on_transport_feedback(arrivals, now);
                }
                return;
            }
        }
        let Some(local) = self.local_addrs.get(sock) else {
            return;
        };
        let msg = TaggedBytesMut {
            now: arrived,
            transport: TransportContext {
                local_addr: local.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: if local.tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: BytesMut::from(data),
        };
        if !conn.negotiated && is_stun(data) {
            // A subscriber checks as soon as it has the offer, and its
            // answer comes after: `rtc` cannot answer a check before the
            // answer, so the latest is answered when the answer is set
            // (`subscribe_answer`), a pacing interval before its retry.
            conn.early_check = Some(msg);
            return;
        }
        if let Err(e) = conn.pc.handle_read(msg) {
            debug!(peer = %conn.peer, pc = ?conn.kind, error = %e, "datagram rejected");
        }
        if !conn.connected && !conn.lost && conn.keys.foreign_certificate(&conn.fingerprints) {
            // `rtc` 0.21 fails the handshake without a word (it logs the
            // error and leaves the transport "connecting"): without this the
            // client would wait for the connect deadline.
            conn.lost = true;
            let (peer, pc) = (conn.peer, conn.kind);
            warn!(%peer, ?pc, "DTLS handshake failed: the peer's certificate is not the one its description names");
            self.drive(id, now);
            self.emit(
                peer,
                MediaEvent::ConnectionLost {
                    peer,
                    pc,
                    cause: LostCause::Dtls,
                },
            );
            return;
        }
        self.drive(id, now);
        // After `rtc`, which may just have opened the track on this datagram.
        let sim = self
            .conns
            .get_mut(&id)
            .and_then(|conn| ssrc_simulcast::read(conn, data));
        match sim {
            Some(SimInput::Rtp(packet)) => {
                let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
                if let Some(track) = self.track_of_ssrc(id, ssrc) {
                    let receiver = self.sources.get(&track).map(|s| s.receiver);
                    if let (Some(receiver), Some(conn)) = (receiver, self.conns.get_mut(&id)) {
                        ssrc_simulcast::note_arrival(conn, receiver, ssrc, seq, now);
                        flush(conn, &mut self.out, &self.local_addrs);
                    }
                    self.forward_track(track, packet, now);
                }
            }
            Some(SimInput::SenderReports(reports)) => self.on_sender_reports(id, &reports, now),
            None => {}
        }
    }

    /// The track of publish connection `id` that has a layer `ssrc`.
    fn track_of_ssrc(&self, id: ConnId, ssrc: u32) -> Option<TrackId> {
        self.conns.get(&id)?.by_layer_ssrc.get(&ssrc).copied()
    }

    /// Handles everything a connection produced: datagrams out, events, and
    /// application messages (RTP to forward, keyframe requests to relay).
    fn drive(&mut self, id: ConnId, now: Instant) {
        let mut reads = std::mem::take(&mut self.scratch_reads);
        let mut events = std::mem::take(&mut self.scratch_events);
        for _round in 0..4 {
            {
                let Some(conn) = self.conns.get_mut(&id) else {
                    break;
                };
                flush(conn, &mut self.out, &self.local_addrs);
                while let Some(ev) = conn.pc.poll_event() {
                    events.push(ev);
                }
                while let Some(m) = conn.pc.poll_read() {
                    reads.push(m.message);
                }
            }
            if events.is_empty() && reads.is_empty() {
                break;
            }
            for ev in events.drain(..) {
                self.on_event(id, ev, now);
            }
            for m in reads.drain(..) {
                self.on_message(id, m, now);
            }
        }
        self.schedule(id, now);
        self.scratch_reads = reads;
        self.scratch_events = events;
    }

    fn schedule(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(mut at) = conn.pc.poll_timeout() else {
            return;
        };
        if at <= now {
            at = now + Duration::from_millis(1);
        }
        if conn.deadline.is_none_or(|d| at < d || d <= now) {
            conn.deadline = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.deadline != Some(at) {
                continue;
            }
            conn.deadline = None;
            if let Err(e) = conn.pc.handle_timeout(now) {
                debug!(peer = %conn.peer, error = %e, "timeout handling failed");
            }
            self.drive(id, now);
        }
    }

    fn on_housekeeping(&mut self, now: Instant) {
        let lost_after = self.lost_after;
        let stalled: Vec<(PeerId, PcKind, bool)> = self
            .conns
            .values_mut()
            .filter(|c| !c.lost)
            .filter_map(|c| {
                let never_connected = c.connect_by.is_some_and(|t| t <= now) && !c.connected;
                let silent = c.connected && now.duration_since(c.last_rx) > lost_after;
                (never_connected || silent).then(|| {
                    c.lost = true;
                    c.connect_by = None;
                    (c.peer, c.kind, silent)
                })
            })
            .collect();
        for (peer, pc, silent) in stalled {
            if silent {
                info!(%peer, ?pc, silent_ms = lost_after.as_millis() as u64, "connection lost: nothing received");
            } else {
                warn!(%peer, ?pc, "connection did not complete ICE and DTLS in time");
            }
            self.emit(
                peer,
                MediaEvent::ConnectionLost {
                    peer,
                    pc,
                    cause: LostCause::Failed,
                },
            );
        }
        // A mirror's layers are measured by their owner (`pipe`).
        for s in self.sources.values_mut().filter(|s| s.origin.is_none()) {
            for layer in &mut s.layers {
                layer.measure(now);
            }
        }
        let pending: Vec<(TrackId, usize, KeyframeCause)> = self
            .sources
            .iter()
            .flat_map(|(id, s)| {
                s.layers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.keyframes.held().map(|cause| (*id, i, cause)))
            })
            .collect();
        for (track, layer, cause) in pending {
            self.request_layer_keyframe(track, layer, now, cause);
        }
        self.select_layers(now);
        self.pipe_housekeeping(now);
    }

    fn on_event(&mut self, id: ConnId, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                self.on_state(id, state, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(id, init, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                self.on_track_close(id, &track_id)
            }
            RTCPeerConnectionEvent::OnDataChannel(ev) => self.on_data_channel(id, ev, now),
            _ => {}
        }
    }

    fn on_state(&mut self, id: ConnId, state: RTCPeerConnectionState, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        debug!(peer = %conn.peer, pc = ?conn.kind, %state, "connection state");
        let (peer, kind) = (conn.peer, conn.kind);
        match state {
            // `rtc`'s ICE agent reports disconnected whenever a consent check
            // is later than `rtc.ice_disconnected_timeout_ms` and connected
            // again at the next one (every 2.5 s from Chrome); media flows all
            // along, so only the first connection is news. Asking publishers
            // for keyframes at every such flap cost one keyframe per 2.5 s.
            RTCPeerConnectionState::Connected if conn.connected => {
                debug!(%peer, pc = ?kind, "connected again");
            }
            RTCPeerConnectionState::Connected => {
                conn.connected = true;
                conn.connect_by = None;
                start_fast_path(conn);
                read_sim_layers(conn);
                let remote = conn
                    .media_dest
                    .map(|(_, a)| a)
                    .or_else(|| self.routes.last_addr(id));
                let tracks: Vec<TrackId> = conn.legs.keys().copied().collect();
                info!(%peer, pc = ?kind, ?remote, "connected");
                self.emit(
                    peer,
                    MediaEvent::Connected {
                        peer,
                        pc: kind,
                        remote,
                    },
                );
                for track in tracks {
                    self.request_leg_keyframe(id, track, now, KeyframeCause::NewSubscriber);
                }
                self.open_tracks(id, now);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                conn.connected = false;
                if !conn.lost {
                    conn.lost = true;
                    info!(%peer, pc = ?kind, %state, "connection lost");
                    self.emit(
                        peer,
                        MediaEvent::ConnectionLost {
                            peer,
                            pc: kind,
                            cause: LostCause::Failed,
                        },
                    );
                }
            }
            // Keep forwarding while disconnected: a consent check that is late
            // is not a lost peer, and failure follows soon if it is.
            _ => {}
        }
    }

    fn on_message(&mut self, id: ConnId, msg: RTCMessage, now: Instant) {
        match msg {
            RTCMessage::RtpPacket(core_track, packet) => self.forward(id, &core_track, packet, now),
            RTCMessage::DataChannelMessage(channel, msg) => {
                self.on_data_message(id, channel, msg, now)
            }
            RTCMessage::RtcpPacket(_, packets) => {
                let Some(conn) = self.conns.get(&id) else {
                    return;
                };
                let mut wanted = Vec::new();
                let mut nacks = Vec::new();
                let mut downlink = None;
                let mut feedback = Vec::new();
                if conn.kind == PcKind::Publish {
                    self.on_sender_reports(id, &packets, now);
                    return;
                }
                for p in &packets {
                    let any = p.as_any();
                    if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        nacks.push(nack.clone());
                        continue;
                    }
                    if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                        downlink = Some(remb.bitrate.max(0.0) as u64);
                        continue;
                    }
                    if let Some(fb) = any.downcast_ref::<TransportLayerCc>() {
                        feedback.push(twcc::arrivals(fb));
                        continue;
                    }
                    let ssrc = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                        Some(pli.media_ssrc)
                    } else {
                        any.downcast_ref::<FullIntraRequest>()
                            .map(|fir| fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc))
                    };
                    if let Some(track) = ssrc.and_then(|s| conn.by_ssrc.get(&s)) {
                        wanted.push(*track);
                    }
                }
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(bps) = downlink {
                        conn.downlink.on_estimate(bps, now);
                    }
                    for arrivals in &feedback {
                        conn.downlink.on_transport_feedback(arrivals, now);
                    }
                }
                for nack in &nacks {
                    self.answer_nack(id, nack, now);
                }
                for track in wanted {
                    self.request_leg_keyframe(id, track, now, KeyframeCause::Subscriber);
                }
            }
            _ => {}
        }
    }

    /// Sender reports from publish connection `id`, each looked up among
    /// that connection's tracks: to the recorder's tap of the track it
    /// describes, and translated to its subscriber legs.
    fn on_sender_reports(
        &mut self,
        id: ConnId,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        for sr in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        {
            let Some(track) = self.track_of_ssrc(id, sr.ssrc) else {
                continue;
            };
            let Some(layer) = self.sources.get(&track).and_then(|s| s.layer_of(sr.ssrc)) else {
                continue;
            };
            if let Some(l) = self
                .sources
                .get_mut(&track)
                .and_then(|s| s.layers.get_mut(layer))
            {
                l.sender_report = Some((sr.ntp_time, sr.rtp_time));
            }
            self.tap_sender_report(track, layer, sr);
            if let Some(source) = self.sources.get(&track) {
                pipe::pipe_sender_report(source, layer, sr, &mut self.pipe_out);
            }
            self.relay_sender_report(track, layer, sr, now);
        }
    }

    /// Asks a publisher for a keyframe of the layer the recorder copies
    /// (the only layer of a track that is not simulcast).
    fn emit(&self, peer: PeerId, event: MediaEvent) {
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

    fn report(&self, peer: PeerId, now: Instant) -> PeerMediaReport {
        let conn_report = |id: Option<ConnId>| {
            let c = self.conns.get(&id?)?;
            Some(ConnectionReport {
                state: if c.lost {
                    "failed"
                } else if c.connected {
                    "connected"
                } else {
                    "new"
                },
                // The selected pair's address; before one is, the last
                // address that named the connection.
                remote: c
                    .media_dest
                    .map(|(_, a)| a)
                    .or_else(|| self.routes.last_addr(id?)),
            })
        };
        let p = self.peers.get(&peer);
        let publish = p.and_then(|p| p.publish);
        let mut tracks: Vec<TrackReport> = self
            .sources
            .values()
            // A screen not shared yet is no track of the room's.
            .filter(|s| Some(s.conn) == publish && s.announced)
            .map(|s| TrackReport {
                id: s.info.id.0,
                kind: s.info.label(),
                codec: s.info.codec.mime_type.clone(),
                packets: s.packets(),
                bytes: s.bytes(),
                bitrate_bps: s.bitrate_bps(),
                subscribers: s.all_subscribers(),
                layers: if s.simulcast() {
                    s.layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| LayerReport {
                            rid: l.name(i),
                            bitrate_bps: l.bitrate_bps,
                            active: l.active(now),
                            paused: l.paused.is_some(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        tracks.sort_by_key(|t| t.id);
        let rid = |track: &TrackId, layer: Option<usize>| {
            let source = self.sources.get(track)?;
            let layer = layer?;
            Some(source.layers.get(layer)?.name(layer))
        };
        let mut receiving: Vec<ReceivedLayerReport> = p
            .and_then(|p| p.subscribe)
            .and_then(|id| self.conns.get(&id))
            .into_iter()
            .flat_map(|c| c.legs.iter())
            .filter_map(|(track, leg)| {
                let prefs = leg.prefs;
                let Some(sw) = leg.switcher.as_ref() else {
                    // A track sent once is listed when it is paused.
                    return (leg.prefs.paused || leg.starved).then_some(ReceivedLayerReport {
                        track: track.0,
                        layer: None,
                        target: None,
                        prefs,
                        starved: leg.starved && !leg.prefs.paused,
                    });
                };
                let target = (sw.target() != sw.current())
                    .then(|| rid(track, sw.target()))
                    .flatten();
                Some(ReceivedLayerReport {
                    track: track.0,
                    layer: rid(track, sw.current()),
                    target,
                    prefs,
                    starved: sw.target().is_none() && !prefs.paused,
                })
            })
            .collect();
        receiving.sort_by_key(|r| r.track);
        PeerMediaReport {
            peer,
            publish: conn_report(publish),
            subscribe: conn_report(p.and_then(|p| p.subscribe)),
            tracks,
            receiving,
            downlink_bps: p
                .and_then(|p| p.subscribe)
                .and_then(|id| self.conns.get(&id)?.downlink.estimate()),
        }
    }

    fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for id in [p.publish, p.subscribe].into_iter().flatten() {
            self.drop_conn(id);
        }
    }

    fn drop_conn(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let _ = conn.pc.close();
        flush(&mut conn, &mut self.out, &self.local_addrs);
        self.routes.remove(&conn.ufrag, id);
        for track in conn.tracks.values() {
            self.remove_source(*track);
        }
        for track in conn.legs.keys() {
            if let Some(source) = self.sources.get_mut(track) {
                source.subscribers.retain(|s| s.conn != id);
            }
        }
        if let Some(p) = self.peers.get_mut(&conn.peer) {
            if p.publish == Some(id) {
                p.publish = None;
            }
            if p.subscribe == Some(id) {
                p.subscribe = None;
            }
        }
        debug!(peer = %conn.peer, pc = ?conn.kind, "connection closed");
    }

    /// A published track ended: its recording and its mirrors are told.
    fn remove_source(&mut self, track: TrackId) {
        let Some(source) = self.sources.remove(&track) else {
            return;
        };
        if let Some(tap) = &source.tap {
            tap.send(TapEvent::TrackEnded { track });
        }
        self.close_pipes(&source);
    }

    fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.drop_conn(id);
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

/// The server-side ufrag of a STUN binding request (`USERNAME = ours:theirs`).
/// Whether a datagram is a STUN message (a connectivity check).
fn is_stun(data: &[u8]) -> bool {
    rtc::stun::message::is_stun_message(data)
}

fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{is_stun_message, Message};
    use rtc::stun::textattrs::Username;
    if !is_stun_message(data) {
        return None;
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(data).ok()?;
    let username = Username::get_from_as(&msg, ATTR_USERNAME).ok()?;
    let (local, _) = username.text.split_once(':')?;
    Some(local.to_owned())
}

/// What the datagram fuzz target (`crate::fuzz`) drives: the engine as its
/// loop does, without the loop.
#[cfg(test)]
impl MediaCore {
    /// A core on 127.0.0.1:40000 (nothing bound: tests carry its datagrams
    /// in memory), its clock starting at `now`.
    pub(crate) fn loopback(settings: &MediaSettings, now: Instant) -> MediaCore {
        Self::loopback_worker(settings, 0, now)
    }

    /// Worker `worker`'s core, on 127.0.0.1 port 40000 + `worker`.
    pub(crate) fn loopback_worker(
        settings: &MediaSettings,
        worker: usize,
        now: Instant,
    ) -> MediaCore {
        let announced = vec![Announced {
            bound: SocketAddr::from(([127, 0, 0, 1], 40_000 + worker as u16)),
            public: None,
            tcp: false,
        }];
        MediaCore::new(settings, worker, announced, now)
    }

    /// A publish connection for `peer`, answered from `offer`; the server's
    /// ICE ufrag, if the offer was answered.
    pub(crate) fn fuzz_publish(&mut self, peer: PeerId, offer: &str) -> Option<String> {
        self.fuzz_answer(peer, offer)?
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    }

    /// A publish connection for `peer`: the answer to `offer`, if any.
    pub(crate) fn fuzz_answer(&mut self, peer: PeerId, offer: &str) -> Option<String> {
        let events: EventSink = Arc::new(|_| {});
        let answer = self
            .publish(peer, events, offer.to_owned(), Instant::now())
            .ok()?;
        Some(answer.sdp)
    }

    /// Like [`MediaCore::fuzz_datagram`] (`data: None` for the timers
    /// alone), but what the engine sends is handed back instead of sent:
    /// a client in the same test (one that completes DTLS) reads it.
    pub(crate) fn fuzz_exchange(
        &mut self,
        from: SocketAddr,
        data: Option<&[u8]>,
    ) -> Vec<(SocketAddr, BytesMut)> {
        let now = Instant::now();
        if let Some(data) = data {
            self.on_datagram(0, from, data, now, now);
        }
        self.on_timers(now);
        self.out.take()
    }

    /// The tracks published so far.
    pub(crate) fn fuzz_tracks(&self) -> Vec<TrackInfo> {
        self.sources.values().map(|s| s.info.clone()).collect()
    }

    /// A subscribe connection for `peer` carrying `tracks`: the server's
    /// offer, if any.
    pub(crate) fn fuzz_subscribe(
        &mut self,
        peer: PeerId,
        tracks: Vec<TrackInfo>,
    ) -> Option<String> {
        let events: EventSink = Arc::new(|_| {});
        let offer = self
            .subscribe(peer, events, tracks, Instant::now())
            .ok()??;
        Some(offer.sdp)
    }

    /// Applies the subscriber's answer to the outstanding offer.
    pub(crate) fn fuzz_subscribe_answer(&mut self, peer: PeerId, answer: &str) -> bool {
        self.subscribe_answer(peer, answer.to_owned(), Instant::now())
            .is_ok()
    }

    /// Closes both connections of `peer`, as when it leaves.
    pub(crate) fn fuzz_remove_peer(&mut self, peer: PeerId) {
        self.remove_peer(peer);
    }

    /// Transport feedback the fast path read, packets retransmitted for
    /// NACKs, and PLIs sent to publishers, so far.
    pub(crate) fn fuzz_feedback(&self) -> (u64, u64, u64) {
        let s = &self.stats;
        (s.feedback_fast, s.rtp_retransmitted, s.plis_sent)
    }

    /// RTP packets the connections' cores delivered to the engine so far.
    pub(crate) fn fuzz_rtp_in(&self) -> u64 {
        self.stats.rtp_in
    }

    /// The first socket's address.
    pub(crate) fn fuzz_local_addr(&self) -> SocketAddr {
        self.local_addrs[0].addr
    }

    /// Datagrams taken in so far: routed to a connection, and not.
    pub(crate) fn fuzz_routed(&self) -> (u64, u64) {
        let s = &self.stats;
        (s.datagrams_in - s.dropped_unroutable, s.dropped_unroutable)
    }

    /// One datagram from `from` on the first socket, handled and answered
    /// as the loop would, then the timers that fell due.
    pub(crate) fn fuzz_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        self.on_datagram(0, from, data, now, now);
        self.on_timers(now);
        // Nobody listens on the fuzzed addresses.
        self.out.take();
    }
}
