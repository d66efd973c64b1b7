//! The logger as the broker uses it, on a logger of the test's own (not the process's).

use std::io;
use std::sync::mpsc;

use log::Log as _;

use super::*;

const PLAIN: Style = Style {
    timestamp: false,
    priority: false,
};

/// A logger whose lines wait in its queue, as with a writer thread.
fn queued(spec: &str) -> Logger {
    let logger = Logger::new(Filter::parse(spec).0, PLAIN);
    logger.background.store(true, Relaxed);
    logger
}

/// Logs `message` as if from line `line` of `mote::server`.
fn log_at(logger: &Logger, level: Level, line: u32, message: &str) {
    logger.log(
        &Record::builder()
            .args(format_args!("{message}"))
            .level(level)
            .target("mote::server")
            .module_path_static(Some("mote::server"))
            .file_static(Some("src/server/mod.rs"))
            .line(Some(line))
            .build(),
    );
}

fn take_lines(logger: &Logger) -> Vec<String> {
    let mut batch = Vec::new();
    logger.queue.take(&mut batch, Some(Duration::ZERO));
    String::from_utf8(batch)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn repeated_warnings_from_one_call_site_are_rate_limited_errors_are_not() {
    let logger = queued("info");
    for i in 0..1000 {
        log_at(&logger, Level::Warn, 333, &format!("refused 10.0.0.{i}"));
    }
    log_at(&logger, Level::Warn, 341, "another call site");
    for i in 0..100 {
        log_at(&logger, Level::Error, 80, &format!("error {i}"));
    }
    log_at(&logger, Level::Debug, 1, "filtered out");
    let lines = take_lines(&logger);
    let burst = limiter::BURST as usize;
    assert_eq!(lines.len(), burst + 1 + 100, "{lines:#?}");
    assert_eq!(lines[0], "[WARN  mote::server] refused 10.0.0.0");
    assert_eq!(lines[burst], "[WARN  mote::server] another call site");
    assert_eq!(lines[burst + 1], "[ERROR mote::server] error 0");
    assert_eq!(logger.suppressed.load(Relaxed), 1000 - limiter::BURST);
    assert_eq!(logger.dropped.load(Relaxed), 0);

    // At exit, the count is written.
    let mut summaries = String::new();
    logger.summaries(&mut summaries, true);
    assert_eq!(
        summaries,
        "[WARN  mote::server] 990 similar lines suppressed (src/server/mod.rs:333)\n"
    );
}

/// A stderr that blocks each write until the test lets it go.
struct Stalled {
    entered: mpsc::Sender<()>,
    permits: mpsc::Receiver<()>,
    written: Vec<u8>,
}

impl io::Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.entered.send(());
        // Closed (the test let go) or a permit: go on; a stuck test fails after 10 s.
        if self.permits.recv_timeout(Duration::from_secs(10))
            == Err(mpsc::RecvTimeoutError::Timeout)
        {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stalled_stderr_drops_and_counts_lines_then_says_how_many() {
    let logger = queued("info");
    let (entered_tx, entered) = mpsc::channel();
    let (release, permits) = mpsc::channel();
    let mut stderr = Stalled {
        entered: entered_tx,
        permits,
        written: Vec::new(),
    };
    let written = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            logger.write_queued(&mut stderr);
            stderr.written
        });
        log_at(&logger, Level::Error, 1, "first");
        // The writer took "first" and is stuck writing it.
        entered.recv_timeout(Duration::from_secs(10)).unwrap();
        let line = "[ERROR mote::server] 0123456789\n".len();
        let fit = QUEUE_BYTES / line;
        let t0 = Instant::now();
        for _ in 0..fit + 50 {
            log_at(&logger, Level::Error, 2, "0123456789");
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "logging waited");
        assert_eq!(logger.dropped.load(Relaxed), 50);

        drop(release);
        assert!(
            logger
                .queue
                .wait_idle(Instant::now() + Duration::from_secs(10))
        );
        log_at(&logger, Level::Error, 3, "after");
        assert!(
            logger
                .queue
                .wait_idle(Instant::now() + Duration::from_secs(10))
        );
        logger.queue.close();
        writer.join().unwrap()
    });
    let text = String::from_utf8(written).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let fit = lines.len() - 3;
    assert_eq!(lines[0], "[ERROR mote::server] first");
    assert!(lines[1..=fit].iter().all(|l| l.ends_with("] 0123456789")));
    assert_eq!(
        lines[fit + 1],
        "[WARN  mote::logging] 50 log lines dropped: stderr was not being read"
    );
    assert_eq!(lines[fit + 2], "[ERROR mote::server] after");
}
