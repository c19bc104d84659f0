//! One control connection: the handshake, due within
//! [`FIRST_FRAME_DEADLINE`] of connecting, then requests answered in order,
//! each frame due within [`REQUEST_DEADLINE`] of the previous answer.

use std::time::Duration;

use sfu_proto::control::frame::{self, FrameError, HEADER_BYTES};
use sfu_proto::control::{check_hello, ControlError, ErrorCode, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{debug, info, info_span, warn, Instrument};

use super::access::{AccessPolicy, Peer};
use super::handler::{self, daemon_name, Context};

/// Time a client has to send a complete frame, counted from the previous
/// answer; a silent client is dropped after it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Time a new connection has to send its first frame (`sfuctl` sends it at
/// once): a client that connects and says nothing holds a slot this long.
pub const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(1);

/// Reads one frame; `Closed` when the client hung up between frames.
async fn read_frame(stream: &mut UnixStream) -> Result<Request, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match stream.read(&mut header[filled..]).await {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = frame::body_len(header)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(FrameError::Io)?;
    frame::decode(&body)
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let bytes = match frame::encode(response) {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(error = %e, "control response cannot be encoded");
            let error = Response::Error(ControlError::new(
                ErrorCode::Internal,
                format!("the answer cannot be sent: {e}"),
            ));
            frame::encode(&error).map_err(std::io::Error::other)?
        }
    };
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// What the next frame turned out to be.
enum Next {
    Request(Request),
    /// An error to send; the connection ends after it when its code says so.
    Error(ControlError),
    /// The client left or the stream broke: nothing more to say.
    Gone,
}

async fn next(stream: &mut UnixStream, deadline: Duration) -> Next {
    match tokio::time::timeout(deadline, read_frame(stream)).await {
        Ok(Ok(request)) => Next::Request(request),
        Ok(Err(FrameError::Closed)) => Next::Gone,
        Ok(Err(FrameError::Io(e))) => {
            debug!(error = %e, "control connection broke");
            Next::Gone
        }
        Ok(Err(e @ FrameError::TooLarge { .. })) => {
            Next::Error(ControlError::new(ErrorCode::FrameTooLarge, e.to_string()))
        }
        Ok(Err(FrameError::Json(e))) => Next::Error(ControlError::new(
            ErrorCode::BadRequest,
            format!("the frame is not a valid request: {e}"),
        )),
        Err(_) => Next::Error(ControlError::new(
            ErrorCode::Timeout,
            format!(
                "no complete request within {} s; closing",
                deadline.as_secs()
            ),
        )),
    }
}

/// Serves one connection until the client leaves, breaks the framing, is
/// refused or falls silent.
pub async fn serve(mut stream: UnixStream, peer: Peer, access: &AccessPolicy, ctx: &Context) {
    let allowed = access.allows(&peer);
    if !allowed {
        warn!(
            uid = peer.uid,
            pid = peer.pid,
            "control connection refused: not root, the daemon's user or a member of the control group"
        );
    }
    let mut greeted = false;
    let mut deadline = FIRST_FRAME_DEADLINE;
    loop {
        let request = match next(&mut stream, deadline).await {
            Next::Request(request) => request,
            Next::Error(error) => {
                debug!(code = %error.code, message = %error.message, "bad control frame");
                let closes = error.code.closes_connection();
                if write_response(&mut stream, &Response::Error(error))
                    .await
                    .is_err()
                    || closes
                {
                    return;
                }
                continue;
            }
            Next::Gone => return,
        };
        deadline = REQUEST_DEADLINE;
        let response = if !allowed {
            Response::Error(ControlError::new(
                ErrorCode::PermissionDenied,
                access.refusal(&peer),
            ))
        } else if !greeted {
            match check_hello(&request, &daemon_name()) {
                Ok(hello) => {
                    greeted = true;
                    if let Request::Hello { client, .. } = &request {
                        debug!(client, "control client connected");
                    }
                    hello
                }
                Err(error) => Response::Error(error),
            }
        } else {
            let kind = request.kind();
            let span = info_span!("control", uid = peer.uid, pid = peer.pid, request = kind);
            async {
                let response = handler::handle(ctx, request).await;
                match &response {
                    Response::Error(e) => info!(code = %e.code, message = %e.message, "refused"),
                    _ if matches!(kind, "status" | "rooms_list" | "rooms_show") => {
                        debug!("done")
                    }
                    _ => info!("done"),
                }
                response
            }
            .instrument(span)
            .await
        };
        let closes = matches!(&response, Response::Error(e) if e.code.closes_connection());
        if write_response(&mut stream, &response).await.is_err() || closes {
            return;
        }
    }
}
