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
use tracing::{debug, error, warn};

use super::tcp::TcpMedia;
use super::{MediaCore, MediaSettings, MAX_DATAGRAM};
use crate::media::batch::HIGH_WATER;
use crate::media::peer::Announced;
use crate::media::recv::{self, ArrivalClock};
use crate::media::{MediaCommand, MediaHandle, WorkerTx};

/// Datagrams read per wake-up before commands and timers get a turn.
const READ_BATCH: usize = 128;

/// The media workers, bound and not yet running.
pub struct MediaEngine {
    workers: Vec<Worker>,
    settings: MediaSettings,
}

/// One worker's sockets (bound, not yet registered with a runtime) and
/// commands.
struct Worker {
    index: usize,
    sockets: Vec<std::net::UdpSocket>,
    /// ICE-TCP listeners (their socket indices follow the UDP sockets').
    listeners: Vec<std::net::TcpListener>,
    announced: Vec<Announced>,
    rx: mpsc::Receiver<MediaCommand>,
    /// Every worker's commands, where piped tracks' messages go (weak, so
    /// that the workers stop when the rooms' handles are dropped).
    others: Vec<mpsc::WeakSender<MediaCommand>>,
}

/// A running worker: its core, its sockets and its commands.
struct Loop {
    index: usize,
    core: MediaCore,
    sockets: Vec<UdpSocket>,
    tcp: TcpMedia,
    rx: mpsc::Receiver<MediaCommand>,
    others: Vec<mpsc::WeakSender<MediaCommand>>,
}

impl MediaEngine {
    /// Binds every worker's UDP sockets (worker `i` on `settings.port + i`,
    /// or any free port); the workers run with [`MediaEngine::run`].
    pub fn bind(settings: &MediaSettings) -> std::io::Result<(MediaEngine, MediaHandle)> {
        let mut workers = Vec::new();
        let mut handles = Vec::new();
        for index in 0..settings.workers.max(1) {
            let first = if settings.port == 0 {
                0
            } else {
                u16::try_from(usize::from(settings.port) + index).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the workers' UDP ports run past 65535",
                    )
                })?
            };
            let (sockets, listeners, announced) = bind_worker(settings, first, index)?;
            let (tx, rx) = mpsc::channel(1024);
            handles.push(WorkerTx {
                tx,
                local_addrs: announced
                    .iter()
                    .filter(|a| !a.tcp)
                    .map(|a| a.bound)
                    .collect(),
                tcp_addrs: announced
                    .iter()
                    .filter(|a| a.tcp)
                    .map(|a| a.bound)
                    .collect(),
            });
            workers.push(Worker {
                index,
                sockets,
                listeners,
                announced,
                rx,
                others: Vec::new(),
            });
        }
        let others: Vec<_> = handles.iter().map(|h| h.tx.downgrade()).collect();
        for w in &mut workers {
            w.others.clone_from(&others);
        }
        let engine = MediaEngine {
            workers,
            settings: settings.clone(),
        };
        Ok((engine, MediaHandle::new(handles, settings.spread_after)))
    }

    /// Runs every worker on a thread of its own (a current-thread runtime
    /// each) until `shutdown` or until every handle is dropped; returns
    /// when all of them stopped.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut stopped = Vec::new();
        for worker in self.workers {
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            let (settings, stop) = (self.settings.clone(), shutdown.clone());
            let index = worker.index;
            let spawned = std::thread::Builder::new()
                .name(format!("sfud-media-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(rt) => rt.block_on(worker.run(&settings, stop)),
                        Err(e) => error!(worker = index, error = %e, "media worker cannot start"),
                    }
                    drop(done);
                });
            match spawned {
                Ok(_) => stopped.push(wait),
                Err(e) => error!(worker = index, error = %e, "media worker thread not started"),
            }
        }
        for wait in stopped {
            let _ = wait.await;
        }
    }
}

/// The sockets a worker binds, and what it announces of them.
type Bound = (
    Vec<std::net::UdpSocket>,
    Vec<std::net::TcpListener>,
    Vec<Announced>,
);

/// Binds worker `index`'s UDP socket per address of `settings.bind` on
/// `port` (0: a free port, shared by the addresses where it can be), and
/// its ICE-TCP listener per address when TCP is on; the announced
/// addresses list the UDP sockets first.
fn bind_worker(settings: &MediaSettings, mut port: u16, index: usize) -> std::io::Result<Bound> {
    let mut sockets = Vec::new();
    let mut announced = Vec::new();
    for (ip, public) in &settings.bind {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(*ip, port)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind UDP {}: {e}", SocketAddr::new(*ip, port)),
            )
        })?;
        socket.set_nonblocking(true)?;
        let bound = socket.local_addr()?;
        // With port 0, every address shares the first one's port where it can.
        port = bound.port();
        announced.push(Announced {
            bound,
            public: *public,
            tcp: false,
        });
        sockets.push(socket);
    }
    let mut listeners = Vec::new();
    if let Some(tcp_port) = settings.tcp_port {
        let mut port = match tcp_port {
            0 => 0,
            first => u16::try_from(usize::from(first) + index).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the workers' TCP ports run past 65535",
                )
            })?,
        };
        for (ip, public) in &settings.bind {
            let listener = super::tcp::bind(SocketAddr::new(*ip, port))?;
            let bound = listener.local_addr()?;
            port = bound.port();
            announced.push(Announced {
                bound,
                public: *public,
                tcp: true,
            });
            listeners.push(listener);
        }
    }
    Ok((sockets, listeners, announced))
}

impl Worker {
    /// Registers the sockets with this thread's runtime and runs the loop.
    async fn run(self, settings: &MediaSettings, shutdown: CancellationToken) {
        let mut sockets = Vec::new();
        for socket in self.sockets {
            match UdpSocket::from_std(socket) {
                Ok(socket) => {
                    recv::enable_timestamps(&socket);
                    recv::size_buffers(&socket);
                    sockets.push(socket);
                }
                Err(e) => {
                    error!(worker = self.index, error = %e, "media socket unusable");
                    return;
                }
            }
        }
        let core = MediaCore::new(settings, self.index, self.announced, Instant::now());
        let tcp = TcpMedia::start(self.listeners, sockets.len());
        Loop {
            index: self.index,
            core,
            sockets,
            tcp,
            rx: self.rx,
            others: self.others,
        }
        .run(shutdown)
        .await;
    }
}

impl Loop {
    /// Runs until `shutdown` turns true or every handle is dropped.
    async fn run(mut self, shutdown: CancellationToken) {
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
                event = self.tcp.recv() => {
                    if let Some((sock, from, data)) = event.and_then(|e| self.tcp.note(e)) {
                        let now = Instant::now();
                        turn = Some((now, self.core.stats.rtp_forwarded));
                        self.core.on_datagram(sock, from, &data, now, now);
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

    /// Sends what the core produced: datagrams, and one batch of messages
    /// to each worker it has some for (never waiting: a full inbox drops
    /// the batch, counted).
    fn send(&mut self) {
        let core = &mut self.core;
        if self.tcp.has_connections() {
            for (sock, to, data) in core.out.take_from(self.tcp.first()) {
                let len = data.len() as u64;
                if self.tcp.send(sock, to, data) {
                    core.stats.datagrams_out += 1;
                    core.stats.bytes_out += len;
                } else {
                    core.stats.dropped_send += 1;
                }
            }
        }
        core.out.send(&self.sockets, &mut core.stats);
        if core.pipe_out.is_empty() {
            return;
        }
        let mut batches: Vec<Vec<super::PipeMsg>> = Vec::new();
        batches.resize_with(self.others.len(), Vec::new);
        for (to, msg) in core.pipe_out.drain(..) {
            if let Some(batch) = batches.get_mut(to) {
                batch.push(msg);
            }
        }
        for (to, msgs) in batches.into_iter().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            let n = msgs.len() as u64;
            let sent = self.others[to].upgrade().is_some_and(|tx| {
                tx.try_send(MediaCommand::Piped {
                    from: self.index,
                    msgs,
                })
                .is_ok()
            });
            if !sent {
                core.stats.pipe_dropped += n;
            }
        }
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
