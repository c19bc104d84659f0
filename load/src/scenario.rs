//! The three load shapes and the seats (participants) each one needs.
//!
//! Seats are listed so that a larger instance of a scenario starts with the
//! smaller one's seats: ramping only appends participants.

use serde::{Deserialize, Serialize};

/// What the generator puts in front of the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Scenario {
    /// One room; every participant publishes and receives all others.
    Conference {
        /// Participants in the room.
        participants: usize,
    },
    /// One room; a few publishers, many receive-only subscribers.
    Webinar {
        /// Publishing participants (1 to 3 is typical).
        publishers: usize,
        /// Receive-only participants.
        subscribers: usize,
    },
    /// Many independent conferences of the same size.
    Rooms {
        /// Number of rooms.
        rooms: usize,
        /// Participants per room, each publishing and receiving the others.
        per_room: usize,
    },
}

/// One participant of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    /// Index of its room within the run.
    pub room: usize,
    /// It publishes audio and video.
    pub publishes: bool,
    /// It receives the others' media.
    pub receives: bool,
}

impl Scenario {
    /// Every participant, in joining order (publishers of a webinar first).
    pub fn seats(&self) -> Vec<Seat> {
        let both = |room| Seat {
            room,
            publishes: true,
            receives: true,
        };
        match *self {
            Scenario::Conference { participants } => (0..participants).map(|_| both(0)).collect(),
            Scenario::Webinar {
                publishers,
                subscribers,
            } => {
                let publisher = Seat {
                    room: 0,
                    publishes: true,
                    receives: false,
                };
                let subscriber = Seat {
                    room: 0,
                    publishes: false,
                    receives: true,
                };
                std::iter::repeat_n(publisher, publishers)
                    .chain(std::iter::repeat_n(subscriber, subscribers))
                    .collect()
            }
            Scenario::Rooms { rooms, per_room } => (0..rooms)
                .flat_map(|room| std::iter::repeat_n(both(room), per_room))
                .collect(),
        }
    }

    /// The same scenario `step` units larger: subscribers for a webinar,
    /// participants for a conference, rooms for `rooms`.
    pub fn grown(&self, step: usize) -> Scenario {
        match *self {
            Scenario::Conference { participants } => Scenario::Conference {
                participants: participants + step,
            },
            Scenario::Webinar {
                publishers,
                subscribers,
            } => Scenario::Webinar {
                publishers,
                subscribers: subscribers + step,
            },
            Scenario::Rooms { rooms, per_room } => Scenario::Rooms {
                rooms: rooms + step,
                per_room,
            },
        }
    }

    /// Publisher-to-receiver streams of each kind (audio or video): how many
    /// copies of each published packet the SFU sends in all.
    pub fn streams(&self) -> usize {
        match *self {
            Scenario::Conference { participants } => participants * participants.saturating_sub(1),
            Scenario::Webinar {
                publishers,
                subscribers,
            } => publishers * subscribers,
            Scenario::Rooms { rooms, per_room } => rooms * per_room * per_room.saturating_sub(1),
        }
    }

    /// A short name: `conference`, `webinar` or `rooms`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Conference { .. } => "conference",
            Scenario::Webinar { .. } => "webinar",
            Scenario::Rooms { .. } => "rooms",
        }
    }

    /// The scenario with its sizes, e.g. `webinar 1x50`.
    pub fn describe(&self) -> String {
        match *self {
            Scenario::Conference { participants } => format!("conference of {participants}"),
            Scenario::Webinar {
                publishers,
                subscribers,
            } => format!("webinar {publishers} publisher(s) to {subscribers} subscriber(s)"),
            Scenario::Rooms { rooms, per_room } => format!("{rooms} rooms of {per_room}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_appends_seats() {
        for s in [
            Scenario::Conference { participants: 3 },
            Scenario::Webinar {
                publishers: 2,
                subscribers: 5,
            },
            Scenario::Rooms {
                rooms: 2,
                per_room: 3,
            },
        ] {
            let small = s.seats();
            let big = s.grown(2).seats();
            assert!(big.len() > small.len());
            assert_eq!(&big[..small.len()], &small[..], "{s:?}");
        }
    }

    #[test]
    fn stream_counts() {
        assert_eq!(Scenario::Conference { participants: 4 }.streams(), 12);
        let webinar = Scenario::Webinar {
            publishers: 2,
            subscribers: 10,
        };
        assert_eq!(webinar.streams(), 20);
        assert_eq!(webinar.seats().iter().filter(|s| s.publishes).count(), 2);
        let rooms = Scenario::Rooms {
            rooms: 3,
            per_room: 2,
        };
        assert_eq!(rooms.streams(), 6);
        assert_eq!(rooms.seats().last().map(|s| s.room), Some(2));
    }
}
