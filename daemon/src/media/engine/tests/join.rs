//! Joining: a subscriber's connectivity checks that reach the core before
//! its answer does are answered once the answer is set, not dropped; its
//! offers stay small.

use std::collections::HashSet;
use std::time::Duration;

use super::{connected_publisher, Camera, FRAME, PUBLISHER, SUBSCRIBER, WITHIN};
use crate::media::engine::testnet::Net;
use crate::media::{MediaEvent, PeerId};

const SECOND: PeerId = PeerId(3);

/// How many payload types each `m={kind}` section of `sdp` offers.
fn formats(sdp: &str, kind: &str) -> Vec<usize> {
    let prefix = format!("m={kind} ");
    sdp.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.split_whitespace().skip(3).count())
        .collect()
}

#[test]
fn only_the_first_video_section_offers_every_codec_and_only_until_answered() {
    let mut net = Net::new();
    let (a, b) = (net.add_client(true), net.add_client(true));
    net.publish(a, PUBLISHER);
    net.publish(b, SECOND);
    assert!(net.run_until(WITHIN, |n| n.clients[a].connected && n.clients[b].connected));
    let mut cameras = [Camera::new(a), Camera::new(b)];
    for camera in &mut cameras {
        camera.frame(&mut net);
    }
    let tracks = net.core.fuzz_tracks();
    assert_eq!(tracks.len(), 2);
    let s = net.add_client(false);
    net.subscribe(s, SUBSCRIBER, vec![tracks[0].clone()]);
    let first = formats(&net.clients[s].offers[0], "video");
    // The connection's video codecs are those of its first answered video
    // section: it offers all of them (VP8, VP9, H264, AV1 and their RTX).
    assert!(first.len() == 1 && first[0] > 6, "first offer: {first:?}");
    net.subscribe(s, SUBSCRIBER, tracks);
    // Answered, it offers VP8 and its RTX format like the new one.
    assert_eq!(formats(&net.clients[s].offers[1], "video"), vec![2, 2]);
    assert!(net.run_until(WITHIN, |n| n.clients[s].connected));
    for _ in 0..30 {
        for camera in &mut cameras {
            camera.frame(&mut net);
        }
        net.run_for(FRAME);
    }
    let ssrcs: HashSet<u32> = net.clients[s].rtp.iter().map(|p| p.header.ssrc).collect();
    assert_eq!(ssrcs.len(), 2, "both tracks reach the subscriber");
}

#[test]
fn a_check_ahead_of_the_answer_is_answered_when_the_answer_comes() {
    let mut net = Net::new();
    let p = connected_publisher(&mut net);
    let mut camera = Camera::new(p);
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    let s = net.add_client(false);
    // The client checks at once; its answer comes 20 ms later, as over a
    // signaling socket. `rtc` paces checks 200 ms apart: connecting well
    // within that means the first check was answered.
    net.subscribe_answering_after(s, SUBSCRIBER, tracks, Duration::from_millis(20));
    let answered = net.now;
    assert!(
        net.run_until(WITHIN, |n| n.clients[s].connected),
        "the subscriber connected"
    );
    let took = net.now - answered;
    assert!(
        took < Duration::from_millis(150),
        "connected {took:?} after the answer: the early check went unanswered"
    );
}

#[test]
fn a_track_opens_when_its_publisher_connects_and_its_first_packet_gives_its_ssrc() {
    let mut net = Net::new();
    let p = connected_publisher(&mut net);
    // Up, and not a packet sent: the room already hears of the track, and
    // a subscriber can be offered it.
    let tracks = net.core.fuzz_tracks();
    assert_eq!(
        tracks.len(),
        1,
        "the offer's video track opened: {tracks:?}"
    );
    assert!(
        net.events()
            .iter()
            .any(|(_, e)| matches!(e, MediaEvent::TrackPublished(t) if t.id == tracks[0].id)),
        "the room was told"
    );
    let s = net.add_client(false);
    net.subscribe(s, SUBSCRIBER, tracks.clone());
    assert!(net.run_until(WITHIN, |n| n.clients[s].connected));
    // The media starts: the first packet (a delta frame) gives the SSRC the
    // subscriber's key frame request goes to, and the key frame comes.
    let mut camera = Camera::new(p);
    camera.plis_seen = Camera::plis(&net, p);
    for _ in 0..30 {
        camera.frame(&mut net);
        net.run_for(FRAME);
    }
    assert_eq!(
        net.core.fuzz_tracks().len(),
        1,
        "the same track, not a second"
    );
    // Each connection's setup, from the negotiation's last description to
    // connected, counted once (the simulated network has no delay).
    for setup in [
        &net.core.stats.setup_publish,
        &net.core.stats.setup_subscribe,
    ] {
        assert_eq!(setup.count, 1);
        assert!(setup.sum_us < 1_000_000, "{setup:?}");
    }
    assert!(
        net.clients[s].rtp.len() > 20,
        "the subscriber receives it: {} packets",
        net.clients[s].rtp.len()
    );
}
