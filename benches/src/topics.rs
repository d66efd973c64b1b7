//! `--topics N`: a broker holding N topics lists them all over the management API (the
//! pages `mote topics` asks for) while another connection pings it every 2 ms. Says how
//! long each full listing took, and the ping round trips without a listing and during
//! the listings, so one command shows whether listing stalls other clients.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mote::bench::{Broker, free_port};
use mote_sdk::blocking::Client;
use mote_sdk::wire::{self, Decoded, Frame, Hello, ManageOp, Ping};
use mote_sdk::{Options, Start};

/// How many full listings each repetition makes.
const LISTINGS: usize = 20;

/// Runs the measurement `repeat` times on one broker with `n` topics.
pub(crate) fn run(mote: &Path, n: usize, repeat: usize) -> Result<(), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let max_topics = (n + 100).to_string();
    let child = Command::new(mote)
        .args(["serve", "--tcp", &addr.to_string(), "--http", "127.0.0.1:0"])
        .args(["--max-topics", &max_topics])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", mote.display()))?;
    let mut broker = Broker::new(child, addr, None);
    broker.wait_ready(Instant::now(), "the broker")?;
    let client =
        Client::connect(Options::new(addr.to_string())).map_err(|e| format!("connect: {e}"))?;
    let t = Instant::now();
    for i in 0..n {
        client
            .publish(&format!("bench/topics/{i}"), b"x")
            .map_err(|e| format!("publish: {e}"))?;
    }
    // A confirmed publish answers after every earlier one was stored.
    client
        .publish_confirmed("bench/topics/0", b"x")
        .map_err(|e| format!("publish: {e}"))?;
    println!(
        "{n} topics created in {:.0} ms; {LISTINGS} full listings per repetition",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "repetition  listing p50 / max (ms)  ping p50 / p99 quiet (µs)  ping p50 / p99 listing (µs)"
    );
    for r in 1..=repeat {
        let quiet = pinged(addr, || {
            thread::sleep(Duration::from_secs(2));
            Ok(Vec::new())
        })?;
        let (busy, times) = pinged_with(addr, || {
            let mut times = Vec::new();
            for _ in 0..LISTINGS {
                let t = Instant::now();
                let seen = list_all(&client)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                if seen < n {
                    return Err(format!("the listing showed {seen} topics of {n}"));
                }
            }
            Ok(times)
        })?;
        let mut times = times;
        times.sort_by(f64::total_cmp);
        println!(
            "{r:>10}  {:>12.1} / {:<8.1}  {:>12.0} / {:<10.0}  {:>12.0} / {:<10.0}",
            pct(&times, 50.0),
            times.last().copied().unwrap_or(0.0),
            pct(&quiet, 50.0),
            pct(&quiet, 99.0),
            pct(&busy, 50.0),
            pct(&busy, 99.0),
        );
    }
    // Subscribed, so the broker is known to be alive and answering at the end.
    client
        .subscribe("bench/topics/0", Start::Latest)
        .map_err(|e| format!("subscribe: {e}"))?;
    broker.terminate(Duration::from_secs(5))?;
    Ok(())
}

/// Every page of the listing; returns how many topics it showed.
fn list_all(client: &Client) -> Result<usize, String> {
    let mut from = 0;
    let mut seen = 0;
    loop {
        let json = client
            .manage(ManageOp::Topics { filter: "", from })
            .map_err(|e| format!("manage: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        seen += v["topics"].as_array().map_or(0, Vec::len);
        match v["next"].as_u64() {
            Some(n) => from = u32::try_from(n).map_err(|e| e.to_string())?,
            None => return Ok(seen),
        }
    }
}

fn pinged(
    addr: SocketAddr,
    work: impl FnOnce() -> Result<Vec<f64>, String>,
) -> Result<Vec<f64>, String> {
    pinged_with(addr, work).map(|(p, _)| p)
}

/// Runs `work` while a connection of its own pings every 2 ms; returns the round trips
/// (µs, sorted) and what `work` returned.
fn pinged_with<T>(
    addr: SocketAddr,
    work: impl FnOnce() -> Result<T, String>,
) -> Result<(Vec<f64>, T), String> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let pinger = thread::spawn(move || -> Result<Vec<f64>, String> {
        let mut c = Pinger::connect(addr).map_err(|e| format!("ping: {e}"))?;
        let mut rtts = Vec::new();
        while !d.load(Ordering::Acquire) {
            let t = Instant::now();
            c.ping().map_err(|e| format!("ping: {e}"))?;
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
            thread::sleep(Duration::from_millis(2));
        }
        rtts.sort_by(f64::total_cmp);
        Ok(rtts)
    });
    let out = work();
    done.store(true, Ordering::Release);
    let rtts = pinger
        .join()
        .map_err(|_| "the pinger panicked".to_string())??;
    Ok((rtts, out?))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A bare protocol connection that pings (no SDK: nothing between the socket and the
/// round trip).
struct Pinger {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Pinger {
    fn connect(addr: SocketAddr) -> io::Result<Pinger> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut p = Pinger { s, buf: Vec::new() };
        p.send(&Frame::Hello(Hello {
            magic: wire::MAGIC,
            min_version: wire::MIN_PROTOCOL_VERSION,
            max_version: wire::PROTOCOL_VERSION,
            client: "bench-ping",
        }))?;
        p.until(|f| matches!(f, Frame::Welcome(_)))?;
        Ok(p)
    }

    fn send(&mut self, f: &Frame<'_>) -> io::Result<()> {
        self.s.write_all(&f.to_vec())
    }

    fn ping(&mut self) -> io::Result<()> {
        self.send(&Frame::Ping(Ping { nonce: 7 }))?;
        self.until(|f| matches!(f, Frame::Pong(_)))
    }

    /// Reads frames until one `want` accepts.
    fn until(&mut self, want: impl Fn(&Frame<'_>) -> bool) -> io::Result<()> {
        loop {
            loop {
                let (found, used) = match wire::decode(&self.buf, usize::MAX) {
                    Ok(Decoded::Frame(f, used)) => (want(&f), used),
                    Ok(Decoded::Incomplete { .. }) => break,
                    Err(e) => return Err(io::Error::other(e.to_string())),
                };
                self.buf.drain(..used);
                if found {
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other("the broker closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
