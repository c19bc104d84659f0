//! Offer/answer for the two server connections of each peer: the publish
//! answer, the subscribe offer that reconciles the forwarded tracks, the
//! subscriber's answer that activates the legs, and trickled candidates.

use super::*;
use crate::media::downlink::Downlink;
use crate::media::forward::ABS_SEND_TIME_URI;
use crate::media::sdp_limits::{self, Described};
use crate::media::simulcast::LayerSwitcher;
use crate::media::twcc::TRANSPORT_CC_URI;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodecParameters, RTCRtpRtxParameters};

impl MediaCore {
    pub(super) fn conn_of(&self, peer: PeerId, kind: PcKind) -> Option<ConnId> {
        let p = self.peers.get(&peer)?;
        match kind {
            PcKind::Publish => p.publish,
            PcKind::Subscribe => p.subscribe,
        }
    }

    pub(super) fn new_conn(
        &mut self,
        peer: PeerId,
        kind: PcKind,
        events: EventSink,
        now: Instant,
    ) -> Result<ConnId, MediaError> {
        let ufrag = peer::new_ufrag();
        let fast_path = kind == PcKind::Subscribe && self.fast_path;
        let (pc, keys) =
            peer::build_connection(kind, &ufrag, self.timeouts, &self.announced, fast_path, now)?;
        let id = self.next_conn;
        self.next_conn += 1;
        self.routes.add(ufrag.clone(), id);
        self.conns.insert(
            id,
            Conn {
                peer,
                kind,
                pc,
                ufrag,
                deadline: None,
                connected: false,
                lost: false,
                tracks: HashMap::default(),
                by_layer_ssrc: HashMap::default(),
                legs: HashMap::default(),
                by_ssrc: HashMap::default(),
                keys,
                fast_path,
                fingerprints: Vec::new(),
                srtp: None,
                srtp_in: None,
                sim: Vec::new(),
                sim_bound: Vec::new(),
                sim_losses: Vec::new(),
                media_dest: None,
                offer_outstanding: false,
                negotiated: false,
                candidates_sent: false,
                connect_by: None,
                last_rx: now,
                adaptive: false,
                downlink: Downlink::default(),
                probe_ratio: 0.0,
                probe_credit: 0.0,
                chat: None,
                early_check: None,
                every_codec: [false; 2],
                wide: Vec::new(),
            },
        );
        let entry = self.peers.entry(peer).or_default();
        entry.events = Some(events);
        match kind {
            PcKind::Publish => entry.publish = Some(id),
            PcKind::Subscribe => entry.subscribe = Some(id),
        }
        Ok(id)
    }

    pub(super) fn publish(
        &mut self,
        peer: PeerId,
        events: EventSink,
        sdp: String,
        now: Instant,
    ) -> Result<Negotiated, MediaError> {
        sdp_limits::check(&sdp, Described::Offer)?;
        let offer =
            RTCSessionDescription::offer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let (offered, _) = peer::media_sections(&offer.sdp);
        let (id, fresh) = match self.conn_of(peer, PcKind::Publish) {
            Some(id) => (id, false),
            None => (self.new_conn(peer, PcKind::Publish, events, now)?, true),
        };
        let result = self.answer_offer(id, offer, offered, now);
        if result.is_err() && fresh {
            self.drop_conn(id);
        }
        self.drive(id, now);
        // Tracks the offer added to a connection that is up open now.
        if result.is_ok() && self.conns.get(&id).is_some_and(|c| c.connected) {
            self.open_tracks(id, now);
        }
        result
    }

    pub(super) fn answer_offer(
        &mut self,
        id: ConnId,
        offer: RTCSessionDescription,
        offered: usize,
        now: Instant,
    ) -> Result<Negotiated, MediaError> {
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        let remote = peer::sha256_fingerprints(&offer.sdp);
        let sim = peer::sim_groups(&offer.sdp);
        conn.pc
            .set_remote_description(now, offer)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        note_fingerprints(conn, remote);
        let answer = conn
            .pc
            .create_answer(None)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let mut described = describe(conn, answer, &self.announced, now)?;
        let sim_mids: Vec<String> = sim.iter().map(|(mid, _)| mid.clone()).collect();
        described.sdp = peer::publish_answer(&described.sdp, &sim_mids);
        conn.sim = sim.into_iter().map(|(_, ssrcs)| ssrcs).collect();
        read_sim_layers(conn);
        let (_, usable) = peer::media_sections(&described.sdp);
        if offered > 0 && usable == 0 {
            return Err(MediaError::NoUsableCodec);
        }
        conn.negotiated = true;
        if !conn.connected && conn.connect_by.is_none() {
            conn.connect_by = Some(now + CONNECT_TIMEOUT);
        }
        Ok(described)
    }

    pub(super) fn subscribe(
        &mut self,
        peer: PeerId,
        events: EventSink,
        tracks: Vec<TrackInfo>,
        now: Instant,
    ) -> Result<Option<Negotiated>, MediaError> {
        let id = match self.conn_of(peer, PcKind::Subscribe) {
            Some(id) => id,
            None if tracks.is_empty() => return Ok(None),
            None => self.new_conn(peer, PcKind::Subscribe, events, now)?,
        };
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if conn.offer_outstanding {
            return Err(MediaError::Internal(
                "a subscribe offer is already outstanding".into(),
            ));
        }
        let mut changed = false;
        let gone: Vec<TrackId> = conn
            .legs
            .keys()
            .filter(|t| !tracks.iter().any(|w| w.id == **t))
            .copied()
            .collect();
        for track in gone {
            if let Some(leg) = conn.legs.remove(&track) {
                conn.by_ssrc.remove(&leg.ssrc);
                if let Err(e) = conn.pc.remove_track(leg.sender) {
                    debug!(error = %e, "remove_track failed");
                }
                changed = true;
            }
            if let Some(source) = self.sources.get_mut(&track) {
                source.subscribers.retain(|s| s.conn != id);
            }
        }
        for want in &tracks {
            let kind = usize::from(want.kind == MediaKind::Video);
            // `rtc` 0.21 takes a connection's codecs of a kind from the
            // first answered m-section of that kind, once and for all: that
            // one offers every codec until it is answered, so that a track
            // in another codec (an H264 publisher after a VP8 one) can still
            // be added later. Every other section, and that one once
            // answered, offers only its source's codec: each section of the
            // subscriber's answers is parsed again at every renegotiation,
            // and one of every codec costs `rtc` about 40 times one of two
            // (it was most of sfud's CPU while a burst of people joined).
            let narrow = self.conns.get(&id).is_some_and(|c| c.every_codec[kind]);
            let mut wide = None;
            let added = self.add_leg(id, want, now, |pc, track| {
                let transceiver = pc.add_transceiver_from_track(
                    track,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )?;
                if narrow {
                    offer_only(pc, transceiver, &want.codec);
                } else {
                    wide = Some(transceiver);
                }
                Ok(RTCRtpSenderId::from(transceiver))
            })?;
            if let (Some(transceiver), Some(conn)) = (wide, self.conns.get_mut(&id)) {
                conn.every_codec[kind] = true;
                conn.wide.push((transceiver, want.codec.clone()));
            }
            changed |= added;
        }
        self.set_adaptive(id);
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if !changed && (conn.negotiated || conn.legs.is_empty()) {
            return Ok(None);
        }
        let offer = conn
            .pc
            .create_offer(None)
            .map_err(|e| MediaError::Internal(e.to_string()))?;
        let described = describe(conn, offer, &self.announced, now)?;
        conn.offer_outstanding = true;
        self.drive(id, now);
        Ok(Some(described))
    }

    /// A leg of `want` on subscribe connection `id`, its sender made by
    /// `attach` (a transceiver of the server's offer, or one of the
    /// client's offer); false when it has one already or the track is gone.
    pub(super) fn add_leg(
        &mut self,
        id: ConnId,
        want: &TrackInfo,
        now: Instant,
        attach: impl FnOnce(
            &mut RTCPeerConnection,
            MediaStreamTrack,
        ) -> Result<RTCRtpSenderId, rtc::shared::error::Error>,
    ) -> Result<bool, MediaError> {
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if conn.legs.contains_key(&want.id) {
            return Ok(false);
        }
        let Some(source) = self.sources.get_mut(&want.id) else {
            return Ok(false);
        };
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 && !conn.by_ssrc.contains_key(&s) {
                break s;
            }
        };
        let rtx_ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 && s != ssrc && !conn.by_ssrc.contains_key(&s) {
                break s;
            }
        };
        let kind = match want.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let name = format!("{}-{}", want.label(), want.id.0);
        let track = MediaStreamTrack::new(
            want.publisher.to_string(),
            name.clone(),
            name,
            kind,
            // No codec here: naming the source's codec would make this
            // m-section offer only it, and `rtc` 0.21 takes the codecs
            // of a subscriber's first answered video (or audio) section
            // as the only ones the connection may ever use, so a later
            // track in another codec (an H264 publisher after a VP8 one)
            // could not be added. `subscribe` decides which sections
            // offer every codec; the leg sends with the subscriber's
            // payload type for the source's codec (`bind_legs`).
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    // Video legs get an RTX stream: the engine probes the
                    // subscriber's link with retransmissions on it.
                    rtx: (want.kind == MediaKind::Video)
                        .then_some(RTCRtpRtxParameters { ssrc: rtx_ssrc }),
                    ..Default::default()
                },
                ..Default::default()
            }],
        );
        let sender =
            attach(&mut conn.pc, track).map_err(|e| MediaError::Internal(e.to_string()))?;
        let mut leg = Leg::new(sender, ssrc);
        leg.rtx_ssrc = (want.kind == MediaKind::Video).then_some(rtx_ssrc);
        if source.simulcast() {
            let mut switcher = LayerSwitcher::new(source.video_codec, source.codec.clock_rate);
            switcher.set_target(source.best_active(now).or(Some(0)));
            leg.switcher = Some(switcher);
        }
        source.subscribers.push(Subscriber {
            conn: id,
            layers: leg.layer_interest(),
        });
        conn.legs.insert(want.id, leg);
        conn.by_ssrc.insert(ssrc, want.id);
        Ok(true)
    }

    /// Whoever receives video has its link measured: the allocation picks
    /// its simulcast layers, and pauses video it cannot carry.
    pub(super) fn set_adaptive(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let sources = &self.sources;
        conn.adaptive = conn.legs.iter().any(|(track, leg)| {
            leg.switcher.is_some()
                || sources
                    .get(track)
                    .is_some_and(|s| s.info.kind == MediaKind::Video)
        });
    }

    pub(super) fn subscribe_answer(
        &mut self,
        peer: PeerId,
        sdp: String,
        now: Instant,
    ) -> Result<(), MediaError> {
        let id = self
            .conn_of(peer, PcKind::Subscribe)
            .ok_or(MediaError::NoOfferOutstanding)?;
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if !conn.offer_outstanding {
            return Err(MediaError::NoOfferOutstanding);
        }
        sdp_limits::check(&sdp, Described::Answer)?;
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let remote = peer::sha256_fingerprints(&answer.sdp);
        conn.pc
            .set_remote_description(now, answer)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        note_fingerprints(conn, remote);
        conn.offer_outstanding = false;
        conn.negotiated = true;
        if !conn.connected && conn.connect_by.is_none() {
            conn.connect_by = Some(now + CONNECT_TIMEOUT);
        }
        let early = conn.early_check.take();
        let fresh = self.bind_legs(id);
        if let Some(conn) = self.conns.get_mut(&id) {
            // Answered: the connection's codecs are set (see `subscribe`).
            for (transceiver, codec) in std::mem::take(&mut conn.wide) {
                offer_only(&mut conn.pc, transceiver, &codec);
            }
        }
        let connected = self.conns.get(&id).is_some_and(|c| c.connected);
        self.drive(id, now);
        if let Some(check) = early {
            if let Some(conn) = self.conns.get_mut(&id) {
                if let Err(e) = conn.pc.handle_read(check) {
                    debug!(%peer, error = %e, "early connectivity check rejected");
                }
            }
            self.drive(id, now);
        }
        if connected {
            for track in fresh {
                self.request_leg_keyframe(id, track, now, KeyframeCause::NewSubscriber);
            }
        }
        Ok(())
    }

    /// Each leg of subscribe connection `id` takes what the negotiation
    /// gave its sender: the subscriber's payload type for the source's
    /// codec (and its RTX pair), and the header extension ids. The legs
    /// negotiated for the first time.
    pub(super) fn bind_legs(&mut self, id: ConnId) -> Vec<TrackId> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Vec::new();
        };
        let peer = conn.peer;
        let mut fresh = Vec::new();
        for (track, leg) in conn.legs.iter_mut() {
            let Some(source) = self.sources.get(track) else {
                continue;
            };
            let Some(mut sender) = conn.pc.rtp_sender(leg.sender) else {
                continue;
            };
            let params = sender.get_parameters();
            let codecs = &params.rtp_parameters.codecs;
            let pt = codec_for(codecs, &source.codec.mime_type, &source.codec.sdp_fmtp_line)
                .map(|c| c.payload_type);
            let sub_ext: Vec<(&str, u16)> = params
                .rtp_parameters
                .header_extensions
                .iter()
                .map(|e| (e.uri.as_str(), e.id))
                .collect();
            let map = ExtensionMap::between(
                source.extensions.iter().map(|(u, i)| (u.as_str(), *i)),
                &sub_ext,
            );
            if leg.payload_type.is_none() && pt.is_some() {
                fresh.push(*track);
            }
            if pt.is_none() {
                warn!(%peer, track = track.0, codec = %source.codec.mime_type, "subscriber did not accept the codec");
            }
            // The RTX payload type paired with the leg's (`apt=`).
            leg.rtx_payload_type = pt.and_then(|pt| rtx_for(codecs, pt).map(|c| c.payload_type));
            debug!(%peer, track = track.0, payload_type = ?pt, rtx = ?leg.rtx_payload_type, rtx_ssrc = ?leg.rtx_ssrc, extensions = ?sub_ext, "leg negotiated");
            leg.payload_type = pt;
            leg.extensions = map;
            leg.transport_cc = sub_ext
                .iter()
                .find(|(uri, _)| *uri == TRANSPORT_CC_URI)
                .and_then(|(_, id)| u8::try_from(*id).ok())
                .unwrap_or(0);
            leg.abs_send_time = sub_ext
                .iter()
                .find(|(uri, _)| *uri == ABS_SEND_TIME_URI)
                .and_then(|(_, id)| u8::try_from(*id).ok())
                .unwrap_or(0);
        }
        fresh
    }

    pub(super) fn remote_candidate(
        &mut self,
        peer: PeerId,
        kind: PcKind,
        candidate: CandidateInit,
        now: Instant,
    ) -> Result<(), MediaError> {
        let id = self
            .conn_of(peer, kind)
            .ok_or(MediaError::NotNegotiated(kind))?;
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if conn.pc.remote_description().is_none() {
            return Err(MediaError::NotNegotiated(kind));
        }
        let line = candidate.candidate.trim();
        if line.is_empty() {
            // An empty candidate string also signals the end of candidates.
            return Ok(());
        }
        if !line.starts_with("candidate:") && !line.starts_with("a=candidate:") {
            return Err(MediaError::BadCandidate(
                "expected a `candidate:` attribute".into(),
            ));
        }
        // The server is ICE-lite: it answers checks and learns the client's
        // address from them, so a candidate it cannot resolve (an mDNS
        // `.local` name) is harmless.
        if line.contains(".local ") {
            return Ok(());
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment,
            url: None,
        };
        conn.pc
            .add_remote_candidate(init)
            .map_err(|e| MediaError::BadCandidate(e.to_string()))?;
        self.drive(id, now);
        Ok(())
    }
}

/// Sets a connection's local description and returns it with the server's
/// candidates, which go out once per connection, after its first description.
pub(super) fn describe(
    conn: &mut Conn,
    description: RTCSessionDescription,
    announced: &[Announced],
    now: Instant,
) -> Result<Negotiated, MediaError> {
    conn.pc
        .set_local_description(now, description)
        .map_err(|e| MediaError::Internal(e.to_string()))?;
    let sdp = conn
        .pc
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| MediaError::Internal("no local description".into()))?;
    note_fingerprints(conn, peer::sha256_fingerprints(&sdp));
    let candidates = if conn.candidates_sent {
        Vec::new()
    } else {
        conn.candidates_sent = true;
        peer::trickle_candidates(announced, &sdp, &conn.ufrag)
    };
    Ok(Negotiated { sdp, candidates })
}

/// Makes transceiver `id`'s m-section offer only `codec` (and the repair
/// formats that go with it); where `rtc` does not know the codec, the
/// section keeps offering every codec.
fn offer_only(pc: &mut RTCPeerConnection, id: RTCRtpTransceiverId, codec: &Codec) {
    // Answered, the sender's codecs are the negotiated ones, which it sends
    // with (payload types, feedback): keep those of `codec`, so that `rtc`'s
    // own write path still finds the leg's payload types.
    let negotiated = pc
        .rtp_sender(RTCRtpSenderId::from(id))
        .map(|mut s| s.get_parameters().rtp_parameters.codecs.clone())
        .unwrap_or_default();
    let preferences = match codec_for(&negotiated, &codec.mime_type, &codec.fmtp) {
        Some(primary) => std::iter::once(primary.clone())
            .chain(rtx_for(&negotiated, primary.payload_type).cloned())
            .collect(),
        // Not negotiated yet: `rtc` maps it to its own payload type.
        None => vec![RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: codec.mime_type.clone(),
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                sdp_fmtp_line: codec.fmtp.clone(),
                rtcp_feedback: Vec::new(),
            },
            payload_type: 0,
        }],
    };
    let Some(mut transceiver) = pc.rtp_transceiver(id) else {
        return;
    };
    if let Err(e) = transceiver.set_codec_preferences(preferences) {
        debug!(codec = %codec.mime_type, error = %e, "section offers every codec");
    }
}

/// The codec of `codecs` with `mime` and `fmtp`, else the first with `mime`.
fn codec_for<'a>(
    codecs: &'a [RTCRtpCodecParameters],
    mime: &str,
    fmtp: &str,
) -> Option<&'a RTCRtpCodecParameters> {
    let same_mime = |c: &&RTCRtpCodecParameters| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime);
    codecs
        .iter()
        .filter(same_mime)
        .find(|c| c.rtp_codec.sdp_fmtp_line == fmtp)
        .or_else(|| codecs.iter().find(same_mime))
}

/// The RTX format of `codecs` that repairs payload type `pt` (`apt=`).
fn rtx_for(codecs: &[RTCRtpCodecParameters], pt: u8) -> Option<&RTCRtpCodecParameters> {
    let apt = format!("apt={pt}");
    codecs.iter().find(|c| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_RTX)
            && c.rtp_codec
                .sdp_fmtp_line
                .split(';')
                .any(|p| p.trim() == apt)
    })
}

/// Remembers the certificate fingerprints a description applied to `conn`
/// names, once each (every renegotiation repeats them).
pub(super) fn note_fingerprints(conn: &mut Conn, fingerprints: Vec<Vec<u8>>) {
    for f in fingerprints {
        if !conn.fingerprints.contains(&f) {
            conn.fingerprints.push(f);
        }
    }
}
