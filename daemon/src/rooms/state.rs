//! A room as plain data: who is in it, what they publish, who receives what,
//! and where each subscribe negotiation stands. No sockets, no tasks: the
//! actor around it ([`super::actor`]) does the I/O.

use std::collections::BTreeMap;
use std::time::Instant;

use sfu_proto::signaling::{ErrorCode, PeerInfo, Role, RoomMode, TrackKind};

use crate::media::{PeerId, TrackId, TrackInfo};

/// Longest room or display name accepted.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The room has `max_peers` participants.
    #[error("room is full ({0} participants)")]
    Full(usize),
    /// The name is empty, too long or has control characters.
    #[error("display name must be 1 to {MAX_NAME_CHARS} printable characters")]
    BadName,
}

impl JoinError {
    /// The wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            JoinError::Full(_) => ErrorCode::RoomFull,
            JoinError::BadName => ErrorCode::BadName,
        }
    }
}

/// Whether a name is acceptable for a room or a participant.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n)
        && !name.chars().any(|c| c.is_control() || is_bidi_control(c))
        && !name.trim().is_empty()
}

/// Unicode's bidirectional embeddings, overrides and isolates: a name with
/// one can make what follows it (in a log line, in `sfuctl` output, in
/// other participants' pages) read in the other direction.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Where a participant's subscribe connection stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiation {
    /// An offer was sent and its answer has not arrived.
    pub in_flight: bool,
    /// The forwarded set changed while an offer was in flight.
    pub again: bool,
}

/// One participant.
#[derive(Debug, Clone)]
pub struct Member {
    /// Daemon-wide id.
    pub id: PeerId,
    /// Display name.
    pub name: String,
    /// Speaker or listener.
    pub role: Role,
    /// When they joined.
    pub joined_at: Instant,
    /// Their subscribe negotiation.
    pub sub: Negotiation,
    /// Whether they receive the speakers' media (a WHIP publisher does not).
    pub receives: bool,
    /// What they (or an operator) muted, in order (never `Screen`: see
    /// `sharing`).
    pub muted: Vec<TrackKind>,
    /// What media found them sending nothing of, or only digital silence
    /// of (audio or video), in order.
    pub silent: Vec<TrackKind>,
    /// They share their screen (unmuted kind `screen`).
    pub sharing: bool,
}

impl Member {
    /// How others see this member.
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.id.to_string(),
            name: self.name.clone(),
            role: self.role,
            muted: self.muted.clone(),
            silent: self.silent.clone(),
            sharing: self.sharing,
        }
    }
}

/// A room's members and tracks.
#[derive(Debug)]
pub struct Room {
    /// Room name.
    pub name: String,
    /// SFU or mesh.
    pub mode: RoomMode,
    /// Most participants allowed.
    pub max_peers: usize,
    members: BTreeMap<PeerId, Member>,
    tracks: BTreeMap<TrackId, TrackInfo>,
}

impl Room {
    /// An empty room.
    pub fn new(name: String, mode: RoomMode, max_peers: usize) -> Self {
        Room {
            name,
            mode,
            max_peers,
            members: BTreeMap::new(),
            tracks: BTreeMap::new(),
        }
    }

    /// Adds a member; returns who was already there.
    pub fn join(
        &mut self,
        id: PeerId,
        name: &str,
        role: Role,
        now: Instant,
    ) -> Result<Vec<PeerInfo>, JoinError> {
        if !valid_name(name) {
            return Err(JoinError::BadName);
        }
        if self.members.len() >= self.max_peers {
            return Err(JoinError::Full(self.max_peers));
        }
        let others = self.members_by_arrival().map(Member::info).collect();
        self.members.insert(
            id,
            Member {
                id,
                name: name.to_owned(),
                role,
                joined_at: now,
                sub: Negotiation::default(),
                receives: true,
                muted: Vec::new(),
                silent: Vec::new(),
                sharing: false,
            },
        );
        Ok(others)
    }

    /// `peer` receives nothing from now on (see [`Member::receives`]).
    pub fn receive_nothing(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.receives = false;
        }
    }

    /// Removes a member and the tracks they published.
    pub fn leave(&mut self, id: PeerId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        self.tracks.retain(|_, t| t.publisher != id);
        Some(member)
    }

    /// A member.
    pub fn member(&self, id: PeerId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Every member, earliest arrival first (for people: listings, `joined`).
    pub fn members_by_arrival(&self) -> impl Iterator<Item = &Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| (m.joined_at, m.id));
        v.into_iter()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every published track.
    pub fn tracks(&self) -> impl Iterator<Item = &TrackInfo> {
        self.tracks.values()
    }

    /// Records a published track; `false` if its publisher is not a speaker
    /// here (the track is then not forwarded).
    pub fn add_track(&mut self, track: TrackInfo) -> bool {
        match self.members.get(&track.publisher) {
            Some(m) if m.role == Role::Speaker => {
                self.tracks.insert(track.id, track);
                true
            }
            _ => false,
        }
    }

    /// Mutes or unmutes a speaker's track of `kind` (a screen is muted
    /// while not shared). Returns whether that changed anything; `None` for
    /// a listener (who publishes nothing).
    pub fn set_muted(&mut self, id: PeerId, kind: TrackKind, muted: bool) -> Option<bool> {
        let m = self.members.get_mut(&id)?;
        if m.role != Role::Speaker {
            return None;
        }
        if kind == TrackKind::Screen {
            let was = !m.sharing;
            m.sharing = !muted;
            return Some(muted != was);
        }
        Some(set_kind(&mut m.muted, kind, muted))
    }

    /// Records that a speaker sends nothing (or only digital silence) of
    /// its `kind` track, or sends again. Returns whether that changed;
    /// `None` for a listener or a stranger.
    pub fn set_silent(&mut self, id: PeerId, kind: TrackKind, silent: bool) -> Option<bool> {
        let m = self.members.get_mut(&id)?;
        if m.role != Role::Speaker || kind == TrackKind::Screen {
            return None;
        }
        Some(set_kind(&mut m.silent, kind, silent))
    }

    /// Changes a member's role; a demoted speaker's tracks stop being
    /// forwarded. Returns whether anything changed.
    pub fn set_role(&mut self, id: PeerId, role: Role) -> bool {
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        if m.role == role {
            return false;
        }
        m.role = role;
        if role == Role::Listener {
            self.tracks.retain(|_, t| t.publisher != id);
            // A speaker again starts unmuted, as a newcomer does.
            m.muted.clear();
            m.silent.clear();
            m.sharing = false;
        }
        true
    }

    /// Forgets a track.
    pub fn remove_track(&mut self, id: TrackId) -> bool {
        self.tracks.remove(&id).is_some()
    }

    /// The tracks `peer` should receive: every other speaker's.
    pub fn wanted_tracks(&self, peer: PeerId) -> Vec<TrackInfo> {
        if self.members.get(&peer).is_some_and(|m| !m.receives) {
            return Vec::new();
        }
        self.tracks
            .values()
            .filter(|t| t.publisher != peer)
            .filter(|t| {
                self.members
                    .get(&t.publisher)
                    .is_some_and(|m| m.role == Role::Speaker)
            })
            .cloned()
            .collect()
    }

    /// The tracks of the first speaker to arrive that publishes video, or
    /// else of the first that publishes anything: what a viewer that
    /// shows one stream (WHEP) gets.
    pub fn first_speaker_tracks(&self) -> Vec<TrackInfo> {
        let of = |peer: PeerId| -> Vec<TrackInfo> {
            let mut t: Vec<TrackInfo> = self
                .tracks
                .values()
                .filter(|t| t.publisher == peer)
                .cloned()
                .collect();
            t.sort_by_key(|t| t.id);
            t
        };
        let speakers: Vec<PeerId> = self
            .members_by_arrival()
            .filter(|m| m.role == Role::Speaker)
            .map(|m| m.id)
            .collect();
        speakers
            .iter()
            .map(|p| of(*p))
            .find(|t| t.iter().any(|t| t.kind == crate::media::MediaKind::Video))
            .or_else(|| speakers.iter().map(|p| of(*p)).find(|t| !t.is_empty()))
            .unwrap_or_default()
    }

    /// The forwarded set changed for everyone: returns who should get a new
    /// offer now; those with an offer in flight get one after their answer.
    pub fn tracks_changed(&mut self) -> Vec<PeerId> {
        let mut now = Vec::new();
        // Those that receive nothing this way (WHIP publishers, WHEP viewers
        // whose connection their own offer made) are never offered one.
        for m in self.members.values_mut().filter(|m| m.receives) {
            if m.sub.in_flight {
                m.sub.again = true;
            } else {
                now.push(m.id);
            }
        }
        now
    }

    /// An offer went out to `peer`.
    pub fn offer_sent(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.sub = Negotiation {
                in_flight: true,
                again: false,
            };
        }
    }

    /// Whether `peer` has an offer waiting for its answer.
    pub fn offer_in_flight(&self, peer: PeerId) -> bool {
        self.members.get(&peer).is_some_and(|m| m.sub.in_flight)
    }

    /// `peer` answered; returns whether it needs another offer at once.
    pub fn answer_received(&mut self, peer: PeerId) -> bool {
        match self.members.get_mut(&peer) {
            Some(m) => {
                let again = m.sub.again;
                m.sub = Negotiation::default();
                again
            }
            None => false,
        }
    }
}

/// Puts `kind` in a sorted list of kinds (`on`) or takes it out; whether
/// that changed the list.
fn set_kind(list: &mut Vec<TrackKind>, kind: TrackKind, on: bool) -> bool {
    let was = list.contains(&kind);
    if on && !was {
        list.push(kind);
        list.sort_unstable();
    } else if !on && was {
        list.retain(|k| *k != kind);
    }
    on != was
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Codec, MediaKind};

    fn track(id: u64, publisher: u64) -> TrackInfo {
        TrackInfo {
            id: TrackId(id),
            publisher: PeerId(publisher),
            kind: MediaKind::Video,
            codec: Codec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                channels: 0,
                fmtp: String::new(),
            },
            source: Default::default(),
        }
    }

    fn room_with(peers: &[(u64, Role)]) -> Room {
        let mut room = Room::new("r".into(), RoomMode::Sfu, 10);
        for (id, role) in peers {
            room.join(PeerId(*id), &format!("n{id}"), *role, Instant::now())
                .expect("joins");
        }
        room
    }

    #[test]
    fn a_member_that_receives_nothing_wants_no_track_and_others_still_get_its_own() {
        let mut room = room_with(&[(1, Role::Speaker), (2, Role::Speaker)]);
        room.receive_nothing(PeerId(1));
        room.add_track(track(10, 1));
        room.add_track(track(20, 2));
        assert!(room.wanted_tracks(PeerId(1)).is_empty());
        let got: Vec<TrackId> = room.wanted_tracks(PeerId(2)).iter().map(|t| t.id).collect();
        assert_eq!(got, [TrackId(10)]);
        // Nor is it offered anything when the tracks change.
        assert_eq!(room.tracks_changed(), [PeerId(2)]);
    }

    #[test]
    fn join_returns_the_others_and_enforces_capacity() {
        let mut room = Room::new("r".into(), RoomMode::Sfu, 2);
        assert!(room
            .join(PeerId(1), "a", Role::Speaker, Instant::now())
            .expect("a")
            .is_empty());
        let others = room
            .join(PeerId(2), "b", Role::Speaker, Instant::now())
            .expect("b");
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].name, "a");
        assert_eq!(
            room.join(PeerId(3), "c", Role::Speaker, Instant::now()),
            Err(JoinError::Full(2))
        );
        // Listed by arrival, not by id.
        room.max_peers = 3;
        room.join(PeerId(0), "c", Role::Speaker, Instant::now())
            .expect("c");
        let names: Vec<&str> = room.members_by_arrival().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn names_must_be_printable_and_short() {
        let mut room = Room::new("r".into(), RoomMode::Sfu, 5);
        for bad in [
            "",
            "   ",
            "a\nb",
            "\u{1b}[31mred",
            "admin\u{202E}gpj.exe",
            "\u{2067}isolated",
            &"x".repeat(65),
        ] {
            assert_eq!(
                room.join(PeerId(1), bad, Role::Speaker, Instant::now()),
                Err(JoinError::BadName)
            );
        }
        assert!(room
            .join(PeerId(1), "Zoë 🎤", Role::Speaker, Instant::now())
            .is_ok());
        // Right-to-left script is fine; only direction overrides are not.
        assert!(valid_name("שלום עולם"));
    }

    #[test]
    fn everyone_receives_every_other_speaker_but_not_themselves() {
        let mut room = room_with(&[(1, Role::Speaker), (2, Role::Speaker), (3, Role::Listener)]);
        assert!(room.add_track(track(10, 1)));
        assert!(room.add_track(track(20, 2)));
        assert!(
            !room.add_track(track(30, 3)),
            "listeners' tracks are not forwarded"
        );
        let ids = |p| {
            room.wanted_tracks(PeerId(p))
                .iter()
                .map(|t| t.id.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(1), vec![20]);
        assert_eq!(ids(2), vec![10]);
        assert_eq!(ids(3), vec![10, 20]);
    }

    #[test]
    fn demoting_a_speaker_stops_forwarding_its_tracks() {
        let mut room = room_with(&[(1, Role::Speaker), (2, Role::Listener)]);
        room.add_track(track(10, 1));
        assert!(room.set_role(PeerId(1), Role::Listener));
        assert!(!room.set_role(PeerId(1), Role::Listener), "no change");
        assert!(room.wanted_tracks(PeerId(2)).is_empty());
        assert!(room.set_role(PeerId(2), Role::Speaker));
        assert!(
            room.add_track(track(20, 2)),
            "a promoted listener may publish"
        );
        assert_eq!(room.wanted_tracks(PeerId(1)).len(), 1);
    }

    #[test]
    fn leaving_removes_the_members_tracks() {
        let mut room = room_with(&[(1, Role::Speaker), (2, Role::Speaker)]);
        room.add_track(track(10, 1));
        assert!(room.leave(PeerId(1)).is_some());
        assert!(room.wanted_tracks(PeerId(2)).is_empty());
        assert!(room.leave(PeerId(1)).is_none());
    }

    #[test]
    fn one_negotiation_at_a_time_with_changes_queued() {
        let mut room = room_with(&[(1, Role::Speaker), (2, Role::Speaker)]);
        assert_eq!(room.tracks_changed(), vec![PeerId(1), PeerId(2)]);
        room.offer_sent(PeerId(1));
        assert!(room.offer_in_flight(PeerId(1)));
        // A change while 1's offer is out: only 2 is offered now.
        assert_eq!(room.tracks_changed(), vec![PeerId(2)]);
        assert!(room.answer_received(PeerId(1)), "1 must be offered again");
        assert!(!room.offer_in_flight(PeerId(1)));
        room.offer_sent(PeerId(1));
        assert!(
            !room.answer_received(PeerId(1)),
            "nothing changed meanwhile"
        );
    }

    /// A room of a speaker (peer 1) and a listener (peer 2).
    fn speaker_and_listener() -> Room {
        let mut room = Room::new("r".into(), RoomMode::Sfu, 10);
        let now = Instant::now();
        room.join(PeerId(1), "a", Role::Speaker, now)
            .expect("joins");
        room.join(PeerId(2), "b", Role::Listener, now)
            .expect("joins");
        room
    }

    #[test]
    fn speakers_mute_and_unmute_and_listeners_have_nothing_to_mute() {
        let mut room = speaker_and_listener();
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Video, true),
            Some(true)
        );
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Audio, true),
            Some(true)
        );
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Audio, true),
            Some(false),
            "no change"
        );
        let info = room.member(PeerId(1)).expect("a member").info();
        assert_eq!(info.muted, vec![TrackKind::Audio, TrackKind::Video]);
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Audio, false),
            Some(true)
        );
        // A screen is muted until shared.
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Screen, true),
            Some(false)
        );
        assert_eq!(
            room.set_muted(PeerId(1), TrackKind::Screen, false),
            Some(true)
        );
        assert!(room.member(PeerId(1)).expect("a member").info().sharing);
        assert_eq!(room.set_muted(PeerId(2), TrackKind::Audio, true), None);
        assert_eq!(room.set_muted(PeerId(3), TrackKind::Audio, true), None);
        // Demoted and promoted again: unmuted, as a newcomer.
        assert!(room.set_role(PeerId(1), Role::Listener));
        assert!(room.set_role(PeerId(1), Role::Speaker));
        assert!(room.member(PeerId(1)).expect("a member").muted.is_empty());
    }

    #[test]
    fn a_speakers_silent_tracks_are_shown_until_they_send_again() {
        let mut room = speaker_and_listener();
        assert_eq!(
            room.set_silent(PeerId(1), TrackKind::Audio, true),
            Some(true)
        );
        assert_eq!(
            room.set_silent(PeerId(1), TrackKind::Audio, true),
            Some(false)
        );
        assert_eq!(
            room.set_silent(PeerId(1), TrackKind::Video, true),
            Some(true)
        );
        let info = room.member(PeerId(1)).expect("a member").info();
        assert_eq!(info.silent, vec![TrackKind::Audio, TrackKind::Video]);
        assert!(info.muted.is_empty(), "not muted on purpose");
        assert_eq!(
            room.set_silent(PeerId(1), TrackKind::Audio, false),
            Some(true)
        );
        // A screen not shared is not silent; listeners send nothing.
        assert_eq!(room.set_silent(PeerId(1), TrackKind::Screen, true), None);
        assert_eq!(room.set_silent(PeerId(2), TrackKind::Audio, true), None);
        assert!(room.set_role(PeerId(1), Role::Listener));
        assert!(room.member(PeerId(1)).expect("a member").silent.is_empty());
    }
}
