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
use crate::media::forward::Hold;
use crate::media::simulcast::{frame_size, is_keyframe_start, layer_bit, Vp8Descriptor};
use rtc::shared::marshal::MarshalSize;

use crate::media::downlink::Downlink;
use crate::media::forward::{abs_send_time, push_extension};
use bytes::BufMut;
use bytes::Bytes;

impl MediaCore {
    pub(super) fn forward(
        &mut self,
        id: ConnId,
        core_track: &str,
        packet: rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(track) = self
            .conns
            .get(&id)
            .and_then(|c| c.tracks.get(core_track))
            .copied()
        else {
            self.stats.rtp_in += 1;
            return;
        };
        self.forward_track(track, packet, now);
    }

    /// One packet of `track` from its publisher: to the workers it is
    /// piped to, and to every subscriber leg here that takes its layer.
    pub(super) fn forward_track(&mut self, track: TrackId, packet: rtc::rtp::Packet, now: Instant) {
        self.stats.rtp_in += 1;
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        let Some(layer) = source
            .layer_of(packet.header.ssrc)
            .or((!source.simulcast()).then_some(0))
        else {
            return;
        };
        let level = source.speech.as_ref().and_then(|s| s.level(&packet.header));
        if !packet.payload.is_empty() {
            source.idle.media(now, level);
        }
        if source.muted {
            return;
        }
        if let (Some(speech), Some(level)) = (source.speech.as_mut(), level) {
            speech.hear(level);
        }
        if !source.pipes.is_empty() {
            super::pipe::pipe_packet(source, track, layer, &packet, &mut self.pipe_out);
        }
        self.forward_layer(track, layer, packet, now);
    }

    /// One packet of layer `layer` of `track` (a publisher's, or piped
    /// from the worker that owns the track) to every subscriber leg here
    /// that takes that layer.
    pub(super) fn forward_layer(
        &mut self,
        track: TrackId,
        layer: usize,
        packet: rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(source) = self.sources.get_mut(&track) else {
            return;
        };
        let simulcast = source.simulcast();
        if simulcast && packet.payload.is_empty() {
            // Padding only: a publisher without RTX (simulcast sections
            // negotiate none, see `peer::publish_answer`) probes its uplink
            // with it. Nobody downstream needs it.
            skip_padding(
                &mut self.conns,
                source,
                track,
                layer,
                packet.header.sequence_number,
            );
            return;
        }
        let l = &mut source.layers[layer];
        l.packets += 1;
        l.bytes += packet.payload.len() as u64;
        l.last_packet = Some(now);
        l.history.push(&packet);
        if let Some(tap) = source.tap.as_ref().filter(|_| layer == source.tap_layer) {
            if tap.is_closed() {
                source.tap = None;
            } else if let Ok(data) = packet.marshal() {
                tap.send(TapEvent::Rtp {
                    track,
                    data: data.freeze(),
                });
            }
        }
        // Simulcast legs switch layers at keyframes, and align timestamps
        // across a switch by arrival time (in the codec's clock).
        let keyframe = simulcast && is_keyframe_start(source.video_codec, &packet.payload);
        if keyframe {
            // What a subscriber's tile size is compared with.
            if let Some(size) = frame_size(source.video_codec, &packet.payload) {
                source.layers[layer].size = Some(size);
            }
        }
        let now_ts = if simulcast {
            let micros = now.saturating_duration_since(self.epoch).as_micros() as u64;
            (micros * u64::from(source.codec.clock_rate) / 1_000_000) as u32
        } else {
            0
        };
        // One send time for every leg: each video leg is stamped with it.
        let send_time = match source.info.kind {
            MediaKind::Video => {
                Bytes::copy_from_slice(&abs_send_time(now.saturating_duration_since(self.epoch)))
            }
            MediaKind::Audio => Bytes::new(),
        };
        let at_us = now.saturating_duration_since(self.epoch).as_micros() as i64;
        let no_stamp = Bytes::new();
        // Layers some leg waits for a keyframe of, as bit masks: to start, to switch.
        let (mut start_wanted, mut switch_wanted) = (0u32, 0u32);
        for i in 0..source.subscribers.len() {
            if !source.wants(i, layer) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(&source.subscribers[i].conn) else {
                continue;
            };
            let Some(leg) = conn.legs.get_mut(&track) else {
                continue;
            };
            match leg.hold {
                Hold::Forwarding => {}
                Hold::Paused => continue,
                Hold::Resuming => {
                    if source.info.kind == MediaKind::Video
                        && !is_keyframe_start(source.video_codec, &packet.payload)
                    {
                        // A key frame of the layer it waits on (the
                        // one this packet is of).
                        start_wanted |= layer_bit(layer);
                        continue;
                    }
                    leg.resume_at(packet.header.sequence_number);
                }
            }
            let mut munged = None;
            if let Some(sw) = leg.switcher.as_mut() {
                let switches = sw.switches();
                // Only a keyframe of the target can start a segment.
                let aligned = if keyframe && sw.target() == Some(layer) {
                    sw.reference_layer()
                        .and_then(|to| source.align(layer, packet.header.timestamp, to))
                } else {
                    None
                };
                let accepted = sw.accept(
                    layer,
                    &packet.header,
                    &packet.payload,
                    keyframe,
                    now_ts,
                    aligned,
                );
                if sw.wants_keyframe() {
                    let bit = sw.target().map_or(0, |t| 1u32 << t.min(31));
                    if sw.current().is_some() {
                        switch_wanted |= bit;
                    } else {
                        start_wanted |= bit;
                    }
                }
                self.stats.layer_switches += sw.switches() - switches;
                source.subscribers[i].layers = sw.interest();
                let Some(m) = accepted else {
                    continue;
                };
                munged = Some(m);
            }
            let mut out = packet.clone();
            let mut vp8 = None;
            if let Some(m) = munged {
                out.header.sequence_number = m.sequence_number;
                out.header.timestamp = m.timestamp;
                vp8 = m.vp8;
            }
            // Only a subscriber of video has its link measured.
            let send_time = if conn.adaptive {
                out.header.extensions.reserve(2);
                &send_time
            } else {
                &no_stamp
            };
            let transport_cc = if conn.adaptive { leg.transport_cc } else { 0 };
            if !conn.connected || !leg.rewrite(&mut out, send_time) {
                leg.dropped += 1;
                self.stats.dropped_leg += 1;
                continue;
            }
            leg.next_seq = out.header.sequence_number.wrapping_add(1);
            let bytes = out.payload.len() as u64;
            let sent = match (&mut conn.srtp, conn.media_dest) {
                (Some(srtp), Some(dest)) => {
                    stamp_transport_seq(
                        &mut out,
                        transport_cc,
                        &mut conn.downlink,
                        &mut self.stamps,
                        at_us,
                    );
                    let sent = protect_and_queue(
                        srtp,
                        dest,
                        &out,
                        vp8,
                        &mut self.scratch_rtp,
                        &mut self.out,
                    );
                    if sent && conn.probe_ratio > 0.0 {
                        // Probing: the same packet again on the RTX stream,
                        // as often as the probe rate asks.
                        conn.probe_credit += conn.probe_ratio * bytes as f64;
                        while conn.probe_credit >= bytes as f64 && bytes > 0 {
                            conn.probe_credit -= bytes as f64;
                            let Some(mut rtx) = leg.rtx_copy(&out, vp8) else {
                                break;
                            };
                            stamp_transport_seq(
                                &mut rtx,
                                transport_cc,
                                &mut conn.downlink,
                                &mut self.stamps,
                                at_us,
                            );
                            if protect_and_queue(
                                srtp,
                                dest,
                                &rtx,
                                None,
                                &mut self.scratch_rtp,
                                &mut self.out,
                            ) {
                                self.stats.probe_packets += 1;
                            }
                        }
                    }
                    sent
                }
                _ => {
                    if let Some((picture_id, tl0)) = vp8 {
                        rewrite_vp8_payload(&mut out, picture_id, tl0);
                    }
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
        for (mask, cause) in [
            (start_wanted, KeyframeCause::NewSubscriber),
            (switch_wanted, KeyframeCause::LayerSwitch),
        ] {
            for layer in (0..32).filter(|l| mask & (1 << l) != 0) {
                self.request_layer_keyframe(track, layer, now, cause);
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
        // A leg that forwards nothing now (paused, or starved by a link that
        // cannot carry it) resumes at a key frame: resending what it lost
        // would only keep that link full.
        let stopped = match &leg.switcher {
            Some(sw) => sw.target().is_none(),
            None => leg.hold == Hold::Paused,
        };
        if stopped {
            return;
        }
        let send_time =
            Bytes::copy_from_slice(&abs_send_time(now.saturating_duration_since(self.epoch)));
        let at_us = now.saturating_duration_since(self.epoch).as_micros() as i64;
        let no_stamp = Bytes::new();
        let transport_cc = if conn.adaptive { leg.transport_cc } else { 0 };
        for seq in nack.nacks.iter().flat_map(|pair| pair.into_iter()) {
            // What the leg sent as `seq`, before its own offsets.
            let sent = leg.source_seq(seq);
            let (mut again, vp8) = match &leg.switcher {
                Some(sw) => {
                    let Some(original) = sw
                        .source_of(sent)
                        .and_then(|(layer, seq)| source.layers.get(layer)?.history.get(seq))
                    else {
                        continue;
                    };
                    let Some(m) = sw.resend(sent, &original.header, &original.payload) else {
                        continue;
                    };
                    let mut again = original.clone();
                    again.header.sequence_number = m.sequence_number;
                    again.header.timestamp = m.timestamp;
                    (again, m.vp8)
                }
                None => match source.layers[0].history.get(sent) {
                    Some(original) => (original.clone(), None),
                    None => continue,
                },
            };
            if !leg.rewrite(
                &mut again,
                if conn.adaptive { &send_time } else { &no_stamp },
            ) {
                continue;
            }
            let sent = match (&mut conn.srtp, conn.media_dest) {
                (Some(srtp), Some(dest)) => {
                    stamp_transport_seq(
                        &mut again,
                        transport_cc,
                        &mut conn.downlink,
                        &mut self.stamps,
                        at_us,
                    );
                    protect_and_queue(
                        srtp,
                        dest,
                        &again,
                        vp8,
                        &mut self.scratch_rtp,
                        &mut self.out,
                    )
                }
                _ => {
                    if let Some((picture_id, tl0)) = vp8 {
                        rewrite_vp8_payload(&mut again, picture_id, tl0);
                    }
                    conn.pc
                        .rtp_sender(leg.sender)
                        .is_some_and(|mut s| s.write_rtp(now, again).is_ok())
                }
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
    pub(super) fn relay_sender_report(
        &mut self,
        track: TrackId,
        layer: usize,
        sr: &SenderReport,
        now: Instant,
    ) {
        let Some(source) = self.sources.get(&track) else {
            return;
        };
        for sub in &source.subscribers {
            let Some(conn) = self.conns.get_mut(&sub.conn) else {
                continue;
            };
            let Some(leg) = conn.legs.get(&track) else {
                continue;
            };
            if !conn.connected || leg.packets == 0 {
                continue;
            }
            // A simulcast leg reports only the layer it forwards, in the
            // timeline that layer's segment has on the leg.
            let offset = match &leg.switcher {
                Some(sw) => match sw.timestamp_offset(layer) {
                    Some(offset) => offset,
                    None => continue,
                },
                None => 0,
            };
            let report = SenderReport {
                ssrc: leg.ssrc,
                ntp_time: sr.ntp_time,
                rtp_time: leg.rtp_time(sr.rtp_time.wrapping_add(offset)),
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

/// Closes every switcher leg of `track` over a padding-only packet of `layer`.
fn skip_padding(
    conns: &mut HashMap<ConnId, Conn>,
    source: &Source,
    track: TrackId,
    layer: usize,
    seq: u16,
) {
    for (i, sub) in source.subscribers.iter().enumerate() {
        if !source.wants(i, layer) {
            continue;
        }
        let sw = conns
            .get_mut(&sub.conn)
            .and_then(|c| c.legs.get_mut(&track))
            .and_then(|leg| leg.switcher.as_mut());
        if let Some(sw) = sw {
            sw.skip_padding(layer, seq);
        }
    }
}

/// Takes a newly connected subscribe connection onto the fast path when its
/// outgoing SRTP keys were observed. A connection that comes back after
/// being disconnected keeps its context: the rollover counters it holds
/// must go on where they were.
pub(super) fn start_fast_path(conn: &mut Conn) {
    if !conn.fast_path || conn.srtp.is_some() {
        return;
    }
    let keys = &conn.keys;
    conn.srtp = keys.outgoing_context();
    conn.srtp_in = keys.incoming_context();
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
    vp8: Option<(u16, u8)>,
    scratch: &mut [u8],
    out: &mut SendBatch,
) -> bool {
    let Ok(len) = packet.marshal_to(scratch) else {
        return false;
    };
    if let Some((picture_id, tl0)) = vp8 {
        // The payload descriptor is rewritten in the marshalled copy: the
        // publisher's payload stays shared between legs.
        let payload = &mut scratch[packet.header.marshal_size().min(len)..len];
        if let Some(d) = Vp8Descriptor::parse(payload) {
            d.write(payload, picture_id, tl0);
        }
    }
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

/// Rewrites a packet's VP8 picture id and TL0PICIDX in a copy of its payload
/// (the path through `rtc`, which takes the packet itself).
fn rewrite_vp8_payload(packet: &mut rtc::rtp::Packet, picture_id: u16, tl0: u8) {
    if let Some(d) = Vp8Descriptor::parse(&packet.payload) {
        let mut payload = BytesMut::from(&packet.payload[..]);
        d.write(&mut payload, picture_id, tl0);
        packet.payload = payload.freeze();
    }
}

/// Numbers a packet on its subscriber's transport-wide sequence, where the
/// leg negotiated it (`transport_cc` is its extension id, 0 otherwise), and
/// remembers when it went and how big it is, for the subscriber's feedback.
fn stamp_transport_seq(
    packet: &mut rtc::rtp::Packet,
    transport_cc: u8,
    downlink: &mut Downlink,
    stamps: &mut BytesMut,
    at_us: i64,
) {
    if transport_cc == 0 {
        return;
    }
    // What the link carries: the RTP packet (its transport-wide number
    // included), the SRTP tag (16), UDP (8) and IPv4 (20) headers.
    let bytes = (packet.header.marshal_size() + 4 + packet.payload.len() + 44) as u32;
    let seq = downlink.sent.push(at_us, bytes);
    if stamps.capacity() < 2 {
        stamps.reserve(4096);
    }
    stamps.put_u16(seq);
    push_extension(&mut packet.header, transport_cc, stamps.split().freeze());
}
