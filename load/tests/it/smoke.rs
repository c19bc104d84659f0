//! A few seconds of each scenario against sfud: packets flow, nothing is
//! lost on loopback, and the report is complete. Never asserts on a time.

use std::time::Duration;

use sfu_load::report::Report;
use sfu_load::scenario::Scenario;
use sfu_load::sfud_metrics::{self, Scrape};
use sfu_load::{LoadConfig, Ramp, Target};
use sfud::config::Config;
use tokio::sync::oneshot;

/// The daemon on ephemeral loopback ports, serving until `stop` is dropped.
async fn start_sfud() -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("literal address");
    config.rtc.udp_port = 0;
    config.rtc.bind_ips = vec!["127.0.0.1".parse().expect("literal address")];
    // Every participant joins from 127.0.0.1: lift the per-address join rate.
    config.limits.joins_per_second = 1000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.control.socket =
        std::env::temp_dir().join(format!("sfu-load-it-{}-{n}.sock", std::process::id()));
    let server = sfud::Server::bind(&config).await.expect("sfud binds");
    let url = format!("ws://{}/ws", server.http_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (url, stop, task)
}

async fn smoke(scenario: Scenario, ramp: Option<Ramp>) -> Report {
    smoke_with(scenario, ramp, true).await.0
}

/// A run with lite or full receivers, and sfud's metrics after it.
async fn smoke_with(scenario: Scenario, ramp: Option<Ramp>, lite: bool) -> (Report, Scrape) {
    let (url, stop, task) = start_sfud().await;
    let host_port = sfud_metrics::host_port(&url)
        .expect("a ws:// URL")
        .to_owned();
    let mut config = LoadConfig::new(Target::Sfud { url }, scenario);
    config.lite_receivers = lite;
    // The daemon runs in this process: its CPU is ours.
    config.sfu_pid = Some(std::process::id());
    config.warmup = Duration::from_secs(1);
    config.duration = Duration::from_secs(2);
    config.ramp = ramp;
    let report = sfu_load::run(&config).await.expect("the run completes");
    let metrics = sfud_metrics::read(&host_port)
        .await
        .expect("sfud's /metrics answers");
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    (report, metrics)
}

fn assert_clean(report: &Report) {
    let windows = std::iter::once(&report.window).chain(report.ramp.iter());
    for w in windows {
        let what = w.scenario.describe();
        let streams = w.scenario.streams();
        assert!(w.packets_in_per_s > 0.0, "{what}: nothing published");
        assert!(w.packets_out_per_s > 0.0, "{what}: nothing forwarded");
        assert!(w.bits_out_per_s > 0.0, "{what}");
        assert_eq!(
            w.tracks,
            streams * 2,
            "{what}: one audio and one video track per stream"
        );
        assert_eq!(w.lost, 0, "{what}: loss on loopback");
        assert_eq!(w.duplicates, 0, "{what}: duplicates");
        assert_eq!(w.misrouted, 0, "{what}: packets on the wrong track");
        assert_eq!(w.receivers_without_media, 0, "{what}");
        assert!(w.latency_samples > 0, "{what}: no latency samples");
        assert!(w.latency_p50_us <= w.latency_p99_us && w.latency_p99_us <= w.latency_max_us);
        assert!(
            w.sfu_cpu_s.is_some() && w.sfu_peak_rss_mib.is_some(),
            "{what}"
        );
        assert!(w.generator_cpu_s.is_some(), "{what}");
        // sfud's media workers: their threads (several servers may run in
        // this process, so only that they were read) and what they forwarded.
        assert!(!w.sfu_workers.is_empty(), "{what}: no media worker threads");
        assert!(
            w.sfu_workers.iter().map(|x| x.forwarded_per_s).sum::<f64>() > 0.0,
            "{what}: {:?}",
            w.sfu_workers
        );
        // sfud's own histogram was read at both ends of the window.
        assert!(
            w.sfu_forward_delay_p50_us <= w.sfu_forward_delay_p99_us
                && w.sfu_forward_delay_p99_us.is_some(),
            "{what}: {:?} / {:?}",
            w.sfu_forward_delay_p50_us,
            w.sfu_forward_delay_p99_us
        );
    }
    let json = serde_json::to_value(report).expect("report serializes");
    for key in [
        "packets_in_per_s",
        "bits_out_per_s",
        "sfu_cpu_s_per_1000_packets",
        "sfu_peak_rss_mib",
        "latency_p99_us",
        "join_to_first_media_p50_ms",
        "generator_cpu_percent_of_machine",
    ] {
        assert!(
            json["window"].get(key).is_some(),
            "report lacks {key}: {json}"
        );
    }
    let summary = report.summary();
    assert!(summary.contains("latency p50"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conference_smoke() {
    let report = smoke(Scenario::Conference { participants: 3 }, None).await;
    assert_clean(&report);
    assert_eq!(report.window.participants, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webinar_smoke_with_a_ramp_step() {
    let scenario = Scenario::Webinar {
        publishers: 1,
        subscribers: 2,
        simulcast: false,
    };
    let report = smoke(
        scenario,
        Some(Ramp {
            step: 2,
            max_steps: 1,
        }),
    )
    .await;
    assert_clean(&report);
    assert_eq!(report.ramp.len(), 2, "{}", report.summary());
    assert_eq!(report.ramp[1].participants, 5);
    assert_eq!(
        report.max_held,
        Some(scenario.grown(2)),
        "{}",
        report.summary()
    );
}

/// The lite receivers (the default above) and the full client both receive
/// everything, and both answer with transport-wide feedback that sfud reads:
/// the lite ones write it themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_and_full_receivers_both_send_feedback() {
    let scenario = Scenario::Webinar {
        publishers: 1,
        subscribers: 3,
        simulcast: false,
    };
    for lite in [true, false] {
        let (report, metrics) = smoke_with(scenario, None, lite).await;
        assert_clean(&report);
        // Three receivers for three seconds, every 100 ms: about 90.
        let feedback = metrics.transport_feedback.unwrap_or(0);
        assert!(
            feedback >= 30,
            "lite {lite}: sfud read {feedback} feedback datagrams: {}",
            report.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_webinar_smoke() {
    let scenario = Scenario::Webinar {
        publishers: 1,
        subscribers: 3,
        simulcast: true,
    };
    let report = smoke(scenario, None).await;
    assert_clean(&report);
    let w = &report.window;
    assert!(
        w.layer_switches.is_some() && w.layer_switches_per_subscriber_per_min.is_some(),
        "sfud's layer switches were read: {}",
        report.summary()
    );
    // One subscriber each on q, h and f: well under three full streams.
    assert!(w.packets_out_expected_per_s < 2.0 * 200.0, "{w:?}");
    assert!(
        w.packets_in_per_s > 200.0,
        "all three layers published: {w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_smoke() {
    let report = smoke(
        Scenario::Rooms {
            rooms: 2,
            per_room: 2,
        },
        None,
    )
    .await;
    assert_clean(&report);
}
