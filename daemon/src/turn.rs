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
use stun_codec::rfc5766::errors::Forbidden;
use stun_codec::rfc5766::methods::{CHANNEL_BIND, CREATE_PERMISSION, SEND};
use stun_codec::{Message, MessageClass};

use crate::config::TurnSection;
use crate::media::PeerId;

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

/// A listener that lets only relays to sfud's own media through.
struct OnlyToSfud {
    inner: Arc<dyn Transport + Send + Sync>,
    /// sfud's UDP media addresses, bound and announced.
    peers: Arc<Vec<SocketAddr>>,
}

impl OnlyToSfud {
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
            let Request::Message(msg) = &request else {
                return Ok((request, from));
            };
            if !self.forbidden(msg) {
                return Ok((request, from));
            }
            tracing::info!(%from, "TURN relay to an address that is not sfud's refused");
            if msg.class() == MessageClass::Request {
                let mut refusal = Message::new(
                    MessageClass::ErrorResponse,
                    msg.method(),
                    msg.transaction_id(),
                );
                refusal.add_attribute(Attribute::ErrorCode(ErrorCode::from(Forbidden)));
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
        let wrap = |inner: Arc<dyn Transport + Send + Sync>| -> Arc<dyn Transport + Send + Sync> {
            Arc::new(OnlyToSfud {
                inner,
                peers: peers.clone(),
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
        let issuer = Issuer {
            secret,
            ttl: Duration::from_secs(config.credential_ttl_secs),
            urls: vec![
                format!("turn:{at}?transport=udp"),
                format!("turn:{at}?transport=tcp"),
            ],
        };
        Ok(Turn {
            _server: server,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
