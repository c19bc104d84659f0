//! Datagrams in, each with the time the kernel received it.
//!
//! Publishers estimate their uplink from the arrival times sfud reports in
//! transport-wide congestion control feedback. Those times must be when a
//! packet reached the host, not when the media loop got round to it: the
//! loop is one thread, and while it negotiates a connection or allocates
//! layers (milliseconds in a debug build, on a busy machine longer), packets
//! wait in the socket. Stamped when read, the first packets after such a
//! stall look as if they arrived together and the ones before it as if they
//! trickled in. Chromium's start-of-call probes fall exactly there: it read
//! a 900 kbit/s probe as 190 kbit/s (70 ms to receive 16 ms of sending) and
//! threw away a 1.8 Mbit/s one as 7 Mbit/s (3 ms), then ramped additively
//! from 300 kbit/s for 20 s. So every socket asks for `SO_TIMESTAMPNS` and
//! each datagram carries the kernel's receive time, mapped onto `Instant`.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Room for one `SCM_TIMESTAMPNS` control message.
pub(crate) const CMSG_BYTES: usize = 64;

/// One datagram read: its length in the buffer, its sender and when the
/// kernel received it (on the realtime clock), if it said.
pub(crate) struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub stamp: Option<TimeSpec>,
}

/// Asks the kernel to stamp each datagram `socket` receives. Without it
/// (an old kernel) datagrams are stamped when read.
pub(crate) fn enable_timestamps(socket: &UdpSocket) {
    if let Err(e) = setsockopt(socket, sockopt::ReceiveTimestampns, &true) {
        tracing::warn!(error = %e, "no kernel receive timestamps: arrival times are read times");
    }
}

/// Send and receive buffer asked for on each media socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Gives `socket` [`SOCKET_BUFFER`] bytes each way: a keyframe fanned out to
/// hundreds of subscribers leaves in one turn, and what waits in the
/// host's queues for a slow link counts against the socket's send buffer
/// (with the kernel's default of 208 KiB, one subscriber's full queue
/// stopped every send, STUN answers to publishers included). Root (or
/// CAP_NET_ADMIN) gets it whatever the limits; others get up to
/// `net.core.wmem_max` and `rmem_max` (docs/operations.md).
pub(crate) fn size_buffers(socket: &UdpSocket) {
    let send = setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER));
    let receive = setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER));
    if let Err(e) = send.and(receive) {
        tracing::warn!(error = %e, "cannot size the media socket's buffers");
    }
    let sizes = (
        nix::sys::socket::getsockopt(socket, sockopt::SndBuf),
        nix::sys::socket::getsockopt(socket, sockopt::RcvBuf),
    );
    if let (Ok(send), Ok(receive)) = sizes {
        tracing::debug!(send, receive, "media socket buffers");
    }
}

/// Reads one datagram without waiting: `WouldBlock` when none is queued.
pub(crate) fn try_recv(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8; CMSG_BYTES],
) -> io::Result<Received> {
    socket.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg[..]),
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let from = msg
            .address
            .and_then(|a| to_socket_addr(&a))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no sender address"))?;
        let mut stamp = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    stamp = Some(ts);
                }
            }
        }
        Ok(Received {
            len: msg.bytes,
            from,
            stamp,
        })
    })
}

/// Polls every socket once for a datagram; registers for wakeup on all
/// that have none. Returns the socket's index with what was read.
pub(crate) fn poll_recv_any(
    cx: &mut Context<'_>,
    sockets: &[UdpSocket],
    buf: &mut [u8],
    cmsg: &mut [u8; CMSG_BYTES],
) -> Poll<io::Result<(usize, Received)>> {
    for (i, s) in sockets.iter().enumerate() {
        loop {
            match s.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => match try_recv(s, buf, cmsg) {
                    Ok(r) => return Poll::Ready(Ok((i, r))),
                    // Readiness was stale and is now cleared: poll again
                    // so that the waker is registered.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
    }
    Poll::Pending
}

/// A fresh control-message buffer for [`try_recv`].
pub(crate) fn cmsg_buffer() -> [u8; CMSG_BYTES] {
    [0; CMSG_BYTES]
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// Maps kernel receive stamps (realtime clock) onto the monotonic clock
/// the engine runs on, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArrivalClock {
    mono: Instant,
    real_ns: i128,
}

/// A stamp this far from the read time is not believed (the realtime clock
/// was stepped): the datagram is stamped when read.
const MAX_AGE: Duration = Duration::from_secs(1);

impl ArrivalClock {
    /// Reads both clocks now.
    pub(crate) fn now() -> ArrivalClock {
        let mono = Instant::now();
        let real_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        ArrivalClock { mono, real_ns }
    }

    /// When a datagram stamped `stamp` arrived, on the monotonic clock;
    /// `read` (when it was read) if it has no believable stamp. Never later
    /// than `read`.
    pub(crate) fn arrival(&self, stamp: Option<TimeSpec>, read: Instant) -> Instant {
        let Some(ts) = stamp else {
            return read;
        };
        let stamp_ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
        let offset_ns = stamp_ns - self.real_ns;
        let at = if offset_ns >= 0 {
            self.mono.checked_add(Duration::from_nanos(
                offset_ns.min(i128::from(u32::MAX)) as u64
            ))
        } else {
            self.mono.checked_sub(Duration::from_nanos(
                (-offset_ns).min(i128::from(u32::MAX)) as u64
            ))
        };
        // Not later than the read, nor older than MAX_AGE before it.
        at.filter(|at| *at <= read && read.duration_since(*at) <= MAX_AGE)
            .unwrap_or(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_at(clock: &ArrivalClock, offset_ms: i64) -> TimeSpec {
        let ns = clock.real_ns + i128::from(offset_ms) * 1_000_000;
        TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64)
    }

    #[test]
    fn stamps_map_onto_the_monotonic_clock() {
        let clock = ArrivalClock::now();
        let read = clock.mono + Duration::from_millis(50);
        assert_eq!(
            clock.arrival(Some(stamp_at(&clock, -20)), read),
            clock.mono - Duration::from_millis(20)
        );
        assert_eq!(
            clock.arrival(Some(stamp_at(&clock, 30)), read),
            clock.mono + Duration::from_millis(30)
        );
    }

    #[test]
    fn missing_future_or_stale_stamps_fall_back_to_the_read_time() {
        let clock = ArrivalClock::now();
        let read = clock.mono + Duration::from_millis(5);
        assert_eq!(clock.arrival(None, read), read);
        assert_eq!(clock.arrival(Some(stamp_at(&clock, 60)), read), read);
        assert_eq!(clock.arrival(Some(stamp_at(&clock, -5_000)), read), read);
    }

    #[tokio::test]
    async fn a_datagram_read_late_keeps_its_kernel_arrival_time() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        enable_timestamps(&rx);
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut buf = [0u8; 64];
        let mut cmsg = cmsg_buffer();
        // The kernel turns receive stamping on asynchronously (a static key
        // flipped from a work queue); until then it stamps at read time. A
        // long-running daemon never sees that, a test's first datagrams may.
        let mut late = Vec::new();
        for _ in 0..10 {
            tx.send_to(b"early", rx.local_addr().expect("addr"))
                .await
                .expect("send");
            // The loop is busy: the datagram waits in the socket.
            std::thread::sleep(Duration::from_millis(30));
            rx.readable().await.expect("readable");
            let r = try_recv(&rx, &mut buf, &mut cmsg).expect("read");
            assert_eq!(&buf[..r.len], b"early");
            assert_eq!(r.from, tx.local_addr().expect("addr"));
            let read = Instant::now();
            let before = read.duration_since(ArrivalClock::now().arrival(r.stamp, read));
            if before >= Duration::from_millis(25) {
                return;
            }
            late.push(before);
        }
        panic!("every datagram stamped when read, not when received: {late:?}");
    }
}
