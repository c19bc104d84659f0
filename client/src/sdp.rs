//! The little SDP reading the client needs, and the conversions between the
//! wire's `CandidateInit` and webrtc's `RTCIceCandidateInit`.

use crate::snapshot::OfferedTrack;
use sfu_proto::signaling::CandidateInit;
use webrtc::peer_connection::RTCIceCandidateInit;

/// The tracks a (subscribe) offer sends: m-sections that are not rejected
/// (port 0) and whose direction includes sending, with their `a=msid`.
pub fn offered_tracks(sdp: &str) -> Vec<OfferedTrack> {
    let mut tracks = Vec::new();
    for section in media_sections(sdp) {
        if !section.sends() {
            continue;
        }
        if let (Some(mid), Some((stream_id, track_id))) = (section.mid, section.msid) {
            tracks.push(OfferedTrack {
                mid: mid.to_owned(),
                kind: section.kind.to_owned(),
                stream_id: stream_id.to_owned(),
                track_id: track_id.to_owned(),
            });
        }
    }
    tracks
}

/// The media SSRCs of the tracks a (subscribe) offer sends, by msid track
/// id: the `a=ssrc` ids of each sending m-section but the retransmission
/// ones (the second of an `a=ssrc-group:FID`). How a receiver that reads
/// RTP itself tells the tracks apart.
pub fn offered_ssrcs(sdp: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for section in media_sections(sdp) {
        if !section.sends() {
            continue;
        }
        let Some((_, track_id)) = section.msid else {
            continue;
        };
        for ssrc in section.ssrcs.iter().filter(|s| !section.rtx.contains(s)) {
            out.push((track_id.to_owned(), *ssrc));
        }
    }
    out
}

/// The id `sdp` gives the RTP header extension `uri` (`a=extmap:<id> <uri>`).
pub fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let (id, rest) = l.trim_end().strip_prefix("a=extmap:")?.split_once(' ')?;
        let id = id.split('/').next()?.parse().ok()?;
        (rest.split_whitespace().next() == Some(uri)).then_some(id)
    })
}

/// The mid of the first m-section: the bundle tag trickled candidates name.
pub fn first_mid(sdp: &str) -> Option<String> {
    media_sections(sdp)
        .into_iter()
        .find_map(|s| s.mid.map(str::to_owned))
}

/// The ICE username fragment (session or first media level).
pub fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// Whether `sdp` already lists `candidate` (with or without the `candidate:` prefix).
pub fn contains_candidate(sdp: &str, candidate: &str) -> bool {
    let value = candidate.strip_prefix("candidate:").unwrap_or(candidate);
    sdp.lines().any(|l| {
        l.trim_end()
            .strip_prefix("a=candidate:")
            .is_some_and(|c| c == value)
    })
}

/// A server candidate in the form webrtc adds it.
pub fn to_rtc_candidate(c: &CandidateInit) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate.clone(),
        sdp_mid: c.sdp_mid.clone(),
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment.clone(),
        url: None,
    }
}

/// A locally gathered candidate as the server expects it: the `candidate:`
/// line, the first bundled m-section's mid and index 0.
pub fn to_wire_candidate(candidate: &str, mid: Option<&str>, ufrag: Option<&str>) -> CandidateInit {
    let candidate = if candidate.starts_with("candidate:") {
        candidate.to_owned()
    } else {
        format!("candidate:{candidate}")
    };
    CandidateInit {
        candidate,
        sdp_mid: Some(mid.unwrap_or("0").to_owned()),
        sdp_m_line_index: Some(0),
        username_fragment: ufrag.map(str::to_owned),
    }
}

struct MediaSection<'a> {
    kind: &'a str,
    port: &'a str,
    mid: Option<&'a str>,
    msid: Option<(&'a str, &'a str)>,
    direction: &'a str,
    /// Every `a=ssrc` id, once each, in order.
    ssrcs: Vec<u32>,
    /// The retransmission SSRCs of `a=ssrc-group:FID` lines.
    rtx: Vec<u32>,
}

impl MediaSection<'_> {
    fn sends(&self) -> bool {
        self.port != "0"
            && matches!(self.kind, "audio" | "video")
            && matches!(self.direction, "sendonly" | "sendrecv")
    }
}

fn media_sections(sdp: &str) -> Vec<MediaSection<'_>> {
    let mut sections: Vec<MediaSection<'_>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            sections.push(MediaSection {
                kind: fields.next().unwrap_or(""),
                port: fields.next().unwrap_or(""),
                mid: None,
                msid: None,
                direction: "sendrecv",
                ssrcs: Vec::new(),
                rtx: Vec::new(),
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            section.mid = Some(mid);
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            section.msid = split_msid(msid).or(section.msid);
        } else if let Some(group) = line.strip_prefix("a=ssrc-group:FID ") {
            let ids: Vec<u32> = group
                .split_whitespace()
                .filter_map(|id| id.parse().ok())
                .collect();
            section.rtx.extend(ids.iter().skip(1));
        } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
            if let Some(id) = ssrc
                .split_whitespace()
                .next()
                .and_then(|id| id.parse::<u32>().ok())
            {
                if !section.ssrcs.contains(&id) {
                    section.ssrcs.push(id);
                }
            }
            // `a=ssrc:<n> msid:<stream> <track>`, for offers without `a=msid`.
            if section.msid.is_none() {
                section.msid = ssrc
                    .split_once(" msid:")
                    .and_then(|(_, msid)| split_msid(msid));
            }
        } else if let Some(dir) = line.strip_prefix("a=") {
            if matches!(dir, "sendonly" | "recvonly" | "sendrecv" | "inactive") {
                section.direction = dir;
            }
        }
    }
    sections
}

fn split_msid(msid: &str) -> Option<(&str, &str)> {
    let mut parts = msid.split_whitespace();
    let stream = parts.next()?;
    // A missing track id is legal ("-" streams aside); use the stream id.
    let track = parts.next().unwrap_or(stream);
    Some((stream, track))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2 3\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=ice-ufrag:abcd\r\n\
a=mid:0\r\n\
a=msid:peer-a video-a\r\n\
a=sendonly\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:1\r\n\
a=ssrc:1234 msid:peer-b audio-b\r\n\
a=sendonly\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:2\r\n\
a=msid:peer-c video-c\r\n\
a=inactive\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:3\r\n\
a=msid:peer-d audio-d\r\n\
a=sendonly\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";

    #[test]
    fn offered_tracks_skip_inactive_and_rejected_sections() {
        let tracks = offered_tracks(OFFER);
        assert_eq!(
            tracks,
            vec![
                OfferedTrack {
                    mid: "0".into(),
                    kind: "video".into(),
                    stream_id: "peer-a".into(),
                    track_id: "video-a".into()
                },
                OfferedTrack {
                    mid: "1".into(),
                    kind: "audio".into(),
                    stream_id: "peer-b".into(),
                    track_id: "audio-b".into()
                },
            ]
        );
    }

    #[test]
    fn offered_ssrcs_leave_out_retransmissions_and_what_is_not_sent() {
        let offer = "v=0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
a=mid:0\r\n\
a=extmap:3/sendonly http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=msid:peer-a video-a\r\n\
a=sendonly\r\n\
a=ssrc-group:FID 1000 1001\r\n\
a=ssrc:1000 cname:a\r\n\
a=ssrc:1000 msid:peer-a video-a\r\n\
a=ssrc:1001 cname:a\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:1\r\n\
a=extmap:5 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=ssrc:2000 msid:peer-b audio-b\r\n\
a=sendonly\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:2\r\n\
a=ssrc:3000 msid:peer-c audio-c\r\n\
a=inactive\r\n";
        assert_eq!(
            offered_ssrcs(offer),
            vec![("video-a".to_owned(), 1000), ("audio-b".to_owned(), 2000)]
        );
        assert_eq!(
            extension_id(
                offer,
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            ),
            Some(3)
        );
        assert_eq!(
            extension_id(offer, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            Some(5)
        );
        assert_eq!(extension_id(offer, "urn:nothing"), None);
    }

    #[test]
    fn first_mid_and_ufrag() {
        assert_eq!(first_mid(OFFER).as_deref(), Some("0"));
        assert_eq!(ice_ufrag(OFFER).as_deref(), Some("abcd"));
        assert_eq!(first_mid("v=0\r\n"), None);
    }

    #[test]
    fn candidates_already_in_the_sdp_are_recognised() {
        let c = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";
        assert!(contains_candidate(OFFER, c));
        assert!(contains_candidate(OFFER, &c["candidate:".len()..]));
        assert!(!contains_candidate(
            OFFER,
            "candidate:2 1 udp 1 127.0.0.1 5001 typ host"
        ));
    }

    #[test]
    fn wire_candidate_json_matches_the_browser_shape() {
        let c = to_wire_candidate(
            "1 1 udp 2130706431 127.0.0.1 5000 typ host",
            Some("0"),
            Some("abcd"),
        );
        let json = serde_json::to_value(&c).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
                "usernameFragment": "abcd",
            })
        );
    }

    #[test]
    fn server_candidate_converts_field_by_field() {
        let wire: CandidateInit = serde_json::from_str(
            r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
        )
        .expect("parses");
        let rtc = to_rtc_candidate(&wire);
        assert_eq!(rtc.candidate, wire.candidate);
        assert_eq!(rtc.sdp_mid.as_deref(), Some("0"));
        assert_eq!(rtc.sdp_mline_index, Some(0));
        assert_eq!(rtc.username_fragment, None);
        // And it is what webrtc's own JSON form would carry.
        let json = serde_json::to_value(&rtc).expect("serializes");
        assert_eq!(json["sdpMLineIndex"], 0);
        assert_eq!(json["sdpMid"], "0");
    }
}
