//! Muted tracks: a participant (or an operator) mutes a microphone or a
//! camera, and nothing of it is forwarded until it is unmuted, whatever the
//! publisher goes on sending (a browser sends silence and black frames for
//! a disabled track; a client that ignores an operator's mute sends
//! anything).
//!
//! The owning worker drops the track's packets before metering, piping or
//! fanning them out, so a muted microphone is never "speaking" either.
//! Each leg holds (`Hold::Resuming`, or for a simulcast leg its switcher
//! `restart`s) so that what follows the mute starts afresh, numbered on
//! from the last packet the subscriber got: at the next packet for audio,
//! at the next key frame for video, which unmuting asks the publisher
//! for. Workers mirroring the track learn the state from the owner's
//! 100 ms status (`pipe`).
//!
//! A shared screen is a track the publisher keeps on its connection from
//! the start (see the demo page), muted until shared: the room hears of it
//! (`TrackPublished`) only when it is first unmuted, so nobody is offered a
//! screen that was never shared.

use super::*;
use crate::media::forward::Hold;
use sfu_proto::signaling::TrackKind;

impl MediaCore {
    /// Mutes or unmutes `peer`'s tracks of `kind`, now and later ones.
    pub(super) fn set_muted(&mut self, peer: PeerId, kind: TrackKind, muted: bool, now: Instant) {
        let entry = self.peers.entry(peer).or_default();
        entry.muted.retain(|k| *k != kind);
        if muted {
            entry.muted.push(kind);
        }
        if kind == TrackKind::Screen {
            entry.sharing = !muted;
        }
        let tracks: Vec<TrackId> = self
            .sources
            .iter()
            .filter(|(_, s)| {
                s.origin.is_none() && s.info.publisher == peer && s.info.track_kind() == kind
            })
            .map(|(t, _)| *t)
            .collect();
        for track in tracks {
            self.mute_source(track, muted, now);
        }
    }

    /// Whether `peer`'s tracks of `kind` start muted: a screen does until
    /// it is shared.
    pub(super) fn starts_muted(&self, peer: PeerId, kind: TrackKind) -> bool {
        let p = self.peers.get(&peer);
        if kind == TrackKind::Screen {
            return !p.is_some_and(|p| p.sharing);
        }
        p.is_some_and(|p| p.muted.contains(&kind))
    }

    /// One source (owned or mirrored) muted or unmuted.
    pub(super) fn mute_source(&mut self, track: TrackId, muted: bool, now: Instant) {
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        if source.muted == muted {
            return;
        }
        source.muted = muted;
        debug!(track = track.0, muted, "track muted");
        if muted {
            for sub in &mut source.subscribers {
                let Some(leg) = self
                    .conns
                    .get_mut(&sub.conn)
                    .and_then(|c| c.legs.get_mut(&track))
                else {
                    continue;
                };
                match leg.switcher.as_mut() {
                    // A simulcast leg's numbering is its switcher's: it
                    // starts a segment at the target's next key frame.
                    Some(sw) => {
                        sw.restart();
                        sub.layers = sw.interest();
                    }
                    None if leg.hold == Hold::Forwarding => leg.hold = Hold::Resuming,
                    None => {}
                }
            }
        } else if source.info.kind == MediaKind::Video {
            // Each leg waits for a key frame of its own layer.
            let layers = source.layers.len();
            // A screen shared for the first time is news to the room.
            self.announce(track);
            for layer in 0..layers {
                self.request_layer_keyframe(track, layer, now, KeyframeCause::NewSubscriber);
            }
        }
    }
}
