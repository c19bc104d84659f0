//! The client handle: joining, publishing, closing, and deadline-bounded
//! waits on what was observed.

use crate::media::{self, LocalMedia, Pacing, PublishOptions};
use crate::peer;
use crate::shared::{lock, Shared};
use crate::signaling::{local_sdp, new_peer_connection, read_loop, write_loop};
use crate::simulcast;
use crate::snapshot::Snapshot;
use crate::{tag, ClientError, ClientOptions};
use futures_util::StreamExt;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sfu_proto::signaling::{
    ClientMessage, ErrorCode, IceServer, PcKind, PeerInfo, Role, ServerMessage,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

/// Re-evaluate a `wait_for` predicate at least this often, for counters that
/// change without a notification (the last packets of a burst).
const RECHECK_INTERVAL: Duration = Duration::from_millis(50);
/// How long closing waits for a peer connection or the socket to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What `joined` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room joined.
    pub room: String,
    /// This participant's id (the msid of everything it publishes).
    pub peer_id: String,
    /// The role granted.
    pub role: Role,
    /// Everyone already in the room.
    pub peers: Vec<PeerInfo>,
    /// STUN/TURN servers the server recommends.
    pub ice_servers: Vec<IceServer>,
}

/// Per-packet counters of one client, cheap to take often (no server
/// messages copied, no latency percentiles computed).
#[derive(Debug, Clone, Default)]
pub struct MediaCounters {
    /// Video RTP packets handed to the publish connection.
    pub sent_video_packets: u64,
    /// Audio RTP packets handed to the publish connection.
    pub sent_audio_packets: u64,
    /// `write_rtp` calls that failed.
    pub send_errors: u64,
    /// Every subscribe-side track, as in [`Snapshot::remote_tracks`] but with
    /// `latency` left empty.
    pub tracks: Vec<crate::snapshot::RemoteTrack>,
}

/// One participant: a signaling WebSocket plus a publish and a subscribe
/// peer connection. Dropping it stops everything (without `leave`).
pub struct Client {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Client {
    /// Opens the signaling socket with [`ClientOptions::default`].
    pub async fn connect(ws_url: &str) -> Result<Client, ClientError> {
        Self::connect_with(ws_url, ClientOptions::default()).await
    }

    /// Opens the signaling socket.
    pub async fn connect_with(ws_url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let connect = tokio_tungstenite::connect_async_with_config(
            ws_url,
            Some(crate::signaling::websocket_config()),
            false,
        );
        let (ws, _response) = match tokio::time::timeout(options.timeout, connect).await {
            Ok(result) => result.map_err(|e| ClientError::Connect {
                url: ws_url.to_owned(),
                source: Box::new(e),
            })?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: format!("the WebSocket connection to {ws_url}"),
                    waited_ms: options.timeout.as_millis(),
                    snapshot: String::new(),
                })
            }
        };
        let (sink, stream) = ws.split();
        let (outbound_tx, outbound_rx) = mpsc::unbounded_channel();
        let shared = Shared::new(options, outbound_tx);
        let writer = tokio::spawn(write_loop(sink, outbound_rx));
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), stream));
        Ok(Client {
            shared,
            reader,
            writer,
        })
    }

    /// Sends any text frame, valid or not (for bad-input tests).
    pub async fn send_text(&self, text: String) -> Result<(), ClientError> {
        self.shared.send_text(text)
    }

    /// Sends one protocol message as is.
    pub async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.shared.send_text(serde_json::to_string(msg)?)
    }

    /// Joins `room`; returns `joined`, or the server's `error` as [`ClientError::Server`].
    pub async fn join(&self, room: &str, name: &str, role: Role) -> Result<Joined, ClientError> {
        let from = self.message_count();
        self.send(&ClientMessage::Join {
            room: room.to_owned(),
            name: name.to_owned(),
            role: Some(role),
            token: None,
            mode: None,
        })
        .await?;
        let is_reply = |m: &ServerMessage| {
            matches!(
                m,
                ServerMessage::Joined { .. } | ServerMessage::Error { .. }
            )
        };
        match self
            .wait_message(from, self.shared.options.timeout, "joined", is_reply)
            .await?
        {
            ServerMessage::Joined {
                room,
                peer_id,
                role,
                peers,
                ice_servers,
                ..
            } => Ok(Joined {
                room,
                peer_id,
                role,
                peers,
                ice_servers,
            }),
            ServerMessage::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Err(ClientError::State(format!(
                "unexpected reply to join: {other:?}"
            ))),
        }
    }

    /// Publishes one VP8 and/or one Opus track: offers, applies the answer,
    /// then sends synthetic RTP in the background (from when the connection
    /// is up) until the client is closed or dropped.
    pub async fn publish(&self, opts: PublishOptions) -> Result<(), ClientError> {
        let peer_id = self.peer_id().ok_or_else(|| {
            ClientError::State("publish needs a joined session: call join first".into())
        })?;
        if !opts.audio && !opts.video {
            return Err(ClientError::State(
                "nothing to publish: enable audio or video".into(),
            ));
        }
        if opts.simulcast && (!opts.video || opts.source != media::MediaSource::Synthetic) {
            return Err(ClientError::State(
                "simulcast needs video from the synthetic source".into(),
            ));
        }
        if lock(&self.shared.publish).pc.is_some() {
            return Err(ClientError::State("already publishing".into()));
        }
        // Bound before offering, so a port in use fails the publish.
        let mut relay_sockets = match opts.source {
            media::MediaSource::Synthetic => None,
            media::MediaSource::RtpUdp {
                video_port,
                audio_port,
            } => {
                let ip = self.shared.options.bind_ip;
                let bind = |port: u16| async move {
                    tokio::net::UdpSocket::bind((ip, port)).await.map_err(|e| {
                        ClientError::State(format!("cannot receive RTP on {ip}:{port}: {e}"))
                    })
                };
                Some((Some(bind(video_port).await?), Some(bind(audio_port).await?)))
            }
        };
        let pc = self.new_peer_connection(PcKind::Publish).await?;

        let mut media = Vec::new();
        let kinds = [
            (opts.video, RtpCodecKind::Video),
            (opts.audio, RtpCodecKind::Audio),
        ];
        for (_, kind) in kinds.into_iter().filter(|(on, _)| *on) {
            let local = Arc::new(if opts.simulcast && kind == RtpCodecKind::Video {
                LocalMedia::simulcast(&peer_id)
            } else {
                LocalMedia::new(kind, &peer_id)
            });
            let sender = pc
                .add_track(Arc::clone(&local.track) as Arc<dyn TrackLocal>)
                .await
                .map_err(ClientError::webrtc("adding a track"))?;
            self.shared
                .add_published_layers(&local.track_id, &local.layers);
            media.push((local, sender));
        }
        let offer = pc
            .create_offer(None)
            .await
            .map_err(ClientError::webrtc("creating the publish offer"))?;
        pc.set_local_description(offer)
            .await
            .map_err(ClientError::webrtc("setting the publish offer"))?;
        let mut sdp = local_sdp(pc.as_ref()).await?;
        if let Some(munge) = self.shared.options.munge_offer {
            sdp = munge(&sdp);
        }

        let before = self.snapshot();
        let (errors, client_errors) = (before.errors.len(), before.client_errors.len());
        let msg = ClientMessage::Offer {
            pc: PcKind::Publish,
            sdp: sdp.clone(),
            sources: Default::default(),
        };
        self.shared.send_description(PcKind::Publish, &msg, &sdp)?;
        let snap = self
            .wait_for(self.shared.options.timeout, "the publish answer", |s| {
                s.publish_answered
                    || s.errors.len() > errors
                    || s.client_errors.len() > client_errors
                    || s.closed_by_server
            })
            .await?;
        if !snap.publish_answered {
            // Refused: forget this connection so a later publish (e.g. after
            // a promotion) starts afresh.
            let refused = std::mem::take(&mut *lock(&self.shared.publish)).pc;
            if let Some(pc) = refused {
                close_peer_connections(vec![pc]).await;
            }
            if let Some((code, message)) = snap.errors.get(errors) {
                return Err(ClientError::Server {
                    code: *code,
                    message: message.clone(),
                });
            }
            if let Some(e) = snap.client_errors.get(client_errors) {
                return Err(ClientError::State(e.clone()));
            }
            return Err(ClientError::Closed);
        }

        let keyframe_wanted = Arc::new(Notify::new());
        for (local, sender) in media {
            let payload_type = negotiated_payload_type(sender.as_ref(), local.kind).await;
            let relay = relay_sockets
                .as_mut()
                .and_then(|(video, audio)| match local.kind {
                    RtpCodecKind::Video => video.take(),
                    _ => audio.take(),
                });
            if !local.layers.is_empty() {
                let marks = simulcast::layer_marks(pc.as_ref(), sender.as_ref()).await?;
                for layer in &local.layers {
                    let stream =
                        simulcast::layer_stream(layer, &opts, payload_type, &peer_id, &marks);
                    let sending =
                        media::run_sender(Arc::clone(&self.shared), Arc::clone(&local), stream);
                    self.shared.track_task(tokio::spawn(sending));
                }
            } else if let Some(socket) = relay {
                let relaying = media::run_udp_relay(
                    Arc::clone(&self.shared),
                    Arc::clone(&local),
                    payload_type,
                    socket,
                );
                self.shared.track_task(tokio::spawn(relaying));
            } else {
                let (pacing, kind_name) = match local.kind {
                    RtpCodecKind::Video => (Pacing::video(&opts), "video"),
                    _ => (Pacing::audio(&opts), "audio"),
                };
                let stream = media::SyntheticStream::single(
                    &local,
                    payload_type,
                    pacing,
                    tag::stream_hash(&peer_id, kind_name),
                    Arc::clone(&keyframe_wanted),
                );
                let sending =
                    media::run_sender(Arc::clone(&self.shared), Arc::clone(&local), stream);
                self.shared.track_task(tokio::spawn(sending));
            }
            let reading = media::run_rtcp_reader(
                Arc::clone(&self.shared),
                local,
                Arc::clone(&keyframe_wanted),
            );
            self.shared.track_task(tokio::spawn(reading));
        }
        Ok(())
    }

    /// Sends `leave` (the server then closes the socket).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.send(&ClientMessage::Leave).await
    }

    /// Sends a PLI on every live subscribe-side video track; returns how many.
    pub async fn request_keyframes(&self) -> Result<usize, ClientError> {
        let mut sent = 0;
        for track in self.shared.remote_tracks() {
            let (handle, ssrc) = {
                let t = lock(&track);
                let info = &t.account.info;
                if info.kind != "video" || info.ended || info.ssrc == 0 {
                    continue;
                }
                (Arc::clone(&t.handle), t.account.info.ssrc)
            };
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            handle
                .write_rtcp(vec![Box::new(pli)])
                .await
                .map_err(ClientError::webrtc("sending a PLI"))?;
            sent += 1;
        }
        Ok(sent)
    }

    /// This participant's id, once joined.
    pub fn peer_id(&self) -> Option<String> {
        self.snapshot().peer_id
    }

    /// Packet counters so far (see [`MediaCounters`]).
    pub fn media_counters(&self) -> MediaCounters {
        self.shared.media_counters()
    }

    /// Everything observed so far.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// How many server messages arrived so far (an index for [`Client::wait_message`]).
    pub fn message_count(&self) -> usize {
        self.shared.message_count()
    }

    /// Waits until `pred` holds, re-evaluating on every observed change; on
    /// timeout the error names `what` and carries the last snapshot's summary.
    pub async fn wait_for<F: Fn(&Snapshot) -> bool>(
        &self,
        deadline: Duration,
        what: &str,
        pred: F,
    ) -> Result<Snapshot, ClientError> {
        let mut changes = self.shared.subscribe_changes();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            changes.borrow_and_update();
            let snap = self.snapshot();
            if pred(&snap) {
                return Ok(snap);
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
                _ = tokio::time::sleep_until(until) => {
                    let snap = self.snapshot();
                    if pred(&snap) {
                        return Ok(snap);
                    }
                    return Err(ClientError::Timeout {
                        what: what.to_owned(),
                        waited_ms: deadline.as_millis(),
                        snapshot: snap.summary(),
                    });
                }
            }
        }
    }

    /// The first server message at index `from` or later that matches `pred`.
    pub async fn wait_message(
        &self,
        from: usize,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&ServerMessage) -> bool,
    ) -> Result<ServerMessage, ClientError> {
        let find = |s: &Snapshot| s.messages.iter().skip(from).find(|m| pred(m)).cloned();
        let snap = self.wait_for(deadline, what, |s| find(s).is_some()).await?;
        find(&snap).ok_or_else(|| ClientError::State(format!("{what} vanished")))
    }

    /// The first server `error` at message index `from` or later.
    pub async fn next_error(
        &self,
        from: usize,
        deadline: Duration,
    ) -> Result<(ErrorCode, String), ClientError> {
        let is_error = |m: &ServerMessage| matches!(m, ServerMessage::Error { .. });
        match self
            .wait_message(from, deadline, "an error message", is_error)
            .await?
        {
            ServerMessage::Error { code, message } => Ok((code, message)),
            other => Err(ClientError::State(format!("not an error: {other:?}"))),
        }
    }

    /// Stops media and closes both peer connections but keeps the WebSocket
    /// open, as a client whose network path to the media server broke.
    pub async fn close_media(&self) {
        abort_tasks(&self.shared);
        close_peer_connections(take_peer_connections(&self.shared)).await;
    }

    /// Closes cleanly: stops media, closes both peer connections, then the
    /// WebSocket with a close frame (no `leave`; send it first if wanted).
    pub async fn close(mut self) {
        if !self.begin_shutdown() {
            return;
        }
        abort_tasks(&self.shared);
        close_peer_connections(take_peer_connections(&self.shared)).await;
        self.shared.send_close();
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut self.writer).await;
        self.writer.abort();
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    /// Drops the WebSocket without `leave` or a close frame (as a crashed
    /// client would), and closes both peer connections.
    pub async fn close_abruptly(mut self) {
        if !self.begin_shutdown() {
            return;
        }
        self.reader.abort();
        self.writer.abort();
        let _ = (&mut self.reader).await;
        let _ = (&mut self.writer).await;
        abort_tasks(&self.shared);
        close_peer_connections(take_peer_connections(&self.shared)).await;
    }

    /// Marks the client shut and stops its background work; `false` when it
    /// already was (close, close_abruptly and Drop each run once).
    fn begin_shutdown(&self) -> bool {
        if self
            .shared
            .shut
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return false;
        }
        self.shared.shutdown.send_replace(true);
        true
    }

    async fn new_peer_connection(
        &self,
        kind: PcKind,
    ) -> Result<Arc<dyn PeerConnection>, ClientError> {
        new_peer_connection(&self.shared, kind).await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.begin_shutdown() {
            return;
        }
        self.reader.abort();
        self.writer.abort();
        abort_tasks(&self.shared);
        let pcs = take_peer_connections(&self.shared);
        // A peer connection's driver keeps running until `close`; it needs a runtime.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_peer_connections(pcs));
        }
    }
}

fn abort_tasks(shared: &Shared) {
    for task in lock(&shared.tasks).drain(..) {
        task.abort();
    }
}

fn take_peer_connections(shared: &Shared) -> Vec<Arc<dyn PeerConnection>> {
    [PcKind::Publish, PcKind::Subscribe]
        .into_iter()
        .filter_map(|kind| lock(shared.slot(kind)).pc.take())
        .collect()
}

async fn close_peer_connections(pcs: Vec<Arc<dyn PeerConnection>>) {
    for pc in pcs {
        if let Err(e) = tokio::time::timeout(CLOSE_GRACE, pc.close())
            .await
            .unwrap_or(Ok(()))
        {
            tracing::debug!(error = %e, "closing a peer connection");
        }
    }
}

/// The payload type the answer kept for the sender's codec.
async fn negotiated_payload_type(sender: &dyn RtpSender, kind: RtpCodecKind) -> u8 {
    let fallback = match kind {
        RtpCodecKind::Video => peer::VP8_PAYLOAD_TYPE,
        _ => peer::OPUS_PAYLOAD_TYPE,
    };
    match sender.get_parameters().await {
        Ok(params) => params
            .rtp_parameters
            .codecs
            .first()
            .map_or(fallback, |c| c.payload_type),
        Err(e) => {
            tracing::warn!(error = %e, "no sender parameters; using the offered payload type");
            fallback
        }
    }
}
