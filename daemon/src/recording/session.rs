//! One recording of one room: a task that follows the room's membership,
//! runs a [`participant`](super::participant) per member, keeps
//! `session.json` up to date and, when told to stop (or the room ends, or a
//! file cannot be written), finalizes every file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use sfu_proto::control::{Recording, RecordingFile};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::manifest::{self, Manifest, ParticipantEntry, TimeBase};
use super::participant::{self, Ending, Note, ParticipantHandle, SessionContext};
use super::RecordError;
use crate::media::{MediaHandle, PeerId, Tap};
use crate::rooms::{RoomEvent, RoomRegistry};

/// How long stopping waits for every participant's file to be finalized
/// (each has its own 5 s deadline; they finalize in parallel).
const STOP_DEADLINE: Duration = Duration::from_secs(8);

/// Why a session ends.
#[derive(Debug, Clone)]
pub enum EndReason {
    /// `sfuctl record stop`.
    Stopped,
    /// The daemon is shutting down.
    Shutdown,
    /// The room ended.
    RoomClosed,
}

impl EndReason {
    fn as_str(&self) -> &'static str {
        match self {
            EndReason::Stopped => "stopped",
            EndReason::Shutdown => "shutdown",
            EndReason::RoomClosed => "room closed",
        }
    }
}

/// What the control plane sees of a session, shared with its task.
struct Shared {
    room: String,
    dir: PathBuf,
    started: SystemTime,
    state: Mutex<Status>,
}

struct Status {
    state: &'static str,
    ended: Option<SystemTime>,
    end_reason: Option<String>,
    error: Option<String>,
    /// Every participant ever recorded, in order of joining.
    participants: Vec<(Arc<Mutex<Vec<ParticipantEntry>>>, Tap)>,
}

/// The recorder's handle on a running (or failed) session.
#[derive(Clone)]
pub struct SessionHandle {
    stop: mpsc::UnboundedSender<(EndReason, oneshot::Sender<Recording>)>,
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Whether it is still recording (not failed, not stopped).
    pub fn is_recording(&self) -> bool {
        lock(&self.shared.state).state == "recording"
    }

    /// What `record list` shows.
    pub fn summary(&self) -> Recording {
        summary_of(&self.shared)
    }

    /// A recording that could not start, kept so `record list` shows why.
    pub fn failed(room: &str, dir: PathBuf, error: String) -> SessionHandle {
        let now = SystemTime::now();
        let (stop, _) = mpsc::unbounded_channel();
        SessionHandle {
            stop,
            shared: Arc::new(Shared {
                room: room.to_owned(),
                dir,
                started: now,
                state: Mutex::new(Status {
                    state: "failed",
                    ended: Some(now),
                    end_reason: Some(error.clone()),
                    error: Some(error),
                    participants: Vec::new(),
                }),
            }),
        }
    }

    /// Stops recording and finalizes every file; returns the final state.
    pub async fn stop(&self, reason: EndReason) -> Recording {
        let (reply, rx) = oneshot::channel();
        if self.stop.send((reason, reply)).is_ok() {
            if let Ok(Ok(done)) = tokio::time::timeout(STOP_DEADLINE * 2, rx).await {
                return done;
            }
        }
        // The task already ended (failed, or the room closed).
        self.summary()
    }
}

/// Starts recording `room` into a new directory under `base`.
pub async fn start(
    base: &Path,
    room: &str,
    rooms: &RoomRegistry,
    media: MediaHandle,
) -> Result<SessionHandle, RecordError> {
    let (members, events) = rooms
        .watch(room)
        .await
        .map_err(|_| RecordError::UnknownRoom(room.to_owned()))?;
    let started = SystemTime::now();
    let dir = manifest::session_dir(base, room, started);
    let dir = tokio::task::spawn_blocking(move || create_session_dir(dir))
        .await
        .map_err(|e| RecordError::Internal(e.to_string()))?
        .map_err(|(dir, source)| RecordError::Storage { dir, source })?;
    let clock = gst::SystemClock::obtain();
    let base_time = clock.time();
    let shared = Arc::new(Shared {
        room: room.to_owned(),
        dir: dir.clone(),
        started,
        state: Mutex::new(Status {
            state: "recording",
            ended: None,
            end_reason: None,
            error: None,
            participants: Vec::new(),
        }),
    });
    let first = manifest_of(&shared);
    let manifest_dir = dir.clone();
    tokio::task::spawn_blocking(move || manifest::write(&manifest_dir, &first))
        .await
        .map_err(|e| RecordError::Internal(e.to_string()))?
        .map_err(|source| RecordError::Storage {
            dir: dir.clone(),
            source,
        })?;
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let ctx = SessionContext {
        dir: dir.clone(),
        clock,
        base_time,
        media,
        notes: notes_tx,
        room: room.to_owned(),
    };
    let (stop, stop_rx) = mpsc::unbounded_channel();
    let mut task = SessionTask {
        ctx,
        shared: shared.clone(),
        active: HashMap::new(),
        failed: false,
    };
    for (peer, name) in members {
        task.add(peer, name).await;
    }
    info!(room, dir = %dir.display(), "recording started");
    tokio::spawn(task.run(events, notes, stop_rx));
    Ok(SessionHandle { stop, shared })
}

/// Creates `dir` (and its parents); a directory of the same name (two
/// starts within a second) gets a `-2`, `-3`... suffix.
fn create_session_dir(dir: PathBuf) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let parent = dir.parent().map(Path::to_owned).unwrap_or_default();
    std::fs::create_dir_all(&parent).map_err(|e| (parent.clone(), e))?;
    let mut candidate = dir.clone();
    for n in 2..100 {
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mut name = dir.file_name().unwrap_or_default().to_owned();
                name.push(format!("-{n}"));
                candidate = dir.with_file_name(name);
            }
            Err(e) => return Err((candidate, e)),
        }
    }
    Err((
        dir,
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "too many sessions"),
    ))
}

struct SessionTask {
    ctx: SessionContext,
    shared: Arc<Shared>,
    active: HashMap<PeerId, ParticipantHandle>,
    failed: bool,
}

type StopRequest = (EndReason, oneshot::Sender<Recording>);

impl SessionTask {
    async fn add(&mut self, peer: PeerId, name: String) {
        if self.active.contains_key(&peer) {
            return;
        }
        let handle = participant::start(self.ctx.clone(), peer, name).await;
        lock(&self.shared.state)
            .participants
            .push((handle.entries.clone(), handle.tap()));
        self.active.insert(peer, handle);
    }

    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<RoomEvent>,
        mut notes: mpsc::UnboundedReceiver<Note>,
        mut stop: mpsc::UnboundedReceiver<StopRequest>,
    ) {
        let (reason, reply) = loop {
            tokio::select! {
                req = stop.recv() => match req {
                    Some((reason, reply)) => break (reason, Some(reply)),
                    None => break (EndReason::Shutdown, None),
                },
                ev = events.recv() => match ev {
                    Some(RoomEvent::Joined { peer, name }) => self.add(peer, name).await,
                    Some(RoomEvent::Left { peer }) => {
                        if let Some(p) = self.active.get_mut(&peer) {
                            p.finalize(Ending::Left);
                        }
                    }
                    None => break (EndReason::RoomClosed, None),
                },
                Some(note) = notes.recv() => {
                    if self.on_note(note).await {
                        break (EndReason::Stopped, None);
                    }
                }
            }
        };
        let summary = self.finish(reason, &mut notes).await;
        if let Some(reply) = reply {
            let _ = reply.send(summary);
        }
        // A stop that arrives while failing gets the final state too.
        stop.close();
        while let Some((_, reply)) = stop.recv().await {
            let _ = reply.send(summary_of(&self.shared));
        }
    }

    /// Returns true when the session must end (a file failed).
    async fn on_note(&mut self, note: Note) -> bool {
        match note {
            Note::Changed => {
                self.write_manifest().await;
                false
            }
            Note::Finished(peer) => {
                self.active.remove(&peer);
                self.write_manifest().await;
                false
            }
            Note::Failed { peer, error } => {
                error!(room = %self.shared.room, %peer, %error, "recording stopped: a file cannot be written");
                let mut s = lock(&self.shared.state);
                if s.error.is_none() {
                    s.error = Some(error);
                }
                self.failed = true;
                true
            }
        }
    }

    /// Finalizes every participant, writes the final manifest.
    async fn finish(
        &mut self,
        reason: EndReason,
        notes: &mut mpsc::UnboundedReceiver<Note>,
    ) -> Recording {
        lock(&self.shared.state).state = "stopping";
        for p in self.active.values_mut() {
            p.finalize(Ending::Stopped);
        }
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        while !self.active.is_empty() {
            match tokio::time::timeout_at(deadline, notes.recv()).await {
                Ok(Some(Note::Finished(peer))) => {
                    self.active.remove(&peer);
                }
                Ok(Some(Note::Failed { error, .. })) => {
                    self.failed = true;
                    let mut s = lock(&self.shared.state);
                    if s.error.is_none() {
                        s.error = Some(error);
                    }
                }
                Ok(Some(Note::Changed)) => {}
                Ok(None) | Err(_) => {
                    warn!(room = %self.shared.room, left = self.active.len(), "recording: some files were not finalized in time");
                    break;
                }
            }
        }
        {
            let mut s = lock(&self.shared.state);
            s.state = if self.failed { "failed" } else { "stopped" };
            s.ended = Some(SystemTime::now());
            s.end_reason = Some(match &s.error {
                Some(e) => e.clone(),
                None => reason.as_str().to_owned(),
            });
        }
        self.write_manifest().await;
        let summary = summary_of(&self.shared);
        info!(room = %self.shared.room, state = summary.state, files = summary.files.len(), dropped = summary.dropped, "recording ended");
        summary
    }

    async fn write_manifest(&self) {
        let m = manifest_of(&self.shared);
        let dir = self.shared.dir.clone();
        let room = self.shared.room.clone();
        let written = tokio::task::spawn_blocking(move || manifest::write(&dir, &m)).await;
        if let Ok(Err(e)) = written {
            warn!(%room, error = %e, "recording: cannot write session.json");
        }
    }
}

fn manifest_of(shared: &Shared) -> Manifest {
    let s = lock(&shared.state);
    let participants: Vec<ParticipantEntry> = s
        .participants
        .iter()
        .flat_map(|(entries, tap)| {
            let tap_dropped = tap.dropped();
            let mut v = lock(entries).clone();
            // The engine's drops count against the participant's latest file.
            if let Some(last) = v.last_mut() {
                last.dropped += tap_dropped;
            }
            v
        })
        .collect();
    Manifest {
        version: 1,
        room: shared.room.clone(),
        state: s.state,
        started: manifest::rfc3339_utc(shared.started),
        ended: s.ended.map(manifest::rfc3339_utc),
        end_reason: s.end_reason.clone(),
        error: s.error.clone(),
        time_base: TimeBase::new(shared.started),
        dropped: participants.iter().map(|p| p.dropped).sum(),
        participants,
    }
}

fn summary_of(shared: &Shared) -> Recording {
    let m = manifest_of(shared);
    let ended = lock(&shared.state).ended;
    let duration = ended
        .unwrap_or_else(SystemTime::now)
        .duration_since(shared.started)
        .unwrap_or_default();
    Recording {
        room: m.room,
        state: m.state.to_owned(),
        dir: shared.dir.display().to_string(),
        started: m.started,
        duration_secs: duration.as_secs(),
        dropped: m.dropped,
        error: m.error,
        files: m
            .participants
            .into_iter()
            .map(|p| RecordingFile {
                peer: p.peer,
                name: p.name,
                file: p.file,
                state: p.state.to_owned(),
                bytes: p.bytes,
                codecs: p.tracks.into_iter().map(|t| t.codec).collect(),
                dropped: p.dropped,
                error: p.error,
            })
            .collect(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
