//! The `sfu-load` binary: parse arguments, run a scenario (or the floor),
//! print the report.

use clap::{Args, Parser, Subcommand, ValueEnum};
use sfu_load::scenario::Scenario;
use sfu_load::{floor, LoadConfig, Ramp, Target};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Load generator and benchmark for sfud and Janus VideoRoom.
#[derive(Debug, Parser)]
#[command(name = "sfu-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One room; every participant publishes and receives all others.
    Conference {
        /// Participants.
        #[arg(long, short = 'p', default_value_t = 4)]
        participants: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// One room; a few publishers, many receive-only subscribers.
    Webinar {
        /// Publishers (1 to 3 is typical).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Receive-only subscribers.
        #[arg(long, short = 's', default_value_t = 20)]
        subscribers: usize,
        /// Publishers send simulcast video (layers q, h, f at 1/16, 1/4 and
        /// all of --video-pps); subscriber i asks for layer i mod 3. sfud only.
        #[arg(long)]
        simulcast: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Many independent conferences.
    Rooms {
        /// Rooms.
        #[arg(long, short = 'r', default_value_t = 5)]
        rooms: usize,
        /// Participants per room.
        #[arg(long, short = 'k', default_value_t = 3)]
        per_room: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The floor: SRTP-protect packets (AES-128-GCM) and send each to a
    /// loopback UDP socket, per packet and batched; CPU µs per packet.
    Floor {
        /// Packets per variant.
        #[arg(long, default_value_t = 300_000)]
        packets: u64,
        /// RTP payload bytes (the RTP header and SRTP tag come on top).
        #[arg(long, default_value_t = 1100)]
        payload_bytes: usize,
        /// Packets per batch in the batched variants (sendmmsg and GSO).
        #[arg(long, default_value_t = 5)]
        batch: usize,
        /// Print JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Writes docs/benchmarks.md from the JSON files of one `scripts/bench` run.
    BenchDoc {
        /// Folder with sfud.json, janus.json, sfud-ramp.json, janus-ramp.json,
        /// floor-video.json, floor-audio.json, machine.md and optionally
        /// sfud-simulcast.json and profile.txt.
        #[arg(long)]
        dir: PathBuf,
        /// The command that produced them, quoted in the document.
        #[arg(long)]
        command: String,
        /// When it ran.
        #[arg(long)]
        date: String,
        /// Hand-written analysis (markdown) to include.
        #[arg(long)]
        analysis: Option<PathBuf>,
        /// Where to write the document.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetKind {
    Sfud,
    Janus,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Which SFU is at --url.
    #[arg(long, value_enum, default_value_t = TargetKind::Sfud)]
    target: TargetKind,
    /// Signaling URL (default: ws://127.0.0.1:8080/ws for sfud,
    /// ws://127.0.0.2:8188 for Janus).
    #[arg(long)]
    url: Option<String>,
    /// Pid of the SFU process (default: the one process named sfud or janus).
    #[arg(long)]
    sfu_pid: Option<u32>,
    /// Seconds between joining and measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Grow the load (subscribers, participants or rooms) until loss passes
    /// 1% or p99 latency 50 ms; report the largest load that held.
    #[arg(long)]
    ramp: bool,
    /// Units added per ramp step.
    #[arg(long, default_value_t = 10)]
    ramp_step: usize,
    /// Most ramp steps.
    #[arg(long, default_value_t = 50)]
    ramp_max_steps: usize,
    /// Video packets per second per publisher.
    #[arg(long, default_value_t = 150)]
    video_pps: u32,
    /// Audio packets per second per publisher.
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Address the clients' peer connections bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Participants joining at once.
    #[arg(long, default_value_t = 8)]
    join_concurrency: usize,
    /// Participants that only receive run the full client (`webrtc`'s
    /// async peer connection) instead of the lite receiver (`rtc`'s sans-IO
    /// core on one task), which costs the generator less per packet.
    #[arg(long)]
    full_receivers: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (scenario, run) = match cli.command {
        Command::Floor {
            packets,
            payload_bytes,
            batch,
            json,
        } => return run_floor(packets, payload_bytes, batch, json),
        Command::BenchDoc {
            dir,
            command,
            date,
            analysis,
            out,
        } => {
            return match bench_doc(&dir, command, date, analysis.as_deref(), &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sfu-load bench-doc: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Conference { participants, run } => (Scenario::Conference { participants }, run),
        Command::Webinar {
            publishers,
            subscribers,
            simulcast,
            run,
        } => (
            Scenario::Webinar {
                publishers,
                subscribers,
                simulcast,
            },
            run,
        ),
        Command::Rooms {
            rooms,
            per_room,
            run,
        } => (Scenario::Rooms { rooms, per_room }, run),
    };
    let target = match run.target {
        TargetKind::Sfud => Target::Sfud {
            url: run
                .url
                .clone()
                .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into()),
        },
        TargetKind::Janus => Target::Janus {
            url: run
                .url
                .clone()
                .unwrap_or_else(|| "ws://127.0.0.2:8188".into()),
        },
    };
    let mut config = LoadConfig::new(target, scenario);
    config.sfu_pid = run.sfu_pid;
    config.warmup = Duration::from_secs_f64(run.warmup.max(0.0));
    config.duration = Duration::from_secs_f64(run.duration.max(0.1));
    config.ramp = run.ramp.then_some(Ramp {
        step: run.ramp_step.max(1),
        max_steps: run.ramp_max_steps,
    });
    config.publish.video_packets_per_sec = run.video_pps;
    config.publish.audio_packets_per_sec = run.audio_pps;
    config.publish.video = run.video_pps > 0;
    config.publish.audio = run.audio_pps > 0;
    config.bind_ip = run.bind_ip;
    config.join_concurrency = run.join_concurrency;
    config.lite_receivers = !run.full_receivers;
    config.progress = !run.quiet;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sfu-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sfu_load::run(&config)) {
        Ok(report) => {
            if run.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("sfu-load: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.summary());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sfu-load: {}", sfu_load::fleet::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_floor(packets: u64, payload_bytes: usize, batch: usize, json: bool) -> ExitCode {
    match floor::measure(packets, payload_bytes, batch) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("sfu-load: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.summary());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sfu-load floor: {}", sfu_load::fleet::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn bench_doc(
    dir: &Path,
    command: String,
    date: String,
    analysis: Option<&Path>,
    out: &Path,
) -> Result<(), String> {
    fn read<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T, String> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a report: {e}", path.display()))
    }
    let text = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let sfud: sfu_load::report::Report = read(dir, "sfud.json")?;
    // Published video packets per audio packet, from the defaults the run used.
    let defaults = sfu_client::PublishOptions::default();
    let audio_pps = defaults.audio_packets_per_sec;
    let video_pps = {
        let w = &sfud.window;
        let per_stream = w.packets_out_expected_per_s / (w.scenario.streams().max(1) as f64);
        (per_stream - f64::from(audio_pps)).max(0.0).round() as u32
    };
    let video_share = f64::from(video_pps) / f64::from(audio_pps.max(1));
    let floor_video_batches = [1, 2]
        .iter()
        .map(|b| format!("floor-video-{b}.json"))
        .filter(|name| dir.join(name).exists())
        .map(|name| read(dir, &name))
        .collect::<Result<Vec<_>, _>>()?;
    let sfud_simulcast = if dir.join("sfud-simulcast.json").exists() {
        Some(read(dir, "sfud-simulcast.json")?)
    } else {
        None
    };
    let rooms = if dir.join("sfud-rooms.json").exists() {
        Some((
            read(dir, "sfud-rooms.json")?,
            read(dir, "janus-rooms.json")?,
        ))
    } else {
        None
    };
    let run = sfu_load::benchdoc::BenchRun {
        sfud,
        sfud_simulcast,
        janus: read(dir, "janus.json")?,
        rooms,
        sfud_ramp: read(dir, "sfud-ramp.json")?,
        janus_ramp: read(dir, "janus-ramp.json")?,
        floor_video: read(dir, "floor-video.json")?,
        floor_audio: read(dir, "floor-audio.json")?,
        floor_video_batches,
        video_pps,
        audio_pps,
        video_share,
        profile: std::fs::read_to_string(dir.join("profile.txt")).ok(),
        analysis: analysis.map(text).transpose()?,
        machine: text(&dir.join("machine.md"))?,
        command,
        date,
    };
    std::fs::write(out, sfu_load::benchdoc::render(&run))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}
