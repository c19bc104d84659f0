//! Copies of publishers' media for the recorder: which tracks a tap gets,
//! and the sender reports it needs for lip sync.

use super::*;

impl MediaCore {
    /// Starts copying one track into a tap; tells the tap what it carries.
    /// A track opened before its media has no stream to describe yet: it
    /// is attached at its first packet (`attach_tap_when_known`).
    pub(super) fn attach_tap(&mut self, track: TrackId, tap: Tap) {
        let Some(s) = self.sources.get_mut(&track) else {
            return;
        };
        // A simulcast track is recorded in its best layer.
        let layer = s.best_known();
        let Some(ssrc) = s.layers[layer].ssrc else {
            return;
        };
        s.tap_layer = layer;
        tap.send(TapEvent::Track {
            track,
            kind: s.info.kind,
            codec: s.info.codec.clone(),
            payload_type: s.payload_type,
            screen: s.info.source == sfu_proto::signaling::TrackSource::Screen,
            ssrc,
        });
        s.tap = Some(tap);
    }

    /// A stream of `track` just opened: a track announced before its media
    /// joins its publisher's recording now, from a key frame.
    pub(super) fn attach_tap_when_known(&mut self, track: TrackId, now: Instant) {
        let Some(s) = self
            .sources
            .get(&track)
            .filter(|s| s.tap.is_none() && s.announced)
        else {
            return;
        };
        let Some(tap) = self
            .peers
            .get(&s.info.publisher)
            .and_then(|p| p.tap.clone())
        else {
            return;
        };
        self.attach_tap(track, tap);
        if self.sources.get(&track).is_some_and(|s| s.tap.is_some()) {
            self.request_keyframe(track, now, KeyframeCause::Recording);
        }
    }

    pub(super) fn set_tap(&mut self, peer: PeerId, tap: Option<Tap>, now: Instant) {
        let publish = {
            let p = self.peers.entry(peer).or_default();
            p.tap.clone_from(&tap);
            p.publish
        };
        let tracks: Vec<TrackId> = self
            .sources
            .iter()
            .filter(|(_, s)| Some(s.conn) == publish)
            .map(|(id, _)| *id)
            .collect();
        for track in tracks {
            match &tap {
                Some(tap) => {
                    self.attach_tap(track, tap.clone());
                    // A recording starts on a keyframe.
                    self.request_keyframe(track, now, KeyframeCause::Recording);
                }
                None => {
                    if let Some(s) = self.sources.get_mut(&track) {
                        s.tap = None;
                    }
                }
            }
        }
    }

    /// Hands a publisher's sender report about `track` to its tap, if any.
    pub(super) fn tap_sender_report(&self, track: TrackId, layer: usize, sr: &SenderReport) {
        let Some(tap) = self
            .sources
            .get(&track)
            .filter(|s| s.tap_layer == layer)
            .and_then(|s| s.tap.as_ref())
        else {
            return;
        };
        if let Ok(data) = sr.marshal() {
            tap.send(TapEvent::SenderReport {
                track,
                data: data.freeze(),
            });
        }
    }
}
