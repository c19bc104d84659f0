//! One Janus API session over Janus's WebSocket transport (`janus-protocol`):
//! requests matched to their replies by transaction, everything else
//! (webrtcup, hangup, trickle, unsolicited plugin events) delivered in order
//! on a channel, and a keepalive so Janus does not reap the session.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// How long one request may take before the session is considered broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Janus reaps sessions idle for `session_timeout` (60 s by default).
const KEEPALIVE: Duration = Duration::from_secs(15);
/// The VideoRoom plugin's package name.
pub const VIDEOROOM: &str = "janus.plugin.videoroom";

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A Janus session on its own WebSocket.
pub struct JanusSession {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: AtomicU64,
    id: u64,
    tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JanusSession {
    /// Connects and creates a session; unsolicited messages arrive on the
    /// returned receiver.
    pub async fn connect(
        url: &str,
    ) -> Result<(JanusSession, mpsc::UnboundedReceiver<Value>), String> {
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("bad Janus URL {url}: {e}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) =
            tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| format!("connecting to {url} timed out"))?
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let pending_r = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let kind = value["janus"].as_str().unwrap_or_default();
                if kind == "ack" {
                    continue;
                }
                let waiter = value["transaction"]
                    .as_str()
                    .and_then(|t| lock(&pending_r).remove(t));
                match waiter {
                    Some(w) => {
                        let _ = w.send(value);
                    }
                    None => {
                        let _ = events_tx.send(value);
                    }
                }
            }
        });
        let mut session = JanusSession {
            out,
            pending,
            next: AtomicU64::new(1),
            id: 0,
            tasks: vec![writer, reader],
        };
        let created = session.request(json!({"janus": "create"})).await?;
        session.id = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("Janus create returned no session id: {created}"))?;
        let out = session.out.clone();
        let id = session.id;
        session.tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                n += 1;
                let ping = json!({"janus": "keepalive", "session_id": id, "transaction": format!("ka{n}")});
                if out.send(Message::text(ping.to_string())).is_err() {
                    break;
                }
            }
        }));
        Ok((session, events))
    }

    /// Sends a request and waits for its reply (not the ack); a Janus
    /// `error` is an `Err`.
    pub async fn request(&self, mut body: Value) -> Result<Value, String> {
        let transaction = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        body["transaction"] = json!(transaction);
        if self.id != 0 {
            body["session_id"] = json!(self.id);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(transaction.clone(), tx);
        self.out
            .send(Message::text(body.to_string()))
            .map_err(|_| "the Janus WebSocket is closed".to_owned())?;
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx)
            .await
            .map_err(|_| {
                lock(&self.pending).remove(&transaction);
                format!("Janus did not answer {}", body["janus"])
            })?
            .map_err(|_| "the Janus WebSocket closed".to_owned())?;
        if reply["janus"] == "error" {
            return Err(format!("Janus error: {}", reply["error"]));
        }
        if let Some(code) = reply["plugindata"]["data"]["error_code"].as_u64() {
            return Err(format!(
                "VideoRoom error {code}: {}",
                reply["plugindata"]["data"]["error"]
            ));
        }
        Ok(reply)
    }

    /// Attaches a VideoRoom handle.
    pub async fn attach(&self) -> Result<u64, String> {
        let reply = self
            .request(json!({"janus": "attach", "plugin": VIDEOROOM}))
            .await?;
        reply["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("attach returned no handle id: {reply}"))
    }

    /// A plugin message on `handle`, with an optional JSEP; returns the reply
    /// (`success` for synchronous requests, the `event` for asynchronous ones).
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, String> {
        let mut msg = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        self.request(msg).await
    }

    /// Trickles a candidate (or `{"completed": true}`) without waiting.
    pub fn trickle(&self, handle: u64, candidate: Value) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let msg = json!({
            "janus": "trickle",
            "session_id": self.id,
            "handle_id": handle,
            "transaction": format!("c{n}"),
            "candidate": candidate,
        });
        let _ = self.out.send(Message::text(msg.to_string()));
    }

    /// Destroys the session (best effort) and stops its tasks.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.request(json!({"janus": "destroy"})),
        )
        .await;
        let _ = self.out.send(Message::Close(None));
        for t in &self.tasks {
            t.abort();
        }
    }
}
