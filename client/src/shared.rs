//! State shared by the client handle, its WebSocket tasks, the peer
//! connections' event handlers and the media tasks.
//!
//! Every change that a waiter could care about bumps a `watch` counter, so
//! `Client::wait_for` re-evaluates its predicate on events instead of polling.

use crate::sdp;
use crate::simulcast::Layer;
use crate::snapshot::{OfferedTrack, RemoteTrack, Snapshot};
use crate::track::TrackAccount;
use crate::ClientOptions;
use sfu_proto::signaling::{
    CandidateInit, ClientMessage, ErrorCode, IceServer, PcKind, PeerInfo, ServerMessage,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::PeerConnection;

/// A frame for the WebSocket writer task.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(String),
    Close,
}

/// Locks a std mutex, recovering the data if a panicking thread poisoned it
/// (the state stays usable for observation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct Shared {
    pub options: ClientOptions,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    pub shutdown: watch::Sender<bool>,
    outbound: mpsc::UnboundedSender<Outbound>,
    pub publish: Mutex<PcSlot>,
    pub subscribe: Mutex<PcSlot>,
    /// Media, RTCP and track tasks, aborted on close.
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
    pub counters: SendCounters,
    pub shut: AtomicBool,
    /// Simulcast layers of the published tracks, by msid track id, for the
    /// server's `layers` messages.
    published_layers: Mutex<Vec<(String, Arc<Layer>)>>,
}

/// Publish-side counters, touched per packet.
#[derive(Default)]
pub(crate) struct SendCounters {
    pub video: AtomicU64,
    pub audio: AtomicU64,
    pub keyframes: AtomicU64,
    pub errors: AtomicU64,
    pub keyframe_requests: AtomicU64,
}

#[derive(Default)]
struct State {
    peer_id: Option<String>,
    peers: Vec<PeerInfo>,
    ice_servers: Vec<IceServer>,
    messages: Vec<ServerMessage>,
    errors: Vec<(ErrorCode, String)>,
    client_errors: Vec<String>,
    subscribe_offers: usize,
    offered_tracks: Vec<OfferedTrack>,
    publish_state: Option<String>,
    subscribe_state: Option<String>,
    publish_answered: bool,
    tracks: Vec<Arc<Mutex<TrackState>>>,
    closed_by_server: bool,
}

/// One peer connection and the signaling bookkeeping around it.
#[derive(Default)]
pub(crate) struct PcSlot {
    pub pc: Option<Arc<dyn PeerConnection>>,
    /// Remote candidates that arrived before the remote description.
    pub pending_remote: Vec<CandidateInit>,
    pub remote_set: bool,
    /// The local description sent, once it is: candidates wait for it.
    described: Option<Described>,
    /// A publish offer sent but not answered yet.
    offered: Option<Described>,
    pending_local: Vec<String>,
    gathering_complete: bool,
    end_sent: bool,
}

struct Described {
    sdp: String,
    mid: Option<String>,
    ufrag: Option<String>,
}

/// A subscribe-side track: what arrived on it, and its handle (for PLIs).
pub(crate) struct TrackState {
    pub account: TrackAccount,
    pub handle: Arc<dyn TrackRemote>,
}

impl Shared {
    pub fn new(options: ClientOptions, outbound: mpsc::UnboundedSender<Outbound>) -> Arc<Self> {
        Arc::new(Self {
            options,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            outbound,
            publish: Mutex::new(PcSlot::default()),
            subscribe: Mutex::new(PcSlot::default()),
            tasks: Mutex::new(Vec::new()),
            counters: SendCounters::default(),
            shut: AtomicBool::new(false),
            published_layers: Mutex::new(Vec::new()),
        })
    }

    /// Wakes every `wait_for`.
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn slot(&self, kind: PcKind) -> &Mutex<PcSlot> {
        match kind {
            PcKind::Publish => &self.publish,
            PcKind::Subscribe => &self.subscribe,
        }
    }

    pub fn is_shut(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn track_task(&self, task: JoinHandle<()>) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Queues a text frame; fails once the socket is gone.
    pub fn send_text(&self, text: String) -> Result<(), crate::ClientError> {
        if lock(&self.state).closed_by_server {
            return Err(crate::ClientError::Closed);
        }
        self.outbound
            .send(Outbound::Text(text))
            .map_err(|_| crate::ClientError::Closed)
    }

    pub fn send_close(&self) {
        let _ = self.outbound.send(Outbound::Close);
    }

    /// Sends a local description, then the candidates gathered meanwhile, so
    /// the server never sees a candidate before the description it belongs to.
    pub fn send_description(
        &self,
        kind: PcKind,
        msg: &ClientMessage,
        sdp: &str,
    ) -> Result<(), crate::ClientError> {
        let text = serde_json::to_string(msg)?;
        let mut slot = lock(self.slot(kind));
        self.send_text(text)?;
        let described = Described {
            sdp: sdp.to_owned(),
            mid: sdp::first_mid(sdp),
            ufrag: sdp::ice_ufrag(sdp),
        };
        match kind {
            // Publish candidates wait for the server's answer: an offer the
            // server refuses (e.g. from a listener) then leaves no candidates
            // behind for a connection that does not exist.
            PcKind::Publish => slot.offered = Some(described),
            PcKind::Subscribe => self.release_candidates(kind, &mut slot, described),
        }
        Ok(())
    }

    /// The server answered our publish offer: its candidates may go now.
    pub fn publish_accepted(&self) {
        let mut slot = lock(self.slot(PcKind::Publish));
        if let Some(described) = slot.offered.take() {
            self.release_candidates(PcKind::Publish, &mut slot, described);
        }
    }

    fn release_candidates(&self, kind: PcKind, slot: &mut PcSlot, described: Described) {
        if slot.described.is_some() {
            return;
        }
        slot.described = Some(described);
        for candidate in std::mem::take(&mut slot.pending_local) {
            self.send_local_candidate(kind, slot, &candidate);
        }
        if slot.gathering_complete {
            self.send_end_of_candidates(kind, slot);
        }
    }

    /// A candidate gathered by the local ICE agent.
    pub fn local_candidate(&self, kind: PcKind, candidate: String) {
        let mut slot = lock(self.slot(kind));
        if slot.described.is_some() {
            self.send_local_candidate(kind, &slot, &candidate);
        } else {
            slot.pending_local.push(candidate);
        }
    }

    /// The local ICE agent finished gathering.
    pub fn local_gathering_complete(&self, kind: PcKind) {
        let mut slot = lock(self.slot(kind));
        slot.gathering_complete = true;
        if slot.described.is_some() {
            self.send_end_of_candidates(kind, &mut slot);
        }
    }

    fn send_local_candidate(&self, kind: PcKind, slot: &PcSlot, candidate: &str) {
        let Some(described) = &slot.described else {
            return;
        };
        if sdp::contains_candidate(&described.sdp, candidate) {
            return;
        }
        let init = sdp::to_wire_candidate(
            candidate,
            described.mid.as_deref(),
            described.ufrag.as_deref(),
        );
        self.send_message_quietly(&ClientMessage::Candidate {
            pc: kind,
            candidate: Some(init),
        });
    }

    fn send_end_of_candidates(&self, kind: PcKind, slot: &mut PcSlot) {
        if !slot.end_sent {
            slot.end_sent = true;
            self.send_message_quietly(&ClientMessage::Candidate {
                pc: kind,
                candidate: None,
            });
        }
    }

    fn send_message_quietly(&self, msg: &ClientMessage) {
        let result = serde_json::to_string(msg)
            .map_err(crate::ClientError::from)
            .and_then(|text| self.send_text(text));
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot send a candidate");
        }
    }

    pub fn client_error(&self, error: String) {
        tracing::warn!(%error, "client error");
        lock(&self.state).client_errors.push(error);
        self.notify();
    }

    /// Records a server message and updates what it tells about the room.
    pub fn record_message(&self, msg: &ServerMessage) {
        let mut st = lock(&self.state);
        match msg {
            ServerMessage::Joined {
                peer_id,
                peers,
                ice_servers,
                ..
            } => {
                st.peer_id = Some(peer_id.clone());
                st.peers = peers.clone();
                st.ice_servers = ice_servers.clone();
            }
            ServerMessage::PeerJoined { peer } => {
                st.peers.retain(|p| p.id != peer.id);
                st.peers.push(peer.clone());
            }
            ServerMessage::PeerLeft { peer_id } => st.peers.retain(|p| &p.id != peer_id),
            ServerMessage::Error { code, message } => st.errors.push((*code, message.clone())),
            _ => {}
        }
        st.messages.push(msg.clone());
        drop(st);
        self.notify();
    }

    pub fn set_closed_by_server(&self) {
        lock(&self.state).closed_by_server = true;
        self.notify();
    }

    pub fn set_pc_state(&self, kind: PcKind, state: String) {
        let mut st = lock(&self.state);
        match kind {
            PcKind::Publish => st.publish_state = Some(state),
            PcKind::Subscribe => st.subscribe_state = Some(state),
        }
        drop(st);
        self.notify();
    }

    pub fn set_publish_answered(&self) {
        lock(&self.state).publish_answered = true;
        self.notify();
    }

    pub fn ice_servers(&self) -> Vec<IceServer> {
        lock(&self.state).ice_servers.clone()
    }

    pub fn message_count(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// A subscribe offer was answered: remember what it carries and end the
    /// tracks it no longer does.
    pub fn subscribe_offer_answered(&self, offered: Vec<OfferedTrack>) {
        let mut st = lock(&self.state);
        st.subscribe_offers += 1;
        for track in &st.tracks {
            let mut t = lock(track);
            let info = &mut t.account.info;
            let still_offered = offered
                .iter()
                .any(|o| o.stream_id == info.stream_id && o.track_id == info.track_id);
            if !still_offered {
                info.ended = true;
            }
        }
        st.offered_tracks = offered;
        drop(st);
        self.notify();
    }

    /// Registers a new subscribe-side track.
    pub fn add_remote_track(
        &self,
        info: RemoteTrack,
        handle: Arc<dyn TrackRemote>,
    ) -> Arc<Mutex<TrackState>> {
        let track = Arc::new(Mutex::new(TrackState {
            account: TrackAccount::new(info, self.options.latency_histogram.clone()),
            handle,
        }));
        lock(&self.state).tracks.push(Arc::clone(&track));
        self.notify();
        track
    }

    pub fn remote_tracks(&self) -> Vec<Arc<Mutex<TrackState>>> {
        lock(&self.state).tracks.clone()
    }

    /// Remembers the simulcast layers of a published track.
    pub fn add_published_layers(&self, track_id: &str, layers: &[Arc<Layer>]) {
        let mut published = lock(&self.published_layers);
        for layer in layers {
            published.push((track_id.to_owned(), Arc::clone(layer)));
        }
    }

    /// The server's `layers`: send the layers of `track` it names active,
    /// pause those it names inactive (layers it does not name keep going).
    pub fn set_layers_active(&self, track: &str, active: &BTreeMap<String, bool>) {
        for (track_id, layer) in lock(&self.published_layers).iter() {
            if track_id != track {
                continue;
            }
            if let Some(on) = active.get(layer.rid) {
                layer.active.store(*on, Ordering::Relaxed);
            }
        }
    }

    /// Per-packet counters only: what a load generator polls often.
    pub fn media_counters(&self) -> crate::client::MediaCounters {
        let tracks: Vec<RemoteTrack> = {
            let st = lock(&self.state);
            st.tracks
                .iter()
                .map(|t| lock(t).account.counters())
                .collect()
        };
        let c = &self.counters;
        crate::client::MediaCounters {
            sent_video_packets: c.video.load(Ordering::Relaxed),
            sent_audio_packets: c.audio.load(Ordering::Relaxed),
            send_errors: c.errors.load(Ordering::Relaxed),
            tracks,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = lock(&self.state);
        let c = &self.counters;
        let video = c.video.load(Ordering::Relaxed);
        let audio = c.audio.load(Ordering::Relaxed);
        let state_name = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".to_owned());
        Snapshot {
            peer_id: st.peer_id.clone(),
            peers: st.peers.clone(),
            messages: st.messages.clone(),
            errors: st.errors.clone(),
            client_errors: st.client_errors.clone(),
            subscribe_offers: st.subscribe_offers,
            offered_tracks: st.offered_tracks.clone(),
            publish_state: state_name(&st.publish_state),
            subscribe_state: state_name(&st.subscribe_state),
            publish_answered: st.publish_answered,
            remote_tracks: st
                .tracks
                .iter()
                .map(|t| lock(t).account.snapshot())
                .collect(),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            sent_packets: video + audio,
            sent_video_packets: video,
            sent_audio_packets: audio,
            sent_keyframes: c.keyframes.load(Ordering::Relaxed),
            send_errors: c.errors.load(Ordering::Relaxed),
            closed_by_server: st.closed_by_server,
        }
    }

    /// Waits until `pred` holds on the publish state, or shutdown. No deadline:
    /// for background tasks that end with the client.
    pub async fn wait_publish_state(&self, pred: impl Fn(&str) -> bool) -> bool {
        let mut changes = self.subscribe_changes();
        let mut shutdown = self.shutdown.subscribe();
        loop {
            changes.borrow_and_update();
            if *shutdown.borrow_and_update() {
                return false;
            }
            if lock(&self.state)
                .publish_state
                .as_deref()
                .is_some_and(&pred)
            {
                return true;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}
