//! What a run measured: one window (or one per ramp step), as a human
//! summary or JSON.

use crate::fleet::Totals;
use crate::proc::ProcSample;
use crate::scenario::Scenario;
use serde::{Deserialize, Serialize};
use sfu_client::histogram::HistogramCounts;
use std::fmt::Write as _;

/// Loss above this share of packets fails a ramp step.
pub const RAMP_MAX_LOSS_PERCENT: f64 = 1.0;
/// p99 latency above this fails a ramp step.
pub const RAMP_MAX_P99_US: u64 = 50_000;

/// Counters at one moment; two of them make a [`Window`].
#[derive(Debug, Clone)]
pub struct Mark {
    pub(crate) at: std::time::Instant,
    pub(crate) totals: Totals,
    pub(crate) latency: HistogramCounts,
    pub(crate) sfu: Option<ProcSample>,
    pub(crate) generator: Option<ProcSample>,
    pub(crate) machine: Option<(u64, u64)>,
    /// sfud's `/metrics`, when it could be read.
    pub(crate) sfu_metrics: Option<crate::sfud_metrics::Scrape>,
    /// CPU seconds of each of the SFU's media worker threads.
    pub(crate) sfu_threads: Vec<(String, f64)>,
}

/// One of sfud's media workers over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerWindow {
    /// Its thread's name (`sfud-media-N`).
    pub name: String,
    /// Its thread's CPU, % of one core.
    pub cpu_percent: f64,
    /// RTP packets it wrote to subscriber legs per second (its
    /// `sfud_media_worker_rtp_forwarded_total`).
    pub forwarded_per_s: f64,
    /// Its thread's CPU per packet it forwarded.
    pub cpu_us_per_packet: Option<f64>,
}

/// One measurement window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// The scenario at the time.
    pub scenario: Scenario,
    /// Participants connected.
    pub participants: usize,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// RTP packets per second the publishers sent to the SFU.
    pub packets_in_per_s: f64,
    /// RTP packets per second the receivers got from the SFU.
    pub packets_out_per_s: f64,
    /// What `packets_out_per_s` would be if every published packet reached every receiver.
    pub packets_out_expected_per_s: f64,
    /// RTP payload bits per second into the SFU.
    pub bits_in_per_s: f64,
    /// RTP payload bits per second out of the SFU.
    pub bits_out_per_s: f64,
    /// Subscribe-side tracks that received media.
    pub tracks: usize,
    /// SFU process CPU seconds (user + system) in the window; `None` without a pid.
    pub sfu_cpu_s: Option<f64>,
    /// SFU CPU seconds per 1000 packets received by the subscribers.
    pub sfu_cpu_s_per_1000_packets: Option<f64>,
    /// The same in microseconds per forwarded packet.
    pub sfu_cpu_us_per_packet: Option<f64>,
    /// SFU CPU as a percentage of one core.
    pub sfu_cpu_percent: Option<f64>,
    /// SFU peak resident set size (VmHWM) at the end of the window, MiB.
    pub sfu_peak_rss_mib: Option<f64>,
    /// Packets never received (between the first and last seen of each stream).
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Packets received after a later one.
    pub out_of_order: u64,
    /// Packets received on the wrong track.
    pub misrouted: u64,
    /// `lost` as a percentage of the packets that should have arrived.
    pub loss_percent: f64,
    /// Latency samples (tagged packets received) in the window.
    pub latency_samples: u64,
    /// One-way publisher-to-subscriber latency, median, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile, microseconds.
    pub latency_p99_us: u64,
    /// Largest, microseconds.
    pub latency_max_us: u64,
    /// Median time from `join` to the first media packet, over every receiver, ms.
    pub join_to_first_media_p50_ms: f64,
    /// Largest such time, ms.
    pub join_to_first_media_max_ms: f64,
    /// Receivers that had not received anything by the end of the window.
    pub receivers_without_media: usize,
    /// The generator's own CPU seconds in the window.
    pub generator_cpu_s: Option<f64>,
    /// The generator's CPU as a percentage of the whole machine (all cores).
    pub generator_cpu_percent_of_machine: Option<f64>,
    /// The generator's CPU microseconds per packet its receivers got.
    #[serde(default)]
    pub generator_cpu_us_per_received_packet: Option<f64>,
    /// How busy the whole machine was (all cores, every process), percent.
    #[serde(default)]
    pub machine_busy_percent: Option<f64>,
    /// What neither the SFU nor the generator used of the machine, percent:
    /// other processes disturbing the measurement.
    #[serde(default)]
    pub other_load_percent_of_machine: Option<f64>,
    /// Median time packets spent inside the SFU, by its own histogram (the
    /// upper bound of the bucket; `u64::MAX`: over every bound), µs. sfud
    /// only.
    #[serde(default)]
    pub sfu_forward_delay_p50_us: Option<u64>,
    /// The same at the 99th percentile.
    #[serde(default)]
    pub sfu_forward_delay_p99_us: Option<u64>,
    /// Times a subscriber started forwarding another simulcast layer, by
    /// sfud's `sfud_layer_switches_total`. sfud only.
    #[serde(default)]
    pub layer_switches: Option<u64>,
    /// The same per receiving participant per minute.
    #[serde(default)]
    pub layer_switches_per_subscriber_per_min: Option<f64>,
    /// sfud's media workers, each on its own thread. sfud only.
    #[serde(default)]
    pub sfu_workers: Vec<WorkerWindow>,
}

/// `sfud-media-0 34% of a core, 17000 pkt/s, 2.0 us/packet; ...`
pub fn workers_line(workers: &[WorkerWindow]) -> String {
    workers
        .iter()
        .map(|w| {
            format!(
                "{} {:.0}% of a core, {:.0} pkt/s, {} us/packet",
                w.name,
                w.cpu_percent,
                w.forwarded_per_s,
                w.cpu_us_per_packet
                    .map_or("-".to_owned(), |us| format!("{us:.2}"))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn delay_quantile(a: &Mark, b: &Mark, q: f64) -> Option<u64> {
    let delay = |m: &Mark| m.sfu_metrics.as_ref().and_then(|s| s.delay.clone());
    match (delay(a), delay(b)) {
        (Some(x), Some(y)) => y.quantile_since(&x, q),
        _ => None,
    }
}

/// Each media worker's thread CPU and forwarded packets between the marks.
fn workers(a: &Mark, b: &Mark, secs: f64) -> Vec<WorkerWindow> {
    let forwarded = |m: &Mark, index: usize| {
        m.sfu_metrics
            .as_ref()
            .and_then(|s| s.worker_forwarded.get(index).copied())
    };
    b.sfu_threads
        .iter()
        .filter_map(|(name, cpu_b)| {
            let (_, cpu_a) = a.sfu_threads.iter().find(|(n, _)| n == name)?;
            let cpu = (cpu_b - cpu_a).max(0.0);
            let index: usize = name.rsplit('-').next()?.parse().ok()?;
            let packets = match (forwarded(a, index), forwarded(b, index)) {
                (Some(x), Some(y)) => y.saturating_sub(x),
                _ => 0,
            };
            Some(WorkerWindow {
                name: name.clone(),
                cpu_percent: cpu / secs * 100.0,
                forwarded_per_s: packets as f64 / secs,
                cpu_us_per_packet: (packets > 0).then(|| cpu / packets as f64 * 1e6),
            })
        })
        .collect()
}

fn layer_switches(a: &Mark, b: &Mark) -> Option<u64> {
    let switches = |m: &Mark| m.sfu_metrics.as_ref().and_then(|s| s.layer_switches);
    Some(switches(b)?.saturating_sub(switches(a)?))
}

impl Window {
    /// Builds the window between two marks; `packets_out_expected_per_s`
    /// is what the receivers would get without loss.
    pub(crate) fn between(
        a: &Mark,
        b: &Mark,
        scenario: Scenario,
        participants: usize,
        packets_out_expected_per_s: f64,
        cores: usize,
    ) -> Window {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let t = b.totals.since(&a.totals);
        let lat = b.latency.since(&a.latency);
        let sfu_cpu = match (a.sfu, b.sfu) {
            (Some(x), Some(y)) => Some(y.cpu_s - x.cpu_s),
            _ => None,
        };
        let gen_cpu = match (a.generator, b.generator) {
            (Some(x), Some(y)) => Some(y.cpu_s - x.cpu_s),
            _ => None,
        };
        let forwarded = t.received_packets as f64;
        let per_packet = |cpu: f64| (forwarded > 0.0).then(|| cpu / forwarded);
        let mut first_media = t.join_to_first_media_ms.clone();
        first_media.sort_by(f64::total_cmp);
        let median = first_media
            .get(first_media.len() / 2)
            .copied()
            .unwrap_or(0.0);
        let should_arrive = t.received_packets + t.lost;
        let machine_busy = match (a.machine, b.machine) {
            (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => {
                Some((busy_b - busy_a) as f64 * 100.0 / (total_b - total_a) as f64)
            }
            _ => None,
        };
        let switches = layer_switches(a, b);
        let sfu_share = sfu_cpu.map_or(0.0, |c| c / secs * 100.0 / cores as f64);
        let gen_share = gen_cpu.map_or(0.0, |c| c / secs * 100.0 / cores as f64);
        Window {
            scenario,
            participants,
            seconds: secs,
            packets_in_per_s: t.sent_packets as f64 / secs,
            packets_out_per_s: forwarded / secs,
            packets_out_expected_per_s,
            bits_in_per_s: t.sent_bytes as f64 * 8.0 / secs,
            bits_out_per_s: t.received_bytes as f64 * 8.0 / secs,
            tracks: t.tracks,
            sfu_cpu_s: sfu_cpu,
            sfu_cpu_s_per_1000_packets: sfu_cpu.and_then(per_packet).map(|c| c * 1000.0),
            sfu_cpu_us_per_packet: sfu_cpu.and_then(per_packet).map(|c| c * 1e6),
            sfu_cpu_percent: sfu_cpu.map(|c| c / secs * 100.0),
            sfu_peak_rss_mib: b.sfu.map(|s| s.peak_rss_kib as f64 / 1024.0),
            lost: t.lost,
            duplicates: t.duplicates,
            out_of_order: t.out_of_order,
            misrouted: t.misrouted,
            loss_percent: if should_arrive == 0 {
                0.0
            } else {
                t.lost as f64 * 100.0 / should_arrive as f64
            },
            latency_samples: lat.total(),
            latency_p50_us: lat.quantile_us(0.50),
            latency_p99_us: lat.quantile_us(0.99),
            latency_max_us: lat.max_us(),
            join_to_first_media_p50_ms: median,
            join_to_first_media_max_ms: first_media.last().copied().unwrap_or(0.0),
            receivers_without_media: t.receivers_without_media,
            generator_cpu_s: gen_cpu,
            generator_cpu_percent_of_machine: gen_cpu.map(|c| c / secs * 100.0 / cores as f64),
            generator_cpu_us_per_received_packet: gen_cpu.and_then(per_packet).map(|c| c * 1e6),
            machine_busy_percent: machine_busy,
            other_load_percent_of_machine: machine_busy
                .map(|busy| (busy - sfu_share - gen_share).max(0.0)),
            sfu_forward_delay_p50_us: delay_quantile(a, b, 0.50),
            sfu_forward_delay_p99_us: delay_quantile(a, b, 0.99),
            layer_switches: switches,
            layer_switches_per_subscriber_per_min: switches
                .map(|n| n as f64 / scenario.receivers().max(1) as f64 / (secs / 60.0)),
            sfu_workers: workers(a, b, secs),
        }
    }

    /// Whether the SFU held this load: loss at most 1%, p99 at most 50 ms,
    /// and every receiver got media.
    pub fn held(&self) -> bool {
        self.loss_percent <= RAMP_MAX_LOSS_PERCENT
            && self.latency_p99_us <= RAMP_MAX_P99_US
            && self.receivers_without_media == 0
            && self.packets_out_per_s > 0.0
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `sfud` or `janus`.
    pub target: String,
    /// Signaling URL of the target.
    pub url: String,
    /// The SFU process measured, if any.
    pub sfu_pid: Option<u32>,
    /// Seconds of warm-up before each window.
    pub warmup_s: f64,
    /// Logical CPUs of the machine.
    pub cores: usize,
    /// The measured window: the only one, or with `--ramp` the largest load that held.
    pub window: Window,
    /// With `--ramp`: every step, in order.
    pub ramp: Vec<Window>,
    /// With `--ramp`: the largest scenario that held (`None`: not even the first).
    pub max_held: Option<Scenario>,
    /// With `--ramp`: why ramping stopped.
    pub ramp_stopped: Option<String>,
    /// Participants that only receive were lite receivers (`lite`), not
    /// full clients. Reports from before they existed had full clients.
    #[serde(default)]
    pub lite_receivers: bool,
}

impl Report {
    /// A human summary, a few lines.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let w = &self.window;
        let _ = writeln!(
            s,
            "{} at {}: {}, {} participants, {:.1} s measured after {:.1} s warm-up",
            self.target,
            self.url,
            w.scenario.describe(),
            w.participants,
            w.seconds,
            self.warmup_s
        );
        let _ = writeln!(
            s,
            "  in  {:>9.0} pkt/s {:>8.2} Mbit/s   out {:>9.0} pkt/s {:>8.2} Mbit/s (expected {:.0} pkt/s, {} tracks)",
            w.packets_in_per_s,
            w.bits_in_per_s / 1e6,
            w.packets_out_per_s,
            w.bits_out_per_s / 1e6,
            w.packets_out_expected_per_s,
            w.tracks
        );
        match (w.sfu_cpu_s, w.sfu_cpu_us_per_packet) {
            (Some(cpu), per) => {
                let _ = writeln!(
                    s,
                    "  sfu pid {}: {:.2} CPU s ({:.0}% of a core), {} CPU s per 1000 packets ({} us/packet), peak RSS {:.1} MiB",
                    self.sfu_pid.unwrap_or(0),
                    cpu,
                    w.sfu_cpu_percent.unwrap_or(0.0),
                    w.sfu_cpu_s_per_1000_packets
                        .map_or("-".into(), |v| format!("{v:.4}")),
                    per.map_or("-".into(), |v| format!("{v:.2}")),
                    w.sfu_peak_rss_mib.unwrap_or(0.0)
                );
            }
            _ => {
                let _ = writeln!(s, "  sfu CPU not measured (no pid)");
            }
        }
        let _ = writeln!(
            s,
            "  loss {} ({:.3}%), duplicates {}, out of order {}, misrouted {}",
            w.lost, w.loss_percent, w.duplicates, w.out_of_order, w.misrouted
        );
        let _ = writeln!(
            s,
            "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            w.latency_p50_us as f64 / 1000.0,
            w.latency_p99_us as f64 / 1000.0,
            w.latency_max_us as f64 / 1000.0,
            w.latency_samples
        );
        let _ = writeln!(
            s,
            "  join to first media p50 {:.0} ms, max {:.0} ms; receivers without media: {}",
            w.join_to_first_media_p50_ms, w.join_to_first_media_max_ms, w.receivers_without_media
        );
        if let (Some(n), Some(rate)) = (w.layer_switches, w.layer_switches_per_subscriber_per_min) {
            let _ = writeln!(
                s,
                "  simulcast layer switches: {n} ({rate:.2} per subscriber per minute)"
            );
        }
        if !w.sfu_workers.is_empty() {
            let _ = writeln!(s, "  media workers: {}", workers_line(&w.sfu_workers));
        }
        if let Some(cpu) = w.generator_cpu_s {
            let _ = writeln!(
                s,
                "  generator: {:.2} CPU s, {:.0}% of the machine ({} cores), {} us per received packet; \
                 other processes: {}% of the machine",
                cpu,
                w.generator_cpu_percent_of_machine.unwrap_or(0.0),
                self.cores,
                us_or_dash(w.generator_cpu_us_per_received_packet),
                w.other_load_percent_of_machine
                    .map_or("-".into(), |v| format!("{v:.0}"))
            );
        }
        if !self.ramp.is_empty() {
            let _ = writeln!(s, "  ramp:");
            for step in &self.ramp {
                let _ = writeln!(
                    s,
                    "    {:<44} out {:>8.0}/{:<8.0} pkt/s loss {:>6.3}% p99 {:>7.2} ms sfu {:>5} us/pkt gen {:>3.0}% {}",
                    step.scenario.describe(),
                    step.packets_out_per_s,
                    step.packets_out_expected_per_s,
                    step.loss_percent,
                    step.latency_p99_us as f64 / 1000.0,
                    step.sfu_cpu_us_per_packet
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    step.generator_cpu_percent_of_machine.unwrap_or(0.0),
                    if step.held() { "held" } else { "FAILED" }
                );
            }
            let _ = writeln!(
                s,
                "  largest load held: {}{}",
                self.max_held.map_or("none".into(), |m| m.describe()),
                self.ramp_stopped
                    .as_ref()
                    .map_or(String::new(), |r| format!(" (stopped: {r})"))
            );
        }
        s
    }
}

fn us_or_dash(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}
