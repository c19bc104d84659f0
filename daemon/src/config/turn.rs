//! `[turn]`: the embedded TURN server (see `crate::turn`).

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
        Ok(())
    }
}
