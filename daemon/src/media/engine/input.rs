//! What comes in from the network: a datagram routed to its connection
//! (subscribers' transport-wide feedback read on the spot, the rest fed to
//! `rtc`), and the application messages `rtc` hands back for it (RTP to
//! forward, RTCP to act on, data channel messages).

use super::*;

impl MediaCore {
    /// One datagram in: `arrived` is when the host received it (what TWCC
    /// feedback reports), `now` when the loop read it.
    pub(super) fn on_datagram(
        &mut self,
        sock: usize,
        from: SocketAddr,
        data: &[u8],
        arrived: Instant,
        now: Instant,
    ) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let id = match self.routes.route((sock, from), || stun_local_ufrag(data)) {
            Route::Conn(id) => id,
            Route::Unknown => {
                self.stats.dropped_unroutable += 1;
                return;
            }
            Route::Full(id) => {
                debug!(%from, conn = id, "a new address for a connection that has enough: dropped");
                self.stats.dropped_unroutable += 1;
                return;
            }
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        conn.last_rx = now;
        if conn.adaptive {
            let downlink = &mut conn.downlink;
            let read = conn.srtp_in.as_mut().is_some_and(|ctx| {
                self.feedback.read(ctx, data, |arrivals| {
                    downlink.on_transport_feedback(arrivals, now)
                })
            });
            if read {
                self.stats.feedback_fast += 1;
                return;
            }
        }
        let Some(local) = self.local_addrs.get(sock) else {
            return;
        };
        let msg = TaggedBytesMut {
            now: arrived,
            transport: TransportContext {
                local_addr: local.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: if local.tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: BytesMut::from(data),
        };
        if !conn.negotiated && is_stun(data) {
            // A subscriber checks as soon as it has the offer, and its
            // answer comes after: `rtc` cannot answer a check before the
            // answer, so the latest is answered when the answer is set
            // (`subscribe_answer`), a pacing interval before its retry.
            conn.early_check = Some(msg);
            return;
        }
        if let Err(e) = conn.pc.handle_read(msg) {
            debug!(peer = %conn.peer, pc = ?conn.kind, error = %e, "datagram rejected");
        }
        if !conn.connected && !conn.lost && conn.keys.foreign_certificate(&conn.fingerprints) {
            // `rtc` 0.21 fails the handshake without a word (it logs the
            // error and leaves the transport "connecting"): without this the
            // client would wait for the connect deadline.
            conn.lost = true;
            let (peer, pc) = (conn.peer, conn.kind);
            warn!(%peer, ?pc, "DTLS handshake failed: the peer's certificate is not the one its description names");
            self.drive(id, now);
            self.emit(
                peer,
                MediaEvent::ConnectionLost {
                    peer,
                    pc,
                    cause: LostCause::Dtls,
                },
            );
            return;
        }
        self.drive(id, now);
        // After `rtc`, which may just have opened the track on this datagram.
        let sim = self
            .conns
            .get_mut(&id)
            .and_then(|conn| ssrc_simulcast::read(conn, data));
        match sim {
            Some(SimInput::Rtp(packet)) => {
                let (ssrc, seq) = (packet.header.ssrc, packet.header.sequence_number);
                if let Some(track) = self.track_of_ssrc(id, ssrc) {
                    let receiver = self.sources.get(&track).map(|s| s.receiver);
                    if let (Some(receiver), Some(conn)) = (receiver, self.conns.get_mut(&id)) {
                        ssrc_simulcast::note_arrival(conn, receiver, ssrc, seq, now);
                        flush(conn, &mut self.out, &self.local_addrs);
                    }
                    self.forward_track(track, packet, now);
                }
            }
            Some(SimInput::SenderReports(reports)) => self.on_sender_reports(id, &reports, now),
            None => {}
        }
    }

    /// The track of publish connection `id` that has a layer `ssrc`.
    pub(super) fn track_of_ssrc(&self, id: ConnId, ssrc: u32) -> Option<TrackId> {
        self.conns.get(&id)?.by_layer_ssrc.get(&ssrc).copied()
    }

    pub(super) fn on_message(&mut self, id: ConnId, msg: RTCMessage, now: Instant) {
        match msg {
            RTCMessage::RtpPacket(core_track, packet) => self.forward(id, &core_track, packet, now),
            RTCMessage::DataChannelMessage(channel, msg) => {
                self.on_data_message(id, channel, msg, now)
            }
            RTCMessage::RtcpPacket(_, packets) => {
                let Some(conn) = self.conns.get(&id) else {
                    return;
                };
                let mut wanted = Vec::new();
                let mut nacks = Vec::new();
                let mut downlink = None;
                let mut feedback = Vec::new();
                if conn.kind == PcKind::Publish {
                    self.on_sender_reports(id, &packets, now);
                    return;
                }
                for p in &packets {
                    let any = p.as_any();
                    if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        nacks.push(nack.clone());
                        continue;
                    }
                    if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                        downlink = Some(remb.bitrate.max(0.0) as u64);
                        continue;
                    }
                    if let Some(fb) = any.downcast_ref::<TransportLayerCc>() {
                        feedback.push(twcc::arrivals(fb));
                        continue;
                    }
                    let ssrc = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                        Some(pli.media_ssrc)
                    } else {
                        any.downcast_ref::<FullIntraRequest>()
                            .map(|fir| fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc))
                    };
                    if let Some(track) = ssrc.and_then(|s| conn.by_ssrc.get(&s)) {
                        wanted.push(*track);
                    }
                }
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some(bps) = downlink {
                        conn.downlink.on_estimate(bps, now);
                    }
                    for arrivals in &feedback {
                        conn.downlink.on_transport_feedback(arrivals, now);
                    }
                }
                for nack in &nacks {
                    self.answer_nack(id, nack, now);
                }
                for track in wanted {
                    self.request_leg_keyframe(id, track, now, KeyframeCause::Subscriber);
                }
            }
            _ => {}
        }
    }

    /// Sender reports from publish connection `id`, each looked up among
    /// that connection's tracks: to the recorder's tap of the track it
    /// describes, and translated to its subscriber legs.
    pub(super) fn on_sender_reports(
        &mut self,
        id: ConnId,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        for sr in packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        {
            let Some(track) = self.track_of_ssrc(id, sr.ssrc) else {
                continue;
            };
            let Some(layer) = self.sources.get(&track).and_then(|s| s.layer_of(sr.ssrc)) else {
                continue;
            };
            if let Some(l) = self
                .sources
                .get_mut(&track)
                .and_then(|s| s.layers.get_mut(layer))
            {
                l.sender_report = Some((sr.ntp_time, sr.rtp_time));
            }
            self.tap_sender_report(track, layer, sr);
            if let Some(source) = self.sources.get(&track) {
                pipe::pipe_sender_report(source, layer, sr, &mut self.pipe_out);
            }
            self.relay_sender_report(track, layer, sr, now);
        }
    }
}

/// Whether a datagram is a STUN message (a connectivity check).
fn is_stun(data: &[u8]) -> bool {
    rtc::stun::message::is_stun_message(data)
}

/// The server-side ufrag of a STUN binding request (`USERNAME = ours:theirs`).
fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{is_stun_message, Message};
    use rtc::stun::textattrs::Username;
    if !is_stun_message(data) {
        return None;
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(data).ok()?;
    let username = Username::get_from_as(&msg, ATTR_USERNAME).ok()?;
    let (local, _) = username.text.split_once(':')?;
    Some(local.to_owned())
}
