//! sfud: a WebRTC Selective Forwarding Unit.
//!
//! The canonical shape, from the network down:
//!
//! ```text
//! signaling (one task per WebSocket) ──► rooms (one actor per room, plain state)
//!                                             │ media commands
//!                                             ▼
//!                                    media (one UDP loop, sans-IO peer connections,
//!                                           RTP forwarding hot path)
//! ```
//!
//! [`Server::bind`] binds every socket and returns the addresses, so tests
//! run the real daemon in-process on ephemeral ports; [`Server::run`] serves
//! until the shutdown future resolves.

pub mod config;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod rooms;
pub mod signaling;
pub mod systemd;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use sfu_proto::signaling::IceServer;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::media::engine_settings;
use crate::media::{MediaEngine, MediaHandle};
use crate::rooms::{RoomLimits, RoomRegistry};

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}")]
    HttpBind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The media sockets could not be bound.
    #[error("cannot bind the media UDP sockets")]
    MediaBind(#[source] std::io::Error),
    /// No address to serve media on.
    #[error("no IPv4 address to serve media on: set rtc.bind_ips")]
    NoMediaAddress,
    /// The HTTP server failed.
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// A daemon with its sockets bound, ready to [`run`](Server::run).
pub struct Server {
    http: tokio::net::TcpListener,
    http_addr: SocketAddr,
    engine: MediaEngine,
    media: MediaHandle,
    rooms: RoomRegistry,
}

impl Server {
    /// Binds the HTTP listener and the media sockets.
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        let http = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| ServerError::HttpBind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = http.local_addr().map_err(ServerError::Http)?;
        let bind_ips = if config.rtc.bind_ips.is_empty() {
            interface_addresses()
        } else {
            config.rtc.bind_ips.clone()
        };
        if bind_ips.is_empty() {
            return Err(ServerError::NoMediaAddress);
        }
        let settings = engine_settings(config, &bind_ips);
        let (engine, media) = MediaEngine::bind(&settings).map_err(ServerError::MediaBind)?;
        let ice_servers = config
            .rtc
            .ice_servers
            .iter()
            .map(|s| IceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let rooms = RoomRegistry::new(
            media.clone(),
            RoomLimits {
                max_peers: config.rooms.max_peers,
                max_rooms: config.rooms.max_rooms,
                auto_create: config.rooms.auto_create,
            },
            ice_servers,
        );
        Ok(Server {
            http,
            http_addr,
            engine,
            media,
            rooms,
        })
    }

    /// The address HTTP and WebSocket signaling are served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The UDP addresses media is served on.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.media.local_addrs().to_vec()
    }

    /// The room registry (for the control plane).
    pub fn rooms(&self) -> RoomRegistry {
        self.rooms.clone()
    }

    /// Serves until `shutdown` resolves, then tells every peer and stops.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let media_task = tokio::spawn(self.engine.run(stop_rx.clone()));
        let app = signaling::router(signaling::AppState {
            rooms: self.rooms.clone(),
            shutdown: stop_rx.clone(),
            metrics: metrics::MetricsSource::new(self.rooms.clone(), self.media.clone()),
        });
        info!(http = %self.http_addr, media = ?self.media.local_addrs(), "serving");
        let mut http_stop = stop_rx.clone();
        let http = axum::serve(
            self.http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        let http_task = tokio::spawn(async move { http.await });
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        let http_result = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), media_task).await;
        match http_result {
            Ok(Ok(Err(e))) => Err(ServerError::Http(e)),
            _ => Ok(()),
        }
    }
}

/// Every IPv4 address of every interface that is up.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![IpAddr::from([127, 0, 0, 1])];
    };
    let mut ips: Vec<IpAddr> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}
