//! Building the two webrtc peer connections and routing their events into
//! the shared state.

use crate::shared::Shared;
use crate::{receiver, ClientError};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use sfu_proto::signaling::{IceServer, PcKind};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

/// Payload type the client offers VP8 with.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// Payload type the client offers Opus with.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Time between two connectivity checks.
const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Where the RTCP tap sits: after every default interceptor, so
/// the NACK responder and report generators have seen the RTCP first.
const RTCP_TAP_SLOT: usize = 14_000;

/// The codec the client publishes video with.
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: ["nack", "nack pli", "ccm fir", "goog-remb"]
            .iter()
            .map(|fb| {
                let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                RTCPFeedback {
                    typ: typ.to_owned(),
                    parameter: parameter.to_owned(),
                }
            })
            .collect(),
    }
}

/// The codec the client publishes audio with.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Builds a peer connection bound to `bind_ip` only, so it gathers exactly
/// one host candidate there (loopback included: webrtc skips loopback only
/// when expanding a wildcard address) and no mDNS.
pub(crate) async fn build(
    kind: PcKind,
    bind_ip: std::net::IpAddr,
    ice_keepalive: Option<std::time::Duration>,
    ice_servers: &[IceServer],
    handler: Arc<dyn PeerConnectionEventHandler>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut media_engine = MediaEngine::default();
    match kind {
        PcKind::Publish => {
            let codecs = [
                (vp8_codec(), VP8_PAYLOAD_TYPE, RtpCodecKind::Video),
                (opus_codec(), OPUS_PAYLOAD_TYPE, RtpCodecKind::Audio),
            ];
            for (rtp_codec, payload_type, codec_kind) in codecs {
                media_engine
                    .register_codec(
                        RTCRtpCodecParameters {
                            rtp_codec,
                            payload_type,
                        },
                        codec_kind,
                    )
                    .map_err(ClientError::webrtc("registering a codec"))?;
            }
        }
        // Receive whatever the server forwards (browsers publish H264 too).
        PcKind::Subscribe => media_engine
            .register_default_codecs()
            .map_err(ClientError::webrtc("registering the default codecs"))?,
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)
        .map_err(ClientError::webrtc("registering the default interceptors"))?;
    let registry = match kind {
        PcKind::Publish => {
            registry.with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(is_keyframe_request))
        }
        PcKind::Subscribe => {
            registry.with(Slot::from(RTCP_TAP_SLOT), RtcpTap::new(is_sender_report))
        }
    };
    let mut setting_engine = SettingEngineBuilder::new()
        // Answer `setup:active` as browsers do: the client starts DTLS on
        // the subscribe connection and the server stays the DTLS server.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Client)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        // Checks paced as browsers pace them (RFC 8445's Ta of 50 ms), not
        // `rtc`'s 200 ms, which made this client join four times slower
        // than a browser against a lite server; still 1.4 s per pair.
        .with_ice_connection_attempts(Some(CHECK_INTERVAL), Some(28));
    if let Some(every) = ice_keepalive {
        setting_engine = setting_engine.with_ice_timeouts(Some(every), Some(every), Some(every));
    }
    let setting_engine = setting_engine.build();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(
            ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
        )
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine)
        .with_handler(handler)
        .with_udp_addrs(vec![SocketAddr::new(bind_ip, 0)])
        .build()
        .await
        .map_err(ClientError::webrtc("building a peer connection"))?;
    Ok(Arc::new(pc))
}

/// Routes one peer connection's events into the shared state.
pub(crate) struct PcEvents {
    pub kind: PcKind,
    pub shared: Weak<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcEvents {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        match event.candidate.to_json() {
            Ok(init) => shared.local_candidate(self.kind, init.candidate),
            Err(e) => {
                shared.client_error(format!("{:?} candidate not serializable: {e}", self.kind))
            }
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            if let Some(shared) = self.shared.upgrade() {
                shared.local_gathering_complete(self.kind);
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(pc = ?self.kind, %state, "connection state");
        if let Some(shared) = self.shared.upgrade() {
            shared.set_pc_state(self.kind, state.to_string());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Fires on the first RTP packet of a track, not on the SDP.
        if let Some(shared) = self.shared.upgrade() {
            receiver::spawn(&shared, track);
        }
    }
}

/// Marks the inbound RTCP the client acts on for delivery to the
/// application (PLI and FIR on the publish side, reaching
/// `TrackLocal::poll`; sender reports on the subscribe side, reaching
/// `TrackRemote::poll`); other inbound RTCP stays with the interceptors (it
/// would otherwise stop at the end of the chain).
pub(crate) struct RtcpTap {
    wanted: fn(&dyn rtc::rtcp::Packet) -> bool,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl RtcpTap {
    fn new(wanted: fn(&dyn rtc::rtcp::Packet) -> bool) -> Self {
        RtcpTap {
            wanted,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

/// Whether an RTCP packet asks for a keyframe.
pub(crate) fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Whether an RTCP packet is a sender report.
pub(crate) fn is_sender_report(packet: &dyn rtc::rtcp::Packet) -> bool {
    packet.as_any().is::<SenderReport>()
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| (self.wanted)(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
