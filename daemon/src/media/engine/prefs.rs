//! What subscribers ask of the video they receive, and what publishers are
//! asked to send.
//!
//! A subscriber's `track_settings` pause one of its video legs (its tile is
//! hidden) or cap it at the smallest simulcast layer its tile needs (see
//! `allocate`). A simulcast layer that no subscriber leg forwards or waits
//! for, and the recorder does not copy, for [`PAUSE_UNUSED`] is paused at
//! the publisher: its room tells the publisher over signaling (`layers`),
//! and the publisher stops encoding it (a layer is named by its RID, or for
//! SSRC simulcast by its index). Allocation still counts it, at the
//! rate it had: a leg that then wants it asks the publisher to resume it,
//! and switches to it at its first key frame. The lowest layer is never
//! paused, so that a new subscriber always has something to start with.

use super::*;
use crate::media::forward::Hold;
use crate::media::TrackPrefs;

/// How long a simulcast layer nobody receives goes on being sent.
const PAUSE_UNUSED: Duration = Duration::from_secs(10);

impl MediaCore {
    /// Applies a subscriber's `track_settings` to its leg of `track`. A
    /// simulcast leg follows on the allocation's next round (every 100 ms);
    /// another leg holds at once, and resumes at the next key frame.
    pub(super) fn set_track_prefs(
        &mut self,
        peer: PeerId,
        track: TrackId,
        prefs: TrackPrefs,
        now: Instant,
    ) {
        let Some(id) = self.conn_of(peer, PcKind::Subscribe) else {
            return;
        };
        let Some(leg) = self.conns.get_mut(&id).and_then(|c| c.legs.get_mut(&track)) else {
            return;
        };
        let was_paused = leg.prefs.paused;
        leg.prefs = prefs;
        debug!(%peer, track = track.0, ?prefs, "track settings");
        if leg.switcher.is_some() {
            return;
        }
        match (was_paused, prefs.paused) {
            (false, true) => leg.hold = Hold::Paused,
            // A starved leg resumes when its link allows (`allocate`).
            (true, false) if !leg.starved => {
                leg.hold = Hold::Resuming;
                self.request_keyframe(track, now, KeyframeCause::NewSubscriber);
            }
            _ => {}
        }
    }

    /// Tells publishers which of their simulcast layers to send: `wanted`
    /// lists the (track, layer) pairs subscriber legs forward or wait for
    /// now. Runs with every allocation round.
    pub(super) fn publisher_layers(&mut self, wanted: &[(TrackId, usize)], now: Instant) {
        let mut changed: Vec<TrackId> = Vec::new();
        let piped = self.piped_wants();
        for &(track, layer) in wanted.iter().chain(&piped) {
            let Some(l) = self
                .sources
                .get_mut(&track)
                .and_then(|s| s.layers.get_mut(layer))
            else {
                continue;
            };
            if l.want(now) {
                changed.push(track);
            }
        }
        for (track, source) in self.sources.iter_mut() {
            // A mirror's owner decides (`pipe`).
            if !source.simulcast() || source.origin.is_some() {
                continue;
            }
            if source.tap.is_some() {
                let last = source.layers.len() - 1;
                if source.layers[source.tap_layer.min(last)].want(now) {
                    changed.push(*track);
                }
            }
            for l in source.layers.iter_mut().skip(1) {
                if l.paused.is_none()
                    && l.active(now)
                    && now.saturating_duration_since(l.wanted_at) >= PAUSE_UNUSED
                {
                    l.paused = Some(l.peak_bps.max(l.bitrate_bps));
                    changed.push(*track);
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for track in changed {
            let Some(source) = self.sources.get(&track).filter(|s| s.origin.is_none()) else {
                continue;
            };
            let active: Vec<(String, bool)> = source
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| (l.name(i), l.paused.is_none()))
                .collect();
            info!(
                track = track.0,
                ?active,
                "asking the publisher for these layers"
            );
            let publisher = source.info.publisher;
            self.emit(
                publisher,
                MediaEvent::LayersWanted {
                    publisher,
                    track: source.msid_track.clone(),
                    active,
                },
            );
        }
    }
}
