//! The client's background connection: connect, handshake, re-subscribe, then read and
//! write until the connection ends; reconnect with backoff until the client is closed.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use crate::Start;
use crate::client::{
    Answer, BrokerInfo, Event, JOIN_WHAT, Message, Shared, State, Tx, subscribe_frame,
};
use crate::error::Error;
use crate::group::{Delivery, Group, GroupEvent};
use crate::link::Link;
use crate::secure::{Opener, Record, Sealer};
use crate::wire::{self, Decoded, Frame, Ping, Resume};

/// Read buffer size; grows for frames that do not fit.
const READ_BUF: usize = 64 * 1024;
/// Most fire-and-forget refusals remembered until the next flush.
const MAX_REFUSED: usize = 16;

/// What the client remembers of a subscription across connections.
struct LocalSub {
    tx: Tx,
    /// Where to start topics never delivered: the original `from`, or `Earliest` once
    /// the broker restarted (everything it holds since is new to us).
    from: Start,
    /// `Subscribed.seq` of the first confirmation on this broker.
    seq: Option<u64>,
    /// Next offset per topic delivered so far.
    positions: HashMap<Arc<str>, u64>,
    /// The topic delivered last and its next offset, not yet in `positions` (saves a
    /// hash per message).
    current: Option<(Arc<str>, u64)>,
}

impl LocalSub {
    fn settle(&mut self) {
        if let Some((t, next)) = self.current.take() {
            self.positions.insert(t, next);
        }
    }

    fn advance(&mut self, topic: &str, next: u64) -> Arc<str> {
        match &mut self.current {
            Some((t, n)) if **t == *topic => {
                *n = next;
                t.clone()
            }
            _ => {
                self.settle();
                let t: Arc<str> = match self.positions.get_key_value(topic) {
                    Some((k, _)) => k.clone(),
                    None => Arc::from(topic),
                };
                self.current = Some((t.clone(), next));
                t
            }
        }
    }

    /// `from` and `resume` for re-subscribing after a reconnect.
    fn resume_point(&mut self) -> (Start, Vec<(Arc<str>, u64)>) {
        self.settle();
        let Some(seq) = self.seq else {
            return (self.from, Vec::new());
        };
        let from = match self.from {
            Start::Latest | Start::Last(_) => Start::AfterSeq(seq),
            other => other,
        };
        let resume = self
            .positions
            .iter()
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        (from, resume)
    }
}

pub(crate) async fn run(shared: Arc<Shared>, first: async_channel::Sender<Result<(), Error>>) {
    let mut subs: HashMap<u32, LocalSub> = HashMap::new();
    let mut broker_id = None;
    let mut first = Some(first);
    let mut delay = shared.opts.reconnect_min;
    loop {
        if shared.lock().closed {
            break;
        }
        match crate::handshake::connect(&shared.opts).await {
            Ok(connected) => {
                let id = connected.broker_id;
                // Known before the caller gets the client: publishes check the limits, and
                // `is_connected` is true from the start.
                {
                    let mut st = shared.lock();
                    st.broker = Some(connected.info);
                    st.connected = true;
                }
                if first.is_some() {
                    shared.set_link(Link::Up);
                }
                if let Some(tx) = first.take() {
                    let _ = tx.try_send(Ok(()));
                }
                delay = shared.opts.reconnect_min;
                if broker_id.is_some_and(|b| b != id) {
                    log::info!(
                        "the broker restarted; resuming subscriptions from its earliest messages"
                    );
                    for s in subs.values_mut() {
                        s.positions.clear();
                        s.current = None;
                        s.seq = None;
                        s.from = Start::Earliest;
                    }
                }
                broker_id = Some(id);
                let r = session(&shared, connected, &mut subs).await;
                // Ok: the client closed, and the link goes straight to `Closed` below.
                disconnected(&shared, r.as_ref().err().map(ToString::to_string));
                if let Err(e) = r {
                    log::info!("connection to {} lost: {e}", shared.opts.addr);
                }
            }
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.try_send(Err(e));
                    return;
                }
                log::debug!("reconnect failed: {e}");
                let since = match shared.lock().link {
                    Link::Down { since, .. } => since,
                    _ => Instant::now(),
                };
                shared.set_link(Link::Down {
                    since,
                    reason: e.to_string(),
                });
            }
        }
        if shared.lock().closed {
            break;
        }
        let jitter = Duration::from_nanos(jitter_nanos() % (delay.as_nanos() as u64 / 4 + 1));
        let listener = shared.queued.listen();
        if !shared.lock().closed {
            async {
                Timer::after(delay + jitter).await;
            }
            .or(async {
                listener.await;
                // Woken by a publish: keep sleeping unless the client closed.
                while !shared.lock().closed {
                    Timer::after(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
        delay = (delay * 2).min(shared.opts.reconnect_max);
    }
    let mut st = shared.lock();
    for (_, p) in st.pending.drain() {
        p.tx.fail(Error::Closed);
    }
    for (_, s) in st.subs.drain() {
        if let Some(ack) = s.ack {
            let _ = ack.try_send(Err(Error::Closed));
        }
    }
    drop(st);
    shared.set_link(Link::Closed);
}

/// Cheap randomness for backoff jitter, so clients of a restarted broker spread out.
fn jitter_nanos() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(t ^ std::process::id().rotate_left(16))
}

/// Makes the local subscription table match the shared one.
fn sync_subs(st: &State, subs: &mut HashMap<u32, LocalSub>) {
    subs.retain(|id, _| st.subs.contains_key(id));
    for (id, s) in &st.subs {
        subs.entry(*id).or_insert_with(|| LocalSub {
            tx: s.tx.clone(),
            from: s.from,
            seq: None,
            positions: HashMap::new(),
            current: None,
        });
    }
}

/// An `Error` frame: answers the request it names, or ends the connection, or is kept for
/// the next flush. Returns where to tell of a subscription refused when it was made again
/// after a reconnect (the lock is not held across telling it).
fn handle_error(
    shared: &Shared,
    subs: &mut HashMap<u32, LocalSub>,
    e: &wire::ErrorFrame<'_>,
) -> io::Result<Option<Tx>> {
    let err = || Error::Broker {
        code: e.code,
        message: e.message.to_string(),
    };
    let mut st = shared.lock();
    if e.req != 0 {
        if let Some(p) = st.pending.remove(&e.req) {
            match &p.tx {
                Answer::Reply(_, topic) => {
                    p.tx.fail(crate::request::request_error(topic, e.code, e.message));
                }
                _ => p.tx.fail(err()),
            }
            return Ok(None);
        }
        if st.subs.get(&e.req).is_some_and(|s| s.ack.is_some()) {
            // A refused subscription: forget it before telling the caller, so
            // dropping its handle sends no unsubscribe.
            if let Some(s) = st.subs.remove(&e.req) {
                st.subs_gen += 1;
                subs.remove(&e.req);
                if let Some(ack) = s.ack {
                    let _ = ack.try_send(Err(err()));
                }
            }
            return Ok(None);
        }
    }
    // The broker's answer to a request the client gave up on itself (its own bound
    // passed first): nothing to report.
    if matches!(
        e.code,
        wire::ErrorCode::TIMEOUT | wire::ErrorCode::NO_RESPONDERS
    ) {
        return Ok(None);
    }
    if let Some(tx) = refused_resubscribe(&mut st, subs, e.req, e.code) {
        return Ok(Some(tx));
    }
    if e.code.closes_connection() {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            err().to_string(),
        ));
    }
    // Reported by the next `flush`.
    log::debug!("the broker refused a request: {}", err());
    if st.refused.len() < MAX_REFUSED {
        st.refused.push(err());
    }
    Ok(None)
}

/// When error `code` for request `req` is the broker refusing a live subscription it
/// had accepted before (subscribed again after a reconnect, when a reload may have
/// narrowed the token's rules): forgets the subscription, so its handle sends no
/// unsubscribe, and returns where to tell the application. Dropping that sender ends
/// the subscription's events once the refusal is read.
fn refused_resubscribe(
    st: &mut State,
    subs: &mut HashMap<u32, LocalSub>,
    req: u32,
    code: wire::ErrorCode,
) -> Option<Tx> {
    if req == 0 || code.closes_connection() || code == wire::ErrorCode::UNKNOWN_SUBSCRIPTION {
        return None;
    }
    let sh = st.subs.remove(&req)?;
    st.subs_gen += 1;
    subs.remove(&req);
    Some(sh.tx)
}

/// The queue without subscribe and unsubscribe frames: on reconnect every live
/// subscription is sent again first, with its resume point. Acks and nacks go too: their
/// tags belonged to the old connection, whose messages the broker already put back.
/// Management requests go when the broker's `version` is older than protocol 3 (it
/// would close the connection on them); their `req`s are added to `dropped`.
fn without_subscription_frames(buf: &[u8], version: u16, dropped: &mut Vec<u32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut pos = 0;
    while let Ok(Decoded::Frame(f, used)) = wire::decode(&buf[pos..], usize::MAX) {
        match f {
            Frame::Subscribe(_)
            | Frame::SubscribeGroup(_)
            | Frame::JoinGroup(_)
            | Frame::Unsubscribe(_)
            | Frame::Ack(_)
            | Frame::Nack(_) => {}
            Frame::Manage(m) if version < wire::MANAGE_VERSION => dropped.push(m.req),
            Frame::Request(r) if version < wire::REQUEST_VERSION => dropped.push(r.req),
            // The inbox is the broker's: a reply still goes after a reconnect, but not to
            // a broker that knows no replies.
            Frame::Reply(_) if version < wire::REQUEST_VERSION => {}
            Frame::Prepare(p) if version < wire::REQUEST_VERSION => dropped.push(p.req),
            Frame::Settle(s) if version < wire::REQUEST_VERSION => dropped.push(s.req),
            Frame::GetLimits(q) if version < wire::LIMITS_VERSION => dropped.push(q.req),
            _ => out.extend_from_slice(&buf[pos..pos + used]),
        }
        pos += used;
    }
    out
}

async fn session(
    shared: &Arc<Shared>,
    connected: crate::handshake::Connected,
    subs: &mut HashMap<u32, LocalSub>,
) -> io::Result<()> {
    let crate::handshake::Connected {
        stream,
        info,
        leftover,
        crypto,
        ..
    } = connected;
    let (sealer, opener) = match crypto {
        Some((s, o)) => (Some(s), Some(o)),
        None => (None, None),
    };
    // Group memberships this broker cannot make again, and where to tell of them.
    let mut unsupported = Vec::new();
    let mut refused = Vec::new();
    {
        let mut st = shared.lock();
        sync_subs(&st, subs);
        let mut head = Vec::new();
        let mut ids: Vec<u32> = st.subs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let (Some(sh), Some(local)) = (st.subs.get(&id), subs.get_mut(&id)) else {
                continue;
            };
            if info.version < wire::MANAGE_VERSION
                && sh.group.as_ref().is_some_and(Group::needs_join)
            {
                // An older broker cannot make this group what was asked: refused below.
                unsupported.push(id);
                continue;
            }
            let (from, resume) = local.resume_point();
            let resume: Vec<Resume<'_>> = resume
                .iter()
                .map(|(t, n)| Resume { topic: t, next: *n })
                .collect();
            subscribe_frame(id, &sh.filter, from, sh.group.as_ref(), &resume).encode(&mut head);
        }
        // Confirmed publishes lost with the last connection go first, in their order.
        let mut reqs = Vec::new();
        for id in std::mem::take(&mut st.resend) {
            if let Some(frame) = st.pending.get(&id).and_then(|p| p.frame.as_deref()) {
                head.extend_from_slice(frame);
                reqs.push(id);
            }
        }
        st.resent += reqs.len() as u64;
        reqs.extend_from_slice(&st.buf_reqs);
        st.buf_reqs = reqs;
        let mut dropped = Vec::new();
        head.extend_from_slice(&without_subscription_frames(
            &st.buf,
            info.version,
            &mut dropped,
        ));
        st.buf = head;
        // Queued while connected to a newer broker: this one cannot answer them.
        for req in dropped {
            st.buf_reqs.retain(|r| *r != req);
            if let Some(p) = st.pending.remove(&req) {
                let (needed, what) = match p.tx {
                    Answer::Reply(..) => (wire::REQUEST_VERSION, "request/reply"),
                    Answer::Limits(..) => (wire::LIMITS_VERSION, "the limits query"),
                    _ => (wire::MANAGE_VERSION, "management"),
                };
                p.tx.fail(Error::Unsupported {
                    broker: info.version,
                    needed,
                    what,
                });
            }
        }
        st.connected = true;
        st.conn_gen += 1;
        st.broker = Some(info);
        for id in unsupported {
            let err = Error::Unsupported {
                broker: info.version,
                needed: wire::MANAGE_VERSION,
                what: JOIN_WHAT,
            };
            let Some(sh) = st.subs.remove(&id) else {
                continue;
            };
            st.subs_gen += 1;
            subs.remove(&id);
            match sh.ack {
                Some(ack) => {
                    let _ = ack.try_send(Err(err));
                }
                None => refused.push((sh.tx, err.to_string())),
            }
        }
    }
    for (tx, message) in refused {
        log::info!("a group membership cannot be made again: {message}");
        let code = wire::ErrorCode::UNSUPPORTED_VERSION;
        match tx {
            Tx::Plain(tx) => deliver(&tx, Event::Refused { code, message }).await,
            Tx::Group(tx) => deliver(&tx, GroupEvent::Refused { code, message }).await,
            // Dropping the sender ends the responder's stream.
            Tx::Requests { .. } => {}
        }
    }
    shared.set_link(Link::Up);
    shared.queued.notify(1);
    shared.room.notify(usize::MAX);
    let last_rx = Cell::new(Instant::now());
    reader(shared, &stream, info, subs, &last_rx, leftover, opener)
        .or(writer(shared, &stream, info, &last_rx, sealer))
        .await
}

/// The connection ended, for `reason` unless the client closed it: requests on the wire
/// are answered with [`Error::ConnectionLost`], or kept to be sent again
/// ([`crate::Options::resend_unconfirmed`]).
fn disconnected(shared: &Shared, reason: Option<String>) {
    let mut st = shared.lock();
    st.connected = false;
    let mut lost = Vec::new();
    let mut again = Vec::new();
    // Ids are taken in queue order from a wrapping counter: counted back from the
    // newest, they sort in the order the requests were queued.
    let newest = st.next_id;
    for (id, p) in &st.pending {
        match (p.sent, &p.frame) {
            (false, _) => {}
            (true, None) => lost.push(*id),
            (true, Some(_)) => again.push(newest.wrapping_sub(*id)),
        }
    }
    for id in lost {
        if let Some(p) = st.pending.remove(&id) {
            p.tx.fail(Error::ConnectionLost);
        }
    }
    // Oldest (counted back farthest) first.
    again.sort_unstable();
    for age in again.into_iter().rev() {
        let id = newest.wrapping_sub(age);
        if let Some(p) = st.pending.get_mut(&id) {
            p.sent = false;
            st.resend.push(id);
        }
    }
    drop(st);
    if let Some(reason) = reason {
        shared.set_link(Link::Down {
            since: Instant::now(),
            reason,
        });
    }
    shared.room.notify(usize::MAX);
}

async fn writer(
    shared: &Shared,
    stream: &TcpStream,
    info: BrokerInfo,
    last_rx: &Cell<Instant>,
    mut sealer: Option<Sealer>,
) -> io::Result<()> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    // Encrypted: the batch goes out as records of bounded size, in one write.
    let mut seal = |plain: &[u8], record: &mut Vec<u8>| -> bool {
        match &mut sealer {
            Some(sl) => {
                record.clear();
                sl.seal_frames(plain, record);
                true
            }
            None => false,
        }
    };
    let ping_every = info.keepalive / 2;
    let mut last_tx = Instant::now();
    let mut s = stream.clone();
    loop {
        let listener = {
            let mut st = shared.lock();
            if !st.buf.is_empty() {
                std::mem::swap(&mut out, &mut st.buf);
                let State {
                    buf_reqs, pending, ..
                } = &mut *st;
                for req in buf_reqs.drain(..) {
                    if let Some(p) = pending.get_mut(&req) {
                        p.sent = true;
                    }
                }
                None
            } else if st.closed {
                return Ok(());
            } else {
                Some(shared.queued.listen())
            }
        };
        match listener {
            None => {
                shared.room.notify(usize::MAX);
                if seal(&out, &mut record) {
                    s.write_all(&record).await?;
                } else {
                    s.write_all(&out).await?;
                }
                out.clear();
                if out.capacity() > 4 * shared.opts.max_queue_bytes {
                    out = Vec::new();
                }
                last_tx = Instant::now();
            }
            Some(l) => {
                let deadline = last_tx + ping_every;
                async {
                    l.await;
                }
                .or(async {
                    Timer::at(deadline).await;
                })
                .await;
                let now = Instant::now();
                if now.duration_since(last_rx.get()) > info.keepalive * 3 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the broker has been silent for three keepalive periods",
                    ));
                }
                if now >= deadline {
                    let ping = Frame::Ping(Ping { nonce: 0 }).to_vec();
                    if seal(&ping, &mut record) {
                        s.write_all(&record).await?;
                    } else {
                        s.write_all(&ping).await?;
                    }
                    last_tx = now;
                }
            }
        }
    }
}

async fn reader(
    shared: &Arc<Shared>,
    stream: &TcpStream,
    info: BrokerInfo,
    subs: &mut HashMap<u32, LocalSub>,
    last_rx: &Cell<Instant>,
    leftover: Vec<u8>,
    mut opener: Option<Opener>,
) -> io::Result<()> {
    let mut buf = leftover;
    let mut end = buf.len();
    buf.resize(READ_BUF.max(end), 0);
    let mut s = stream.clone();
    let max_record = info.max_frame + RECORD_SLACK;
    loop {
        let mut pos = 0;
        loop {
            let Some(op) = &mut opener else {
                let (used, need) =
                    handle_frames(shared, subs, &buf[pos..end], info.max_frame).await?;
                pos += used;
                // The partial frame moves to the front below: it needs `need` bytes.
                grow(&mut buf, need);
                break;
            };
            match Opener::peek(&buf[pos..end], max_record) {
                Ok(Record::Complete { total }) => {
                    let plain = op
                        .open(&mut buf[pos..pos + total])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let (used, _) = handle_frames(shared, subs, plain, info.max_frame).await?;
                    if used != plain.len() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a record from the broker ends inside a frame",
                        ));
                    }
                    pos += total;
                }
                Ok(Record::Incomplete { total }) => {
                    grow(&mut buf, total);
                    break;
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        buf.copy_within(pos..end, 0);
        end -= pos;
        if end == 0 && buf.len() > READ_BUF {
            buf.truncate(READ_BUF);
            buf.shrink_to_fit();
        }
        let n = s.read(&mut buf[end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ));
        }
        last_rx.set(Instant::now());
        end += n;
    }
}

/// Bytes a record from the broker may hold beyond its largest frame.
const RECORD_SLACK: usize = 1 << 20;

/// Makes `buf` long enough for `need` bytes, when known.
fn grow(buf: &mut Vec<u8>, need: Option<usize>) {
    if let Some(t) = need {
        if t > buf.len() {
            buf.resize(t, 0);
        }
    }
}

/// Handles the whole frames at the start of `bytes`; returns how many bytes they took and
/// the whole size of the incomplete frame after them, when known.
async fn handle_frames(
    shared: &Arc<Shared>,
    subs: &mut HashMap<u32, LocalSub>,
    bytes: &[u8],
    max_frame: usize,
) -> io::Result<(usize, Option<usize>)> {
    let mut pos = 0;
    loop {
        match wire::decode(&bytes[pos..], max_frame) {
            Ok(Decoded::Frame(f, used)) => {
                pos += used;
                handle(shared, subs, f).await?;
            }
            Ok(Decoded::Incomplete { total }) => return Ok((pos, total)),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// The local subscription `id`, syncing with the shared table if it is new to us.
fn local<'a>(
    shared: &Shared,
    subs: &'a mut HashMap<u32, LocalSub>,
    id: u32,
) -> Option<&'a mut LocalSub> {
    if !subs.contains_key(&id) {
        sync_subs(&shared.lock(), subs);
    }
    subs.get_mut(&id)
}

async fn deliver<T>(tx: &async_channel::Sender<T>, ev: T) {
    match tx.try_send(ev) {
        Ok(()) => {}
        // The application is behind: stop reading (the broker will skip ahead if it must).
        Err(async_channel::TrySendError::Full(ev)) => {
            let _ = tx.send(ev).await;
        }
        // The subscription was dropped; its unsubscribe is on the way.
        Err(async_channel::TrySendError::Closed(_)) => {}
    }
}

async fn handle(
    shared: &Arc<Shared>,
    subs: &mut HashMap<u32, LocalSub>,
    frame: Frame<'_>,
) -> io::Result<()> {
    let evicted = matches!(frame, Frame::Evicted(_));
    match frame {
        Frame::Message(m) => {
            if let Some(ls) = local(shared, subs, m.sub) {
                let topic = ls.advance(m.topic, m.offset + 1);
                let ev = Event::Message(Message {
                    topic,
                    offset: m.offset,
                    time_ms: m.time_ms,
                    key: m.key.map(<[u8]>::to_vec),
                    payload: m.payload.to_vec(),
                });
                if let Tx::Plain(tx) = ls.tx.clone() {
                    deliver(&tx, ev).await;
                }
            }
        }
        Frame::GroupMessage(m) => {
            if let Some(ls) = local(shared, subs, m.sub) {
                let topic = ls.advance(m.topic, m.offset + 1);
                let msg = Message {
                    topic,
                    offset: m.offset,
                    time_ms: m.time_ms,
                    key: m.key.map(<[u8]>::to_vec),
                    payload: m.payload.to_vec(),
                };
                let conn = shared.lock().conn_gen;
                let d = Delivery::new(msg, m.attempt, m.sub, m.tag, conn, shared.clone());
                match ls.tx.clone() {
                    Tx::Group(tx) => deliver(&tx, GroupEvent::Message(d)).await,
                    // A request answered (or given up) already: nothing to do but ack.
                    Tx::Requests { .. } => {
                        let _ = d.ack();
                    }
                    Tx::Plain(_) => {}
                }
            }
        }
        Frame::Asked(a) => {
            if let Some(ls) = local(shared, subs, a.sub) {
                let topic = ls.advance(a.topic, a.offset + 1);
                let msg = Message {
                    topic,
                    offset: a.offset,
                    time_ms: a.time_ms,
                    key: a.key.map(<[u8]>::to_vec),
                    payload: a.payload.to_vec(),
                };
                let conn = shared.lock().conn_gen;
                match ls.tx.clone() {
                    Tx::Requests { tx, group } => {
                        let r = crate::request::incoming(msg, &a, group, conn, shared);
                        deliver(&tx, r).await;
                    }
                    // A subscriber that does not answer sees the message it also is.
                    Tx::Plain(tx) => deliver(&tx, Event::Message(msg)).await,
                    Tx::Group(tx) => {
                        let d = Delivery::new(msg, a.attempt, a.sub, a.tag, conn, shared.clone());
                        deliver(&tx, GroupEvent::Message(d)).await;
                    }
                }
            }
        }
        Frame::Response(r) => {
            if let Some(pending) = shared.lock().pending.remove(&r.req) {
                if let Answer::Reply(tx, _) = pending.tx {
                    let _ = tx.try_send(Ok(crate::Reply {
                        key: r.key.map(<[u8]>::to_vec),
                        payload: r.payload.to_vec(),
                    }));
                }
            }
        }
        Frame::Lag(l) | Frame::Evicted(l) => {
            if let Some(ls) = local(shared, subs, l.sub) {
                let topic = ls.advance(l.topic, l.next);
                if !evicted {
                    log::warn!(
                        "subscription {} missed {} messages of {}",
                        l.sub,
                        l.missed,
                        l.topic
                    );
                }
                match ls.tx.clone() {
                    Tx::Plain(tx) => {
                        let ev = if evicted {
                            Event::Evicted {
                                topic,
                                missed: l.missed,
                                next: l.next,
                            }
                        } else {
                            Event::Lag {
                                topic,
                                missed: l.missed,
                                next: l.next,
                            }
                        };
                        deliver(&tx, ev).await;
                    }
                    Tx::Group(tx) => {
                        let ev = GroupEvent::Lag {
                            topic,
                            missed: l.missed,
                            next: l.next,
                        };
                        deliver(&tx, ev).await;
                    }
                    Tx::Requests { .. } => {}
                }
            }
        }
        Frame::Published(p) => {
            if let Some(pending) = shared.lock().pending.remove(&p.req) {
                if let Answer::Offset(tx) = pending.tx {
                    let _ = tx.try_send(Ok(p.offset));
                }
            }
        }
        Frame::Prepared(p) => {
            if let Some(pending) = shared.lock().pending.remove(&p.req) {
                if let Answer::Offset(tx) = pending.tx {
                    let _ = tx.try_send(Ok(p.tx));
                }
            }
        }
        Frame::Settled(s) => {
            if let Some(pending) = shared.lock().pending.remove(&s.req) {
                if let Answer::Settled(tx) = pending.tx {
                    let _ = tx.try_send(Ok((s.offset, s.time_ms)));
                }
            }
        }
        Frame::TxCheck(c) => crate::tx::check(shared, &c),
        Frame::Limits(l) => {
            if let Some(pending) = shared.lock().pending.remove(&l.req) {
                if let Answer::Limits(tx) = pending.tx {
                    let _ = tx.try_send(Ok(*l));
                }
            }
        }
        Frame::Managed(m) => {
            if let Some(pending) = shared.lock().pending.remove(&m.req) {
                if let Answer::Json(tx) = pending.tx {
                    let _ = tx.try_send(Ok(m.json.to_string()));
                }
            }
        }
        Frame::Removed(r) => {
            if let Some(ls) = local(shared, subs, r.sub) {
                // A topic created again continues at `next`: resume there.
                let topic = ls.advance(r.topic, r.next);
                log::info!("topic {} was deleted on the broker", r.topic);
                match ls.tx.clone() {
                    Tx::Plain(tx) => {
                        let ev = Event::Removed {
                            topic,
                            unread: r.unread,
                            next: r.next,
                        };
                        deliver(&tx, ev).await;
                    }
                    Tx::Group(tx) => {
                        let ev = GroupEvent::Removed {
                            topic,
                            unread: r.unread,
                            next: r.next,
                        };
                        deliver(&tx, ev).await;
                    }
                    Tx::Requests { .. } => {}
                }
            }
        }
        Frame::Pong(p) => {
            let id = u32::try_from(p.nonce).unwrap_or(0);
            if id != 0 {
                if let Some(pending) = shared.lock().pending.remove(&id) {
                    if let Answer::Offset(tx) = pending.tx {
                        let _ = tx.try_send(Ok(0));
                    }
                }
            }
        }
        Frame::Ping(p) => {
            let mut st = shared.lock();
            let was_empty = st.buf.is_empty();
            Frame::Pong(p).encode(&mut st.buf);
            drop(st);
            if was_empty {
                shared.queued.notify(1);
            }
        }
        Frame::Subscribed(s) => {
            if let Some(ls) = local(shared, subs, s.sub) {
                ls.seq.get_or_insert(s.seq);
            }
            if let Some(sh) = shared.lock().subs.get_mut(&s.sub) {
                if let Some(ack) = sh.ack.take() {
                    let _ = ack.try_send(Ok(()));
                }
            }
        }
        Frame::Unsubscribed(_) => {}
        Frame::Error(e) => {
            if let Some(tx) = handle_error(shared, subs, &e)? {
                log::info!(
                    "the broker refused subscription {} again: {} ({})",
                    e.req,
                    e.message,
                    e.code.name()
                );
                match tx {
                    Tx::Plain(tx) => {
                        let ev = Event::Refused {
                            code: e.code,
                            message: e.message.to_string(),
                        };
                        deliver(&tx, ev).await;
                    }
                    Tx::Group(tx) => {
                        let ev = GroupEvent::Refused {
                            code: e.code,
                            message: e.message.to_string(),
                        };
                        deliver(&tx, ev).await;
                    }
                    // Dropping the sender ends the responder's stream.
                    Tx::Requests { .. } => {}
                }
            }
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected frame 0x{:02x} from the broker", other.tag()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use crate::wire::{Manage, ManageOp, Publish, Subscribe};

    #[test]
    fn a_reconnect_keeps_requests_and_drops_what_the_broker_cannot_take() {
        let mut buf = Vec::new();
        Frame::Subscribe(Subscribe {
            sub: 1,
            filter: "a",
            from: Start::Latest,
            resume: Vec::new(),
        })
        .encode(&mut buf);
        Frame::Manage(Manage {
            req: 2,
            op: ManageOp::Groups,
        })
        .encode(&mut buf);
        let publish = Frame::Publish(Publish {
            req: 3,
            topic: "a",
            key: None,
            payload: b"x",
        })
        .to_vec();
        buf.extend_from_slice(&publish);
        // A broker of protocol 3 gets the request again...
        let mut dropped = Vec::new();
        let kept = without_subscription_frames(&buf, 3, &mut dropped);
        assert!(dropped.is_empty());
        assert_eq!(&kept[kept.len() - publish.len()..], &publish[..]);
        assert!(matches!(
            wire::decode(&kept, usize::MAX),
            Ok(Decoded::Frame(Frame::Manage(m), _)) if m.req == 2
        ));
        // ...one of protocol 2 never sees it (it would close the connection).
        let kept = without_subscription_frames(&buf, 2, &mut dropped);
        assert_eq!(dropped, [2]);
        assert_eq!(kept, publish);
    }
}
