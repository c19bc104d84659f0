//! Signaling: the HTTP server with the demo page and the WebSocket endpoint.
//! One task per socket ([`session`]) turns client messages into room
//! requests, strictly in order.

pub mod gate;
pub mod listener;
mod session;

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
const HARD_FRAME_LIMIT: usize = 1024 * 1024;

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
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(demo_page))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler))
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
    const { assert!(MAX_FRAME_BYTES < HARD_FRAME_LIMIT) };
    ws.max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            // Counted against the connection caps while the session lasts.
            let _held = slot.and_then(|s| s.0.take());
            session::run(socket, state, remote).await
        })
        .into_response()
}
