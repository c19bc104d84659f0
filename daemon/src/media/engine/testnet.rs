//! A media core on an in-memory network with a simulated clock, and
//! clients that are `rtc` peer connections (the sans-IO core browsers'
//! peers are built from elsewhere): what the core sends reaches the client
//! with that address, what a client sends reaches the core, and time moves
//! only when the test says. Used by the core's unit tests and the fuzz
//! campaigns behind DTLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine as CodecRegistry;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCBundlePolicy, RTCConfigurationBuilder};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context as SrtpContext;
use tokio::sync::oneshot;

use super::MediaCore;
use crate::media::srtp_keys::KeyTap;
use crate::media::{EventSink, MediaCommand, MediaEvent, PeerId, TrackInfo};

/// A publishing client's video SSRC.
pub(crate) const SSRC: u32 = 0x1234_5678;

/// How far the clock moves per step.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// A client on `addr`, publishing VP8 if `publish` (else it only answers),
/// with the tap that learns its keys.
pub(crate) fn client(
    addr: SocketAddr,
    publish: bool,
    now: Instant,
) -> (RTCPeerConnection, Arc<KeyTap>) {
    let keys = KeyTap::new().expect("crypto provider");
    let settings = SettingEngineBuilder::new()
        .with_crypto_provider(keys.clone())
        .build();
    let mut codecs = CodecRegistry::default();
    codecs.register_default_codecs().expect("default codecs");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_bundle_policy(RTCBundlePolicy::MaxBundle)
                .build(),
        )
        .with_setting_engine(settings)
        .with_media_engine(codecs)
        .build(now)
        .expect("client connection");
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    let init = RTCIceCandidate::from(&host).to_json().expect("candidate");
    pc.add_local_candidate(init).expect("local candidate");
    if !publish {
        return (pc, keys);
    }
    let track = MediaStreamTrack::new(
        "stream".to_owned(),
        "video".to_owned(),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(SSRC),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "video/VP8".to_owned(),
                clock_rate: 90_000,
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    pc.add_transceiver_from_track(
        track,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        }),
    )
    .expect("video transceiver");
    (pc, keys)
}

/// Adds the candidates of `description` (the core's) to `client`.
pub(crate) fn add_candidates(client: &mut RTCPeerConnection, description: &str) {
    let candidates = description
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"));
    for candidate in candidates {
        client
            .add_remote_candidate(RTCIceCandidateInit {
                candidate: candidate.to_owned(),
                ..Default::default()
            })
            .expect("remote candidate");
    }
}

/// A VP8 frame in one packet as a publisher sends it (payload type 96,
/// marker set), plaintext: a keyframe (640x360) or a delta frame.
pub(crate) fn vp8_packet(seq: u16, timestamp: u32, picture_id: u16, key: bool) -> Vec<u8> {
    vp8_packet_on(SSRC, seq, timestamp, picture_id, key, 0)
}

/// Like [`vp8_packet`] on stream `ssrc`, its 40 filler bytes all `tag`
/// (a test reads which stream a forwarded packet came from).
pub(crate) fn vp8_packet_on(
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    picture_id: u16,
    key: bool,
    tag: u8,
) -> Vec<u8> {
    let mut rtp = vec![0x80, 0xe0];
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&timestamp.to_be_bytes());
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    // Descriptor: X, S, I with a 15-bit picture id.
    let pid = 0x8000 | (picture_id & 0x7fff);
    rtp.extend_from_slice(&[0x90, 0x80]);
    rtp.extend_from_slice(&pid.to_be_bytes());
    if key {
        rtp.extend_from_slice(&[0x10, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        rtp.extend_from_slice(&[0x11, 0x2a, 0x00]);
    }
    rtp.extend_from_slice(&[tag; 40]);
    rtp
}

/// Decides whether a datagram on a link is lost (true drops it).
pub(crate) type LinkFilter = Box<dyn FnMut(&[u8]) -> bool>;

/// One client of the network.
pub(crate) struct Client {
    pub addr: SocketAddr,
    /// The worker whose core it talks to.
    pub worker: usize,
    pub pc: RTCPeerConnection,
    pub keys: Arc<KeyTap>,
    /// Whether its datagrams get through, both ways.
    pub up: bool,
    pub connected: bool,
    /// When the core last got a datagram from it.
    pub last_sent: Option<Instant>,
    /// RTP it received (decrypted by its `rtc` core), in order.
    pub rtp: Vec<rtc::rtp::packet::Packet>,
    /// RTCP packets it received (decrypted by the test).
    pub rtcp: Vec<Box<dyn rtc::rtcp::packet::Packet>>,
    /// Datagrams from the core dropped on the way to it while this says
    /// so (a lossy link): called with each, true drops it.
    pub drop_in: Option<LinkFilter>,
    /// The subscribe offers it got from the core, in order.
    pub offers: Vec<String>,
    /// Its SRTP context for sending (once connected).
    srtp_out: Option<SrtpContext>,
    /// Its own copy of the context for what it receives: `rtc` hands a
    /// sender's feedback (PLI, NACK) to no one when its RTP did not go
    /// through `rtc`'s sender, so the test reads RTCP itself.
    srtp_in: Option<SrtpContext>,
}

impl Client {
    /// Protects `packet` (plaintext RTCP if `rtcp`, else RTP) with this
    /// client's keys.
    fn protect(&mut self, packet: &[u8], rtcp: bool) -> BytesMut {
        let keys = &self.keys;
        let srtp = self
            .srtp_out
            .get_or_insert_with(|| keys.outgoing_context().expect("the client's SRTP keys"));
        if rtcp {
            srtp.encrypt_rtcp(packet).expect("protects RTCP")
        } else {
            srtp.encrypt_rtp(packet).expect("protects RTP")
        }
    }
}

/// The core (worker 0's), other workers' cores, the clients and the clock.
pub(crate) struct Net {
    pub core: MediaCore,
    /// Workers 1 and on (see [`Net::with_workers`]).
    pub more: Vec<MediaCore>,
    pub now: Instant,
    pub clients: Vec<Client>,
    /// Every event the core emitted, with the peer it went to.
    pub events: Arc<Mutex<Vec<(PeerId, MediaEvent)>>>,
}

impl Net {
    /// A core with the default configuration on an empty network.
    pub(crate) fn new() -> Net {
        let config = crate::config::Config::default();
        Self::with_config(&config)
    }

    /// A core configured by `config` on an empty network.
    pub(crate) fn with_config(config: &crate::config::Config) -> Net {
        Self::with_workers(config, 1)
    }

    /// `workers` cores configured by `config`, which hand each other the
    /// tracks they pipe at every step.
    pub(crate) fn with_workers(config: &crate::config::Config, workers: usize) -> Net {
        let now = Instant::now();
        let settings =
            crate::media::engine_settings(config, &["127.0.0.1".parse().expect("literal")]);
        Net {
            core: MediaCore::loopback(&settings, now),
            more: (1..workers)
                .map(|w| MediaCore::loopback_worker(&settings, w, now))
                .collect(),
            now,
            clients: Vec::new(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Worker `w`'s core.
    pub(crate) fn core_of(&mut self, w: usize) -> &mut MediaCore {
        match w {
            0 => &mut self.core,
            _ => &mut self.more[w - 1],
        }
    }

    /// Adds a client (publishing VP8 if `publish`); its index.
    pub(crate) fn add_client(&mut self, publish: bool) -> usize {
        self.add_client_on(publish, 0)
    }

    /// Adds a client of worker `worker`'s core; its index.
    pub(crate) fn add_client_on(&mut self, publish: bool, worker: usize) -> usize {
        let i = self.clients.len();
        let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
        let (pc, keys) = client(addr, publish, self.now);
        self.clients.push(Client {
            addr,
            worker,
            pc,
            keys,
            up: true,
            connected: false,
            last_sent: None,
            rtp: Vec::new(),
            rtcp: Vec::new(),
            drop_in: None,
            offers: Vec::new(),
            srtp_out: None,
            srtp_in: None,
        });
        i
    }

    fn sink(&self, peer: PeerId) -> EventSink {
        let events = self.events.clone();
        Arc::new(move |e| {
            if let Ok(mut v) = events.lock() {
                v.push((peer, e));
            }
        })
    }

    /// Client `i` publishes to the core as `peer`: its offer, the core's
    /// answer applied.
    pub(crate) fn publish(&mut self, i: usize, peer: PeerId) {
        self.publish_as(i, peer, str::to_owned);
    }

    /// Like [`Net::publish`], with the offer as `munge` rewrites it on its
    /// way to the core (as clients that edit their offers do).
    pub(crate) fn publish_as(&mut self, i: usize, peer: PeerId, munge: impl Fn(&str) -> String) {
        let now = self.now;
        let c = &mut self.clients[i];
        let offer = c.pc.create_offer(None).expect("offer");
        c.pc.set_local_description(now, offer.clone())
            .expect("local description");
        let (reply, mut answer) = oneshot::channel();
        let events = self.sink(peer);
        let w = self.clients[i].worker;
        self.core_of(w).handle_command(
            MediaCommand::Publish {
                peer,
                events,
                sdp: munge(&offer.sdp),
                screens: Vec::new(),
                reply,
            },
            now,
        );
        let answer = answer
            .try_recv()
            .expect("answered at once")
            .expect("the offer is answered");
        let c = &mut self.clients[i];
        c.pc.set_remote_description(
            now,
            RTCSessionDescription::answer(answer.sdp.clone()).expect("answer"),
        )
        .expect("remote description");
        add_candidates(&mut c.pc, &answer.sdp);
    }

    /// Client `i` subscribes as `peer` to `tracks`: the core's offer, the
    /// client's answer applied.
    pub(crate) fn subscribe(&mut self, i: usize, peer: PeerId, tracks: Vec<TrackInfo>) {
        self.subscribe_answering_after(i, peer, tracks, Duration::ZERO);
    }

    /// [`Net::subscribe`], with the client's answer reaching the core
    /// `delay` after the client applied it (its checks go out meanwhile).
    pub(crate) fn subscribe_answering_after(
        &mut self,
        i: usize,
        peer: PeerId,
        tracks: Vec<TrackInfo>,
        delay: Duration,
    ) {
        let now = self.now;
        let w = self.clients[i].worker;
        // What `MediaHandle::subscribe` does: tracks owned elsewhere piped
        // here first.
        for t in &tracks {
            if t.id.worker() == w {
                continue;
            }
            let (reply, mut spec) = oneshot::channel();
            self.core_of(t.id.worker()).handle_command(
                MediaCommand::Pipe {
                    track: t.id,
                    to: w,
                    reply,
                },
                now,
            );
            if let Some(spec) = spec.try_recv().expect("piped at once") {
                self.core_of(w)
                    .handle_command(MediaCommand::Mirror { spec }, now);
            }
        }
        let (reply, mut offer) = oneshot::channel();
        let events = self.sink(peer);
        self.core_of(w).handle_command(
            MediaCommand::Subscribe {
                peer,
                events,
                tracks,
                reply,
            },
            now,
        );
        let offer = offer
            .try_recv()
            .expect("offered at once")
            .expect("the subscription is offered")
            .expect("an offer");
        let c = &mut self.clients[i];
        c.pc.set_remote_description(
            now,
            RTCSessionDescription::offer(offer.sdp.clone()).expect("offer"),
        )
        .expect("remote description");
        add_candidates(&mut c.pc, &offer.sdp);
        c.offers.push(offer.sdp);
        let answer = c.pc.create_answer(None).expect("answer");
        c.pc.set_local_description(now, answer.clone())
            .expect("local description");
        self.run_for(delay);
        let now = self.now;
        let (reply, mut done) = oneshot::channel();
        self.core_of(w).handle_command(
            MediaCommand::SubscribeAnswer {
                peer,
                sdp: answer.sdp,
                reply,
            },
            now,
        );
        done.try_recv()
            .expect("applied at once")
            .expect("the answer is applied");
    }

    /// One step: every client's timers and datagrams, the core's timers,
    /// what the core sent delivered, then the clock moves by [`TICK`].
    pub(crate) fn step(&mut self) {
        let now = self.now;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.pc.poll_timeout().is_some_and(|at| at <= now) {
                let _ = c.pc.handle_timeout(now);
            }
            while let Some(d) = self.clients[i].pc.poll_write() {
                let c = &mut self.clients[i];
                if c.up {
                    let (w, addr) = (c.worker, c.addr);
                    c.last_sent = Some(now);
                    self.core_of(w).on_datagram(0, addr, &d.message, now, now);
                }
            }
        }
        for w in 0..=self.more.len() {
            let core = self.core_of(w);
            if core.poll_timeout() <= now {
                core.handle_timeout(now);
            }
        }
        self.deliver();
        self.now += TICK;
    }

    /// What the cores sent each other (piped tracks), handed over as the
    /// drivers do at the end of a turn.
    fn exchange(&mut self) {
        let now = self.now;
        loop {
            let mut batches = Vec::new();
            for w in 0..=self.more.len() {
                let out = std::mem::take(&mut self.core_of(w).pipe_out);
                batches.extend(out.into_iter().map(|(to, msg)| (w, to, msg)));
            }
            if batches.is_empty() {
                return;
            }
            for (from, to, msg) in batches {
                if to <= self.more.len() {
                    self.core_of(to).handle_pipe(from, vec![msg], now);
                }
            }
        }
    }

    /// What the cores sent, to the clients it was sent to.
    fn deliver(&mut self) {
        self.exchange();
        for w in 0..=self.more.len() {
            self.deliver_from(w);
        }
    }

    /// What worker `w`'s core sent, to the clients it was sent to.
    fn deliver_from(&mut self, w: usize) {
        let now = self.now;
        let core = self.core_of(w);
        let server = core.local_addrs[0].addr;
        for (to, message) in core.out.take() {
            let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else {
                continue;
            };
            if !c.up || c.drop_in.as_mut().is_some_and(|drop| drop(&message)) {
                continue;
            }
            if c.connected && message.len() > 8 && (192..=223).contains(&message[1]) {
                let keys = &c.keys;
                let srtp = c.srtp_in.get_or_insert_with(|| {
                    keys.incoming_context().expect("the client's SRTP keys")
                });
                if let Ok(plain) = srtp.decrypt_rtcp(&message) {
                    let mut buf = &plain[..];
                    if let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) {
                        c.rtcp.extend(packets);
                    }
                }
            }
            let _ = c.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: c.addr,
                    peer_addr: server,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message,
            });
            while let Some(ev) = c.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
                    c.connected |= state == RTCPeerConnectionState::Connected;
                }
            }
            while let Some(m) = c.pc.poll_read() {
                if let RTCMessage::RtpPacket(_, packet) = m.message {
                    c.rtp.push(packet);
                }
            }
        }
    }

    /// Steps for `span` of simulated time.
    pub(crate) fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            self.step();
        }
    }

    /// Steps until `done` holds, for at most `span` of simulated time;
    /// whether it did.
    pub(crate) fn run_until(&mut self, span: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let end = self.now + span;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Client `i` sends `rtp` (plaintext) to the core, protected with its
    /// own keys, then the core's answers are delivered.
    pub(crate) fn send_rtp(&mut self, i: usize, rtp: &[u8]) {
        let datagram = self.clients[i].protect(rtp, false);
        self.send(i, &datagram);
    }

    /// Client `i`'s `rtp` (plaintext) protected with its keys, unsent.
    pub(crate) fn protect(&mut self, i: usize, rtp: &[u8]) -> BytesMut {
        self.clients[i].protect(rtp, false)
    }

    /// Client `i` sends `rtcp` (plaintext, one compound packet) to the core.
    pub(crate) fn send_rtcp(&mut self, i: usize, rtcp: &[u8]) {
        let datagram = self.clients[i].protect(rtcp, true);
        self.send(i, &datagram);
    }

    /// Client `i`'s `datagram` reaches the core if its link is up; then
    /// the core's answers are delivered.
    fn send(&mut self, i: usize, datagram: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.up {
            let (w, addr) = (c.worker, c.addr);
            c.last_sent = Some(now);
            self.core_of(w).on_datagram(0, addr, datagram, now, now);
        }
        self.deliver();
    }

    /// The events emitted so far.
    pub(crate) fn events(&self) -> Vec<(PeerId, MediaEvent)> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
