//! The process's log: lines to stderr that never stall the broker.
//!
//! A stalled stderr reader (journald under pressure, a docker log driver, `| logger`) used to
//! stop the broker: the executor thread wrote each line itself and blocked once the pipe was
//! full. Now the broker's lines go through a bounded queue to a writer thread
//! ([`Output::Background`]); a line that does not fit is dropped and counted ([`dropped`]),
//! and the writer says how many when it can write again. Repeated `warn` and `info` lines from
//! one call site (a thousand peers refused for the same reason) are rate-limited, a burst of
//! lines and then one every few seconds, with a line saying how many were left out
//! ([`suppressed`]); errors are never rate-limited.
//!
//! Lines look like env_logger's (`[LEVEL target] message`) with a UTC timestamp in front, or
//! under systemd (stderr is `JOURNAL_STREAM`) without it and with a syslog priority prefix
//! that journald turns into the entry's priority. `RUST_LOG` selects lines as it did with
//! env_logger: `debug`, `warn,mote::server=debug`, `mote=trace`.
//!
//! ```
//! # extern crate mote_core as mote; // the `mote` package re-exports it
//! mote::logging::init("info", mote::logging::Output::Direct);
//! log::info!("hello");
//! assert_eq!(mote::logging::dropped(), 0);
//! mote::logging::flush(std::time::Duration::from_secs(1));
//! ```

mod filter;
mod format;
mod limiter;
mod queue;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use log::{Level, Metadata, Record};

use filter::Filter;
use format::Style;
use limiter::{Limiter, Site, Verdict};
use queue::{Queue, Taken, newlines};

/// Bytes of lines the queue holds for the writer thread (a pipe holds 64 KiB too).
const QUEUE_BYTES: usize = 64 * 1024;
/// The writer's batch buffer is given back down to this after a burst.
const KEEP_BYTES: usize = 4096;

/// Which thread writes the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A writer thread behind a bounded queue: logging never waits for stderr, and lines
    /// that do not fit are dropped and counted. For the broker; call [`flush`] before exit.
    Background,
    /// The thread that logs, at once: it waits while stderr is not read. For short-lived
    /// clients, where that blocks nobody else.
    Direct,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger for the process: lines at the levels `RUST_LOG` selects, or
/// `default_filter` (same syntax, e.g. `"info"`) when it is not set. A second call changes
/// nothing.
pub fn init(default_filter: &str, output: Output) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_owned());
    let (filter, errors) = Filter::parse(&spec);
    for e in errors {
        eprintln!("warning: {e}, ignoring it");
    }
    let mut fresh = false;
    let logger = LOGGER.get_or_init(|| {
        fresh = true;
        Logger::new(filter, Style::detect())
    });
    if !fresh || log::set_logger(logger).is_err() {
        return;
    }
    log::set_max_level(logger.filter.max_level());
    if output == Output::Background {
        // Its own descriptor for stderr: a blocked write does not hold std's stderr lock,
        // so an `eprintln!` elsewhere waits only for the pipe, not for this thread.
        use std::os::fd::AsFd;
        let out = std::io::stderr().as_fd().try_clone_to_owned();
        let spawned =
            std::thread::Builder::new()
                .name("mote-log".into())
                .spawn(move || match out {
                    Ok(fd) => logger.write_queued(&mut std::fs::File::from(fd)),
                    Err(_) => logger.write_queued(&mut std::io::stderr()),
                });
        // Without the thread, lines are written directly.
        logger.background.store(spawned.is_ok(), Relaxed);
    }
}

/// Log lines dropped because the queue to stderr was full (stderr was not being read fast
/// enough), or because writing them failed, since the process started.
pub fn dropped() -> u64 {
    LOGGER.get().map_or(0, |l| l.dropped.load(Relaxed))
}

/// Log lines left out by the rate limit on repeated `warn` and `info` lines, since the
/// process started.
pub fn suppressed() -> u64 {
    LOGGER.get().map_or(0, |l| l.suppressed.load(Relaxed))
}

/// Writes what is still pending (queued lines, counts of suppressed lines), waiting at most
/// `wait` for stderr to take them; `false` if it did not. Call before the process exits.
pub fn flush(wait: Duration) -> bool {
    let Some(logger) = LOGGER.get() else {
        return true;
    };
    let deadline = Instant::now() + wait;
    let mut lines = String::new();
    logger.summaries(&mut lines, true);
    if !lines.is_empty() {
        logger.emit(&lines);
    }
    !logger.background.load(Relaxed) || logger.queue.wait_idle(deadline)
}

/// The `log::Log` of the process.
#[derive(Debug)]
struct Logger {
    filter: Filter,
    style: Style,
    limiter: Mutex<Limiter>,
    /// The limiter's clock.
    start: Instant,
    queue: Queue,
    /// A writer thread takes the queue; otherwise lines are written directly.
    background: AtomicBool,
    dropped: AtomicU64,
    suppressed: AtomicU64,
}

impl Logger {
    fn new(filter: Filter, style: Style) -> Logger {
        Logger {
            filter,
            style,
            limiter: Mutex::new(Limiter::default()),
            start: Instant::now(),
            queue: Queue::new(QUEUE_BYTES),
            background: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn limiter(&self) -> MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Writes `lines` (whole lines) where they go, or counts them as dropped.
    fn emit(&self, lines: &str) {
        let written = if self.background.load(Relaxed) {
            self.queue.push(lines.as_bytes())
        } else {
            std::io::stderr().write_all(lines.as_bytes()).is_ok()
        };
        if !written {
            self.dropped.fetch_add(newlines(lines.as_bytes()), Relaxed);
        }
    }

    /// Appends the summaries of suppressed lines that are due (all of them with `force`).
    fn summaries(&self, out: &mut String, force: bool) {
        let due = self.limiter().poll_summaries(self.now_ms(), force);
        for s in due {
            summary(out, self.style, s.level, s.site, s.count);
        }
    }

    /// The writer thread: writes what is queued until the queue is closed.
    fn write_queued(&self, out: &mut dyn Write) {
        let mut batch = Vec::new();
        let mut notes = String::new();
        loop {
            let summary_in = self.limiter().next_summary_in(self.now_ms());
            let Taken::Lines { dropped } = self
                .queue
                .take(&mut batch, summary_in.map(Duration::from_millis))
            else {
                return;
            };
            if dropped > 0 {
                format::line(
                    &mut notes,
                    self.style,
                    Level::Warn,
                    public_target(module_path!()),
                    format_args!("{dropped} log lines dropped: stderr was not being read"),
                );
            }
            self.summaries(&mut notes, false);
            batch.extend_from_slice(notes.as_bytes());
            notes.clear();
            if out.write_all(&batch).is_err() {
                self.dropped.fetch_add(newlines(&batch), Relaxed);
            }
            batch.clear();
            batch.shrink_to(KEEP_BYTES);
        }
    }
}

/// The name a log target is shown and filtered by, as a head and the rest of the module
/// path: the broker's library is the crate `mote_core` and the command line `mote_cli`, so
/// their lines say `mote::server` and `mote::cli::serve`, the modules' names in the `mote`
/// package (and `RUST_LOG=mote::server=debug` selects them).
pub(crate) fn public_target(target: &str) -> (&'static str, &str) {
    if let Some(rest) = target.strip_prefix("mote_core") {
        ("mote", rest)
    } else if let Some(rest) = target.strip_prefix("mote_cli") {
        ("mote::cli", rest)
    } else {
        ("", target)
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter
            .enabled_in(metadata.level(), public_target(metadata.target()))
    }

    fn log(&self, record: &Record<'_>) {
        let target = public_target(record.target());
        if !self.filter.enabled_in(record.level(), target) {
            return;
        }
        let mut out = String::new();
        if let (Level::Warn | Level::Info, Some(module), Some(file), Some(line)) = (
            record.level(),
            record.module_path_static(),
            record.file_static(),
            record.line(),
        ) {
            let site = Site { module, file, line };
            let verdict = self.limiter().check(site, record.level(), self.now_ms());
            match verdict {
                Verdict::Suppress { first } => {
                    self.suppressed.fetch_add(1, Relaxed);
                    if first {
                        // A summary is now due: the writer times its wait for it.
                        self.queue.nudge();
                    }
                    return;
                }
                Verdict::Pass { suppressed: 0 } => {}
                Verdict::Pass { suppressed } => {
                    summary(&mut out, self.style, record.level(), site, suppressed);
                }
            }
        }
        format::line(&mut out, self.style, record.level(), target, *record.args());
        self.emit(&out);
    }

    fn flush(&self) {}
}

/// `N similar lines suppressed (src/server/mod.rs:333)`, as a line of the call site.
fn summary(out: &mut String, style: Style, level: Level, site: Site, count: u64) {
    let (file, line) = (site.file, site.line);
    format::line(
        out,
        style,
        level,
        public_target(site.module),
        format_args!("{count} similar lines suppressed ({file}:{line})"),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests;
