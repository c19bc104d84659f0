//! A client's session relayed to the node of the cluster that serves its
//! room: the client keeps its one WebSocket to this node, this node opens
//! one to the owner's `/ws` (presenting the cluster secret and the
//! client's address) and copies text frames both ways. The owner runs the
//! session as its own, so its answers carry its candidates and media flows
//! straight between the client and the owner; this node only relays
//! signaling.
//!
//! A join the owner refuses with `room_elsewhere` (the room was placed on
//! the owner but another node took it first) is relayed once more, to the
//! node that holds it. When the owner's socket breaks without a goodbye
//! (the node died), the client is told `room_moved` and joins again; an
//! owner that cannot be reached at all is `room_unavailable`.
//!
//! The same endpoint can carry a cascade later: a node relaying a
//! publisher's tracks to subscribers of its own joins the owner as a
//! listener through this path (docs/cluster.md).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sfu_proto::signaling::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message as Upstream;
use tracing::{debug, info};

use super::AppState;
use crate::cluster::remote::{first_answer, NodeSocket as Owner};
use crate::cluster::{Claim, Placement};

pub use crate::cluster::remote::{CLIENT_HEADER, NODE_HEADER, SECRET_HEADER};

/// How long the owner has to accept the relayed socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the owner has to answer the join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session goes.
pub(super) struct Target {
    /// The owner's id.
    pub node_id: String,
    /// The owner's signaling URL (`ws://host:port`).
    pub url: String,
    /// The room.
    pub room: String,
    /// The client's join, as it sent it.
    pub join: String,
}

/// How a relayed session ends for the client.
enum End {
    /// The client left or went away: nothing to tell it.
    ClientGone,
    /// The owner closed the session (its goodbye was forwarded).
    OwnerClosed,
    /// Tell the client this, then close.
    Tell(ErrorCode, String),
}

/// Relays the session until either side ends it.
pub(super) async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    state: Arc<AppState>,
    client: IpAddr,
    mut target: Target,
) {
    let _counted = state.cluster.relayed();
    let mut hops = 0;
    let owner = loop {
        hops += 1;
        match open(&state, &target, client).await {
            Ok((owner, first)) => {
                let moved = hops < 2 && is_elsewhere(&first);
                if !moved {
                    if sink.send(Message::Text(first.into())).await.is_err() {
                        return;
                    }
                    break owner;
                }
                // Taken by another node between our placement and the
                // owner's claim: relay to the holder.
                match state.rooms.place(&target.room, Placement::Anywhere).await {
                    Ok(Claim::Elsewhere {
                        node_id,
                        url: Some(url),
                    }) => {
                        target.node_id = node_id;
                        target.url = url;
                    }
                    _ => {
                        let _ = sink.send(Message::Text(first.into())).await;
                        goodbye(&mut sink, None).await;
                        return;
                    }
                }
            }
            Err(why) => {
                state.cluster.relay_failed();
                info!(node = %target.node_id, url = %target.url, room = %target.room, %why, "cannot reach the node serving the room");
                let message = format!(
                    "the node serving room `{}` ({}) cannot be reached: try again in a few seconds",
                    target.room, target.node_id
                );
                goodbye(&mut sink, Some((ErrorCode::RoomUnavailable, message))).await;
                return;
            }
        }
    };
    debug!(node = %target.node_id, room = %target.room, "session relayed to the owner");
    match pump(&mut sink, &mut stream, owner, &state).await {
        End::ClientGone | End::OwnerClosed => {}
        End::Tell(code, message) => {
            if code == ErrorCode::RoomMoved {
                state.cluster.relay_failed();
            }
            goodbye(&mut sink, Some((code, message))).await;
        }
    }
}

/// Connects to the owner, sends the join and returns its first answer.
async fn open(
    state: &AppState,
    target: &Target,
    client: IpAddr,
) -> Result<(Owner, String), String> {
    let connect =
        state
            .cluster
            .open_node_socket(&target.url, "/ws", Some(client), super::HARD_FRAME_LIMIT);
    let mut owner = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())??;
    let first = tokio::time::timeout(JOIN_TIMEOUT, first_answer(&mut owner, target.join.clone()))
        .await
        .map_err(|_| "no answer to the join within 10 s".to_owned())??;
    Ok((owner, first))
}

fn is_elsewhere(text: &str) -> bool {
    matches!(
        serde_json::from_str::<ServerMessage>(text),
        Ok(ServerMessage::Error {
            code: ErrorCode::RoomElsewhere,
            ..
        })
    )
}

/// Copies frames both ways until one side ends.
async fn pump(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    owner: Owner,
    state: &AppState,
) -> End {
    let (mut up, mut down) = owner.split();
    let idle_timeout = state.gate.idle_timeout();
    let mut pings = tokio::time::interval(idle_timeout / 3);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.tick().await;
    let mut heard = tokio::time::Instant::now();
    let shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = up.close().await;
                return End::Tell(ErrorCode::ShuttingDown, "the server is shutting down".into());
            }
            frame = stream.next() => {
                heard = tokio::time::Instant::now();
                let forward = match frame {
                    Some(Ok(Message::Text(t))) => Upstream::Text(t.as_str().into()),
                    Some(Ok(Message::Binary(b))) => Upstream::Binary(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        let _ = up.close().await;
                        return End::ClientGone;
                    }
                };
                if up.send(forward).await.is_err() {
                    return owner_gone();
                }
            }
            frame = down.next() => match frame {
                Some(Ok(Upstream::Text(t))) => {
                    if sink.send(Message::Text(t.as_str().into())).await.is_err() {
                        let _ = up.close().await;
                        return End::ClientGone;
                    }
                }
                Some(Ok(Upstream::Close(frame))) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: f.code.into(),
                        reason: Utf8Bytes::from(f.reason.as_str()),
                    });
                    let _ = sink.send(Message::Close(frame)).await;
                    return End::OwnerClosed;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return owner_gone(),
            },
            _ = pings.tick() => {
                if heard.elapsed() >= idle_timeout {
                    debug!("nothing heard from the relayed client: closing");
                    let _ = up.close().await;
                    return End::ClientGone;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    let _ = up.close().await;
                    return End::ClientGone;
                }
            }
        }
    }
}

fn owner_gone() -> End {
    End::Tell(
        ErrorCode::RoomMoved,
        "the node serving the room went away: join again".into(),
    )
}

/// Tells the client why (if there is a why) and closes its socket.
async fn goodbye(sink: &mut SplitSink<WebSocket, Message>, why: Option<(ErrorCode, String)>) {
    if let Some((code, message)) = why {
        let _ = super::session::send(sink, &ServerMessage::Error { code, message }).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: Utf8Bytes::from_static("bye"),
        })))
        .await;
}
