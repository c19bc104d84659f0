//! The on-disk layout of a recording session and its `session.json`
//! manifest: `DIR/ROOM/START-TIME/PEERNAME-PEERID.webm` plus the manifest,
//! rewritten atomically (temporary file, fsync, rename) at every change.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::codec::Container;

/// The manifest's file name inside a session directory.
pub const MANIFEST: &str = "session.json";

/// `session.json`: everything needed to play or lay out a session's files.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Layout version of this file.
    pub version: u32,
    /// The room recorded.
    pub room: String,
    /// `recording`, `stopped` or `failed`.
    pub state: &'static str,
    /// When the recording started (RFC 3339, UTC).
    pub started: String,
    /// When it ended; `null` while recording (or after a crash).
    pub ended: Option<String>,
    /// Why it ended: `stopped`, `room closed`, `shutdown`, or the error.
    pub end_reason: Option<String>,
    /// The first error that stopped it.
    pub error: Option<String>,
    /// The shared time base of every file.
    pub time_base: TimeBase,
    /// RTP events the recorder could not keep up with, all files together.
    pub dropped: u64,
    /// One entry per recorded participant (per file).
    pub participants: Vec<ParticipantEntry>,
}

/// How the files of one session line up.
#[derive(Debug, Clone, Serialize)]
pub struct TimeBase {
    /// Session time 0, as Unix time in milliseconds (= `started`).
    pub zero_unix_ms: u64,
    /// What the per-file `offset_ms` means.
    pub description: &'static str,
}

impl TimeBase {
    /// The time base of a session that started at `started`.
    pub fn new(started: SystemTime) -> TimeBase {
        TimeBase {
            zero_unix_ms: unix_ms(started),
            description: "every file starts at its own 0; its first frame was captured \
                          offset_ms after session time 0 (zero_unix_ms), on the server's \
                          monotonic clock, so file t plays at session time offset_ms + t",
        }
    }
}

/// One participant's file.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantEntry {
    /// Peer id.
    pub peer: String,
    /// Display name.
    pub name: String,
    /// The file, relative to the session directory.
    pub file: String,
    /// WebM or Matroska.
    pub container: Container,
    /// `recording`, `finalized` or `failed`.
    pub state: &'static str,
    /// Session time the participant joined (or the recording started), ms.
    pub joined_ms: u64,
    /// Session time they left, or their file was finalized, ms.
    pub left_ms: Option<u64>,
    /// Session time of the file's first frame, ms.
    pub offset_ms: Option<u64>,
    /// Bytes written.
    pub bytes: u64,
    /// Tracks in the file, and tracks seen but not recorded.
    pub tracks: Vec<TrackEntry>,
    /// RTP events dropped because the recorder fell behind.
    pub dropped: u64,
    /// What went wrong with this file.
    pub error: Option<String>,
}

/// One track of a participant.
#[derive(Debug, Clone, Serialize)]
pub struct TrackEntry {
    /// `audio` or `video`.
    pub kind: &'static str,
    /// e.g. `video/VP8`.
    pub codec: String,
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// Whether it is in the file; if not, `note` says why.
    pub recorded: bool,
    /// Why not, when it is not.
    pub note: Option<String>,
}

/// Writes `manifest` to `dir/session.json` atomically and durably.
pub fn write(dir: &Path, manifest: &Manifest) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    let tmp = dir.join(".session.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MANIFEST))
}

/// The session directory: `base/ROOM/START-TIME`.
pub fn session_dir(base: &Path, room: &str, started: SystemTime) -> PathBuf {
    base.join(file_name_part(room)).join(compact_utc(started))
}

/// A participant's file name: `PEERNAME-PEERID.EXT`, plus `-N` for their
/// N-th file in the session (after rejoining).
pub fn participant_file(name: &str, peer: &str, part: u32, container: Container) -> String {
    let suffix = if part > 1 {
        format!("-{part}")
    } else {
        String::new()
    };
    format!(
        "{}-{peer}{suffix}.{}",
        file_name_part(name),
        container.extension()
    )
}

/// `name` made safe as one path component: no separators, no control
/// characters, no leading dot, at most 64 characters.
pub fn file_name_part(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `2026-01-25T03:01:02.123Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let ms = unix_ms(t);
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// `20260125T030102Z`: sorts by time and is safe in a path.
pub fn compact_utc(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_ms(t) / 1000);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Seconds since the epoch → (year, month, day, hour, minute, second), UTC
/// (Howard Hinnant's days-to-civil algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_utc(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(compact_utc(t), "20231114T221320Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(compact_utc(leap), "20000229T000000Z");
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(file_name_part("../etc/passwd"), "_._etc_passwd");
        assert_eq!(file_name_part(".hidden"), "_hidden");
        assert_eq!(file_name_part(""), "_");
        assert_eq!(file_name_part("Zoë K"), "Zoë_K");
        assert_eq!(file_name_part(&"x".repeat(100)).len(), 64);
        let dir = session_dir(Path::new("/r"), "a/b", UNIX_EPOCH);
        assert_eq!(dir, Path::new("/r/a_b/19700101T000000Z"));
    }

    #[test]
    fn files_are_named_after_the_participant() {
        assert_eq!(
            participant_file("alice", "00000000000000ab", 1, Container::Webm),
            "alice-00000000000000ab.webm"
        );
        assert_eq!(
            participant_file("bob", "01", 2, Container::Matroska),
            "bob-01-2.mkv"
        );
    }

    #[test]
    fn the_manifest_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Manifest {
            version: 1,
            room: "r".into(),
            state: "recording",
            started: rfc3339_utc(UNIX_EPOCH),
            ended: None,
            end_reason: None,
            error: None,
            time_base: TimeBase::new(UNIX_EPOCH),
            dropped: 0,
            participants: vec![],
        };
        write(dir.path(), &m).expect("first write");
        m.state = "stopped";
        write(dir.path(), &m).expect("second write");
        let text = std::fs::read_to_string(dir.path().join(MANIFEST)).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["state"], "stopped");
        assert_eq!(v["time_base"]["zero_unix_ms"], 0);
        assert!(!dir.path().join(".session.json.tmp").exists());
    }
}
