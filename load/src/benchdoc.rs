//! Turns the JSON of one `scripts/bench` run into `docs/benchmarks.md`:
//! the comparison table, the ratios, the targets, the ramps, the floor's
//! variants and the profile.

use crate::floor::FloorReport;
use crate::report::{Report, Window};
use std::fmt::Write as _;

mod sections;
use sections::{rooms_section, simulcast_section};

/// What one benchmark run produced.
pub struct BenchRun {
    /// sfud at the fixed comparison load.
    pub sfud: Report,
    /// sfud at the same load with a simulcast publisher (subscribers on
    /// mixed layers), if that run was made.
    pub sfud_simulcast: Option<Report>,
    /// Janus at the same load.
    pub janus: Report,
    /// sfud and Janus on many small rooms, everyone publishing, if that
    /// scenario ran.
    pub rooms: Option<(Report, Report)>,
    /// sfud ramp.
    pub sfud_ramp: Report,
    /// Janus ramp.
    pub janus_ramp: Report,
    /// The floor on video-sized packets.
    pub floor_video: FloorReport,
    /// The floor on audio-sized packets.
    pub floor_audio: FloorReport,
    /// The floor on video-sized packets in smaller batches (a lower
    /// simulcast layer's frame is one or two packets), if measured.
    pub floor_video_batches: Vec<FloorReport>,
    /// Video packets per second a publisher sends (the top layer's rate).
    pub video_pps: u32,
    /// Audio packets per second a publisher sends.
    pub audio_pps: u32,
    /// Video packets per audio packet in the published mix (150/50 = 3).
    pub video_share: f64,
    /// `perf report` lines of sfud under the same load, if profiled.
    pub profile: Option<String>,
    /// Hand-written analysis to include (markdown).
    pub analysis: Option<String>,
    /// Machine description (markdown lines).
    pub machine: String,
    /// The exact command.
    pub command: String,
    /// When it ran.
    pub date: String,
}

pub(crate) fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

pub(crate) fn ms(v: u64) -> String {
    format!("{:.2}", v as f64 / 1000.0)
}

/// A bucket bound of sfud's delay histogram, in ms.
fn bound_ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(u64::MAX) => "> 100".into(),
        Some(us) => format!("≤ {}", us as f64 / 1000.0),
    }
}

fn held_subscribers(r: &Report) -> String {
    match r.max_held {
        Some(crate::scenario::Scenario::Webinar { subscribers, .. }) => subscribers.to_string(),
        Some(other) => other.describe(),
        None => "none".into(),
    }
}

/// The floor per packet for the published mix, for the cheapest sending
/// variant and for one `send` per packet.
fn floor_mix(run: &BenchRun, variant: Option<&str>) -> Option<f64> {
    let pick = |f: &FloorReport| match variant {
        Some(name) => f
            .variants
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.cpu_us_per_packet),
        None => f.best().map(|v| v.cpu_us_per_packet),
    };
    let v = pick(&run.floor_video)?;
    let a = pick(&run.floor_audio)?;
    let share = run.video_share / (run.video_share + 1.0);
    Some(v * share + a * (1.0 - share))
}

/// A forwarder's floor per packet for what subscribers receive: each
/// subscriber's share of a video frame in one GSO send (`video` lists, per
/// kind of subscriber, the video packets per second it gets), and audio
/// one send per packet, which a forwarder cannot batch (one packet per
/// subscriber every 20 ms). `None` when a batch size was not measured.
fn forwarder_floor(run: &BenchRun, video: &[u32]) -> Option<f64> {
    let at_batch = |batch: usize| {
        std::iter::once(&run.floor_video)
            .chain(&run.floor_video_batches)
            .find(|f| f.batch == batch)
            .and_then(FloorReport::best)
            .map(|v| v.cpu_us_per_packet)
    };
    let audio = run
        .floor_audio
        .variants
        .iter()
        .find(|v| v.name == "protect + send")?
        .cpu_us_per_packet;
    let (mut cost, mut packets) = (0.0, 0.0);
    for &pps in video {
        let batch = sfu_client::video_packets_per_frame(pps) as usize;
        cost += f64::from(pps) * at_batch(batch)? + f64::from(run.audio_pps) * audio;
        packets += f64::from(pps + run.audio_pps);
    }
    (packets > 0.0).then(|| cost / packets)
}

/// [`forwarder_floor`] for the plain run and for the simulcast run's
/// subscribers (one in three on each layer).
fn forwarder_floors(run: &BenchRun) -> (Option<f64>, Option<f64>) {
    let layers = sfu_client::PublishOptions {
        video_packets_per_sec: run.video_pps,
        ..Default::default()
    }
    .layer_packets_per_sec();
    (
        forwarder_floor(run, &[run.video_pps]),
        forwarder_floor(run, &layers),
    )
}

pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The whole document.
pub fn render(run: &BenchRun) -> String {
    let mut d = String::new();
    let s = &run.sfud.window;
    let j = &run.janus.window;
    let floor_best = floor_mix(run, None);
    let floor_send = floor_mix(run, Some("protect + send"));
    let _ = writeln!(d, "# Benchmarks: sfud, Janus and the floor\n");
    let _ = writeln!(
        d,
        "Generated by `scripts/bench` on {}; numbers from one run on the machine below. \
         Do not edit by hand: run the command again.\n",
        run.date
    );
    let _ = writeln!(d, "```sh\n{}\n```\n", run.command);
    let _ = writeln!(d, "## Machine\n\n{}\n", run.machine.trim_end());
    let _ = writeln!(d, "## Method\n");
    let _ = writeln!(
        d,
        "- Load: `sfu-load` (workspace crate `load/`), real WebRTC clients in one \
         process on the same machine: {}, each publisher sending synthetic VP8 \
         ({} pkt/s of ~1100-byte payloads, a keyframe-shaped frame every 2 s) and Opus \
         (50 pkt/s of 160 bytes). Every payload carries a sequence number and its send time: \
         loss, duplicates, reordering and one-way latency are measured by the receivers on the \
         same clock. {}",
        s.scenario.describe(),
        150,
        clients_note(run.sfud.lite_receivers)
    );
    let _ = writeln!(
        d,
        "- CPU: user + system time of the SFU process from `/proc/PID/stat` over the measured \
         window, divided by the RTP packets the subscribers received. It includes everything \
         the SFU does (ICE, DTLS, RTCP, timers, signaling), and the kernel's loopback delivery \
         that runs in its send calls."
    );
    let _ = writeln!(
        d,
        "- Janus 1.1.2 (Debian package, VideoRoom plugin, our config in `bench/janus/`) runs in \
         the same network namespace on a veth carrying 127.0.0.2 (it gathers no candidates on \
         loopback); the generator speaks the VideoRoom API to it through a signaling translator, \
         so the same clients, media and accounting drive both."
    );
    let _ = writeln!(
        d,
        "- The floor (`sfu-load floor`): SRTP-protect (AES-128-GCM, the `rtc` crate's own SRTP) \
         and send the same packets to a loopback UDP socket; the figure is the {video}:1 \
         video/audio mix of the 1100- and 160-byte results.",
        video = run.video_share
    );
    let _ = writeln!(
        d,
        "- Max subscribers: `--ramp` adds subscribers until loss passes 1% or p99 latency \
         50 ms (or a subscriber gets no media); the largest step that held. The comparison \
         load is half of what sfud held.\n"
    );

    let _ = writeln!(d, "## Results\n");
    let _ = writeln!(
        d,
        "Comparison load: {} ({} forwarded packets/s expected).\n",
        s.scenario.describe(),
        s.packets_out_expected_per_s
    );
    let _ = writeln!(d, "| | sfud | Janus | floor |");
    let _ = writeln!(d, "|---|---:|---:|---:|");
    let _ = writeln!(
        d,
        "| CPU µs per forwarded packet | {} | {} | {} (batched, GSO) / {} (one send per packet) |",
        us(s.sfu_cpu_us_per_packet),
        us(j.sfu_cpu_us_per_packet),
        us(floor_best),
        us(floor_send)
    );
    let _ = writeln!(
        d,
        "| CPU s per 1000 forwarded packets | {} | {} | {} |",
        s.sfu_cpu_s_per_1000_packets
            .map_or("-".into(), |v| format!("{v:.4}")),
        j.sfu_cpu_s_per_1000_packets
            .map_or("-".into(), |v| format!("{v:.4}")),
        floor_best.map_or("-".into(), |v| format!("{:.4}", v / 1000.0))
    );
    let _ = writeln!(
        d,
        "| max subscribers held (1 publisher) | {} | {} | - |",
        held_subscribers(&run.sfud_ramp),
        held_subscribers(&run.janus_ramp)
    );
    comparison_rows(&mut d, s, j);
    let _ = writeln!(d);
    let _ = writeln!(
        d,
        "Ratios of CPU per forwarded packet: **sfud/Janus = {}**, **sfud/floor = {}** \
         (against one send per packet: {}).\n",
        ratio(s.sfu_cpu_us_per_packet, j.sfu_cpu_us_per_packet),
        ratio(s.sfu_cpu_us_per_packet, floor_best),
        ratio(s.sfu_cpu_us_per_packet, floor_send)
    );

    if let Some(sim) = &run.sfud_simulcast {
        simulcast_section(&mut d, s, &sim.window, forwarder_floors(run));
    }
    if let Some((sfud, janus)) = &run.rooms {
        rooms_section(&mut d, &sfud.window, &janus.window);
    }

    let _ = writeln!(d, "## Targets\n");
    let _ = writeln!(d, "| target | measured | |");
    let _ = writeln!(d, "|---|---|---|");
    let within =
        |a: Option<f64>, b: Option<f64>, k: f64| matches!((a, b), (Some(a), Some(b)) if a <= k * b);
    let _ = writeln!(
        d,
        "| within 2x of the floor | {} µs vs {} µs | {} |",
        us(s.sfu_cpu_us_per_packet),
        us(floor_best),
        yes(within(s.sfu_cpu_us_per_packet, floor_best, 2.0))
    );
    let _ = writeln!(
        d,
        "| at least 10x cheaper than Janus | {} µs vs {} µs | {} |",
        us(s.sfu_cpu_us_per_packet),
        us(j.sfu_cpu_us_per_packet),
        yes(within(
            s.sfu_cpu_us_per_packet,
            j.sfu_cpu_us_per_packet,
            0.1
        ))
    );
    if let (Some(ls), Some(lj)) = (run.sfud_ramp.ramp.first(), run.janus_ramp.ramp.first()) {
        if ls.scenario == lj.scenario {
            let _ = writeln!(
                d,
                "| light load ({}, the ramps' first step): at least 10x cheaper than Janus | {} µs vs {} µs ({}) | {} |",
                ls.scenario.describe(),
                us(ls.sfu_cpu_us_per_packet),
                us(lj.sfu_cpu_us_per_packet),
                ratio(ls.sfu_cpu_us_per_packet, lj.sfu_cpu_us_per_packet),
                yes(within(ls.sfu_cpu_us_per_packet, lj.sfu_cpu_us_per_packet, 0.1))
            );
        }
    }
    if let Some((rs, rj)) = &run.rooms {
        let (rs, rj) = (&rs.window, &rj.window);
        let _ = writeln!(
            d,
            "| many small rooms: at least 10x cheaper than Janus | {} µs vs {} µs | {} |",
            us(rs.sfu_cpu_us_per_packet),
            us(rj.sfu_cpu_us_per_packet),
            yes(within(
                rs.sfu_cpu_us_per_packet,
                rj.sfu_cpu_us_per_packet,
                0.1
            ))
        );
    }
    let inside_ok = s.sfu_forward_delay_p99_us.is_some_and(|us| us <= 5_000);
    let _ = writeln!(
        d,
        "| p99 forwarding latency under 5 ms | at the receivers {} ms; inside sfud {} ms | {} |",
        ms(s.latency_p99_us),
        bound_ms(s.sfu_forward_delay_p99_us),
        match (s.latency_p99_us < 5_000, inside_ok) {
            (true, _) => "met".to_owned(),
            (false, true) => format!("met inside sfud; {} at the receivers", yes(false)),
            (false, false) => yes(false).to_owned(),
        }
    );
    let _ = writeln!(
        d,
        "| zero loss at half the held load | {} lost, {} duplicates | {} |",
        s.lost,
        s.duplicates,
        yes(s.lost == 0 && s.duplicates == 0)
    );
    if let Some(sim) = &run.sfud_simulcast {
        let w = &sim.window;
        let _ =
            writeln!(
            d,
            "| simulcast at most 15% more CPU per forwarded packet | {} µs vs {} µs ({}; the forwarder's floor for the two mixes: {}) | {} |",
            us(w.sfu_cpu_us_per_packet),
            us(s.sfu_cpu_us_per_packet),
            ratio(w.sfu_cpu_us_per_packet, s.sfu_cpu_us_per_packet),
            {
                let (plain_floor, sim_floor) = forwarder_floors(run);
                ratio(sim_floor, plain_floor)
            },
            yes(within(w.sfu_cpu_us_per_packet, s.sfu_cpu_us_per_packet, 1.15))
        );
        let _ = writeln!(
            d,
            "| no layer switches on a steady link after the first {:.0} s | {} per subscriber per minute | {} |",
            sim.warmup_s,
            per_min(w.layer_switches_per_subscriber_per_min),
            yes(w.layer_switches == Some(0))
        );
    }
    let _ = writeln!(d);

    for (name, r) in [("sfud", &run.sfud_ramp), ("Janus", &run.janus_ramp)] {
        let _ = writeln!(d, "## Ramp: {name}\n");
        let _ = writeln!(
            d,
            "| subscribers | forwarded pkt/s (expected) | loss % | p99 ms | p99 inside the SFU, ms | SFU µs/pkt | SFU % core | generator % machine | others % machine | |"
        );
        let _ = writeln!(d, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for w in &r.ramp {
            let subs = match w.scenario {
                crate::scenario::Scenario::Webinar { subscribers, .. } => subscribers.to_string(),
                other => other.describe(),
            };
            let _ = writeln!(
                d,
                "| {subs} | {:.0} ({:.0}) | {:.3} | {} | {} | {} | {:.0} | {:.0} | {} | {} |",
                w.packets_out_per_s,
                w.packets_out_expected_per_s,
                w.loss_percent,
                ms(w.latency_p99_us),
                bound_ms(w.sfu_forward_delay_p99_us),
                us(w.sfu_cpu_us_per_packet),
                w.sfu_cpu_percent.unwrap_or(0.0),
                w.generator_cpu_percent_of_machine.unwrap_or(0.0),
                pct(w.other_load_percent_of_machine),
                if w.held() { "held" } else { "failed" }
            );
        }
        let _ = writeln!(
            d,
            "\nStopped: {}.\n",
            r.ramp_stopped.as_deref().unwrap_or("-")
        );
        if let Some(last) = r.ramp.last().filter(|w| !w.held()) {
            let _ = writeln!(d, "{}\n", limit_note(last));
        }
    }

    let _ = writeln!(d, "## The generator's own capacity\n");
    let _ = writeln!(d, "{}\n", generator_note(&run.sfud_ramp));

    let _ = writeln!(d, "## The floor\n");
    for f in [&run.floor_video, &run.floor_audio] {
        let _ = writeln!(
            d,
            "{} on {}-byte payloads ({}-byte datagrams), batches of {}:\n",
            f.cipher, f.payload_bytes, f.datagram_bytes, f.batch
        );
        let _ = writeln!(d, "| variant | CPU µs/packet | wall µs/packet |");
        let _ = writeln!(d, "|---|---:|---:|");
        for v in &f.variants {
            let _ = writeln!(
                d,
                "| {} | {:.3} | {:.3} |",
                v.name, v.cpu_us_per_packet, v.wall_us_per_packet
            );
        }
        let _ = writeln!(d);
    }

    let _ = writeln!(d, "## Where sfud's time goes\n");
    if let Some(a) = &run.analysis {
        let _ = writeln!(d, "{}\n", a.trim_end());
    }
    match &run.profile {
        Some(p) => {
            let _ = writeln!(
                d,
                "`perf record --call-graph dwarf` of sfud (a separate run at the comparison \
                 load), as `perf report` shows it:\n\n```text\n{}\n```",
                p.trim_end()
            );
        }
        None => {
            let _ = writeln!(d, "No profile in this run (perf unavailable).");
        }
    }
    d
}

pub(crate) fn per_min(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The rows of a table of two SFUs (and a fourth column left empty) that
/// compare what the receivers got and what each SFU cost.
pub(crate) fn comparison_rows(d: &mut String, s: &Window, j: &Window) {
    let _ = writeln!(
        d,
        "| forwarded packets/s (expected {:.0}) | {:.0} | {:.0} | - |",
        s.packets_out_expected_per_s, s.packets_out_per_s, j.packets_out_per_s
    );
    let _ = writeln!(
        d,
        "| latency at the receivers p50 / p99 / max, ms | {} / {} / {} | {} / {} / {} | - |",
        ms(s.latency_p50_us),
        ms(s.latency_p99_us),
        ms(s.latency_max_us),
        ms(j.latency_p50_us),
        ms(j.latency_p99_us),
        ms(j.latency_max_us)
    );
    let _ = writeln!(
        d,
        "| time inside the SFU p50 / p99, ms (its own histogram) | {} / {} | - | - |",
        bound_ms(s.sfu_forward_delay_p50_us),
        bound_ms(s.sfu_forward_delay_p99_us)
    );
    let _ = writeln!(
        d,
        "| loss / duplicates / out of order | {} ({:.3}%) / {} / {} | {} ({:.3}%) / {} / {} | - |",
        s.lost,
        s.loss_percent,
        s.duplicates,
        s.out_of_order,
        j.lost,
        j.loss_percent,
        j.duplicates,
        j.out_of_order
    );
    let _ = writeln!(
        d,
        "| join to first media p50 / max, ms | {:.0} / {:.0} | {:.0} / {:.0} | - |",
        s.join_to_first_media_p50_ms,
        s.join_to_first_media_max_ms,
        j.join_to_first_media_p50_ms,
        j.join_to_first_media_max_ms
    );
    let _ = writeln!(
        d,
        "| SFU CPU, % of one core | {:.0} | {:.0} | - |",
        s.sfu_cpu_percent.unwrap_or(0.0),
        j.sfu_cpu_percent.unwrap_or(0.0)
    );
    if !s.sfu_workers.is_empty() {
        let _ = writeln!(
            d,
            "| sfud's media worker threads: CPU, packets forwarded, CPU per packet | {} | - | - |",
            crate::report::workers_line(&s.sfu_workers).replace(" us/packet", " µs")
        );
    }
    let _ = writeln!(
        d,
        "| SFU peak RSS, MiB | {:.1} | {:.1} | - |",
        s.sfu_peak_rss_mib.unwrap_or(0.0),
        j.sfu_peak_rss_mib.unwrap_or(0.0)
    );
    let _ = writeln!(
        d,
        "| generator CPU, % of the machine | {:.0} | {:.0} | - |",
        s.generator_cpu_percent_of_machine.unwrap_or(0.0),
        j.generator_cpu_percent_of_machine.unwrap_or(0.0)
    );
    let _ = writeln!(
        d,
        "| other processes, % of the machine | {} | {} | - |",
        pct(s.other_load_percent_of_machine),
        pct(j.other_load_percent_of_machine)
    );
}

/// Why a ramp step failed, from what each side used.
fn limit_note(w: &Window) -> String {
    let gen = w.generator_cpu_percent_of_machine.unwrap_or(0.0);
    let sfu = w.sfu_cpu_percent.unwrap_or(0.0);
    let machine = w.machine_busy_percent.unwrap_or(0.0);
    let who = if gen >= 80.0 && sfu < 80.0 {
        "the generator (its clients use most of both cores), not the SFU, was the limit"
    } else if sfu >= 90.0 {
        "the SFU's own CPU was the limit"
    } else if machine >= 90.0 {
        "the machine as a whole was the limit (generator, SFU and other work share two cores)"
    } else {
        "neither was saturated: the step failed on latency, the time each frame's fan-out \
         burst takes through the SFU and then through the generator's receivers"
    };
    format!(
        "At the failing step the generator used {gen:.0}% of the machine, the SFU {sfu:.0}% of one core \
         and the machine was {machine:.0}% busy: {who}."
    )
}

pub(crate) fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// Which clients the generator ran.
fn clients_note(lite: bool) -> &'static str {
    if lite {
        "Participants that publish are full clients (`webrtc`'s async peer connection); those \
         that only receive are lite receivers (`load/src/lite`): `rtc`'s sans-IO connection on \
         one task each, which once DTLS is done decrypt SRTP themselves and answer with \
         transport-wide feedback every 100 ms, as browsers do (no NACKs: nothing is lost before \
         a ramp step fails)."
    } else {
        "Every participant is a full client (`webrtc`'s async peer connection)."
    }
}

/// How many subscribers the generator could hold by itself, from its CPU
/// per received packet at the largest sfud step.
fn generator_note(ramp: &Report) -> String {
    let Some(w) = ramp
        .ramp
        .iter()
        .filter(|w| w.generator_cpu_us_per_received_packet.is_some())
        .max_by(|a, b| a.packets_out_per_s.total_cmp(&b.packets_out_per_s))
    else {
        return "Not measured.".into();
    };
    let per_packet = w.generator_cpu_us_per_received_packet.unwrap_or(0.0);
    let per_subscriber = w.packets_out_expected_per_s / w.scenario.streams().max(1) as f64;
    let packets = ramp.cores as f64 * 1e6 / per_packet.max(1e-9);
    format!(
        "sfu-load runs every client in one process; its cost is per connection and per \
         packet. At {} it used {:.1} µs of CPU per packet its receivers got \
         ({:.0}% of the machine). With both cores to itself it would receive at most about \
         {:.0} packets/s: about {:.0} subscribers of one publisher at {:.0} packets/s each. \
         A ramp that stops well below that measured the SFU (and the shared machine); one \
         that gets near it measures the generator.",
        w.scenario.describe(),
        per_packet,
        w.generator_cpu_percent_of_machine.unwrap_or(0.0),
        packets,
        packets / per_subscriber.max(1.0),
        per_subscriber
    )
}
