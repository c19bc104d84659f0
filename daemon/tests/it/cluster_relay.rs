//! Rooms of a cluster served by one node and reached through any: joins
//! relayed to the owner, new rooms placed on the less-loaded node, a node
//! killed under its calls, Redis lost under them. Real daemons (one of
//! them a separate process, to be killed), a real Redis, real WebRTC
//! clients.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sfu_client::{Client, ClientError, PublishOptions, Snapshot};
use sfu_proto::signaling::Role;

use crate::cluster::{free_port, node, node_config, status_until, Redis, SECRET};
use crate::control::ctl;
use crate::harness::{RawSocket, TestServer, DEADLINE, MEDIA_DEADLINE};
use crate::metrics::scrape;

/// Media of both kinds from `from`.
fn receives_from(s: &Snapshot, from: &str, packets: u64) -> bool {
    s.packets_from(from, "video") >= packets && s.packets_from(from, "audio") >= packets / 3
}

/// A speaker through the signaling endpoint `ws_url` (a node's `/ws`).
async fn speaker_at(ws_url: &str, room: &str, name: &str) -> Result<(Client, String), ClientError> {
    let client = Client::connect(ws_url).await?;
    let joined = client.join(room, name, Role::Speaker).await?;
    client.publish(PublishOptions::default()).await?;
    Ok((client, joined.peer_id))
}

/// Both speakers receive each other's media.
async fn hear_each_other(a: (&Client, &str), b: (&Client, &str)) {
    for ((me, _), (_, other)) in [(a, b), (b, a)] {
        let s = me
            .wait_for(MEDIA_DEADLINE, "media from the other", |s| {
                receives_from(s, other, 50)
            })
            .await
            .expect("media flows");
        assert!(s.errors.is_empty(), "server errors: {:?}", s.errors);
    }
}

/// Waits until both nodes are in the directory: placement reads it.
async fn both_listed(server: &TestServer) {
    status_until(server, "both nodes in the directory", |s| {
        node(s, "node-a").is_some() && node(s, "node-b").is_some()
    })
    .await;
}

/// Node-a (configured by `config`) and node-b on `redis`, both in the
/// directory.
async fn two_nodes(redis: &Redis, config: sfud::config::Config) -> (TestServer, TestServer) {
    let a = TestServer::start_with(config).await;
    let b = TestServer::start_with(node_config(&redis.url, "node-b")).await;
    both_listed(&a).await;
    (a, b)
}

/// Stops the nodes, then Redis.
async fn stop_all(redis: Redis, nodes: impl IntoIterator<Item = TestServer>) {
    for node in nodes {
        node.stop().await;
    }
    redis.stop().await;
}

/// Polls the lease of `room` in `redis` until `pred` holds for its value.
async fn lease_until(redis: &Redis, room: &str, what: &str, pred: impl Fn(Option<&str>) -> bool) {
    let mut conn = redis.connection().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let held: Option<String> = redis::cmd("GET")
            .arg(format!("sfud:room:{room}"))
            .query_async(&mut conn)
            .await
            .expect("reads");
        if pred(held.as_deref()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the lease is {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The participants of `room` on `server`.
async fn members(server: &TestServer, room: &str) -> usize {
    server.rooms.show(room).await.map_or(0, |d| d.members.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_joining_through_two_nodes_share_the_room_its_owner_serves() {
    let redis = Redis::start_on(free_port()).await;
    let recordings = tempfile::tempdir().expect("temp dir");
    let mut config = node_config(&redis.url, "node-a");
    config.recording.dir = recordings.path().to_owned();
    let (a, b) = two_nodes(&redis, config).await;
    let (alice, alice_id) = speaker_at(&a.ws_url(), "standup", "alice")
        .await
        .expect("alice joins on node-a");
    // Equal load: the room stays on the node the first join reached.
    assert_eq!(a.rooms.room_names(), ["standup"]);
    let (bob, bob_id) = speaker_at(&b.ws_url(), "standup", "bob")
        .await
        .expect("bob joins on node-b");
    assert!(b.rooms.room_names().is_empty(), "node-b opened the room");
    assert_eq!(members(&a, "standup").await, 2, "node-a serves both");
    hear_each_other((&alice, &alice_id), (&bob, &bob_id)).await;
    // Bob's media connects to node-a: it reports his address.
    let detail = a.rooms.show("standup").await.expect("the room");
    let bob_there = detail
        .members
        .iter()
        .find(|m| m.id == bob_id)
        .expect("bob on node-a");
    assert!(
        bob_there
            .publish
            .as_ref()
            .is_some_and(|c| c.remote.is_some()),
        "bob's publish connection on node-a has no address: {bob_there:?}"
    );

    // Each node's gauges say what it does for the room.
    assert_eq!(scrape(&a).await.get("sfud_cluster_leases"), 1.0);
    assert_eq!(scrape(&b).await.get("sfud_cluster_leases"), 0.0);
    assert_eq!(scrape(&b).await.get("sfud_cluster_relayed_sessions"), 1.0);

    // An operator on node-b sees the room, with its node, and acts on it
    // through node-a.
    let listed = ctl(&b, &["rooms", "list"]).await.json();
    let rooms = listed["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{listed}");
    assert_eq!(rooms[0]["name"], "standup");
    assert_eq!(rooms[0]["node"], "node-a");
    let shown = ctl(&b, &["rooms", "show", "standup"]).await.json();
    assert_eq!(shown["node"], "node-a", "{shown}");
    assert_eq!(shown["members"].as_array().map(Vec::len), Some(2));
    let table = crate::control::sfuctl_at(&b.socket, false, &["rooms", "list"]).await;
    assert!(table.ok_text().contains("NODE"), "the table names nodes");
    ctl(&b, &["record", "start", "standup"]).await.ok();
    ctl(&b, &["record", "stop", "standup"]).await.ok();
    let written = std::fs::read_dir(recordings.path()).map_or(0, Iterator::count);
    assert!(written > 0, "node-a recorded nothing");
    ctl(&b, &["rooms", "show", "nowhere"])
        .await
        .refused("unknown_room");

    // An operator on node-b cannot open a second room of that name.
    let why = ctl(&b, &["rooms", "create", "standup"])
        .await
        .refused("refused");
    assert!(why.contains("node-a"), "{why}");

    // A wrong cluster secret is refused before any session.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(a.ws_url())
            .expect("a request");
    request.headers_mut().insert(
        "x-sfud-cluster-secret",
        "not-the-secret".parse().expect("a header"),
    );
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "a wrong secret was let in");
    let control = format!("ws://{}/cluster/control", a.http);
    assert!(
        tokio_tungstenite::connect_async(&control).await.is_err(),
        "a node request without the secret was let in"
    );
    // With it, only what nodes forward is answered.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(&control)
            .expect("a request");
    request
        .headers_mut()
        .insert("x-sfud-cluster-secret", SECRET.parse().expect("a header"));
    let (mut node, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the secret opens /cluster/control");
    let reload = serde_json::to_string(&sfu_proto::control::Request::Reload).expect("JSON");
    node.send(tokio_tungstenite::tungstenite::Message::Text(reload.into()))
        .await
        .expect("sent");
    let answer = node.next().await.expect("an answer").expect("read");
    assert!(
        answer.to_text().is_ok_and(|t| t.contains("bad_request")),
        "{answer:?}"
    );

    // Kicked through node-b: bob's session on node-a ends, and so does
    // his relayed one.
    let from = bob.message_count();
    ctl(&b, &["peers", "kick", "standup", &bob_id]).await.ok();
    let (code, _) = bob.next_error(from, DEADLINE).await.expect("bob is told");
    assert_eq!(code.as_str(), "kicked");
    bob.close().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while members(&a, "standup").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob stayed on node-a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room ends: node-a releases its lease.
    alice.close().await;
    lease_until(&redis, "standup", "the lease outlived the room", |h| {
        h.is_none()
    })
    .await;
    stop_all(redis, [a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_room_is_placed_on_the_less_loaded_node() {
    let redis = Redis::start_on(free_port()).await;
    let (a, b) = two_nodes(&redis, node_config(&redis.url, "node-a")).await;
    let mut busy = Vec::new();
    for name in ["ann", "art"] {
        let mut s = RawSocket::connect(&a).await;
        s.join("busy", name).await;
        busy.push(s);
    }
    status_until(&a, "node-a announcing its 2 participants", |s| {
        node(s, "node-a").is_some_and(|n| n["peers"] == 2) && node(s, "node-b").is_some()
    })
    .await;

    // Carol's join reaches the busy node; her new room goes to node-b.
    let mut carol = RawSocket::connect(&a).await;
    carol.join("fresh", "carol").await;
    assert_eq!(b.rooms.room_names(), ["fresh"]);
    assert_eq!(a.rooms.room_names(), ["busy"]);
    // Dave reaches node-b directly and is in the same room.
    let mut dave = RawSocket::connect(&b).await;
    dave.join("fresh", "dave").await;
    assert_eq!(members(&b, "fresh").await, 2);
    drop((busy, carol, dave));
    stop_all(redis, [a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_for_a_new_room_on_two_nodes_end_in_one_room() {
    let redis = Redis::start_on(free_port()).await;
    let (a, b) = two_nodes(&redis, node_config(&redis.url, "node-a")).await;
    // Four joins on each node at once, for a room nobody holds yet: each
    // node may place it on itself, but only one takes the lease.
    let join = |server: &TestServer, name: String| {
        let url = server.http;
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{url}/ws"))
                .await
                .expect("connects");
            let join = serde_json::json!({"type": "join", "room": "race", "name": name});
            ws.send(tokio_tungstenite::tungstenite::Message::Text(
                join.to_string().into(),
            ))
            .await
            .expect("sent");
            let answer = ws.next().await.expect("an answer").expect("read");
            assert!(
                answer.to_text().is_ok_and(|t| t.contains("\"joined\"")),
                "{name} was not let in: {answer:?}"
            );
            ws
        }
    };
    let joins: Vec<_> = (0..8)
        .map(|i| join(if i % 2 == 0 { &a } else { &b }, format!("p{i}")))
        .collect();
    let sockets = futures_util::future::join_all(joins).await;
    let on_a = a.rooms.is_open("race");
    let on_b = b.rooms.is_open("race");
    assert!(
        on_a != on_b,
        "race open on node-a: {on_a}, on node-b: {on_b}"
    );
    let owner = if on_a { &a } else { &b };
    assert_eq!(members(owner, "race").await, 8);
    drop(sockets);
    stop_all(redis, [a, b]).await;
}

/// An sfud process of its own (to be killed), in a cluster.
struct ProcessNode {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl ProcessNode {
    async fn start(redis_url: &str, node_id: &str) -> ProcessNode {
        let dir = std::env::temp_dir().join(format!("sfud-{node_id}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        std::fs::write(
            dir.join("sfud.toml"),
            format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n[rtc]\nudp_port = 0\nbind_ips = [\"127.0.0.1\"]\n\
                 [control]\nsocket = \"{}\"\n[limits]\njoins_per_second = 1000\n\
                 [cluster]\nredis_url = \"{redis_url}\"\nnode_id = \"{node_id}\"\nsecret = \"{SECRET}\"\n",
                dir.join("sfud.sock").display()
            ),
        )
        .expect("config written");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sfud"))
            .arg("--config")
            .arg(dir.join("sfud.toml"))
            .stdout(std::fs::File::create(dir.join("sfud.log")).expect("log file"))
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log file"))
            .spawn()
            .expect("sfud starts");
        let up = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(up.elapsed() < DEADLINE, "sfud did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ProcessNode { child, port, dir }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Joins `room` through `ws_url` again and again, as the demo page does
/// after `room_moved` or a lost socket, until it is in and publishing.
async fn join_again(ws_url: &str, room: &str, name: &str, by: Instant) -> (Client, String) {
    loop {
        match speaker_at(ws_url, room, name).await {
            Ok(joined) => return joined,
            Err(e) => assert!(Instant::now() < by, "{name} never got back in: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_owner_is_killed_its_call_resumes_on_another_node_within_15_s() {
    let redis = Redis::start_on(free_port()).await;
    let mut a = ProcessNode::start(&redis.url, "node-a").await;
    let b = TestServer::start_with(node_config(&redis.url, "node-b")).await;
    both_listed(&b).await;
    let (alice, _) = speaker_at(&a.ws_url(), "standup", "alice")
        .await
        .expect("alice joins on node-a");
    let (bob, _) = speaker_at(&b.ws_url(), "standup", "bob")
        .await
        .expect("bob joins through node-b");
    assert!(b.rooms.room_names().is_empty(), "node-b opened the room");
    let alice_id = alice.peer_id().expect("alice's id");
    let bob_id = bob.peer_id().expect("bob's id");
    hear_each_other((&alice, &alice_id), (&bob, &bob_id)).await;

    let from = bob.message_count();
    a.kill();
    let killed = Instant::now();
    // Bob's session through node-b is told.
    let (code, message) = bob.next_error(from, DEADLINE).await.expect("bob is told");
    assert_eq!(code.as_str(), "room_moved", "{message}");
    assert!(scrape(&b).await.get("sfud_cluster_relay_failures_total") >= 1.0);
    drop((alice, bob));
    // Both join node-b again (the room is placed there once node-a's lease
    // has run out) and hear each other.
    let by = killed + Duration::from_secs(15);
    let (alice, alice_id) = join_again(&b.ws_url(), "standup", "alice", by).await;
    let (bob, bob_id) = join_again(&b.ws_url(), "standup", "bob", by).await;
    hear_each_other((&alice, &alice_id), (&bob, &bob_id)).await;
    let resumed = killed.elapsed();
    assert!(
        resumed < Duration::from_secs(15),
        "the call resumed {resumed:?} after the kill"
    );
    assert_eq!(b.rooms.room_names(), ["standup"]);
    alice.close().await;
    bob.close().await;
    b.stop().await;
    redis.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_while_redis_is_away_and_its_lease_is_taken_again() {
    let port = free_port();
    let redis = Redis::start_on(port).await;
    let (a, b) = two_nodes(&redis, node_config(&redis.url, "node-a")).await;
    let (alice, alice_id) = speaker_at(&a.ws_url(), "standup", "alice")
        .await
        .expect("alice joins on node-a");
    let (bob, bob_id) = speaker_at(&b.ws_url(), "standup", "bob")
        .await
        .expect("bob joins through node-b");
    hear_each_other((&alice, &alice_id), (&bob, &bob_id)).await;

    // Redis goes away for longer than a lease lasts: media keeps flowing
    // both ways, through the relayed session too, and nobody is told to
    // leave.
    redis.stop().await;
    let away = Instant::now() + sfud::cluster::LEASE_TTL + Duration::from_secs(2);
    while Instant::now() < away {
        for (me, other) in [(&alice, &bob_id), (&bob, &alice_id)] {
            let before = me.snapshot().packets_from(other, "video");
            me.wait_for(DEADLINE, "media still flowing", |s| {
                s.packets_from(other, "video") > before + 20
            })
            .await
            .expect("media flows without Redis");
        }
    }
    // A new participant reaching node-b meanwhile joins the room on node-a
    // (node-b remembers who serves it) rather than a second copy.
    let mut carol = RawSocket::connect(&b).await;
    carol.join("standup", "carol").await;
    assert_eq!(members(&a, "standup").await, 3);
    assert!(b.rooms.room_names().is_empty(), "node-b opened the room");
    drop(carol);

    // Redis is back (empty): node-a takes its room's lease again.
    let redis = Redis::start_on(port).await;
    lease_until(
        &redis,
        "standup",
        "node-a did not claim its room again",
        |h| h.is_some_and(|h| h.ends_with(" node-a")),
    )
    .await;
    both_listed(&b).await;
    for (me, other) in [(&alice, &bob_id), (&bob, &alice_id)] {
        let before = me.snapshot().packets_from(other, "video");
        let s = me
            .wait_for(DEADLINE, "media after Redis is back", |s| {
                s.packets_from(other, "video") > before + 20
            })
            .await
            .expect("media flows");
        assert!(s.errors.is_empty(), "errors: {:?}", s.errors);
    }
    alice.close().await;
    bob.close().await;
    stop_all(redis, [a, b]).await;
}
