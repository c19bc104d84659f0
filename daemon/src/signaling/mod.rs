//! Signaling: the HTTP server with the demo page and the WebSocket endpoint.
//! One task per socket ([`session`]) turns client messages into room
//! requests, strictly in order.

pub mod gate;
pub mod listener;
mod node;
mod relay;
mod session;
pub mod whip;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use sfu_proto::signaling::MAX_FRAME_BYTES;
use tokio_util::sync::CancellationToken;

use crate::rooms::RoomRegistry;

/// The demo page, embedded so the binary needs no files at run time.
const DEMO_PAGE: &str = include_str!("../../static/index.html");

/// Frames up to this size are read and answered with `too_large` when over
/// [`MAX_FRAME_BYTES`]; larger ones close the socket.
pub(crate) const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// The WebSocket read buffer. tungstenite zero-fills its whole read buffer
/// (128 KiB by default) on every read of the socket, including the reads
/// that find nothing: 6% of sfud's CPU while a burst of people joined.
/// Signaling messages are a few KiB; a larger one is read in several turns.
pub(crate) const READ_BUFFER: usize = 8 * 1024;

/// What every HTTP handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The rooms.
    pub rooms: RoomRegistry,
    /// Tokens, origins and rate limits.
    pub gate: Arc<gate::Gatekeeper>,
    /// Cancelled when the daemon begins to shut down: it takes no new
    /// joins, and `/healthz` says so.
    pub draining: CancellationToken,
    /// Cancelled when sessions must tell their peer and end.
    pub shutdown: CancellationToken,
    /// What `/metrics` samples.
    pub metrics: crate::metrics::MetricsSource,
    /// The other nodes, when this one is part of a cluster.
    pub cluster: crate::cluster::Cluster,
    /// What operators' requests act on, for other nodes' requests.
    pub control: Arc<crate::control::handler::Context>,
    /// The open WHIP sessions.
    pub whip: Arc<whip::Sessions>,
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(demo_page))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler))
        .route("/cluster/control", get(node::control))
        .route(
            "/whip/{room}",
            axum::routing::post(whip::publish).options(whip::options),
        )
        .route(
            "/whip/{room}/{session}",
            axum::routing::patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options),
        )
        .route(
            "/whep/{room}",
            axum::routing::post(whip::view).options(whip::options),
        )
        .route(
            "/whep/{room}/{session}",
            axum::routing::patch(whip::patch)
                .delete(whip::delete)
                .options(whip::options),
        )
        .with_state(Arc::new(state))
}

async fn demo_page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DEMO_PAGE))
}

async fn healthz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.draining.is_cancelled() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n",
        )
    } else {
        (axum::http::StatusCode::OK, "ok\n")
    }
}

/// A session another node of the cluster relays (it presents the cluster
/// secret) comes from the client address it names; any other from the
/// socket's peer. A wrong secret is refused.
fn relayed_from(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    remote: SocketAddr,
) -> Result<session::Origin, Box<axum::response::Response>> {
    let Some(secret) = headers.get(relay::SECRET_HEADER) else {
        return Ok(session::Origin {
            remote,
            relayed: false,
        });
    };
    if !state.cluster.authenticates(secret.as_bytes()) {
        tracing::warn!(%remote, "relayed session refused: wrong cluster secret");
        state
            .gate
            .count_refusal(sfu_proto::signaling::ErrorCode::NotAllowed);
        let refused = (axum::http::StatusCode::FORBIDDEN, "wrong cluster secret\n");
        return Err(Box::new(refused.into_response()));
    }
    let client = headers
        .get(relay::CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        .unwrap_or(remote.ip());
    let node = headers
        .get(relay::NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    tracing::debug!(%remote, %client, node, "session relayed by another node");
    Ok(session::Origin {
        remote: SocketAddr::new(client, 0),
        relayed: true,
    })
}

async fn websocket(
    ws: WebSocketUpgrade,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    State(state): State<Arc<AppState>>,
    slot: Option<axum::Extension<listener::ConnectionSlot>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !state.gate.origin_allowed(origin) {
        state
            .gate
            .count_refusal(sfu_proto::signaling::ErrorCode::NotAllowed);
        tracing::warn!(%remote, origin, "WebSocket refused: origin not in http.allowed_origins");
        return (
            axum::http::StatusCode::FORBIDDEN,
            "origin not allowed: add it to http.allowed_origins\n",
        )
            .into_response();
    }
    let origin = match relayed_from(&state, &headers, remote) {
        Ok(origin) => origin,
        Err(response) => return *response,
    };
    const { assert!(MAX_FRAME_BYTES < HARD_FRAME_LIMIT) };
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            // Counted against the connection caps while the session lasts;
            // a relayed session counts on the node its client reached.
            let held = slot.and_then(|s| s.0.take());
            let _held = held.filter(|_| !origin.relayed);
            session::run(socket, state, origin).await
        })
        .into_response()
}
