//! What the persisted runs read of a broker from outside: the bytes its process wrote, its
//! fsyncs, its directory's size; and dropping that directory from the page cache.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{DurableDriver, Started};

/// `write_bytes` of /proc/PID/io: bytes the process caused to be sent to storage. Linux
/// counts a page when it is dirtied, so a page written again after a sync counts again:
/// this is what reaches the disk, less the file system's journal (written by `jbd2`, not
/// by the process).
pub(crate) fn write_bytes(pid: u32) -> u64 {
    proc_io(pid, "write_bytes")
}

/// `read_bytes` of /proc/PID/io: bytes the process caused to be read from storage (the
/// page cache's misses).
pub(crate) fn read_bytes(pid: u32) -> u64 {
    proc_io(pid, "read_bytes")
}

/// A field of /proc/PID/io, 0 if unknown.
fn proc_io(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How the fsyncs of a run were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// `fsync` and `fdatasync` calls of the process, by `perf stat`.
    Perf,
    /// The broker's own count (mote's `mote_store_fsyncs_total`).
    Own,
}

/// Counts a broker's fsyncs over a stretch of time: `perf stat` on the `fsync` and
/// `fdatasync` tracepoints of its process (threads it starts later included), the same
/// for every broker; the broker's own count when perf cannot.
pub(crate) struct FsyncCount {
    own: Option<u64>,
    perf: Option<(Child, PathBuf)>,
}

impl FsyncCount {
    pub(crate) fn start(d: &DurableDriver, s: &Started) -> FsyncCount {
        let own = (d.fsyncs)(s);
        let out = s.dir.with_extension("perf");
        let child = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync",
                "-p",
                &s.pid().to_string(),
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        if child.is_some() {
            // perf attaches to the process's threads in a few milliseconds.
            thread::sleep(Duration::from_millis(150));
        }
        FsyncCount {
            own,
            perf: child.map(|c| (c, out)),
        }
    }

    /// Fsyncs since [`FsyncCount::start`], and how they were counted, if they could be.
    pub(crate) fn stop(self, d: &DurableDriver, s: &Started) -> Option<(u64, Counted)> {
        let perf = self.perf.and_then(|(child, out)| perf_count(child, &out));
        if let Some(n) = perf {
            return Some((n, Counted::Perf));
        }
        let (n0, n) = (self.own?, (d.fsyncs)(s)?);
        Some((n.saturating_sub(n0), Counted::Own))
    }
}

/// Stops `perf stat` (SIGINT, as a person would) and sums the counts it wrote to `out`;
/// `None` when it counted nothing it could (not allowed, no tracepoints).
fn perf_count(mut child: Child, out: &Path) -> Option<u64> {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(out).ok();
    let _ = std::fs::remove_file(out);
    sum_perf_csv(&text?)
}

/// The sum of the sync counts in `perf stat -x,` output (`count,unit,event,...`), if
/// every sync event was counted.
fn sum_perf_csv(text: &str) -> Option<u64> {
    let mut total = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split(',').collect();
        let (Some(count), Some(event)) = (f.first(), f.get(2)) else {
            continue;
        };
        if !event.contains("sync") {
            continue;
        }
        // "<not counted>" or "<not supported>": no figure rather than a wrong one.
        let n = count.trim().parse::<u64>().ok()?;
        total = Some(total.unwrap_or(0) + n);
    }
    total
}

/// Syncs every file under `dir` and drops it from the page cache (`POSIX_FADV_DONTNEED`),
/// so that the next start and reads come from the disk, as after a reboot. Returns the
/// files dropped.
pub(crate) fn drop_cached(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => n += drop_cached(&path),
            Ok(t) if t.is_file() => {
                // Synced first: dirty pages would stay (a broker that does not sync at
                // its stop leaves them).
                if let Ok(f) = std::fs::File::open(&path) {
                    let advice = rustix::fs::Advice::DontNeed;
                    if f.sync_data().is_ok() && rustix::fs::fadvise(&f, 0, None, advice).is_ok() {
                        n += 1;
                    }
                }
            }
            _ => {}
        }
    }
    n
}

/// Removes a directory when dropped.
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// KiB a directory takes on disk (`du -sk`), 0 if unknown.
pub(crate) fn du_kib(dir: &Path) -> u64 {
    Command::new("du")
        .arg("-sk")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn perf_output_is_summed_and_an_uncounted_event_is_no_figure() {
        let text = "# started on Wed Dec  2 01:42:26 2026\n\n\
                    12,,syscalls:sys_enter_fsync,3675929,100.00,,\n\
                    30,,syscalls:sys_enter_fdatasync,3675929,100.00,,\n";
        assert_eq!(sum_perf_csv(text), Some(42));
        let text = "<not supported>,,syscalls:sys_enter_fsync,0,100.00,,\n";
        assert_eq!(sum_perf_csv(text), None);
        assert_eq!(sum_perf_csv("# started\n"), None);
    }
}
