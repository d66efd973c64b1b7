//! The TCP transport: one smol executor thread hosting the accept loop, a task per
//! connection, and a timer sweep for handshake deadlines and keepalives.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let (stop, stopped) = async_channel::bounded::<()>(1);
//! std::thread::spawn(move || mote::server::serve(listener, Default::default(), async move {
//!     let _ = stopped.recv().await;
//! }));
//! // ... talk to the broker ...
//! drop(stop); // closing the channel shuts the broker down
//! # Ok(()) }
//! ```

mod conn;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use mote_sdk::ErrorCode;
use smol::LocalExecutor;

use crate::auth::Auth;
use crate::engine::{ConnId, Engine, Stats};
use crate::limits::Limits;
use crate::session::encode_error;

/// The shared read and write buffers of the executor thread.
pub(crate) struct Scratch {
    pub(crate) read: Vec<u8>,
    pub(crate) write: Vec<u8>,
}

/// State shared by the tasks of one broker (all on one thread).
pub(crate) struct Shared {
    pub(crate) engine: RefCell<Engine>,
    /// The tokens new connections are checked against (replaced on reload).
    pub(crate) auth: Arc<RwLock<Arc<Auth>>>,
    pub(crate) scratch: RefCell<Scratch>,
    wakers: RefCell<Vec<Option<Waker>>>,
    wake_list: RefCell<Vec<ConnId>>,
    /// Refused connections still being told why.
    lingering: Cell<usize>,
    /// The HTTP edge's task: its waker, and whether the engine woke it since it last looked.
    edge_waker: RefCell<Option<Waker>>,
    /// The sweeper, asleep until its deadline; woken when an earlier one appears.
    sweeper_waker: RefCell<Option<Waker>>,
    sweeper_woken: Cell<bool>,
    edge_woken: Cell<bool>,
    /// The engine connection HTTP publishes are made on.
    edge_conn: Cell<ConnId>,
    /// HTTP streams that joined a consumer group, by their number (never reused): their
    /// engine connection and token name, for `POST /ack`.
    pub(crate) http_groups: RefCell<std::collections::HashMap<u64, HttpGroupStream>>,
    pub(crate) next_http_stream: Cell<u64>,
    epoch: Instant,
}

/// An HTTP stream in a consumer group: its engine connection and its token's name.
pub(crate) type HttpGroupStream = (ConnId, Option<Box<str>>);

/// Refused connections told why at once; past this many they are just closed.
const MAX_LINGERING_REFUSALS: usize = 64;

impl Shared {
    /// The token table now (a poisoned lock still holds a valid table).
    pub(crate) fn auth_now(&self) -> Arc<Auth> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the engine woke the edge since it last asked; if not, `waker` is kept.
    pub(crate) fn take_edge_wake(&self, waker: &Waker) -> bool {
        if self.edge_woken.replace(false) {
            return true;
        }
        *self.edge_waker.borrow_mut() = Some(waker.clone());
        false
    }

    /// The engine connection HTTP publishes are made on.
    pub(crate) fn edge_conn(&self) -> ConnId {
        self.edge_conn.get()
    }

    /// Time since the broker started.
    pub(crate) fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(crate) fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    pub(crate) fn set_waker(&self, id: ConnId, waker: &Waker) {
        let mut w = self.wakers.borrow_mut();
        let i = id.index();
        if w.len() <= i {
            w.resize(i + 1, None);
        }
        match &w[i] {
            Some(old) if old.will_wake(waker) => {}
            _ => w[i] = Some(waker.clone()),
        }
    }

    pub(crate) fn forget_waker(&self, id: ConnId) {
        if let Some(w) = self.wakers.borrow_mut().get_mut(id.index()) {
            *w = None;
        }
    }

    /// Wakes the connections the engine has news for, except `me` (already running).
    pub(crate) fn wake_others(&self, engine: &mut Engine, me: Option<ConnId>) {
        if engine.take_timer_moved() {
            self.sweeper_woken.set(true);
            if let Some(w) = self.sweeper_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        let mut list = self.wake_list.borrow_mut();
        engine.take_wakeups(&mut list);
        if list.is_empty() {
            return;
        }
        let wakers = self.wakers.borrow();
        for &id in list.iter() {
            if id == ConnId::EDGE {
                self.edge_woken.set(true);
                if let Some(w) = self.edge_waker.borrow().as_ref() {
                    w.wake_by_ref();
                }
            } else if Some(id) != me {
                if let Some(Some(w)) = wakers.get(id.index()) {
                    w.wake_by_ref();
                }
            }
        }
    }
}

/// A random id for this broker process, from the OS's hash seed and the clock.
fn broker_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What a broker runs with besides its listener.
#[derive(Debug, Default)]
pub struct Config {
    /// Every bound it enforces.
    pub limits: Limits,
    /// The tokens it accepts (none: no authentication).
    pub auth: Auth,
    /// New token tables to switch to (sent on `SIGHUP`); existing connections keep the
    /// rights they proved until they reconnect.
    pub reload: Option<async_channel::Receiver<Auth>>,
    /// The HTTP edge, if any.
    pub http: Option<crate::edge::HttpConfig>,
    /// Consumer groups from the config file.
    pub groups: Vec<crate::engine::GroupConfig>,
}

/// Runs a broker without tokens on `listener` until `shutdown` completes, on the calling
/// thread. Returns the final counters.
pub fn serve(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    serve_with(
        listener,
        Config {
            limits,
            ..Config::default()
        },
        shutdown,
    )
}

/// Runs a broker with `config` on `listener` until `shutdown` completes, on the calling
/// thread. Returns the final counters.
pub fn serve_with(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let ex = Rc::new(LocalExecutor::new());
    futures_lite::future::block_on(ex.run(run(ex.clone(), listener, config, shutdown)))
}

/// The broker's main task; `ex` is the executor connection tasks are spawned on.
pub async fn run(
    ex: Rc<LocalExecutor<'static>>,
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let Config {
        limits,
        auth,
        reload,
        http,
        groups,
    } = config;
    limits
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = Async::new(listener)?;
    let sweep = sweep_interval(&limits);
    let shared = Rc::new(Shared {
        engine: RefCell::new({
            let mut e = Engine::new(limits, broker_id());
            for g in &groups {
                e.configure_group(g)
                    .map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r.message))?;
            }
            e
        }),
        auth: Arc::new(RwLock::new(Arc::new(auth))),
        scratch: RefCell::new(Scratch {
            read: vec![0; conn::READ_CHUNK],
            write: Vec::with_capacity(conn::READ_CHUNK),
        }),
        wakers: RefCell::new(Vec::new()),
        wake_list: RefCell::new(Vec::new()),
        lingering: Cell::new(0),
        edge_waker: RefCell::new(None),
        sweeper_waker: RefCell::new(None),
        sweeper_woken: Cell::new(false),
        edge_woken: Cell::new(false),
        edge_conn: Cell::new(ConnId::EDGE),
        http_groups: RefCell::new(std::collections::HashMap::new()),
        next_http_stream: Cell::new(0),
        epoch: Instant::now(),
    });

    let sweeper = {
        let shared = shared.clone();
        ex.spawn(async move {
            loop {
                // Until the next check, or the next consumer-group deadline if sooner
                // (woken early when a sooner one appears).
                let now = shared.mono_ms();
                let at = shared
                    .engine
                    .borrow_mut()
                    .arm_timer(now, sweep.as_millis() as u64);
                let until = shared.epoch + Duration::from_millis(at);
                Timer::at(until)
                    .or(futures_lite::future::poll_fn(|cx| {
                        if shared.sweeper_woken.replace(false) {
                            return std::task::Poll::Ready(until);
                        }
                        *shared.sweeper_waker.borrow_mut() = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }))
                    .await;
                {
                    let mut engine = shared.engine.borrow_mut();
                    if engine.handle_timeouts(shared.mono_ms()) > 0 {
                        log::debug!("closed connections past their deadlines");
                    }
                    engine.handle_idle();
                    shared.wake_others(&mut engine, None);
                }
                // Every loop on the executor yields, whatever its timer says.
                futures_lite::future::yield_now().await;
            }
        })
    };

    // The HTTP edge: its threads, and the task that answers their calls.
    let edge = match http {
        Some(h) => {
            let max_payload = shared.engine.borrow().limits().max_payload;
            let (edge, calls, addr) = crate::edge::start(
                h,
                shared.auth.clone(),
                max_payload,
                listener.get_ref().local_addr()?,
            )?;
            log::info!("http listening on {addr}");
            let mut engine = shared.engine.borrow_mut();
            let conn = engine.handle_connect(shared.mono_ms(), None);
            engine.handle_open_http(conn, "http-publish", None);
            shared.edge_conn.set(conn);
            drop(engine);
            let task = ex.spawn(crate::edge::bridge::serve(
                ex.clone(),
                shared.clone(),
                calls,
            ));
            Some((edge, task))
        }
        None => None,
    };

    let reloader = reload.map(|rx| {
        let shared = shared.clone();
        ex.spawn(async move {
            while let Ok(auth) = rx.recv().await {
                log::info!("token table reloaded: {} tokens", auth.len());
                *shared.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(auth);
            }
        })
    });

    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let mut engine = shared.engine.borrow_mut();
                    if !engine.admit() {
                        drop(engine);
                        log::warn!("refused {peer}: connection limit reached");
                        let msg = conn::close_message(ErrorCode::CONNECTION_LIMIT).to_string();
                        refuse_lingering(&ex, &shared, stream, ErrorCode::CONNECTION_LIMIT, msg);
                        continue;
                    }
                    if shared.auth_now().enabled() {
                        if let Err(blocked) = engine.admit_address(peer.ip(), shared.mono_ms()) {
                            drop(engine);
                            log::warn!("refused {peer}: {blocked}");
                            let msg = blocked.to_string();
                            refuse_lingering(&ex, &shared, stream, ErrorCode::UNAUTHORIZED, msg);
                            continue;
                        }
                    }
                    let _ = stream.get_ref().set_nodelay(true);
                    let id = engine.handle_connect(shared.mono_ms(), Some(peer));
                    drop(engine);
                    log::debug!("conn {}: accepted {peer}", id.index());
                    if let Some(task) = conn::ConnTask::new(shared.clone(), stream, id) {
                        ex.spawn(task).detach();
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    };
    accept.or(shutdown).await;

    log::info!("shutting down");
    drop(listener);
    {
        let mut engine = shared.engine.borrow_mut();
        engine.handle_shutdown();
        shared.wake_others(&mut engine, None);
    }
    // Every client, but not the edge's own publishing connection, which has no socket.
    let own = usize::from(edge.is_some());
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.engine.borrow().connection_count() > own && Instant::now() < deadline {
        Timer::after(Duration::from_millis(5)).await;
    }
    drop(sweeper);
    drop(reloader);
    if let Some((edge, task)) = edge {
        edge.stop();
        drop(task);
    }
    let stats = shared.engine.borrow().stats().clone();
    Ok(stats)
}

/// How often deadlines are checked: a quarter of the shortest one, within 5 ms..=1 s.
fn sweep_interval(l: &Limits) -> Duration {
    let ms = l.keepalive_ms.min(l.handshake_ms) / 4;
    Duration::from_millis(ms.clamp(5, 1000))
}

/// Tells a refused connection why and lingers so the answer is not lost to a reset;
/// past `MAX_LINGERING_REFUSALS` at once, just tells and closes.
fn refuse_lingering(
    ex: &LocalExecutor<'_>,
    shared: &Rc<Shared>,
    stream: Async<std::net::TcpStream>,
    code: ErrorCode,
    message: String,
) {
    refuse(&stream, code, &message);
    if shared.lingering.get() >= MAX_LINGERING_REFUSALS {
        return;
    }
    shared.lingering.set(shared.lingering.get() + 1);
    let shared = shared.clone();
    ex.spawn(async move {
        conn::linger(&stream).await;
        shared.lingering.set(shared.lingering.get() - 1);
    })
    .detach();
}

/// Tells a refused connection why, without waiting for it.
fn refuse(stream: &Async<std::net::TcpStream>, code: ErrorCode, message: &str) {
    let mut buf = Vec::new();
    encode_error(&mut buf, code, 0, message);
    let _ = stream.get_ref().write(&buf);
}
