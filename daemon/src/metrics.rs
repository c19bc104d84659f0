//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Nothing is counted here: each scrape takes a snapshot of the media
//! engine's counters and the rooms, and reads the process's CPU time and
//! memory from `/proc/self`. The format is written by hand (a few dozen
//! lines) rather than through a metrics registry, because every value
//! already lives in its owner and is only sampled at scrape time.

use std::fmt::{Display, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::media::{Bounds, Histogram, MediaHandle, MediaStats};
use crate::recording::Recorder;
use crate::rooms::RoomRegistry;
use crate::signaling::gate::Gatekeeper;
use crate::signaling::AppState;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the media loop and the rooms.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape reads from.
#[derive(Clone)]
pub struct MetricsSource {
    rooms: RoomRegistry,
    media: MediaHandle,
    recorder: Recorder,
    gate: Arc<Gatekeeper>,
    cluster: crate::cluster::Cluster,
    started: SystemTime,
}

impl MetricsSource {
    /// Samples these; the process start time is now.
    pub fn new(
        rooms: RoomRegistry,
        media: MediaHandle,
        recorder: Recorder,
        gate: Arc<Gatekeeper>,
        cluster: crate::cluster::Cluster,
    ) -> Self {
        MetricsSource {
            rooms,
            media,
            recorder,
            gate,
            cluster,
            started: SystemTime::now(),
        }
    }

    /// The whole exposition, or why a snapshot could not be taken.
    pub async fn render(&self) -> Result<String, &'static str> {
        let workers = tokio::time::timeout(SNAPSHOT_TIMEOUT, self.media.worker_stats())
            .await
            .map_err(|_| "the media engine did not answer")?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the media engine stopped")?;
        let stats = crate::media::MediaStats::sum(&workers);
        let rooms = self.rooms.counts();
        let recordings = tokio::time::timeout(SNAPSHOT_TIMEOUT, self.recorder.recording_count())
            .await
            .map_err(|_| "the recorder did not answer")?;
        let counts = Counts {
            rooms: rooms.rooms,
            peers: rooms.peers,
            recordings,
        };
        let mut out = Exposition::default();
        write_daemon(&mut out, &counts, &stats);
        write_workers(&mut out, &workers, &self.rooms.worker_counts());
        write_refusals(&mut out, self.gate.refusals());
        let connections = self.gate.connections();
        out.gauge(
            "sfud_http_connections",
            "HTTP connections open, WebSockets included.",
            connections.open(),
        );
        let (per_address, total) = connections.refused();
        out.family(
            "sfud_http_connections_refused_total",
            "counter",
            "HTTP connections closed at once for being over \
             limits.max_connections_per_ip (per_address) or limits.max_connections (total).",
        );
        for (cap, n) in [("per_address", per_address), ("total", total)] {
            out.sample("sfud_http_connections_refused_total", &[("cap", cap)], n);
        }
        out.counter(
            "sfud_log_lines_suppressed_total",
            "Log lines not written because one place in the code logged more \
             than 20 a second (a flood someone outside can cause).",
            crate::logging::budget::global().suppressed_total(),
        );
        if let Some(c) = self.cluster.gauges() {
            out.gauge(
                "sfud_cluster_reachable",
                "1 while this node's last announcement in the cluster's Redis succeeded.",
                usize::from(c.reachable),
            );
            out.gauge(
                "sfud_cluster_nodes",
                "Nodes alive in the cluster's directory, as this node last listed it \
                 (every 5 s).",
                c.nodes,
            );
            out.gauge(
                "sfud_cluster_rooms",
                "Rooms on all nodes of the cluster, as they announced them when this \
                 node last listed the directory.",
                c.cluster_rooms,
            );
            out.gauge(
                "sfud_cluster_peers",
                "Participants on all nodes of the cluster, likewise.",
                c.cluster_peers,
            );
            out.gauge(
                "sfud_cluster_leases",
                "Rooms whose lease this node holds (the rooms it serves).",
                c.leases,
            );
            out.gauge(
                "sfud_cluster_relayed_sessions",
                "Signaling sessions this node relays to the node serving their room.",
                c.relayed_sessions,
            );
            out.counter(
                "sfud_cluster_relay_failures_total",
                "Relayed sessions whose node could not be reached or went away \
                 (the client was told to join again).",
                c.relay_failures,
            );
        }
        write_process(&mut out, self.started, &ProcessSample::read());
        Ok(out.text)
    }
}

impl FromRef<Arc<AppState>> for MetricsSource {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.metrics.clone()
    }
}

/// Each media worker's share: rooms, participants, connections, packets.
fn write_workers(
    out: &mut Exposition,
    workers: &[crate::media::MediaStats],
    rooms: &[crate::rooms::RoomCounts],
) {
    let families: [(&str, &str, &str, Vec<u64>); 5] = [
        (
            "sfud_media_worker_rooms",
            "gauge",
            "Rooms served by each media worker.",
            rooms.iter().map(|r| r.rooms as u64).collect(),
        ),
        (
            "sfud_media_worker_peers",
            "gauge",
            "Participants whose connections each media worker holds (a large \
             room's are spread over several workers).",
            rooms.iter().map(|r| r.peers as u64).collect(),
        ),
        (
            "sfud_media_worker_connections",
            "gauge",
            "Peer connections each media worker holds.",
            workers.iter().map(|w| w.connections as u64).collect(),
        ),
        (
            "sfud_media_worker_rtp_forwarded_total",
            "counter",
            "RTP packets each media worker wrote to subscriber legs.",
            workers.iter().map(|w| w.rtp_forwarded).collect(),
        ),
        (
            "sfud_media_worker_rtp_piped_total",
            "counter",
            "RTP packets each media worker received from the worker that owns \
             their track, for its subscribers of a room spread over workers.",
            workers.iter().map(|w| w.piped_in).collect(),
        ),
    ];
    for (name, kind, help, values) in families {
        out.family(name, kind, help);
        for (i, v) in values.iter().enumerate() {
            out.sample(name, &[("worker", &i.to_string())], v);
        }
    }
}

/// `GET /metrics`.
pub async fn handler(State(source): State<MetricsSource>) -> Response {
    match source.render().await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// What the rooms and the recorder report.
struct Counts {
    rooms: usize,
    peers: usize,
    recordings: usize,
}

fn write_daemon(out: &mut Exposition, c: &Counts, s: &MediaStats) {
    out.family("sfud_build_info", "gauge", "Version of the running daemon.");
    out.sample(
        "sfud_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.gauge("sfud_rooms", "Rooms open.", c.rooms);
    out.gauge("sfud_peers", "Participants in all rooms.", c.peers);
    out.gauge("sfud_tracks", "Tracks being published.", s.tracks);
    out.gauge(
        "sfud_peer_connections",
        "WebRTC peer connections alive (up to two per participant).",
        s.connections,
    );
    out.gauge(
        "sfud_recording_sessions",
        "Recordings being written.",
        c.recordings,
    );
    out.counter(
        "sfud_rtp_packets_received_total",
        "RTP packets received from publishers.",
        s.rtp_in,
    );
    out.counter(
        "sfud_rtp_packets_forwarded_total",
        "RTP packets forwarded to subscribers.",
        s.rtp_forwarded,
    );
    out.counter(
        "sfud_rtp_packets_retransmitted_total",
        "RTP packets sent again for subscribers' NACKs.",
        s.rtp_retransmitted,
    );
    out.histogram(
        "sfud_forwarding_delay_seconds",
        "Time forwarded packets spent in sfud, from the read of the first \
         datagram of a media loop turn to the end of that turn's sends (an \
         upper bound per packet).",
        &s.forward_delay,
    );
    out.histogram(
        "sfud_publish_setup_seconds",
        "Time publish connections took from sfud's answer to connected (ICE \
         and DTLS done).",
        &s.setup_publish,
    );
    out.histogram(
        "sfud_subscribe_setup_seconds",
        "Time subscribe connections took from the subscriber's answer to \
         connected (ICE and DTLS done).",
        &s.setup_subscribe,
    );
    out.gauge(
        "sfud_fast_path_connections",
        "Subscribe connections whose media sfud protects and sends itself \
         (the rest go through the WebRTC stack's slower write path).",
        s.fast_path_connections,
    );
    out.counter(
        "sfud_rtp_bytes_forwarded_total",
        "RTP payload bytes forwarded to subscribers.",
        s.bytes_forwarded,
    );
    out.counter(
        "sfud_udp_datagrams_received_total",
        "UDP datagrams received on the media ports.",
        s.datagrams_in,
    );
    out.counter(
        "sfud_udp_bytes_received_total",
        "UDP payload bytes received on the media ports.",
        s.bytes_in,
    );
    out.counter(
        "sfud_udp_datagrams_sent_total",
        "UDP datagrams sent from the media ports.",
        s.datagrams_out,
    );
    out.counter(
        "sfud_udp_bytes_sent_total",
        "UDP payload bytes sent from the media ports.",
        s.bytes_out,
    );
    out.family(
        "sfud_dropped_packets_total",
        "counter",
        "Packets dropped, by cause: unroutable (from no known peer), send \
         (the socket refused it), subscriber (a subscriber leg not ready for it), \
         pipe (a message to another media worker whose inbox was full).",
    );
    for (cause, n) in [
        ("unroutable", s.dropped_unroutable),
        ("send", s.dropped_send),
        ("subscriber", s.dropped_leg),
        ("pipe", s.pipe_dropped),
    ] {
        out.sample("sfud_dropped_packets_total", &[("cause", cause)], n);
    }
    out.family(
        "sfud_keyframe_requests_total",
        "counter",
        "Keyframe requests (PLI) sent to publishers, by cause: subscriber (a \
         subscriber's PLI or FIR, relayed), new_subscriber (a forwarded track \
         starts), layer_switch (a subscriber moves to another simulcast \
         layer), recording.",
    );
    let k = &s.keyframe_requests;
    for (cause, n) in [
        ("subscriber", k.subscriber),
        ("new_subscriber", k.new_subscriber),
        ("layer_switch", k.layer_switch),
        ("recording", k.recording),
    ] {
        out.sample("sfud_keyframe_requests_total", &[("cause", cause)], n);
    }
    out.counter(
        "sfud_probe_packets_total",
        "Packets sent to probe subscribers' links for a better simulcast layer \
         (copies on the legs' RTX streams).",
        s.probe_packets,
    );
    out.counter(
        "sfud_layer_pauses_total",
        "Times a subscriber's simulcast track was paused because not even its \
         lowest layer fitted the subscriber's link.",
        s.layer_pauses,
    );
    out.counter(
        "sfud_transport_feedback_fast_total",
        "Subscribers' transport-wide congestion control feedback datagrams sfud \
         read itself, without the WebRTC stack.",
        s.feedback_fast,
    );
    out.counter(
        "sfud_chat_messages_total",
        "Chat messages participants sent on their chat data channels and the \
         server relayed to their rooms.",
        s.chat_messages,
    );
    out.counter(
        "sfud_chat_refused_total",
        "Chat messages refused: over 4096 bytes, over the sender's rate, or not text.",
        s.chat_refused,
    );
    out.counter(
        "sfud_chat_dropped_total",
        "Chat messages not delivered to a receiver whose channel did not keep up.",
        s.chat_dropped,
    );
    out.counter(
        "sfud_layer_drops_total",
        "Times a subscriber's leg moved down on a congested link and stopped its \
         layer at once instead of at the lower layer's key frame.",
        s.layer_drops,
    );
    out.counter(
        "sfud_layer_switches_total",
        "Times a subscriber started forwarding another simulcast layer of a track.",
        s.layer_switches,
    );
}

fn write_refusals(out: &mut Exposition, mut refusals: Vec<(&'static str, u64)>) {
    out.family(
        "sfud_signaling_refusals_total",
        "counter",
        "Signaling requests refused, by the error code sent to the client \
         (codes appear once they occur).",
    );
    refusals.sort_unstable();
    for (code, n) in refusals {
        out.sample("sfud_signaling_refusals_total", &[("code", code)], n);
    }
}

fn write_process(out: &mut Exposition, started: SystemTime, p: &ProcessSample) {
    let start = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    out.gauge(
        "process_start_time_seconds",
        "Start time of the daemon since the UNIX epoch, in seconds.",
        start,
    );
    if let Some(cpu) = p.cpu_seconds {
        out.counter(
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            cpu,
        );
    }
    if let Some(rss) = p.resident_bytes {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
            rss,
        );
    }
    if let Some(vm) = p.virtual_bytes {
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes.",
            vm,
        );
    }
    if let Some(threads) = p.threads {
        out.gauge("process_threads", "OS threads.", threads);
    }
    if let Some(fds) = p.open_fds {
        out.gauge("process_open_fds", "Open file descriptors.", fds);
    }
}

/// The process's resource use, from `/proc/self`; `None` where unreadable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    /// utime + stime.
    pub cpu_seconds: Option<f64>,
    /// `VmRSS`.
    pub resident_bytes: Option<u64>,
    /// `VmSize`.
    pub virtual_bytes: Option<u64>,
    /// `Threads`.
    pub threads: Option<u64>,
    /// Entries of `/proc/self/fd`.
    pub open_fds: Option<usize>,
}

impl ProcessSample {
    /// Reads this process.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mut sample = Self::parse(&stat, &status, clock_ticks_per_second());
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count().saturating_sub(1)); // the directory's own fd
        sample
    }

    /// Parses `/proc/self/stat` (CPU time) and `/proc/self/status` (memory).
    pub fn parse(stat: &str, status: &str, ticks_per_second: u64) -> Self {
        // The command name, field 2, is in parentheses and may contain
        // spaces and parentheses: fields are counted after the last `)`.
        let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
            let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
            let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
            Some((utime + stime) as f64 / ticks_per_second.max(1) as f64)
        });
        let kib = |key: &str| {
            status.lines().find_map(|l| {
                let v = l.strip_prefix(key)?.strip_prefix(':')?.trim();
                let n: u64 = v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()?;
                Some(n * 1024)
            })
        };
        let threads = status.lines().find_map(|l| {
            l.strip_prefix("Threads:")
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        ProcessSample {
            cpu_seconds,
            resident_bytes: kib("VmRSS"),
            virtual_bytes: kib("VmSize"),
            threads,
            open_fds: None,
        }
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/self/stat`.
fn clock_ticks_per_second() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        // USER_HZ, fixed at 100 in the kernel ABI of common architectures.
        _ => 100,
    }
}

/// Text being written in the exposition format.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn histogram<B: Bounds>(&mut self, name: &str, help: &str, h: &Histogram<B>) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound_us, n) in h.cumulative() {
            let le = (bound_us as f64 / 1e6).to_string();
            self.sample(&bucket, &[("le", &le)], n);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count);
        self.sample(&format!("{name}_sum"), &[], h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), &[], h.count);
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        // A command name with spaces and a parenthesis must not shift fields.
        let stat = "1234 (sfud (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 12345 678";
        let status = "Name:\tsfud\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n";
        let p = ProcessSample::parse(stat, status, 100);
        assert_eq!(p.cpu_seconds, Some(3.0));
        assert_eq!(p.resident_bytes, Some(10240 * 1024));
        assert_eq!(p.virtual_bytes, Some(204800 * 1024));
        assert_eq!(p.threads, Some(9));
        assert_eq!(ProcessSample::parse("", "", 100), ProcessSample::default());
    }

    #[test]
    fn the_running_process_is_readable() {
        let p = ProcessSample::read();
        assert!(p.cpu_seconds.is_some());
        assert!(p.resident_bytes.is_some_and(|b| b > 0));
        assert!(p.open_fds.is_some_and(|n| n >= 3));
    }

    #[test]
    fn samples_and_labels_are_escaped() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "a \\ b\nc");
        out.sample("x_total", &[("cause", "q\"\\\n"), ("k", "v")], 3);
        out.gauge("y", "y.", 1.5);
        assert_eq!(
            out.text,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{cause=\"q\\\"\\\\\\n\",k=\"v\"} 3\n\
             # HELP y y.\n# TYPE y gauge\ny 1.5\n"
        );
    }
}
