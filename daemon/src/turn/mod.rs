//! The embedded TURN server (`[turn]`): for clients that reach sfud only
//! through a relay (`iceTransportPolicy: "relay"`, or networks that let
//! nothing else through), on one port for UDP and TCP.
//!
//! The server is `medea-turn` (a maintained fork of webrtc-rs's tokio TURN
//! server). sfud adds two things around it:
//!
//! - **Credentials derived from the join** (TURN REST,
//!   draft-uberti-behave-turn-rest): the username is `EXPIRY:PEER`, the
//!   password the base64 HMAC-SHA1 of the username under a secret sfud
//!   draws at start. `joined` hands each participant its own; only people
//!   admitted to a room can relay, until `turn.credential_ttl_secs` after
//!   their join. A wrong or expired credential gets `401`.
//! - **No open relay.** Every listener is wrapped ([`OnlyToSfud`]) so that a
//!   permission may only name one of sfud's media addresses' IPs, and a
//!   channel or a `Send` only one of its media addresses: anything else is
//!   refused with `403 Forbidden` (indications are dropped) before the
//!   server sees it.
//! - **TLS** (`turns:`), when `turn.tls_cert` is set: sfud terminates it
//!   on `turn.tls_port` and pipes each connection to the TCP listener
//!   ([`tls`]).
//! - **Limits.** The same wrapper refuses a credential's allocation
//!   requests past `turn.max_allocations_per_user` (`486 Allocation Quota
//!   Reached`), and drops what a client sends to be relayed beyond
//!   `turn.max_kbps_per_allocation` (a token bucket per client transport
//!   address; a ChannelData message counts as a full media packet, its
//!   length being private to the crate). The other direction needs no cap: its only sender is sfud,
//!   whose own allocation fits each subscriber's link.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use medea_turn::attr::{Attribute, ErrorCode};
use medea_turn::relay::Allocator;
use medea_turn::transport::{self, Request, TcpServer, Transport};
use medea_turn::{AuthHandler, Server, ServerConfig, TurnConfig};
use secrecy::SecretString;
use sfu_proto::signaling::IceServer;
use stun_codec::rfc5766::errors::{AllocationQuotaReached, Forbidden};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, SEND};
use stun_codec::{Message, MessageClass};

use crate::config::TurnSection;
use crate::media::PeerId;

mod tls;

/// What one ChannelData message counts as against the rate limit: a full
/// media packet.
const CHANNEL_DATA_BYTES: usize = 1200;

/// How long a channel binding lasts without a refresh (RFC 5766's).
const CHANNEL_BIND_LIFETIME: Duration = Duration::from_secs(600);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The password of TURN REST user `username` under `secret`.
fn password(secret: &[u8], username: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints each participant's TURN credentials (see the module docs).
#[derive(Clone)]
pub struct Issuer {
    secret: Arc<[u8; 32]>,
    ttl: Duration,
    urls: Vec<String>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("urls", &self.urls).finish()
    }
}

impl Issuer {
    /// `peer`'s ICE server entry: the TURN URLs with its own credentials.
    pub fn ice_server(&self, peer: PeerId) -> IceServer {
        let username = format!("{}:{peer}", unix_now() + self.ttl.as_secs());
        IceServer {
            urls: self.urls.clone(),
            credential: Some(password(self.secret.as_slice(), &username)),
            username: Some(username),
        }
    }
}

/// Checks TURN REST credentials for the server.
struct Credentials {
    secret: Arc<[u8; 32]>,
}

impl AuthHandler for Credentials {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src: SocketAddr,
    ) -> Result<SecretString, medea_turn::Error> {
        let expiry: Option<u64> = username.split(':').next().and_then(|e| e.parse().ok());
        // medea-turn checks the request's integrity with the password. A
        // user that is no user or has expired gets one nobody knows, so that
        // its request fails as a wrong credential does (401 Unauthorized,
        // where an error here would answer 400).
        let password = match expiry {
            Some(expiry) if expiry >= unix_now() => password(self.secret.as_slice(), username),
            _ => format!("{:032x}", rand::random::<u128>()),
        };
        Ok(SecretString::from(password))
    }
}

/// How much a client may send to be relayed: a token bucket in bytes.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

/// What the listeners count against the limits, shared by all of them.
#[derive(Default)]
struct Counts {
    /// Allocation requests with credentials, by user.
    allocations: std::collections::HashMap<String, u32>,
    /// Relayed bytes' buckets, by client transport address.
    buckets: std::collections::HashMap<SocketAddr, Bucket>,
}

/// The limits `OnlyToSfud` enforces.
struct Limits {
    allocations_per_user: u32,
    bytes_per_sec: f64,
    counts: std::sync::Mutex<Counts>,
}

impl Limits {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another allocation request of `user` is over its quota.
    fn over_quota(&self, user: &str) -> bool {
        let mut counts = self.counts();
        // Users are per join and expire: forget them in bulk, rarely.
        if counts.allocations.len() > 100_000 {
            counts.allocations.clear();
        }
        let n = counts.allocations.entry(user.to_owned()).or_insert(0);
        *n += 1;
        *n > self.allocations_per_user
    }

    /// Whether `bytes` more from `from` fit its bucket (one second's worth
    /// of burst).
    fn admit(&self, from: SocketAddr, bytes: usize) -> bool {
        let now = std::time::Instant::now();
        let rate = self.bytes_per_sec;
        let mut counts = self.counts();
        if counts.buckets.len() > 100_000 {
            counts
                .buckets
                .retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = counts.buckets.entry(from).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens < bytes as f64 {
            return false;
        }
        b.tokens -= bytes as f64;
        true
    }
}

/// A listener that lets only relays to sfud's own media through, within
/// the limits.
struct OnlyToSfud {
    inner: Arc<dyn Transport + Send + Sync>,
    /// sfud's UDP media addresses, bound and announced.
    peers: Arc<Vec<SocketAddr>>,
    limits: Arc<Limits>,
}

impl OnlyToSfud {
    /// Why `msg` from `from` is refused, if it is: the error to answer a
    /// request with (indications get none).
    fn refusal(&self, msg: &Message<Attribute>, from: SocketAddr) -> Option<ErrorCode> {
        if self.forbidden(msg) {
            tracing::info!(%from, "TURN relay to an address that is not sfud's refused");
            return Some(ErrorCode::from(Forbidden));
        }
        if msg.method() == ALLOCATE && msg.class() == MessageClass::Request {
            let user = msg.attributes().find_map(|a| match a {
                Attribute::Username(u) => Some(u.name().to_owned()),
                _ => None,
            });
            // The first request of each allocation comes without credentials.
            if let Some(user) = user {
                if self.limits.over_quota(&user) {
                    tracing::info!(%from, %user, "TURN allocation quota reached");
                    return Some(ErrorCode::from(AllocationQuotaReached));
                }
            }
        }
        if msg.method() == SEND {
            let bytes = msg
                .attributes()
                .find_map(|a| match a {
                    Attribute::Data(d) => Some(d.data().len()),
                    _ => None,
                })
                .unwrap_or(0);
            if !self.limits.admit(from, bytes) {
                return Some(ErrorCode::from(Forbidden));
            }
        }
        None
    }

    /// Whether `msg` asks to relay to someone other than sfud.
    fn forbidden(&self, msg: &Message<Attribute>) -> bool {
        let method = msg.method();
        let mut peers = msg.attributes().filter_map(|a| match a {
            Attribute::XorPeerAddress(p) => Some(p.address()),
            _ => None,
        });
        if method == CREATE_PERMISSION {
            // Permissions are per IP address (RFC 5766, section 8).
            peers.any(|p| !self.peers.iter().any(|s| s.ip() == p.ip()))
        } else if method == CHANNEL_BIND || method == SEND {
            peers.any(|p| !self.peers.contains(&p))
        } else {
            false
        }
    }
}

#[async_trait]
impl Transport for OnlyToSfud {
    async fn recv_from(&self) -> Result<(Request, SocketAddr), transport::Error> {
        loop {
            let (request, from) = self.inner.recv_from().await?;
            let msg = match &request {
                Request::Message(msg) => msg,
                Request::ChannelData(_) => {
                    // Over the rate: dropped, as a lossy link would. The
                    // crate keeps a ChannelData's length to itself: each
                    // counts as a full media packet.
                    if self.limits.admit(from, CHANNEL_DATA_BYTES) {
                        return Ok((request, from));
                    }
                    continue;
                }
            };
            let Some(error) = self.refusal(msg, from) else {
                return Ok((request, from));
            };
            if msg.class() == MessageClass::Request {
                let mut refusal = Message::new(
                    MessageClass::ErrorResponse,
                    msg.method(),
                    msg.transaction_id(),
                );
                refusal.add_attribute(Attribute::ErrorCode(error));
                let _ = self.inner.send_msg_to(refusal, from).await;
            }
        }
    }

    async fn send_to(
        &self,
        data: Cow<'_, [u8]>,
        target: SocketAddr,
    ) -> Result<(), transport::Error> {
        self.inner.send_to(data, target).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn proto(&self) -> u8 {
        self.inner.proto()
    }
}

/// The running TURN server and what participants are told of it.
pub struct Turn {
    _server: Server,
    tls: Option<tls::TlsFront>,
    issuer: Issuer,
    addr: SocketAddr,
}

impl Turn {
    /// Listens on `turn.port` (UDP and TCP) of `ip`, relaying from `ip`'s
    /// `turn.relay_min_port`..=`turn.relay_max_port` to `media` (sfud's
    /// UDP media addresses) only; clients are told `announced` (the public
    /// address, if any). Needs a tokio runtime.
    pub async fn start(
        config: &TurnSection,
        ip: IpAddr,
        announced: IpAddr,
        media: Vec<SocketAddr>,
    ) -> std::io::Result<Turn> {
        let udp = tokio::net::UdpSocket::bind(SocketAddr::new(ip, config.port)).await?;
        let addr = udp.local_addr()?;
        let tcp = tokio::net::TcpListener::bind(SocketAddr::new(ip, addr.port())).await?;
        let tcp = TcpServer::new(tcp).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut peers = media.clone();
        peers.extend(media.iter().map(|m| SocketAddr::new(announced, m.port())));
        let peers = Arc::new(peers);
        let limits = Arc::new(Limits {
            allocations_per_user: config.max_allocations_per_user,
            bytes_per_sec: config.max_kbps_per_allocation as f64 * 1000.0 / 8.0,
            counts: Default::default(),
        });
        let wrap = |inner: Arc<dyn Transport + Send + Sync>| -> Arc<dyn Transport + Send + Sync> {
            Arc::new(OnlyToSfud {
                inner,
                peers: peers.clone(),
                limits: limits.clone(),
            })
        };
        let secret: Arc<[u8; 32]> = Arc::new(rand::random());
        let server = Server::new(ServerConfig {
            connections: vec![wrap(Arc::new(udp)), wrap(Arc::new(tcp))],
            turn: Some(TurnConfig {
                relay_addr_generator: Allocator {
                    relay_address: announced,
                    min_port: config.relay_min_port,
                    max_port: config.relay_max_port,
                    max_retries: 16,
                    address: ip.to_string(),
                },
                realm: config.realm.clone(),
                auth_handler: Arc::new(Credentials {
                    secret: secret.clone(),
                }),
                channel_bind_lifetime: CHANNEL_BIND_LIFETIME,
                alloc_close_notify: None,
            }),
        });
        let at = SocketAddr::new(announced, addr.port());
        let mut urls = vec![
            format!("turn:{at}?transport=udp"),
            format!("turn:{at}?transport=tcp"),
        ];
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let acceptor = tls::acceptor(cert, key)?;
                // The TCP listener, as the terminator reaches it.
                let backend = if ip.is_unspecified() {
                    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
                } else {
                    addr
                };
                let front =
                    tls::TlsFront::start(SocketAddr::new(ip, config.tls_port), acceptor, backend)
                        .await?;
                let port = front.addr().port();
                urls.push(match &config.tls_host {
                    Some(host) => format!("turns:{host}:{port}?transport=tcp"),
                    None => format!("turns:{}?transport=tcp", SocketAddr::new(announced, port)),
                });
                Some(front)
            }
            _ => None,
        };
        let issuer = Issuer {
            secret,
            ttl: Duration::from_secs(config.credential_ttl_secs),
            urls,
        };
        Ok(Turn {
            _server: server,
            tls,
            issuer,
            addr,
        })
    }

    /// What mints participants' credentials.
    pub fn issuer(&self) -> Issuer {
        self.issuer.clone()
    }

    /// The address it listens on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it listens on for TLS, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(tls::TlsFront::addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_its_quota_of_allocations_and_a_client_its_rate() {
        let limits = Limits {
            allocations_per_user: 2,
            bytes_per_sec: 1000.0,
            counts: Default::default(),
        };
        assert!(!limits.over_quota("a"));
        assert!(!limits.over_quota("a"));
        assert!(limits.over_quota("a"));
        assert!(!limits.over_quota("b"), "another user has its own");
        let from = "127.0.0.1:5000".parse().expect("literal");
        // A second's worth at once, then nothing more until it refills.
        assert!(limits.admit(from, 600));
        assert!(limits.admit(from, 400));
        assert!(!limits.admit(from, 100));
        assert!(limits.admit("127.0.0.1:5001".parse().expect("literal"), 100));
    }

    #[test]
    fn credentials_verify_until_they_expire_and_only_with_their_password() {
        let secret = Arc::new([7u8; 32]);
        let issuer = Issuer {
            secret: secret.clone(),
            ttl: Duration::from_secs(60),
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        };
        let server = issuer.ice_server(PeerId(42));
        let (user, pass) = (
            server.username.expect("a username"),
            server.credential.expect("a credential"),
        );
        assert!(user.ends_with(":000000000000002a"), "{user}");
        let creds = Credentials { secret };
        let from = "127.0.0.1:9".parse().expect("literal");
        use secrecy::ExposeSecret;
        let got = creds.auth_handle(&user, "sfud", from).expect("accepted");
        assert_eq!(got.expose_secret(), pass);
        // Expired or not a TURN REST user: a password that is not its own.
        let expired = format!("{}:000000000000002a", unix_now() - 1);
        let refused = |user: &str| {
            let got = creds.auth_handle(user, "sfud", from).expect("answered");
            got.expose_secret() != password(&[7u8; 32], user)
        };
        assert!(refused(&expired));
        assert!(refused("not-a-rest-user"));
        // Another secret, another password.
        assert_ne!(password(&[8u8; 32], &user), pass);
    }
}
