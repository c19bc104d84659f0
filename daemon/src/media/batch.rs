//! Outgoing datagrams of one loop turn, sent together: consecutive
//! same-size datagrams to one destination (a subscriber's share of a video
//! frame) leave in one `sendmsg` with UDP GSO (`UDP_SEGMENT`), so the kernel
//! walks its send path once per run instead of once per packet.
//!
//! Nothing waits: a socket that would block drops and counts, as a single
//! send did. Where the kernel refuses GSO, the batch falls back to one send
//! per datagram for the rest of the process's life.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use tokio::net::UdpSocket;

use super::engine::MediaStats;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send (an IP datagram's payload).
const MAX_GSO_BYTES: usize = 65_000;
/// Datagrams held before a turn must send what it has.
pub(crate) const HIGH_WATER: usize = 4096;

struct Queued {
    sock: usize,
    to: SocketAddr,
    data: BytesMut,
}

/// Datagrams queued during one turn of the media loop.
#[derive(Default)]
pub(crate) struct SendBatch {
    queued: Vec<Queued>,
    gso_broken: bool,
}

impl SendBatch {
    /// Queues one datagram for socket `sock`.
    pub(crate) fn push(&mut self, sock: usize, to: SocketAddr, data: BytesMut) {
        self.queued.push(Queued { sock, to, data });
    }

    /// Takes the datagrams queued for socket `first` or a later one (ICE-TCP
    /// connections, sent elsewhere), in order; the rest stay.
    pub(crate) fn take_from(&mut self, first: usize) -> Vec<(usize, SocketAddr, BytesMut)> {
        if !self.queued.iter().any(|q| q.sock >= first) {
            return Vec::new();
        }
        let (later, udp): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(|q| q.sock >= first);
        self.queued = udp;
        later.into_iter().map(|q| (q.sock, q.to, q.data)).collect()
    }

    /// Drops what is queued, keeping the buffer: for the core's benchmark,
    /// in place of a send.
    #[cfg(test)]
    pub(crate) fn discard(&mut self) {
        self.queued.clear();
    }

    /// Takes what is queued, unsent: for the fuzz targets, whose client
    /// reads it in memory.
    #[cfg(test)]
    pub(crate) fn take(&mut self) -> Vec<(SocketAddr, BytesMut)> {
        std::mem::take(&mut self.queued)
            .into_iter()
            .map(|q| (q.to, q.data))
            .collect()
    }

    /// Datagrams queued.
    pub(crate) fn len(&self) -> usize {
        self.queued.len()
    }

    /// Sends everything queued, grouped by destination (order kept within
    /// each destination).
    pub(crate) fn send(&mut self, sockets: &[UdpSocket], stats: &mut MediaStats) {
        if self.queued.is_empty() {
            return;
        }
        let mut queued = std::mem::take(&mut self.queued);
        queued.sort_by_key(|q| (q.sock, q.to));
        let mut start = 0;
        while start < queued.len() {
            let run = self.run_length(&queued[start..]);
            let group = &queued[start..start + run];
            start += run;
            let Some(socket) = sockets.get(group[0].sock) else {
                stats.dropped_send += run as u64;
                continue;
            };
            let mut gso_error = None;
            if run > 1 {
                match self.send_gso(socket, group) {
                    Ok(()) => {
                        stats.datagrams_out += run as u64;
                        stats.bytes_out += group.iter().map(|q| q.data.len() as u64).sum::<u64>();
                        continue;
                    }
                    Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => gso_error = Some(e),
                }
            }
            let mut any_sent = false;
            for q in group {
                match socket.try_send_to(&q.data, q.to) {
                    Ok(n) => {
                        any_sent = true;
                        stats.datagrams_out += 1;
                        stats.bytes_out += n as u64;
                    }
                    Err(_) => stats.dropped_send += 1,
                }
            }
            // Only when single sends to the same destination went is GSO
            // itself at fault; an unreachable destination (a route gone, a
            // firewall) refuses both and must not cost everyone batching.
            if let (Some(e), true) = (gso_error, any_sent) {
                tracing::info!(error = %e, "UDP GSO unavailable; sending one datagram per call");
                self.gso_broken = true;
            }
        }
        queued.clear();
        // Keep the allocation for the next turn.
        self.queued = queued;
    }

    /// How many datagrams from the start of `rest` can leave as one GSO
    /// send: same socket and destination, equal sizes (the last may be
    /// shorter), within the kernel's limits.
    fn run_length(&self, rest: &[Queued]) -> usize {
        let first = &rest[0];
        let size = first.data.len();
        if self.gso_broken || size == 0 {
            return 1;
        }
        let mut n = 1;
        let mut bytes = size;
        while n < rest.len() && n < MAX_SEGMENTS {
            let q = &rest[n];
            let len = q.data.len();
            if q.sock != first.sock || q.to != first.to || len > size || bytes + len > MAX_GSO_BYTES
            {
                break;
            }
            n += 1;
            bytes += len;
            if len < size {
                // A shorter datagram can only end a run.
                break;
            }
        }
        n
    }

    /// One `sendmsg` with `UDP_SEGMENT`; on an error the caller sends one
    /// by one.
    fn send_gso(&self, socket: &UdpSocket, group: &[Queued]) -> Result<(), nix::errno::Errno> {
        let Ok(segment) = u16::try_from(group[0].data.len()) else {
            return Err(nix::errno::Errno::EMSGSIZE);
        };
        let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
        for (slot, q) in iov.iter_mut().zip(group) {
            *slot = IoSlice::new(&q.data);
        }
        let iov = &iov[..group.len().min(MAX_SEGMENTS)];
        let to = SockaddrStorage::from(group[0].to);
        sendmsg(
            socket.as_raw_fd(),
            iov,
            &[ControlMessage::UdpGsoSegments(&segment)],
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: &[(u16, usize)]) -> SendBatch {
        let mut b = SendBatch::default();
        for (port, len) in items {
            b.push(
                0,
                SocketAddr::from(([127, 0, 0, 1], *port)),
                BytesMut::from(&vec![0u8; *len][..]),
            );
        }
        b
    }

    #[test]
    fn runs_are_per_destination_with_equal_sizes_and_a_shorter_tail() {
        let b = batch(&[(1, 100), (1, 100), (1, 60), (1, 100)]);
        assert_eq!(b.run_length(&b.queued), 3);
        let b = batch(&[(1, 100), (2, 100)]);
        assert_eq!(b.run_length(&b.queued), 1);
        let b = batch(&[(1, 100), (1, 120)]);
        assert_eq!(b.run_length(&b.queued), 1);
        let many: Vec<(u16, usize)> = (0..100).map(|_| (1, 1000)).collect();
        let b = batch(&many);
        assert_eq!(b.run_length(&b.queued), 64);
    }

    #[tokio::test]
    async fn every_datagram_arrives_in_order_per_destination() {
        let rx_a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx_b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (a, b) = (
            rx_a.local_addr().expect("addr"),
            rx_b.local_addr().expect("addr"),
        );
        let mut batch = SendBatch::default();
        for i in 0u8..5 {
            batch.push(0, a, BytesMut::from(&[i; 300][..]));
            batch.push(0, b, BytesMut::from(&[i; 300][..]));
        }
        batch.push(0, a, BytesMut::from(&[9u8; 20][..]));
        let mut stats = MediaStats::default();
        batch.send(&[tx], &mut stats);
        assert_eq!((stats.datagrams_out, stats.dropped_send), (11, 0));
        assert_eq!(batch.len(), 0);
        let mut buf = [0u8; 2048];
        for i in 0u8..5 {
            let n = rx_a.recv(&mut buf).expect("datagram for a");
            assert_eq!((n, buf[0]), (300, i), "segment {i} to a");
            let n = rx_b.recv(&mut buf).expect("datagram for b");
            assert_eq!((n, buf[0]), (300, i), "segment {i} to b");
        }
        let n = rx_a.recv(&mut buf).expect("the shorter tail");
        assert_eq!((n, buf[0]), (20, 9));
    }

    #[test]
    fn datagrams_for_ice_tcp_are_taken_out_in_order_and_the_rest_stay() {
        let mut b = SendBatch::default();
        let to = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for (sock, port) in [(0, 1), (2, 2), (1, 3), (2, 4)] {
            b.push(sock, to(port), BytesMut::from(&[port as u8][..]));
        }
        let tcp = b.take_from(2);
        let ports: Vec<u16> = tcp.iter().map(|(_, to, _)| to.port()).collect();
        assert_eq!(ports, [2, 4]);
        assert_eq!(b.len(), 2);
        assert!(b.take_from(2).is_empty());
    }
}
