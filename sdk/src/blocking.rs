//! The client for plain threads: the same [`crate::Client`], each call blocking.
//!
//! ```no_run
//! use mote_sdk::blocking::Client;
//! use mote_sdk::{Event, Options, Start};
//! let client = Client::connect(Options::new("127.0.0.1:7270"))?;
//! let sub = client.subscribe("sensors/#", Start::Earliest)?;
//! client.publish("sensors/a", "1")?;
//! for event in sub {
//!     if let Event::Message(m) = event {
//!         println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
//!     }
//! }
//! # Ok::<(), mote_sdk::Error>(())
//! ```

use std::time::Duration;

use futures_lite::FutureExt;

use crate::{Error, Event, Group, GroupEvent, Options, Reply, Request, Start};

/// A blocking handle on a [`crate::Client`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
}

fn wait<T>(f: impl std::future::Future<Output = T>) -> T {
    async_io::block_on(f)
}

impl Client {
    /// Connects; fails if the first connection fails.
    pub fn connect(opts: Options) -> Result<Client, Error> {
        wait(crate::Client::connect(opts)).map(|inner| Client { inner })
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::publish`].
    pub fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        wait(self.inner.publish(topic, payload))
    }

    /// See [`crate::Client::publish_with_key`].
    pub fn publish_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        wait(self.inner.publish_with_key(topic, key, payload))
    }

    /// See [`crate::Client::publish_confirmed`].
    pub fn publish_confirmed(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<u64, Error> {
        wait(self.inner.publish_confirmed(topic, payload))
    }

    /// See [`crate::Client::publish_confirmed_with_key`].
    pub fn publish_confirmed_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<u64, Error> {
        wait(self.inner.publish_confirmed_with_key(topic, key, payload))
    }

    /// See [`crate::Client::flush`].
    pub fn flush(&self) -> Result<(), Error> {
        wait(self.inner.flush())
    }

    /// See [`crate::Client::subscribe`].
    pub fn subscribe(&self, filter: &str, from: Start) -> Result<Subscription, Error> {
        wait(self.inner.subscribe(filter, from)).map(|inner| Subscription { inner })
    }

    /// See [`crate::Client::subscribe_group`].
    pub fn subscribe_group(&self, filter: &str, group: Group) -> Result<GroupSubscription, Error> {
        wait(self.inner.subscribe_group(filter, group)).map(|inner| GroupSubscription { inner })
    }

    /// See [`crate::Client::manage`].
    pub fn manage(&self, op: crate::ManageOp<'_>) -> Result<String, Error> {
        wait(self.inner.manage(op))
    }

    /// See [`crate::Client::limits`].
    pub fn limits(&self, topic: Option<&str>) -> Result<crate::wire::Limits, Error> {
        wait(self.inner.limits(topic))
    }

    /// See [`crate::Client::protocol_version`].
    pub fn protocol_version(&self) -> Option<u16> {
        self.inner.protocol_version()
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// See [`crate::Client::link`].
    pub fn link(&self) -> crate::Link {
        self.inner.link()
    }

    /// See [`crate::Client::close`].
    pub fn close(self) -> Result<(), Error> {
        wait(self.inner.close())
    }

    /// See [`crate::Client::request`].
    pub fn request(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        wait(self.inner.request(topic, payload, timeout))
    }

    /// See [`crate::Client::request_with_key`].
    pub fn request_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        wait(self.inner.request_with_key(topic, key, payload, timeout))
    }

    /// See [`crate::Client::serve`].
    pub fn serve(&self, filter: &str) -> Result<Requests, Error> {
        wait(self.inner.serve(filter)).map(|inner| Requests { inner })
    }

    /// See [`crate::Client::serve_group`].
    pub fn serve_group(&self, filter: &str, group: Group) -> Result<Requests, Error> {
        wait(self.inner.serve_group(filter, group)).map(|inner| Requests { inner })
    }
}

/// A responder's blocking stream of requests; also an iterator.
#[derive(Debug)]
pub struct Requests {
    inner: crate::Requests,
}

impl Requests {
    /// The next request; `None` once the client is closed.
    pub fn recv(&mut self) -> Option<Request> {
        wait(self.inner.next())
    }

    /// The next request, waiting at most `timeout`: `Err(Error::Timeout)` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Request>, Error> {
        wait(async { Ok(self.inner.next().await) }.or(async {
            async_io::Timer::after(timeout).await;
            Err(Error::Timeout)
        }))
    }
}

impl Iterator for Requests {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.recv()
    }
}

/// A blocking subscription; also an iterator of events.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::Subscription,
}

impl Subscription {
    /// The next event; `None` once the client is closed.
    pub fn recv(&mut self) -> Option<Event> {
        wait(self.inner.next())
    }

    /// The next event, waiting at most `timeout`: `Err(Error::Timeout)` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        wait(async { Ok(self.inner.next().await) }.or(async {
            async_io::Timer::after(timeout).await;
            Err(Error::Timeout)
        }))
    }
}

impl Iterator for Subscription {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

/// A blocking group membership; also an iterator of events.
#[derive(Debug)]
pub struct GroupSubscription {
    inner: crate::GroupSubscription,
}

impl GroupSubscription {
    /// The next event; `None` once the client is closed.
    pub fn recv(&mut self) -> Option<GroupEvent> {
        wait(self.inner.next())
    }

    /// The next event, waiting at most `timeout`: `Err(Error::Timeout)` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<GroupEvent>, Error> {
        wait(async { Ok(self.inner.next().await) }.or(async {
            async_io::Timer::after(timeout).await;
            Err(Error::Timeout)
        }))
    }
}

impl Iterator for GroupSubscription {
    type Item = GroupEvent;
    fn next(&mut self) -> Option<GroupEvent> {
        self.recv()
    }
}

impl Client {
    /// See [`crate::Client::publish_prepared`].
    pub fn publish_prepared(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<Tx, Error> {
        self.publish_prepared_with_key(topic, None, payload)
    }

    /// See [`crate::Client::publish_prepared_with_key`].
    pub fn publish_prepared_with_key(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: impl AsRef<[u8]>,
    ) -> Result<Tx, Error> {
        wait(self.inner.publish_prepared_with_key(topic, key, payload)).map(|inner| Tx { inner })
    }

    /// See [`crate::Client::tx`].
    pub fn tx(&self, id: u64) -> Tx {
        Tx {
            inner: self.inner.tx(id),
        }
    }

    /// See [`crate::Client::tx_checks`].
    pub fn tx_checks(&self) -> TxChecks {
        TxChecks {
            inner: self.inner.tx_checks(),
        }
    }
}

/// A blocking [`crate::Tx`].
#[derive(Debug, Clone)]
pub struct Tx {
    inner: crate::Tx,
}

impl Tx {
    /// See [`crate::Tx::id`].
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// See [`crate::Tx::hex`].
    pub fn hex(&self) -> String {
        self.inner.hex()
    }

    /// See [`crate::Tx::commit`].
    pub fn commit(&self) -> Result<crate::Committed, Error> {
        wait(self.inner.commit())
    }

    /// See [`crate::Tx::rollback`].
    pub fn rollback(&self) -> Result<(), Error> {
        wait(self.inner.rollback())
    }
}

/// A blocking [`crate::TxCheck`].
#[derive(Debug, Clone)]
pub struct TxCheck {
    /// The transaction.
    pub tx: Tx,
    /// Its topic.
    pub topic: String,
    /// 1 for the first check.
    pub attempt: u32,
}

/// Blocking [`crate::TxChecks`]; also an iterator.
#[derive(Debug)]
pub struct TxChecks {
    inner: crate::TxChecks,
}

impl TxChecks {
    fn wrap(c: crate::TxCheck) -> TxCheck {
        TxCheck {
            tx: Tx { inner: c.tx },
            topic: c.topic,
            attempt: c.attempt,
        }
    }

    /// The next check; `None` once the client is closed.
    pub fn recv(&mut self) -> Option<TxCheck> {
        wait(self.inner.next()).map(Self::wrap)
    }

    /// The next check, waiting at most `timeout`: `Err(Error::Timeout)` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<TxCheck>, Error> {
        let c = wait(async { Ok(self.inner.next().await) }.or(async {
            async_io::Timer::after(timeout).await;
            Err(Error::Timeout)
        }))?;
        Ok(c.map(Self::wrap))
    }
}

impl Iterator for TxChecks {
    type Item = TxCheck;
    fn next(&mut self) -> Option<TxCheck> {
        self.recv()
    }
}

/// A blocking [`crate::Channel`]: one side of a peer channel.
///
/// ```no_run
/// use mote_sdk::blocking::{Channel, Client};
/// use mote_sdk::{ChannelEvent, Options};
/// let client = Client::connect(Options::new("127.0.0.1:7270"))?;
/// let mut door = Channel::listen(&client, "door")?;
/// while let Some(event) = door.recv() {
///     match event {
///         ChannelEvent::Message(m) => {
///             door.send(m.payload)?; // echo it back
///         }
///         ChannelEvent::Ended => break,
///         _ => {}
///     }
/// }
/// door.end()?;
/// # Ok::<(), mote_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct Channel {
    inner: crate::Channel,
}

impl Channel {
    /// See [`crate::Channel::connect`]: this side is `local`.
    pub fn connect(client: &Client, name: &str) -> Result<Channel, Error> {
        wait(crate::Channel::connect(&client.inner, name).open()).map(|inner| Channel { inner })
    }

    /// See [`crate::Channel::listen`]: this side is `remote`.
    pub fn listen(client: &Client, name: &str) -> Result<Channel, Error> {
        wait(crate::Channel::listen(&client.inner, name).open()).map(|inner| Channel { inner })
    }

    /// Opens channel `name` with explicit roles (see [`crate::channel::Open::with_roles`]).
    pub fn with_roles(
        client: &Client,
        name: &str,
        mine: &str,
        theirs: &str,
    ) -> Result<Channel, Error> {
        let open = crate::Channel::connect(&client.inner, name).with_roles(mine, theirs);
        wait(open.open()).map(|inner| Channel { inner })
    }

    /// The async channel underneath.
    pub fn as_async(&mut self) -> &mut crate::Channel {
        &mut self.inner
    }

    /// See [`crate::Channel::send`].
    pub fn send(&self, payload: impl AsRef<[u8]>) -> Result<u64, Error> {
        wait(self.inner.send(payload))
    }

    /// See [`crate::Channel::recv`].
    pub fn recv(&mut self) -> Option<crate::ChannelEvent> {
        wait(self.inner.recv())
    }

    /// The next event, waiting at most `timeout`: `Err(Error::Timeout)` if none came.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<crate::ChannelEvent>, Error> {
        wait(async { Ok(self.inner.recv().await) }.or(async {
            async_io::Timer::after(timeout).await;
            Err(Error::Timeout)
        }))
    }

    /// See [`crate::Channel::end`].
    pub fn end(self) -> Result<(), Error> {
        wait(self.inner.end())
    }
}
