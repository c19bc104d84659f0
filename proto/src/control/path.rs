//! Where the control socket is: one rule shared by the daemon, which picks
//! the path it binds, and `sfuctl`, which looks for it.
//!
//! Packaged, the socket is [`DEFAULT_SOCKET`] (systemd creates `/run/sfud`).
//! On a development machine that directory usually does not exist, so a
//! daemon left on the default path binds the first usable of
//! [`fallback_sockets`] instead, and `sfuctl` without `--socket` or
//! [`SOCKET_ENV`] tries the same paths in the same order.

use std::path::{Path, PathBuf};

/// `control.socket`'s default, the packaged path.
pub const DEFAULT_SOCKET: &str = "/run/sfud/sfud.sock";

/// The environment variable that gives `sfuctl` the socket path.
pub const SOCKET_ENV: &str = "SFUD_SOCKET";

/// Paths used instead of [`DEFAULT_SOCKET`] when its directory is missing or
/// not writable, best first: `$XDG_RUNTIME_DIR/sfud.sock` (when that variable
/// is an absolute path), then `/tmp/sfud-$UID.sock`.
pub fn fallback_sockets(xdg_runtime_dir: Option<&Path>, uid: u32) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(2);
    if let Some(dir) = xdg_runtime_dir.filter(|d| d.is_absolute()) {
        paths.push(dir.join("sfud.sock"));
    }
    paths.push(PathBuf::from(format!("/tmp/sfud-{uid}.sock")));
    paths
}

/// Where `sfuctl` looks when told nothing: [`DEFAULT_SOCKET`], then
/// [`fallback_sockets`].
pub fn default_candidates(xdg_runtime_dir: Option<&Path>, uid: u32) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(DEFAULT_SOCKET)];
    paths.extend(fallback_sockets(xdg_runtime_dir, uid));
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_first_then_tmp() {
        assert_eq!(
            fallback_sockets(Some(Path::new("/run/user/1000")), 1000),
            [
                PathBuf::from("/run/user/1000/sfud.sock"),
                PathBuf::from("/tmp/sfud-1000.sock")
            ]
        );
        assert_eq!(
            fallback_sockets(None, 0),
            [PathBuf::from("/tmp/sfud-0.sock")]
        );
        // A relative XDG_RUNTIME_DIR is invalid by the spec and ignored.
        assert_eq!(
            fallback_sockets(Some(Path::new("run")), 7),
            [PathBuf::from("/tmp/sfud-7.sock")]
        );
    }

    #[test]
    fn sfuctl_tries_the_packaged_path_first() {
        let paths = default_candidates(Some(Path::new("/run/user/5")), 5);
        assert_eq!(paths[0], PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            paths[1..],
            fallback_sockets(Some(Path::new("/run/user/5")), 5)
        );
    }
}
