//! The loads of the persisted runs, written once for every [`Durable`] client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::super::conn::{PATIENCE, is_timeout};
use super::Durable;

/// What the `confirm` run measured.
pub(crate) struct Confirmed {
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
    /// Publish-to-confirmation times, microseconds, sorted.
    pub(crate) latencies: Vec<f64>,
}

/// `publishers` connections publishing `size`-byte messages to `topic` for `time`, each
/// waiting for its confirmation before the next.
pub(super) fn confirmed<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    size: usize,
    publishers: usize,
    time: Duration,
) -> Result<Confirmed, String> {
    let mut conns = Vec::new();
    for i in 0..publishers {
        conns.push(C::connect(addr, "bench-confirm").map_err(|e| format!("publisher {i}: {e}"))?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let topic = C::topic(topic);
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (stop, topic) = (stop.clone(), topic.clone());
            thread::spawn(move || -> io::Result<(u64, Vec<f64>)> {
                let mut payload = vec![b'c'; size.max(8)];
                let mut lat = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    payload[..8].copy_from_slice(&n.to_le_bytes());
                    let t = Instant::now();
                    c.publish_confirmed(&topic, &payload, n)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                Ok((n, lat))
            })
        })
        .collect();
    thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let mut messages = 0;
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok((n, lat))) => {
                messages += n;
                latencies.extend(lat);
            }
            Ok(Err(e)) => failure = Some(format!("publisher: {e}")),
            Err(_) => failure = Some("a publisher thread panicked".into()),
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(f) = failure {
        return Err(f);
    }
    crate::sort::sort_by(&mut latencies, f64::total_cmp);
    Ok(Confirmed {
        messages,
        seconds,
        latencies,
    })
}

/// One publisher sending `rate` confirmed `size`-byte messages a second to `topic` for
/// `time`, on a steady clock; returns the messages sent.
pub(super) fn paced<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    size: usize,
    rate: u64,
    time: Duration,
) -> Result<u64, String> {
    let mut c = C::connect(addr, "bench-paced").map_err(|e| e.to_string())?;
    let topic = &C::topic(topic);
    let mut payload = vec![b'p'; size.max(8)];
    let t0 = Instant::now();
    let total = rate * time.as_millis() as u64 / 1000;
    for n in 1..=total {
        let due = t0 + Duration::from_micros(n * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        payload[..8].copy_from_slice(&n.to_le_bytes());
        c.publish_confirmed(topic, &payload, n)
            .map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// Subscribes to `topic` from its oldest message and reads `count` messages; returns how
/// long that took from the subscription. Sets `done` at the end.
pub(super) fn replay<C: Durable>(
    addr: SocketAddr,
    topic: &str,
    count: u64,
    done: Arc<AtomicBool>,
) -> Result<Duration, String> {
    let r = (|| {
        let mut c = C::connect(addr, "bench-replay")?;
        let t0 = Instant::now();
        c.subscribe_replay(&C::topic(topic))?;
        c.conn().set_patience(Duration::from_millis(100))?;
        let mut seen = 0u64;
        let mut quiet = Instant::now();
        while seen < count {
            let mut got = 0;
            let r = c.read(|_| {
                got += 1;
                seen + got < count && got < 4096
            });
            seen += got;
            match r {
                Ok(()) => quiet = Instant::now(),
                Err(e) if is_timeout(&e) => {
                    if got > 0 {
                        quiet = Instant::now();
                    } else if quiet.elapsed() > PATIENCE {
                        return Err(io::Error::other(format!(
                            "no message for {} s after {seen} of {count}",
                            PATIENCE.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
            c.tick()?;
        }
        Ok(t0.elapsed())
    })();
    done.store(true, Ordering::Release);
    r.map_err(|e| format!("replay: {e}"))
}

/// Pings on a connection of its own, one round trip every 2 ms, until `done`; returns
/// the round trips in microseconds, sorted.
pub(super) fn pinger<C: Durable>(
    addr: SocketAddr,
    done: Arc<AtomicBool>,
) -> Result<Vec<f64>, String> {
    let mut c = C::connect(addr, "bench-ping").map_err(|e| format!("ping: {e}"))?;
    let mut rtts = Vec::new();
    while !done.load(Ordering::Acquire) {
        let t = Instant::now();
        c.ping().map_err(|e| format!("ping: {e}"))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
        thread::sleep(Duration::from_millis(2));
    }
    crate::sort::sort_by(&mut rtts, f64::total_cmp);
    Ok(rtts)
}
