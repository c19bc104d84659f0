//! Who may use the control socket: root, the daemon's own user, and members
//! of the control group (`control.group`, or the daemon's own group when
//! unset). The peer is identified by SO_PEERCRED, which the kernel fills in
//! at connect time, so it cannot be forged by the client.

use std::ffi::CString;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Uid, User};
use tokio::net::UnixStream;

use super::BindError;

/// The process at the other end of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// Its process id.
    pub pid: i32,
}

/// The credentials of the process that connected `stream`.
pub fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = getsockopt(stream, PeerCredentials)?;
    Ok(Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// The access rule, resolved once at start.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    daemon_uid: u32,
    group: Gid,
    group_name: String,
}

impl AccessPolicy {
    /// The rule for a daemon configured with `control.group = group`.
    pub fn new(group: Option<&str>) -> Result<Self, BindError> {
        let (gid, name) = match group {
            Some(name) => (super::socket::group_id(name)?, name.to_owned()),
            None => {
                let gid = nix::unistd::getegid();
                let name = nix::unistd::Group::from_gid(gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |g| g.name);
                (gid, name)
            }
        };
        Ok(AccessPolicy {
            daemon_uid: nix::unistd::geteuid().as_raw(),
            group: gid,
            group_name: name,
        })
    }

    /// Whether `peer` may send requests. Looks up the peer user's groups
    /// (NSS, possibly slow) only when its ids alone do not decide.
    pub fn allows(&self, peer: &Peer) -> bool {
        if allowed_by_ids(peer, self.daemon_uid, self.group.as_raw()) {
            return true;
        }
        supplementary_groups(peer.uid).contains(&self.group.as_raw())
    }

    /// Why `peer` is refused, for the client and the log.
    pub fn refusal(&self, peer: &Peer) -> String {
        format!(
            "uid {} may not administer this sfud: only root, the daemon's user and members of group `{}` may; add the user to that group (control.group) or run as root",
            peer.uid, self.group_name
        )
    }
}

/// The rule without group lookups: root, the daemon's user, or a peer
/// whose effective group is the control group.
fn allowed_by_ids(peer: &Peer, daemon_uid: u32, group: u32) -> bool {
    peer.uid == 0 || peer.uid == daemon_uid || peer.gid == group
}

/// Every group user `uid` is a member of, from the group database.
fn supplementary_groups(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { uid, gid, pid: 42 }
    }

    #[test]
    fn root_the_daemon_user_and_the_group_are_allowed() {
        assert!(allowed_by_ids(&peer(0, 1234), 999, 998));
        assert!(allowed_by_ids(&peer(999, 1234), 999, 998));
        assert!(allowed_by_ids(&peer(1000, 998), 999, 998));
        assert!(!allowed_by_ids(&peer(1000, 1000), 999, 998));
    }

    #[test]
    fn a_stranger_is_refused_with_the_group_named() {
        let policy = AccessPolicy {
            daemon_uid: 999,
            group: Gid::from_raw(998),
            group_name: "sfud".into(),
        };
        // No user has this uid, so it has no supplementary groups either.
        let stranger = peer(4_000_000_000, 4_000_000_000);
        assert!(!policy.allows(&stranger));
        let message = policy.refusal(&stranger);
        assert!(
            message.contains("uid 4000000000") && message.contains("group `sfud`"),
            "{message}"
        );
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (a, _b) = UnixStream::pair().expect("pair");
            let me = peer_of(&a).expect("credentials");
            assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
            assert_eq!(me.pid, std::process::id() as i32);
            assert!(AccessPolicy::new(None).expect("policy").allows(&me));
        });
    }
}
