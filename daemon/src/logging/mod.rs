//! Where log lines go: the systemd journal (structured fields such as `ROOM`
//! and `PEER`, no prefix) or readable lines on stderr; and which ones, from
//! `log.level` unless `RUST_LOG` is set.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub mod budget;

/// journald's native protocol socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where logs were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Structured entries to journald.
    Journal,
    /// Lines on stderr.
    Console,
}

/// What [`init`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSetup {
    /// Where logs go.
    pub sink: Sink,
    /// Why the journal was wanted but not used, to log once logging works.
    pub fallback: Option<String>,
}

/// The WebRTC stack's crates. Their `info` is a few lines per connection
/// state change and their `debug` a line per packet, so a plain level asks
/// them for `warn` at most.
const STACK: [&str; 8] = [
    "rtc",
    "rtc_ice",
    "rtc_dtls",
    "rtc_srtp",
    "rtc_sctp",
    "rtc_interceptor",
    "rtc_datachannel",
    "webrtc",
];

/// A DTLS module that warns about every TLS extension a browser's
/// ClientHello carries that it does not know (about 20 lines per
/// connection); its failures are still errors.
const CLIENT_HELLO: &str = "rtc_dtls::handshake::handshake_message_client_hello";

/// The directives for `log.level`: a plain level applies to sfud and, up to
/// `warn`, to the WebRTC stack; anything else (a directive list) is used as
/// it is.
fn directives(level: &str) -> String {
    let level = level.trim();
    let stack = match level.to_ascii_lowercase().as_str() {
        "info" | "debug" | "trace" => "warn".to_owned(),
        "off" | "error" | "warn" => level.to_owned(),
        _ => return level.to_owned(),
    };
    let mut out = level.to_owned();
    for target in STACK {
        out.push_str(&format!(",{target}={stack}"));
    }
    if stack == "warn" {
        out.push_str(&format!(",{CLIENT_HELLO}=error"));
    }
    out
}

/// The filter: `RUST_LOG` wins over the configured level.
fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(directives(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether stderr is the journal stream systemd connected us to: systemd
/// sets `JOURNAL_STREAM=DEV:INODE` of that stream (see `systemd.exec(5)`).
pub fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    expected.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

/// Which sink a format asks for on this machine.
pub fn wanted_sink(format: LogFormat) -> Sink {
    match format {
        LogFormat::Journald => Sink::Journal,
        LogFormat::Console => Sink::Console,
        // Under systemd stderr already goes to the journal, but as plain
        // text; the native protocol keeps the fields.
        LogFormat::Auto if Path::new(JOURNAL_SOCKET).exists() && stderr_is_journal() => {
            Sink::Journal
        }
        LogFormat::Auto => Sink::Console,
    }
}

/// Installs the global subscriber.
pub fn init(config: &LogConfig) -> LogSetup {
    let mut fallback = None;
    let journal = match wanted_sink(config.format) {
        Sink::Journal => match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_field_prefix(None)),
            Err(e) => {
                fallback = Some(format!("cannot log to the journal ({JOURNAL_SOCKET}): {e}"));
                None
            }
        },
        Sink::Console => None,
    };
    let sink = if journal.is_some() {
        Sink::Journal
    } else {
        Sink::Console
    };
    let console = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter(&config.level))
        .with(budget::BudgetLayer)
        .with(journal)
        .with(console)
        .try_init();
    LogSetup { sink, fallback }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_level_keeps_the_webrtc_stack_at_warn_at_most() {
        let info = directives("info");
        assert!(info.starts_with("info,rtc=warn,rtc_ice=warn,"), "{info}");
        assert!(info.ends_with(&format!(",{CLIENT_HELLO}=error")), "{info}");
        assert!(directives("debug").contains(",rtc_dtls=warn,"));
        let error = directives("error");
        assert!(error.contains(",rtc=error,") && !error.contains(CLIENT_HELLO));
        // Directive lists are the operator's own.
        assert_eq!(directives("info,rtc=debug"), "info,rtc=debug");
        for level in ["info", "warn", "error", "debug", "off", "sfud=trace"] {
            assert!(EnvFilter::try_new(directives(level)).is_ok(), "{level}");
        }
    }

    #[test]
    fn explicit_formats_are_obeyed() {
        assert_eq!(wanted_sink(LogFormat::Console), Sink::Console);
        assert_eq!(wanted_sink(LogFormat::Journald), Sink::Journal);
    }
}
