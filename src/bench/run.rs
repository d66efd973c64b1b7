//! The measurements, written once for every protocol's [`Client`].
//!
//! Each payload starts with its sequence number, so a subscriber knows how far it is
//! even when a broker drops messages (mote says so with a `Lag` frame; NATS, Redis and
//! MQTT at QoS 0 drop silently): the gap is counted as missed, and the pacing window
//! never waits for a message that will not come.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::conn::{Client, Conn, PATIENCE, is_timeout};
use super::proc::{cpu_ns, process_cpu_ns, status_kib, thread_cpu_ns};

/// How long a subscriber's read waits before it checks on the run.
const POLL: Duration = Duration::from_millis(100);
/// How long, once everything is published, a subscriber waits for messages that may
/// have been dropped before counting them as missed.
const TAIL_WAIT: Duration = Duration::from_secs(2);

/// What one throughput run measured.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Throughput {
    pub(crate) delivered: u64,
    pub(crate) missed: u64,
    pub(crate) seconds: f64,
    pub(crate) broker_cpu_sec: Option<f64>,
}

impl Throughput {
    pub(crate) fn msgs_per_sec(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    pub(crate) fn cpu_per_million(&self) -> Option<f64> {
        self.broker_cpu_sec
            .map(|c| c / (self.delivered as f64 / 1e6))
    }
}

/// The shape of one throughput run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Names the topic.
    pub(crate) run: &'static str,
    pub(crate) size: usize,
    pub(crate) count: u64,
    pub(crate) subs: usize,
    pub(crate) window: u64,
}

/// What a subscriber thread shares with the publisher.
struct Shared {
    progress: Vec<AtomicU64>,
    /// Set by the publisher once it has sent everything (or given up).
    done: AtomicBool,
    /// Set by a subscriber that failed, so the publisher stops waiting for it.
    failed: AtomicBool,
    /// Whether the publisher is parked waiting for progress.
    waiting: AtomicBool,
}

/// What one subscriber saw: messages missed, and when the last one arrived.
struct Seen {
    missed: u64,
    last: Instant,
}

fn subscriber<C: Client>(
    mut c: C,
    i: usize,
    count: u64,
    tell_every: u64,
    shared: &Shared,
    publisher: &thread::Thread,
) -> io::Result<Seen> {
    c.conn().set_patience(POLL)?;
    let mut seen = 0u64;
    let mut told = 0u64;
    let mut missed = 0u64;
    let mut last = Instant::now();
    let mut quiet_since = Instant::now();
    while seen < count {
        let mut got = 0u64;
        let r = c.read(|payload| {
            got += 1;
            let seq = payload
                .first_chunk::<8>()
                .map_or(u64::MAX, |b| u64::from_le_bytes(*b));
            if (seen..count).contains(&seq) {
                missed += seq - seen;
                seen = seq + 1;
            }
            // Hand back control after a batch so progress is published.
            seen < count && seen - told < tell_every
        });
        match r {
            Ok(()) => {
                last = Instant::now();
                quiet_since = last;
            }
            Err(e) if is_timeout(&e) => {
                let now = Instant::now();
                if got > 0 {
                    // The last message came at most one poll ago.
                    last = now - POLL;
                    quiet_since = last;
                } else if shared.done.load(Ordering::Acquire)
                    && now.duration_since(quiet_since) > TAIL_WAIT
                {
                    missed += count - seen;
                    seen = count;
                } else if now.duration_since(quiet_since) > PATIENCE {
                    return Err(io::Error::other(format!(
                        "no message for {} s after {seen} of {count}",
                        PATIENCE.as_secs()
                    )));
                }
            }
            Err(e) => return Err(e),
        }
        c.tick()?;
        shared.progress[i].store(seen, Ordering::Release);
        told = seen;
        if shared.waiting.load(Ordering::Acquire) {
            publisher.unpark();
        }
    }
    Ok(Seen { missed, last })
}

/// One publisher, `load.subs` subscribers, `load.count` messages of `load.size` bytes,
/// the publisher at most `load.window` messages ahead of the slowest subscriber. `pid`
/// is the broker's, to read its CPU time.
pub(crate) fn throughput<C: Client>(
    addr: SocketAddr,
    pid: Option<u32>,
    load: Load,
) -> Result<Throughput, String> {
    let Load {
        run,
        size,
        count,
        subs,
        window,
    } = load;
    let topic = C::topic(run);
    let shared = Arc::new(Shared {
        progress: (0..subs).map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        waiting: AtomicBool::new(false),
    });
    let publisher = thread::current();
    // Subscribers report progress at least this often, so the window can never stall.
    let tell_every = (window / 4).max(1);
    let mut readers = Vec::new();
    for i in 0..subs {
        let mut c = C::connect(addr, "bench-sub").map_err(|e| format!("subscriber: {e}"))?;
        c.subscribe(&topic)
            .map_err(|e| format!("subscriber: {e}"))?;
        let (shared, publisher) = (shared.clone(), publisher.clone());
        readers.push(thread::spawn(move || {
            let r = subscriber(c, i, count, tell_every, &shared, &publisher);
            if r.is_err() {
                shared.failed.store(true, Ordering::Release);
                publisher.unpark();
            }
            r
        }));
    }
    let mut p = C::connect(addr, "bench-pub").map_err(|e| format!("publisher: {e}"))?;
    // Whatever the broker says to the publisher (Redis answers every PUBLISH) is read
    // and dropped, so it never backs up.
    let mut answers = p
        .conn()
        .s
        .try_clone()
        .map_err(|e| format!("publisher: {e}"))?;
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match answers.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    });
    let cpu0 = pid.map(cpu_ns);
    let t0 = Instant::now();
    let published = publish::<C>(&mut p, &topic, size, count, window, &shared);
    shared.done.store(true, Ordering::Release);
    let mut missed = 0;
    let mut last = None;
    let mut failure = published.err();
    for r in readers {
        match r.join() {
            Err(_) => failure = Some("a subscriber thread panicked".into()),
            Ok(Err(e)) => failure = Some(format!("subscriber: {e}")),
            Ok(Ok(seen)) => {
                missed += seen.missed;
                last = last.max(Some(seen.last));
            }
        }
    }
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => Some(cpu_ns(pid).saturating_sub(c0) as f64 / 1e9),
        _ => None,
    };
    let _ = p.conn().s.shutdown(Shutdown::Both);
    let _ = drain.join();
    if let Some(f) = failure {
        return Err(f);
    }
    let seconds = last.map_or(0.0, |l| l.duration_since(t0).as_secs_f64());
    Ok(Throughput {
        delivered: count * subs as u64 - missed,
        missed,
        seconds,
        broker_cpu_sec: cpu,
    })
}

/// Publishes `count` numbered messages, paced.
fn publish<C: Client>(
    p: &mut C,
    topic: &str,
    size: usize,
    count: u64,
    window: u64,
    shared: &Shared,
) -> Result<(), String> {
    let mut payload = vec![b'm'; size.max(8)];
    let mut out = Vec::with_capacity(256 * 1024);
    let slowest = || {
        shared
            .progress
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    };
    let mut sent = 0u64;
    while sent < count {
        let mut ahead = sent - slowest();
        let mut stalled = Instant::now();
        let mut last_slowest = slowest();
        while ahead >= window {
            if shared.failed.load(Ordering::Acquire) {
                return Err("a subscriber failed".into());
            }
            shared.waiting.store(true, Ordering::Release);
            ahead = sent - slowest();
            if ahead >= window {
                thread::park_timeout(Duration::from_millis(5));
            }
            shared.waiting.store(false, Ordering::Release);
            let s = slowest();
            ahead = sent - s;
            if s != last_slowest {
                last_slowest = s;
                stalled = Instant::now();
            } else if stalled.elapsed() > PATIENCE + PATIENCE {
                return Err(format!(
                    "the subscribers made no progress for {} s at {s} of {count}",
                    2 * PATIENCE.as_secs()
                ));
            }
        }
        let batch = (window - ahead).min(count - sent).min(2048);
        out.clear();
        for seq in sent..sent + batch {
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            C::encode_publish(topic, &payload[..size.max(8)], &mut out);
        }
        p.send(&out).map_err(|e| format!("publisher: {e}"))?;
        sent += batch;
    }
    Ok(())
}

/// What one latency run measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latency {
    /// Publish-to-delivery round trips, in microseconds, sorted.
    pub(crate) rtts: Vec<f64>,
    /// The broker's CPU (every thread) per round trip, in microseconds, when its process
    /// is known.
    pub(crate) broker_cpu_us: Option<f64>,
    /// The bench's own CPU per round trip, in microseconds (both connections are served
    /// by the one thread that measures).
    pub(crate) client_cpu_us: Option<f64>,
}

/// How the latency run's subscriber waits for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A read that blocks until bytes arrive.
    Block,
    /// A non-blocking socket, read again and again until bytes arrive.
    Spin,
}

/// Sparse traffic: `samples` round trips, each a 64 B message published fire-and-forget
/// on one connection and received by a second one subscribed to its topic, the next
/// sent only once it arrived (one message in flight), after a tenth as many to warm up.
/// `pid` is the broker's, to read its CPU time over the measured round trips alone.
pub(crate) fn latency<C: Client>(
    addr: SocketAddr,
    pid: Option<u32>,
    samples: usize,
    wait: Wait,
) -> Result<Latency, String> {
    let topic = C::topic(match wait {
        Wait::Block => "latency",
        Wait::Spin => "latency-spin",
    });
    let mut sub = C::connect(addr, "bench-latency-sub").map_err(|e| format!("subscriber: {e}"))?;
    sub.subscribe(&topic)
        .map_err(|e| format!("subscriber: {e}"))?;
    let mut publisher = C::connect_publisher(addr).map_err(|e| format!("publisher: {e}"))?;
    if wait == Wait::Spin {
        sub.conn()
            .s
            .set_nonblocking(true)
            .map_err(|e| format!("subscriber: {e}"))?;
    }
    let mut frame = Vec::new();
    C::encode_publish(&topic, &[b'l'; 64], &mut frame);
    round_trips(&mut publisher, &mut sub, &frame, pid, samples, wait)
}

/// What the latency runs do with a connected client, as one type for every protocol:
/// their loop is compiled once, not once per client (the broker binary carries two of
/// mote's).
trait Endpoint {
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Reads one delivery.
    fn read_one(&mut self) -> io::Result<()>;
    fn keepalive(&mut self) -> io::Result<()>;
    fn conn(&mut self) -> &mut Conn;
}

impl<C: Client> Endpoint for C {
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.send(frame)
    }
    fn read_one(&mut self) -> io::Result<()> {
        self.read(|_| false)
    }
    fn keepalive(&mut self) -> io::Result<()> {
        self.tick()
    }
    fn conn(&mut self) -> &mut Conn {
        Client::conn(self)
    }
}

/// The latency run's round trips, after a tenth as many to warm up.
fn round_trips(
    publisher: &mut dyn Endpoint,
    sub: &mut dyn Endpoint,
    frame: &[u8],
    pid: Option<u32>,
    samples: usize,
    wait: Wait,
) -> Result<Latency, String> {
    // The first tenth warms up caches and the scheduler.
    for i in 0..samples / 10 {
        round_trip(publisher, sub, frame, wait, i)?;
    }
    let mut rtts = Vec::with_capacity(samples);
    let broker0 = pid.and_then(process_cpu_ns);
    let client0 = thread_cpu_ns();
    for i in 0..samples {
        let t0 = Instant::now();
        round_trip(publisher, sub, frame, wait, i)?;
        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let per_trip = |before: Option<u64>, after: Option<u64>| {
        let ns = after?.checked_sub(before?)?;
        Some(ns as f64 / 1e3 / samples as f64)
    };
    let client_cpu_us = per_trip(client0, thread_cpu_ns());
    let broker_cpu_us = per_trip(broker0, pid.and_then(process_cpu_ns));
    crate::sort::sort_by(&mut rtts, f64::total_cmp);
    Ok(Latency {
        rtts,
        broker_cpu_us,
        client_cpu_us,
    })
}

/// The `i`th round trip of a latency run: publishes `frame` and waits for its delivery.
fn round_trip(
    publisher: &mut dyn Endpoint,
    sub: &mut dyn Endpoint,
    frame: &[u8],
    wait: Wait,
    i: usize,
) -> Result<(), String> {
    // Keepalives, and whatever the broker said to the publisher, now and then: rarely
    // enough to cost nothing per round trip.
    if i % 1024 == 1023 {
        keep_up(publisher, sub).map_err(|e| format!("between round trips: {e}"))?;
    }
    publisher
        .send_frame(frame)
        .map_err(|e| format!("publisher: {e}"))?;
    // Spinning, the socket does not block: a read finding nothing to read is tried again
    // at once, for PATIENCE at most.
    let t0 = Instant::now();
    let mut tries = 0u32;
    let delivered = loop {
        match sub.read_one() {
            Err(e) if wait == Wait::Spin && is_timeout(&e) => {
                tries = tries.wrapping_add(1);
                if tries % 4096 == 0 && t0.elapsed() > PATIENCE {
                    break Err(e);
                }
                std::hint::spin_loop();
            }
            r => break r,
        }
    };
    delivered.map_err(|e| {
        if is_timeout(&e) {
            format!("no delivery within {} s", PATIENCE.as_secs())
        } else {
            format!("subscriber: {e}")
        }
    })
}

/// Sends both connections' keepalives and reads what the broker sent the publisher
/// (a NATS `PING`, an MQTT `PINGRESP`), without waiting for anything.
#[cold]
fn keep_up(publisher: &mut dyn Endpoint, sub: &mut dyn Endpoint) -> io::Result<()> {
    publisher.keepalive()?;
    sub.keepalive()?;
    publisher.conn().s.set_nonblocking(true)?;
    let drained = loop {
        match publisher.read_one() {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    publisher.conn().s.set_nonblocking(false)?;
    drained?;
    publisher.conn().flush_replies()
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Opens `n` connections that each subscribe, and returns the broker's RSS growth per
/// connection in bytes.
pub(crate) fn idle_cost<C: Client>(addr: SocketAddr, pid: u32, n: usize) -> Result<f64, String> {
    let before = status_kib(pid, "VmRSS");
    let mut conns = Vec::with_capacity(n);
    let topic = C::topic("idle");
    for i in 0..n {
        let mut c =
            C::connect(addr, "bench-idle").map_err(|e| format!("idle connection {i}: {e}"))?;
        c.subscribe(&topic)
            .map_err(|e| format!("idle connection {i}: {e}"))?;
        // Keep the socket only: the client side's buffer is not the broker's memory.
        conns.push(
            c.into_stream()
                .map_err(|e| format!("idle connection {i}: {e}"))?,
        );
    }
    let after = status_kib(pid, "VmRSS");
    drop(conns);
    Ok((after.saturating_sub(before) * 1024) as f64 / n as f64)
}
