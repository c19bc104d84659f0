//! The gate in front of each track's muxer queue: audio waits for the
//! first video keyframe so a file's audio and video start together.

use std::sync::Mutex;
use std::time::Duration;

use gstreamer as gst;

use crate::media::MediaKind;

/// Decides which buffers reach the muxer: audio waits (its streaming
/// thread blocks) until the first video keyframe is out of the depayloader,
/// then only audio from that instant on passes, so both start together
/// whichever thread runs first; remembers when the file starts.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
pub struct GateState {
    pub video_expected: bool,
    pub video_start: Option<gst::ClockTime>,
    /// Session time audio was let through (video started or was given up).
    pub opened_at: Option<gst::ClockTime>,
    pub first_pts: Option<gst::ClockTime>,
}

impl Gate {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Audio no longer waits for video (it ended, or the file is closing).
    pub fn give_up_video(&self, now: gst::ClockTime) {
        let mut s = self.lock();
        if s.video_expected {
            s.video_expected = false;
            s.opened_at.get_or_insert(now);
        }
        self.changed.notify_all();
    }

    /// Whether a buffer of `kind` stamped `pts` goes into the file.
    pub fn pass(&self, kind: MediaKind, pts: Option<gst::ClockTime>, now: gst::ClockTime) -> bool {
        let mut s = self.lock();
        let pass = match kind {
            MediaKind::Video => {
                if s.video_start.is_none() {
                    s.video_start = pts;
                    s.opened_at.get_or_insert(now);
                    self.changed.notify_all();
                }
                true
            }
            MediaKind::Audio => {
                while s.video_expected && s.video_start.is_none() {
                    s = self
                        .changed
                        .wait_timeout(s, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                match (s.video_start, pts) {
                    (Some(start), Some(pts)) => pts >= start,
                    _ => true,
                }
            }
        };
        if pass {
            if let Some(pts) = pts {
                s.first_pts = Some(s.first_pts.map_or(pts, |f| f.min(pts)));
            }
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(ms)
    }

    #[test]
    fn audio_before_the_first_keyframe_is_dropped() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.lock().video_expected = true;
        // Audio blocks until video starts; then only audio from then on.
        let waiting = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.pass(MediaKind::Audio, Some(t(900)), t(900)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "audio waits for video");
        assert!(gate.pass(MediaKind::Video, Some(t(1000)), t(1000)));
        assert!(!waiting.join().expect("audio thread"));
        assert!(gate.pass(MediaKind::Audio, Some(t(1010)), t(1010)));
        assert_eq!(gate.lock().first_pts, Some(t(1000)));
        assert_eq!(gate.lock().opened_at, Some(t(1000)));
    }

    #[test]
    fn giving_up_on_video_lets_audio_through() {
        let gate = Gate::default();
        gate.lock().video_expected = true;
        gate.give_up_video(t(5000));
        assert!(gate.pass(MediaKind::Audio, Some(t(100)), t(5000)));
        assert_eq!(gate.lock().opened_at, Some(t(5000)));
        // Without video expected, audio never waits.
        let gate = Gate::default();
        assert!(gate.pass(MediaKind::Audio, Some(t(1)), t(1)));
    }
}
