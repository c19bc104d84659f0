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

pub mod auth;
mod backoff;
pub mod cluster;
pub mod config;
pub mod control;
#[cfg(test)]
mod fuzz;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod recording;
pub mod reload;
pub mod rooms;
pub mod signaling;
pub mod speech;
pub mod supervisor;
pub mod systemd;
pub mod turn;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sfu_proto::signaling::IceServer;
use tracing::info;

use crate::config::Config;
use crate::media::engine_settings;
use crate::media::{MediaEngine, MediaHandle};
use crate::rooms::{RoomLimits, RoomRegistry};
use crate::supervisor::{Stage, Supervisor};

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
    /// The TURN server could not listen.
    #[error(
        "cannot start the TURN server (turn.port, turn.tls_port, turn.tls_cert, turn.tls_key)"
    )]
    TurnBind(#[source] std::io::Error),
    /// No address to serve media on.
    #[error("no IPv4 address to serve media on: set rtc.bind_ips")]
    NoMediaAddress,
    /// The HTTP server failed.
    #[error("HTTP server failed")]
    Http(#[source] std::io::Error),
    /// The control socket could not be set up.
    #[error("cannot set up the control socket")]
    Control(#[source] control::BindError),
    /// The configuration is not valid.
    #[error("invalid configuration")]
    Config(#[source] config::ConfigError),
    /// A preset room could not be created.
    #[error("cannot create preset room `{room}`: {refusal}")]
    Preset {
        /// Which room.
        room: String,
        /// Why.
        refusal: rooms::Refusal,
    },
}

/// A daemon with its sockets bound, ready to [`run`](Server::run).
pub struct Server {
    http: tokio::net::TcpListener,
    http_addr: SocketAddr,
    engine: MediaEngine,
    media: MediaHandle,
    rooms: RoomRegistry,
    gate: Arc<signaling::gate::Gatekeeper>,
    control: control::ControlSocket,
    reloader: reload::Reloader,
    recorder: recording::Recorder,
    cluster: cluster::Cluster,
    supervisor: Supervisor,
    started: std::time::Instant,
    /// The embedded TURN server, when `turn.enabled`.
    turn: Option<turn::Turn>,
}

impl Server {
    /// Binds the HTTP listener and the media sockets.
    pub async fn bind(config: &Config) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let started = std::time::Instant::now();
        // First, so that a second daemon on the same configuration says the
        // socket is taken rather than that a port is.
        let control =
            control::ControlSocket::bind(&config.control).map_err(ServerError::Control)?;
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
        let supervisor = Supervisor::default();
        let cluster = cluster::Cluster::new(config, http_addr);
        let rooms = RoomRegistry::new(
            media.clone(),
            RoomLimits {
                max_peers: config.rooms.max_peers,
                max_rooms: config.rooms.max_rooms,
                auto_create: config.rooms.auto_create,
                mesh_max_peers: config.rooms.mesh_max_peers,
            },
            ice_servers,
            supervisor.clone(),
            cluster.clone(),
        );
        for p in &config.rooms.preset {
            rooms
                .create(&p.name, p.max_peers, Some(p.mode))
                .await
                .map_err(|refusal| ServerError::Preset {
                    room: p.name.clone(),
                    refusal,
                })?;
        }
        let turn = if config.turn.enabled {
            let ip = bind_ips[0];
            let announced = config.rtc.public_ips.first().copied().unwrap_or(ip);
            let media_addrs: Vec<SocketAddr> = media.local_addrs();
            let turn = turn::Turn::start(&config.turn, ip, announced, media_addrs)
                .await
                .map_err(ServerError::TurnBind)?;
            rooms.set_turn(Some(turn.issuer()));
            Some(turn)
        } else {
            None
        };
        let gate = Arc::new(signaling::gate::Gatekeeper::new(config));
        let reloader = reload::Reloader::new(config.clone(), None, rooms.clone(), gate.clone());
        let recorder =
            recording::Recorder::new(config.recording.dir.clone(), rooms.clone(), media.clone());
        Ok(Server {
            http,
            http_addr,
            engine,
            media,
            rooms,
            gate,
            control,
            reloader,
            recorder,
            cluster,
            supervisor,
            started,
            turn,
        })
    }

    /// Where the embedded TURN server listens (UDP and TCP), if it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(turn::Turn::addr)
    }

    /// Remembers the file the configuration came from, for `sfuctl config
    /// check` and reloads.
    pub fn with_config_path(self, path: Option<PathBuf>) -> Self {
        self.reloader.set_path(path);
        self
    }

    /// The control socket's path (the configured one or the development fallback).
    pub fn control_socket(&self) -> &Path {
        self.control.path()
    }

    /// Re-reads the configuration file and applies what can change at run
    /// time (for SIGHUP; `sfuctl reload` uses the same).
    pub fn reloader(&self) -> reload::Reloader {
        self.reloader.clone()
    }

    /// The address HTTP and WebSocket signaling are served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The UDP addresses media is served on.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.media.local_addrs().to_vec()
    }

    /// The TCP addresses media is served on (ICE-TCP; none when off).
    pub fn media_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.media.tcp_addrs()
    }

    /// The room registry (for the control plane).
    pub fn rooms(&self) -> RoomRegistry {
        self.rooms.clone()
    }

    /// The media engine's handle (counters, reports).
    pub fn media(&self) -> MediaHandle {
        self.media.clone()
    }

    /// The recorder (for the control plane).
    pub fn recorder(&self) -> recording::Recorder {
        self.recorder.clone()
    }

    /// Join tokens, origins and rate limits (for the control plane and reload).
    pub fn gate(&self) -> Arc<signaling::gate::Gatekeeper> {
        self.gate.clone()
    }

    /// Starts and stops every long-lived task (to run more beside the
    /// server, such as systemd's liveness check).
    pub fn supervisor(&self) -> Supervisor {
        self.supervisor.clone()
    }

    /// Serves until `shutdown` resolves, then stops in stages: no new
    /// connections or joins, every recording finalized, every peer told,
    /// media closed, then the rest (see [`supervisor`](crate::supervisor)).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let sup = self.supervisor.clone();
        sup.spawn(
            Stage::Media,
            "media loop",
            self.engine.run(sup.token(Stage::Media)),
        );
        sup.spawn(
            Stage::Background,
            "suppressed log report",
            logging::budget::report_suppressed(sup.token(Stage::Background)),
        );
        let control = self.control.context(
            control::Services {
                rooms: self.rooms.clone(),
                media: self.media.clone(),
                reloader: self.reloader.clone(),
                gate: self.gate.clone(),
                recorder: self.recorder.clone(),
                cluster: self.cluster.clone(),
                started: self.started,
            },
            &sup,
        );
        let app = signaling::router(signaling::AppState {
            rooms: self.rooms.clone(),
            gate: self.gate.clone(),
            draining: sup.token(Stage::Accept),
            shutdown: sup.token(Stage::Sessions),
            metrics: metrics::MetricsSource::new(
                self.rooms.clone(),
                self.media.clone(),
                self.recorder.clone(),
                self.gate.clone(),
                self.cluster.clone(),
            ),
            cluster: self.cluster.clone(),
            control: control.clone(),
            whip: Default::default(),
        });
        info!(http = %self.http_addr, media = ?self.media.local_addrs(), media_tcp = ?self.media.tcp_addrs(), turn = ?self.turn.as_ref().map(turn::Turn::addr), turn_tls = ?self.turn.as_ref().and_then(turn::Turn::tls_addr), "serving");
        let gate = self.gate.clone();
        sup.spawn(
            Stage::Accept,
            "HTTP listener",
            signaling::listener::serve(
                self.http,
                app,
                gate.connections().clone(),
                move || gate.listener_limits(),
                sup.clone(),
            ),
        );
        sup.spawn(
            Stage::Accept,
            "control listener",
            self.control.serve(control, sup.clone()),
        );
        // Leases are kept while rooms run, and released once they stopped.
        sup.spawn(
            Stage::Media,
            "room leases",
            self.cluster
                .clone()
                .keep_leases(self.rooms.clone(), sup.token(Stage::Media)),
        );
        // Announced while the node takes new rooms: it leaves the directory
        // as soon as it stops accepting.
        sup.spawn(
            Stage::Accept,
            "cluster directory",
            self.cluster.clone().announce(
                self.rooms.clone(),
                self.media.clone(),
                sup.token(Stage::Accept),
            ),
        );
        shutdown.await;
        info!("shutting down");
        sup.stop(Stage::Accept).await;
        // Every recording is finalized before the process exits, and before
        // the peers are told to go: otherwise a room could close under its
        // recording first, which would then end for the wrong reason.
        self.recorder.shutdown().await;
        for stage in [
            Stage::Sessions,
            Stage::Rooms,
            Stage::Media,
            Stage::Background,
        ] {
            sup.stop(stage).await;
        }
        Ok(())
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

/// The unit tests' allocator, for the fuzz campaigns' speed (see Cargo.toml).
#[cfg(test)]
#[global_allocator]
static FUZZ_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
