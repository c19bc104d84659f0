//! Recording: rooms to files through GStreamer, without re-encoding.
//!
//! The [`Recorder`] (one per daemon) starts and stops one
//! [`session`] per room. A session follows the room's membership
//! ([`RoomRegistry::watch`]) and runs one [`participant`] task per member,
//! which taps the member's published media ([`crate::media::Tap`]: bounded,
//! dropping and counting, so forwarding never waits) and feeds a
//! [`pipeline`] that muxes their audio and video into one file, in sync by
//! the publisher's RTCP sender reports. Layout and manifest: [`manifest`];
//! everything else: `docs/recording.md`.

pub mod codec;
mod gate;
pub mod manifest;
mod participant;
pub mod pipeline;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use sfu_proto::control::Recording;
use tracing::{info, warn};

use crate::media::MediaHandle;
use crate::rooms::RoomRegistry;
pub use session::EndReason;
use session::SessionHandle;

/// Why a recording request failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No room of that name.
    #[error("no room named `{0}`")]
    UnknownRoom(String),
    /// The room is being recorded.
    #[error("room `{0}` is already being recorded; stop it first")]
    AlreadyRecording(String),
    /// The room is not being recorded.
    #[error("room `{0}` is not being recorded")]
    NotRecording(String),
    /// GStreamer or one of its plugins is missing.
    #[error("recording is not available: {0}")]
    Unavailable(String),
    /// The recording directory cannot be created or written.
    #[error("cannot write recordings to {}: {source}; make recording.dir writable by sfud or point it elsewhere", dir.display())]
    Storage {
        /// The directory or file that failed.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Something failed inside the recorder.
    #[error("recorder failure: {0}")]
    Internal(String),
}

/// Records rooms: `sfuctl record start|stop|list`.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    rooms: RoomRegistry,
    media: MediaHandle,
    /// Why recording cannot work here (GStreamer or a plugin missing).
    unavailable: Option<String>,
    /// One session per room: recording, or failed until stopped or replaced.
    sessions: tokio::sync::Mutex<HashMap<String, SessionHandle>>,
    shutting_down: AtomicBool,
}

impl Recorder {
    /// A recorder writing under `dir`. GStreamer is initialised here; if it
    /// or a needed plugin is missing the daemon still runs and `record
    /// start` says what to install.
    pub fn new(dir: PathBuf, rooms: RoomRegistry, media: MediaHandle) -> Recorder {
        let unavailable = match gst::init() {
            Err(e) => Some(format!("GStreamer did not initialise: {e}")),
            Ok(()) => {
                let missing = pipeline::missing_elements();
                (!missing.is_empty()).then(|| {
                    format!(
                        "GStreamer elements {} are missing: install gstreamer1.0-plugins-base, gstreamer1.0-plugins-good and gstreamer1.0-plugins-bad",
                        missing.join(", ")
                    )
                })
            }
        };
        if let Some(why) = &unavailable {
            warn!(reason = %why, "recording disabled");
        }
        Recorder {
            inner: Arc::new(Inner {
                dir,
                rooms,
                media,
                unavailable,
                sessions: tokio::sync::Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// Starts recording `room`.
    pub async fn start(&self, room: &str) -> Result<Recording, RecordError> {
        if let Some(why) = &self.inner.unavailable {
            return Err(RecordError::Unavailable(why.clone()));
        }
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(RecordError::ShuttingDown);
        }
        let mut sessions = self.inner.sessions.lock().await;
        if sessions.get(room).is_some_and(SessionHandle::is_recording) {
            return Err(RecordError::AlreadyRecording(room.to_owned()));
        }
        let started = session::start(
            &self.inner.dir,
            room,
            &self.inner.rooms,
            // The worker that serves the room's connections.
            self.inner
                .rooms
                .media_of(room)
                .unwrap_or_else(|| self.inner.media.clone()),
        )
        .await;
        match started {
            Ok(handle) => {
                let summary = handle.summary();
                sessions.insert(room.to_owned(), handle);
                Ok(summary)
            }
            Err(e) => {
                if let RecordError::Storage { dir, .. } = &e {
                    let failed = SessionHandle::failed(room, dir.clone(), e.to_string());
                    sessions.insert(room.to_owned(), failed);
                }
                if !matches!(e, RecordError::UnknownRoom(_)) {
                    warn!(room, error = %e, "recording did not start");
                }
                Err(e)
            }
        }
    }

    /// Stops recording `room`, finalizing every file; a failed recording is
    /// cleared and its final state returned.
    pub async fn stop(&self, room: &str) -> Result<Recording, RecordError> {
        let handle = {
            let mut sessions = self.inner.sessions.lock().await;
            match sessions.get(room) {
                Some(h) if h.is_recording() || h.summary().state == "failed" => {
                    sessions.remove(room)
                }
                _ => None,
            }
        };
        let handle = handle.ok_or_else(|| RecordError::NotRecording(room.to_owned()))?;
        Ok(handle.stop(EndReason::Stopped).await)
    }

    /// Recordings in progress, and failed ones until stopped or restarted.
    pub async fn list(&self) -> Vec<Recording> {
        let mut sessions = self.inner.sessions.lock().await;
        // Sessions that ended with their room are forgotten.
        sessions.retain(|_, h| {
            let state = h.summary().state;
            state != "stopped"
        });
        let mut out: Vec<Recording> = sessions.values().map(SessionHandle::summary).collect();
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }

    /// Rooms being recorded now.
    pub async fn recording_count(&self) -> usize {
        self.list()
            .await
            .iter()
            .filter(|r| r.state == "recording")
            .count()
    }

    /// Finalizes every recording (SIGTERM, SIGINT): refuses new ones, then
    /// stops all at once and waits for their files.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let handles: Vec<(String, SessionHandle)> =
            self.inner.sessions.lock().await.drain().collect();
        if handles.is_empty() {
            return;
        }
        info!(recordings = handles.len(), "finalizing recordings");
        let stops = handles.iter().map(|(_, h)| h.stop(EndReason::Shutdown));
        let done = futures_util::future::join_all(stops).await;
        for r in done {
            info!(room = %r.room, state = %r.state, files = r.files.len(), "recording finalized");
        }
    }
}
