//! Which simulcast layer each subscriber leg forwards, and which video a
//! subscriber's link cannot carry at all.
//!
//! Per subscriber, the video tracks it receives share what its link carries
//! (`downlink::Downlink`, from the engine's measurement and probes) after
//! its audio: every track gets its lowest layer first (a track sent once
//! has one layer), then the rest lifts tracks one layer at a time: the
//! room's dominant speaker's first (`MediaCommand::Priority`, from
//! `crate::speech`), then the track shown biggest (a spotlit tile, by the
//! subscriber's `track_settings`), then the oldest (`allocation::allocate`);
//! the least important is the first to pause when even the lowest layers do
//! not all fit. A track for
//! which even its lowest layer does not fit is paused, audio never. Layers
//! the publisher is not sending are skipped. A leg moves down at once and up no sooner
//! than [`MIN_ON_LAYER`] after its last change, so layers do not flap.
//! Switches happen at the target layer's next keyframe
//! (`simulcast::LayerSwitcher`), which the forwarding path asks for; a move
//! down on a congested link stops the layer it leaves at once.
//!
//! When the link is known to carry less than the next better allocation,
//! the subscriber's link is probed for it (see `downlink`).
//!
//! A video track sent once has no layer to step down to: it is starved
//! (forwards nothing, as if its tile were hidden) once it has not fitted
//! for [`PAUSE_AFTER`], so that the subscriber's audio is not lost in a
//! congested link, and fed again at a key frame when the link carries it
//! (after a calm while, `Downlink::resume`).

use super::*;
use crate::media::allocation::{allocate, cost, layer_cap, next_better};
use crate::media::forward::Hold;

/// Least time a leg stays on a layer before it moves up again.
const MIN_ON_LAYER: Duration = Duration::from_secs(2);

/// Least time a leg holds its lowest layer before it may be paused.
const PAUSE_AFTER: Duration = Duration::from_secs(3);

/// Packet headers and SRTP on top of the payload bitrates measured.
const OVERHEAD: f64 = 1.1;

/// Most probe bytes per byte of video while probing.
const MAX_PROBE_RATIO: f64 = 8.0;

/// What a layer takes before it is measured: the demo page's encodings,
/// as client SDKs set them (lowest first).
fn nominal_rate(layer: usize) -> u64 {
    const RATES: [u64; 3] = [150_000, 500_000, 2_500_000];
    RATES[layer.min(RATES.len() - 1)]
}

impl MediaCore {
    /// Sets each simulcast leg's target layer, and each subscriber's probe
    /// (see the module docs).
    pub(super) fn select_layers(&mut self, now: Instant) {
        let sources = &self.sources;
        let stats = &mut self.stats;
        // Layers some leg forwards or waits for: the publisher must go on
        // sending them (see `layers`).
        let mut wanted: Vec<(TrackId, usize)> = Vec::new();
        // Legs whose target changed, with the layers they now take packets of.
        let mut retargeted: Vec<(TrackId, ConnId, u32)> = Vec::new();
        // Video sent once that a subscriber's link can carry again: it
        // resumes at the publisher's next key frame.
        let mut resumed: Vec<TrackId> = Vec::new();
        for (&id, conn) in self.conns.iter_mut() {
            // Only subscribers of video have layers to choose, or video to
            // pause (and this runs ten times a second for every subscriber).
            if conn.kind != PcKind::Subscribe || !conn.adaptive {
                continue;
            }
            // What audio takes, then each video track's layers (one for a
            // track sent once).
            let mut fixed = 0u64;
            let mut tracks: Vec<TrackId> = Vec::new();
            let mut rates: Vec<Vec<Option<u64>>> = Vec::new();
            // Most important first: the dominant speaker's, then the
            // tracks shown biggest (a spotlit tile), then the oldest.
            let mut ids: Vec<&TrackId> = conn.legs.keys().collect();
            ids.sort_unstable_by_key(|t| {
                let prefs = conn.legs.get(*t).map(|l| l.prefs).unwrap_or_default();
                importance(sources.get(*t).is_some_and(|s| s.priority), &prefs, **t)
            });
            for track in ids {
                let Some(source) = sources.get(track) else {
                    continue;
                };
                let prefs = conn.legs.get(track).map(|l| l.prefs).unwrap_or_default();
                if source.info.kind == MediaKind::Audio {
                    fixed += (source.bitrate_bps() as f64 * OVERHEAD) as u64;
                    continue;
                }
                // A track its subscriber paused takes nothing (below).
                if prefs.paused {
                    continue;
                }
                let lowest = source.layers.iter().position(|l| l.available(now));
                // No higher than the subscriber's tile needs, but never
                // nothing for want of a small enough layer.
                let cap = layer_cap(&prefs, source.layers.iter().map(|l| l.size))
                    .map(|c| c.max(lowest.unwrap_or(0)));
                tracks.push(*track);
                rates.push(
                    source
                        .layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| {
                            (l.available(now) && cap.is_none_or(|c| i <= c)).then(|| {
                                // Going up needs room for a layer's peaks;
                                // the lowest layer is kept for its average,
                                // so that a keyframe does not pause a track.
                                // A layer the publisher was told to pause
                                // takes what it took before.
                                let rate = match l.paused {
                                    Some(before) => before,
                                    None if Some(i) == lowest => l.bitrate_bps,
                                    None => l.peak_bps,
                                };
                                let measured = (rate as f64 * OVERHEAD) as u64;
                                if measured > 0 {
                                    measured
                                } else {
                                    nominal_rate(i)
                                }
                            })
                        })
                        .collect(),
                );
            }
            // Paused by the subscriber (its tile is hidden): at once.
            for (track, leg) in conn.legs.iter_mut() {
                let Some(sw) = leg.switcher.as_mut() else {
                    continue;
                };
                if leg.prefs.paused && sw.target().is_some() {
                    debug!(peer = %conn.peer, track = track.0, "paused by the subscriber");
                    sw.set_target(None);
                    leg.layer_since = Some(now);
                    retargeted.push((*track, id, sw.interest()));
                }
            }
            if tracks.is_empty() {
                continue;
            }
            // A layer the publisher just (re)started measures low while its
            // encoder ramps up: each layer costs at least twice the one below.
            for layers in &mut rates {
                let mut below = 0u64;
                for rate in layers.iter_mut().flatten() {
                    *rate = (*rate).max(below.saturating_mul(2));
                    below = *rate;
                }
            }
            conn.downlink.tick(now);
            let budget = conn.downlink.budget().saturating_sub(fixed);
            let chosen = allocate(budget, &rates);
            let mut current = Vec::with_capacity(tracks.len());
            for ((track, want), layers) in tracks.iter().zip(&chosen).zip(&rates) {
                let Some(leg) = conn.legs.get_mut(track) else {
                    current.push(None);
                    continue;
                };
                let Some(sw) = leg.switcher.as_mut() else {
                    // A video track sent once: forwarded, or starved (paused)
                    // while the link cannot carry even it.
                    let state = (!leg.starved).then_some(0);
                    if layers.first().is_none_or(Option::is_none) || *want == state {
                        // Agreed (or nothing to decide): the clock of a
                        // disagreement restarts.
                        leg.layer_since = Some(now);
                    } else if want.is_some()
                        || leg
                            .layer_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= PAUSE_AFTER)
                    {
                        // Starved only once it could not be carried for a
                        // while; fed again as soon as it fits.
                        debug!(peer = %conn.peer, track = track.0, starved = want.is_none(), budget, fixed, "video sent once");
                        leg.starved = want.is_none();
                        leg.layer_since = Some(now);
                        if leg.starved {
                            stats.layer_pauses += 1;
                            leg.hold = Hold::Paused;
                        } else if !leg.prefs.paused {
                            leg.hold = Hold::Resuming;
                            resumed.push(*track);
                        }
                    }
                    current.push((!leg.starved).then_some(0));
                    continue;
                };
                if layers.iter().all(Option::is_none) {
                    // Nothing is sent: keep the target, the layer may resume.
                    current.push(sw.current());
                    continue;
                }
                let target = sw.target();
                let settled = leg
                    .layer_since
                    .is_none_or(|t| now.saturating_duration_since(t) >= MIN_ON_LAYER);
                let target_sent =
                    target.is_some_and(|t| layers.get(t).is_some_and(Option::is_some));
                // Down (or to pause) at once; up once settled.
                let lowest = layers.iter().position(Option::is_some);
                let change = match (*want, target) {
                    (None, None) => false,
                    (w, t) if w == t && target_sent => false,
                    (Some(w), Some(t)) if w > t && target_sent => settled,
                    // Pause only a track that could not hold its lowest
                    // layer for a while: one bad reading must not stop
                    // a subscriber's video.
                    (None, Some(t)) if Some(t) == lowest && target_sent => leg
                        .layer_since
                        .is_none_or(|t| now.saturating_duration_since(t) >= PAUSE_AFTER),
                    _ => true,
                };
                if change {
                    debug!(peer = %conn.peer, track = track.0, from = ?target, to = ?want, budget, fixed, "layer target");
                    if want.is_none() && target.is_some() {
                        stats.layer_pauses += 1;
                    }
                    // Down on a congested link: the layer it cannot carry
                    // stops now, not at the lower layer's key frame.
                    let down = sw.current().is_some_and(|c| want.is_none_or(|w| w < c));
                    if down && conn.downlink.congested(now) {
                        stats.layer_drops += 1;
                        sw.drop_to(*want);
                    } else {
                        sw.set_target(*want);
                    }
                    leg.layer_since = Some(now);
                    retargeted.push((*track, id, sw.interest()));
                }
                current.push(sw.current());
                wanted.extend(
                    sw.target()
                        .into_iter()
                        .chain(sw.current())
                        .map(|l| (*track, l)),
                );
            }
            // A paused track resumes on its lowest layer after a calm while.
            if let Some(i) = chosen.iter().position(Option::is_none) {
                let resumed: Vec<Option<usize>> = chosen
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        if j == i {
                            rates[i].iter().position(Option::is_some)
                        } else {
                            *c
                        }
                    })
                    .collect();
                conn.downlink
                    .resume(cost(&rates, &resumed).saturating_add(fixed), now);
            }
            // Probe for the next better allocation when the link is not
            // known to carry it.
            if let Some(better) = next_better(&rates, &chosen) {
                let needed = cost(&rates, &better).saturating_add(fixed);
                if conn.downlink.maybe_probe(needed, now) {
                    debug!(peer = %conn.peer, needed, budget = conn.downlink.budget(), "probing the subscriber's link");
                }
            }
            conn.probe_ratio = match conn.downlink.probe() {
                Some(probe) => {
                    let video = cost(&rates, &current);
                    if video == 0 {
                        0.0
                    } else {
                        let missing = probe.target.saturating_sub(video + fixed);
                        (missing as f64 / video as f64).min(MAX_PROBE_RATIO)
                    }
                }
                None => 0.0,
            };
        }
        for (track, id, layers) in retargeted {
            if let Some(source) = self.sources.get_mut(&track) {
                source.set_interest(id, layers);
            }
        }
        for track in resumed {
            self.request_keyframe(track, now, KeyframeCause::LayerSwitch);
        }
        self.publisher_layers(&wanted, now);
    }
}

/// How a subscriber's video tracks rank in its allocation, most important
/// (smallest) first: the dominant speaker's, then the biggest tile, then
/// the oldest track.
fn importance(
    dominant: bool,
    prefs: &crate::media::TrackPrefs,
    track: TrackId,
) -> (std::cmp::Reverse<bool>, std::cmp::Reverse<u64>, TrackId) {
    let shown = u64::from(prefs.max_width.unwrap_or(0)) * u64::from(prefs.max_height.unwrap_or(0));
    (std::cmp::Reverse(dominant), std::cmp::Reverse(shown), track)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dominant_speaker_comes_first_then_the_biggest_tile_then_the_oldest() {
        let tile = |w: u32, h: u32| crate::media::TrackPrefs {
            max_width: Some(w),
            max_height: Some(h),
            ..Default::default()
        };
        let mut ranked = [
            importance(false, &tile(320, 180), TrackId(1)),
            importance(false, &tile(1280, 720), TrackId(2)),
            importance(true, &tile(320, 180), TrackId(3)),
            importance(false, &tile(320, 180), TrackId(0)),
        ];
        ranked.sort_unstable();
        let order: Vec<u64> = ranked.iter().map(|(_, _, t)| t.0).collect();
        assert_eq!(order, vec![3, 2, 0, 1]);
    }

    #[test]
    fn unmeasured_layers_take_what_client_sdks_ask_for() {
        assert_eq!(nominal_rate(0), 150_000);
        assert_eq!(nominal_rate(1), 500_000);
        assert_eq!(nominal_rate(2), 2_500_000);
        assert_eq!(nominal_rate(5), 2_500_000);
    }
}
