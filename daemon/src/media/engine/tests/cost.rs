//! What the core itself costs per forwarded packet, in-process: a
//! publisher's protected RTP in, every subscriber's protected copy out,
//! with no kernel, socket or load generator on the same cores. The
//! end-to-end benchmark (`scripts/bench`) measures the whole process on
//! loopback, where the kernel's send and delivery path is more than half
//! of sfud's time and the machine's noise is about 10% run to run; this
//! one isolates the part sfud's own code decides, on the thread's CPU
//! clock. A benchmark, not a test, so ignored by default:
//!
//! ```sh
//! cargo test --release -p sfud --lib core_forwarding_cost -- --ignored --nocapture
//! ```
//!
//! `SFUD_CORE_SUBSCRIBERS` (default 100) and `SFUD_CORE_PACKETS` (default
//! 20000) size it; `SFUD_CORE_PACKETS` is also the feedback benchmark's
//! number of reads (default 200000 there).

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use super::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// A delta frame's packet of about the size the end-to-end benchmark
/// sends (1100 bytes of payload).
fn video_packet(seq: u16, timestamp: u32, picture_id: u16) -> Vec<u8> {
    let mut rtp = vp8_packet(seq, timestamp, picture_id, false);
    rtp.resize(12 + 1100, 0x5a);
    rtp
}

#[test]
#[ignore = "a benchmark: see the module's documentation"]
fn core_forwarding_cost() {
    let subscribers = env_or("SFUD_CORE_SUBSCRIBERS", 100);
    let packets = env_or("SFUD_CORE_PACKETS", 20_000);
    let mut net = Net::new();
    let p = connected_publisher(&mut net);
    let mut camera = Camera::new(p);
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    let subs: Vec<usize> = (0..subscribers)
        .map(|k| {
            let s = net.add_client(false);
            net.subscribe(s, PeerId(100 + k as u64), tracks.clone());
            s
        })
        .collect();
    assert!(
        net.run_until(WITHIN, |n| subs.iter().all(|s| n.clients[*s].connected)),
        "every subscriber connected"
    );
    // Every leg started at a keyframe and forwards.
    camera.run_for(&mut net, Duration::from_secs(1));
    assert!(subs.iter().all(|s| !net.clients[*s].rtp.is_empty()));
    // Protected beforehand: the publisher's encryption is not the core's.
    let (mut seq, mut timestamp, mut picture_id) =
        (camera.seq, camera.timestamp, camera.picture_id);
    let datagrams: Vec<_> = (0..packets)
        .map(|i| {
            let d = net.protect(p, &video_packet(seq, timestamp, picture_id));
            seq = seq.wrapping_add(1);
            // Five packets a frame.
            if i % 5 == 4 {
                timestamp = timestamp.wrapping_add(3000);
                picture_id = (picture_id + 1) & 0x7fff;
            }
            d
        })
        .collect();
    let from = net.clients[p].addr;
    let forwarded = net.core.stats.rtp_forwarded;
    let (now, started) = (net.now, thread_cpu());
    for d in &datagrams {
        net.core.on_datagram(0, from, d, now, now);
        // What the driver's send would take, dropped.
        net.core.out.discard();
    }
    let spent = thread_cpu() - started;
    let forwarded = net.core.stats.rtp_forwarded - forwarded;
    assert_eq!(
        forwarded,
        (packets * subscribers) as u64,
        "every packet to every leg"
    );
    println!(
        "core_forwarding_cost: {subscribers} subscribers, {packets} packets in, {forwarded} forwarded, \
         {:.3} µs of CPU per forwarded packet",
        spent.as_secs_f64() * 1e6 / forwarded as f64
    );
}

/// A subscriber's feedback as libwebrtc sends it every 100 ms at the
/// benchmark's rate (20 packets, one lost), read by `rtc`'s parser and by
/// the fast path's reader, on the thread's CPU clock.
///
/// ```sh
/// cargo test --release -p sfud --lib feedback_read_cost -- --ignored --nocapture
/// ```
#[test]
#[ignore = "a benchmark: see the module's documentation"]
fn feedback_read_cost() {
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, StatusChunkTypeTcc, StatusVectorChunk, SymbolSizeTypeTcc,
        SymbolTypeTcc, TransportLayerCc,
    };
    use rtc::shared::marshal::Unmarshal;

    use crate::media::twcc::{arrivals, FeedbackReader};

    let received = |lost: bool| match lost {
        true => SymbolTypeTcc::PacketNotReceived,
        false => SymbolTypeTcc::PacketReceivedSmallDelta,
    };
    let chunks = (0..3)
        .map(|c| {
            PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: (0..7)
                    .map(|i| received(c * 7 + i == 9 || c * 7 + i >= 20))
                    .collect(),
            })
        })
        .collect();
    let fb = TransportLayerCc {
        media_ssrc: 1,
        base_sequence_number: 100,
        packet_status_count: 20,
        reference_time: 1000,
        packet_chunks: chunks,
        recv_deltas: (0..19)
            .map(|i| RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 250 * (i % 8),
            })
            .collect(),
        ..Default::default()
    };
    let raw = fb.marshal().expect("marshal");
    let mut reader = FeedbackReader::default();
    assert_eq!(reader.parse(&raw), &arrivals(&fb)[..]);
    let rounds = env_or("SFUD_CORE_PACKETS", 200_000);
    let mut sum = 0usize;
    let started = thread_cpu();
    for _ in 0..rounds {
        let mut buf = &raw[..];
        let fb = TransportLayerCc::unmarshal(&mut buf).expect("feedback");
        sum += arrivals(&fb).len();
    }
    let through_rtc = thread_cpu() - started;
    let started = thread_cpu();
    for _ in 0..rounds {
        sum += reader.parse(std::hint::black_box(&raw)).len();
    }
    let fast = thread_cpu() - started;
    assert_eq!(sum, rounds * 2 * 20);
    let per = |d: Duration| d.as_secs_f64() * 1e9 / rounds as f64;
    println!(
        "feedback_read_cost: a feedback of 20 packets read in {:.0} ns by rtc's parser, \
         {:.0} ns by the fast path's reader (decryption not included)",
        per(through_rtc),
        per(fast)
    );
}
