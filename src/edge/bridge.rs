//! The executor's side of the HTTP edge. HTTP threads never touch the engine: they send
//! a [`Call`] through a bounded channel and wait on a one-slot reply. Streams are engine
//! connections of their own, whose deliveries go to the HTTP thread through a bounded
//! channel; when it is full the stream's cursor simply stops (and lags, as a slow TCP
//! subscriber would).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc::SyncSender;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::FutureExt;
use mote_sdk::Start;
use smol::LocalExecutor;

use crate::engine::{ConnId, ConnInfo, Delivery, Since, Stats, Stored, TopicInfo, WaitId};
use crate::limits::Limits;
use crate::server::Shared;

/// Events a stream's channel holds at most.
pub(crate) const STREAM_QUEUE: usize = 256;
/// How often message rates are sampled.
const RATE_EVERY: Duration = Duration::from_secs(2);

/// What a publish over HTTP turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) offset: u64,
    pub(crate) time_ms: u64,
    /// With `wait=delivered`: whether a subscriber got it in time.
    pub(crate) delivered: Option<bool>,
}

/// A refusal: the engine's code (for the HTTP status) and message.
pub(crate) type Refused = crate::engine::Refusal;

/// One event of an HTTP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamEvent {
    Message {
        topic: String,
        offset: u64,
        time_ms: u64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        /// For a consumer group: the id to `POST /ack`, and the delivery attempt.
        ack: Option<(String, u32)>,
    },
    Lag {
        topic: String,
        missed: u64,
        next: u64,
    },
    /// The broker is shutting down.
    End,
}

/// Message rates over the last sampling period.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rates {
    pub(crate) publish_per_s: f64,
    pub(crate) deliver_per_s: f64,
    /// Per topic: (publish/s, deliver/s).
    pub(crate) topics: HashMap<String, (f64, f64)>,
}

/// Everything `/api/stats` and `/metrics` show.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) stats: Stats,
    pub(crate) limits: Limits,
    pub(crate) topics: Vec<TopicInfo>,
    pub(crate) conns: Vec<ConnInfo>,
    pub(crate) groups: Vec<crate::engine::GroupInfo>,
    pub(crate) memory_used: usize,
    pub(crate) stored: usize,
    pub(crate) uptime: Duration,
    pub(crate) rates: Rates,
    pub(crate) tokens: usize,
    pub(crate) time_ms: u64,
}

/// A stream's wish to join consumer group `name` (created with `settings` if new).
#[derive(Debug, Clone)]
pub(crate) struct GroupJoin {
    pub(crate) name: String,
    pub(crate) settings: mote_sdk::wire::GroupSettings,
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

/// A request from an HTTP thread.
pub(crate) enum Call {
    /// Acks (`nack` none) or nacks deliveries of group streams, by their ids.
    Settle {
        ids: Vec<String>,
        nack: Option<u64>,
        token: Option<String>,
        reply: SyncSender<Settled>,
    },
    Publish {
        topic: String,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        /// `wait=delivered` with this timeout.
        wait: Option<Duration>,
        reply: SyncSender<Result<Published, Refused>>,
    },
    Read {
        topic: String,
        since: Since,
        limit: usize,
        reply: SyncSender<Stored>,
    },
    /// Opens a stream: an engine connection subscribed to `filter`.
    Stream {
        filter: String,
        from: Start,
        peer: Option<std::net::SocketAddr>,
        token: Option<String>,
        events: async_channel::Sender<StreamEvent>,
        /// Closed (never sent on) when the HTTP side is done with the stream, so the
        /// engine connection ends even if no message comes to notice it.
        gone: async_channel::Receiver<()>,
        /// Join a consumer group instead of subscribing.
        group: Option<GroupJoin>,
        /// The stream's engine connection, once it is open.
        reply: SyncSender<Result<ConnId, Refused>>,
    },
    Snapshot {
        reply: SyncSender<Snapshot>,
    },
    /// A stream wrote `bytes` to its client (counted as the connection's `bytes_out`).
    Sent {
        conn: ConnId,
        bytes: usize,
    },
    /// A bad token on the HTTP side: counted with the TCP ones.
    AuthFailed,
}

/// A `wait=delivered` publish not answered yet.
struct Waiting {
    topic: String,
    published: Published,
    deadline: Instant,
    reply: SyncSender<Result<Published, Refused>>,
}

/// Serves calls until the channel closes.
pub(crate) async fn serve(
    ex: Rc<LocalExecutor<'static>>,
    shared: Rc<Shared>,
    calls: async_channel::Receiver<Call>,
) {
    let mut waits: HashMap<WaitId, Waiting> = HashMap::new();
    let mut delivered = Vec::new();
    let mut sampler = RateSampler::default();
    let mut next_sample = Instant::now();
    loop {
        let deadline = waits
            .values()
            .map(|w| w.deadline)
            .min()
            .unwrap_or(next_sample)
            .min(next_sample);
        enum Woke {
            Call(Call),
            Closed,
            Edge,
            Timer,
        }
        let woke = async { calls.recv().await.map_or(Woke::Closed, Woke::Call) }
            .or(async {
                EdgeWake { shared: &shared }.await;
                Woke::Edge
            })
            .or(async {
                Timer::at(deadline).await;
                Woke::Timer
            })
            .await;
        match woke {
            Woke::Closed => return,
            Woke::Call(call) => handle(&ex, &shared, call, &mut waits, &sampler),
            Woke::Edge | Woke::Timer => {}
        }
        // Answer the waits that were delivered, and those out of time.
        shared.engine.borrow_mut().take_delivered(&mut delivered);
        for id in delivered.drain(..) {
            if let Some(mut w) = waits.remove(&id) {
                w.published.delivered = Some(true);
                let _ = w.reply.try_send(Ok(w.published));
            }
        }
        let now = Instant::now();
        let late: Vec<WaitId> = waits
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut w) = waits.remove(&id) {
                shared.engine.borrow_mut().cancel_wait(&w.topic, id);
                w.published.delivered = Some(false);
                let _ = w.reply.try_send(Ok(w.published));
            }
        }
        if now >= next_sample {
            sampler.sample(&shared, now);
            next_sample = now + RATE_EVERY;
        }
    }
}

/// Resolves when the engine woke the edge (a `wait=delivered` was settled).
struct EdgeWake<'a> {
    shared: &'a Shared,
}

impl Future for EdgeWake<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.take_edge_wake(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn handle(
    ex: &LocalExecutor<'_>,
    shared: &Rc<Shared>,
    call: Call,
    waits: &mut HashMap<WaitId, Waiting>,
    sampler: &RateSampler,
) {
    // Group deadlines count from now, also when only HTTP clients are about.
    shared.engine.borrow_mut().advance_clock(shared.mono_ms());
    match call {
        Call::Publish {
            topic,
            key,
            payload,
            wait,
            reply,
        } => {
            let time_ms = shared.wall_ms();
            let mut engine = shared.engine.borrow_mut();
            let edge = shared.edge_conn();
            let r = engine.handle_publish(edge, time_ms, &topic, key.as_deref(), &payload);
            let answer = match r {
                Err(e) => Err(e),
                Ok(offset) => {
                    let published = Published {
                        offset,
                        time_ms,
                        delivered: None,
                    };
                    match wait.map(|d| {
                        (
                            d,
                            engine.handle_wait_delivered(ConnId::EDGE, &topic, offset),
                        )
                    }) {
                        Some((d, Ok(id))) => {
                            waits.insert(
                                id,
                                Waiting {
                                    topic,
                                    published,
                                    deadline: Instant::now() + d,
                                    reply,
                                },
                            );
                            shared.wake_others(&mut engine, None);
                            return;
                        }
                        _ => Ok(published),
                    }
                }
            };
            shared.wake_others(&mut engine, None);
            let _ = reply.try_send(answer);
        }
        Call::Read {
            topic,
            since,
            limit,
            reply,
        } => {
            let _ = reply.try_send(shared.engine.borrow().read_topic(&topic, since, limit));
        }
        Call::Stream {
            filter,
            from,
            peer,
            token,
            events,
            gone,
            group,
            reply,
        } => {
            let mut engine = shared.engine.borrow_mut();
            let conn = engine.handle_connect(shared.mono_ms(), peer);
            engine.handle_open_http(conn, "http", token.as_deref());
            let joined = match &group {
                Some(g) => {
                    engine.handle_subscribe_group(conn, 1, &filter, &g.name, from, g.settings)
                }
                None => engine.handle_subscribe(conn, 1, &filter, from, &[]),
            };
            match joined {
                Ok(_) => {
                    shared.wake_others(&mut engine, None);
                    drop(engine);
                    let stream = group.map(|_| {
                        let n = shared.next_http_stream.get() + 1;
                        shared.next_http_stream.set(n);
                        let name = token.map(String::into_boxed_str);
                        shared.http_groups.borrow_mut().insert(n, (conn, name));
                        n
                    });
                    let _ = reply.try_send(Ok(conn));
                    ex.spawn(StreamTask {
                        shared: shared.clone(),
                        conn,
                        stream,
                        events,
                        gone: Box::pin(gone),
                        sending: None,
                    })
                    .detach();
                }
                Err(e) => {
                    engine.handle_disconnect(conn);
                    let _ = reply.try_send(Err(e));
                }
            }
        }
        Call::Snapshot { reply } => {
            let _ = reply.try_send(snapshot(shared, sampler));
        }
        Call::AuthFailed => shared.engine.borrow_mut().count_http_auth_failure(),
        Call::Sent { conn, bytes } => shared.engine.borrow_mut().handle_sent(conn, bytes),
        Call::Settle {
            ids,
            nack,
            token,
            reply,
        } => {
            let _ = reply.try_send(settle(shared, &ids, nack, token.as_deref()));
        }
    }
}

/// Acks or nacks the deliveries `ids` (`<stream>.<tag>`) for the caller with `token`.
fn settle(shared: &Shared, ids: &[String], nack: Option<u64>, token: Option<&str>) -> Settled {
    let mut out = Settled::default();
    let groups = shared.http_groups.borrow();
    let mut engine = shared.engine.borrow_mut();
    for id in ids {
        let parsed = id
            .split_once('.')
            .and_then(|(s, t)| Some((s.parse::<u64>().ok()?, t.parse::<u64>().ok()?)));
        let Some((conn, owner)) = parsed.and_then(|(s, _)| groups.get(&s)) else {
            engine.count_error(mote_sdk::ErrorCode::UNKNOWN_DELIVERY);
            out.unknown.push(id.clone());
            continue;
        };
        if owner.as_deref() != token {
            engine.count_error(mote_sdk::ErrorCode::FORBIDDEN);
            out.forbidden.push(id.clone());
            continue;
        }
        let tag = parsed.map_or(0, |(_, t)| t);
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

fn snapshot(shared: &Shared, sampler: &RateSampler) -> Snapshot {
    let engine = shared.engine.borrow();
    let edge = shared.edge_conn();
    Snapshot {
        stats: engine.stats().clone(),
        limits: engine.limits().clone(),
        topics: engine.topic_infos(),
        conns: engine
            .conn_infos()
            .into_iter()
            .filter(|c| c.id != edge)
            .collect(),
        groups: engine.group_infos(),
        memory_used: engine.memory_used(),
        stored: engine.stored_messages(),
        uptime: shared.uptime(),
        rates: sampler.rates.clone(),
        tokens: shared.auth_now().len(),
        time_ms: shared.wall_ms(),
    }
}

/// Counters at one moment: when, published, delivered, and per topic both.
struct Sample {
    at: Instant,
    published: u64,
    delivered: u64,
    topics: HashMap<String, (u64, u64)>,
}

/// Keeps the previous counters to turn them into rates.
#[derive(Default)]
struct RateSampler {
    last: Option<Sample>,
    rates: Rates,
}

impl RateSampler {
    fn sample(&mut self, shared: &Shared, now: Instant) {
        let engine = shared.engine.borrow();
        let (p, d) = (engine.stats().published, engine.stats().delivered);
        let topics: HashMap<String, (u64, u64)> = engine
            .topic_infos()
            .into_iter()
            .map(|t| (t.name, (t.published, t.delivered)))
            .collect();
        if let Some(last) = &self.last {
            let secs = now.duration_since(last.at).as_secs_f64().max(1e-3);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            self.rates = Rates {
                publish_per_s: rate(p, last.published),
                deliver_per_s: rate(d, last.delivered),
                topics: topics
                    .iter()
                    .map(|(name, &(tp, td))| {
                        let (bp, bd) = last.topics.get(name).copied().unwrap_or((0, 0));
                        (name.clone(), (rate(tp, bp), rate(td, bd)))
                    })
                    .collect(),
            };
        }
        self.last = Some(Sample {
            at: now,
            published: p,
            delivered: d,
            topics,
        });
    }
}

/// Moves one HTTP stream's deliveries from the engine into its channel.
struct StreamTask {
    shared: Rc<Shared>,
    conn: ConnId,
    /// Its number, when it is a consumer group member (ack ids start with it).
    stream: Option<u64>,
    events: async_channel::Sender<StreamEvent>,
    /// Closes when the HTTP thread is done with the stream.
    gone: Pin<Box<async_channel::Receiver<()>>>,
    /// An event that did not fit, being sent as room appears.
    sending: Option<Pin<Box<dyn Future<Output = bool>>>>,
}

impl StreamTask {
    fn finish(&mut self) -> Poll<()> {
        if let Some(n) = self.stream {
            self.shared.http_groups.borrow_mut().remove(&n);
        }
        self.shared.forget_waker(self.conn);
        self.shared.engine.borrow_mut().handle_disconnect(self.conn);
        Poll::Ready(())
    }
}

impl Future for StreamTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.set_waker(this.conn, cx.waker());
        if this
            .shared
            .engine
            .borrow()
            .close_reason(this.conn)
            .is_some()
        {
            let _ = this.events.try_send(StreamEvent::End);
            return this.finish();
        }
        // The HTTP side ended the stream (limit, timeout, client gone): the `gone`
        // channel closing wakes this task even when no delivery would.
        if let Poll::Ready(None) = futures_lite::Stream::poll_next(this.gone.as_mut(), cx) {
            return this.finish();
        }
        loop {
            if let Some(s) = this.sending.as_mut() {
                match s.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(false) => return this.finish(),
                    Poll::Ready(true) => this.sending = None,
                }
            }
            if this.events.is_closed() {
                return this.finish();
            }
            let mut held = None;
            let events = &this.events;
            let stream = this.stream;
            this.shared
                .engine
                .borrow_mut()
                .poll_deliveries(this.conn, |d| {
                    let ev = match d {
                        Delivery::Message {
                            topic,
                            offset,
                            time_ms,
                            key,
                            payload,
                            ..
                        } => StreamEvent::Message {
                            topic: topic.to_string(),
                            offset,
                            time_ms,
                            key: key.map(<[u8]>::to_vec),
                            payload: payload.to_vec(),
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
                        } => StreamEvent::Message {
                            topic: topic.to_string(),
                            offset,
                            time_ms,
                            key: key.map(<[u8]>::to_vec),
                            payload: payload.to_vec(),
                            ack: Some((format!("{}.{tag}", stream.unwrap_or(0)), attempt)),
                        },
                        Delivery::Lag {
                            topic,
                            missed,
                            next,
                            ..
                        } => StreamEvent::Lag {
                            topic: topic.to_string(),
                            missed,
                            next,
                        },
                    };
                    match events.try_send(ev) {
                        Ok(()) => true,
                        Err(async_channel::TrySendError::Full(ev)) => {
                            held = Some(ev);
                            false
                        }
                        Err(async_channel::TrySendError::Closed(_)) => false,
                    }
                });
            match held {
                // The channel is full: wait for room, then go on.
                Some(ev) => {
                    let tx = this.events.clone();
                    this.sending = Some(Box::pin(async move { tx.send(ev).await.is_ok() }));
                }
                None => return Poll::Pending,
            }
        }
    }
}
