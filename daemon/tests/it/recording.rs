//! Recording end to end: publishers of real VP8 and Opus (encoded by a
//! `gst-launch-1.0` per publisher and relayed as RTP by `sfu-client`), the
//! control socket's `record` requests, and the files checked with
//! `ffprobe` (streams, duration, audio/video start) and `gst-discoverer-1.0`.
//! Daemon-level cases (SIGTERM, SIGKILL, a full disk) run the real binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use sfu_client::{Client, MediaSource, PublishOptions};
use sfu_proto::control::{frame, Recording, Request, Response, PROTOCOL_VERSION};
use sfu_proto::signaling::Role;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::harness::{test_config, TestServer, DEADLINE};

/// How long each test records.
const RECORD_FOR: Duration = Duration::from_secs(5);
/// Allowed difference between a file's duration and the time recorded.
const DURATION_SLACK: f64 = 0.5;
/// Allowed difference between the first audio and the first video frame.
const AV_START_SLACK: f64 = 0.1;

/// A free UDP port on loopback (released for the caller to bind).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A GStreamer encoder sending VP8 (a keyframe every 10 frames, as the
/// client cannot forward PLIs to it) and Opus as RTP to two local ports.
struct Encoder {
    _child: Child,
}

impl Encoder {
    fn spawn(video_port: u16, audio_port: u16) -> Encoder {
        let pipeline = format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 \
             ! vp8enc deadline=1 keyframe-max-dist=10 ! rtpvp8pay pt=96 mtu=1200 \
             ! udpsink host=127.0.0.1 port={video_port} \
             audiotestsrc is-live=true wave=ticks ! audio/x-raw,rate=48000,channels=2 \
             ! opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port={audio_port}"
        );
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("gst-launch-1.0 runs (install gstreamer1.0-tools)");
        Encoder { _child: child }
    }
}

/// A participant publishing real media.
struct Publisher {
    client: Client,
    id: String,
    _encoder: Encoder,
}

async fn publisher(ws: &str, room: &str, name: &str) -> Publisher {
    let client = Client::connect(ws).await.expect("connects");
    let joined = client.join(room, name, Role::Speaker).await.expect("joins");
    let (video_port, audio_port) = (free_udp_port(), free_udp_port());
    client
        .publish(PublishOptions {
            source: MediaSource::RtpUdp {
                video_port,
                audio_port,
            },
            ..PublishOptions::default()
        })
        .await
        .expect("publishes");
    let encoder = Encoder::spawn(video_port, audio_port);
    let publisher = Publisher {
        client,
        id: joined.peer_id,
        _encoder: encoder,
    };
    publisher
        .client
        .wait_for(DEADLINE, "media relayed to the server", |s| {
            s.sent_video_packets > 30 && s.sent_audio_packets > 10
        })
        .await
        .expect("the encoder's RTP is relayed");
    publisher
}

/// One control request over the daemon's socket.
async fn control(socket: &Path, request: Request) -> Response {
    let mut stream = UnixStream::connect(socket).await.expect("control socket");
    for r in [
        Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: "recording test".into(),
        },
        request,
    ] {
        let bytes = frame::encode(&r).expect("encodes");
        stream.write_all(&bytes).await.expect("written");
        let mut header = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut header))
            .await
            .expect("an answer within 30 s")
            .expect("answer header");
        let mut body = vec![0u8; frame::body_len(header).expect("sane length")];
        stream.read_exact(&mut body).await.expect("answer body");
        let response: Response = frame::decode(&body).expect("a response");
        if matches!(r, Request::Hello { .. }) {
            assert!(matches!(response, Response::Hello { .. }), "{response:?}");
        } else {
            return response;
        }
    }
    unreachable!("the loop returns the second answer")
}

async fn record_start(socket: &Path, room: &str) -> Recording {
    match control(socket, Request::RecordStart { room: room.into() }).await {
        Response::RecordingStarted(r) => r,
        other => panic!("record start failed: {other:?}"),
    }
}

async fn record_stop(socket: &Path, room: &str) -> Recording {
    match control(socket, Request::RecordStop { room: room.into() }).await {
        Response::RecordingStopped(r) => r,
        other => panic!("record stop failed: {other:?}"),
    }
}

async fn record_list(socket: &Path) -> Vec<Recording> {
    match control(socket, Request::RecordList).await {
        Response::Recordings { recordings } => recordings,
        other => panic!("record list failed: {other:?}"),
    }
}

fn expect_error(response: Response, code: &str) -> String {
    match response {
        Response::Error(e) => {
            assert_eq!(e.code.as_str(), code, "{}", e.message);
            e.message
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// What ffprobe says about a file.
struct Probe {
    codecs: Vec<String>,
    duration: f64,
    video_start: f64,
    audio_start: f64,
    video_frames: u64,
}

async fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "format=duration:stream=codec_name,codec_type,start_time,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .await
        .expect("ffprobe runs (install ffmpeg)");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe printed no JSON for {}: {e}", path.display()));
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let start = |kind: &str| {
        streams
            .iter()
            .find(|s| s["codec_type"] == kind)
            .and_then(|s| s["start_time"].as_str()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Probe {
        codecs: streams
            .iter()
            .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
            .collect(),
        duration: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(f64::NAN),
        video_start: start("video"),
        audio_start: start("audio"),
        video_frames: streams
            .iter()
            .find(|s| s["codec_type"] == "video")
            .and_then(|s| s["nb_read_frames"].as_str()?.parse().ok())
            .unwrap_or(0),
    }
}

/// What gst-discoverer-1.0 prints about a file.
async fn discover(path: &Path) -> String {
    let out = Command::new("gst-discoverer-1.0")
        .arg(path)
        .output()
        .await
        .expect("gst-discoverer-1.0 runs (install gstreamer1.0-plugins-base-apps)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks a finalized file: VP8 and Opus, about `recorded` long, audio and
/// video starting together. `recorded` runs from the start's reply to the
/// stop's request; `stop_took` is how long the stop then took to answer,
/// which on a loaded machine may still add media to the file.
async fn assert_playable(path: &Path, recorded: Duration, stop_took: Duration) -> Probe {
    let p = ffprobe(path).await;
    let name = path.display();
    assert!(
        p.codecs.contains(&"vp8".to_owned()) && p.codecs.contains(&"opus".to_owned()),
        "{name}: streams {:?}",
        p.codecs
    );
    let recorded = recorded.as_secs_f64();
    let longest = recorded + stop_took.as_secs_f64() + DURATION_SLACK;
    assert!(
        p.duration >= recorded - DURATION_SLACK && p.duration <= longest,
        "{name}: duration {:.3} s, recorded {recorded:.3} s, stop took {:.3} s",
        p.duration,
        stop_took.as_secs_f64()
    );
    assert!(
        (p.video_start - p.audio_start).abs() <= AV_START_SLACK,
        "{name}: video starts at {:.3} s, audio at {:.3} s",
        p.video_start,
        p.audio_start
    );
    let discovered = discover(path).await;
    assert!(
        discovered.contains("VP8") && discovered.contains("Opus"),
        "{name}: gst-discoverer says {discovered}"
    );
    p
}

fn read_manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("session.json")).expect("session.json exists");
    serde_json::from_str(&text).expect("session.json is JSON")
}

fn recording_config(dir: &Path) -> sfud::config::Config {
    let mut config = test_config();
    config.recording.dir = dir.to_owned();
    config
}

/// Both publishers' tracks reached the room.
async fn wait_for_tracks(server: &TestServer, room: &str, tracks: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(d) = server.rooms.show(room).await {
            if d.summary.tracks >= tracks {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{tracks} tracks never published in {room}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_stop_leaves_playable_files_in_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(recording_config(dir.path())).await;
    let ws = server.ws_url();
    let alice = publisher(&ws, "rec", "alice").await;
    let bob = publisher(&ws, "rec", "bob").await;
    wait_for_tracks(&server, "rec", 4).await;
    let keyframe_requests_before = alice.client.snapshot().keyframe_requests;

    let started = record_start(&server.socket, "rec").await;
    let t0 = Instant::now();
    assert_eq!(started.state, "recording");
    let again = control(&server.socket, Request::RecordStart { room: "rec".into() }).await;
    expect_error(again, "already_recording");
    let unknown = control(
        &server.socket,
        Request::RecordStart {
            room: "nope".into(),
        },
    )
    .await;
    expect_error(unknown, "unknown_room");
    let listed = record_list(&server.socket).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].room, "rec");

    tokio::time::sleep(RECORD_FOR).await;
    let recorded = t0.elapsed();
    let stopped = record_stop(&server.socket, "rec").await;
    let stop_took = t0.elapsed() - recorded;
    assert_eq!(stopped.state, "stopped", "{stopped:?}");
    assert_eq!(stopped.files.len(), 2, "{stopped:?}");
    let not_recording = control(&server.socket, Request::RecordStop { room: "rec".into() }).await;
    expect_error(not_recording, "not_recording");
    assert!(record_list(&server.socket).await.is_empty());

    let session = PathBuf::from(&stopped.dir);
    assert!(
        session.starts_with(dir.path().join("rec")),
        "{}",
        session.display()
    );
    for (p, name) in [(&alice, "alice"), (&bob, "bob")] {
        let file = session.join(format!("{name}-{}.webm", p.id));
        let probe = assert_playable(&file, recorded, stop_took).await;
        eprintln!(
            "{name}: duration {:.3} s of {:.3} s recorded, video starts {:.3}, audio {:.3}",
            probe.duration,
            recorded.as_secs_f64(),
            probe.video_start,
            probe.audio_start
        );
    }
    let manifest = read_manifest(&session);
    assert_eq!(manifest["room"], "rec");
    assert_eq!(manifest["state"], "stopped");
    assert_eq!(manifest["end_reason"], "stopped");
    assert!(manifest["ended"].is_string());
    assert!(manifest["time_base"]["zero_unix_ms"].as_u64().unwrap_or(0) > 0);
    let participants = manifest["participants"].as_array().expect("participants");
    assert_eq!(participants.len(), 2);
    for p in participants {
        assert_eq!(p["state"], "finalized", "{p}");
        assert!(p["offset_ms"].as_u64().is_some(), "{p}");
        let codecs: Vec<&str> = p["tracks"]
            .as_array()
            .expect("tracks")
            .iter()
            .filter_map(|t| t["codec"].as_str())
            .collect();
        assert_eq!(codecs.len(), 2, "{p}");
    }
    // Starting a recording asked the publisher for a keyframe.
    assert!(alice.client.snapshot().keyframe_requests > keyframe_requests_before);
    server.stop().await;
}

/// Polls `record list` until `pred` holds for the room's entry.
async fn wait_for_recording(
    socket: &Path,
    room: &str,
    what: &str,
    within: Duration,
    pred: impl Fn(&Recording) -> bool,
) -> Recording {
    let deadline = Instant::now() + within;
    loop {
        let list = record_list(socket).await;
        if let Some(r) = list.iter().find(|r| r.room == room && pred(r)) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "{what} never happened: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_are_recorded_from_their_join_and_finalized_when_they_leave() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(recording_config(dir.path())).await;
    let ws = server.ws_url();
    let alice = publisher(&ws, "half", "alice").await;
    wait_for_tracks(&server, "half", 2).await;
    record_start(&server.socket, "half").await;
    let t0 = Instant::now();
    tokio::time::sleep(RECORD_FOR / 2).await;

    let joining = Instant::now();
    let bob = publisher(&ws, "half", "bob").await;
    tokio::time::sleep(RECORD_FOR / 2).await;

    // Alice leaves: her file is final at once, the recording goes on.
    alice.client.leave().await.expect("leave sent");
    let left = Instant::now();
    let alice_id = alice.id.clone();
    wait_for_recording(
        &server.socket,
        "half",
        "alice's file finalized",
        DEADLINE,
        |r| {
            r.state == "recording"
                && r.files
                    .iter()
                    .any(|f| f.peer == alice_id && f.state == "finalized")
        },
    )
    .await;
    let stopped = record_stop(&server.socket, "half").await;
    let stop = Instant::now();
    assert_eq!(stopped.state, "stopped", "{stopped:?}");
    let session = PathBuf::from(&stopped.dir);

    let alice_file = session.join(format!("alice-{}.webm", alice.id));
    assert_playable(&alice_file, left - t0, Duration::ZERO).await;
    // Bob's file covers the time from his join (his media starts flowing a
    // little after `publisher` began connecting him).
    let bob_file = session.join(format!("bob-{}.webm", bob.id));
    let p = ffprobe(&bob_file).await;
    let since_join = (stop - joining).as_secs_f64();
    assert!(
        p.duration <= since_join + DURATION_SLACK && p.duration >= since_join - 1.5,
        "bob: duration {:.3} s, {since_join:.3} s since he started joining",
        p.duration
    );
    assert!((p.video_start - p.audio_start).abs() <= AV_START_SLACK);

    let manifest = read_manifest(&session);
    let entry = |id: &str| {
        manifest["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["peer"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {manifest}"))
    };
    let (a, b) = (entry(&alice.id), entry(&bob.id));
    let joined_at = (joining - t0).as_millis() as f64;
    let offset = b["offset_ms"].as_f64().expect("bob's offset");
    assert!(
        offset >= joined_at && offset <= joined_at + 2000.0,
        "bob's file starts at session time {offset} ms; he joined at {joined_at} ms"
    );
    assert!(
        a["offset_ms"].as_f64().expect("alice's offset") < 1000.0,
        "{a}"
    );
    assert!(a["left_ms"].as_f64().expect("alice left") <= (left - t0).as_millis() as f64 + 1500.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_directory_fails_the_recording_not_the_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file where the recordings should go").expect("file written");
    // Root ignores permission bits, not a path through a regular file.
    let server = TestServer::start_with(recording_config(&blocker.join("recordings"))).await;
    let ws = server.ws_url();
    let alice = publisher(&ws, "ro", "alice").await;
    let bob = Client::connect(&ws).await.expect("connects");
    bob.join("ro", "bob", Role::Speaker).await.expect("joins");
    bob.wait_for(DEADLINE, "alice's video", |s| {
        s.packets_from(&alice.id, "video") > 10
    })
    .await
    .expect("bob receives alice");

    let refused = control(&server.socket, Request::RecordStart { room: "ro".into() }).await;
    let message = expect_error(refused, "recording_failed");
    assert!(
        message.contains("not-a-directory") && message.contains("Not a directory"),
        "{message}"
    );
    let listed = record_list(&server.socket).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, "failed");
    assert!(listed[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("Not a directory")));

    // The call goes on.
    let before = bob.snapshot().packets_from(&alice.id, "video");
    bob.wait_for(DEADLINE, "more of alice's video", |s| {
        s.packets_from(&alice.id, "video") > before + 30
    })
    .await
    .expect("forwarding continues");
    // Stopping clears the failed entry; a second stop has nothing to stop.
    let cleared = record_stop(&server.socket, "ro").await;
    assert_eq!(cleared.state, "failed");
    let again = control(&server.socket, Request::RecordStop { room: "ro".into() }).await;
    expect_error(again, "not_recording");
    server.stop().await;
}

/// The real `sfud` binary, started on a configuration in `dir`.
struct Daemon {
    child: Child,
    http: SocketAddr,
    socket: PathBuf,
}

impl Daemon {
    /// Starts sfud recording into `recordings`; with `disk_bytes`, inside a
    /// private mount namespace where `recordings` is a tmpfs that small.
    async fn spawn(dir: &Path, recordings: &Path, disk_bytes: Option<u64>) -> Daemon {
        std::fs::create_dir_all(recordings).expect("recording dir");
        let socket = dir.join("sfud.sock");
        let config = dir.join("sfud.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n\n[rtc]\nudp_port = 0\nbind_ips = [\"127.0.0.1\"]\n\n\
                 [control]\nsocket = \"{}\"\n\n[recording]\ndir = \"{}\"\n\n[log]\nformat = \"console\"\n",
                socket.display(),
                recordings.display()
            ),
        )
        .expect("config written");
        let sfud = env!("CARGO_BIN_EXE_sfud");
        let mut command = match disk_bytes {
            None => {
                let mut c = Command::new(sfud);
                c.arg("--config").arg(&config);
                c
            }
            Some(bytes) => {
                let mut c = Command::new("unshare");
                c.args(["-m", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={bytes} tmpfs \"$0\" && exec \"$1\" --config \"$2\""
                    ))
                    .arg(recordings)
                    .arg(sfud)
                    .arg(&config);
                c
            }
        };
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sfud starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let line = tokio::time::timeout(DEADLINE, stdout.next_line())
            .await
            .expect("start-up line within the deadline")
            .expect("stdout readable")
            .expect("start-up line printed");
        let http = line
            .strip_prefix("sfud: demo page at http://")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(addr, _)| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Daemon {
            child,
            http,
            socket,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("daemon still running");
        kill(Pid::from_raw(pid as i32), signal).expect("signal sent");
    }

    async fn exit_status(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("sfud exits within 20 s")
            .expect("exit status")
    }
}

/// The one session directory of `room` under `recordings`.
fn session_dir(recordings: &Path, room: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(recordings.join(room))
        .expect("room directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

/// Two publishers recorded for [`RECORD_FOR`] by the real binary, then `signal`.
async fn record_then_signal(signal: Signal) -> (tempfile::TempDir, PathBuf, Duration, [String; 2]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let mut daemon = Daemon::spawn(dir.path(), &recordings, None).await;
    let ws = daemon.ws_url();
    let alice = publisher(&ws, "sig", "alice").await;
    let bob = publisher(&ws, "sig", "bob").await;
    record_start(&daemon.socket, "sig").await;
    let t0 = Instant::now();
    tokio::time::sleep(RECORD_FOR).await;
    daemon.signal(signal);
    let recorded = t0.elapsed();
    let status = daemon.exit_status().await;
    if signal == Signal::SIGTERM {
        assert!(status.success(), "sfud exited with {status}");
    }
    let session = session_dir(&recordings, "sig");
    let files = [
        format!("alice-{}.webm", alice.id),
        format!("bob-{}.webm", bob.id),
    ];
    (dir, session, recorded, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finalizes_every_file() {
    let (_dir, session, recorded, files) = record_then_signal(Signal::SIGTERM).await;
    for file in &files {
        assert_playable(&session.join(file), recorded, Duration::ZERO).await;
    }
    let manifest = read_manifest(&session);
    assert_eq!(manifest["state"], "stopped");
    assert_eq!(manifest["end_reason"], "shutdown");
    let participants = manifest["participants"].as_array().expect("participants");
    assert!(
        participants.iter().all(|p| p["state"] == "finalized"),
        "{manifest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_partial_files_still_play() {
    let (_dir, session, recorded, files) = record_then_signal(Signal::SIGKILL).await;
    for file in &files {
        let path = session.join(file);
        let p = ffprobe(&path).await;
        assert!(
            p.codecs.contains(&"vp8".to_owned()) && p.codecs.contains(&"opus".to_owned()),
            "{file}: {:?}",
            p.codecs
        );
        // All but the last second or so decodes.
        let frames = 30.0 * (recorded.as_secs_f64() - 1.5);
        assert!(
            p.video_frames as f64 >= frames,
            "{file}: {} video frames decodable, expected at least {frames:.0}",
            p.video_frames
        );
        let decoded = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .await
            .expect("ffmpeg runs");
        assert!(decoded.status.success(), "{file}: {decoded:?}");
    }
    // The manifest was never closed.
    assert_eq!(read_manifest(&session)["state"], "recording");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_recording_not_the_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let daemon = Daemon::spawn(dir.path(), &recordings, Some(128 * 1024)).await;
    let ws = daemon.ws_url();
    let alice = publisher(&ws, "full", "alice").await;
    let bob = publisher(&ws, "full", "bob").await;
    record_start(&daemon.socket, "full").await;
    let failed = wait_for_recording(
        &daemon.socket,
        "full",
        "the recording to fail on a full disk",
        Duration::from_secs(30),
        |r| r.state == "failed",
    )
    .await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("No space left on device"), "{failed:?}");

    // The call goes on: bob still receives alice.
    let before = bob.client.snapshot().packets_from(&alice.id, "video");
    bob.client
        .wait_for(DEADLINE, "more of alice's video", |s| {
            s.packets_from(&alice.id, "video") > before + 30
        })
        .await
        .expect("forwarding continues after the recording failed");
    let stopped = record_stop(&daemon.socket, "full").await;
    assert_eq!(stopped.state, "failed");
    assert!(record_list(&daemon.socket).await.is_empty());
}
