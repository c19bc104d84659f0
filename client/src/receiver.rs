//! Reading subscribe-side tracks: one task per track accounts every packet.

use crate::shared::{lock, Shared};
use crate::snapshot::RemoteTrack;
use crate::tag;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

/// How often packet arrivals wake waiters (per track); state changes such as
/// a track opening or ending wake them at once.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(20);

/// Starts accounting a track that `on_track` reported.
pub(crate) fn spawn(shared: &Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let shared_for_task = Arc::clone(shared);
    let task = tokio::spawn(async move {
        let shared = shared_for_task;
        let info = RemoteTrack {
            stream_id: track.stream_id().await,
            track_id: track.track_id().await,
            kind: track.kind().await.to_string(),
            ..RemoteTrack::default()
        };
        tracing::debug!(stream = %info.stream_id, track = %info.track_id, kind = %info.kind, "remote track");
        let state = shared.add_remote_track(info, Arc::clone(&track));
        let mut shutdown = shared.shutdown.subscribe();
        let mut last_notify = Instant::now();
        loop {
            let event = tokio::select! {
                event = track.poll() => event,
                _ = shutdown.changed() => break,
            };
            match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    let now_ns = tag::now_ns();
                    lock(&state).account.record(&packet, now_ns);
                    if last_notify.elapsed() >= NOTIFY_INTERVAL {
                        last_notify = Instant::now();
                        shared.notify();
                    }
                }
                Some(TrackRemoteEvent::OnOpen(init)) => {
                    let codec = track.codec(init.ssrc).await;
                    let mut t = lock(&state);
                    t.account.info.ssrc = init.ssrc;
                    if let Some(codec) = codec {
                        t.account.info.mime_type = codec.mime_type;
                    }
                    drop(t);
                    shared.notify();
                }
                Some(TrackRemoteEvent::OnRtcpPacket(packets)) => {
                    let mut t = lock(&state);
                    let ssrc = t.account.info.ssrc;
                    for sr in packets.iter().filter_map(|p| {
                        p.as_any()
                            .downcast_ref::<rtc::rtcp::sender_report::SenderReport>()
                    }) {
                        if sr.ssrc == ssrc {
                            t.account.record_sender_report(sr);
                        }
                    }
                }
                Some(TrackRemoteEvent::OnEnded) | None => {
                    lock(&state).account.info.ended = true;
                    shared.notify();
                    break;
                }
                Some(_) => {}
            }
        }
    });
    shared.track_task(task);
}
