//! The brokers this command starts: mote itself and the peers it compares with, each on a
//! free loopback port, and what /proc says about their CPU time and memory.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::conn::PATIENCE;

/// A broker the bench compares mote with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    Nats,
    Redis,
    Mosquitto,
}

impl Peer {
    pub(super) const ALL: [Peer; 3] = [Peer::Nats, Peer::Redis, Peer::Mosquitto];

    pub(super) fn name(self) -> &'static str {
        match self {
            Peer::Nats => "nats",
            Peer::Redis => "redis",
            Peer::Mosquitto => "mosquitto",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == s)
    }

    fn program(self) -> &'static str {
        match self {
            Peer::Nats => "nats-server",
            Peer::Redis => "redis-server",
            Peer::Mosquitto => "mosquitto",
        }
    }

    fn args(self, port: u16) -> Vec<String> {
        let port = port.to_string();
        let args: &[&str] = match self {
            Peer::Nats => &["-a", "127.0.0.1", "-p", &port],
            Peer::Redis => &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            Peer::Mosquitto => &["-p", &port],
        };
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Where the peer's server program is: on `PATH`, or where Debian puts it.
    pub(super) fn binary(self) -> Result<PathBuf, String> {
        let name = self.program();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(
                ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from),
            )
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "{name} is not installed (not on PATH nor in /usr/sbin, /usr/bin, /usr/local); \
                     on Debian: apt-get install {}",
                    match self {
                        Peer::Nats => "nats-server",
                        Peer::Redis => "redis-server",
                        Peer::Mosquitto => "mosquitto",
                    }
                )
            })
    }

    /// The server's version, as it reports it.
    pub(super) fn version(self, binary: &Path) -> Option<String> {
        let arg = match self {
            Peer::Mosquitto => "-h",
            Peer::Nats | Peer::Redis => "--version",
        };
        let text = output_within(Command::new(binary).arg(arg), Duration::from_secs(5))?;
        text.split_whitespace().find_map(|w| {
            let w = w.trim_start_matches("v=").trim_start_matches('v');
            (w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.')).then(|| w.to_string())
        })
    }
}

/// What a command printed (stdout then stderr), if it ended within `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().ok()?;
    Some(String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned())
}

/// A broker this command started; killed when dropped.
pub(super) struct Broker {
    child: Child,
    pub(super) addr: SocketAddr,
    /// Where its output goes (peers only; mote's warnings go to our stderr).
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
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub(super) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Lines of its log that tell of trouble (slow consumers, errors, warnings).
    pub(super) fn log_notes(&self) -> Vec<String> {
        let Some(text) = self
            .log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
        else {
            return Vec::new();
        };
        let mut notes: Vec<String> = Vec::new();
        for l in text.lines() {
            let lower = l.to_ascii_lowercase();
            let trouble = [
                "slow consumer",
                "[err]",
                "[wrn]",
                "error",
                "warning",
                "disconnect",
            ]
            .iter()
            .any(|w| lower.contains(w));
            // Redis warns about the machine's memory overcommit setting at every start.
            let machine = lower.contains("overcommit");
            if trouble && !machine && notes.len() < 20 {
                notes.push(l.trim().chars().take(200).collect());
            }
        }
        notes
    }
}

pub(super) fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `broker` accepts a connection; returns how long that took since `t0`.
fn ready(mut broker: Broker, t0: Instant, what: &str) -> Result<(Broker, Duration), String> {
    let deadline = t0 + Duration::from_secs(5);
    loop {
        if TcpStream::connect_timeout(&broker.addr, PATIENCE).is_ok() {
            return Ok((broker, t0.elapsed()));
        }
        if let Some(status) = broker.exited() {
            let notes = broker.log_notes();
            return Err(format!(
                "{what} exited ({status}) before accepting connections{}",
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(": {}", notes.join(" / "))
                }
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not accept connections within 5 s"));
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// Starts `mote serve` on a free loopback port; returns it and how long it took to
/// accept a connection.
pub(super) fn start_mote() -> Result<(Broker, Duration), String> {
    start_mote_with(&[])
}

/// [`start_mote`] with more `mote serve` arguments.
pub(super) fn start_mote_with(extra: &[&str]) -> Result<(Broker, Duration), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the mote binary: {e}"))?;
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
            "127.0.0.1:0",
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
        .map_err(|e| format!("cannot start the broker: {e}"))?;
    ready(
        Broker {
            child,
            addr,
            log: None,
        },
        t0,
        "the broker",
    )
}

/// Starts `peer`'s server (`binary`) on a free loopback port, its output in a temporary
/// log file; returns it and how long it took to accept a connection.
pub(super) fn start_peer(peer: Peer, binary: &Path) -> Result<(Broker, Duration), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::env::temp_dir().join(format!(
        "mote-bench-{}-{}-{port}.log",
        std::process::id(),
        peer.name()
    ));
    let file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let child = Command::new(binary)
        .args(peer.args(port))
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&log);
            return Err(format!("cannot start {}: {e}", binary.display()));
        }
    };
    ready(
        Broker {
            child,
            addr,
            log: Some(log),
        },
        t0,
        peer.program(),
    )
}

/// Nanoseconds of CPU (user + system) used by every thread of `pid`.
pub(super) fn cpu_ns(pid: u32) -> u64 {
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
pub(super) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
