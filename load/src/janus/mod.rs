//! Janus VideoRoom as a second target: a translator that speaks sfud's
//! signaling protocol to the generator's `sfu-client`s on a local port and
//! Janus's VideoRoom API to Janus, so both SFUs are driven by the same
//! clients, media and accounting. Media goes straight between the clients
//! and Janus; only signaling passes through here.
//!
//! Each client gets a Janus session on its own WebSocket: a publisher handle
//! (`joinandconfigure` with the client's offer) and a subscriber handle
//! (`join` as subscriber to every feed of the room that is up, then
//! `subscribe` for feeds that come up later, `start` with the client's
//! answers). A publisher's feed id is the client's peer id, and the
//! subscriber offers' msid lines are rewritten to it, as sfud does.

mod api;
mod msid;
mod session;

use crate::LoadError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

pub use api::JanusSession;

/// A VideoRoom room as the translator knows it.
#[derive(Default)]
struct Room {
    /// Janus's numeric room id.
    janus_id: u64,
    /// Every client in it: feed id and where to tell it about new feeds.
    members: Vec<(u64, mpsc::UnboundedSender<u64>)>,
    /// Feeds whose publisher connection is up (`webrtcup`).
    up: Vec<u64>,
}

/// State shared by every translated session.
struct Shared {
    janus_url: String,
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
}

/// The running translator; see the module docs.
pub struct Translator {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Translator {
    /// Checks that Janus answers at `janus_url`, then listens on a free
    /// loopback port.
    pub async fn start(janus_url: String) -> Result<Translator, LoadError> {
        let (probe, _) = JanusSession::connect(&janus_url)
            .await
            .map_err(LoadError::Janus)?;
        probe.close().await;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| LoadError::Io {
                what: "binding the Janus translator".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| LoadError::Io {
            what: "reading the translator's address".into(),
            source,
        })?;
        let shared = Arc::new(Shared {
            janus_url,
            rooms: Mutex::new(HashMap::new()),
            // Feed and room ids unique across runs against one Janus.
            next_id: AtomicU64::new(u64::from(rand::random::<u32>() >> 4) * 1000 + 1),
        });
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    match tokio_tungstenite::accept_async(stream).await {
                        Ok(ws) => session::run(ws, shared).await,
                        Err(e) => tracing::debug!(error = %e, "translator handshake failed"),
                    }
                });
            }
        });
        Ok(Translator { addr, accept })
    }

    /// The sfud-protocol URL the clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops accepting (sessions end with their clients).
    pub async fn stop(self) {
        self.accept.abort();
    }
}
