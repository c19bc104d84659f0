//! The control socket's file: which path to bind, never stealing a live
//! socket, replacing a stale one, its mode and group, and its removal.
//!
//! A second daemon is kept off a live socket twice over: an exclusive
//! `flock` on `<socket>.lock`, held for the daemon's lifetime, settles races
//! between daemons starting together; and a socket file that accepts a
//! connection is never removed, even by a daemon holding the lock. A socket
//! file that refuses connections (ECONNREFUSED) was left by a crash and is
//! replaced.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{AccessFlags, Group};
use sfu_proto::control::path::{fallback_sockets, DEFAULT_SOCKET};
use tracing::{info, warn};

use super::BindError;

/// Mode of the socket file: the daemon's user and group may connect.
const SOCKET_MODE: u32 = 0o660;

/// The path to bind: `configured`, unless it is the packaged default and its
/// directory is missing or not writable (a development machine), in which
/// case the first usable [`fallback_sockets`] entry.
pub fn choose_path(configured: &Path) -> Result<PathBuf, BindError> {
    if configured != Path::new(DEFAULT_SOCKET) || dir_usable(configured) {
        return Ok(configured.to_owned());
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let candidates = fallback_sockets(xdg.as_deref(), nix::unistd::geteuid().as_raw());
    match candidates.iter().find(|p| dir_usable(p)) {
        Some(path) => {
            info!(
                socket = %path.display(),
                "{DEFAULT_SOCKET}'s directory is missing or not writable; using the fallback path (set control.socket to choose one)"
            );
            Ok(path.clone())
        }
        None => Err(BindError::NoDirectory {
            tried: std::iter::once(configured.to_owned())
                .chain(candidates)
                .collect(),
        }),
    }
}

/// Whether the directory of `socket` exists and the daemon may create files in it.
fn dir_usable(socket: &Path) -> bool {
    socket
        .parent()
        .is_some_and(|dir| nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok())
}

/// The bound socket file; dropping it removes the socket and its lock file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Socket first: once it is gone, a new daemon taking the lock is fine.
        for path in [&self.path, &self.lock_path] {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %e, "cannot remove control socket file");
                }
            }
        }
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Binds the socket at `path` with mode 0660 and, when given, group `group`.
pub fn bind(
    path: &Path,
    group: Option<&str>,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), BindError> {
    let gid = group.map(group_id).transpose()?;
    let lock_path = lock_path(path);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| BindError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(BindError::InUse {
                path: path.to_owned(),
            })
        }
        Err((_, errno)) => {
            return Err(BindError::Lock {
                path: lock_path,
                source: errno.into(),
            })
        }
    };
    remove_if_stale(path)?;
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|source| BindError::Bind {
            path: path.to_owned(),
            source,
        })?;
    let file = SocketFile {
        path: path.to_owned(),
        lock_path,
        _lock: lock,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| BindError::Permissions {
            path: path.to_owned(),
            source,
        },
    )?;
    if let (Some(name), Some(gid)) = (group, gid) {
        nix::unistd::chown(path, None, Some(gid)).map_err(|errno| BindError::Chown {
            path: path.to_owned(),
            group: name.to_owned(),
            source: errno.into(),
        })?;
    }
    Ok((listener, file))
}

/// The id of group `name`.
pub fn group_id(name: &str) -> Result<nix::unistd::Gid, BindError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(BindError::UnknownGroup {
            group: name.to_owned(),
        }),
        Err(errno) => Err(BindError::GroupLookup {
            group: name.to_owned(),
            source: errno.into(),
        }),
    }
}

/// Removes a socket file nobody listens on; refuses a live socket or a
/// file that is not a socket.
fn remove_if_stale(path: &Path) -> Result<(), BindError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Probe {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_owned(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
                path: path.to_owned(),
                source,
            })?;
            warn!(socket = %path.display(), "removed a stale control socket left by a previous sfud");
            Ok(())
        }
        Err(source) => Err(BindError::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_is_used_as_is() {
        let path = Path::new("/nonexistent-dir/x.sock");
        assert_eq!(choose_path(path).ok().as_deref(), Some(path));
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sfud.sock");
        // A listener that is dropped leaves its file behind: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let (listener, file) = bind(&path, None).expect("stale socket replaced");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
        assert!(matches!(bind(&path, None), Err(BindError::InUse { .. })));
        drop((listener, file));
        assert!(!path.exists());
        assert!(!lock_path(&path).exists());
    }

    #[test]
    fn a_live_socket_without_a_lock_is_not_stolen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sfud.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        assert!(matches!(bind(&path, None), Err(BindError::InUse { .. })));
        assert!(path.exists());
    }

    #[test]
    fn a_regular_file_is_not_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sfud.sock");
        std::fs::write(&path, "data").expect("write");
        assert!(matches!(
            bind(&path, None),
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).expect("kept"), b"data");
    }

    #[test]
    fn an_unknown_group_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sfud.sock");
        let error = bind(&path, Some("no-such-group-sfud-test")).expect_err("unknown group");
        assert!(matches!(error, BindError::UnknownGroup { .. }), "{error}");
        assert!(!path.exists(), "a failed bind leaves no socket");
    }
}
