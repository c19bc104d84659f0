//! The floor: the least a forwarder must do per packet on this machine, for
//! the same packets the load generator publishes: SRTP-protect them with the
//! cipher sfud negotiates (AES-128-GCM, through the `rtc` crate's own SRTP
//! code) and hand each datagram to the kernel for a loopback UDP socket.
//!
//! Variants: protection alone; protect and `send` each packet; protect a
//! batch and send it with one `sendmmsg`; protect a batch into one buffer and
//! send it as one UDP GSO (`UDP_SEGMENT`) super-datagram, as a forwarder
//! can for one subscriber's share of a video frame. CPU time is this thread's
//! user + system time (`getrusage(RUSAGE_THREAD)`), which on loopback also
//! counts the kernel's delivery to the receiving socket.

use crate::LoadError;
use bytes::BytesMut;
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::{sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use rtc::rtp;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::IoSlice;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// One variant's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorVariant {
    /// `protect only`, `protect + send`, `protect + sendmmsg`, `protect + GSO`.
    pub name: String,
    /// Packets processed.
    pub packets: u64,
    /// Packets the kernel refused (a full buffer, for example).
    pub send_errors: u64,
    /// CPU microseconds (user + system) per packet.
    pub cpu_us_per_packet: f64,
    /// Wall-clock microseconds per packet.
    pub wall_us_per_packet: f64,
}

/// Every variant, for one packet size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorReport {
    /// SRTP protection profile.
    pub cipher: String,
    /// RTP payload bytes.
    pub payload_bytes: usize,
    /// Bytes of each protected datagram.
    pub datagram_bytes: usize,
    /// Packets per batch in the batched variants.
    pub batch: usize,
    /// The variants, in the order run.
    pub variants: Vec<FloorVariant>,
}

impl FloorReport {
    /// The cheapest variant that sends (the floor figure).
    pub fn best(&self) -> Option<&FloorVariant> {
        self.variants
            .iter()
            .filter(|v| v.name != PROTECT_ONLY)
            .min_by(|a, b| a.cpu_us_per_packet.total_cmp(&b.cpu_us_per_packet))
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "floor: {} on {}-byte payloads ({}-byte datagrams), batches of {}",
            self.cipher, self.payload_bytes, self.datagram_bytes, self.batch
        );
        for v in &self.variants {
            let _ = writeln!(
                s,
                "  {:<20} {:>6.3} us CPU/packet  {:>6.3} us wall/packet  ({} packets, {} send errors)",
                v.name, v.cpu_us_per_packet, v.wall_us_per_packet, v.packets, v.send_errors
            );
        }
        s
    }
}

const PROTECT_ONLY: &str = "protect only";

/// Runs every variant on `packets` packets.
pub fn measure(packets: u64, payload_bytes: usize, batch: usize) -> Result<FloorReport, LoadError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source: std::io::Error| LoadError::Io { what, source }
    };
    let batch = batch.clamp(1, 64);
    let sink = UdpSocket::bind("127.0.0.1:0").map_err(io("binding the receiving socket"))?;
    let sink_addr = sink
        .local_addr()
        .map_err(io("reading the receiving address"))?;
    let sender = UdpSocket::bind("127.0.0.1:0").map_err(io("binding the sending socket"))?;
    sender
        .connect(sink_addr)
        .map_err(io("connecting the sending socket"))?;
    let std::net::SocketAddr::V4(v4) = sink_addr else {
        return Err(LoadError::Io {
            what: "the receiving socket is not IPv4".into(),
            source: std::io::Error::other("unexpected address family"),
        });
    };
    let dest = SockaddrIn::from(v4);
    let mut source = PacketSource::new(payload_bytes)?;
    let datagram_bytes = source.protect()?.len();
    // Nobody reads the receiving socket: the kernel drops what its buffer
    // cannot hold, after the sender paid for the delivery.
    let mut variants = Vec::new();

    variants.push(timed(PROTECT_ONLY, packets, |_| {
        let p = source.protect()?;
        std::hint::black_box(&p);
        Ok(0)
    })?);

    variants.push(timed("protect + send", packets, |_| {
        let p = source.protect()?;
        Ok(u64::from(sender.send(&p).is_err()))
    })?);

    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let addrs = vec![Some(dest); batch];
    variants.push(
        timed("protect + sendmmsg", packets / batch as u64, |_| {
            let protected: Vec<BytesMut> = (0..batch)
                .map(|_| source.protect())
                .collect::<Result<_, _>>()?;
            let iovs: Vec<[IoSlice<'_>; 1]> = protected.iter().map(|p| [IoSlice::new(p)]).collect();
            let sent = sendmmsg(
                sender.as_raw_fd(),
                &mut headers,
                &iovs,
                &addrs,
                [],
                MsgFlags::empty(),
            )
            .map(|r| r.count() as u64)
            .unwrap_or(0);
            Ok(batch as u64 - sent.min(batch as u64))
        })?
        .per_packets(batch as u64),
    );

    let mut super_datagram = Vec::with_capacity(batch * datagram_bytes);
    let segment = u16::try_from(datagram_bytes).unwrap_or(u16::MAX);
    variants.push(
        timed("protect + GSO", packets / batch as u64, |_| {
            super_datagram.clear();
            for _ in 0..batch {
                super_datagram.extend_from_slice(&source.protect()?);
            }
            let r = sendmsg(
                sender.as_raw_fd(),
                &[IoSlice::new(&super_datagram)],
                &[ControlMessage::UdpGsoSegments(&segment)],
                MsgFlags::empty(),
                None::<&SockaddrIn>,
            );
            Ok(if r.is_ok() { 0 } else { batch as u64 })
        })?
        .per_packets(batch as u64),
    );

    drop(sink);
    Ok(FloorReport {
        cipher: "SRTP AEAD_AES_128_GCM".into(),
        payload_bytes,
        datagram_bytes,
        batch,
        variants,
    })
}

impl FloorVariant {
    /// Turns a per-iteration measurement into a per-packet one.
    fn per_packets(mut self, per_iteration: u64) -> FloorVariant {
        let n = per_iteration as f64;
        self.packets *= per_iteration;
        self.cpu_us_per_packet /= n;
        self.wall_us_per_packet /= n;
        self
    }
}

/// Runs `step` `iterations` times; each returns how many sends failed.
fn timed(
    name: &str,
    iterations: u64,
    mut step: impl FnMut(u64) -> Result<u64, LoadError>,
) -> Result<FloorVariant, LoadError> {
    // Warm caches and the cipher first.
    for i in 0..iterations.min(1000) {
        step(i)?;
    }
    let cpu_before = thread_cpu_s();
    let wall = Instant::now();
    let mut errors = 0;
    for i in 0..iterations {
        errors += step(i)?;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = thread_cpu_s() - cpu_before;
    let n = iterations.max(1) as f64;
    Ok(FloorVariant {
        name: name.to_owned(),
        packets: iterations,
        send_errors: errors,
        cpu_us_per_packet: cpu_s * 1e6 / n,
        wall_us_per_packet: wall_s * 1e6 / n,
    })
}

fn thread_cpu_s() -> f64 {
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// Plain RTP packets of one stream, protected one after the other.
struct PacketSource {
    context: Context,
    header: rtp::Header,
    plain: Vec<u8>,
}

impl PacketSource {
    fn new(payload_bytes: usize) -> Result<PacketSource, LoadError> {
        let crypto_err = |e: &dyn std::fmt::Display| LoadError::Io {
            what: "setting up SRTP".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let provider = rtc::crypto::default_provider().map_err(|e| crypto_err(&e))?;
        let profile = ProtectionProfile::AeadAes128Gcm;
        let key: Vec<u8> = (0..profile.key_len()).map(|_| rand::random()).collect();
        let salt: Vec<u8> = (0..profile.salt_len()).map(|_| rand::random()).collect();
        let context = Context::new(&key, &salt, profile, None, None, provider.crypto())
            .map_err(|e| crypto_err(&e))?;
        let header = rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: 1,
            timestamp: 90_000,
            ssrc: 0x1234_5678,
            ..Default::default()
        };
        let packet = rtp::Packet {
            header: header.clone(),
            payload: vec![0x5a; payload_bytes].into(),
        };
        use rtc::shared::marshal::Marshal;
        let plain = packet.marshal().map_err(|e| crypto_err(&e))?.to_vec();
        Ok(PacketSource {
            context,
            header,
            plain,
        })
    }

    /// The next packet (sequence number advanced), protected.
    fn protect(&mut self) -> Result<BytesMut, LoadError> {
        self.header.sequence_number = self.header.sequence_number.wrapping_add(1);
        self.plain[2..4].copy_from_slice(&self.header.sequence_number.to_be_bytes());
        self.context
            .encrypt_rtp_with_header(&self.plain, &self.header)
            .map_err(|e| LoadError::Io {
                what: "SRTP protection".into(),
                source: std::io::Error::other(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_packets_carry_header_payload_and_tag() {
        let mut source = PacketSource::new(1100).expect("srtp context");
        let a = source.protect().expect("protects");
        let b = source.protect().expect("protects");
        // 12-byte header + payload + 16-byte GCM tag.
        assert_eq!(a.len(), 12 + 1100 + 16);
        assert_ne!(a[2..4], b[2..4], "sequence numbers advance");
    }

    #[test]
    fn every_variant_reports_per_packet_costs() {
        let report = measure(200, 1100, 4).expect("floor runs on loopback");
        assert_eq!(report.variants.len(), 4);
        assert!(report.best().is_some());
        for v in &report.variants {
            assert!(v.packets > 0, "{v:?}");
        }
    }
}
