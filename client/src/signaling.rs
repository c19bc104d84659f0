//! The signaling side of a client: the WebSocket reader and writer tasks,
//! and applying the server's descriptions and candidates to the two peer
//! connections strictly in arrival order.

use crate::peer::{self, PcEvents};
use crate::sdp;
use crate::shared::{lock, Outbound, Shared};
use crate::ClientError;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sfu_proto::signaling::{CandidateInit, ClientMessage, PcKind, ServerMessage};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

/// The signaling socket's settings: a read buffer of 8 KiB, not
/// tungstenite's 128 KiB, which it zero-fills on every read of the socket
/// (12% of the load generator's CPU once, when its receivers polled
/// their sockets often).
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024)
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn new_peer_connection(
    shared: &Arc<Shared>,
    kind: PcKind,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    if shared.is_shut() {
        return Err(ClientError::Closed);
    }
    let handler = Arc::new(PcEvents {
        kind,
        shared: Arc::downgrade(shared),
    });
    let pc = peer::build(
        kind,
        shared.options.bind_ip,
        shared.options.ice_keepalive,
        &shared.ice_servers(),
        handler,
    )
    .await?;
    lock(shared.slot(kind)).pc = Some(Arc::clone(&pc));
    shared.set_pc_state(kind, "new".to_owned());
    Ok(pc)
}

pub(crate) async fn local_sdp(pc: &dyn PeerConnection) -> Result<String, ClientError> {
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| ClientError::State("no local description after setting it".into()))
}

pub(crate) async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
) {
    while let Some(frame) = outbound.recv().await {
        match frame {
            Outbound::Text(text) => {
                if let Err(e) = sink.send(Message::text(text)).await {
                    tracing::debug!(error = %e, "signaling socket write failed");
                    break;
                }
            }
            Outbound::Close => {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.close().await;
                break;
            }
        }
    }
}

pub(crate) async fn read_loop(shared: Arc<Shared>, mut stream: SplitStream<Ws>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = shutdown.changed() => return,
        };
        match next {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(msg) => {
                    shared.record_message(&msg);
                    dispatch(&shared, msg).await;
                }
                Err(e) => shared.client_error(format!("unparseable server message {text:?}: {e}")),
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                if !shared.is_shut() {
                    shared.set_closed_by_server();
                    // Completes the closing handshake the server started.
                    shared.send_close();
                }
                return;
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Applies one server message to the peer connections, in arrival order.
async fn dispatch(shared: &Arc<Shared>, msg: ServerMessage) {
    let result = match msg {
        ServerMessage::Answer {
            pc: PcKind::Publish,
            sdp,
        } => apply_publish_answer(shared, sdp).await,
        ServerMessage::Offer {
            pc: PcKind::Subscribe,
            sdp,
        } => answer_subscribe_offer(shared, sdp).await,
        ServerMessage::Candidate {
            pc,
            candidate: Some(candidate),
        } => add_remote_candidate(shared, pc, candidate).await,
        ServerMessage::Layers { track, active } => {
            shared.set_layers_active(&track, &active);
            Ok(())
        }
        ServerMessage::Answer { pc, .. } | ServerMessage::Offer { pc, .. } => {
            Err(ClientError::State(format!(
                "the server sent a description for the {pc:?} connection, which it must not"
            )))
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        shared.client_error(error_chain(&e));
    }
}

async fn apply_publish_answer(shared: &Arc<Shared>, sdp: String) -> Result<(), ClientError> {
    let pc = lock(&shared.publish)
        .pc
        .clone()
        .ok_or_else(|| ClientError::State("a publish answer without a publish offer".into()))?;
    let answer = RTCSessionDescription::answer(sdp)
        .map_err(ClientError::webrtc("parsing the publish answer"))?;
    pc.set_remote_description(answer)
        .await
        .map_err(ClientError::webrtc("applying the publish answer"))?;
    flush_remote_candidates(shared, PcKind::Publish, pc.as_ref()).await;
    shared.set_publish_answered();
    shared.publish_accepted();
    Ok(())
}

async fn answer_subscribe_offer(shared: &Arc<Shared>, sdp: String) -> Result<(), ClientError> {
    let existing = lock(&shared.subscribe).pc.clone();
    let pc = match existing {
        Some(pc) => pc,
        None => new_peer_connection(shared, PcKind::Subscribe).await?,
    };
    let offer = RTCSessionDescription::offer(sdp.clone())
        .map_err(ClientError::webrtc("parsing the subscribe offer"))?;
    pc.set_remote_description(offer)
        .await
        .map_err(ClientError::webrtc("applying the subscribe offer"))?;
    flush_remote_candidates(shared, PcKind::Subscribe, pc.as_ref()).await;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(ClientError::webrtc("creating the subscribe answer"))?;
    pc.set_local_description(answer)
        .await
        .map_err(ClientError::webrtc("setting the subscribe answer"))?;
    let local = local_sdp(pc.as_ref()).await?;
    let msg = ClientMessage::Answer {
        pc: PcKind::Subscribe,
        sdp: local.clone(),
    };
    shared.send_description(PcKind::Subscribe, &msg, &local)?;
    shared.subscribe_offer_answered(sdp::offered_tracks(&sdp));
    Ok(())
}

/// The remote description is set: add the candidates that waited for it.
async fn flush_remote_candidates(shared: &Shared, kind: PcKind, pc: &dyn PeerConnection) {
    let pending = {
        let mut slot = lock(shared.slot(kind));
        slot.remote_set = true;
        std::mem::take(&mut slot.pending_remote)
    };
    for candidate in pending {
        if let Err(e) = pc
            .add_ice_candidate(sdp::to_rtc_candidate(&candidate))
            .await
        {
            shared.client_error(format!(
                "{kind:?} candidate {:?} rejected: {e}",
                candidate.candidate
            ));
        }
    }
}

async fn add_remote_candidate(
    shared: &Shared,
    kind: PcKind,
    candidate: CandidateInit,
) -> Result<(), ClientError> {
    let pc = {
        let mut slot = lock(shared.slot(kind));
        match (&slot.pc, slot.remote_set) {
            (Some(pc), true) => Arc::clone(pc),
            _ => {
                slot.pending_remote.push(candidate);
                return Ok(());
            }
        }
    };
    pc.add_ice_candidate(sdp::to_rtc_candidate(&candidate))
        .await
        .map_err(ClientError::webrtc("adding a server candidate"))
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
