//! The broker thread's own epoll, for the binary protocol's connections, and the loop that
//! runs the executor on top of it ([`block_on`]).
//!
//! Why not async-io's reactor for these sockets: async-io keeps a helper thread that
//! competes with `block_on` for its reactor lock. Between two sparse messages that thread
//! takes the lock and sleeps in `epoll_wait`, so every message cost a futex wake-up of
//! the broker thread, and every wait re-armed a one-shot registration (`epoll_ctl`), and
//! each read went on until `EAGAIN`: 14 system calls per round trip of one 64 B message
//! through the broker, where mosquitto makes 3. Here the broker thread itself waits in
//! `epoll_wait`, sockets are registered once, edge-triggered, and readiness is kept per
//! socket, so a connection with nothing to read costs no system call:
//!
//! - a socket is readable from its edge until a read returns `EAGAIN` or fewer bytes than
//!   asked (TCP hands over everything queued, and data arriving after that read raises a
//!   new edge); writable until a write returns `EAGAIN`;
//! - hang-ups and errors make it both, so the next read or write reports them.
//!
//! Everything else (HTTP, timers, signals, the listener) stays on async-io; its helper
//! thread drives that reactor and wakes this thread through an eventfd, which is written
//! only while this thread sleeps.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use rustix::event::{EventfdFlags, epoll};
use slab::Slab;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// The epoll key of the eventfd that wakes a sleeping broker thread.
const NOTIFY_KEY: u64 = u64::MAX;

thread_local! {
    static REACTOR: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

struct Reactor {
    epoll: OwnedFd,
    sources: RefCell<Slab<Rc<Source>>>,
    events: RefCell<Vec<epoll::Event>>,
    /// The wakers one `wait` found, kept to be reused (no allocation per wait).
    wake: Cell<Vec<Waker>>,
    notify: Arc<Notify>,
}

/// The waker of the executor's loop: sets `woken`, and writes the eventfd only when the
/// loop sleeps (or is about to) in `epoll_wait`.
struct Notify {
    woken: AtomicBool,
    sleeping: AtomicBool,
    fd: OwnedFd,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            // Fails only if the counter is full, and then a wake-up is pending anyway.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }
}

/// One registered socket's readiness and the tasks waiting for it.
struct Source {
    key: usize,
    readable: Cell<bool>,
    writable: Cell<bool>,
    reader: Cell<Option<Waker>>,
    writer: Cell<Option<Waker>>,
}

impl Reactor {
    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &fd,
            epoll::EventData::new_u64(NOTIFY_KEY),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(Reactor {
            epoll,
            sources: RefCell::new(Slab::new()),
            events: RefCell::new(Vec::with_capacity(EVENTS)),
            wake: Cell::new(Vec::new()),
            notify: Arc::new(Notify {
                woken: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                fd,
            }),
        })
    }

    /// Waits for events (until one comes if `block`, else not at all), marks the loop
    /// awake, and wakes the tasks waiting for them.
    fn wait(&self, block: bool) {
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut events = self.events.borrow_mut();
        events.clear();
        let timeout = if block { None } else { Some(&zero) };
        let r = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut *events),
            timeout,
        );
        // Awake from here on: the wakes below schedule tasks and must not write the
        // eventfd.
        self.notify.sleeping.store(false, Ordering::SeqCst);
        match r {
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::INTR => return,
            Err(e) => {
                // Nothing a peer can cause (EBADF, EFAULT, EINVAL are our bugs); do not spin.
                log::error!("epoll_wait failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                return;
            }
        }
        let mut wake = self.wake.take();
        {
            let sources = self.sources.borrow();
            for ev in events.iter() {
                let (flags, key) = (ev.flags, ev.data.u64());
                if key == NOTIFY_KEY {
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(&self.notify.fd, &mut buf);
                    continue;
                }
                let Some(src) = sources.get(key as usize) else {
                    continue;
                };
                let broken = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
                if broken || flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::RDHUP) {
                    src.readable.set(true);
                    if let Some(w) = src.reader.take() {
                        wake.push(w);
                    }
                }
                if broken || flags.contains(epoll::EventFlags::OUT) {
                    src.writable.set(true);
                    if let Some(w) = src.writer.take() {
                        wake.push(w);
                    }
                }
            }
        }
        drop(events);
        for w in wake.drain(..) {
            w.wake();
        }
        self.wake.set(wake);
    }
}

/// Runs `future` on the calling thread, with the reactor the connections of
/// [`Socket::new`] register with, until it completes.
pub(crate) fn block_on<T>(future: impl Future<Output = T>) -> io::Result<T> {
    let reactor = Rc::new(Reactor::new()?);
    let previous = REACTOR.with(|r| r.replace(Some(reactor.clone())));
    struct Restore(Option<Rc<Reactor>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            REACTOR.with(|r| *r.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);

    let notify = reactor.notify.clone();
    let waker = Waker::from(notify.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    notify.woken.store(true, Ordering::SeqCst);
    loop {
        // Polled only when woken: an event nobody waits for (a writable edge, most
        // often) costs no poll of the executor.
        if notify.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(t) = future.as_mut().poll(&mut cx) {
                return Ok(t);
            }
        }
        // Sleep unless a wake-up came while polling; one that comes from now on (from
        // another thread) writes the eventfd.
        notify.sleeping.store(true, Ordering::SeqCst);
        let block = !notify.woken.load(Ordering::SeqCst);
        reactor.wait(block);
    }
}

/// A TCP stream registered with the broker thread's reactor (see the module docs).
pub(crate) struct Socket {
    source: Rc<Source>,
    stream: TcpStream,
}

impl Socket {
    /// Registers `stream` (non-blocking) with the reactor of the [`block_on`] running on
    /// this thread.
    pub(crate) fn new(stream: TcpStream) -> io::Result<Socket> {
        let reactor = REACTOR
            .with(|r| r.borrow().clone())
            .ok_or_else(|| io::Error::other("no broker reactor on this thread"))?;
        stream.set_nonblocking(true)?;
        let mut sources = reactor.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let source = Rc::new(Source {
            key: entry.key(),
            readable: Cell::new(false),
            writable: Cell::new(true),
            reader: Cell::new(None),
            writer: Cell::new(None),
        });
        epoll::add(
            &reactor.epoll,
            &stream,
            epoll::EventData::new_u64(source.key as u64),
            epoll::EventFlags::IN
                | epoll::EventFlags::OUT
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ET,
        )?;
        entry.insert(source.clone());
        Ok(Socket { source, stream })
    }

    /// The stream, for reads and writes; report their outcome with [`Socket::read_done`]
    /// and [`Socket::write_blocked`].
    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether a read may find data; if not, the task is woken when it may.
    pub(crate) fn poll_readable(&self, cx: &Context<'_>) -> Poll<()> {
        if self.source.readable.get() {
            return Poll::Ready(());
        }
        park(&self.source.reader, cx);
        Poll::Pending
    }

    /// Whether a write may be taken; if not, the task is woken when it may.
    pub(crate) fn poll_writable(&self, cx: &Context<'_>) -> Poll<()> {
        if self.source.writable.get() {
            return Poll::Ready(());
        }
        park(&self.source.writer, cx);
        Poll::Pending
    }

    /// A read gave `got` bytes of `asked` (or none: `EAGAIN`): fewer than asked means the
    /// socket is drained until its next edge.
    pub(crate) fn read_done(&self, got: usize, asked: usize) {
        if got < asked {
            self.source.readable.set(false);
        }
    }

    /// A write returned `EAGAIN`: not writable until the next edge.
    pub(crate) fn write_blocked(&self) {
        self.source.writable.set(false);
    }
}

fn park(slot: &Cell<Option<Waker>>, cx: &Context<'_>) {
    let w = slot.take();
    match w {
        Some(w) if w.will_wake(cx.waker()) => slot.set(Some(w)),
        _ => slot.set(Some(cx.waker().clone())),
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = REACTOR.try_with(|r| {
            if let Some(reactor) = r.borrow().as_ref() {
                let _ = epoll::delete(&reactor.epoll, self.stream.as_fd());
                let mut sources = reactor.sources.borrow_mut();
                if sources
                    .get(self.source.key)
                    .is_some_and(|s| Rc::ptr_eq(s, &self.source))
                {
                    sources.remove(self.source.key);
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic with its location is the report.
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::task::Poll;
    use std::time::Duration;

    use super::{Socket, block_on};

    /// Runs `f` on a thread of its own and fails if it takes longer than 10 s.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the reactor did not finish within 10 s")
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_sleep() {
        bounded(|| {
            let (tx, rx) = async_channel::bounded::<u32>(1);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let _ = tx.send_blocking(7);
            });
            let got = block_on(async move { rx.recv().await }).unwrap();
            assert_eq!(got.ok(), Some(7));
        });
    }

    /// Reads until `want` bytes came, through the socket's readiness only.
    async fn read_all(s: &Socket, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        std::future::poll_fn(|cx| {
            loop {
                if got.len() >= want {
                    return Poll::Ready(());
                }
                if s.poll_readable(cx).is_pending() {
                    return Poll::Pending;
                }
                match (&mut s.get_ref()).read(&mut buf) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(n) => {
                        s.read_done(n, buf.len());
                        got.extend_from_slice(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        s.read_done(0, buf.len())
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await;
        got
    }

    #[test]
    fn data_after_a_short_read_raises_a_new_edge_and_a_hang_up_wakes_the_reader() {
        bounded(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                for chunk in [&b"one"[..], b"two", b"three"] {
                    // Each arrives after the reader drained the last (a short read).
                    std::thread::sleep(Duration::from_millis(30));
                    c.write_all(chunk).unwrap();
                }
                std::thread::sleep(Duration::from_millis(30));
                drop(c);
            });
            let (stream, _) = listener.accept().unwrap();
            let (all, rest) = block_on(async move {
                let s = Socket::new(stream).unwrap();
                let all = read_all(&s, 11).await;
                // Then the hang-up: a read returns 0.
                let rest = read_all(&s, usize::MAX).await;
                (all, rest)
            })
            .unwrap();
            writer.join().unwrap();
            assert_eq!(all, b"onetwothree");
            assert!(rest.is_empty());
        });
    }

    #[test]
    fn a_socket_outside_the_broker_thread_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert!(Socket::new(stream).is_err());
    }
}
