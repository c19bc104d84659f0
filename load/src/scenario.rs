//! The three load shapes and the seats (participants) each one needs.
//!
//! Seats are listed so that a larger instance of a scenario starts with the
//! smaller one's seats: ramping only appends participants.

use serde::{Deserialize, Serialize};
use sfu_client::PublishOptions;

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
        /// The publishers send simulcast video; subscriber `i` asks for
        /// layer `i mod 3` (sfud only).
        #[serde(default)]
        simulcast: bool,
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
    /// The simulcast layer (0 the lowest) it asks for of every video track.
    pub max_layer: Option<u8>,
}

/// Simulcast layers a publisher sends (`q`, `h`, `f`).
const LAYERS: usize = 3;

impl Scenario {
    /// Every participant, in joining order (publishers of a webinar first).
    pub fn seats(&self) -> Vec<Seat> {
        let both = |room| Seat {
            room,
            publishes: true,
            receives: true,
            max_layer: None,
        };
        match *self {
            Scenario::Conference { participants } => (0..participants).map(|_| both(0)).collect(),
            Scenario::Webinar {
                publishers,
                subscribers,
                simulcast,
            } => {
                let publisher = Seat {
                    room: 0,
                    publishes: true,
                    receives: false,
                    max_layer: None,
                };
                let subscriber = |i: usize| Seat {
                    room: 0,
                    publishes: false,
                    receives: true,
                    max_layer: simulcast.then_some((i % LAYERS) as u8),
                };
                std::iter::repeat_n(publisher, publishers)
                    .chain((0..subscribers).map(subscriber))
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
                simulcast,
            } => Scenario::Webinar {
                publishers,
                subscribers: subscribers + step,
                simulcast,
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
                ..
            } => publishers * subscribers,
            Scenario::Rooms { rooms, per_room } => rooms * per_room * per_room.saturating_sub(1),
        }
    }

    /// Participants that receive media.
    pub fn receivers(&self) -> usize {
        self.seats().iter().filter(|s| s.receives).count()
    }

    /// Whether publishers send simulcast video.
    pub fn simulcast(&self) -> bool {
        matches!(
            self,
            Scenario::Webinar {
                simulcast: true,
                ..
            }
        )
    }

    /// RTP packets per second the SFU forwards in all if every publisher
    /// sends `publish` and nothing is lost: each stream's audio and video, a
    /// subscriber's video at the rate of the simulcast layer it asked for.
    pub fn packets_out_expected_per_s(&self, publish: &PublishOptions) -> f64 {
        let rate = |on: bool, pps: u32| if on { f64::from(pps) } else { 0.0 };
        let audio = rate(publish.audio, publish.audio_packets_per_sec);
        let video = rate(publish.video, publish.video_packets_per_sec);
        if !self.simulcast() {
            return self.streams() as f64 * (audio + video);
        }
        let layers = publish.layer_packets_per_sec();
        let seats = self.seats();
        let publishers = seats.iter().filter(|s| s.publishes).count() as f64;
        let per_publisher: f64 = seats
            .iter()
            .filter(|s| s.receives && !s.publishes)
            .map(|s| {
                let video = match s.max_layer {
                    Some(l) if publish.video => rate(true, layers[usize::from(l).min(LAYERS - 1)]),
                    _ => video,
                };
                audio + video
            })
            .sum();
        publishers * per_publisher
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
                simulcast: false,
            } => format!("webinar {publishers} publisher(s) to {subscribers} subscriber(s)"),
            Scenario::Webinar {
                publishers,
                subscribers,
                simulcast: true,
            } => format!(
                "webinar {publishers} simulcast publisher(s) to {subscribers} subscriber(s) \
                 on layers q/h/f in turn"
            ),
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
                simulcast: false,
            },
            Scenario::Webinar {
                publishers: 1,
                subscribers: 4,
                simulcast: true,
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
            simulcast: false,
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

    #[test]
    fn simulcast_subscribers_take_the_layers_in_turn() {
        let webinar = Scenario::Webinar {
            publishers: 1,
            subscribers: 4,
            simulcast: true,
        };
        let layers: Vec<Option<u8>> = webinar
            .seats()
            .iter()
            .filter(|s| s.receives)
            .map(|s| s.max_layer)
            .collect();
        assert_eq!(layers, [Some(0), Some(1), Some(2), Some(0)]);
        assert_eq!(webinar.receivers(), 4);
        let publish = PublishOptions::default();
        // q 9, h 37, f 150 packets/s of video, 50 of audio each.
        assert_eq!(
            webinar.packets_out_expected_per_s(&publish),
            4.0 * 50.0 + 9.0 + 37.0 + 150.0 + 9.0
        );
        let plain = Scenario::Webinar {
            publishers: 1,
            subscribers: 4,
            simulcast: false,
        };
        assert_eq!(plain.packets_out_expected_per_s(&publish), 4.0 * 200.0);
        assert!(plain.seats().iter().all(|s| s.max_layer.is_none()));
    }
}
