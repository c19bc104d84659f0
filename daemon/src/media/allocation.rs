//! Sharing what a subscriber's link carries between the simulcast tracks it
//! receives: every track its lowest layer first, tracks that do not fit
//! paused, the least important first, then one layer up at a time, the most
//! important first. Plain functions over bitrates, tested without sockets.

/// Shares `budget` (bits per second) between simulcast tracks, most
/// important first. `rates[i][l]` is what layer `l` of track `i` takes, or
/// `None` when the publisher does not send it. Every track gets its lowest
/// layer first; tracks for which even that does not fit are paused
/// (`None`), the least important first; what is left lifts tracks one layer
/// at a time, the most important first.
pub(crate) fn allocate(budget: u64, rates: &[Vec<Option<u64>>]) -> Vec<Option<usize>> {
    let mut left = budget;
    let mut chosen: Vec<Option<usize>> = rates
        .iter()
        .map(|layers| {
            let (lowest, rate) = layers
                .iter()
                .enumerate()
                .find_map(|(l, r)| r.map(|r| (l, r)))?;
            (rate <= left).then(|| {
                left -= rate;
                lowest
            })
        })
        .collect();
    loop {
        let mut lifted = false;
        for (i, layers) in rates.iter().enumerate() {
            let Some(now) = chosen[i] else {
                continue;
            };
            let current = layers[now].unwrap_or(0);
            let Some((up, rate)) = layers
                .iter()
                .enumerate()
                .skip(now + 1)
                .find_map(|(l, r)| r.map(|r| (l, r)))
            else {
                continue;
            };
            let extra = rate.saturating_sub(current);
            if extra <= left {
                left -= extra;
                chosen[i] = Some(up);
                lifted = true;
            }
        }
        if !lifted {
            return chosen;
        }
    }
}

/// What one allocation costs, bits per second.
pub(crate) fn cost(rates: &[Vec<Option<u64>>], chosen: &[Option<usize>]) -> u64 {
    rates
        .iter()
        .zip(chosen)
        .filter_map(|(layers, c)| layers.get((*c)?).copied().flatten())
        .sum()
}

/// The next better allocation than `chosen` (the most important track that
/// can go up, one layer up), if any: what a probe must show room for.
pub(crate) fn next_better(
    rates: &[Vec<Option<u64>>],
    chosen: &[Option<usize>],
) -> Option<Vec<Option<usize>>> {
    for (i, layers) in rates.iter().enumerate() {
        let from = chosen[i].map_or(0, |c| c + 1);
        if let Some(up) = (from..layers.len()).find(|l| layers[*l].is_some()) {
            let mut better = chosen.to_vec();
            better[i] = Some(up);
            return Some(better);
        }
    }
    None
}

/// The highest layer a subscriber's `track_settings` leave wanted: its
/// `max_layer`, and the smallest layer at least as wide and high as the
/// size it shows the track at (`sizes`: each layer's, lowest first, where
/// known). `None`: no cap (or no layer big enough is known).
pub(crate) fn layer_cap(
    prefs: &crate::media::TrackPrefs,
    sizes: impl IntoIterator<Item = Option<(u32, u32)>>,
) -> Option<usize> {
    let by_layer = prefs.max_layer.map(usize::from);
    if prefs.max_width.is_none() && prefs.max_height.is_none() {
        return by_layer;
    }
    let (w, h) = (prefs.max_width.unwrap_or(0), prefs.max_height.unwrap_or(0));
    let by_size = sizes
        .into_iter()
        .position(|s| s.is_some_and(|(lw, lh)| lw >= w && lh >= h));
    match (by_layer, by_size) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackPrefs;

    #[test]
    fn a_tile_caps_at_the_smallest_layer_that_covers_it() {
        let sizes = [Some((320, 180)), Some((640, 360)), Some((1280, 720))];
        let tile = |w, h| TrackPrefs {
            max_width: Some(w),
            max_height: Some(h),
            ..Default::default()
        };
        assert_eq!(layer_cap(&tile(160, 90), sizes), Some(0));
        assert_eq!(layer_cap(&tile(320, 180), sizes), Some(0));
        // A 4:3 tile covered by 16:9 video needs the height.
        assert_eq!(layer_cap(&tile(300, 225), sizes), Some(1));
        assert_eq!(layer_cap(&tile(1280, 720), sizes), Some(2));
        // Bigger than any layer: no cap.
        assert_eq!(layer_cap(&tile(1920, 1080), sizes), None);
        // A layer not seen yet does not count.
        assert_eq!(
            layer_cap(&tile(200, 100), [None, Some((640, 360)), None]),
            Some(1)
        );
        assert_eq!(layer_cap(&TrackPrefs::default(), sizes), None);
        let both = TrackPrefs {
            max_layer: Some(1),
            ..tile(1280, 720)
        };
        assert_eq!(layer_cap(&both, sizes), Some(1));
        let width_only = TrackPrefs {
            max_width: Some(600),
            ..Default::default()
        };
        assert_eq!(layer_cap(&width_only, sizes), Some(1));
    }

    const Q: u64 = 150_000;
    const H: u64 = 500_000;
    const F: u64 = 1_500_000;

    fn three() -> Vec<Option<u64>> {
        vec![Some(Q), Some(H), Some(F)]
    }

    #[test]
    fn everyone_gets_the_lowest_layer_before_anyone_goes_up() {
        let rates = vec![three(), three()];
        assert_eq!(allocate(u64::MAX, &rates), vec![Some(2), Some(2)]);
        assert_eq!(allocate(2 * Q, &rates), vec![Some(0), Some(0)]);
        // The first track goes up first.
        assert_eq!(allocate(Q + H, &rates), vec![Some(1), Some(0)]);
        assert_eq!(allocate(2 * H, &rates), vec![Some(1), Some(1)]);
    }

    #[test]
    fn when_even_the_lowest_does_not_fit_the_least_important_pause() {
        let rates = vec![three(), three(), three()];
        assert_eq!(allocate(2 * Q + 10, &rates), vec![Some(0), Some(0), None]);
        assert_eq!(allocate(Q - 1, &rates), vec![None, None, None]);
    }

    #[test]
    fn layers_not_sent_are_skipped() {
        let rates = vec![vec![Some(Q), None, Some(F)]];
        assert_eq!(allocate(Q + H, &rates), vec![Some(0)]);
        assert_eq!(allocate(F, &rates), vec![Some(2)]);
        assert_eq!(
            allocate(u64::MAX, &[vec![None, Some(H), None]]),
            vec![Some(1)]
        );
        let chosen = vec![Some(0)];
        assert_eq!(next_better(&rates, &chosen), Some(vec![Some(2)]));
        assert_eq!(cost(&rates, &[Some(2)]), F);
        assert_eq!(next_better(&rates, &[Some(2)]), None);
    }
}
