//! Which connection a datagram belongs to: by the address it came from,
//! or, from an address not seen before, by the local ICE username fragment
//! its STUN binding request names (the only datagram that may open a
//! route). Plain data: no sockets, unit-tested.
//!
//! A route only delivers the datagram to the connection's `rtc` core,
//! which checks the request's integrity with the ICE password; but an
//! address that names a valid fragment is remembered before that check,
//! so each connection keeps at most [`MAX_ADDRS`] of them: a client that
//! sprays binding requests from many ports cannot grow the table.

use std::net::SocketAddr;

use rustc_hash::FxHashMap as HashMap;

use super::ConnId;

/// Remote addresses one connection may be reached from: a browser's
/// candidate pairs (host, reflexive, relayed, per interface), with room.
pub(super) const MAX_ADDRS: usize = 16;

/// A socket index and a remote address.
pub(super) type Path = (usize, SocketAddr);

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// To this connection.
    Conn(ConnId),
    /// Nowhere: no route from that address, and not a binding request
    /// naming a connection.
    Unknown,
    /// Nowhere: the connection it names has [`MAX_ADDRS`] addresses already.
    Full(ConnId),
}

#[derive(Default)]
pub(super) struct Routes {
    by_ufrag: HashMap<String, ConnId>,
    by_addr: HashMap<Path, ConnId>,
    /// Each connection's addresses, oldest first.
    addrs: HashMap<ConnId, Vec<Path>>,
}

impl Routes {
    /// Routes binding requests that name `ufrag` to `id`.
    pub(super) fn add(&mut self, ufrag: String, id: ConnId) {
        self.by_ufrag.insert(ufrag, id);
        self.addrs.entry(id).or_default();
    }

    /// Forgets connection `id`, named by `ufrag`, and every address of it.
    pub(super) fn remove(&mut self, ufrag: &str, id: ConnId) {
        if self.by_ufrag.get(ufrag) == Some(&id) {
            self.by_ufrag.remove(ufrag);
        }
        for path in self.addrs.remove(&id).unwrap_or_default() {
            self.by_addr.remove(&path);
        }
    }

    /// Where a datagram from `path` goes; `ufrag` is asked for (it parses
    /// the datagram) only when the address is new.
    pub(super) fn route(&mut self, path: Path, ufrag: impl FnOnce() -> Option<String>) -> Route {
        if let Some(id) = self.by_addr.get(&path) {
            return Route::Conn(*id);
        }
        let Some(id) = ufrag().and_then(|u| self.by_ufrag.get(&u).copied()) else {
            return Route::Unknown;
        };
        let Some(addrs) = self.addrs.get_mut(&id) else {
            return Route::Unknown;
        };
        if addrs.len() >= MAX_ADDRS {
            return Route::Full(id);
        }
        addrs.push(path);
        self.by_addr.insert(path, id);
        Route::Conn(id)
    }

    /// The address connection `id` was last reached from anew.
    pub(super) fn last_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.addrs.get(&id)?.last().map(|(_, a)| *a)
    }

    /// How many addresses route somewhere.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(port: u16) -> Path {
        (0, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn named(ufrag: &str) -> impl FnOnce() -> Option<String> + '_ {
        move || Some(ufrag.to_owned())
    }

    #[test]
    fn an_address_opens_by_naming_a_ufrag_and_routes_without_it_after() {
        let mut r = Routes::default();
        r.add("abcd".into(), 1);
        r.add("efgh".into(), 2);
        assert_eq!(r.route(path(1000), || None), Route::Unknown);
        assert_eq!(r.route(path(1000), named("zzzz")), Route::Unknown);
        assert_eq!(r.route(path(1000), named("abcd")), Route::Conn(1));
        // Known now: the datagram is not parsed again.
        assert_eq!(
            r.route(path(1000), || panic!("parsed a known address")),
            Route::Conn(1)
        );
        assert_eq!(r.route(path(2000), named("efgh")), Route::Conn(2));
        assert_eq!(r.last_addr(1), Some(path(1000).1));
        // An address stays with the connection that opened it.
        assert_eq!(r.route(path(2000), named("abcd")), Route::Conn(2));
    }

    #[test]
    fn a_connection_keeps_at_most_max_addrs_and_removing_it_forgets_them_all() {
        let mut r = Routes::default();
        r.add("abcd".into(), 7);
        for port in 0..MAX_ADDRS as u16 {
            assert_eq!(r.route(path(1000 + port), named("abcd")), Route::Conn(7));
        }
        assert_eq!(r.route(path(5000), named("abcd")), Route::Full(7));
        assert_eq!(r.len(), MAX_ADDRS);
        // Known addresses still route.
        assert_eq!(r.route(path(1000), || None), Route::Conn(7));

        r.remove("abcd", 7);
        assert_eq!(r.len(), 0);
        assert_eq!(r.route(path(1000), named("abcd")), Route::Unknown);
        assert_eq!(r.last_addr(7), None);
    }

    #[test]
    fn removing_a_connection_leaves_a_ufrag_reused_by_another() {
        let mut r = Routes::default();
        r.add("abcd".into(), 1);
        r.add("abcd".into(), 2);
        r.remove("abcd", 1);
        assert_eq!(r.route(path(1000), named("abcd")), Route::Conn(2));
    }
}
