//! sfu-load: drives a running SFU (sfud, or Janus's VideoRoom through a
//! signaling translator) with many real WebRTC clients in one process, and
//! measures what the SFU costs and delivers; plus the "floor": the CPU that
//! SRTP-protecting and sending the same packets costs at best.
//!
//! ```text
//! run(config) ─► Fleet (sfu-client × N publishers, lite receivers on
//!                 rtc's sans-IO core, one shared latency histogram)
//!                 │  join seats of the Scenario, publish synthetic media
//!                 ▼
//!        warm-up, then a measured Window: Totals + histogram + /proc of the
//!        SFU and of the generator, marked at both ends
//!                 │  --ramp: grow the scenario, measure again, until a window fails
//!                 ▼
//!              Report (human summary or JSON)
//! ```

pub mod benchdoc;
pub mod fleet;
pub mod floor;
pub mod janus;
pub mod lite;
pub mod proc;
pub mod report;
pub mod scenario;
pub mod sfud_metrics;

use fleet::Fleet;
use report::{Mark, Report, Window};
use scenario::Scenario;
use sfu_client::PublishOptions;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A participant could not join or publish.
    #[error("joining failed: {0}")]
    Join(String),
    /// The Janus target could not be set up.
    #[error("Janus: {0}")]
    Janus(String),
    /// The run asks for something the target does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The SFU process to measure was not found.
    #[error("{0}")]
    Pid(String),
    /// A local socket could not be set up.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Which SFU the generator drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// sfud's WebSocket signaling, e.g. `ws://127.0.0.1:8080/ws`.
    Sfud {
        /// Signaling URL.
        url: String,
    },
    /// Janus's WebSocket API (`janus-protocol`), e.g. `ws://127.0.0.2:8188`.
    Janus {
        /// API URL.
        url: String,
    },
}

impl Target {
    /// `sfud` or `janus`: also the process name looked for without `--sfu-pid`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Sfud { .. } => "sfud",
            Target::Janus { .. } => "janus",
        }
    }

    fn url(&self) -> &str {
        match self {
            Target::Sfud { url } | Target::Janus { url } => url,
        }
    }
}

/// How `--ramp` grows the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Units added per step (subscribers, participants or rooms).
    pub step: usize,
    /// Stop after this many steps even if every one held.
    pub max_steps: usize,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The SFU to drive.
    pub target: Target,
    /// The load shape.
    pub scenario: Scenario,
    /// The SFU's pid; `None`: look for a single process named after the target.
    pub sfu_pid: Option<u32>,
    /// Time between joining and measuring.
    pub warmup: Duration,
    /// Length of each measured window.
    pub duration: Duration,
    /// Grow the scenario until a window fails.
    pub ramp: Option<Ramp>,
    /// What publishers send.
    pub publish: PublishOptions,
    /// Address the clients' peer connections bind to.
    pub bind_ip: IpAddr,
    /// Participants joining at once.
    pub join_concurrency: usize,
    /// Deadline of each join and publish.
    pub join_timeout: Duration,
    /// Participants that only receive are [`lite::LiteReceiver`]s.
    pub lite_receivers: bool,
    /// Print a progress line on stderr.
    pub progress: bool,
}

impl LoadConfig {
    /// A configuration with the defaults of the command line.
    pub fn new(target: Target, scenario: Scenario) -> LoadConfig {
        LoadConfig {
            target,
            scenario,
            sfu_pid: None,
            warmup: Duration::from_secs(3),
            duration: Duration::from_secs(10),
            ramp: None,
            publish: PublishOptions::default(),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            join_concurrency: 8,
            join_timeout: Duration::from_secs(20),
            lite_receivers: true,
            progress: false,
        }
    }
}

/// Runs the scenario (and the ramp) and reports.
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    let sfu_pid = match config.sfu_pid {
        Some(pid) => Some(pid),
        None => Some(proc::find_pid(config.target.name()).map_err(LoadError::Pid)?),
    };
    if config.scenario.simulcast() && config.target.name() != "sfud" {
        return Err(LoadError::Unsupported(
            "simulcast is measured on sfud only: drop --simulcast for Janus".into(),
        ));
    }
    let translator = match &config.target {
        Target::Sfud { .. } => None,
        Target::Janus { url } => Some(janus::Translator::start(url.clone()).await?),
    };
    let ws_url = match &translator {
        Some(t) => t.ws_url(),
        None => config.target.url().to_owned(),
    };
    let room_prefix = format!("load-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let publish = PublishOptions {
        simulcast: config.scenario.simulcast(),
        ..config.publish.clone()
    };
    let mut fleet = Fleet::new(
        ws_url,
        room_prefix,
        config.bind_ip,
        publish.clone(),
        config.join_timeout,
    )
    .with_lite_receivers(config.lite_receivers);
    let progress = Progress::new(config.progress);
    let mut scenario = config.scenario;
    progress.note(&format!("joining: {}", scenario.describe()));
    fleet
        .join(&scenario.seats(), config.join_concurrency)
        .await?;
    let cores = proc::cores();
    let mut steps: Vec<Window> = Vec::new();
    let mut stopped = None;
    // sfud's own forwarding delay and layer switches, from its /metrics
    // (Janus has none).
    let metrics_at = match &config.target {
        Target::Sfud { url } => sfud_metrics::host_port(url),
        Target::Janus { .. } => None,
    };
    loop {
        watch(&fleet, sfu_pid, config.warmup, "warm-up", &progress).await;
        let a = mark(&fleet, sfu_pid, metrics_at).await;
        watch(&fleet, sfu_pid, config.duration, "measuring", &progress).await;
        let b = mark(&fleet, sfu_pid, metrics_at).await;
        let expected = scenario.packets_out_expected_per_s(&publish);
        let window = Window::between(&a, &b, scenario, fleet.len(), expected, cores);
        let held = window.held();
        steps.push(window);
        let Some(ramp) = config.ramp else { break };
        if !held {
            stopped = Some(
                "the last step lost more than 1%, had p99 over 50 ms or a receiver without media"
                    .to_owned(),
            );
            break;
        }
        if steps.len() > ramp.max_steps {
            stopped = Some(format!("{} steps done", ramp.max_steps));
            break;
        }
        let next = scenario.grown(ramp.step);
        progress.note(&format!("ramp: growing to {}", next.describe()));
        let seats = next.seats();
        if let Err(e) = fleet
            .join(
                &seats[fleet.len().min(seats.len())..],
                config.join_concurrency,
            )
            .await
        {
            stopped = Some(format!("growing to {} failed: {e}", next.describe()));
            break;
        }
        scenario = next;
    }
    progress.done();
    fleet.close().await;
    if let Some(t) = translator {
        t.stop().await;
    }
    let max_held = config
        .ramp
        .and_then(|_| steps.iter().rev().find(|w| w.held()).map(|w| w.scenario));
    let window = match max_held {
        Some(held) => steps.iter().rev().find(|w| w.scenario == held),
        None => steps.first(),
    }
    .cloned()
    .ok_or_else(|| LoadError::Join("no window was measured".into()))?;
    Ok(Report {
        target: config.target.name().to_owned(),
        url: config.target.url().to_owned(),
        sfu_pid,
        warmup_s: config.warmup.as_secs_f64(),
        cores,
        window,
        ramp: if config.ramp.is_some() {
            steps
        } else {
            Vec::new()
        },
        max_held,
        ramp_stopped: stopped,
        lite_receivers: config.lite_receivers,
    })
}

/// A mark of the fleet and the SFU. With `metrics_at` (a window's ends on
/// sfud, not the progress line's) also sfud's `/metrics` and its media
/// worker threads.
async fn mark(fleet: &Fleet, sfu_pid: Option<u32>, metrics_at: Option<&str>) -> Mark {
    let sfu_metrics = match metrics_at {
        Some(at) => sfud_metrics::read(at).await,
        None => None,
    };
    let sfu_threads = match (sfu_pid, metrics_at) {
        (Some(pid), Some(_)) => proc::thread_cpu(pid, "sfud-media-"),
        _ => Vec::new(),
    };
    Mark {
        sfu_metrics,
        at: Instant::now(),
        totals: fleet.totals(),
        latency: fleet.histogram().counts(),
        sfu: sfu_pid.and_then(proc::sample),
        sfu_threads,
        generator: proc::sample(std::process::id()),
        machine: proc::machine_ticks(),
    }
}

/// Waits `length`, printing a progress line every second.
async fn watch(
    fleet: &Fleet,
    sfu_pid: Option<u32>,
    length: Duration,
    phase: &str,
    progress: &Progress,
) {
    let end = Instant::now() + length;
    let mut last = mark(fleet, sfu_pid, None).await;
    let start = last.at;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        if !progress.enabled {
            continue;
        }
        let now = mark(fleet, sfu_pid, None).await;
        let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-9);
        let t = now.totals.since(&last.totals);
        let lat = now.latency.since(&last.latency);
        let sfu = match (last.sfu, now.sfu) {
            (Some(a), Some(b)) => format!("{:.0}%", (b.cpu_s - a.cpu_s) / secs * 100.0),
            _ => "-".into(),
        };
        let gen = match (last.generator, now.generator) {
            (Some(a), Some(b)) => format!("{:.0}%", (b.cpu_s - a.cpu_s) / secs * 100.0),
            _ => "-".into(),
        };
        progress.line(&format!(
            "{phase} {:>3.0}s  clients {}  in {:.0} pkt/s  out {:.0} pkt/s  lost {}  p99 {:.1} ms  sfu cpu {sfu}  generator cpu {gen}",
            now.at.duration_since(start).as_secs_f64(),
            fleet.len(),
            t.sent_packets as f64 / secs,
            t.received_packets as f64 / secs,
            t.lost,
            lat.quantile_us(0.99) as f64 / 1000.0,
        ));
        last = now;
    }
}

/// The progress line on stderr: rewritten in place on a terminal, one line
/// per update otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    fn note(&self, text: &str) {
        if self.enabled {
            self.done();
            eprintln!("{text}");
        }
    }

    fn done(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}
