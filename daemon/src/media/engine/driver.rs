//! The media loop: the thin driver around [`MediaCore`]. It owns the UDP
//! sockets and the command channel, reads datagrams in batches (with the
//! kernel's receive timestamps), hands them, the rooms' commands and the
//! time to the core, and sends what the core produced at the end of each
//! turn (UDP GSO runs, see `batch`). Nothing else happens here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{MediaCore, MediaSettings, MAX_DATAGRAM};
use crate::media::batch::HIGH_WATER;
use crate::media::peer::Announced;
use crate::media::recv::{self, ArrivalClock};
use crate::media::{MediaCommand, MediaHandle};

/// Datagrams read per wake-up before commands and timers get a turn.
const READ_BATCH: usize = 128;

/// The media task: the core, its sockets and its commands.
pub struct MediaEngine {
    core: MediaCore,
    sockets: Vec<UdpSocket>,
    rx: mpsc::Receiver<MediaCommand>,
}

impl MediaEngine {
    /// Binds the UDP sockets; the engine runs with [`MediaEngine::run`].
    pub fn bind(settings: &MediaSettings) -> std::io::Result<(MediaEngine, MediaHandle)> {
        let mut sockets = Vec::new();
        let mut announced = Vec::new();
        let mut port = settings.port;
        for (ip, public) in &settings.bind {
            let std_socket =
                std::net::UdpSocket::bind(SocketAddr::new(*ip, port)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot bind UDP {}: {e}", SocketAddr::new(*ip, port)),
                    )
                })?;
            std_socket.set_nonblocking(true)?;
            let socket = UdpSocket::from_std(std_socket)?;
            recv::enable_timestamps(&socket);
            recv::size_buffers(&socket);
            let bound = socket.local_addr()?;
            // With port 0, every address shares the first one's port where it can.
            port = bound.port();
            announced.push(Announced {
                bound,
                public: *public,
            });
            sockets.push(socket);
        }
        let local_addrs: Vec<SocketAddr> = announced.iter().map(|a| a.bound).collect();
        let (tx, rx) = mpsc::channel(1024);
        let handle = MediaHandle {
            tx,
            local_addrs: std::sync::Arc::new(local_addrs),
        };
        let engine = MediaEngine {
            core: MediaCore::new(settings, announced, Instant::now()),
            sockets,
            rx,
        };
        Ok((engine, handle))
    }

    /// Runs until `shutdown` turns true or every handle is dropped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = recv::cmsg_buffer();
        // One timer entry, moved only when the core's next deadline does.
        let mut deadline = self.core.poll_timeout();
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        loop {
            // When this turn read its first datagram, and the forwarded count then.
            let mut turn = None;
            let next = self.core.poll_timeout();
            if next != deadline {
                deadline = next;
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                r = recv_any(&self.sockets, &mut buf, &mut cmsg) => {
                    match r {
                        Ok((sock, got)) => {
                            let now = Instant::now();
                            let clock = ArrivalClock::now();
                            turn = Some((now, self.core.stats.rtp_forwarded));
                            let arrived = clock.arrival(got.stamp, now);
                            self.core.on_datagram(sock, got.from, &buf[..got.len], arrived, now);
                            self.read_more(&mut buf, &mut cmsg, &clock);
                        }
                        Err(e) => warn!(error = %e, "UDP receive failed"),
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.core.handle_command(cmd, Instant::now()),
                    None => break,
                },
                _ = &mut timer => {
                    self.core.handle_timeout(Instant::now());
                    // Armed again at the next turn, even for the same deadline.
                    deadline = Instant::now() + Duration::from_secs(3600);
                    timer.as_mut().reset(deadline.into());
                }
                () = shutdown.cancelled() => break,
            }
            self.send();
            if let Some((started, forwarded_before)) = turn {
                let stats = &mut self.core.stats;
                let forwarded = stats.rtp_forwarded - forwarded_before;
                stats.forward_delay.record(started.elapsed(), forwarded);
            }
        }
        self.core.close_all();
        self.send();
    }

    /// Sends what the core produced.
    fn send(&mut self) {
        let core = &mut self.core;
        core.out.send(&self.sockets, &mut core.stats);
    }

    /// Drains what else is already queued on the sockets, up to a batch.
    fn read_more(
        &mut self,
        buf: &mut [u8],
        cmsg: &mut [u8; recv::CMSG_BYTES],
        clock: &ArrivalClock,
    ) {
        for _ in 0..READ_BATCH {
            let mut got = false;
            for sock in 0..self.sockets.len() {
                match recv::try_recv(&self.sockets[sock], buf, cmsg) {
                    Ok(r) => {
                        got = true;
                        // Each datagram's own arrival time: the TWCC feedback
                        // publishers estimate their bandwidth from reports it.
                        let now = Instant::now();
                        let arrived = clock.arrival(r.stamp, now);
                        self.core
                            .on_datagram(sock, r.from, &buf[..r.len], arrived, now);
                        if self.core.out.len() >= HIGH_WATER {
                            self.send();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => debug!(error = %e, "UDP receive failed"),
                }
            }
            if !got {
                break;
            }
        }
    }
}

/// Waits for a datagram on any of the sockets.
async fn recv_any(
    sockets: &[UdpSocket],
    buf: &mut [u8],
    cmsg: &mut [u8; recv::CMSG_BYTES],
) -> std::io::Result<(usize, recv::Received)> {
    if sockets.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| recv::poll_recv_any(cx, sockets, buf, cmsg)).await
}
