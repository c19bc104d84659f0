//! WHIP (RFC 9725): publishing into a room from a streaming tool (OBS,
//! GStreamer's WHIP clients, hardware encoders) over plain HTTP.
//!
//! `POST /whip/{room}` with an SDP offer joins the room as a speaker that
//! publishes and receives nothing, and answers `201 Created` with the SDP
//! answer (the server's candidates in it: sfud is ICE-lite, the client
//! needs nothing else), the session's `Location` and `ETag`, and the
//! room's ICE servers as `Link` headers. The publisher is a participant
//! like any other: shown in `rooms show`, recorded, kicked. `PATCH` takes
//! trickled candidates (sfud learns the client's address from its checks,
//! so they are accepted and not needed) and refuses an ICE restart;
//! `DELETE` leaves. A session ends by itself when its connection is lost or
//! an operator removes it. Auth is the join token as `Authorization:
//! Bearer`, or none where the server is open.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sfu_proto::signaling::{CandidateInit, ErrorCode, PcKind, Role, RoomMode, ServerMessage};
use tokio::sync::mpsc;

use super::AppState;
use crate::rooms::{Membership, Outbound, Refusal};

/// How long the room may take to answer an offer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// Largest offer or PATCH body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Messages the room may queue for a session (it reads them at once).
const OUTBOX: usize = 64;

/// The open WHIP sessions, by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

struct Session {
    room: String,
    membership: Membership,
    etag: String,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An error response: the RFC's status, and the stable code with its
/// explanation as text.
fn refused(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let mut r = (status, format!("{code}: {message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    with_cors(r)
}

/// The status a refusal of the room takes in WHIP.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::TokenRequired | ErrorCode::BadToken | ErrorCode::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::WrongRoom | ErrorCode::NotAllowed => StatusCode::FORBIDDEN,
        ErrorCode::UnknownRoom | ErrorCode::RoomClosed | ErrorCode::UnknownTrack => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::WrongMode | ErrorCode::NameTaken => StatusCode::CONFLICT,
        ErrorCode::RoomFull
        | ErrorCode::TooManyRooms
        | ErrorCode::ShuttingDown
        | ErrorCode::RoomElsewhere
        | ErrorCode::RoomUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn refusal(r: &Refusal) -> Response {
    refused(status_of(r.code), r.code, &r.message)
}

/// CORS for browser WHIP clients on other origins.
fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch"),
    );
    r
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether the request's body is of `media_type`.
fn content_type_is(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}

/// The refusal (415, 413) of a request body that is not of `media_type`
/// or is over [`MAX_BODY_BYTES`].
fn body_refusal(headers: &HeaderMap, body: &Bytes, media_type: &str) -> Option<Response> {
    if !content_type_is(headers, media_type) {
        return Some(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            &format!("the body must be {media_type}"),
        ));
    }
    (body.len() > MAX_BODY_BYTES).then(|| {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &format!("the body is over {MAX_BODY_BYTES} bytes"),
        )
    })
}

/// `OPTIONS /whip/{room}` and on a session: what browsers ask first.
pub(super) async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    with_cors(r)
}

/// `POST /whip/{room}`: an offer in, the publisher joined, the answer out.
pub(super) async fn publish(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    open(state, remote, room, headers, body, Kind::Whip).await
}

/// `POST /whep/{room}`: a viewer's offer in, the viewer joined, the answer
/// with the room's first speaker's tracks out.
pub(super) async fn view(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    open(state, remote, room, headers, body, Kind::Whep).await
}

/// Which of the two protocols a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Ingest: a publisher.
    Whip,
    /// Egress: a viewer.
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// Joins `room` for a WHIP publisher or a WHEP viewer and answers its
/// offer.
async fn open(
    state: Arc<AppState>,
    remote: SocketAddr,
    room: String,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    if let Some(r) = body_refusal(&headers, &body, "application/sdp") {
        return r;
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadSdp,
            "the offer is not UTF-8",
        );
    };
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some() && !state.gate.origin_allowed(origin) {
        return refused(
            StatusCode::FORBIDDEN,
            ErrorCode::NotAllowed,
            "pages of this origin may not publish here (http.allowed_origins)",
        );
    }
    if state.draining.is_cancelled() {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        );
    }
    if !state.gate.join_allowed(remote.ip()) {
        return refused(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many joins from your address: wait a moment",
        );
    }
    let id = format!("{:032x}", rand::random::<u128>());
    // Open rooms name the client after its session (unique in the room).
    let name = format!("{}-{}", kind.path(), &id[..6]);
    let role = match kind {
        Kind::Whip => Role::Speaker,
        Kind::Whep => Role::Listener,
    };
    let mut admission = match state.gate.admit(&room, &name, role, bearer(&headers)) {
        Ok(a) => a,
        Err(r) => {
            tracing::info!(%room, code = %r.code, ?kind, "WHIP/WHEP session refused");
            return refusal(&r);
        }
    };
    match kind {
        Kind::Whip if admission.role != Role::Speaker => {
            return refused(
                StatusCode::FORBIDDEN,
                ErrorCode::NotAllowed,
                "the token is a listener's: WHIP publishes",
            );
        }
        // A viewer publishes nothing, whatever its token allows.
        Kind::Whep => admission.role = Role::Listener,
        Kind::Whip => {}
    }
    if let Err(r) = state.rooms.claim(&admission.room).await {
        return refusal(&r);
    }
    let (out, mut inbox) = mpsc::channel(OUTBOX);
    let membership = match state
        .rooms
        .join_unsubscribed(&admission, Some(RoomMode::Sfu), out)
        .await
    {
        Ok(m) => m,
        Err(r) => return refusal(&r),
    };
    let negotiated = match kind {
        Kind::Whip => answer(&membership, offer, &mut inbox).await,
        Kind::Whep => membership
            .room
            .view(membership.peer, offer)
            .await
            .map(|n| with_candidates(&n.sdp, &n.candidates)),
    };
    let answer = match negotiated {
        Ok(answer) => answer,
        Err(r) => {
            membership.room.leave(membership.peer).await;
            return refusal(&r);
        }
    };
    let room = admission.room.clone();
    let peer = membership.peer;
    let etag = format!("\"{}\"", &id[..16]);
    tracing::info!(%room, peer = %membership.peer, session = %id, ?kind, "WHIP/WHEP session opened");
    state.whip.lock().insert(
        id.clone(),
        Session {
            room: room.clone(),
            membership,
            etag: etag.clone(),
        },
    );
    // The room's messages for the session: its end is the session's.
    let sessions = state.whip.clone();
    let session = id.clone();
    tokio::spawn(async move {
        while let Some(msg) = inbox.recv().await {
            if matches!(msg, Outbound::Close(_)) {
                break;
            }
        }
        sessions.lock().remove(&session);
    });
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/{}/{room}/{id}", kind.path())) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    for link in ice_server_links(&state, peer) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    with_cors(r)
}

/// Hands the offer to the room and waits for its answer, with the
/// server's candidates written into it.
async fn answer(
    m: &Membership,
    offer: String,
    inbox: &mut mpsc::Receiver<Outbound>,
) -> Result<String, Refusal> {
    m.room.offer(m.peer, offer, Vec::new()).await?;
    let timeout = || Refusal::new(ErrorCode::Internal, "the room did not answer in time");
    let deadline = tokio::time::Instant::now() + ANSWER_DEADLINE;
    let mut answer = None;
    let mut candidates = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, inbox.recv())
            .await
            .map_err(|_| timeout())?;
        match msg {
            Some(Outbound::Message(ServerMessage::Answer { sdp, .. })) => answer = Some(sdp),
            Some(Outbound::Message(ServerMessage::Candidate {
                pc: PcKind::Publish,
                candidate: Some(c),
            })) => candidates.push(c),
            Some(Outbound::Message(ServerMessage::Candidate {
                pc: PcKind::Publish,
                candidate: None,
            })) => break,
            Some(Outbound::Message(ServerMessage::Error { code, message, .. })) => {
                return Err(Refusal::new(code, message))
            }
            Some(Outbound::Close(why)) => {
                let (code, message) =
                    why.unwrap_or((ErrorCode::Internal, "the room closed".to_owned()));
                return Err(Refusal::new(code, message));
            }
            Some(Outbound::Message(_)) => {}
            None => return Err(Refusal::new(ErrorCode::Internal, "the room closed")),
        }
        // An answer already carries its candidates when none are trickled.
        if answer.is_some() && inbox.is_empty() && candidates.is_empty() {
            let sdp = answer.as_deref().unwrap_or_default();
            if sdp.contains("a=candidate:") {
                break;
            }
        }
    }
    let sdp = answer.ok_or_else(timeout)?;
    Ok(with_candidates(&sdp, &candidates))
}

/// `sdp` with `candidates` and `a=end-of-candidates` in each media
/// section (where it has none of its own).
pub(crate) fn with_candidates(sdp: &str, candidates: &[CandidateInit]) -> String {
    if candidates.is_empty() || sdp.contains("a=candidate:") {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 128 * candidates.len());
    let mut in_media = false;
    let close = |out: &mut String| {
        for c in candidates {
            out.push_str("a=");
            out.push_str(c.candidate.trim_start_matches("a="));
            out.push_str("\r\n");
        }
        out.push_str("a=end-of-candidates\r\n");
    };
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            if in_media {
                close(&mut out);
            }
            in_media = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if in_media {
        close(&mut out);
    }
    out
}

/// The room's ICE servers as RFC 9725 `Link` headers.
fn ice_server_links(state: &AppState, peer: crate::media::PeerId) -> Vec<String> {
    let mut links = Vec::new();
    for s in state.rooms.ice_servers_for(peer) {
        for url in &s.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(user), Some(credential)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{user}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

/// `PATCH /whip/{room}/{id}`: trickled candidates, taken (sfud needs none)
/// if they belong to the session's ICE session; an ICE restart (new
/// credentials) is refused.
pub(super) async fn patch(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let etag = match state.whip.lock().get(&id).filter(|s| s.room == room) {
        Some(s) => s.etag.clone(),
        None => return no_session(),
    };
    if let Some(r) = body_refusal(&headers, &body, "application/trickle-ice-sdpfrag") {
        return r;
    }
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    if if_match.is_some_and(|v| v.trim() != "*" && v.trim() != etag) {
        return refused(
            StatusCode::PRECONDITION_FAILED,
            ErrorCode::BadRequest,
            "If-Match names another ICE session",
        );
    }
    let fragment = String::from_utf8_lossy(&body);
    // New credentials without If-Match: "*" would be an ICE restart.
    if if_match.is_some_and(|v| v.trim() == "*") {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            "ICE restarts are not supported: publish again",
        );
    }
    let candidates = fragment
        .lines()
        .filter(|l| l.trim_start().starts_with("a=candidate:"))
        .count();
    tracing::debug!(session = %id, candidates, "WHIP trickle");
    with_cors(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /whip/{room}/{id}`: the publisher leaves.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    let session = {
        let mut map = state.whip.lock();
        match map.get(&id) {
            Some(s) if s.room == room => map.remove(&id),
            _ => None,
        }
    };
    let Some(session) = session else {
        return no_session();
    };
    session.membership.room.leave(session.membership.peer).await;
    tracing::info!(%room, session = %id, "WHIP publisher left");
    with_cors(StatusCode::OK.into_response())
}

fn no_session() -> Response {
    refused(
        StatusCode::NOT_FOUND,
        ErrorCode::NotJoined,
        "no such WHIP session (it ended, or never was)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_every_media_section_once() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let c = CandidateInit {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        let out = with_candidates(sdp, &[c]);
        assert_eq!(out.matches("a=candidate:1 1 udp").count(), 2);
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        let audio = out.find("m=audio").expect("audio");
        let video = out.find("m=video").expect("video");
        let first = out.find("a=candidate").expect("a candidate");
        assert!(audio < first && first < video);
        // An answer that has its own is left alone.
        assert_eq!(with_candidates(&out, &[]), out);
    }

    #[test]
    fn refusals_take_the_rfcs_statuses() {
        assert_eq!(
            status_of(ErrorCode::TokenRequired),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status_of(ErrorCode::TokenExpired), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(ErrorCode::WrongRoom), StatusCode::FORBIDDEN);
        assert_eq!(status_of(ErrorCode::BadSdp), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(ErrorCode::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(ErrorCode::RoomFull),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
