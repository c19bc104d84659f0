//! Rooms: who is in which room, who receives what, and the negotiation
//! sequencing that follows. One actor task per room ([`actor`]) owns a plain
//! [`state::Room`]; the [`RoomRegistry`] finds or creates rooms by name.

mod actor;
pub mod report;
mod speaking;
pub mod state;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sfu_proto::signaling::{
    CandidateInit, ErrorCode, IceServer, Role, RoomMode, ServerMessage, TrackKind,
};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{Claim, Placement};
use crate::media::{MediaHandle, PeerId};
use crate::supervisor::{Stage, Supervisor};

/// What a room sends to a participant's session.
#[derive(Debug)]
pub enum Outbound {
    /// A message to write to the socket.
    Message(ServerMessage),
    /// End the session: write the error (if any) and close the socket.
    Close(Option<(ErrorCode, String)>),
}

/// A session's mailbox, bounded: a client that does not read is dropped.
pub type OutboundTx = mpsc::Sender<Outbound>;

/// A refused request: the code and message sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// Stable wire code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Room limits, from the `[rooms]` config section.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    /// Participants per room.
    pub max_peers: usize,
    /// Rooms per daemon.
    pub max_rooms: usize,
    /// Whether a join may create a room.
    pub auto_create: bool,
    /// Participants per mesh room.
    pub mesh_max_peers: usize,
}

impl RoomLimits {
    fn max_peers_for(&self, mode: RoomMode) -> usize {
        match mode {
            RoomMode::Sfu => self.max_peers,
            RoomMode::Mesh => self.mesh_max_peers,
        }
    }
}

pub(crate) enum RoomMsg {
    Join {
        peer: PeerId,
        name: String,
        role: Role,
        mode: Option<RoomMode>,
        allow_duplicate_name: bool,
        /// Whether it receives the others' media (a WHIP publisher does not).
        receives: bool,
        out: OutboundTx,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// A viewer's own offer (WHEP), answered with the room's first
    /// speaker's tracks.
    View {
        peer: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<crate::media::Negotiated, Refusal>>,
    },
    Offer {
        peer: PeerId,
        sdp: String,
        screens: Vec<String>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Answer {
        peer: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Candidate {
        peer: PeerId,
        pc: sfu_proto::signaling::PcKind,
        candidate: Option<CandidateInit>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Leave {
        peer: PeerId,
    },
    Signal {
        peer: PeerId,
        to: String,
        data: serde_json::Value,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    TrackSettings {
        peer: PeerId,
        track: String,
        prefs: crate::media::TrackPrefs,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    SetRole {
        peer: String,
        role: Role,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Mute {
        peer: String,
        kind: TrackKind,
        muted: bool,
        by_operator: bool,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Media(crate::media::MediaEvent),
    Report {
        reply: oneshot::Sender<report::RoomDetail>,
    },
    Close {
        why: (ErrorCode, String),
        reply: oneshot::Sender<usize>,
    },
    Kick {
        peer: String,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Watch {
        events: mpsc::UnboundedSender<RoomEvent>,
        reply: oneshot::Sender<Vec<(PeerId, String)>>,
    },
}

/// A change of membership, told to a room's watchers (the recorder). The
/// channel closes when the room ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// Someone joined.
    Joined {
        /// Their id.
        peer: PeerId,
        /// Their display name.
        name: String,
    },
    /// Someone left or was removed.
    Left {
        /// Their id.
        peer: PeerId,
    },
}

/// A running room's mailbox.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::Sender<RoomMsg>,
    instance: u64,
    /// How many participants the room has, as its actor last published it:
    /// counts are read without asking the room (or media) anything.
    peers: Arc<AtomicUsize>,
    /// The media worker that serves its connections.
    worker: usize,
}

fn gone() -> Refusal {
    Refusal::new(ErrorCode::NotJoined, "you are no longer in this room")
}

impl RoomHandle {
    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), Refusal>>) -> RoomMsg,
    ) -> Result<(), Refusal> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Apply a publish offer; the answer arrives through the session's mailbox.
    /// A publish offer; `screens` names (by `a=msid` track id) its video
    /// tracks that share a screen.
    pub async fn offer(
        &self,
        peer: PeerId,
        sdp: String,
        screens: Vec<String>,
    ) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::Offer {
            peer,
            sdp,
            screens,
            reply,
        })
        .await
    }

    /// Answer a viewer's own offer (WHEP) with the room's first speaker's
    /// tracks.
    pub async fn view(
        &self,
        peer: PeerId,
        sdp: String,
    ) -> Result<crate::media::Negotiated, Refusal> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(RoomMsg::View { peer, sdp, reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Apply a subscribe answer.
    pub async fn answer(&self, peer: PeerId, sdp: String) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::Answer { peer, sdp, reply })
            .await
    }

    /// Add a remote candidate (`None` ends them).
    pub async fn candidate(
        &self,
        peer: PeerId,
        pc: sfu_proto::signaling::PcKind,
        candidate: Option<CandidateInit>,
    ) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::Candidate {
            peer,
            pc,
            candidate,
            reply,
        })
        .await
    }

    /// Relay `data` to another participant of a mesh room.
    pub async fn signal(
        &self,
        peer: PeerId,
        to: String,
        data: serde_json::Value,
    ) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::Signal {
            peer,
            to,
            data,
            reply,
        })
        .await
    }

    /// How `peer` wants one of the video tracks it receives.
    pub async fn track_settings(
        &self,
        peer: PeerId,
        track: String,
        prefs: crate::media::TrackPrefs,
    ) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::TrackSettings {
            peer,
            track,
            prefs,
            reply,
        })
        .await
    }

    /// Mutes or unmutes the participant's own track of `kind`.
    pub async fn mute(&self, peer: PeerId, kind: TrackKind, muted: bool) -> Result<(), Refusal> {
        self.call(|reply| RoomMsg::Mute {
            peer: peer.to_string(),
            kind,
            muted,
            by_operator: false,
            reply,
        })
        .await
    }

    /// Leave the room (no reply).
    pub async fn leave(&self, peer: PeerId) {
        let _ = self.tx.send(RoomMsg::Leave { peer }).await;
    }
}

struct RegistryInner {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    media: MediaHandle,
    limits: Mutex<RoomLimits>,
    ice_servers: Mutex<Vec<IceServer>>,
    /// Mints each participant's credentials for the embedded TURN server.
    turn: Mutex<Option<crate::turn::Issuer>>,
    next_instance: AtomicU64,
    /// Runs the room actors.
    supervisor: Supervisor,
    /// Which node serves a room, in a cluster.
    cluster: crate::cluster::Cluster,
}

impl RegistryInner {
    /// See [`RoomRegistry::ice_servers_for`].
    fn ice_servers_for(&self, peer: PeerId) -> Vec<IceServer> {
        let mut servers = lock(&self.ice_servers).clone();
        if let Some(turn) = lock(&self.turn).as_ref() {
            servers.push(turn.ice_server(peer));
        }
        servers
    }
}

/// Rooms open and the participants in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomCounts {
    /// Rooms open.
    pub rooms: usize,
    /// Participants in all of them.
    pub peers: usize,
}

fn bad_room_name() -> Refusal {
    Refusal::new(
        ErrorCode::BadName,
        format!(
            "room name must be 1 to {} printable characters",
            state::MAX_NAME_CHARS
        ),
    )
}

/// Finds rooms by name and creates them on demand.
#[derive(Clone)]
pub struct RoomRegistry {
    inner: Arc<RegistryInner>,
}

/// The result of a successful join.
pub struct Membership {
    /// The room joined.
    pub room: RoomHandle,
    /// The participant's id.
    pub peer: PeerId,
}

impl RoomRegistry {
    /// An empty registry.
    pub fn new(
        media: MediaHandle,
        limits: RoomLimits,
        ice_servers: Vec<IceServer>,
        supervisor: Supervisor,
        cluster: crate::cluster::Cluster,
    ) -> Self {
        RoomRegistry {
            inner: Arc::new(RegistryInner {
                rooms: Mutex::new(HashMap::new()),
                media,
                limits: Mutex::new(limits),
                ice_servers: Mutex::new(ice_servers),
                turn: Mutex::new(None),
                next_instance: AtomicU64::new(1),
                supervisor,
                cluster,
            }),
        }
    }

    /// The media of room `room` (its worker's), if it is open.
    pub fn media_of(&self, room: &str) -> Option<MediaHandle> {
        let worker = self.handle(room)?.worker;
        Some(self.inner.media.on_worker(worker))
    }

    /// Rooms and participants on each media worker, in order.
    pub fn worker_counts(&self) -> Vec<RoomCounts> {
        workers::load(&lock(&self.inner.rooms), &self.inner.media.worker_peers())
    }

    /// Whether room `room` is open on this node.
    pub fn is_open(&self, room: &str) -> bool {
        self.handle(room).is_some()
    }

    /// Names of the rooms alive.
    pub fn room_names(&self) -> Vec<String> {
        let rooms = lock(&self.inner.rooms);
        let mut names: Vec<String> = rooms
            .iter()
            .filter(|(_, h)| !h.tx.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// How many rooms are open and how many participants they hold, from
    /// the counts each room publishes: cheap enough for `/metrics`, `sfuctl
    /// status` and the systemd status however many rooms there are.
    pub fn counts(&self) -> RoomCounts {
        let rooms = lock(&self.inner.rooms);
        let mut counts = RoomCounts::default();
        for h in rooms.values().filter(|h| !h.tx.is_closed()) {
            counts.rooms += 1;
            counts.peers += h.peers.load(Ordering::Relaxed);
        }
        counts
    }

    /// In a cluster, before a room not open here is created: where it is
    /// to be served. A room open here is here; otherwise see
    /// [`Cluster::claim`](crate::cluster::Cluster::claim).
    pub async fn place(&self, room: &str, placement: Placement) -> Result<Claim, Refusal> {
        if !state::valid_name(room) {
            return Err(bad_room_name());
        }
        if self.handle(room).is_some() {
            return Ok(Claim::Here);
        }
        Ok(self.inner.cluster.claim(room, placement).await)
    }

    /// In a cluster, before a room not open here is created here: takes its
    /// lease, or refuses with `room_elsewhere` naming the node that serves
    /// it. Nothing to do on a single node.
    pub async fn claim(&self, room: &str) -> Result<(), Refusal> {
        match self.place(room, Placement::Here).await?.refusal(room) {
            Some((code, why)) => Err(Refusal::new(code, why)),
            None => Ok(()),
        }
    }

    /// Joins `room` (creating it if allowed). The `joined` message and
    /// everything after it arrive in `out`. In a cluster the caller placed
    /// the room first ([`place`](Self::place)).
    pub async fn join(
        &self,
        admission: &crate::auth::Admission,
        mode: Option<RoomMode>,
        out: OutboundTx,
    ) -> Result<Membership, Refusal> {
        self.join_receiving(admission, mode, out, true).await
    }

    /// Joins as a participant the room never offers a subscribe
    /// connection: a WHIP publisher (it receives nothing), a WHEP viewer
    /// (its own offer gets it its tracks, [`RoomHandle::view`]).
    pub async fn join_unsubscribed(
        &self,
        admission: &crate::auth::Admission,
        mode: Option<RoomMode>,
        out: OutboundTx,
    ) -> Result<Membership, Refusal> {
        self.join_receiving(admission, mode, out, false).await
    }

    async fn join_receiving(
        &self,
        admission: &crate::auth::Admission,
        mode: Option<RoomMode>,
        out: OutboundTx,
        receives: bool,
    ) -> Result<Membership, Refusal> {
        let room = admission.room.as_str();
        if !state::valid_name(room) {
            return Err(bad_room_name());
        }
        // Checked here too, so that a refused name does not create the room.
        if !state::valid_name(&admission.name) {
            return Err(Refusal::new(
                ErrorCode::BadName,
                format!(
                    "display name must be 1 to {} printable characters",
                    state::MAX_NAME_CHARS
                ),
            ));
        }
        // A room that empties between our lookup and our join closes its
        // mailbox; the next attempt creates a fresh one.
        for _attempt in 0..3 {
            let handle = self.find_or_create(room, mode)?;
            let peer = PeerId(rand::random::<u64>() | 1);
            let (reply, rx) = oneshot::channel();
            let msg = RoomMsg::Join {
                peer,
                name: admission.name.clone(),
                role: admission.role,
                mode,
                allow_duplicate_name: admission.allow_duplicate_name,
                receives,
                out: out.clone(),
                reply,
            };
            if handle.tx.send(msg).await.is_err() {
                continue;
            }
            match rx.await {
                Ok(Ok(())) => return Ok(Membership { room: handle, peer }),
                Ok(Err(refusal)) => return Err(refusal),
                Err(_) => continue,
            }
        }
        Err(Refusal::new(
            ErrorCode::Internal,
            "the room kept closing while joining; try again",
        ))
    }

    fn find_or_create(&self, room: &str, mode: Option<RoomMode>) -> Result<RoomHandle, Refusal> {
        let limits = lock(&self.inner.limits).clone();
        if !limits.auto_create {
            if let Some(h) = self.handle(room) {
                return Ok(h);
            }
            return Err(Refusal::new(
                ErrorCode::UnknownRoom,
                format!("room `{room}` does not exist and rooms are not created on join"),
            ));
        }
        self.spawn_room(room, mode, None, false, true)
    }

    /// The running room of that name.
    fn handle(&self, room: &str) -> Option<RoomHandle> {
        lock(&self.inner.rooms)
            .get(room)
            .filter(|h| !h.tx.is_closed())
            .cloned()
    }

    /// Returns the running room, or starts one; with `reuse` false an
    /// existing room is an error.
    fn spawn_room(
        &self,
        room: &str,
        mode: Option<RoomMode>,
        max_peers: Option<usize>,
        persistent: bool,
        reuse: bool,
    ) -> Result<RoomHandle, Refusal> {
        let limits = lock(&self.inner.limits).clone();
        let mut rooms = lock(&self.inner.rooms);
        if let Some(h) = rooms.get(room) {
            if !h.tx.is_closed() {
                if reuse {
                    return Ok(h.clone());
                }
                return Err(Refusal::new(
                    ErrorCode::RoomExists,
                    format!("room `{room}` already exists"),
                ));
            }
        }
        rooms.retain(|_, h| !h.tx.is_closed());
        if rooms.len() >= limits.max_rooms {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!("the server already has {} rooms", limits.max_rooms),
            ));
        }
        let instance = self.inner.next_instance.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1024);
        let worker =
            workers::least_loaded(&workers::load(&rooms, &self.inner.media.worker_peers()));
        let handle = RoomHandle {
            tx,
            instance,
            peers: Arc::new(AtomicUsize::new(0)),
            worker,
        };
        let mode = mode.unwrap_or_default();
        let room_state = state::Room::new(
            room.to_owned(),
            mode,
            max_peers.unwrap_or(limits.max_peers_for(mode)),
        );
        let actor = actor::RoomActor::new(
            room_state,
            &handle,
            self.inner.media.on_worker(worker),
            lock(&self.inner.ice_servers).clone(),
            Arc::downgrade(&self.inner),
            persistent,
        );
        self.inner
            .supervisor
            .spawn_until_stopped(Stage::Rooms, "room", actor.run(rx));
        rooms.insert(room.to_owned(), handle.clone());
        tracing::info!(room, persistent, worker, "room created");
        Ok(handle)
    }

    /// Every room, by name.
    pub async fn list(&self) -> Vec<report::RoomSummary> {
        let mut out = Vec::new();
        for name in self.room_names() {
            if let Ok(detail) = self.show(&name).await {
                out.push(detail.summary);
            }
        }
        out
    }

    /// One room in detail.
    pub async fn show(&self, room: &str) -> Result<report::RoomDetail, Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        h.tx.send(RoomMsg::Report { reply })
            .await
            .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))
    }

    /// Creates an empty room that stays until closed.
    pub async fn create(
        &self,
        room: &str,
        max_peers: Option<usize>,
        mode: Option<RoomMode>,
    ) -> Result<(), Refusal> {
        if !state::valid_name(room) {
            return Err(bad_room_name());
        }
        if max_peers == Some(0) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "max peers must be at least 1",
            ));
        }
        self.spawn_room(room, mode, max_peers, true, false)
            .map(|_| ())
    }

    /// Closes a room: every participant is told and disconnected. Returns
    /// how many were in it.
    pub async fn close(&self, room: &str) -> Result<usize, Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        let why = (
            ErrorCode::RoomClosed,
            "the room was closed by an operator".to_owned(),
        );
        h.tx.send(RoomMsg::Close { why, reply })
            .await
            .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))
    }

    /// Closes a room for `code`: every participant gets it with `message`
    /// and is disconnected.
    pub async fn close_because(
        &self,
        room: &str,
        code: ErrorCode,
        message: String,
    ) -> Result<usize, Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        h.tx.send(RoomMsg::Close {
            why: (code, message),
            reply,
        })
        .await
        .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))
    }

    /// Removes one participant, who is told why.
    pub async fn kick(&self, room: &str, peer: &str) -> Result<(), Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        h.tx.send(RoomMsg::Kick {
            peer: peer.to_owned(),
            reply,
        })
        .await
        .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))?
    }

    /// Changes a participant's role live.
    pub async fn set_role(&self, room: &str, peer: &str, role: Role) -> Result<(), Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        h.tx.send(RoomMsg::SetRole {
            peer: peer.to_owned(),
            role,
            reply,
        })
        .await
        .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))?
    }

    /// Mutes a participant's track of `kind` for the operator.
    pub async fn mute(&self, room: &str, peer: &str, kind: TrackKind) -> Result<(), Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (reply, rx) = oneshot::channel();
        h.tx.send(RoomMsg::Mute {
            peer: peer.to_owned(),
            kind,
            muted: true,
            by_operator: true,
            reply,
        })
        .await
        .map_err(|_| unknown_room(room))?;
        rx.await.map_err(|_| unknown_room(room))?
    }

    /// The members of `room` now (id and name), and from then on every join
    /// and leave; the channel closes when the room ends. Membership events
    /// are rare, so the channel is unbounded and the room never waits on it.
    pub async fn watch(
        &self,
        room: &str,
    ) -> Result<(Vec<(PeerId, String)>, mpsc::UnboundedReceiver<RoomEvent>), Refusal> {
        let h = self.handle(room).ok_or_else(|| unknown_room(room))?;
        let (events, rx) = mpsc::unbounded_channel();
        let (reply, members) = oneshot::channel();
        h.tx.send(RoomMsg::Watch { events, reply })
            .await
            .map_err(|_| unknown_room(room))?;
        let members = members.await.map_err(|_| unknown_room(room))?;
        Ok((members, rx))
    }

    /// New limits for rooms created from now on (and the room count).
    pub fn set_limits(&self, limits: RoomLimits) {
        *lock(&self.inner.limits) = limits;
    }

    /// The ICE servers handed to participant `peer` in `joined`: the
    /// configured ones, and the embedded TURN server with its own
    /// credentials.
    pub fn ice_servers_for(&self, peer: PeerId) -> Vec<IceServer> {
        self.inner.ice_servers_for(peer)
    }

    /// Hands participants credentials for the embedded TURN server.
    pub fn set_turn(&self, issuer: Option<crate::turn::Issuer>) {
        *lock(&self.inner.turn) = issuer;
    }

    /// Replaces the ICE servers handed to clients that join from now on.
    pub fn set_ice_servers(&self, servers: Vec<IceServer>) {
        *lock(&self.inner.ice_servers) = servers;
    }
}

fn unknown_room(room: &str) -> Refusal {
    Refusal::new(ErrorCode::UnknownRoom, format!("no room named `{room}`"))
}

/// Called by a room actor that emptied: forget it unless already replaced.
fn forget(registry: &Weak<RegistryInner>, name: &str, instance: u64) {
    if let Some(inner) = registry.upgrade() {
        let mut rooms = lock(&inner.rooms);
        if rooms.get(name).is_some_and(|h| h.instance == instance) {
            rooms.remove(name);
        }
    }
}

/// Locks a mutex that is never held across an await; a panic while holding
/// it cannot leave the maps half-updated, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
