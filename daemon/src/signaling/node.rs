//! `/cluster/control`: other nodes of the cluster ask this one about the
//! rooms it serves (a WebSocket presenting the cluster secret, one JSON
//! control request per text frame, one response each). Only the requests
//! an operator's node forwards are answered, and only for this node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use sfu_proto::control::{ControlError, ErrorCode, Request, Response};

use super::AppState;
use crate::cluster::remote::{NODE_HEADER, SECRET_HEADER};
use crate::control::forward::{self, Reach};
use crate::control::handler;

/// The largest request read.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a node's connection may sit without a request.
const IDLE: Duration = Duration::from_secs(10);

pub(super) async fn control(
    ws: WebSocketUpgrade,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let presented = headers.get(SECRET_HEADER).map(|s| s.as_bytes());
    if !presented.is_some_and(|s| state.cluster.authenticates(s)) {
        tracing::warn!(%remote, "node request refused: no or wrong cluster secret");
        return (axum::http::StatusCode::FORBIDDEN, "wrong cluster secret\n").into_response();
    }
    let node = headers
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    ws.max_message_size(MAX_REQUEST)
        .read_buffer_size(super::READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, state, node))
        .into_response()
}

async fn serve(mut socket: WebSocket, state: Arc<AppState>, node: String) {
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(IDLE, socket.recv()).await {
        let Message::Text(text) = frame else {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            continue;
        };
        let response = match serde_json::from_str::<Request>(text.as_str()) {
            Ok(request) if forward::answers_nodes(&request) => {
                tracing::debug!(%node, ?request, "request from another node");
                handler::handle_within(&state.control, request, Reach::ThisNode).await
            }
            Ok(_) => Response::Error(ControlError::new(
                ErrorCode::BadRequest,
                "nodes forward only rooms list, rooms show|close, peers kick|role and record start|stop",
            )),
            Err(e) => Response::Error(ControlError::new(
                ErrorCode::BadRequest,
                format!("not a control request: {e}"),
            )),
        };
        let Ok(json) = serde_json::to_string(&response) else {
            break;
        };
        if socket.send(Message::Text(json.into())).await.is_err() {
            break;
        }
    }
}
