//! The `sfud` binary: parse arguments, set up logging, run the server until
//! SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sfud::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

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

fn load(args: &Args) -> Result<Config, sfud::config::ConfigError> {
    match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

fn init_logging(config: &Config) {
    // RUST_LOG wins over the config file's level.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = matches!(config.log.format, LogFormat::Auto);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
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
    init_logging(&config);
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
    let result = runtime.block_on(async {
        let server = sfud::Server::bind(&config).await?;
        println!(
            "sfud: demo page at http://{}/ (media on {:?})",
            server.http_addr(),
            server.media_addrs()
        );
        server.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfud: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
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
