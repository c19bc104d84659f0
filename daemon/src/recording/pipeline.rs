//! One participant's GStreamer pipeline: their RTP and sender reports in,
//! one muxed file out.
//!
//! ```text
//! appsrc (RTP, track i)  ─► rtpbin.recv_rtp_sink_i ─┐ jitterbuffer, lip sync by
//! appsrc (RTCP SR+SDES)  ─► rtpbin.recv_rtcp_sink_i ┘ the sender reports
//!   rtpbin.recv_rtp_src_i_* ─► depayloader ─► [parser] ─► gate ─► queue ─► mux ─► filesink
//! ```
//!
//! Every buffer is stamped with its arrival time on the session's clock, and
//! every pipeline of a session shares that clock and base time, so running
//! time is session time. The gate (a pad probe) drops audio until the first
//! video keyframe is out of the depayloader, so a file starts on a keyframe
//! with audio and video together. A depayloader's keyframe requests
//! (upstream `GstForceKeyUnit` events) are caught and turned into rate-limited
//! [`PipelineEvent::KeyframeWanted`]s, which become PLIs to the publisher.
//!
//! GStreamer does all the work on its own threads; pushing a packet is a
//! queue insertion, and when an appsrc queue is full the packet is dropped
//! and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::mpsc;

use super::codec::{self, Container, RecordedCodec};
use super::gate::Gate;
use crate::media::{Codec, MediaKind, TrackId};

/// Jitterbuffer latency: how long rtpbin waits for late or reordered packets.
const JITTER_LATENCY_MS: u32 = 200;
/// Most bytes an appsrc holds before the recorder drops (and counts) packets.
const APPSRC_MAX_BYTES: u64 = 4 << 20;
/// Least time between two keyframe requests a depayloader makes us send.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Why a pipeline could not be built or failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An element is missing: a GStreamer plugin package is not installed.
    #[error("GStreamer element `{element}` is missing: install gstreamer1.0-plugins-base, -good and -bad")]
    MissingElement {
        /// The element's factory name.
        element: &'static str,
    },
    /// Linking or starting failed.
    #[error("cannot set up the recording pipeline: {0}")]
    Setup(String),
}

/// What a pipeline reports from GStreamer's threads.
#[derive(Debug)]
pub enum PipelineEvent {
    /// A depayloader wants a keyframe on this track.
    KeyframeWanted(TrackId),
    /// The pipeline failed (e.g. the file cannot be written).
    Error(String),
    /// The file is complete.
    Eos,
}

/// A track as the pipeline records it.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    /// Daemon-wide id.
    pub track: TrackId,
    /// The codec negotiated.
    pub codec: Codec,
    /// How it is depayloaded.
    pub recipe: RecordedCodec,
    /// The publisher's payload type.
    pub payload_type: u8,
    /// The publisher's SSRC.
    pub ssrc: u32,
}

/// One track's elements.
struct Branch {
    kind: MediaKind,
    ssrc: u32,
    payload_type: u8,
    rtp: gst_app::AppSrc,
    rtcp: gst_app::AppSrc,
    /// Where an EOS goes when rtpbin never produced the track's pad.
    queue_sink: gst::Pad,
    /// rtpbin's pad for the track is linked to the depayloader.
    linked: Arc<AtomicBool>,
    /// Running time (ns) of the last buffer that passed the gate; 0 = none.
    last_output: Arc<AtomicU64>,
    /// No longer fed: ended, idle, or finalizing.
    ended: bool,
    /// The SDES CNAME chunk appended to each sender report.
    sdes: Vec<u8>,
}

/// A running participant pipeline.
pub struct ParticipantPipeline {
    pipeline: gst::Pipeline,
    branches: HashMap<TrackId, Branch>,
    gate: Arc<Gate>,
    clock: gst::Clock,
    base_time: gst::ClockTime,
    path: PathBuf,
    dropped: u64,
}

fn make(factory: &'static str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| PipelineError::MissingElement { element: factory })
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> PipelineError + '_ {
    move |e| PipelineError::Setup(format!("{what}: {e}"))
}

/// The GStreamer elements every recording needs, to check at start-up.
pub fn missing_elements() -> Vec<&'static str> {
    [
        "appsrc",
        "rtpbin",
        "rtpvp8depay",
        "rtpvp9depay",
        "rtpopusdepay",
        "opusparse",
        "queue",
        "webmmux",
        "matroskamux",
        "filesink",
    ]
    .into_iter()
    .filter(|e| gst::ElementFactory::find(e).is_none())
    .collect()
}

impl ParticipantPipeline {
    /// Builds and starts a pipeline writing `tracks` to `path`.
    ///
    /// `cname` ties the tracks together for lip sync; `events` receives what
    /// happens on GStreamer's threads.
    pub fn start(
        path: &Path,
        container: Container,
        tracks: &[TrackSpec],
        cname: &str,
        clock: &gst::Clock,
        base_time: gst::ClockTime,
        events: mpsc::UnboundedSender<PipelineEvent>,
    ) -> Result<ParticipantPipeline, PipelineError> {
        let pipeline = gst::Pipeline::new();
        let rtpbin = make("rtpbin")?;
        rtpbin.set_property("latency", JITTER_LATENCY_MS);
        let mux = make(container.muxer())?;
        // Seekable file with duration and cues on a clean stop; clusters
        // are written as they complete, so a killed daemon leaves a file
        // that plays up to its last cluster (see docs/recording.md).
        mux.set_property("streamable", false);
        // Browsers send keyframes rarely: close a cluster at least every
        // 2 s so a crash loses at most that much even without keyframes.
        mux.set_property("max-cluster-duration", 2_000_000_000i64);
        mux.set_property("offset-to-zero", true);
        let sink = make("filesink")?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        // Every write goes straight to the kernel: a SIGKILL loses nothing
        // that the muxer has produced.
        sink.set_property_from_str("buffer-mode", "unbuffered");
        sink.set_property("async", false);
        pipeline
            .add_many([&rtpbin, &mux, &sink])
            .map_err(setup("adding elements"))?;
        mux.link(&sink).map_err(setup("linking the muxer"))?;

        let gate = Arc::new(Gate::default());
        gate.lock().video_expected = tracks.iter().any(|t| t.recipe.kind == MediaKind::Video);
        let mut branches = HashMap::new();
        let mut depays: HashMap<u32, (gst::Element, Arc<AtomicBool>)> = HashMap::new();
        for (session, spec) in tracks.iter().enumerate() {
            let session = session as u32;
            let branch = Self::add_branch(
                &pipeline, &rtpbin, &mux, session, spec, &gate, &events, cname, clock, base_time,
            )?;
            depays.insert(session, (branch.1.clone(), branch.0.linked.clone()));
            branches.insert(spec.track, branch.0);
        }

        // rtpbin makes one source pad per (session, SSRC, payload type) when
        // the first packet is out of the jitterbuffer.
        let bin = pipeline.downgrade();
        rtpbin.connect_pad_added(move |_, pad| {
            let name = pad.name();
            let session = name
                .strip_prefix("recv_rtp_src_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|s| s.parse::<u32>().ok());
            let target = session.and_then(|s| depays.get(&s));
            let linked = match target {
                Some((depay, linked)) if !linked.swap(true, Ordering::SeqCst) => depay
                    .static_pad("sink")
                    .is_some_and(|sink| pad.link(&sink).is_ok()),
                _ => false,
            };
            if !linked {
                // An unexpected stream: swallow it rather than let an
                // unlinked pad stop the pipeline.
                if let (Some(bin), Ok(fakesink)) = (
                    bin.upgrade(),
                    gst::ElementFactory::make("fakesink")
                        .property("async", false)
                        .build(),
                ) {
                    if bin.add(&fakesink).is_ok() {
                        let _ = fakesink.sync_state_with_parent();
                        if let Some(sink) = fakesink.static_pad("sink") {
                            let _ = pad.link(&sink);
                        }
                    }
                }
                tracing::debug!(pad = %name, "recording: unexpected rtpbin pad discarded");
            }
        });

        let bus = pipeline
            .bus()
            .ok_or_else(|| PipelineError::Setup("no bus".into()))?;
        let file = path.display().to_string();
        bus.set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    tracing::debug!(file = %file, debug = ?e.debug(), "recording pipeline error");
                    let _ = events.send(PipelineEvent::Error(error_text(&file, &e.error())));
                }
                gst::MessageView::Eos(_) => {
                    let _ = events.send(PipelineEvent::Eos);
                }
                gst::MessageView::Warning(w) => {
                    tracing::debug!(file = %file, warning = %w.error(), "recording pipeline warning");
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });

        pipeline.use_clock(Some(clock));
        pipeline.set_start_time(gst::ClockTime::NONE);
        pipeline.set_base_time(base_time);
        let p = ParticipantPipeline {
            pipeline,
            branches,
            gate,
            clock: clock.clone(),
            base_time,
            path: path.to_owned(),
            dropped: 0,
        };
        // On failure (e.g. the file cannot be created) the error also
        // arrives on the bus; `Drop` sets the pipeline to Null.
        p.pipeline
            .set_state(gst::State::Playing)
            .map_err(setup("starting"))?;
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_branch(
        pipeline: &gst::Pipeline,
        rtpbin: &gst::Element,
        mux: &gst::Element,
        session: u32,
        spec: &TrackSpec,
        gate: &Arc<Gate>,
        events: &mpsc::UnboundedSender<PipelineEvent>,
        cname: &str,
        clock: &gst::Clock,
        base_time: gst::ClockTime,
    ) -> Result<(Branch, gst::Element), PipelineError> {
        let caps: gst::Caps = codec::rtp_caps(&spec.codec, &spec.recipe, spec.payload_type)
            .parse()
            .map_err(setup("RTP caps"))?;
        let rtp = appsrc(&caps)?;
        let rtcp = appsrc(&gst::Caps::builder("application/x-rtcp").build())?;
        let depay = make(spec.recipe.depayloader)?;
        for prop in ["wait-for-keyframe", "request-keyframe"] {
            if depay.find_property(prop).is_some() {
                depay.set_property(prop, true);
            }
        }
        let parser = spec.recipe.parser.map(make).transpose()?;
        let queue = make("queue")?;
        // Room for the other tracks to catch up; never leaks.
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 3_000_000_000u64);

        let mut chain: Vec<&gst::Element> = vec![&depay];
        if let Some(p) = &parser {
            chain.push(p);
        }
        chain.push(&queue);
        pipeline
            .add_many([rtp.upcast_ref::<gst::Element>(), rtcp.upcast_ref()])
            .map_err(setup("adding sources"))?;
        pipeline
            .add_many(chain.iter().copied())
            .map_err(setup("adding the depayloader"))?;
        gst::Element::link_many(chain.iter().copied()).map_err(setup("linking the depayloader"))?;

        let link_request = |src: &gst::Element, name: String| -> Result<(), PipelineError> {
            let sink = rtpbin
                .request_pad_simple(&name)
                .ok_or_else(|| PipelineError::Setup(format!("rtpbin has no pad {name}")))?;
            let src = src
                .static_pad("src")
                .ok_or_else(|| PipelineError::Setup("appsrc has no src pad".into()))?;
            src.link(&sink).map_err(setup("linking to rtpbin"))?;
            Ok(())
        };
        link_request(
            rtp.upcast_ref::<gst::Element>(),
            format!("recv_rtp_sink_{session}"),
        )?;
        link_request(
            rtcp.upcast_ref::<gst::Element>(),
            format!("recv_rtcp_sink_{session}"),
        )?;

        let template = match spec.recipe.kind {
            MediaKind::Video => "video_%u",
            MediaKind::Audio => "audio_%u",
        };
        let mux_pad = mux
            .request_pad_simple(template)
            .ok_or_else(|| PipelineError::Setup(format!("the muxer has no {template} pad")))?;
        let queue_src = queue
            .static_pad("src")
            .ok_or_else(|| PipelineError::Setup("queue has no src pad".into()))?;
        queue_src
            .link(&mux_pad)
            .map_err(setup("linking to the muxer"))?;

        // Keyframe requests from the depayloader become PLIs, rate-limited.
        let depay_sink = depay
            .static_pad("sink")
            .ok_or_else(|| PipelineError::Setup("depayloader has no sink pad".into()))?;
        let track = spec.track;
        let events = events.clone();
        let last_request = Mutex::new(None::<std::time::Instant>);
        depay_sink.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(ev)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if ev.structure().is_none_or(|s| s.name() != "GstForceKeyUnit") {
                return gst::PadProbeReturn::Ok;
            }
            let now = std::time::Instant::now();
            let mut last = last_request.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL) {
                *last = Some(now);
                let _ = events.send(PipelineEvent::KeyframeWanted(track));
            }
            drop(info.take_event());
            gst::PadProbeReturn::Handled
        });

        // The gate, in front of the queue.
        let queue_sink = queue
            .static_pad("sink")
            .ok_or_else(|| PipelineError::Setup("queue has no sink pad".into()))?;
        let last_output = Arc::new(AtomicU64::new(0));
        {
            let gate = gate.clone();
            let kind = spec.recipe.kind;
            let last_output = last_output.clone();
            let clock = clock.clone();
            queue_sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let pts = info.buffer().and_then(|b| b.pts());
                let now = clock.time().saturating_sub(base_time);
                if gate.pass(kind, pts, now) {
                    if let Some(pts) = pts {
                        last_output.store(pts.nseconds().max(1), Ordering::Relaxed);
                    }
                    gst::PadProbeReturn::Ok
                } else {
                    // Consumed here: `Drop` makes GStreamer 1.22 unref a
                    // buffer gstreamer-rs already took (a CRITICAL).
                    drop(info.take_buffer());
                    gst::PadProbeReturn::Handled
                }
            });
        }

        let mut sdes = codec::sdes_cname(spec.ssrc, cname);
        sdes.shrink_to_fit();
        Ok((
            Branch {
                kind: spec.recipe.kind,
                ssrc: spec.ssrc,
                payload_type: spec.payload_type,
                rtp,
                rtcp,
                queue_sink,
                linked: Arc::new(AtomicBool::new(false)),
                last_output,
                ended: false,
                sdes,
            },
            depay,
        ))
    }

    /// Session time now (the pipeline's running time).
    pub fn now(&self) -> gst::ClockTime {
        self.clock.time().saturating_sub(self.base_time)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packets dropped because an appsrc queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Session time of the file's first frame, once written.
    pub fn first_pts(&self) -> Option<gst::ClockTime> {
        self.gate.lock().first_pts
    }

    /// Feeds one RTP packet of `track` that arrived at session time `at`.
    pub fn push_rtp(&mut self, track: TrackId, data: bytes::Bytes, at: gst::ClockTime) {
        let Some(b) = self.branches.get_mut(&track) else {
            return;
        };
        // Only the stream the file's caps describe: no simulcast layers,
        // retransmissions or other payload types.
        if b.ended
            || codec::rtp_ssrc(&data) != Some(b.ssrc)
            || data.get(1).map(|pt| pt & 0x7f) != Some(b.payload_type)
        {
            return;
        }
        if !push(&b.rtp, gst::Buffer::from_slice(data), at) {
            self.dropped += 1;
        }
    }

    /// Feeds a sender report of `track`, with the SDES that ties the
    /// participant's tracks together for lip sync.
    pub fn push_sender_report(&mut self, track: TrackId, data: &[u8], at: gst::ClockTime) {
        let Some(b) = self.branches.get_mut(&track) else {
            return;
        };
        if b.ended {
            return;
        }
        let mut compound = Vec::with_capacity(data.len() + b.sdes.len());
        compound.extend_from_slice(data);
        compound.extend_from_slice(&b.sdes);
        if !push(&b.rtcp, gst::Buffer::from_slice(compound), at) {
            self.dropped += 1;
        }
    }

    /// Ends one track: what it sent is muxed, the rest of the file goes on
    /// without it.
    pub fn end_track(&mut self, track: TrackId) {
        let now = self.now();
        if let Some(b) = self.branches.get_mut(&track) {
            end_branch(b);
            if b.kind == MediaKind::Video {
                self.gate.give_up_video(now);
            }
        }
    }

    /// Tracks that produced nothing for `idle` while another track did, or
    /// nothing at all within `idle` of `since`: the muxer would wait for
    /// them forever (NOTES pitfall 4), so they are ended.
    pub fn end_idle_tracks(&mut self, since: gst::ClockTime, idle: Duration) -> Vec<TrackId> {
        let now = self.now().nseconds();
        let idle = idle.as_nanos() as u64;
        let opened_at = self.gate.lock().opened_at.map(|t| t.nseconds());
        let newest = self
            .branches
            .values()
            .map(|b| b.last_output.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let mut ended = Vec::new();
        for (track, b) in &mut self.branches {
            if b.ended {
                continue;
            }
            let last = b.last_output.load(Ordering::Relaxed);
            let stalled = if last == 0 {
                let from = match b.kind {
                    MediaKind::Video => Some(since.nseconds()),
                    // Audio waits for the video's first keyframe.
                    MediaKind::Audio => opened_at,
                };
                from.is_some_and(|from| now.saturating_sub(from) > idle)
            } else {
                newest.saturating_sub(last) > idle
            };
            if stalled {
                end_branch(b);
                ended.push(*track);
            }
        }
        if ended.iter().any(|t| {
            self.branches
                .get(t)
                .is_some_and(|b| b.kind == MediaKind::Video)
        }) {
            self.gate.give_up_video(gst::ClockTime::from_nseconds(now));
        }
        ended
    }

    /// Sends EOS into every track so the muxer completes the file; the
    /// caller then waits for [`PipelineEvent::Eos`] and calls [`Self::stop`].
    pub fn send_eos(&mut self) {
        self.gate.give_up_video(self.now());
        for b in self.branches.values_mut() {
            end_branch(b);
        }
    }

    /// Stops the pipeline (blocking: call off the async threads).
    pub fn stop(self) {
        // Dropping does it.
    }
}

impl Drop for ParticipantPipeline {
    fn drop(&mut self) {
        // Release an audio thread waiting for video, then stop.
        self.gate.give_up_video(self.now());
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Ends a branch: EOS into rtpbin (which flushes its jitterbuffer), and
/// straight into the queue when rtpbin never made the track's pad.
fn end_branch(b: &mut Branch) {
    if b.ended {
        return;
    }
    b.ended = true;
    let _ = b.rtp.end_of_stream();
    let _ = b.rtcp.end_of_stream();
    if !b.linked.load(Ordering::SeqCst) {
        b.queue_sink.send_event(gst::event::Eos::new());
    }
}

fn appsrc(caps: &gst::Caps) -> Result<gst_app::AppSrc, PipelineError> {
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .max_bytes(APPSRC_MAX_BYTES)
        .block(false)
        .build();
    Ok(src)
}

/// Queues a buffer stamped `at`; false when the queue is full (dropped).
fn push(src: &gst_app::AppSrc, mut buffer: gst::Buffer, at: gst::ClockTime) -> bool {
    if src.current_level_bytes() >= APPSRC_MAX_BYTES {
        return false;
    }
    if let Some(b) = buffer.get_mut() {
        b.set_pts(at);
    }
    // Err only once the source is flushing or ended: nothing to count.
    let _ = src.push_buffer(buffer);
    true
}

/// What an operator reads about a failed file: the file and, for a write
/// error, what the system said (GStreamer's own wording is vague).
fn error_text(file: &str, error: &gst::glib::Error) -> String {
    match error.kind::<gst::ResourceError>() {
        Some(gst::ResourceError::NoSpaceLeft) => {
            format!("cannot write {file}: No space left on device (the disk is full)")
        }
        Some(gst::ResourceError::OpenWrite | gst::ResourceError::Write) => {
            format!("cannot write {file}: {error}")
        }
        _ => format!("{file}: {error}"),
    }
}
