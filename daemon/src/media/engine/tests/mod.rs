//! The media core without sockets: `rtc` clients on an in-memory network
//! (see `testnet`), with a simulated clock, join, publish, subscribe,
//! receive forwarded media, ask for lost packets and keyframes, and go
//! silent; the assertions read what the clients decrypted and what the
//! core emitted.

use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::shared::marshal::Marshal;
use sfu_proto::signaling::PcKind;

use super::testnet::{vp8_packet, vp8_packet_on, Net, SSRC};
use crate::media::{LostCause, MediaEvent, PeerId};

mod cost;
mod join;
mod mute;
mod pipe;

const PUBLISHER: PeerId = PeerId(1);
const SUBSCRIBER: PeerId = PeerId(2);
/// How long anything may take in simulated time.
const WITHIN: Duration = Duration::from_secs(10);
/// A frame every 33 ms.
const FRAME: Duration = Duration::from_millis(33);

/// What a publishing client sends next.
struct Camera {
    client: usize,
    seq: u16,
    timestamp: u32,
    picture_id: u16,
    /// PLIs the client had received when it last sent a keyframe.
    plis_seen: usize,
}

impl Camera {
    fn new(client: usize) -> Camera {
        Camera {
            client,
            seq: 1000,
            timestamp: 90_000,
            picture_id: 7,
            plis_seen: usize::MAX,
        }
    }

    /// PLIs client `client` has received.
    fn plis(net: &Net, client: usize) -> usize {
        net.clients[client]
            .rtcp
            .iter()
            .filter(|p| p.as_any().is::<PictureLossIndication>())
            .count()
    }

    /// One frame in one packet: a keyframe at first and after every PLI.
    fn frame(&mut self, net: &mut Net) {
        let plis = Self::plis(net, self.client);
        let key = plis != self.plis_seen;
        self.plis_seen = plis;
        let packet = vp8_packet(self.seq, self.timestamp, self.picture_id, key);
        net.send_rtp(self.client, &packet);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(3000);
        self.picture_id = (self.picture_id + 1) & 0x7fff;
    }

    /// Frames for `span` of simulated time, the network stepping between.
    fn run_for(&mut self, net: &mut Net, span: Duration) {
        let end = net.now + span;
        while net.now < end {
            self.frame(net);
            net.run_for(FRAME);
        }
    }
}

/// A client publishing as [`PUBLISHER`], connected: its index.
fn connected_publisher(net: &mut Net) -> usize {
    let p = net.add_client(true);
    net.publish(p, PUBLISHER);
    assert!(
        net.run_until(WITHIN, |n| n.clients[p].connected),
        "the publisher connected"
    );
    p
}

/// A publisher connected and sending, and a subscriber of its track
/// connected: the network, the camera and the subscriber's index.
fn call() -> (Net, Camera, usize) {
    let mut net = Net::new();
    let p = connected_publisher(&mut net);
    let mut camera = Camera::new(p);
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    assert_eq!(tracks.len(), 1, "the track opened");
    assert!(net
        .events()
        .iter()
        .any(|(peer, e)| *peer == PUBLISHER && matches!(e, MediaEvent::TrackPublished(_))));
    let s = net.add_client(false);
    net.subscribe(s, SUBSCRIBER, tracks);
    assert!(
        net.run_until(WITHIN, |n| n.clients[s].connected),
        "the subscriber connected"
    );
    (net, camera, s)
}

#[test]
fn a_subscriber_receives_the_publishers_frames_in_order_from_a_keyframe() {
    let (mut net, mut camera, s) = call();
    camera.run_for(&mut net, Duration::from_secs(3));
    let rtp = &net.clients[s].rtp;
    assert!(rtp.len() >= 60, "only {} packets forwarded", rtp.len());
    // One stream, sequence numbers without a gap, with the keyframe the
    // subscriber's join asked the publisher for.
    let ssrc = rtp[0].header.ssrc;
    assert!(rtp.iter().all(|p| p.header.ssrc == ssrc));
    for pair in rtp.windows(2) {
        assert_eq!(
            pair[1].header.sequence_number,
            pair[0].header.sequence_number.wrapping_add(1)
        );
    }
    assert!(
        rtp.iter().any(|p| p.payload[4] & 0x01 == 0),
        "a keyframe reached the subscriber"
    );
    assert!(
        Camera::plis(&net, camera.client) >= 1,
        "the join asked for a keyframe"
    );
    // The payload is the publisher's, untouched.
    let last = rtp.last().expect("packets");
    assert_eq!(last.payload.len(), vp8_packet(0, 0, 0, false).len() - 12);
}

#[test]
fn a_lost_packet_is_sent_again_when_the_subscriber_asks() {
    let (mut net, mut camera, s) = call();
    camera.run_for(&mut net, Duration::from_secs(1));
    // The link drops the next forwarded packet.
    let mut dropped = false;
    net.clients[s].drop_in = Some(Box::new(move |d: &[u8]| {
        // RTP, not RTCP (payload types 192-223 with the marker bit).
        let rtp = d.len() > 12 && !(192..=223).contains(&d[1]);
        if rtp && !dropped {
            dropped = true;
            return true;
        }
        false
    }));
    camera.run_for(&mut net, Duration::from_millis(200));
    net.clients[s].drop_in = None;
    let rtp = &net.clients[s].rtp;
    let gap = rtp
        .windows(2)
        .find(|w| w[1].header.sequence_number != w[0].header.sequence_number.wrapping_add(1))
        .map(|w| {
            (
                w[0].header.sequence_number.wrapping_add(1),
                w[0].header.ssrc,
            )
        })
        .expect("a packet went missing");
    let (missing, ssrc) = gap;
    let before = net.core.stats.rtp_retransmitted;
    let nack = TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ssrc,
        nacks: vec![NackPair {
            packet_id: missing,
            lost_packets: 0,
        }],
    };
    net.send_rtcp(s, &nack.marshal().expect("marshals"));
    assert_eq!(net.core.stats.rtp_retransmitted, before + 1);
    assert!(
        net.clients[s]
            .rtp
            .iter()
            .any(|p| p.header.sequence_number == missing),
        "the missing packet arrived"
    );
}

#[test]
fn a_subscribers_keyframe_requests_reach_the_publisher_rate_limited() {
    let (mut net, mut camera, s) = call();
    camera.run_for(&mut net, Duration::from_secs(1));
    let ssrc = net.clients[s].rtp[0].header.ssrc;
    let pli = PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: ssrc,
    }
    .marshal()
    .expect("marshals");
    let before = Camera::plis(&net, camera.client);
    // Three requests within a few milliseconds: one reaches the publisher.
    for _ in 0..3 {
        net.send_rtcp(s, &pli);
        net.step();
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(Camera::plis(&net, camera.client), before + 1);
    // Later, another gets through, and the publisher's next keyframe
    // reaches the subscriber.
    net.run_for(Duration::from_millis(600));
    net.send_rtcp(s, &pli);
    net.run_for(Duration::from_millis(100));
    assert_eq!(Camera::plis(&net, camera.client), before + 2);
    let received = net.clients[s].rtp.len();
    camera.run_for(&mut net, Duration::from_millis(100));
    let rtp = &net.clients[s].rtp[received..];
    assert!(
        rtp.iter().any(|p| p.payload[4] & 0x01 == 0),
        "no keyframe followed the request"
    );
}

#[test]
fn a_subscriber_gone_silent_is_reported_lost() {
    let (mut net, mut camera, s) = call();
    camera.run_for(&mut net, Duration::from_secs(1));
    let lost = |net: &Net| {
        net.events().iter().any(|(peer, e)| {
            *peer == SUBSCRIBER
                && matches!(
                    e,
                    MediaEvent::ConnectionLost {
                        pc: PcKind::Subscribe,
                        cause: LostCause::Failed,
                        ..
                    }
                )
        })
    };
    assert!(!lost(&net));
    // Its network goes away: nothing from it, not even consent checks.
    net.clients[s].up = false;
    let end = net.now + Duration::from_secs(30);
    while net.now < end && !lost(&net) {
        camera.frame(&mut net);
        net.run_for(FRAME);
    }
    assert!(
        lost(&net),
        "the silent subscriber was never reported lost: {:?}",
        net.events()
    );
    // Within the configured silence, give or take a frame and the 100 ms
    // the checks run at.
    let heard = net.clients[s].last_sent.expect("it sent before");
    let after = net.now.duration_since(heard);
    let limit = crate::config::Config::default().rtc.ice_failed_timeout();
    assert!(
        after >= limit && after < limit + Duration::from_millis(200),
        "reported lost {after:?} after its last datagram; the limit is {limit:?}"
    );
    // The publisher is not.
    assert!(!net
        .events()
        .iter()
        .any(|(peer, e)| *peer == PUBLISHER && matches!(e, MediaEvent::ConnectionLost { .. })));
}

/// The three SSRCs of an SSRC-simulcast publisher, lowest layer first.
const LAYERS: [u32; 3] = [SSRC, SSRC + 1, SSRC + 2];

/// The publisher's offer with its video SSRC made three, grouped as SSRC
/// simulcast (`a=ssrc-group:SIM`, lowest first), as clients that munge
/// their offers send it.
fn sim_offer(sdp: &str) -> String {
    let own = format!("a=ssrc:{SSRC} ");
    let mut out = Vec::new();
    let mut grouped = false;
    for line in sdp.split("\r\n") {
        if line.starts_with(&own) {
            if !grouped {
                out.push(format!(
                    "a=ssrc-group:SIM {} {} {}",
                    LAYERS[0], LAYERS[1], LAYERS[2]
                ));
                grouped = true;
            }
            for ssrc in LAYERS {
                out.push(line.replacen(&SSRC.to_string(), &ssrc.to_string(), 1));
            }
        } else {
            out.push(line.to_owned());
        }
    }
    out.join("\r\n")
}

/// An SSRC-simulcast camera: each frame on all three layers, each layer
/// with its own sequence numbers and picture ids, a keyframe on a layer at
/// first and after each PLI naming it; the filler bytes tag the layer.
struct SimCamera {
    client: usize,
    seq: [u16; 3],
    picture_id: [u16; 3],
    timestamp: u32,
    plis_seen: [Option<usize>; 3],
}

impl SimCamera {
    /// A camera on client `client`, each layer's numbers starting apart.
    fn new(client: usize) -> SimCamera {
        SimCamera {
            client,
            seq: [100, 20_000, 65_500],
            picture_id: [5, 300, 32_760],
            timestamp: 90_000,
            plis_seen: [None; 3],
        }
    }

    /// The PLIs received so far are lost: no key frame answers them.
    fn ignore_plis(&mut self, net: &Net) {
        for (l, ssrc) in LAYERS.into_iter().enumerate() {
            self.plis_seen[l] = Some(Self::plis_for(net, self.client, ssrc));
        }
    }

    fn plis_for(net: &Net, client: usize, ssrc: u32) -> usize {
        net.clients[client]
            .rtcp
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
            .filter(|p| p.media_ssrc == ssrc)
            .count()
    }

    fn frame(&mut self, net: &mut Net) {
        for (l, ssrc) in LAYERS.into_iter().enumerate() {
            let plis = Self::plis_for(net, self.client, ssrc);
            let key = self.plis_seen[l] != Some(plis);
            self.plis_seen[l] = Some(plis);
            let packet = vp8_packet_on(
                ssrc,
                self.seq[l],
                self.timestamp,
                self.picture_id[l],
                key,
                l as u8,
            );
            net.send_rtp(self.client, &packet);
            self.seq[l] = self.seq[l].wrapping_add(1);
            self.picture_id[l] = (self.picture_id[l] + 1) & 0x7fff;
        }
        self.timestamp = self.timestamp.wrapping_add(3000);
    }

    fn run_for(&mut self, net: &mut Net, span: Duration) {
        let end = net.now + span;
        while net.now < end {
            self.frame(net);
            net.run_for(FRAME);
        }
    }
}

/// The layer a forwarded packet came from (its tag), and whether it
/// starts a keyframe.
fn layer_of(p: &rtc::rtp::packet::Packet) -> (u8, bool) {
    let payload = &p.payload;
    (payload[payload.len() - 1], payload[4] & 0x01 == 0)
}

/// The 15-bit VP8 picture id of a forwarded packet.
fn picture_id(p: &rtc::rtp::packet::Packet) -> u16 {
    u16::from_be_bytes([p.payload[2], p.payload[3]]) & 0x7fff
}

#[test]
fn a_simulcast_leg_switches_layers_at_keyframes_and_its_stream_stays_continuous() {
    layer_switching(1, 0);
}

/// An SSRC-simulcast publisher on worker 0 of `workers` and a subscriber
/// of its track on worker `on`, both connected: the network, the camera,
/// the subscriber's index and the track.
fn sim_call(workers: usize, on: usize) -> (Net, SimCamera, usize, crate::media::TrackId) {
    let mut net = Net::with_workers(&crate::config::Config::default(), workers);
    let p = net.add_client(true);
    net.publish_as(p, PUBLISHER, sim_offer);
    assert!(net.run_until(WITHIN, |n| n.clients[p].connected));
    let mut camera = SimCamera::new(p);
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    assert_eq!(tracks.len(), 1, "three SSRCs, one track");
    let track = tracks[0].id;
    let s = net.add_client_on(false, on);
    net.subscribe(s, SUBSCRIBER, tracks);
    assert!(net.run_until(WITHIN, |n| n.clients[s].connected));
    (net, camera, s, track)
}

/// A simulcast publisher on worker 0 of `workers`, a subscriber on worker
/// `on` that caps the track at its lowest layer and then lifts the cap:
/// the subscriber's stream switches at keyframes and stays continuous.
fn layer_switching(workers: usize, on: usize) {
    let (mut net, mut camera, s, track) = sim_call(workers, on);
    camera.run_for(&mut net, Duration::from_secs(3));

    // The subscriber caps the track at the lowest layer, then lifts the cap.
    let cap = |net: &mut Net, max_layer: Option<u8>| {
        let prefs = crate::media::TrackPrefs {
            max_layer,
            ..Default::default()
        };
        let now = net.now;
        net.core_of(on).handle_command(
            crate::media::MediaCommand::TrackSettings {
                peer: SUBSCRIBER,
                track,
                prefs,
            },
            now,
        );
    };
    cap(&mut net, Some(0));
    camera.run_for(&mut net, Duration::from_secs(3));
    let capped = net.clients[s].rtp.len();
    assert_eq!(
        net.clients[s].rtp.last().map(layer_of).map(|l| l.0),
        Some(0),
        "capped at the lowest layer"
    );
    cap(&mut net, None);
    camera.run_for(&mut net, Duration::from_secs(6));

    let rtp = &net.clients[s].rtp;
    assert!(rtp.len() > capped + 100, "media flowed after the cap");
    // One stream, gapless, whatever layer each packet came from; picture
    // ids go on by one per frame; the layer changes only at a keyframe of
    // the layer it changes to, and changed at least once.
    let ssrc = rtp[0].header.ssrc;
    let mut switches = 0;
    for w in rtp.windows(2) {
        assert_eq!(w[1].header.ssrc, ssrc, "one SSRC towards the subscriber");
        assert_eq!(
            w[1].header.sequence_number,
            w[0].header.sequence_number.wrapping_add(1),
            "sequence numbers continuous"
        );
        assert_eq!(
            picture_id(&w[1]),
            (picture_id(&w[0]) + 1) & 0x7fff,
            "picture ids continuous"
        );
        let (was, _) = layer_of(&w[0]);
        let (now, key) = layer_of(&w[1]);
        if now != was {
            assert!(key, "switched from layer {was} to {now} on a delta frame");
            switches += 1;
        }
    }
    let mut runs: Vec<(u8, usize)> = Vec::new();
    for p in rtp {
        let l = layer_of(p).0;
        match runs.last_mut() {
            Some((last, n)) if *last == l => *n += 1,
            _ => runs.push((l, 1)),
        }
    }
    // Down to the cap, and up again once it is lifted.
    assert!(switches >= 2, "layers by run: {runs:?}");
    assert!(
        runs.last().is_some_and(|(l, _)| *l > 0),
        "the leg stayed low after the cap was lifted: {runs:?}"
    );
    assert!(net.core_of(on).stats.layer_switches >= 2);
}
