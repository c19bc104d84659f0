//! Each connection's life in the core: what `rtc` produced for it drained
//! (`drive`), its timers, its state changes, the periodic checks for
//! connections that went silent, and its removal.

use super::*;

impl MediaCore {
    /// Handles everything a connection produced: datagrams out, events, and
    /// application messages (RTP to forward, keyframe requests to relay).
    pub(super) fn drive(&mut self, id: ConnId, now: Instant) {
        let mut reads = std::mem::take(&mut self.scratch_reads);
        let mut events = std::mem::take(&mut self.scratch_events);
        for _round in 0..4 {
            {
                let Some(conn) = self.conns.get_mut(&id) else {
                    break;
                };
                flush(conn, &mut self.out, &self.local_addrs);
                while let Some(ev) = conn.pc.poll_event() {
                    events.push(ev);
                }
                while let Some(m) = conn.pc.poll_read() {
                    reads.push(m.message);
                }
            }
            if events.is_empty() && reads.is_empty() {
                break;
            }
            for ev in events.drain(..) {
                self.on_event(id, ev, now);
            }
            for m in reads.drain(..) {
                self.on_message(id, m, now);
            }
        }
        self.schedule(id, now);
        self.scratch_reads = reads;
        self.scratch_events = events;
    }

    pub(super) fn schedule(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(mut at) = conn.pc.poll_timeout() else {
            return;
        };
        if at <= now {
            at = now + Duration::from_millis(1);
        }
        if conn.deadline.is_none_or(|d| at < d || d <= now) {
            conn.deadline = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    pub(super) fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.deadline != Some(at) {
                continue;
            }
            conn.deadline = None;
            if let Err(e) = conn.pc.handle_timeout(now) {
                debug!(peer = %conn.peer, error = %e, "timeout handling failed");
            }
            self.drive(id, now);
        }
    }

    pub(super) fn on_housekeeping(&mut self, now: Instant) {
        let lost_after = self.lost_after;
        let stalled: Vec<(PeerId, PcKind, bool)> = self
            .conns
            .values_mut()
            .filter(|c| !c.lost)
            .filter_map(|c| {
                let never_connected = c.connect_by.is_some_and(|t| t <= now) && !c.connected;
                let silent = c.connected && now.duration_since(c.last_rx) > lost_after;
                (never_connected || silent).then(|| {
                    c.lost = true;
                    c.connect_by = None;
                    (c.peer, c.kind, silent)
                })
            })
            .collect();
        for (peer, pc, silent) in stalled {
            if silent {
                info!(%peer, ?pc, silent_ms = lost_after.as_millis() as u64, "connection lost: nothing received");
            } else {
                warn!(%peer, ?pc, "connection did not complete ICE and DTLS in time");
            }
            self.emit(
                peer,
                MediaEvent::ConnectionLost {
                    peer,
                    pc,
                    cause: LostCause::Failed,
                },
            );
        }
        // A mirror's layers are measured by their owner (`pipe`).
        for s in self.sources.values_mut().filter(|s| s.origin.is_none()) {
            for layer in &mut s.layers {
                layer.measure(now);
            }
        }
        let pending: Vec<(TrackId, usize, KeyframeCause)> = self
            .sources
            .iter()
            .flat_map(|(id, s)| {
                s.layers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.keyframes.held().map(|cause| (*id, i, cause)))
            })
            .collect();
        for (track, layer, cause) in pending {
            self.request_layer_keyframe(track, layer, now, cause);
        }
        self.select_layers(now);
        self.pipe_housekeeping(now);
    }

    pub(super) fn on_event(&mut self, id: ConnId, ev: RTCPeerConnectionEvent, now: Instant) {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                self.on_state(id, state, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.on_track_open(id, init, now)
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                self.on_track_close(id, &track_id)
            }
            RTCPeerConnectionEvent::OnDataChannel(ev) => self.on_data_channel(id, ev, now),
            _ => {}
        }
    }

    pub(super) fn on_state(&mut self, id: ConnId, state: RTCPeerConnectionState, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        debug!(peer = %conn.peer, pc = ?conn.kind, %state, "connection state");
        let (peer, kind) = (conn.peer, conn.kind);
        match state {
            // `rtc`'s ICE agent reports disconnected whenever a consent check
            // is later than `rtc.ice_disconnected_timeout_ms` and connected
            // again at the next one (every 2.5 s from Chrome); media flows all
            // along, so only the first connection is news. Asking publishers
            // for keyframes at every such flap cost one keyframe per 2.5 s.
            RTCPeerConnectionState::Connected if conn.connected => {
                debug!(%peer, pc = ?kind, "connected again");
            }
            RTCPeerConnectionState::Connected => {
                conn.connected = true;
                // Negotiated `CONNECT_TIMEOUT` before its deadline.
                let setup = conn
                    .connect_by
                    .take()
                    .and_then(|by| by.checked_sub(CONNECT_TIMEOUT))
                    .map(|at| now.saturating_duration_since(at));
                if let Some(setup) = setup {
                    match kind {
                        PcKind::Publish => self.stats.setup_publish.record(setup, 1),
                        PcKind::Subscribe => self.stats.setup_subscribe.record(setup, 1),
                    }
                }
                start_fast_path(conn);
                read_sim_layers(conn);
                let remote = conn
                    .media_dest
                    .map(|(_, a)| a)
                    .or_else(|| self.routes.last_addr(id));
                let tracks: Vec<TrackId> = conn.legs.keys().copied().collect();
                info!(%peer, pc = ?kind, ?remote, "connected");
                self.emit(
                    peer,
                    MediaEvent::Connected {
                        peer,
                        pc: kind,
                        remote,
                    },
                );
                for track in tracks {
                    self.request_leg_keyframe(id, track, now, KeyframeCause::NewSubscriber);
                }
                self.open_tracks(id, now);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                conn.connected = false;
                if !conn.lost {
                    conn.lost = true;
                    info!(%peer, pc = ?kind, %state, "connection lost");
                    self.emit(
                        peer,
                        MediaEvent::ConnectionLost {
                            peer,
                            pc: kind,
                            cause: LostCause::Failed,
                        },
                    );
                }
            }
            // Keep forwarding while disconnected: a consent check that is late
            // is not a lost peer, and failure follows soon if it is.
            _ => {}
        }
    }

    pub(super) fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for id in [p.publish, p.subscribe].into_iter().flatten() {
            self.drop_conn(id);
        }
    }

    pub(super) fn drop_conn(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let _ = conn.pc.close();
        flush(&mut conn, &mut self.out, &self.local_addrs);
        self.routes.remove(&conn.ufrag, id);
        for track in conn.tracks.values() {
            self.remove_source(*track);
        }
        for track in conn.legs.keys() {
            if let Some(source) = self.sources.get_mut(track) {
                source.subscribers.retain(|s| s.conn != id);
            }
        }
        if let Some(p) = self.peers.get_mut(&conn.peer) {
            if p.publish == Some(id) {
                p.publish = None;
            }
            if p.subscribe == Some(id) {
                p.subscribe = None;
            }
        }
        debug!(peer = %conn.peer, pc = ?conn.kind, "connection closed");
    }

    /// A published track ended: its recording and its mirrors are told.
    pub(super) fn remove_source(&mut self, track: TrackId) {
        let Some(source) = self.sources.remove(&track) else {
            return;
        };
        if let Some(tap) = &source.tap {
            tap.send(TapEvent::TrackEnded { track });
        }
        self.close_pipes(&source);
    }

    pub(super) fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.drop_conn(id);
        }
    }
}
