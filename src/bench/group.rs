//! Consumer-group throughput (mote only): one publisher, `members` members of one group,
//! every message acked. Each member acks what it read before its next socket read, as a
//! real worker acks after handling a batch.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mote_sdk::wire::{
    self, Ack, Decoded, Frame, GroupSettings, Hello, Publish, Start, SubscribeGroup,
};

use super::conn::{Conn, PATIENCE, Step, is_timeout};
use super::proc::cpu_ns;
use super::run::Throughput;

/// Unacked messages per member: enough to keep a member busy while its acks travel.
const PREFETCH: u32 = 1024;
const POLL: Duration = Duration::from_millis(100);

struct Shared {
    /// Messages received (or reported missed) by all members together.
    settled: AtomicU64,
    done: AtomicBool,
    failed: AtomicBool,
}

fn connect(addr: SocketAddr, name: &str) -> io::Result<Conn> {
    let mut c = Conn::connect(addr)?;
    c.write(&Frame::Hello(Hello::new(name)).to_vec())?;
    expect(&mut c, |f| matches!(f, Frame::Welcome(_)))?;
    Ok(c)
}

/// Reads frames until one that `ok` accepts; an `Error` frame fails.
fn expect(c: &mut Conn, ok: impl Fn(&Frame<'_>) -> bool) -> io::Result<()> {
    let mut failed = None;
    c.read_with(|buf, _| match wire::decode(buf, usize::MAX) {
        Err(e) => Err(io::Error::other(e)),
        Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
        Ok(Decoded::Frame(Frame::Error(e), n)) => {
            failed = Some(e.message.to_string());
            Ok(Step::Stop(n))
        }
        Ok(Decoded::Frame(f, n)) => Ok(if ok(&f) { Step::Stop(n) } else { Step::Took(n) }),
    })?;
    match failed {
        Some(m) => Err(io::Error::other(m)),
        None => Ok(()),
    }
}

/// One member: reads group messages and acks each before the next read.
fn member(mut c: Conn, count: u64, shared: &Shared) -> io::Result<Instant> {
    c.set_patience(POLL)?;
    let mut last = Instant::now();
    let mut quiet_since = Instant::now();
    loop {
        if shared.settled.load(Ordering::Acquire) >= count || shared.failed.load(Ordering::Acquire)
        {
            return Ok(last);
        }
        let mut got = 0u64;
        let r = c.read_with(|buf, acks| match wire::decode(buf, usize::MAX) {
            Err(e) => Err(io::Error::other(e)),
            Ok(Decoded::Incomplete { .. }) => Ok(if got > 0 { Step::Stop(0) } else { Step::Need }),
            Ok(Decoded::Frame(Frame::GroupMessage(m), n)) => {
                got += 1;
                Frame::Ack(Ack {
                    sub: m.sub,
                    tag: m.tag,
                })
                .encode(acks);
                Ok(Step::Took(n))
            }
            Ok(Decoded::Frame(Frame::Lag(l), n)) => {
                shared.settled.fetch_add(l.missed, Ordering::AcqRel);
                Ok(Step::Took(n))
            }
            Ok(Decoded::Frame(_, n)) => Ok(Step::Took(n)),
        });
        if got > 0 {
            shared.settled.fetch_add(got, Ordering::AcqRel);
            last = Instant::now();
            quiet_since = last;
        }
        match r {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {
                if quiet_since.elapsed() > PATIENCE + PATIENCE {
                    return Err(io::Error::other("no group message for 20 s"));
                }
            }
            Err(e) => return Err(e),
        }
        // The acks of this batch go out before the next read.
        c.flush_replies()?;
    }
}

/// `count` messages of `size` bytes through a group of `members`, the publisher at most
/// `window` messages ahead of what the members took.
pub(crate) fn group_throughput(
    addr: SocketAddr,
    pid: Option<u32>,
    size: usize,
    count: u64,
    members: usize,
    window: u64,
) -> Result<Throughput, String> {
    let topic = "bench/group";
    let shared = Arc::new(Shared {
        settled: AtomicU64::new(0),
        done: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    });
    let mut threads = Vec::new();
    for i in 0..members {
        let mut c = connect(addr, "bench-member").map_err(|e| format!("member {i}: {e}"))?;
        let join = Frame::SubscribeGroup(SubscribeGroup {
            sub: 1,
            filter: topic,
            group: "bench",
            from: Start::Latest,
            settings: GroupSettings {
                prefetch: PREFETCH,
                ..GroupSettings::default()
            },
        });
        c.write(&join.to_vec())
            .map_err(|e| format!("member {i}: {e}"))?;
        expect(&mut c, |f| matches!(f, Frame::Subscribed(_)))
            .map_err(|e| format!("member {i}: {e}"))?;
        let shared = shared.clone();
        threads.push(thread::spawn(move || {
            let r = member(c, count, &shared);
            if r.is_err() {
                shared.failed.store(true, Ordering::Release);
            }
            r
        }));
    }
    let mut p = connect(addr, "bench-pub").map_err(|e| format!("publisher: {e}"))?;
    let cpu0 = pid.map(cpu_ns);
    let t0 = Instant::now();
    let mut payload = vec![b'g'; size];
    let mut out = Vec::with_capacity(256 * 1024);
    let mut sent = 0u64;
    let mut failure = None;
    while sent < count {
        if shared.failed.load(Ordering::Acquire) {
            failure = Some("a member failed".to_string());
            break;
        }
        let ahead = sent - shared.settled.load(Ordering::Acquire).min(sent);
        if ahead >= window {
            thread::sleep(Duration::from_micros(50));
            continue;
        }
        let batch = (window - ahead).min(count - sent).min(2048);
        out.clear();
        for seq in sent..sent + batch {
            if let Some(head) = payload.first_chunk_mut::<8>() {
                *head = seq.to_le_bytes();
            }
            Frame::Publish(Publish {
                req: 0,
                topic,
                key: None,
                payload: &payload,
            })
            .encode(&mut out);
        }
        if let Err(e) = p.write(&out) {
            failure = Some(format!("publisher: {e}"));
            break;
        }
        sent += batch;
    }
    shared.done.store(true, Ordering::Release);
    let mut last = None;
    for t in threads {
        match t.join() {
            Err(_) => failure = Some("a member thread panicked".into()),
            Ok(Err(e)) => failure = failure.or(Some(format!("member: {e}"))),
            Ok(Ok(l)) => last = last.max(Some(l)),
        }
    }
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => Some(cpu_ns(pid).saturating_sub(c0) as f64 / 1e9),
        _ => None,
    };
    let _ = p.s.shutdown(Shutdown::Both);
    if let Some(f) = failure {
        return Err(f);
    }
    let seconds = last.map_or(0.0, |l| l.duration_since(t0).as_secs_f64());
    Ok(Throughput {
        delivered: count,
        missed: 0,
        seconds,
        broker_cpu_sec: cpu,
    })
}
