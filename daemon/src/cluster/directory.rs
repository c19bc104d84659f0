//! The node directory in Redis:
//!
//! - `sfud:node:{node_id}`: the node's [`ClusterNode`] as JSON, set every
//!   [`HEARTBEAT`] with a time to live of [`NODE_TTL`]: a node that stops
//!   (or loses Redis) drops out by itself;
//! - `sfud:nodes`: a sorted set of node ids by the time of their last
//!   heartbeat (milliseconds since the UNIX epoch), the index to list;
//!   ids silent for [`FORGET_AFTER`] are pruned from it.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::RedisError;
use sfu_proto::control::cluster::ClusterNode;

/// How often a node announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long an announcement lasts.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// When an id is taken out of the index.
const FORGET_AFTER: Duration = Duration::from_secs(60);

const INDEX: &str = "sfud:nodes";

fn node_key(node_id: &str) -> String {
    format!("sfud:node:{node_id}")
}

/// Sets `node`'s entry and index score; prunes ids long silent.
pub(super) async fn announce(
    conn: &mut impl ConnectionLike,
    node: &ClusterNode,
) -> Result<(), RedisError> {
    let json = serde_json::to_string(node).unwrap_or_default();
    let forget_before = node
        .heartbeat_ms
        .saturating_sub(FORGET_AFTER.as_millis() as u64);
    redis::pipe()
        .cmd("SET")
        .arg(node_key(&node.node_id))
        .arg(json)
        .arg("PX")
        .arg(NODE_TTL.as_millis() as u64)
        .ignore()
        .cmd("ZADD")
        .arg(INDEX)
        .arg(node.heartbeat_ms)
        .arg(&node.node_id)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(INDEX)
        .arg("-inf")
        .arg(format!("({forget_before}"))
        .ignore()
        .query_async(conn)
        .await
}

/// Takes `node_id` out of the directory.
pub(super) async fn withdraw(
    conn: &mut impl ConnectionLike,
    node_id: &str,
) -> Result<(), RedisError> {
    redis::pipe()
        .cmd("DEL")
        .arg(node_key(node_id))
        .ignore()
        .cmd("ZREM")
        .arg(INDEX)
        .arg(node_id)
        .ignore()
        .query_async(conn)
        .await
}

/// Where node `node_id` serves signaling, if its entry has not expired.
pub(super) async fn url_of(
    conn: &mut impl ConnectionLike,
    node_id: &str,
) -> Result<Option<String>, RedisError> {
    let json: Option<String> = redis::cmd("GET")
        .arg(node_key(node_id))
        .query_async(conn)
        .await?;
    Ok(json
        .and_then(|j| serde_json::from_str::<ClusterNode>(&j).ok())
        .map(|n| n.url))
}

/// The nodes whose announcement has not expired, sorted by id. An entry
/// that is not a node (written by something else) is skipped.
pub(super) async fn list(conn: &mut impl ConnectionLike) -> Result<Vec<ClusterNode>, RedisError> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(INDEX)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
    let entries: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut nodes: Vec<ClusterNode> = entries
        .into_iter()
        .flatten()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(nodes)
}
