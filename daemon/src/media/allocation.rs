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

#[cfg(test)]
mod tests {
    use super::*;

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
