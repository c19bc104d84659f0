//! The HTTP listener: accepts TCP connections and serves the router on
//! each, with the limits a public port needs that `axum::serve` does not
//! set: a deadline for a request's headers, a cap on the connections one
//! address may hold and on all of them, and a pause after a failed accept
//! (out of file descriptors) instead of a retry at once.
//!
//! Connections upgraded to WebSockets leave hyper; their sessions keep
//! their own deadlines (`session`) but still count against the caps until
//! they end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::debug;

use crate::backoff::AcceptBackoff;
use crate::supervisor::{Stage, Supervisor};

/// The limits of the listener (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections one source address may hold at once.
    pub per_address: usize,
    /// Connections the listener holds at once.
    pub total: usize,
}

/// Open connections, by source address, and what was turned away.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<IpAddr, usize>>,
    refused_per_address: AtomicU64,
    refused_total: AtomicU64,
}

/// One counted connection; uncounted when dropped.
pub struct Held {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Connections {
    /// Counts a connection from `ip`, or says which cap it is over.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: ListenerLimits) -> Result<Held, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= limits.total {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err("total");
        }
        let n = open.entry(ip).or_insert(0);
        if *n >= limits.per_address {
            self.refused_per_address.fetch_add(1, Ordering::Relaxed);
            return Err("per_address");
        }
        *n += 1;
        Ok(Held {
            connections: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// Connections closed at once for being over the per-address cap, and
    /// over the total.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_per_address.load(Ordering::Relaxed),
            self.refused_total.load(Ordering::Relaxed),
        )
    }
}

/// A request's connection slot: a WebSocket upgrade takes it into its
/// session, so that the connection stays counted until the session ends;
/// otherwise it goes when the connection closes.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<Mutex<Option<Held>>>);

impl ConnectionSlot {
    /// The slot, for the task that outlives the HTTP exchange.
    pub fn take(&self) -> Option<Held> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Serves `router` on `listener` until `stop`; `limits` is read for every
/// new connection (it follows reloads).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
    limits: impl Fn() -> ListenerLimits,
    sup: Supervisor,
) {
    let stop = sup.token(Stage::Accept);
    let sessions = sup.token(Stage::Sessions);
    let mut backoff = AcceptBackoff::new("HTTP listener");
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(error) => {
                let pause = backoff.failed(&error);
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let limits = limits();
        let held = match connections.admit(remote.ip(), limits) {
            Ok(held) => held,
            Err(cap) => {
                debug!(%remote, cap, "connection over the cap: closed");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnectionSlot(Arc::new(Mutex::new(Some(held))));
        let request_slot = slot.clone();
        let service = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req.extensions_mut().insert(request_slot.clone());
                req.map(axum::body::Body::new)
            });
        let sessions = sessions.clone();
        sup.spawn(Stage::Sessions, "HTTP connection", async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%remote, error = %e, "HTTP connection ended");
                    }
                }
                () = sessions.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_and_the_whole_have_a_cap_and_closing_frees_a_slot() {
        let c = Arc::new(Connections::default());
        let limits = ListenerLimits {
            header_timeout: Duration::from_secs(1),
            per_address: 2,
            total: 3,
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = c.admit(a, limits).expect("first");
        let _second = c.admit(a, limits).expect("second");
        assert_eq!(c.admit(a, limits).err(), Some("per_address"));
        let _third = c.admit(b, limits).expect("another address");
        assert_eq!(c.admit(b, limits).err(), Some("total"));
        assert_eq!(c.open(), 3);
        drop(first);
        assert_eq!(c.open(), 2);
        assert!(c.admit(a, limits).is_ok());
        assert_eq!(c.refused(), (1, 1));
    }
}
