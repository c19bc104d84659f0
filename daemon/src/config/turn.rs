//! `[turn]`: the embedded TURN server (see `crate::turn`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[turn]`: off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSection {
    /// Whether sfud runs a TURN server and hands each participant
    /// credentials for it in `joined`.
    pub enabled: bool,
    /// The port it listens on, UDP and TCP, on the first of `rtc.bind_ips`
    /// (0: a free port).
    pub port: u16,
    /// The realm of its credentials.
    pub realm: String,
    /// The UDP ports its relays use: `relay_min_port` to `relay_max_port`.
    pub relay_min_port: u16,
    /// See `relay_min_port`.
    pub relay_max_port: u16,
    /// How long a participant's credentials stay valid after its join,
    /// seconds (an allocation is refreshed with them).
    pub credential_ttl_secs: u64,
    /// Allocation requests one participant's credentials may make (a
    /// browser makes one or two per connection and relay URL).
    pub max_allocations_per_user: u32,
    /// What one allocation's client may send to be relayed, kbit/s; more is
    /// dropped.
    pub max_kbps_per_allocation: u64,
    /// TURN over TLS (`turns:`): the TCP port, on the same address, when
    /// `tls_cert` is set (0: a free port).
    pub tls_port: u16,
    /// The PEM certificate chain for TLS; TLS is off without it.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The host name in the `turns:` URL participants are given (the name
    /// the certificate is for). Default: the address TURN is announced on.
    pub tls_host: Option<String>,
}

impl Default for TurnSection {
    fn default() -> Self {
        TurnSection {
            enabled: false,
            port: 3478,
            realm: "sfud".to_owned(),
            relay_min_port: 40000,
            relay_max_port: 40999,
            credential_ttl_secs: 12 * 3600,
            max_allocations_per_user: 16,
            max_kbps_per_allocation: 20_000,
            tls_port: 5349,
            tls_cert: None,
            tls_key: None,
            tls_host: None,
        }
    }
}

impl TurnSection {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.relay_min_port == 0 || self.relay_min_port > self.relay_max_port {
            return Err(invalid(
                "turn.relay_min_port",
                "must be 1 to 65535 and at most turn.relay_max_port",
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&self.credential_ttl_secs) {
            return Err(invalid(
                "turn.credential_ttl_secs",
                "must be 60 (a minute) to 604800 (a week)",
            ));
        }
        if self.max_allocations_per_user == 0 {
            return Err(invalid(
                "turn.max_allocations_per_user",
                "must be at least 1",
            ));
        }
        if !(64..=10_000_000).contains(&self.max_kbps_per_allocation) {
            return Err(invalid(
                "turn.max_kbps_per_allocation",
                "must be 64 to 10000000 (10 Gbit/s)",
            ));
        }
        if self.realm.is_empty()
            || self.realm.len() > 128
            || self.realm.chars().any(char::is_control)
        {
            return Err(invalid(
                "turn.realm",
                "must be 1 to 128 printable characters",
            ));
        }
        self.validate_tls()
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "turn.tls_cert",
                "turn.tls_cert and turn.tls_key go together: set both or neither",
            ));
        }
        if self.tls_cert.is_some() && self.tls_port != 0 && self.tls_port == self.port {
            return Err(invalid(
                "turn.tls_port",
                "must differ from turn.port (both listen on TCP)",
            ));
        }
        if let Some(host) = &self.tls_host {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if host.len() > 253 || !host.split('.').all(label_ok) {
                return Err(invalid(
                    "turn.tls_host",
                    "must be a DNS name (letters, digits, '-' and '.') or an IPv4 address",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn refused(lines: &str) -> String {
        let text = format!("[turn]\nenabled = true\n{lines}\n");
        match Config::parse(&text, "sfud.toml") {
            Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
            other => panic!("{lines:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn tls_needs_a_key_with_its_certificate_and_a_port_of_its_own() {
        let shown = refused("tls_cert = \"/etc/sfud/turn.pem\"");
        assert!(shown.contains("turn.tls_cert"), "{shown}");
        let shown = refused("tls_key = \"/etc/sfud/turn.key\"");
        assert!(shown.contains("go together"), "{shown}");
        let shown =
            refused("port = 3478\ntls_port = 3478\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"");
        assert!(shown.contains("turn.tls_port"), "{shown}");
        let shown = refused("tls_host = \"turn example.org\"");
        assert!(shown.contains("turn.tls_host"), "{shown}");
        let text = "[turn]\nenabled = true\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n\
                    tls_host = \"turn.example.org\"\n";
        let config = Config::parse(text, "sfud.toml").expect("valid");
        assert_eq!(config.turn.tls_port, 5349);
        assert_eq!(config.turn.tls_host.as_deref(), Some("turn.example.org"));
    }
}
