//! One connection's IO: move bytes between the socket and its [`Session`].
//!
//! Reads go into the broker's one shared read buffer and writes are assembled in its one
//! shared write buffer, so an idle connection holds no buffers at all: only a partial
//! frame (`inbuf`) or bytes the socket would not take yet (`pending`) are kept per
//! connection, and those are freed once empty.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::task::{Context, Poll};

use async_io::{Async, Timer};
use mote_sdk::ErrorCode;

use crate::broker::reactor::Socket;
use crate::broker::{LINGER, Shared};
use crate::engine::ConnId;
use crate::session::Session;

/// Bytes read per `read` call, at least (the shared buffer grows for larger frames).
pub(crate) const READ_CHUNK: usize = 128 * 1024;
/// Stop adding deliveries to a write once it holds this many bytes.
const WRITE_HIGH: usize = 128 * 1024;
/// Stop reading while this many bytes wait for the socket to take them.
const PENDING_HIGH: usize = 256 * 1024;
/// Bytes read per call while `--max-partial` has no room for a whole read.
const SMALL_READ: usize = 4 * 1024;
/// Frames (or records) larger than this are reserved whole in `--max-partial` before
/// they are read; smaller ones are read along with what follows them.
const SMALL_FRAME: usize = 64 * 1024;
/// Read/write rounds before a busy connection yields to the others.
const ROUNDS: u32 = 16;

struct ConnIo {
    session: Session,
    /// An incomplete frame or record carried over to the next read: `inbuf[..kept]`.
    /// It grows with what arrives (not to the size the frame announces), and all of it
    /// counts toward `--max-partial`: `charged` bytes of the budget are this buffer's.
    inbuf: Vec<u8>,
    kept: usize,
    charged: usize,
    /// Size of that frame (or record) when known.
    need: Option<usize>,
    /// Encoded bytes the socket has not taken yet; `pending[written..]` is still to go.
    pending: Vec<u8>,
    written: usize,
    closing: Option<ErrorCode>,
}

enum End {
    /// The peer went away or the socket failed.
    Gone,
    /// We close after telling the peer why.
    Close,
}

/// One connection's task, written out by hand rather than as an `async fn`: its size is
/// what every idle connection costs, and the state of the rare lingering close is boxed.
pub(crate) struct ConnTask {
    shared: Rc<Shared>,
    stream: Socket,
    io: ConnIo,
    /// Set while draining the peer after our last frame (see [`linger`]).
    linger: Option<Box<Linger>>,
}

struct Linger {
    deadline: Timer,
    buf: Vec<u8>,
}

impl ConnTask {
    /// The task of connection `id`, or `None` (and the connection dropped) if the system
    /// has no randomness for the handshake or the socket cannot join the broker thread's
    /// reactor.
    pub(crate) fn new(
        shared: Rc<Shared>,
        stream: Async<TcpStream>,
        id: ConnId,
    ) -> Option<ConnTask> {
        let max_frame = shared.engine.borrow().limits().max_frame();
        let mut nonce = [0u8; 32];
        let stream = match mote_sdk::secure::random(&mut nonce)
            .map_err(|e| format!("no randomness for the handshake: {e}"))
            .and_then(|()| {
                stream
                    .into_inner()
                    .and_then(Socket::new)
                    .map_err(|e| format!("cannot register the socket: {e}"))
            }) {
            Ok(s) => s,
            Err(e) => {
                log::error!("conn {}: {e}", id.index());
                shared.engine.borrow_mut().handle_disconnect(id);
                return None;
            }
        };
        let auth = shared.auth_now();
        Some(ConnTask {
            io: ConnIo {
                session: Session::new(id, max_frame, auth, nonce),
                inbuf: Vec::new(),
                kept: 0,
                charged: 0,
                need: None,
                pending: Vec::new(),
                written: 0,
                closing: None,
            },
            shared,
            stream,
            linger: None,
        })
    }
}

impl std::future::Future for ConnTask {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.linger.is_none() {
            let end = match this.io.poll(cx, &this.shared, &this.stream) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(end) => end,
            };
            let id = this.io.session.conn();
            this.shared.forget_waker(id);
            this.shared.engine.borrow_mut().handle_disconnect(id);
            this.io.inbuf = Vec::new();
            this.shared
                .release_partial(std::mem::take(&mut this.io.charged));
            this.io.pending = Vec::new();
            if let End::Gone = end {
                return Poll::Ready(());
            }
            let _ = this.stream.get_ref().shutdown(Shutdown::Write);
            this.linger = Some(Box::new(Linger {
                deadline: Timer::after(LINGER),
                buf: vec![0; 4096],
            }));
        }
        let Some(l) = this.linger.as_mut() else {
            return Poll::Ready(());
        };
        if std::pin::Pin::new(&mut l.deadline).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            match read_some(cx, &this.stream, &mut l.buf) {
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ConnIo {
    fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared, stream: &Socket) -> Poll<End> {
        let id = self.session.conn();
        shared.set_waker(id, cx.waker());
        let mut scratch = shared.scratch.borrow_mut();
        let scratch = &mut *scratch;
        let out = &mut scratch.write;
        out.clear();

        let result = self.pump(cx, shared, stream, &mut scratch.read, out);

        // Keep what the socket did not take, after what was already waiting; an idle
        // connection holds no buffer.
        if !out.is_empty() {
            self.session.seal(out);
            self.pending.extend_from_slice(out);
            out.clear();
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
        if self.kept == 0 && self.inbuf.capacity() > 0 {
            self.inbuf = Vec::new();
            shared.release_partial(std::mem::take(&mut self.charged));
        }
        if scratch.read.len() > READ_CHUNK {
            scratch.read.truncate(READ_CHUNK);
            scratch.read.shrink_to_fit();
        }
        result
    }

    fn pump(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        stream: &Socket,
        rbuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Poll<End> {
        let id = self.session.conn();
        for _ in 0..ROUNDS {
            let mut progress = false;
            if self.session.holds() {
                // Confirmations waiting for the log's sync (`--sync always`).
                let synced = shared.engine.borrow().log_synced();
                self.session.release(synced, out);
                if self.session.holds() {
                    shared.wait_store(cx);
                }
            }
            if self.closing.is_none() {
                let reason = shared.engine.borrow().close_reason(id);
                if let Some(code) = reason {
                    // Counted by the engine when it decided to close.
                    self.session.emit_close(out, code, close_message(code));
                    self.closing = Some(code);
                }
            }

            // Read while there is room to queue replies.
            let queued = self.pending.len() - self.written + out.len();
            if self.closing.is_none() && queued < PENDING_HIGH {
                match self.read(cx, shared, stream, rbuf, out) {
                    Poll::Ready(Ok(true)) => progress = true,
                    Poll::Ready(Ok(false)) => return Poll::Ready(End::Gone),
                    Poll::Ready(Err(())) => {}
                    Poll::Pending => {}
                }
            }

            // Write what waits, then replies, then deliveries, until the socket pushes back.
            match self.write(cx, shared, stream, out) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(())) => return Poll::Ready(End::Gone),
                Poll::Pending => {}
            }

            if self.closing.is_some() {
                // Best effort: what the socket would not take of the last words is dropped.
                return Poll::Ready(End::Close);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Still busy: let the other connections run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes until the socket would block or nothing is left: first the bytes already
    /// waiting in `pending`, then `out` (replies), then deliveries encoded into `out`.
    /// Whatever the socket does not take moves to `pending` once, never back.
    /// `Ready(Ok(wrote))`: done for now; `Ready(Err(()))`: the socket failed;
    /// `Pending`: the socket is full and will wake us.
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        stream: &Socket,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, ()>> {
        let id = self.session.conn();
        let mut wrote = false;
        loop {
            let from_pending = self.written < self.pending.len();
            if !from_pending && out.is_empty() && self.closing.is_none() {
                let mut engine = shared.engine.borrow_mut();
                self.session.poll_output(&mut engine, out, WRITE_HIGH);
                // Deliveries may have asked for reads from disk.
                shared.wake_store_if_needed(&mut engine);
            }
            let bytes = if from_pending {
                &self.pending[self.written..]
            } else if out.is_empty() {
                return Poll::Ready(Ok(wrote));
            } else {
                self.session.seal(out);
                &out[..]
            };
            if stream.poll_writable(cx).is_pending() {
                if !from_pending {
                    self.pending.extend_from_slice(out);
                    out.clear();
                }
                return Poll::Pending;
            }
            match (&mut stream.get_ref()).write(bytes) {
                Ok(n) => {
                    shared.engine.borrow_mut().handle_sent(id, n);
                    wrote = true;
                    if from_pending {
                        self.written += n;
                        if self.written == self.pending.len() {
                            // Reused within this poll; freed at its end if still empty.
                            self.written = 0;
                            self.pending.clear();
                        }
                    } else {
                        if n < out.len() {
                            self.pending.extend_from_slice(&out[n..]);
                        }
                        out.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Not writable until the socket's next edge: the check above waits.
                    stream.write_blocked();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Poll::Ready(Err(())),
            }
        }
    }

    /// One read and the handling of every whole frame (or record) it completes. Reads
    /// go into the shared buffer, except while a partial frame or record is kept: then
    /// straight into the connection's own buffer behind it, so a record spanning several
    /// reads is never copied back and forth. `Ok(true)`: progress; `Ok(false)`: the peer
    /// closed or failed; `Err(())`: the session asked to close (its error frame is in
    /// `out`); `Pending`: nothing to read.
    fn read(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        stream: &Socket,
        rbuf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Poll<Result<bool, ()>> {
        // A disk slower than the publishers holds them back (until the writer catches up)
        // rather than the broker's memory growing.
        if shared.engine.borrow().log_congested() {
            shared.wait_store(cx);
            return Poll::Pending;
        }
        let own = self.kept > 0;
        let read = if own {
            let frame_end = self
                .need
                .filter(|&n| n > self.kept)
                .unwrap_or(self.kept + SMALL_READ);
            let end = if frame_end - self.kept > SMALL_FRAME {
                // A large frame is reserved whole in --max-partial before a byte more
                // is read, so whoever holds a reservation can always finish; past the
                // budget this connection is not read until room frees (or its
                // --partial-timeout closes it). The buffer grows with what arrives.
                if frame_end > self.charged {
                    if !shared.reserve_partial(frame_end - self.charged, cx) {
                        return Poll::Pending;
                    }
                    self.charged = frame_end;
                }
                frame_end.min(self.kept + READ_CHUNK)
            } else if shared.partial_room() >= READ_CHUNK {
                // The usual case: a small frame cut by the last read, more behind it.
                self.kept + READ_CHUNK
            } else {
                frame_end
            };
            if self.inbuf.len() < end {
                self.inbuf.resize(end, 0);
            }
            if end > self.charged {
                shared.force_partial(end - self.charged);
                self.charged = end;
            }
            read_some(cx, stream, &mut self.inbuf[self.kept..end])
        } else {
            if rbuf.len() < READ_CHUNK {
                rbuf.resize(READ_CHUNK, 0);
            }
            // What a read leaves of a frame is kept whatever the budget says: while the
            // budget has no room for a whole read, reads are small, so that is little
            // per connection.
            let size = if shared.partial_room() < rbuf.len() {
                SMALL_READ
            } else {
                rbuf.len()
            };
            read_some(cx, stream, &mut rbuf[..size])
        };
        let n = match read {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(Ok(false)),
            Poll::Ready(Some(n)) => n,
        };
        let filled = if own { self.kept + n } else { n };
        let id = self.session.conn();
        let (mono, wall) = (shared.mono_ms(), shared.wall_ms());
        let mut engine = shared.engine.borrow_mut();
        engine.handle_received(id, mono, n);
        let data = if own {
            &mut self.inbuf[..filled]
        } else {
            &mut rbuf[..filled]
        };
        let r = self.session.handle_input(&mut engine, wall, data, out);
        if let Ok(p) = &r {
            // A frame must arrive whole within --partial-timeout of its first byte.
            let rest = filled - p.consumed;
            if rest == 0 {
                if self.kept > 0 {
                    engine.handle_partial(id, None);
                }
            } else if self.kept == 0 || p.consumed > 0 {
                engine.handle_partial(id, Some(mono));
            }
        }
        shared.wake_others(&mut engine, Some(id));
        drop(engine);
        let p = match r {
            Ok(p) => p,
            Err(code) => {
                self.closing = Some(code);
                return Poll::Ready(Err(()));
            }
        };
        let rest = filled - p.consumed;
        if own {
            self.inbuf.copy_within(p.consumed..filled, 0);
        } else if rest > 0 {
            // Counted toward --max-partial; what a read leaves is bounded by the read,
            // which is small while the budget has no room.
            if self.inbuf.len() < rest {
                self.inbuf.resize(rest, 0);
            }
            if rest > self.charged {
                shared.force_partial(rest - self.charged);
                self.charged = rest;
            }
            self.inbuf[..rest].copy_from_slice(&rbuf[p.consumed..filled]);
        }
        self.kept = rest;
        self.need = p.need;
        Poll::Ready(Ok(true))
    }
}

/// One non-blocking read: `Some(n)` bytes, `None` when the peer closed or the socket
/// failed, `Pending` (waker registered) when there is nothing to read. A socket the
/// reactor knows to be drained is not read at all.
fn read_some(cx: &mut Context<'_>, stream: &Socket, buf: &mut [u8]) -> Poll<Option<usize>> {
    loop {
        if stream.poll_readable(cx).is_pending() {
            return Poll::Pending;
        }
        match (&mut stream.get_ref()).read(buf) {
            Ok(0) => return Poll::Ready(None),
            Ok(n) => {
                stream.read_done(n, buf.len());
                return Poll::Ready(Some(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.read_done(0, buf.len()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Poll::Ready(None),
        }
    }
}

/// What a connection closed by the broker is told.
pub(crate) fn close_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::KEEPALIVE_TIMEOUT => {
            "no data for three keepalive periods; send a ping at least every keepalive"
        }
        ErrorCode::HANDSHAKE_TIMEOUT => {
            "the handshake (hello, and the token proof if required) did not finish in time"
        }
        ErrorCode::SHUTTING_DOWN => "the broker is shutting down",
        ErrorCode::CONNECTION_LIMIT => {
            "the broker holds as many connections as it may (--max-connections); try later"
        }
        ErrorCode::FRAME_TIMEOUT => {
            "a frame did not arrive whole within --partial-timeout of its first byte"
        }
        _ => "connection closed by the broker",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_connection_task_is_small() {
        // Every idle connection holds one of these (plus the runtime's task header, its
        // socket registration and its engine entry): keep it well under the 1 KiB budget.
        let size = std::mem::size_of::<super::ConnTask>();
        assert!(size <= 224, "{size}");
    }
}
