//! The task that drives the store: it hands what the engine appended to the writer
//! thread (as batches, syncs, segment changes), reads for cursors behind the memory
//! rings to the reader thread, and their completions back to the engine; it applies
//! retention every second. It never waits for a disk: the threads do.

use std::rc::Rc;
use std::task::Poll;

use async_io::Timer;
use futures_lite::FutureExt;

use super::Shared;
use crate::store::io::{Done, Threads};

/// How often retention (and the disk budget) is applied.
const ENFORCE_EVERY_MS: u64 = 1_000;

/// Drives the log until the task is dropped.
pub(crate) async fn run(shared: Rc<Shared>, threads: Rc<Threads>) {
    let mut write = Vec::new();
    let mut read = Vec::new();
    let mut next_enforce = shared.mono_ms() + ENFORCE_EVERY_MS;
    loop {
        let now = shared.mono_ms();
        let wake_at = {
            let mut engine = shared.engine.borrow_mut();
            engine.persist_groups();
            if now >= next_enforce {
                engine.enforce_retention();
                next_enforce = now + ENFORCE_EVERY_MS;
            }
            let Some(log) = engine.log_mut() else { return };
            let wake = log.poll(now);
            log.take_commands(&mut write, &mut read);
            shared.wake_others(&mut engine, None);
            wake
        };
        for c in write.drain(..) {
            // Unbounded: what the log hands over is bounded by its backlog (publishers
            // are held back past it).
            let _ = threads.write.try_send(c);
        }
        for c in read.drain(..) {
            let _ = threads.read.try_send(c);
        }
        let deadline = wake_at.map_or(next_enforce, |w| w.min(next_enforce));
        let until = shared.instant(deadline.max(now + 1));
        enum Woke {
            Done(Done),
            Closed,
            Poll,
        }
        let woke = async {
            match threads.done.recv().await {
                Ok(d) => Woke::Done(d),
                Err(_) => Woke::Closed,
            }
        }
        .or(async {
            futures_lite::future::poll_fn(|cx| match shared.poll_store_wake(cx) {
                Poll::Ready(()) => Poll::Ready(Woke::Poll),
                Poll::Pending => Poll::Pending,
            })
            .await
        })
        .or(async {
            Timer::at(until).await;
            Woke::Poll
        })
        .await;
        match woke {
            Woke::Closed => return,
            Woke::Poll => {}
            Woke::Done(d) => {
                // This completion and any others already there.
                let mut next = Some(d);
                while let Some(d) = next.take() {
                    let mut engine = shared.engine.borrow_mut();
                    engine.handle_log_done(d, shared.mono_ms());
                    shared.wake_others(&mut engine, None);
                    drop(engine);
                    next = threads.done.try_recv().ok();
                }
                // Confirmations waiting for a sync, publishers held back by the backlog.
                shared.wake_store_waiters();
            }
        }
        futures_lite::future::yield_now().await;
    }
}

/// Makes everything appended durable before the broker exits: the last batch and a
/// sync, then the threads finish (the writer syncs what it was given) and are joined.
pub(crate) fn finish(shared: &Shared, threads: &Threads) {
    let (mut write, mut read) = (Vec::new(), Vec::new());
    {
        let mut engine = shared.engine.borrow_mut();
        engine.persist_groups();
        if let Some(log) = engine.log_mut() {
            log.flush();
            log.take_commands(&mut write, &mut read);
        }
    }
    for c in write {
        let _ = threads.write.try_send(c);
    }
    let stop = std::time::Instant::now();
    threads.stop();
    log::info!(
        "store: synced and closed in {} ms",
        stop.elapsed().as_millis()
    );
}
