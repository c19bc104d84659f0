//! One translated client: sfud's signaling on one side, a Janus session
//! with a publisher and a subscriber handle on the other.

use super::api::JanusSession;
use super::{msid, Room, Shared};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sfu_proto::signaling::{
    CandidateInit, ClientMessage, ErrorCode, PcKind, Role, RoomMode, ServerMessage,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Runs one client's session until it leaves or either side closes.
pub(super) async fn run(ws: WebSocketStream<TcpStream>, shared: Arc<Shared>) {
    let (mut sink, mut stream) = ws.split();
    let Some((room, name, role)) = first_join(&mut stream).await else {
        return;
    };
    let (janus, events) = match JanusSession::connect(&shared.janus_url).await {
        Ok(j) => j,
        Err(e) => {
            fail(&mut sink, e).await;
            return;
        }
    };
    let feed = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let joined = enter_room(&shared, &janus, &room, feed, notes_tx).await;
    let (room_id, up) = match joined {
        Ok(r) => r,
        Err(e) => {
            fail(&mut sink, e).await;
            janus.close().await;
            return;
        }
    };
    let mut s = Session {
        sink,
        janus,
        shared: Arc::clone(&shared),
        room: room.clone(),
        room_id,
        feed,
        name,
        publisher: None,
        subscriber: None,
        offer_outstanding: false,
        waiting: up,
    };
    let welcome = ServerMessage::Joined {
        room: room.clone(),
        peer_id: feed.to_string(),
        mode: RoomMode::Sfu,
        role,
        peers: Vec::new(),
        ice_servers: Vec::new(),
    };
    if s.send(&welcome).await.is_ok() {
        if let Err(e) = s.serve(&mut stream, notes, events).await {
            tracing::debug!(%room, feed, error = %e, "translated session ended");
        }
    }
    leave_room(&shared, &room, feed).await;
    s.janus.close().await;
}

/// Waits for the client's `join`.
async fn first_join(
    stream: &mut futures_util::stream::SplitStream<WebSocketStream<TcpStream>>,
) -> Option<(String, String, Role)> {
    while let Some(Ok(frame)) = stream.next().await {
        if let Message::Text(text) = frame {
            if let Ok(ClientMessage::Join {
                room, name, role, ..
            }) = serde_json::from_str(&text)
            {
                return Some((room, name, role.unwrap_or_default()));
            }
        }
    }
    None
}

async fn fail(sink: &mut Sink, message: String) {
    tracing::warn!(%message, "Janus translation failed");
    let error = ServerMessage::Error {
        code: ErrorCode::Internal,
        message,
    };
    if let Ok(text) = serde_json::to_string(&error) {
        let _ = sink.send(Message::text(text)).await;
    }
    let _ = sink.send(Message::Close(None)).await;
}

/// Creates the Janus room on first use; registers the member; returns the
/// room id and the feeds already up.
async fn enter_room(
    shared: &Shared,
    janus: &JanusSession,
    room: &str,
    feed: u64,
    notes: mpsc::UnboundedSender<u64>,
) -> Result<(u64, Vec<u64>), String> {
    let mut rooms = shared.rooms.lock().await;
    if !rooms.contains_key(room) {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = janus.attach().await?;
        janus
            .message(
                handle,
                json!({
                    "request": "create",
                    "room": id,
                    "permanent": false,
                    "description": room,
                    "publishers": 1000,
                    "bitrate": 0,
                    "fir_freq": 0,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": false,
                }),
                None,
            )
            .await?;
        rooms.insert(
            room.to_owned(),
            Room {
                janus_id: id,
                ..Room::default()
            },
        );
    }
    let r = rooms
        .get_mut(room)
        .ok_or_else(|| "room vanished".to_owned())?;
    r.members.push((feed, notes));
    Ok((r.janus_id, r.up.clone()))
}

async fn leave_room(shared: &Shared, room: &str, feed: u64) {
    let mut rooms = shared.rooms.lock().await;
    if let Some(r) = rooms.get_mut(room) {
        r.members.retain(|(f, _)| *f != feed);
        r.up.retain(|f| *f != feed);
    }
}

struct Session {
    sink: Sink,
    janus: JanusSession,
    shared: Arc<Shared>,
    room: String,
    room_id: u64,
    feed: u64,
    name: String,
    publisher: Option<u64>,
    subscriber: Option<u64>,
    /// A subscribe offer went to the client and its answer has not come back.
    offer_outstanding: bool,
    /// Feeds up in the room that this client does not receive yet.
    waiting: Vec<u64>,
}

impl Session {
    async fn send(&mut self, msg: &ServerMessage) -> Result<(), String> {
        let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
        self.sink
            .send(Message::text(text))
            .await
            .map_err(|e| format!("client socket: {e}"))
    }

    async fn serve(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocketStream<TcpStream>>,
        mut notes: mpsc::UnboundedReceiver<u64>,
        mut events: mpsc::UnboundedReceiver<Value>,
    ) -> Result<(), String> {
        self.subscribe_waiting().await?;
        loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ClientMessage>(&text) {
                            Ok(ClientMessage::Leave) => return Ok(()),
                            Ok(msg) => self.on_client(msg).await?,
                            Err(e) => return Err(format!("unparseable client message: {e}")),
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                    Some(Ok(_)) => {}
                },
                Some(feed) = notes.recv() => {
                    if feed != self.feed && !self.waiting.contains(&feed) {
                        self.waiting.push(feed);
                    }
                    self.subscribe_waiting().await?;
                }
                Some(event) = events.recv() => self.on_janus(event).await?,
            }
        }
    }

    async fn on_client(&mut self, msg: ClientMessage) -> Result<(), String> {
        match msg {
            ClientMessage::Offer { sdp, .. } => {
                let handle = self.janus.attach().await?;
                self.publisher = Some(handle);
                let reply = self
                    .janus
                    .message(
                        handle,
                        json!({
                            "request": "joinandconfigure",
                            "ptype": "publisher",
                            "room": self.room_id,
                            "id": self.feed,
                            "display": self.name,
                            "audio": true,
                            "video": true,
                        }),
                        Some(json!({"type": "offer", "sdp": sdp})),
                    )
                    .await?;
                let answer = reply["jsep"]["sdp"]
                    .as_str()
                    .ok_or_else(|| format!("no answer from the publisher join: {reply}"))?
                    .to_owned();
                self.send(&ServerMessage::Answer {
                    pc: PcKind::Publish,
                    sdp: answer,
                })
                .await
            }
            ClientMessage::Answer { sdp, .. } => {
                let handle = self
                    .subscriber
                    .ok_or_else(|| "an answer without a subscribe offer".to_owned())?;
                self.janus
                    .message(
                        handle,
                        json!({"request": "start"}),
                        Some(json!({"type": "answer", "sdp": sdp})),
                    )
                    .await?;
                self.offer_outstanding = false;
                self.subscribe_waiting().await
            }
            ClientMessage::Candidate { pc, candidate } => {
                let handle = match pc {
                    PcKind::Publish => self.publisher,
                    PcKind::Subscribe => self.subscriber,
                };
                if let Some(handle) = handle {
                    self.janus.trickle(handle, to_janus_candidate(candidate));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_janus(&mut self, event: Value) -> Result<(), String> {
        let sender = event["sender"].as_u64();
        match event["janus"].as_str().unwrap_or_default() {
            "webrtcup" if sender.is_some() && sender == self.publisher => {
                let mut rooms = self.shared.rooms.lock().await;
                if let Some(r) = rooms.get_mut(&self.room) {
                    r.up.push(self.feed);
                    for (_, member) in &r.members {
                        let _ = member.send(self.feed);
                    }
                }
                Ok(())
            }
            "trickle" => {
                let pc = if sender.is_some() && sender == self.publisher {
                    PcKind::Publish
                } else {
                    PcKind::Subscribe
                };
                let c = &event["candidate"];
                let candidate = c["candidate"].as_str().map(|line| CandidateInit {
                    candidate: line.to_owned(),
                    sdp_mid: c["sdpMid"].as_str().map(str::to_owned),
                    sdp_m_line_index: c["sdpMLineIndex"]
                        .as_u64()
                        .and_then(|i| u16::try_from(i).ok()),
                    username_fragment: None,
                });
                self.send(&ServerMessage::Candidate { pc, candidate }).await
            }
            "hangup" => {
                tracing::debug!(feed = self.feed, reason = %event["reason"], "Janus hung up a handle");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Subscribes to the waiting feeds, unless an offer is still outstanding.
    async fn subscribe_waiting(&mut self) -> Result<(), String> {
        if self.offer_outstanding || self.waiting.is_empty() {
            return Ok(());
        }
        let feeds: Vec<u64> = std::mem::take(&mut self.waiting);
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let reply = match self.subscriber {
            None => {
                let handle = self.janus.attach().await?;
                self.subscriber = Some(handle);
                self.janus
                    .message(
                        handle,
                        json!({
                            "request": "join",
                            "ptype": "subscriber",
                            "room": self.room_id,
                            "streams": streams,
                        }),
                        None,
                    )
                    .await?
            }
            Some(handle) => {
                self.janus
                    .message(
                        handle,
                        json!({"request": "subscribe", "streams": streams}),
                        None,
                    )
                    .await?
            }
        };
        let offer = reply["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| format!("no offer for subscribing to {feeds:?}: {reply}"))?;
        let mut by_mid = HashMap::new();
        if let Some(list) = reply["plugindata"]["data"]["streams"].as_array() {
            for s in list {
                if let (Some(mid), Some(feed)) = (s["mid"].as_str(), s["feed_id"].as_u64()) {
                    by_mid.insert(mid.to_owned(), feed);
                }
            }
        }
        let sdp = msid::rewrite(offer, &by_mid);
        self.offer_outstanding = true;
        self.send(&ServerMessage::Offer {
            pc: PcKind::Subscribe,
            sdp,
        })
        .await
    }
}

fn to_janus_candidate(candidate: Option<CandidateInit>) -> Value {
    match candidate {
        None => json!({"completed": true}),
        Some(c) => {
            let mut v = json!({"candidate": c.candidate});
            if let Some(mid) = c.sdp_mid {
                v["sdpMid"] = json!(mid);
            }
            if let Some(i) = c.sdp_m_line_index {
                v["sdpMLineIndex"] = json!(i);
            }
            v
        }
    }
}
