//! ICE-TCP's transport, for clients whose UDP is blocked: each worker
//! listens on a TCP port (passive host candidates, RFC 6544), and every
//! connection a client opens carries the datagrams of one ICE candidate
//! pair, each framed with its length (RFC 4571).
//!
//! The media loop never waits on TCP. A reader task per connection
//! deframes what arrives and hands it to the loop through one bounded
//! channel (a loop that is behind slows the readers, and through them the
//! clients, down). What the core sends to a TCP candidate goes to that
//! connection's writer task through a bounded queue; a client that does not
//! read what it is sent fills it, and is disconnected rather than waited
//! for. A connection that sends nothing for [`IDLE`] (ICE consent checks
//! come every few seconds), a frame larger than any datagram, or more
//! connections than [`MAX_CONNECTIONS`] are closed at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::MAX_DATAGRAM;

/// Frames a connection's writer holds for its client before the client
/// counts as not reading (a second of a subscriber's video and more).
const WRITE_QUEUE: usize = 512;
/// Frames from every reader waiting for the loop.
const READ_QUEUE: usize = 1024;
/// How long a connection may send nothing.
const IDLE: Duration = Duration::from_secs(30);
/// Open connections on one worker.
const MAX_CONNECTIONS: usize = 4096;

/// What the readers hand to the loop.
pub(super) enum TcpIn {
    /// A client connected to listener `sock` from `from`.
    Opened {
        sock: usize,
        from: SocketAddr,
        out: mpsc::Sender<BytesMut>,
        reader: AbortHandle,
    },
    /// One datagram from it.
    Frame {
        sock: usize,
        from: SocketAddr,
        data: BytesMut,
    },
    /// It closed, went idle or broke the framing.
    Closed { sock: usize, from: SocketAddr },
}

/// One open connection, as the loop holds it.
struct Conn {
    out: mpsc::Sender<BytesMut>,
    reader: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer ends with its queue's sender; the socket closes with both.
        self.reader.abort();
    }
}

/// A worker's ICE-TCP listeners and connections.
pub(super) struct TcpMedia {
    rx: mpsc::Receiver<TcpIn>,
    conns: HashMap<(usize, SocketAddr), Conn>,
    /// The socket index of the first listener (the UDP sockets come first).
    first: usize,
    listening: bool,
}

impl TcpMedia {
    /// Starts accepting on `listeners` (on this thread's runtime), whose
    /// socket indices start at `first`.
    pub(super) fn start(listeners: Vec<std::net::TcpListener>, first: usize) -> TcpMedia {
        let (tx, rx) = mpsc::channel(READ_QUEUE);
        let listening = !listeners.is_empty();
        for (i, listener) in listeners.into_iter().enumerate() {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    tokio::spawn(accept(listener, first + i, tx.clone()));
                }
                Err(e) => warn!(error = %e, "ICE-TCP listener unusable"),
            }
        }
        TcpMedia {
            rx,
            conns: HashMap::new(),
            first,
            listening,
        }
    }

    /// The socket index of the first listener: datagrams queued for this
    /// index or a later one go out here, not on a UDP socket.
    pub(super) fn first(&self) -> usize {
        self.first
    }

    /// Whether any connection is open (so that the turn's sends are worth
    /// looking through).
    pub(super) fn has_connections(&self) -> bool {
        !self.conns.is_empty()
    }

    /// The next event of the readers; never, without listeners.
    pub(super) async fn recv(&mut self) -> Option<TcpIn> {
        if !self.listening {
            return std::future::pending().await;
        }
        self.rx.recv().await
    }

    /// Notes a connection opened or closed; a datagram is handed back.
    pub(super) fn note(&mut self, event: TcpIn) -> Option<(usize, SocketAddr, BytesMut)> {
        match event {
            TcpIn::Opened {
                sock,
                from,
                out,
                reader,
            } => {
                if self.conns.len() >= MAX_CONNECTIONS {
                    warn!(%from, "ICE-TCP connection refused: too many open");
                    reader.abort();
                    return None;
                }
                self.conns.insert((sock, from), Conn { out, reader });
                None
            }
            TcpIn::Frame { sock, from, data } => Some((sock, from, data)),
            TcpIn::Closed { sock, from } => {
                self.conns.remove(&(sock, from));
                None
            }
        }
    }

    /// Queues one datagram for the connection from `to` on listener
    /// `sock`; false when there is none, or when its client does not keep
    /// up (it is disconnected).
    pub(super) fn send(&mut self, sock: usize, to: SocketAddr, data: BytesMut) -> bool {
        let Some(conn) = self.conns.get(&(sock, to)) else {
            return false;
        };
        match conn.out.try_send(data) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%to, "ICE-TCP client does not read what it is sent: disconnected");
                self.conns.remove(&(sock, to));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.conns.remove(&(sock, to));
                false
            }
        }
    }
}

/// Accepts connections on one listener until the loop is gone.
async fn accept(listener: TcpListener, sock: usize, tx: mpsc::Sender<TcpIn>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: the loop must not spin on it.
                debug!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (out, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_frames(read, sock, from, tx.clone())).abort_handle();
        tokio::spawn(write_frames(write, queue));
        let opened = TcpIn::Opened {
            sock,
            from,
            out,
            reader,
        };
        if tx.send(opened).await.is_err() {
            return;
        }
    }
}

/// Reads length-framed datagrams from one connection into the loop.
async fn read_frames(
    mut read: tokio::net::tcp::OwnedReadHalf,
    sock: usize,
    from: SocketAddr,
    tx: mpsc::Sender<TcpIn>,
) {
    loop {
        let frame = tokio::time::timeout(IDLE, read_frame(&mut read)).await;
        let data = match frame {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => {
                debug!(%from, error = %e, "ICE-TCP connection ended");
                break;
            }
            Err(_) => {
                debug!(%from, "ICE-TCP connection idle: closed");
                break;
            }
        };
        if tx.send(TcpIn::Frame { sock, from, data }).await.is_err() {
            return;
        }
    }
    let _ = tx.send(TcpIn::Closed { sock, from }).await;
}

/// One RFC 4571 frame: a two-byte length, then the datagram.
async fn read_frame(read: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<BytesMut> {
    let len = usize::from(read.read_u16().await?);
    if len == 0 || len > MAX_DATAGRAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    let mut data = BytesMut::zeroed(len);
    read.read_exact(&mut data).await?;
    Ok(data)
}

/// Writes what the loop queues for one connection, framed, until the loop
/// drops the queue or the client goes away.
async fn write_frames(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<BytesMut>,
) {
    let mut buf = Vec::with_capacity(2 + MAX_DATAGRAM);
    while let Some(data) = queue.recv().await {
        let Ok(len) = u16::try_from(data.len()) else {
            continue;
        };
        buf.clear();
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&data);
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Binds a non-blocking TCP listener on `addr` for a worker's ICE-TCP.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on TCP {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
