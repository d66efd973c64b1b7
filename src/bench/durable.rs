//! The persisted runs (`--persist`): every broker on a fresh data directory of its own for
//! each run, with a stated sync policy, written once for every protocol's [`Durable`]
//! client.
//!
//! - `p64b`, `p1k`: the 1→1 load of the in-memory runs, the broker persisting every
//!   message; the run ends when the subscriber has everything **and** the broker has
//!   written it all to its files (a broker may store behind what it delivers). Bytes the
//!   broker caused to be written (`write_bytes` of `/proc/PID/io`, counted when a page
//!   is dirtied, so a page dirtied again after a sync counts again) per payload byte.
//! - `confirm`: `--sync always`, 16 publishers each waiting for its confirmation before
//!   the next: confirmed messages and fsyncs per second.
//! - `paced`: one publisher at a steady 100 msgs/s of 64 B for 10 s: fsyncs per second
//!   (the wear a Pi sees) and bytes written per payload byte.
//! - `gib` (only when `--only` names it): 1 GiB of 1 KiB messages stored, the broker
//!   stopped (SIGTERM) and started again: time until it answers, RSS above the same broker
//!   started empty; then one subscriber replays the 1 GiB from the oldest message while
//!   another connection pings.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::conn::{Client, PATIENCE, is_timeout};
use super::proc::{Broker, cpu_ns, status_kib};
use super::run::{self, Load, Throughput};

/// Publishers of the `confirm` run.
pub const CONFIRM_PUBLISHERS: usize = 16;
/// How long the `confirm` run publishes.
const CONFIRM_TIME: Duration = Duration::from_secs(3);
/// The `paced` run: messages per second, and for how long.
const PACED_RATE: u64 = 100;
const PACED_TIME: Duration = Duration::from_secs(10);
/// The `gib` run: payload bytes stored, in messages of this size.
const GIB: u64 = 1 << 30;
const GIB_SIZE: usize = 1024;

/// When a persisted broker syncs its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// At most this many milliseconds after a write.
    Every(u64),
    /// Before a publish is confirmed.
    Always,
}

impl SyncMode {
    /// Parses `always` or a duration (`1s`, `200ms`).
    pub fn parse(s: &str) -> Result<SyncMode, String> {
        let s = s.trim();
        if s == "always" {
            return Ok(SyncMode::Always);
        }
        let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1000)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60_000)
        } else {
            (s, 1000)
        };
        num.trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| SyncMode::Every(n * mul))
            .ok_or_else(|| {
                format!("invalid value {s:?} for --sync: expected always or a duration (1s, 200ms)")
            })
    }

    /// As mote's `--sync` takes it (`always`, `1000ms`).
    pub fn arg(&self) -> String {
        match self {
            SyncMode::Always => "always".into(),
            SyncMode::Every(ms) => format!("{ms}ms"),
        }
    }
}

/// A broker started on a fresh data directory; stopped and the directory removed when
/// dropped.
pub struct Started {
    /// The broker.
    pub broker: Broker,
    /// Its data directory (and whatever else the start put there).
    pub dir: PathBuf,
    /// Its HTTP address, for brokers that count their own fsyncs (mote's `/metrics`).
    pub http: Option<SocketAddr>,
    /// The sync policy in force, in the broker's own words.
    pub sync: String,
    /// Whether the policy asked for is in force (a broker without the setting runs its
    /// own).
    pub matched: bool,
    /// Remove `dir` when dropped.
    pub remove: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        self.broker.kill();
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Started {
    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.broker.pid()
    }
}

/// Starts a broker persisting into the (new or filled) directory `dir` with a sync policy
/// and a disk budget in bytes; it returns once the broker accepts connections (see
/// [`Durable::ready`] for serving).
pub type Starter = Box<dyn Fn(&Path, SyncMode, u64) -> Result<Started, String>>;

/// A benchmark client of a broker that persists: what the persisted runs need beyond
/// [`Client`].
pub trait Durable: Client {
    /// Makes a broker just started on an empty directory persist every topic of the
    /// runs (JetStream: a file-store stream over their subjects).
    fn prepare(_addr: SocketAddr) -> io::Result<()> {
        Ok(())
    }

    /// Connects and waits until the broker serves what it stored (mote: a ping answered;
    /// JetStream: the stream's info).
    fn ready(addr: SocketAddr) -> io::Result<()>;

    /// Whether the broker has written (handed to the OS) every message it took:
    /// `expected` of them since it started on an empty directory.
    fn all_written(s: &Started, expected: u64) -> io::Result<bool>;

    /// Publishes `payload` to `topic` asking for a confirmation, and waits for it; `n`
    /// numbers the publisher's requests from 1.
    fn publish_confirmed(&mut self, topic: &str, payload: &[u8], n: u64) -> io::Result<()>;

    /// One ping round trip on this connection.
    fn ping(&mut self) -> io::Result<()>;

    /// Subscribes to `topic` from its oldest stored message.
    fn subscribe_replay(&mut self, topic: &str) -> io::Result<()>;

    /// Fsyncs so far as the broker counts them itself (mote's `/metrics`), else `None`
    /// and they are counted from outside (perf's syscall tracepoints).
    fn fsyncs(_s: &Started) -> Option<u64> {
        None
    }
}

/// How the persisted runs start and speak to one kind of broker.
pub struct DurableDriver {
    pub(crate) start: Starter,
    throughput: fn(SocketAddr, Option<u32>, Load) -> Result<Throughput, String>,
    prepare: fn(SocketAddr) -> io::Result<()>,
    ready: fn(SocketAddr) -> io::Result<()>,
    all_written: fn(&Started, u64) -> io::Result<bool>,
    confirmed: fn(SocketAddr, &str, usize, Duration) -> Result<Confirmed, String>,
    paced: fn(SocketAddr, &str, usize, u64, Duration) -> Result<u64, String>,
    replay: fn(SocketAddr, &str, u64, Arc<AtomicBool>) -> Result<Duration, String>,
    pinger: fn(SocketAddr, Arc<AtomicBool>) -> Result<Vec<f64>, String>,
    fsyncs: fn(&Started) -> Option<u64>,
}

impl DurableDriver {
    /// The persisted runs of a broker spoken to with `C` and started by `start`.
    pub fn new<C: Durable>(start: Starter) -> DurableDriver {
        DurableDriver {
            start,
            throughput: run::throughput::<C>,
            prepare: C::prepare,
            ready: ready_within::<C>,
            all_written: C::all_written,
            confirmed: confirmed::<C>,
            paced: paced::<C>,
            replay: replay::<C>,
            pinger: pinger::<C>,
            fsyncs: C::fsyncs,
        }
    }
}

/// Waits until the broker serves, for [`PATIENCE`] at most.
fn ready_within<C: Durable>(addr: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match C::ready(addr) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// What the `confirm` run measured.
pub(crate) struct Confirmed {
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
    /// Publish-to-confirmation times, microseconds, sorted.
    pub(crate) latencies: Vec<f64>,
}

/// `publishers` connections publishing `size`-byte messages to `topic` for `time`, each
/// waiting for its confirmation before the next.
fn confirmed<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    publishers: usize,
    time: Duration,
) -> Result<Confirmed, String> {
    let mut conns = Vec::new();
    for i in 0..publishers {
        conns.push(C::connect(addr, "bench-confirm").map_err(|e| format!("publisher {i}: {e}"))?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let topic = C::topic(topic);
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (stop, topic) = (stop.clone(), topic.clone());
            thread::spawn(move || -> io::Result<(u64, Vec<f64>)> {
                let mut payload = [b'c'; 64];
                let mut lat = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    payload[..8].copy_from_slice(&n.to_le_bytes());
                    let t = Instant::now();
                    c.publish_confirmed(&topic, &payload, n)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                Ok((n, lat))
            })
        })
        .collect();
    thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let mut messages = 0;
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok((n, lat))) => {
                messages += n;
                latencies.extend(lat);
            }
            Ok(Err(e)) => failure = Some(format!("publisher: {e}")),
            Err(_) => failure = Some("a publisher thread panicked".into()),
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(f) = failure {
        return Err(f);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Confirmed {
        messages,
        seconds,
        latencies,
    })
}

/// One publisher sending `rate` confirmed `size`-byte messages a second to `topic` for
/// `time`, on a steady clock; returns the messages sent.
fn paced<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    size: usize,
    rate: u64,
    time: Duration,
) -> Result<u64, String> {
    let mut c = C::connect(addr, "bench-paced").map_err(|e| e.to_string())?;
    let topic = &C::topic(topic);
    let mut payload = vec![b'p'; size.max(8)];
    let t0 = Instant::now();
    let total = rate * time.as_millis() as u64 / 1000;
    for n in 1..=total {
        let due = t0 + Duration::from_micros(n * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        payload[..8].copy_from_slice(&n.to_le_bytes());
        c.publish_confirmed(topic, &payload, n)
            .map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// Subscribes to `topic` from its oldest message and reads `count` messages; returns how
/// long that took from the subscription. Sets `done` at the end.
fn replay<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    count: u64,
    done: Arc<AtomicBool>,
) -> Result<Duration, String> {
    let r = (|| {
        let mut c = C::connect(addr, "bench-replay")?;
        let t0 = Instant::now();
        c.subscribe_replay(&C::topic(topic))?;
        c.conn().set_patience(Duration::from_millis(100))?;
        let mut seen = 0u64;
        let mut quiet = Instant::now();
        while seen < count {
            let mut got = 0;
            let r = c.read(|_| {
                got += 1;
                seen + got < count && got < 4096
            });
            seen += got;
            match r {
                Ok(()) => quiet = Instant::now(),
                Err(e) if is_timeout(&e) => {
                    if got > 0 {
                        quiet = Instant::now();
                    } else if quiet.elapsed() > PATIENCE {
                        return Err(io::Error::other(format!(
                            "no message for {} s after {seen} of {count}",
                            PATIENCE.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
            c.tick()?;
        }
        Ok(t0.elapsed())
    })();
    done.store(true, Ordering::Release);
    r.map_err(|e| format!("replay: {e}"))
}

/// Pings on a connection of its own, one round trip every 2 ms, until `done`; returns
/// the round trips in microseconds, sorted.
fn pinger<C: Durable>(addr: SocketAddr, done: Arc<AtomicBool>) -> Result<Vec<f64>, String> {
    let mut c = C::connect(addr, "bench-ping").map_err(|e| format!("ping: {e}"))?;
    let mut rtts = Vec::new();
    while !done.load(Ordering::Acquire) {
        let t = Instant::now();
        c.ping().map_err(|e| format!("ping: {e}"))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
        thread::sleep(Duration::from_millis(2));
    }
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// `write_bytes` of /proc/PID/io: bytes the process caused to be sent to storage.
pub(crate) fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Counts a broker's fsyncs over a stretch of time: its own count when it keeps one,
/// else `perf stat` on the fsync and fdatasync tracepoints of its process.
struct FsyncCount {
    own: Option<u64>,
    perf: Option<(std::process::Child, PathBuf)>,
}

impl FsyncCount {
    fn start(d: &DurableDriver, s: &Started) -> FsyncCount {
        if let Some(n) = (d.fsyncs)(s) {
            return FsyncCount {
                own: Some(n),
                perf: None,
            };
        }
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
        // perf attaches to the process's threads in a few milliseconds.
        thread::sleep(Duration::from_millis(150));
        FsyncCount {
            own: None,
            perf: child.map(|c| (c, out)),
        }
    }

    /// Fsyncs since [`FsyncCount::start`], if they could be counted.
    fn stop(self, d: &DurableDriver, s: &Started) -> Option<u64> {
        if let Some(n0) = self.own {
            return (d.fsyncs)(s).map(|n| n.saturating_sub(n0));
        }
        let (mut child, out) = self.perf?;
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32)?,
            rustix::process::Signal::INT,
        );
        let _ = child.wait();
        let text = std::fs::read_to_string(&out).ok();
        let _ = std::fs::remove_file(&out);
        let mut total = None;
        for l in text?.lines() {
            let mut f = l.split(',');
            if let (Some(n), Some(event)) = (f.next(), f.nth(1)) {
                if event.contains("sync") {
                    if let Ok(n) = n.trim().parse::<u64>() {
                        total = Some(total.unwrap_or(0) + n);
                    }
                }
            }
        }
        total
    }
}

/// What the persisted runs measure of one broker, by run.
#[derive(Default)]
pub(crate) struct DurableFigures {
    pub(crate) figures: Vec<(String, f64)>,
    /// The sync policy in force in each run, when the one asked for is not.
    pub(crate) notes: Vec<String>,
}

impl DurableFigures {
    fn add(&mut self, key: impl Into<String>, x: f64) {
        self.figures.push((key.into(), x));
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
    notes: &mut Vec<String>,
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
        let note = format!("{run}: sync {} asked, {} in force", sync.arg(), s.sync);
        if !notes.contains(&note) {
            notes.push(note);
        }
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn persisted_throughput(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    (run, suffix, size, count, window): (&'static str, &str, usize, u64, u64),
    sync: SyncMode,
    out: &mut DurableFigures,
) -> Result<Throughput, String> {
    let s = start_fresh(d, base, who, run, sync, 4 << 30, &mut out.notes)?;
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
    let fsyncs = fs.stop(d, &s);
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

/// The `confirm` run: `--sync always`, [`CONFIRM_PUBLISHERS`] publishers each waiting
/// for its confirmation.
pub(crate) fn confirm(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    out: &mut DurableFigures,
) -> Result<String, String> {
    let s = start_fresh(
        d,
        base,
        who,
        "confirm",
        SyncMode::Always,
        4 << 30,
        &mut out.notes,
    )?;
    let fs = FsyncCount::start(d, &s);
    let w0 = write_bytes(s.pid());
    let c = (d.confirmed)(s.broker.addr, "confirm", CONFIRM_PUBLISHERS, CONFIRM_TIME)?;
    let written = write_bytes(s.pid()).saturating_sub(w0);
    let fsyncs = fs.stop(d, &s);
    let rate = c.messages as f64 / c.seconds;
    out.add("confirmed_msgs_per_sec", rate);
    out.add(
        "confirmed_latency_p50_us",
        run::percentile(&c.latencies, 0.5),
    );
    out.add(
        "confirmed_latency_p99_us",
        run::percentile(&c.latencies, 0.99),
    );
    out.add(
        "confirmed_write_per_payload",
        written as f64 / (c.messages.max(1) * 64) as f64,
    );
    let mut line = format!(
        "sync always x{CONFIRM_PUBLISHERS} confirmed {rate:>8.0} msgs/s  confirm p50 {:.0} us  p99 {:.0} us",
        run::percentile(&c.latencies, 0.5),
        run::percentile(&c.latencies, 0.99)
    );
    if let Some(f) = fsyncs {
        let per_sec = f as f64 / c.seconds;
        out.add("confirmed_fsyncs_per_sec", per_sec);
        if f > 0 {
            out.add("confirmed_msgs_per_fsync", c.messages as f64 / f as f64);
        }
        line += &format!("  {per_sec:.0} fsyncs/s");
    } else {
        line += "  fsyncs not counted";
    }
    Ok(line)
}

/// The `paced` run: 100 confirmed msgs/s of 64 B for 10 s under `sync`.
pub(crate) fn paced_run(
    d: &DurableDriver,
    base: &Path,
    who: &str,
    sync: SyncMode,
    out: &mut DurableFigures,
) -> Result<String, String> {
    let s = start_fresh(d, base, who, "paced", sync, 4 << 30, &mut out.notes)?;
    let fs = FsyncCount::start(d, &s);
    let w0 = write_bytes(s.pid());
    let t0 = Instant::now();
    let n = (d.paced)(s.broker.addr, "paced", 64, PACED_RATE, PACED_TIME)?;
    let seconds = t0.elapsed().as_secs_f64();
    let written = write_bytes(s.pid()).saturating_sub(w0);
    let fsyncs = fs.stop(d, &s);
    let per_payload = written as f64 / (n.max(1) * 64) as f64;
    out.add("paced_write_per_payload", per_payload);
    out.add("paced_write_bytes_per_sec", written as f64 / seconds);
    let mut line = format!(
        "{PACED_RATE} msgs/s of 64 B for {:.0} s: {:.0} bytes written/s ({per_payload:.1} per payload byte)",
        seconds,
        written as f64 / seconds
    );
    match fsyncs {
        Some(f) => {
            out.add("paced_fsyncs_per_sec", f as f64 / seconds);
            line += &format!("  {:.2} fsyncs/s", f as f64 / seconds);
        }
        None => line += "  fsyncs not counted",
    }
    Ok(line)
}

/// The `gib` run: 1 GiB stored, a restart, the replay.
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
    let mut s = start_fresh(d, base, who, "gib", sync, disk, &mut out.notes)?;
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
    let disk_kib = du_kib(&dir);
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
    // Started again on the filled directory.
    let t0 = Instant::now();
    let mut s = (d.start)(&dir, sync, disk)?;
    s.remove = false;
    (d.ready)(s.broker.addr).map_err(|e| format!("after the restart: {e}"))?;
    let startup_ms = t0.elapsed().as_secs_f64() * 1e3;
    thread::sleep(Duration::from_millis(200));
    let rss = status_kib(s.pid(), "VmRSS");
    let over = rss.saturating_sub(empty_rss) as f64 / 1024.0;
    out.add("gib_startup_ms", startup_ms);
    out.add("gib_empty_startup_ms", empty_ms);
    out.add("gib_rss_mib", rss as f64 / 1024.0);
    out.add("gib_rss_over_empty_mib", over);
    lines.push(format!(
        "restart with 1 GiB: serving in {startup_ms:.0} ms (empty: {empty_ms:.0} ms), RSS {:.1} MiB, {over:.1} MiB above empty",
        rss as f64 / 1024.0
    ));
    // The replay, with pings on another connection.
    let done = Arc::new(AtomicBool::new(false));
    let addr = s.broker.addr;
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
        "replay of 1 GiB from the oldest: {mbs:.0} MB/s ({:.1} s); ping meanwhile p50 {p50:.0} us  p99 {p99:.0} us  max {max:.0} us ({} pings)",
        took.as_secs_f64(),
        pings.len()
    ));
    drop(s);
    drop(cleanup);
    Ok(lines)
}

/// Removes a directory when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// KiB a directory takes on disk (`du -sk`), 0 if unknown.
fn du_kib(dir: &Path) -> u64 {
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

/// A plain HTTP/1.1 GET; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(body.to_string());
    }
    // Chunked: sizes in hex, each on a line of its own before its bytes.
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::other("a bad chunk size"))?;
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    Ok(out)
}
