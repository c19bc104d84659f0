//! Tracks muted without a word: a publisher that stops sending a track (a
//! camera stopped, a track replaced by none) or sends nothing but digital
//! silence (a microphone disabled in the page, which the RFC 6464 level
//! shows as 127) for [`IDLE_AFTER`] is reported to its room, which shows
//! the track muted (`track_muted` with `detected`) until media comes again.
//! Explicit mutes (`mute`) are the room's own business and not reported.
//!
//! The owner watches its sources (mirrors carry nothing new): every packet
//! with a payload notes the time and its level; the core's housekeeping
//! looks for changes.

use super::*;

/// How long a track may send nothing, or only digital silence, before its
/// room hears of it.
pub(super) const IDLE_AFTER: Duration = Duration::from_secs(2);

/// RFC 6464's level of digital silence (-127 dBov).
const SILENCE: u8 = 127;

/// One published track's media, as far as idleness goes.
#[derive(Debug, Clone)]
pub(super) struct Idle {
    last_media: Instant,
    silent_since: Option<Instant>,
    idle: bool,
}

impl Idle {
    pub(super) fn new(now: Instant) -> Idle {
        Idle {
            last_media: now,
            silent_since: None,
            idle: false,
        }
    }

    /// A packet with a payload at `now`, with its audio level byte if it
    /// has one (the level in its low 7 bits; Chromium sets the voice
    /// activity bit even on the silence of a disabled track).
    pub(super) fn media(&mut self, now: Instant, level: Option<u8>) {
        self.last_media = now;
        if level.map(|b| b & 0x7f) == Some(SILENCE) {
            self.silent_since.get_or_insert(now);
        } else {
            self.silent_since = None;
        }
    }

    /// Whether the track is idle at `now`: `Some` with the new state when
    /// that changed.
    pub(super) fn check(&mut self, now: Instant) -> Option<bool> {
        let stopped = now.saturating_duration_since(self.last_media) >= IDLE_AFTER;
        let silent = self
            .silent_since
            .is_some_and(|t| now.saturating_duration_since(t) >= IDLE_AFTER);
        let idle = stopped || silent;
        (idle != self.idle).then(|| {
            self.idle = idle;
            idle
        })
    }
}

impl MediaCore {
    /// Tells rooms of the tracks this worker owns that went idle, or came
    /// back. A track muted on purpose, or a screen not shared, is skipped.
    pub(super) fn report_idle(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for (track, source) in &mut self.sources {
            if source.origin.is_some() || source.muted || !source.announced {
                continue;
            }
            let kind = source.info.track_kind();
            if kind == sfu_proto::signaling::TrackKind::Screen {
                continue;
            }
            if let Some(idle) = source.idle.check(now) {
                changed.push((source.info.publisher, *track, kind, idle));
            }
        }
        for (publisher, track, kind, idle) in changed {
            debug!(%publisher, track = track.0, ?kind, idle, "track idle");
            self.emit(
                publisher,
                MediaEvent::TrackIdle {
                    publisher,
                    track,
                    kind,
                    idle,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_after_two_seconds_of_nothing_or_of_silence_and_back_at_the_next_sound() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut idle = Idle::new(t0);
        // Speech every 20 ms: never idle.
        for ms in (0..3000).step_by(20) {
            idle.media(at(ms), Some(40));
            assert_eq!(idle.check(at(ms)), None);
        }
        // Digital silence (with the voice activity bit, as Chromium sends
        // it now and then): idle two seconds after it started, once.
        for ms in (3000..6000).step_by(20) {
            idle.media(
                at(ms),
                Some(if ms % 40 == 0 {
                    SILENCE | 0x80
                } else {
                    SILENCE
                }),
            );
            let changed = idle.check(at(ms));
            assert_eq!(changed, (ms == 5000).then_some(true), "at {ms} ms");
        }
        // A quiet room is not silence: back at once.
        idle.media(at(6000), Some(100));
        assert_eq!(idle.check(at(6000)), Some(false));
        // Nothing at all (video without levels too): idle after two seconds.
        assert_eq!(idle.check(at(7999)), None);
        assert_eq!(idle.check(at(8000)), Some(true));
        assert_eq!(idle.check(at(9000)), None);
        idle.media(at(9000), None);
        assert_eq!(idle.check(at(9000)), Some(false));
    }
}
