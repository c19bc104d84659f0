//! Media on several workers: rooms spread over them, each worker on its
//! own UDP port, media flowing in every room, and each worker's share
//! visible in `/metrics` and `sfuctl status`.

use sfu_client::Snapshot;

use crate::control::ctl;
use crate::harness::{speaker, test_config, TestServer, MEDIA_DEADLINE};
use crate::metrics::scrape;

fn receives_from(s: &Snapshot, from: &str) -> bool {
    s.packets_from(from, "video") >= 50 && s.packets_from(from, "audio") >= 15
}

/// The port of the first candidate in `sdp`.
fn candidate_port(sdp: &str) -> Option<u16> {
    let line = sdp.lines().find(|l| l.starts_with("a=candidate:"))?;
    line.split_whitespace().nth(5)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_workers_each_on_its_own_port() {
    let mut config = test_config();
    config.rtc.workers = Some(2);
    let server = TestServer::start_with(config).await;
    assert_eq!(server.media.workers(), 2);
    let addrs = server.media.local_addrs();
    assert_eq!(addrs.len(), 2, "one address per worker: {addrs:?}");
    assert_ne!(addrs[0].port(), addrs[1].port());

    // Two rooms of two: one on each worker.
    let (a1, a1_id) = speaker(&server, "first", "ann").await;
    let (b1, b1_id) = speaker(&server, "first", "bob").await;
    let (a2, a2_id) = speaker(&server, "second", "cid").await;
    let (b2, b2_id) = speaker(&server, "second", "dee").await;
    let first = server.rooms.media_of("first").expect("first open").worker();
    let second = server
        .rooms
        .media_of("second")
        .expect("second open")
        .worker();
    assert_ne!(first, second, "both rooms on worker {first}");
    for (me, other) in [(&a1, &b1_id), (&b1, &a1_id), (&a2, &b2_id), (&b2, &a2_id)] {
        let s = me
            .wait_for(MEDIA_DEADLINE, "media from the other", |s| {
                receives_from(s, other)
            })
            .await
            .expect("media flows");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }
    // Each room's answers name its worker's port.
    for (client, worker) in [(&a1, first), (&a2, second)] {
        let answer = client
            .snapshot()
            .messages
            .iter()
            .find_map(|m| match m {
                sfu_proto::signaling::ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
                _ => None,
            })
            .expect("a publish answer");
        assert_eq!(candidate_port(&answer), Some(addrs[worker].port()));
    }

    // Each worker's share.
    let m = scrape(&server).await;
    for w in ["0", "1"] {
        assert_eq!(
            m.get(&format!("sfud_media_worker_rooms{{worker=\"{w}\"}}")),
            1.0
        );
        assert_eq!(
            m.get(&format!("sfud_media_worker_peers{{worker=\"{w}\"}}")),
            2.0
        );
        assert_eq!(
            m.get(&format!("sfud_media_worker_connections{{worker=\"{w}\"}}")),
            4.0
        );
        assert!(
            m.get(&format!(
                "sfud_media_worker_rtp_forwarded_total{{worker=\"{w}\"}}"
            )) > 0.0
        );
    }
    let status = ctl(&server, &["status"]).await.ok();
    let workers = status["workers"].as_array().expect("workers in status");
    assert_eq!(workers.len(), 2);
    assert!(workers
        .iter()
        .all(|w| w["rooms"] == 1 && w["connections"] == 4));
    assert_eq!(status["connections"], 8, "the totals sum the workers");
    for c in [a1, b1, a2, b2] {
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_room_spreads_its_participants_and_pipes_each_track_once_per_worker() {
    let mut config = test_config();
    config.rtc.workers = Some(2);
    // Every participant after the first goes to the least-loaded worker.
    config.rtc.room_spread_peers = 1;
    let server = TestServer::start_with(config).await;
    let (ann, ann_id) = speaker(&server, "big", "ann").await;
    let (bob, bob_id) = speaker(&server, "big", "bob").await;
    let mut listeners = Vec::new();
    for name in ["cid", "dee"] {
        let client = sfu_client::Client::connect(&server.ws_url())
            .await
            .expect("connects");
        client
            .join("big", name, sfu_proto::signaling::Role::Listener)
            .await
            .expect("joins");
        listeners.push(client);
    }
    // Everyone receives both speakers (the speakers each other), whichever
    // worker holds them.
    for (me, from) in [(&ann, vec![&bob_id]), (&bob, vec![&ann_id])]
        .into_iter()
        .chain(listeners.iter().map(|l| (l, vec![&ann_id, &bob_id])))
    {
        for other in from {
            let s = me
                .wait_for(MEDIA_DEADLINE, "media from a speaker", |s| {
                    receives_from(s, other)
                })
                .await
                .expect("media flows across workers");
            assert!(s.errors.is_empty(), "{:?}", s.errors);
        }
    }
    // Two participants on each worker, each speaker's tracks piped to the
    // other worker, and each track reported with its three subscribers.
    let show = ctl(&server, &["rooms", "show", "big"]).await.ok();
    let members = show["members"].as_array().expect("members");
    let on = |w: u64| members.iter().filter(|m| m["worker"] == w).count();
    assert_eq!((on(0), on(1)), (2, 2), "{show:#}");
    let worker_of = |id: &str| {
        members
            .iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["worker"].as_u64())
            .expect("a worker")
    };
    assert_ne!(worker_of(&ann_id), worker_of(&bob_id));
    for m in members.iter().filter(|m| m["role"] == "speaker") {
        for t in m["tracks"].as_array().expect("tracks") {
            assert_eq!(t["subscribers"], 3, "{t}");
        }
    }
    let m = scrape(&server).await;
    for w in ["0", "1"] {
        assert_eq!(
            m.get(&format!("sfud_media_worker_peers{{worker=\"{w}\"}}")),
            2.0
        );
        assert!(
            m.get(&format!(
                "sfud_media_worker_rtp_piped_total{{worker=\"{w}\"}}"
            )) > 0.0,
            "worker {w} received nothing piped"
        );
    }
    assert_eq!(m.get("sfud_dropped_packets_total{cause=\"pipe\"}"), 0.0);
    // A speaker that leaves takes its mirror on the other worker with it;
    // the other speaker still reaches everyone.
    ann.close().await;
    let before = listeners[0].snapshot().packets_from(&bob_id, "video");
    listeners[0]
        .wait_for(MEDIA_DEADLINE, "more media from bob", |s| {
            s.packets_from(&bob_id, "video") >= before + 50
        })
        .await
        .expect("media flows on");
    for c in listeners.into_iter().chain([bob]) {
        c.close().await;
    }
    server.stop().await;
}
