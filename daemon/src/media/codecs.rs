//! The codecs sfud negotiates, on both kinds of connection: what it
//! forwards is what publishers send, so a subscriber's connection must know
//! every codec a publisher's may use.
//!
//! `rtc`'s default list minus the formats browsers never send a camera in:
//! VP9 profile 1 (4:4:4), H264 with packetization-mode 0 (one NAL unit per
//! packet), and H265 (sfud cannot find its keyframes). Every browser offers
//! one of the codecs kept, and each format costs: a subscribe connection's
//! first video section lists them all until answered, and `rtc` parses such
//! a section in time that grows with the square of its formats (see
//! `engine::negotiate`).

use rtc::peer_connection::configuration::media_engine::{
    MediaEngine as CodecRegistry, MIME_TYPE_AV1, MIME_TYPE_G722, MIME_TYPE_H264, MIME_TYPE_OPUS,
    MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

/// Audio: (mime type, clock rate, channels, fmtp, payload type), `rtc`'s.
const AUDIO: [(&str, u32, u16, &str, u8); 4] = [
    (MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
    (MIME_TYPE_G722, 8_000, 0, "", 9),
    (MIME_TYPE_PCMU, 8_000, 0, "", 0),
    (MIME_TYPE_PCMA, 8_000, 0, "", 8),
];

/// Video: (mime type, fmtp, payload type, its RTX payload type), with
/// `rtc`'s payload types.
const VIDEO: [(&str, &str, u8, u8); 6] = [
    (MIME_TYPE_VP8, "", 96, 97),
    (MIME_TYPE_VP9, "profile-id=0", 98, 99),
    (
        MIME_TYPE_H264,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        102,
        103,
    ),
    (
        MIME_TYPE_H264,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        125,
        105,
    ),
    (
        MIME_TYPE_H264,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032",
        123,
        124,
    ),
    (MIME_TYPE_AV1, "profile-id=0", 41, 106),
];

/// Registers sfud's codecs (see the module docs) in `codecs`.
pub(crate) fn register(codecs: &mut CodecRegistry) -> Result<(), rtc::shared::error::Error> {
    let codec = |mime: &str, clock_rate, channels, fmtp: String, feedback, payload_type| {
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp,
                rtcp_feedback: feedback,
            },
            payload_type,
        }
    };
    for (mime, clock_rate, channels, fmtp, pt) in AUDIO {
        codecs.register_codec(
            codec(mime, clock_rate, channels, fmtp.to_owned(), vec![], pt),
            RtpCodecKind::Audio,
        )?;
    }
    let feedback: Vec<RTCPFeedback> = [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect();
    for (mime, fmtp, pt, rtx) in VIDEO {
        codecs.register_codec(
            codec(mime, 90_000, 0, fmtp.to_owned(), feedback.clone(), pt),
            RtpCodecKind::Video,
        )?;
        codecs.register_codec(
            codec(MIME_TYPE_RTX, 90_000, 0, format!("apt={pt}"), vec![], rtx),
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_video_codec_has_its_own_payload_types_and_an_rtx_format() {
        let mut codecs = CodecRegistry::default();
        register(&mut codecs).expect("registers");
        let mut pts: Vec<u8> = VIDEO.iter().flat_map(|v| [v.2, v.3]).collect();
        pts.extend(AUDIO.iter().map(|a| a.4));
        let n = pts.len();
        pts.sort_unstable();
        pts.dedup();
        assert_eq!(pts.len(), n, "payload types are unique");
    }
}
