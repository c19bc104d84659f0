//! What stands between the network and the rooms: join tokens, the `Origin`
//! allow-list and rate limits. Shared by every session; replaced on reload.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sfu_proto::signaling::{ErrorCode, Role};

use crate::auth::{Admission, Authority};
use crate::config::Config;
use crate::rooms::Refusal;

/// Most source addresses tracked for join rate limiting before idle ones are
/// forgotten.
const MAX_TRACKED_SOURCES: usize = 10_000;

/// A token bucket: `rate` per second, bursts of `2 * rate`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(now: Instant, rate: u32) -> Self {
        RateLimit {
            tokens: 2.0 * f64::from(rate),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant, rate: u32) -> bool {
        let burst = 2.0 * f64::from(rate);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Admission control for signaling.
pub struct Gatekeeper {
    authority: RwLock<Arc<Authority>>,
    origins: RwLock<Vec<String>>,
    joins_per_second: RwLock<u32>,
    messages_per_second: RwLock<u32>,
    /// Join deadline and idle timeout of WebSockets.
    timeouts: RwLock<(Duration, Duration)>,
    /// The HTTP listener's limits, and its connections.
    listener: RwLock<super::listener::ListenerLimits>,
    connections: Arc<super::listener::Connections>,
    joins: Mutex<HashMap<IpAddr, RateLimit>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|p| p.into_inner()) = v;
}

impl Gatekeeper {
    /// From the configuration.
    pub fn new(config: &Config) -> Self {
        let g = Gatekeeper {
            authority: RwLock::new(Arc::new(Authority::new(&config.auth))),
            origins: RwLock::new(Vec::new()),
            joins_per_second: RwLock::new(1),
            messages_per_second: RwLock::new(1),
            timeouts: RwLock::new((Duration::ZERO, Duration::ZERO)),
            listener: RwLock::new(super::listener::ListenerLimits {
                header_timeout: Duration::ZERO,
                per_address: 0,
                total: 0,
            }),
            connections: Arc::default(),
            joins: Mutex::new(HashMap::new()),
            refusals: Mutex::new(BTreeMap::new()),
        };
        g.reload(config);
        g
    }

    /// Applies a new configuration's keys, origins and limits.
    pub fn reload(&self, config: &Config) {
        write(&self.authority, Arc::new(Authority::new(&config.auth)));
        write(&self.origins, config.http.allowed_origins.clone());
        write(&self.joins_per_second, config.limits.joins_per_second);
        write(&self.messages_per_second, config.limits.messages_per_second);
        write(
            &self.timeouts,
            (
                Duration::from_secs(config.limits.join_timeout_secs),
                Duration::from_secs(config.limits.idle_timeout_secs),
            ),
        );
        write(
            &self.listener,
            super::listener::ListenerLimits {
                header_timeout: Duration::from_secs(config.limits.header_timeout_secs),
                per_address: config.limits.max_connections_per_ip,
                total: config.limits.max_connections,
            },
        );
    }

    /// The HTTP listener's limits now.
    pub fn listener_limits(&self) -> super::listener::ListenerLimits {
        read(&self.listener)
    }

    /// The HTTP listener's open connections and refusals.
    pub fn connections(&self) -> &Arc<super::listener::Connections> {
        &self.connections
    }

    /// How long a WebSocket may stay open without joining.
    pub fn join_timeout(&self) -> Duration {
        read(&self.timeouts).0
    }

    /// How long a WebSocket may stay silent before it is closed.
    pub fn idle_timeout(&self) -> Duration {
        read(&self.timeouts).1
    }

    /// Whether a page from `origin` may open a socket.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let allowed = self.origins.read().unwrap_or_else(|p| p.into_inner());
        // Non-browser clients send no Origin; the list guards browsers.
        allowed.is_empty() || origin.is_none_or(|o| allowed.iter().any(|a| a == o))
    }

    /// Whether another join from `source` is allowed now.
    pub fn join_allowed(&self, source: IpAddr) -> bool {
        let rate = read(&self.joins_per_second);
        let now = Instant::now();
        let mut joins = self.joins.lock().unwrap_or_else(|p| p.into_inner());
        if joins.len() >= MAX_TRACKED_SOURCES {
            let idle = Duration::from_secs(60);
            joins.retain(|_, b| now.saturating_duration_since(b.last) < idle);
        }
        joins
            .entry(source)
            .or_insert_with(|| RateLimit::new(now, rate))
            .allow(now, rate)
    }

    /// Messages per second allowed on one connection.
    pub fn messages_per_second(&self) -> u32 {
        read(&self.messages_per_second)
    }

    /// Checks a join's token (if needed) and returns what it may be.
    pub fn admit(
        &self,
        room: &str,
        name: &str,
        role: Role,
        token: Option<&str>,
    ) -> Result<Admission, Refusal> {
        read(&self.authority).admit(room, name, role, token)
    }

    /// Signs a join token (for `sfuctl token create`).
    pub fn mint(
        &self,
        room: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        allow_duplicate_name: bool,
    ) -> Result<String, Refusal> {
        read(&self.authority).mint(room, name, role, ttl, allow_duplicate_name)
    }

    /// Counts a refusal for `/metrics`.
    pub fn count_refusal(&self, code: ErrorCode) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code.as_str())
            .or_default() += 1;
    }

    /// Refusals so far, by error code.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = RateLimit::new(t0, 5);
        let burst = (0..20).filter(|_| b.allow(t0, 5)).count();
        assert_eq!(burst, 10);
        assert!(!b.allow(t0, 5));
        assert!(
            b.allow(t0 + Duration::from_millis(200), 5),
            "one token refills in 200 ms"
        );
        assert!(!b.allow(t0 + Duration::from_millis(200), 5));
    }

    #[test]
    fn origins_are_checked_only_when_listed() {
        let mut config = Config::default();
        let g = Gatekeeper::new(&config);
        assert!(g.origin_allowed(Some("https://evil.example")));
        config.http.allowed_origins = vec!["https://meet.example.org".into()];
        g.reload(&config);
        assert!(g.origin_allowed(Some("https://meet.example.org")));
        assert!(!g.origin_allowed(Some("https://evil.example")));
        assert!(g.origin_allowed(None), "non-browser clients send no Origin");
    }

    #[test]
    fn joins_are_limited_per_source() {
        let mut config = Config::default();
        config.limits.joins_per_second = 1;
        let g = Gatekeeper::new(&config);
        let a: IpAddr = "192.0.2.1".parse().expect("literal");
        let b: IpAddr = "192.0.2.2".parse().expect("literal");
        assert!(g.join_allowed(a) && g.join_allowed(a));
        assert!(!g.join_allowed(a));
        assert!(g.join_allowed(b), "another source has its own bucket");
    }
}
