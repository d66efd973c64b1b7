//! HTTP streams (NDJSON, SSE, raw): each is an engine connection with one subscription
//! (or a consumer group membership), whose deliveries its connection task turns into
//! chunks as the socket takes them, like a TCP subscriber: a stream that falls behind
//! the ring is told what it missed, never buffered without bound. A stream ends when its
//! client closes the socket (noticed at once), its `limit` or `timeout` is reached, the
//! broker shuts down, or a write does not finish within the write timeout.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::{Async, Timer};
use mote_sdk::Start;

use super::Edge;
use super::answer::{self, HttpError};
use super::render::{Event, Format};
use super::routes::refusal;
use crate::engine::{ConnId, Delivery};

/// A chunk takes waiting events until it is this large.
const CHUNK_TARGET: usize = 64 * 1024;
/// What a client may send on a stream's connection before it is closed: a stream has
/// nothing to read.
const MAX_UNREAD: usize = 64 * 1024;

/// A stream's wish to join consumer group `name` (created with `settings` if new).
#[derive(Debug, Clone)]
pub(crate) struct GroupJoin {
    pub(crate) name: String,
    pub(crate) settings: crate::engine::GroupAsk,
}

/// What a stream is asked for.
pub(crate) struct Opening<'a> {
    pub(crate) filter: &'a str,
    pub(crate) from: Start,
    pub(crate) peer: SocketAddr,
    pub(crate) token: Option<String>,
    pub(crate) group: Option<GroupJoin>,
    pub(crate) format: Format,
    pub(crate) limit: Option<u64>,
    pub(crate) lifetime: Option<Duration>,
}

/// An open stream; dropping it ends its engine connection.
pub(crate) struct Stream {
    edge: Rc<Edge>,
    conn: ConnId,
    /// Its number, when it is a consumer group member (ack ids start with it).
    number: Option<u64>,
    format: Format,
    limit: Option<u64>,
    sent: u64,
    lifetime: Option<Pin<Box<Timer>>>,
    keepalive: Pin<Box<Timer>>,
    keepalive_every: Duration,
    /// Events of the next chunk, before they are framed.
    body: Vec<u8>,
    unread: usize,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(n) = self.number {
            self.edge.group_streams.borrow_mut().remove(&n);
        }
        let shared = &self.edge.shared;
        shared.forget_waker(self.conn);
        let mut engine = shared.engine.borrow_mut();
        engine.handle_disconnect(self.conn);
        shared.wake_others(&mut engine, None);
        self.edge.streams.set(self.edge.streams.get() - 1);
    }
}

impl Stream {
    /// Registers a stream with the engine, within `--http-max-streams`.
    pub(crate) fn open(edge: &Rc<Edge>, o: Opening<'_>) -> Result<Stream, HttpError> {
        if edge.streams.get() >= edge.cfg.max_streams {
            return Err(HttpError::new(
                503,
                "too_many_streams",
                format!(
                    "{} streams are open, the limit (--http-max-streams); retry later",
                    edge.cfg.max_streams
                ),
            ));
        }
        let shared = &edge.shared;
        let mut engine = shared.engine.borrow_mut();
        engine.advance_clock(shared.mono_ms());
        let conn =
            engine.handle_connect_http(shared.mono_ms(), Some(o.peer), "http", o.token.as_deref());
        let joined = match &o.group {
            Some(g) => {
                engine.handle_subscribe_group(conn, 1, o.filter, &g.name, o.from, g.settings)
            }
            None => engine.handle_subscribe(conn, 1, o.filter, o.from, &[]),
        };
        if let Err(e) = joined {
            engine.handle_disconnect(conn);
            return Err(refusal(&e));
        }
        shared.wake_others(&mut engine, None);
        drop(engine);
        edge.streams.set(edge.streams.get() + 1);
        let number = o.group.map(|_| {
            let n = edge.next_stream.get() + 1;
            edge.next_stream.set(n);
            let name = o.token.map(String::into_boxed_str);
            edge.group_streams.borrow_mut().insert(n, (conn, name));
            n
        });
        let every = edge.cfg.stream_keepalive.max(Duration::from_millis(1));
        Ok(Stream {
            edge: edge.clone(),
            conn,
            number,
            format: o.format,
            limit: o.limit,
            sent: 0,
            lifetime: o.lifetime.map(|d| Box::pin(Timer::after(d))),
            keepalive: Box::pin(Timer::after(every)),
            keepalive_every: every,
            body: Vec::new(),
            unread: 0,
        })
    }

    /// The response head.
    pub(crate) fn head(&self) -> Vec<u8> {
        answer::chunked_head(
            self.format.content_type(),
            &[
                ("Cache-Control", "no-cache".to_string()),
                ("X-Accel-Buffering", "no".to_string()),
            ],
        )
    }

    /// `n` bytes of the stream were written.
    pub(crate) fn sent(&self, n: usize) {
        self.edge
            .shared
            .engine
            .borrow_mut()
            .handle_sent(self.conn, n);
    }

    /// Appends the next chunk to `out`: `Ready(Some(last))` with what to write (`last`:
    /// the stream ends after it), `Ready(None)` when the client is gone, `Pending` until
    /// a delivery, a keepalive, the end of its lifetime or of the broker.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        socket: &Async<TcpStream>,
        out: &mut Vec<u8>,
    ) -> Poll<Option<bool>> {
        let shared = self.edge.shared.clone();
        shared.set_waker(self.conn, cx.waker());
        if self.client_gone(cx, socket) {
            return Poll::Ready(None);
        }
        self.body.clear();
        if shared.engine.borrow().close_reason(self.conn).is_some() {
            self.format.event(&Event::End, &mut self.body);
            answer::chunk(out, &self.body);
            return Poll::Ready(Some(true));
        }
        if let Some(t) = self.lifetime.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(true));
            }
        }
        let (format, number, limit) = (self.format, self.number, self.limit);
        let (body, sent) = (&mut self.body, &mut self.sent);
        // The stream's group was deleted: it ends.
        let mut gone = false;
        shared.engine.borrow_mut().poll_deliveries(self.conn, |d| {
            let ev = match d {
                Delivery::Message {
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                    ..
                } => Event::Message {
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                    ack: None,
                },
                Delivery::GroupMessage {
                    tag,
                    topic,
                    offset,
                    time_ms,
                    attempt,
                    key,
                    payload,
                    ..
                } => Event::Message {
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                    ack: Some((number.unwrap_or(0), tag, attempt)),
                },
                // A request: an HTTP stream cannot reply, it sees the message.
                Delivery::Asked {
                    group,
                    tag,
                    topic,
                    offset,
                    time_ms,
                    attempt,
                    key,
                    payload,
                    ..
                } => Event::Message {
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                    ack: group.then(|| (number.unwrap_or(0), tag, attempt)),
                },
                Delivery::Lag {
                    topic,
                    missed,
                    next,
                    ..
                } => Event::Lag {
                    topic,
                    missed,
                    next,
                },
                Delivery::GroupGone { group, .. } => {
                    gone = true;
                    Event::GroupGone { group }
                }
                Delivery::Removed {
                    topic,
                    unread,
                    next,
                    ..
                } => Event::Removed {
                    topic,
                    unread,
                    next,
                },
            };
            if matches!(ev, Event::Message { .. }) {
                *sent += 1;
            }
            format.event(&ev, body);
            body.len() < CHUNK_TARGET && limit.is_none_or(|l| *sent < l) && !gone
        });
        let done = limit.is_some_and(|l| self.sent >= l) || gone;
        if !self.body.is_empty() || done {
            answer::chunk(out, &self.body);
            self.keepalive.set(Timer::after(self.keepalive_every));
            return Poll::Ready(Some(done));
        }
        if self.keepalive.as_mut().poll(cx).is_ready() {
            self.format.keepalive(shared.wall_ms(), &mut self.body);
            answer::chunk(out, &self.body);
            self.keepalive.set(Timer::after(self.keepalive_every));
            return Poll::Ready(Some(false));
        }
        Poll::Pending
    }

    /// Whether the client closed its end (or sent more than a stream ever reads);
    /// registers for readability otherwise.
    fn client_gone(&mut self, cx: &mut Context<'_>, socket: &Async<TcpStream>) -> bool {
        let mut scratch = [0u8; 512];
        loop {
            match socket.poll_readable(cx) {
                Poll::Pending => return false,
                Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(())) => {}
            }
            match socket.get_ref().read(&mut scratch) {
                Ok(0) => return true,
                Ok(n) => {
                    self.unread += n;
                    if self.unread > MAX_UNREAD {
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

/// What `POST /ack` or `/nack` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Deliveries acked or nacked.
    pub(crate) done: usize,
    /// Ids that name no delivery in flight (settled, timed out, or their stream ended).
    pub(crate) unknown: Vec<String>,
    /// Ids of streams opened with another token.
    pub(crate) forbidden: Vec<String>,
}

/// Acks (`nack` none) or nacks (with that delay in ms) the group deliveries `ids`
/// (`<stream>.<tag>`) for the caller with `token`.
pub(crate) fn settle(
    edge: &Edge,
    ids: &[String],
    nack: Option<u64>,
    token: Option<&str>,
) -> Settled {
    let mut out = Settled::default();
    let groups = edge.group_streams.borrow();
    let shared = &edge.shared;
    let mut engine = shared.engine.borrow_mut();
    engine.advance_clock(shared.mono_ms());
    for id in ids {
        let parsed = id
            .split_once('.')
            .and_then(|(s, t)| Some((s.parse::<u64>().ok()?, t.parse::<u64>().ok()?)));
        let Some((stream, tag)) = parsed else {
            engine.count_error(mote_sdk::ErrorCode::UNKNOWN_DELIVERY);
            out.unknown.push(id.clone());
            continue;
        };
        let Some((conn, owner)) = groups.get(&stream) else {
            engine.count_error(mote_sdk::ErrorCode::UNKNOWN_DELIVERY);
            out.unknown.push(id.clone());
            continue;
        };
        if owner.as_deref() != token {
            engine.count_error(mote_sdk::ErrorCode::FORBIDDEN);
            out.forbidden.push(id.clone());
            continue;
        }
        let r = match nack {
            None => engine.handle_ack(*conn, 1, tag),
            Some(delay) => engine.handle_nack(*conn, 1, tag, delay),
        };
        match r {
            Ok(()) => out.done += 1,
            Err(_) => out.unknown.push(id.clone()),
        }
    }
    shared.wake_others(&mut engine, None);
    out
}
