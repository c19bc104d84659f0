//! Joining: a subscriber's connectivity checks that reach the core before
//! its answer does are answered once the answer is set, not dropped.

use std::time::Duration;

use super::{Camera, PUBLISHER, SUBSCRIBER, WITHIN};
use crate::media::engine::testnet::Net;

#[test]
fn a_check_ahead_of_the_answer_is_answered_when_the_answer_comes() {
    let mut net = Net::new();
    let p = net.add_client(true);
    net.publish(p, PUBLISHER);
    assert!(net.run_until(WITHIN, |n| n.clients[p].connected));
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
