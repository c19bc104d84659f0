//! The operator's requests across a cluster: `rooms list` on any node
//! lists every node's rooms with the node serving each, and the requests
//! about one room (`rooms show|close`, `peers kick|role`, `record
//! start|stop`) go to the node that serves it when that is not this one.
//! Nodes answer each other through `/cluster/control` (see
//! [`crate::cluster::remote`]), acting only on themselves there.

use futures_util::future::join_all;
use sfu_proto::control::{ControlError, ErrorCode, Request, Response};

use super::handler::Context;

/// Where a request may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The operator's socket: the whole cluster.
    Cluster,
    /// Another node's request: this node only.
    ThisNode,
}

/// The room a request is about, when it acts on one room's owner.
pub fn room_of(request: &Request) -> Option<&str> {
    match request {
        Request::RoomsShow { room }
        | Request::RoomsClose { room }
        | Request::PeersKick { room, .. }
        | Request::PeersRole { room, .. }
        | Request::PeersMute { room, .. }
        | Request::RecordStart { room }
        | Request::RecordStop { room } => Some(room),
        _ => None,
    }
}

/// Whether another node may ask this one for `request`.
pub fn answers_nodes(request: &Request) -> bool {
    matches!(request, Request::RoomsList) || room_of(request).is_some()
}

/// The owner's answer to a request about a room this node does not serve
/// and another node does; `None` to answer here.
pub async fn to_owner(ctx: &Context, request: &Request) -> Option<Result<Response, ControlError>> {
    let room = room_of(request)?;
    if ctx.rooms.is_open(room) {
        return None;
    }
    let owner = match ctx.cluster.owner_elsewhere(room).await {
        Ok(owner) => owner?,
        Err(e) => return Some(Err(super::handler::cluster_error(&e))),
    };
    Some(match ctx.cluster.ask(&owner.url, request).await {
        Ok(Response::Error(e)) => Err(e),
        Ok(response) => Ok(response),
        Err(why) => Err(ControlError::new(
            ErrorCode::ClusterUnavailable,
            format!(
                "room `{room}` is served by node {}, which did not answer: {why}",
                owner.node_id
            ),
        )),
    })
}

/// Every room of the cluster: this node's, then each other node's, with
/// the nodes that did not answer.
pub async fn rooms_list(ctx: &Context, reach: Reach) -> Response {
    let node = ctx.cluster.node_id().map(str::to_owned);
    let mut rooms: Vec<_> = ctx
        .rooms
        .list()
        .await
        .into_iter()
        .map(|s| super::handler::summary(s, node.clone()))
        .collect();
    let mut unreachable = Vec::new();
    if reach == Reach::Cluster && node.is_some() {
        match ctx.cluster.other_nodes().await {
            Ok(others) => {
                let answers = join_all(
                    others
                        .iter()
                        .map(|n| ctx.cluster.ask(&n.url, &Request::RoomsList)),
                )
                .await;
                for (n, answer) in others.iter().zip(answers) {
                    match answer {
                        Ok(Response::Rooms { rooms: theirs, .. }) => rooms.extend(theirs),
                        _ => unreachable.push(n.node_id.clone()),
                    }
                }
            }
            Err(e) => unreachable.push(format!("the directory ({e})")),
        }
    }
    rooms.sort_by(|a, b| a.name.cmp(&b.name).then(a.node.cmp(&b.node)));
    Response::Rooms { rooms, unreachable }
}
