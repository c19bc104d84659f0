//! The control plane end to end: the real daemon in-process on a temporary
//! socket, driven by the real `sfuctl` binary (and by raw frames where the
//! test is about the daemon's handling of bad clients).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use sfu_proto::control::frame::{self, MAX_FRAME_BYTES};
use sfu_proto::control::{Request, Response, PROTOCOL_VERSION};
use sfu_proto::signaling::ServerMessage;

use crate::harness::{test_config, RawSocket, TestServer, DEADLINE};

/// The `sfuctl` binary of this workspace, built if it is missing or stale.
pub(crate) fn sfuctl_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/debug/deps/it-<hash> → target/debug/sfuctl
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in target/<profile>/deps");
        let path = dir.join("sfuctl");
        // `cargo test -p sfud` does not build other packages' binaries;
        // build it here (a no-op when up to date) so it is never stale.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--offline", "--quiet", "-p", "sfuctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if !matches!(built, Ok(s) if s.success()) && !path.exists() {
            panic!(
                "sfuctl is not built at {} and `cargo build -p sfuctl` failed ({built:?}); build the workspace first",
                path.display()
            );
        }
        path
    })
}

/// What one `sfuctl` run did.
pub(crate) struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("sfuctl printed no JSON ({e}): {self}"))
    }

    /// Expects success; returns what it printed.
    pub(crate) fn ok_text(self) -> String {
        assert_eq!(self.code, 0, "sfuctl failed: {self}");
        self.stdout
    }

    /// Expects success; returns the JSON answer.
    pub(crate) fn ok(self) -> Value {
        assert_eq!(self.code, 0, "sfuctl failed: {self}");
        self.json()
    }

    /// Expects the daemon to refuse with `code`; returns the message.
    pub(crate) fn refused(self, code: &str) -> String {
        assert_eq!(self.code, 1, "sfuctl should fail with 1: {self}");
        let answer = self.json();
        assert_eq!(answer["error"]["code"], code, "{self}");
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `sfuctl --socket SOCKET ARGS...` (with `--json` when asked).
pub(crate) async fn sfuctl_at(socket: &Path, json: bool, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(sfuctl_path());
    command.arg("--socket").arg(socket);
    if json {
        command.arg("--json");
    }
    command.args(args).env_remove("SFUD_SOCKET");
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("sfuctl finishes within the deadline")
        .expect("sfuctl runs");
    Run::from(output)
}

/// `sfuctl --json ARGS...` against `server`.
pub(crate) async fn ctl(server: &TestServer, args: &[&str]) -> Run {
    sfuctl_at(&server.socket, true, args).await
}

/// Polls `sfuctl rooms list` until `pred` holds or the deadline passes.
async fn rooms_until(server: &TestServer, what: &str, pred: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = ctl(server, &["rooms", "list"]).await.ok();
        let rooms = answer["rooms"].as_array().expect("rooms array").clone();
        if pred(&rooms) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last listing: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rooms_appear_and_disappear_as_clients_join_and_leave() {
    let server = TestServer::start().await;
    assert_eq!(
        ctl(&server, &["rooms", "list"]).await.ok()["rooms"],
        json!([])
    );

    let mut alice = RawSocket::connect(&server).await;
    let alice_id = alice.join("standup", "alice").await;
    let mut bob = RawSocket::connect(&server).await;
    bob.join("standup", "bob").await;
    let listing = rooms_until(&server, "standup with 2 peers", |rooms| {
        rooms.len() == 1 && rooms[0]["peers"] == 2
    })
    .await;
    let room = &listing["rooms"][0];
    assert_eq!(room["name"], "standup");
    assert_eq!(room["mode"], "sfu");
    assert_eq!(room["persistent"], false);

    let detail = ctl(&server, &["rooms", "show", "standup"]).await.ok();
    assert_eq!(detail["type"], "room");
    let members = detail["members"].as_array().expect("members");
    let names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(members[0]["id"], alice_id.as_str());
    assert_eq!(members[0]["role"], "speaker");

    let status = ctl(&server, &["status"]).await.ok();
    assert_eq!(
        (status["rooms"].as_u64(), status["peers"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        status["recordings"], 0,
        "recording exists now: no session yet"
    );
    assert_eq!(status["socket"], server.socket.display().to_string());

    // Human output: aligned tables.
    let table = sfuctl_at(&server.socket, false, &["rooms", "list"]).await;
    assert_eq!(table.code, 0, "{table}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ROOM     MODE  PEERS"), "{table}");
    assert!(lines[1].starts_with("standup  sfu   2/"), "{table}");
    let shown = sfuctl_at(&server.socket, false, &["rooms", "show", "standup"]).await;
    assert!(
        shown.stdout.contains(&alice_id) && shown.stdout.contains("bob"),
        "{shown}"
    );

    alice.send_json(json!({"type": "leave"})).await;
    rooms_until(&server, "standup with 1 peer", |rooms| {
        rooms[0]["peers"] == 1
    })
    .await;
    // The counts in `status` are what each room publishes after every
    // message it handles: the room has answered the listing, so they agree.
    let counts = |status: Value| (status["rooms"].as_u64(), status["peers"].as_u64());
    assert_eq!(
        counts(ctl(&server, &["status"]).await.ok()),
        (Some(1), Some(1))
    );
    drop(bob);
    rooms_until(&server, "no rooms", <[Value]>::is_empty).await;
    assert_eq!(
        counts(ctl(&server, &["status"]).await.ok()),
        (Some(0), Some(0))
    );
    server.stop().await;
}

#[tokio::test]
async fn kick_disconnects_the_peer_and_the_others_see_it_leave() {
    let server = TestServer::start().await;
    let mut alice = RawSocket::connect(&server).await;
    alice.join("kick", "alice").await;
    let mut bob = RawSocket::connect(&server).await;
    let bob_id = bob.join("kick", "bob").await;
    alice
        .recv_until("bob joins", |m| {
            matches!(m, ServerMessage::PeerJoined { .. })
        })
        .await;

    let answer = ctl(&server, &["peers", "kick", "kick", &bob_id]).await.ok();
    assert_eq!(
        answer,
        json!({"type": "peer_kicked", "room": "kick", "peer": bob_id})
    );
    bob.expect_error("kicked").await;
    bob.expect_closed().await;
    let left = alice
        .recv_until("peer_left", |m| matches!(m, ServerMessage::PeerLeft { .. }))
        .await;
    assert!(matches!(left, ServerMessage::PeerLeft { peer_id } if peer_id == bob_id));

    let message = ctl(&server, &["peers", "kick", "kick", &bob_id])
        .await
        .refused("unknown_peer");
    assert!(message.contains(&bob_id), "{message}");
    ctl(&server, &["peers", "kick", "nowhere", "1"])
        .await
        .refused("unknown_room");
    server.stop().await;
}

#[tokio::test]
async fn rooms_close_ends_every_session() {
    let server = TestServer::start().await;
    let mut alice = RawSocket::connect(&server).await;
    alice.join("closing", "alice").await;
    let mut bob = RawSocket::connect(&server).await;
    bob.join("closing", "bob").await;

    let answer = ctl(&server, &["rooms", "close", "closing"]).await.ok();
    assert_eq!(
        answer,
        json!({"type": "room_closed", "room": "closing", "peers": 2})
    );
    for socket in [&mut alice, &mut bob] {
        socket
            .recv_until("room_closed", |m| {
                matches!(m, ServerMessage::Error { code, .. } if code.as_str() == "room_closed")
            })
            .await;
        socket.expect_closed().await;
    }
    rooms_until(&server, "no rooms", <[Value]>::is_empty).await;
    ctl(&server, &["rooms", "close", "closing"])
        .await
        .refused("unknown_room");
    server.stop().await;
}

#[tokio::test]
async fn operators_create_rooms_and_drive_recordings() {
    let server = TestServer::start().await;
    let created = ctl(
        &server,
        &[
            "rooms",
            "create",
            "board",
            "--max-peers",
            "2",
            "--mode",
            "mesh",
        ],
    )
    .await
    .ok();
    assert_eq!(created, json!({"type": "room_created", "room": "board"}));
    let detail = ctl(&server, &["rooms", "show", "board"]).await.ok();
    assert_eq!(
        (&detail["max_peers"], &detail["mode"], &detail["persistent"]),
        (&json!(2), &json!("mesh"), &json!(true))
    );
    assert_eq!(detail["members"], json!([]));
    ctl(&server, &["rooms", "create", "board"])
        .await
        .refused("room_exists");
    ctl(&server, &["rooms", "show", "nope"])
        .await
        .refused("unknown_room");

    // Recording itself is tested in recording.rs; here, sfuctl's side.
    ctl(&server, &["record", "start", "nope"])
        .await
        .refused("unknown_room");
    ctl(&server, &["record", "stop", "board"])
        .await
        .refused("not_recording");
    let listed = ctl(&server, &["record", "list"]).await.ok();
    assert_eq!(listed, json!({"type": "recordings", "recordings": []}));
    // Without --json the daemon's message goes to stderr.
    let human = sfuctl_at(&server.socket, false, &["record", "stop", "board"]).await;
    assert_eq!(human.code, 1, "{human}");
    assert!(
        human
            .stderr
            .starts_with("sfuctl: room `board` is not being recorded"),
        "{human}"
    );
    server.stop().await;
}

#[tokio::test]
async fn config_check_and_reload_read_the_file_the_daemon_started_with() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sfud.toml");
    let base =
        "[http]\nlisten = \"127.0.0.1:0\"\n[rtc]\nudp_port = 0\nbind_ips = [\"127.0.0.1\"]\n";
    std::fs::write(&file, base).expect("write config");
    let mut config = sfud::config::Config::load(&file).expect("valid config");
    config.control.socket = test_config().control.socket;
    let socket_line = format!(
        "[control]\nsocket = \"{}\"\n",
        config.control.socket.display()
    );
    std::fs::write(&file, format!("{base}{socket_line}")).expect("write config");
    let server = TestServer::start_from(config, Some(file.clone())).await;

    let checked = ctl(&server, &["config", "check"]).await.ok();
    assert_eq!(checked["path"], file.display().to_string());
    let unchanged = ctl(&server, &["reload"]).await.ok();
    assert_eq!(
        (&unchanged["changed_live"], &unchanged["needs_restart"]),
        (&json!([]), &json!([]))
    );

    // A live limit and a key that needs a restart.
    let edited = base.replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(
        &file,
        format!("{edited}{socket_line}[rooms]\nmax_peers = 1\n"),
    )
    .expect("write config");
    let reloaded = ctl(&server, &["reload"]).await.ok();
    assert_eq!(reloaded["changed_live"], json!(["rooms.max_peers"]));
    assert_eq!(reloaded["needs_restart"], json!(["http.listen"]));
    // The new limit holds for rooms created from now on.
    let mut alice = RawSocket::connect(&server).await;
    alice.join("small", "alice").await;
    let mut bob = RawSocket::connect(&server).await;
    bob.send_json(json!({"type": "join", "room": "small", "name": "bob"}))
        .await;
    bob.expect_error("room_full").await;

    // An invalid file is reported with its line and changes nothing.
    std::fs::write(
        &file,
        format!("{base}{socket_line}[rooms]\nmax_peers = 0\n"),
    )
    .expect("write config");
    let message = ctl(&server, &["config", "check"])
        .await
        .refused("invalid_config");
    assert!(
        message.contains("rooms.max_peers: must be at least 1"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}:", file.display())),
        "{message}"
    );
    ctl(&server, &["reload"]).await.refused("invalid_config");
    server.stop().await;
}

#[tokio::test]
async fn a_user_outside_the_control_group_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: only root can run sfuctl under another uid (setpriv)");
        return;
    }
    let Some(setpriv) = which("setpriv") else {
        println!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let server = TestServer::start().await;
    // A copy of sfuctl that uid 65534 can execute wherever the tree is.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = dir.path().join("sfuctl");
    std::fs::copy(sfuctl_path(), &binary).expect("copy sfuctl");
    let as_nobody = |socket: &Path| {
        let mut command = tokio::process::Command::new(&setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .arg("--socket")
            .arg(socket)
            .arg("status");
        command
    };
    let mode = std::fs::metadata(&server.socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "socket mode");

    // The file mode alone keeps others out...
    let denied = Run::from(as_nobody(&server.socket).output().await.expect("runs"));
    assert_eq!(denied.code, 3, "{denied}");
    assert!(denied.stderr.contains("permission denied"), "{denied}");
    // ...and so does the daemon's credential check when the mode would not.
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let refused = Run::from(as_nobody(&server.socket).output().await.expect("runs"));
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused
            .stderr
            .contains("uid 65534 may not administer this sfud"),
        "{refused}"
    );
    // Root still gets in.
    ctl(&server, &["status"]).await.ok();
    server.stop().await;
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let config = test_config();
    let path = config.control.socket.clone();
    // A listener dropped without unlinking leaves a file nobody serves.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(UnixStream::connect(&path).is_err());
    let server = TestServer::start_with(config).await;
    assert_eq!(server.socket, path);
    ctl(&server, &["status"]).await.ok();
    server.stop().await;
    assert!(!path.exists(), "the socket is removed at shutdown");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_fails_and_the_first_carries_on() {
    let config = test_config();
    let server = TestServer::start_with(config.clone()).await;
    let error = match sfud::Server::bind(&config).await {
        Ok(_) => panic!("a second daemon must not take a live socket"),
        Err(e) => e,
    };
    let shown = format!(
        "{error}: {}",
        std::error::Error::source(&error).expect("cause")
    );
    assert!(
        shown.contains(&format!(
            "another sfud is already serving {}",
            config.control.socket.display()
        )),
        "{shown}"
    );
    ctl(&server, &["status"]).await.ok();
    server.stop().await;
}

/// A raw connection for frames `sfuctl` would never send.
struct RawControl {
    stream: UnixStream,
}

impl RawControl {
    fn connect(server: &TestServer) -> RawControl {
        let stream = UnixStream::connect(&server.socket).expect("connects");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        RawControl { stream }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("written");
    }

    fn send_body(&mut self, body: &[u8]) {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    fn send(&mut self, request: &Request) {
        frame::write_frame(&mut self.stream, request).expect("written");
    }

    fn recv(&mut self) -> Response {
        frame::read_frame(&mut self.stream).expect("an answer")
    }

    fn expect_error(&mut self, code: &str) -> String {
        match self.recv() {
            Response::Error(e) => {
                assert_eq!(e.code.as_str(), code, "{}", e.message);
                e.message
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    fn hello(&mut self) {
        self.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: "test".into(),
        });
        assert!(matches!(self.recv(), Response::Hello { .. }));
    }

    /// The daemon closed the connection (EOF or reset).
    fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection still open: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_errors_and_the_daemon_carries_on() {
    let server = TestServer::start().await;
    let mut alice = RawSocket::connect(&server).await;
    alice.join("steady", "alice").await;
    let socket = server.socket.clone();

    let silent = RawControl::connect(&server);
    tokio::task::spawn_blocking({
        let server_socket = socket.clone();
        move || {
            let mut raw = RawControl {
                stream: UnixStream::connect(&server_socket).expect("connects"),
            };
            raw.stream
                .set_read_timeout(Some(DEADLINE))
                .expect("read timeout");
            // Not JSON, then JSON that is no request: errors, and the
            // connection stays usable.
            raw.send_body(b"{not json");
            let message = raw.expect_error("bad_request");
            assert!(message.contains("not a valid request"), "{message}");
            raw.send_body(br#"{"type":"launch_rockets"}"#);
            raw.expect_error("bad_request");
            // Anything before hello is refused, and closes.
            raw.send(&Request::Status);
            raw.expect_error("handshake_required");
            raw.expect_closed();

            // A version mismatch is a clear error.
            let mut raw = RawControl {
                stream: UnixStream::connect(&server_socket).expect("connects"),
            };
            raw.stream
                .set_read_timeout(Some(DEADLINE))
                .expect("timeout");
            raw.send(&Request::Hello {
                protocol: PROTOCOL_VERSION + 1,
                client: "sfuctl 99".into(),
            });
            let message = raw.expect_error("version_mismatch");
            assert!(message.contains("speaks control protocol"), "{message}");
            raw.expect_closed();

            // An oversized frame is refused from its header alone.
            let mut raw = RawControl {
                stream: UnixStream::connect(&server_socket).expect("connects"),
            };
            raw.stream
                .set_read_timeout(Some(DEADLINE))
                .expect("timeout");
            raw.hello();
            raw.send_raw(&((MAX_FRAME_BYTES + 1) as u32).to_be_bytes());
            let message = raw.expect_error("frame_too_large");
            assert!(message.contains("larger than the limit"), "{message}");
            raw.expect_closed();

            // Text where a frame belongs reads as a huge length.
            let mut raw = RawControl {
                stream: UnixStream::connect(&server_socket).expect("connects"),
            };
            raw.stream
                .set_read_timeout(Some(DEADLINE))
                .expect("timeout");
            raw.send_raw(b"status\n");
            raw.expect_error("frame_too_large");
        }
    })
    .await
    .expect("raw frames test");

    // While a silent client holds a connection, others are served...
    let status = ctl(&server, &["status"]).await.ok();
    assert_eq!(status["peers"], 1);
    // ...and the silent one is dropped at the deadline with a reason.
    let mut silent = silent;
    let message = tokio::task::spawn_blocking(move || {
        let message = silent.expect_error("timeout");
        silent.expect_closed();
        message
    })
    .await
    .expect("silent client");
    assert!(
        message.contains("no complete request within 1 s"),
        "{message}"
    );

    // The room and its participant were not disturbed.
    let detail = ctl(&server, &["rooms", "show", "steady"]).await.ok();
    assert_eq!(detail["members"][0]["name"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn no_daemon_is_exit_code_3_naming_the_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nobody-home.sock");
    let run = sfuctl_at(&missing, false, &["status"]).await;
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.contains(&missing.display().to_string()), "{run}");
    assert!(
        run.stderr.contains("--socket") && run.stderr.contains("SFUD_SOCKET"),
        "{run}"
    );
    // The environment variable is the other way to name it.
    let output = tokio::process::Command::new(sfuctl_path())
        .args(["--json", "status"])
        .env("SFUD_SOCKET", &missing)
        .output()
        .await
        .expect("runs");
    let run = Run::from(output);
    assert_eq!(run.code, 3, "{run}");
    assert_eq!(run.json()["error"]["code"], "unreachable");

    // A usage error is clap's 2, before any connection.
    let usage = sfuctl_at(&missing, false, &["rooms", "create"]).await;
    assert_eq!(usage.code, 2, "{usage}");
}

#[tokio::test]
async fn tokens_from_sfuctl_admit_and_roles_change_live() {
    let mut config = test_config();
    config.auth.mode = sfud::config::AuthMode::Token;
    config.auth.keys = vec![sfud::config::AuthKey {
        id: "k1".into(),
        secret: "0123456789abcdef0123456789abcdef-k1".into(),
    }];
    let server = TestServer::start_with(config).await;

    // Human output is the bare token, ready for `TOKEN=$(sfuctl token create ...)`.
    let run = sfuctl_at(
        &server.socket,
        false,
        &[
            "token", "create", "stage", "--name", "alice", "--role", "listener", "--ttl", "10m",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    let token = run.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {run}");
    let mut ws = RawSocket::connect(&server).await;
    let joined = ws
        .try_join(json!({"room":"stage","name":"mallory","role":"speaker","token":token}))
        .await;
    let sfu_proto::signaling::ServerMessage::Joined { peer_id, role, .. } = joined else {
        panic!("expected joined, got {joined:?}")
    };
    assert_eq!(
        role,
        sfu_proto::signaling::Role::Listener,
        "the token's role wins"
    );

    let answer = ctl(&server, &["peers", "role", "stage", &peer_id, "speaker"])
        .await
        .ok();
    assert_eq!(answer["type"], "role_changed", "{answer}");
    let told = ws
        .recv_until("role_changed", |m| {
            matches!(m, sfu_proto::signaling::ServerMessage::RoleChanged { .. })
        })
        .await;
    assert_eq!(
        told,
        sfu_proto::signaling::ServerMessage::RoleChanged {
            peer_id: peer_id.clone(),
            role: sfu_proto::signaling::Role::Speaker
        }
    );
    ctl(&server, &["peers", "role", "stage", "nobody", "listener"])
        .await
        .refused("unknown_peer");
    let run = sfuctl_at(
        &server.socket,
        true,
        &["token", "create", "stage", "--name", "x", "--ttl", "soon"],
    )
    .await;
    assert_eq!(run.code, 2, "a bad duration is a usage error: {run}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_control_connections_neither_block_others_nor_stay() {
    let server = TestServer::start().await;
    // 64 clients that connect and say nothing.
    let mut idle: Vec<RawControl> = (0..64).map(|_| RawControl::connect(&server)).collect();
    // Meanwhile an operator is served at once, not after the idle ones time out.
    let started = std::time::Instant::now();
    ctl(&server, &["status"]).await.ok();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "sfuctl status took {took:?} with 64 idle control connections open"
    );
    // A connection that never speaks is told so and closed about a second later.
    for conn in idle.iter_mut().take(3) {
        let message = conn.expect_error("timeout");
        assert!(message.contains("within 1 s"), "{message}");
        conn.expect_closed();
    }
    // One that greeted gets the usual time between requests.
    let mut talker = RawControl::connect(&server);
    talker.hello();
    talker.send(&Request::Status);
    assert!(matches!(talker.recv(), Response::Status(_)));
    server.stop().await;
}
