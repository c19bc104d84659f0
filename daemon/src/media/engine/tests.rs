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

use super::testnet::{vp8_packet, Net};
use crate::media::{LostCause, MediaEvent, PeerId};

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

/// A publisher connected and sending, and a subscriber of its track
/// connected: the network, the camera and the subscriber's index.
fn call() -> (Net, Camera, usize) {
    let mut net = Net::new();
    let p = net.add_client(true);
    net.publish(p, PUBLISHER);
    assert!(
        net.run_until(WITHIN, |n| n.clients[p].connected),
        "the publisher connected"
    );
    let mut camera = Camera::new(p);
    // Its first packet opens the track.
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    assert_eq!(tracks.len(), 1, "the track opened on its first packet");
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
