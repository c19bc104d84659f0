//! Building the server's peer connections.
//!
//! Every connection is ICE-lite and DTLS-passive: the client drives ICE
//! (so the server needs none of its candidates and learns its address from
//! incoming checks, which also covers Chromium's mDNS-hidden hosts), and the
//! client starts the DTLS handshake. Each connection gets its own ICE
//! username fragment, which is how the engine routes a client's first
//! datagrams to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{NackGeneratorBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine as CodecRegistry;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCBundlePolicy, RTCConfigurationBuilder};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateServerReflexiveConfig, RTCDtlsRole,
    RTCIceCandidate,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use super::forward::ABS_SEND_TIME_URI;
use super::twcc::TRANSPORT_CC_URI;
use sfu_proto::signaling::CandidateInit;
use sfu_proto::signaling::PcKind;

use super::rtcp::DeliverFeedback;
use super::srtp_keys::KeyTap;
use super::MediaError;

/// Slot of the keyframe-request marker: outside every default interceptor, so
/// it sees RTCP as it comes off the wire.
const DELIVER_RTCP_SLOT: usize = 14_000;

/// ICE timing for server connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IceTimeouts {
    pub disconnected: Duration,
    pub failed: Duration,
}

/// One local address the server announces as a candidate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announced {
    /// The socket address media is bound on.
    pub bound: SocketAddr,
    /// The address announced instead (1:1 NAT), if any.
    pub public: Option<std::net::IpAddr>,
    /// An ICE-TCP listener (a passive TCP host candidate), not a UDP socket.
    pub tcp: bool,
}

impl Announced {
    /// The address `rtc` knows this candidate by: the bound one for UDP
    /// (a server-reflexive candidate's base); for TCP the announced one, a
    /// host candidate (`rtc` gives server-reflexive candidates no TCP
    /// type), which the engine names as the local address of what arrives
    /// on the listener.
    pub(crate) fn local(&self) -> SocketAddr {
        match (self.tcp, self.public) {
            (true, Some(ip)) => SocketAddr::new(ip, self.bound.port()),
            _ => self.bound,
        }
    }
}

/// Builds a server peer connection with its own ICE credentials, and the
/// tap on its crypto provider (see `srtp_keys`): it learns the SRTP keys,
/// which the forwarding fast path uses where `fast_path` (the SRTP profiles
/// are then the ones it can tell apart), and sees the certificates checked.
pub(crate) fn build_connection(
    kind: PcKind,
    ufrag: &str,
    timeouts: IceTimeouts,
    announced: &[Announced],
    fast_path: bool,
    now: Instant,
) -> Result<(RTCPeerConnection, Arc<KeyTap>), MediaError> {
    let internal = |e: rtc::shared::error::Error| MediaError::Internal(e.to_string());
    let keys = KeyTap::new().map_err(|e| MediaError::Internal(e.to_string()))?;
    let mut settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.to_owned(), rtc::ice::rand::generate_pwd())
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_ice_timeouts(
            Some(timeouts.disconnected),
            Some(timeouts.failed),
            Some(Duration::from_secs(2)),
        );
    settings = settings.with_crypto_provider(keys.clone());
    if fast_path || kind == PcKind::Publish {
        // The 32-bit-tag profile is left out so the engine can tell the
        // counter-mode profile from the keys alone (for the fast path, and
        // for a publisher's SSRC simulcast layers it reads itself);
        // browsers offer GCM and the 80-bit one.
        settings = settings.with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ]);
    }
    let settings = settings.build();
    let mut codecs = CodecRegistry::default();
    super::codecs::register(&mut codecs).map_err(internal)?;
    let registry = Registry::new().with(Slot::from(DELIVER_RTCP_SLOT), DeliverFeedback::default());
    let registry = match kind {
        // Receives media: NACKs to send, receiver reports, TWCC feedback for
        // the browser's bandwidth estimate.
        // rtc's defaults but with a NACK generator that asks for a packet at
        // most 10 times (as libwebrtc's receiver does): it cannot tell a
        // retransmission SRTP rejected as a replay from none at all, and
        // would otherwise ask until the packet leaves its 512-packet window.
        // The default codecs already list `nack` and `nack pli`.
        PcKind::Publish => {
            configure_simulcast_extension_headers(&mut codecs).map_err(internal)?;
            // Each audio packet's level (RFC 6464), which the engine reads
            // to tell who is speaking (`crate::speech`).
            codecs
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: super::engine::AUDIO_LEVEL_URI.to_owned(),
                    },
                    RtpCodecKind::Audio,
                    None,
                )
                .map_err(internal)?;
            let registry = configure_twcc_receiver_only(registry, &mut codecs).map_err(internal)?;
            configure_rtcp_reports(registry).with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(10)
                    .build(),
            )
        }
        // Only sends media, which the engine protects and sends itself (the
        // fast path), and answers NACKs (from one history per published
        // track) and relays sender reports for, on either path: no
        // interceptor but the RTCP marker, so no per-leg send buffer either.
        PcKind::Subscribe => {
            for parameter in ["", "pli"] {
                codecs.register_feedback(
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: parameter.to_owned(),
                    },
                    RtpCodecKind::Video,
                );
            }
            configure_simulcast_extension_headers(&mut codecs).map_err(internal)?;
            // The send time of each forwarded video packet, stamped by the
            // engine, is what the subscriber's browser estimates its downlink
            // from; it reports the estimate as REMB (`goog-remb`, in the
            // default video feedback), which picks its simulcast layers.
            codecs
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: ABS_SEND_TIME_URI.to_owned(),
                    },
                    RtpCodecKind::Video,
                    None,
                )
                .map_err(internal)?;
            // Browsers that do transport-wide congestion control (all of
            // them now) answer with TWCC feedback instead of REMB: which
            // packets arrived and when, what probes are judged by.
            for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                codecs.register_feedback(
                    RTCPFeedback {
                        typ: "transport-cc".to_owned(),
                        parameter: String::new(),
                    },
                    kind,
                );
                codecs
                    .register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: TRANSPORT_CC_URI.to_owned(),
                        },
                        kind,
                        None,
                    )
                    .map_err(internal)?;
            }
            registry
        }
    };
    let config = RTCConfigurationBuilder::new()
        .with_bundle_policy(RTCBundlePolicy::MaxBundle)
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(settings)
        .with_media_engine(codecs)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal)?;
    for a in announced {
        let init = candidate_for(a).map_err(internal)?;
        pc.add_local_candidate(init).map_err(internal)?;
    }
    Ok((pc, keys))
}

fn candidate_for(
    a: &Announced,
) -> Result<rtc::peer_connection::transport::RTCIceCandidateInit, rtc::shared::error::Error> {
    let base = |ip: std::net::IpAddr| CandidateConfig {
        network: if a.tcp { "tcp" } else { "udp" }.to_owned(),
        address: ip.to_string(),
        port: a.bound.port(),
        component: 1,
        ..Default::default()
    };
    let candidate = match a.public {
        // Passive: the client connects (RFC 6544).
        _ if a.tcp => CandidateHostConfig {
            base_config: base(a.local().ip()),
            tcp_type: rtc::ice::tcp_type::TcpType::Passive,
        }
        .new_candidate_host()?,
        // A server-reflexive candidate keeps the bound address as its base,
        // which is what incoming datagrams are matched against.
        Some(public) => CandidateServerReflexiveConfig {
            base_config: base(public),
            rel_addr: a.bound.ip().to_string(),
            rel_port: a.bound.port(),
            url: None,
        }
        .new_candidate_server_reflexive()?,
        None => CandidateHostConfig {
            base_config: base(a.bound.ip()),
            ..Default::default()
        }
        .new_candidate_host()?,
    };
    RTCIceCandidate::from(&candidate).to_json()
}

/// The candidates to trickle after a description, tagged with the first
/// bundled m-section's mid (the only one clients such as aiortc accept).
pub(crate) fn trickle_candidates(
    announced: &[Announced],
    sdp: &str,
    ufrag: &str,
) -> Vec<CandidateInit> {
    let mid = first_mid(sdp);
    announced
        .iter()
        .filter_map(|a| candidate_for(a).ok())
        .map(|c| CandidateInit {
            candidate: c.candidate,
            sdp_mid: mid.clone().or(Some("0".to_owned())),
            sdp_m_line_index: Some(0),
            username_fragment: Some(ufrag.to_owned()),
        })
        .collect()
}

/// The `a=mid` of the first m-section of an SDP.
pub(crate) fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .skip_while(|l| !l.starts_with("m="))
        .find_map(|l| l.trim_end().strip_prefix("a=mid:").map(str::to_owned))
}

/// How many audio/video m-sections an SDP has, and how many of them are
/// accepted (non-zero port and not inactive).
pub(crate) fn media_sections(sdp: &str) -> (usize, usize) {
    let mut total = 0;
    let mut usable = 0;
    let mut current: Option<bool> = None;
    let finish = |current: Option<bool>, usable: &mut usize| {
        if current == Some(true) {
            *usable += 1;
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            finish(current, &mut usable);
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or_default();
            let port = parts.next().unwrap_or("0");
            if kind == "audio" || kind == "video" {
                total += 1;
                current = Some(port != "0");
            } else {
                current = None;
            }
        } else if line == "a=inactive" && current.is_some() {
            current = Some(false);
        }
    }
    finish(current, &mut usable);
    (total, usable)
}

/// Whether an offer sends audio or video: an accepted m-section whose
/// direction is `sendrecv` (the default) or `sendonly`.
pub fn sends_media(sdp: &str) -> bool {
    let mut current: Option<bool> = None;
    let mut any = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            any |= current == Some(true);
            let mut parts = rest.split_whitespace();
            let kind = parts.next().unwrap_or_default();
            let port = parts.next().unwrap_or("0");
            current = ((kind == "audio" || kind == "video") && port != "0").then_some(true);
        } else if matches!(line, "a=recvonly" | "a=inactive") && current.is_some() {
            current = Some(false);
        }
    }
    any || current == Some(true)
}

/// The publish answer as the publisher gets it: only the feedback sfud
/// gives, and no RTX where the publisher simulcasts.
///
/// - `goog-remb` and `ccm fir` go: sfud sends publishers transport-wide
///   feedback, NACKs and PLIs, never REMB nor FIR. (`rtc`'s default codecs
///   list them all, and its answer echoes what the offer has of them.)
/// - A video section with `a=simulcast` loses its RTX payload types. Its
///   layers come without `a=ssrc` lines, so their RTX streams would be known
///   by the repaired-RID extension alone, which `rtc` 0.21.1 does not bind:
///   it drops them, and a lost packet would never be repaired. Without RTX
///   the publisher retransmits on each layer's own SSRC, which arrives like
///   any late packet and reaches the subscribers that lost it.
/// - So do the video sections `ssrc_simulcast` names (by mid): the offer
///   made them SSRC simulcast (`a=ssrc-group:SIM`, see [`sim_groups`]),
///   whose layers `rtc` does not bind but the first, so the engine reads
///   the others itself; their RTX streams would need the same.
pub(crate) fn publish_answer(sdp: &str, ssrc_simulcast: &[String]) -> String {
    let mut out = String::with_capacity(sdp.len());
    let sections = split_sections(sdp);
    for section in sections {
        let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
        let simulcast_video = section.first().is_some_and(|l| l.starts_with("m=video"))
            && (section.iter().any(|l| l.starts_with("a=simulcast:"))
                || mid.is_some_and(|m| ssrc_simulcast.iter().any(|s| s == m)));
        let rtx: Vec<&str> = if simulcast_video {
            section
                .iter()
                .filter_map(|l| {
                    let (pt, codec) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
                    codec.to_ascii_lowercase().starts_with("rtx/").then_some(pt)
                })
                .collect()
        } else {
            Vec::new()
        };
        for line in section {
            if let Some(fb) = line.strip_prefix("a=rtcp-fb:") {
                let kind = fb.split_once(' ').map_or("", |(_, k)| k);
                if kind == "goog-remb" || kind == "ccm fir" {
                    continue;
                }
            }
            if !rtx.is_empty() {
                if let Some(m) = line.strip_prefix("m=video ") {
                    // m=video <port> <proto> <formats...>
                    let kept: Vec<&str> = m
                        .split(' ')
                        .enumerate()
                        .filter(|(i, f)| *i < 2 || !rtx.contains(f))
                        .map(|(_, f)| f)
                        .collect();
                    out.push_str("m=video ");
                    out.push_str(&kept.join(" "));
                    out.push_str("\r\n");
                    continue;
                }
                let names_rtx = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|prefix| {
                    line.strip_prefix(prefix)
                        .and_then(|rest| rest.split([' ', ':']).next())
                        .is_some_and(|pt| rtx.contains(&pt))
                });
                if names_rtx {
                    continue;
                }
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// The SSRC simulcast groups of an offer (`a=ssrc-group:SIM`, RFC 5576 with
/// the semantics browsers give it): for each video section that has one,
/// its mid and the layers' SSRCs, lowest layer first. A malformed group,
/// or one of fewer than two SSRCs, is none.
pub(crate) fn sim_groups(sdp: &str) -> Vec<(String, Vec<u32>)> {
    split_sections(sdp)
        .into_iter()
        .skip(1)
        .filter(|s| s.first().is_some_and(|l| l.starts_with("m=video")))
        .filter_map(|section| {
            let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"))?;
            let ssrcs = section.iter().find_map(|l| {
                let group = l.strip_prefix("a=ssrc-group:SIM ")?;
                group
                    .split_ascii_whitespace()
                    .map(|s| s.parse::<u32>().ok())
                    .collect::<Option<Vec<u32>>>()
            })?;
            let distinct = ssrcs
                .iter()
                .enumerate()
                .all(|(i, s)| !ssrcs[..i].contains(s));
            (ssrcs.len() >= 2 && ssrcs.len() <= MAX_SIM_LAYERS && distinct)
                .then(|| (mid.to_owned(), ssrcs))
        })
        .collect()
}

/// Most layers an SSRC simulcast group may have (browsers send three).
const MAX_SIM_LAYERS: usize = 4;

/// An SDP's lines, the session part first, then one group per m-section.
fn split_sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    sections
}

/// The SHA-256 certificate fingerprints an SDP names (`a=fingerprint:`),
/// as bytes; malformed ones are skipped.
pub(crate) fn sha256_fingerprints(sdp: &str) -> Vec<Vec<u8>> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .filter_map(|f| {
            let (algorithm, hex) = f.split_once(' ')?;
            if !algorithm.eq_ignore_ascii_case("sha-256") {
                return None;
            }
            let bytes: Option<Vec<u8>> = hex
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).ok())
                .collect();
            bytes.filter(|b| b.len() == 32)
        })
        .collect()
}

/// A fresh ICE username fragment, unique enough to route by.
pub(crate) fn new_ufrag() -> String {
    rtc::ice::rand::generate_ufrag()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\na=sendonly\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v2\r\na=inactive\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d\r\n";

    #[test]
    fn publish_answers_drop_feedback_never_sent_and_rtx_of_simulcast_sections() {
        let answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
            a=rtcp-fb:111 transport-cc\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 ccm fir\r\n\
            a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 transport-cc\r\n\
            a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            a=rtpmap:98 H264/90000\r\na=fmtp:98 profile-level-id=42e01f\r\n\
            a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
            a=rid:q recv\r\na=rid:h recv\r\na=simulcast:recv q;h\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:2\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 nack\r\n\
            a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let got = publish_answer(answer, &[]);
        assert!(
            !got.contains("goog-remb") && !got.contains("ccm fir"),
            "{got}"
        );
        assert!(
            got.contains("a=rtcp-fb:96 nack pli\r\n")
                && got.contains("a=rtcp-fb:96 transport-cc\r\n")
        );
        assert!(got.contains("a=rtcp-fb:111 transport-cc\r\n"));
        let sections: Vec<&str> = got.split("m=").collect();
        // The simulcast section keeps its codecs, not their RTX.
        assert!(
            sections[2].starts_with("video 9 UDP/TLS/RTP/SAVPF 96 98\r\n"),
            "{}",
            sections[2]
        );
        assert!(!sections[2].contains("rtx") && !sections[2].contains("apt="));
        assert!(sections[2].contains("a=fmtp:98 profile-level-id=42e01f\r\n"));
        assert!(sections[2].contains("a=simulcast:recv q;h\r\n"));
        // A section sent once keeps RTX.
        assert!(sections[3].starts_with("video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"));
        assert!(sections[3].contains("a=fmtp:97 apt=96\r\n"));
        assert!(got.starts_with("v=0\r\n") && got.ends_with("apt=96\r\n"));
    }

    #[test]
    fn ssrc_simulcast_sections_are_found_and_answered_without_rtx() {
        let offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ssrc-group:SIM 1 2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=ssrc-group:FID 10 11\r\n\
            a=ssrc-group:SIM 10 20 30\r\na=ssrc:10 cname:x\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=ssrc-group:SIM 5 x\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=ssrc-group:SIM 7\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:4\r\na=ssrc-group:SIM 8 8\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\na=ssrc-group:SIM 1 2 3 4 5\r\n";
        // Audio, malformed, single, repeated and oversized groups are none.
        assert_eq!(sim_groups(offer), vec![("1".to_owned(), vec![10, 20, 30])]);
        let answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:2\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";
        let got = publish_answer(answer, &["1".to_owned()]);
        let sections: Vec<&str> = got.split("m=").collect();
        assert!(sections[1].starts_with("video 9 UDP/TLS/RTP/SAVPF 96\r\n"));
        assert!(!sections[1].contains("rtx"), "{got}");
        assert!(sections[2].contains("a=fmtp:97 apt=96\r\n"), "{got}");
    }

    #[test]
    fn sha256_fingerprints_are_read_as_bytes_and_others_skipped() {
        let hex: Vec<String> = (0..32u8).map(|b| format!("{b:02X}")).collect();
        let sdp = format!(
            "v=0\r\na=fingerprint:sha-256 {}\r\na=fingerprint:sha-1 AA:BB\r\n\
             a=fingerprint:sha-256 ZZ:00\r\na=fingerprint:SHA-256 {}\r\n",
            hex.join(":"),
            hex[..31].join(":")
        );
        assert_eq!(
            sha256_fingerprints(&sdp),
            vec![(0..32u8).collect::<Vec<u8>>()]
        );
    }

    #[test]
    fn first_mid_is_the_first_m_sections() {
        assert_eq!(first_mid(SDP).as_deref(), Some("a0"));
        assert_eq!(first_mid("v=0\r\n"), None);
    }

    #[test]
    fn only_sending_sections_count_as_media() {
        assert!(sends_media(SDP), "the sendonly audio section sends");
        let recv_only = "v=0\r\nm=audio 9 X 111\r\na=recvonly\r\nm=video 9 X 96\r\na=inactive\r\n";
        assert!(!sends_media(recv_only));
        assert!(
            sends_media("v=0\r\nm=video 9 X 96\r\na=mid:0\r\n"),
            "sendrecv by default"
        );
        assert!(!sends_media(
            "v=0\r\nm=application 9 X webrtc-datachannel\r\n"
        ));
    }

    #[test]
    fn rejected_and_inactive_sections_are_not_usable() {
        assert_eq!(media_sections(SDP), (3, 1));
    }
}
