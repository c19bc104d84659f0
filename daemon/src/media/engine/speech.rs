//! Audio levels on the hot path: each published audio track with the
//! `ssrc-audio-level` header extension feeds a [`SpeechMeter`] from every
//! packet (one byte read, no decoding), and the owning worker reports each
//! meter's [`Activity`] to the publisher's room every
//! [`SPEECH_REPORT`] (see `crate::speech` for what the room does with it).

use super::*;
use crate::speech::{Activity, SpeechMeter};

/// The audio level header extension (RFC 6464).
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// How often each audio track's activity goes to its room.
pub(super) const SPEECH_REPORT: Duration = Duration::from_millis(300);
/// Packets of audio in one report's time (20 ms each).
const PACKETS_PER_REPORT: usize = 15;

/// A published audio track's meter.
#[derive(Debug)]
pub(super) struct SourceSpeech {
    /// The extension's id in the publisher's offer.
    ext_id: u8,
    meter: SpeechMeter,
    /// Packets heard since the last report.
    heard: u32,
    /// Whether the last report was of a track heard saying nothing, after
    /// which reports pause until it sends again.
    quiet: bool,
}

impl SourceSpeech {
    /// A meter for an audio track whose publisher negotiated `extensions`.
    pub(super) fn for_track(kind: MediaKind, extensions: &[(String, u16)]) -> Option<Box<Self>> {
        if kind != MediaKind::Audio {
            return None;
        }
        let (_, id) = extensions.iter().find(|(uri, _)| uri == AUDIO_LEVEL_URI)?;
        Some(Box::new(SourceSpeech {
            ext_id: u8::try_from(*id).ok()?,
            meter: SpeechMeter::default(),
            heard: 0,
            quiet: true,
        }))
    }

    /// The audio level a packet from the publisher carries, if any.
    pub(super) fn level(&self, header: &rtc::rtp::header::Header) -> Option<u8> {
        if !header.extension {
            return None;
        }
        header
            .extensions
            .iter()
            .find(|e| e.id == self.ext_id)
            .and_then(|e| e.payload.first())
            .copied()
    }

    /// One packet's level.
    pub(super) fn hear(&mut self, level: u8) {
        self.meter.hear(level);
        self.heard += 1;
    }

    /// The activity to report now, if any: none for a track that stays
    /// quiet.
    fn report(&mut self) -> Option<Activity> {
        if self.heard == 0 {
            if self.quiet {
                return None;
            }
            self.meter.hear_silence(PACKETS_PER_REPORT);
        }
        self.heard = 0;
        let activity = self.meter.activity();
        let quiet = !activity.speaking && activity.scores == Activity::SILENT.scores;
        let was_quiet = std::mem::replace(&mut self.quiet, quiet);
        (!(quiet && was_quiet)).then_some(activity)
    }
}

impl MediaCore {
    /// Every audio track this worker owns: its activity to its room.
    pub(super) fn report_speech(&mut self) {
        let mut reports = Vec::new();
        for (track, source) in &mut self.sources {
            if let Some(activity) = source.speech.as_mut().and_then(|s| s.report()) {
                reports.push((source.info.publisher, *track, activity));
            }
        }
        for (publisher, track, activity) in reports {
            self.emit(
                publisher,
                MediaEvent::Speech {
                    publisher,
                    track,
                    activity,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ext_id: u8, byte: u8) -> rtc::rtp::header::Header {
        let mut h = rtc::rtp::header::Header {
            version: 2,
            ..Default::default()
        };
        h.extension = true;
        h.extension_profile = 0xBEDE;
        h.set_extension(ext_id, bytes::Bytes::copy_from_slice(&[byte]))
            .expect("an extension");
        h
    }

    /// One packet, as the fast path hears it.
    fn hear(s: &mut SourceSpeech, h: &rtc::rtp::header::Header) {
        if let Some(level) = s.level(h) {
            s.hear(level);
        }
    }

    #[test]
    fn reports_follow_the_levels_and_pause_while_nothing_is_said() {
        let extensions = vec![(AUDIO_LEVEL_URI.to_owned(), 3)];
        assert!(SourceSpeech::for_track(MediaKind::Video, &extensions).is_none());
        assert!(SourceSpeech::for_track(MediaKind::Audio, &[]).is_none());
        let mut s = SourceSpeech::for_track(MediaKind::Audio, &extensions).expect("a meter");
        // Nothing heard yet: nothing to say.
        assert_eq!(s.report(), None);
        // Silence (127) from a muted microphone: still nothing.
        for _ in 0..15 {
            hear(&mut s, &header(3, 127));
        }
        assert_eq!(s.report(), None);
        // Speech at -10 dBov; another extension's id is not the level.
        for _ in 0..15 {
            hear(&mut s, &header(3, 10));
            hear(&mut s, &header(5, 127));
        }
        let loud = s.report().expect("a report");
        assert!(loud.speaking);
        assert_eq!(loud.loudest_dbov, 10);
        // The packets stop: reports of silence until it is quiet, then none.
        let mut n = 0;
        while let Some(a) = s.report() {
            n += 1;
            assert!(n < 10, "reports never stopped: {a:?}");
        }
        assert!(!s.meter.activity().speaking);
    }
}
