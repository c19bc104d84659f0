//! TURN over TLS (`turns:`, RFC 5766 section 2.1): for networks that let
//! nothing out but TLS on a well-known port.
//!
//! medea-turn's transports take a `TcpListener` and nothing else, so sfud
//! terminates TLS itself and hands each connection's plain stream to the
//! TURN server's own TCP listener over loopback: one TCP connection there
//! per TLS connection, so every client still has its own transport address
//! (allocations, quotas and rate limits stay per client). The server sees
//! that loopback address as the client's, which only changes the
//! XOR-MAPPED-ADDRESS a TLS client is told (browsers gather no candidate
//! from it over TLS).
//!
//! Bounded like every other listener of sfud: at most [`MAX_CONNECTIONS`]
//! at once, [`HANDSHAKE_TIMEOUT`] to finish the handshake, and a connection
//! that carries nothing either way for [`IDLE_TIMEOUT`] is closed (a
//! browser's consent checks and refreshes keep a live one busy).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// TLS connections held at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may carry nothing in either direction.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the TLS listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong with it.
        why: String,
    },
    /// rustls refused the certificate and key together.
    #[error("turn.tls_cert and turn.tls_key do not make a TLS server: {0}")]
    Config(#[from] rustls::Error),
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// A TLS server configuration from a PEM certificate chain and its PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem = |path: &Path, why: String| TlsError::Pem {
        path: path.display().to_string(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS listener; stops (with every connection it holds) when dropped.
pub struct TlsFront {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Listens on `at` and pipes each TLS connection's stream to `backend`
    /// (the TURN server's TCP listener).
    pub async fn start(
        at: SocketAddr,
        acceptor: TlsAcceptor,
        backend: SocketAddr,
    ) -> io::Result<TlsFront> {
        let listener = TcpListener::bind(at).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, acceptor, backend));
        Ok(TlsFront { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, backend: SocketAddr) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owns the connections' tasks: aborted with this one.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next() => continue,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "TURN TLS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%from, "TURN TLS connection refused: at the connection cap");
            continue;
        };
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let _slot = slot;
            if let Err(e) = relay(stream, &acceptor, backend).await {
                tracing::debug!(%from, error = %e, "TURN TLS connection ended");
            }
        });
    }
}

/// One connection: the handshake, then its plain stream both ways.
async fn relay(stream: TcpStream, acceptor: &TlsAcceptor, backend: SocketAddr) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
    let plain = TcpStream::connect(backend).await?;
    plain.set_nodelay(true)?;
    pipe(tls, plain, IDLE_TIMEOUT).await
}

/// Copies `a` to `b` and `b` to `a` until either ends, or neither carries
/// anything for `idle`.
async fn pipe<A, B>(a: A, b: B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_in, mut a_out) = tokio::io::split(a);
    let (mut b_in, mut b_out) = tokio::io::split(b);
    let mut from_a = vec![0u8; 16 * 1024];
    let mut from_b = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = a_in.read(&mut from_a) => {
                let n = n?;
                if n == 0 {
                    return b_out.shutdown().await;
                }
                b_out.write_all(&from_a[..n]).await?;
            }
            n = b_in.read(&mut from_b) => {
                let n = n?;
                if n == 0 {
                    return a_out.shutdown().await;
                }
                // TLS buffers a record until flushed.
                a_out.write_all(&from_b[..n]).await?;
                a_out.flush().await?;
            }
            () = tokio::time::sleep(idle) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test(start_paused = true)]
    async fn a_pipe_copies_both_ways_and_closes_when_idle() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let piped = tokio::spawn(pipe(a, b, Duration::from_secs(60)));
        client.write_all(b"allocate").await.expect("write");
        let mut got = [0u8; 8];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"allocate");
        server.write_all(b"answer").await.expect("write");
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"answer");
        // Nothing either way for a minute: closed.
        let ended = piped.await.expect("joined");
        assert_eq!(ended.expect_err("idle").kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_pipe_ends_when_one_side_closes() {
        let (client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let piped = tokio::spawn(pipe(a, b, Duration::from_secs(60)));
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty());
        piped.await.expect("joined").expect("a clean end");
    }

    #[test]
    fn unreadable_or_empty_pem_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = acceptor(&missing, &missing).err().expect("refused");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = acceptor(&empty, &empty).err().expect("refused");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
