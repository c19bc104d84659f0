//! A publisher's tracks open and close.
//!
//! A track opens as soon as its publish connection is up (DTLS done), from
//! what its offer said of it (the receiver `rtc` made for the m-section: its
//! msid, RIDs, negotiated codec and header extensions), as Janus announces
//! a publisher at `webrtcup`. Subscribers' offers then go out while the
//! publisher's first packets are on their way, not after them: a client
//! whose media starts a moment after its transport (an encoder warming up,
//! a loaded machine) no longer adds that moment to everyone's join. A
//! track's first packet (`rtc`'s `OnTrack`) then tells its SSRC, or each
//! simulcast layer's.
//!
//! What the offer cannot say opens at the first packet as before: an SSRC
//! simulcast group (its layers are known by SSRC, `ssrc_simulcast`), and a
//! track `rtc` names only when media comes. Should the first packet carry
//! another codec than the one negotiated first, the track closes and opens
//! again with it, and subscribers renegotiate.

use super::*;

/// The first packet of a stream: its SSRC and RID.
type FirstPacket = (u32, Option<String>);

impl MediaCore {
    /// The publish connection `id` is up: every track its offer names that
    /// is not open yet opens now.
    pub(super) fn open_tracks(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get(&id).filter(|c| c.kind == PcKind::Publish) else {
            return;
        };
        let receivers: Vec<RTCRtpReceiverId> = conn.pc.get_receivers().collect();
        for receiver in receivers {
            self.open_track(id, receiver, None, now);
        }
    }

    pub(super) fn on_track_open(
        &mut self,
        id: ConnId,
        init: rtc::peer_connection::event::RTCTrackEventInit,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.kind != PcKind::Publish {
            return;
        }
        if let Some(track) = conn.tracks.get(&init.track_id).copied() {
            let sent = conn
                .pc
                .rtp_receiver(init.receiver_id)
                .and_then(|r| r.track().codec(init.ssrc).map(|c| c.mime_type.clone()));
            let expected = self.sources.get(&track).map(|s| &s.codec.mime_type);
            if sent
                .as_ref()
                .zip(expected)
                .is_some_and(|(s, e)| !s.eq_ignore_ascii_case(e))
            {
                info!(track = track.0, codec = ?sent, "the first packet has another codec than negotiated: the track opens again");
                self.on_track_close(id, &init.track_id);
            } else {
                // A layer of a track already open (or the track itself,
                // opened before its media).
                if self.on_layer_open(track, &init) {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.by_layer_ssrc.insert(init.ssrc, track);
                    }
                    self.attach_tap_when_known(track, now);
                }
                return;
            }
        }
        self.open_track(
            id,
            init.receiver_id,
            Some((init.ssrc, init.rid.clone())),
            now,
        );
    }

    /// Opens the track of `receiver`, at its first packet (`first`) or
    /// before any (None), and announces it.
    fn open_track(
        &mut self,
        id: ConnId,
        receiver_id: RTCRtpReceiverId,
        first: Option<FirstPacket>,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(mut receiver) = conn.pc.rtp_receiver(receiver_id) else {
            return;
        };
        let track_id = receiver.track().track_id().to_owned();
        if first.is_none() {
            // Before media: only a track the offer names, not open yet, and
            // not of an SSRC simulcast group (known by its first packet).
            let in_group = receiver
                .track()
                .ssrcs()
                .any(|ssrc| conn.sim.iter().any(|g| g.contains(&ssrc)));
            if track_id.is_empty() || conn.tracks.contains_key(&track_id) || in_group {
                return;
            }
        }
        // A simulcast track lists its RIDs (lowest first); each layer's SSRC
        // is learnt from its first packet.
        let rids: Vec<String> = receiver
            .track()
            .codings()
            .iter()
            .map(|c| &c.rtp_coding_parameters.rid)
            .filter(|rid| !rid.is_empty())
            .cloned()
            .collect();
        let kind = match receiver.track().kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return,
        };
        if first.is_none() && kind == MediaKind::Video && !conn.sim.is_empty() {
            return;
        }
        let params = receiver.get_parameters().rtp_parameters.clone();
        let codecs = params.codecs;
        let codec = first
            .as_ref()
            .and_then(|(ssrc, _)| receiver.track().codec(*ssrc).cloned())
            .or_else(|| codecs.first().map(|c| c.rtp_codec.clone()));
        let Some(codec) = codec else {
            warn!(peer = %conn.peer, "track without a codec ignored");
            return;
        };
        let payload_type = codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
            .map_or(0, |c| c.payload_type);
        let extensions: Vec<(String, u16)> = params
            .header_extensions
            .into_iter()
            .map(|e| (e.uri, e.id))
            .collect();
        let track = TrackId(self.next_track);
        self.next_track += 1;
        conn.tracks.insert(track_id.clone(), track);
        let info = TrackInfo {
            id: track,
            publisher: conn.peer,
            kind,
            codec: Codec {
                mime_type: codec.mime_type.clone(),
                clock_rate: codec.clock_rate,
                channels: codec.channels,
                fmtp: codec.sdp_fmtp_line.clone(),
            },
            source: if kind == MediaKind::Video
                && self
                    .peers
                    .get(&conn.peer)
                    .is_some_and(|p| p.screens.contains(&track_id))
            {
                TrackSource::Screen
            } else {
                TrackSource::Camera
            },
        };
        let (ssrc, rid) = first.unzip();
        let rid = rid.flatten();
        info!(peer = %conn.peer, track = track.0, kind = info.label(), codec = %codec.mime_type, ?ssrc, rids = ?rids, before_media = ssrc.is_none(), "track published");
        let peer = conn.peer;
        let sim_layers = ssrc.and_then(|ssrc| ssrc_simulcast::layers_of(conn, ssrc, kind, now));
        let layers = if let Some(layers) = sim_layers {
            layers
        } else if rids.len() > 1 && kind == MediaKind::Video {
            rids.into_iter()
                .map(|r| {
                    let ssrc = ssrc.filter(|_| rid.as_deref() == Some(r.as_str()));
                    Layer::new(Some(r), ssrc, kind, now)
                })
                .collect()
        } else {
            vec![Layer::new(rid, ssrc, kind, now)]
        };
        for ssrc in layers.iter().filter_map(|l| l.ssrc) {
            conn.by_layer_ssrc.insert(ssrc, track);
        }
        let speech = speech::SourceSpeech::for_track(kind, &extensions);
        let muted = self.starts_muted(peer, info.track_kind());
        self.sources.insert(
            track,
            Source {
                info: info.clone(),
                video_codec: VideoCodec::from_mime(&codec.mime_type),
                codec,
                extensions,
                conn: id,
                receiver: receiver_id,
                layers,
                subscribers: Vec::new(),
                payload_type,
                tap: None,
                tap_layer: 0,
                msid_track: track_id,
                origin: None,
                pipes: Vec::new(),
                unused_since: None,
                speech,
                muted,
                idle: idle::Idle::new(now),
                announced: false,
                priority: false,
            },
        );
        // A screen that is not shared yet stays unknown to the room (and
        // the recorder) until it is (`mute`).
        if !(muted && info.source == TrackSource::Screen) {
            self.announce(track);
        }
    }

    /// Tells the room (and the recorder) of a track.
    pub(super) fn announce(&mut self, track: TrackId) {
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        if std::mem::replace(&mut source.announced, true) {
            return;
        }
        let (peer, info) = (source.info.publisher, source.info.clone());
        let tap = self.peers.get(&peer).and_then(|p| p.tap.clone());
        if let Some(tap) = tap {
            self.attach_tap(track, tap);
        }
        self.emit(peer, MediaEvent::TrackPublished(info));
    }

    /// The first packet of a stream of a track already open: a simulcast
    /// layer's, or the track's own when it opened before its media. Whether
    /// the stream was known (its SSRC is then the layer's).
    fn on_layer_open(
        &mut self,
        track: TrackId,
        init: &rtc::peer_connection::event::RTCTrackEventInit,
    ) -> bool {
        let Some(source) = self.sources.get_mut(&track) else {
            return false;
        };
        let single = source.layers.len() == 1;
        let Some(layer) = source
            .layers
            .iter_mut()
            .find(|l| single || (init.rid.is_some() && l.rid == init.rid))
        else {
            debug!(track = track.0, rid = ?init.rid, "packets of an unknown layer ignored");
            return false;
        };
        layer.ssrc = Some(init.ssrc);
        info!(track = track.0, rid = ?init.rid, ssrc = init.ssrc, "stream opened");
        true
    }

    pub(super) fn on_track_close(&mut self, id: ConnId, core_track: &str) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(track) = conn.tracks.remove(core_track) else {
            return;
        };
        conn.by_layer_ssrc.retain(|_, t| *t != track);
        let peer = conn.peer;
        self.remove_source(track);
        info!(%peer, track = track.0, "track unpublished");
        self.emit(
            peer,
            MediaEvent::TrackUnpublished {
                publisher: peer,
                track,
            },
        );
    }
}
