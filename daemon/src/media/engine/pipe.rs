//! Tracks piped from one media worker to another, so that one room's
//! subscribers can be spread over several workers (mediasoup's
//! `pipeToRouter`, inside one process).
//!
//! A track is owned by the worker of its publisher's connection (its id
//! names that worker). A subscriber on another worker receives it from a
//! *mirror*: a [`Source`] there with the same id, fed by the owner with one
//! copy of each packet of the layers that worker's legs take, however many
//! legs that worker has. The mirror forwards, answers NACKs from its own
//! history and switches simulcast layers exactly as the owner does for its
//! own legs; what only the publisher's connection can do travels back:
//! keyframe requests, and which layers the publisher must go on sending.
//!
//! The cores exchange [`PipeMsg`]s through their outboxes (`pipe_out`),
//! which the driver hands to the other worker at the end of each turn, one
//! batch per worker. A pipe is a lease: the mirror renews it every 100 ms
//! with its `Wanted` (also while it waits for its first subscriber), and
//! the owner drops a pipe it has not heard of for [`PIPE_LEASE`]. A mirror
//! without subscribers for half that is dropped, and stops renewing. No
//! handshake can race: a room that subscribes again asks the owner for the
//! pipe first ([`MediaCore::open_pipe`], which renews or reopens it), then
//! the mirror's worker for the leg (`MediaCommand::Mirror` before
//! `MediaCommand::Subscribe`, on one channel).

use super::*;
use crate::media::simulcast::layer_bit;

/// How long a pipe lives without word from the mirror it feeds.
const PIPE_LEASE: Duration = Duration::from_secs(2);

/// What one worker tells another about a piped track.
#[derive(Debug)]
pub enum PipeMsg {
    /// Owner to mirror: a packet of layer `layer`.
    Rtp {
        track: TrackId,
        layer: u8,
        packet: rtc::rtp::Packet,
    },
    /// Owner to mirror: the publisher's sender report about a layer.
    SenderReport {
        track: TrackId,
        layer: u8,
        sr: SenderReport,
    },
    /// Owner to mirror, every 100 ms: the layers as the owner sees them.
    Status {
        track: TrackId,
        layers: Vec<LayerState>,
        muted: bool,
        priority: bool,
    },
    /// Owner to mirror: the track ended.
    Closed { track: TrackId },
    /// Mirror to owner: a keyframe of a layer, for `cause`.
    Keyframe {
        track: TrackId,
        layer: u8,
        cause: KeyframeCause,
    },
    /// Mirror to owner, every 100 ms: the layers its legs take packets of
    /// (`interest`) and need the publisher to go on sending (`wanted`),
    /// one bit each, and how many legs it feeds. Renews the pipe.
    Wanted {
        track: TrackId,
        interest: u32,
        wanted: u32,
        subscribers: u32,
    },
}

/// A layer as its owner measures it: what a mirror's allocation reads.
#[derive(Debug, Clone)]
pub struct LayerState {
    ssrc: Option<u32>,
    bitrate_bps: u64,
    peak_bps: u64,
    last_packet: Option<Instant>,
    sender_report: Option<(u64, u32)>,
    size: Option<(u32, u32)>,
    paused: Option<u64>,
    resumed_at: Option<Instant>,
}

impl LayerState {
    fn of(l: &Layer) -> LayerState {
        LayerState {
            ssrc: l.ssrc,
            bitrate_bps: l.bitrate_bps,
            peak_bps: l.peak_bps,
            last_packet: l.last_packet,
            sender_report: l.sender_report,
            size: l.size,
            paused: l.paused,
            resumed_at: l.resumed_at,
        }
    }

    fn apply(&self, l: &mut Layer) {
        l.ssrc = l.ssrc.or(self.ssrc);
        l.bitrate_bps = self.bitrate_bps;
        l.peak_bps = self.peak_bps;
        // The mirror sees only the layers it is piped; the owner sees all.
        l.last_packet = l.last_packet.max(self.last_packet);
        l.sender_report = self.sender_report.or(l.sender_report);
        l.size = self.size.or(l.size);
        l.paused = self.paused;
        l.resumed_at = l.resumed_at.max(self.resumed_at);
    }
}

/// What a worker needs to mirror a track: the owner's [`Source`] without
/// its connections.
#[derive(Debug)]
pub struct MirrorSpec {
    owner: usize,
    info: TrackInfo,
    codec: RTCRtpCodec,
    video_codec: VideoCodec,
    extensions: Vec<(String, u16)>,
    payload_type: u8,
    msid_track: String,
    layers: Vec<(Option<String>, LayerState)>,
    muted: bool,
    priority: bool,
}

/// The owner's record of one worker it pipes a track to.
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub worker: usize,
    /// Layers that worker's legs take packets of.
    pub interest: u32,
    /// Layers it needs the publisher to go on sending.
    pub wanted: u32,
    /// Legs it feeds.
    pub subscribers: u32,
    /// When it last renewed the pipe.
    pub seen: Instant,
}

impl MediaCore {
    /// Pipes `track`, which this worker owns, to worker `to` (or renews
    /// the pipe): what `to` needs to mirror it, or `None` when this worker
    /// does not own it.
    pub(super) fn open_pipe(
        &mut self,
        track: TrackId,
        to: usize,
        now: Instant,
    ) -> Option<Box<MirrorSpec>> {
        let source = self.sources.get_mut(&track)?;
        if to == self.worker || source.origin.is_some() {
            return None;
        }
        match source.pipes.iter_mut().find(|p| p.worker == to) {
            Some(p) => p.seen = now,
            None => {
                debug!(track = track.0, to, "track piped to another worker");
                source.pipes.push(Pipe {
                    worker: to,
                    // Everything until it says what its legs take.
                    interest: u32::MAX,
                    wanted: 0,
                    subscribers: 0,
                    seen: now,
                });
            }
        }
        Some(Box::new(MirrorSpec {
            muted: source.muted,
            priority: source.priority,
            owner: self.worker,
            info: source.info.clone(),
            codec: source.codec.clone(),
            video_codec: source.video_codec,
            extensions: source.extensions.clone(),
            payload_type: source.payload_type,
            msid_track: source.msid_track.clone(),
            layers: source
                .layers
                .iter()
                .map(|l| (l.rid.clone(), LayerState::of(l)))
                .collect(),
        }))
    }

    /// Opens a mirror of a track another worker owns (nothing when it is
    /// open already).
    pub(super) fn open_mirror(&mut self, spec: MirrorSpec, now: Instant) {
        let track = spec.info.id;
        if self.sources.contains_key(&track) || spec.owner == self.worker {
            return;
        }
        let kind = spec.info.kind;
        let layers = spec
            .layers
            .into_iter()
            .map(|(rid, state)| {
                let mut l = Layer::new(rid, state.ssrc, kind, now);
                state.apply(&mut l);
                l
            })
            .collect();
        debug!(track = track.0, owner = spec.owner, "track mirrored");
        self.sources.insert(
            track,
            Source {
                info: spec.info,
                codec: spec.codec,
                video_codec: spec.video_codec,
                extensions: spec.extensions,
                conn: 0,
                receiver: RTCRtpReceiverId::default(),
                layers,
                subscribers: Vec::new(),
                payload_type: spec.payload_type,
                tap: None,
                tap_layer: 0,
                msid_track: spec.msid_track,
                origin: Some(spec.owner),
                pipes: Vec::new(),
                unused_since: Some(now),
                // The owner meters it.
                speech: None,
                muted: spec.muted,
                idle: super::idle::Idle::new(now),
                announced: true,
                priority: spec.priority,
            },
        );
    }

    /// A batch of messages from worker `from`.
    pub(super) fn handle_pipe(&mut self, from: usize, msgs: Vec<PipeMsg>, now: Instant) {
        for msg in msgs {
            match msg {
                PipeMsg::Rtp {
                    track,
                    layer,
                    packet,
                } => {
                    self.stats.piped_in += 1;
                    let Some(source) = self.mirror(track) else {
                        continue;
                    };
                    let layer = usize::from(layer);
                    if let Some(l) = source.layers.get_mut(layer) {
                        l.ssrc.get_or_insert(packet.header.ssrc);
                        self.forward_layer(track, layer, packet, now);
                    }
                }
                PipeMsg::SenderReport { track, layer, sr } => {
                    let layer = usize::from(layer);
                    let Some(l) = self.mirror(track).and_then(|s| s.layers.get_mut(layer)) else {
                        continue;
                    };
                    l.sender_report = Some((sr.ntp_time, sr.rtp_time));
                    self.relay_sender_report(track, layer, &sr, now);
                }
                PipeMsg::Status {
                    track,
                    layers,
                    muted,
                    priority,
                } => {
                    if let Some(source) = self.mirror(track) {
                        for (l, state) in source.layers.iter_mut().zip(&layers) {
                            state.apply(l);
                        }
                        source.priority = priority;
                        self.mute_source(track, muted, now);
                    }
                }
                PipeMsg::Closed { track } => {
                    if self.mirror(track).is_some() {
                        self.sources.remove(&track);
                        debug!(track = track.0, "mirrored track ended");
                    }
                }
                PipeMsg::Keyframe {
                    track,
                    layer,
                    cause,
                } => {
                    if self.sources.get(&track).is_some_and(|s| s.origin.is_none()) {
                        self.request_layer_keyframe(track, usize::from(layer), now, cause);
                    }
                }
                PipeMsg::Wanted {
                    track,
                    interest,
                    wanted,
                    subscribers,
                } => {
                    let Some(source) = self.sources.get_mut(&track) else {
                        continue;
                    };
                    if source.origin.is_some() {
                        continue;
                    }
                    let pipe = Pipe {
                        worker: from,
                        interest,
                        wanted,
                        subscribers,
                        seen: now,
                    };
                    match source.pipes.iter_mut().find(|p| p.worker == from) {
                        Some(p) => *p = pipe,
                        // Lapsed, and renewed in time after all.
                        None => source.pipes.push(pipe),
                    }
                }
            }
        }
    }

    /// The mirror of `track` here, if this worker has one.
    fn mirror(&mut self, track: TrackId) -> Option<&mut Source> {
        self.sources.get_mut(&track).filter(|s| s.origin.is_some())
    }

    /// The 100 ms round: owners drop lapsed pipes and tell the others how
    /// the layers are; mirrors renew their pipes, or end when unused.
    pub(super) fn pipe_housekeeping(&mut self, now: Instant) {
        let mut unused = Vec::new();
        for (&track, s) in self.sources.iter_mut() {
            match s.origin {
                None => {
                    s.pipes
                        .retain(|p| now.saturating_duration_since(p.seen) < PIPE_LEASE);
                    if s.pipes.is_empty() {
                        continue;
                    }
                    let layers: Vec<LayerState> = s.layers.iter().map(LayerState::of).collect();
                    for p in &s.pipes {
                        self.pipe_out.push((
                            p.worker,
                            PipeMsg::Status {
                                track,
                                layers: layers.clone(),
                                muted: s.muted,
                                priority: s.priority,
                            },
                        ));
                    }
                }
                Some(owner) => {
                    if s.subscribers.is_empty() {
                        let since = *s.unused_since.get_or_insert(now);
                        if now.saturating_duration_since(since) >= PIPE_LEASE / 2 {
                            unused.push(track);
                            continue;
                        }
                    } else {
                        s.unused_since = None;
                    }
                    // What the allocation round just wanted (`publisher_layers`).
                    let wanted = s
                        .layers
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| now.saturating_duration_since(l.wanted_at) < HOUSEKEEPING)
                        .fold(0, |mask, (i, _)| mask | layer_bit(i));
                    let interest = s.subscribers.iter().fold(0, |mask, sub| mask | sub.layers);
                    self.pipe_out.push((
                        owner,
                        PipeMsg::Wanted {
                            track,
                            interest,
                            wanted,
                            subscribers: s.subscribers.len() as u32,
                        },
                    ));
                }
            }
        }
        for track in unused {
            self.sources.remove(&track);
            debug!(track = track.0, "unused mirror closed");
        }
    }

    /// Layers other workers' legs need the publisher to go on sending.
    pub(super) fn piped_wants(&self) -> Vec<(TrackId, usize)> {
        let mut wants = Vec::new();
        for (&track, s) in &self.sources {
            let mask = s.pipes.iter().fold(0, |mask, p| mask | p.wanted);
            wants.extend(
                (0..s.layers.len())
                    .filter(|&i| mask & layer_bit(i) != 0)
                    .map(|i| (track, i)),
            );
        }
        wants
    }

    /// Tells the workers `track` is piped to that it ended.
    pub(super) fn close_pipes(&mut self, source: &Source) {
        for p in &source.pipes {
            self.pipe_out.push((
                p.worker,
                PipeMsg::Closed {
                    track: source.info.id,
                },
            ));
        }
    }
}

/// Copies a packet of `layer` to the pipes whose legs take that layer.
pub(super) fn pipe_packet(
    source: &Source,
    track: TrackId,
    layer: usize,
    packet: &rtc::rtp::Packet,
    out: &mut Vec<(usize, PipeMsg)>,
) {
    let bit = layer_bit(layer);
    for p in &source.pipes {
        if source.simulcast() && p.interest & bit == 0 {
            continue;
        }
        out.push((
            p.worker,
            PipeMsg::Rtp {
                track,
                layer: layer as u8,
                packet: packet.clone(),
            },
        ));
    }
}

/// Copies a publisher's sender report about `layer` to the pipes.
pub(super) fn pipe_sender_report(
    source: &Source,
    layer: usize,
    sr: &SenderReport,
    out: &mut Vec<(usize, PipeMsg)>,
) {
    for p in &source.pipes {
        out.push((
            p.worker,
            PipeMsg::SenderReport {
                track: source.info.id,
                layer: layer as u8,
                sr: sr.clone(),
            },
        ));
    }
}
