//! The brokers mote is compared with: where their server programs are, how to start one on
//! a free loopback port with its output in a temporary log, and what in that log tells of
//! trouble. Each peer's module (`nats`, `redis`, `mqtt`) describes its own [`Peer`].

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mote::bench::{Broker, Driver, free_port};

use crate::{jetstream, mqtt, nats, redis};

/// Every broker `--compare` knows, in the order of the report.
pub(crate) const PEERS: [&Peer; 4] = [&nats::PEER, &redis::PEER, &mqtt::PEER, &jetstream::PEER];

/// A broker mote is compared with.
pub(crate) struct Peer {
    /// How the bench speaks to it; its name in `--compare` and the report.
    pub(crate) driver: Driver,
    /// Its server program.
    pub(crate) program: &'static str,
    /// The Debian package that installs the program.
    pub(crate) package: &'static str,
    /// The arguments that make it listen on 127.0.0.1 at a port, persisting nothing.
    pub(crate) args: fn(port: &str) -> Vec<&str>,
    /// The argument that makes the program print its version.
    pub(crate) version_flag: &'static str,
    /// Compared in the persisted runs only (`--persist`), each of which starts it anew.
    pub(crate) persisted_only: bool,
}

impl Peer {
    /// Its name in `--compare` and the report.
    pub(crate) fn name(&self) -> &'static str {
        self.driver.name()
    }

    /// The peer called `name` in `--compare`.
    pub(crate) fn named(name: &str) -> Option<&'static Peer> {
        PEERS.into_iter().find(|p| p.name() == name)
    }

    /// Where its server program is: `given`, else on `PATH` or where Debian puts it.
    pub(crate) fn binary(&self, given: Option<PathBuf>) -> Result<PathBuf, String> {
        if let Some(p) = given {
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{}: no such file", p.display()))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(
                ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from),
            )
            .map(|d| d.join(self.program))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "{} is not installed (not on PATH nor in /usr/sbin, /usr/bin, /usr/local); \
                     on Debian: apt-get install {}",
                    self.program, self.package
                )
            })
    }

    /// The server's version, as it reports it.
    pub(crate) fn version(&self, binary: &Path) -> Option<String> {
        let text = output_within(
            Command::new(binary).arg(self.version_flag),
            Duration::from_secs(5),
        )?;
        text.split_whitespace().find_map(|w| {
            let w = w.trim_start_matches("v=").trim_start_matches('v');
            (w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.')).then(|| w.to_string())
        })
    }

    /// Starts its server (`binary`) on a free loopback port, its output in a temporary log
    /// file; returns it and how long it took to accept a connection.
    pub(crate) fn start(&self, binary: &Path) -> Result<(Broker, Duration), String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::env::temp_dir().join(format!(
            "mote-bench-{}-{}-{port}.log",
            std::process::id(),
            self.name()
        ));
        let file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = Command::new(binary)
            .args((self.args)(&port.to_string()))
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
        let mut broker = Broker::new(child, addr, Some(log));
        match broker.wait_ready(t0, self.program) {
            Ok(took) => Ok((broker, took)),
            Err(e) => {
                let notes = log_notes(&broker);
                if notes.is_empty() {
                    Err(e)
                } else {
                    Err(format!("{e}: {}", notes.join(" / ")))
                }
            }
        }
    }
}

/// Lines of a broker's log that tell of trouble (slow consumers, errors, warnings).
pub(crate) fn log_notes(broker: &Broker) -> Vec<String> {
    let Some(text) = broker.log().and_then(|l| std::fs::read_to_string(l).ok()) else {
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
