//! The control plane: the Unix socket `sfuctl` talks to.
//!
//! [`ControlSocket::bind`] picks the path ([`socket::choose_path`]), refuses
//! to steal a live socket, replaces a stale one and sets its mode and group;
//! [`ControlSocket::serve`] accepts connections until shutdown, checks each
//! peer's credentials ([`access`]) and answers length-prefixed JSON requests
//! ([`sfu_proto::control`]) by turning them into room operations, media
//! counter reads and configuration reloads ([`handler`]). The socket file is
//! removed when serving ends.

mod access;
mod connection;
pub mod forward;
pub mod handler;
mod rate;
pub mod socket;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::backoff::AcceptBackoff;
use crate::config::ControlConfig;
use crate::media::MediaHandle;
use crate::reload::Reloader;
use crate::rooms::RoomRegistry;
use crate::supervisor::{Stage, Supervisor};

pub use access::Peer;

/// Connections served at once; more wait in the socket's backlog. Idle ones
/// cannot hold them long: a new connection must speak within a second
/// (`connection::FIRST_FRAME_DEADLINE`).
const MAX_CONNECTIONS: usize = 256;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Neither the configured path's directory nor a fallback's is usable.
    #[error("no directory to create the control socket in (tried {}); create the directory or set control.socket", list(tried))]
    NoDirectory {
        /// Every path considered.
        tried: Vec<PathBuf>,
    },
    /// Another daemon serves the socket.
    #[error("another sfud is already serving {}; stop it first or set control.socket to another path", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket; remove it or set control.socket to another path", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An existing socket file could not be examined.
    #[error("cannot tell whether {} is in use", path.display())]
    Probe {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stale socket could not be removed.
    #[error("cannot remove the stale socket {}", path.display())]
    RemoveStale {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Binding failed.
    #[error("cannot create the control socket {}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket's mode could not be set.
    #[error("cannot set the mode of {}", path.display())]
    Permissions {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `control.group` names no group.
    #[error("control.group: no group named `{group}`; create it or change control.group")]
    UnknownGroup {
        /// The configured name.
        group: String,
    },
    /// The group database could not be read.
    #[error("cannot look up group `{group}`")]
    GroupLookup {
        /// The configured name.
        group: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket's group could not be set.
    #[error("cannot give {} to group `{group}`", path.display())]
    Chown {
        /// The socket.
        path: PathBuf,
        /// The configured group.
        group: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bound control socket, ready to [`serve`](ControlSocket::serve).
pub struct ControlSocket {
    listener: UnixListener,
    file: socket::SocketFile,
    access: access::AccessPolicy,
}

/// What the control requests act on.
pub struct Services {
    /// The rooms.
    pub rooms: RoomRegistry,
    /// The media engine.
    pub media: MediaHandle,
    /// Configuration check and reload.
    pub reloader: Reloader,
    /// Join tokens (for `token create`).
    pub gate: Arc<crate::signaling::gate::Gatekeeper>,
    /// Room recordings.
    pub recorder: crate::recording::Recorder,
    /// The cluster's directory.
    pub cluster: crate::cluster::Cluster,
    /// When the daemon started.
    pub started: Instant,
}

impl ControlSocket {
    /// Creates the socket `config` asks for (or the development fallback).
    pub fn bind(config: &ControlConfig) -> Result<ControlSocket, BindError> {
        let path = socket::choose_path(&config.socket)?;
        let access = access::AccessPolicy::new(config.group.as_deref())?;
        let (listener, file) = socket::bind(&path, config.group.as_deref())?;
        let bind_error = |source| BindError::Bind {
            path: path.clone(),
            source,
        };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let listener = UnixListener::from_std(listener).map_err(bind_error)?;
        Ok(ControlSocket {
            listener,
            file,
            access,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// What requests act on: `services`, and the bitrate sampler this
    /// starts. Shared with the node-to-node endpoint of signaling.
    pub fn context(&self, services: Services, sup: &Supervisor) -> Arc<handler::Context> {
        let rates = Arc::new(rate::MediaRates::default());
        sup.spawn(Stage::Background, "bitrate sampler", {
            let rates = rates.clone();
            let media = services.media.clone();
            let stop = sup.token(Stage::Background);
            async move { rates.sample(media, stop).await }
        });
        Arc::new(handler::Context {
            rooms: services.rooms,
            media: services.media,
            reloader: services.reloader,
            gate: services.gate,
            recorder: services.recorder,
            cluster: services.cluster,
            rates,
            started: services.started,
            socket: self.file.path().to_owned(),
        })
    }

    /// Serves `ctx` until the supervisor stops accepting, then removes the
    /// socket file; connections end when it stops sessions.
    pub async fn serve(self, ctx: Arc<handler::Context>, sup: Supervisor) {
        let stop = sup.token(Stage::Accept);
        let ControlSocket {
            listener,
            file,
            access,
        } = self;
        let access = Arc::new(access);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = AcceptBackoff::new("control socket");
        info!(socket = %file.path().display(), "control socket ready");
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    stream
                }
                Err(e) => {
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let peer = match access::peer_of(&stream) {
                Ok(peer) => peer,
                Err(e) => {
                    warn!(error = %e, "cannot read a control client's credentials; dropping it");
                    continue;
                }
            };
            let (ctx, access) = (ctx.clone(), access.clone());
            sup.spawn_until_stopped(Stage::Sessions, "control connection", async move {
                connection::serve(stream, peer, &access, &ctx).await;
                drop(permit);
            });
        }
        drop(listener);
        drop(file);
    }
}
