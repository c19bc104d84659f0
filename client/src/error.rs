//! Errors of the client.

use sfu_proto::signaling::ErrorCode;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The cause.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The WebSocket is closed (by the server, by a network error or by `close`).
    #[error("the signaling socket is closed")]
    Closed,
    /// The server answered with an `error` message.
    #[error("server error {code}: {message}")]
    Server {
        /// Its stable code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// A wait ran past its deadline; `snapshot` is what the client saw last.
    #[error("timed out after {waited_ms} ms waiting for {what}; last state:\n{snapshot}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited_ms: u128,
        /// [`crate::Snapshot::summary`] at the deadline.
        snapshot: String,
    },
    /// A WebRTC operation failed.
    #[error("webrtc: {context}")]
    WebRtc {
        /// What the client was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: webrtc::error::Error,
    },
    /// A message could not be encoded.
    #[error("cannot encode a message")]
    Encode(#[from] serde_json::Error),
    /// The call does not fit the client's state (e.g. `publish` before `join`).
    #[error("{0}")]
    State(String),
}

impl ClientError {
    /// Wraps a webrtc error with what the client was doing.
    pub(crate) fn webrtc(context: &'static str) -> impl FnOnce(webrtc::error::Error) -> Self {
        move |source| ClientError::WebRtc { context, source }
    }
}
