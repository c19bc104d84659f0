//! Keyframe requests to publishers: why they are asked (counted by cause
//! in `/metrics`), and each layer's [`Throttle`]: at most one PLI per
//! [`PLI_INTERVAL`] to a layer, a request inside the interval held and sent
//! when it ends (by the core's 100 ms checks). The core's request paths
//! (for a track's recorded layer, for the layer a subscriber leg gets, for
//! one layer) are here too.

use super::*;

/// Least time between two keyframe requests sent to one layer.
pub(super) const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// Why the engine asked a publisher for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeCause {
    /// A subscriber's PLI or FIR, relayed.
    Subscriber,
    /// A subscriber leg that starts.
    NewSubscriber,
    /// A subscriber leg that moves to another simulcast layer.
    LayerSwitch,
    /// A recording that starts (or its depayloader asked).
    Recording,
}

/// Keyframe requests sent to publishers, by cause (see [`KeyframeCause`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyframeRequests {
    /// Relayed from subscribers.
    pub subscriber: u64,
    /// For subscriber legs that start.
    pub new_subscriber: u64,
    /// For simulcast layer switches.
    pub layer_switch: u64,
    /// For recordings.
    pub recording: u64,
}

impl KeyframeRequests {
    pub(super) fn count(&mut self, cause: KeyframeCause) {
        match cause {
            KeyframeCause::Subscriber => self.subscriber += 1,
            KeyframeCause::NewSubscriber => self.new_subscriber += 1,
            KeyframeCause::LayerSwitch => self.layer_switch += 1,
            KeyframeCause::Recording => self.recording += 1,
        }
    }
}

/// One layer's keyframe requests: when the last went out, and the one
/// held until the interval ends.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Throttle {
    last: Option<Instant>,
    held: Option<KeyframeCause>,
}

impl Throttle {
    /// A request at `now` for `cause`: true when it goes out now; inside
    /// the interval it is held instead (with the first cause held).
    pub(super) fn ask(&mut self, now: Instant, cause: KeyframeCause) -> bool {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < PLI_INTERVAL)
        {
            self.held.get_or_insert(cause);
            return false;
        }
        self.held = None;
        self.last = Some(now);
        true
    }

    /// The request held, if any, and why.
    pub(super) fn held(&self) -> Option<KeyframeCause> {
        self.held
    }
}

impl MediaCore {
    pub(super) fn request_keyframe(&mut self, track: TrackId, now: Instant, cause: KeyframeCause) {
        let Some(layer) = self.sources.get(&track).map(|s| s.tap_layer) else {
            return;
        };
        self.request_layer_keyframe(track, layer, now, cause);
    }

    /// Asks a publisher for a keyframe of the layer subscriber connection
    /// `sub` gets of `track` (or is about to get).
    pub(super) fn request_leg_keyframe(
        &mut self,
        sub: ConnId,
        track: TrackId,
        now: Instant,
        cause: KeyframeCause,
    ) {
        let layer = self
            .conns
            .get(&sub)
            .and_then(|c| c.legs.get(&track))
            .and_then(|leg| leg.switcher.as_ref())
            .map_or(Some(0), |sw| sw.current().or(sw.target()));
        if let Some(layer) = layer {
            self.request_layer_keyframe(track, layer, now, cause);
        }
    }

    /// Asks a publisher for a keyframe of one layer, at most once per
    /// [`PLI_INTERVAL`]; a request inside the interval is sent when it ends.
    pub(super) fn request_layer_keyframe(
        &mut self,
        track: TrackId,
        layer: usize,
        now: Instant,
        cause: KeyframeCause,
    ) {
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        if source.info.kind != MediaKind::Video {
            return;
        }
        let (conn_id, receiver, origin) = (source.conn, source.receiver, source.origin);
        let Some(l) = source.layers.get_mut(layer) else {
            return;
        };
        if let Some(owner) = origin {
            // A mirror: the owner asks the publisher (and counts it).
            if l.keyframes.ask(now, cause) {
                self.pipe_out.push((
                    owner,
                    super::PipeMsg::Keyframe {
                        track,
                        layer: layer as u8,
                        cause,
                    },
                ));
            }
            return;
        }
        let Some(media_ssrc) = l.ssrc else {
            return;
        };
        if !l.keyframes.ask(now, cause) {
            return;
        }
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(mut r) = conn.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match r.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => {
                    self.stats.plis_sent += 1;
                    self.stats.keyframe_requests.count(cause);
                }
                Err(e) => debug!(error = %e, "PLI not sent"),
            }
        }
        flush(conn, &mut self.out, &self.local_addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval_goes_out_and_the_first_held_cause_waits() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Throttle::default();
        assert!(t.ask(t0, KeyframeCause::NewSubscriber));
        assert_eq!(t.held(), None);
        assert!(!t.ask(t0 + ms(10), KeyframeCause::Subscriber));
        assert!(!t.ask(t0 + ms(20), KeyframeCause::LayerSwitch));
        assert_eq!(t.held(), Some(KeyframeCause::Subscriber));
        assert!(!t.ask(t0 + ms(499), KeyframeCause::Subscriber));
        // The interval over, the held request goes out and nothing waits.
        assert!(t.ask(t0 + ms(500), KeyframeCause::Subscriber));
        assert_eq!(t.held(), None);
        assert!(!t.ask(t0 + ms(700), KeyframeCause::Recording));
        assert!(t.ask(t0 + ms(1000), KeyframeCause::Recording));
    }

    #[test]
    fn requests_are_counted_by_cause() {
        let mut r = KeyframeRequests::default();
        for cause in [
            KeyframeCause::Subscriber,
            KeyframeCause::Subscriber,
            KeyframeCause::NewSubscriber,
            KeyframeCause::LayerSwitch,
            KeyframeCause::Recording,
        ] {
            r.count(cause);
        }
        assert_eq!(
            (r.subscriber, r.new_subscriber, r.layer_switch, r.recording),
            (2, 1, 1, 1)
        );
    }
}
