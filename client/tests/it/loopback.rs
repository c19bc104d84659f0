//! The whole client path over loopback: signaling, trickle ICE both ways,
//! publish, subscribe, on_track, tag accounting, PLI and renegotiation.

use crate::fake_server::{Command, FakeServer, Seen, PEER_ID};
use sfu_client::{ws_url, Client, ClientError, PublishOptions};
use sfu_proto::signaling::{ClientMessage, PcKind, Role};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(5);

/// Polls what the fake server saw until `pred` holds (bounded).
async fn wait_seen(server: &FakeServer, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let seen = server.seen.lock().expect("lock").clone();
        if pred(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "fake server never saw {what}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Positions of `pc`'s description and candidates in what the server saw.
fn signaling_order(seen: &[Seen], pc: PcKind) -> (Option<usize>, Vec<usize>, Vec<usize>) {
    let mut description = None;
    let (mut candidates, mut ends) = (Vec::new(), Vec::new());
    for (i, s) in seen.iter().enumerate() {
        match s {
            Seen::Message(
                ClientMessage::Offer { pc: p, .. } | ClientMessage::Answer { pc: p, .. },
            ) if *p == pc && description.is_none() => description = Some(i),
            Seen::Message(ClientMessage::Candidate { pc: p, candidate }) if *p == pc => {
                if candidate.is_some() {
                    candidates.push(i)
                } else {
                    ends.push(i)
                }
            }
            _ => {}
        }
    }
    (description, candidates, ends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_round_trips_through_a_reflecting_server() -> Result<(), ClientError> {
    let server = FakeServer::start().await;
    let client = Client::connect(&ws_url(server.addr)).await?;
    let joined = client.join("room", "alice", Role::Speaker).await?;
    assert_eq!(joined.peer_id, PEER_ID);

    client.publish(PublishOptions::default()).await?;
    let snap = client
        .wait_for(DEADLINE, "reflected video and audio", |s| {
            s.packets_from(PEER_ID, "video") >= 150 && s.packets_from(PEER_ID, "audio") >= 50
        })
        .await?;
    println!("{}", snap.summary());

    assert_eq!(snap.publish_state, "connected");
    assert_eq!(snap.subscribe_state, "connected");
    assert_eq!(snap.subscribe_offers, 1);
    assert_eq!(snap.offered_publishers(), vec![PEER_ID]);
    assert!(snap.keyframe_requests >= 1, "the server's PLI was not seen");
    assert!(snap.sent_keyframes >= 2, "no keyframe answered the PLI");
    for kind in ["video", "audio"] {
        let t = snap.track_from(PEER_ID, kind).expect("track");
        assert_eq!(t.tagged, t.packets, "{kind}: untagged packets");
        assert_eq!((t.lost, t.duplicates, t.misrouted), (0, 0, 0), "{kind}");
        assert!(
            t.latency.samples > 0 && t.latency.max_us < 1_000_000,
            "{kind}: {:?}",
            t.latency
        );
    }
    let video = snap.track_from(PEER_ID, "video").expect("video");
    assert_eq!(video.mime_type.to_ascii_lowercase(), "video/vp8");
    assert!(
        video.keyframes >= 1,
        "the keyframe answering the PLI did not arrive"
    );
    assert!(video.frames * 5 <= video.packets + 5, "5 packets per frame");

    // Renegotiation: the audio track leaves the subscribe offer and ends.
    server.commands.send(Command::DropAudio).ok();
    let snap = client
        .wait_for(DEADLINE, "the audio track to end", |s| {
            s.subscribe_offers == 2 && s.track_from(PEER_ID, "audio").is_none()
        })
        .await?;
    assert_eq!(snap.offered_tracks.len(), 1);
    let video_packets = snap.packets_from(PEER_ID, "video");
    client
        .wait_for(DEADLINE, "video to keep flowing", |s| {
            s.packets_from(PEER_ID, "video") > video_packets + 30
        })
        .await?;
    let snap = client.snapshot();
    assert!(snap.client_errors.is_empty(), "{}", snap.summary());

    // Each connection's candidates follow its description, and one end marker closes them.
    let seen = server.seen.lock().expect("lock").clone();
    for pc in [PcKind::Publish, PcKind::Subscribe] {
        let (description, candidates, ends) = signaling_order(&seen, pc);
        println!(
            "{pc:?}: description at {description:?}, {} trickled, end at {ends:?}",
            candidates.len()
        );
        let description = description.expect("description sent");
        assert_eq!(ends.len(), 1, "{pc:?}: {seen:?}");
        assert!(
            candidates.iter().all(|&c| description < c && c < ends[0]),
            "{pc:?}: {seen:?}"
        );
    }

    // `leave` ends the session; the server closing the socket is observed.
    client.leave().await?;
    client
        .wait_for(DEADLINE, "the server to close the socket", |s| {
            s.closed_by_server
        })
        .await?;
    assert!(
        client.leave().await.is_err(),
        "sending on a closed socket must fail"
    );
    client.close().await;
    Ok(())
}

#[tokio::test]
async fn wait_for_times_out_with_the_state_it_saw() -> Result<(), ClientError> {
    let server = FakeServer::start().await;
    let client = Client::connect(&ws_url(server.addr)).await?;
    client.join("room", "bob", Role::Listener).await?;
    let err = client
        .wait_for(
            Duration::from_millis(100),
            "something that never happens",
            |_| false,
        )
        .await
        .expect_err("must time out");
    let text = err.to_string();
    assert!(text.contains("something that never happens"), "{text}");
    assert!(text.contains("joined(peer-1)"), "{text}");

    client.close_abruptly().await;
    let seen = wait_seen(&server, "the socket end", |s| s.contains(&Seen::Eof)).await;
    assert!(
        !seen.contains(&Seen::CloseFrame),
        "an abrupt close sent a close frame"
    );
    Ok(())
}

#[tokio::test]
async fn close_sends_a_close_frame() -> Result<(), ClientError> {
    let server = FakeServer::start().await;
    let client = Client::connect(&ws_url(server.addr)).await?;
    client.join("room", "carol", Role::Speaker).await?;
    client.close().await;
    wait_seen(&server, "a close frame", |s| s.contains(&Seen::CloseFrame)).await;
    Ok(())
}

#[tokio::test]
async fn publish_before_join_is_refused_locally() -> Result<(), ClientError> {
    let server = FakeServer::start().await;
    let client = Client::connect(&ws_url(server.addr)).await?;
    let err = client
        .publish(PublishOptions::default())
        .await
        .expect_err("not joined");
    assert!(matches!(err, ClientError::State(_)), "{err}");
    Ok(())
}
