//! Who may join: join tokens (JWT, HS256) signed with keys from the
//! configuration, named by key id so keys can rotate.
//!
//! A token carries the room, the display name, the role and an expiry; they
//! override what the `join` asks for. In `open` mode (loopback only, see
//! `config::AuthConfig`) no token is needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sfu_proto::signaling::{ErrorCode, Role};

use crate::config::{AuthConfig, AuthMode};
use crate::rooms::Refusal;

/// What a join token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room it admits to.
    pub room: String,
    /// The display name to use.
    pub name: String,
    /// The role to take.
    pub role: Role,
    /// Expiry, seconds since the UNIX epoch.
    pub exp: u64,
    /// Issued at, seconds since the UNIX epoch.
    #[serde(default)]
    pub iat: u64,
    /// Whether the name may already be in use in the room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_duplicate_name: bool,
}

/// Seconds of clock difference between a token's issuer and sfud that
/// `exp`, `nbf` and `iat` tolerate.
const CLOCK_SKEW: u64 = 5;

/// What a join is allowed to be after the token (if any) is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Room to join.
    pub room: String,
    /// Name to use.
    pub name: String,
    /// Role to take.
    pub role: Role,
    /// Whether the name may already be in use.
    pub allow_duplicate_name: bool,
}

/// Checks and mints join tokens.
pub struct Authority {
    mode: AuthMode,
    keys: Vec<(String, EncodingKey, DecodingKey)>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _, _)| id.as_str()).collect();
        f.debug_struct("Authority")
            .field("mode", &self.mode)
            .field("keys", &ids)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authority {
    /// From the `[auth]` section.
    pub fn new(config: &AuthConfig) -> Self {
        Authority {
            mode: config.mode,
            keys: config
                .keys
                .iter()
                .map(|k| {
                    (
                        k.id.clone(),
                        EncodingKey::from_secret(k.secret.as_bytes()),
                        DecodingKey::from_secret(k.secret.as_bytes()),
                    )
                })
                .collect(),
        }
    }

    /// Decides what a join may be. Errors never contain the token.
    pub fn admit(
        &self,
        room: &str,
        name: &str,
        role: Role,
        token: Option<&str>,
    ) -> Result<Admission, Refusal> {
        let token = match (token, self.mode) {
            (Some(t), _) if !self.keys.is_empty() => t,
            (_, AuthMode::Open) => {
                return Ok(Admission {
                    room: room.to_owned(),
                    name: name.to_owned(),
                    role,
                    allow_duplicate_name: false,
                })
            }
            (_, AuthMode::Token) => {
                return Err(Refusal::new(
                    ErrorCode::TokenRequired,
                    "this server needs a join token: pass \"token\" in join",
                ))
            }
        };
        let claims = self.verify(token)?;
        // A join may leave the room to its token; one that names another
        // room is told, rather than moved there.
        if !room.is_empty() && claims.room != room {
            return Err(Refusal::new(
                ErrorCode::WrongRoom,
                format!("the token is for room `{}`, not `{room}`", claims.room),
            ));
        }
        Ok(Admission {
            room: claims.room,
            name: claims.name,
            role: claims.role,
            allow_duplicate_name: claims.allow_duplicate_name,
        })
    }

    /// Checks signature, key id and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let bad =
            |why: &str| Refusal::new(ErrorCode::BadToken, format!("join token rejected: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("not a JWT"))?;
        if header.alg != Algorithm::HS256 {
            return Err(bad("only HS256 tokens are accepted"));
        }
        let kid = header
            .kid
            .ok_or_else(|| bad("no key id (kid) in its header"))?;
        let (_, _, key) = self
            .keys
            .iter()
            .find(|(id, _, _)| *id == kid)
            .ok_or_else(|| bad("signed with a key this server does not have (rotated out?)"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_SKEW;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Refusal::new(ErrorCode::TokenExpired, "the join token has expired")
                }
                ErrorKind::ImmatureSignature => bad("not valid yet (nbf is in the future)"),
                ErrorKind::InvalidSignature => bad("bad signature"),
                _ => bad("malformed claims"),
            })?;
        // A token issued in the future comes from a wrong clock or a forger.
        if claims.iat > unix_now() + CLOCK_SKEW {
            return Err(bad("issued in the future (iat); check the issuer's clock"));
        }
        Ok(claims)
    }

    /// Signs a token with the first configured key.
    pub fn mint(
        &self,
        room: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        allow_duplicate_name: bool,
    ) -> Result<String, Refusal> {
        let (kid, key, _) = self.keys.first().ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotAllowed,
                "no signing key is configured: add [[auth.keys]] to the config and reload",
            )
        })?;
        let now = unix_now();
        let claims = Claims {
            room: room.to_owned(),
            name: name.to_owned(),
            role,
            exp: now + ttl.as_secs(),
            iat: now,
            allow_duplicate_name,
        };
        let header = Header {
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| Refusal::new(ErrorCode::Internal, format!("cannot sign: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthKey;

    const SECRET_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SECRET_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn authority(mode: AuthMode, keys: &[(&str, &str)]) -> Authority {
        Authority::new(&AuthConfig {
            mode,
            keys: keys
                .iter()
                .map(|(id, secret)| AuthKey {
                    id: (*id).into(),
                    secret: (*secret).into(),
                })
                .collect(),
        })
    }

    fn code(r: Result<Admission, Refusal>) -> ErrorCode {
        r.expect_err("refused").code
    }

    #[test]
    fn open_mode_admits_what_the_join_asks() {
        let a = authority(AuthMode::Open, &[]);
        let adm = a.admit("r", "n", Role::Listener, None).expect("admitted");
        assert_eq!(
            (adm.room.as_str(), adm.name.as_str(), adm.role),
            ("r", "n", Role::Listener)
        );
    }

    #[test]
    fn token_overrides_name_and_role_but_not_the_room() {
        let a = authority(AuthMode::Token, &[("k1", SECRET_A)]);
        let t = a
            .mint("r", "alice", Role::Listener, Duration::from_secs(60), false)
            .expect("minted");
        let adm = a
            .admit("r", "mallory", Role::Speaker, Some(&t))
            .expect("admitted");
        assert_eq!((adm.name.as_str(), adm.role), ("alice", Role::Listener));
        assert_eq!(
            code(a.admit("other", "x", Role::Speaker, Some(&t))),
            ErrorCode::WrongRoom
        );
        assert_eq!(
            code(a.admit("r", "x", Role::Speaker, None)),
            ErrorCode::TokenRequired
        );
    }

    #[test]
    fn tokens_not_yet_valid_or_issued_in_the_future_are_refused() {
        let a = authority(AuthMode::Token, &[("k1", SECRET_A)]);
        let header = Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        };
        let now = unix_now();
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({
                "room": "r", "name": "n", "role": "speaker", "exp": now + 600, "iat": now,
            });
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_secret(SECRET_A.as_bytes()),
            )
            .expect("encodes")
        };
        let refused = |t: String| {
            a.admit("r", "n", Role::Speaker, Some(&t))
                .expect_err("refused")
        };
        let later = refused(token(serde_json::json!({"nbf": now + 600})));
        assert_eq!(later.code, ErrorCode::BadToken);
        assert!(later.message.contains("nbf"), "{}", later.message);
        let future = refused(token(serde_json::json!({"iat": now + 600})));
        assert_eq!(future.code, ErrorCode::BadToken);
        assert!(future.message.contains("iat"), "{}", future.message);
        // Within the clock skew, and with nbf passed, they are fine.
        for extra in [
            serde_json::json!({"nbf": now - 10}),
            serde_json::json!({"iat": now + 2, "nbf": now + 2}),
        ] {
            a.admit("r", "n", Role::Speaker, Some(&token(extra)))
                .expect("admitted");
        }
    }

    #[test]
    fn expired_forged_and_garbage_tokens_get_distinct_codes() {
        let a = authority(AuthMode::Token, &[("k1", SECRET_A)]);
        let forger = authority(AuthMode::Token, &[("k1", SECRET_B)]);
        let expired = Claims {
            room: "r".into(),
            name: "n".into(),
            role: Role::Speaker,
            exp: unix_now() - 3600,
            iat: 0,
            allow_duplicate_name: false,
        };
        let header = Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        };
        let expired = jsonwebtoken::encode(
            &header,
            &expired,
            &EncodingKey::from_secret(SECRET_A.as_bytes()),
        )
        .expect("encodes");
        assert_eq!(
            code(a.admit("r", "n", Role::Speaker, Some(&expired))),
            ErrorCode::TokenExpired
        );
        let forged = forger
            .mint("r", "n", Role::Speaker, Duration::from_secs(60), false)
            .expect("minted");
        assert_eq!(
            code(a.admit("r", "n", Role::Speaker, Some(&forged))),
            ErrorCode::BadToken
        );
        assert_eq!(
            code(a.admit("r", "n", Role::Speaker, Some("garbage"))),
            ErrorCode::BadToken
        );
    }

    #[test]
    fn rotation_accepts_every_listed_key_and_signs_with_the_first() {
        let old = authority(AuthMode::Token, &[("old", SECRET_A)]);
        let both = authority(AuthMode::Token, &[("new", SECRET_B), ("old", SECRET_A)]);
        let new_only = authority(AuthMode::Token, &[("new", SECRET_B)]);
        let t_old = old
            .mint("r", "n", Role::Speaker, Duration::from_secs(60), false)
            .expect("minted");
        let t_new = both
            .mint("r", "n", Role::Speaker, Duration::from_secs(60), false)
            .expect("minted");
        assert!(both.admit("r", "n", Role::Speaker, Some(&t_old)).is_ok());
        assert!(new_only
            .admit("r", "n", Role::Speaker, Some(&t_new))
            .is_ok());
        assert_eq!(
            code(new_only.admit("r", "n", Role::Speaker, Some(&t_old))),
            ErrorCode::BadToken
        );
    }
}
