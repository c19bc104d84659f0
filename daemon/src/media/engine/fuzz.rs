//! Test-only entry points into the core, for the fuzz targets and the
//! core's unit tests.

use super::*;

/// What the datagram fuzz target (`crate::fuzz`) drives: the engine as its
/// loop does, without the loop.
impl MediaCore {
    /// A core on 127.0.0.1:40000 (nothing bound: tests carry its datagrams
    /// in memory), its clock starting at `now`.
    pub(crate) fn loopback(settings: &MediaSettings, now: Instant) -> MediaCore {
        Self::loopback_worker(settings, 0, now)
    }

    /// Worker `worker`'s core, on 127.0.0.1 port 40000 + `worker`.
    pub(crate) fn loopback_worker(
        settings: &MediaSettings,
        worker: usize,
        now: Instant,
    ) -> MediaCore {
        let announced = vec![Announced {
            bound: SocketAddr::from(([127, 0, 0, 1], 40_000 + worker as u16)),
            public: None,
            tcp: false,
        }];
        MediaCore::new(settings, worker, announced, now)
    }

    /// A publish connection for `peer`, answered from `offer`; the server's
    /// ICE ufrag, if the offer was answered.
    pub(crate) fn fuzz_publish(&mut self, peer: PeerId, offer: &str) -> Option<String> {
        self.fuzz_answer(peer, offer)?
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned)
    }

    /// A publish connection for `peer`: the answer to `offer`, if any.
    pub(crate) fn fuzz_answer(&mut self, peer: PeerId, offer: &str) -> Option<String> {
        let events: EventSink = Arc::new(|_| {});
        let answer = self
            .publish(peer, events, offer.to_owned(), Instant::now())
            .ok()?;
        Some(answer.sdp)
    }

    /// Like [`MediaCore::fuzz_datagram`] (`data: None` for the timers
    /// alone), but what the engine sends is handed back instead of sent:
    /// a client in the same test (one that completes DTLS) reads it.
    pub(crate) fn fuzz_exchange(
        &mut self,
        from: SocketAddr,
        data: Option<&[u8]>,
    ) -> Vec<(SocketAddr, BytesMut)> {
        let now = Instant::now();
        if let Some(data) = data {
            self.on_datagram(0, from, data, now, now);
        }
        self.on_timers(now);
        self.out.take()
    }

    /// The tracks published so far.
    pub(crate) fn fuzz_tracks(&self) -> Vec<TrackInfo> {
        self.sources.values().map(|s| s.info.clone()).collect()
    }

    /// A subscribe connection for `peer` carrying `tracks`: the server's
    /// offer, if any.
    pub(crate) fn fuzz_subscribe(
        &mut self,
        peer: PeerId,
        tracks: Vec<TrackInfo>,
    ) -> Option<String> {
        let events: EventSink = Arc::new(|_| {});
        let offer = self
            .subscribe(peer, events, tracks, Instant::now())
            .ok()??;
        Some(offer.sdp)
    }

    /// Applies the subscriber's answer to the outstanding offer.
    pub(crate) fn fuzz_subscribe_answer(&mut self, peer: PeerId, answer: &str) -> bool {
        self.subscribe_answer(peer, answer.to_owned(), Instant::now())
            .is_ok()
    }

    /// Closes both connections of `peer`, as when it leaves.
    pub(crate) fn fuzz_remove_peer(&mut self, peer: PeerId) {
        self.remove_peer(peer);
    }

    /// Transport feedback the fast path read, packets retransmitted for
    /// NACKs, and PLIs sent to publishers, so far.
    pub(crate) fn fuzz_feedback(&self) -> (u64, u64, u64) {
        let s = &self.stats;
        (s.feedback_fast, s.rtp_retransmitted, s.plis_sent)
    }

    /// RTP packets the connections' cores delivered to the engine so far.
    pub(crate) fn fuzz_rtp_in(&self) -> u64 {
        self.stats.rtp_in
    }

    /// The first socket's address.
    pub(crate) fn fuzz_local_addr(&self) -> SocketAddr {
        self.local_addrs[0].addr
    }

    /// Datagrams taken in so far: routed to a connection, and not.
    pub(crate) fn fuzz_routed(&self) -> (u64, u64) {
        let s = &self.stats;
        (s.datagrams_in - s.dropped_unroutable, s.dropped_unroutable)
    }

    /// One datagram from `from` on the first socket, handled and answered
    /// as the loop would, then the timers that fell due.
    pub(crate) fn fuzz_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        self.on_datagram(0, from, data, now, now);
        self.on_timers(now);
        // Nobody listens on the fuzzed addresses.
        self.out.take();
    }
}
