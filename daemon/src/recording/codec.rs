//! What a track needs to be recorded: RTP caps, depayloader, parser and
//! container, chosen from the codec the publisher negotiated. Pure data,
//! unit-tested without GStreamer.

use crate::media::{Codec, MediaKind};

/// The file container of a participant's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// VP8, VP9 and Opus.
    Webm,
    /// Anything else we record (H264).
    Matroska,
}

impl Container {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Webm => "webm",
            Container::Matroska => "mkv",
        }
    }

    /// The GStreamer muxer element.
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Webm => "webmmux",
            Container::Matroska => "matroskamux",
        }
    }

    /// The container that can hold every one of `codecs`.
    pub fn for_codecs<'a>(codecs: impl IntoIterator<Item = &'a RecordedCodec>) -> Container {
        if codecs.into_iter().all(|c| c.webm) {
            Container::Webm
        } else {
            Container::Matroska
        }
    }
}

/// How one codec is depayloaded and muxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCodec {
    /// RTP `encoding-name` in caps, upper case (`VP8`, `OPUS`).
    pub encoding_name: &'static str,
    /// The depayloader element.
    pub depayloader: &'static str,
    /// A parser between depayloader and muxer, where the muxer needs one.
    pub parser: Option<&'static str>,
    /// Whether WebM may hold it.
    pub webm: bool,
    /// Audio or video.
    pub kind: MediaKind,
}

/// The recording recipe of `codec`, or `None` for a codec not recorded.
pub fn recipe(codec: &Codec) -> Option<RecordedCodec> {
    let name = codec
        .mime_type
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let (encoding_name, depayloader, parser, webm, kind) = match name.as_str() {
        "VP8" => ("VP8", "rtpvp8depay", None, true, MediaKind::Video),
        "VP9" => ("VP9", "rtpvp9depay", None, true, MediaKind::Video),
        "H264" => (
            "H264",
            "rtph264depay",
            Some("h264parse"),
            false,
            MediaKind::Video,
        ),
        // rtpopusdepay 1.22 leaves `rate` out of its caps and the muxers
        // refuse that: opusparse puts it back.
        "OPUS" => (
            "OPUS",
            "rtpopusdepay",
            Some("opusparse"),
            true,
            MediaKind::Audio,
        ),
        _ => return None,
    };
    Some(RecordedCodec {
        encoding_name,
        depayloader,
        parser,
        webm,
        kind,
    })
}

/// The `application/x-rtp` caps of a track as a caps string.
pub fn rtp_caps(codec: &Codec, recipe: &RecordedCodec, payload_type: u8) -> String {
    let media = recipe.kind.as_str();
    let mut caps = format!(
        "application/x-rtp,media=(string){media},clock-rate=(int){},encoding-name=(string){},payload=(int){payload_type}",
        codec.clock_rate, recipe.encoding_name
    );
    if recipe.kind == MediaKind::Audio {
        caps.push_str(&format!(
            ",encoding-params=(string){}",
            codec.channels.max(1)
        ));
    }
    // H264's depayloader wants the packetization mode and profile.
    if recipe.encoding_name == "H264" {
        for param in codec.fmtp.split(';') {
            if let Some((key, value)) = param.trim().split_once('=') {
                let key = key.trim();
                if matches!(
                    key,
                    "packetization-mode" | "profile-level-id" | "sprop-parameter-sets"
                ) && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | '+' | '/' | '='))
                {
                    caps.push_str(&format!(",{key}=(string){}", value.trim()));
                }
            }
        }
    }
    caps
}

/// An RTCP SDES packet giving `ssrc` the CNAME `cname`.
///
/// The media engine hands the recorder each sender report alone; rtpbin
/// only lip-syncs streams that an SDES CNAME ties together, so the recorder
/// appends this to every report of a participant, with the same CNAME for
/// all their tracks.
pub fn sdes_cname(ssrc: u32, cname: &str) -> Vec<u8> {
    let text = &cname.as_bytes()[..cname.len().min(255)];
    // Chunk: SSRC, CNAME item (type 1, length, text), END (0), padded to 32 bits.
    let mut chunk = Vec::with_capacity(8 + text.len() + 4);
    chunk.extend_from_slice(&ssrc.to_be_bytes());
    chunk.push(1);
    chunk.push(text.len() as u8);
    chunk.extend_from_slice(text);
    chunk.push(0);
    while chunk.len() % 4 != 0 {
        chunk.push(0);
    }
    let words = (4 + chunk.len()) / 4 - 1;
    let mut packet = Vec::with_capacity(4 + chunk.len());
    packet.push(0x81); // V=2, P=0, SC=1
    packet.push(202); // SDES
    packet.extend_from_slice(&(words as u16).to_be_bytes());
    packet.extend_from_slice(&chunk);
    packet
}

/// The SSRC of an RTP packet, if it is long enough to be one.
pub fn rtp_ssrc(packet: &[u8]) -> Option<u32> {
    let b = packet.get(8..12)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str) -> Codec {
        Codec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            fmtp: fmtp.into(),
        }
    }

    #[test]
    fn webm_holds_vp8_vp9_and_opus_but_not_h264() {
        let vp8 = recipe(&codec("video/VP8", 90_000, 0, "")).expect("vp8");
        let opus = recipe(&codec("audio/opus", 48_000, 2, "")).expect("opus");
        let h264 = recipe(&codec("video/H264", 90_000, 0, "")).expect("h264");
        assert_eq!(Container::for_codecs([&vp8, &opus]), Container::Webm);
        assert_eq!(Container::for_codecs([&h264, &opus]), Container::Matroska);
        assert_eq!(Container::for_codecs([&h264, &opus]).extension(), "mkv");
        assert_eq!(opus.parser, Some("opusparse"));
        assert!(recipe(&codec("audio/PCMU", 8000, 1, "")).is_none());
    }

    #[test]
    fn caps_name_the_payload_and_audio_channels() {
        let c = codec("audio/opus", 48_000, 2, "minptime=10");
        let r = recipe(&c).expect("opus");
        assert_eq!(
            rtp_caps(&c, &r, 111),
            "application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int)111,encoding-params=(string)2"
        );
        let c = codec(
            "video/H264",
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        );
        let r = recipe(&c).expect("h264");
        assert!(rtp_caps(&c, &r, 102).ends_with(
            "payload=(int)102,packetization-mode=(string)1,profile-level-id=(string)42e01f"
        ));
    }

    #[test]
    fn sdes_is_a_valid_padded_rtcp_packet() {
        let p = sdes_cname(0x0102_0304, "abc");
        // 4 header + 4 ssrc + 2 item header + 3 text + 1 end = 14 → 16.
        assert_eq!(p.len(), 16);
        assert_eq!(&p[..4], &[0x81, 202, 0, 3]);
        assert_eq!(&p[4..8], &[1, 2, 3, 4]);
        assert_eq!(&p[8..13], &[1, 3, b'a', b'b', b'c']);
        assert_eq!(&p[13..], &[0, 0, 0]);
        assert_eq!(sdes_cname(1, "ab").len(), 16);
        // A chunk of 4 + 2 + 6 + END = 13 bytes is padded to 16.
        assert_eq!(sdes_cname(1, "abcdef").len(), 20);
    }

    #[test]
    fn ssrc_is_read_from_the_fixed_header() {
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(rtp_ssrc(&p), Some(0xdead_beef));
        p.truncate(10);
        assert_eq!(rtp_ssrc(&p), None);
    }
}
