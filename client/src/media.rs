//! The publisher's synthetic media: paced VP8-shaped frames and Opus-shaped
//! packets carrying payload tags, and keyframes on request; one stream per
//! track, or per simulcast layer (see [`crate::simulcast`]).

use crate::peer::{self, is_keyframe_request};
use crate::shared::Shared;
use crate::simulcast::{self, Layer};
use crate::tag::{self, FramePosition, MediaTag};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

/// Video frames per second the sender aims for (packets are grouped into frames).
const TARGET_FPS: u32 = 30;
/// A keyframe at least this often, as encoders do.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// How long to wait before polling an RTCP queue again while the track is not bound yet.
const UNBOUND_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Where published media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaSource {
    /// Tagged synthetic payloads paced by the client (not decodable).
    #[default]
    Synthetic,
    /// Real RTP received on these local UDP ports (on
    /// [`crate::ClientOptions::bind_ip`]), e.g. from a GStreamer
    /// `rtpvp8pay ! udpsink`, forwarded with the track's SSRC and payload
    /// type; the packets' sequence numbers and timestamps are kept. Keyframe
    /// requests are counted but cannot reach that encoder.
    RtpUdp {
        /// Where VP8 RTP arrives.
        video_port: u16,
        /// Where Opus RTP arrives.
        audio_port: u16,
    },
}

/// What [`crate::Client::publish`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Publish one Opus track.
    pub audio: bool,
    /// Publish one VP8 track.
    pub video: bool,
    /// Video packets per second (grouped into about 30 frames per second).
    pub video_packets_per_sec: u32,
    /// Audio packets per second (50 = 20 ms frames).
    pub audio_packets_per_sec: u32,
    /// Video RTP payload size (headers and tag included).
    pub video_payload_bytes: usize,
    /// Audio RTP payload size (TOC byte and tag included).
    pub audio_payload_bytes: usize,
    /// Synthetic payloads, or real RTP relayed from local UDP ports.
    pub source: MediaSource,
    /// Send the video as three simulcast layers, RIDs `q`, `h` and `f`
    /// (lowest first), as browsers do: each its own RTP stream carrying the
    /// mid and rtp-stream-id header extensions, at the rates of
    /// [`PublishOptions::layer_packets_per_sec`]. Synthetic media only.
    pub simulcast: bool,
}

impl PublishOptions {
    /// Packets per second of each simulcast layer, lowest first: `f` at
    /// `video_packets_per_sec`, `h` at a quarter of it, `q` at a sixteenth
    /// (at least 3 each, if the full rate is that high).
    pub fn layer_packets_per_sec(&self) -> [u32; 3] {
        simulcast::layer_rates(self.video_packets_per_sec)
    }
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            audio: true,
            video: true,
            video_packets_per_sec: 150,
            audio_packets_per_sec: 50,
            video_payload_bytes: 1100,
            audio_payload_bytes: 160,
            source: MediaSource::Synthetic,
            simulcast: false,
        }
    }
}

/// A published track and its pacing.
pub(crate) struct LocalMedia {
    pub kind: RtpCodecKind,
    pub track: Arc<TrackLocalStaticRTP>,
    /// The msid track id it is offered with.
    pub track_id: String,
    pub ssrc: u32,
    /// Simulcast layers, lowest first (empty for a track sent once).
    pub layers: Vec<Arc<Layer>>,
}

impl LocalMedia {
    /// A track whose msid stream id is `stream_id` (the server replaces it
    /// with the publisher's peer id anyway).
    pub fn new(kind: RtpCodecKind, stream_id: &str) -> Self {
        let ssrc = rand::random::<u32>();
        let codec = match kind {
            RtpCodecKind::Video => peer::vp8_codec(),
            _ => peer::opus_codec(),
        };
        let track_id = format!("{kind}-{ssrc:08x}");
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.clone(),
            format!("synthetic {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        Self {
            kind,
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            track_id,
            ssrc,
            layers: Vec::new(),
        }
    }

    /// A VP8 track sent as simulcast layers (see [`simulcast`]).
    pub fn simulcast(stream_id: &str) -> Self {
        let layers = simulcast::new_layers();
        let ssrc = layers.first().map_or(0, |l| l.ssrc);
        let kind = RtpCodecKind::Video;
        let track_id = format!("{kind}-{ssrc:08x}");
        let track = MediaStreamTrack::new(
            stream_id.to_owned(),
            track_id.clone(),
            "synthetic simulcast video".to_owned(),
            kind,
            simulcast::codings(&layers),
        );
        Self {
            kind,
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            track_id,
            ssrc,
            layers,
        }
    }
}

/// Pacing of one synthetic stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    pub packets_per_frame: u32,
    pub frame_interval: Duration,
    pub payload_bytes: usize,
    pub clock_rate: u32,
}

/// Packets in each frame of synthetic video at `packets_per_sec` (about 30
/// frames a second, at least one packet each): what one GSO send of a
/// forwarder can batch for one subscriber.
pub fn video_packets_per_frame(packets_per_sec: u32) -> u32 {
    packets_per_sec.max(1).div_ceil(TARGET_FPS).max(1)
}

impl Pacing {
    pub fn video(opts: &PublishOptions) -> Self {
        Self::video_at(opts.video_packets_per_sec, opts.video_payload_bytes)
    }

    /// Video at `packets_per_sec` (one simulcast layer's rate, or the whole track's).
    pub fn video_at(packets_per_sec: u32, payload_bytes: usize) -> Self {
        let pps = packets_per_sec.max(1);
        let packets_per_frame = video_packets_per_frame(pps);
        Self {
            packets_per_frame,
            frame_interval: Duration::from_secs_f64(f64::from(packets_per_frame) / f64::from(pps)),
            payload_bytes,
            clock_rate: 90_000,
        }
    }

    pub fn audio(opts: &PublishOptions) -> Self {
        let pps = opts.audio_packets_per_sec.max(1);
        Self {
            packets_per_frame: 1,
            frame_interval: Duration::from_secs_f64(1.0 / f64::from(pps)),
            payload_bytes: opts.audio_payload_bytes,
            clock_rate: 48_000,
        }
    }
}

/// One synthetic RTP stream of a published track: the whole track, or one
/// simulcast layer.
pub(crate) struct SyntheticStream {
    pub ssrc: u32,
    pub payload_type: u8,
    pub pacing: Pacing,
    /// Written into every payload's tag.
    pub stream_hash: u32,
    /// Poked when the server asks for a keyframe (video only).
    pub keyframe_wanted: Arc<Notify>,
    /// Header extensions every packet carries, by negotiated id (a
    /// simulcast layer's mid and rtp-stream-id; none otherwise).
    pub extensions: Vec<(u8, Bytes)>,
    /// While cleared nothing is sent; sending resumes with a keyframe.
    pub active: Option<Arc<AtomicBool>>,
    /// Width and height the keyframes announce.
    pub picture: (u16, u16),
}

impl SyntheticStream {
    /// The stream of a track sent once (no header extensions, always active).
    pub fn single(
        media: &LocalMedia,
        payload_type: u8,
        pacing: Pacing,
        stream_hash: u32,
        keyframe_wanted: Arc<Notify>,
    ) -> Self {
        Self {
            ssrc: media.ssrc,
            payload_type,
            pacing,
            stream_hash,
            keyframe_wanted,
            extensions: Vec::new(),
            active: None,
            picture: tag::VP8_PICTURE,
        }
    }
}

/// Sends `stream` on `media` until shutdown, once the publish connection is
/// connected.
pub(crate) async fn run_sender(
    shared: Arc<Shared>,
    media: Arc<LocalMedia>,
    stream: SyntheticStream,
) {
    if !shared.wait_publish_state(|s| s == "connected").await {
        return;
    }
    let video = media.kind == RtpCodecKind::Video;
    let pacing = stream.pacing;
    // Built once: each packet clones it (no allocation without extensions).
    let mut template = rtc::rtp::Header {
        version: 2,
        payload_type: stream.payload_type,
        ssrc: stream.ssrc,
        ..Default::default()
    };
    for (id, value) in &stream.extensions {
        if let Err(e) = template.set_extension(*id, value.clone()) {
            shared.client_error(format!("header extension {id} not usable: {e}"));
            return;
        }
    }
    let mut shutdown = shared.shutdown.subscribe();
    let mut ticker = tokio::time::interval(pacing.frame_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let start = Instant::now();
    let timestamp_base = rand::random::<u32>();
    let mut rtp_seq = rand::random::<u16>();
    let mut tag_seq: u32 = 0;
    let mut last_keyframe: Option<Instant> = None;
    let mut key_pending = false;
    let mut paused = false;
    let mut last_timestamp_ticks: Option<u64> = None;
    loop {
        let requested = tokio::select! {
            _ = ticker.tick() => false,
            _ = stream.keyframe_wanted.notified(), if video => true,
            _ = shutdown.changed() => return,
        };
        if let Some(active) = &stream.active {
            if !active.load(Ordering::Relaxed) {
                paused = true;
                continue;
            }
            if paused {
                // A resumed encoding starts with a keyframe.
                paused = false;
                key_pending = true;
            }
        }
        let now = Instant::now();
        let since_key = last_keyframe.map(|t| now.duration_since(t));
        if requested && since_key.is_some_and(|d| d < pacing.frame_interval) {
            // At most one extra keyframe per frame interval; a request is
            // still always answered, by the next regular frame.
            key_pending = true;
            continue;
        }
        let keyframe =
            video && (requested || key_pending || since_key.is_none_or(|d| d >= KEYFRAME_INTERVAL));
        if keyframe {
            last_keyframe = Some(now);
            key_pending = false;
        }
        let mut elapsed_ticks =
            (now.duration_since(start).as_secs_f64() * f64::from(pacing.clock_rate)) as u64;
        // A requested keyframe may follow a tick within one clock tick: frames
        // still need distinct timestamps.
        if let Some(last) = last_timestamp_ticks {
            elapsed_ticks = elapsed_ticks.max(last + 1);
        }
        last_timestamp_ticks = Some(elapsed_ticks);
        let timestamp = timestamp_base.wrapping_add(elapsed_ticks as u32);
        for i in 0..pacing.packets_per_frame {
            let media_tag = MediaTag {
                seq: tag_seq,
                sent_at_ns: tag::now_ns(),
                stream_hash: stream.stream_hash,
            };
            let payload = if video {
                let position = FramePosition {
                    first: i == 0,
                    keyframe,
                };
                tag::vp8_payload_sized(position, &media_tag, pacing.payload_bytes, stream.picture)
            } else {
                tag::opus_payload(&media_tag, pacing.payload_bytes)
            };
            let mut header = template.clone();
            header.marker = video && i + 1 == pacing.packets_per_frame;
            header.sequence_number = rtp_seq;
            header.timestamp = timestamp;
            let packet = rtc::rtp::Packet { header, payload };
            tag_seq = tag_seq.wrapping_add(1);
            rtp_seq = rtp_seq.wrapping_add(1);
            write_counted(&shared, &media, video, packet).await;
        }
        if keyframe {
            shared.counters.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes one packet to the published track and counts it (sent by kind,
/// or failed; the first failure is logged).
async fn write_counted(shared: &Shared, media: &LocalMedia, video: bool, packet: rtc::rtp::Packet) {
    let counters = &shared.counters;
    match media.track.write_rtp(packet).await {
        Ok(()) => {
            let counter = if video {
                &counters.video
            } else {
                &counters.audio
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            if counters.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "write_rtp failed");
            }
        }
    }
}

/// Relays RTP arriving on `socket` into `media` once the publish connection
/// is connected, with the track's SSRC and `payload_type`.
pub(crate) async fn run_udp_relay(
    shared: Arc<Shared>,
    media: Arc<LocalMedia>,
    payload_type: u8,
    socket: tokio::net::UdpSocket,
) {
    use rtc::shared::marshal::Unmarshal;
    if !shared.wait_publish_state(|s| s == "connected").await {
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    let video = media.kind == RtpCodecKind::Video;
    let mut buf = vec![0u8; 2048];
    // What queued up before the connection was up is stale: drop it.
    while socket.try_recv(&mut buf).is_ok() {}
    loop {
        let n = tokio::select! {
            r = socket.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &buf[..n]) else {
            continue;
        };
        packet.header.ssrc = media.ssrc;
        packet.header.payload_type = payload_type;
        // Header extensions of the sender's own negotiation mean nothing here.
        packet.header.extension = false;
        packet.header.extensions.clear();
        write_counted(&shared, &media, video, packet).await;
    }
}

/// Reads the RTCP the tap delivers for a published track and counts
/// keyframe requests; each one asks the video sender for a keyframe.
pub(crate) async fn run_rtcp_reader(
    shared: Arc<Shared>,
    media: Arc<LocalMedia>,
    keyframe_wanted: Arc<Notify>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let event = tokio::select! {
            event = media.track.poll() => event,
            _ = shutdown.changed() => return,
        };
        match event {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                let requests = packets
                    .iter()
                    .filter(|p| is_keyframe_request(p.as_ref()))
                    .count() as u64;
                if requests > 0 {
                    shared
                        .counters
                        .keyframe_requests
                        .fetch_add(requests, Ordering::Relaxed);
                    if media.layers.is_empty() {
                        keyframe_wanted.notify_one();
                    }
                    simulcast::notify_keyframe_requests(&media.layers, &packets);
                    shared.notify();
                }
            }
            Some(_) => {}
            // Not bound to the connection yet (or no longer): look again shortly.
            None => tokio::select! {
                _ = tokio::time::sleep(UNBOUND_POLL_INTERVAL) => {}
                _ = shutdown.changed() => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_video_pacing_is_five_packets_per_frame_at_30_fps() {
        let p = Pacing::video(&PublishOptions::default());
        assert_eq!(p.packets_per_frame, 5);
        assert_eq!(p.frame_interval, Duration::from_secs_f64(5.0 / 150.0));
    }

    #[test]
    fn low_rates_send_one_packet_per_frame() {
        let opts = PublishOptions {
            video_packets_per_sec: 10,
            ..PublishOptions::default()
        };
        let p = Pacing::video(&opts);
        assert_eq!(p.packets_per_frame, 1);
        assert_eq!(p.frame_interval, Duration::from_millis(100));
        let a = Pacing::audio(&PublishOptions::default());
        assert_eq!(a.frame_interval, Duration::from_millis(20));
    }
}
