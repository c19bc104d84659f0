//! A room's side of speaker detection: the meters' reports in, `speakers`
//! messages out when the view changes, at most one per [`MIN_GAP`] (see
//! `crate::speech` for the method).

use std::time::{Duration, Instant};

use crate::media::PeerId;
use crate::speech::{Activity, Speakers, SpeakersView};

/// The least time between two decisions, and between two messages.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// The room's speakers and what it last told its participants.
#[derive(Debug, Default)]
pub struct RoomSpeakers {
    speakers: Speakers,
    told: SpeakersView,
    told_at: Option<Instant>,
}

impl RoomSpeakers {
    /// A meter's report; the view to tell everyone, if it changed and the
    /// last message is old enough (a change held back goes with a later
    /// report: they come every 300 ms while anyone's audio is not quiet).
    pub fn report(
        &mut self,
        peer: PeerId,
        activity: Activity,
        now: Instant,
    ) -> Option<SpeakersView> {
        self.speakers.report(peer, activity);
        if self
            .told_at
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_GAP)
        {
            return None;
        }
        self.speakers.decide();
        self.tell(now)
    }

    /// `peer` left or stopped publishing audio: told at once if that
    /// changes the view.
    pub fn forget(&mut self, peer: PeerId, now: Instant) -> Option<SpeakersView> {
        self.speakers.forget(peer);
        self.tell(now)
    }

    /// What the room last told, when there is anything (for a newcomer).
    pub fn told(&self) -> Option<&SpeakersView> {
        (self.told != SpeakersView::default()).then_some(&self.told)
    }

    fn tell(&mut self, now: Instant) -> Option<SpeakersView> {
        let view = self.speakers.view();
        if view == self.told {
            return None;
        }
        self.told = view.clone();
        self.told_at = Some(now);
        Some(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talking() -> Activity {
        Activity {
            speaking: true,
            scores: [4.0, 100.0, 300.0],
            loudest_dbov: 10,
        }
    }

    #[test]
    fn changes_are_told_once_and_not_more_often_than_the_gap() {
        let mut room = RoomSpeakers::default();
        let t0 = Instant::now();
        let told = room.report(PeerId(1), talking(), t0).expect("a change");
        assert_eq!(told.speaking, vec![PeerId(1)]);
        assert_eq!(told.dominant, Some(PeerId(1)));
        // The same again: nothing to tell.
        assert_eq!(room.report(PeerId(1), talking(), t0 + MIN_GAP), None);
        // A change too soon after the last message waits for a later report.
        let t1 = t0 + MIN_GAP * 2;
        assert_eq!(
            room.report(PeerId(1), Activity::SILENT, t1),
            Some(SpeakersView {
                speaking: vec![],
                dominant: Some(PeerId(1)),
            })
        );
        assert_eq!(room.report(PeerId(2), talking(), t1 + MIN_GAP / 2), None);
        let later = room
            .report(PeerId(2), talking(), t1 + MIN_GAP)
            .expect("told with the next report");
        assert_eq!(later.speaking, vec![PeerId(2)]);
        assert_eq!(later.dominant, Some(PeerId(2)), "a talker takes the floor");
        // The dominant speaker leaves, nobody else speaks: told at once.
        let gone = room.forget(PeerId(2), t1 + MIN_GAP).expect("a change");
        assert_eq!(gone, SpeakersView::default());
    }
}
