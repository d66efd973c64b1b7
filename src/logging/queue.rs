//! The bounded queue between the threads that log and the one that writes: bytes of whole
//! lines, appended if they fit and dropped (and counted) if not, taken by the writer all at
//! once. Nobody holds the lock for longer than a copy or a swap, so logging never waits for
//! stderr.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Lines waiting for the writer.
#[derive(Debug)]
pub(crate) struct Queue {
    capacity: usize,
    state: Mutex<State>,
    /// The writer waits here for lines (or a nudge).
    ready: Condvar,
    /// [`Queue::wait_idle`] waits here for the writer to have written everything.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    /// Lines dropped since the writer last took the queue.
    dropped: u64,
    /// The writer is writing what it took.
    writing: bool,
    /// The writer should look again even though no line came.
    nudged: bool,
    closed: bool,
}

/// What the writer took.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Lines (maybe none, after a time-out or a nudge), and how many were dropped since the
    /// last time.
    Lines {
        /// Lines dropped because the queue was full.
        dropped: u64,
    },
    /// The queue is closed and empty: the writer should stop.
    Closed,
}

impl Queue {
    /// A queue holding at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `lines` (whole lines) if they fit; `false` (and counted) if they do not.
    pub(crate) fn push(&self, lines: &[u8]) -> bool {
        let mut s = self.lock();
        if s.buf.len() + lines.len() > self.capacity {
            s.dropped += newlines(lines);
            return false;
        }
        let was_empty = s.buf.is_empty();
        s.buf.extend_from_slice(lines);
        drop(s);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Wakes the writer without a line (a summary may be due soon).
    pub(crate) fn nudge(&self) {
        self.lock().nudged = true;
        self.ready.notify_one();
    }

    /// Stops the writer once the queue is empty (the process's writer runs until exit).
    #[cfg(test)]
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// For the writer, done with its last batch: waits (at most `timeout`, if any) for lines
    /// and swaps them into `batch` (which must be empty).
    pub(crate) fn take(&self, batch: &mut Vec<u8>, timeout: Option<Duration>) -> Taken {
        let mut s = self.lock();
        s.writing = false;
        if s.buf.is_empty() && s.dropped == 0 {
            self.idle.notify_all();
            let deadline = timeout.map(|t| Instant::now() + t);
            while s.buf.is_empty() && !s.nudged && !s.closed {
                s = match deadline {
                    None => self.ready.wait(s).unwrap_or_else(PoisonError::into_inner),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let (s, _) = self
                            .ready
                            .wait_timeout(s, left)
                            .unwrap_or_else(PoisonError::into_inner);
                        s
                    }
                };
            }
        }
        if s.closed && s.buf.is_empty() && s.dropped == 0 {
            self.idle.notify_all();
            return Taken::Closed;
        }
        std::mem::swap(&mut s.buf, batch);
        s.writing = true;
        s.nudged = false;
        Taken::Lines {
            dropped: std::mem::take(&mut s.dropped),
        }
    }

    /// Waits until the writer has written everything queued before, or `deadline`; `false`
    /// if the deadline came first (stderr is not being read).
    pub(crate) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut s = self.lock();
        while !s.buf.is_empty() || s.dropped > 0 || s.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .idle
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// The number of lines in `bytes`.
pub(crate) fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_do_not_fit_are_dropped_and_counted() {
        let q = Queue::new(10);
        assert!(q.push(b"12345\n"));
        assert!(!q.push(b"abcde\n"), "6 + 6 > 10");
        assert!(q.push(b"xyz\n"), "6 + 4 fits");
        assert!(!q.push(b"!\n"));
        assert!(!q.push(b"two\nlines\n"));
        let mut batch = Vec::new();
        assert_eq!(q.take(&mut batch, None), Taken::Lines { dropped: 4 });
        assert_eq!(batch, b"12345\nxyz\n");
        // Room again; the count starts over.
        assert!(q.push(b"abcde\n"));
        batch.clear();
        assert_eq!(q.take(&mut batch, None), Taken::Lines { dropped: 0 });
        assert_eq!(batch, b"abcde\n");
    }

    #[test]
    fn the_writer_waits_for_lines_a_nudge_or_its_timeout() {
        let q = Queue::new(100);
        let mut batch = Vec::new();
        let t0 = Instant::now();
        let timeout = Duration::from_millis(20);
        assert_eq!(
            q.take(&mut batch, Some(timeout)),
            Taken::Lines { dropped: 0 }
        );
        assert!(t0.elapsed() >= timeout);
        assert!(batch.is_empty());
        q.nudge();
        assert_eq!(q.take(&mut batch, None), Taken::Lines { dropped: 0 });
        q.close();
        assert_eq!(q.take(&mut batch, None), Taken::Closed);
    }

    #[test]
    fn wait_idle_waits_for_the_batch_being_written() {
        let q = Queue::new(100);
        let deadline = || Instant::now() + Duration::from_secs(10);
        assert!(q.wait_idle(deadline()), "nothing queued");
        q.push(b"line\n");
        let mut batch = Vec::new();
        assert_eq!(q.take(&mut batch, None), Taken::Lines { dropped: 0 });
        // Still writing `batch`: not idle.
        assert!(!q.wait_idle(Instant::now() + Duration::from_millis(10)));
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut next = Vec::new();
                q.close();
                assert_eq!(q.take(&mut next, None), Taken::Closed);
            });
            assert!(q.wait_idle(deadline()));
        });
    }
}
