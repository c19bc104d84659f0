//! Nodes talking to each other: every node-to-node WebSocket opens here
//! ([`Cluster::open_node_socket`], presenting the cluster secret and this
//! node's id): a client's session relayed to the node serving its room
//! (`signaling::relay`), and operators' requests, which a node asks
//! another node's `/cluster/control` to answer for the rooms it serves,
//! one request per connection. The answering node acts only on itself, so
//! a request is forwarded at most once.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sfu_proto::control::cluster::ClusterNode;
use sfu_proto::control::{Request, Response};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{directory, lease, Cluster, ClusterError};

/// The header carrying the cluster secret on a node-to-node request.
pub const SECRET_HEADER: &str = "x-sfud-cluster-secret";
/// The header naming the node that sends a node-to-node request.
pub const NODE_HEADER: &str = "x-sfud-node";
/// The header carrying the client's address on a relayed session.
pub const CLIENT_HEADER: &str = "x-sfud-client";

/// A WebSocket to another node.
pub type NodeSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
        let mut ws = self
            .open_node_socket(url, "/cluster/control", None, MAX_ANSWER)
            .await?;
        let text = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let answer = first_answer(&mut ws, text)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let _ = ws.close(None).await;
        serde_json::from_str(&answer)
            .map_err(|e| format!("{url} answered what is not a response: {e}"))
    }

    /// A WebSocket to `path` of node `url`, presenting this node's id and
    /// the cluster secret (and, for a relayed session, the client's
    /// address), taking messages up to `max_message` bytes.
    pub async fn open_node_socket(
        &self,
        url: &str,
        path: &str,
        client: Option<IpAddr>,
        max_message: usize,
    ) -> Result<NodeSocket, String> {
        let mut request = format!("{}{path}", url.trim_end_matches('/'))
            .into_client_request()
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("bad header: {e}"));
        let headers = request.headers_mut();
        headers.insert(SECRET_HEADER, value(self.secret().unwrap_or(""))?);
        headers.insert(NODE_HEADER, value(self.node_id().unwrap_or(""))?);
        if let Some(client) = client {
            headers.insert(CLIENT_HEADER, value(&client.to_string())?);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(crate::signaling::READ_BUFFER)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        Ok(ws)
    }
}

/// Sends `text` to another node and returns the first text frame it
/// answers with.
pub async fn first_answer(ws: &mut NodeSocket, text: String) -> Result<String, String> {
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| e.to_string())? {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    Err("closed without answering".to_owned())
}
