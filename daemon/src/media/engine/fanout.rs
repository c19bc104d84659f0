//! The hot path: one publisher packet to every subscriber leg.
//!
//! A subscribe connection whose outgoing SRTP keys are known (see
//! `srtp_keys`) takes the fast path: the leg's rewritten packet is
//! marshalled into a scratch buffer, protected with the engine's own SRTP
//! context for that connection and queued for the turn's batched send,
//! without crossing `rtc`'s interceptor chain and handler pipeline. What
//! that chain did for sent media is done here instead, for both paths:
//! NACKs are answered from the publisher track's [`History`] and the
//! publisher's sender reports are translated for every leg. A connection
//! without known keys goes through `rtc` (`write_rtp`) as before.

use super::*;

impl MediaEngine {
    pub(super) fn forward(
        &mut self,
        id: ConnId,
        core_track: &str,
        packet: rtc::rtp::Packet,
        now: Instant,
    ) {
        self.stats.rtp_in += 1;
        let Some(track) = self
            .conns
            .get(&id)
            .and_then(|c| c.tracks.get(core_track))
            .copied()
        else {
            return;
        };
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        source.packets += 1;
        source.bytes += packet.payload.len() as u64;
        source.history.push(&packet);
        if let Some(tap) = &source.tap {
            if tap.is_closed() {
                source.tap = None;
            } else if let Ok(data) = packet.marshal() {
                tap.send(TapEvent::Rtp {
                    track,
                    data: data.freeze(),
                });
            }
        }
        for sub in &source.subscribers {
            let Some(conn) = self.conns.get_mut(sub) else {
                continue;
            };
            let Some(leg) = conn.legs.get_mut(&track) else {
                continue;
            };
            let mut out = packet.clone();
            if !conn.connected || !leg.rewrite(&mut out) {
                leg.dropped += 1;
                self.stats.dropped_leg += 1;
                continue;
            }
            let bytes = out.payload.len() as u64;
            let sent = match (&mut conn.srtp, conn.media_dest) {
                (Some(srtp), Some(dest)) => {
                    protect_and_queue(srtp, dest, &out, &mut self.scratch_rtp, &mut self.out)
                }
                _ => {
                    let written = conn
                        .pc
                        .rtp_sender(leg.sender)
                        .map(|mut s| s.write_rtp(now, out));
                    matches!(written, Some(Ok(())))
                }
            };
            if sent {
                leg.packets += 1;
                leg.bytes += bytes;
                self.stats.rtp_forwarded += 1;
                self.stats.bytes_forwarded += bytes;
            } else {
                leg.dropped += 1;
                self.stats.dropped_leg += 1;
            }
            if conn.srtp.is_none() {
                flush(conn, &mut self.out, &self.local_addrs);
            }
        }
    }

    /// Sends again what a subscriber reports lost, from the publisher
    /// track's history: protected here on the fast path, written through
    /// `rtc` otherwise (its chain keeps no send buffer of its own).
    pub(super) fn answer_nack(&mut self, id: ConnId, nack: &TransportLayerNack, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(track) = conn.by_ssrc.get(&nack.media_ssrc) else {
            return;
        };
        let (Some(leg), Some(source)) = (conn.legs.get(track), self.sources.get(track)) else {
            return;
        };
        for seq in nack.nacks.iter().flat_map(|pair| pair.into_iter()) {
            let Some(original) = source.history.get(leg.source_seq(seq)) else {
                continue;
            };
            let mut again = original.clone();
            if !leg.rewrite(&mut again) {
                continue;
            }
            let sent = match (&mut conn.srtp, conn.media_dest) {
                (Some(srtp), Some(dest)) => {
                    protect_and_queue(srtp, dest, &again, &mut self.scratch_rtp, &mut self.out)
                }
                _ => conn
                    .pc
                    .rtp_sender(leg.sender)
                    .is_some_and(|mut s| s.write_rtp(now, again).is_ok()),
            };
            if sent {
                self.stats.rtp_retransmitted += 1;
            }
        }
        if conn.srtp.is_none() {
            flush(conn, &mut self.out, &self.local_addrs);
        }
    }

    /// Gives every subscriber leg of `track` a sender report of its own,
    /// translated from the publisher's `sr`: the publisher's NTP time with
    /// the leg's RTP time, so receivers keep the publisher's audio and video
    /// in sync, and the leg's own packet and octet counts.
    pub(super) fn relay_sender_report(&mut self, track: TrackId, sr: &SenderReport, now: Instant) {
        let Some(source) = self.sources.get(&track) else {
            return;
        };
        for sub in &source.subscribers {
            let Some(conn) = self.conns.get_mut(sub) else {
                continue;
            };
            let Some(leg) = conn.legs.get(&track) else {
                continue;
            };
            if !conn.connected || leg.packets == 0 {
                continue;
            }
            let report = SenderReport {
                ssrc: leg.ssrc,
                ntp_time: sr.ntp_time,
                rtp_time: leg.rtp_time(sr.rtp_time),
                // RFC 3550: both counts wrap modulo 2^32.
                packet_count: leg.packets as u32,
                octet_count: leg.bytes as u32,
                ..Default::default()
            };
            if let Some(mut sender) = conn.pc.rtp_sender(leg.sender) {
                if let Err(e) = sender.write_rtcp(now, vec![Box::new(report)]) {
                    debug!(error = %e, "sender report not sent");
                }
            }
            flush(conn, &mut self.out, &self.local_addrs);
        }
    }
}

/// Takes a newly connected subscribe connection onto the fast path when its
/// outgoing SRTP keys were observed. A connection that comes back after
/// being disconnected keeps its context: the rollover counters it holds
/// must go on where they were.
pub(super) fn start_fast_path(conn: &mut Conn) {
    let Some(keys) = &conn.keys else {
        return;
    };
    if conn.srtp.is_some() {
        return;
    }
    conn.srtp = keys.outgoing_context();
    if conn.srtp.is_none() {
        warn!(peer = %conn.peer, "SRTP keys not observed: forwarding through rtc for this connection");
    }
}

/// Protects a rewritten packet and queues it for `dest`; `false` when it
/// could not be marshalled or protected.
fn protect_and_queue(
    srtp: &mut SrtpContext,
    (sock, to): (usize, SocketAddr),
    packet: &rtc::rtp::Packet,
    scratch: &mut [u8],
    out: &mut SendBatch,
) -> bool {
    let Ok(len) = packet.marshal_to(scratch) else {
        return false;
    };
    match srtp.encrypt_rtp_with_header(&scratch[..len], &packet.header) {
        Ok(protected) => {
            out.push(sock, to, protected);
            true
        }
        Err(e) => {
            debug!(error = %e, "SRTP protection failed");
            false
        }
    }
}
