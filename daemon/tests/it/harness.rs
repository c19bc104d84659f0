//! Starting and stopping a real daemon for one test.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sfu_proto::signaling::ServerMessage;
use sfud::config::Config;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A daemon serving on ephemeral loopback ports until dropped.
pub struct TestServer {
    pub http: SocketAddr,
    pub rooms: sfud::rooms::RoomRegistry,
    pub gate: std::sync::Arc<sfud::signaling::gate::Gatekeeper>,
    pub media: sfud::media::MediaHandle,
    /// The control socket's path.
    pub socket: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), sfud::ServerError>>>,
}

/// The configuration tests use: loopback only, any free ports.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("literal address");
    config.rtc.udp_port = 0;
    config.rtc.bind_ips = vec!["127.0.0.1".parse().expect("literal address")];
    // Tests join many times from 127.0.0.1.
    config.limits.joins_per_second = 1000;
    // Every test daemon gets its own control socket.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.control.socket =
        std::env::temp_dir().join(format!("sfud-it-{}-{n}.sock", std::process::id()));
    config
}

impl TestServer {
    /// Starts the daemon with the test configuration.
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    /// Starts the daemon with `config`.
    pub async fn start_with(config: Config) -> TestServer {
        Self::start_from(config, None).await
    }

    /// Starts the daemon with `config`, read from the file `path`.
    pub async fn start_from(config: Config, path: Option<std::path::PathBuf>) -> TestServer {
        let server = sfud::Server::bind(&config)
            .await
            .expect("daemon binds")
            .with_config_path(path);
        let http = server.http_addr();
        let (rooms, gate, media) = (server.rooms(), server.gate(), server.media());
        let socket = server.control_socket().to_owned();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            rooms,
            gate,
            media,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// Stops the daemon and waits for it to exit cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("daemon stops within 10 s")
                .expect("daemon task did not panic");
            r.expect("daemon exits cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A bare WebSocket to the daemon for protocol-level tests.
pub struct RawSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long any single expected event may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long media may take to start flowing.
pub const MEDIA_DEADLINE: Duration = Duration::from_secs(15);

/// A WebRTC client that joined `room` as a speaker and publishes synthetic
/// VP8 + Opus; returns it with its peer id.
pub async fn speaker(server: &TestServer, room: &str, name: &str) -> (sfu_client::Client, String) {
    let client = sfu_client::Client::connect(&server.ws_url())
        .await
        .expect("connects");
    let joined = client
        .join(room, name, sfu_proto::signaling::Role::Speaker)
        .await
        .expect("joins");
    client
        .publish(sfu_client::PublishOptions::default())
        .await
        .expect("publishes");
    (client, joined.peer_id)
}

impl RawSocket {
    pub async fn connect(server: &TestServer) -> RawSocket {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connects");
        RawSocket { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next server message; fails on timeout or close.
    pub async fn recv(&mut self) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a server message within the deadline")
                .expect("socket still open")
                .expect("frame readable");
            match frame {
                Message::Text(t) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("server sent unparsable {t}: {e}"))
                }
                Message::Close(c) => panic!("server closed the socket: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Waits for the next message matching `pred`, skipping others.
    pub async fn recv_until(
        &mut self,
        what: &str,
        pred: impl Fn(&ServerMessage) -> bool,
    ) -> ServerMessage {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = tokio::time::timeout(left, self.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if pred(&m) {
                return m;
            }
        }
    }

    /// Expects an `error` with `code` as the next message.
    pub async fn expect_error(&mut self, code: &str) -> String {
        match self.recv().await {
            ServerMessage::Error { code: c, message } => {
                assert_eq!(c.as_str(), code, "wrong error code (message: {message})");
                message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects the server to close the socket.
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => panic!("socket not closed within the deadline"),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Sends a join with extra fields (token, role, mode) and returns the reply.
    pub async fn try_join(&mut self, join: serde_json::Value) -> ServerMessage {
        let mut msg = serde_json::json!({"type":"join"});
        if let (Some(m), Some(extra)) = (msg.as_object_mut(), join.as_object()) {
            m.extend(extra.clone());
        }
        self.send_json(msg).await;
        self.recv().await
    }

    /// Joins `room` as `name`; returns the peer id.
    pub async fn join(&mut self, room: &str, name: &str) -> String {
        self.send_json(serde_json::json!({"type":"join","room":room,"name":name}))
            .await;
        match self.recv().await {
            ServerMessage::Joined { peer_id, .. } => peer_id,
            other => panic!("expected joined, got {other:?}"),
        }
    }
}
