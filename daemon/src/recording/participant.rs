//! One participant of a recording: a task that reads their tap and feeds
//! their pipeline, and finalizes their file when they leave or the
//! recording stops.
//!
//! The file is started once their tracks are known: [`SETTLE`] after the
//! first track appears (a publisher's audio and video open within a few
//! milliseconds of each other), with the packets of that interval kept and
//! fed first. A track published after the file started ends the file and
//! starts the participant's next one (`-2`, `-3`, ...), since a Matroska
//! header lists its tracks up front.
//!
//! A shared screen is a file of its own (`NAME-screen-PEER.webm`), written
//! by a second task beside the camera's and microphone's: the tap's events
//! are split between the two by track ([`demux`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::codec::{self, Container};
use super::manifest::{participant_file, ParticipantEntry, TrackEntry};
use super::pipeline::{ParticipantPipeline, PipelineEvent, TrackSpec};
use crate::media::{MediaHandle, MediaKind, PeerId, Tap, TapEvent, TrackId};

/// How long after a participant's first track their file starts.
const SETTLE: Duration = Duration::from_millis(500);
/// Events kept while a file is about to start.
const PREROLL_EVENTS: usize = 4096;
/// Events a participant's tap holds before the engine drops (about 10 s of
/// a camera and a microphone).
pub const TAP_CAPACITY: usize = 4096;
/// How long finalizing may wait for the muxer to finish the file.
const EOS_DEADLINE: Duration = Duration::from_secs(5);
/// A track that produced nothing for this long while another did is ended.
const IDLE_TRACK: Duration = Duration::from_secs(5);
/// How often the file is flushed to disk and idle tracks are checked.
const TICK: Duration = Duration::from_secs(1);

/// What a participant tells its session.
#[derive(Debug)]
pub enum Note {
    /// Their entries changed (a file started, ended or failed): rewrite the manifest.
    Changed,
    /// Writing failed: the recording must stop.
    Failed {
        /// Whose file.
        peer: PeerId,
        /// What went wrong.
        error: String,
    },
    /// Their task ended; every file of theirs is final.
    Finished(PeerId),
}

/// Why a participant's recording ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// They left the room: media already forgot them.
    Left,
    /// The recording stops while they are still in the room.
    Stopped,
}

/// The session's side of a participant.
pub struct ParticipantHandle {
    /// Their files, newest last (shared with the task).
    pub entries: Arc<Mutex<Vec<ParticipantEntry>>>,
    tap: Tap,
    finalize: Option<oneshot::Sender<Ending>>,
}

impl ParticipantHandle {
    /// The participant's tap (its drop counter).
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    /// Asks the task to finalize every file and end; it reports
    /// [`Note::Finished`] when done.
    pub fn finalize(&mut self, ending: Ending) {
        if let Some(tx) = self.finalize.take() {
            let _ = tx.send(ending);
        }
    }
}

/// Everything a participant's task needs from its session.
#[derive(Clone)]
pub struct SessionContext {
    /// The session directory.
    pub dir: PathBuf,
    /// The session's clock and its time 0.
    pub clock: gst::Clock,
    /// Session time 0 on `clock`.
    pub base_time: gst::ClockTime,
    /// For taps and keyframe requests.
    pub media: MediaHandle,
    /// Where notes go.
    pub notes: mpsc::UnboundedSender<Note>,
    /// The room, for logs.
    pub room: String,
}

impl SessionContext {
    fn now(&self) -> gst::ClockTime {
        gst::prelude::ClockExt::time(&self.clock).saturating_sub(self.base_time)
    }
}

/// Starts recording `peer`: taps their media and spawns their tasks (one
/// for the camera and microphone, one for a shared screen).
pub async fn start(ctx: SessionContext, peer: PeerId, name: String) -> ParticipantHandle {
    let (tap, rx) = Tap::new(TAP_CAPACITY);
    ctx.media.set_tap(peer, Some(tap.clone())).await;
    let entries = Arc::new(Mutex::new(Vec::new()));
    let (finalize, finalize_rx) = oneshot::channel();
    let (main_tx, main_rx) = mpsc::channel(TAP_CAPACITY);
    let (screen_tx, screen_rx) = mpsc::channel(TAP_CAPACITY);
    let (main_end, main_end_rx) = oneshot::channel();
    let (screen_end, screen_end_rx) = oneshot::channel();
    let task = |screen: bool| ParticipantTask {
        joined_ms: ctx.now().mseconds(),
        ctx: ctx.clone(),
        peer,
        name: name.clone(),
        screen,
        entries: entries.clone(),
        tracks: Vec::new(),
        preroll: VecDeque::new(),
        preroll_dropped: 0,
        first_track_at: None,
        file: None,
        part: 0,
    };
    let main = tokio::spawn(task(false).run(main_rx, main_end_rx));
    let screen = tokio::spawn(task(true).run(screen_rx, screen_end_rx));
    tokio::spawn(async move {
        tokio::select! {
            () = demux(rx, main_tx, screen_tx) => {}
            ending = finalize_rx => {
                let ending = ending.unwrap_or(Ending::Stopped);
                let _ = main_end.send(ending);
                let _ = screen_end.send(ending);
            }
        }
        let _ = main.await;
        let _ = screen.await;
        let _ = ctx.notes.send(Note::Finished(peer));
    });
    ParticipantHandle {
        entries,
        tap,
        finalize: Some(finalize),
    }
}

/// Hands each tap event to the task of its track's file: a shared screen's
/// to `screen`, the others to `main`. Ends when the tap does.
async fn demux(
    mut tap: mpsc::Receiver<TapEvent>,
    main: mpsc::Sender<TapEvent>,
    screen: mpsc::Sender<TapEvent>,
) {
    let mut screens: Vec<TrackId> = Vec::new();
    while let Some(ev) = tap.recv().await {
        let track = match &ev {
            TapEvent::Track {
                track,
                screen: true,
                ..
            } => {
                screens.push(*track);
                *track
            }
            TapEvent::Track { track, .. }
            | TapEvent::TrackEnded { track }
            | TapEvent::Rtp { track, .. }
            | TapEvent::SenderReport { track, .. } => *track,
        };
        let to = if screens.contains(&track) {
            &screen
        } else {
            &main
        };
        if to.send(ev).await.is_err() {
            return;
        }
    }
}

/// A track of the participant and whether it is still sending.
struct KnownTrack {
    spec: TrackSpec,
    ended: bool,
}

/// The file being written.
struct OpenFile {
    pipeline: ParticipantPipeline,
    events: mpsc::UnboundedReceiver<PipelineEvent>,
    started: gst::ClockTime,
    tracks: Vec<TrackId>,
}

struct ParticipantTask {
    ctx: SessionContext,
    peer: PeerId,
    name: String,
    /// The task of a shared screen's file.
    screen: bool,
    joined_ms: u64,
    entries: Arc<Mutex<Vec<ParticipantEntry>>>,
    tracks: Vec<KnownTrack>,
    preroll: VecDeque<(gst::ClockTime, TapEvent)>,
    preroll_dropped: u64,
    first_track_at: Option<tokio::time::Instant>,
    file: Option<OpenFile>,
    part: u32,
}

impl ParticipantTask {
    async fn run(
        mut self,
        mut tap: mpsc::Receiver<TapEvent>,
        mut finalize: oneshot::Receiver<Ending>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ending = loop {
            let settle_at = match (&self.file, self.first_track_at) {
                (None, Some(t)) => Some(t + SETTLE),
                _ => None,
            };
            tokio::select! {
                ending = &mut finalize => break ending.unwrap_or(Ending::Stopped),
                ev = tap.recv() => match ev {
                    Some(ev) => self.on_tap(ev).await,
                    None => break Ending::Stopped,
                },
                ev = recv_pipeline(&mut self.file) => {
                    if !self.on_pipeline(ev).await {
                        break Ending::Stopped;
                    }
                }
                _ = sleep_until(settle_at) => self.open_file().await,
                _ = tick.tick() => self.on_tick().await,
            }
        };
        drop(tap);
        if ending == Ending::Stopped {
            self.ctx.media.set_tap(self.peer, None).await;
        }
        self.close_file(false).await;
    }

    async fn on_tap(&mut self, ev: TapEvent) {
        let at = self.ctx.now();
        match ev {
            TapEvent::Track {
                track,
                kind,
                codec,
                payload_type,
                ssrc,
                ..
            } => {
                if self.tracks.iter().any(|t| t.spec.track == track) {
                    return;
                }
                let Some(recipe) = codec::recipe(&codec) else {
                    warn!(room = %self.ctx.room, peer = %self.peer, track = track.0, codec = %codec.mime_type, "recording: codec not recordable, track skipped");
                    return;
                };
                debug_assert_eq!(recipe.kind, kind);
                self.tracks.push(KnownTrack {
                    spec: TrackSpec {
                        track,
                        codec,
                        recipe,
                        payload_type,
                        ssrc,
                    },
                    ended: false,
                });
                if self.file.is_some() {
                    // The header is written: this track needs a new file.
                    info!(room = %self.ctx.room, peer = %self.peer, track = track.0, "recording: new track, starting the participant's next file");
                    self.close_file(false).await;
                }
                if self.first_track_at.is_none() {
                    self.first_track_at = Some(tokio::time::Instant::now());
                }
            }
            TapEvent::TrackEnded { track } => {
                if let Some(t) = self.tracks.iter_mut().find(|t| t.spec.track == track) {
                    t.ended = true;
                }
                if let Some(f) = &mut self.file {
                    f.pipeline.end_track(track);
                }
            }
            ev @ (TapEvent::Rtp { .. } | TapEvent::SenderReport { .. }) => match &mut self.file {
                Some(f) => feed(&mut f.pipeline, ev, at),
                None => {
                    if self.first_track_at.is_none() {
                        return;
                    }
                    if self.preroll.len() >= PREROLL_EVENTS {
                        self.preroll.pop_front();
                        self.preroll_dropped += 1;
                    }
                    self.preroll.push_back((at, ev));
                }
            },
        }
    }

    /// Starts the next file with every live track.
    async fn open_file(&mut self) {
        self.first_track_at = None;
        let specs: Vec<TrackSpec> = self
            .tracks
            .iter()
            .filter(|t| !t.ended)
            .map(|t| t.spec.clone())
            .collect();
        if specs.is_empty() {
            self.preroll.clear();
            return;
        }
        self.part += 1;
        let container = Container::for_codecs(specs.iter().map(|s| &s.recipe));
        let name = if self.screen {
            format!("{}-screen", self.name)
        } else {
            self.name.clone()
        };
        let file_name = participant_file(&name, &self.peer.to_string(), self.part, container);
        let path = self.ctx.dir.join(&file_name);
        let (tx, events) = mpsc::unbounded_channel();
        let entry = ParticipantEntry {
            peer: self.peer.to_string(),
            name: self.name.clone(),
            file: file_name,
            container,
            state: "recording",
            joined_ms: self.joined_ms,
            left_ms: None,
            offset_ms: None,
            bytes: 0,
            tracks: specs
                .iter()
                .map(|s| TrackEntry {
                    kind: s.recipe.kind.as_str(),
                    codec: s.codec.mime_type.clone(),
                    ssrc: s.ssrc,
                    recorded: true,
                    note: None,
                })
                .collect(),
            dropped: 0,
            error: None,
        };
        self.lock_entries().push(entry);
        let started = self.ctx.now();
        let cname = self.peer.to_string();
        match ParticipantPipeline::start(
            &path,
            container,
            &specs,
            &cname,
            &self.ctx.clock,
            self.ctx.base_time,
            tx,
        ) {
            Ok(mut pipeline) => {
                info!(room = %self.ctx.room, peer = %self.peer, file = %path.display(), tracks = specs.len(), "recording participant");
                for (at, ev) in self.preroll.drain(..) {
                    feed(&mut pipeline, ev, at);
                }
                for s in specs.iter().filter(|s| s.recipe.kind == MediaKind::Video) {
                    self.ctx.media.request_keyframe(s.track).await;
                }
                self.file = Some(OpenFile {
                    pipeline,
                    events,
                    started,
                    tracks: specs.iter().map(|s| s.track).collect(),
                });
            }
            Err(e) => {
                self.preroll.clear();
                self.fail(e.to_string());
            }
        }
        let _ = self.ctx.notes.send(Note::Changed);
    }

    /// Handles what the pipeline reported; false when this participant's
    /// recording cannot go on.
    async fn on_pipeline(&mut self, ev: Option<PipelineEvent>) -> bool {
        match ev {
            Some(PipelineEvent::KeyframeWanted(track)) => {
                self.ctx.media.request_keyframe(track).await;
                true
            }
            Some(PipelineEvent::Error(error)) => {
                if let Some(f) = self.file.take() {
                    tokio::task::spawn_blocking(move || f.pipeline.stop());
                }
                self.fail(error);
                false
            }
            // An early EOS: every track ended on its own.
            Some(PipelineEvent::Eos) | None => {
                self.close_file(true).await;
                true
            }
        }
    }

    async fn on_tick(&mut self) {
        let Some(f) = &mut self.file else {
            return;
        };
        let idle: Vec<usize> = f
            .pipeline
            .end_idle_tracks(f.started, IDLE_TRACK)
            .into_iter()
            .filter_map(|track| f.tracks.iter().position(|id| *id == track))
            .collect();
        let path = f.pipeline.path().to_owned();
        if !idle.is_empty() {
            warn!(room = %self.ctx.room, peer = %self.peer, tracks = idle.len(), "recording: a track sent nothing usable for 5 s; the file goes on without it");
            let mut entries = self.lock_entries();
            if let Some(e) = entries.last_mut() {
                for i in idle {
                    if let Some(t) = e.tracks.get_mut(i) {
                        t.note =
                            Some("sent nothing usable for 5 s: the file goes on without it".into());
                    }
                }
            }
        }
        self.update_entry();
        // Durable up to the last second even on power loss: fsync the file
        // through a second descriptor (fsync acts on the file, not the fd).
        tokio::task::spawn_blocking(move || {
            if let Ok(file) = std::fs::File::open(path) {
                let _ = file.sync_data();
            }
        });
    }

    /// Finalizes the open file, if any: EOS, wait for the muxer (unless
    /// its EOS was already seen), stop.
    async fn close_file(&mut self, eos_seen: bool) {
        let Some(mut f) = self.file.take() else {
            return;
        };
        f.pipeline.send_eos();
        let deadline = tokio::time::Instant::now() + EOS_DEADLINE;
        let mut failure = None;
        if !eos_seen {
            loop {
                let next = tokio::time::timeout_at(deadline, f.events.recv()).await;
                match next {
                    Ok(Some(PipelineEvent::KeyframeWanted(_))) => continue,
                    Ok(Some(PipelineEvent::Eos)) | Ok(None) => {}
                    Ok(Some(PipelineEvent::Error(e))) => failure = Some(e),
                    Err(_) => {
                        warn!(room = %self.ctx.room, peer = %self.peer, "recording: the muxer did not finish within 5 s; the file may lack its index");
                    }
                }
                break;
            }
        }
        let dropped = f.pipeline.dropped();
        let first = f.pipeline.first_pts();
        let path = f.pipeline.path().to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            f.pipeline.stop();
            if let Ok(file) = std::fs::File::open(&path) {
                let _ = file.sync_all();
            }
        })
        .await;
        let now_ms = self.ctx.now().mseconds();
        {
            let mut entries = self.lock_entries();
            if let Some(e) = entries.last_mut() {
                e.dropped = dropped;
                e.offset_ms = e.offset_ms.or(first.map(|t| t.mseconds()));
                e.left_ms = Some(now_ms);
                e.bytes =
                    std::fs::metadata(self.ctx.dir.join(&e.file)).map_or(e.bytes, |m| m.len());
                match &failure {
                    Some(err) => {
                        e.state = "failed";
                        e.error = Some(err.clone());
                    }
                    None => e.state = "finalized",
                }
            }
        }
        info!(room = %self.ctx.room, peer = %self.peer, "recording: file finalized");
        if let Some(error) = failure {
            let _ = self.ctx.notes.send(Note::Failed {
                peer: self.peer,
                error,
            });
        }
        let _ = self.ctx.notes.send(Note::Changed);
        // Tracks still live go on in the next file.
        if self.tracks.iter().any(|t| !t.ended) {
            self.first_track_at = Some(tokio::time::Instant::now());
        }
    }

    fn update_entry(&self) {
        let Some(f) = &self.file else {
            return;
        };
        let first = f.pipeline.first_pts();
        let dropped = f.pipeline.dropped() + self.preroll_dropped;
        let mut entries = self.lock_entries();
        if let Some(e) = entries.last_mut() {
            e.dropped = dropped;
            e.offset_ms = e.offset_ms.or(first.map(|t| t.mseconds()));
            if let Ok(m) = std::fs::metadata(f.pipeline.path()) {
                e.bytes = m.len();
            }
        }
    }

    fn fail(&mut self, error: String) {
        warn!(room = %self.ctx.room, peer = %self.peer, %error, "recording failed");
        {
            let mut entries = self.lock_entries();
            if let Some(e) = entries.last_mut() {
                e.state = "failed";
                e.error = Some(error.clone());
                e.left_ms = Some(self.ctx.now().mseconds());
            }
        }
        let _ = self.ctx.notes.send(Note::Failed {
            peer: self.peer,
            error,
        });
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, Vec<ParticipantEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn feed(pipeline: &mut ParticipantPipeline, ev: TapEvent, at: gst::ClockTime) {
    match ev {
        TapEvent::Rtp { track, data } => pipeline.push_rtp(track, data, at),
        TapEvent::SenderReport { track, data } => pipeline.push_sender_report(track, &data, at),
        _ => {}
    }
}

async fn recv_pipeline(file: &mut Option<OpenFile>) -> Option<PipelineEvent> {
    match file {
        Some(f) => f.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
