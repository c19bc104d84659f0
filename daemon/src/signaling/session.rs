//! One WebSocket session: parse each frame, check it fits the session's
//! state, hand it to the room, write back what the room sends.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sfu_proto::signaling::{
    ClientMessage, ErrorCode, PcKind, ServerMessage, TrackSource, MAX_FRAME_BYTES,
};
use tokio::sync::mpsc;
use tracing::{debug, info_span, Instrument};

use super::{gate, relay, AppState};
use crate::cluster::{Claim, Placement};
use crate::rooms::{Membership, Outbound, Refusal};

/// Messages a room may queue for one session before it counts as stuck.
const MAILBOX: usize = 256;

/// Publish offers a session may send per second (bursts of twice as many).
/// Each costs the media loop up to tens of milliseconds to apply (see
/// `media::sdp_limits`); a browser renegotiates when it adds a track.
const OFFERS_PER_SECOND: u32 = 2;
/// Tracks an offer's `sources` may name.
const MAX_SOURCES: usize = 16;

/// What to do after handling a message.
enum Flow {
    Continue,
    Close,
    /// The room is served by another node: relay the session there.
    Relay(relay::Target),
}

/// Where a session comes from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    /// The client's address (as the relaying node saw it, for a relayed
    /// session).
    pub remote: SocketAddr,
    /// Whether another node of the cluster relays this session: its room
    /// is placed here, never relayed further.
    pub relayed: bool,
}

pub(super) async fn run(socket: WebSocket, state: Arc<AppState>, origin: Origin) {
    let remote = origin.remote;
    let span =
        info_span!("session", %remote, relayed = origin.relayed, peer = tracing::field::Empty);
    let now = std::time::Instant::now();
    let limit = gate::RateLimit::new(now, state.gate.messages_per_second());
    Session {
        state,
        remote,
        relayed: origin.relayed,
        joined: None,
        limit,
        offers: gate::RateLimit::new(now, OFFERS_PER_SECOND),
    }
    .serve(socket)
    .instrument(span)
    .await
}

struct Session {
    state: Arc<AppState>,
    remote: SocketAddr,
    relayed: bool,
    joined: Option<Membership>,
    limit: gate::RateLimit,
    offers: gate::RateLimit,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code,
        message: message.into(),
    }
}

impl Session {
    async fn serve(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(MAILBOX);
        let shutdown = self.state.shutdown.clone();
        let mut close: Option<Option<(ErrorCode, String)>> = None;
        // A socket that never joins, or a peer that went away without
        // closing, must not hold a connection (and its memory) for ever.
        let join_timeout = self.state.gate.join_timeout();
        let join_by = tokio::time::Instant::now() + join_timeout;
        let idle_timeout = self.state.gate.idle_timeout();
        let mut pings = tokio::time::interval(idle_timeout / 3);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pings.tick().await;
        let mut heard = tokio::time::Instant::now();
        // A frame that broke the protocol: the RFC 6455 close code to send.
        let mut violation: Option<(u16, &'static str)> = None;
        let mut relay_to = None;
        loop {
            tokio::select! {
                biased;
                out = out_rx.recv() => match out {
                    Some(Outbound::Message(m)) => {
                        if send(&mut sink, &m).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(why)) => {
                        // The room already removed us.
                        self.joined = None;
                        close = Some(why);
                        break;
                    }
                    None => break,
                },
                () = shutdown.cancelled() => {
                    close = Some(Some((ErrorCode::ShuttingDown, "the server is shutting down".into())));
                    break;
                }
                _ = tokio::time::sleep_until(join_by), if self.joined.is_none() => {
                    let why = format!("no join within {} s; closing", join_timeout.as_secs());
                    close = Some(Some((ErrorCode::NotJoined, why)));
                    break;
                }
                _ = pings.tick() => {
                    if heard.elapsed() >= idle_timeout {
                        debug!("nothing heard from the client, not even a pong: closing");
                        close = Some(None);
                        break;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                frame = stream.next() => {
                    heard = tokio::time::Instant::now();
                    let text = match frame {
                        None | Some(Ok(Message::Close(_))) => break,
                        Some(Err(e)) => {
                            violation = close_code_for(e);
                            break;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            let e = error(ErrorCode::BadRequest, "binary frames are not accepted: send JSON text");
                            if send(&mut sink, &e).await.is_err() { break; }
                            continue;
                        }
                        Some(Ok(Message::Text(t))) => t,
                    };
                    match self.on_text(&text, &out_tx).await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Close) => {
                            close = Some(None);
                            break;
                        }
                        Ok(Flow::Relay(target)) => {
                            relay_to = Some(target);
                            break;
                        }
                        Err(r) => {
                            self.state.gate.count_refusal(r.code);
                            debug!(code = %r.code, message = %r.message, "request refused");
                            if send(&mut sink, &error(r.code, r.message)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        }
        if let Some(m) = self.joined.take() {
            m.room.leave(m.peer).await;
        }
        if let Some(target) = relay_to {
            relay::run(sink, stream, self.state, self.remote.ip(), target).await;
            return;
        }
        if let Some((code, reason)) = violation {
            debug!(
                code,
                reason, "closing the WebSocket for a protocol violation"
            );
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })))
                .await;
            return;
        }
        if let Some(why) = close {
            // Deliver what the room queued before the goodbye (e.g. peer_left).
            while let Ok(Outbound::Message(m)) = out_rx.try_recv() {
                let _ = send(&mut sink, &m).await;
            }
            if let Some((code, message)) = why {
                let _ = send(&mut sink, &error(code, message)).await;
            }
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: Utf8Bytes::from_static("bye"),
                })))
                .await;
        }
    }

    async fn on_text(
        &mut self,
        text: &str,
        out_tx: &mpsc::Sender<Outbound>,
    ) -> Result<Flow, Refusal> {
        if !self.limit.allow(
            std::time::Instant::now(),
            self.state.gate.messages_per_second(),
        ) {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                "too many messages: this one was dropped",
            ));
        }
        if text.len() > MAX_FRAME_BYTES {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "frame of {} bytes is over the {} byte limit",
                    text.len(),
                    MAX_FRAME_BYTES
                ),
            ));
        }
        let msg: ClientMessage = serde_json::from_str(text).map_err(|e| {
            Refusal::new(ErrorCode::BadRequest, format!("cannot parse message: {e}"))
        })?;
        let not_joined = || Refusal::new(ErrorCode::NotJoined, "send `join` first");
        match msg {
            ClientMessage::Join {
                room,
                name,
                role,
                token,
                mode,
            } => {
                if self.joined.is_some() {
                    return Err(Refusal::new(
                        ErrorCode::AlreadyJoined,
                        "this socket already joined a room",
                    ));
                }
                if self.state.draining.is_cancelled() {
                    return Err(Refusal::new(
                        ErrorCode::ShuttingDown,
                        "the server is shutting down",
                    ));
                }
                if !self.state.gate.join_allowed(self.remote.ip()) {
                    return Err(Refusal::new(
                        ErrorCode::RateLimited,
                        "too many joins from your address: wait a moment",
                    ));
                }
                let admission = self
                    .state
                    .gate
                    .admit(&room, &name, role.unwrap_or_default(), token.as_deref())
                    .inspect_err(|r| {
                        // Logged without the token.
                        tracing::info!(%room, code = %r.code, "join refused");
                    })?;
                let placement = if self.relayed {
                    Placement::Here
                } else {
                    Placement::Anywhere
                };
                // The token's room, if it names one, not the message's.
                let room = admission.room.clone();
                match self.state.rooms.place(&room, placement).await? {
                    Claim::Here | Claim::Unclaimed => {}
                    Claim::Elsewhere {
                        node_id,
                        url: Some(url),
                    } if !self.relayed => {
                        return Ok(Flow::Relay(relay::Target {
                            node_id,
                            url,
                            room,
                            join: text.to_owned(),
                        }));
                    }
                    Claim::Elsewhere { node_id, url: None } if !self.relayed => {
                        return Err(Refusal::new(
                            ErrorCode::RoomUnavailable,
                            format!("room `{room}` is held by node {node_id}, which is not in the cluster's directory (it may have stopped; its rooms are placed again within 10 s): try again shortly"),
                        ));
                    }
                    elsewhere => {
                        if let Some((code, why)) = elsewhere.refusal(&room) {
                            return Err(Refusal::new(code, why));
                        }
                    }
                }
                let m = self
                    .state
                    .rooms
                    .join(&admission, mode, out_tx.clone())
                    .await?;
                tracing::Span::current().record("peer", tracing::field::display(m.peer));
                self.joined = Some(m);
                Ok(Flow::Continue)
            }
            ClientMessage::Offer { pc, sdp, sources } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                if pc != PcKind::Publish {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "offers are accepted only for the publish connection; the server offers the subscribe connection",
                    ));
                }
                if !self
                    .offers
                    .allow(std::time::Instant::now(), OFFERS_PER_SECOND)
                {
                    return Err(Refusal::new(
                        ErrorCode::RateLimited,
                        format!("too many offers: at most {OFFERS_PER_SECOND} a second"),
                    ));
                }
                if sources.len() > MAX_SOURCES {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("`sources` names at most {MAX_SOURCES} tracks"),
                    ));
                }
                let screens = sources
                    .into_iter()
                    .filter(|(_, s)| *s == TrackSource::Screen)
                    .map(|(t, _)| t)
                    .collect();
                m.room.offer(m.peer, sdp, screens).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Answer { pc, sdp } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                if pc != PcKind::Subscribe {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "answers are accepted only for the subscribe connection; the server answers the publish connection",
                    ));
                }
                m.room.answer(m.peer, sdp).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Candidate { pc, candidate } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                m.room.candidate(m.peer, pc, candidate).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Signal { to, data } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                m.room.signal(m.peer, to, data).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::TrackSettings {
                track,
                paused,
                max_width,
                max_height,
                max_layer,
            } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                let prefs = crate::media::TrackPrefs {
                    paused,
                    max_width,
                    max_height,
                    max_layer,
                };
                m.room.track_settings(m.peer, track, prefs).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Mute { kind, muted } => {
                let m = self.joined.as_ref().ok_or_else(not_joined)?;
                m.room.mute(m.peer, kind, muted).await?;
                Ok(Flow::Continue)
            }
            ClientMessage::Leave => {
                if let Some(m) = self.joined.take() {
                    m.room.leave(m.peer).await;
                }
                Ok(Flow::Close)
            }
        }
    }
}

/// The close code RFC 6455 gives a frame that could not be read: 1007 for
/// text that is not UTF-8, 1009 for a message over the size limit, 1002 for
/// other protocol errors; `None` when the connection itself broke.
fn close_code_for(error: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    match error.into_inner().downcast_ref::<WsError>()? {
        WsError::Utf8(_) => Some((1007, "text frame is not UTF-8")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some((1009, "message over 1 MiB"))
        }
        WsError::Capacity(_) | WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

pub(super) async fn send<S>(sink: &mut S, msg: &ServerMessage) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|_| ())?;
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}
