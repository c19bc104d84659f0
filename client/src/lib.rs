//! A client for sfud: its WebSocket signaling protocol plus real WebRTC
//! (webrtc-rs 0.21) on the two peer connections every participant has.
//!
//! Used by the daemon's integration tests and the load generator, so it is
//! built to be observed and to never hang:
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> Result<(), sfu_client::ClientError> {
//! use sfu_client::{ws_url, Client, PublishOptions};
//! use sfu_proto::signaling::Role;
//! use std::time::Duration;
//!
//! let alice = Client::connect(&ws_url(addr)).await?;
//! let joined = alice.join("room", "alice", Role::Speaker).await?;
//! alice.publish(PublishOptions::default()).await?;
//!
//! let bob = Client::connect(&ws_url(addr)).await?;
//! bob.join("room", "bob", Role::Speaker).await?;
//! let seen = bob
//!     .wait_for(Duration::from_secs(10), "alice's video", |s| {
//!         s.packets_from(&joined.peer_id, "video") > 100
//!     })
//!     .await?;
//! assert_eq!(seen.track_from(&joined.peer_id, "video").map(|t| t.lost), Some(0));
//! # Ok(())
//! # }
//! ```
//!
//! - Every wait takes a deadline; a timeout names what was awaited and
//!   includes a summary of everything observed ([`Snapshot::summary`]).
//! - Published media is synthetic: VP8- and Opus-shaped payloads that carry a
//!   tag (sequence number, send time, publisher hash; see [`tag`]) from which
//!   receivers count loss, duplicates, reordering, misrouting and latency.
//!   Video can be published as three simulcast layers, as browsers send
//!   them ([`PublishOptions::simulcast`]); receivers count each layer the
//!   server forwards on its own.
//! - Peer connections bind to [`ClientOptions::bind_ip`] (127.0.0.1 by
//!   default) and use neither mDNS nor STUN, as the tests' network namespace
//!   needs.

mod accounting;
mod client;
mod error;
pub mod histogram;
mod media;
mod peer;
mod receiver;
mod sdp;
mod shared;
mod signaling;
mod simulcast;
mod snapshot;
pub mod tag;
mod track;

pub use accounting::LatencySummary;
pub use client::{Client, Joined, MediaCounters};
pub use error::ClientError;
pub use histogram::Histogram;
pub use media::{video_packets_per_frame, MediaSource, PublishOptions};
pub use sdp::{extension_id, offered_ssrcs, offered_tracks};
pub use signaling::websocket_config;
pub use snapshot::{OfferedTrack, RemoteTrack, SenderReportSeen, Snapshot};
pub use track::TrackAccount;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a [`Client`] sets itself up.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The one address its peer connections gather a host candidate on.
    pub bind_ip: IpAddr,
    /// Deadline of the waits inside `connect`, `join` and `publish`.
    pub timeout: Duration,
    /// Where every received tagged packet's one-way latency is also counted
    /// (shared by many clients in a load generator).
    pub latency_histogram: Option<std::sync::Arc<Histogram>>,
    /// The ICE keepalive interval, and this client's own disconnected and
    /// failed timeouts; `None`: the webrtc crate's defaults. A long one makes
    /// a client that sends media but (almost) no STUN checks, for tests.
    pub ice_keepalive: Option<Duration>,
    /// Rewrites the publish offer's SDP after it is set locally and before
    /// it is sent, to test how the server meets a client that lies about
    /// itself (a fingerprint that is not its certificate's, say).
    pub munge_offer: Option<fn(&str) -> String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            timeout: Duration::from_secs(10),
            latency_histogram: None,
            ice_keepalive: None,
            munge_offer: None,
        }
    }
}

/// The signaling URL of a server listening on `addr`.
pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_brackets_ipv6() {
        assert_eq!(
            ws_url("127.0.0.1:8080".parse().expect("addr")),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url("[::1]:80".parse().expect("addr")),
            "ws://[::1]:80/ws"
        );
    }
}
