//! Bad input on the signaling socket: each gets an `error` with a stable
//! code, and the socket, the room and the other participants carry on.

use std::time::Duration;

use serde_json::json;
use sfu_proto::signaling::ServerMessage;

use crate::harness::{RawSocket, TestServer};

/// A publish offer of one video section with payload type `$pt`, ending
/// with `$tail` (the codec and track lines).
macro_rules! video_offer {
    ($pt:literal, $tail:literal) => {
        concat!(
            "v=0\r\n\
            o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
            s=-\r\n\
            t=0 0\r\n\
            a=group:BUNDLE 0\r\n\
            a=msid-semantic: WMS\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF ",
            $pt,
            "\r\n\
            c=IN IP4 0.0.0.0\r\n\
            a=rtcp:9 IN IP4 0.0.0.0\r\n\
            a=ice-ufrag:abcd\r\n\
            a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
            a=ice-options:trickle\r\n\
            a=fingerprint:sha-256 3A:1B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09:1A:2B:3C:4D:5E:6F:70:81:92:A3:B4:C5:D6:E7:F8:09\r\n\
            a=setup:actpass\r\n\
            a=mid:0\r\n\
            a=sendonly\r\n\
            a=rtcp-mux\r\n",
            $tail
        )
    };
}

/// A syntactically valid offer whose only codec is one the server lacks.
const NO_USABLE_CODEC_OFFER: &str = video_offer!(
    "98",
    "a=rtpmap:98 NOTACODEC/90000\r\na=ssrc:1111 cname:x\r\n"
);

#[tokio::test]
async fn every_bad_message_gets_its_error_code_and_the_session_carries_on() {
    let server = TestServer::start().await;
    let mut other = RawSocket::connect(&server).await;
    other.join("bad-input", "witness").await;

    let mut ws = RawSocket::connect(&server).await;
    // Before join.
    ws.send_text("this is not json").await;
    ws.expect_error("bad_request").await;
    ws.send_json(json!({"type":"dance"})).await;
    let msg = ws.expect_error("bad_request").await;
    assert!(
        msg.contains("dance"),
        "message names the unknown type: {msg}"
    );
    ws.send_json(json!({"type":"join","name":"no room"})).await;
    let msg = ws.expect_error("bad_request").await;
    assert!(
        msg.contains("room"),
        "message names the missing field: {msg}"
    );
    ws.send_json(json!({"type":"offer","pc":"publish","sdp":"v=0"}))
        .await;
    ws.expect_error("not_joined").await;
    ws.send_json(json!({"type":"answer","pc":"subscribe","sdp":"v=0"}))
        .await;
    ws.expect_error("not_joined").await;
    ws.send_json(json!({"type":"mute","kind":"audio","muted":true}))
        .await;
    ws.expect_error("not_joined").await;
    ws.send_json(json!({"type":"mute","kind":"microphone","muted":true}))
        .await;
    let msg = ws.expect_error("bad_request").await;
    assert!(
        msg.contains("microphone"),
        "message names the bad kind: {msg}"
    );
    ws.send_text(format!(
        r#"{{"type":"join","room":"bad-input","name":"{}"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    ws.expect_error("too_large").await;
    ws.send_json(json!({"type":"join","room":"","name":"n"}))
        .await;
    ws.expect_error("bad_name").await;
    // A bad display name (a direction override here) is refused before the
    // room it names is created.
    ws.send_json(json!({"type":"join","room":"never-made","name":"admin\u{202E}gpj"}))
        .await;
    ws.expect_error("bad_name").await;
    assert!(
        server
            .rooms
            .list()
            .await
            .iter()
            .all(|r| r.name != "never-made"),
        "a refused join created its room"
    );

    // The session still works: join, then the joined-state errors.
    let id = ws.join("bad-input", "tester").await;
    assert!(!id.is_empty());
    ws.send_json(json!({"type":"join","room":"bad-input","name":"again"}))
        .await;
    ws.expect_error("already_joined").await;
    ws.send_json(json!({"type":"offer","pc":"publish","sdp":"this is not sdp"}))
        .await;
    ws.expect_error("bad_sdp").await;
    ws.send_json(json!({"type":"offer","pc":"publish","sdp":NO_USABLE_CODEC_OFFER}))
        .await;
    let msg = ws.expect_error("bad_sdp").await;
    assert!(msg.contains("codec"), "message says why: {msg}");
    ws.send_json(json!({"type":"answer","pc":"subscribe","sdp":"v=0"}))
        .await;
    ws.expect_error("out_of_order").await;
    ws.send_json(json!({"type":"candidate","pc":"subscribe","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}})).await;
    ws.expect_error("out_of_order").await;
    // The end of candidates, before any description, is out of order too.
    ws.send_json(json!({"type":"candidate","pc":"publish","candidate":null}))
        .await;
    ws.expect_error("out_of_order").await;
    ws.send_json(json!({"type":"offer","pc":"subscribe","sdp":"v=0"}))
        .await;
    ws.expect_error("bad_request").await;
    // A listener has nothing to mute.
    let mut listener = RawSocket::connect(&server).await;
    let joined = listener
        .try_join(json!({"room":"bad-input","name":"quiet","role":"listener"}))
        .await;
    assert!(matches!(joined, ServerMessage::Joined { .. }), "{joined:?}");
    listener
        .send_json(json!({"type":"mute","kind":"video","muted":true}))
        .await;
    listener.expect_error("not_allowed").await;
    drop(listener);

    // The witness saw the tester join and nothing else went wrong for it.
    let seen = other
        .recv_until("peer_joined", |m| {
            matches!(m, ServerMessage::PeerJoined { .. })
        })
        .await;
    let ServerMessage::PeerJoined { peer } = seen else {
        unreachable!()
    };
    assert_eq!(peer.name, "tester");

    // leave ends the session and the server closes the socket; the witness
    // hears peer_left.
    ws.send_json(json!({"type":"leave"})).await;
    ws.expect_closed().await;
    other
        .recv_until(
            "the tester's peer_left",
            |m| matches!(m, ServerMessage::PeerLeft { peer_id } if *peer_id == id),
        )
        .await;

    server.stop().await;
}

#[tokio::test]
async fn a_full_room_refuses_and_an_abrupt_close_tells_the_others() {
    let mut config = crate::harness::test_config();
    config.rooms.max_peers = 2;
    let server = TestServer::start_with(config).await;
    let mut a = RawSocket::connect(&server).await;
    a.join("small", "a").await;
    let mut b = RawSocket::connect(&server).await;
    let b_id = b.join("small", "b").await;
    let mut c = RawSocket::connect(&server).await;
    c.send_json(json!({"type":"join","room":"small","name":"c"}))
        .await;
    c.expect_error("room_full").await;
    // Another room is fine on the same socket after the refusal.
    c.join("elsewhere", "c").await;

    drop(b);
    let left = a
        .recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft { .. }))
        .await;
    assert_eq!(left, ServerMessage::PeerLeft { peer_id: b_id });
    server.stop().await;
}

/// A legal offer whose send section names its track by `a=msid` only, with
/// no `a=ssrc` lines (as RID simulcast offers and some WHIP clients do).
const MSID_ONLY_OFFER: &str =
    video_offer!("96", "a=msid:stream-1 track-1\r\na=rtpmap:96 VP8/90000\r\n");

#[tokio::test]
async fn an_offer_that_names_its_track_by_msid_alone_is_answered() {
    let server = TestServer::start().await;
    let mut ws = RawSocket::connect(&server).await;
    ws.join("msid-only", "pub").await;
    ws.send_json(json!({"type":"offer","pc":"publish","sdp":MSID_ONLY_OFFER}))
        .await;
    let answer = ws
        .recv_until("the publish answer or an error", |m| {
            matches!(
                m,
                ServerMessage::Answer { .. } | ServerMessage::Error { .. }
            )
        })
        .await;
    assert!(
        matches!(answer, ServerMessage::Answer { .. }),
        "got {answer:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_join_or_fall_silent_are_closed_and_a_call_carries_on() {
    let mut config = crate::harness::test_config();
    config.limits.join_timeout_secs = 1;
    config.limits.idle_timeout_secs = 3;
    let server = TestServer::start_with(config).await;
    let (alice, alice_id) = crate::harness::speaker(&server, "busy", "alice").await;
    let (bob, _) = crate::harness::speaker(&server, "busy", "bob").await;
    let flowing = |packets: u64| {
        let alice_id = alice_id.clone();
        move |s: &sfu_client::Snapshot| {
            s.track_from(&alice_id, "video")
                .is_some_and(|t| t.packets >= packets)
        }
    };
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "media from alice",
        flowing(50),
    )
    .await
    .expect("media flows");

    // 100 sockets that never join: each is told and closed after a second.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(RawSocket::connect(&server).await);
    }
    for ws in &mut silent {
        let message = ws.expect_error("not_joined").await;
        assert!(message.contains("within 1 s"), "{message}");
        ws.expect_closed().await;
    }

    // A participant whose client stops reading (no pongs) is closed as dead
    // and leaves the room; the others hear it.
    let mut witness = RawSocket::connect(&server).await;
    witness.join("busy", "witness").await;
    let mut ghost = RawSocket::connect(&server).await;
    let ghost_id = ghost.join("busy", "ghost").await;
    let left = witness
        .recv_until(
            "the silent participant leaving",
            |m| matches!(m, ServerMessage::PeerLeft { peer_id } if *peer_id == ghost_id),
        )
        .await;
    assert!(matches!(left, ServerMessage::PeerLeft { .. }));
    drop(ghost);

    // The call went on all along.
    let now = bob
        .snapshot()
        .track_from(&alice_id, "video")
        .map_or(0, |t| t.packets);
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "media from alice still",
        flowing(now + 50),
    )
    .await
    .expect("media still flows");
    drop(alice);
    server.stop().await;
}

/// CPU seconds `pid` has used (user and system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_sfud_neither_spins_nor_floods_its_log_and_recovers() {
    use std::io::Read as _;
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("sfud-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = http.local_addr().expect("address").port();
    drop(http);
    let socket = dir.join("sfud.sock");
    let log = dir.join("sfud.log");
    std::fs::write(
        dir.join("sfud.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[rtc]\nudp_port = 0\nbind_ips = [\"127.0.0.1\"]\n\
             [control]\nsocket = \"{}\"\n",
            socket.display()
        ),
    )
    .expect("config written");
    // 128 descriptors at most: a few hundred connections exhaust them.
    let mut daemon = std::process::Command::new("prlimit")
        .arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_sfud"))
        .arg("--config")
        .arg(dir.join("sfud.toml"))
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log file"))
        .spawn()
        .expect("sfud starts under prlimit");
    let up = std::time::Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(up.elapsed() < Duration::from_secs(10), "sfud did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut held = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1),
        ) {
            Ok(s) => held.push(Box::new(s) as Box<dyn std::any::Any>),
            Err(_) => break,
        }
    }
    for _ in 0..100 {
        let Ok(s) = UnixStream::connect(&socket) else {
            break;
        };
        held.push(Box::new(s));
    }
    assert!(held.len() > 128, "only {} connections held", held.len());
    // A window to measure in: no spinning core, no log flood.
    let lines = || {
        let mut text = String::new();
        let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
        let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        text.lines().count() + stderr.lines().count()
    };
    let (cpu0, lines0) = (cpu_seconds(daemon.id()), lines());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu1, lines1) = (cpu_seconds(daemon.id()), lines());
    let cpu = (cpu1 - cpu0) / 3.0;
    assert!(
        cpu < 0.3,
        "sfud used {:.0}% of a core with no descriptor left",
        cpu * 100.0
    );
    assert!(
        lines1 - lines0 <= 30,
        "sfud logged {} lines in 3 s with no descriptor left",
        lines1 - lines0
    );
    // Once they close, it serves again.
    drop(held);
    let again = std::time::Instant::now();
    loop {
        let status = std::process::Command::new(crate::control::sfuctl_path())
            .arg("--socket")
            .arg(&socket)
            .arg("status")
            .output();
        if matches!(&status, Ok(o) if o.status.success()) {
            break;
        }
        assert!(
            again.elapsed() < Duration::from_secs(10),
            "sfud does not serve again: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The close code the server's close frame carries, reading past other frames.
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn frames_that_break_the_protocol_get_their_rfc_6455_close_codes() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let url = server.ws_url();

    // Text that is not UTF-8: 1007.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connects");
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.expect("sent");
    assert_eq!(close_code(&mut ws).await, Some(1007));

    // A message over the 1 MiB hard limit: 1009.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connects");
    let _ = ws
        .send(Message::Binary(vec![0u8; 2 * 1024 * 1024].into()))
        .await;
    assert_eq!(close_code(&mut ws).await, Some(1009));

    // Others are not disturbed.
    let mut fine = RawSocket::connect(&server).await;
    fine.join("after-bad-frames", "fine").await;
    server.stop().await;
}

/// Whether the server closed `stream` within `within` (EOF or reset).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_excess_connections_are_closed_and_a_call_carries_on() {
    let mut config = crate::harness::test_config();
    config.limits.header_timeout_secs = 1;
    config.limits.max_connections_per_ip = 40;
    let server = TestServer::start_with(config).await;
    let (alice, alice_id) = crate::harness::speaker(&server, "held", "alice").await;
    let (bob, _) = crate::harness::speaker(&server, "held", "bob").await;
    let packets =
        |s: &sfu_client::Snapshot, id: &str| s.track_from(id, "video").map_or(0, |t| t.packets);
    bob.wait_for(crate::harness::MEDIA_DEADLINE, "media from alice", |s| {
        packets(s, &alice_id) >= 50
    })
    .await
    .expect("media flows");

    // 100 TCP connections that send nothing, from the address the call's two
    // WebSockets come from: those over the cap of 40 are closed at once,
    // the others once the 1 s for a request's headers is over.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(
            tokio::net::TcpStream::connect(server.http)
                .await
                .expect("connects"),
        );
    }
    let mut at_once = 0;
    for s in &mut silent {
        if closed_within(s, Duration::from_millis(300)).await {
            at_once += 1;
        }
    }
    assert!(
        at_once >= 100 - 38,
        "only {at_once} connections over the cap were closed at once"
    );
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a silent connection was not closed after the header timeout"
        );
    }
    drop(silent);

    // The call went on, and the server takes new participants.
    let now = packets(&bob.snapshot(), &alice_id);
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "media from alice still",
        |s| packets(s, &alice_id) >= now + 50,
    )
    .await
    .expect("media still flows");
    let mut late = RawSocket::connect(&server).await;
    late.join("held", "late").await;
    let metrics = crate::metrics::http_get(server.http, "/metrics").await.body;
    assert!(
        metrics.contains("sfud_http_connections_refused_total{cap=\"per_address\"}"),
        "{metrics}"
    );
    drop(alice);
    server.stop().await;
}

/// `sdp` with the first hex digit of its sha-256 fingerprint changed: a
/// description that names a certificate the client does not present.
fn wrong_fingerprint(sdp: &str) -> String {
    sdp.split("\r\n")
        .map(|line| match line.strip_prefix("a=fingerprint:sha-256 ") {
            Some(hex) => {
                let first = if hex.starts_with('0') { '1' } else { '0' };
                format!("a=fingerprint:sha-256 {first}{}", &hex[1..])
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_that_is_not_the_clients_certificate_is_reported_at_once() {
    let server = TestServer::start().await;
    let (alice, _) = crate::harness::speaker(&server, "dtls", "alice").await;
    let options = sfu_client::ClientOptions {
        munge_offer: Some(wrong_fingerprint),
        ..Default::default()
    };
    let mallory = sfu_client::Client::connect_with(&server.ws_url(), options)
        .await
        .expect("connects");
    let mallory_id = mallory
        .join("dtls", "mallory", sfu_proto::signaling::Role::Speaker)
        .await
        .expect("joins")
        .peer_id;
    let started = std::time::Instant::now();
    // The answer comes before DTLS: the handshake fails after it.
    mallory
        .publish(sfu_client::PublishOptions::default())
        .await
        .expect("answered");
    let s = mallory
        .wait_for(Duration::from_secs(8), "dtls_failed", |s| {
            s.has_error(sfu_proto::signaling::ErrorCode::DtlsFailed)
        })
        .await
        .expect("the failed handshake is reported");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "reported after {took:?}, not at the connect deadline: {:?}",
        s.errors
    );
    // The room goes on without mallory: alice hears that she left.
    alice
        .wait_for(Duration::from_secs(5), "mallory gone", |s| {
            s.saw_peer_left(&mallory_id)
        })
        .await
        .expect("mallory leaves the room");
    // A client whose fingerprint is its own connects as ever.
    let (bob, _) = crate::harness::speaker(&server, "dtls", "bob").await;
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "bob's publish connection up",
        |s| s.publish_state == "connected",
    )
    .await
    .expect("bob connects");
    server.stop().await;
}

/// A publish offer whose video section lists `formats` payload types, each
/// with an `rtpmap` line: `rtc` parses a section's attributes again for each
/// of its payload types, so applying this costs formats squared.
fn payload_type_flood(formats: usize) -> String {
    let pts: Vec<String> = (0..formats).map(|i| (96 + i % 32).to_string()).collect();
    let mut sdp = video_offer!("", "a=msid:stream-1 track-1\r\n").replace(
        "UDP/TLS/RTP/SAVPF \r\n",
        &format!("UDP/TLS/RTP/SAVPF {}\r\n", pts.join(" ")),
    );
    for pt in &pts {
        sdp.push_str(&format!("a=rtpmap:{pt} VP8/90000\r\n"));
    }
    sdp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_too_complex_or_too_frequent_are_refused_and_a_call_carries_on() {
    let server = TestServer::start().await;
    let (alice, alice_id) = crate::harness::speaker(&server, "complex", "alice").await;
    let (bob, _) = crate::harness::speaker(&server, "complex", "bob").await;
    let received =
        |s: &sfu_client::Snapshot| s.track_from(&alice_id, "video").map_or(0, |t| t.packets);
    bob.wait_for(crate::harness::MEDIA_DEADLINE, "media from alice", |s| {
        received(s) >= 50
    })
    .await
    .expect("media flows");

    let mut ws = RawSocket::connect(&server).await;
    ws.join("complex", "flood").await;
    // 1,500 payload types in 60 KB (under the 64 KiB frame limit): seconds
    // of the media loop's time if applied, refused before `rtc` reads it.
    let flood = payload_type_flood(1500);
    assert!(flood.len() < 62_000, "{} bytes", flood.len());
    let sent = std::time::Instant::now();
    ws.send_json(json!({"type":"offer","pc":"publish","sdp":flood}))
        .await;
    // (The server's subscribe offer for alice and bob comes first.)
    let refusal = ws
        .recv_until("the refusal", |m| matches!(m, ServerMessage::Error { .. }))
        .await;
    assert!(
        matches!(&refusal, ServerMessage::Error { code, message }
            if code.as_str() == "bad_sdp" && message.contains("1500 payload types (at most 64)")),
        "the refusal names the bound: {refusal:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "refused before it is applied, not after: {:?}",
        sent.elapsed()
    );

    // Offers in a burst: past a few, each is refused without being applied.
    for _ in 0..8 {
        ws.send_json(json!({"type":"offer","pc":"publish","sdp":MSID_ONLY_OFFER}))
            .await;
    }
    let limited = ws
        .recv_until(
            "an offer refused as too frequent",
            |m| matches!(m, ServerMessage::Error { code, .. } if code.as_str() == "rate_limited"),
        )
        .await;
    assert!(
        matches!(&limited, ServerMessage::Error { message, .. } if message.contains("too many offers")),
        "{limited:?}"
    );

    // The call carried on.
    let before = received(&bob.snapshot());
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "more media from alice",
        |s| received(s) >= before + 50,
    )
    .await
    .expect("media still flows");
    drop(alice);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_that_break_the_framing_are_closed_and_a_call_carries_on() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let tcp = server.media.tcp_addrs();
    assert_eq!(
        tcp.len(),
        server.media.workers(),
        "ICE-TCP is on by default, a port per worker: {tcp:?}"
    );
    let (alice, alice_id) = crate::harness::speaker(&server, "held", "alice").await;
    let (bob, _) = crate::harness::speaker(&server, "held", "bob").await;
    let packets =
        |s: &sfu_client::Snapshot, id: &str| s.track_from(id, "video").map_or(0, |t| t.packets);
    bob.wait_for(crate::harness::MEDIA_DEADLINE, "media from alice", |s| {
        packets(s, &alice_id) >= 50
    })
    .await
    .expect("media flows");

    // An empty frame, and a frame longer than any datagram: closed at once.
    for header in [[0u8, 0], 5000u16.to_be_bytes()] {
        let mut s = tokio::net::TcpStream::connect(tcp[0])
            .await
            .expect("connects");
        s.write_all(&header).await.expect("written");
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "a connection sending frame header {header:?} stayed open"
        );
    }
    // A well-framed datagram that is no one's: dropped, counted, and the
    // connection stays (its client may yet send a STUN check).
    let unroutable =
        |m: &crate::metrics::Exposition| m.get("sfud_dropped_packets_total{cause=\"unroutable\"}");
    let before = unroutable(&crate::metrics::scrape(&server).await);
    let mut junk = tokio::net::TcpStream::connect(tcp[0])
        .await
        .expect("connects");
    let mut frame = 100u16.to_be_bytes().to_vec();
    frame.extend([0x80; 100]);
    junk.write_all(&frame).await.expect("written");
    let deadline = tokio::time::Instant::now() + crate::harness::DEADLINE;
    while unroutable(&crate::metrics::scrape(&server).await) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the junk datagram was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !closed_within(&mut junk, Duration::from_millis(300)).await,
        "a well-framed connection was closed"
    );

    // The call went on.
    let now = packets(&bob.snapshot(), &alice_id);
    bob.wait_for(
        crate::harness::MEDIA_DEADLINE,
        "media from alice still",
        |s| packets(s, &alice_id) >= now + 50,
    )
    .await
    .expect("media still flows");
    drop(alice);
    server.stop().await;
}

/// A free TCP port on loopback (and, likely, its UDP twin).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_answers_a_tls_client_and_closes_one_that_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().expect("tempdir");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("written");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("written");
    let mut config = crate::harness::test_config();
    config.turn.enabled = true;
    config.turn.port = free_port();
    config.turn.tls_port = free_port();
    config.turn.tls_cert = Some(cert);
    config.turn.tls_key = Some(key);
    let server = TestServer::start_with(config.clone()).await;
    let tls_at = std::net::SocketAddr::from(([127, 0, 0, 1], config.turn.tls_port));

    // The join hands out the turns: URL beside the others.
    let mut ws = RawSocket::connect(&server).await;
    let joined = ws.try_join(json!({"room": "tls", "name": "alice"})).await;
    let ServerMessage::Joined { ice_servers, .. } = joined else {
        panic!("not joined: {joined:?}");
    };
    let turns = format!("turns:{tls_at}?transport=tcp");
    assert!(
        ice_servers.iter().any(|s| s.urls.contains(&turns)),
        "{turns} not in {ice_servers:?}"
    );

    // Plain STUN where a TLS handshake belongs: an alert, and closed.
    let mut plain = tokio::net::TcpStream::connect(tls_at)
        .await
        .expect("connects");
    plain
        .write_all(b"\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl")
        .await
        .expect("written");
    let mut alert = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), plain.read_to_end(&mut alert))
        .await
        .expect("a connection that is not TLS is closed at once")
        .expect("read");
    assert_eq!(alert.first(), Some(&0x15), "a TLS alert record: {alert:?}");

    // A TLS client that trusts the certificate: a STUN Binding request is
    // answered by the TURN server behind the TLS end.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).expect("a root");
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let tcp = tokio::net::TcpStream::connect(tls_at)
        .await
        .expect("connects");
    let mut tls = tokio::time::timeout(crate::harness::DEADLINE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend(*b"sfud-tls-txn");
    tls.write_all(&binding).await.expect("written");
    let mut header = [0u8; 20];
    tokio::time::timeout(crate::harness::DEADLINE, tls.read_exact(&mut header))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(&header[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&header[8..], b"sfud-tls-txn", "for our transaction");
    drop(ws);
    server.stop().await;
}
