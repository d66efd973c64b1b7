//! The HTTP edge: publish with `curl -d`, read and stream topics, stats, Prometheus
//! metrics and the status page, on the broker's executor like the binary protocol.
//!
//! Every connection is a task ([`conn`]) that reads into one bounded buffer, parses the
//! head with `httparse` ([`parse`]) and decides every limit itself before anything
//! grows: connections (`max_connections`, 503 past it), head and URL sizes (431, 414),
//! bodies checked against their declared length before they are read (413), chunked
//! bodies with the same limits, the bytes of all requests still arriving within the
//! broker's `--max-partial`, a request whole within `--partial-timeout` of its first
//! byte (408), idle keep-alive connections closed after `idle_timeout`, answers written
//! within `write_timeout`. Handlers ([`routes`]) call the engine directly; a stream
//! ([`stream`]) is an engine connection whose task turns deliveries into chunks, like a
//! TCP subscriber, and ends when its socket closes. No threads, no channel hops.

mod admin;
mod answer;
mod conn;
mod micromq;
mod parse;
mod read;
pub(crate) mod render;
mod reply;
mod routes;
mod stats;
mod stream;
mod tx;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_io::{Async, Timer};
use smol::{LocalExecutor, Task};

use crate::broker::Shared;
use crate::engine::{ConnId, WaitId};

/// Accepts in a row before the accept loop lets other tasks run.
const ACCEPT_BURST: u32 = 64;

/// How the HTTP edge runs.
#[derive(Debug)]
pub struct HttpConfig {
    /// Where it listens (bound by the caller, so port 0 works and is known).
    pub listener: TcpListener,
    /// Most connections at once (`--http-max-connections`); past it a new connection
    /// gets 503 and is closed.
    pub max_connections: usize,
    /// Most requests being answered at once, streams and `wait=delivered` included
    /// (`--http-max-requests`); 503 past it. Requests still arriving do not count here:
    /// their connections and bytes are capped on their own.
    pub max_requests: usize,
    /// Most streams open at once (`--http-max-streams`).
    pub max_streams: usize,
    /// Request line and headers together, in bytes (431 past it).
    pub max_head: usize,
    /// The request target, in bytes (414 past it).
    pub max_url: usize,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// A keepalive line on a quiet stream this often.
    pub stream_keepalive: Duration,
    /// Topics with their own series in `/metrics`; the rest are summed.
    pub metrics_topics: usize,
    /// Topics, connections and groups `/api/stats` lists (the busiest); `?topics=all`
    /// for every one.
    pub stats_topics: usize,
    /// An answer or stream chunk not written within this (a client that stopped
    /// reading) ends its connection, freeing its slot.
    pub write_timeout: Duration,
}

impl HttpConfig {
    /// Defaults around `listener`: 256 connections, 64 requests, 32 streams, 16 KiB
    /// heads, 8 KiB URLs, 60 s idle, 30 s stream keepalive, 100 topics in metrics and
    /// stats, 30 s write timeout.
    pub fn new(listener: TcpListener) -> HttpConfig {
        HttpConfig {
            listener,
            max_connections: 256,
            max_requests: 64,
            max_streams: 32,
            max_head: 16 * 1024,
            max_url: 8 * 1024,
            idle_timeout: Duration::from_secs(60),
            stream_keepalive: Duration::from_secs(30),
            metrics_topics: 100,
            stats_topics: 100,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The settings of a running edge (its listener taken).
#[derive(Debug, Clone)]
struct Settings {
    max_connections: usize,
    max_requests: usize,
    max_streams: usize,
    head: parse::HeadLimits,
    idle_timeout: Duration,
    stream_keepalive: Duration,
    metrics_topics: usize,
    stats_topics: usize,
    write_timeout: Duration,
}

/// What the edge counts itself (the broker's counters are the engine's).
#[derive(Default)]
pub(crate) struct HttpCounts {
    pub(crate) requests: u64,
    /// Connections refused at `max_connections`.
    pub(crate) refused: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
}

/// A group stream's engine connection and the name of the token it was opened with.
type GroupStream = (ConnId, Option<Box<str>>);

/// The state of the HTTP edge, shared by its tasks.
pub(crate) struct Edge {
    shared: Rc<Shared>,
    cfg: Settings,
    info: render::Info,
    max_payload: usize,
    partial_timeout: Duration,
    conns: Cell<usize>,
    requests: Cell<usize>,
    streams: Cell<usize>,
    counts: RefCell<HttpCounts>,
    /// Group streams by their number (never reused), for `POST /ack`.
    group_streams: RefCell<HashMap<u64, GroupStream>>,
    next_stream: Cell<u64>,
    /// `wait=delivered` publishes: the waiting task, and whether it was delivered.
    waits: RefCell<HashMap<WaitId, (Option<Waker>, bool)>>,
}

impl Edge {
    fn count_error(&self, code: &'static str) {
        *self.counts.borrow_mut().errors.entry(code).or_default() += 1;
    }

    /// Ready once the message of wait `id` was delivered.
    fn poll_wait(&self, id: WaitId, cx: &mut Context<'_>) -> Poll<()> {
        let mut waits = self.waits.borrow_mut();
        match waits.get_mut(&id) {
            Some((_, true)) | None => {
                waits.remove(&id);
                Poll::Ready(())
            }
            Some((w, false)) => {
                *w = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A request slot (`max_requests`), given back when dropped.
pub(crate) struct RequestSlot(Rc<Edge>);

impl RequestSlot {
    fn take(edge: &Rc<Edge>) -> Option<RequestSlot> {
        let n = edge.requests.get();
        if n >= edge.cfg.max_requests {
            return None;
        }
        edge.requests.set(n + 1);
        Some(RequestSlot(edge.clone()))
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.requests.set(self.0.requests.get() - 1);
    }
}

/// Starts the edge on `ex`: returns the task that accepts connections (dropping it
/// stops accepting) and the address it listens on.
pub(crate) fn start(
    ex: &Rc<LocalExecutor<'static>>,
    shared: &Rc<Shared>,
    config: HttpConfig,
    tcp: SocketAddr,
) -> std::io::Result<(Task<()>, SocketAddr)> {
    let addr = config.listener.local_addr()?;
    let listener = Async::new(config.listener)?;
    let limits = shared.engine.borrow().limits().clone();
    let edge = Rc::new(Edge {
        shared: shared.clone(),
        cfg: Settings {
            max_connections: config.max_connections.max(1),
            max_requests: config.max_requests.max(1),
            max_streams: config.max_streams,
            head: parse::HeadLimits {
                max_head: config.max_head.max(1024),
                max_url: config.max_url.max(64),
            },
            idle_timeout: config.idle_timeout,
            stream_keepalive: config.stream_keepalive,
            metrics_topics: config.metrics_topics,
            stats_topics: config.stats_topics,
            write_timeout: config.write_timeout.max(Duration::from_millis(1)),
        },
        info: render::Info {
            version: crate::session::BROKER_NAME,
            tcp: tcp.to_string(),
            http: addr.to_string(),
        },
        max_payload: limits.max_payload,
        partial_timeout: Duration::from_millis(limits.partial_timeout_ms),
        conns: Cell::new(0),
        requests: Cell::new(0),
        streams: Cell::new(0),
        counts: RefCell::new(HttpCounts::default()),
        group_streams: RefCell::new(HashMap::new()),
        next_stream: Cell::new(0),
        waits: RefCell::new(HashMap::new()),
    });
    let ex2 = ex.clone();
    let task = ex.spawn(async move {
        let delivered = settle_waits(&edge);
        let accepting = accept(&ex2, &edge, listener);
        futures_lite::future::or(delivered, accepting).await;
    });
    Ok((task, addr))
}

async fn accept(ex: &LocalExecutor<'static>, edge: &Rc<Edge>, listener: Async<TcpListener>) {
    let mut burst = 0;
    loop {
        burst += 1;
        if burst >= ACCEPT_BURST {
            burst = 0;
            futures_lite::future::yield_now().await;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        if edge.conns.get() >= edge.cfg.max_connections {
            let e = answer::HttpError::new(
                503,
                "too_many_connections",
                format!(
                    "{} HTTP connections are open, the limit (--http-max-connections); retry later",
                    edge.cfg.max_connections
                ),
            );
            {
                let mut c = edge.counts.borrow_mut();
                c.refused += 1;
                *c.errors.entry(e.code).or_default() += 1;
            }
            log::warn!("http: refused {peer}: {}", e.message);
            let bytes = answer::Answer::error(&e).to_bytes(true, false);
            edge.shared.refuse(ex, stream, &bytes);
            continue;
        }
        let _ = stream.get_ref().set_nodelay(true);
        // Counted now, not when its task first runs: a burst of accepts sees them all.
        edge.conns.set(edge.conns.get() + 1);
        ex.spawn(conn::serve(edge.clone(), stream, peer)).detach();
    }
}

/// Tells the tasks waiting for `wait=delivered` when their message was delivered.
async fn settle_waits(edge: &Edge) {
    let mut done = Vec::new();
    loop {
        futures_lite::future::poll_fn(|cx| edge.shared.poll_edge_wake(cx)).await;
        edge.shared.engine.borrow_mut().take_delivered(&mut done);
        let mut waits = edge.waits.borrow_mut();
        for id in done.drain(..) {
            if let Some((waker, delivered)) = waits.get_mut(&id) {
                *delivered = true;
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
    }
}
