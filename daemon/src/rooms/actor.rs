//! The task around one [`Room`]: turns session requests and media events
//! into state changes, and state changes into messages and media commands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use sfu_proto::signaling::{
    CandidateInit, ErrorCode, IceServer, PcKind, Role, RoomMode, ServerMessage, TrackKind,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::report::{PeerDetail, RoomDetail, RoomSummary};
use super::speaking::RoomSpeakers;
use super::state::Room;
use super::{forget, Outbound, OutboundTx, Refusal, RegistryInner, RoomEvent, RoomHandle, RoomMsg};
use crate::media::{EventSink, LostCause, MediaError, MediaEvent, MediaHandle, Negotiated, PeerId};

mod call;

pub(crate) struct RoomActor {
    room: Room,
    outs: HashMap<PeerId, OutboundTx>,
    media: MediaHandle,
    sink: EventSink,
    ice_servers: Vec<IceServer>,
    registry: Weak<RegistryInner>,
    instance: u64,
    /// Created by an operator: stays when empty until closed.
    persistent: bool,
    created: Instant,
    closed: bool,
    /// Told of joins and leaves (the recorder); dropped when the room ends.
    watchers: Vec<mpsc::UnboundedSender<RoomEvent>>,
    /// Where the room publishes how many participants it has (the
    /// registry's counts read it).
    peers: Arc<AtomicUsize>,
    /// Who is speaking (from the media workers' audio level reports).
    speakers: RoomSpeakers,
    /// The dominant speaker media gives priority to.
    dominant: Option<PeerId>,
}

fn refusal(e: MediaError) -> Refusal {
    let code = match e {
        MediaError::BadSdp(_) | MediaError::NoUsableCodec => ErrorCode::BadSdp,
        MediaError::BadCandidate(_) => ErrorCode::BadCandidate,
        MediaError::NotNegotiated(_) | MediaError::NoOfferOutstanding => ErrorCode::OutOfOrder,
        MediaError::Stopped => ErrorCode::ShuttingDown,
        MediaError::Internal(_) => ErrorCode::Internal,
    };
    Refusal::new(code, e.to_string())
}

impl RoomActor {
    pub(crate) fn new(
        room: Room,
        own: &RoomHandle,
        media: MediaHandle,
        ice_servers: Vec<IceServer>,
        registry: Weak<RegistryInner>,
        persistent: bool,
    ) -> Self {
        let (instance, peers) = (own.instance, own.peers.clone());
        let own = own.tx.clone();
        let room_name = room.name.clone();
        let sink: EventSink = Arc::new(move |ev| {
            if own.try_send(RoomMsg::Media(ev)).is_err() {
                warn!(room = %room_name, "room inbox full: media event dropped");
            }
        });
        RoomActor {
            room,
            outs: HashMap::new(),
            media,
            sink,
            ice_servers,
            registry,
            instance,
            persistent,
            created: Instant::now(),
            closed: false,
            watchers: Vec::new(),
            peers,
            speakers: RoomSpeakers::default(),
            dominant: None,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg).await;
            self.peers.store(self.room.len(), Ordering::Relaxed);
            if self.closed || (self.room.is_empty() && !self.persistent) {
                // Close first so no join can slip in, then drain: pending
                // joins see their reply dropped and retry on a fresh room.
                forget(&self.registry, &self.room.name, self.instance);
                rx.close();
                while rx.recv().await.is_some() {}
                info!(room = %self.room.name, "room closed");
                return;
            }
        }
    }

    async fn handle(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Join {
                peer,
                name,
                role,
                mode,
                allow_duplicate_name,
                receives,
                out,
                reply,
            } => {
                let r = if mode.is_some_and(|m| m != self.room.mode) {
                    Err(Refusal::new(
                        ErrorCode::WrongMode,
                        format!("room `{}` is a {:?} room", self.room.name, self.room.mode)
                            .to_lowercase(),
                    ))
                } else if !allow_duplicate_name && self.room.members().any(|m| m.name == name) {
                    Err(Refusal::new(
                        ErrorCode::NameTaken,
                        format!(
                            "someone in room `{}` is already called `{name}`",
                            self.room.name
                        ),
                    ))
                } else {
                    self.join(peer, &name, role, receives, out).await
                };
                let _ = reply.send(r);
            }
            RoomMsg::Signal {
                peer,
                to,
                data,
                reply,
            } => {
                let r = self.signal(peer, &to, data);
                let _ = reply.send(r);
            }
            RoomMsg::TrackSettings {
                peer,
                track,
                prefs,
                reply,
            } => {
                let r = self.track_settings(peer, &track, prefs).await;
                let _ = reply.send(r);
            }
            RoomMsg::SetRole { peer, role, reply } => {
                let r = self.set_role(&peer, role).await;
                let _ = reply.send(r);
            }
            RoomMsg::Mute {
                peer,
                kind,
                muted,
                by_operator,
                reply,
            } => {
                let r = self.mute(&peer, kind, muted, by_operator).await;
                let _ = reply.send(r);
            }
            RoomMsg::Offer {
                peer,
                sdp,
                screens,
                reply,
            } => {
                let r = self.offer(peer, sdp, screens).await;
                let _ = reply.send(r);
            }
            RoomMsg::View { peer, sdp, reply } => {
                let r = self.view(peer, sdp).await;
                let _ = reply.send(r);
            }
            RoomMsg::Answer { peer, sdp, reply } => {
                let r = self.answer(peer, sdp).await;
                let _ = reply.send(r);
            }
            RoomMsg::Candidate {
                peer,
                pc,
                candidate,
                reply,
            } => {
                // `null` ends the client's candidates: like a candidate, it
                // is out of order before the connection's description.
                let c = candidate.unwrap_or_else(|| CandidateInit {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_m_line_index: None,
                    username_fragment: None,
                });
                let r = self
                    .media
                    .remote_candidate(peer, pc, c)
                    .await
                    .map_err(refusal);
                let _ = reply.send(r);
            }
            RoomMsg::Leave { peer } => self.remove(peer, None).await,
            RoomMsg::Media(ev) => self.on_media(ev).await,
            RoomMsg::Report { reply } => {
                let r = self.report().await;
                let _ = reply.send(r);
            }
            RoomMsg::Close { why, reply } => {
                let n = self.room.len();
                let ids: Vec<PeerId> = self.room.members().map(|m| m.id).collect();
                for peer in ids {
                    self.room.leave(peer);
                    self.media.remove_peer(peer).await;
                    if let Some(out) = self.outs.remove(&peer) {
                        let _ = out.try_send(Outbound::Close(Some(why.clone())));
                    }
                }
                self.closed = true;
                info!(room = %self.room.name, peers = n, why = %why.1, "room closed");
                let _ = reply.send(n);
            }
            RoomMsg::Kick { peer, reply } => {
                let found = self
                    .room
                    .members()
                    .map(|m| m.id)
                    .find(|id| id.to_string() == peer);
                let r = match found {
                    Some(id) => {
                        self.remove(
                            id,
                            Some((ErrorCode::Kicked, "you were removed by an operator".into())),
                        )
                        .await;
                        Ok(())
                    }
                    None => Err(Refusal::new(
                        ErrorCode::UnknownPeer,
                        format!("no participant `{peer}` in room `{}`", self.room.name),
                    )),
                };
                let _ = reply.send(r);
            }
            RoomMsg::Watch { events, reply } => {
                let members = self
                    .room
                    .members()
                    .map(|m| (m.id, m.name.clone()))
                    .collect();
                if reply.send(members).is_ok() {
                    self.watchers.push(events);
                }
            }
        }
    }

    fn tell_watchers(&mut self, event: RoomEvent) {
        self.watchers.retain(|w| w.send(event.clone()).is_ok());
    }

    async fn report(&self) -> RoomDetail {
        let ids: Vec<PeerId> = self.room.members().map(|m| m.id).collect();
        let media = self.media.reports(ids).await.unwrap_or_default();
        let now = Instant::now();
        let members = self
            .room
            .members_by_arrival()
            .map(|m| {
                let r = media.iter().find(|r| r.peer == m.id);
                PeerDetail {
                    id: m.id.to_string(),
                    name: m.name.clone(),
                    role: m.role,
                    muted: m.muted.clone(),
                    silent: m.silent.clone(),
                    joined_secs: now.duration_since(m.joined_at).as_secs(),
                    publish: r.and_then(|r| r.publish.clone()),
                    subscribe: r.and_then(|r| r.subscribe.clone()),
                    tracks: r.map(|r| r.tracks.clone()).unwrap_or_default(),
                    receiving: r.map(|r| r.receiving.clone()).unwrap_or_default(),
                    downlink_bps: r.and_then(|r| r.downlink_bps),
                    worker: (self.room.mode != RoomMode::Mesh).then(|| self.media.worker_of(m.id)),
                }
            })
            .collect();
        RoomDetail {
            summary: RoomSummary {
                name: self.room.name.clone(),
                mode: self.room.mode,
                peers: self.room.len(),
                tracks: self.room.tracks().count(),
                max_peers: self.room.max_peers,
                age_secs: now.duration_since(self.created).as_secs(),
                persistent: self.persistent,
            },
            members,
        }
    }

    async fn join(
        &mut self,
        peer: PeerId,
        name: &str,
        role: sfu_proto::signaling::Role,
        receives: bool,
        out: OutboundTx,
    ) -> Result<(), Refusal> {
        let others = self
            .room
            .join(peer, name, role, Instant::now())
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        if !receives {
            self.room.receive_nothing(peer);
        }
        let worker = if self.room.mode == RoomMode::Mesh {
            None
        } else {
            let home = self.media.worker();
            let here = self.media.count_on(
                self.room.members().map(|m| m.id).filter(|m| *m != peer),
                home,
            );
            Some(self.media.place(peer, here))
        };
        info!(room = %self.room.name, %peer, name, ?role, ?worker, "joined");
        self.tell_watchers(RoomEvent::Joined {
            peer,
            name: name.to_owned(),
        });
        let joined = ServerMessage::Joined {
            room: self.room.name.clone(),
            peer_id: peer.to_string(),
            mode: self.room.mode,
            role,
            peers: others,
            // Read at each join so a reload applies to existing rooms too.
            ice_servers: self
                .registry
                .upgrade()
                .map(|r| r.ice_servers_for(peer))
                .unwrap_or_else(|| self.ice_servers.clone()),
        };
        self.outs.insert(peer, out);
        self.send(peer, joined);
        if let Some(view) = self.speakers.told() {
            self.send(peer, call::speakers_message(view));
        }
        if let Some(info) = self.room.member(peer).map(|m| m.info()) {
            self.broadcast_except(peer, ServerMessage::PeerJoined { peer: info });
        }
        self.negotiate(peer).await;
        self.drop_slow().await;
        Ok(())
    }

    fn wrong_mode(&self, what: &str) -> Refusal {
        Refusal::new(
            ErrorCode::WrongMode,
            format!("{what} in a {:?} room", self.room.mode).to_lowercase(),
        )
    }

    async fn offer(
        &mut self,
        peer: PeerId,
        sdp: String,
        screens: Vec<String>,
    ) -> Result<(), Refusal> {
        let Some(member) = self.room.member(peer) else {
            return Err(super::gone());
        };
        if self.room.mode == RoomMode::Mesh {
            return Err(self.wrong_mode(
                "the server holds no media connections: use `signal` to reach other participants",
            ));
        }
        if member.role == Role::Listener && crate::media::sends_media(&sdp) {
            return Err(Refusal::new(
                ErrorCode::NotAllowed,
                "listeners may not publish: offer only recvonly or inactive media",
            ));
        }
        let negotiated = self
            .media
            .publish(peer, self.sink.clone(), sdp, screens)
            .await
            .map_err(refusal)?;
        self.send_description(peer, PcKind::Publish, negotiated);
        Ok(())
    }

    async fn answer(&mut self, peer: PeerId, sdp: String) -> Result<(), Refusal> {
        if self.room.mode == RoomMode::Mesh {
            return Err(self.wrong_mode(
                "the server holds no media connections: use `signal` to reach other participants",
            ));
        }
        if !self.room.offer_in_flight(peer) {
            return Err(Refusal::new(
                ErrorCode::OutOfOrder,
                "no subscribe offer is waiting for an answer",
            ));
        }
        self.media
            .subscribe_answer(peer, sdp)
            .await
            .map_err(refusal)?;
        if self.room.answer_received(peer) {
            self.negotiate(peer).await;
        }
        Ok(())
    }

    /// Answers a viewer's own offer (WHEP) with the tracks of the room's
    /// first speaker that publishes video (or of the first that publishes).
    async fn view(&mut self, peer: PeerId, sdp: String) -> Result<Negotiated, Refusal> {
        if self.room.mode == RoomMode::Mesh {
            return Err(self.wrong_mode(
                "the server holds no media connections in a mesh room: nothing to view",
            ));
        }
        if self.room.member(peer).is_none() {
            return Err(Refusal::new(ErrorCode::NotJoined, "join first"));
        }
        let tracks = self.room.first_speaker_tracks();
        if tracks.is_empty() {
            return Err(Refusal::new(
                ErrorCode::UnknownTrack,
                format!("no one publishes in room `{}` yet", self.room.name),
            ));
        }
        self.media
            .view(peer, self.sink.clone(), sdp, tracks)
            .await
            .map_err(refusal)
    }

    /// Relays mesh signaling from `peer` to `to`.
    fn signal(&mut self, peer: PeerId, to: &str, data: serde_json::Value) -> Result<(), Refusal> {
        if self.room.mode != RoomMode::Mesh {
            return Err(self.wrong_mode("`signal` is for mesh rooms; this server forwards media"));
        }
        let target = self
            .room
            .members()
            .map(|m| m.id)
            .find(|id| id.to_string() == to && *id != peer)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownPeer,
                    format!("no other participant `{to}` in room `{}`", self.room.name),
                )
            })?;
        self.send(
            target,
            ServerMessage::Signal {
                from: peer.to_string(),
                data,
            },
        );
        Ok(())
    }

    /// Passes a subscriber's wishes for one of its video tracks to media.
    async fn track_settings(
        &mut self,
        peer: PeerId,
        track: &str,
        prefs: crate::media::TrackPrefs,
    ) -> Result<(), Refusal> {
        if self.room.mode != RoomMode::Sfu {
            return Err(self.wrong_mode(
                "`track_settings` is for SFU rooms; in a mesh room the peers send to each other",
            ));
        }
        let wanted = self.room.wanted_tracks(peer);
        let info = track
            .strip_prefix("video-")
            .or_else(|| track.strip_prefix("screen-"))
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| wanted.iter().find(|t| t.id.0 == n))
            .filter(|t| t.kind == crate::media::MediaKind::Video)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownTrack,
                    format!(
                        "you receive no video track `{track}` in room `{}`",
                        self.room.name
                    ),
                )
            })?;
        self.media.track_settings(peer, info.id, prefs).await;
        Ok(())
    }

    /// Changes a role live: a demoted speaker stops being forwarded and its
    /// publish connection closes; everyone is renegotiated and told.
    /// The member whose id is `peer`.
    fn member_id(&self, peer: &str) -> Result<PeerId, Refusal> {
        self.room
            .members()
            .map(|m| m.id)
            .find(|id| id.to_string() == peer)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::UnknownPeer,
                    format!("no participant `{peer}` in room `{}`", self.room.name),
                )
            })
    }

    async fn set_role(&mut self, peer: &str, role: Role) -> Result<(), Refusal> {
        let id = self.member_id(peer)?;
        let was_muted: Vec<TrackKind> = self
            .room
            .member(id)
            .map(|m| {
                let screen = m.sharing.then_some(TrackKind::Screen);
                m.muted.iter().copied().chain(screen).collect()
            })
            .unwrap_or_default();
        if !self.room.set_role(id, role) {
            return Ok(());
        }
        info!(room = %self.room.name, %peer, ?role, "role changed");
        if role == Role::Listener && self.room.mode == RoomMode::Sfu {
            self.media.close_publish(id).await;
            // Speaking again, they start unmuted (and not sharing).
            for kind in was_muted {
                let muted = kind == TrackKind::Screen;
                self.media.mute(id, kind, muted).await;
            }
        }
        let msg = ServerMessage::RoleChanged {
            peer_id: peer.to_owned(),
            role,
        };
        self.broadcast(msg);
        if self.room.mode == RoomMode::Sfu {
            self.renegotiate_all().await;
        }
        self.drop_slow().await;
        Ok(())
    }

    /// Offers `peer` its current set of tracks if that changed.
    async fn negotiate(&mut self, peer: PeerId) {
        let receives = self.room.member(peer).is_some_and(|m| m.receives);
        if self.room.mode == RoomMode::Mesh || self.room.offer_in_flight(peer) || !receives {
            return;
        }
        let wanted = self.room.wanted_tracks(peer);
        match self.media.subscribe(peer, self.sink.clone(), wanted).await {
            Ok(Some(offer)) => {
                self.room.offer_sent(peer);
                self.send_description(peer, PcKind::Subscribe, offer);
            }
            Ok(None) => {}
            // Shutting down: nothing left to negotiate with.
            Err(MediaError::Stopped) => {}
            Err(e) => {
                warn!(room = %self.room.name, %peer, error = %e, "subscribe renegotiation failed")
            }
        }
    }

    async fn renegotiate_all(&mut self) {
        for peer in self.room.tracks_changed() {
            self.negotiate(peer).await;
        }
        self.drop_slow().await;
    }

    fn send_description(&mut self, peer: PeerId, pc: PcKind, n: Negotiated) {
        let msg = match pc {
            PcKind::Publish => ServerMessage::Answer { pc, sdp: n.sdp },
            PcKind::Subscribe => ServerMessage::Offer { pc, sdp: n.sdp },
        };
        self.send(peer, msg);
        if !n.candidates.is_empty() {
            for c in n.candidates {
                self.send(
                    peer,
                    ServerMessage::Candidate {
                        pc,
                        candidate: Some(c),
                    },
                );
            }
            self.send(
                peer,
                ServerMessage::Candidate {
                    pc,
                    candidate: None,
                },
            );
        }
    }

    async fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::TrackPublished(track) => {
                if self.room.add_track(track) {
                    self.renegotiate_all().await;
                }
            }
            MediaEvent::TrackUnpublished { track, .. } => {
                if self.room.remove_track(track) {
                    self.renegotiate_all().await;
                }
            }
            MediaEvent::ConnectionLost { peer, pc, cause } => {
                if self.room.member(peer).is_some() {
                    let pc = format!("{pc:?}").to_lowercase();
                    let error = match cause {
                        LostCause::Failed => (
                            ErrorCode::Internal,
                            format!("the {pc} connection failed (ICE or DTLS)"),
                        ),
                        LostCause::Dtls => (
                            ErrorCode::DtlsFailed,
                            format!(
                                "the {pc} connection's DTLS handshake failed: the certificate \
                                 presented is not the one the description's fingerprint names"
                            ),
                        ),
                    };
                    self.remove(peer, Some(error)).await;
                }
            }
            MediaEvent::LayersWanted {
                publisher,
                track,
                active,
            } => {
                debug!(room = %self.room.name, %publisher, %track, ?active, "layers wanted");
                self.send(
                    publisher,
                    ServerMessage::Layers {
                        track,
                        active: active.into_iter().collect(),
                    },
                );
            }
            MediaEvent::Connected { peer, pc, remote } => {
                debug!(room = %self.room.name, %peer, ?pc, ?remote, "media connected");
            }
            MediaEvent::Chat { peer, text } => self.relay_chat(peer, text).await,
            MediaEvent::TrackIdle {
                publisher,
                kind,
                idle,
                ..
            } => self.track_idle(publisher, kind, idle).await,
            MediaEvent::ChatRefused { peer, why } => self.chat_refused(peer, why),
            MediaEvent::Speech {
                publisher,
                activity,
                ..
            } => {
                if self.room.member(publisher).is_some() {
                    let told = self.speakers.report(publisher, activity, Instant::now());
                    self.tell_speakers(told).await;
                }
            }
        }
    }

    /// Removes a member: media forgets it, its session closes, the others
    /// hear `peer_left` and lose its tracks.
    async fn remove(&mut self, peer: PeerId, why: Option<(ErrorCode, String)>) {
        if self.room.leave(peer).is_none() {
            return;
        }
        info!(room = %self.room.name, %peer, "left");
        self.tell_watchers(RoomEvent::Left { peer });
        let told = self.speakers.forget(peer, Instant::now());
        self.tell_speakers(told).await;
        self.media.remove_peer(peer).await;
        if let Some(out) = self.outs.remove(&peer) {
            let _ = out.try_send(Outbound::Close(why));
        }
        self.broadcast_except(
            peer,
            ServerMessage::PeerLeft {
                peer_id: peer.to_string(),
            },
        );
        self.renegotiate_all().await;
    }

    fn send(&mut self, peer: PeerId, msg: ServerMessage) {
        let Some(out) = self.outs.get(&peer) else {
            return;
        };
        match out.try_send(Outbound::Message(msg)) {
            Ok(()) => {}
            // Removed by drop_slow: the session is not reading its socket.
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(room = %self.room.name, %peer, "session mailbox full: the client does not keep up");
                self.outs.remove(&peer);
            }
            // The session ended; its leave is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(room = %self.room.name, %peer, "session already closed");
                self.outs.remove(&peer);
            }
        }
    }

    fn broadcast(&mut self, msg: ServerMessage) {
        let ids: Vec<PeerId> = self.outs.keys().copied().collect();
        for id in ids {
            self.send(id, msg.clone());
        }
    }

    fn broadcast_except(&mut self, except: PeerId, msg: ServerMessage) {
        let ids: Vec<PeerId> = self.outs.keys().copied().filter(|p| *p != except).collect();
        for id in ids {
            self.send(id, msg.clone());
        }
    }

    /// Removes members whose session ended or stopped taking messages.
    async fn drop_slow(&mut self) {
        loop {
            let slow: Vec<PeerId> = self
                .room
                .members()
                .map(|m| m.id)
                .filter(|id| !self.outs.contains_key(id))
                .collect();
            if slow.is_empty() {
                return;
            }
            for peer in slow {
                // An earlier removal's renegotiation may have removed it already.
                if self.room.member(peer).is_some() {
                    Box::pin(self.remove(peer, None)).await;
                }
            }
        }
    }
}
