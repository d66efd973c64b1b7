//! The persisted runs themselves: each starts the broker on a fresh directory, applies a
//! load of [`super::load`] and reads the figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::super::conn::PATIENCE;
use super::super::proc::{cpu_ns, status_kib};
use super::super::run::{self, Load, Throughput};
use super::host::{self, Cleanup, Counted, FsyncCount, write_bytes};
use super::{DurableDriver, Started, SyncMode};

/// Publishers of the `confirm` run.
pub(crate) const CONFIRM_PUBLISHERS: usize = 16;
/// How long each `confirm` run publishes.
const CONFIRM_TIME: Duration = Duration::from_secs(3);
/// The `paced` run: messages per second, and for how long.
const PACED_RATE: u64 = 100;
const PACED_TIME: Duration = Duration::from_secs(10);
/// The `gib` run: payload bytes stored, in messages of this size.
const GIB: u64 = 1 << 30;
const GIB_SIZE: usize = 1024;
/// The disk budget of every run but `gib`.
const DISK: u64 = 4 << 30;

/// What the persisted runs measure of one broker, by run.
#[derive(Default)]
pub(crate) struct DurableFigures {
    pub(crate) figures: Vec<(String, f64)>,
    /// What the report should say of how they were made: a sync policy asked for and
    /// not in force, fsyncs counted otherwise than by perf.
    pub(crate) notes: Vec<String>,
}

impl DurableFigures {
    fn add(&mut self, key: impl Into<String>, x: f64) {
        self.figures.push((key.into(), x));
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Fsyncs counted over a run, if they were; says how when not by perf.
    fn fsyncs(&mut self, counted: Option<(u64, Counted)>) -> Option<u64> {
        let (n, how) = counted?;
        if how == Counted::Own {
            self.note("fsyncs as the broker counts them: perf could not count them".into());
        }
        Some(n)
    }
}

/// A fresh directory under `base` for one run.
fn fresh_dir(base: &Path, who: &str, run: &str) -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = base.join(format!(
        "mote-bench-{}-{who}-{run}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Starts a broker on a fresh directory and prepares it.
fn start_fresh(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    run: &str,
    sync: SyncMode,
    disk: u64,
    out: &mut DurableFigures,
) -> Result<Started, String> {
    let dir = fresh_dir(base, who, run)?;
    let s = match (d.start)(&dir, sync, disk) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    (d.ready)(s.broker.addr).map_err(|e| format!("the broker did not serve: {e}"))?;
    (d.prepare)(s.broker.addr).map_err(|e| format!("preparing the broker: {e}"))?;
    if !s.matched {
        out.note(format!("sync {} asked: {} in force", sync.label(), s.sync));
    }
    Ok(s)
}

/// Waits until the broker has written everything (`expected` messages), for
/// [`PATIENCE`] at most: true on two polls 10 ms apart, so that a batch still being
/// gathered when the first poll came is counted.
fn wait_written(d: &DurableDriver, s: &Started, expected: u64) -> Result<Instant, String> {
    let deadline = Instant::now() + PATIENCE + PATIENCE;
    let mut before = false;
    loop {
        let now = (d.all_written)(s, expected).map_err(|e| format!("stored: {e}"))?;
        if now && before {
            return Ok(Instant::now());
        }
        before = now;
        if Instant::now() > deadline {
            return Err(format!(
                "the broker had not written all {expected} messages after {} s",
                2 * PATIENCE.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(if now { 10 } else { 2 }));
    }
}

/// The persisted 1→1 run `run` (`p64b`, `p1k`): throughput until everything is delivered
/// and written, and bytes written per payload byte.
pub(crate) fn persisted_throughput(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    (run, suffix, size, count, window): (&'static str, &str, usize, u64, u64),
    sync: SyncMode,
    out: &mut DurableFigures,
) -> Result<Throughput, String> {
    let s = start_fresh(d, base, who, run, sync, DISK, out)?;
    let pid = s.pid();
    let w0 = write_bytes(pid);
    let fs = FsyncCount::start(d, &s);
    let t0 = Instant::now();
    let cpu0 = cpu_ns(pid);
    let load = Load {
        run,
        size,
        count,
        subs: 1,
        window,
    };
    let mut tp = (d.throughput)(s.broker.addr, None, load)?;
    let delivered_in = tp.seconds;
    let written = wait_written(d, &s, count)?;
    // Until everything is delivered and written; the publisher starts a few ms after t0
    // (connections), which counts against the broker.
    tp.seconds = tp.seconds.max(written.duration_since(t0).as_secs_f64());
    tp.broker_cpu_sec = Some(cpu_ns(pid).saturating_sub(cpu0) as f64 / 1e9);
    // The sync that follows, and whatever the broker writes with it, count too.
    let settle = match sync {
        SyncMode::Every(ms) => Duration::from_millis(ms + 200),
        SyncMode::Always => Duration::from_millis(200),
    };
    thread::sleep(settle.min(Duration::from_secs(3)));
    let written_bytes = write_bytes(pid).saturating_sub(w0);
    let fsyncs = out.fsyncs(fs.stop(d, &s));
    let payload = (tp.delivered.max(1) * size as u64) as f64;
    out.add(
        format!("persisted_msgs_per_sec_{suffix}"),
        tp.msgs_per_sec(),
    );
    out.add(
        format!("persisted_mbytes_per_sec_{suffix}"),
        tp.msgs_per_sec() * size as f64 / 1e6,
    );
    if let Some(c) = tp.cpu_per_million() {
        out.add(format!("persisted_broker_cpu_sec_per_million_{suffix}"), c);
    }
    out.add(
        format!("persisted_write_per_payload_{suffix}"),
        written_bytes as f64 / payload,
    );
    out.add(
        format!("persisted_store_lag_ms_{suffix}"),
        (tp.seconds - delivered_in).max(0.0) * 1e3,
    );
    if let Some(f) = fsyncs {
        out.add(format!("persisted_fsyncs_{suffix}"), f as f64);
    }
    Ok(tp)
}

/// The `confirm` run of `size`-byte messages (JSON suffix `suffix`) under `sync`:
/// [`CONFIRM_PUBLISHERS`] publishers each waiting for its confirmation before the next.
/// Figures are named `confirmed_<always|interval>_..._<suffix>`.
pub(crate) fn confirm(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    (size, suffix): (usize, &str),
    sync: SyncMode,
    out: &mut DurableFigures,
) -> Result<String, String> {
    let s = start_fresh(d, base, who, "confirm", sync, DISK, out)?;
    let pid = s.pid();
    let fs = FsyncCount::start(d, &s);
    let (w0, cpu0) = (write_bytes(pid), cpu_ns(pid));
    let topic = format!("confirm{suffix}");
    let c = (d.confirmed)(
        s.broker.addr,
        &topic,
        size,
        CONFIRM_PUBLISHERS,
        CONFIRM_TIME,
    )?;
    let written = write_bytes(pid).saturating_sub(w0);
    let cpu = cpu_ns(pid).saturating_sub(cpu0) as f64 / 1e9;
    let fsyncs = out.fsyncs(fs.stop(d, &s));
    let key = |what: &str| format!("confirmed_{}_{what}_{suffix}", sync.key());
    let rate = c.messages as f64 / c.seconds;
    let (p50, p99) = (
        run::percentile(&c.latencies, 0.5),
        run::percentile(&c.latencies, 0.99),
    );
    out.add(key("msgs_per_sec"), rate);
    out.add(key("latency_p50_us"), p50);
    out.add(key("latency_p99_us"), p99);
    out.add(
        key("write_per_payload"),
        written as f64 / (c.messages.max(1) * size as u64) as f64,
    );
    out.add(
        key("broker_cpu_sec_per_million"),
        cpu * 1e6 / c.messages.max(1) as f64,
    );
    let mut line = format!(
        "confirmed x{CONFIRM_PUBLISHERS} {:<5} sync {:<6} {rate:>8.0} msgs/s  confirm p50 {p50:.0} us  p99 {p99:.0} us",
        if size == 64 { "64 B" } else { "1 KiB" },
        sync.label(),
    );
    match fsyncs {
        Some(f) => {
            let per_sec = f as f64 / c.seconds;
            out.add(key("fsyncs_per_sec"), per_sec);
            if f > 0 {
                out.add(key("msgs_per_fsync"), c.messages as f64 / f as f64);
            }
            line += &format!("  {per_sec:.0} fsyncs/s");
        }
        None => line += "  fsyncs not counted",
    }
    Ok(line)
}

/// The `paced` run under `sync`: 100 confirmed msgs/s of 64 B for 10 s. Figures are named
/// `paced_<always|interval>_...`.
pub(crate) fn paced(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    sync: SyncMode,
    out: &mut DurableFigures,
) -> Result<String, String> {
    let s = start_fresh(d, base, who, "paced", sync, DISK, out)?;
    let fs = FsyncCount::start(d, &s);
    let w0 = write_bytes(s.pid());
    let t0 = Instant::now();
    let n = (d.paced)(s.broker.addr, "paced", 64, PACED_RATE, PACED_TIME)?;
    let seconds = t0.elapsed().as_secs_f64();
    let written = write_bytes(s.pid()).saturating_sub(w0);
    let fsyncs = out.fsyncs(fs.stop(d, &s));
    let key = |what: &str| format!("paced_{}_{what}", sync.key());
    let per_payload = written as f64 / (n.max(1) * 64) as f64;
    out.add(key("write_per_payload"), per_payload);
    out.add(key("write_bytes_per_sec"), written as f64 / seconds);
    let mut line = format!(
        "{PACED_RATE} msgs/s of 64 B for {seconds:.0} s, sync {}: {:.0} bytes written/s ({per_payload:.1} per payload byte)",
        sync.label(),
        written as f64 / seconds
    );
    match fsyncs {
        Some(f) => {
            out.add(key("fsyncs_per_sec"), f as f64 / seconds);
            line += &format!("  {:.2} fsyncs/s", f as f64 / seconds);
        }
        None => line += "  fsyncs not counted",
    }
    Ok(line)
}

/// How long the `gib` run pings before the replay, to know what the machine gives alone.
const QUIET_PINGS: Duration = Duration::from_secs(3);

/// The `gib` run: 1 GiB stored under `sync`, a restart from a cold page cache, the replay.
pub(crate) fn gib(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    sync: SyncMode,
    window: u64,
    out: &mut DurableFigures,
) -> Result<Vec<String>, String> {
    let disk = 3 * GIB;
    let mut lines = Vec::new();
    // An empty broker first: its startup and RSS are the baseline.
    let (empty_ms, empty_rss) = {
        let dir = fresh_dir(base, who, "empty")?;
        let _cleanup = Cleanup(dir.clone());
        let t0 = Instant::now();
        let s = (d.start)(&dir, sync, disk)?;
        (d.ready)(s.broker.addr).map_err(|e| format!("the empty broker: {e}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        thread::sleep(Duration::from_millis(200));
        (ms, status_kib(s.pid(), "VmRSS"))
    };
    let count = GIB / GIB_SIZE as u64;
    let mut s = start_fresh(d, base, who, "gib", sync, disk, out)?;
    s.remove = false;
    let dir = s.dir.clone();
    let cleanup = Cleanup(dir.clone());
    let load = Load {
        run: "gib",
        size: GIB_SIZE,
        count,
        subs: 1,
        window,
    };
    let t0 = Instant::now();
    let tp = (d.throughput)(s.broker.addr, None, load)?;
    if tp.missed > 0 {
        return Err(format!("filling: {} messages missed", tp.missed));
    }
    wait_written(d, &s, count)?;
    let fill = t0.elapsed().as_secs_f64();
    let disk_kib = host::du_kib(&dir);
    lines.push(format!(
        "1 GiB stored ({count} x 1 KiB) in {fill:.1} s ({:.0} MB/s), {:.0} MiB on disk",
        GIB as f64 / fill / 1e6,
        disk_kib as f64 / 1024.0
    ));
    out.add("gib_fill_mbytes_per_sec", GIB as f64 / fill / 1e6);
    out.add("gib_disk_mib", disk_kib as f64 / 1024.0);
    let stop = s.broker.terminate(Duration::from_secs(30));
    drop(s);
    if let Err(e) = stop {
        return Err(format!("stopping the filled broker: {e}"));
    }
    // The start reads from the disk, as after a reboot.
    let files = host::drop_cached(&dir);
    // Started again on the filled directory.
    let t0 = Instant::now();
    let mut s = (d.start)(&dir, sync, disk)?;
    s.remove = false;
    (d.ready)(s.broker.addr).map_err(|e| format!("after the restart: {e}"))?;
    let startup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let read_mib = host::read_bytes(s.pid()) as f64 / (1 << 20) as f64;
    thread::sleep(Duration::from_millis(200));
    let rss = status_kib(s.pid(), "VmRSS");
    let over = rss.saturating_sub(empty_rss) as f64 / 1024.0;
    out.add("gib_startup_ms", startup_ms);
    out.add("gib_startup_read_mib", read_mib);
    out.add("gib_empty_startup_ms", empty_ms);
    out.add("gib_rss_mib", rss as f64 / 1024.0);
    out.add("gib_rss_over_empty_mib", over);
    lines.push(format!(
        "restart with 1 GiB ({files} files dropped from the page cache): serving in {startup_ms:.0} ms (empty: {empty_ms:.0} ms) after reading {read_mib:.1} MiB from the disk, RSS {:.1} MiB, {over:.1} MiB above empty",
        rss as f64 / 1024.0
    ));
    // Pings with nothing else going on first, on the same broker for as long as the
    // replay will roughly take: the machine's own floor (a noisy host's stolen CPU shows
    // here as well as during the replay), against which the replay's pings are read.
    let addr = s.broker.addr;
    let quiet = {
        let done = Arc::new(AtomicBool::new(false));
        let pinger = {
            let (f, done) = (d.pinger, done.clone());
            thread::spawn(move || f(addr, done))
        };
        thread::sleep(QUIET_PINGS);
        done.store(true, Ordering::Release);
        pinger
            .join()
            .map_err(|_| "the ping thread panicked".to_string())??
    };
    let (q50, q99) = (run::percentile(&quiet, 0.5), run::percentile(&quiet, 0.99));
    out.add("gib_quiet_ping_p50_us", q50);
    out.add("gib_quiet_ping_p99_us", q99);
    // The replay, from the disk (what the start read aside), with pings on another
    // connection.
    host::drop_cached(&dir);
    let done = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (f, done) = (d.pinger, done.clone());
        thread::spawn(move || f(addr, done))
    };
    let took = (d.replay)(addr, "gib", count, done.clone());
    done.store(true, Ordering::Release);
    let pings = pinger
        .join()
        .map_err(|_| "the ping thread panicked".to_string())?;
    let took = took?;
    let pings = pings?;
    let mbs = GIB as f64 / took.as_secs_f64() / 1e6;
    let (p50, p99, max) = (
        run::percentile(&pings, 0.5),
        run::percentile(&pings, 0.99),
        pings.last().copied().unwrap_or(0.0),
    );
    out.add("gib_replay_mbytes_per_sec", mbs);
    out.add("gib_ping_p50_us", p50);
    out.add("gib_ping_p99_us", p99);
    out.add("gib_ping_max_us", max);
    out.add(
        "gib_peak_rss_mib",
        status_kib(s.pid(), "VmHWM") as f64 / 1024.0,
    );
    lines.push(format!(
        "replay of 1 GiB from the oldest, from the disk: {mbs:.0} MB/s ({:.1} s); ping meanwhile p50 {p50:.0} us  p99 {p99:.0} us  max {max:.0} us ({} pings); without the replay just before: p50 {q50:.0} us  p99 {q99:.0} us ({} pings)",
        took.as_secs_f64(),
        pings.len(),
        quiet.len()
    ));
    drop(s);
    drop(cleanup);
    Ok(lines)
}
