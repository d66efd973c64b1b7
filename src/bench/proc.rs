//! The brokers the bench starts, each on a free loopback port, and what /proc says about
//! their CPU time and memory. How to start mote is here; how to start the brokers it is
//! compared with is the `mote-bench` crate's.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
                return Ok(t0.elapsed());
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

/// Nanoseconds of CPU (user + system) used by every thread of `pid`.
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
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
