//! `mote bench`: throughput, fan-out, latency, CPU per message and memory of a broker.
//!
//! Clients speak the wire protocol directly over blocking sockets (the SDK's codec, no
//! SDK client), so the measurement is of the broker, not of a client library. Publishers
//! are paced to stay at most `--window` messages ahead of the slowest subscriber, so a
//! run measures what the broker delivers without loss; any lag is reported anyway.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mote_sdk::wire::{self, Decoded, Frame, Hello, Publish, Subscribe};

use super::args::{self, CliError, Opt, Outcome, Spec};

pub(crate) static SPEC: Spec = Spec {
    name: "bench",
    about: "Measure a broker: 1->1 throughput at 64 B and 1 KiB, 1->4 fan-out, ping-pong\n\
            latency, and (when it starts the broker itself) startup time, CPU per million\n\
            messages, idle and per-connection memory.",
    opts: &[
        Opt {
            long: "host",
            short: Some('h'),
            value: Some("HOST"),
            env: None,
            default: None,
            help: "bench a running broker at HOST instead of starting one",
        },
        Opt {
            long: "port",
            short: Some('p'),
            value: Some("PORT"),
            env: None,
            default: None,
            help: "port of the running broker (default 7270 with -h)",
        },
        Opt {
            long: "count",
            short: Some('n'),
            value: Some("N"),
            env: None,
            default: Some("3000000"),
            help: "messages per 64 B run (1 KiB runs send a quarter)",
        },
        Opt {
            long: "window",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("8192"),
            help: "most messages a publisher may be ahead of the slowest subscriber",
        },
        Opt {
            long: "latency-samples",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("20000"),
            help: "round trips for the latency run",
        },
        Opt {
            long: "idle-connections",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("1000"),
            help: "idle subscribers opened to measure memory per connection",
        },
        Opt {
            long: "only",
            short: None,
            value: Some("RUNS"),
            env: None,
            default: None,
            help: "comma-separated subset of: 64b, 1k, fanout, latency, idle (for profiling)",
        },
        Opt {
            long: "json",
            short: None,
            value: None,
            env: None,
            default: None,
            help: "print one JSON object with every figure",
        },
    ],
    after: "Examples:\n  mote bench                  # starts its own broker on a free loopback port\n  mote bench --json\n  mote bench -h 127.0.0.1 -p 7270 -n 1000000",
};

/// A broker this command started, to read its CPU time and memory from /proc.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `mote serve` on a free loopback port; returns it and how long it took to
/// accept a connection.
fn start_broker() -> Result<(Broker, Duration), String> {
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
        ])
        .args([
            "--ring-messages",
            "65536",
            "--ring-bytes",
            "64M",
            "--memory",
            "512M",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the broker: {e}"))?;
    let broker = Broker { child, addr };
    let deadline = t0 + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok((broker, t0.elapsed()));
        }
        if Instant::now() > deadline {
            return Err("the broker did not accept connections within 5 s".into());
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// Nanoseconds of CPU (user + system) used by every thread of `pid`.
fn cpu_ns(pid: u32) -> u64 {
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
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A blocking wire-protocol client.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Raw {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Raw> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut r = Raw {
            s,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
        };
        r.s.write_all(&Frame::Hello(Hello::new(name)).to_vec())?;
        let mut ok = false;
        r.frames(|f| {
            ok = matches!(f, Frame::Welcome(_));
            false
        })?;
        if !ok {
            return Err(io::Error::other("the broker did not welcome us"));
        }
        Ok(r)
    }

    /// Reads and hands each frame to `f` until it returns `false`.
    fn frames(&mut self, mut f: impl FnMut(Frame<'_>) -> bool) -> io::Result<()> {
        loop {
            while let Decoded::Frame(frame, n) =
                wire::decode(&self.buf[self.start..self.end], usize::MAX)
                    .map_err(io::Error::other)?
            {
                self.start += n;
                if !f(frame) {
                    return Ok(());
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.s.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    fn subscribe(&mut self, filter: &str) -> io::Result<()> {
        let f = Frame::Subscribe(Subscribe {
            sub: 1,
            filter,
            from: wire::Start::Latest,
            resume: Vec::new(),
        });
        self.s.write_all(&f.to_vec())?;
        let mut ok = false;
        self.frames(|f| {
            ok = matches!(f, Frame::Subscribed(_));
            false
        })?;
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("subscribe was refused"))
        }
    }
}

/// What one throughput run measured.
#[derive(Debug, Default, Clone, Copy)]
struct Throughput {
    delivered: u64,
    missed: u64,
    seconds: f64,
    broker_cpu_sec: Option<f64>,
}

impl Throughput {
    fn msgs_per_sec(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    fn cpu_per_million(&self) -> Option<f64> {
        self.broker_cpu_sec
            .map(|c| c / (self.delivered as f64 / 1e6))
    }
}

/// One publisher, `subs` subscribers, `count` messages of `size` bytes.
fn throughput(
    addr: SocketAddr,
    pid: Option<u32>,
    topic: &str,
    size: usize,
    count: u64,
    subs: usize,
    window: u64,
) -> Result<Throughput, String> {
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..subs).map(|_| AtomicU64::new(0)).collect());
    let missed = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let publisher = thread::current();
    // Subscribers report progress at least this often, so the window can never stall.
    let tell_every = (window / 4).max(1);
    for i in 0..subs {
        let mut c = Raw::connect(addr, "bench-sub").map_err(|e| format!("subscriber: {e}"))?;
        c.subscribe(topic).map_err(|e| format!("subscriber: {e}"))?;
        let (progress, missed, waiting, publisher) = (
            progress.clone(),
            missed.clone(),
            waiting.clone(),
            publisher.clone(),
        );
        readers.push(thread::spawn(move || -> io::Result<()> {
            let mut seen = 0u64;
            let mut last_told = 0u64;
            while seen < count {
                c.frames(|f| {
                    match f {
                        Frame::Message(_) => seen += 1,
                        Frame::Lag(l) => {
                            seen += l.missed;
                            missed.fetch_add(l.missed, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    // Hand back control after a batch so progress is published.
                    seen < count && seen - last_told < tell_every
                })?;
                progress[i].store(seen, Ordering::Release);
                last_told = seen;
                if waiting.load(Ordering::Acquire) {
                    publisher.unpark();
                }
            }
            Ok(())
        }));
    }
    let mut p = Raw::connect(addr, "bench-pub").map_err(|e| format!("publisher: {e}"))?;
    let payload = vec![b'm'; size];
    let mut out = Vec::with_capacity(256 * 1024);
    let cpu0 = pid.map(cpu_ns);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let slowest = || {
        progress
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    };
    while sent < count {
        let mut ahead = sent - slowest();
        while ahead >= window {
            waiting.store(true, Ordering::Release);
            ahead = sent - slowest();
            if ahead >= window {
                thread::park_timeout(Duration::from_millis(5));
            }
            waiting.store(false, Ordering::Release);
            ahead = sent - slowest();
        }
        let batch = (window - ahead).min(count - sent).min(2048);
        out.clear();
        for _ in 0..batch {
            Frame::Publish(Publish {
                req: 0,
                topic,
                key: None,
                payload: &payload,
            })
            .encode(&mut out);
        }
        p.s.write_all(&out).map_err(|e| format!("publisher: {e}"))?;
        sent += batch;
    }
    for r in readers {
        r.join()
            .map_err(|_| "a subscriber thread panicked".to_string())?
            .map_err(|e| format!("subscriber: {e}"))?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => Some((cpu_ns(pid) - c0) as f64 / 1e9),
        _ => None,
    };
    let missed = missed.load(Ordering::Relaxed);
    Ok(Throughput {
        delivered: count * subs as u64 - missed,
        missed,
        seconds,
        broker_cpu_sec: cpu,
    })
}

/// Publish-to-delivery round trips on one connection subscribed to its own topic.
fn latency(addr: SocketAddr, samples: usize) -> Result<Vec<f64>, String> {
    let mut c = Raw::connect(addr, "bench-latency").map_err(|e| e.to_string())?;
    c.subscribe("bench/latency").map_err(|e| e.to_string())?;
    let payload = [b'l'; 64];
    let frame = Frame::Publish(Publish {
        req: 0,
        topic: "bench/latency",
        key: None,
        payload: &payload,
    })
    .to_vec();
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples + samples / 10 {
        let t0 = Instant::now();
        c.s.write_all(&frame).map_err(|e| e.to_string())?;
        c.frames(|f| !matches!(f, Frame::Message(_)))
            .map_err(|e| e.to_string())?;
        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    // The first tenth warms up caches and the scheduler.
    rtts.drain(..samples / 10);
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Opens `n` connections that each subscribe, and returns the broker's RSS growth per
/// connection in bytes.
fn idle_cost(addr: SocketAddr, pid: u32, n: usize) -> Result<f64, String> {
    let before = status_kib(pid, "VmRSS");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c =
            Raw::connect(addr, "bench-idle").map_err(|e| format!("idle connection {i}: {e}"))?;
        c.subscribe("bench/idle").map_err(|e| e.to_string())?;
        // Keep the socket only: the client side's buffer is not the broker's memory.
        conns.push(c.s);
    }
    let after = status_kib(pid, "VmRSS");
    drop(conns);
    Ok((after.saturating_sub(before) * 1024) as f64 / n as f64)
}

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    let p = match args::parse(&SPEC, argv)? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let count = p
        .parse_with("count", args::parse_count)?
        .unwrap_or(3_000_000) as u64;
    let window = p
        .parse_with("window", args::parse_count)?
        .unwrap_or(8192)
        .max(1) as u64;
    let samples = p
        .parse_with("latency-samples", args::parse_count)?
        .unwrap_or(20_000)
        .max(10);
    let idle_n = p
        .parse_with("idle-connections", args::parse_count)?
        .unwrap_or(1000);
    let json = p.on("json");
    let fail = |e: String| CliError(e);
    let say = |s: String| {
        if !json {
            eprintln!("{s}");
        }
    };

    let (broker, addr, startup) = match (p.get("host"), p.get("port")) {
        (None, None) => {
            let mut times = Vec::new();
            for _ in 0..4 {
                let (b, t) = start_broker().map_err(fail)?;
                drop(b);
                times.push(t.as_secs_f64() * 1e3);
            }
            let (b, t) = start_broker().map_err(fail)?;
            times.push(t.as_secs_f64() * 1e3);
            times.sort_by(f64::total_cmp);
            let addr = b.addr;
            (Some(b), addr, Some(times[times.len() / 2]))
        }
        (host, _) => {
            let host = host.unwrap_or_else(|| "127.0.0.1".into());
            let port: u16 = p
                .parse_with("port", |s| {
                    s.parse::<u16>().map_err(|_| "expected a port".into())
                })?
                .unwrap_or(wire::DEFAULT_PORT);
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| CliError(format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| CliError(format!("{host} has no address")))?;
            (None, addr, None)
        }
    };
    let pid = broker.as_ref().map(|b| b.child.id());
    if pid.is_some() {
        // Let the first connection's teardown settle before reading idle memory.
        thread::sleep(Duration::from_millis(100));
    }
    let idle_rss = pid.map(|pid| status_kib(pid, "VmRSS"));
    say(format!(
        "broker {addr}{}",
        startup.map_or(String::new(), |s| format!(", started in {s:.2} ms"))
    ));

    let only = p.get("only");
    let wanted = |run: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x.trim() == run))
    };
    let mut report = serde_json::Map::new();
    let num = |x: f64| serde_json::json!((x * 1000.0).round() / 1000.0);
    report.insert("broker".into(), serde_json::json!(addr.to_string()));
    if let Some(s) = startup {
        report.insert("startup_ms".into(), num(s));
    }
    if let Some(i) = idle_rss {
        report.insert("idle_rss_kib".into(), serde_json::json!(i));
    }

    let mut missed = 0;
    let runs: [(&str, &str, &str, usize, u64, usize); 3] = [
        ("64b", "1->1 64 B", "64b", 64, count, 1),
        ("1k", "1->1 1 KiB", "1kib", 1024, count / 4, 1),
        ("fanout", "1->4 64 B", "fanout4", 64, count / 4, 4),
    ];
    for (key, name, suffix, size, n, subs) in runs {
        if !wanted(key) {
            continue;
        }
        let t =
            throughput(addr, pid, &format!("bench/{key}"), size, n, subs, window).map_err(fail)?;
        say(format!(
            "{name:<18} {:>10.0} msgs/s  {:>8.1} MB/s  {}{}",
            t.msgs_per_sec(),
            t.msgs_per_sec() * size as f64 / 1e6,
            t.cpu_per_million().map_or(String::new(), |c| format!(
                "broker CPU {c:.3} s per million"
            )),
            if t.missed > 0 {
                format!("  ({} missed)", t.missed)
            } else {
                String::new()
            },
        ));
        missed += t.missed;
        let rate = if subs > 1 {
            format!("deliveries_per_sec_{suffix}")
        } else {
            format!("msgs_per_sec_{suffix}")
        };
        report.insert(rate, num(t.msgs_per_sec()));
        report.insert(
            format!("mbytes_per_sec_{suffix}"),
            num(t.msgs_per_sec() * size as f64 / 1e6),
        );
        report.insert(format!("messages_{suffix}"), serde_json::json!(t.delivered));
        if let Some(c) = t.cpu_per_million() {
            report.insert(format!("broker_cpu_sec_per_million_{suffix}"), num(c));
        }
    }
    report.insert("missed_messages".into(), serde_json::json!(missed));

    if wanted("latency") {
        let lat = latency(addr, samples).map_err(fail)?;
        let (p50, p99, p999) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
        );
        say(format!(
            "latency (64 B round trip)  p50 {p50:.1} us  p99 {p99:.1} us  p99.9 {p999:.1} us"
        ));
        report.insert("latency_p50_us".into(), num(p50));
        report.insert("latency_p99_us".into(), num(p99));
        report.insert("latency_p999_us".into(), num(p999));
    }
    if let Some(pid) = pid {
        if wanted("idle") && idle_n > 0 {
            let pc = idle_cost(addr, pid, idle_n).map_err(fail)?;
            say(format!(
                "memory: {pc:.0} bytes of broker RSS per idle subscriber ({idle_n} connections)"
            ));
            report.insert("rss_bytes_per_idle_subscriber".into(), num(pc));
            report.insert("idle_subscribers".into(), serde_json::json!(idle_n));
        }
        let peak = status_kib(pid, "VmHWM");
        say(format!(
            "memory: idle RSS {} KiB, peak RSS {peak} KiB",
            idle_rss.unwrap_or(0)
        ));
        report.insert("peak_rss_kib".into(), serde_json::json!(peak));
    }
    if json {
        println!("{}", serde_json::Value::Object(report));
    }
    drop(broker);
    Ok(())
}
