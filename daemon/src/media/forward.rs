//! The forwarding hot path's per-leg state: one publisher track to one
//! subscriber connection.
//!
//! A leg rewrites what differs between the publisher's negotiation and the
//! subscriber's: SSRC, payload type and header extension ids; sequence
//! numbers and timestamps get a per-leg offset so every leg starts at a
//! random point (RFC 3550) and stays continuous. Rewriting is in place, with
//! no allocation per packet.

use rtc::rtp;

use bytes::Bytes;

use super::simulcast::{LayerSwitcher, Vp8Descriptor};

/// RFC 8285's one-byte header extension profile.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// Header extension URIs that describe the publisher's own transport or
/// stream identity and must not be forwarded as they are.
const NOT_FORWARDED: [&str; 5] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    // The publisher's send time is not ours: the engine stamps its own.
    ABS_SEND_TIME_URI,
];

/// The abs-send-time header extension: when the server sent a packet, which
/// a subscriber's browser estimates its downlink bandwidth from.
pub(crate) use rtc::sdp::extmap::ABS_SEND_TIME_URI;

/// An abs-send-time value for `since` (any fixed origin): seconds in 6.18
/// fixed point, 24 bits, big-endian (wraps every 64 s).
pub(crate) fn abs_send_time(since: std::time::Duration) -> [u8; 3] {
    let t = ((since.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00ff_ffff;
    let [_, a, b, c] = t.to_be_bytes();
    [a, b, c]
}

/// Maps the publisher's header extension ids to a subscriber's; 0 = drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtensionMap([u8; 256]);

impl Default for ExtensionMap {
    fn default() -> Self {
        ExtensionMap([0; 256])
    }
}

impl ExtensionMap {
    /// Pairs extensions by URI: `(uri, id)` as each side negotiated them.
    pub(crate) fn between<'a>(
        publisher: impl IntoIterator<Item = (&'a str, u16)>,
        subscriber: &[(&str, u16)],
    ) -> Self {
        let mut map = [0u8; 256];
        for (uri, from) in publisher {
            if NOT_FORWARDED.contains(&uri) {
                continue;
            }
            if let Some((_, to)) = subscriber.iter().find(|(u, _)| *u == uri) {
                if let (Ok(from), Ok(to)) = (u8::try_from(from), u8::try_from(*to)) {
                    map[usize::from(from)] = to;
                }
            }
        }
        ExtensionMap(map)
    }

    fn get(&self, id: u8) -> u8 {
        self.0[usize::from(id)]
    }
}

/// The state of one forwarded track on one subscriber connection.
#[derive(Debug)]
pub(crate) struct Leg {
    /// The subscriber connection's sender for it.
    pub sender: rtc::rtp_transceiver::RTCRtpSenderId,
    /// SSRC announced to the subscriber.
    pub ssrc: u32,
    /// Payload type the subscriber negotiated for the codec; `None` until the
    /// answer is applied.
    pub payload_type: Option<u8>,
    /// Header extension id translation, set with `payload_type`.
    pub extensions: ExtensionMap,
    /// The subscriber's abs-send-time extension id (0: not negotiated).
    pub abs_send_time: u8,
    /// The subscriber's transport-wide sequence number extension id (0:
    /// not negotiated).
    pub transport_cc: u8,
    /// The leg's RTX SSRC (video), announced with it.
    pub rtx_ssrc: Option<u32>,
    /// The RTX payload type the subscriber negotiated for the leg's codec.
    pub rtx_payload_type: Option<u8>,
    /// Next sequence number on the RTX stream.
    pub rtx_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
    /// Packets written to this leg.
    pub packets: u64,
    /// Bytes of payload written to this leg.
    pub bytes: u64,
    /// Packets the subscriber's connection refused.
    pub dropped: u64,
    /// For a simulcast track: which layer the leg forwards, and the
    /// renumbering that keeps its stream continuous across switches.
    pub switcher: Option<LayerSwitcher>,
    /// When the switcher's target last changed.
    pub layer_since: Option<std::time::Instant>,
    /// What the subscriber asked for this track (`track_settings`).
    pub prefs: crate::media::TrackPrefs,
    /// A leg without a switcher that the subscriber paused, or that is
    /// starved, forwards nothing, and resumes at a key frame.
    pub hold: Hold,
    /// A video leg without a switcher that its subscriber's link cannot
    /// carry (see `engine::allocate`).
    pub starved: bool,
    /// The sequence number after the last one forwarded.
    pub next_seq: u16,
}

/// Whether a leg without a switcher forwards (see [`Leg::hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Every packet.
    Forwarding,
    /// Nothing.
    Paused,
    /// Nothing until the next key frame.
    Resuming,
}

impl Leg {
    /// A leg not yet negotiated.
    pub(crate) fn new(sender: rtc::rtp_transceiver::RTCRtpSenderId, ssrc: u32) -> Self {
        Leg {
            sender,
            ssrc,
            payload_type: None,
            extensions: ExtensionMap::default(),
            abs_send_time: 0,
            transport_cc: 0,
            rtx_ssrc: None,
            rtx_payload_type: None,
            rtx_seq: rand::random(),
            seq_offset: rand::random(),
            ts_offset: rand::random(),
            packets: 0,
            bytes: 0,
            dropped: 0,
            switcher: None,
            layer_since: None,
            prefs: Default::default(),
            hold: Hold::Forwarding,
            starved: false,
            next_seq: 0,
        }
    }

    /// The layers of its track this leg takes packets of, one bit each: a
    /// simulcast leg the one it forwards and the one it waits to switch to
    /// (none while paused), any other leg every packet of its track.
    pub(crate) fn layer_interest(&self) -> u32 {
        self.switcher
            .as_ref()
            .map_or(u32::MAX, LayerSwitcher::interest)
    }

    /// Resumes a held leg with the packet `source_seq` (a key frame's
    /// first): the subscriber sees the numbers run on from the last packet
    /// it got, with no gap to ask retransmissions for. A simulcast leg's
    /// numbering is its switcher's (which starts its segments so), and its
    /// own offset must stay.
    pub(crate) fn resume_at(&mut self, source_seq: u16) {
        if self.switcher.is_none() {
            self.seq_offset = self.next_seq.wrapping_sub(source_seq);
        }
        self.hold = Hold::Forwarding;
    }

    /// `packet`, as this leg sent it, once more on the leg's RTX stream
    /// (RFC 4588: the original sequence number first, then the payload,
    /// with the VP8 descriptor rewritten as `vp8` says); `None` when the
    /// leg has no RTX stream negotiated.
    pub(crate) fn rtx_copy(
        &mut self,
        packet: &rtp::Packet,
        vp8: Option<(u16, u8)>,
    ) -> Option<rtp::Packet> {
        let (ssrc, payload_type) = (self.rtx_ssrc?, self.rtx_payload_type?);
        let mut payload = bytes::BytesMut::with_capacity(packet.payload.len() + 2);
        payload.extend_from_slice(&packet.header.sequence_number.to_be_bytes());
        payload.extend_from_slice(&packet.payload);
        if let Some((picture_id, tl0)) = vp8 {
            if let Some(d) = Vp8Descriptor::parse(&payload[2..]) {
                d.write(&mut payload[2..], picture_id, tl0);
            }
        }
        let mut header = packet.header.clone();
        header.ssrc = ssrc;
        header.payload_type = payload_type;
        header.sequence_number = self.rtx_seq;
        header.padding = false;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        Some(rtp::Packet {
            header,
            payload: payload.freeze(),
        })
    }

    /// The publisher's sequence number of what this leg sent as `leg_seq`.
    pub(crate) fn source_seq(&self, leg_seq: u16) -> u16 {
        leg_seq.wrapping_sub(self.seq_offset)
    }

    /// This leg's RTP time for the publisher's `source_ts`.
    pub(crate) fn rtp_time(&self, source_ts: u32) -> u32 {
        source_ts.wrapping_add(self.ts_offset)
    }

    /// Rewrites a copy of the publisher's packet for this leg, stamping
    /// `send_time` (an [`abs_send_time`]) where the subscriber negotiated
    /// it; `false` when the leg cannot carry it yet.
    pub(crate) fn rewrite(&self, packet: &mut rtp::Packet, send_time: &Bytes) -> bool {
        let Some(pt) = self.payload_type else {
            return false;
        };
        let h = &mut packet.header;
        h.ssrc = self.ssrc;
        h.payload_type = pt;
        h.sequence_number = h.sequence_number.wrapping_add(self.seq_offset);
        h.timestamp = h.timestamp.wrapping_add(self.ts_offset);
        if h.extension {
            let map = &self.extensions;
            h.extensions.retain_mut(|e| match map.get(e.id) {
                0 => false,
                id => {
                    e.id = id;
                    true
                }
            });
            // Padding is recomputed when the header is marshalled.
            h.extensions_padding = 0;
            if h.extensions.is_empty() {
                h.extension = false;
                h.extension_profile = 0;
            }
        }
        if self.abs_send_time != 0 && !send_time.is_empty() {
            push_extension(h, self.abs_send_time, send_time.clone());
        }
        true
    }
}

/// Sets a header extension on a header whose extensions were rewritten
/// (padding is recomputed when it is marshalled).
pub(crate) fn push_extension(h: &mut rtp::header::Header, id: u8, payload: Bytes) {
    if !h.extension {
        h.extension = true;
        h.extension_profile = ONE_BYTE_PROFILE;
        h.extensions_padding = 0;
    }
    match h.extensions.iter_mut().find(|e| e.id == id) {
        Some(e) => e.payload = payload,
        None => h.extensions.push(rtp::header::Extension { id, payload }),
    }
}

/// The last packets of a publisher's video track, by sequence number, for
/// answering subscribers' NACKs on the fast path: one copy per track however
/// many subscribers it has (the payload is shared, not copied).
pub(crate) struct History {
    slots: Vec<Option<rtp::Packet>>,
}

impl History {
    /// Packets kept for a video track: about 3 s at 150 packets/s, more than
    /// a retransmission is still useful for.
    pub(crate) const VIDEO: usize = 512;

    /// Keeps the last `size` packets (a power of two; 0 keeps none).
    pub(crate) fn new(size: usize) -> Self {
        debug_assert!(size == 0 || size.is_power_of_two());
        History {
            slots: vec![None; size],
        }
    }

    /// Remembers a packet, replacing the one `size` sequence numbers older.
    pub(crate) fn push(&mut self, packet: &rtp::Packet) {
        if let Some(slot) = self.slot(packet.header.sequence_number) {
            *slot = Some(packet.clone());
        }
    }

    /// The packet with sequence number `seq`, if it is still kept.
    pub(crate) fn get(&self, seq: u16) -> Option<&rtp::Packet> {
        if self.slots.is_empty() {
            return None;
        }
        let at = usize::from(seq) & (self.slots.len() - 1);
        self.slots[at]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
    }

    fn slot(&mut self, seq: u16) -> Option<&mut Option<rtp::Packet>> {
        let mask = self.slots.len().checked_sub(1)?;
        self.slots.get_mut(usize::from(seq) & mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};

    const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

    fn packet() -> rtp::Packet {
        let mut p = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: 65535,
                timestamp: u32::MAX,
                ssrc: 1234,
                ..Default::default()
            },
            payload: Bytes::from_static(b"opus"),
        };
        p.header.extension = true;
        p.header.extension_profile = 0xBEDE;
        p.header
            .set_extension(1, Bytes::from_static(&[0x80]))
            .expect("audio level");
        p.header
            .set_extension(4, Bytes::from_static(b"0"))
            .expect("mid");
        p
    }

    fn leg() -> Leg {
        let mut leg = Leg::new(Default::default(), 42);
        leg.seq_offset = 2;
        leg.ts_offset = 10;
        leg.payload_type = Some(109);
        leg.extensions =
            ExtensionMap::between([(AUDIO_LEVEL, 1), (MID, 4)], &[(AUDIO_LEVEL, 10), (MID, 3)]);
        leg
    }

    #[test]
    fn rewrites_ssrc_pt_and_wraps_sequence_and_timestamp() {
        let mut p = packet();
        assert!(leg().rewrite(&mut p, &Bytes::new()));
        assert_eq!(p.header.ssrc, 42);
        assert_eq!(p.header.payload_type, 109);
        assert_eq!(p.header.sequence_number, 1);
        assert_eq!(p.header.timestamp, 9);
    }

    #[test]
    fn translates_extension_ids_by_uri_and_drops_mid() {
        let mut p = packet();
        assert!(leg().rewrite(&mut p, &Bytes::new()));
        assert_eq!(p.header.get_extension_ids(), vec![10]);
        assert_eq!(
            p.header.get_extension(10),
            Some(Bytes::from_static(&[0x80]))
        );
    }

    #[test]
    fn drops_every_extension_the_subscriber_lacks() {
        let mut p = packet();
        let mut l = leg();
        l.extensions = ExtensionMap::default();
        assert!(l.rewrite(&mut p, &Bytes::new()));
        assert!(!p.header.extension);
        assert!(p.header.extensions.is_empty());
    }

    #[test]
    fn leg_maps_sequence_numbers_and_times_back_and_forth() {
        let l = leg();
        let mut p = packet();
        assert!(l.rewrite(&mut p, &Bytes::new()));
        assert_eq!(l.source_seq(p.header.sequence_number), 65535);
        assert_eq!(l.rtp_time(u32::MAX), p.header.timestamp);
    }

    #[test]
    fn history_keeps_the_last_packets_by_sequence_number() {
        let mut h = History::new(4);
        for seq in 65534..=65535u16 {
            let mut p = packet();
            p.header.sequence_number = seq;
            h.push(&p);
        }
        let mut p = packet();
        for seq in 0..3u16 {
            p.header.sequence_number = seq;
            h.push(&p);
        }
        assert!(h.get(65534).is_none(), "overwritten by 2");
        assert_eq!(h.get(65535).map(|p| p.header.sequence_number), Some(65535));
        assert_eq!(h.get(2).map(|p| p.header.sequence_number), Some(2));
        assert!(h.get(3).is_none(), "not seen yet");
        assert!(History::new(0).get(2).is_none());
    }

    #[test]
    fn stamps_the_send_time_where_negotiated() {
        let mut l = leg();
        l.abs_send_time = 5;
        l.extensions = ExtensionMap::default();
        let stamp = Bytes::copy_from_slice(&abs_send_time(std::time::Duration::from_millis(1500)));
        let mut p = packet();
        assert!(l.rewrite(&mut p, &stamp));
        assert_eq!(p.header.get_extension_ids(), vec![5]);
        // 1.5 s in 6.18 fixed point.
        assert_eq!(
            p.header.get_extension(5),
            Some(Bytes::from_static(&[0x06, 0x00, 0x00]))
        );
        let mut bytes = vec![0u8; 1500];
        let len = p.marshal_to(&mut bytes).expect("marshal");
        let back = rtp::Packet::unmarshal(&mut &bytes[..len]).expect("unmarshal");
        assert_eq!(
            back.header.get_extension(5),
            Some(Bytes::from_static(&[0x06, 0x00, 0x00]))
        );
        assert_eq!(back.payload, p.payload);
        assert_eq!(
            abs_send_time(std::time::Duration::from_secs(64)),
            [0, 0, 0],
            "wraps at 64 s"
        );
    }

    #[test]
    fn unnegotiated_leg_refuses() {
        let mut l = leg();
        l.payload_type = None;
        assert!(!l.rewrite(&mut packet(), &Bytes::new()));
    }
}
