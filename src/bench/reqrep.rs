//! Request/reply round trips (mote only, protocol 4): one requester with one request in
//! flight at a time, one responder answering each `Asked` with a `Reply` before its next
//! read. Measured against the plain `Ping` round trip on the same connection, right
//! before, which is the floor a request/reply cannot go below (it crosses the broker
//! twice: request to responder, reply to requester).

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mote_sdk::wire::{self, Decoded, Frame, Hello, Ping, Reply, Request, Start, Subscribe};

use super::conn::{Conn, Step, is_timeout};

const TOPIC: &str = "bench/reqrep";
const POLL: Duration = Duration::from_millis(100);

/// Requests in flight in the pipelined run.
const IN_FLIGHT: u32 = 64;

/// Round trips per second: request/reply one at a time, with [`IN_FLIGHT`] requests in
/// flight, and the plain ping before them.
pub(crate) struct RoundTrips {
    pub(crate) reqrep_per_sec: f64,
    pub(crate) pipelined_per_sec: f64,
    pub(crate) ping_per_sec: f64,
}

fn connect(addr: SocketAddr, name: &str) -> io::Result<Conn> {
    let mut c = Conn::connect(addr)?;
    c.write(&Frame::Hello(Hello::new(name)).to_vec())?;
    let mut version = 0;
    read_until(&mut c, |f| match f {
        Frame::Welcome(w) => {
            version = w.version;
            true
        }
        _ => false,
    })?;
    if version < wire::REQUEST_VERSION {
        return Err(io::Error::other(format!(
            "the broker speaks protocol {version}; request/reply needs {}",
            wire::REQUEST_VERSION
        )));
    }
    Ok(c)
}

/// Reads frames until one that `ok` accepts; an `Error` frame fails.
fn read_until(c: &mut Conn, mut ok: impl FnMut(&Frame<'_>) -> bool) -> io::Result<()> {
    let mut failed = None;
    c.read_with(|buf, _| match wire::decode(buf, usize::MAX) {
        Err(e) => Err(io::Error::other(e)),
        Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
        Ok(Decoded::Frame(Frame::Error(e), n)) => {
            failed = Some(format!("{} ({})", e.message, e.code.name()));
            Ok(Step::Stop(n))
        }
        Ok(Decoded::Frame(f, n)) => Ok(if ok(&f) { Step::Stop(n) } else { Step::Took(n) }),
    })?;
    match failed {
        Some(m) => Err(io::Error::other(m)),
        None => Ok(()),
    }
}

/// The responder: answers every request with its own payload until `done`.
fn respond(mut c: Conn, done: &AtomicBool) -> io::Result<()> {
    c.set_patience(POLL)?;
    while !done.load(Ordering::Acquire) {
        let r = c.read_with(|buf, replies| match wire::decode(buf, usize::MAX) {
            Err(e) => Err(io::Error::other(e)),
            Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
            Ok(Decoded::Frame(Frame::Asked(a), n)) => {
                Frame::Reply(Reply {
                    reply: a.reply,
                    key: None,
                    payload: a.payload,
                })
                .encode(replies);
                Ok(Step::Took(n))
            }
            Ok(Decoded::Frame(_, n)) => Ok(Step::Took(n)),
        });
        match r {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `samples` request/reply round trips of `size`-byte payloads with one responder, and
/// as many pings first.
pub(crate) fn round_trips(
    addr: SocketAddr,
    samples: usize,
    size: usize,
) -> Result<RoundTrips, String> {
    let mut r = connect(addr, "bench-responder").map_err(|e| format!("responder: {e}"))?;
    r.write(
        &Frame::Subscribe(Subscribe {
            sub: 1,
            filter: TOPIC,
            from: Start::Latest,
            resume: Vec::new(),
        })
        .to_vec(),
    )
    .map_err(|e| format!("responder: {e}"))?;
    read_until(&mut r, |f| matches!(f, Frame::Subscribed(_)))
        .map_err(|e| format!("responder: {e}"))?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let responder = thread::spawn(move || respond(r, &d));
    let result = ask(addr, samples, size);
    done.store(true, Ordering::Release);
    match responder.join() {
        Err(_) => return Err("the responder thread panicked".into()),
        Ok(Err(e)) => return Err(format!("responder: {e}")),
        Ok(Ok(())) => {}
    }
    result
}

fn ask(addr: SocketAddr, samples: usize, size: usize) -> Result<RoundTrips, String> {
    let mut c = connect(addr, "bench-requester").map_err(|e| format!("requester: {e}"))?;
    let fail = |e: io::Error| format!("requester: {e}");
    let mut out = Vec::with_capacity(size + 64);
    // Pings: the floor.
    let t0 = Instant::now();
    for nonce in 1..=samples as u64 {
        out.clear();
        Frame::Ping(Ping { nonce }).encode(&mut out);
        c.write(&out).map_err(fail)?;
        read_until(&mut c, |f| matches!(f, Frame::Pong(p) if p.nonce == nonce)).map_err(fail)?;
    }
    let ping_per_sec = samples as f64 / t0.elapsed().as_secs_f64();
    let payload = vec![b'r'; size];
    let mut request = |req: u32, c: &mut Conn| -> io::Result<()> {
        out.clear();
        Frame::Request(Request {
            req,
            topic: TOPIC,
            timeout_ms: 10_000,
            key: None,
            payload: &payload,
        })
        .encode(&mut out);
        c.write(&out)?;
        read_until(c, |f| matches!(f, Frame::Response(r) if r.req == req))
    };
    // A few to warm up (the topic is made by the first).
    for req in 1..=100 {
        request(req, &mut c).map_err(fail)?;
    }
    let t0 = Instant::now();
    for i in 0..samples {
        let req = 101 + i as u32;
        request(req, &mut c).map_err(fail)?;
    }
    let reqrep_per_sec = samples as f64 / t0.elapsed().as_secs_f64();
    // Pipelined: IN_FLIGHT requests out, one more sent for each response.
    let first = 101 + samples as u32;
    let total = samples as u32;
    let encode = |req: u32, out: &mut Vec<u8>| {
        Frame::Request(Request {
            req,
            topic: TOPIC,
            timeout_ms: 10_000,
            key: None,
            payload: &payload,
        })
        .encode(out);
    };
    let t0 = Instant::now();
    out.clear();
    let mut sent = 0;
    while sent < IN_FLIGHT.min(total) {
        encode(first + sent, &mut out);
        sent += 1;
    }
    c.write(&out).map_err(fail)?;
    let mut got = 0;
    while got < total {
        let mut more = Vec::new();
        let mut failed = None;
        c.read_with(|buf, _| match wire::decode(buf, usize::MAX) {
            Err(e) => Err(io::Error::other(e)),
            Ok(Decoded::Incomplete { .. }) => Ok(if more.is_empty() && got < total {
                Step::Need
            } else {
                Step::Stop(0)
            }),
            Ok(Decoded::Frame(Frame::Response(_), n)) => {
                got += 1;
                if sent < total {
                    encode(first + sent, &mut more);
                    sent += 1;
                }
                Ok(Step::Took(n))
            }
            Ok(Decoded::Frame(Frame::Error(e), n)) => {
                failed = Some(format!("{} ({})", e.message, e.code.name()));
                Ok(Step::Stop(n))
            }
            Ok(Decoded::Frame(_, n)) => Ok(Step::Took(n)),
        })
        .map_err(fail)?;
        if let Some(f) = failed {
            return Err(format!("requester: {f}"));
        }
        if !more.is_empty() {
            c.write(&more).map_err(fail)?;
        }
    }
    let pipelined_per_sec = f64::from(total) / t0.elapsed().as_secs_f64();
    let _ = c.s.shutdown(Shutdown::Both);
    Ok(RoundTrips {
        reqrep_per_sec,
        pipelined_per_sec,
        ping_per_sec,
    })
}
