//! SSRC simulcast: a publisher that announces its layers as an
//! `a=ssrc-group:SIM` (RFC 5576 groups, lowest layer first, as libwebrtc
//! sends them when the offer is written so, and as older client SDKs do)
//! rather than with RIDs.
//!
//! `rtc` 0.21.1 keeps one SSRC per receiving track: of a SIM group it binds
//! one stream and drops the others' packets after its interceptors saw them
//! (so the publisher's transport-wide feedback still counts them). The
//! engine reads those layers itself: once the publish connection is up it
//! keys an SRTP context with the publisher's keys (`srtp_keys`), and each
//! datagram of a group's other SSRCs, besides going through `rtc` as
//! before, is decrypted here and forwarded as that layer of the track, as
//! are the sender reports of those SSRCs. The answer negotiates no RTX for
//! such sections (see `peer::publish_answer`): `rtc` would not bind those
//! streams either, and a retransmission then comes on the layer's own SSRC.
//! Their losses are asked for again here ([`Losses`]), as `rtc`'s NACK
//! generator does for the stream it binds. What `rtc` still does for its
//! stream alone: receiver reports.

use super::*;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::nack_pairs_from_sequence_numbers;
use rtc::shared::marshal::Unmarshal;
use std::collections::VecDeque;

/// A jump further ahead than this is the publisher restarting the stream,
/// not a loss.
const MAX_GAP: u16 = 128;

/// Most numbers waited for at once, per layer.
const MAX_MISSING: usize = 256;

/// A missing packet is asked for again after this, at most [`MAX_ASKS`]
/// times and not after [`GIVE_UP`] (as libwebrtc's receiver does).
const ASK_AGAIN: Duration = Duration::from_millis(50);
const MAX_ASKS: u8 = 10;
const GIVE_UP: Duration = Duration::from_secs(1);

/// The packets of one layer that did not arrive, to ask for again.
#[derive(Debug, Default)]
pub(super) struct Losses {
    highest: Option<u16>,
    missing: VecDeque<Missing>,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    since: Instant,
    asked: u8,
    last_asked: Option<Instant>,
}

impl Losses {
    /// Packet `seq` arrived: a jump ahead leaves the numbers in between
    /// missing; an older one (a retransmission, or reordered) is found.
    pub(super) fn arrived(&mut self, seq: u16, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return;
        }
        if ahead >= 0x8000 {
            self.missing.retain(|m| m.seq != seq);
            return;
        }
        if ahead > MAX_GAP {
            self.missing.clear();
        } else {
            self.missing.extend((1..ahead).map(|i| Missing {
                seq: highest.wrapping_add(i),
                since: now,
                asked: 0,
                last_asked: None,
            }));
            while self.missing.len() > MAX_MISSING {
                self.missing.pop_front();
            }
        }
        self.highest = Some(seq);
    }

    /// The numbers to ask for now; forgets those asked for long enough.
    pub(super) fn due(&mut self, now: Instant) -> Vec<u16> {
        if self.missing.is_empty() {
            return Vec::new();
        }
        self.missing
            .retain(|m| m.asked < MAX_ASKS && now.saturating_duration_since(m.since) < GIVE_UP);
        let mut due = Vec::new();
        for m in &mut self.missing {
            if m.last_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= ASK_AGAIN)
            {
                m.asked += 1;
                m.last_asked = Some(now);
                due.push(m.seq);
            }
        }
        due
    }
}

/// Notes packet `seq` of the unbound layer `ssrc` of `receiver`'s track,
/// and asks the publisher again for what that layer is missing.
pub(super) fn note_arrival(
    conn: &mut Conn,
    receiver: RTCRtpReceiverId,
    ssrc: u32,
    seq: u16,
    now: Instant,
) {
    let losses = match conn.sim_losses.iter().position(|(s, _)| *s == ssrc) {
        Some(i) => &mut conn.sim_losses[i].1,
        None => {
            conn.sim_losses.push((ssrc, Losses::default()));
            let last = conn.sim_losses.len() - 1;
            &mut conn.sim_losses[last].1
        }
    };
    losses.arrived(seq, now);
    let due = losses.due(now);
    if due.is_empty() {
        return;
    }
    let nack = TransportLayerNack {
        sender_ssrc: 0,
        media_ssrc: ssrc,
        nacks: nack_pairs_from_sequence_numbers(&due),
    };
    if let Some(mut r) = conn.pc.rtp_receiver(receiver) {
        if let Err(e) = r.write_rtcp(now, vec![Box::new(nack)]) {
            debug!(error = %e, "NACK not sent");
        }
    }
}

/// What a datagram of a publisher's unbound SIM layer carried.
pub(super) enum SimInput {
    /// An RTP packet of one of the layers.
    Rtp(rtc::rtp::Packet),
    /// Sender reports of those layers.
    SenderReports(Vec<Box<dyn rtc::rtcp::Packet>>),
}

/// Keys the context the engine reads a publisher's SIM layers with, once
/// the connection is up and its offer has a group.
pub(super) fn read_sim_layers(conn: &mut Conn) {
    if conn.kind != PcKind::Publish
        || conn.sim.is_empty()
        || !conn.connected
        || conn.srtp_in.is_some()
    {
        return;
    }
    conn.srtp_in = conn.keys.incoming_context();
    if conn.srtp_in.is_none() {
        warn!(peer = %conn.peer, "SRTP keys not observed: only one layer of this publisher's SSRC simulcast is received");
    }
}

/// Whether `ssrc` is a layer of one of the connection's SIM groups that
/// `rtc` does not deliver.
fn unbound_layer(conn: &Conn, ssrc: u32) -> bool {
    !conn.sim_bound.contains(&ssrc) && conn.sim.iter().any(|g| g.contains(&ssrc))
}

/// Reads `datagram` from the publisher when it belongs to one of its
/// unbound SIM layers: an SRTP packet of one, or SRTCP with their sender
/// reports. `None` for anything else (and for what does not decrypt).
pub(super) fn read(conn: &mut Conn, datagram: &[u8]) -> Option<SimInput> {
    if conn.sim.is_empty() {
        return None;
    }
    let [first, second, ..] = datagram else {
        return None;
    };
    if first >> 6 != 2 {
        return None;
    }
    // RFC 5761: payload types 64-95 (with the marker bit: RTCP 192-223).
    if (64..96).contains(&(second & 0x7f)) {
        // RTCP: a sender report of such a layer starts its compound.
        let ssrc = u32::from_be_bytes(datagram.get(4..8)?.try_into().ok()?);
        if *second != 200 || !unbound_layer(conn, ssrc) {
            return None;
        }
        let plain = conn.srtp_in.as_mut()?.decrypt_rtcp(datagram).ok()?;
        let reports: Vec<Box<dyn rtc::rtcp::Packet>> =
            rtc::rtcp::packet::unmarshal(&mut &plain[..])
                .ok()?
                .into_iter()
                .filter(|p| {
                    p.as_any()
                        .downcast_ref::<SenderReport>()
                        .is_some_and(|sr| unbound_layer(conn, sr.ssrc))
                })
                .collect();
        return (!reports.is_empty()).then_some(SimInput::SenderReports(reports));
    }
    let ssrc = u32::from_be_bytes(datagram.get(8..12)?.try_into().ok()?);
    if !unbound_layer(conn, ssrc) {
        return None;
    }
    let plain = conn.srtp_in.as_mut()?.decrypt_rtp(datagram).ok()?;
    let packet = rtc::rtp::Packet::unmarshal(&mut &plain[..]).ok()?;
    Some(SimInput::Rtp(packet))
}

/// The layers of the track `rtc` opened on `ssrc`: its SIM group, lowest
/// first, each with its SSRC known from the offer; `None` when `ssrc` is in
/// no group. Remembers that `rtc` delivers `ssrc` itself.
pub(super) fn layers_of(
    conn: &mut Conn,
    ssrc: u32,
    kind: MediaKind,
    now: Instant,
) -> Option<Vec<Layer>> {
    let group = conn.sim.iter().find(|g| g.contains(&ssrc))?.clone();
    if kind != MediaKind::Video {
        return None;
    }
    conn.sim_bound.push(ssrc);
    Some(
        group
            .into_iter()
            .map(|s| Layer::new(None, Some(s), kind, now))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_asked_for_until_they_arrive_across_a_wrap() {
        let t0 = Instant::now();
        let mut l = Losses::default();
        l.arrived(65_533, t0);
        assert!(l.due(t0).is_empty(), "nothing missing yet");
        l.arrived(1, t0);
        assert_eq!(l.due(t0), vec![65_534, 65_535, 0]);
        assert!(l.due(t0).is_empty(), "not again at once");
        l.arrived(65_535, t0 + Duration::from_millis(10));
        assert_eq!(
            l.due(t0 + ASK_AGAIN),
            vec![65_534, 0],
            "the one that came is not asked for"
        );
        // A late duplicate of the newest, or of something never missed, changes nothing.
        l.arrived(1, t0 + ASK_AGAIN);
        l.arrived(65_533, t0 + ASK_AGAIN);
        assert_eq!(l.due(t0 + ASK_AGAIN * 2), vec![65_534, 0]);
    }

    #[test]
    fn asking_stops_after_ten_tries_or_a_second_and_restarts_are_not_losses() {
        let t0 = Instant::now();
        let mut l = Losses::default();
        l.arrived(10, t0);
        l.arrived(12, t0);
        let asked = (0..20)
            .filter(|i| !l.due(t0 + ASK_AGAIN * *i).is_empty())
            .count();
        assert_eq!(asked, usize::from(MAX_ASKS));
        l.arrived(14, t0);
        assert_eq!(
            l.due(t0 + GIVE_UP),
            Vec::<u16>::new(),
            "a second later it is given up"
        );
        // The publisher restarted its numbering far ahead: nothing in between is missing.
        l.arrived(14 + MAX_GAP + 1, t0 + GIVE_UP);
        assert!(l.due(t0 + GIVE_UP).is_empty());
        // At most MAX_MISSING are waited for.
        let mut l = Losses::default();
        for i in 0..10u16 {
            l.arrived(i * 100, t0);
        }
        assert!(l.due(t0).len() <= MAX_MISSING);
    }
}
