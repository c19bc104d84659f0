//! `[cluster]`: several sfud nodes sharing rooms through Redis.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[cluster]`: absent (no `redis_url`), the daemon is a single node.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the nodes' directory lives, e.g. `redis://127.0.0.1:6379`
    /// (`rediss://` for TLS is not built in).
    pub redis_url: Option<String>,
    /// This node's name in the cluster: 1 to 64 letters, digits, `.`, `_`
    /// or `-`. Default: the host name.
    pub node_id: Option<String>,
    /// The URL other nodes reach this node's signaling on, e.g.
    /// `ws://10.0.0.5:8080`. Default: `ws://` and `http.listen`.
    pub url: Option<String>,
    /// The secret every node of the cluster shares (at least
    /// [`MIN_SECRET`] bytes): a node relaying a join or an operator's
    /// request to another presents it. Required with `redis_url`.
    pub secret: Option<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url)
            .field("node_id", &self.node_id)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The shortest cluster secret.
pub const MIN_SECRET: usize = 32;

/// The longest node id.
pub const MAX_NODE_ID: usize = 64;

/// Whether `id` is a usable node id (it becomes part of Redis keys).
pub fn valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ClusterConfig {
    /// Whether this daemon is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(invalid(
                    "cluster.redis_url",
                    "must be a redis:// or unix:// URL, e.g. \"redis://127.0.0.1:6379\"",
                ));
            }
            // Parses the URL; connects only when used.
            if let Err(e) = redis::Client::open(url.as_str()) {
                return Err(invalid("cluster.redis_url", format!("{e}: {url:?}")));
            }
            match &self.secret {
                None => {
                    return Err(invalid(
                        "cluster.secret",
                        format!("is required with cluster.redis_url: the same random string of at least {MIN_SECRET} bytes on every node (e.g. `openssl rand -hex 32`)"),
                    ))
                }
                Some(s) if s.len() < MIN_SECRET => {
                    return Err(invalid(
                        "cluster.secret",
                        format!("must be at least {MIN_SECRET} bytes, not {}", s.len()),
                    ))
                }
                Some(_) => {}
            }
        } else if self.node_id.is_some() || self.url.is_some() || self.secret.is_some() {
            return Err(invalid(
                "cluster.redis_url",
                "is required when cluster.node_id, cluster.url or cluster.secret is set",
            ));
        }
        if let Some(id) = &self.node_id {
            if !valid_node_id(id) {
                return Err(invalid(
                    "cluster.node_id",
                    format!("must be 1 to {MAX_NODE_ID} letters, digits, '.', '_' or '-'"),
                ));
            }
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.len() > 512 {
                return Err(invalid(
                    "cluster.url",
                    "must be a ws:// or wss:// URL, e.g. \"ws://10.0.0.5:8080\"",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn cluster(redis_url: Option<&str>, node_id: Option<&str>, url: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            redis_url: redis_url.map(str::to_owned),
            node_id: node_id.map(str::to_owned),
            url: url.map(str::to_owned),
            secret: redis_url.map(|_| SECRET.to_owned()),
        }
    }

    fn refused_key(c: &ClusterConfig) -> Option<String> {
        match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn absent_is_a_single_node_and_a_full_section_is_valid() {
        assert!(!ClusterConfig::default().enabled());
        assert_eq!(ClusterConfig::default().validate().ok(), Some(()));
        let full = cluster(
            Some("redis://127.0.0.1:6379"),
            Some("node-1.example"),
            Some("ws://10.0.0.5:8080"),
        );
        assert!(full.enabled());
        assert_eq!(full.validate().ok(), Some(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = [
            (cluster(Some("http://x"), None, None), "cluster.redis_url"),
            (cluster(Some("redis://"), None, None), "cluster.redis_url"),
            (cluster(None, Some("a"), None), "cluster.redis_url"),
            (
                cluster(Some("redis://h"), Some(""), None),
                "cluster.node_id",
            ),
            (
                cluster(Some("redis://h"), Some("a:b"), None),
                "cluster.node_id",
            ),
            (
                cluster(Some("redis://h"), Some(&"x".repeat(65)), None),
                "cluster.node_id",
            ),
            (
                cluster(Some("redis://h"), None, Some("10.0.0.5:8080")),
                "cluster.url",
            ),
        ];
        for (c, key) in bad {
            assert_eq!(refused_key(&c).as_deref(), Some(key), "{c:?}");
        }
        let mut no_secret = cluster(Some("redis://h"), None, None);
        no_secret.secret = None;
        assert_eq!(refused_key(&no_secret).as_deref(), Some("cluster.secret"));
        no_secret.secret = Some("short".into());
        assert_eq!(refused_key(&no_secret).as_deref(), Some("cluster.secret"));
        assert!(!format!("{no_secret:?}").contains("short"), "secret shown");
        let alone = ClusterConfig {
            secret: Some(SECRET.into()),
            ..ClusterConfig::default()
        };
        assert_eq!(refused_key(&alone).as_deref(), Some("cluster.redis_url"));
    }
}
