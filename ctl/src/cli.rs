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
    /// Record rooms (not available in this version of sfud).
    #[command(subcommand)]
    Record(RecordCommand),
    /// The daemon's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Re-read the configuration file and apply what can change at run time.
    Reload,
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
    /// Recordings in progress.
    List,
}

/// `sfuctl config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Ask the daemon to validate its configuration file as it is now on disk.
    Check,
}

/// A room's media mode.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Media goes through the server.
    Sfu,
    /// The server only relays signaling; peers connect to each other.
    Mesh,
}
