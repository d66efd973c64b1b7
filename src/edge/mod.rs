//! The HTTP edge: publish with `curl -d`, read and stream topics, stats, Prometheus
//! metrics and the status page, served by tiny_http on threads of its own.
//!
//! The edge never touches the engine. Each request is handled on a thread of its own (at
//! most `max_requests` at once, 503 past that; streams at most `max_streams`), which
//! talks to the executor through a bounded channel of [`bridge::Call`]s with one-slot
//! replies and bounded waits; a slow or stuck HTTP client holds only its own thread.
//!
//! Writes time out: accepted sockets inherit `SO_SNDTIMEO` (`write_timeout`) from the
//! listener, and a stream chunk not fully written within it ends the stream. tiny_http
//! 0.12 offers no read time-out (it owns the accepted sockets), so a client that stalls
//! mid-request holds a tiny_http thread, and one that stalls mid-body one request slot,
//! until it goes away. tiny_http also drains an unread body when a request is dropped,
//! into a buffer of the declared size: requests are never dropped where that could block
//! the acceptor, and those declaring absurd bodies are never dropped at all
//! (`http::Disposal`).

pub(crate) mod bridge;
mod http;
mod micromq;
pub(crate) mod render;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{Auth, Backoff};

/// Calls the HTTP threads may have waiting for the executor; past this, 503.
const CALL_QUEUE: usize = 1024;

/// How the HTTP edge runs.
#[derive(Debug)]
pub struct HttpConfig {
    /// Where it listens (bound by the caller, so port 0 works and is known).
    pub listener: TcpListener,
    /// Most requests handled at once, streams included (`--http-max-requests`).
    pub max_requests: usize,
    /// Most streams open at once (`--http-max-streams`).
    pub max_streams: usize,
    /// A keepalive line on a quiet stream this often.
    pub stream_keepalive: Duration,
    /// Topics with their own series in `/metrics`; the rest are summed.
    pub metrics_topics: usize,
    /// A write to a client that stays blocked this long (a client that stopped reading)
    /// fails, ending its response or stream and freeing its slot.
    pub write_timeout: Duration,
}

impl HttpConfig {
    /// Defaults around `listener`: 64 requests, 32 streams, 30 s keepalive, 100 topics,
    /// 30 s write timeout.
    pub fn new(listener: TcpListener) -> HttpConfig {
        HttpConfig {
            listener,
            max_requests: 64,
            max_streams: 32,
            stream_keepalive: Duration::from_secs(30),
            metrics_topics: 100,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The status page and the API description, built into the binary.
pub(crate) struct Static {
    index: &'static str,
    app: &'static str,
    style: &'static str,
    openapi: &'static str,
}

const STATIC: Static = Static {
    index: include_str!("../../web/index.html"),
    app: include_str!("../../web/app.js"),
    style: include_str!("../../web/style.css"),
    // src/edge/openapi.json without its indentation (build.rs).
    openapi: include_str!(concat!(env!("OUT_DIR"), "/openapi.json")),
};

/// What every HTTP thread shares.
pub(crate) struct Context {
    calls: async_channel::Sender<bridge::Call>,
    auth: Arc<RwLock<Arc<Auth>>>,
    backoff: Mutex<Backoff>,
    epoch: Instant,
    info: render::Info,
    statics: Static,
    max_payload: usize,
    max_streams: usize,
    streams: Arc<AtomicUsize>,
    stream_keepalive: Duration,
    metrics_topics: usize,
    write_timeout: Duration,
    /// Requests declaring a larger body are never dropped (see [`http::disposal`]).
    drain_max: usize,
    /// Threads refusing a request whose body is still on the way, now.
    refusing: Arc<AtomicUsize>,
    /// Connections given up for good (see [`http::abandon`]), since the start.
    abandoned: AtomicUsize,
    /// Set when too many were given up: the edge stops taking requests.
    down: AtomicBool,
    /// Requests, and error answers by code, since the start.
    pub(crate) counts: HttpCounts,
}

impl Context {
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// What the edge counts itself (the broker's counters are the engine's).
#[derive(Default)]
pub(crate) struct HttpCounts {
    pub(crate) requests: std::sync::atomic::AtomicU64,
    pub(crate) errors: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl HttpCounts {
    pub(crate) fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> (u64, Vec<(&'static str, u64)>) {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        (
            self.requests.load(Ordering::Relaxed),
            errors.iter().map(|(k, v)| (*k, *v)).collect(),
        )
    }
}

/// A running edge; [`Edge::stop`] ends it.
pub(crate) struct Edge {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// The executor's end of the edge's call channel, and the running edge.
pub(crate) fn start(
    config: HttpConfig,
    auth: Arc<RwLock<Arc<Auth>>>,
    max_payload: usize,
    tcp: SocketAddr,
) -> std::io::Result<(Edge, async_channel::Receiver<bridge::Call>, SocketAddr)> {
    let addr = config.listener.local_addr()?;
    // tiny_http sets no socket time-outs; accepted sockets inherit SO_SNDTIMEO from the
    // listener (Linux), so a client that stops reading cannot hold a thread forever.
    rustix::net::sockopt::set_socket_timeout(
        &config.listener,
        rustix::net::sockopt::Timeout::Send,
        Some(config.write_timeout.max(Duration::from_millis(1))),
    )?;
    let server = Arc::new(
        tiny_http::Server::from_listener(config.listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    let (calls, rx) = async_channel::bounded(CALL_QUEUE);
    let ctx = Arc::new(Context {
        calls,
        auth,
        backoff: Mutex::new(Backoff::default()),
        epoch: Instant::now(),
        info: render::Info {
            version: crate::session::BROKER_NAME,
            tcp: tcp.to_string(),
            http: addr.to_string(),
        },
        statics: STATIC,
        max_payload,
        max_streams: config.max_streams,
        streams: Arc::new(AtomicUsize::new(0)),
        stream_keepalive: config.stream_keepalive,
        metrics_topics: config.metrics_topics,
        write_timeout: config.write_timeout,
        drain_max: http::drain_max(max_payload),
        refusing: Arc::new(AtomicUsize::new(0)),
        abandoned: AtomicUsize::new(0),
        down: AtomicBool::new(false),
        counts: HttpCounts::default(),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let (srv, stop) = (server.clone(), stopping.clone());
    let max_requests = config.max_requests.max(1);
    let acceptor = std::thread::Builder::new()
        .name("mote-http".into())
        .spawn(move || accept(&srv, &ctx, &stop, max_requests))?;
    Ok((
        Edge {
            server,
            stopping,
            acceptor: Some(acceptor),
        },
        rx,
        addr,
    ))
}

/// Most threads refusing requests (past `--http-max-requests`) whose bodies are still
/// on the way.
const MAX_REFUSING: usize = 64;

/// Hands each request to a thread of its own while fewer than `max` are running.
fn accept(server: &tiny_http::Server, ctx: &Arc<Context>, stopping: &AtomicBool, max: usize) {
    let active = Arc::new(AtomicUsize::new(0));
    while let Ok(req) = server.recv() {
        if stopping.load(Ordering::Acquire) || ctx.down.load(Ordering::Acquire) {
            break;
        }
        ctx.counts.requests.fetch_add(1, Ordering::Relaxed);
        if active.fetch_add(1, Ordering::AcqRel) >= max {
            active.fetch_sub(1, Ordering::AcqRel);
            ctx.counts.error("overloaded");
            let e = http::HttpError::new(
                503,
                "overloaded",
                format!(
                    "{max} requests are being handled, the limit (--http-max-requests); retry shortly"
                ),
            );
            // Not on this thread if dropping the request could wait for its body.
            match http::disposal(&req, ctx.drain_max) {
                http::Disposal::Now => {
                    let _ = req.respond(http::error_answer(&e));
                }
                // At most MAX_REFUSING such threads: past that, this thread waits for
                // the body (the edge stalls, the broker does not, and nothing grows).
                http::Disposal::Later
                    if ctx.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING =>
                {
                    let refusing = ctx.refusing.clone();
                    let answered = std::thread::Builder::new()
                        .name("mote-http-503".into())
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            let _ = req.respond(http::error_answer(&e));
                            refusing.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = answered {
                        ctx.refusing.fetch_sub(1, Ordering::AcqRel);
                        log::warn!("http: cannot start a thread to refuse a request: {e}");
                    }
                }
                http::Disposal::Later => {
                    ctx.refusing.fetch_sub(1, Ordering::AcqRel);
                    log::warn!(
                        "http: {MAX_REFUSING} refusals wait for request bodies; this one waits here"
                    );
                    let _ = req.respond(http::error_answer(&e));
                }
                http::Disposal::Never => http::abandon(req, ctx),
            }
            continue;
        }
        let (ctx, active2) = (ctx.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("mote-http-req".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                http::handle(req, &ctx);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            log::warn!("http: cannot start a request thread: {e}");
        }
    }
}

impl Edge {
    /// Stops accepting requests; streams end when the broker closes their connections.
    pub(crate) fn stop(mut self) {
        self.stopping.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
