//! What every task on the broker's executor shares: the engine, the token table, the
//! clock, the wakers of connections the engine has news for, the budget of bytes held
//! for input that is still arriving, and the refusals still being told.

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use smol::LocalExecutor;

use crate::auth::Auth;
use crate::engine::{ConnId, Engine};

/// The shared read and write buffers of the executor thread.
pub(crate) struct Scratch {
    pub(crate) read: Vec<u8>,
    pub(crate) write: Vec<u8>,
}

/// State shared by the tasks of one broker (all on one thread).
pub(crate) struct Shared {
    pub(crate) engine: RefCell<Engine>,
    /// The tokens new connections are checked against (replaced on reload).
    auth: RefCell<Arc<Auth>>,
    pub(crate) scratch: RefCell<Scratch>,
    wakers: RefCell<Vec<Option<Waker>>>,
    wake_list: RefCell<Vec<ConnId>>,
    /// Refused connections still being told why.
    lingering: Cell<usize>,
    /// Woken when the engine wakes [`ConnId::EDGE`] (a `wait=delivered` was settled).
    edge_waker: RefCell<Option<Waker>>,
    edge_woken: Cell<bool>,
    /// The sweeper, asleep until its deadline; woken when an earlier one appears.
    sweeper_waker: RefCell<Option<Waker>>,
    sweeper_woken: Cell<bool>,
    /// Bytes held for frames and requests still arriving, over all connections, and the
    /// connections waiting for room under `--max-partial`.
    partial: Cell<usize>,
    max_partial: usize,
    partial_waiting: RefCell<Vec<Waker>>,
    /// The store task, and whether it has been woken since it last looked.
    store_waker: RefCell<Option<Waker>>,
    store_woken: Cell<bool>,
    /// Tasks waiting for the store: confirmations for a sync, publishers for the
    /// writer to catch up.
    store_waiters: RefCell<Vec<Waker>>,
    epoch: Instant,
}

/// Refused connections told why at once; past this many they are just closed.
const MAX_LINGERING_REFUSALS: usize = 64;
/// How long a closing connection drains what the peer still sends, so that its last
/// answer is not lost to a reset.
pub(crate) const LINGER: Duration = Duration::from_millis(500);

impl Shared {
    pub(crate) fn new(engine: Engine, auth: Auth, read_chunk: usize) -> Shared {
        let max_partial = engine.limits().max_partial_bytes;
        Shared {
            max_partial,
            engine: RefCell::new(engine),
            auth: RefCell::new(Arc::new(auth)),
            scratch: RefCell::new(Scratch {
                read: vec![0; read_chunk],
                write: Vec::with_capacity(read_chunk),
            }),
            wakers: RefCell::new(Vec::new()),
            wake_list: RefCell::new(Vec::new()),
            lingering: Cell::new(0),
            edge_waker: RefCell::new(None),
            edge_woken: Cell::new(false),
            sweeper_waker: RefCell::new(None),
            sweeper_woken: Cell::new(false),
            partial: Cell::new(0),
            partial_waiting: RefCell::new(Vec::new()),
            store_waker: RefCell::new(None),
            store_woken: Cell::new(false),
            store_waiters: RefCell::new(Vec::new()),
            epoch: Instant::now(),
        }
    }

    /// The token table now.
    pub(crate) fn auth_now(&self) -> Arc<Auth> {
        self.auth.borrow().clone()
    }

    /// Switches to a new token table; sessions already open keep the rights they proved.
    pub(crate) fn set_auth(&self, auth: Auth) {
        *self.auth.borrow_mut() = Arc::new(auth);
    }

    /// Time since the broker started.
    pub(crate) fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Monotonic milliseconds since the broker started: the engine's clock.
    pub(crate) fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The instant monotonic time `ms` stands for.
    pub(crate) fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Milliseconds since the Unix epoch: the time messages are stored with.
    pub(crate) fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Registers the task of connection `id`, to be woken when the engine has news for it.
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
        self.wake_store_if_needed(engine);
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

    /// Wakes the store task when the engine left it something to do (a batch to hand
    /// over, a read to ask for).
    pub(crate) fn wake_store_if_needed(&self, engine: &mut Engine) {
        let wanted = engine.take_log_wanted();
        if !self.store_woken.get() && (wanted || engine.log().is_some_and(|l| l.needs_poll())) {
            self.store_woken.set(true);
            if let Some(w) = self.store_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// Ready once something was appended to the log since the store task last looked.
    pub(crate) fn poll_store_wake(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.store_woken.replace(false) {
            return Poll::Ready(());
        }
        *self.store_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Wakes `cx`'s task at the store's next completion (a sync, a write).
    pub(crate) fn wait_store(&self, cx: &mut Context<'_>) {
        self.store_waiters.borrow_mut().push(cx.waker().clone());
    }

    pub(crate) fn wake_store_waiters(&self) {
        let waiters = std::mem::take(&mut *self.store_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Ready once the engine woke [`ConnId::EDGE`] since the last time it was.
    pub(crate) fn poll_edge_wake(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.edge_woken.replace(false) {
            return Poll::Ready(());
        }
        *self.edge_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sleeps until monotonic time `at_ms`, or until a sooner deadline appears in the
    /// engine ([`Shared::wake_others`] notices it).
    pub(crate) async fn sweeper_sleep(&self, at_ms: u64) {
        let until = self.instant(at_ms);
        Timer::at(until)
            .or(futures_lite::future::poll_fn(|cx| {
                if self.sweeper_woken.replace(false) {
                    return Poll::Ready(until);
                }
                *self.sweeper_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }))
            .await;
    }

    /// Takes `bytes` more of the `--max-partial` budget for input still arriving, if
    /// they fit (or if nothing is held at all: one frame alone always fits). If not,
    /// the caller is woken when room frees and must ask again.
    pub(crate) fn reserve_partial(&self, bytes: usize, cx: &mut Context<'_>) -> bool {
        let held = self.partial.get();
        if held == 0 || held + bytes <= self.max_partial {
            self.partial.set(held + bytes);
            return true;
        }
        self.partial_waiting.borrow_mut().push(cx.waker().clone());
        false
    }

    /// Takes `bytes` of the budget whether they fit or not: for input already read.
    pub(crate) fn force_partial(&self, bytes: usize) {
        self.partial.set(self.partial.get() + bytes);
    }

    /// What is left of the budget for input still arriving.
    pub(crate) fn partial_room(&self) -> usize {
        self.max_partial.saturating_sub(self.partial.get())
    }

    /// Gives back `bytes` of the budget and wakes those waiting for room.
    pub(crate) fn release_partial(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.partial.set(self.partial.get().saturating_sub(bytes));
        for w in self.partial_waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Bytes held for input still arriving, now.
    pub(crate) fn partial_bytes(&self) -> usize {
        self.partial.get()
    }

    /// Sends `answer` to a connection the broker refuses, without waiting, then drains
    /// what the peer still sends for a moment (so the answer is not lost to a reset);
    /// past `MAX_LINGERING_REFUSALS` at once the connection is just closed after it.
    pub(crate) fn refuse(
        self: &Rc<Self>,
        ex: &LocalExecutor<'_>,
        stream: Async<TcpStream>,
        answer: &[u8],
    ) {
        use std::io::Write;
        let _ = stream.get_ref().write(answer);
        if self.lingering.get() >= MAX_LINGERING_REFUSALS {
            return;
        }
        self.lingering.set(self.lingering.get() + 1);
        let shared = self.clone();
        ex.spawn(async move {
            linger(&stream).await;
            shared.lingering.set(shared.lingering.get() - 1);
        })
        .detach();
    }
}

/// Half-closes and reads until the peer closes too (or `LINGER` passes), so the kernel
/// does not answer unread bytes with a reset that could swallow our last words.
pub(crate) async fn linger(stream: &Async<TcpStream>) {
    use futures_lite::AsyncReadExt;
    let _ = stream.get_ref().shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 1024];
        let mut s = stream;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    drain
        .or(async {
            Timer::after(LINGER).await;
        })
        .await;
}
