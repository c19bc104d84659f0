//! Which simulcast layer each subscriber leg forwards.
//!
//! Every leg of a simulcast track aims at the best layer the publisher is
//! sending now; a layer that stops (the publisher paused it, or its own
//! bandwidth estimate dropped it) moves the legs on it to the best layer
//! still sent, and back when it returns. Switches happen at the target
//! layer's next keyframe (`simulcast::LayerSwitcher`), which the forwarding
//! path asks the publisher for.

use super::*;

/// Least time a leg stays on a layer before it moves up again, so that a
/// layer the publisher toggles does not make its subscribers flap.
const MIN_ON_LAYER: Duration = Duration::from_secs(2);

impl MediaEngine {
    /// Sets each simulcast leg's target layer (see the module docs).
    pub(super) fn select_layers(&mut self, now: Instant) {
        for source in self.sources.values() {
            if !source.simulcast() {
                continue;
            }
            let best = source.best_active(now);
            for sub in &source.subscribers {
                let Some(leg) = self
                    .conns
                    .get_mut(sub)
                    .and_then(|c| c.legs.get_mut(&source.info.id))
                else {
                    continue;
                };
                let Some(sw) = leg.switcher.as_mut() else {
                    continue;
                };
                let Some(best) = best else {
                    // Nothing is sent: keep the target, the layer may resume.
                    continue;
                };
                let target = sw.target().unwrap_or(0);
                let current_active = sw
                    .current()
                    .is_some_and(|c| source.layers.get(c).is_some_and(|l| l.active(now)));
                let want = if best < target || !current_active {
                    // Down at once: the layer asked for is not sent.
                    Some(best)
                } else if best > target
                    && leg
                        .layer_since
                        .is_none_or(|t| now.saturating_duration_since(t) >= MIN_ON_LAYER)
                {
                    Some(best)
                } else {
                    None
                };
                if let Some(want) = want.filter(|w| Some(*w) != sw.target()) {
                    sw.set_target(Some(want));
                    leg.layer_since = Some(now);
                }
            }
        }
    }
}
