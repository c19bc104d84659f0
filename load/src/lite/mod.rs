//! Receivers that cost the generator less: one task each, driving `rtc`'s
//! sans-IO peer connection straight from its own UDP socket, and reading
//! RTP outside it once the connection is up (`fast`).
//!
//! The full client (`sfu-client`) runs `webrtc`'s async peer connection:
//! several tasks per connection, every packet crossing channels and locks
//! between them, about 13 µs of the generator's CPU per packet received
//! (docs/benchmarks.md). On this 2-core machine that, not the SFU, stopped
//! the ramps. A lite receiver keeps everything that makes it an honest
//! browser stand-in (ICE with browser pacing, DTLS, SRTP, the default
//! interceptors: receiver reports, NACKs and transport-wide feedback, which
//! sfud's downlink estimate needs) and drops the wrapper: its task reads the
//! socket, hands each datagram to `rtc`, sends what `rtc` writes and
//! accounts the packets it reads ([`TrackAccount`], as the full client does).
//! Once DTLS completes, RTP no longer crosses `rtc` (`fast`), which then
//! only answers STUN and reads RTCP. It only receives: publishers stay full
//! clients.

mod fast;
mod feedback;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sfu_client::{
    extension_id, offered_ssrcs, offered_tracks, Histogram, OfferedTrack, RemoteTrack, TrackAccount,
};
use sfu_keytap::KeyTap;
use sfu_proto::signaling::{CandidateInit, ClientMessage, PcKind, Role, ServerMessage};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::LoadError;
use fast::FastPath;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connectivity checks paced as browsers pace them (RFC 8445's Ta), as the
/// full client does.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
const CHECK_ATTEMPTS: u16 = 28;
/// Datagrams read per wake-up before `rtc`'s output is drained.
const READ_BATCH: usize = 32;
/// Largest datagram read.
const MTU: usize = 1500;
/// The transport-wide sequence number header extension.
const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// What a lite receiver joins.
#[derive(Debug, Clone)]
pub struct LiteOptions {
    /// sfud's (or the translator's) signaling URL.
    pub ws_url: String,
    /// Room to join as a listener.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Address its socket binds to.
    pub bind_ip: IpAddr,
    /// Ask for at most this simulcast layer of every video track.
    pub max_layer: Option<u8>,
    /// Deadline for the WebSocket and the `joined` answer.
    pub timeout: Duration,
}

/// One joined receiver; its task runs until [`LiteReceiver::close`].
pub struct LiteReceiver {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    join_sent_ns: u64,
}

/// What the task and the fleet both see.
struct Shared {
    tracks: Mutex<Vec<TrackAccount>>,
    /// Why the task ended early, if it did.
    failure: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LiteReceiver {
    /// Connects, joins `options.room` as a listener and starts the task that
    /// answers the subscribe offers and receives; returns once `joined`
    /// arrived.
    pub async fn join(
        options: LiteOptions,
        histogram: Option<Arc<Histogram>>,
    ) -> Result<LiteReceiver, LoadError> {
        let fail =
            |what: String| LoadError::Join(format!("{} in {}: {what}", options.name, options.room));
        let (ws, _) = tokio::time::timeout(
            options.timeout,
            tokio_tungstenite::connect_async(options.ws_url.as_str()),
        )
        .await
        .map_err(|_| fail("the WebSocket did not open in time".into()))?
        .map_err(|e| fail(format!("WebSocket: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let join_sent_ns = sfu_client::tag::now_ns();
        send(
            &mut sink,
            &ClientMessage::Join {
                room: options.room.clone(),
                name: options.name.clone(),
                role: Some(Role::Listener),
                token: None,
                mode: None,
            },
        )
        .await
        .map_err(fail)?;
        let mut early = Vec::new();
        tokio::time::timeout(options.timeout, async {
            loop {
                match next_message(&mut stream).await? {
                    ServerMessage::Joined { .. } => return Ok(()),
                    ServerMessage::Error { code, message } => {
                        return Err(format!("join refused: {code:?}: {message}"))
                    }
                    other => early.push(other),
                }
            }
        })
        .await
        .map_err(|_| fail("no `joined` in time".into()))?
        .map_err(fail)?;
        let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
            .await
            .map_err(|e| fail(format!("binding a UDP socket: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| fail(format!("reading the socket's address: {e}")))?;
        let keys = KeyTap::new().map_err(|e| fail(format!("crypto provider: {e}")))?;
        let pc = build(local, &keys, Instant::now()).map_err(fail)?;
        let shared = Arc::new(Shared {
            tracks: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        // The WebSocket is read on a task of its own: polled beside the UDP
        // socket, tungstenite zeroes its read buffer on every poll (12% of
        // the generator's CPU at 175 receivers).
        let (messages_in, messages) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Ok(msg) = next_message(&mut stream).await {
                if messages_in.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut receiver = Receiver {
            pc,
            socket,
            local,
            sink,
            shared: Arc::clone(&shared),
            histogram,
            max_layer: options.max_layer,
            offered: Vec::new(),
            asked: Vec::new(),
            by_track: Vec::new(),
            keys,
            fast: None,
            connected: false,
            twcc_id: None,
            by_ssrc: Vec::new(),
            server: None,
        };
        let task = tokio::spawn(async move {
            let outcome = receiver.run(early, messages, stopped).await;
            reader.abort();
            if let Err(why) = outcome {
                *lock(&receiver.shared.failure) = Some(why);
            }
            let _ = send(&mut receiver.sink, &ClientMessage::Leave).await;
            let _ = receiver.sink.close().await;
        });
        Ok(LiteReceiver {
            shared,
            stop,
            task,
            join_sent_ns,
        })
    }

    /// When its `join` was sent, in nanoseconds since the UNIX epoch.
    pub fn join_sent_ns(&self) -> u64 {
        self.join_sent_ns
    }

    /// The counters of every track received so far.
    pub fn tracks(&self) -> Vec<RemoteTrack> {
        lock(&self.shared.tracks)
            .iter()
            .map(TrackAccount::counters)
            .collect()
    }

    /// Why the receiver stopped on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Leaves the room and ends the task.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Builds the receiving connection: `rtc`'s defaults as the full client has
/// them, one host candidate on `local`, its keys learnt by `keys`.
fn build(local: SocketAddr, keys: &Arc<KeyTap>, now: Instant) -> Result<RTCPeerConnection, String> {
    let e = |what: &'static str| move |err: rtc::shared::error::Error| format!("{what}: {err}");
    let mut media = MediaEngine::default();
    media
        .register_default_codecs()
        .map_err(e("registering the codecs"))?;
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(e("registering the interceptors"))?;
    let settings = SettingEngineBuilder::new()
        .with_answering_dtls_role(RTCDtlsRole::Client)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_connection_attempts(Some(CHECK_INTERVAL), Some(CHECK_ATTEMPTS))
        .with_crypto_provider(keys.clone())
        // What the key tap can tell apart (no 32-bit tags), as sfud offers.
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(e("building the connection"))?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(e("making the host candidate"))?;
    let init = RTCIceCandidate::from(&host)
        .to_json()
        .map_err(e("describing the host candidate"))?;
    pc.add_local_candidate(init)
        .map_err(e("adding the host candidate"))?;
    Ok(pc)
}

/// The task's state.
struct Receiver {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    sink: SplitSink<Ws, Message>,
    shared: Arc<Shared>,
    histogram: Option<Arc<Histogram>>,
    max_layer: Option<u8>,
    /// The tracks of the latest subscribe offer.
    offered: Vec<OfferedTrack>,
    /// Video tracks whose layer was asked for.
    asked: Vec<String>,
    /// `rtc`'s track id -> index in `shared.tracks`.
    by_track: Vec<(String, usize)>,
    keys: Arc<KeyTap>,
    /// RTP read outside `rtc`, once the connection is up.
    fast: Option<FastPath>,
    connected: bool,
    /// The offer's transport-wide sequence number extension id.
    twcc_id: Option<u8>,
    /// Media SSRC -> index in `shared.tracks`, from the latest offer.
    by_ssrc: Vec<(u32, usize)>,
    /// Where media comes from: where feedback goes.
    server: Option<SocketAddr>,
}

impl Receiver {
    async fn run(
        &mut self,
        early: Vec<ServerMessage>,
        mut messages: mpsc::Receiver<ServerMessage>,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<(), String> {
        for msg in early {
            self.on_message(msg).await?;
        }
        let mut buf = vec![0u8; MTU];
        loop {
            self.drain().await?;
            let mut wake = self
                .pc
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            if let Some(fast) = &self.fast {
                wake = wake.min(fast.next_feedback());
            }
            tokio::select! {
                read = self.socket.recv_from(&mut buf) => {
                    let (len, from) = read.map_err(|e| format!("reading the socket: {e}"))?;
                    self.datagram(&buf[..len], from);
                    // Whatever else is waiting, before the output is drained.
                    for _ in 1..READ_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((len, from)) => self.datagram(&buf[..len], from),
                            Err(_) => break,
                        }
                    }
                }
                msg = messages.recv() => {
                    match msg {
                        Some(msg) => self.on_message(msg).await?,
                        // The server closed the signaling: the call is over.
                        None => return Ok(()),
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if self.pc.poll_timeout().is_some_and(|at| at <= now) {
                        self.pc
                            .handle_timeout(now)
                            .map_err(|e| format!("rtc timeout: {e}"))?;
                    }
                    self.send_feedback(now).await;
                }
                _ = stopped.changed() => return Ok(()),
            }
        }
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        let now = Instant::now();
        if let Some(fast) = self.fast.as_mut().filter(|_| FastPath::is_rtp(data)) {
            let Some(packet) = fast.read(data, now) else {
                return;
            };
            self.server = Some(from);
            // Retransmissions and probes (other SSRCs) count for the
            // feedback only, as a browser's jitter buffer drops them.
            let ssrc = packet.header.ssrc;
            if let Some((_, index)) = self.by_ssrc.iter().find(|(s, _)| *s == ssrc) {
                if let Some(t) = lock(&self.shared.tracks).get_mut(*index) {
                    t.record(&packet, sfu_client::tag::now_ns());
                }
            }
            return;
        }
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        // A datagram rtc refuses (a stray, a replay) is its business.
        let _ = self.pc.handle_read(msg);
        self.read_media();
    }

    /// Accounts the RTP `rtc` decrypted, and learns new tracks.
    fn read_media(&mut self) {
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    self.open_track(&init.track_id, init.ssrc);
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.connected = state == RTCPeerConnectionState::Connected;
                }
                _ => {}
            }
        }
        if self.connected && self.fast.is_none() {
            // The keys are there once DTLS completed, which "connected" says.
            let sender_ssrc = rand::random();
            self.fast = FastPath::new(&self.keys, self.twcc_id, sender_ssrc, Instant::now());
        }
        let now_ns = sfu_client::tag::now_ns();
        while let Some(m) = self.pc.poll_read() {
            let RTCMessage::RtpPacket(track_id, packet) = m.message else {
                continue;
            };
            let index = match self.by_track.iter().find(|(t, _)| *t == track_id) {
                Some((_, i)) => *i,
                None => self.open_track(&track_id, packet.header.ssrc),
            };
            // Uncontended but for the fleet's once-a-second totals.
            if let Some(t) = lock(&self.shared.tracks).get_mut(index) {
                t.record(&packet, now_ns);
            }
        }
    }

    /// Starts accounting `rtc`'s track `track_id`, named as the offer names it.
    fn open_track(&mut self, track_id: &str, ssrc: u32) -> usize {
        if let Some((_, i)) = self.by_track.iter().find(|(t, _)| t == track_id) {
            return *i;
        }
        let offered = self.offered.iter().find(|o| o.track_id == track_id);
        let info = RemoteTrack {
            stream_id: offered.map(|o| o.stream_id.clone()).unwrap_or_default(),
            track_id: track_id.to_owned(),
            kind: offered.map(|o| o.kind.clone()).unwrap_or_default(),
            ssrc,
            ..RemoteTrack::default()
        };
        let mut tracks = lock(&self.shared.tracks);
        tracks.push(TrackAccount::new(info, self.histogram.clone()));
        let index = tracks.len() - 1;
        self.by_track.push((track_id.to_owned(), index));
        index
    }

    /// Sends the transport-wide feedback, if due.
    async fn send_feedback(&mut self, now: Instant) {
        let Some(datagram) = self.fast.as_mut().and_then(|f| f.feedback(now)) else {
            return;
        };
        if let Some(server) = self.server {
            let _ = self.socket.send_to(&datagram, server).await;
        }
    }

    /// Sends what `rtc` wrote.
    async fn drain(&mut self) -> Result<(), String> {
        while let Some(out) = self.pc.poll_write() {
            // Loopback drops nothing we could retry usefully; a send that
            // fails is a lost packet, as on a real link.
            let _ = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await;
        }
        self.read_media();
        Ok(())
    }

    async fn on_message(&mut self, msg: ServerMessage) -> Result<(), String> {
        match msg {
            ServerMessage::Offer {
                pc: PcKind::Subscribe,
                sdp,
            } => self.answer(sdp).await,
            ServerMessage::Candidate {
                pc: PcKind::Subscribe,
                candidate: Some(c),
            } => {
                // A candidate the connection cannot use is the server's
                // loss, not a reason to stop receiving.
                let _ = self.pc.add_remote_candidate(RTCIceCandidateInit {
                    candidate: c.candidate,
                    ..Default::default()
                });
                Ok(())
            }
            ServerMessage::Error { code, message } => {
                Err(format!("server error {code:?}: {message}"))
            }
            _ => Ok(()),
        }
    }

    async fn answer(&mut self, sdp: String) -> Result<(), String> {
        let e = |what: &'static str| move |err: rtc::shared::error::Error| format!("{what}: {err}");
        let offer = RTCSessionDescription::offer(sdp.clone()).map_err(e("parsing the offer"))?;
        self.pc
            .set_remote_description(Instant::now(), offer)
            .map_err(e("applying the offer"))?;
        for line in sdp.lines().filter_map(|l| l.trim_end().strip_prefix("a=")) {
            if line.starts_with("candidate:") {
                let _ = self.pc.add_remote_candidate(RTCIceCandidateInit {
                    candidate: line.to_owned(),
                    ..Default::default()
                });
            }
        }
        let answer = self
            .pc
            .create_answer(None)
            .map_err(e("creating the answer"))?;
        self.pc
            .set_local_description(Instant::now(), answer)
            .map_err(e("setting the answer"))?;
        let local = self
            .pc
            .local_description()
            .ok_or("no local description after setting it")?;
        self.offered = offered_tracks(&sdp);
        self.twcc_id = extension_id(&sdp, TRANSPORT_CC_URI);
        self.by_ssrc = offered_ssrcs(&sdp)
            .into_iter()
            .map(|(track, ssrc)| (ssrc, self.open_track(&track, ssrc)))
            .collect();
        send(
            &mut self.sink,
            &ClientMessage::Answer {
                pc: PcKind::Subscribe,
                sdp: local.sdp.clone(),
            },
        )
        .await?;
        let mid = self.offered.first().map(|t| t.mid.clone());
        let host = format!(
            "candidate:1 1 udp 2130706431 {} {} typ host",
            self.local.ip(),
            self.local.port()
        );
        for candidate in [Some(host), None] {
            let candidate = candidate.map(|candidate| CandidateInit {
                candidate,
                sdp_mid: mid.clone(),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            });
            send(
                &mut self.sink,
                &ClientMessage::Candidate {
                    pc: PcKind::Subscribe,
                    candidate,
                },
            )
            .await?;
        }
        self.ask_for_layers().await
    }

    /// Asks for `max_layer` of every offered video track not asked yet.
    async fn ask_for_layers(&mut self) -> Result<(), String> {
        let Some(layer) = self.max_layer else {
            return Ok(());
        };
        let videos: Vec<String> = self
            .offered
            .iter()
            .filter(|t| t.kind == "video" && !self.asked.contains(&t.track_id))
            .map(|t| t.track_id.clone())
            .collect();
        for track in videos {
            send(
                &mut self.sink,
                &ClientMessage::TrackSettings {
                    track: track.clone(),
                    paused: false,
                    max_width: None,
                    max_height: None,
                    max_layer: Some(layer),
                },
            )
            .await?;
            self.asked.push(track);
        }
        Ok(())
    }
}

async fn send(sink: &mut SplitSink<Ws, Message>, msg: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| format!("encoding {msg:?}: {e}"))?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| format!("sending on the WebSocket: {e}"))
}

/// The next server message; an error when the socket closes or breaks.
async fn next_message(stream: &mut SplitStream<Ws>) -> Result<ServerMessage, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| format!("an unreadable server message: {e}"))
            }
            Some(Ok(Message::Close(_))) | None => return Err("the server closed".into()),
            Some(Err(e)) => return Err(format!("WebSocket: {e}")),
            Some(Ok(_)) => {}
        }
    }
}
