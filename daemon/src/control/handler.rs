//! One control request in, one response out: the requests become room
//! operations, media counter reads or reloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sfu_proto::control::{
    ConnectionReport, ControlError, ErrorCode, LayerDetail, PeerDetail, ReceivedLayer, Request,
    Response, RoomDetail, RoomSummary, Status, TrackDetail,
};
use sfu_proto::signaling::ErrorCode as RoomErrorCode;

use super::forward::{self, Reach};
use super::rate::MediaRates;
use crate::media::MediaHandle;
use crate::reload::Reloader;
use crate::rooms::{report, Refusal, RoomRegistry};

/// What the control socket's requests act on.
pub struct Context {
    /// The rooms.
    pub rooms: RoomRegistry,
    /// The media engine, for counters.
    pub media: MediaHandle,
    /// Configuration check and reload.
    pub reloader: Reloader,
    /// Join tokens.
    pub gate: Arc<crate::signaling::gate::Gatekeeper>,
    /// Room recordings.
    pub recorder: crate::recording::Recorder,
    /// The cluster's directory.
    pub cluster: crate::cluster::Cluster,
    /// Recent media bitrates.
    pub rates: Arc<MediaRates>,
    /// When the daemon started.
    pub started: Instant,
    /// The socket's path, for `status`.
    pub socket: PathBuf,
}

/// The daemon's name and version as the handshake reports it.
pub fn daemon_name() -> String {
    format!("sfud {}", env!("CARGO_PKG_VERSION"))
}

/// Answers one request of the operator (the handshake is done by the
/// connection); in a cluster, requests about a room another node serves
/// are answered by that node.
pub async fn handle(ctx: &Context, request: Request) -> Response {
    handle_within(ctx, request, Reach::Cluster).await
}

/// Answers one request, acting on the nodes `reach` allows.
pub async fn handle_within(ctx: &Context, request: Request, reach: Reach) -> Response {
    match respond(ctx, request, reach).await {
        Ok(response) => response,
        Err(error) => Response::Error(error),
    }
}

async fn respond(ctx: &Context, request: Request, reach: Reach) -> Result<Response, ControlError> {
    if reach == Reach::Cluster {
        if let Some(answer) = forward::to_owner(ctx, &request).await {
            return answer;
        }
    }
    match request {
        Request::Hello { .. } => Err(ControlError::new(
            ErrorCode::BadRequest,
            "`hello` is only the first request of a connection",
        )),
        Request::Status => Ok(Response::Status(status(ctx).await)),
        Request::RoomsList => Ok(forward::rooms_list(ctx, reach).await),
        Request::RoomsShow { room } => {
            let detail = ctx.rooms.show(&room).await.map_err(refused)?;
            let node = ctx.cluster.node_id().map(str::to_owned);
            Ok(Response::Room(RoomDetail {
                summary: summary(detail.summary, node),
                members: detail.members.into_iter().map(peer).collect(),
            }))
        }
        Request::RoomsCreate {
            room,
            max_peers,
            mode,
        } => {
            // In a cluster, a room another node serves is not opened here.
            ctx.rooms.claim(&room).await.map_err(refused)?;
            ctx.rooms
                .create(&room, max_peers, mode)
                .await
                .map_err(refused)?;
            Ok(Response::RoomCreated { room })
        }
        Request::RoomsClose { room } => {
            let peers = ctx.rooms.close(&room).await.map_err(refused)?;
            Ok(Response::RoomClosed { room, peers })
        }
        Request::PeersKick { room, peer } => {
            ctx.rooms.kick(&room, &peer).await.map_err(refused)?;
            Ok(Response::PeerKicked { room, peer })
        }
        Request::PeersRole { room, peer, role } => {
            ctx.rooms
                .set_role(&room, &peer, role)
                .await
                .map_err(refused)?;
            Ok(Response::RoleChanged { room, peer, role })
        }
        Request::PeersMute { room, peer, kind } => {
            ctx.rooms.mute(&room, &peer, kind).await.map_err(refused)?;
            Ok(Response::PeerMuted { room, peer, kind })
        }
        Request::TokenCreate {
            room,
            name,
            role,
            ttl_secs,
            allow_duplicate_name,
        } => {
            if ttl_secs == 0 {
                return Err(ControlError::new(
                    ErrorCode::BadRequest,
                    "the token's lifetime must be at least one second",
                ));
            }
            let token = ctx
                .gate
                .mint(
                    &room,
                    &name,
                    role,
                    std::time::Duration::from_secs(ttl_secs),
                    allow_duplicate_name,
                )
                .map_err(refused)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Ok(Response::Token {
                token,
                expires_at: now + ttl_secs,
            })
        }
        Request::RecordStart { room } => ctx
            .recorder
            .start(&room)
            .await
            .map(Response::RecordingStarted)
            .map_err(recording_error),
        Request::RecordStop { room } => ctx
            .recorder
            .stop(&room)
            .await
            .map(Response::RecordingStopped)
            .map_err(recording_error),
        Request::RecordList => Ok(Response::Recordings {
            recordings: ctx.recorder.list().await,
        }),
        Request::ConfigCheck => match ctx.reloader.check() {
            Ok(path) => Ok(Response::ConfigValid {
                path: path.map(|p| p.display().to_string()),
            }),
            Err(e) => Err(invalid_config(&e)),
        },
        Request::ClusterStatus => match ctx.cluster.status().await {
            Ok(status) => Ok(Response::Cluster(status)),
            Err(e) => Err(cluster_error(&e)),
        },
        Request::Reload => match ctx.reloader.reload() {
            Ok(done) => Ok(Response::Reloaded(sfu_proto::control::ReloadReport {
                path: done.path.map(|p| p.display().to_string()),
                changed_live: done.plan.changed_live,
                needs_restart: done.plan.needs_restart,
            })),
            Err(e) => Err(invalid_config(&e)),
        },
    }
}

fn invalid_config(error: &crate::config::ConfigError) -> ControlError {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    ControlError::new(ErrorCode::InvalidConfig, message)
}

async fn status(ctx: &Context) -> Status {
    let rooms = ctx.rooms.counts();
    let per_worker: Vec<crate::media::MediaStats> = ctx
        .media
        .worker_stats()
        .await
        .into_iter()
        .map(Result::unwrap_or_default)
        .collect();
    let media = crate::media::MediaStats::sum(&per_worker);
    let workers = per_worker
        .iter()
        .zip(ctx.rooms.worker_counts())
        .map(|(m, r)| sfu_proto::control::WorkerStatus {
            rooms: r.rooms,
            peers: r.peers,
            connections: m.connections,
            rtp_forwarded: m.rtp_forwarded,
        })
        .collect();
    let rates = ctx.rates.latest();
    let reloader_path = ctx.reloader.path();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_secs: ctx.started.elapsed().as_secs(),
        socket: ctx.socket.display().to_string(),
        config: reloader_path.map(|p| p.display().to_string()),
        rooms: rooms.rooms,
        peers: rooms.peers,
        connections: media.connections,
        tracks: media.tracks,
        rtp_in: media.rtp_in,
        rtp_forwarded: media.rtp_forwarded,
        bytes_in: media.bytes_in,
        bytes_out: media.bytes_out,
        bitrate_in_bps: rates.in_bps,
        bitrate_out_bps: rates.out_bps,
        recordings: Some(ctx.recorder.recording_count().await),
        workers,
    }
}

/// A cluster error as a control error with a stable code.
pub(super) fn cluster_error(e: &crate::cluster::ClusterError) -> ControlError {
    let code = match e {
        crate::cluster::ClusterError::NotClustered => ErrorCode::NotClustered,
        crate::cluster::ClusterError::Unavailable { .. } => ErrorCode::ClusterUnavailable,
    };
    ControlError::new(code, e.to_string())
}

/// A recorder error as a control error with a stable code.
fn recording_error(e: crate::recording::RecordError) -> ControlError {
    use crate::recording::RecordError as E;
    let code = match &e {
        E::UnknownRoom(_) => ErrorCode::UnknownRoom,
        E::AlreadyRecording(_) => ErrorCode::AlreadyRecording,
        E::NotRecording(_) => ErrorCode::NotRecording,
        E::Unavailable(_) => ErrorCode::NotAvailable,
        E::Storage { .. } => ErrorCode::RecordingFailed,
        E::ShuttingDown => ErrorCode::ShuttingDown,
        E::Internal(_) => ErrorCode::Internal,
    };
    ControlError::new(code, e.to_string())
}

/// A room refusal as a control error with the matching code.
fn refused(refusal: Refusal) -> ControlError {
    let code = match refusal.code {
        RoomErrorCode::UnknownRoom => ErrorCode::UnknownRoom,
        RoomErrorCode::UnknownPeer => ErrorCode::UnknownPeer,
        RoomErrorCode::RoomExists => ErrorCode::RoomExists,
        RoomErrorCode::TooManyRooms => ErrorCode::TooManyRooms,
        RoomErrorCode::BadName => ErrorCode::BadName,
        RoomErrorCode::ShuttingDown => ErrorCode::ShuttingDown,
        RoomErrorCode::Internal => ErrorCode::Internal,
        _ => ErrorCode::Refused,
    };
    ControlError::new(code, refusal.message)
}

/// A room's line, served by `node` (in a cluster).
pub(super) fn summary(s: report::RoomSummary, node: Option<String>) -> RoomSummary {
    RoomSummary {
        node,
        name: s.name,
        mode: s.mode,
        peers: s.peers,
        tracks: s.tracks,
        max_peers: s.max_peers,
        age_secs: s.age_secs,
        persistent: s.persistent,
    }
}

fn connection(c: crate::media::ConnectionReport) -> ConnectionReport {
    ConnectionReport {
        state: c.state.to_owned(),
        remote: c.remote,
    }
}

fn peer(p: report::PeerDetail) -> PeerDetail {
    PeerDetail {
        id: p.id,
        name: p.name,
        role: p.role,
        muted: p.muted,
        silent: p.silent,
        joined_secs: p.joined_secs,
        publish: p.publish.map(connection),
        subscribe: p.subscribe.map(connection),
        tracks: p
            .tracks
            .into_iter()
            .map(|t| TrackDetail {
                id: t.id,
                kind: t.kind.to_owned(),
                codec: t.codec,
                packets: t.packets,
                bytes: t.bytes,
                bitrate_bps: t.bitrate_bps,
                subscribers: t.subscribers,
                layers: t
                    .layers
                    .into_iter()
                    .map(|l| LayerDetail {
                        rid: l.rid,
                        bitrate_bps: l.bitrate_bps,
                        active: l.active,
                        paused: l.paused,
                    })
                    .collect(),
            })
            .collect(),
        downlink_bps: p.downlink_bps,
        worker: p.worker,
        receiving: p
            .receiving
            .into_iter()
            .map(|r| ReceivedLayer {
                track: r.track,
                layer: r.layer,
                target: r.target,
                paused: r.prefs.paused,
                starved: r.starved,
                max_width: r.prefs.max_width,
                max_height: r.prefs.max_height,
                max_layer: r.prefs.max_layer,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_refusals_keep_their_meaning() {
        let cases = [
            (RoomErrorCode::UnknownRoom, ErrorCode::UnknownRoom),
            (RoomErrorCode::UnknownPeer, ErrorCode::UnknownPeer),
            (RoomErrorCode::RoomExists, ErrorCode::RoomExists),
            (RoomErrorCode::BadRequest, ErrorCode::Refused),
        ];
        for (room, control) in cases {
            let error = refused(Refusal::new(room, "why"));
            assert_eq!((error.code, error.message.as_str()), (control, "why"));
        }
    }
}
