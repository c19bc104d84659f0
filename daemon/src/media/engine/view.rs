//! A viewer that brings its own offer (WHEP): its receive-only sections
//! answered with a room's tracks on its subscribe connection. sfud's own
//! subscribers are negotiated the other way round (the server offers, see
//! `negotiate`), and get new offers as the room changes; a viewer keeps
//! the tracks its answer gave it.

use super::*;
use crate::media::sdp_limits::{self, Described};

impl MediaCore {
    /// Answers `peer`'s offer with a leg of each of `tracks` on a section
    /// of its kind (one per section, in order; a track with no section
    /// left is not sent).
    pub(super) fn view(
        &mut self,
        peer: PeerId,
        events: EventSink,
        sdp: String,
        tracks: Vec<TrackInfo>,
        now: Instant,
    ) -> Result<Negotiated, MediaError> {
        if self.conn_of(peer, PcKind::Subscribe).is_some() {
            return Err(MediaError::Internal(
                "this viewer has its connection already".into(),
            ));
        }
        sdp_limits::check(&sdp, Described::Offer)?;
        let offer =
            RTCSessionDescription::offer(sdp).map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let id = self.new_conn(peer, PcKind::Subscribe, events, now)?;
        let result = self.answer_view(id, offer, &tracks, now);
        if result.is_err() {
            self.drop_conn(id);
        }
        self.drive(id, now);
        result
    }

    fn answer_view(
        &mut self,
        id: ConnId,
        offer: RTCSessionDescription,
        tracks: &[TrackInfo],
        now: Instant,
    ) -> Result<Negotiated, MediaError> {
        // Sections of each kind the offer has: `add_track` takes the first
        // section of its track's kind without a sender, and with none left
        // would add one the offer does not have.
        let sections = |kind: &str| {
            offer
                .sdp
                .lines()
                .filter(|l| l.starts_with(&format!("m={kind} ")))
                .count()
        };
        let (mut audio, mut video) = (sections("audio"), sections("video"));
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        let remote = peer::sha256_fingerprints(&offer.sdp);
        conn.pc
            .set_remote_description(now, offer)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        super::negotiate::note_fingerprints(conn, remote);
        for want in tracks {
            let left = match want.kind {
                MediaKind::Audio => &mut audio,
                MediaKind::Video => &mut video,
            };
            if *left == 0 {
                continue;
            }
            *left -= 1;
            self.add_leg(id, want, now, |pc, track| pc.add_track(track))?;
        }
        self.set_adaptive(id);
        let conn = self.conns.get_mut(&id).ok_or(MediaError::Stopped)?;
        if conn.legs.is_empty() {
            return Err(MediaError::BadSdp(
                "the offer has no receive section for the room's media".into(),
            ));
        }
        let answer = conn
            .pc
            .create_answer(None)
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        let described = super::negotiate::describe(conn, answer, &self.announced, now)?;
        conn.negotiated = true;
        conn.connect_by = Some(now + CONNECT_TIMEOUT);
        self.bind_legs(id);
        Ok(described)
    }
}
