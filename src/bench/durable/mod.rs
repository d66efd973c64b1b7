//! The persisted runs (mote-bench's `--persist`; only with the `bench-persist` feature):
//! every broker on a fresh data directory of its own for each run, with a stated sync
//! policy, written once for every protocol's [`Durable`] client. The runs themselves are
//! in [`runs`], their loads in [`load`], what is read of the broker's process and files
//! from outside in [`host`], their options in [`plan`], their part of a bench run in
//! [`measure`].
//!
//! - `p64b`, `p1k`: the 1→1 load of the in-memory runs, the broker persisting every
//!   message under `--sync` (default 1s); the run ends when the subscriber has everything
//!   **and** the broker has written it all to its files (a broker may store behind what it
//!   delivers). Bytes the broker caused to be written (`write_bytes` of `/proc/PID/io`)
//!   per payload byte.
//! - `confirm`: 16 publishers each waiting for its confirmation before the next, at 64 B
//!   and 1 KiB, under `--sync always` (group commit) and under `--sync`: confirmed
//!   messages, fsyncs and bytes written per second.
//! - `paced`: one publisher at a steady 100 confirmed msgs/s of 64 B for 10 s, under
//!   `always` and under `--sync`: fsyncs per second (the wear a Pi sees) and bytes written
//!   per payload byte.
//! - `gib` (only when `--only` names it): 1 GiB of 1 KiB messages stored, the broker
//!   stopped (SIGTERM), the directory's pages dropped from the page cache, the broker
//!   started again: time until it serves, RSS; then one subscriber replays the 1 GiB from
//!   the oldest message while another connection pings, and pings alone for 3 s before
//!   it: the machine's own tail, to read the replay's against.
//!
//! Fsyncs are the `fsync` and `fdatasync` calls of the broker's process, counted by
//! `perf stat` on their tracepoints, the same way for every broker; where perf cannot
//! count them, mote's own `mote_store_fsyncs_total` stands in (and the report says so).

mod host;
mod load;
mod measure;
mod mote;
mod plan;
mod rows;
mod runs;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use super::conn::{Client, PATIENCE};
use super::proc::Broker;
use super::run::{self, Load, Throughput};

pub(crate) use measure::{Persisted, repetition};
pub(crate) use mote::driver as mote_driver;
pub use plan::{PERSIST_FLAGS, Persist};
pub(crate) use rows::rows;

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

    /// For people: `always`, `1s`, `200ms`.
    pub fn label(&self) -> String {
        match self {
            SyncMode::Always => "always".into(),
            SyncMode::Every(ms) if ms % 1000 == 0 => format!("{}s", ms / 1000),
            SyncMode::Every(ms) => format!("{ms}ms"),
        }
    }

    /// Its part of a figure's JSON name: `always`, or `interval` for any duration (the
    /// report says which, as `persisted_sync`).
    pub(crate) fn key(&self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Every(_) => "interval",
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

    /// Fsyncs so far as the broker counts them itself (mote's `/metrics`), if it does:
    /// what stands in when perf cannot count them from outside.
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
    confirmed: fn(SocketAddr, &str, usize, usize, Duration) -> Result<load::Confirmed, String>,
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
            confirmed: load::confirmed::<C>,
            paced: load::paced::<C>,
            replay: load::replay::<C>,
            pinger: load::pinger::<C>,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::SyncMode;

    #[test]
    fn sync_policies_parse_and_read_back() {
        for (given, arg, label, key) in [
            ("always", "always", "always", "always"),
            ("1s", "1000ms", "1s", "interval"),
            ("200ms", "200ms", "200ms", "interval"),
            ("2m", "120000ms", "120s", "interval"),
        ] {
            let s = SyncMode::parse(given).unwrap();
            assert_eq!(
                (s.arg().as_str(), s.label().as_str(), s.key()),
                (arg, label, key)
            );
        }
        assert_eq!(
            SyncMode::parse("0s").unwrap_err(),
            "invalid value \"0s\" for --sync: expected always or a duration (1s, 200ms)"
        );
        assert!(SyncMode::parse("never").is_err());
    }
}
