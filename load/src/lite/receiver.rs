//! One lite receiver's connection and the task that drives it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
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
use rtc::sdp::extmap::TRANSPORT_CC_URI;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use sfu_client::{
    extension_id, offered_ssrcs, offered_tracks, Histogram, OfferedTrack, RemoteTrack, TrackAccount,
};
use sfu_keytap::KeyTap;
use sfu_proto::signaling::{CandidateInit, ClientMessage, PcKind, ServerMessage};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::fast::FastPath;
use super::{lock, send, Shared, Ws};

/// Connectivity checks paced as browsers pace them (RFC 8445's Ta), as the
/// full client does.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
const CHECK_ATTEMPTS: u16 = 28;
/// Datagrams read per wake-up before `rtc`'s output is drained.
const READ_BATCH: usize = 32;
/// Largest datagram read.
const MTU: usize = 1500;

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
pub(super) struct Receiver {
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
    /// A receiver on `socket` (its connection built here), accounting into
    /// `shared`.
    pub(super) fn new(
        socket: UdpSocket,
        keys: Arc<KeyTap>,
        sink: SplitSink<Ws, Message>,
        shared: Arc<Shared>,
        histogram: Option<Arc<Histogram>>,
        max_layer: Option<u8>,
    ) -> Result<Receiver, String> {
        let local = socket
            .local_addr()
            .map_err(|e| format!("reading the socket's address: {e}"))?;
        Ok(Receiver {
            pc: build(local, &keys, Instant::now())?,
            socket,
            local,
            sink,
            shared,
            histogram,
            max_layer,
            offered: Vec::new(),
            asked: Vec::new(),
            by_track: Vec::new(),
            keys,
            fast: None,
            connected: false,
            twcc_id: None,
            by_ssrc: Vec::new(),
            server: None,
        })
    }

    /// Says goodbye on the signaling.
    pub(super) async fn leave(&mut self) {
        let _ = send(&mut self.sink, &ClientMessage::Leave).await;
        let _ = self.sink.close().await;
    }

    pub(super) async fn run(
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
            self.drain().await;
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
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                    tracing::debug!(local = %self.local, %state, "ice");
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    tracing::debug!(local = %self.local, %state, "connection");
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
    async fn drain(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            // Loopback drops nothing we could retry usefully; a send that
            // fails is a lost packet, as on a real link.
            let _ = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await;
        }
        self.read_media();
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
        tracing::debug!(local = %self.local, "offer");
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
