//! Muted tracks in the core: nothing is forwarded while muted, and a
//! simulcast leg comes back after the unmute even when the publisher
//! misses the key frame requests the unmute sent.

use std::time::Duration;

use sfu_proto::signaling::TrackKind;

use super::{layer_of, picture_id, PUBLISHER, SUBSCRIBER};
use crate::media::engine::testnet::Net;
use crate::media::{MediaCommand, TrackId, TrackPrefs};

fn mute(net: &mut Net, muted: bool) {
    let now = net.now;
    net.core.handle_command(
        MediaCommand::Mute {
            peer: PUBLISHER,
            kind: TrackKind::Video,
            muted,
        },
        now,
    );
}

/// The subscriber caps its leg of `track` at `max_layer` (None lifts it).
fn cap(net: &mut Net, track: TrackId, max_layer: Option<u8>) {
    let now = net.now;
    let prefs = TrackPrefs {
        max_layer,
        ..Default::default()
    };
    net.core.handle_command(
        MediaCommand::TrackSettings {
            peer: SUBSCRIBER,
            track,
            prefs,
        },
        now,
    );
}

#[test]
fn a_muted_simulcast_leg_resumes_on_its_own_layer_when_the_first_keyframe_requests_are_lost() {
    let (mut net, mut camera, s, track) = super::sim_call(1, 0);
    camera.run_for(&mut net, Duration::from_secs(4));
    // Down to the lowest layer and up again: the leg's numbering is no
    // longer the publisher's for the layer it forwards.
    cap(&mut net, track, Some(0));
    camera.run_for(&mut net, Duration::from_secs(3));
    cap(&mut net, track, None);
    camera.run_for(&mut net, Duration::from_secs(4));
    assert!(
        net.core.stats.layer_switches >= 2,
        "the leg switched layers"
    );
    let layer = net.clients[s].rtp.last().map(|p| layer_of(p).0);
    assert!(
        layer.is_some_and(|l| l > 0),
        "the leg went up from the lowest layer before the mute: {layer:?}"
    );

    mute(&mut net, true);
    net.run_for(Duration::from_millis(200));
    let before = net.clients[s].rtp.len();
    camera.run_for(&mut net, Duration::from_secs(3));
    assert_eq!(
        net.clients[s].rtp.len(),
        before,
        "nothing of a muted camera is forwarded"
    );

    // Unmuted; the key frame requests the unmute sends get lost: the
    // camera goes on with delta frames until it is asked again.
    mute(&mut net, false);
    net.run_for(Duration::from_millis(50));
    camera.ignore_plis(&net);
    camera.run_for(&mut net, Duration::from_secs(3));
    let after = &net.clients[s].rtp[before..];
    assert!(
        after.len() > 30,
        "the leg never resumed: {} packets",
        after.len()
    );
    assert!(
        layer_of(&after[0]).1,
        "it resumed on a delta frame: {:?}",
        layer_of(&after[0])
    );
    assert_eq!(
        after.iter().map(|p| p.header.sequence_number).next(),
        Some(
            net.clients[s].rtp[before - 1]
                .header
                .sequence_number
                .wrapping_add(1)
        ),
        "the sequence numbers run on across the mute"
    );
    assert_eq!(
        picture_id(&after[0]),
        (picture_id(&net.clients[s].rtp[before - 1]) + 1) & 0x7fff,
        "the picture ids run on across the mute"
    );
}
