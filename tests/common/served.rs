//! `mote serve` as a child process on free ports, its log lines on a channel, and what
//! `/proc` says of it (memory, threads, file descriptors).
#![allow(dead_code)] // Each test crate uses a part.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MOTE: &str = env!("CARGO_BIN_EXE_mote");

pub struct Served {
    pub child: Child,
    /// The binary protocol's address.
    pub addr: SocketAddr,
    /// The HTTP edge's, when it is on.
    pub http: Option<SocketAddr>,
    log: mpsc::Receiver<String>,
    /// Log lines read so far.
    pub seen: Vec<String>,
}

impl Served {
    /// `mote serve --tcp 127.0.0.1:0 --http 127.0.0.1:0` with `args` (and `RUST_LOG=info`).
    pub fn start(args: &[&str]) -> Served {
        Served::start_with(args, &[])
    }

    /// As [`Served::start`], with extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Served {
        Served::launch("127.0.0.1:0", args, env)
    }

    /// As [`Served::start`], with the binary protocol on `tcp`.
    pub fn start_on(tcp: &str, args: &[&str]) -> Served {
        Served::launch(tcp, args, &[])
    }

    /// The binary protocol's port, as `mote pub -p` takes it.
    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn launch(tcp: &str, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(MOTE);
        cmd.args(["serve", "--tcp", tcp])
            .args(if args.contains(&"--http") {
                &[][..]
            } else {
                &["--http", "127.0.0.1:0"][..]
            })
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Served {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            http: None,
            log,
            seen: Vec::new(),
        };
        let addr_after = |line: &str, key: &str| -> SocketAddr {
            line.split(key)
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let line = s.wait_log("(tcp)");
        s.addr = addr_after(&line, "listening on ");
        if !args.windows(2).any(|w| w == ["--http", "off"]) {
            let line = s.wait_log("http listening on");
            s.http = Some(addr_after(&line, "http listening on "));
        }
        s
    }

    /// Waits (at most 5 s) for a log line containing `needle`, or finds it among those
    /// already read.
    pub fn wait_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(e) => panic!("no log line with {needle:?}: {e}; seen {:?}", self.seen),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` in its unit (kB for memory).
    pub fn status(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status("VmRSS")
    }

    pub fn threads(&self) -> u64 {
        self.status("Threads")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Sends `signal` (such as `HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
