//! Human output: aligned tables and short sentences, one function per answer.

use std::fmt::Write as _;

use sfu_proto::control::cluster::ClusterStatus;
use sfu_proto::control::{
    ConnectionReport, LayerDetail, PeerDetail, ReceivedLayer, Recording, ReloadReport, Response,
    RoomDetail, RoomSummary, Status,
};
use sfu_proto::signaling::{Role, RoomMode};

/// A table whose columns are padded to their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, two spaces between columns, no trailing blanks.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c] - cell.chars().count() + 2;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `3723` → `1h 02m 03s`.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// `1_234_567` → `1.2 Mbit/s`.
pub fn bitrate(bps: u64) -> String {
    match bps {
        0..1_000 => format!("{bps} bit/s"),
        1_000..1_000_000 => format!("{:.1} kbit/s", bps as f64 / 1e3),
        _ => format!("{:.1} Mbit/s", bps as f64 / 1e6),
    }
}

/// `1_234_567` → `1.2 MB`.
pub fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

fn mode(m: RoomMode) -> &'static str {
    match m {
        RoomMode::Sfu => "sfu",
        RoomMode::Mesh => "mesh",
    }
}

/// What a participant muted, then what it sends nothing of without having
/// muted it ("audio (silent)"), or "-".
fn muted(p: &PeerDetail) -> String {
    let muted = p.muted.iter().map(|k| k.as_str().to_owned());
    let silent = p
        .silent
        .iter()
        .filter(|k| !p.muted.contains(k))
        .map(|k| format!("{} (silent)", k.as_str()));
    let all: Vec<String> = muted.chain(silent).collect();
    if all.is_empty() {
        "-".to_owned()
    } else {
        all.join(",")
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Speaker => "speaker",
        Role::Listener => "listener",
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `sfuctl status`.
pub fn status(s: &Status) -> String {
    let mut t = Table::new(&["version", &s.version]);
    let lines = [
        ("pid", s.pid.to_string()),
        ("uptime", duration(s.uptime_secs)),
        ("socket", s.socket.clone()),
        (
            "config",
            s.config
                .clone()
                .unwrap_or_else(|| "(built-in defaults)".to_owned()),
        ),
        ("rooms", s.rooms.to_string()),
        ("peers", s.peers.to_string()),
        ("connections", s.connections.to_string()),
        ("tracks", s.tracks.to_string()),
        (
            "rtp packets",
            format!("{} in, {} forwarded", s.rtp_in, s.rtp_forwarded),
        ),
        (
            "media bytes",
            format!("{} in, {} out", bytes(s.bytes_in), bytes(s.bytes_out)),
        ),
        (
            "bitrate",
            format!(
                "{} in, {} out",
                bitrate(s.bitrate_in_bps),
                bitrate(s.bitrate_out_bps)
            ),
        ),
        (
            "recordings",
            s.recordings
                .map_or_else(|| "not available".to_owned(), |n| n.to_string()),
        ),
    ];
    for (key, value) in lines {
        t.row(vec![key.to_owned(), value]);
    }
    for (i, w) in s.workers.iter().enumerate() {
        t.row(vec![
            format!("media worker {i}"),
            format!(
                "{} rooms, {} peers, {} connections, {} rtp forwarded",
                w.rooms, w.peers, w.connections, w.rtp_forwarded
            ),
        ]);
    }
    t.render()
}

fn occupancy(s: &RoomSummary) -> String {
    format!("{}/{}", s.peers, s.max_peers)
}

/// `sfuctl rooms list`: in a cluster, with the node serving each room and
/// the nodes that did not answer.
pub fn rooms(rooms: &[RoomSummary], unreachable: &[String]) -> String {
    let missing = if unreachable.is_empty() {
        String::new()
    } else {
        format!(
            "not answering (their rooms are missing): {}\n",
            unreachable.join(", ")
        )
    };
    if rooms.is_empty() {
        return format!("no rooms\n{missing}");
    }
    let clustered = rooms.iter().any(|r| r.node.is_some());
    let mut columns = vec!["ROOM", "MODE", "PEERS", "TRACKS", "AGE", "PERSISTENT"];
    if clustered {
        columns.push("NODE");
    }
    let mut t = Table::new(&columns);
    for r in rooms {
        let mut row = vec![
            r.name.clone(),
            mode(r.mode).to_owned(),
            occupancy(r),
            r.tracks.to_string(),
            duration(r.age_secs),
            yes_no(r.persistent),
        ];
        if clustered {
            row.push(r.node.clone().unwrap_or_else(|| "-".to_owned()));
        }
        t.row(row);
    }
    t.render() + &missing
}

fn state(c: &Option<ConnectionReport>) -> &str {
    c.as_ref().map_or("-", |c| c.state.as_str())
}

fn remote(p: &PeerDetail) -> String {
    [&p.publish, &p.subscribe]
        .into_iter()
        .flatten()
        .find_map(|c| c.remote)
        .map_or_else(|| "-".to_owned(), |a| a.to_string())
}

/// `sfuctl rooms show ROOM`.
pub fn room(r: &RoomDetail) -> String {
    let s = &r.summary;
    let mut out = format!(
        "room {} ({}, {} peers, {} tracks, open for {}{})\n",
        s.name,
        mode(s.mode),
        occupancy(s),
        s.tracks,
        duration(s.age_secs),
        if s.persistent { ", persistent" } else { "" }
    );
    if let Some(node) = &s.node {
        out.push_str(&format!("served by node {node}\n"));
    }
    if r.members.is_empty() {
        out.push_str("\nno participants\n");
        return out;
    }
    let mut peers = Table::new(&[
        "PEER",
        "NAME",
        "ROLE",
        "MUTED",
        "PUBLISH",
        "SUBSCRIBE",
        "REMOTE",
        "WORKER",
        "JOINED",
    ]);
    let mut tracks = Table::new(&[
        "TRACK",
        "PEER",
        "KIND",
        "CODEC",
        "BITRATE",
        "PACKETS",
        "SUBSCRIBERS",
        "LAYERS",
    ]);
    let mut received = Table::new(&[
        "RECEIVER",
        "DOWNLINK",
        "TRACK",
        "LAYER",
        "SWITCHING TO",
        "ASKED FOR",
    ]);
    for p in &r.members {
        peers.row(vec![
            p.id.clone(),
            p.name.clone(),
            role(p.role).to_owned(),
            muted(p),
            state(&p.publish).to_owned(),
            state(&p.subscribe).to_owned(),
            remote(p),
            p.worker.map_or_else(|| "-".to_owned(), |w| w.to_string()),
            format!("{} ago", duration(p.joined_secs)),
        ]);
        for t in &p.tracks {
            tracks.row(vec![
                t.id.to_string(),
                p.name.clone(),
                t.kind.clone(),
                t.codec.clone(),
                bitrate(t.bitrate_bps),
                t.packets.to_string(),
                t.subscribers.to_string(),
                layers(&t.layers),
            ]);
        }
        for r in &p.receiving {
            received.row(vec![
                p.name.clone(),
                p.downlink_bps.map_or_else(|| "-".to_owned(), bitrate),
                r.track.to_string(),
                match (&r.layer, r.starved) {
                    (Some(layer), _) => layer.clone(),
                    (None, true) => "- (link too narrow)".to_owned(),
                    (None, false) => "-".to_owned(),
                },
                r.target.clone().unwrap_or_else(|| "-".to_owned()),
                asked_for(r),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&peers.render());
    if tracks.rows.len() > 1 {
        out.push('\n');
        out.push_str(&tracks.render());
    }
    if received.rows.len() > 1 {
        out.push('\n');
        out.push_str(&received.render());
    }
    out
}

/// What a receiver asked of a track: `paused`, `640x480`, `layer <= 1`; `-` for nothing.
fn asked_for(r: &ReceivedLayer) -> String {
    if r.paused {
        return "paused".to_owned();
    }
    let mut parts = Vec::new();
    if r.max_width.is_some() || r.max_height.is_some() {
        let side = |v: Option<u32>| v.map_or_else(|| "any".to_owned(), |v| v.to_string());
        parts.push(format!("{}x{}", side(r.max_width), side(r.max_height)));
    }
    if let Some(l) = r.max_layer {
        parts.push(format!("layer <= {l}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A simulcast track's layers, e.g. `q 148.2 kbit/s, h 480.0 kbit/s, f (paused: unused)`; `-` for none.
fn layers(layers: &[LayerDetail]) -> String {
    if layers.is_empty() {
        return "-".to_owned();
    }
    layers
        .iter()
        .map(|l| match (l.active, l.paused) {
            (true, _) => format!("{} {}", l.rid, bitrate(l.bitrate_bps)),
            (false, true) => format!("{} (paused: unused)", l.rid),
            (false, false) => format!("{} (not sent)", l.rid),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sfuctl reload`.
pub fn reloaded(r: &ReloadReport) -> String {
    let mut out = match &r.path {
        Some(path) => format!("reloaded {path}\n"),
        None => "reloaded the built-in defaults (sfud was started without --config)\n".to_owned(),
    };
    if r.changed_live.is_empty() && r.needs_restart.is_empty() {
        out.push_str("nothing changed\n");
    }
    if !r.changed_live.is_empty() {
        let _ = writeln!(out, "applied: {}", r.changed_live.join(", "));
    }
    if !r.needs_restart.is_empty() {
        let _ = writeln!(
            out,
            "changed but not applied until sfud restarts: {}",
            r.needs_restart.join(", ")
        );
    }
    out
}

/// Any successful answer, for people.
pub fn human(response: &Response) -> String {
    match response {
        Response::Hello { daemon, .. } => format!("{daemon}\n"),
        Response::Status(s) => status(s),
        Response::Rooms {
            rooms: list,
            unreachable,
        } => rooms(list, unreachable),
        Response::Room(detail) => room(detail),
        Response::RoomCreated { room } => format!("created room {room}\n"),
        Response::RoomClosed { room, peers } => format!(
            "closed room {room}: {peers} participant{} disconnected\n",
            if *peers == 1 { "" } else { "s" }
        ),
        Response::PeerKicked { room, peer } => format!("removed {peer} from room {room}\n"),
        Response::RoleChanged {
            room,
            peer,
            role: r,
        } => {
            format!("{peer} in room {room} is now a {}\n", role(*r))
        }
        Response::PeerMuted { room, peer, kind } => {
            format!("muted the {} of {peer} in room {room}\n", kind.as_str())
        }
        // Only the token, so `TOKEN=$(sfuctl token create ...)` works.
        Response::Token { token, .. } => format!("{token}\n"),
        Response::ConfigValid { path: Some(path) } => format!("{path}: configuration is valid\n"),
        Response::ConfigValid { path: None } => {
            "sfud runs on its built-in defaults (started without --config): nothing to check\n"
                .to_owned()
        }
        Response::Reloaded(report) => reloaded(report),
        Response::RecordingStarted(r) => format!("recording room {} into {}\n", r.room, r.dir),
        Response::RecordingStopped(r) => recording_stopped(r),
        Response::Recordings { recordings: list } => recordings(list),
        Response::Cluster(c) => cluster(c),
        Response::Error(e) => format!("{}\n", e.message),
    }
}

/// `sfuctl cluster status`: the nodes, this one marked.
pub fn cluster(c: &ClusterStatus) -> String {
    let mut out = format!("node {} in the cluster at {}\n", c.node_id, c.redis);
    if c.nodes.is_empty() {
        out.push_str("no node has announced itself yet\n");
        return out;
    }
    let mut t = Table::new(&[
        "NODE",
        "URL",
        "ROOMS",
        "PEERS",
        "TRACKS",
        "FORWARDED",
        "CPU",
        "UP",
        "SEEN",
    ]);
    for n in &c.nodes {
        let this = if n.node_id == c.node_id {
            " (this)"
        } else {
            ""
        };
        t.row(vec![
            format!("{}{this}", n.node_id),
            n.url.clone(),
            n.rooms.to_string(),
            n.peers.to_string(),
            n.tracks.to_string(),
            format!("{} pkt/s", n.forwarded_pps),
            format!("{}%", n.cpu_percent),
            duration(c.now_ms.saturating_sub(n.started_ms) / 1000),
            format!(
                "{:.1} s ago",
                c.now_ms.saturating_sub(n.heartbeat_ms) as f64 / 1000.0
            ),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `sfuctl record stop`.
fn recording_stopped(r: &Recording) -> String {
    let mut out = match &r.error {
        Some(e) => format!("recording of room {} had failed: {e}\n", r.room),
        None => format!(
            "stopped recording room {} after {}: {} file{} in {}\n",
            r.room,
            duration(r.duration_secs),
            r.files.len(),
            if r.files.len() == 1 { "" } else { "s" },
            r.dir
        ),
    };
    for f in &r.files {
        let _ = writeln!(out, "  {}  {}  {}", f.file, bytes(f.bytes), f.state);
    }
    out
}

/// `sfuctl record list`.
pub fn recordings(list: &[Recording]) -> String {
    if list.is_empty() {
        return "no recordings\n".to_owned();
    }
    let mut t = Table::new(&["ROOM", "STATE", "FOR", "FILES", "BYTES", "DROPPED", "DIR"]);
    for r in list {
        t.row(vec![
            r.room.clone(),
            r.state.clone(),
            duration(r.duration_secs),
            r.files.len().to_string(),
            bytes(r.files.iter().map(|f| f.bytes).sum()),
            r.dropped.to_string(),
            r.dir.clone(),
        ]);
    }
    let mut out = t.render();
    for r in list {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{}: {e}", r.room);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["ROOM", "PEERS"]);
        t.row(vec!["a-long-name".into(), "1/50".into()]);
        t.row(vec!["é".into(), "10/50".into()]);
        assert_eq!(
            t.render(),
            "ROOM         PEERS\na-long-name  1/50\né            10/50\n"
        );
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 05s");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(bitrate(999), "999 bit/s");
        assert_eq!(bitrate(32_000), "32.0 kbit/s");
        assert_eq!(bitrate(2_500_000), "2.5 Mbit/s");
        assert_eq!(bytes(1_500_000), "1.5 MB");
    }

    #[test]
    fn an_empty_listing_says_so() {
        assert_eq!(rooms(&[], &[]), "no rooms\n");
    }

    #[test]
    fn a_cluster_listing_names_each_room_node_and_the_nodes_not_answering() {
        let room = |name: &str, node: Option<&str>| RoomSummary {
            name: name.into(),
            mode: sfu_proto::signaling::RoomMode::Sfu,
            peers: 1,
            tracks: 2,
            max_peers: 50,
            age_secs: 5,
            persistent: false,
            node: node.map(str::to_owned),
        };
        let text = rooms(
            &[room("a", Some("sfu-1")), room("b", Some("sfu-2"))],
            &["sfu-3".into()],
        );
        assert!(
            text.lines().next().is_some_and(|h| h.ends_with("NODE")),
            "{text}"
        );
        assert!(text.contains("sfu-2"), "{text}");
        assert!(
            text.ends_with("not answering (their rooms are missing): sfu-3\n"),
            "{text}"
        );
        assert!(!rooms(&[room("a", None)], &[]).contains("NODE"));
    }

    #[test]
    fn reload_says_what_waits_for_a_restart() {
        let text = reloaded(&ReloadReport {
            path: Some("/etc/sfud/sfud.toml".into()),
            changed_live: vec!["rooms.max_peers".into()],
            needs_restart: vec!["http.listen".into()],
        });
        assert_eq!(
            text,
            "reloaded /etc/sfud/sfud.toml\napplied: rooms.max_peers\nchanged but not applied until sfud restarts: http.listen\n"
        );
    }
}
