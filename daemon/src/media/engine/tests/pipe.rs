//! Tracks piped between workers: a publisher on worker 0, subscribers on
//! worker 1, the two cores handing each other what they pipe as the
//! drivers do.

use super::*;
use crate::media::MediaCommand;

const SECOND: PeerId = PeerId(3);

/// A publisher connected to worker 0 and sending, and two subscribers of
/// its track connected to worker 1: the network, the camera and the
/// subscribers' indices.
fn spread_call() -> (Net, Camera, [usize; 2]) {
    let mut net = Net::with_workers(&crate::config::Config::default(), 2);
    let p = net.add_client_on(true, 0);
    net.publish(p, PUBLISHER);
    assert!(net.run_until(WITHIN, |n| n.clients[p].connected));
    let mut camera = Camera::new(p);
    camera.frame(&mut net);
    let tracks = net.core.fuzz_tracks();
    assert_eq!(tracks.len(), 1);
    let mut subs = [0; 2];
    for (i, peer) in [SUBSCRIBER, SECOND].into_iter().enumerate() {
        let s = net.add_client_on(false, 1);
        net.subscribe(s, peer, tracks.clone());
        assert!(
            net.run_until(WITHIN, |n| n.clients[s].connected),
            "subscriber {i} connected to worker 1"
        );
        subs[i] = s;
    }
    (net, camera, subs)
}

/// A PLI from a subscriber about the stream it receives as `ssrc`.
fn pli(ssrc: u32) -> Vec<u8> {
    PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: ssrc,
    }
    .marshal()
    .expect("marshals")
    .to_vec()
}

#[test]
fn subscribers_on_another_worker_get_the_track_piped_once_for_all_of_them() {
    let (mut net, mut camera, subs) = spread_call();
    let (sent, piped) = (net.core.stats.rtp_in, net.more[0].stats.piped_in);
    let forwarded = net.more[0].stats.rtp_forwarded;
    camera.run_for(&mut net, Duration::from_secs(3));
    for s in subs {
        let rtp = &net.clients[s].rtp;
        assert!(rtp.len() >= 60, "only {} packets forwarded", rtp.len());
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
    }
    let sent = net.core.stats.rtp_in - sent;
    let piped = net.more[0].stats.piped_in - piped;
    assert!(sent >= 60);
    assert_eq!(piped, sent, "one copy of each packet for both subscribers");
    assert_eq!(net.core.stats.rtp_forwarded, 0, "the owner has no legs");
    // Both legs start at the keyframe their joins asked for.
    let forwarded = net.more[0].stats.rtp_forwarded - forwarded;
    assert!(
        forwarded + 10 >= 2 * sent,
        "{forwarded} forwarded of {sent} sent"
    );
    assert_eq!(
        net.core.stats.pipe_dropped + net.more[0].stats.pipe_dropped,
        0
    );
    // The owner reports both subscribers; the mirror is no track of worker 1's.
    let report = &net.core.report(PUBLISHER, net.now).tracks;
    assert_eq!(report[0].subscribers, 2);
}

#[test]
fn a_piped_subscribers_keyframe_request_reaches_the_publisher_once() {
    let (mut net, mut camera, subs) = spread_call();
    camera.run_for(&mut net, Duration::from_secs(1));
    // Past the joins' own requests and the rate limit.
    net.run_for(Duration::from_millis(600));
    let before = Camera::plis(&net, camera.client);
    let counted = net.core.stats.keyframe_requests.subscriber;
    let ssrc = net.clients[subs[0]].rtp[0].header.ssrc;
    for _ in 0..3 {
        net.send_rtcp(subs[0], &pli(ssrc));
        net.step();
    }
    net.run_for(Duration::from_millis(100));
    assert_eq!(Camera::plis(&net, camera.client), before + 1);
    assert_eq!(net.core.stats.keyframe_requests.subscriber, counted + 1);
    assert_eq!(net.more[0].stats.plis_sent, 0, "only the owner asks");
    let received = net.clients[subs[1]].rtp.len();
    camera.run_for(&mut net, Duration::from_millis(100));
    assert!(
        net.clients[subs[1]].rtp[received..]
            .iter()
            .any(|p| p.payload[4] & 0x01 == 0),
        "the keyframe reached the other subscriber too"
    );
}

#[test]
fn a_piped_subscribers_lost_packet_is_sent_again_by_its_own_worker() {
    let (mut net, mut camera, subs) = spread_call();
    let s = subs[0];
    camera.run_for(&mut net, Duration::from_secs(1));
    let mut dropped = false;
    net.clients[s].drop_in = Some(Box::new(move |d: &[u8]| {
        let rtp = d.len() > 12 && !(192..=223).contains(&d[1]);
        let drop = rtp && !dropped;
        dropped |= drop;
        drop
    }));
    camera.run_for(&mut net, Duration::from_millis(200));
    net.clients[s].drop_in = None;
    let rtp = &net.clients[s].rtp;
    let (missing, ssrc) = rtp
        .windows(2)
        .find(|w| w[1].header.sequence_number != w[0].header.sequence_number.wrapping_add(1))
        .map(|w| {
            (
                w[0].header.sequence_number.wrapping_add(1),
                w[0].header.ssrc,
            )
        })
        .expect("a packet went missing");
    let nack = TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc: ssrc,
        nacks: vec![NackPair {
            packet_id: missing,
            lost_packets: 0,
        }],
    };
    net.send_rtcp(s, &nack.marshal().expect("marshals"));
    assert_eq!(net.more[0].stats.rtp_retransmitted, 1);
    assert_eq!(net.core.stats.rtp_retransmitted, 0);
    assert!(net.clients[s]
        .rtp
        .iter()
        .any(|p| p.header.sequence_number == missing));
}

#[test]
fn a_pipe_ends_with_its_last_subscriber_and_a_mirror_with_its_track() {
    let (mut net, mut camera, subs) = spread_call();
    camera.run_for(&mut net, Duration::from_secs(1));
    let track = net.core.fuzz_tracks()[0].id;
    assert_eq!(net.core.sources[&track].pipes.len(), 1);
    for peer in [SUBSCRIBER, SECOND] {
        let now = net.now;
        net.core_of(1)
            .handle_command(MediaCommand::RemovePeer { peer }, now);
    }
    // The mirror ends after a second unused, the pipe when its lease lapses.
    camera.run_for(&mut net, Duration::from_secs(3));
    assert!(net.more[0].sources.is_empty(), "the unused mirror ended");
    assert!(net.core.sources[&track].pipes.is_empty(), "the pipe ended");
    let piped = net.more[0].stats.piped_in;
    camera.run_for(&mut net, Duration::from_millis(500));
    assert_eq!(net.more[0].stats.piped_in, piped, "nothing piped any more");

    // Piped again, then the publisher leaves: the mirror ends at once.
    let tracks = net.core.fuzz_tracks();
    let s = net.add_client_on(false, 1);
    net.subscribe(s, SUBSCRIBER, tracks);
    assert!(net.run_until(WITHIN, |n| n.clients[s].connected));
    camera.run_for(&mut net, Duration::from_millis(500));
    assert!(net.clients[s].rtp.len() > subs.len());
    assert!(net.more[0].sources.contains_key(&track));
    net.core
        .handle_command(MediaCommand::RemovePeer { peer: PUBLISHER }, net.now);
    net.step();
    assert!(
        net.more[0].sources.is_empty(),
        "the mirror ended with the track"
    );
}

#[test]
fn a_piped_simulcast_leg_switches_layers_at_keyframes_and_stays_continuous() {
    super::layer_switching(2, 1);
}
