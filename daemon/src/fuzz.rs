//! Fuzz targets on stable Rust: a seeded mutation driver feeds every parser
//! of untrusted input with inputs grown from real ones (`daemon/fuzz/corpus`:
//! Chromium's and Firefox's publish offers with and without simulcast, and
//! valid messages and files written here) and with random bytes. A target passes when no
//! input panics.
//!
//! `cargo test` runs a short campaign of each (a few thousand inputs);
//! `scripts/fuzz SECONDS` runs each target for that long
//! (`SFUD_FUZZ_SECONDS`; `SFUD_FUZZ_TARGETS=a,b` for only those), with a
//! fresh seed unless `SFUD_FUZZ_SEED` is set, and prints how many inputs it ran. A failing input's seed and index are
//! in the panic message, so it replays.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod behind_dtls;
mod feedback_behind_dtls;

const CHROMIUM_OFFER: &str = include_str!("../fuzz/corpus/chromium-offer.sdp");

/// Publish offers of real browsers, as sfud's demo page makes them (audio,
/// then video; the simulcast ones with three RID layers). Captured with
/// `daemon/fuzz/capture`. No Safari: it does not run here.
pub(crate) const BROWSER_OFFERS: [(&str, &str); 4] = [
    ("chromium", CHROMIUM_OFFER),
    (
        "chromium-simulcast",
        include_str!("../fuzz/corpus/chromium-simulcast-offer.sdp"),
    ),
    ("firefox", include_str!("../fuzz/corpus/firefox-offer.sdp")),
    (
        "firefox-simulcast",
        include_str!("../fuzz/corpus/firefox-simulcast-offer.sdp"),
    ),
];

/// How long, or how many inputs, the campaign of target `name` runs:
/// `SFUD_FUZZ_SECONDS` each, or only for the targets `SFUD_FUZZ_TARGETS`
/// names (comma-separated; the others run their short campaign).
fn budget(name: &str, default_inputs: u64) -> (Option<Duration>, u64) {
    let chosen = std::env::var("SFUD_FUZZ_TARGETS")
        .map_or(true, |list| list.split(',').any(|t| t.trim() == name));
    match std::env::var("SFUD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(secs) if chosen => (Some(Duration::from_secs(secs)), u64::MAX),
        _ => (None, default_inputs),
    }
}

fn seed() -> u64 {
    std::env::var("SFUD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            if std::env::var_os("SFUD_FUZZ_SECONDS").is_some() {
                rand::random()
            } else {
                // `cargo test` is repeatable.
                0x5f_d5_f0_22
            }
        })
}

/// Runs `target` on inputs grown from `corpus` until the budget is spent.
fn campaign(name: &str, corpus: &[&[u8]], default_inputs: u64, mut target: impl FnMut(&[u8])) {
    let seed = seed();
    let (time, inputs) = budget(name, default_inputs);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut ran = 0u64;
    while ran < inputs && time.is_none_or(|t| started.elapsed() < t) {
        let input = grow(&mut rng, corpus);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        assert!(
            outcome.is_ok(),
            "fuzz target {name} panicked on input {ran} of seed {seed}: {:?}",
            String::from_utf8_lossy(&input)
        );
        ran += 1;
    }
    if time.is_some() {
        println!(
            "fuzz {name}: {ran} inputs in {:.0?}, seed {seed}, no panic",
            started.elapsed()
        );
    }
}

/// One input: a corpus entry mutated a few times, or random bytes.
fn grow(rng: &mut StdRng, corpus: &[&[u8]]) -> Vec<u8> {
    if corpus.is_empty() || rng.random_ratio(1, 10) {
        let len = rng.random_range(0..512);
        return (0..len).map(|_| rng.random()).collect();
    }
    let mut input = corpus[rng.random_range(0..corpus.len())].to_vec();
    for _ in 0..rng.random_range(1..=4) {
        mutate(rng, &mut input, corpus);
    }
    input
}

/// Mutations that find parser bugs: bit flips, cut and repeated runs,
/// numbers made huge or negative, lines from other inputs.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[&[u8]]) {
    let len = input.len();
    match rng.random_range(0..7) {
        0 if len > 0 => {
            let at = rng.random_range(0..len);
            input[at] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let at = rng.random_range(0..len);
            let end = (at + rng.random_range(1..64)).min(len);
            input.drain(at..end);
        }
        2 if len > 0 => {
            let at = rng.random_range(0..len);
            let end = (at + rng.random_range(1..64)).min(len);
            let run = input[at..end].to_vec();
            let to = rng.random_range(0..=input.len());
            input.splice(to..to, run);
        }
        3 => {
            let to = rng.random_range(0..=len);
            let number: &[u8] = match rng.random_range(0..5) {
                0 => b"4294967296",
                1 => b"-1",
                2 => b"18446744073709551616",
                3 => b"0",
                _ => b"65535",
            };
            input.splice(to..to, number.iter().copied());
        }
        4 if !corpus.is_empty() => {
            let other = corpus[rng.random_range(0..corpus.len())];
            let lines: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
            let line = lines[rng.random_range(0..lines.len())];
            let to = rng.random_range(0..=len);
            input.splice(to..to, line.iter().copied().chain([b'\n']));
        }
        5 if len > 0 => input.truncate(rng.random_range(0..len)),
        _ => {
            let to = rng.random_range(0..=len);
            input.insert(to, rng.random());
        }
    }
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

#[test]
fn signaling_messages() {
    use sfu_proto::signaling::ClientMessage;
    let corpus: &[&[u8]] = &[
        br#"{"type":"join","room":"r","name":"n","role":"listener","token":"a.b.c","mode":"sfu"}"#,
        br#"{"type":"offer","pc":"publish","sdp":"v=0\r\n"}"#,
        br#"{"type":"candidate","pc":"subscribe","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        br#"{"type":"track_settings","track":"video-7","paused":false,"max_width":320,"max_height":180,"max_layer":1}"#,
        br#"{"type":"signal","to":"00ff","data":{"sdp":{"type":"offer"}}}"#,
    ];
    campaign("signaling_messages", corpus, 20_000, |input| {
        let _ = serde_json::from_slice::<ClientMessage>(input);
    });
}

#[test]
fn sdp_as_sfud_reads_and_rewrites_it() {
    use crate::media::peer;
    let corpus = BROWSER_OFFERS.map(|(_, sdp)| sdp.as_bytes());
    campaign("sdp_helpers", &corpus, 5_000, |input| {
        let sdp = text(input);
        let _ = peer::media_sections(&sdp);
        let _ = peer::sends_media(&sdp);
        let _ = peer::first_mid(&sdp);
        let sim: Vec<String> = peer::sim_groups(&sdp).into_iter().map(|(m, _)| m).collect();
        let answer = peer::publish_answer(&sdp, &sim);
        assert!(answer.len() <= sdp.len() + 2 * sdp.lines().count() + 2);
    });
}

#[test]
fn sdp_offers_through_the_webrtc_stack() {
    use crate::media::peer::{build_connection, Announced, IceTimeouts};
    use crate::media::sdp_limits::{self, Described};
    use rtc::peer_connection::sdp::RTCSessionDescription;
    use sfu_proto::signaling::PcKind;
    let corpus = BROWSER_OFFERS.map(|(_, sdp)| sdp.as_bytes());
    let announced = [Announced {
        bound: "127.0.0.1:9".parse().expect("literal"),
        public: None,
        tcp: false,
    }];
    let timeouts = IceTimeouts {
        disconnected: Duration::from_secs(2),
        failed: Duration::from_secs(30),
    };
    // Each input builds a peer connection: far fewer than the cheap targets.
    campaign("sdp_negotiation", &corpus, 300, |input| {
        // As the engine does, before `rtc` sees the offer.
        let sdp = text(input);
        if sdp_limits::check(&sdp, Described::Offer).is_err() {
            return;
        }
        let Ok((mut pc, _)) = build_connection(
            PcKind::Publish,
            "fuzzufrag",
            timeouts,
            &announced,
            false,
            std::time::Instant::now(),
        ) else {
            return;
        };
        let Ok(offer) = RTCSessionDescription::offer(sdp) else {
            return;
        };
        let now = Instant::now();
        if pc.set_remote_description(now, offer).is_ok() {
            if let Ok(answer) = pc.create_answer(None) {
                let _ = pc.set_local_description(now, answer);
            }
        }
    });
}

/// A media core on loopback, driven without a loop: its datagrams go
/// nowhere or to a client in the same test.
fn loopback_engine() -> crate::media::MediaCore {
    let mut config = crate::config::Config::default();
    config.rtc.udp_port = 0;
    let settings = crate::media::engine_settings(&config, &["127.0.0.1".parse().expect("literal")]);
    crate::media::MediaCore::loopback(&settings, Instant::now())
}

/// The seed offers reach as deep as they can: the engine answers each, and
/// takes the simulcast ones as simulcast.
#[test]
fn browser_offers_are_answered() {
    use crate::media::PeerId;
    let mut engine = loopback_engine();
    for (i, (browser, offer)) in BROWSER_OFFERS.into_iter().enumerate() {
        let answer = engine
            .fuzz_answer(PeerId(i as u64 + 1), offer)
            .unwrap_or_else(|| panic!("{browser}'s offer is answered"));
        let simulcast = answer.contains("a=simulcast:recv q;h;f");
        assert_eq!(
            simulcast,
            browser.ends_with("simulcast"),
            "{browser}: {answer}"
        );
    }
}

#[test]
fn datagrams_through_the_media_engine() {
    use crate::media::PeerId;
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{Message, TransactionId, BINDING_REQUEST};
    use rtc::stun::textattrs::Username;
    use std::net::SocketAddr;
    let mut engine = loopback_engine();
    let ufrag = engine
        .fuzz_publish(PeerId(1), CHROMIUM_OFFER)
        .expect("Chromium's offer is answered");
    // A STUN binding request naming the connection: the engine ties the
    // client's address to it, so that what follows from there reaches the
    // connection's ICE, DTLS and SRTP (without the ICE password it fails the
    // integrity check, as a forged one would).
    let mut stun = Message::new();
    stun.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:fuzz"))),
    ])
    .expect("builds");
    let client: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let stranger: SocketAddr = "127.0.0.1:7".parse().expect("literal");
    engine.fuzz_datagram(client, &stun.raw);
    // Each entry starts with the byte that picks the sender (below).
    let entries: &[&[u8]] = &[
        &stun.raw,
        // A DTLS 1.2 ClientHello record header and the start of its body.
        &[
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 1, 0, 0, 0x14, 0, 0, 0, 0, 0, 0, 0,
            0x14, 0xfe, 0xfd,
        ],
        // RTP (VP8, payload type 96) and an RTCP receiver report.
        &[
            0x90, 0x60, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 0x90, 0x80, 0x81,
        ],
        &[
            0x81, 0xc9, 0, 7, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
        ],
    ];
    let entries: Vec<Vec<u8>> = entries.iter().map(|e| [&[0u8][..], e].concat()).collect();
    let corpus: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    campaign("media_datagrams", &corpus, 2_000, |input| {
        // The first byte picks the sender: the connection's address or one
        // the engine has never heard from.
        let Some((&who, data)) = input.split_first() else {
            return;
        };
        let from = if who & 1 == 0 { client } else { stranger };
        engine.fuzz_datagram(from, data);
    });
    // Both senders were exercised: the connection's address reached it.
    let (routed, unroutable) = engine.fuzz_routed();
    assert!(
        routed > 0 && unroutable > 0,
        "{routed} routed, {unroutable} not"
    );
    if std::env::var_os("SFUD_FUZZ_SECONDS").is_some() {
        println!("fuzz media_datagrams: {routed} reached the connection, {unroutable} did not");
    }
}

#[test]
fn media_payloads() {
    use crate::media::simulcast::{frame_size, is_keyframe_start, VideoCodec, Vp8Descriptor};
    let corpus: &[&[u8]] = &[
        &[
            0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
            0x00,
        ],
        &[0x8a, 0x80, 0x01, 0x10, 0x05, 0x00, 0x02, 0xd0, 0x00],
        &[
            0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x28, 0x02, 0xdd, 0x00, 0xf0, 0x88, 0x46,
            0xa0,
        ],
        &[
            0x18, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, 0x00, 0x03, 0x67, 0x42, 0xc0,
        ],
    ];
    campaign("media_payloads", corpus, 50_000, |input| {
        for codec in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::H264,
            VideoCodec::Av1,
        ] {
            let _ = is_keyframe_start(codec, input);
            let _ = frame_size(codec, input);
        }
        if let Some(d) = Vp8Descriptor::parse(input) {
            let mut copy = input.to_vec();
            d.write(&mut copy, 0x7fff, 0xff);
            d.write(&mut copy[..input.len() / 2], 1, 1);
        }
    });
}

#[test]
fn transport_feedback() {
    use crate::media::twcc::{arrivals, FeedbackReader};
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use rtc::shared::marshal::Unmarshal;
    // A feedback as Chromium sends it: header, base 1, count 12, deltas.
    let corpus: &[&[u8]] = &[&[
        0x8f, 0xcd, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00,
        0x0c, 0x00, 0x00, 0x10, 0x00, 0x20, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04,
        0x04, 0x04, 0x00, 0x00,
    ]];
    let mut reader = FeedbackReader::default();
    campaign("transport_feedback", corpus, 50_000, |input| {
        // The fast path's own reading never panics, and agrees with
        // `rtc`'s wherever `rtc` reads the packet.
        let fast = reader.parse(input).to_vec();
        match input.get(14..16) {
            Some(&[hi, lo]) if input.len() >= 20 => {
                assert!(fast.len() <= usize::from(u16::from_be_bytes([hi, lo])))
            }
            _ => assert!(fast.is_empty()),
        }
        let mut buf = input;
        if let Ok(fb) = TransportLayerCc::unmarshal(&mut buf) {
            let got = arrivals(&fb);
            assert!(got.len() <= usize::from(fb.packet_status_count));
            assert_eq!(fast, got, "fast path and rtc disagree on {input:02x?}");
        }
    });
}

#[test]
fn control_frames() {
    use sfu_proto::control::frame;
    use sfu_proto::control::Request;
    let corpus: &[&[u8]] = &[
        b"\x00\x00\x00\x2a{\"type\":\"hello\",\"protocol\":1,\"client\":\"t\"}",
        b"\x00\x00\x00\x11{\"type\":\"status\"}",
    ];
    campaign("control_frames", corpus, 20_000, |input| {
        let _ = frame::read_frame::<_, Request>(&mut std::io::Cursor::new(input));
    });
}

#[test]
fn config_files() {
    let corpus: &[&[u8]] = &[include_bytes!("../../config/sfud.toml")];
    campaign("config_files", corpus, 3_000, |input| {
        let _ = crate::config::Config::parse(&text(input), "fuzz.toml");
    });
}

#[test]
fn join_tokens() {
    use crate::auth::Authority;
    use crate::config::{AuthConfig, AuthKey, AuthMode};
    use sfu_proto::signaling::Role;
    let auth = Authority::new(&AuthConfig {
        mode: AuthMode::Token,
        keys: vec![AuthKey {
            id: "k1".into(),
            secret: "0123456789abcdef0123456789abcdef".into(),
        }],
    });
    let token = auth
        .mint(
            "room",
            "name",
            Role::Speaker,
            Duration::from_secs(600),
            false,
        )
        .expect("minted");
    let corpus = [token.as_bytes()];
    campaign("join_tokens", &corpus, 20_000, |input| {
        let _ = auth.verify(&text(input));
    });
}
