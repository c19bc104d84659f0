//! Media through the real daemon: WebRTC clients (the `webrtc` crate)
//! publish synthetic VP8 + Opus and receive each other.

use std::time::Duration;

use sfu_client::{Client, PublishOptions, Snapshot};
use sfu_proto::signaling::{ClientMessage, Role, ServerMessage};

use crate::harness::{speaker, TestServer, MEDIA_DEADLINE};

/// Enough packets of both kinds from `from`, on tracks whose msid is `from`.
fn receives_from(s: &Snapshot, from: &str, packets: u64) -> bool {
    s.packets_from(from, "video") >= packets && s.packets_from(from, "audio") >= packets / 3
}

fn assert_clean(s: &Snapshot, who: &str) {
    assert!(
        s.errors.is_empty(),
        "{who} got server errors: {:?}",
        s.errors
    );
    assert!(
        s.client_errors.is_empty(),
        "{who} had client errors: {:?}",
        s.client_errors
    );
    for t in &s.remote_tracks {
        assert_eq!(
            t.misrouted, 0,
            "{who}: packets of another publisher on {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_speakers_receive_each_other_and_a_late_joiner_gets_everything() {
    let server = TestServer::start().await;
    let (a, a_id) = speaker(&server, "trio", "alice").await;
    let (b, b_id) = speaker(&server, "trio", "bob").await;
    let (c, c_id) = speaker(&server, "trio", "carol").await;
    let all = [(&a, &a_id), (&b, &b_id), (&c, &c_id)];
    for (me, my_id) in all {
        let others: Vec<&String> = all
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| *id != my_id)
            .collect();
        let s = me
            .wait_for(MEDIA_DEADLINE, "media from both others", |s| {
                others.iter().all(|o| receives_from(s, o, 100))
            })
            .await
            .expect("media flows");
        assert_clean(&s, my_id);
        assert_eq!(
            s.tracks_from(my_id).count(),
            0,
            "{my_id} never receives its own tracks"
        );
        for o in &others {
            for kind in ["audio", "video"] {
                let t = s.track_from(o, kind).expect("track present");
                let codec = if kind == "video" {
                    "video/vp8"
                } else {
                    "audio/opus"
                };
                assert_eq!(t.mime_type.to_lowercase(), codec);
            }
        }
    }
    // Clients that never trickle find the server's candidates in the SDP;
    // subscribe offers announce msid and SSRCs per forwarded track.
    let s = a.snapshot();
    let answer = s
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .expect("a publish answer");
    assert!(
        answer.contains("a=candidate:"),
        "answer carries candidates:\n{answer}"
    );
    assert!(
        answer.contains("a=ice-lite"),
        "the server is ICE-lite:\n{answer}"
    );
    let offer = s
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::Offer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .expect("a subscribe offer");
    for id in [&b_id, &c_id] {
        assert!(
            offer.contains(&format!("a=msid:{id} ")),
            "msid of {id} in:\n{offer}"
        );
    }
    assert!(offer.contains("a=ssrc:"), "SSRCs announced:\n{offer}");
    assert!(
        offer.contains("a=candidate:"),
        "offer carries candidates:\n{offer}"
    );
    // A late joiner who only listens gets all six tracks.
    let d = Client::connect(&server.ws_url()).await.expect("connects");
    d.join("trio", "dave", Role::Speaker).await.expect("joins");
    let s = d
        .wait_for(MEDIA_DEADLINE, "media from all three", |s| {
            [&a_id, &b_id, &c_id]
                .iter()
                .all(|o| receives_from(s, o, 60))
        })
        .await
        .expect("late joiner receives");
    assert_clean(&s, "dave");
    // The forwarded stream carries no loss on loopback once it started.
    for t in &s.remote_tracks {
        assert!(t.lost <= 2, "loss on {t:?}");
    }
    for c in [a, b, c, d] {
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_and_vanishing_peers_are_removed_and_renegotiated() {
    let server = TestServer::start().await;
    let (a, _a_id) = speaker(&server, "churn", "alice").await;
    let (b, b_id) = speaker(&server, "churn", "bob").await;
    let (c, c_id) = speaker(&server, "churn", "carol").await;
    a.wait_for(MEDIA_DEADLINE, "media from bob and carol", |s| {
        receives_from(s, &b_id, 30) && receives_from(s, &c_id, 30)
    })
    .await
    .expect("media flows");

    // A clean leave: peer_left, then an offer without bob's tracks.
    b.leave().await.expect("leave sent");
    let s = a
        .wait_for(
            Duration::from_secs(5),
            "bob's peer_left and his tracks gone",
            |s| s.saw_peer_left(&b_id) && !s.offered_publishers().contains(&b_id.as_str()),
        )
        .await
        .expect("bob removed");
    assert!(s.offered_publishers().contains(&c_id.as_str()));
    b.close().await;

    // An abrupt close of the socket (no leave, no close frame).
    c.close_abruptly().await;
    a.wait_for(
        Duration::from_secs(5),
        "carol's peer_left and her tracks gone",
        |s| s.saw_peer_left(&c_id) && s.offered_publishers().is_empty(),
    )
    .await
    .expect("carol removed");
    a.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_makes_the_publisher_send_a_keyframe() {
    let server = TestServer::start().await;
    let (a, a_id) = speaker(&server, "pli", "alice").await;
    a.wait_for(MEDIA_DEADLINE, "publish connected", |s| {
        s.publish_state == "connected"
    })
    .await
    .expect("connects");
    let before = a.snapshot().keyframe_requests;
    let b = Client::connect(&server.ws_url()).await.expect("connects");
    b.join("pli", "bob", Role::Speaker).await.expect("joins");
    a.wait_for(MEDIA_DEADLINE, "a PLI from the server", |s| {
        s.keyframe_requests > before
    })
    .await
    .expect("PLI relayed");
    let s = b
        .wait_for(MEDIA_DEADLINE, "a keyframe from alice", |s| {
            s.track_from(&a_id, "video")
                .is_some_and(|t| t.keyframes > 0)
        })
        .await
        .expect("keyframe forwarded");
    assert_clean(&s, "bob");
    // A subscriber's own PLI reaches the publisher too (rate-limited: one
    // inside the interval is deferred to its end, not dropped).
    let before = a.snapshot().keyframe_requests;
    assert!(b.request_keyframes().await.expect("PLI sent") >= 1);
    a.wait_for(MEDIA_DEADLINE, "the subscriber's PLI relayed", |s| {
        s.keyframe_requests > before
    })
    .await
    .expect("PLI relayed");
    a.close().await;
    b.close().await;
    server.stop().await;
}

/// What media reports about `peer` (a hex peer id).
async fn media_report(server: &TestServer, peer: &str) -> sfud::media::PeerMediaReport {
    let id = u64::from_str_radix(peer, 16).expect("peer ids are hex");
    let mut reports = server
        .media
        .reports(vec![sfud::media::PeerId(id)])
        .await
        .expect("media reports");
    assert_eq!(reports.len(), 1, "one report for {peer}");
    reports.remove(0)
}

/// Polls media's report of `peer` until `pred` holds (reports change
/// without an event to wait for).
async fn wait_report(
    server: &TestServer,
    peer: &str,
    what: &str,
    pred: impl Fn(&sfud::media::PeerMediaReport) -> bool,
) -> sfud::media::PeerMediaReport {
    let deadline = tokio::time::Instant::now() + MEDIA_DEADLINE;
    loop {
        let report = media_report(server, peer).await;
        if pred(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {MEDIA_DEADLINE:?}: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_publisher_is_received_in_the_layer_asked_for() {
    let server = TestServer::start().await;
    let publisher = Client::connect(&server.ws_url()).await.expect("connects");
    let pub_id = publisher
        .join("simulcast", "pub", Role::Speaker)
        .await
        .expect("joins")
        .peer_id;
    publisher
        .publish(PublishOptions {
            simulcast: true,
            ..PublishOptions::default()
        })
        .await
        .expect("publishes");
    let answer = publisher
        .snapshot()
        .messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Answer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .expect("the publish answer");
    assert!(
        answer.contains("a=simulcast:recv q;h;f"),
        "the answer receives the three layers:\n{answer}"
    );

    // sfud learns every layer's SSRC from its rtp-stream-id and measures it.
    let report = wait_report(&server, &pub_id, "three layers, each flowing", |r| {
        r.tracks.iter().any(|t| {
            t.kind == "video"
                && t.layers.len() == 3
                && t.layers.iter().all(|l| l.active && l.bitrate_bps > 0)
        })
    })
    .await;
    let video = report
        .tracks
        .iter()
        .find(|t| t.kind == "video")
        .expect("a video track");
    let rids: Vec<&str> = video.layers.iter().map(|l| l.rid.as_str()).collect();
    assert_eq!(rids, ["q", "h", "f"], "lowest first");
    let rates: Vec<u64> = video.layers.iter().map(|l| l.bitrate_bps).collect();
    assert!(
        rates[0] < rates[1] && rates[1] < rates[2],
        "q, h and f at rising rates: {rates:?}"
    );

    let sub = Client::connect(&server.ws_url()).await.expect("connects");
    let sub_id = sub
        .join("simulcast", "sub", Role::Listener)
        .await
        .expect("joins")
        .peer_id;
    let s = sub
        .wait_for(MEDIA_DEADLINE, "video from a layer of pub", |s| {
            s.track_from(&pub_id, "video")
                .is_some_and(|t| t.packets >= 30 && t.layer.is_some() && t.keyframes > 0)
        })
        .await
        .expect("video flows");
    let track_id = s
        .track_from(&pub_id, "video")
        .expect("video")
        .track_id
        .clone();

    // Each layer the listener asks for reaches it, through a keyframe of
    // that layer's SSRC, and media reports it.
    for (max_layer, rid) in [(0u8, "q"), (1, "h"), (2, "f")] {
        sub.send(&ClientMessage::TrackSettings {
            track: track_id.clone(),
            paused: false,
            max_width: None,
            max_height: None,
            max_layer: Some(max_layer),
        })
        .await
        .expect("sends");
        let before = sub
            .snapshot()
            .track_from(&pub_id, "video")
            .map_or(0, |t| t.packets);
        sub.wait_for(MEDIA_DEADLINE, &format!("layer {rid} from pub"), |s| {
            s.track_from(&pub_id, "video")
                .is_some_and(|t| t.layer == Some(max_layer) && t.packets >= before + 20)
        })
        .await
        .expect("the layer asked for arrives");
        wait_report(&server, &sub_id, &format!("sub receives {rid}"), |r| {
            r.receiving
                .iter()
                .any(|l| l.track == video.id && l.layer.as_deref() == Some(rid))
        })
        .await;
    }
    let s = sub.snapshot();
    assert_clean(&s, "sub");
    let t = s.track_from(&pub_id, "video").expect("video");
    assert_eq!(
        (t.lost, t.duplicates),
        (0, 0),
        "each layer's packets counted on their own: {t:?}"
    );
    assert!(t.layer_changes >= 2, "switched twice at least: {t:?}");
    // The listener's transport-wide feedback is read on the fast path, and
    // its downlink is measured from it.
    wait_report(&server, &sub_id, "sub's downlink measured", |r| {
        r.downlink_bps.is_some_and(|bps| bps > 0)
    })
    .await;
    let fast = scrape(&server)
        .await
        .get("sfud_transport_feedback_fast_total");
    assert!(fast > 0.0, "feedback read on the fast path: {fast}");
    assert!(
        publisher.snapshot().keyframe_requests > 0,
        "layer switches asked the publisher for keyframes"
    );
    assert_clean(&publisher.snapshot(), "pub");
    publisher.close().await;
    sub.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_media_connections_close_is_removed() {
    let server = TestServer::start().await;
    let (a, _a_id) = speaker(&server, "lost", "alice").await;
    let (b, b_id) = speaker(&server, "lost", "bob").await;
    a.wait_for(MEDIA_DEADLINE, "media from bob", |s| {
        receives_from(s, &b_id, 30)
    })
    .await
    .expect("media flows");
    // Bob's media goes away while his signaling socket stays open.
    b.close_media().await;
    a.wait_for(
        Duration::from_secs(5),
        "bob's peer_left and his tracks gone",
        |s| s.saw_peer_left(&b_id) && s.offered_publishers().is_empty(),
    )
    .await
    .expect("bob removed within 5 s");
    b.wait_for(
        Duration::from_secs(5),
        "bob's socket closed with an error",
        |s| s.closed_by_server && !s.errors.is_empty(),
    )
    .await
    .expect("bob told");
    a.close().await;
    b.close().await;
    server.stop().await;
}

/// Whether this process runs in a network namespace of its own (only `lo`),
/// where changing `lo`'s queueing cannot disturb anything else.
fn private_network() -> bool {
    // /proc/self/net follows the process's namespace (/sys/class/net need not).
    std::fs::read_to_string("/proc/self/net/dev").is_ok_and(|dev| {
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo")
    })
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A routing rule that makes the kernel refuse every datagram `from` or `to`
/// an address, until dropped. Only in a private network namespace; one at a
/// time (the rules are the namespace's, shared by every test in it).
struct Blackhole(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

static RULES: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Blackhole {
    fn add(direction: &str, address: &str) -> Blackhole {
        let guard = RULES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The local table's rule moves behind the blackhole rule.
        assert!(ip(&["rule", "add", "pref", "100", "lookup", "local"]));
        assert!(ip(&["rule", "del", "pref", "0"]));
        assert!(ip(&[
            "rule",
            "add",
            direction,
            address,
            "pref",
            "10",
            "blackhole"
        ]));
        Blackhole(guard)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        ip(&["rule", "del", "pref", "10"]);
        ip(&["rule", "add", "pref", "0", "lookup", "local"]);
        ip(&["rule", "del", "pref", "100"]);
    }
}

fn can_cut_paths() -> bool {
    let can = private_network() && nix::unistd::Uid::effective().is_root();
    if !can {
        eprintln!(
            "skipped: needs root in a private network namespace (scripts/test runs it there)"
        );
    }
    can
}

/// A client whose peer connections bind to `ip`, joined; with its peer id.
async fn joined_from(
    server: &TestServer,
    ip: &str,
    room: &str,
    name: &str,
    role: Role,
) -> (Client, String) {
    let options = sfu_client::ClientOptions {
        bind_ip: ip.parse().expect("an IP address"),
        ..Default::default()
    };
    joined_with(server, options, room, name, role).await
}

/// A client set up with `options`, joined; with its peer id.
async fn joined_with(
    server: &TestServer,
    options: sfu_client::ClientOptions,
    room: &str,
    name: &str,
    role: Role,
) -> (Client, String) {
    let client = Client::connect_with(&server.ws_url(), options)
        .await
        .expect("connects");
    let id = client.join(room, name, role).await.expect("joins").peer_id;
    (client, id)
}

async fn scrape(server: &TestServer) -> crate::metrics::Exposition {
    let response = crate::metrics::http_get(server.http, "/metrics").await;
    crate::metrics::parse_exposition(&response.body).expect("/metrics parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_network_path_dies_is_removed_within_5_s() {
    if !can_cut_paths() {
        return;
    }
    let server = TestServer::start().await;
    let (a, _a_id) = speaker(&server, "path", "alice").await;
    // Bob's media leaves from 127.0.0.2, which a routing rule can cut
    // without touching anyone else's traffic.
    let (b, b_id) = joined_from(&server, "127.0.0.2", "path", "bob", Role::Speaker).await;
    b.publish(sfu_client::PublishOptions::default())
        .await
        .expect("publishes");
    a.wait_for(MEDIA_DEADLINE, "media from bob", |s| {
        receives_from(s, &b_id, 30)
    })
    .await
    .expect("media flows");
    // From now on every datagram bob sends is refused by the kernel; his
    // WebSocket (from 127.0.0.1) stays up, so only ICE can notice.
    let cut = Blackhole::add("from", "127.0.0.2");
    let started = std::time::Instant::now();
    let removed = a
        .wait_for(Duration::from_secs(8), "bob's peer_left", |s| {
            s.saw_peer_left(&b_id)
        })
        .await;
    let took = started.elapsed();
    drop(cut);
    removed.expect("bob removed");
    assert!(
        took < Duration::from_secs(5),
        "a lost peer must be removed within 5 s, took {took:?}"
    );
    a.close().await;
    b.close().await;
    server.stop().await;
}

/// The test daemon, forwarding on the fast path or through `rtc`.
async fn server_with_fast_path(fast_path: bool) -> TestServer {
    let mut config = crate::harness::test_config();
    config.rtc.fast_path = fast_path;
    TestServer::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_misses_packets_gets_them_again() {
    missed_packets_are_sent_again(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_rtc_a_subscriber_that_misses_packets_gets_them_again() {
    missed_packets_are_sent_again(false).await;
}

async fn missed_packets_are_sent_again(fast_path: bool) {
    if !can_cut_paths() {
        return;
    }
    let server = server_with_fast_path(fast_path).await;
    let (a, a_id) = speaker(&server, "nack", "alice").await;
    // Bob's media arrives at 127.0.0.3, which a routing rule can cut
    // without touching anyone else's traffic.
    let (b, _) = joined_from(&server, "127.0.0.3", "nack", "bob", Role::Listener).await;
    b.wait_for(MEDIA_DEADLINE, "video from alice", |s| {
        s.packets_from(&a_id, "video") >= 30
    })
    .await
    .expect("media flows");
    let before = scrape(&server).await;
    let dropped = r#"sfud_dropped_packets_total{cause="send"}"#;
    // The server's datagrams to bob are refused until a few video packets
    // were lost for good on the way.
    let cut = Blackhole::add("to", "127.0.0.3");
    let deadline = tokio::time::Instant::now() + MEDIA_DEADLINE;
    while scrape(&server).await.get(dropped) < before.get(dropped) + 20.0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(cut);
    let gap = b
        .snapshot()
        .track_from(&a_id, "video")
        .map_or(0, |t| t.packets);
    // Bob's NACKs name what he missed; the server sends it again from the
    // track's history and the gap fills (late packets, no loss left).
    let s = b
        .wait_for(MEDIA_DEADLINE, "the missed video sent again", |s| {
            s.track_from(&a_id, "video")
                .is_some_and(|t| t.packets > gap + 30 && t.out_of_order > 0 && t.lost == 0)
        })
        .await
        .expect("the gap fills");
    assert_clean(&s, "bob");
    let after = scrape(&server).await;
    let resent = "sfud_rtp_packets_retransmitted_total";
    assert!(after.get(resent) > before.get(resent), "the server resent");
    assert_eq!(
        after.get("sfud_fast_path_connections"),
        f64::from(u8::from(fast_path))
    );
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_sender_reports_in_their_own_rtp_time() {
    sender_reports_are_translated(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_rtc_subscribers_get_sender_reports_in_their_own_rtp_time() {
    sender_reports_are_translated(false).await;
}

async fn sender_reports_are_translated(fast_path: bool) {
    let server = server_with_fast_path(fast_path).await;
    let (a, a_id) = speaker(&server, "reports", "alice").await;
    let b = Client::connect(&server.ws_url()).await.expect("connects");
    b.join("reports", "bob", Role::Listener)
        .await
        .expect("joins");
    let s = b
        .wait_for(
            MEDIA_DEADLINE,
            "a sender report on each of alice's tracks",
            |s| {
                s.tracks_from(&a_id).count() == 2
                    && s.tracks_from(&a_id).all(|t| t.sender_reports >= 2)
            },
        )
        .await
        .expect("sender reports arrive");
    for t in s.tracks_from(&a_id) {
        let sr = t.last_sender_report.expect("seen");
        let clock_rate: u32 = if t.kind == "video" { 90_000 } else { 48_000 };
        // The leg's RTP time (the publisher's plus the leg's random offset),
        // so it matches the packets around it, within a second.
        let apart = sr.rtp_time.wrapping_sub(sr.timestamp_then) as i32;
        assert!(
            apart.unsigned_abs() < clock_rate,
            "{}: report at RTP time {} while packets were at {}",
            t.kind,
            sr.rtp_time,
            sr.timestamp_then
        );
        // The leg's own counts: what was sent to bob, about what he got.
        assert!(sr.packet_count > 0, "{}: {sr:?}", t.kind);
        assert!(
            u64::from(sr.packet_count) <= sr.packets_then + 50,
            "{}: {sr:?}",
            t.kind
        );
        assert!(sr.octet_count >= sr.packet_count, "{}: {sr:?}", t.kind);
    }
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_ice_checks_pause_stays_while_its_media_flows() {
    // Browsers check consent every 2.5 s (Chrome) to 5 s; one lost check
    // must not end a call when everything else still arrives. Bob sends
    // one check a minute: his connections live on media and RTCP alone,
    // for well over the 4 s after which silence would count as lost.
    let server = TestServer::start().await;
    let (a, _) = speaker(&server, "consent", "alice").await;
    let options = sfu_client::ClientOptions {
        ice_keepalive: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let (b, b_id) = joined_with(&server, options, "consent", "bob", Role::Speaker).await;
    b.publish(sfu_client::PublishOptions::default())
        .await
        .expect("publishes");
    a.wait_for(MEDIA_DEADLINE, "media from bob", |s| {
        receives_from(s, &b_id, 30)
    })
    .await
    .expect("media flows");
    // 1500 video packets at 150 a second: 10 s more of bob's video.
    let before = a.snapshot().packets_from(&b_id, "video");
    let s = a
        .wait_for(Duration::from_secs(20), "10 s more of bob's video", |s| {
            s.saw_peer_left(&b_id) || s.packets_from(&b_id, "video") >= before + 1500
        })
        .await
        .expect("bob's media goes on");
    assert!(
        !s.saw_peer_left(&b_id),
        "bob was removed while his media flowed"
    );
    let bob = b.snapshot();
    assert!(!bob.closed_by_server, "bob's session was closed");
    assert_clean(&bob, "bob");
    a.close().await;
    b.close().await;
    server.stop().await;
}
