//! A stand-in for sfud, just enough to exercise the client end to end: it
//! speaks the signaling protocol for one participant, answers its publish
//! offer with a webrtc peer connection, and reflects the published tracks
//! back on a subscribe connection whose msid is the participant's peer id.
//! Like an SFU adding a subscriber, it asks for a keyframe (PLI) once the
//! subscribe connection is up.

use futures_util::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sfu_proto::signaling::{CandidateInit, ClientMessage, PcKind, Role, RoomMode, ServerMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The peer id the fake server hands out.
pub const PEER_ID: &str = "peer-1";

/// What a test can ask the fake server to do.
pub enum Command {
    /// Renegotiate the subscribe connection without the reflected audio track.
    DropAudio,
}

/// What the fake server saw arrive on the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A protocol message.
    Message(ClientMessage),
    /// A WebSocket close frame.
    CloseFrame,
    /// The TCP stream ended (or broke).
    Eof,
}

/// A running fake server.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub commands: mpsc::UnboundedSender<Command>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Listens on 127.0.0.1 and serves one WebSocket session.
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (commands, command_rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_session = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            if let Err(e) = session(stream, command_rx, seen_by_session).await {
                eprintln!("fake server session failed: {e}");
            }
        });
        FakeServer {
            addr,
            commands,
            seen,
            task,
        }
    }
}

/// A reflected track on the subscribe connection: the track, its SSRC, its sender.
type ReflectedTrack = (Arc<TrackLocalStaticRTP>, u32, Arc<dyn RtpSender>);

#[derive(Default)]
struct Reflected {
    /// Per kind: the subscribe-side track, its SSRC and its sender.
    tracks: HashMap<String, ReflectedTrack>,
    /// The subscribe connection reached `connected`.
    subscriber_connected: Arc<AtomicBool>,
}

struct ServerPcEvents {
    gathered: Arc<Notify>,
    candidates: Arc<Mutex<Vec<String>>>,
    reflected: Arc<Mutex<Reflected>>,
    kind: PcKind,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ServerPcEvents {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            self.candidates.lock().expect("lock").push(init.candidate);
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if self.kind == PcKind::Subscribe && state == RTCPeerConnectionState::Connected {
            let reflected = self.reflected.lock().expect("lock");
            reflected.subscriber_connected.store(true, Ordering::SeqCst);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let reflected = Arc::clone(&self.reflected);
        let subscriber_connected =
            Arc::clone(&reflected.lock().expect("lock").subscriber_connected);
        tokio::spawn(async move {
            let kind = track.kind().await.to_string();
            let mut out: Option<(Arc<TrackLocalStaticRTP>, u32, u8)> = None;
            let mut pli_sent = kind != "video";
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(mut packet) => {
                        if !pli_sent && subscriber_connected.load(Ordering::SeqCst) {
                            pli_sent = true;
                            let pli = PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc: packet.header.ssrc,
                            };
                            let _ = track.write_rtcp(vec![Box::new(pli)]).await;
                        }
                        if out.is_none() {
                            let entry = reflected.lock().expect("lock").tracks.get(&kind).cloned();
                            if let Some((local, ssrc, sender)) = entry {
                                let params = sender.get_parameters().await;
                                let pt = params.ok().and_then(|p| {
                                    p.rtp_parameters.codecs.first().map(|c| c.payload_type)
                                });
                                if let Some(pt) = pt {
                                    out = Some((local, ssrc, pt));
                                }
                            }
                        }
                        if let Some((local, ssrc, pt)) = &out {
                            packet.header.ssrc = *ssrc;
                            packet.header.payload_type = *pt;
                            packet.header.extension = false;
                            packet.header.extensions.clear();
                            let _ = local.write_rtp(packet).await;
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

struct ServerPc {
    pc: Arc<dyn PeerConnection>,
    gathered: Arc<Notify>,
    candidates: Arc<Mutex<Vec<String>>>,
}

async fn server_pc(reflected: &Arc<Mutex<Reflected>>, kind: PcKind) -> Result<ServerPc, BoxError> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let gathered = Arc::new(Notify::new());
    let candidates = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(ServerPcEvents {
        gathered: Arc::clone(&gathered),
        candidates: Arc::clone(&candidates),
        reflected: Arc::clone(reflected),
        kind,
    });
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .build(),
        )
        .with_handler(handler)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok(ServerPc {
        pc: Arc::new(pc),
        gathered,
        candidates,
    })
}

/// Waits for gathering, then returns the local SDP and the gathered candidates.
async fn gathered_description(spc: &ServerPc) -> Result<(String, Vec<String>), BoxError> {
    tokio::time::timeout(Duration::from_secs(5), spc.gathered.notified()).await?;
    let sdp = spc
        .pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    let candidates = spc.candidates.lock().expect("lock").clone();
    Ok((sdp, candidates))
}

fn send(out: &mpsc::UnboundedSender<String>, msg: &ServerMessage) {
    let _ = out.send(serde_json::to_string(msg).expect("serializes"));
}

/// Sends a description, then its candidates trickled, then the end marker.
fn send_description(
    out: &mpsc::UnboundedSender<String>,
    msg: ServerMessage,
    pc: PcKind,
    candidates: Vec<String>,
) {
    send(out, &msg);
    for candidate in candidates {
        let candidate = Some(CandidateInit {
            candidate,
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        });
        send(out, &ServerMessage::Candidate { pc, candidate });
    }
    send(
        out,
        &ServerMessage::Candidate {
            pc,
            candidate: None,
        },
    );
}

fn reflected_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codec = match kind {
        RtpCodecKind::Video => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            ..Default::default()
        },
        _ => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            ..Default::default()
        },
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        PEER_ID.to_owned(),
        format!("{kind}-reflected"),
        format!("{kind}-reflected"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

async fn session(
    stream: tokio::net::TcpStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<(), BoxError> {
    let ws = tokio_tungstenite::accept_async(stream).await?;
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let reflected = Arc::new(Mutex::new(Reflected::default()));
    let mut publish: Option<ServerPc> = None;
    let mut subscribe: Option<ServerPc> = None;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            Some(Command::DropAudio) = commands.recv() => {
                let sub = subscribe.as_ref().ok_or("no subscribe connection")?;
                let audio = reflected.lock().expect("lock").tracks.remove("audio");
                if let Some((_, _, sender)) = audio {
                    sub.pc.remove_track(&sender).await?;
                }
                let offer = sub.pc.create_offer(None).await?;
                sub.pc.set_local_description(offer).await?;
                let sdp = sub.pc.local_description().await.ok_or("no local description")?.sdp;
                send(&out, &ServerMessage::Offer { pc: PcKind::Subscribe, sdp });
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) => {
                seen.lock().expect("lock").push(Seen::CloseFrame);
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                seen.lock().expect("lock").push(Seen::Eof);
                return Ok(());
            }
        };
        let message = serde_json::from_str::<ClientMessage>(&text)?;
        seen.lock()
            .expect("lock")
            .push(Seen::Message(message.clone()));
        match message {
            ClientMessage::Join { room, role, .. } => send(
                &out,
                &ServerMessage::Joined {
                    room,
                    peer_id: PEER_ID.into(),
                    mode: RoomMode::Sfu,
                    role: role.unwrap_or(Role::Speaker),
                    peers: vec![],
                    ice_servers: vec![],
                },
            ),
            ClientMessage::Offer { sdp, .. } => {
                let spc = server_pc(&reflected, PcKind::Publish).await?;
                spc.pc
                    .set_remote_description(RTCSessionDescription::offer(sdp)?)
                    .await?;
                let answer = spc.pc.create_answer(None).await?;
                spc.pc.set_local_description(answer).await?;
                let (sdp, candidates) = gathered_description(&spc).await?;
                let answer = ServerMessage::Answer {
                    pc: PcKind::Publish,
                    sdp,
                };
                send_description(&out, answer, PcKind::Publish, candidates);
                publish = Some(spc);

                let spc = server_pc(&reflected, PcKind::Subscribe).await?;
                for (i, kind) in [RtpCodecKind::Video, RtpCodecKind::Audio]
                    .into_iter()
                    .enumerate()
                {
                    let ssrc = 1000 + i as u32;
                    let track = reflected_track(kind, ssrc);
                    let sender = spc
                        .pc
                        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
                        .await?;
                    reflected
                        .lock()
                        .expect("lock")
                        .tracks
                        .insert(kind.to_string(), (track, ssrc, sender));
                }
                let offer = spc.pc.create_offer(None).await?;
                spc.pc.set_local_description(offer).await?;
                let (sdp, candidates) = gathered_description(&spc).await?;
                let offer = ServerMessage::Offer {
                    pc: PcKind::Subscribe,
                    sdp,
                };
                send_description(&out, offer, PcKind::Subscribe, candidates);
                subscribe = Some(spc);
            }
            ClientMessage::Answer { sdp, .. } => {
                let sub = subscribe.as_ref().ok_or("answer without offer")?;
                sub.pc
                    .set_remote_description(RTCSessionDescription::answer(sdp)?)
                    .await?;
            }
            ClientMessage::Candidate {
                pc,
                candidate: Some(c),
            } => {
                let target = match pc {
                    PcKind::Publish => publish.as_ref(),
                    PcKind::Subscribe => subscribe.as_ref(),
                };
                if let Some(target) = target {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_m_line_index,
                        username_fragment: c.username_fragment,
                        url: None,
                    };
                    target.pc.add_ice_candidate(init).await?;
                }
            }
            ClientMessage::Candidate {
                candidate: None, ..
            } => {}
            ClientMessage::Leave => break,
            // This fake server is an SFU: mesh relaying is not its business.
            ClientMessage::Signal { .. }
            | ClientMessage::TrackSettings { .. }
            | ClientMessage::Mute { .. } => {}
        }
    }
    for spc in [publish, subscribe].into_iter().flatten() {
        let _ = spc.pc.close().await;
    }
    Ok(())
}
