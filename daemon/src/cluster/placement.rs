//! Which node serves a room: this node's rooms hold leases (see
//! [`lease`](super::lease)), taken before a room is created here, renewed
//! by one task, released when the room ends. A client's join for a room no
//! node holds places it on the least-loaded node of the directory; a join
//! for a room another node holds (or was placed on) is relayed there by
//! signaling. When Redis does not answer, rooms are created
//! here anyway and claimed once it does; a room that turns out to be held
//! elsewhere then, or whose lease another node took while this one was cut
//! off, is closed here with `room_moved`, and its participants join again.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::Duration;

use sfu_proto::control::cluster::ClusterNode;
use sfu_proto::signaling::ErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lease::{self, Holder, Lease};
use super::{Cluster, Inner};
use crate::rooms::RoomRegistry;

/// How long a room's lease lasts without renewal: a node that dies loses
/// its rooms within this.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often the owner renews its leases.
const RENEW_EVERY: Duration = Duration::from_millis(3_000);

/// How long the node serving a room, once learnt, is remembered for
/// clients' joins while Redis does not answer (so that they are relayed
/// there rather than opening a second copy of the room here).
const OWNER_MEMORY: Duration = Duration::from_secs(30);

/// Most owners remembered.
const MAX_REMEMBERED: usize = 10_000;

/// Where a room not open yet may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the least-loaded live node: a client's join.
    Anywhere,
    /// On this node: a join another node relayed here, an operator's
    /// `rooms create`, a room already open here.
    Here,
}

/// The node a new room goes to: the one with the fewest participants,
/// then the fewest rooms, this node on a tie (no relay), then by id.
pub fn least_loaded<'a>(nodes: &'a [ClusterNode], me: &str) -> Option<&'a ClusterNode> {
    nodes
        .iter()
        .min_by_key(|n| (n.peers, n.rooms, n.node_id != me, n.node_id.as_str()))
}

/// The node a client's join for a new room is relayed to, or `None` when
/// the room stays on this node. A node not in the directory yet has just
/// started and holds nothing: it is among the least loaded, so the room
/// stays (without this, a join on a node younger than its first
/// announcement went to an equally empty peer).
pub fn relay_target<'a>(nodes: &'a [ClusterNode], me: &str) -> Option<&'a ClusterNode> {
    if !nodes.iter().any(|n| n.node_id == me) {
        return None;
    }
    least_loaded(nodes, me).filter(|n| n.node_id != me)
}

/// Whether a room may be created on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Yes: this node holds its lease (or is a single node).
    Here,
    /// Yes for now: Redis did not answer; the lease is claimed later.
    Unclaimed,
    /// No: another node holds it, or it goes to another node.
    Elsewhere {
        /// That node's id.
        node_id: String,
        /// Where it serves signaling, if its directory entry says.
        url: Option<String>,
    },
}

impl Claim {
    /// The refusal a join gets for a room held elsewhere.
    pub fn refusal(&self, room: &str) -> Option<(ErrorCode, String)> {
        let Claim::Elsewhere { node_id, url } = self else {
            return None;
        };
        let at = url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default();
        Some((
            ErrorCode::RoomElsewhere,
            format!("room `{room}` is served by node {node_id}{at}"),
        ))
    }
}

impl Cluster {
    /// Before room `room` is created here: takes its lease, or says which
    /// node holds it; with [`Placement::Anywhere`], a room nobody holds
    /// goes to the least-loaded node, which takes the lease when the join
    /// is relayed to it.
    pub async fn claim(&self, room: &str, placement: Placement) -> Claim {
        let Some(inner) = &self.inner else {
            return Claim::Here;
        };
        if leases(inner).contains_key(room) {
            return Claim::Here;
        }
        // Redis does not answer: a client's join goes to the room's owner
        // if it was learnt lately, else the room opens here for now.
        let unclaimed = || match placement {
            Placement::Anywhere => remembered(inner, room).unwrap_or(Claim::Unclaimed),
            Placement::Here => Claim::Unclaimed,
        };
        let Ok(mut conn) = Self::connection(inner).await else {
            return unclaimed();
        };
        if placement == Placement::Anywhere {
            let placed = async {
                if lease::holder(&mut conn, room).await?.is_some() {
                    return Ok(None);
                }
                let nodes = super::directory::list(&mut conn).await?;
                Ok(
                    relay_target(&nodes, &inner.node_id).map(|n| Claim::Elsewhere {
                        node_id: n.node_id.clone(),
                        url: Some(n.url.clone()),
                    }),
                )
            };
            match Self::within(inner, placed).await {
                Ok(Some(elsewhere)) => return elsewhere,
                Ok(None) => {}
                Err(_) => return unclaimed(),
            }
        }
        let taken = Self::within(
            inner,
            lease::acquire(&mut conn, room, &inner.node_id, LEASE_TTL),
        )
        .await;
        match taken {
            Ok(Holder::Taken(lease)) => {
                leases(inner).insert(room.to_owned(), lease);
                Claim::Here
            }
            // This node's own lease from before a restart: it is this node's.
            Ok(Holder::Other { node_id, fence }) if node_id == inner.node_id => {
                let lease = Lease {
                    room: room.to_owned(),
                    node_id,
                    fence,
                };
                leases(inner).insert(room.to_owned(), lease);
                Claim::Here
            }
            Ok(Holder::Other { node_id, .. }) => {
                let url = super::directory::url_of(&mut conn, &node_id)
                    .await
                    .ok()
                    .flatten();
                if let Some(url) = &url {
                    remember(inner, room, &node_id, url);
                }
                Claim::Elsewhere { node_id, url }
            }
            Err(_) => unclaimed(),
        }
    }

    /// Every [`RENEW_EVERY`] until `stop`: renews the leases of this node's
    /// rooms, claims the rooms created while Redis did not answer, releases
    /// those of rooms that ended, and closes with `room_moved` the rooms
    /// another node holds. Then releases every lease.
    pub async fn keep_leases(self, rooms: RoomRegistry, stop: CancellationToken) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Ok(mut conn) = Self::connection(&inner).await else {
                continue;
            };
            let local: HashSet<String> = rooms.room_names().into_iter().collect();
            let held: Vec<Lease> = leases(&inner).values().cloned().collect();
            for lease in held {
                if !local.contains(&lease.room) {
                    let _ = lease::release(&mut conn, &lease).await;
                    leases(&inner).remove(&lease.room);
                    continue;
                }
                match lease::renew(&mut conn, &lease, LEASE_TTL).await {
                    Ok(true) | Err(_) => {}
                    // Expired while Redis was away: taken again if nobody
                    // else took it meanwhile.
                    Ok(false) => {
                        leases(&inner).remove(&lease.room);
                    }
                }
            }
            for room in &local {
                if leases(&inner).contains_key(room) {
                    continue;
                }
                if let Claim::Elsewhere { node_id, .. } = self.claim(room, Placement::Here).await {
                    warn!(%room, node = %node_id, "another node holds this room: closing it here");
                    let why = format!("room `{room}` moved to node {node_id}: join again");
                    let _ = rooms.close_because(room, ErrorCode::RoomMoved, why).await;
                }
            }
        }
        let held: Vec<Lease> = leases(&inner).drain().map(|(_, l)| l).collect();
        if held.is_empty() {
            return;
        }
        let release = async {
            let mut conn = Self::connection(&inner).await.ok()?;
            for lease in &held {
                lease::release(&mut conn, lease).await.ok()?;
            }
            Some(())
        };
        match tokio::time::timeout(Duration::from_millis(800), release).await {
            Ok(Some(())) => info!(rooms = held.len(), "released the rooms' leases"),
            _ => warn!(
                rooms = held.len(),
                "could not release the rooms' leases; they expire within 10 s"
            ),
        }
    }
}

/// Notes that `node_id` at `url` serves `room`.
fn remember(inner: &Inner, room: &str, node_id: &str, url: &str) {
    let mut owners = inner.owners.lock().unwrap_or_else(PoisonError::into_inner);
    let now = std::time::Instant::now();
    if owners.len() >= MAX_REMEMBERED {
        owners.retain(|_, (_, _, at)| now.duration_since(*at) < OWNER_MEMORY);
        if owners.len() >= MAX_REMEMBERED {
            return;
        }
    }
    owners.insert(room.to_owned(), (node_id.to_owned(), url.to_owned(), now));
}

/// The node learnt lately to serve `room`, as a claim.
fn remembered(inner: &Inner, room: &str) -> Option<Claim> {
    let owners = inner.owners.lock().unwrap_or_else(PoisonError::into_inner);
    let (node_id, url, at) = owners.get(room)?;
    (at.elapsed() < OWNER_MEMORY).then(|| Claim::Elsewhere {
        node_id: node_id.clone(),
        url: Some(url.clone()),
    })
}

fn leases(inner: &Inner) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Lease>> {
    inner.leases.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, peers: usize, rooms: usize) -> ClusterNode {
        ClusterNode {
            node_id: id.into(),
            url: format!("ws://{id}"),
            version: String::new(),
            rooms,
            peers,
            tracks: 0,
            forwarded_pps: 0,
            cpu_percent: 0,
            started_ms: 0,
            heartbeat_ms: 0,
        }
    }

    #[test]
    fn a_new_room_goes_to_the_node_with_fewest_participants_and_stays_here_on_a_tie() {
        let nodes = [node("a", 3, 1), node("b", 0, 0), node("c", 0, 0)];
        assert_eq!(least_loaded(&nodes, "a").map(|n| &n.node_id[..]), Some("b"));
        assert_eq!(least_loaded(&nodes, "c").map(|n| &n.node_id[..]), Some("c"));
        let nodes = [node("a", 2, 2), node("b", 2, 1)];
        assert_eq!(least_loaded(&nodes, "a").map(|n| &n.node_id[..]), Some("b"));
        assert!(least_loaded(&[], "a").is_none());
    }

    #[test]
    fn a_join_is_relayed_only_to_a_less_loaded_node_and_never_by_a_node_not_listed_yet() {
        let nodes = [node("a", 3, 1), node("b", 0, 0)];
        assert_eq!(relay_target(&nodes, "a").map(|n| &n.node_id[..]), Some("b"));
        assert!(
            relay_target(&nodes, "b").is_none(),
            "the least loaded keeps it"
        );
        let nodes = [node("a", 0, 0), node("b", 0, 0)];
        assert!(relay_target(&nodes, "a").is_none(), "a tie keeps it");
        // "c" started a moment ago: its first announcement is not in yet.
        assert!(relay_target(&nodes, "c").is_none());
        assert!(relay_target(&[], "c").is_none());
    }
}
