//! Operators' requests between nodes: a node asks another node's
//! `/cluster/control` (a WebSocket, presenting the cluster secret) to
//! answer a control request for the rooms it serves, one request per
//! connection. The answering node acts only on itself, so a request is
//! forwarded at most once.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sfu_proto::control::cluster::ClusterNode;
use sfu_proto::control::{Request, Response};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::{directory, lease, Cluster, ClusterError};

/// The header carrying the cluster secret on a node-to-node request.
pub const SECRET_HEADER: &str = "x-sfud-cluster-secret";
/// The header naming the node that sends a node-to-node request.
pub const NODE_HEADER: &str = "x-sfud-node";

/// How long another node has to answer a request.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a room's detail with many members).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// A node other than this one that serves a room, or is in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node_id: String,
    /// Its signaling URL.
    pub url: String,
}

impl Cluster {
    /// The other node that holds `room`'s lease, if one does. A holder that
    /// has left the directory (it stopped or died) is an error naming it.
    pub async fn owner_elsewhere(&self, room: &str) -> Result<Option<Peer>, ClusterError> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let mut conn = Self::connection(inner).await?;
        let found = async {
            let Some((node_id, _)) = lease::holder(&mut conn, room).await? else {
                return Ok(None);
            };
            if node_id == inner.node_id {
                return Ok(None);
            }
            let url = directory::url_of(&mut conn, &node_id).await?;
            Ok(Some((node_id, url)))
        };
        match Self::within(inner, found).await? {
            None => Ok(None),
            Some((node_id, Some(url))) => Ok(Some(Peer { node_id, url })),
            Some((node_id, None)) => Err(Self::unavailable(
                inner,
                format!("node {node_id} holds room `{room}` but has left the directory (stopped or died; the room is free within 10 s)"),
            )),
        }
    }

    /// The other nodes of the directory.
    pub async fn other_nodes(&self) -> Result<Vec<ClusterNode>, ClusterError> {
        let inner = self.inner.as_ref().ok_or(ClusterError::NotClustered)?;
        let mut nodes = Self::list_nodes(inner).await?;
        nodes.retain(|n| n.node_id != inner.node_id);
        Ok(nodes)
    }

    /// Asks node `url` to answer `request` for itself.
    pub async fn ask(&self, url: &str, request: &Request) -> Result<Response, String> {
        tokio::time::timeout(ASK_TIMEOUT, self.ask_now(url, request))
            .await
            .map_err(|_| format!("no answer from {url} within 5 s"))?
    }

    async fn ask_now(&self, url: &str, request: &Request) -> Result<Response, String> {
        let mut http = format!("{}/cluster/control", url.trim_end_matches('/'))
            .into_client_request()
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("bad header: {e}"));
        let headers = http.headers_mut();
        headers.insert(SECRET_HEADER, value(self.secret().unwrap_or(""))?);
        headers.insert(NODE_HEADER, value(self.node_id().unwrap_or(""))?);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_ANSWER))
            .max_frame_size(Some(MAX_ANSWER));
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(http, Some(config), true)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
        ws.send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        while let Some(frame) = ws.next().await {
            match frame.map_err(|e| format!("{url}: {e}"))? {
                Message::Text(t) => {
                    let _ = ws.close(None).await;
                    return serde_json::from_str(t.as_str())
                        .map_err(|e| format!("{url} answered what is not a response: {e}"));
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        Err(format!("{url} closed without answering"))
    }
}
