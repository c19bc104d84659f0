//! `sfuctl`: administer a running sfud over its Unix control socket.
//!
//! Parse the command line, send one request, print the answer as a table
//! or as JSON, and exit 0 (done), 1 (the daemon refused or failed),
//! 2 (usage) or 3 (the daemon is not reachable).

mod cli;
mod client;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sfu_proto::control::{Request, Response};
use sfu_proto::signaling::{RoomMode, TrackKind};

use crate::cli::{
    Cli, ClusterCommand, Command, ConfigCommand, KindArg, Mode, PeersCommand, RecordCommand,
    RoleArg, RoomsCommand, TokenCommand,
};
use crate::client::{candidates, Connection, CtlError};

/// Whether an answer is the kind a request expects.
type Fits = fn(&Response) -> bool;

/// The request a command sends, and which answer fits it.
fn request_for(command: Command) -> Option<(Request, Fits)> {
    Some(match command {
        Command::Status => (Request::Status, |r| matches!(r, Response::Status(_))),
        Command::Rooms(RoomsCommand::List) => {
            (Request::RoomsList, |r| matches!(r, Response::Rooms { .. }))
        }
        Command::Rooms(RoomsCommand::Show { room }) => (Request::RoomsShow { room }, |r| {
            matches!(r, Response::Room(_))
        }),
        Command::Rooms(RoomsCommand::Create {
            room,
            max_peers,
            mode,
        }) => (
            Request::RoomsCreate {
                room,
                max_peers: max_peers.map(|n| n as usize),
                mode: mode.map(|m| match m {
                    Mode::Sfu => RoomMode::Sfu,
                    Mode::Mesh => RoomMode::Mesh,
                }),
            },
            |r| matches!(r, Response::RoomCreated { .. }),
        ),
        Command::Rooms(RoomsCommand::Close { room }) => (Request::RoomsClose { room }, |r| {
            matches!(r, Response::RoomClosed { .. })
        }),
        Command::Peers(PeersCommand::Kick { room, peer }) => {
            (Request::PeersKick { room, peer }, |r| {
                matches!(r, Response::PeerKicked { .. })
            })
        }
        Command::Peers(PeersCommand::Role { room, peer, role }) => (
            Request::PeersRole {
                room,
                peer,
                role: role_of(role),
            },
            |r| matches!(r, Response::RoleChanged { .. }),
        ),
        Command::Peers(PeersCommand::Mute { room, peer, kind }) => (
            Request::PeersMute {
                room,
                peer,
                kind: match kind {
                    KindArg::Audio => TrackKind::Audio,
                    KindArg::Video => TrackKind::Video,
                    KindArg::Screen => TrackKind::Screen,
                },
            },
            |r| matches!(r, Response::PeerMuted { .. }),
        ),
        Command::Token(TokenCommand::Create {
            room,
            name,
            role,
            ttl,
            allow_duplicate_name,
        }) => (
            Request::TokenCreate {
                room,
                name,
                role: role_of(role),
                ttl_secs: ttl,
                allow_duplicate_name,
            },
            |r| matches!(r, Response::Token { .. }),
        ),
        Command::Record(RecordCommand::Start { room }) => (Request::RecordStart { room }, |r| {
            matches!(r, Response::RecordingStarted(_))
        }),
        Command::Record(RecordCommand::Stop { room }) => (Request::RecordStop { room }, |r| {
            matches!(r, Response::RecordingStopped(_))
        }),
        Command::Record(RecordCommand::List) => (Request::RecordList, |r| {
            matches!(r, Response::Recordings { .. })
        }),
        Command::Config(ConfigCommand::Check) => (Request::ConfigCheck, |r| {
            matches!(r, Response::ConfigValid { .. })
        }),
        Command::Reload => (Request::Reload, |r| matches!(r, Response::Reloaded(_))),
        Command::Cluster(ClusterCommand::Status) => (Request::ClusterStatus, |r| {
            matches!(r, Response::Cluster(_))
        }),
        Command::Completions { .. } | Command::Man => return None,
    })
}

fn role_of(role: RoleArg) -> sfu_proto::signaling::Role {
    match role {
        RoleArg::Speaker => sfu_proto::signaling::Role::Speaker,
        RoleArg::Listener => sfu_proto::signaling::Role::Listener,
    }
}

/// Writes `bytes` to standard output; a reader that went away (`| head`)
/// is not an error.
fn emit(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Completions or the man page: no daemon involved.
fn docs(command: &Command) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "sfuctl", &mut text);
        }
        _ => clap_mangen::Man::new(Cli::command()).render(&mut text)?,
    }
    Ok(text)
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn print_json(value: serde_json::Value) {
    match serde_json::to_string_pretty(&value) {
        Ok(text) => print_text(&format!("{text}\n")),
        Err(e) => eprintln!("sfuctl: cannot print JSON: {e}"),
    }
}

fn print_text(text: &str) {
    if let Err(e) = emit(text.as_bytes()) {
        eprintln!("sfuctl: cannot write the answer: {e}");
    }
}

fn main() -> ExitCode {
    let Cli {
        socket,
        json,
        command,
    } = Cli::parse();
    if matches!(command, Command::Completions { .. } | Command::Man) {
        return match docs(&command).and_then(|text| emit(&text)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sfuctl: {e}");
                ExitCode::from(1)
            }
        };
    }
    let Some((request, fits)) = request_for(command) else {
        return ExitCode::SUCCESS;
    };
    let paths = candidates(socket.as_deref());
    let result =
        Connection::open(&paths).and_then(|mut connection| connection.expect(&request, fits));
    match result {
        Ok(response) => {
            if json {
                // Straight from the typed answer, so fields keep the documented order.
                match serde_json::to_string_pretty(&response) {
                    Ok(text) => print_text(&format!("{text}\n")),
                    Err(e) => eprintln!("sfuctl: cannot print JSON: {e}"),
                }
            } else {
                print_text(&output::human(&response));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            if json {
                let error_json = match &error {
                    CtlError::Daemon(e) => serde_json::json!({ "error": e }),
                    other => serde_json::json!({
                        "error": {
                            "code": if other.exit_code() == 3 { "unreachable" } else { "protocol" },
                            "message": error_chain(other),
                        }
                    }),
                };
                print_json(error_json);
            }
            eprintln!("sfuctl: {}", error_chain(&error));
            ExitCode::from(error.exit_code())
        }
    }
}
