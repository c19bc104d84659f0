//! Which media worker a room goes to: the one with the fewest
//! participants, then the fewest rooms.

use std::collections::HashMap;

use super::{RoomCounts, RoomHandle};

/// Rooms open on each media worker (a room counts on its own worker), and
/// the participants placed on each (`peers`, one count per worker, from
/// [`crate::media::MediaHandle::worker_peers`]: a large room's
/// participants are spread over several).
pub(super) fn load(rooms: &HashMap<String, RoomHandle>, peers: &[usize]) -> Vec<RoomCounts> {
    let mut counts: Vec<RoomCounts> = peers
        .iter()
        .map(|&peers| RoomCounts { rooms: 0, peers })
        .collect();
    if counts.is_empty() {
        counts.push(RoomCounts::default());
    }
    for h in rooms.values().filter(|h| !h.tx.is_closed()) {
        if let Some(c) = counts.get_mut(h.worker) {
            c.rooms += 1;
        }
    }
    counts
}

/// The media worker a new room goes to: the one with the fewest
/// participants, then the fewest rooms, then the first.
pub(super) fn least_loaded(load: &[RoomCounts]) -> usize {
    (0..load.len())
        .min_by_key(|&w| (load[w].peers, load[w].rooms, w))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(peers_rooms: &[(usize, usize)]) -> Vec<RoomCounts> {
        peers_rooms
            .iter()
            .map(|&(peers, rooms)| RoomCounts { rooms, peers })
            .collect()
    }

    #[test]
    fn a_room_goes_to_the_worker_with_fewest_participants_then_rooms_then_the_first() {
        assert_eq!(least_loaded(&load(&[(4, 1), (0, 0)])), 1);
        assert_eq!(least_loaded(&load(&[(2, 2), (2, 1), (3, 0)])), 1);
        assert_eq!(least_loaded(&load(&[(0, 0), (0, 0)])), 0);
        assert_eq!(least_loaded(&[]), 0);
    }
}
