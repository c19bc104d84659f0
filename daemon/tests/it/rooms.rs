//! Mesh rooms, speakers and listeners, and who may join.

use std::time::Duration;

use serde_json::json;
use sfu_client::{Client, PublishOptions, Snapshot};
use sfu_proto::signaling::{ClientMessage, ErrorCode, Role, RoomMode, ServerMessage};

use crate::harness::{speaker, test_config, RawSocket, TestServer, MEDIA_DEADLINE};

fn error_code(m: &ServerMessage) -> Option<&'static str> {
    match m {
        ServerMessage::Error { code, .. } => Some(code.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn mesh_rooms_relay_signals_between_members_only_and_carry_no_media() {
    let server = TestServer::start().await;
    let mut a = RawSocket::connect(&server).await;
    let joined = a
        .try_join(json!({"room":"mesh-a","name":"a","mode":"mesh"}))
        .await;
    let ServerMessage::Joined {
        mode,
        peer_id: a_id,
        ..
    } = joined
    else {
        panic!("expected joined, got {joined:?}")
    };
    assert_eq!(mode, RoomMode::Mesh);
    let mut b = RawSocket::connect(&server).await;
    let b_id = b.join("mesh-a", "b").await;
    let mut c = RawSocket::connect(&server).await;
    let c_id = c.join("mesh-a", "c").await;

    // Offers, answers and candidates travel peer to peer, tagged with the sender.
    let offer = json!({"sdp":{"type":"offer","sdp":"v=0 (from c)"}});
    c.send_json(json!({"type":"signal","to":a_id,"data":offer}))
        .await;
    c.send_json(json!({"type":"signal","to":b_id,"data":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}}}))
        .await;
    let got = a
        .recv_until("signal from c", |m| {
            matches!(m, ServerMessage::Signal { .. })
        })
        .await;
    assert_eq!(
        got,
        ServerMessage::Signal {
            from: c_id.clone(),
            data: offer
        }
    );
    let got = b
        .recv_until("signal from c", |m| {
            matches!(m, ServerMessage::Signal { .. })
        })
        .await;
    assert!(matches!(got, ServerMessage::Signal { ref from, .. } if *from == c_id));
    a.send_json(
        json!({"type":"signal","to":c_id,"data":{"sdp":{"type":"answer","sdp":"v=0 (from a)"}}}),
    )
    .await;
    c.recv_until(
        "answer from a",
        |m| matches!(m, ServerMessage::Signal { from, .. } if *from == a_id),
    )
    .await;

    // Server peer connections do not exist in a mesh room.
    a.send_json(json!({"type":"offer","pc":"publish","sdp":"v=0"}))
        .await;
    a.expect_error("wrong_mode").await;
    // A peer outside the room cannot be reached, and the room's mode holds.
    let mut outsider = RawSocket::connect(&server).await;
    let outsider_id = outsider.join("mesh-b", "x").await;
    a.send_json(json!({"type":"signal","to":outsider_id,"data":{}}))
        .await;
    a.expect_error("unknown_peer").await;
    let mut d = RawSocket::connect(&server).await;
    let reply = d
        .try_join(json!({"room":"mesh-a","name":"d","mode":"sfu"}))
        .await;
    assert_eq!(error_code(&reply), Some("wrong_mode"));
    // And `signal` is refused in an SFU room.
    let mut e = RawSocket::connect(&server).await;
    e.join("sfu-room", "e").await;
    e.send_json(json!({"type":"signal","to":a_id,"data":{}}))
        .await;
    e.expect_error("wrong_mode").await;

    let stats = server.media.stats().await.expect("media stats");
    assert_eq!(
        stats.datagrams_in, 0,
        "a mesh room sends no media through the server"
    );
    assert_eq!(stats.connections, 0);
    server.stop().await;
}

async fn listener(server: &TestServer, room: &str, name: &str) -> (Client, String) {
    let client = Client::connect(&server.ws_url()).await.expect("connects");
    let joined = client
        .join(room, name, Role::Listener)
        .await
        .expect("joins");
    (client, joined.peer_id)
}

/// The publishers whose media this client receives, sorted.
fn sources(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = s
        .remote_tracks
        .iter()
        .filter(|t| !t.ended && t.packets > 0)
        .map(|t| t.stream_id.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn gets_both_kinds(s: &Snapshot, from: &str) -> bool {
    s.packets_from(from, "video") >= 30 && s.packets_from(from, "audio") >= 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_receive_only_speakers_and_roles_change_live() {
    let server = TestServer::start().await;
    let (s1, s1_id) = speaker(&server, "stage", "s1").await;
    let (s2, s2_id) = speaker(&server, "stage", "s2").await;
    let mut listeners = Vec::new();
    for name in ["l1", "l2", "l3"] {
        listeners.push(listener(&server, "stage", name).await);
    }
    let mut speakers_sorted = vec![s1_id.clone(), s2_id.clone()];
    speakers_sorted.sort();
    for (l, id) in &listeners {
        let s = l
            .wait_for(MEDIA_DEADLINE, "both speakers", |s| {
                gets_both_kinds(s, &s1_id) && gets_both_kinds(s, &s2_id)
            })
            .await
            .expect("listener receives");
        assert_eq!(
            sources(&s),
            speakers_sorted,
            "{id} receives exactly the speakers"
        );
        assert_eq!(s.remote_tracks.iter().filter(|t| !t.ended).count(), 4);
    }
    let s = s1
        .wait_for(MEDIA_DEADLINE, "s2", |s| gets_both_kinds(s, &s2_id))
        .await
        .expect("speaker receives");
    assert_eq!(
        sources(&s),
        vec![s2_id.clone()],
        "a speaker receives the other speaker only"
    );

    // A listener may not publish.
    let (l1, l1_id) = &listeners[0];
    let err = l1
        .publish(PublishOptions::default())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not_allowed"), "{err}");

    // Demote s2: its tracks stop being forwarded, everyone hears role_changed.
    server
        .rooms
        .set_role("stage", &s2_id, Role::Listener)
        .await
        .expect("role changed");
    let changed = |id: &str, role: Role| {
        let id = id.to_owned();
        move |s: &Snapshot| {
            s.messages.iter().any(|m| {
                matches!(m, ServerMessage::RoleChanged { peer_id, role: r } if *peer_id == id && *r == role)
            })
        }
    };
    for c in [&s1, &s2, l1] {
        c.wait_for(
            Duration::from_secs(5),
            "role_changed for s2",
            changed(&s2_id, Role::Listener),
        )
        .await
        .expect("told");
    }
    l1.wait_for(
        Duration::from_secs(5),
        "s2's tracks gone from the offer",
        |s| s.offered_publishers() == vec![s1_id.as_str()],
    )
    .await
    .expect("renegotiated without s2");
    s1.wait_for(
        Duration::from_secs(5),
        "s2's tracks gone from s1's offer",
        |s| s.offered_publishers().is_empty(),
    )
    .await
    .expect("renegotiated without s2");

    // Promote l1: it may publish now and everyone receives it.
    server
        .rooms
        .set_role("stage", l1_id, Role::Speaker)
        .await
        .expect("role changed");
    l1.wait_for(
        Duration::from_secs(5),
        "role_changed for l1",
        changed(l1_id, Role::Speaker),
    )
    .await
    .expect("told");
    l1.publish(PublishOptions::default())
        .await
        .expect("a promoted listener publishes");
    let l2 = &listeners[1].0;
    l2.wait_for(MEDIA_DEADLINE, "media from l1", |s| {
        gets_both_kinds(s, l1_id)
    })
    .await
    .expect("l1 forwarded");
    s1.wait_for(MEDIA_DEADLINE, "media from l1", |s| {
        gets_both_kinds(s, l1_id)
    })
    .await
    .expect("l1 forwarded to the speaker");
    // An unknown peer is refused.
    let err = server
        .rooms
        .set_role("stage", "nobody", Role::Speaker)
        .await
        .expect_err("unknown");
    assert_eq!(err.code, ErrorCode::UnknownPeer);

    for (c, _) in listeners {
        c.close().await;
    }
    s1.close().await;
    s2.close().await;
    server.stop().await;
}

const KEY_OLD: &str = "old-secret-old-secret-old-secret-0001";
const KEY_NEW: &str = "new-secret-new-secret-new-secret-0002";

fn token_config(keys: &[(&str, &str)]) -> sfud::config::Config {
    let mut config = test_config();
    config.auth.mode = sfud::config::AuthMode::Token;
    config.auth.keys = keys
        .iter()
        .map(|(id, secret)| sfud::config::AuthKey {
            id: (*id).into(),
            secret: (*secret).into(),
        })
        .collect();
    config
}

#[tokio::test]
async fn join_tokens_are_checked_and_keys_rotate() {
    let config = token_config(&[("old", KEY_OLD)]);
    let server = TestServer::start_with(config).await;
    let hour = Duration::from_secs(3600);
    let token = |room: &str, name: &str, dup: bool| {
        server
            .gate
            .mint(room, name, Role::Speaker, hour, dup)
            .expect("minted")
    };
    let mut ws = RawSocket::connect(&server).await;
    let join =
        |room: &str, token: Option<String>| json!({"room":room,"name":"ignored","token":token});

    // No token, garbage, another key, expired, another room.
    let r = ws.try_join(join("a", None)).await;
    assert_eq!(error_code(&r), Some("token_required"));
    let r = ws.try_join(join("a", Some("not.a.jwt".into()))).await;
    assert_eq!(error_code(&r), Some("bad_token"));
    let foreign = {
        let other = sfud::auth::Authority::new(&token_config(&[("old", KEY_NEW)]).auth);
        other
            .mint("a", "n", Role::Speaker, hour, false)
            .expect("minted")
    };
    let r = ws.try_join(join("a", Some(foreign))).await;
    assert_eq!(error_code(&r), Some("bad_token"));
    let expired = {
        use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
        let claims = sfud::auth::Claims {
            room: "a".into(),
            name: "n".into(),
            role: Role::Speaker,
            exp: 1_000_000,
            iat: 0,
            allow_duplicate_name: false,
        };
        let header = Header {
            kid: Some("old".into()),
            ..Header::new(Algorithm::HS256)
        };
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(KEY_OLD.as_bytes()),
        )
        .expect("encodes")
    };
    let r = ws.try_join(join("a", Some(expired))).await;
    assert_eq!(error_code(&r), Some("token_expired"));
    let r = ws
        .try_join(join("b", Some(token("a", "alice", false))))
        .await;
    assert_eq!(error_code(&r), Some("wrong_room"));

    // A good token: its name and role win over the join's.
    let r = ws
        .try_join(join("a", Some(token("a", "alice", false))))
        .await;
    let ServerMessage::Joined { peer_id, .. } = r else {
        panic!("expected joined, got {r:?}")
    };
    let mut other = RawSocket::connect(&server).await;
    let r = other
        .try_join(join("a", Some(token("a", "alice", false))))
        .await;
    assert_eq!(error_code(&r), Some("name_taken"));
    let r = other
        .try_join(join("a", Some(token("a", "alice", true))))
        .await;
    assert!(
        matches!(r, ServerMessage::Joined { .. }),
        "a token may allow a shared name: {r:?}"
    );
    let detail = server.rooms.show("a").await.expect("room a");
    assert!(detail
        .members
        .iter()
        .any(|m| m.id == peer_id && m.name == "alice"));

    // A join may leave room and name empty: the token's are used.
    let mut only_token = RawSocket::connect(&server).await;
    let r = only_token
        .try_join(json!({"room": "", "name": "", "token": token("a", "dana", false)}))
        .await;
    let ServerMessage::Joined { room, peer_id, .. } = r else {
        panic!("expected joined, got {r:?}")
    };
    assert_eq!(room, "a");
    let detail = server.rooms.show("a").await.expect("room a");
    assert!(detail
        .members
        .iter()
        .any(|m| m.id == peer_id && m.name == "dana"));

    // Rotation: a token signed with the old key works while it is listed.
    let old_token = token("a", "bob", false);
    server
        .gate
        .reload(&token_config(&[("new", KEY_NEW), ("old", KEY_OLD)]));
    let new_token = token("a", "carol", false);
    let mut s = RawSocket::connect(&server).await;
    assert!(matches!(
        s.try_join(join("a", Some(old_token.clone()))).await,
        ServerMessage::Joined { .. }
    ));
    server.gate.reload(&token_config(&[("new", KEY_NEW)]));
    let mut s2 = RawSocket::connect(&server).await;
    let r = s2.try_join(join("a", Some(old_token))).await;
    assert_eq!(
        error_code(&r),
        Some("bad_token"),
        "the removed key no longer admits"
    );
    assert!(matches!(
        s2.try_join(join("a", Some(new_token))).await,
        ServerMessage::Joined { .. }
    ));
    server.stop().await;
}

#[tokio::test]
async fn open_mode_is_refused_on_a_public_address() {
    let mut config = test_config();
    config.http.listen = "0.0.0.0:0".parse().expect("literal");
    let err = sfud::Server::bind(&config).await.err().expect("refused");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("auth.mode"),
        "the error names the key: {text}"
    );
}

#[tokio::test]
async fn rate_limits_and_origins_refuse_without_disturbing_others() {
    let mut config = test_config();
    config.limits.joins_per_second = 1;
    config.limits.messages_per_second = 5;
    config.http.allowed_origins = Vec::new();
    config.http.allowed_origins = vec!["https://meet.example.org".into()];
    let server = TestServer::start_with(config).await;

    // Joins per second per source: a burst of 2, then refused.
    let mut socks = Vec::new();
    let mut codes = Vec::new();
    for i in 0..4 {
        let mut s = RawSocket::connect(&server).await;
        let r = s
            .try_join(json!({"room":"rl","name":format!("n{i}")}))
            .await;
        codes.push(error_code(&r));
        socks.push(s);
    }
    assert_eq!(
        codes,
        vec![None, None, Some("rate_limited"), Some("rate_limited")]
    );

    // Messages per second per connection: a flood is cut, the socket lives.
    let s = &mut socks[0];
    for _ in 0..30 {
        s.send_json(json!({"type":"candidate","pc":"publish","candidate":null}))
            .await;
    }
    s.recv_until("rate_limited", |m| error_code(m) == Some("rate_limited"))
        .await;

    // A page from another origin cannot open the socket; a listed one can.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url(),
    )
    .expect("request");
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(refused.is_err(), "foreign origin refused");
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        server.ws_url(),
    )
    .expect("request");
    req.headers_mut().insert(
        "origin",
        "https://meet.example.org".parse().expect("header"),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    server.stop().await;
}

/// What the engine reports `peer` receiving, by track.
async fn receiving(server: &TestServer, peer: &str) -> Vec<sfud::media::ReceivedLayerReport> {
    let id = u64::from_str_radix(peer, 16).expect("peer ids are hex");
    let reports = server
        .media
        .reports(vec![sfud::media::PeerId(id)])
        .await
        .expect("media reports");
    reports.into_iter().flat_map(|r| r.receiving).collect()
}

fn settings(track: &str, paused: bool) -> ClientMessage {
    ClientMessage::TrackSettings {
        track: track.to_owned(),
        paused,
        max_width: None,
        max_height: None,
        max_layer: None,
    }
}

#[tokio::test]
async fn a_subscriber_pauses_and_resumes_a_video_track_and_nothing_else() {
    let server = TestServer::start().await;
    let (publisher, pub_id) = speaker(&server, "prefs", "pub").await;
    let (sub, sub_id) = listener(&server, "prefs", "sub").await;
    let s = sub
        .wait_for(MEDIA_DEADLINE, "audio and video from pub", |s| {
            ["audio", "video"]
                .iter()
                .all(|k| s.track_from(&pub_id, k).is_some_and(|t| t.packets >= 50))
        })
        .await
        .expect("media flows");
    let video = s.track_from(&pub_id, "video").expect("video").clone();
    let audio = s.track_from(&pub_id, "audio").expect("audio").clone();

    // Paused: the video stops, the audio goes on, the operator sees it.
    sub.send(&settings(&video.track_id, true))
        .await
        .expect("sends");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = receiving(&server, &sub_id).await;
        if r.iter().any(|r| r.prefs.paused && r.layer.is_none()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "media does not report the track paused: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = sub.snapshot();
    let v0 = before.track_from(&pub_id, "video").expect("video").packets;
    let a0 = before.track_from(&pub_id, "audio").expect("audio").packets;
    // A window to count in, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = sub.snapshot();
    let v1 = after.track_from(&pub_id, "video").expect("video").packets;
    let a1 = after.track_from(&pub_id, "audio").expect("audio").packets;
    assert!(
        v1 - v0 <= 3,
        "a paused track is not forwarded: {v0} -> {v1}"
    );
    assert!(a1 - a0 >= 20, "audio goes on: {a0} -> {a1}");

    // Resumed: at a key frame, which the publisher is asked for.
    let keyframes = after.track_from(&pub_id, "video").expect("video").keyframes;
    sub.send(&settings(&video.track_id, false))
        .await
        .expect("sends");
    sub.wait_for(MEDIA_DEADLINE, "video again, from a key frame", |s| {
        s.track_from(&pub_id, "video")
            .is_some_and(|t| t.packets >= v1 + 50 && t.keyframes > keyframes)
    })
    .await
    .expect("video resumes");
    assert!(receiving(&server, &sub_id).await.is_empty());

    // Tracks the subscriber does not receive, audio, and nonsense are refused.
    for track in [
        audio.track_id.as_str(),
        "video-999",
        "video-",
        "screen",
        "video-18446744073709551616",
    ] {
        let from = sub.message_count();
        sub.send(&settings(track, true)).await.expect("sends");
        let (code, message) = sub
            .next_error(from, Duration::from_secs(5))
            .await
            .expect("an error");
        assert_eq!(code, ErrorCode::UnknownTrack, "{track}: {message}");
    }
    // The publisher receives nothing: its own track is not one it may set.
    let from = publisher.message_count();
    publisher
        .send(&settings(&video.track_id, true))
        .await
        .expect("sends");
    let (code, _) = publisher
        .next_error(from, Duration::from_secs(5))
        .await
        .expect("an error");
    assert_eq!(code, ErrorCode::UnknownTrack);
    // And the video still flows after all that.
    let v2 = sub
        .snapshot()
        .track_from(&pub_id, "video")
        .expect("video")
        .packets;
    sub.wait_for(MEDIA_DEADLINE, "video still flowing", |s| {
        s.track_from(&pub_id, "video")
            .is_some_and(|t| t.packets >= v2 + 50)
    })
    .await
    .expect("video flows");
    server.stop().await;
}

/// Status line and headers of a raw HTTP/1.1 request with an SDP body.
async fn http_post_sdp(
    server: &TestServer,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = "v=0\r\n";
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.http,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connects");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    tokio::time::timeout(crate::harness::DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("a response in time")
        .expect("response read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn whip_and_whep_need_a_token_where_joins_do() {
    let server = TestServer::start_with(token_config(&[("old", KEY_OLD)])).await;
    for path in ["/whip/tokened", "/whep/tokened"] {
        let (status, text) = http_post_sdp(&server, path, None).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("token_required"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
        let (status, text) = http_post_sdp(&server, path, Some("Bearer nonsense")).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("bad_token"), "{text}");
    }
    // Nothing was opened.
    assert!(server.rooms.list().await.is_empty());
    server.stop().await;
}
