//! One subscribe-side track's accounting: loss, duplicates, reordering,
//! simulcast layer changes and one-way latency, from the payload tags.

use crate::accounting::{LatencyReservoir, SequenceTracker};
use crate::histogram::Histogram;
use crate::simulcast;
use crate::snapshot::RemoteTrack;
use crate::tag::{self, MediaTag};
use std::sync::Arc;

/// Loss, duplicates and reordering of finished simulcast layer segments.
#[derive(Default)]
struct Carried {
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
}

/// What arrived on one subscribe-side track, counted from the payload tags:
/// plain state, fed one packet at a time by whoever reads the track (the
/// client's track tasks, or the load generator's own receivers).
pub struct TrackAccount {
    /// The counters so far (loss, duplicates and reordering are filled in by
    /// [`TrackAccount::counters`]).
    pub info: RemoteTrack,
    expected_hash: u32,
    /// Tag hashes of the publisher's simulcast layers of this kind, lowest first.
    layer_hashes: [u32; 3],
    /// Tag sequence accounting since the last simulcast layer change (each
    /// layer numbers its packets on its own; a track sent once has one).
    seq: SequenceTracker,
    /// What earlier layer segments counted.
    carried: Carried,
    latency: LatencyReservoir,
    histogram: Option<Arc<Histogram>>,
}

impl TrackAccount {
    /// Accounting for the track `info` names (its stream id is the
    /// publisher's peer id, which the tags are checked against), recording
    /// every latency also into `histogram`.
    pub fn new(info: RemoteTrack, histogram: Option<Arc<Histogram>>) -> TrackAccount {
        let expected_hash = tag::stream_hash(&info.stream_id, &info.kind);
        let layer_hashes =
            simulcast::RIDS.map(|rid| tag::layer_stream_hash(&info.stream_id, &info.kind, rid));
        TrackAccount {
            info,
            expected_hash,
            layer_hashes,
            seq: SequenceTracker::default(),
            carried: Carried::default(),
            latency: LatencyReservoir::default(),
            histogram,
        }
    }

    /// Accounts a sender report about this track.
    pub fn record_sender_report(&mut self, sr: &rtc::rtcp::sender_report::SenderReport) {
        let t = &mut self.info;
        t.sender_reports += 1;
        t.last_sender_report = Some(crate::snapshot::SenderReportSeen {
            rtp_time: sr.rtp_time,
            packet_count: sr.packet_count,
            octet_count: sr.octet_count,
            timestamp_then: t.last_timestamp,
            packets_then: t.packets,
        });
    }

    /// Accounts one RTP packet.
    pub fn record(&mut self, packet: &rtc::rtp::Packet, received_at_ns: u64) {
        let t = &mut self.info;
        if t.packets == 0 {
            t.first_packet_ns = received_at_ns;
        }
        t.packets += 1;
        t.bytes += packet.payload.len() as u64;
        t.last_seq = packet.header.sequence_number;
        t.last_timestamp = packet.header.timestamp;
        if packet.header.marker {
            t.frames += 1;
        }
        if t.kind == "video" && tag::is_vp8_keyframe(&packet.payload) {
            t.keyframes += 1;
        }
        let Some(media_tag) = MediaTag::find(&packet.payload) else {
            return;
        };
        t.tagged += 1;
        if media_tag.stream_hash != self.expected_hash {
            let Some(layer) = self
                .layer_hashes
                .iter()
                .position(|h| *h == media_tag.stream_hash)
            else {
                // Counted, but kept out of this track's sequence accounting: it
                // is another stream's numbering.
                t.misrouted += 1;
                return;
            };
            self.enter_layer(layer as u8);
        }
        self.seq.record(media_tag.seq);
        let latency_ns = received_at_ns.saturating_sub(media_tag.sent_at_ns);
        self.latency.record(latency_ns / 1_000);
        if let Some(h) = &self.histogram {
            h.record(latency_ns / 1_000);
        }
    }

    /// A packet of simulcast layer `layer` arrived: after a switch, its own
    /// numbering starts a new segment of the sequence accounting.
    fn enter_layer(&mut self, layer: u8) {
        if self.info.layer == Some(layer) {
            return;
        }
        if self.info.layer.is_some() {
            self.info.layer_changes += 1;
        }
        let done = std::mem::take(&mut self.seq);
        self.carried.lost += done.lost();
        self.carried.duplicates += done.duplicates();
        self.carried.out_of_order += done.out_of_order();
        self.info.layer = Some(layer);
    }

    /// The counters and the latency percentiles.
    pub fn snapshot(&self) -> RemoteTrack {
        let mut t = self.counters();
        t.latency = self.latency.summary();
        t
    }

    /// As `snapshot` without the latency percentiles (no sort).
    pub fn counters(&self) -> RemoteTrack {
        let mut t = self.info.clone();
        t.lost = self.carried.lost + self.seq.lost();
        t.duplicates = self.carried.duplicates + self.seq.duplicates();
        t.out_of_order = self.carried.out_of_order + self.seq.out_of_order();
        t
    }
}
