//! The cluster's node directory through a real Redis (Debian's
//! `redis-server`, started per test on a free loopback port).

use std::time::Duration;

use serde_json::Value;
use sfu_proto::signaling::ServerMessage;

use crate::control::{ctl, sfuctl_at};
use crate::harness::{test_config, RawSocket, TestServer, DEADLINE};
use crate::metrics::scrape;

/// A `redis-server` of this test's own, stopped when dropped.
pub struct Redis {
    child: tokio::process::Child,
    pub url: String,
}

/// A loopback TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Redis {
    pub async fn start_on(port: u16) -> Redis {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (scripts/setup --tests installs it)");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server does not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        }
    }

    /// A client connection of the test's own.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The secret the test clusters share.
pub const SECRET: &str = "test-cluster-secret-0123456789abcdef";

pub fn node_config(redis_url: &str, node_id: &str) -> sfud::config::Config {
    let mut config = test_config();
    config.cluster.redis_url = Some(redis_url.to_owned());
    config.cluster.node_id = Some(node_id.to_owned());
    config.cluster.secret = Some(SECRET.to_owned());
    config
}

/// Polls `sfuctl --json cluster status` on `server` until `pred` holds.
pub async fn status_until(server: &TestServer, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = ctl(server, &["cluster", "status"]).await.json();
        if pred(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last status: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn node<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node_id"] == id)
}

#[tokio::test]
async fn nodes_announce_their_load_and_leave_the_directory_when_they_stop() {
    let redis = Redis::start_on(free_port()).await;
    let a = TestServer::start_with(node_config(&redis.url, "node-a")).await;
    let b = TestServer::start_with(node_config(&redis.url, "node-b")).await;
    let mut alice = RawSocket::connect(&a).await;
    alice.join("standup", "alice").await;

    // Either node lists both, with the load each announced.
    let status = status_until(&b, "both nodes, node-a with its participant", |s| {
        node(s, "node-b").is_some() && node(s, "node-a").is_some_and(|n| n["peers"] == 1)
    })
    .await;
    assert_eq!(status["node_id"], "node-b");
    let na = node(&status, "node-a").expect("node-a listed");
    assert_eq!(na["url"], format!("ws://{}", a.http));
    assert_eq!(na["rooms"], 1);
    let age = status["now_ms"].as_u64().unwrap_or(0) - na["heartbeat_ms"].as_u64().unwrap_or(0);
    assert!(age < 5_000, "node-a's announcement is {age} ms old");
    let table = sfuctl_at(&b.socket, false, &["cluster", "status"]).await;
    assert!(
        table.ok_text().contains("node-b (this)"),
        "the answering node is marked"
    );

    // Its gauges: reachable, and both nodes once it has listed them
    // (every 5 s).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let m = scrape(&a).await;
        if m.get("sfud_cluster_reachable") == 1.0 && m.get("sfud_cluster_nodes") == 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-a's cluster gauges: {:?}",
            m.samples
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A node that stops takes itself out at once, not after its 5 s.
    b.stop().await;
    status_until(&a, "node-b gone", |s| {
        node(s, "node-b").is_none() && node(s, "node-a").is_some()
    })
    .await;
    a.stop().await;
    redis.stop().await;
}

#[tokio::test]
async fn a_node_serves_without_redis_and_announces_itself_once_redis_is_there() {
    // A single node has no cluster.
    let single = TestServer::start().await;
    ctl(&single, &["cluster", "status"])
        .await
        .refused("not_clustered");
    single.stop().await;

    let port = free_port();
    let server =
        TestServer::start_with(node_config(&format!("redis://127.0.0.1:{port}"), "lonely")).await;
    // It serves what it can: joins work.
    let mut alice = RawSocket::connect(&server).await;
    alice.join("solo", "alice").await;
    let message = ctl(&server, &["cluster", "status"])
        .await
        .refused("cluster_unavailable");
    assert_eq!(scrape(&server).await.get("sfud_cluster_reachable"), 0.0);
    assert!(message.contains(&port.to_string()), "{message}");

    let redis = Redis::start_on(port).await;
    status_until(&server, "the node announced once Redis is up", |s| {
        node(s, "lonely").is_some_and(|n| n["peers"] == 1)
    })
    .await;
    server.stop().await;
    redis.stop().await;
}

#[tokio::test]
async fn one_node_holds_a_room_and_a_lost_lease_cannot_be_renewed() {
    use sfud::cluster::lease::{acquire, holder, release, renew, Holder};
    let redis = Redis::start_on(free_port()).await;
    let mut a = redis.connection().await;
    let mut b = a.clone();
    let ttl = Duration::from_secs(10);

    // Two nodes racing for one room: one gets it.
    let (ra, rb) = tokio::join!(
        acquire(&mut a, "standup", "node-a", ttl),
        acquire(&mut b, "standup", "node-b", ttl)
    );
    let (ra, rb) = (ra.expect("node-a asks"), rb.expect("node-b asks"));
    let (lease, other) = match (ra, rb) {
        (Holder::Taken(l), other @ Holder::Other { .. })
        | (other @ Holder::Other { .. }, Holder::Taken(l)) => (l, other),
        both => panic!("not exactly one owner: {both:?}"),
    };
    assert_eq!(
        other,
        Holder::Other {
            node_id: lease.node_id.clone(),
            fence: lease.fence
        }
    );
    assert_eq!(
        holder(&mut a, "standup").await.expect("reads"),
        Some((lease.node_id.clone(), lease.fence))
    );
    assert!(renew(&mut a, &lease, ttl).await.expect("renews"));

    // The lease runs out (its owner was cut off): another node takes the
    // room with a larger fence, and the old owner can renew nothing.
    assert!(renew(&mut a, &lease, Duration::from_millis(1))
        .await
        .expect("shortens"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let taken = loop {
        if let Holder::Taken(l) = acquire(&mut b, "standup", "node-c", ttl)
            .await
            .expect("asks")
        {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(taken.fence > lease.fence, "{taken:?} after {lease:?}");
    assert!(
        !renew(&mut a, &lease, ttl).await.expect("asks"),
        "a lost lease renewed"
    );
    // Releasing a lost lease leaves the new owner's alone.
    release(&mut a, &lease).await.expect("asks");
    assert_eq!(
        holder(&mut a, "standup").await.expect("reads"),
        Some(("node-c".to_owned(), taken.fence))
    );
    release(&mut b, &taken).await.expect("releases");
    assert_eq!(holder(&mut a, "standup").await.expect("reads"), None);
    redis.stop().await;
}

#[tokio::test]
async fn a_node_that_lost_a_room_to_another_closes_it_with_room_moved() {
    let redis = Redis::start_on(free_port()).await;
    let server = TestServer::start_with(node_config(&redis.url, "node-a")).await;
    let mut alice = RawSocket::connect(&server).await;
    alice.join("contested", "alice").await;
    // As if node-a had been cut off from Redis past its lease and node-z
    // had taken the room meanwhile.
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("sfud:room:contested")
        .arg("999999 node-z")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .expect("sets");
    // Its next renewal (every 3 s) finds the lease gone to node-z.
    let message = alice
        .recv_until("room_moved", |m| matches!(m, ServerMessage::Error { .. }))
        .await;
    let ServerMessage::Error { code, message } = message else {
        unreachable!("recv_until returned a non-error");
    };
    assert_eq!(code.as_str(), "room_moved", "{message}");
    assert!(message.contains("node-z"), "{message}");
    alice.expect_closed().await;
    assert!(server.rooms.room_names().is_empty(), "the room stayed open");
    server.stop().await;
    redis.stop().await;
}
