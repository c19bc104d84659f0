//! The `sfud` binary: parse arguments, set up logging, bind every socket,
//! tell systemd it is ready, and serve until SIGTERM or SIGINT; SIGHUP
//! reloads the configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sfud::config::Config;
use sfud::media::MediaHandle;
use sfud::reload::Reloader;
use sfud::rooms::RoomRegistry;
use sfud::supervisor::Stage;
use sfud::systemd;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

/// WebRTC SFU daemon: WebSocket signaling and selective forwarding.
#[derive(Debug, Parser)]
#[command(name = "sfud", version, about)]
struct Args {
    /// Configuration file (TOML); without it every key has its default.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 when valid, 1 otherwise.
    #[arg(long)]
    check_config: bool,
}

/// How long tasks still running after the server stopped may hold the exit.
const EXIT_GRACE: Duration = Duration::from_secs(1);

fn load(args: &Args) -> Result<Config, sfud::config::ConfigError> {
    match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sfud: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    if args.check_config {
        println!(
            "{}: configuration is valid",
            args.config
                .as_ref()
                .map_or("defaults".into(), |p| p.display().to_string())
        );
        return ExitCode::SUCCESS;
    }
    let log = sfud::logging::init(&config.log);
    if let Some(why) = &log.fallback {
        warn!("{why}; logging to stderr instead");
    }
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfud")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sfud: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(serve(args.config.clone(), config));
    // A task that ignores the shutdown (a stuck client write) must not hold
    // the process: systemd would wait for TimeoutStopSec and then SIGKILL.
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{}", error_chain(e.as_ref()));
            eprintln!("sfud: {}", error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Raises the soft limit on open files to the hard one (the packaged unit
/// sets both with `LimitNOFILE`): every participant holds a socket or two,
/// and the default soft limit (1024) runs out long before the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => warn!(error = %e, soft, hard, "cannot raise the open file limit"),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open file limit"),
    }
}

/// Binds, notifies systemd, and serves until a stop signal.
async fn serve(path: Option<PathBuf>, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // Registered before binding so that a SIGHUP or SIGTERM during startup
    // is handled rather than killing the process half-started.
    let signals = Signals::new()?;
    let server = sfud::Server::bind(&config).await?;
    println!(
        "sfud: demo page at http://{}/ (media on {:?}, ICE-TCP on {:?})",
        server.http_addr(),
        server.media_addrs(),
        server.media_tcp_addrs()
    );
    let (media, rooms) = (server.media(), server.rooms());
    // The server's reloader: SIGHUP and `sfuctl reload` share one view of
    // the configuration in effect.
    let server = server.with_config_path(path);
    let reloader = server.reloader();
    // Every socket is bound: connections queue in the kernel until `run`
    // serves them.
    systemd::ready(&systemd::status_now(&media, &rooms).await);
    server.supervisor().spawn_until_stopped(
        Stage::Background,
        "systemd liveness",
        systemd::Liveness::from_env(media.clone(), rooms.clone()).run(),
    );
    server
        .run(until_stopped(signals, reloader, media, rooms))
        .await?;
    Ok(())
}

/// The signals the daemon handles, registered once.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Reloads on SIGHUP; resolves on the first SIGTERM or SIGINT.
async fn until_stopped(
    mut signals: Signals,
    reloader: Reloader,
    media: MediaHandle,
    rooms: RoomRegistry,
) {
    loop {
        let name = tokio::select! {
            _ = signals.term.recv() => "SIGTERM",
            _ = signals.int.recv() => "SIGINT",
            _ = signals.hup.recv() => {
                reload(&reloader, &media, &rooms).await;
                continue;
            }
        };
        info!(signal = name, "shutting down: telling peers");
        systemd::stopping();
        return;
    }
}

/// Re-reads the configuration file and applies what can change live.
async fn reload(reloader: &Reloader, media: &MediaHandle, rooms: &RoomRegistry) {
    systemd::reloading();
    match reloader.reload() {
        Ok(done) if !done.plan.needs_restart.is_empty() => warn!(
            keys = ?done.plan.needs_restart,
            "changed settings take effect only after a restart"
        ),
        Ok(_) => {}
        Err(e) => error!(
            error = %error_chain(&e),
            "reload failed: the running configuration is unchanged"
        ),
    }
    systemd::ready(&systemd::status_now(media, rooms).await);
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
