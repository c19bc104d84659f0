//! What `/proc` says about a process: CPU time and peak resident memory.

use std::path::Path;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_s: f64,
    /// Peak resident set size (VmHWM), in KiB.
    pub peak_rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_s: cpu_seconds(&stat)?,
        peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// utime + stime from a `stat` line (fields 14 and 15, counted after the
/// parenthesised command name, which may itself hold spaces).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// CPU seconds of each thread of `pid` whose name starts with `prefix`
/// (`sfud-media-` for sfud's media workers), in the order of their names'
/// numbers; empty if the process is gone or has none.
pub fn thread_cpu(pid: u32, prefix: &str) -> Vec<(String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(String, f64)> = tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let name = name.trim_end();
            if !name.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            Some((name.to_owned(), cpu_seconds(&stat)?))
        })
        .collect();
    threads.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    threads
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy and total CPU time of the whole machine so far, in clock ticks
/// (`/proc/stat`), to tell how much else was running during a window.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The pid of the only running process whose name (`comm`) is `name`.
pub fn find_pid(name: &str) -> Result<u32, String> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
            .unwrap_or_default();
        if comm.trim_end() == name {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err(format!("no running process named {name}: pass --sfu-pid")),
        many => Err(format!(
            "several processes named {name} ({many:?}): pass --sfu-pid"
        )),
    }
}

/// Logical CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(
            status_kib("Name:\tx\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048)
        );
    }

    #[test]
    fn reads_named_threads_of_this_process() {
        let worker = std::thread::Builder::new()
            .name("proc-test-7".into())
            .spawn(|| {
                // Some CPU to account, then wait to be read.
                let mut x = 0u64;
                for i in 0..2_000_000u64 {
                    x = x.wrapping_add(i * i);
                }
                std::thread::park();
                x
            })
            .expect("a thread");
        // The thread names itself once it runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let threads = loop {
            let threads = thread_cpu(std::process::id(), "proc-test-");
            if !threads.is_empty() {
                break threads;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the named thread never showed in /proc"
            );
            std::thread::yield_now();
        };
        assert_eq!(threads.len(), 1);
        assert_eq!(threads[0].0, "proc-test-7");
        assert!(threads[0].1 >= 0.0);
        assert!(thread_cpu(std::process::id(), "no-such-thread-").is_empty());
        worker.thread().unpark();
        let _ = worker.join();
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.peak_rss_kib > 0);
        let (busy, total) = machine_ticks().expect("/proc/stat");
        assert!(busy <= total && total > 0);
    }
}
