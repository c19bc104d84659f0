//! A blocking connection to the daemon's control socket: find the socket,
//! shake hands, send one request, read its answer.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sfu_proto::control::frame::{self, FrameError};
use sfu_proto::control::path::{default_candidates, SOCKET_ENV};
use sfu_proto::control::{ControlError, Request, Response, PROTOCOL_VERSION};

/// How long the daemon may take to answer (closing a big room takes a while).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no successful answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No socket accepted a connection.
    #[error("cannot reach sfud: {}\n(is sfud running? Give its control socket with --socket PATH or {SOCKET_ENV}=PATH; it is control.socket in sfud.toml)", tried(attempts))]
    Unreachable {
        /// Every socket tried and why it failed.
        attempts: Vec<(PathBuf, io::Error)>,
    },
    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Daemon(ControlError),
    /// The connection broke or the answer was not understood.
    #[error("no valid answer from sfud at {}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: FrameError,
    },
    /// The daemon accepted the handshake with another protocol version.
    #[error("sfud at {} speaks control protocol {daemon}, this sfuctl speaks {PROTOCOL_VERSION}; use the sfuctl installed with that sfud", path.display())]
    Version {
        /// The socket.
        path: PathBuf,
        /// The daemon's version.
        daemon: u32,
    },
    /// The daemon answered something that does not fit the request.
    #[error("sfud at {} answered `{answer}` to a `{request}` request", path.display())]
    Unexpected {
        /// The socket.
        path: PathBuf,
        /// The request's type.
        request: &'static str,
        /// What came back.
        answer: String,
    },
}

fn tried(attempts: &[(PathBuf, io::Error)]) -> String {
    attempts
        .iter()
        .map(|(path, e)| format!("{}: {}", path.display(), explain(e)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn explain(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such socket".to_owned(),
        io::ErrorKind::ConnectionRefused => {
            "connection refused (a socket left by a daemon that stopped?)".to_owned()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (run as root or as a member of the socket's group, control.group)"
                .to_owned()
        }
        _ => e.to_string(),
    }
}

impl CtlError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 3,
            Self::Daemon(_)
            | Self::Protocol { .. }
            | Self::Version { .. }
            | Self::Unexpected { .. } => 1,
        }
    }
}

/// A connection that completed the handshake.
pub struct Connection {
    stream: UnixStream,
    path: PathBuf,
}

/// Where to look: the given path only, or every default in order.
pub fn candidates(socket: Option<&Path>) -> Vec<PathBuf> {
    match socket {
        Some(path) => vec![path.to_owned()],
        None => {
            let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
            default_candidates(xdg.as_deref(), nix::unistd::geteuid().as_raw())
        }
    }
}

impl Connection {
    /// Connects to the first of `paths` that accepts, and shakes hands.
    pub fn open(paths: &[PathBuf]) -> Result<Connection, CtlError> {
        let mut attempts = Vec::new();
        for path in paths {
            match UnixStream::connect(path) {
                Ok(stream) => return Self::greet(stream, path.clone()),
                Err(e) => attempts.push((path.clone(), e)),
            }
        }
        Err(CtlError::Unreachable { attempts })
    }

    fn greet(stream: UnixStream, path: PathBuf) -> Result<Connection, CtlError> {
        let protocol_error = |source| CtlError::Protocol {
            path: path.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)))
            .map_err(|e| protocol_error(FrameError::Io(e)))?;
        let mut connection = Connection { stream, path };
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("sfuctl {}", env!("CARGO_PKG_VERSION")),
        };
        match connection.call(&hello)? {
            Response::Hello { protocol, .. } if protocol == PROTOCOL_VERSION => Ok(connection),
            Response::Hello { protocol, .. } => Err(CtlError::Version {
                path: connection.path,
                daemon: protocol,
            }),
            other => Err(connection.unexpected(&hello, &other)),
        }
    }

    fn unexpected(&self, request: &Request, answer: &Response) -> CtlError {
        let answer = serde_json::to_value(answer)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned());
        CtlError::Unexpected {
            path: self.path.clone(),
            request: request.kind(),
            answer,
        }
    }

    /// Sends `request` and returns the daemon's answer; an error answer is
    /// [`CtlError::Daemon`].
    pub fn call(&mut self, request: &Request) -> Result<Response, CtlError> {
        // The daemon may refuse and close before reading (a refused user):
        // its answer is still there to read after a failed write.
        let written = frame::write_frame(&mut self.stream, request);
        match frame::read_frame(&mut self.stream) {
            Ok(Response::Error(error)) => Err(CtlError::Daemon(error)),
            Ok(response) => Ok(response),
            Err(source) => Err(CtlError::Protocol {
                path: self.path.clone(),
                source: written.err().unwrap_or(source),
            }),
        }
    }

    /// Sends `request`; an answer of another kind than `expected` is an error.
    pub fn expect(
        &mut self,
        request: &Request,
        fits: impl Fn(&Response) -> bool,
    ) -> Result<Response, CtlError> {
        let response = self.call(request)?;
        if fits(&response) {
            Ok(response)
        } else {
            Err(self.unexpected(request, &response))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A one-connection daemon that answers the hello with `answer`.
    fn fake_daemon(name: &str, answer: Response) -> (PathBuf, std::thread::JoinHandle<()>) {
        let path = std::env::temp_dir().join(format!("sfuctl-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let hello: Request = frame::read_frame(&mut stream).expect("hello");
            assert!(
                matches!(hello, Request::Hello { protocol, .. } if protocol == PROTOCOL_VERSION)
            );
            frame::write_frame(&mut stream, &answer).expect("answer");
        });
        (path, thread)
    }

    #[test]
    fn a_daemon_on_another_protocol_version_is_a_clear_error() {
        let (path, daemon) = fake_daemon(
            "version",
            Response::Hello {
                protocol: PROTOCOL_VERSION + 1,
                daemon: "sfud 9".into(),
            },
        );
        let error = Connection::open(std::slice::from_ref(&path))
            .err()
            .expect("refused");
        daemon.join().expect("fake daemon");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(error, CtlError::Version { .. }), "{error}");
        assert_eq!(error.exit_code(), 1);
        assert!(
            error.to_string().contains("speaks control protocol 2"),
            "{error}"
        );
    }

    #[test]
    fn the_daemons_refusal_is_its_message_and_exit_1() {
        let (path, daemon) = fake_daemon(
            "refused",
            Response::Error(ControlError::new(
                sfu_proto::control::ErrorCode::PermissionDenied,
                "uid 1 may not",
            )),
        );
        let error = Connection::open(std::slice::from_ref(&path))
            .err()
            .expect("refused");
        daemon.join().expect("fake daemon");
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            (error.to_string().as_str(), error.exit_code()),
            ("uid 1 may not", 1)
        );
    }

    #[test]
    fn nothing_listening_is_exit_3_naming_every_path() {
        let paths = [
            PathBuf::from("/nonexistent/a.sock"),
            PathBuf::from("/nonexistent/b.sock"),
        ];
        let error = Connection::open(&paths).err().expect("unreachable");
        assert_eq!(error.exit_code(), 3);
        let shown = error.to_string();
        assert!(
            shown.contains("/nonexistent/a.sock: no such socket; /nonexistent/b.sock")
                && shown.contains("--socket PATH or SFUD_SOCKET=PATH"),
            "{shown}"
        );
    }
}
