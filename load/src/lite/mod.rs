//! Receivers that cost the generator less: one task each, driving `rtc`'s
//! sans-IO peer connection straight from its own UDP socket, and reading
//! RTP outside it once the connection is up (`fast`).
//!
//! The full client (`sfu-client`) runs `webrtc`'s async peer connection:
//! several tasks per connection, every packet crossing channels and locks
//! between them, about 13 µs of the generator's CPU per packet received
//! (docs/benchmarks.md). On this 2-core machine that, not the SFU, stopped
//! the ramps. A lite receiver keeps what makes it a browser stand-in for
//! the SFU (ICE with browser pacing, DTLS, SRTP, and the transport-wide
//! feedback sfud's downlink estimate reads) and drops the wrapper: its task
//! reads the socket, hands each datagram to `rtc`, sends what `rtc` writes
//! and accounts the packets it reads ([`TrackAccount`], as the full client
//! does). Once DTLS completes, RTP no longer crosses `rtc` (`fast`), which
//! then only answers STUN and reads RTCP; from then on the receiver sends
//! no NACKs or receiver reports (nothing is lost on loopback before a ramp
//! step fails). It only receives: publishers stay full clients.

mod fast;
mod feedback;
mod receiver;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sfu_client::{Histogram, RemoteTrack, TrackAccount};
use sfu_keytap::KeyTap;
use sfu_proto::signaling::{ClientMessage, Role, ServerMessage};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::LoadError;
use receiver::Receiver;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a lite receiver joins.
#[derive(Debug, Clone)]
pub struct LiteOptions {
    /// sfud's (or the translator's) signaling URL.
    pub ws_url: String,
    /// Room to join as a listener.
    pub room: String,
    /// Display name.
    pub name: String,
    /// Address its socket binds to.
    pub bind_ip: IpAddr,
    /// Ask for at most this simulcast layer of every video track.
    pub max_layer: Option<u8>,
    /// Deadline for the WebSocket and the `joined` answer.
    pub timeout: Duration,
}

/// One joined receiver; its task runs until [`LiteReceiver::close`].
pub struct LiteReceiver {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    join_sent_ns: u64,
}

/// What the task and the fleet both see.
struct Shared {
    tracks: Mutex<Vec<TrackAccount>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LiteReceiver {
    /// Connects, joins `options.room` as a listener and starts the task that
    /// answers the subscribe offers and receives; returns once `joined`
    /// arrived.
    pub async fn join(
        options: LiteOptions,
        histogram: Option<Arc<Histogram>>,
    ) -> Result<LiteReceiver, LoadError> {
        let fail =
            |what: String| LoadError::Join(format!("{} in {}: {what}", options.name, options.room));
        let (ws, _) = tokio::time::timeout(
            options.timeout,
            tokio_tungstenite::connect_async_with_config(
                options.ws_url.as_str(),
                Some(sfu_client::websocket_config()),
                false,
            ),
        )
        .await
        .map_err(|_| fail("the WebSocket did not open in time".into()))?
        .map_err(|e| fail(format!("WebSocket: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let join_sent_ns = sfu_client::tag::now_ns();
        send(
            &mut sink,
            &ClientMessage::Join {
                room: options.room.clone(),
                name: options.name.clone(),
                role: Some(Role::Listener),
                token: None,
                mode: None,
            },
        )
        .await
        .map_err(fail)?;
        let mut early = Vec::new();
        tokio::time::timeout(options.timeout, async {
            loop {
                match next_message(&mut stream).await? {
                    ServerMessage::Joined { .. } => return Ok(()),
                    ServerMessage::Error { code, message } => {
                        return Err(format!("join refused: {code:?}: {message}"))
                    }
                    other => early.push(other),
                }
            }
        })
        .await
        .map_err(|_| fail("no `joined` in time".into()))?
        .map_err(fail)?;
        let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
            .await
            .map_err(|e| fail(format!("binding a UDP socket: {e}")))?;
        let keys = KeyTap::new().map_err(|e| fail(format!("crypto provider: {e}")))?;
        let shared = Arc::new(Shared {
            tracks: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = watch::channel(false);
        // The WebSocket is read on a task of its own: polled beside the UDP
        // socket, tungstenite zeroes its read buffer on every poll (12% of
        // the generator's CPU at 175 receivers).
        let (messages_in, messages) = mpsc::channel(64);
        let reader = tokio::spawn(async move {
            while let Ok(msg) = next_message(&mut stream).await {
                if messages_in.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut receiver = Receiver::new(
            socket,
            keys,
            sink,
            Arc::clone(&shared),
            histogram,
            options.max_layer,
        )
        .map_err(fail)?;
        let name = options.name.clone();
        let task = tokio::spawn(async move {
            let outcome = receiver.run(early, messages, stopped).await;
            reader.abort();
            if let Err(why) = outcome {
                tracing::warn!(receiver = %name, "stopped: {why}");
            }
            receiver.leave().await;
        });
        Ok(LiteReceiver {
            shared,
            stop,
            task,
            join_sent_ns,
        })
    }

    /// When its `join` was sent, in nanoseconds since the UNIX epoch.
    pub fn join_sent_ns(&self) -> u64 {
        self.join_sent_ns
    }

    /// The counters of every track received so far.
    pub fn tracks(&self) -> Vec<RemoteTrack> {
        lock(&self.shared.tracks)
            .iter()
            .map(TrackAccount::counters)
            .collect()
    }

    /// Leaves the room and ends the task.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

async fn send(sink: &mut SplitSink<Ws, Message>, msg: &ClientMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| format!("encoding {msg:?}: {e}"))?;
    sink.send(Message::text(text))
        .await
        .map_err(|e| format!("sending on the WebSocket: {e}"))
}

/// The next server message; an error when the socket closes or breaks.
async fn next_message(stream: &mut SplitStream<Ws>) -> Result<ServerMessage, String> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| format!("an unreadable server message: {e}"))
            }
            Some(Ok(Message::Close(_))) | None => return Err("the server closed".into()),
            Some(Err(e)) => return Err(format!("WebSocket: {e}")),
            Some(Ok(_)) => {}
        }
    }
}
