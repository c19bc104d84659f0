//! How the rooms reach the media workers: [`MediaHandle`], and where each
//! participant's connections are placed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sfu_proto::signaling::{CandidateInit, PcKind};
use tokio::sync::{mpsc, oneshot};

use super::{
    EventSink, MediaCommand, MediaError, MediaStats, Negotiated, PeerId, PeerMediaReport, Tap,
    TrackId, TrackInfo, TrackPrefs,
};

/// The placements' lock: held for a lookup or an insert, never across an
/// await; a panic while holding it cannot leave the map half-changed.
fn lock(m: &Mutex<HashMap<PeerId, usize>>) -> MutexGuard<'_, HashMap<PeerId, usize>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How one media worker is reached.
pub(crate) struct WorkerTx {
    /// Its commands.
    pub tx: mpsc::Sender<MediaCommand>,
    /// The UDP addresses it serves on.
    pub local_addrs: Vec<SocketAddr>,
    /// Its ICE-TCP listeners' addresses.
    pub tcp_addrs: Vec<SocketAddr>,
}

/// Which worker each participant's connections live on, and how many
/// participants each worker has.
#[derive(Default)]
struct Placements {
    peers: Mutex<HashMap<PeerId, usize>>,
    counts: Vec<AtomicUsize>,
}

/// A cheap, cloneable way to talk to the media workers. A room's handle
/// is its worker's (see [`MediaHandle::on_worker`]); its participants are
/// placed there, or on other workers once the room is large (see
/// [`MediaHandle::place`]), and requests about a participant go to its
/// worker. Counters are summed over all of them.
#[derive(Clone)]
pub struct MediaHandle {
    workers: Arc<Vec<WorkerTx>>,
    placements: Arc<Placements>,
    /// Participants of one room its worker takes before the room spreads
    /// (0: never).
    spread_after: usize,
    /// The room's worker.
    worker: usize,
}

impl MediaHandle {
    pub(crate) fn new(workers: Vec<WorkerTx>, spread_after: usize) -> MediaHandle {
        let placements = Placements {
            peers: Mutex::default(),
            counts: workers.iter().map(|_| AtomicUsize::new(0)).collect(),
        };
        MediaHandle {
            workers: Arc::new(workers),
            placements: Arc::new(placements),
            spread_after,
            worker: 0,
        }
    }

    /// How many workers serve media.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The same media, for a room on worker `worker`.
    pub fn on_worker(&self, worker: usize) -> MediaHandle {
        MediaHandle {
            worker: worker % self.workers.len().max(1),
            ..self.clone()
        }
    }

    /// Places a new participant of this handle's room, of whom `room_here`
    /// are on the room's worker already: there, until the room holds
    /// `rtc.room_spread_peers` participants on it; then on the worker with
    /// the fewest participants, so that the room's fan-out runs on several
    /// cores. Its worker.
    pub fn place(&self, peer: PeerId, room_here: usize) -> usize {
        let counts = &self.placements.counts;
        let count = |w: usize| {
            counts
                .get(w)
                .map_or(usize::MAX, |c| c.load(Ordering::Relaxed))
        };
        let worker = if self.spread_after == 0 || room_here < self.spread_after {
            self.worker
        } else {
            (0..counts.len())
                .min_by_key(|&w| (count(w), w != self.worker, w))
                .unwrap_or(self.worker)
        };
        let old = lock(&self.placements.peers).insert(peer, worker);
        if let Some(c) = old.and_then(|w| counts.get(w)) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = counts.get(worker) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        worker
    }

    /// The worker of `peer`'s connections (the room's until it is placed).
    pub fn worker_of(&self, peer: PeerId) -> usize {
        lock(&self.placements.peers)
            .get(&peer)
            .copied()
            .unwrap_or(self.worker)
    }

    /// How many of `peers` are on worker `worker`.
    pub fn count_on(&self, peers: impl Iterator<Item = PeerId>, worker: usize) -> usize {
        let placed = lock(&self.placements.peers);
        peers
            .filter(|p| placed.get(p).is_some_and(|w| *w == worker))
            .count()
    }

    /// Participants placed on each worker, in order.
    pub fn worker_peers(&self) -> Vec<usize> {
        self.placements
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker requests about peers go to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The ICE-TCP addresses media is served on, every worker's.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.workers
            .iter()
            .flat_map(|w| w.tcp_addrs.iter().copied())
            .collect()
    }

    /// The UDP addresses media is served on, every worker's.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.workers
            .iter()
            .flat_map(|w| w.local_addrs.iter().copied())
            .collect()
    }

    /// Where requests about `peer` go.
    fn tx(&self, peer: PeerId) -> &mpsc::Sender<MediaCommand> {
        &self.workers[self.worker_of(peer).min(self.workers.len() - 1)].tx
    }

    async fn call<T>(
        &self,
        peer: PeerId,
        make: impl FnOnce(oneshot::Sender<T>) -> MediaCommand,
    ) -> Result<T, MediaError> {
        Self::call_on(self.tx(peer), make).await
    }

    async fn call_on<T>(
        tx: &mpsc::Sender<MediaCommand>,
        make: impl FnOnce(oneshot::Sender<T>) -> MediaCommand,
    ) -> Result<T, MediaError> {
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .await
            .map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    /// Apply a publish offer and return the answer.
    pub async fn publish(
        &self,
        peer: PeerId,
        events: EventSink,
        sdp: String,
        screens: Vec<String>,
    ) -> Result<Negotiated, MediaError> {
        self.call(peer, |reply| MediaCommand::Publish {
            peer,
            events,
            sdp,
            screens,
            reply,
        })
        .await?
    }

    /// Set the tracks forwarded to `peer`; `Some(offer)` when renegotiation is needed.
    pub async fn subscribe(
        &self,
        peer: PeerId,
        events: EventSink,
        tracks: Vec<TrackInfo>,
    ) -> Result<Option<Negotiated>, MediaError> {
        self.pipe_here(peer, &tracks).await?;
        self.call(peer, |reply| MediaCommand::Subscribe {
            peer,
            events,
            tracks,
            reply,
        })
        .await?
    }

    /// Answers a viewer's own offer (WHEP) with `tracks`, piped to its
    /// worker first where another owns them (see [`Self::subscribe`]).
    pub async fn view(
        &self,
        peer: PeerId,
        events: EventSink,
        sdp: String,
        tracks: Vec<TrackInfo>,
    ) -> Result<Negotiated, MediaError> {
        self.pipe_here(peer, &tracks).await?;
        self.call(peer, |reply| MediaCommand::View {
            peer,
            events,
            sdp,
            tracks,
            reply,
        })
        .await?
    }

    /// Tracks other workers own reach `peer`'s worker through pipes: each
    /// owner pipes (or keeps piping) them there, and that worker mirrors
    /// them before legs are made of them.
    async fn pipe_here(&self, peer: PeerId, tracks: &[TrackInfo]) -> Result<(), MediaError> {
        for track in tracks {
            let owner = track.id.worker();
            let to = self.worker_of(peer);
            let Some(w) = self.workers.get(owner).filter(|_| owner != to) else {
                continue;
            };
            let id = track.id;
            let spec = Self::call_on(&w.tx, |reply| MediaCommand::Pipe {
                track: id,
                to,
                reply,
            })
            .await?;
            if let Some(spec) = spec {
                self.tx(peer)
                    .send(MediaCommand::Mirror { spec })
                    .await
                    .map_err(|_| MediaError::Stopped)?;
            }
        }
        Ok(())
    }

    /// Apply a subscribe answer.
    pub async fn subscribe_answer(&self, peer: PeerId, sdp: String) -> Result<(), MediaError> {
        self.call(peer, |reply| MediaCommand::SubscribeAnswer {
            peer,
            sdp,
            reply,
        })
        .await?
    }

    /// Add a remote ICE candidate.
    pub async fn remote_candidate(
        &self,
        peer: PeerId,
        pc: PcKind,
        candidate: CandidateInit,
    ) -> Result<(), MediaError> {
        self.call(peer, |reply| MediaCommand::RemoteCandidate {
            peer,
            pc,
            candidate,
            reply,
        })
        .await?
    }

    /// Forget a peer, and where it was placed; does not wait.
    pub async fn remove_peer(&self, peer: PeerId) {
        let _ = self.tx(peer).send(MediaCommand::RemovePeer { peer }).await;
        let placed = lock(&self.placements.peers).remove(&peer);
        if let Some(c) = placed.and_then(|w| self.placements.counts.get(w)) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Close a peer's publish connection and drop its tracks; does not wait.
    pub async fn close_publish(&self, peer: PeerId) {
        let _ = self
            .tx(peer)
            .send(MediaCommand::ClosePublish { peer })
            .await;
    }

    /// Gives `peer`'s video priority in subscribers' allocations (the
    /// dominant speaker's), or takes it away; does not wait.
    pub async fn set_priority(&self, peer: PeerId, high: bool) {
        let _ = self
            .tx(peer)
            .send(MediaCommand::Priority { peer, high })
            .await;
    }

    /// Sends `text` on `peer`'s chat channel; does not wait.
    pub async fn send_chat(&self, peer: PeerId, text: String) {
        let _ = self.tx(peer).send(MediaCommand::Chat { peer, text }).await;
    }

    /// Stops (or goes on) forwarding `peer`'s tracks of `kind`, now and
    /// later ones; does not wait.
    pub async fn mute(&self, peer: PeerId, kind: sfu_proto::signaling::TrackKind, muted: bool) {
        let _ = self
            .tx(peer)
            .send(MediaCommand::Mute { peer, kind, muted })
            .await;
    }

    /// Starts (or with `None` stops) copying `peer`'s published media into `tap`.
    pub async fn set_tap(&self, peer: PeerId, tap: Option<Tap>) {
        let _ = self.tx(peer).send(MediaCommand::SetTap { peer, tap }).await;
    }

    /// Asks the publisher of `track` for a keyframe (at most one request per
    /// track every 500 ms; does not wait). Goes to the track's worker.
    pub async fn request_keyframe(&self, track: TrackId) {
        if let Some(w) = self.workers.get(track.worker()) {
            let _ = w.tx.send(MediaCommand::RequestKeyframe { track }).await;
        }
    }

    /// How `peer` wants `track` forwarded to it; does not wait.
    pub async fn track_settings(&self, peer: PeerId, track: TrackId, prefs: TrackPrefs) {
        let _ = self
            .tx(peer)
            .send(MediaCommand::TrackSettings { peer, track, prefs })
            .await;
    }

    /// Counters, summed over every worker.
    pub async fn stats(&self) -> Result<MediaStats, MediaError> {
        let workers = self
            .worker_stats()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MediaStats::sum(&workers))
    }

    /// Each worker's counters, in order.
    pub async fn worker_stats(&self) -> Vec<Result<MediaStats, MediaError>> {
        let asks = self
            .workers
            .iter()
            .map(|w| Self::call_on(&w.tx, |reply| MediaCommand::Stats { reply }));
        futures_util::future::join_all(asks).await
    }

    /// Connection states and tracks of `peers`, each asked of its worker.
    pub async fn reports(&self, peers: Vec<PeerId>) -> Result<Vec<PeerMediaReport>, MediaError> {
        let mut by_worker: Vec<Vec<PeerId>> = vec![Vec::new(); self.workers.len()];
        for peer in peers {
            let w = self.worker_of(peer).min(self.workers.len() - 1);
            by_worker[w].push(peer);
        }
        let mut reports = Vec::new();
        for (w, peers) in by_worker.into_iter().enumerate() {
            if peers.is_empty() {
                continue;
            }
            let tx = &self.workers[w].tx;
            reports
                .extend(Self::call_on(tx, |reply| MediaCommand::Reports { peers, reply }).await?);
        }
        Ok(reports)
    }
}
