//! The command line: every subcommand and option, also the source of the
//! shell completions and the man page.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sfu_proto::control::path::SOCKET_ENV;

/// Administer a running sfud (WebRTC SFU daemon) over its control socket.
///
/// Without --socket or SFUD_SOCKET, sfuctl tries /run/sfud/sfud.sock, then
/// $XDG_RUNTIME_DIR/sfud.sock, then /tmp/sfud-$UID.sock: the paths a daemon
/// left on the default control.socket uses.
///
/// Exit status: 0 success, 1 the daemon refused or failed the request,
/// 2 usage error, 3 the daemon is not reachable.
#[derive(Debug, Parser)]
#[command(name = "sfuctl", version, about, long_about)]
pub struct Cli {
    /// Path of the daemon's control socket (control.socket in sfud.toml).
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV)]
    pub socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON (errors too, as {"error": ...}).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// sfuctl's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Version, uptime, rooms, peers, tracks, forwarded packets and bitrate.
    Status,
    /// List, inspect, create and close rooms.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Act on participants.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Join tokens for `auth.mode = "token"`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Record rooms: one file per participant under the daemon's recording.dir.
    #[command(subcommand)]
    Record(RecordCommand),
    /// The daemon's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Re-read the configuration file and apply what can change at run time.
    Reload,
    /// The cluster of sfud nodes this daemon belongs to.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print sfuctl's man page (roff) to standard output.
    Man,
}

/// `sfuctl rooms ...`
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Every room with its participants, tracks and age.
    List,
    /// One room: its participants, their connections and published tracks.
    Show {
        /// Room name.
        room: String,
    },
    /// Create an empty room that stays open until closed.
    Create {
        /// Room name.
        room: String,
        /// Most participants (default: the daemon's rooms.max_peers).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_peers: Option<u32>,
        /// How the room carries media.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
    /// Tell every participant the room is closed and disconnect them.
    Close {
        /// Room name.
        room: String,
    },
}

/// `sfuctl peers ...`
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Disconnect a participant; the others see them leave.
    Kick {
        /// Room name.
        room: String,
        /// The participant's id (see `sfuctl rooms show ROOM`).
        peer: String,
    },
    /// Make a participant a speaker or a listener, live.
    Role {
        /// Room name.
        room: String,
        /// The participant's id (see `sfuctl rooms show ROOM`).
        peer: String,
        /// The new role.
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Mute a participant's microphone (audio), camera (video) or shared
    /// screen (screen): nobody receives it, and the participant's page mutes
    /// it. Only they can unmute it.
    Mute {
        /// Room name.
        room: String,
        /// The participant's id (see `sfuctl rooms show ROOM`).
        peer: String,
        /// Which track.
        #[arg(value_enum)]
        kind: KindArg,
    },
}

/// `sfuctl token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a join token for ROOM, signed by the daemon's first auth.keys key.
    Create {
        /// The room it admits to.
        room: String,
        /// The display name it grants.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The role it grants.
        #[arg(long, value_enum, default_value = "speaker")]
        role: RoleArg,
        /// How long it stays valid: a number with s, m, h or d (e.g. 90s, 30m, 1h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// Allow the name even if someone in the room already uses it.
        #[arg(long)]
        allow_duplicate_name: bool,
    },
}

/// A participant's role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Publishes and receives.
    Speaker,
    /// Only receives.
    Listener,
}

/// A kind of track.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// The microphone.
    Audio,
    /// The camera.
    Video,
    /// The shared screen (stops the sharing for everyone).
    Screen,
}

/// Parses `90s`, `30m`, `1h`, `7d` (or plain seconds) into seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}`: use s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the lifetime must be at least one second".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("`{text}` is too long")),
    }
}

/// `sfuctl record ...`
#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Start recording a room.
    Start {
        /// Room name.
        room: String,
    },
    /// Stop recording a room.
    Stop {
        /// Room name.
        room: String,
    },
    /// Recordings in progress (and failed ones, with their error).
    List,
}

/// `sfuctl config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Ask the daemon to validate its configuration file as it is now on disk.
    Check,
}

/// `sfuctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the nodes alive, with their load and the age of their last
    /// announcement.
    Status,
}

/// A room's media mode.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Media goes through the server.
    Sfu,
    /// The server only relays signaling; peers connect to each other.
    Mesh,
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_like_durations() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
