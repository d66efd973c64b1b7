//! Request/reply (protocol 4): [`Client::request`] asks and waits for one reply;
//! [`Client::serve`] and [`Client::serve_group`] give a responder a stream of
//! [`Request`]s to [`Request::reply`] to.
//!
//! ```no_run
//! # async fn demo(client: mote_sdk::Client) -> Result<(), mote_sdk::Error> {
//! use std::time::Duration;
//! // A responder (often in another process):
//! let mut requests = client.serve("svc/upper").await?;
//! let responder = async move {
//!     while let Some(r) = requests.next().await {
//!         let upper = r.payload.to_ascii_uppercase();
//!         let _ = r.reply(upper);
//!     }
//! };
//! # drop(responder);
//! // A requester:
//! match client.request("svc/upper", "hello", Duration::from_secs(5)).await {
//!     Ok(reply) => println!("{}", String::from_utf8_lossy(&reply.payload)),
//!     Err(mote_sdk::Error::NoResponders { topic }) => eprintln!("no responders on {topic}"),
//!     Err(mote_sdk::Error::Timeout) => eprintln!("no reply within 5 s"),
//!     Err(e) => eprintln!("{e}"),
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use crate::Start;
use crate::client::{Answer, Client, Message, Pending, Shared, Tx};
use crate::error::Error;
use crate::group::{Delivery, Group};
use crate::wire::{self, Frame, MAX_REQUEST_TIMEOUT_MS, REQUEST_VERSION};

/// How long past a request's timeout the client waits for the broker's own `timeout`
/// answer before giving up by itself (a request queued while disconnected reaches the
/// broker late; the broker's clock starts then).
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// What [`Client::request`] needs, for [`Error::Unsupported`].
const WHAT: &str = "request/reply";

/// The reply to a [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The responder's key, if any.
    pub key: Option<Vec<u8>>,
    /// The reply.
    pub payload: Vec<u8>,
}

/// A request delivered to a responder ([`Client::serve`], [`Client::serve_group`]).
///
/// [`Request::reply`] answers it; the first reply of any responder reaches the
/// requester, later ones are dropped by the broker. For a group member the delivery is
/// acked when the reply is queued; [`Request::decline`] (or dropping it, with a logged
/// warning) nacks it, so another member gets it if the requester still waits.
#[derive(Debug)]
#[must_use = "a request waits for its reply"]
pub struct Request {
    message: Message,
    inbox: u64,
    attempt: u32,
    delivery: Option<Delivery>,
    shared: Arc<Shared>,
}

impl std::ops::Deref for Request {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Request {
    /// The request as a message: topic, offset, key, payload.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// 1 on the first delivery, more on a group's redelivery.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The inbox the reply goes to (opaque).
    pub fn inbox(&self) -> u64 {
        self.inbox
    }

    /// Replies with `payload`. Queued at once (also while disconnected: the inbox is the
    /// broker's, not the connection's); the broker sends no confirmation.
    pub fn reply(self, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        self.reply_with_key(None, payload)
    }

    /// [`Request::reply`] with a key.
    pub fn reply_with_key(
        mut self,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let payload = payload.as_ref();
        {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(Error::Closed);
            }
            if let Some(max) = st.broker.map(|b| b.max_payload) {
                if payload.len() > max {
                    return Err(Error::PayloadTooLarge {
                        len: payload.len(),
                        max,
                    });
                }
            }
            let was_empty = st.buf.is_empty();
            Frame::Reply(wire::Reply {
                reply: self.inbox,
                key,
                payload,
            })
            .encode(&mut st.buf);
            drop(st);
            if was_empty {
                self.shared.queued.notify(1);
            }
        }
        match self.delivery.take() {
            // The reply went; a delivery of a connection gone was put back already.
            Some(d) => match d.ack() {
                Ok(()) | Err(Error::DeliveryExpired) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}

impl Request {
    /// Does not answer: a group request goes back to the group (nacked) at once, so
    /// another member may answer it while its requester still waits; for a plain
    /// subscriber this is the same as dropping it.
    pub fn decline(mut self) -> Result<(), Error> {
        match self.delivery.take() {
            Some(d) => match d.nack(Duration::ZERO) {
                Ok(()) | Err(Error::DeliveryExpired) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}

/// A responder's stream of [`Request`]s. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Requests {
    id: u32,
    rx: std::pin::Pin<Box<async_channel::Receiver<Request>>>,
    shared: Arc<Shared>,
}

impl Requests {
    /// The next request, or `None` once the client is closed (or the broker refused the
    /// subscription again after a reconnect).
    pub async fn next(&mut self) -> Option<Request> {
        self.rx.recv().await.ok()
    }

    /// The next request if one is already buffered.
    pub fn try_next(&mut self) -> Option<Request> {
        self.rx.try_recv().ok()
    }

    /// The subscription's id on the connection.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl futures_lite::Stream for Requests {
    type Item = Request;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Request>> {
        self.rx.as_mut().poll_next(cx)
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id);
    }
}

/// Builds the [`Request`] of an `Asked` frame for the driver.
pub(crate) fn incoming(
    message: Message,
    a: &wire::Asked<'_>,
    group: bool,
    conn: u64,
    shared: &Arc<Shared>,
) -> Request {
    let delivery = group.then(|| {
        Delivery::new(
            message.clone(),
            a.attempt,
            a.sub,
            a.tag,
            conn,
            shared.clone(),
        )
    });
    Request {
        message,
        inbox: a.reply,
        attempt: a.attempt,
        delivery,
        shared: shared.clone(),
    }
}

impl Client {
    /// Publishes a request to `topic` and waits for the first reply, at most `timeout`
    /// (cut to 5 minutes). The request is stored in the topic like a publish (the same
    /// rights and limits apply); any subscriber that speaks protocol 4 may answer.
    ///
    /// Fails with [`Error::NoResponders`] at once when nothing is subscribed to `topic`
    /// (no subscription, no group with a connected member), [`Error::Timeout`] when no
    /// reply came in time, [`Error::ConnectionLost`] when the connection dropped while
    /// it waited (the request may have been answered to the lost connection), and
    /// [`Error::Unsupported`] before anything is sent to a broker older than protocol 4.
    pub async fn request(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.request_with_key(topic, None, payload, timeout).await
    }

    /// [`Client::request`] with a key.
    pub async fn request_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        self.need_version(REQUEST_VERSION, WHAT)?;
        let payload = payload.as_ref();
        self.check(topic, payload)?;
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_REQUEST_TIMEOUT_MS);
        let (tx, rx) = async_channel::bounded(1);
        let name: Arc<str> = topic.into();
        let mut id = 0;
        self.enqueue(|st| {
            let req = st.take_id();
            id = req;
            Frame::Request(wire::Request {
                req,
                topic,
                timeout_ms,
                key,
                payload,
            })
            .encode(&mut st.buf);
            Some(Pending {
                tx: Answer::Reply(tx.clone(), name.clone()),
                sent: false,
                frame: None,
            })
        })
        .await?;
        let limit = Duration::from_millis(u64::from(timeout_ms)) + CLIENT_GRACE;
        let r = async { rx.recv().await.unwrap_or(Err(Error::Closed)) }
            .or(async {
                async_io::Timer::after(limit).await;
                Err(Error::Timeout)
            })
            .await;
        if matches!(r, Err(Error::Timeout)) {
            self.shared().lock().pending.remove(&id);
        }
        r
    }

    /// Answers requests to `filter` as a plain subscriber (every responder subscribed
    /// gets every request; the first reply wins). Starts with the requests published from
    /// now on; after a reconnect it resumes where it was, so requests made meanwhile that
    /// still wait are delivered. Needs protocol 4 ([`Error::Unsupported`] otherwise).
    pub async fn serve(&self, filter: &str) -> Result<Requests, Error> {
        self.serve_inner(filter, None).await
    }

    /// Answers requests to `filter` as a member of consumer group `group`: each request
    /// goes to one member, which acks it by replying (see [`Request`]).
    pub async fn serve_group(&self, filter: &str, group: Group) -> Result<Requests, Error> {
        self.serve_inner(filter, Some(group)).await
    }

    async fn serve_inner(&self, filter: &str, group: Option<Group>) -> Result<Requests, Error> {
        self.need_version(REQUEST_VERSION, WHAT)?;
        let shared = self.shared();
        let (tx, rx) = async_channel::bounded(shared.opts.subscription_buffer.max(1));
        let from = group.as_ref().map_or(Start::Latest, |g| g.from);
        let is_group = group.is_some();
        let id = self
            .add_subscription(
                filter,
                from,
                Tx::Requests {
                    tx,
                    group: is_group,
                },
                group,
            )
            .await?;
        Ok(Requests {
            id,
            rx: Box::pin(rx),
            shared: shared.clone(),
        })
    }
}

/// The error for request `topic`'s broker error `code`/`message`.
pub(crate) fn request_error(topic: &str, code: wire::ErrorCode, message: &str) -> Error {
    match code {
        wire::ErrorCode::NO_RESPONDERS => Error::NoResponders {
            topic: topic.to_string(),
        },
        wire::ErrorCode::TIMEOUT => Error::Timeout,
        _ => Error::Broker {
            code,
            message: message.to_string(),
        },
    }
}
