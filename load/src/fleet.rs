//! The generator's participants: many `sfu-client`s in one process (or,
//! for those that only receive, the cheaper [`LiteReceiver`]s), joined with
//! bounded concurrency, and the totals of what they sent and received.

use crate::lite::{LiteOptions, LiteReceiver};
use crate::scenario::Seat;
use crate::LoadError;
use sfu_client::{Client, ClientOptions, Histogram, PublishOptions, RemoteTrack, Snapshot};
use sfu_proto::signaling::{ClientMessage, Role};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// One joined participant.
struct Participant {
    member: Member,
    /// When its `join` was sent, in nanoseconds since the UNIX epoch.
    joined_ns: u64,
    seat: Seat,
}

/// What drives a participant.
enum Member {
    /// The full client: publishes, or receives through `webrtc`.
    Full(Client),
    /// A receiver on `rtc`'s sans-IO core.
    Lite(LiteReceiver),
}

/// Every participant of a run, sharing one latency histogram.
pub struct Fleet {
    participants: Vec<Participant>,
    histogram: Arc<Histogram>,
    ws_url: String,
    room_prefix: String,
    bind_ip: IpAddr,
    publish: PublishOptions,
    join_timeout: Duration,
    /// Participants ever started (names them uniquely).
    started: usize,
    /// Seats that only receive join as [`LiteReceiver`]s.
    lite: bool,
}

/// Cumulative counters over the whole fleet.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// RTP packets handed to publish connections.
    pub sent_packets: u64,
    /// RTP payload bytes of those (from the configured payload sizes).
    pub sent_bytes: u64,
    /// RTP packets received on subscribe-side tracks.
    pub received_packets: u64,
    /// RTP payload bytes received.
    pub received_bytes: u64,
    /// Tag sequence numbers that never arrived (between the first and last seen).
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Packets that arrived after a later one.
    pub out_of_order: u64,
    /// Packets on a track of another publisher or kind.
    pub misrouted: u64,
    /// Subscribe-side tracks that received anything.
    pub tracks: usize,
    /// Publish `write_rtp` failures.
    pub send_errors: u64,
    /// Per receiving participant that got media: milliseconds from `join` to
    /// its first packet.
    pub join_to_first_media_ms: Vec<f64>,
    /// Receiving participants that got no media yet.
    pub receivers_without_media: usize,
}

impl Totals {
    /// What happened between `earlier` and `self` (first-media times are kept
    /// as they are: they belong to the participants, not to a window).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            sent_packets: self.sent_packets.saturating_sub(earlier.sent_packets),
            sent_bytes: self.sent_bytes.saturating_sub(earlier.sent_bytes),
            received_packets: self
                .received_packets
                .saturating_sub(earlier.received_packets),
            received_bytes: self.received_bytes.saturating_sub(earlier.received_bytes),
            lost: self.lost.saturating_sub(earlier.lost),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            out_of_order: self.out_of_order.saturating_sub(earlier.out_of_order),
            misrouted: self.misrouted.saturating_sub(earlier.misrouted),
            tracks: self.tracks,
            send_errors: self.send_errors.saturating_sub(earlier.send_errors),
            join_to_first_media_ms: self.join_to_first_media_ms.clone(),
            receivers_without_media: self.receivers_without_media,
        }
    }
}

impl Fleet {
    /// An empty fleet that will join rooms `{room_prefix}-{n}` at `ws_url`.
    pub fn new(
        ws_url: String,
        room_prefix: String,
        bind_ip: IpAddr,
        publish: PublishOptions,
        join_timeout: Duration,
    ) -> Fleet {
        Fleet {
            participants: Vec::new(),
            histogram: Arc::new(Histogram::default()),
            ws_url,
            room_prefix,
            bind_ip,
            publish,
            join_timeout,
            started: 0,
            lite: false,
        }
    }

    /// Makes seats that only receive join as [`LiteReceiver`]s (from the
    /// next `join` on).
    pub fn with_lite_receivers(mut self, lite: bool) -> Fleet {
        self.lite = lite;
        self
    }

    /// The latency histogram every receiver records into.
    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    /// Participants joined so far.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody joined yet.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Joins `seats` (in order, at most `concurrency` joining at once;
    /// publishers finish before receivers start, so receivers of a webinar get
    /// one subscribe offer each). Receivers join a call in progress: each
    /// new publisher's media is flowing first, so their join-to-first-media
    /// time is theirs, not the publisher's own connection setup.
    pub async fn join(&mut self, seats: &[Seat], concurrency: usize) -> Result<(), LoadError> {
        let (publishers, receivers): (Vec<Seat>, Vec<Seat>) =
            seats.iter().copied().partition(|s| s.publishes);
        for group in [publishers, receivers] {
            let mut set = JoinSet::new();
            let mut joined = Vec::new();
            for seat in group {
                let publishers_in_room = self
                    .participants
                    .iter()
                    .filter(|p| p.seat.publishes && p.seat.room == seat.room)
                    .count();
                if set.len() >= concurrency.max(1) {
                    if let Some(done) = set.join_next().await {
                        joined.push(flatten(done)?);
                    }
                }
                let room = format!("{}-{}", self.room_prefix, seat.room);
                let name = format!("load-{}", self.started);
                if self.lite && !seat.publishes {
                    set.spawn(join_lite(
                        LiteOptions {
                            ws_url: self.ws_url.clone(),
                            room,
                            name,
                            bind_ip: self.bind_ip,
                            max_layer: seat.max_layer,
                            timeout: self.join_timeout,
                        },
                        seat,
                        Arc::clone(&self.histogram),
                    ));
                } else {
                    set.spawn(join_one(
                        self.ws_url.clone(),
                        room,
                        name,
                        seat,
                        publishers_in_room,
                        ClientOptions {
                            bind_ip: self.bind_ip,
                            timeout: self.join_timeout,
                            latency_histogram: Some(Arc::clone(&self.histogram)),
                            ..ClientOptions::default()
                        },
                        self.publish.clone(),
                    ));
                }
                self.started += 1;
            }
            while let Some(done) = set.join_next().await {
                joined.push(flatten(done)?);
            }
            for p in joined.iter().filter(|p| p.seat.publishes) {
                if let Member::Full(client) = &p.member {
                    media_flowing(client, self.join_timeout).await?;
                }
            }
            self.participants.extend(joined);
        }
        Ok(())
    }

    /// Current totals over every participant.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let video_bytes = self.publish.video_payload_bytes as u64;
        let audio_bytes = self.publish.audio_payload_bytes as u64;
        for p in &self.participants {
            let tracks: Vec<RemoteTrack> = match &p.member {
                Member::Full(client) => {
                    let c = client.media_counters();
                    t.sent_packets += c.sent_video_packets + c.sent_audio_packets;
                    t.sent_bytes +=
                        c.sent_video_packets * video_bytes + c.sent_audio_packets * audio_bytes;
                    t.send_errors += c.send_errors;
                    c.tracks
                }
                Member::Lite(receiver) => receiver.tracks(),
            };
            let mut first_ns: Option<u64> = None;
            for track in tracks.iter().filter(|t| t.packets > 0) {
                t.tracks += 1;
                t.received_packets += track.packets;
                t.received_bytes += track.bytes;
                t.lost += track.lost;
                t.duplicates += track.duplicates;
                t.out_of_order += track.out_of_order;
                t.misrouted += track.misrouted;
                first_ns = Some(
                    first_ns.map_or(track.first_packet_ns, |f: u64| f.min(track.first_packet_ns)),
                );
            }
            if p.seat.receives {
                match first_ns {
                    Some(ns) => t
                        .join_to_first_media_ms
                        .push(ns.saturating_sub(p.joined_ns) as f64 / 1e6),
                    None => t.receivers_without_media += 1,
                }
            }
        }
        t
    }

    /// Closes every participant (leave, then close), a few at a time.
    pub async fn close(self) {
        let mut set = JoinSet::new();
        for p in self.participants {
            if set.len() >= 32 {
                let _ = set.join_next().await;
            }
            set.spawn(async move {
                match p.member {
                    Member::Full(client) => {
                        let _ = client.leave().await;
                        client.close().await;
                    }
                    Member::Lite(receiver) => receiver.close().await,
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

fn flatten(
    r: Result<Result<Participant, LoadError>, tokio::task::JoinError>,
) -> Result<Participant, LoadError> {
    r.map_err(|e| LoadError::Join(format!("a joining task failed: {e}")))?
}

async fn join_one(
    ws_url: String,
    room: String,
    name: String,
    seat: Seat,
    publishers_in_room: usize,
    options: ClientOptions,
    publish: PublishOptions,
) -> Result<Participant, LoadError> {
    let describe = |e: sfu_client::ClientError| {
        LoadError::Join(format!("{name} in {room}: {}", error_chain(&e)))
    };
    let timeout = options.timeout;
    let client = Client::connect_with(&ws_url, options)
        .await
        .map_err(describe)?;
    let role = if seat.publishes {
        Role::Speaker
    } else {
        Role::Listener
    };
    let joined_ns = sfu_client::tag::now_ns();
    client.join(&room, &name, role).await.map_err(describe)?;
    if seat.publishes {
        client.publish(publish).await.map_err(describe)?;
    }
    if let Some(layer) = seat.max_layer {
        ask_for_layer(&client, layer, publishers_in_room, timeout)
            .await
            .map_err(describe)?;
    }
    Ok(Participant {
        member: Member::Full(client),
        joined_ns,
        seat,
    })
}

async fn join_lite(
    options: LiteOptions,
    seat: Seat,
    histogram: Arc<Histogram>,
) -> Result<Participant, LoadError> {
    let receiver = LiteReceiver::join(options, Some(histogram)).await?;
    Ok(Participant {
        joined_ns: receiver.join_sent_ns(),
        member: Member::Lite(receiver),
        seat,
    })
}

/// Waits until `publisher`'s connection is up and it has sent a few frames.
async fn media_flowing(publisher: &Client, timeout: Duration) -> Result<(), LoadError> {
    publisher
        .wait_for(timeout, "the publisher's media flowing", |s| {
            s.publish_state == "connected" && s.sent_packets >= 20
        })
        .await
        .map(|_| ())
        .map_err(|e| LoadError::Join(format!("a publisher: {}", error_chain(&e))))
}

/// Asks the SFU for simulcast layer `layer` (at most) of every video track,
/// once the subscribe offer names the video of all `publishers`.
async fn ask_for_layer(
    client: &Client,
    layer: u8,
    publishers: usize,
    timeout: Duration,
) -> Result<(), sfu_client::ClientError> {
    let videos = |s: &Snapshot| {
        s.offered_tracks
            .iter()
            .filter(|t| t.kind == "video")
            .count()
    };
    let offered = client
        .wait_for(
            timeout,
            "the publishers' video in the subscribe offer",
            |s| videos(s) >= publishers.max(1),
        )
        .await?;
    for track in offered.offered_tracks.iter().filter(|t| t.kind == "video") {
        client
            .send(&ClientMessage::TrackSettings {
                track: track.track_id.clone(),
                paused: false,
                max_width: None,
                max_height: None,
                max_layer: Some(layer),
            })
            .await?;
    }
    Ok(())
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
