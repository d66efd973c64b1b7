//! One HTTP connection: requests read into one buffer that grows with what arrives
//! (within the broker's `--max-partial` budget), answered in order and kept alive
//! between them; streams and long documents written as they are made.
//!
//! Time limits: the first byte of a request within `idle_timeout` of the last answer
//! (else the connection just closes), the whole request within `--partial-timeout` of
//! its first byte (else 408), every write within `write_timeout` (else the connection
//! is dropped).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Instant;

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use super::answer::{self, Answer, HttpError};
use super::parse::{self, ChunkError, Framing, Head, Method, Query};
use super::routes::{self, Outcome, Request};
use super::{Edge, RequestSlot};

/// Bytes read per call while a head arrives.
const HEAD_STEP: usize = 8 * 1024;
/// Bytes read per call while a body arrives, at most.
const BODY_STEP: usize = 64 * 1024;

/// How a request ended for its connection.
enum Next {
    /// Answered; the next request may follow.
    KeepAlive,
    /// Answered with `Connection: close` (or a stream ended): close after a linger.
    Close,
    /// The peer went away or stopped reading: close at once.
    Gone,
}

/// Why reading stopped.
enum ReadEnd {
    /// The deadline passed.
    Timeout,
    /// The peer closed, or the socket failed.
    Closed,
}

struct Conn {
    edge: Rc<Edge>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    /// Bytes read and not used yet: the head being parsed, then the body, then perhaps
    /// the next request.
    buf: Vec<u8>,
    /// Bytes of `--max-partial` this connection holds.
    charged: usize,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.edge
            .shared
            .release_partial(std::mem::take(&mut self.charged));
        self.edge.conns.set(self.edge.conns.get() - 1);
    }
}

/// Serves one connection (counted in `edge.conns` by the caller) until it closes.
pub(super) async fn serve(edge: Rc<Edge>, stream: Async<TcpStream>, peer: SocketAddr) {
    let mut c = Conn {
        edge,
        stream,
        peer,
        buf: Vec::new(),
        charged: 0,
    };
    if c.run().await {
        c.buf = Vec::new();
        c.settle_budget(0);
        crate::broker::linger(&c.stream).await;
    }
}

impl Conn {
    /// Serves requests until the connection ends; `true` when it should linger (the
    /// last answer must not be lost to a reset).
    async fn run(&mut self) -> bool {
        loop {
            if self.buf.is_empty() {
                let idle = Instant::now() + self.edge.cfg.idle_timeout;
                if self.readable_by(idle).await.is_err() {
                    return false;
                }
            }
            let deadline = Instant::now() + self.edge.partial_timeout;
            let head = loop {
                match parse::head(&self.buf, self.edge.cfg.head) {
                    Ok(Some((head, len))) => {
                        self.buf.drain(..len);
                        self.release_if_empty();
                        break head;
                    }
                    Ok(None) => {}
                    Err(e) => return self.refuse(&e).await,
                }
                // `parse::head` refuses a head that grows past its limit.
                match self.read_more(HEAD_STEP, deadline).await {
                    Ok(()) => {}
                    Err(ReadEnd::Closed) => return false,
                    Err(ReadEnd::Timeout) => return self.refuse(&timeout(&self.edge)).await,
                }
            };
            self.edge.counts.borrow_mut().requests += 1;
            let next = self.request(head, deadline).await;
            self.settle_budget(self.buf.capacity());
            self.release_if_empty();
            match next {
                Next::KeepAlive => {}
                Next::Close => return true,
                Next::Gone => return false,
            }
        }
    }

    /// Reads the body of `head`, answers it, and says what becomes of the connection.
    async fn request(&mut self, head: Head, deadline: Instant) -> Next {
        let (path, query) = head
            .target
            .split_once('?')
            .unwrap_or((head.target.as_str(), ""));
        let query = match Query::parse(query) {
            Ok(q) => q,
            Err(e) => return self.answer_error(&e, &head).await,
        };
        let limit = routes::body_limit(&self.edge, head.method, path);
        let body = match head.body {
            Framing::None => Vec::new(),
            Framing::Length(n) if n > limit as u64 => {
                return self.too_large(&head, limit).await;
            }
            Framing::Length(n) => {
                // Reserved whole in --max-partial before it is read, so that whoever
                // holds a reservation can always finish; then read as it arrives.
                let n = n as usize;
                if !self.reserve_to(n.max(self.buf.capacity()), deadline).await {
                    let e = timeout(&self.edge);
                    return self.answer_error(&e, &head).await;
                }
                if head.expect_continue && !self.go_ahead().await {
                    return Next::Gone;
                }
                while self.buf.len() < n {
                    let step = (n - self.buf.len()).min(BODY_STEP);
                    match self.read_more(step, deadline).await {
                        Ok(()) => {}
                        Err(ReadEnd::Closed) => return Next::Gone,
                        Err(ReadEnd::Timeout) => {
                            let e = timeout(&self.edge);
                            return self.answer_error(&e, &head).await;
                        }
                    }
                }
                let rest = self.buf.split_off(n);
                std::mem::replace(&mut self.buf, rest)
            }
            Framing::Chunked => {
                // Its length is unknown: the most it may be is reserved.
                if !self.reserve_to(limit + BODY_STEP, deadline).await {
                    let e = timeout(&self.edge);
                    return self.answer_error(&e, &head).await;
                }
                if head.expect_continue && !self.go_ahead().await {
                    return Next::Gone;
                }
                match self.read_chunked(limit, deadline).await {
                    Ok(body) => body,
                    Err(Some(e)) if e.status == 413 => return self.too_large(&head, limit).await,
                    Err(Some(e)) => return self.answer_error(&e, &head).await,
                    Err(None) => return Next::Gone,
                }
            }
        };
        let Some(slot) = RequestSlot::take(&self.edge) else {
            let e = HttpError::new(
                503,
                "overloaded",
                format!(
                    "{} requests are being answered, the limit (--http-max-requests); retry shortly",
                    self.edge.cfg.max_requests
                ),
            );
            return self.answer_error(&e, &head).await;
        };
        let head_only = head.method == Method::Head;
        let req = Request {
            head: &head,
            path,
            query: &query,
            body,
            peer: self.peer,
        };
        let outcome = routes::handle(&self.edge, req);
        let close = head.close;
        match outcome {
            Outcome::Answer(a) => self.answer(&a, close, head_only).await,
            Outcome::Wait(w) => {
                let a = w.wait(&self.edge).await;
                self.answer(&a, close, head_only).await
            }
            Outcome::Reply(w) => {
                let a = w.wait().await;
                self.answer(&a, close, head_only).await
            }
            Outcome::Stream(s) => {
                let _slot = slot;
                if self.write_all(&s.head()).await.is_err() || head_only {
                    return Next::Gone;
                }
                self.stream(s).await
            }
            Outcome::Document(mut d) => {
                let _slot = slot;
                if self.write_all(&d.head()).await.is_err() || head_only {
                    return Next::Gone;
                }
                let mut out = Vec::new();
                while d.next(&self.edge, &mut out) {
                    if self.write_all(&out).await.is_err() {
                        return Next::Gone;
                    }
                    out.clear();
                    // Built in slices: others run between them.
                    futures_lite::future::yield_now().await;
                }
                out.extend_from_slice(answer::LAST_CHUNK);
                if self.write_all(&out).await.is_err() {
                    return Next::Gone;
                }
                Next::Close
            }
        }
    }

    /// Writes a stream's events as chunks until it ends or the client goes away.
    async fn stream(&mut self, mut s: super::stream::Stream) -> Next {
        let mut out = Vec::new();
        loop {
            out.clear();
            let last =
                futures_lite::future::poll_fn(|cx| s.poll_chunk(cx, &self.stream, &mut out)).await;
            match last {
                None => return Next::Gone,
                Some(last) => {
                    if last {
                        out.extend_from_slice(answer::LAST_CHUNK);
                    }
                    let n = out.len();
                    if self.write_all(&out).await.is_err() {
                        return Next::Gone;
                    }
                    s.sent(n);
                    if last {
                        return Next::Close;
                    }
                }
            }
        }
    }

    /// Reads a chunked body of at most `limit` bytes. `Err(None)`: the peer went away.
    async fn read_chunked(
        &mut self,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, Option<HttpError>> {
        let mut dec = parse::Chunked::default();
        let mut body = Vec::new();
        loop {
            let used = dec.feed(&self.buf, &mut body, limit).map_err(|e| {
                Some(match e {
                    ChunkError::TooLarge => HttpError::new(413, "payload_too_large", ""),
                    ChunkError::Bad(m) => HttpError::new(400, "bad_request", m),
                })
            })?;
            self.buf.drain(..used);
            if dec.done() {
                return Ok(body);
            }
            match self.read_more(BODY_STEP, deadline).await {
                Ok(()) => {}
                Err(ReadEnd::Closed) => return Err(None),
                Err(ReadEnd::Timeout) => return Err(Some(timeout(&self.edge))),
            }
        }
    }

    /// Answers `Expect: 100-continue`; `false` when the peer is gone.
    async fn go_ahead(&mut self) -> bool {
        self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_ok()
    }

    /// Refuses a body over `limit` before reading it, and closes: a client waiting for
    /// `100 Continue` never sends it, one that sends anyway is drained for a moment.
    async fn too_large(&mut self, head: &Head, limit: usize) -> Next {
        let e = HttpError::new(
            413,
            "payload_too_large",
            if limit == 0 {
                "this route takes no body".to_string()
            } else {
                format!(
                    "the body is over the limit of {limit} bytes for this route (--max-payload)"
                )
            },
        );
        self.edge.count_error(e.code);
        let head_only = head.method == Method::Head;
        let _ = self
            .write_all(&Answer::error(&e).to_bytes(true, head_only))
            .await;
        Next::Close
    }

    /// Answers a request that cannot be served (and closes when its body may still be
    /// on the way).
    async fn answer_error(&mut self, e: &HttpError, head: &Head) -> Next {
        self.edge.count_error(e.code);
        // The body was not read (or not all of it): the next request cannot be found.
        let close = head.close || head.body != Framing::None;
        let a = Answer::error(e);
        if close {
            let _ = self
                .write_all(&a.to_bytes(true, head.method == Method::Head))
                .await;
            return Next::Close;
        }
        self.answer(&a, false, head.method == Method::Head).await
    }

    /// Refuses what could not be parsed and closes: `true` to linger.
    async fn refuse(&mut self, e: &HttpError) -> bool {
        self.edge.count_error(e.code);
        log::debug!("http: {}: {} {}", self.peer, e.status, e.message);
        let _ = self
            .write_all(&Answer::error(e).to_bytes(true, false))
            .await;
        true
    }

    async fn answer(&mut self, a: &Answer, close: bool, head_only: bool) -> Next {
        match self.write_all(&a.to_bytes(close, head_only)).await {
            Ok(()) if close => Next::Close,
            Ok(()) => Next::KeepAlive,
            Err(()) => Next::Gone,
        }
    }

    /// Waits until the socket has something to read (or the peer closed), by `deadline`.
    async fn readable_by(&self, deadline: Instant) -> Result<(), ReadEnd> {
        async { self.stream.readable().await.map_err(|_| ReadEnd::Closed) }
            .or(async {
                Timer::at(deadline).await;
                Err(ReadEnd::Timeout)
            })
            .await
    }

    /// Makes sure the connection holds `total` bytes of `--max-partial`, waiting for
    /// room until `deadline`; `false` if it passed.
    async fn reserve_to(&mut self, total: usize, deadline: Instant) -> bool {
        if total <= self.charged {
            return true;
        }
        self.reserve(total - self.charged, deadline).await
    }

    /// Takes `bytes` more of the `--max-partial` budget, waiting for room until
    /// `deadline`; `false` if it passed.
    async fn reserve(&mut self, bytes: usize, deadline: Instant) -> bool {
        let shared = self.edge.shared.clone();
        let got = async {
            futures_lite::future::poll_fn(|cx| {
                if shared.reserve_partial(bytes, cx) {
                    std::task::Poll::Ready(true)
                } else {
                    std::task::Poll::Pending
                }
            })
            .await
        }
        .or(async {
            Timer::at(deadline).await;
            false
        })
        .await;
        if got {
            self.charged += bytes;
        }
        got
    }

    /// Frees the buffer, and its part of the budget, when nothing waits in it.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
            self.settle_budget(0);
        }
    }

    /// Gives back what the connection holds of the budget beyond `keep` bytes.
    fn settle_budget(&mut self, keep: usize) {
        if self.charged > keep {
            self.edge.shared.release_partial(self.charged - keep);
            self.charged = keep;
        }
    }

    /// Reads up to `step` more bytes into `buf` by `deadline`. What the buffer takes is
    /// counted in `--max-partial` without waiting: a head is bounded by `max_head` (so a
    /// full budget never keeps `/healthz` or `/api/stats` from being asked), and a body
    /// was reserved whole before it is read ([`Conn::reserve_to`]).
    async fn read_more(&mut self, step: usize, deadline: Instant) -> Result<(), ReadEnd> {
        let old = self.buf.len();
        let want = old + step;
        self.buf.resize(want, 0);
        // What the allocator gave counts, not just what was asked for.
        if self.buf.capacity() > self.charged {
            self.edge
                .shared
                .force_partial(self.buf.capacity() - self.charged);
            self.charged = self.buf.capacity();
        }
        let stream = &self.stream;
        let buf = &mut self.buf[old..];
        let r = async {
            let mut s = stream;
            s.read(buf).await.map_err(|_| ReadEnd::Closed)
        }
        .or(async {
            Timer::at(deadline).await;
            Err(ReadEnd::Timeout)
        })
        .await;
        let n = match r {
            Ok(0) => Err(ReadEnd::Closed),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        };
        self.buf.truncate(old + *n.as_ref().unwrap_or(&0));
        n.map(|_| ())
    }

    /// Writes all of `bytes` within the write timeout; `Err` when the peer is gone or
    /// stopped reading.
    async fn write_all(&self, bytes: &[u8]) -> Result<(), ()> {
        let deadline = Instant::now() + self.edge.cfg.write_timeout;
        let stream = &self.stream;
        async {
            let mut s = stream;
            s.write_all(bytes).await.map_err(|_: io::Error| ())
        }
        .or(async {
            Timer::at(deadline).await;
            Err(())
        })
        .await
    }
}

/// 408 for a request that did not arrive whole in time.
fn timeout(edge: &Edge) -> HttpError {
    HttpError::new(
        408,
        "request_timeout",
        format!(
            "the request did not arrive whole within {:.0} s of its first byte (--partial-timeout)",
            edge.partial_timeout.as_secs_f64()
        ),
    )
}
