//! A subscriber's datagrams past the DTLS handshake: a client publishes VP8
//! and a second one subscribes to it (both `rtc` sans-IO cores, in memory),
//! then the subscriber sends mutated RTCP protected with its real SRTP keys:
//! receiver reports, NACKs for packets it was sent, PLIs, REMB and
//! transport-wide feedback. They reach the fast path's feedback reading
//! (SRTCP decryption, transport-cc parsing, the downlink estimate) and what
//! lies behind `rtc`'s SRTP for a subscribe connection: answering NACKs from
//! the track's history, keyframe requests to the publisher, REMB.

use super::behind_dtls::{add_candidates, client, connect, keyframe_packet, publish, pump, SSRC};
use super::campaign;
use crate::media::{MediaCore, PeerId};
use bytes::BytesMut;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::RTCPeerConnection;
use std::net::SocketAddr;
use std::time::Instant;

/// Plaintext RTCP a subscriber sends about its leg (media SSRC at bytes
/// 8..12 in each, where the target puts the leg's): a receiver report, a
/// NACK, a PLI, REMB, and transport-wide feedback for two packets.
fn corpus() -> Vec<Vec<u8>> {
    let sender = [0, 0, 0, 1];
    let media = [0, 0, 0, 0];
    let rr = [
        &[0x81, 201, 0, 7][..],
        &sender,
        &media,
        &[
            0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ]
    .concat();
    let nack = [&[0x81, 205, 0, 3][..], &sender, &media, &[0, 1, 0, 3]].concat();
    let pli = [&[0x81, 206, 0, 2][..], &sender, &media].concat();
    let remb = [
        &[0x8f, 206, 0, 5][..],
        &sender,
        &media,
        b"REMB",
        &[1, 0x0b, 0xb8, 0x00],
        &media,
    ]
    .concat();
    let twcc = [
        &[0x8f, 205, 0, 5][..],
        &sender,
        &media,
        &[0, 1, 0, 2, 0, 0, 0, 0, 0x20, 0x02, 0x04, 0x04],
    ]
    .concat();
    // The first byte picks what is done with the rest (see the target).
    [rr, nack, pli, remb, twcc]
        .into_iter()
        .map(|p| [&[0u8][..], &p].concat())
        .collect()
}

/// The SSRCs of the two lower layers the publisher adds to its video (the
/// client's own is the top one).
const LOWER_LAYERS: [u32; 2] = [0x0101_0101, 0x0202_0202];

/// The client's offer with its video sent as three layers of SSRC
/// simulcast (`a=ssrc-group:SIM`), so that the subscriber's leg switches
/// layers and has its link measured: only then is its transport feedback
/// read on the fast path. `rtc` binds the last SSRC the lines name, the
/// client's own; the engine reads the others.
fn ssrc_simulcast(offer: &str) -> String {
    let [low, mid] = LOWER_LAYERS;
    let mut out = String::with_capacity(offer.len() + 200);
    let mut added = false;
    for line in offer.split_inclusive("\r\n") {
        if !added && line.starts_with("a=ssrc:") {
            added = true;
            out.push_str(&format!("a=ssrc-group:SIM {low} {mid} {SSRC}\r\n"));
            out.push_str(&format!(
                "a=ssrc:{low} cname:fuzz\r\na=ssrc:{mid} cname:fuzz\r\n"
            ));
        }
        out.push_str(line);
    }
    assert!(added, "the client's offer names its SSRC");
    out
}

/// The sequence number and SSRC of an SRTP packet (their header is clear).
fn rtp_header(datagram: &[u8]) -> Option<(u16, u32)> {
    let rtcp = (192..=223).contains(datagram.get(1)?);
    if datagram.len() < 12 || datagram[0] >> 6 != 2 || rtcp {
        return None;
    }
    let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((seq, ssrc))
}

/// The subscriber's answer to the engine's offer `offer`.
fn answer(client: &mut RTCPeerConnection, offer: &str) -> String {
    client
        .set_remote_description(
            Instant::now(),
            RTCSessionDescription::offer(offer.to_owned()).expect("offer"),
        )
        .expect("remote description");
    let answer = client.create_answer(None).expect("answer");
    client
        .set_local_description(Instant::now(), answer.clone())
        .expect("local description");
    answer.sdp
}

/// Answers to the engine's subscribe offers, grown from the in-memory
/// subscriber's `answer`, through the engine's negotiation as a
/// subscriber's answer goes (the SDP bounds, then `rtc`'s remote
/// description and the legs' payload types): each input answers a fresh
/// subscribe connection to the published track, which then closes. Returns
/// how many were applied.
fn subscribe_answers(engine: &mut MediaCore, answer: &str) -> u64 {
    let tracks = engine.fuzz_tracks();
    let mut peer = 1_000u64;
    let mut applied = 0u64;
    campaign("subscribe_answers", &[answer.as_bytes()], 300, |input| {
        peer += 1;
        if engine
            .fuzz_subscribe(PeerId(peer), tracks.clone())
            .is_some()
        {
            applied += u64::from(engine.fuzz_subscribe_answer(PeerId(peer), &super::text(input)));
        }
        engine.fuzz_remove_peer(PeerId(peer));
    });
    applied
}

/// Two targets on one published track: `subscriber_feedback`, then
/// `subscribe_answers`.
#[test]
fn subscriber_feedback_behind_dtls() {
    let mut engine = super::loopback_engine();
    let publisher_addr: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let subscriber_addr: SocketAddr = "127.0.0.1:10".parse().expect("literal");
    let (mut publisher, publisher_keys) = client(publisher_addr, true);
    let publish_answer = publish(&mut engine, &mut publisher, PeerId(1), ssrc_simulcast);
    add_candidates(&mut publisher, &publish_answer);
    connect(&mut engine, &mut publisher, publisher_addr);
    let mut media = publisher_keys
        .outgoing_context()
        .expect("the publisher's SRTP keys were observed");
    let frame = keyframe_packet();
    let mut media_seq = 0u16;
    // A keyframe packet of each layer from the publisher; what the engine
    // sent the subscriber then.
    let mut send_media = |engine: &mut MediaCore| -> Vec<BytesMut> {
        media_seq = media_seq.wrapping_add(1);
        let mut sent = Vec::new();
        for ssrc in [LOWER_LAYERS[0], LOWER_LAYERS[1], SSRC] {
            let mut packet = frame.clone();
            packet[2..4].copy_from_slice(&media_seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(media_seq) * 3000).to_be_bytes());
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let datagram = media.encrypt_rtp(&packet).expect("protects RTP");
            sent.extend(
                engine
                    .fuzz_exchange(publisher_addr, Some(&datagram))
                    .into_iter()
                    .filter(|(to, _)| *to == subscriber_addr)
                    .map(|(_, d)| d),
            );
        }
        sent
    };
    let _ = send_media(&mut engine);
    let tracks = engine.fuzz_tracks();
    assert_eq!(tracks.len(), 1, "the publisher's track opened");

    let (mut subscriber, subscriber_keys) = client(subscriber_addr, false);
    let offer = engine
        .fuzz_subscribe(PeerId(2), tracks)
        .expect("the engine offers the track");
    let sdp = answer(&mut subscriber, &offer);
    assert!(
        engine.fuzz_subscribe_answer(PeerId(2), &sdp),
        "the subscriber's answer is applied"
    );
    add_candidates(&mut subscriber, &offer);
    connect(&mut engine, &mut subscriber, subscriber_addr);
    let mut srtcp = subscriber_keys
        .outgoing_context()
        .expect("the subscriber's SRTP keys were observed");

    // The leg's SSRC and the last sequence number it was sent, from what
    // reaches the subscriber.
    let mut leg: Option<(u16, u32)> = None;
    let mut forwarded = 0u64;
    for _ in 0..20 {
        for d in send_media(&mut engine) {
            leg = rtp_header(&d).or(leg);
        }
    }
    assert!(
        leg.is_some(),
        "the engine forwards the track to the subscriber"
    );
    let entries = corpus();
    let corpus: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    let mut protected = 0u64;
    let mut inputs = 0u64;
    campaign("subscriber_feedback", &corpus, 3_000, |input| {
        inputs += 1;
        // Media keeps flowing, and both clients keep their ICE alive.
        if inputs.is_multiple_of(8) {
            for d in send_media(&mut engine) {
                forwarded += 1;
                leg = rtp_header(&d).or(leg);
            }
        }
        if inputs.is_multiple_of(1024) {
            let _ = pump(&mut engine, &mut publisher, publisher_addr);
            let _ = pump(&mut engine, &mut subscriber, subscriber_addr);
        }
        let Some((&how, packet)) = input.split_first() else {
            return;
        };
        let mut packet = packet.to_vec();
        // Mostly about the leg (its SSRC; a NACK for a packet it was sent
        // lately), as a subscriber sends; otherwise what mutations made.
        if let Some((seq, ssrc)) = leg.filter(|_| how & 0x10 == 0 && packet.len() >= 12) {
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            if packet.len() >= 14 && packet[1] == 205 && packet[0] & 0x1f == 1 {
                let back = u16::from(how >> 5);
                packet[12..14].copy_from_slice(&seq.wrapping_sub(back).to_be_bytes());
            }
        }
        // Even: protected with the subscriber's keys; odd: as it is.
        let datagram = if how % 2 == 0 {
            srtcp.encrypt_rtcp(&packet).ok()
        } else {
            Some(BytesMut::from(&packet[..]))
        };
        if let Some(d) = datagram {
            protected += u64::from(how % 2 == 0);
            let _ = engine.fuzz_exchange(subscriber_addr, Some(&d));
        }
    });
    // What was fuzzed got past SRTCP, to the fast path and behind `rtc`.
    let (feedback, retransmitted, plis) = engine.fuzz_feedback();
    let subscribed = subscribe_answers(&mut engine, &sdp);
    assert!(protected > 0, "nothing could be protected");
    assert!(feedback > 0, "no transport feedback reached the fast path");
    assert!(retransmitted > 0, "no NACK was answered");
    assert!(subscribed > 0, "no answer was applied");
    if std::env::var_os("SFUD_FUZZ_SECONDS").is_some() {
        println!("fuzz subscribe_answers: {subscribed} applied");
        println!(
            "fuzz subscriber_feedback: {protected} protected; {feedback} transport feedback \
             read on the fast path, {retransmitted} packets retransmitted, {plis} PLIs \
             sent to the publisher (at most 2 a second); {forwarded} packets forwarded"
        );
    }
}
