//! The broker process: one smol executor thread that owns the engine and the state its
//! tasks share ([`Shared`]), and starts every front-end on it — the binary protocol
//! ([`crate::server`]) and the HTTP edge ([`crate::http`]) — beside the timer sweep,
//! token reloads and the systemd watchdog.
//!
//! Rule for every task here: no loop runs without yielding. A deadline that is already
//! due and cannot be acted on waits for the event that makes it actionable.
//!
//! ```no_run
//! # extern crate mote_core as mote; // the `mote` package re-exports it
//! # fn main() -> std::io::Result<()> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let (stop, stopped) = async_channel::bounded::<()>(1);
//! std::thread::spawn(move || mote::broker::serve(listener, Default::default(), async move {
//!     let _ = stopped.recv().await;
//! }));
//! // ... talk to the broker ...
//! drop(stop); // closing the channel shuts the broker down
//! # Ok(()) }
//! ```

pub(crate) mod reactor;
mod shared;
mod store;
pub mod systemd;

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_io::Timer;
use smol::LocalExecutor;

use crate::auth::Auth;
use crate::engine::{Engine, Stats};
use crate::limits::Limits;
pub(crate) use shared::{LINGER, Shared, linger};

/// How often message rates are sampled for stats and metrics.
const RATE_EVERY_MS: u64 = 2_000;

/// How often the topics are swept (max-age in memory, idle expiry): often enough that
/// an expired message is dropped soon (delivery skips it meanwhile), and a sweep looks
/// at a bounded number of topics, so it stays cheap with many.
const TOPIC_SWEEP_EVERY_MS: u64 = 250;

/// Where and how topics are kept on disk (`--data`).
#[derive(Debug)]
pub struct DataConfig {
    /// The data directory.
    pub dir: std::path::PathBuf,
    /// How the log runs (sync policy, disk budget, ...).
    pub log: crate::store::LogConfig,
    /// Per-topic settings by pattern (`[topics."pattern"]`).
    pub topics: crate::engine::settings::TopicPatterns,
}

/// A new configuration to switch to (`SIGHUP`).
#[derive(Debug)]
pub struct Reload {
    /// The token table.
    pub auth: Auth,
    /// The per-topic settings.
    pub topics: crate::engine::settings::TopicPatterns,
    /// The per-topic JSON schemas.
    pub schemas: crate::engine::schemas::SchemaPatterns,
}

/// What a broker runs with besides its listener.
#[derive(Debug, Default)]
pub struct Config {
    /// Every bound it enforces.
    pub limits: Limits,
    /// The tokens it accepts (none: no authentication).
    pub auth: Auth,
    /// New configurations to switch to (sent on `SIGHUP`): token tables (existing
    /// connections keep the rights they proved until they reconnect; a table without
    /// tokens is refused while the broker has some: a reload never turns authentication
    /// off) and per-topic settings.
    pub reload: Option<async_channel::Receiver<Reload>>,
    /// The HTTP edge, if any.
    pub http: Option<crate::http::HttpConfig>,
    /// Consumer groups from the config file.
    pub groups: Vec<crate::engine::GroupConfig>,
    /// Tell systemd `WATCHDOG=1` this often, from the executor thread itself, so a hung
    /// broker is restarted (`WatchdogSec=`; see [`systemd::watchdog_interval`]).
    pub watchdog: Option<Duration>,
    /// Durable topics: the data directory, or memory only.
    pub data: Option<DataConfig>,
    /// Per-topic settings by pattern on a broker without a data directory (`max-age`,
    /// `idle-expiry`; with one, [`DataConfig::topics`] is used).
    pub topics: crate::engine::settings::TopicPatterns,
    /// JSON schemas that publishes to matching topics must match.
    pub schemas: crate::engine::schemas::SchemaPatterns,
}

/// Runs a broker without tokens on `listener` until `shutdown` completes, on the calling
/// thread. Returns the final counters.
pub fn serve(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()> + 'static,
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
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<Stats> {
    let ex = Rc::new(LocalExecutor::new());
    reactor::block_on(ex.run(run(ex.clone(), listener, config, shutdown)))?
}

/// The broker's main task; `ex` is the executor every other task is spawned on. It runs
/// under [`reactor::block_on`], whose reactor the connections register with.
async fn run(
    ex: Rc<LocalExecutor<'static>>,
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<Stats> {
    let Config {
        limits,
        auth,
        reload,
        http,
        groups,
        watchdog,
        data,
        topics: memory_topics,
        schemas,
    } = config;
    limits
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let sweep = sweep_interval(&limits);
    // The data directory first: it holds the broker's id, and what the engine restores.
    let fresh_id = broker_id();
    let opened = match data {
        Some(d) => {
            let started = Instant::now();
            let (log, opened) = crate::store::Log::open(&d.dir, d.log, fresh_id)
                .map_err(|e| io::Error::other(e.to_string()))?;
            for n in &opened.notes {
                log::warn!("store: {n}");
            }
            log::info!(
                "data in {}: {} topic(s), {} durable group(s), {} MiB, recovered in {} ms",
                d.dir.display(),
                opened.topics.len(),
                opened.groups.len(),
                opened.disk_bytes >> 20,
                started.elapsed().as_millis()
            );
            Some((log, opened, d.topics, d.dir))
        }
        None => {
            log::info!(
                "no data directory (--data): topics are kept in memory only, and a restart loses them"
            );
            None
        }
    };
    let id = opened.as_ref().map_or(fresh_id, |(_, o, _, _)| o.broker_id);
    let mut engine = Engine::new(limits, id);
    if !schemas.is_empty() {
        log::info!("{} topic pattern(s) with a JSON schema", schemas.len());
    }
    engine.set_schemas(schemas);
    // Request inboxes are derived from this secret: unguessable by responders.
    let mut inbox_key = [0u8; 32];
    if let Err(e) = mote_sdk::secure::random(&mut inbox_key) {
        return Err(std::io::Error::other(format!(
            "no randomness for request inboxes: {e}"
        )));
    }
    engine.seed_requests(inbox_key);
    // Transaction ids are made from the system's randomness: unguessable.
    let mut tx_key = [0u8; 32];
    mote_sdk::secure::random(&mut tx_key)
        .map_err(|e| io::Error::other(format!("no randomness for transaction ids: {e}")))?;
    engine.set_tx_key(tx_key);
    let wall_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    if opened.is_none() {
        engine.set_wall_clock(wall_now(), 0);
        engine.set_patterns(memory_topics);
    }
    let mut threads = None;
    if let Some((log, opened, topics, dir)) = opened {
        let logdir = log.dir().to_path_buf();
        engine.attach_log(log, &opened, topics, wall_now(), 0);
        engine.restore_txs(&opened.txs, 0);
        threads = Some(Rc::new(
            crate::store::io::Threads::start(&logdir, 0).map_err(|e| {
                io::Error::other(format!(
                    "cannot start the store's threads for {}: {e}",
                    dir.display()
                ))
            })?,
        ));
    }
    for g in &groups {
        engine
            .configure_group(g)
            .map_err(|r| io::Error::new(io::ErrorKind::InvalidInput, r.message))?;
    }
    let shared = Rc::new(Shared::new(engine, auth, crate::server::READ_CHUNK));

    let sweeper = ex.spawn(sweeper(shared.clone(), sweep));
    let storer = threads
        .as_ref()
        .map(|t| ex.spawn(store::run(shared.clone(), t.clone())));
    let tcp_addr = listener.local_addr()?;
    let tcp = crate::server::start(&ex, &shared, listener)?;
    let http = match http {
        Some(h) => {
            let (task, addr) = crate::http::start(&ex, &shared, h, tcp_addr)?;
            log::info!("http listening on {addr}");
            Some(task)
        }
        None => None,
    };
    let reloader = reload.map(|rx| ex.spawn(reloader(shared.clone(), rx)));
    // Serving (and, with --data, recovered): what systemd waits for (Type=notify).
    systemd::notify("READY=1");
    let watchdog = watchdog.map(|every| {
        ex.spawn(async move {
            loop {
                systemd::notify("WATCHDOG=1");
                Timer::after(every).await;
            }
        })
    });

    // A task of its own: the main future is polled whenever any task is scheduled, and
    // the shutdown signal's future may make a system call each time it is polled.
    ex.spawn(shutdown).await;

    log::info!("shutting down");
    drop(tcp);
    {
        let mut engine = shared.engine.borrow_mut();
        engine.handle_shutdown();
        shared.wake_others(&mut engine, None);
    }
    // Every TCP connection and HTTP stream is told, and closes.
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.engine.borrow().connection_count() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(5)).await;
    }
    drop((sweeper, reloader, watchdog, http, storer));
    if let Some(t) = threads {
        store::finish(&shared, &t);
    }
    let stats = shared.engine.borrow().stats().clone();
    Ok(stats)
}

/// Closes connections past their deadlines, redelivers what group members did not ack
/// in time, drops what outlived a topic's max-age and removes idle topics, samples
/// message rates, and frees recycled buffers of a quiet broker. Sleeps
/// until the next deadline (woken early when a sooner one appears); the engine never
/// arms a deadline that is already due, and each round yields besides.
async fn sweeper(shared: Rc<Shared>, sweep: Duration) {
    let mut next_sample = 0;
    let mut next_topic_sweep = 0;
    loop {
        let now = shared.mono_ms();
        let at = shared
            .engine
            .borrow_mut()
            .arm_timer(now, sweep.as_millis() as u64);
        shared.sweeper_sleep(at).await;
        let now = shared.mono_ms();
        {
            let mut engine = shared.engine.borrow_mut();
            if engine.handle_timeouts(now) > 0 {
                log::debug!("closed connections past their deadlines");
            }
            if now >= next_topic_sweep {
                engine.sweep_topics(now);
                next_topic_sweep = now + TOPIC_SWEEP_EVERY_MS;
            }
            engine.roll_rate_history(now);
            if now >= next_sample {
                engine.sample_rates(now);
                engine.handle_idle();
                next_sample = now + RATE_EVERY_MS;
            }
            shared.wake_others(&mut engine, None);
        }
        futures_lite::future::yield_now().await;
    }
}

/// Switches to each new configuration: the token table unless it would turn
/// authentication off, and the per-topic settings.
async fn reloader(shared: Rc<Shared>, rx: async_channel::Receiver<Reload>) {
    while let Ok(Reload {
        auth,
        topics,
        schemas,
    }) = rx.recv().await
    {
        {
            let mut engine = shared.engine.borrow_mut();
            engine.set_patterns(topics);
            log::info!(
                "per-topic settings reloaded: {} pattern(s) with a JSON schema",
                schemas.len()
            );
            engine.set_schemas(schemas);
        }
        let old = shared.auth_now();
        if old.enabled() && !auth.enabled() {
            log::error!(
                "reload: the new configuration has no tokens; keeping the {} current token(s): a reload never turns authentication off (restart the broker to run without tokens)",
                old.len()
            );
            continue;
        }
        log::info!(
            "token table reloaded: {} token{}",
            auth.len(),
            if auth.len() == 1 { "" } else { "s" }
        );
        shared.set_auth(auth);
    }
}

/// How often deadlines are checked: a quarter of the shortest one, within 5 ms..=1 s.
fn sweep_interval(l: &Limits) -> Duration {
    let ms = l.keepalive_ms.min(l.handshake_ms).min(l.partial_timeout_ms) / 4;
    Duration::from_millis(ms.clamp(5, 1000))
}

/// A random id for this broker process, from the OS's hash seed and the clock.
fn broker_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
