//! The async client: publish, publish with confirmation, subscribe.
//!
//! A [`Client`] owns one background thread that keeps the connection: it reconnects with
//! backoff and re-subscribes every subscription after the last offset it delivered. The
//! async methods can be awaited from any executor (they only take a lock and wait on
//! events), and [`crate::blocking`] wraps them for plain threads.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mote_sdk::Error> {
//! use mote_sdk::{Client, Options, Start};
//! let client = Client::connect(Options::new("127.0.0.1:7270")).await?;
//! let mut sub = client.subscribe("home/+/temp", Start::Latest).await?;
//! client.publish("home/kitchen/temp", "21.5").await?;
//! let offset = client.publish_confirmed("home/kitchen/temp", "21.6").await?;
//! while let Some(event) = sub.next().await {
//!     if let mote_sdk::Event::Message(m) = event {
//!         println!("{} {} (offset {})", m.topic, String::from_utf8_lossy(&m.payload), m.offset);
//!     }
//! }
//! # let _ = offset; Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_listener::Event as Notify;

use crate::error::Error;
use crate::group::{Group, GroupEvent, GroupSubscription};
use crate::link::{Link, LinkWatch};
use crate::secure::Token;
use crate::wire::{
    self, Frame, MANAGE_VERSION, Manage, ManageOp, Ping, Publish, Subscribe, Unsubscribe,
};
use crate::{Filter, Start, Topic};

/// Name of a broker's single token (`mote serve --token`).
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// How to reach the broker and how the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// `HOST:PORT` of the broker.
    pub addr: String,
    /// Name the broker shows for this client.
    pub name: String,
    /// Bytes of outgoing frames kept while disconnected (and the batch size while
    /// connected). Publishing into a full queue fails while disconnected and waits while
    /// connected.
    pub max_queue_bytes: usize,
    /// Events buffered per subscription before the client stops reading from the socket.
    pub subscription_buffer: usize,
    /// Time allowed to connect and finish the handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Token name and token, for a broker with tokens: the connection is then
    /// authenticated and encrypted, and never falls back to plaintext.
    pub token: Option<(String, Token)>,
    /// Confirmed publishes whose connection drops before the broker answers are sent
    /// again once the client reconnects (in their order, before anything queued later),
    /// instead of failing with [`Error::ConnectionLost`]: each is stored at least once,
    /// and may be stored twice. Each confirmed publish then keeps a copy of its frame
    /// until it is answered. Off by default. [`Client::resent`] counts them.
    pub resend_unconfirmed: bool,
}

impl Options {
    /// Options for the broker at `addr` (`HOST:PORT`, or `HOST` for the default port).
    pub fn new(addr: impl Into<String>) -> Options {
        let mut addr = addr.into();
        if let Some(rest) = addr.strip_prefix("mote://") {
            addr = rest.trim_end_matches('/').to_string();
        }
        if !addr.contains(':') || addr.ends_with(']') {
            addr = format!("{addr}:{}", wire::DEFAULT_PORT);
        }
        Options {
            addr,
            name: "mote-sdk".into(),
            max_queue_bytes: 1 << 20,
            subscription_buffer: 1024,
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            token: None,
            resend_unconfirmed: false,
        }
    }

    /// Options from an address that may carry credentials:
    /// `mote://NAME:TOKEN@HOST:PORT`, `mote://TOKEN@HOST:PORT` (the token named
    /// `default`), or plain `HOST:PORT`.
    pub fn from_url(url: &str) -> Result<Options, Error> {
        let rest = url.strip_prefix("mote://").unwrap_or(url);
        let Some((creds, host)) = rest.rsplit_once('@') else {
            return Ok(Options::new(url));
        };
        if !url.starts_with("mote://") || host.is_empty() {
            // Never echo the part before '@': it holds the token.
            return Err(Error::Address(format!(
                "...@{}",
                host.chars().take(64).collect::<String>()
            )));
        }
        let (name, token) = match creds.split_once(':') {
            Some((n, t)) => (n, t),
            None => (DEFAULT_TOKEN_NAME, creds),
        };
        Options::new(host).with_token(name, token)
    }

    /// Uses the token `secret` named `name` (`default` for a broker's single token).
    pub fn with_token(mut self, name: &str, secret: &str) -> Result<Options, Error> {
        let token = Token::new(secret).map_err(Error::Token)?;
        let name = if name.is_empty() {
            DEFAULT_TOKEN_NAME
        } else {
            name
        };
        self.token = Some((name.to_string(), token));
        Ok(self)
    }

    /// Sets the client name, shown in the broker's logs and stats and used to find the
    /// producer of a transaction again ([`crate::TxCheck`]). The broker keeps its first
    /// 64 bytes ([`crate::wire::MAX_CLIENT_NAME`]); only those are sent.
    pub fn name(mut self, name: impl Into<String>) -> Options {
        self.name = name.into();
        self
    }
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic it was published to.
    pub topic: Arc<str>,
    /// Its offset in the topic.
    pub offset: u64,
    /// When the broker stored it (ms since the Unix epoch).
    pub time_ms: u64,
    /// The publisher's key, if any.
    pub key: Option<Vec<u8>>,
    /// The body.
    pub payload: Vec<u8>,
}

/// What a subscription yields. More kinds of events may come in later versions: match
/// with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message.
    Message(Message),
    /// The subscription fell behind the broker's ring: `missed` messages of `topic` were
    /// skipped and delivery continues at offset `next`.
    Lag {
        /// The topic.
        topic: Arc<str>,
        /// How many were skipped.
        missed: u64,
        /// Next offset delivered.
        next: u64,
    },
    /// The start asked for was older than what `topic` retains: `missed` messages were
    /// evicted by the topic's retention before the subscription asked for them (not
    /// while it was reading), and delivery starts at offset `next`. A broker that speaks
    /// only protocol version 1 reports this as [`Event::Lag`].
    Evicted {
        /// The topic.
        topic: Arc<str>,
        /// How many were evicted from the requested start on.
        missed: u64,
        /// Next offset delivered: the oldest retained.
        next: u64,
    },
    /// The broker refused the subscription when the client subscribed again after a
    /// reconnect (for example a reload narrowed the token's access rules). The
    /// subscription has ended: this is its last event.
    Refused {
        /// The broker's code, such as [`ErrorCode::FORBIDDEN`](crate::ErrorCode::FORBIDDEN).
        code: crate::wire::ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// `topic` was deleted on the broker (protocol 3: `mote topic delete`, or its idle
    /// expiry). The subscription stays: if the topic is created again, its messages come
    /// from offset `next` on, above every offset it had. A broker that speaks protocol 2
    /// or older never deletes topics.
    Removed {
        /// The topic.
        topic: Arc<str>,
        /// Messages it stored that this subscription had not got, gone with it.
        unread: u64,
        /// Where it continues if it is created again: one past its last offset.
        next: u64,
    },
}

/// Where the broker's answer to a request goes.
pub(crate) enum Answer {
    /// A publish's offset (0 for a ping).
    Offset(async_channel::Sender<Result<u64, Error>>),
    /// A management request's JSON.
    Json(async_channel::Sender<Result<String, Error>>),
    /// A request's reply (protocol 4), and its topic for the errors.
    Reply(async_channel::Sender<Result<crate::Reply, Error>>, Arc<str>),
    /// A settle's `(offset, time_ms)` (zeros for a rollback).
    Settled(async_channel::Sender<Result<(u64, u64), Error>>),
    /// The broker's limits (protocol 5).
    Limits(async_channel::Sender<Result<wire::Limits, Error>>),
}

impl Answer {
    /// Answers with an error.
    pub(crate) fn fail(&self, e: Error) {
        match self {
            Answer::Offset(tx) => {
                let _ = tx.try_send(Err(e));
            }
            Answer::Json(tx) => {
                let _ = tx.try_send(Err(e));
            }
            Answer::Reply(tx, _) => {
                let _ = tx.try_send(Err(e));
            }
            Answer::Settled(tx) => {
                let _ = tx.try_send(Err(e));
            }
            Answer::Limits(tx) => {
                let _ = tx.try_send(Err(e));
            }
        }
    }
}

pub(crate) struct Pending {
    pub(crate) tx: Answer,
    /// The frame has left the queue (it may be on the wire).
    pub(crate) sent: bool,
    /// A copy of the frame, to send again after a reconnect
    /// ([`Options::resend_unconfirmed`]).
    pub(crate) frame: Option<Vec<u8>>,
}

/// Where a subscription's events go.
#[derive(Clone)]
pub(crate) enum Tx {
    Plain(async_channel::Sender<Event>),
    Group(async_channel::Sender<GroupEvent>),
    /// A responder's requests (protocol 4); `group`: a group membership.
    Requests {
        tx: async_channel::Sender<crate::Request>,
        group: bool,
    },
}

pub(crate) struct SubShared {
    pub(crate) filter: String,
    pub(crate) from: Start,
    pub(crate) tx: Tx,
    /// Set for a group membership: re-joined as such after a reconnect.
    pub(crate) group: Option<Group>,
    /// Resolved when the broker confirms or refuses the subscription.
    pub(crate) ack: Option<async_channel::Sender<Result<(), Error>>>,
}

/// What the connection told us about the broker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokerInfo {
    /// The protocol version agreed.
    pub(crate) version: u16,
    pub(crate) max_payload: usize,
    pub(crate) keepalive: Duration,
    pub(crate) max_frame: usize,
}

pub(crate) struct State {
    /// Encoded frames waiting for the writer.
    pub(crate) buf: Vec<u8>,
    /// Confirmed publishes (and pings) whose frames are in `buf`.
    pub(crate) buf_reqs: Vec<u32>,
    pub(crate) connected: bool,
    /// Counts connections: group delivery tags are only good on the one they came on.
    pub(crate) conn_gen: u64,
    pub(crate) closed: bool,
    /// Request ids, subscription ids and ping nonces share one counter so an error
    /// frame's `req` is never ambiguous.
    pub(crate) next_id: u32,
    pub(crate) pending: HashMap<u32, Pending>,
    pub(crate) subs: HashMap<u32, SubShared>,
    pub(crate) subs_gen: u64,
    pub(crate) broker: Option<BrokerInfo>,
    /// Refusals of fire-and-forget publishes since the last [`Client::flush`].
    pub(crate) refused: Vec<Error>,
    pub(crate) link: Link,
    /// Bumped at every change of `link`.
    pub(crate) link_version: u64,
    /// Confirmed publishes lost with the connection, in their order: sent again first
    /// on the next one.
    pub(crate) resend: Vec<u32>,
    /// Confirmed publishes sent again so far.
    pub(crate) resent: u64,
    /// Where the broker's transaction check-backs go ([`Client::tx_checks`]).
    pub(crate) tx_checks: Option<async_channel::Sender<crate::tx::Queued>>,
}

pub(crate) struct Shared {
    pub(crate) opts: Options,
    pub(crate) state: Mutex<State>,
    /// The writer waits on this: frames were queued or the client closed.
    pub(crate) queued: Notify,
    /// Publishers wait on this: the queue has room, or the connection state changed.
    pub(crate) room: Notify,
    /// [`LinkWatch`]es wait on this.
    pub(crate) link_changed: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets subscription `id` (no resubscribing on reconnect) and, when connected,
    /// tells the broker.
    pub(crate) fn unsubscribe(&self, id: u32) {
        let mut st = self.lock();
        if st.subs.remove(&id).is_some() {
            st.subs_gen += 1;
            if st.connected && !st.closed {
                let was_empty = st.buf.is_empty();
                Frame::Unsubscribe(Unsubscribe { sub: id }).encode(&mut st.buf);
                if was_empty {
                    self.queued.notify(1);
                }
            }
        }
    }
}

impl State {
    pub(crate) fn take_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }
}

impl Shared {
    /// Sets the link; watchers are woken when it changed.
    pub(crate) fn set_link(&self, link: Link) {
        let mut st = self.lock();
        if st.link == link {
            return;
        }
        st.link = link;
        st.link_version += 1;
        drop(st);
        self.link_changed.notify(usize::MAX);
    }
}

/// Closes the client when the last [`Client`] handle is dropped.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.queued.notify(usize::MAX);
        self.shared.room.notify(usize::MAX);
    }
}

/// A connection to a broker that survives disconnects. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn urls_carry_credentials_and_errors_never_show_them() {
        let o = Options::from_url("mote://kitchen:0123456789abcdef0123@pi.local:7000").unwrap();
        assert_eq!(o.addr, "pi.local:7000");
        assert_eq!(o.token.as_ref().map(|t| t.0.as_str()), Some("kitchen"));
        assert!(!format!("{o:?}").contains("0123456789"), "{o:?}");
        let o = Options::from_url("mote://0123456789abcdef0123@pi.local").unwrap();
        assert_eq!(o.addr, "pi.local:7270");
        assert_eq!(
            o.token.as_ref().map(|t| t.0.as_str()),
            Some(DEFAULT_TOKEN_NAME)
        );
        assert_eq!(Options::from_url("pi.local").unwrap().addr, "pi.local:7270");
        let e = Options::from_url("http://name:0123456789abcdef0123@x").unwrap_err();
        assert!(!e.to_string().contains("0123456789"), "{e}");
        let e = Options::from_url("mote://name:short@x").unwrap_err();
        assert!(!e.to_string().contains("short"), "{e}");
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.handle.shared.opts.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the broker; fails if the first connection or handshake fails.
    /// Later disconnects are healed in the background.
    pub async fn connect(opts: Options) -> Result<Client, Error> {
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(State {
                buf: Vec::new(),
                buf_reqs: Vec::new(),
                connected: false,
                conn_gen: 0,
                closed: false,
                next_id: 0,
                pending: HashMap::new(),
                subs: HashMap::new(),
                subs_gen: 0,
                broker: None,
                refused: Vec::new(),
                link: Link::Down {
                    since: std::time::Instant::now(),
                    reason: "not connected yet".into(),
                },
                link_version: 0,
                resend: Vec::new(),
                resent: 0,
                tx_checks: None,
            }),
            queued: Notify::new(),
            room: Notify::new(),
            link_changed: Notify::new(),
        });
        let (tx, rx) = async_channel::bounded(1);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("mote-client".into())
            .spawn(move || async_io::block_on(crate::driver::run(s, tx)))
            .map_err(|e| Error::Connect {
                addr: shared.opts.addr.clone(),
                source: e,
            })?;
        match rx.recv().await {
            Ok(Ok(())) => Ok(Client {
                handle: Arc::new(Handle { shared }),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.shared().lock().connected
    }

    /// Whether the client is connected, and if not since when and why.
    pub fn link(&self) -> Link {
        self.shared().lock().link.clone()
    }

    /// A watch on [`Client::link`]: wait for the connection to drop or come back, to
    /// say so or to bound how long to wait for the broker.
    pub fn watch_link(&self) -> LinkWatch {
        LinkWatch::new(self.shared().clone())
    }

    /// How many confirmed publishes were sent again after a reconnect
    /// ([`Options::resend_unconfirmed`]).
    pub fn resent(&self) -> u64 {
        self.shared().lock().resent
    }

    /// The largest payload the broker accepts.
    pub fn max_payload(&self) -> Option<usize> {
        self.shared().lock().broker.map(|b| b.max_payload)
    }

    /// Queues a frame that `encode` appends to the queue, waiting for room while
    /// connected. `encode` runs once, under the lock; a returned [`Pending`] is registered
    /// under the id `encode` took last.
    pub(crate) async fn enqueue(
        &self,
        mut encode: impl FnMut(&mut State) -> Option<Pending>,
    ) -> Result<(), Error> {
        let shared = self.shared();
        loop {
            let listener;
            {
                let mut st = shared.lock();
                if st.closed {
                    return Err(Error::Closed);
                }
                let limit = shared.opts.max_queue_bytes;
                // A frame larger than the whole queue still goes alone into an empty one.
                if st.buf.is_empty() || st.buf.len() < limit {
                    let was_empty = st.buf.is_empty();
                    if let Some(p) = encode(&mut st) {
                        let id = st.next_id;
                        st.buf_reqs.push(id);
                        st.pending.insert(id, p);
                    }
                    drop(st);
                    if was_empty {
                        shared.queued.notify(1);
                    }
                    return Ok(());
                }
                if !st.connected {
                    return Err(Error::QueueFull { limit });
                }
                listener = shared.room.listen();
            }
            listener.await;
        }
    }

    pub(crate) fn check(&self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        Topic::new(topic).map_err(|source| Error::Topic {
            name: topic.to_string(),
            source,
        })?;
        if let Some(max) = self.max_payload() {
            if payload.len() > max {
                return Err(Error::PayloadTooLarge {
                    len: payload.len(),
                    max,
                });
            }
        }
        Ok(())
    }

    /// Publishes without waiting for the broker (fire and forget). Returns once queued;
    /// refusals by the broker are reported by the next [`Client::flush`].
    pub async fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        self.publish_with_key(topic, None, payload).await
    }

    /// [`Client::publish`] with a message key.
    pub async fn publish_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let payload = payload.as_ref();
        self.check(topic, payload)?;
        self.enqueue(|st| {
            Frame::Publish(Publish {
                req: 0,
                topic,
                key,
                payload,
            })
            .encode(&mut st.buf);
            None
        })
        .await
    }

    /// Publishes and waits until the broker stored the message; returns its offset.
    ///
    /// Stored means in the broker's memory (its ring), not on disk. If the connection
    /// drops after the message was sent, the result is [`Error::ConnectionLost`]: the
    /// message may or may not have been stored. With [`Options::resend_unconfirmed`] it
    /// is sent again after the reconnect instead. While disconnected it waits for the
    /// connection to come back: bound the wait with [`Client::watch_link`] if it must
    /// end.
    pub async fn publish_confirmed(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.publish_confirmed_with_key(topic, None, payload).await
    }

    /// [`Client::publish_confirmed`] with a message key.
    pub async fn publish_confirmed_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        self.publish_pipelined(topic, key, payload).await?.await
    }

    /// Queues a confirmed publish and returns at once with a [`Confirmation`] to await
    /// later, so many publishes can be in flight (their confirmations arrive in order).
    pub async fn publish_pipelined(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<Confirmation, Error> {
        let payload = payload.as_ref();
        self.check(topic, payload)?;
        let (tx, rx) = async_channel::bounded(1);
        let resend = self.shared().opts.resend_unconfirmed;
        self.enqueue(|st| {
            let req = st.take_id();
            let start = st.buf.len();
            Frame::Publish(Publish {
                req,
                topic,
                key,
                payload,
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Offset(tx.clone()),
                sent: false,
                frame: resend.then(|| st.buf[start..].to_vec()),
            })
        })
        .await?;
        Ok(Confirmation { rx: Box::pin(rx) })
    }

    /// Waits until everything queued so far reached the broker and was handled, then
    /// reports the first fire-and-forget publish the broker refused since the last flush.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.enqueue(|st| {
            let nonce = st.take_id();
            Frame::Ping(Ping {
                nonce: u64::from(nonce),
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Offset(tx.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))?;
        let mut st = self.shared().lock();
        if st.refused.is_empty() {
            Ok(())
        } else {
            let first = st.refused.remove(0);
            st.refused.clear();
            Err(first)
        }
    }

    /// The protocol version agreed with the broker on the last connection.
    pub fn protocol_version(&self) -> Option<u16> {
        self.shared().lock().broker.map(|b| b.version)
    }

    /// Fails with [`Error::Unsupported`] if the broker speaks a version below `needed`.
    pub(crate) fn need_version(&self, needed: u16, what: &'static str) -> Result<(), Error> {
        match self.protocol_version() {
            Some(broker) if broker < needed => Err(Error::Unsupported {
                broker,
                needed,
                what,
            }),
            _ => Ok(()),
        }
    }

    /// A management request (protocol 3): list or inspect topics and groups, purge or
    /// delete a topic, set its metadata, seek or delete a group. Returns the broker's
    /// answer, a JSON document (the same the HTTP API answers with; see `PROTOCOL.md`).
    /// A refusal is [`Error::Broker`] with the broker's code and message:
    /// [`ErrorCode::NOT_FOUND`](crate::ErrorCode::NOT_FOUND) for a topic or group that
    /// does not exist, [`ErrorCode::FORBIDDEN`](crate::ErrorCode::FORBIDDEN) without the
    /// token's `manage` rule. A broker that speaks protocol 2 or older is
    /// [`Error::Unsupported`], before anything is sent.
    ///
    /// ```no_run
    /// # async fn demo(client: mote_sdk::Client) -> Result<(), mote_sdk::Error> {
    /// use mote_sdk::ManageOp;
    /// let json = client.manage(ManageOp::TopicInfo { topic: "sensors/kitchen" }).await?;
    /// client.manage(ManageOp::Purge { topic: "sensors/kitchen" }).await?;
    /// # let _ = json; Ok(()) }
    /// ```
    ///
    /// Like a confirmed publish, a request whose connection drops before the answer is
    /// [`Error::ConnectionLost`]: it may or may not have been done.
    pub async fn manage(&self, op: ManageOp<'_>) -> Result<String, Error> {
        self.need_version(MANAGE_VERSION, "management")?;
        let (tx, rx) = async_channel::bounded(1);
        self.enqueue(|st| {
            let req = st.take_id();
            Frame::Manage(Manage {
                req,
                op: op.clone(),
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Json(tx.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// The broker's limits on what it keeps (protocol 5): frame, payload and key sizes,
    /// the memory ring of each topic (`ring_messages`, `ring_bytes`, and the bytes a
    /// message counts beyond its key and payload), all rings together (`memory`) and the
    /// disk budget, and with `topic` that topic's effective retention (persisted or not,
    /// max age, what it keeps on disk). With them a publisher can tell how far ahead of
    /// its subscribers it may run before they lose messages (see `PROTOCOL.md`, 8.4).
    /// A refusal is [`Error::Broker`] (`bad_topic`, or `forbidden` for a topic the token
    /// may neither publish to nor inspect); a broker that speaks protocol 4 or older is
    /// [`Error::Unsupported`], before anything is sent.
    ///
    /// ```no_run
    /// # async fn demo(client: mote_sdk::Client) -> Result<(), mote_sdk::Error> {
    /// let l = client.limits(Some("sensors/kitchen")).await?;
    /// let cost = 64 + u64::from(l.entry_overhead); // a 64-byte payload without a key
    /// let ring = l.ring_messages.min(l.ring_bytes / cost);
    /// println!("a subscriber may fall {ring} messages behind before it loses any");
    /// # Ok(()) }
    /// ```
    pub async fn limits(&self, topic: Option<&str>) -> Result<wire::Limits, Error> {
        self.need_version(wire::LIMITS_VERSION, "the limits query")?;
        let (tx, rx) = async_channel::bounded(1);
        self.enqueue(|st| {
            let req = st.take_id();
            Frame::GetLimits(wire::GetLimits { req, topic }).encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Limits(tx.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// Subscribes to `filter` starting at `from`; returns once the broker confirmed.
    /// While disconnected it waits for the connection to come back. [`Start::Time`] and
    /// [`Start::Ago`] need a broker of protocol 3 ([`Error::Unsupported`] otherwise).
    pub async fn subscribe(&self, filter: &str, from: Start) -> Result<Subscription, Error> {
        let shared = self.shared();
        let (tx, rx) = async_channel::bounded(shared.opts.subscription_buffer.max(1));
        let id = self
            .add_subscription(filter, from, Tx::Plain(tx), None)
            .await?;
        Ok(Subscription {
            id,
            rx: Box::pin(rx),
            shared: shared.clone(),
        })
    }

    /// Joins consumer group `group` reading `filter`: each message goes to one member of
    /// the group and must be acked (see [`crate::Delivery`]). Plain subscribers and other
    /// groups still get every message. Returns once the broker confirmed; after a
    /// reconnect the client joins again (what it held unacked went to the others).
    pub async fn subscribe_group(
        &self,
        filter: &str,
        group: Group,
    ) -> Result<GroupSubscription, Error> {
        let shared = self.shared();
        let (tx, rx) = async_channel::bounded(shared.opts.subscription_buffer.max(1));
        let from = group.from;
        let id = self
            .add_subscription(filter, from, Tx::Group(tx), Some(group))
            .await?;
        Ok(GroupSubscription {
            id,
            rx: Box::pin(rx),
            shared: shared.clone(),
        })
    }

    pub(crate) async fn add_subscription(
        &self,
        filter: &str,
        from: Start,
        tx: Tx,
        group: Option<Group>,
    ) -> Result<u32, Error> {
        Filter::new(filter).map_err(|source| Error::Topic {
            name: filter.to_string(),
            source,
        })?;
        if matches!(from, Start::Time(_) | Start::Ago(_)) {
            self.need_version(
                MANAGE_VERSION,
                "starting at a time (Start::Time, Start::Ago)",
            )?;
        }
        if group.as_ref().is_some_and(Group::needs_join) {
            self.need_version(MANAGE_VERSION, JOIN_WHAT)?;
        }
        let shared = self.shared();
        let (ack_tx, ack_rx) = async_channel::bounded(1);
        let id;
        {
            let mut st = shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            // Connected to an older broker since the check above: refused the same.
            if let (Some(b), Some(_)) = (st.broker, group.as_ref().filter(|g| g.needs_join())) {
                if st.connected && b.version < MANAGE_VERSION {
                    return Err(Error::Unsupported {
                        broker: b.version,
                        needed: MANAGE_VERSION,
                        what: JOIN_WHAT,
                    });
                }
            }
            id = st.take_id();
            // While disconnected the reconnect re-sends every subscription; no frame now.
            if st.connected {
                let was_empty = st.buf.is_empty();
                subscribe_frame(id, filter, from, group.as_ref(), &[]).encode(&mut st.buf);
                if was_empty {
                    shared.queued.notify(1);
                }
            }
            st.subs.insert(
                id,
                SubShared {
                    filter: filter.to_string(),
                    from,
                    tx,
                    group,
                    ack: Some(ack_tx),
                },
            );
            st.subs_gen += 1;
        }
        // Dropped on failure: the broker refused it, so nothing to undo.
        let guard = Unsubscribed {
            id,
            shared: shared.clone(),
        };
        match ack_rx.recv().await {
            Ok(Ok(())) => {
                std::mem::forget(guard);
                Ok(id)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Flushes, then closes the connection. Other handles see [`Error::Closed`].
    pub async fn close(self) -> Result<(), Error> {
        let r = self.flush().await;
        let shared = self.shared().clone();
        shared.lock().closed = true;
        shared.queued.notify(usize::MAX);
        shared.room.notify(usize::MAX);
        r
    }
}

/// What needs [`wire::JoinGroup`], for [`Error::Unsupported`].
pub(crate) const JOIN_WHAT: &str = "an ephemeral group or a group expiry";

/// The frame that asks for subscription `id`: a plain one, or a group membership (the
/// caller checked that the broker can take it: see [`Group::needs_join`]).
pub(crate) fn subscribe_frame<'a>(
    id: u32,
    filter: &'a str,
    from: Start,
    group: Option<&'a Group>,
    resume: &[wire::Resume<'a>],
) -> Frame<'a> {
    match group {
        Some(g) => g.join_frame(id, filter),
        None => Frame::Subscribe(Subscribe {
            sub: id,
            filter,
            from,
            resume: resume.to_vec(),
        }),
    }
}

/// Forgets a subscription whose caller stopped waiting for its confirmation (the future
/// was dropped): without it the entry would stay, and be re-sent on every reconnect.
struct Unsubscribed {
    id: u32,
    shared: Arc<Shared>,
}

impl Drop for Unsubscribed {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id);
    }
}

/// The broker's answer to a publish queued with [`Client::publish_pipelined`]: the
/// offset it stored the message at.
#[derive(Debug)]
#[must_use = "a confirmation does nothing unless awaited"]
pub struct Confirmation {
    rx: std::pin::Pin<Box<async_channel::Receiver<Result<u64, Error>>>>,
}

impl std::future::Future for Confirmation {
    type Output = Result<u64, Error>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use futures_lite::Stream;
        match self.rx.as_mut().poll_next(cx) {
            std::task::Poll::Ready(Some(r)) => std::task::Poll::Ready(r),
            std::task::Poll::Ready(None) => std::task::Poll::Ready(Err(Error::Closed)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// A live subscription: a stream of [`Event`]s. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u32,
    // Boxed: the receiver is not `Unpin`, and `Stream` needs to pin it.
    rx: std::pin::Pin<Box<async_channel::Receiver<Event>>>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next event, or `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await.ok()
    }

    /// The next event if one is already buffered.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// This subscription's id on the connection.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl futures_lite::Stream for Subscription {
    type Item = Event;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("addr", &self.opts.addr)
            .finish_non_exhaustive()
    }
}
