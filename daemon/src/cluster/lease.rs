//! Room leases in Redis: which node serves a room.
//!
//! `sfud:room:{room}` holds `"{fence} {node_id}"` with an expiry. A node
//! takes a room's lease only if nobody holds it (atomically, in one Lua
//! script), with a fencing token from the counter `sfud:fence` that only
//! grows: a lease taken later always has a larger fence. The owner renews
//! before the expiry; renewing, like releasing, succeeds only while the
//! key still holds exactly the owner's value, so a node whose lease
//! expired (it was cut off from Redis) learns at its next renewal that it
//! lost the room, and can never extend a lease another node has taken
//! since. Two nodes never hold one room's lease.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisError, Script};

const FENCE: &str = "sfud:fence";

/// Takes the lease if nobody holds it, with the next fence; answers
/// `{taken, value}`. Built once: a script's SHA-1 is computed when built.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local held = redis.call('GET', KEYS[1])
        if held then return {0, held} end
        local fence = redis.call('INCR', KEYS[2])
        local value = fence .. ' ' .. ARGV[1]
        redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
        return {1, value}
        ",
    )
});

/// Extends the lease while it holds exactly the owner's value.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        ",
    )
});

/// Deletes the lease while it holds exactly the owner's value.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
        end
        return 0
        ",
    )
});

fn room_key(room: &str) -> String {
    format!("sfud:room:{room}")
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The room.
    pub room: String,
    /// The holder.
    pub node_id: String,
    /// Larger for every lease taken after this one, of any room.
    pub fence: u64,
}

impl Lease {
    fn value(&self) -> String {
        format!("{} {}", self.fence, self.node_id)
    }
}

/// Who holds a room's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node, now.
    Taken(Lease),
    /// Another node (or this one, from an earlier lease).
    Other {
        /// The holder's node id.
        node_id: String,
        /// Its lease's fence.
        fence: u64,
    },
}

/// `"{fence} {node_id}"` as its parts.
fn parse(value: &str) -> Option<(u64, String)> {
    let (fence, node) = value.split_once(' ')?;
    Some((fence.parse().ok()?, node.to_owned()))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Takes `room`'s lease for `node_id` for `ttl`, unless someone holds it.
pub async fn acquire(
    conn: &mut impl ConnectionLike,
    room: &str,
    node_id: &str,
    ttl: Duration,
) -> Result<Holder, RedisError> {
    let (taken, value): (u8, String) = ACQUIRE
        .key(room_key(room))
        .key(FENCE)
        .arg(node_id)
        .arg(ms(ttl))
        .invoke_async(conn)
        .await?;
    let Some((fence, holder)) = parse(&value) else {
        // Written by something else: treated as held, never overwritten.
        return Ok(Holder::Other {
            node_id: value,
            fence: 0,
        });
    };
    Ok(if taken == 1 {
        Holder::Taken(Lease {
            room: room.to_owned(),
            node_id: holder,
            fence,
        })
    } else {
        Holder::Other {
            node_id: holder,
            fence,
        }
    })
}

/// Extends `lease` to `ttl` from now; `false` when it is no longer held
/// (it expired, and perhaps another node took the room).
pub async fn renew(
    conn: &mut impl ConnectionLike,
    lease: &Lease,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let renewed: u8 = RENEW
        .key(room_key(&lease.room))
        .arg(lease.value())
        .arg(ms(ttl))
        .invoke_async(conn)
        .await?;
    Ok(renewed == 1)
}

/// Gives `lease` up, if it is still held.
pub async fn release(conn: &mut impl ConnectionLike, lease: &Lease) -> Result<(), RedisError> {
    let _: u8 = RELEASE
        .key(room_key(&lease.room))
        .arg(lease.value())
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// Who holds `room`'s lease now, if anyone.
pub async fn holder(
    conn: &mut impl ConnectionLike,
    room: &str,
) -> Result<Option<(String, u64)>, RedisError> {
    let value: Option<String> = redis::cmd("GET")
        .arg(room_key(room))
        .query_async(conn)
        .await?;
    Ok(value
        .and_then(|v| parse(&v))
        .map(|(fence, node)| (node, fence)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_back_and_others_do_not() {
        let lease = Lease {
            room: "standup".into(),
            node_id: "sfu-1".into(),
            fence: 42,
        };
        assert_eq!(parse(&lease.value()), Some((42, "sfu-1".to_owned())));
        assert_eq!(parse("sfu-1"), None);
        assert_eq!(parse("x sfu-1"), None);
    }
}
