//! The `sfud` binary under a stand-in for systemd: a datagram socket as
//! `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` set, and signals as systemctl sends
//! them; plus the packaged unit file checked with `systemd-analyze`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::harness::DEADLINE;
use crate::metrics::http_get;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_owned()
}

/// Reads notifications from a fake `$NOTIFY_SOCKET`.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Self {
        Notifications {
            socket: UnixDatagram::bind(path).expect("notify socket binds"),
            seen: Vec::new(),
        }
    }

    /// The next datagram, within the deadline.
    async fn next(&mut self, what: &str) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, self.socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}; got {:?}", self.seen))
            .expect("notify socket readable");
        let text = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
        self.seen.push(text.clone());
        text
    }

    /// Skips watchdog pings and status updates until a datagram with `line`.
    async fn until(&mut self, line: &str) -> String {
        loop {
            let text = self.next(line).await;
            if text.lines().any(|l| l == line) {
                return text;
            }
            assert!(
                text.lines()
                    .all(|l| l == "WATCHDOG=1" || l.starts_with("STATUS=")),
                "unexpected {text:?} while waiting for {line}"
            );
        }
    }
}

/// Lines a child writes, collected by a task so the pipe never fills.
fn lines(from: impl AsyncRead + Unpin + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn send(child: &Child, signal: Signal) {
    let pid = child.id().expect("daemon still running");
    kill(Pid::from_raw(pid as i32), signal).expect("signal sent");
}

/// `http://ADDR/ (media on [ADDR, ...], ICE-TCP on [...])` from the
/// daemon's start-up line: the HTTP and UDP media addresses.
fn parse_startup(line: &str) -> (SocketAddr, Vec<SocketAddr>) {
    let rest = line
        .strip_prefix("sfud: demo page at http://")
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let (http, media) = rest.split_once("/ (media on [").expect("media addresses");
    let (media, _tcp) = media.split_once(']').expect("the end of the UDP list");
    let media = media
        .split(", ")
        .map(|a| a.parse().expect("media address"))
        .collect();
    (http.parse().expect("HTTP address"), media)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_speaks_sd_notify_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut notes = Notifications::bind(&dir.path().join("notify.sock"));
    let control = dir.path().join("sfud.sock");
    let config = dir.path().join("sfud.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[rtc]\nudp_port = 0\nbind_ips = [\"127.0.0.1\"]\n\n\
             [control]\nsocket = \"{}\"\n\n[log]\nformat = \"console\"\n",
            control.display()
        ),
    )
    .expect("config written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfud"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        // A ping every 150 ms.
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sfud starts");
    let mut stdout = lines(child.stdout.take().expect("stdout piped"));
    let mut stderr = lines(child.stderr.take().expect("stderr piped"));

    // READY=1 comes first, with a status, and only once everything answers.
    let ready = notes.next("READY=1").await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=serving: 0 rooms, 0 peers, 0 tracks"),
        "{ready:?}"
    );
    let startup = tokio::time::timeout(DEADLINE, stdout.recv())
        .await
        .expect("start-up line within the deadline")
        .expect("start-up line printed");
    let (http, media) = parse_startup(&startup);
    let health = http_get(http, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    for addr in media {
        let taken = std::net::UdpSocket::bind(addr).expect_err("media port is bound");
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
    assert!(
        std::os::unix::fs::FileTypeExt::is_socket(
            &std::fs::metadata(&control)
                .expect("control socket exists")
                .file_type()
        ),
        "{} is not a socket",
        control.display()
    );

    // Regular watchdog pings.
    for _ in 0..3 {
        notes.until("WATCHDOG=1").await;
    }

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).expect("config readable") + "\n[rooms]\nmax_peers = 7\n",
    )
    .expect("config edited");
    send(&child, Signal::SIGHUP);
    let reloading = notes.until("RELOADING=1").await;
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    notes.until("READY=1").await;
    notes.until("WATCHDOG=1").await;

    // SIGTERM: STOPPING=1, then exit status 0.
    send(&child, Signal::SIGTERM);
    notes.until("STOPPING=1").await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("sfud exits within 15 s of SIGTERM")
        .expect("exit status");
    let mut log = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(DEADLINE, stderr.recv()).await {
        log.push(line);
    }
    assert!(
        status.success(),
        "sfud exited with {status}; log:\n{}",
        log.join("\n")
    );
    let log = log.join("\n");
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("rooms.max_peers"), "{log}");
}

#[test]
fn the_packaged_config_is_the_defaults_with_the_sfud_group() {
    let packaged = sfud::config::Config::load(&repo().join("packaging/sfud.toml"))
        .expect("packaging/sfud.toml is valid");
    let mut expected = sfud::config::Config::default();
    expected.control.group = Some("sfud".to_owned());
    assert_eq!(packaged, expected);
    assert!(packaged.http.listen.ip().is_loopback());
}

/// `systemd-analyze`, or a failure that says how to get it.
fn systemd_analyze(args: &[&str], unit: &Path) -> std::process::Output {
    std::process::Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (apt-get install systemd, or scripts/setup --tests)")
}

#[test]
fn the_unit_file_verifies_cleanly_and_is_hardened() {
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/sfud.service"))
        .expect("unit file readable");
    assert!(unit.contains("\nExecStart=/usr/bin/sfud --config /etc/sfud/sfud.toml\n"));
    // verify needs ExecStart's binary to exist: check a copy that runs the
    // binary just built.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("sfud.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/sfud",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_sfud")),
        ),
    )
    .expect("unit copied");

    let verify = systemd_analyze(&["verify", "--man=no"], &copy);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let security = systemd_analyze(&["security", "--offline=true"], &copy);
    let report = String::from_utf8_lossy(&security.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for sfud.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {report}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{report}");
}
