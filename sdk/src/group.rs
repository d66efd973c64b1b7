//! Consumer groups: members of one group share a stream, each message going to one of
//! them, and every message is acked or nacked.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mote_sdk::Error> {
//! use std::time::Duration;
//! use mote_sdk::{Client, Group, GroupEvent, Options};
//! let client = Client::connect(Options::new("127.0.0.1:7270")).await?;
//! let mut jobs = client
//!     .subscribe_group("jobs/#", Group::new("workers").ack_timeout(Duration::from_secs(10)))
//!     .await?;
//! while let Some(event) = jobs.next().await {
//!     if let GroupEvent::Message(d) = event {
//!         if d.payload.is_empty() {
//!             d.nack(Duration::from_secs(1))?; // try again in a second
//!         } else {
//!             println!("{} {}", d.topic, String::from_utf8_lossy(&d.payload));
//!             d.ack()?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::Start;
use crate::client::{Message, Shared};
use crate::error::Error;
use crate::wire::{Ack, Durability, Frame, JoinGroup, JoinSettings, Nack, SubscribeGroup};

/// Which group to join, and the settings it gets if this member creates it.
///
/// Settings left unset take the broker's defaults (ack timeout 30 s, 5 deliveries,
/// prefetch 64, durable until 7 days without members); a group named in the broker's
/// config file takes the config's settings instead.
///
/// [`Group::ephemeral`] and [`Group::expiry`] need a broker of protocol 3 (the client
/// joins with [`JoinGroup`](crate::wire::JoinGroup) then); with an older broker
/// [`Client::subscribe_group`](crate::Client::subscribe_group) fails with
/// [`Error::Unsupported`], and a membership made again after a reconnect to an older
/// broker ends with [`GroupEvent::Refused`] (code `unsupported_version`). Without them
/// the client joins with `SubscribeGroup`, which every broker knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub(crate) name: String,
    pub(crate) from: Start,
    pub(crate) settings: JoinSettings,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

impl Group {
    /// Group `name` (1 to 64 characters, no `/`, `+`, `#`, `$`). A new group starts at
    /// the latest message.
    pub fn new(name: impl Into<String>) -> Group {
        Group {
            name: name.into(),
            from: Start::Latest,
            settings: JoinSettings::default(),
        }
    }

    /// Where a new group starts in each topic (an existing group keeps its position).
    pub fn from(mut self, from: Start) -> Group {
        self.from = from;
        self
    }

    /// A message not acked within `d` is delivered again.
    pub fn ack_timeout(mut self, d: Duration) -> Group {
        self.settings.ack_timeout_ms = millis(d);
        self
    }

    /// After `n` deliveries a message goes to the dead-letter topic
    /// `$dead/<group>/<topic>` instead of coming back.
    pub fn max_deliveries(mut self, n: u32) -> Group {
        self.settings.max_deliveries = n.max(1);
        self
    }

    /// At most `n` unacked messages per member.
    pub fn prefetch(mut self, n: u32) -> Group {
        self.settings.prefetch = n.max(1);
        self
    }

    /// `true`: the group keeps its position while no member is connected (what the
    /// broker does by default, unless its config opts the group out). `false` asks for the
    /// broker's default, as it always did on the wire (`SubscribeGroup.durable`); for a
    /// group that goes with its last member use [`Group::ephemeral`].
    pub fn durable(mut self, durable: bool) -> Group {
        self.settings.durability = if durable {
            Durability::Durable
        } else {
            Durability::Default
        };
        self
    }

    /// A group that goes with its last member: its position, and what it had not
    /// delivered, are dropped when no member is left (a broker whose config names the
    /// group as durable keeps it anyway). Needs a broker of protocol 3.
    pub fn ephemeral(mut self) -> Group {
        self.settings.durability = Durability::Ephemeral;
        self
    }

    /// A durable group is removed after `d` without members, if that is shorter than the
    /// broker's `group-expiry` (7 days by default; a longer one is cut to it, and the
    /// broker's config for the group wins). Needs a broker of protocol 3.
    pub fn expiry(mut self, d: Duration) -> Group {
        self.settings.expiry_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// Whether joining needs [`JoinGroup`](crate::wire::JoinGroup) (protocol 3): an
    /// ephemeral group or an expiry was asked for.
    pub(crate) fn needs_join(&self) -> bool {
        self.settings.durability == Durability::Ephemeral || self.settings.expiry_ms > 0
    }

    /// The frame that joins this group as subscription `sub`: `JoinGroup` when needed
    /// (the caller checked the broker's version), else `SubscribeGroup`.
    pub(crate) fn join_frame<'a>(&'a self, sub: u32, filter: &'a str) -> Frame<'a> {
        if self.needs_join() {
            Frame::JoinGroup(JoinGroup {
                sub,
                filter,
                group: &self.name,
                from: self.from,
                settings: self.settings,
            })
        } else {
            Frame::SubscribeGroup(SubscribeGroup {
                sub,
                filter,
                group: &self.name,
                from: self.from,
                settings: self.settings.group_settings(),
            })
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a group subscription yields. More kinds of events may come in later versions:
/// match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A message for this member: [`Delivery::ack`] or [`Delivery::nack`] it.
    Message(Delivery),
    /// The group fell behind the broker's ring: `missed` messages of `topic` were never
    /// delivered to any member, and the group continues at offset `next`.
    Lag {
        /// The topic.
        topic: Arc<str>,
        /// How many were skipped.
        missed: u64,
        /// Next offset delivered.
        next: u64,
    },
    /// The broker refused the membership when the client joined again after a reconnect
    /// (for example a reload narrowed the token's access rules). The subscription has
    /// ended: this is its last event.
    Refused {
        /// The broker's code, such as [`ErrorCode::FORBIDDEN`](crate::ErrorCode::FORBIDDEN).
        code: crate::wire::ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// `topic` was deleted (protocol 3; see [`crate::Event::Removed`]). The membership
    /// stays; a topic created again under the name continues at offset `next`.
    Removed {
        /// The topic.
        topic: Arc<str>,
        /// Messages it stored that the group had not delivered, gone with it.
        unread: u64,
        /// Where it continues if it is created again.
        next: u64,
    },
}

/// A message from a group, to be acked or nacked.
///
/// Dropping it without either nacks it (it is delivered again at once) and logs a
/// warning: a message is never silently taken and forgotten.
#[derive(Debug)]
#[must_use = "a delivery must be acked or nacked; dropping it nacks it"]
pub struct Delivery {
    message: Message,
    attempt: u32,
    sub: u32,
    tag: u64,
    /// The connection it came on: a tag means nothing on another.
    conn: u64,
    settled: bool,
    shared: Arc<Shared>,
}

impl std::ops::Deref for Delivery {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}

impl Delivery {
    pub(crate) fn new(
        message: Message,
        attempt: u32,
        sub: u32,
        tag: u64,
        conn: u64,
        shared: Arc<Shared>,
    ) -> Delivery {
        Delivery {
            message,
            attempt,
            sub,
            tag,
            conn,
            settled: false,
            shared,
        }
    }

    /// 1 on the first delivery, more when the message came back (nacked, timed out, or
    /// left by a member that went away).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Moves the message out (its topic and offset stay, for the drop warning).
    pub(crate) fn take_message(&mut self) -> Message {
        let left = Message {
            topic: self.message.topic.clone(),
            offset: self.message.offset,
            time_ms: self.message.time_ms,
            key: None,
            payload: Vec::new(),
        };
        std::mem::replace(&mut self.message, left)
    }

    /// Done with the message: the broker will not deliver it again.
    ///
    /// Queued at once; the broker's answer to a late ack (after the ack timeout gave the
    /// message to another member) is reported by the next [`crate::Client::flush`].
    /// Fails with [`Error::DeliveryExpired`] if the connection the message came on is
    /// gone: the broker has already put it back for another delivery.
    pub fn ack(mut self) -> Result<(), Error> {
        self.settle(|sub, tag| Frame::Ack(Ack { sub, tag }))
    }

    /// Gives the message back, to be delivered again (to any member) after `delay`,
    /// unless it has had its group's `max_deliveries`: then it goes to the dead-letter
    /// topic. Fails like [`Delivery::ack`].
    pub fn nack(mut self, delay: Duration) -> Result<(), Error> {
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.settle(|sub, tag| Frame::Nack(Nack { sub, tag, delay_ms }))
    }

    fn settle(&mut self, frame: impl FnOnce(u32, u64) -> Frame<'static>) -> Result<(), Error> {
        self.settled = true;
        let mut st = self.shared.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if !st.connected || st.conn_gen != self.conn || !st.subs.contains_key(&self.sub) {
            return Err(Error::DeliveryExpired);
        }
        let was_empty = st.buf.is_empty();
        frame(self.sub, self.tag).encode(&mut st.buf);
        drop(st);
        if was_empty {
            self.shared.queued.notify(1);
        }
        Ok(())
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let expired = self.settle(|sub, tag| {
            Frame::Nack(Nack {
                sub,
                tag,
                delay_ms: 0,
            })
        });
        if expired.is_ok() {
            log::warn!(
                "a message of {} (offset {}) was dropped without ack or nack: nacked, it will be delivered again",
                self.message.topic,
                self.message.offset
            );
        }
    }
}

/// A live group membership: a stream of [`GroupEvent`]s. Dropping it leaves the group;
/// what it held unacked goes to the other members at once.
#[derive(Debug)]
pub struct GroupSubscription {
    pub(crate) id: u32,
    pub(crate) rx: std::pin::Pin<Box<async_channel::Receiver<GroupEvent>>>,
    pub(crate) shared: Arc<Shared>,
}

impl GroupSubscription {
    /// The next event, or `None` once the client is closed.
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.rx.recv().await.ok()
    }

    /// The next event if one is already buffered.
    pub fn try_next(&mut self) -> Option<GroupEvent> {
        self.rx.try_recv().ok()
    }

    /// This subscription's id on the connection.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl futures_lite::Stream for GroupSubscription {
    type Item = GroupEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<GroupEvent>> {
        self.rx.as_mut().poll_next(cx)
    }
}

impl Drop for GroupSubscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.id);
        // Deliveries still buffered are settled by leaving the group: the broker puts
        // them back for the other members. Mark them so dropping them sends nothing.
        while let Ok(ev) = self.rx.try_recv() {
            if let GroupEvent::Message(mut d) = ev {
                d.settled = true;
            }
        }
    }
}
