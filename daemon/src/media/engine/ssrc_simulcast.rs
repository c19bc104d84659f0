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
//!
//! What `rtc` does for its bound stream and not for these: NACKs for their
//! losses and receiver reports about them.

use super::*;
use rtc::shared::marshal::Unmarshal;

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
pub(super) fn layers_of(conn: &mut Conn, ssrc: u32, kind: MediaKind) -> Option<Vec<Layer>> {
    let group = conn.sim.iter().find(|g| g.contains(&ssrc))?.clone();
    if kind != MediaKind::Video {
        return None;
    }
    conn.sim_bound.push(ssrc);
    Some(
        group
            .into_iter()
            .map(|s| Layer::new(None, Some(s), kind))
            .collect(),
    )
}
