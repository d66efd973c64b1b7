//! The brokers the bench starts, each on a free loopback port, and what /proc says about
//! their CPU time and memory. How to start mote is here; how to start the brokers it is
//! compared with is the `mote-bench` crate's.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_setaffinity};

use super::conn::PATIENCE;
use super::figures::median;

/// A broker the bench started; killed when dropped.
pub struct Broker {
    child: Child,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// Where its output goes (peers only; mote's warnings go to our stderr), removed with it.
    log: Option<PathBuf>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

impl Broker {
    /// The broker `child` that will accept connections at `addr`, its output going to the
    /// file `log`.
    pub fn new(child: Child, addr: SocketAddr, log: Option<PathBuf>) -> Broker {
        Broker { child, addr, log }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its output goes to.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Kills it (SIGKILL) and waits for it.
    #[cfg(feature = "bench-persist")]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits for it, for `limit` at most (then kills it).
    #[cfg(feature = "bench-persist")]
    pub fn terminate(&mut self, limit: Duration) -> Result<(), String> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .ok_or("the broker has no process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| format!("cannot signal the broker: {e}"))?;
        let deadline = Instant::now() + limit;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "the broker did not stop within {} s of SIGTERM",
                    limit.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Waits until it accepts a connection, for 5 s at most; returns how long that took
    /// since `t0`. `what` names it in errors.
    pub fn wait_ready(&mut self, t0: Instant, what: &str) -> Result<Duration, String> {
        let deadline = t0 + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&self.addr, PATIENCE).is_ok() {
                let took = t0.elapsed();
                if PIN.load(Ordering::Relaxed) {
                    pin_process(self.pid(), BROKER_CPU)
                        .map_err(|e| format!("cannot pin {what} to CPU {BROKER_CPU}: {e}"))?;
                }
                return Ok(took);
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{what} exited ({status}) before accepting connections"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{what} did not accept connections within 5 s"));
            }
            thread::sleep(Duration::from_micros(100));
        }
    }
}

/// A free loopback port (free when asked: the broker given it binds it soon after).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the mote binary `exe` as `mote serve` on a free loopback port, with `extra`
/// arguments; returns it and how long it took to accept a connection.
pub(crate) fn start_mote(exe: &Path, extra: &[&str]) -> Result<(Broker, Duration), String> {
    start_mote_at(exe, "127.0.0.1:0", extra)
}

/// [`start_mote`] with its HTTP edge at `http`.
pub(crate) fn start_mote_at(
    exe: &Path,
    http: &str,
    extra: &[&str],
) -> Result<(Broker, Duration), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t0 = Instant::now();
    let child = Command::new(exe)
        .args([
            "serve",
            "--tcp",
            &addr.to_string(),
            "--max-connections",
            "4096",
            "--http",
            http,
        ])
        .args([
            "--ring-messages",
            "65536",
            "--ring-bytes",
            "64M",
            "--memory",
            "512M",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the broker ({}): {e}", exe.display()))?;
    let mut broker = Broker::new(child, addr, None);
    let took = broker.wait_ready(t0, "the broker")?;
    Ok((broker, took))
}

/// Starts a broker five times and keeps the last; the startup time (ms) is the median.
pub fn start_five(
    mut start: impl FnMut() -> Result<(Broker, Duration), String>,
) -> Result<(Broker, f64), String> {
    let mut times = Vec::new();
    for _ in 0..4 {
        let (b, t) = start()?;
        drop(b);
        times.push(t.as_secs_f64() * 1e3);
    }
    let (b, t) = start()?;
    times.push(t.as_secs_f64() * 1e3);
    let median = median(times).unwrap_or(0.0);
    Ok((b, median))
}

/// Nanoseconds of CPU (user + system) used by every thread of `pid`; 0 if it cannot be
/// read.
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    process_cpu_ns(pid).unwrap_or(0)
}

/// Nanoseconds of CPU used by every thread of `pid`, if its threads can be read: each
/// thread's time on CPU from `schedstat` (in nanoseconds), or where a kernel has no
/// schedstat, its user and system time from `stat` (in clock ticks, 10 ms: too coarse
/// for a short run, but never wrong in sum).
pub(crate) fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = None;
    for t in tasks.flatten() {
        if let Some(ns) = task_cpu_ns(&t.path()) {
            *sum.get_or_insert(0) += ns;
        }
    }
    sum
}

/// Nanoseconds of CPU used so far by the calling thread.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    task_cpu_ns(Path::new("/proc/thread-self"))
}

/// A thread's CPU time from its /proc directory `task`.
fn task_cpu_ns(task: &Path) -> Option<u64> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok();
    if let Some(ns) = schedstat.and_then(|s| s.split_whitespace().next()?.parse().ok()) {
        return Some(ns);
    }
    // `pid (comm) state ...`: utime and stime are the 12th and 13th fields after the
    // command, which may hold spaces and parentheses of its own.
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every architecture mote is built for.
    Some(ticks * 10_000_000)
}

/// The CPU the brokers are pinned to with `--pin`.
pub(crate) const BROKER_CPU: usize = 0;
/// The CPU the bench's own threads are pinned to with `--pin`.
pub(crate) const CLIENT_CPU: usize = 1;

/// Whether every broker that becomes ready is pinned to [`BROKER_CPU`] (`--pin`).
static PIN: AtomicBool = AtomicBool::new(false);

/// Whether `--pin` can be done here: both CPUs exist and this process may use them.
pub(crate) fn check_pinnable() -> Result<(), String> {
    let cpus = rustix::thread::sched_getaffinity(None)
        .map_err(|e| format!("--pin: cannot read this process's CPUs: {e}"))?;
    if !cpus.is_set(BROKER_CPU) || !cpus.is_set(CLIENT_CPU) {
        return Err(format!(
            "--pin needs CPUs {BROKER_CPU} and {CLIENT_CPU}, and this process may run on {} \
             CPU(s) only",
            cpus.count()
        ));
    }
    Ok(())
}

/// For `--pin`: pins the calling thread (and so every thread and broker it starts from
/// now) to [`CLIENT_CPU`], and every broker that becomes ready from now on to
/// [`BROKER_CPU`] ([`Broker::wait_ready`]).
pub(crate) fn pin_bench() -> Result<(), String> {
    sched_setaffinity(None, &cpu_set(CLIENT_CPU))
        .map_err(|e| format!("cannot pin the bench to CPU {CLIENT_CPU}: {e}"))?;
    PIN.store(true, Ordering::Relaxed);
    Ok(())
}

fn cpu_set(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu);
    set
}

/// Pins every thread of process `pid` to `cpu`. A thread started by a pinned thread is
/// pinned from its start; one started by a thread not pinned yet is found in the next
/// pass, until a pass finds no new thread.
fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    let set = cpu_set(cpu);
    let mut pinned = Vec::new();
    loop {
        let mut new = false;
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pinned.contains(&tid) {
                continue;
            }
            // A thread that ended since the listing is not an error.
            if let Some(p) = Pid::from_raw(tid) {
                match sched_setaffinity(Some(p), &set) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            pinned.push(tid);
            new = true;
        }
        if !new {
            return Ok(());
        }
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
