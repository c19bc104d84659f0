//! The media engine past the DTLS handshake: a client publishing VP8 (the
//! `rtc` sans-IO core, in memory: no socket between the two) completes ICE
//! and DTLS with the engine, then sends it mutated RTP and RTCP protected
//! with its real SRTP keys (learnt through the same crypto-provider tap the
//! engine uses), so that what lies behind SRTP is reached: the core's
//! interceptors and handlers, the track opening and the engine's reading of
//! the publisher's packets (layers, keyframes, sizes, sender reports).

use super::campaign;
use crate::media::srtp_keys::KeyTap;
use crate::media::{MediaCore, PeerId};
use bytes::BytesMut;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) use crate::media::testnet::{add_candidates, SSRC};

/// A client on `addr`, publishing VP8 if `publish` (else it only answers),
/// with the tap that learns its keys, on the wall clock.
pub(super) fn client(addr: SocketAddr, publish: bool) -> (RTCPeerConnection, Arc<KeyTap>) {
    crate::media::testnet::client(addr, publish, Instant::now())
}

/// One round between `client` (on `addr`) and the engine: the client's
/// timers and what it sends go to the engine, what the engine sends to the
/// client's address comes back to it. Returns whether the client sent
/// anything, whether it is now connected, and what the engine sent.
pub(super) fn pump(
    engine: &mut MediaCore,
    client: &mut RTCPeerConnection,
    addr: SocketAddr,
) -> (bool, bool, Vec<BytesMut>) {
    let server = engine.fuzz_local_addr();
    let now = Instant::now();
    if client.poll_timeout().is_some_and(|at| at <= now) {
        client.handle_timeout(now).expect("client timers");
    }
    let mut sent = Vec::new();
    while let Some(d) = client.poll_write() {
        sent.push(d.message);
    }
    let mut answers = engine.fuzz_exchange(addr, None);
    for d in &sent {
        answers.extend(engine.fuzz_exchange(addr, Some(d)));
    }
    let mut received = Vec::new();
    for (to, message) in answers {
        if to != addr {
            continue;
        }
        received.push(message.clone());
        let msg = TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: addr,
                peer_addr: server,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message,
        };
        let _ = client.handle_read(msg);
    }
    let mut connected = false;
    while let Some(ev) = client.poll_event() {
        if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
            connected |= state == RTCPeerConnectionState::Connected;
        }
    }
    while client.poll_read().is_some() {}
    (!sent.is_empty(), connected, received)
}

/// Pumps until the client is connected, and the engine too.
pub(super) fn connect(engine: &mut MediaCore, client: &mut RTCPeerConnection, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the client did not connect");
        let (sent, connected, _) = pump(engine, client, addr);
        if connected {
            // What the client sent last (the server's last DTLS flight,
            // when the client is the DTLS server) still has to reach the
            // engine.
            let _ = pump(engine, client, addr);
            return;
        }
        if !sent {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A VP8 keyframe's first packet as the client sends it (payload type 96,
/// marker set), plaintext.
pub(super) fn keyframe_packet() -> Vec<u8> {
    let mut rtp = vec![0x80, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0];
    rtp.extend_from_slice(&SSRC.to_be_bytes());
    rtp.extend_from_slice(&[0x90, 0x80, 0x81, 0x23, 0x10, 0x2a, 0x00, 0x9d, 0x01, 0x2a]);
    rtp.extend_from_slice(&[0x80, 0x02, 0x68, 0x01, 0x00, 0, 0, 0, 0, 0]);
    rtp
}

/// The keyframe packet and an RTCP sender report with an SDES chunk,
/// plaintext.
fn corpus() -> Vec<Vec<u8>> {
    let rtp = keyframe_packet();
    let mut rtcp = vec![0x80, 200, 0, 6];
    rtcp.extend_from_slice(&SSRC.to_be_bytes());
    rtcp.extend_from_slice(&[0xe5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 1]);
    rtcp.extend_from_slice(&[0, 0, 0x04, 0]);
    rtcp.extend_from_slice(&[0x81, 202, 0, 2]);
    rtcp.extend_from_slice(&SSRC.to_be_bytes());
    rtcp.extend_from_slice(&[1, 1, b'x', 0]);
    // The first byte picks what is done with the rest (see the target).
    vec![
        [&[0u8][..], &rtp].concat(),
        [&[1u8][..], &rtcp].concat(),
        [&[2u8][..], &rtp].concat(),
    ]
}

/// Offers what `client` publishes to the engine as `peer`'s publish
/// connection (as `munge` rewrites the offer) and applies the answer, which
/// it returns.
pub(super) fn publish(
    engine: &mut MediaCore,
    client: &mut RTCPeerConnection,
    peer: PeerId,
    munge: impl Fn(&str) -> String,
) -> String {
    let offer = client.create_offer(None).expect("offer");
    client
        .set_local_description(Instant::now(), offer.clone())
        .expect("local description");
    let answer = engine
        .fuzz_answer(peer, &munge(&offer.sdp))
        .expect("the client's offer is answered");
    client
        .set_remote_description(
            Instant::now(),
            RTCSessionDescription::answer(answer.clone()).expect("answer"),
        )
        .expect("remote description");
    answer
}

#[test]
fn srtp_datagrams_behind_dtls() {
    let mut engine = super::loopback_engine();
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let (mut client, keys) = client(addr, true);
    let answer = publish(&mut engine, &mut client, PeerId(1), str::to_owned);
    add_candidates(&mut client, &answer);
    connect(&mut engine, &mut client, addr);
    let mut srtp = keys
        .outgoing_context()
        .expect("the client's SRTP keys were observed");
    let entries = corpus();
    let corpus: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
    let mut protected = 0u64;
    let mut seq = 0u16;
    campaign("srtp_datagrams", &corpus, 3_000, |input| {
        let Some((&how, packet)) = input.split_first() else {
            return;
        };
        let mut packet = packet.to_vec();
        // Mostly a fresh sequence number (SRTP drops a replay before
        // anything reads the packet) and the track's SSRC, as a client
        // sends; the rest of the time what the mutations made of them.
        if how % 3 != 1 && how & 0x10 == 0 && packet.len() >= 12 {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            if how & 0x20 == 0 {
                packet[8..12].copy_from_slice(&SSRC.to_be_bytes());
            }
        }
        // 0: as RTP, 1: as RTCP, both protected with the client's keys;
        // anything else as it is.
        let packet = &packet[..];
        let datagram: Option<BytesMut> = match how % 3 {
            0 => srtp.encrypt_rtp(packet).ok(),
            1 => srtp.encrypt_rtcp(packet).ok(),
            _ => Some(BytesMut::from(packet)),
        };
        if let Some(d) = datagram {
            protected += u64::from(how % 3 < 2);
            let _ = engine.fuzz_exchange(addr, Some(&d));
        }
    });
    // What was fuzzed got past SRTP: the core delivered RTP of the track.
    assert!(protected > 0, "nothing could be protected");
    assert!(engine.fuzz_rtp_in() > 0, "no RTP reached the engine");
    if std::env::var_os("SFUD_FUZZ_SECONDS").is_some() {
        println!(
            "fuzz srtp_datagrams: {protected} protected, {} RTP packets reached the engine",
            engine.fuzz_rtp_in()
        );
    }
}
