//! The engine's counters (`/metrics`, `sfuctl status`) and what it
//! reports of one participant's connections (`sfuctl peers show`).

use super::*;

/// Counters of the media engine.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MediaStats {
    /// Peer connections alive.
    pub connections: usize,
    /// Published tracks alive.
    pub tracks: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets received from publishers.
    pub rtp_in: u64,
    /// RTP packets written to subscriber legs.
    pub rtp_forwarded: u64,
    /// RTP payload bytes written to subscriber legs.
    pub bytes_forwarded: u64,
    /// Datagrams from nobody we know.
    pub dropped_unroutable: u64,
    /// Datagrams the socket would not take (buffer full) or refused.
    pub dropped_send: u64,
    /// RTP packets a subscriber leg refused (not negotiated or not connected yet).
    pub dropped_leg: u64,
    /// Keyframe requests sent to publishers.
    pub plis_sent: u64,
    /// The same, by cause.
    pub keyframe_requests: KeyframeRequests,
    /// Times a subscriber leg moved to another simulcast layer.
    pub layer_switches: u64,
    /// Packets sent to probe subscribers' links (RTX copies).
    pub probe_packets: u64,
    /// Times a subscriber leg of a simulcast track was paused for lack of
    /// room on the subscriber's link.
    pub layer_pauses: u64,
    /// Times a leg moved down on a congested link stopped its layer at once
    /// rather than at the lower layer's key frame.
    pub layer_drops: u64,
    /// Subscribers' transport-wide feedback datagrams read on the fast path.
    pub feedback_fast: u64,
    /// Packets sent again for subscribers' NACKs (fast path).
    pub rtp_retransmitted: u64,
    /// Subscribe connections whose media the engine protects itself.
    pub fast_path_connections: usize,
    /// RTP packets received from other workers (tracks they own, piped
    /// to legs here).
    pub piped_in: u64,
    /// Messages to other workers dropped because the worker's inbox was
    /// full.
    pub pipe_dropped: u64,
    /// Time forwarded packets spent in the loop (see `delay`).
    pub forward_delay: ForwardDelay,
    /// Publish connections' setup times (see `delay`).
    pub setup_publish: SetupTime,
    /// Subscribe connections' setup times (see `delay`).
    pub setup_subscribe: SetupTime,
    /// Chat messages relayed to rooms (`chat`).
    pub chat_messages: u64,
    /// Chat messages refused: too large, over the sender's rate, not text.
    pub chat_refused: u64,
    /// Chat messages not delivered to a receiver that did not keep up.
    pub chat_dropped: u64,
}

impl MediaStats {
    /// The workers' counters summed.
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a MediaStats>) -> MediaStats {
        let mut total = MediaStats::default();
        for w in workers {
            total.add(w);
        }
        total
    }

    /// Adds another worker's counters to these.
    pub fn add(&mut self, o: &MediaStats) {
        self.connections += o.connections;
        self.tracks += o.tracks;
        self.datagrams_in += o.datagrams_in;
        self.bytes_in += o.bytes_in;
        self.datagrams_out += o.datagrams_out;
        self.bytes_out += o.bytes_out;
        self.rtp_in += o.rtp_in;
        self.rtp_forwarded += o.rtp_forwarded;
        self.bytes_forwarded += o.bytes_forwarded;
        self.dropped_unroutable += o.dropped_unroutable;
        self.dropped_send += o.dropped_send;
        self.dropped_leg += o.dropped_leg;
        self.plis_sent += o.plis_sent;
        let (k, ok) = (&mut self.keyframe_requests, &o.keyframe_requests);
        k.subscriber += ok.subscriber;
        k.new_subscriber += ok.new_subscriber;
        k.layer_switch += ok.layer_switch;
        k.recording += ok.recording;
        self.layer_switches += o.layer_switches;
        self.probe_packets += o.probe_packets;
        self.layer_pauses += o.layer_pauses;
        self.layer_drops += o.layer_drops;
        self.feedback_fast += o.feedback_fast;
        self.rtp_retransmitted += o.rtp_retransmitted;
        self.fast_path_connections += o.fast_path_connections;
        self.piped_in += o.piped_in;
        self.pipe_dropped += o.pipe_dropped;
        self.forward_delay.add(&o.forward_delay);
        self.setup_publish.add(&o.setup_publish);
        self.setup_subscribe.add(&o.setup_subscribe);
        self.chat_messages += o.chat_messages;
        self.chat_refused += o.chat_refused;
        self.chat_dropped += o.chat_dropped;
    }
}

impl MediaCore {
    pub(super) fn report(&self, peer: PeerId, now: Instant) -> PeerMediaReport {
        let conn_report = |id: Option<ConnId>| {
            let c = self.conns.get(&id?)?;
            Some(ConnectionReport {
                state: if c.lost {
                    "failed"
                } else if c.connected {
                    "connected"
                } else {
                    "new"
                },
                // The selected pair's address; before one is, the last
                // address that named the connection.
                remote: c
                    .media_dest
                    .map(|(_, a)| a)
                    .or_else(|| self.routes.last_addr(id?)),
            })
        };
        let p = self.peers.get(&peer);
        let publish = p.and_then(|p| p.publish);
        let mut tracks: Vec<TrackReport> = self
            .sources
            .values()
            // A screen not shared yet is no track of the room's.
            .filter(|s| Some(s.conn) == publish && s.announced)
            .map(|s| TrackReport {
                id: s.info.id.0,
                kind: s.info.label(),
                codec: s.info.codec.mime_type.clone(),
                packets: s.packets(),
                bytes: s.bytes(),
                bitrate_bps: s.bitrate_bps(),
                subscribers: s.all_subscribers(),
                layers: if s.simulcast() {
                    s.layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| LayerReport {
                            rid: l.name(i),
                            bitrate_bps: l.bitrate_bps,
                            active: l.active(now),
                            paused: l.paused.is_some(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        tracks.sort_by_key(|t| t.id);
        let rid = |track: &TrackId, layer: Option<usize>| {
            let source = self.sources.get(track)?;
            let layer = layer?;
            Some(source.layers.get(layer)?.name(layer))
        };
        let mut receiving: Vec<ReceivedLayerReport> = p
            .and_then(|p| p.subscribe)
            .and_then(|id| self.conns.get(&id))
            .into_iter()
            .flat_map(|c| c.legs.iter())
            .filter_map(|(track, leg)| {
                let prefs = leg.prefs;
                let Some(sw) = leg.switcher.as_ref() else {
                    // A track sent once is listed when it is paused.
                    return (leg.prefs.paused || leg.starved).then_some(ReceivedLayerReport {
                        track: track.0,
                        layer: None,
                        target: None,
                        prefs,
                        starved: leg.starved && !leg.prefs.paused,
                    });
                };
                let target = (sw.target() != sw.current())
                    .then(|| rid(track, sw.target()))
                    .flatten();
                Some(ReceivedLayerReport {
                    track: track.0,
                    layer: rid(track, sw.current()),
                    target,
                    prefs,
                    starved: sw.target().is_none() && !prefs.paused,
                })
            })
            .collect();
        receiving.sort_by_key(|r| r.track);
        PeerMediaReport {
            peer,
            publish: conn_report(publish),
            subscribe: conn_report(p.and_then(|p| p.subscribe)),
            tracks,
            receiving,
            downlink_bps: p
                .and_then(|p| p.subscribe)
                .and_then(|id| self.conns.get(&id)?.downlink.estimate()),
        }
    }
}
