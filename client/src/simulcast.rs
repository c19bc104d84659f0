//! Publishing simulcast video as browsers do: one VP8 track sent as three
//! RID layers (`q`, `h`, `f`, lowest first), each an RTP stream of its own
//! (SSRC, sequence numbers, timestamps, rate, picture size), every packet
//! marked with the m-section's mid and the layer's RID (RFC 8852 header
//! extensions): the server learns which SSRC is which layer from them.

use crate::media::{Pacing, PublishOptions, SyntheticStream};
use crate::{peer, tag, ClientError};
use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Notify;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

/// RIDs of the layers, lowest first, as browsers name them.
pub(crate) const RIDS: [&str; 3] = ["q", "h", "f"];
/// What each layer's packet rate divides the configured video rate by.
const RATE_DIVISORS: [u32; 3] = [16, 4, 1];
/// A layer sends at least this many packets per second (if the full rate allows).
const MIN_PACKETS_PER_SEC: u32 = 3;
/// The picture sizes the layers' keyframes announce: a quarter, half and
/// the full size, as a browser scales them.
const SIZES: [(u16, u16); 3] = [(160, 120), (320, 240), (640, 480)];

/// One layer of a published simulcast track.
pub(crate) struct Layer {
    /// Index among the layers, 0 the lowest.
    pub index: usize,
    pub rid: &'static str,
    pub ssrc: u32,
    /// Poked when the server asks for a keyframe of this layer's SSRC.
    pub keyframe_wanted: Arc<Notify>,
    /// Cleared while the server says nobody receives the layer (`layers`).
    pub active: Arc<AtomicBool>,
}

/// Packets per second of each layer, lowest first, when `f` sends `full`.
pub(crate) fn layer_rates(full: u32) -> [u32; 3] {
    let full = full.max(1);
    RATE_DIVISORS.map(|d| (full / d).max(MIN_PACKETS_PER_SEC.min(full)))
}

/// The layers of a new track, each with an SSRC of its own.
pub(crate) fn new_layers() -> Vec<Arc<Layer>> {
    RIDS.iter()
        .enumerate()
        .map(|(index, rid)| {
            Arc::new(Layer {
                index,
                rid,
                ssrc: rand::random::<u32>(),
                keyframe_wanted: Arc::new(Notify::new()),
                active: Arc::new(AtomicBool::new(true)),
            })
        })
        .collect()
}

/// The track's codings: one per layer, with its RID and SSRC (the offer
/// then carries `a=rid:<rid> send` and `a=simulcast:send q;h;f`).
pub(crate) fn codings(layers: &[Arc<Layer>]) -> Vec<RTCRtpEncodingParameters> {
    layers
        .iter()
        .map(|layer| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: layer.rid.to_owned(),
                ssrc: Some(layer.ssrc),
                ..Default::default()
            },
            codec: peer::vp8_codec(),
            ..Default::default()
        })
        .collect()
}

/// How a layer's packets name it: the m-section's mid, and the header
/// extension ids the answer negotiated for mid and RID.
pub(crate) struct LayerMarks {
    mid: Bytes,
    mid_id: u8,
    rid_id: u8,
}

/// The [`LayerMarks`] of `sender`'s m-section, once the answer is applied.
pub(crate) async fn layer_marks(
    pc: &dyn PeerConnection,
    sender: &dyn RtpSender,
) -> Result<LayerMarks, ClientError> {
    let params = sender.get_parameters().await.map_err(ClientError::webrtc(
        "reading the simulcast sender's parameters",
    ))?;
    let id_of = |uri: &str| {
        params
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == uri)
            .and_then(|e| u8::try_from(e.id).ok())
    };
    let (Some(mid_id), Some(rid_id)) = (id_of(SDES_MID_URI), id_of(SDES_RTP_STREAM_ID_URI)) else {
        return Err(ClientError::State(format!(
            "the publish answer did not accept the {SDES_MID_URI} and {SDES_RTP_STREAM_ID_URI} \
             header extensions: the server cannot tell simulcast layers apart"
        )));
    };
    let mut mid = None;
    for transceiver in pc.get_transceivers().await {
        if let Ok(Some(s)) = transceiver.sender().await {
            if s.id() == sender.id() {
                mid = transceiver.mid().await.ok().flatten();
                break;
            }
        }
    }
    let mid = mid.ok_or_else(|| {
        ClientError::State("the simulcast track's m-section has no mid after the answer".into())
    })?;
    Ok(LayerMarks {
        mid: Bytes::from(mid),
        mid_id,
        rid_id,
    })
}

/// The synthetic stream of `layer`: its rate, SSRC, picture size and marks,
/// and tags of its own ([`tag::layer_stream_hash`]) so receivers count each
/// layer's packets on their own.
pub(crate) fn layer_stream(
    layer: &Layer,
    opts: &PublishOptions,
    payload_type: u8,
    peer_id: &str,
    marks: &LayerMarks,
) -> SyntheticStream {
    let pps = layer_rates(opts.video_packets_per_sec)[layer.index];
    SyntheticStream {
        ssrc: layer.ssrc,
        payload_type,
        pacing: Pacing::video_at(pps, opts.video_payload_bytes),
        stream_hash: tag::layer_stream_hash(peer_id, "video", layer.rid),
        keyframe_wanted: Arc::clone(&layer.keyframe_wanted),
        extensions: vec![
            (marks.mid_id, marks.mid.clone()),
            (marks.rid_id, Bytes::from_static(layer.rid.as_bytes())),
        ],
        active: Some(Arc::clone(&layer.active)),
        picture: SIZES[layer.index],
    }
}

/// Wakes the sender of every layer that `packets` ask a keyframe of.
pub(crate) fn notify_keyframe_requests(
    layers: &[Arc<Layer>],
    packets: &[Box<dyn rtc::rtcp::Packet>],
) {
    for layer in layers {
        if packets
            .iter()
            .any(|p| asks_keyframe_of(p.as_ref(), layer.ssrc))
        {
            layer.keyframe_wanted.notify_one();
        }
    }
}

/// Whether an RTCP packet asks for a keyframe of the stream `ssrc`.
fn asks_keyframe_of(packet: &dyn rtc::rtcp::Packet, ssrc: u32) -> bool {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        return pli.media_ssrc == ssrc;
    }
    any.downcast_ref::<FullIntraRequest>()
        .is_some_and(|fir| fir.media_ssrc == ssrc || fir.fir.iter().any(|e| e.ssrc == ssrc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;

    #[test]
    fn layers_send_a_sixteenth_a_quarter_and_all() {
        assert_eq!(layer_rates(150), [9, 37, 150]);
        assert_eq!(
            layer_rates(20),
            [3, 5, 20],
            "a few packets a second at least"
        );
        assert_eq!(layer_rates(2), [2, 2, 2]);
        let layers = new_layers();
        let rids: Vec<&str> = layers.iter().map(|l| l.rid).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        let codings = codings(&layers);
        assert_eq!(codings[2].rtp_coding_parameters.rid, "f");
        assert_eq!(codings[2].rtp_coding_parameters.ssrc, Some(layers[2].ssrc));
    }

    #[test]
    fn keyframe_requests_name_their_layer() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 7,
        };
        assert!(asks_keyframe_of(&pli, 7));
        assert!(!asks_keyframe_of(&pli, 8));
        let fir = FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: 8,
                sequence_number: 1,
            }],
        };
        assert!(asks_keyframe_of(&fir, 8));
        assert!(!asks_keyframe_of(&fir, 7));
    }
}
