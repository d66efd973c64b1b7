//! Peer channels: a name that joins two peers with opposite roles, each side's messages
//! consumed once by the other, in order, waiting while the other side is away.
//!
//! A channel is built on plain topics and durable groups, nothing else (`PROTOCOL.md`,
//! "Channels"): the side with role `R` publishes to `$chan/<name>/<R>` and reads the
//! other role's topic through the durable group `chan:<name>:<R>` (one cursor, so each
//! message goes to this side once, acked when [`Channel::recv`] hands it over). The
//! broker publishes `up` / `down` to `$chan/<name>/<role>/reader` when that topic's reader
//! group gains its first member or loses its last, also when the peer dies without a
//! word (kill -9): that is [`ChannelEvent::RemoteConnected`] and
//! [`ChannelEvent::RemoteDisconnected`]. [`Channel::end`] sends an end mark after this
//! side's last message: the other side gets everything sent before it, then
//! [`ChannelEvent::Ended`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), mote_sdk::Error> {
//! use mote_sdk::{Channel, ChannelEvent, Client, Options};
//! let client = Client::connect(Options::new("127.0.0.1:7270")).await?;
//! // The other peer runs `Channel::listen(&client, "door").await?`.
//! let mut door = Channel::connect(&client, "door").await?;
//! door.send("open").await?;
//! while let Some(event) = door.recv().await {
//!     match event {
//!         ChannelEvent::Message(m) => println!("{}", String::from_utf8_lossy(&m.payload)),
//!         ChannelEvent::RemoteConnected => println!("the other side is here"),
//!         ChannelEvent::RemoteDisconnected => println!("the other side went away"),
//!         ChannelEvent::Ended => break,
//!         _ => {}
//!     }
//! }
//! door.end().await?;
//! # Ok(()) }
//! ```
//!
//! One peer per role: two processes opening the same channel with the same role share
//! its messages (as members of one group do) instead of each getting all of them.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::topic::CHANNEL_PREFIX;
use crate::wire::{ErrorCode, ManageOp};
use crate::{Client, Error, Event, Group, GroupEvent, GroupSubscription, Message, Start};
use crate::{Subscription, Topic};

/// Last level of a channel's presence topic `$chan/<name>/<role>/reader`.
pub const READER_LEVEL: &str = "reader";
/// Presence payload: the topic's reader is there.
pub const PRESENCE_UP: &[u8] = b"up";
/// Presence payload: the topic's reader is gone.
pub const PRESENCE_DOWN: &[u8] = b"down";
/// Key of the end mark [`Channel::end`] publishes after a side's last message.
pub const END_KEY: &[u8] = b"$end";
/// Longest channel name.
pub const MAX_NAME: usize = 32;
/// Longest role.
pub const MAX_ROLE: usize = 24;
/// Role of the side that [`Channel::connect`]s, by default.
pub const CONNECT_ROLE: &str = "local";
/// Role of the side that [`Channel::listen`]s, by default.
pub const LISTEN_ROLE: &str = "remote";
/// A message handed out and not acked within this is delivered again (and dropped as a
/// repeat if this side already has it).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks a channel name or role: 1 to `max` of `A-Z a-z 0-9 . _ -`, so that it is one
/// topic level and `chan:<name>:<role>` is a group name nobody else reads by accident.
fn check_part(what: &'static str, text: &str, max: usize) -> Result<(), Error> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(Error::Channel {
        name: crate::topic::shown(text),
        reason: match what {
            "name" => "a channel name is 1 to 32 characters of A-Z a-z 0-9 . _ -",
            _ => "a role is 1 to 24 characters of A-Z a-z 0-9 . _ -",
        },
    })
}

/// Checks a channel's name and roles as [`Open::open`] does, without a broker: a name
/// and roles of 1 to [`MAX_NAME`] / [`MAX_ROLE`] characters of `A-Z a-z 0-9 . _ -`, the
/// two roles different. Fails with [`Error::Channel`].
pub fn check(name: &str, mine: &str, theirs: &str) -> Result<(), Error> {
    check_part("name", name, MAX_NAME)?;
    check_part("role", mine, MAX_ROLE)?;
    check_part("role", theirs, MAX_ROLE)?;
    if mine == theirs {
        return Err(Error::Channel {
            name: crate::topic::shown(mine),
            reason: "the two roles of a channel must differ",
        });
    }
    Ok(())
}

/// The topic the side with `role` publishes to: `$chan/<name>/<role>`.
pub fn topic(name: &str, role: &str) -> String {
    format!("{CHANNEL_PREFIX}{name}/{role}")
}

/// The durable group through which the side with `role` reads the other side's topic.
pub fn group_name(name: &str, role: &str) -> String {
    format!("chan:{name}:{role}")
}

/// What a channel yields. More kinds may come in later versions: match with a `_` arm.
/// Messages come in order; presence changes come in order among themselves, but not in
/// order with the messages (they are read through another subscription): the remote's
/// first message may come before the `RemoteConnected` of its arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A message from the other side (its topic is `$chan/<name>/<their role>`).
    Message(Message),
    /// The other side is reading the channel: when it joins, or at once when it already
    /// was when this side opened the channel.
    RemoteConnected,
    /// The other side went away (closed, its connection lost, or its process killed).
    /// What this side sends waits for it.
    RemoteDisconnected,
    /// The other side ended the channel: everything it sent before came first. This is
    /// the last event; [`Channel::send`] fails with [`Error::ChannelEnded`] from now on.
    Ended,
    /// The other side's messages fell behind the broker's ring (a side away longer
    /// than the topic keeps): `missed` of them are gone, and delivery goes on after.
    Missed {
        /// How many were skipped.
        missed: u64,
    },
    /// The broker refused this side's membership after a reconnect (a reload narrowed
    /// the token's rules). This is the last event.
    Refused {
        /// The broker's code.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
}

/// A channel being opened; `.await` it, after [`Open::with_roles`] if the default roles
/// do not fit.
#[must_use = "a channel is opened when this is awaited"]
#[derive(Debug)]
pub struct Open {
    client: Client,
    name: String,
    mine: String,
    theirs: String,
}

impl Open {
    /// Explicit roles: this side is `mine`, the other side `theirs` (and opens the
    /// channel with them the other way round).
    pub fn with_roles(mut self, mine: impl Into<String>, theirs: impl Into<String>) -> Open {
        self.mine = mine.into();
        self.theirs = theirs.into();
        self
    }

    /// Opens the channel: subscribes to the other side's presence, then joins the group
    /// that reads its topic. Fails with [`Error::Channel`] for a bad name or roles, and
    /// like [`Client::subscribe_group`] otherwise (a token needs `subscribe` on
    /// `$chan/<name>/#` and `publish` on `$chan/<name>/<mine>`).
    pub async fn open(self) -> Result<Channel, Error> {
        check(&self.name, &self.mine, &self.theirs)?;
        let send_topic = topic(&self.name, &self.mine);
        let read_topic = topic(&self.name, &self.theirs);
        // Checked here so that a bad name never reaches the broker.
        Topic::new(&send_topic).map_err(|source| Error::Topic {
            name: send_topic.clone(),
            source,
        })?;
        let presence = self
            .client
            .subscribe(&format!("{send_topic}/{READER_LEVEL}"), Start::Last(1))
            .await?;
        let group = Group::new(group_name(&self.name, &self.mine))
            .from(Start::Earliest)
            .ack_timeout(ACK_TIMEOUT);
        let reader = self.client.subscribe_group(&read_topic, group).await?;
        Ok(Channel {
            client: self.client,
            name: self.name,
            mine: self.mine,
            send_topic,
            read_topic,
            reader: Some(reader),
            presence: Some(presence),
            remote: None,
            last_offset: None,
            ended: false,
            clean_up_due: false,
            flip: false,
        })
    }
}

impl IntoFuture for Open {
    type Output = Result<Channel, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Channel, Error>> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.open())
    }
}

/// One side of a peer channel. Dropping it leaves the channel open: the other side sees
/// [`ChannelEvent::RemoteDisconnected`], and what it sends waits for this side to open
/// the channel again. [`Channel::end`] closes it for both.
#[derive(Debug)]
pub struct Channel {
    client: Client,
    name: String,
    mine: String,
    send_topic: String,
    read_topic: String,
    reader: Option<GroupSubscription>,
    presence: Option<Subscription>,
    /// What the last presence message said of the other side.
    remote: Option<bool>,
    /// Offset of the last message handed over: a redelivery (an ack lost with the
    /// connection) at or below it is acked and dropped, so each comes once.
    last_offset: Option<u64>,
    ended: bool,
    /// The other side ended the channel and this side's state is still to remove.
    clean_up_due: bool,
    /// Which of the two streams is polled first, alternated so neither starves.
    flip: bool,
}

enum Side {
    Data(Option<GroupEvent>),
    Presence(Option<Event>),
}

impl Channel {
    /// Opens channel `name` as the side with role `local` (the other side listens as
    /// `remote`). Await it, or call [`Open::with_roles`] first.
    pub fn connect(client: &Client, name: &str) -> Open {
        Open {
            client: client.clone(),
            name: name.to_string(),
            mine: CONNECT_ROLE.into(),
            theirs: LISTEN_ROLE.into(),
        }
    }

    /// Opens channel `name` as the side with role `remote` (the other side connects as
    /// `local`).
    pub fn listen(client: &Client, name: &str) -> Open {
        Open {
            client: client.clone(),
            name: name.to_string(),
            mine: LISTEN_ROLE.into(),
            theirs: CONNECT_ROLE.into(),
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's role.
    pub fn role(&self) -> &str {
        &self.mine
    }

    /// Whether the other side is reading the channel, as last heard from the broker
    /// (`None`: nothing heard yet, it never opened the channel).
    pub fn remote_connected(&self) -> Option<bool> {
        self.remote
    }

    /// Sends `payload` to the other side; returns its offset once the broker stored it.
    /// Fails with [`Error::ChannelEnded`] after the channel ended.
    pub async fn send(&self, payload: impl AsRef<[u8]>) -> Result<u64, Error> {
        if self.ended {
            return Err(Error::ChannelEnded);
        }
        self.client
            .publish_confirmed(&self.send_topic, payload)
            .await
    }

    /// The next message or event; `None` after [`ChannelEvent::Ended`] or
    /// [`ChannelEvent::Refused`], or once the client is closed. A message is acked
    /// when it is returned here.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        loop {
            if self.ended {
                if std::mem::take(&mut self.clean_up_due) {
                    self.clean_up().await;
                }
                return None;
            }
            let (Some(reader), Some(presence)) = (self.reader.as_mut(), self.presence.as_mut())
            else {
                return None;
            };
            self.flip = !self.flip;
            let data = async { Side::Data(reader.next().await) };
            let seen = async { Side::Presence(presence.next().await) };
            let side = if self.flip {
                futures_lite::future::or(data, seen).await
            } else {
                futures_lite::future::or(seen, data).await
            };
            match side {
                Side::Data(None) | Side::Presence(None) => return None,
                Side::Data(Some(ev)) => {
                    if let Some(out) = self.on_data(ev) {
                        return Some(out);
                    }
                }
                Side::Presence(Some(Event::Message(m))) => {
                    let up = m.payload == PRESENCE_UP;
                    let was = self.remote.replace(up);
                    match (was, up) {
                        (Some(w), _) if w == up => {}
                        (_, true) => return Some(ChannelEvent::RemoteConnected),
                        (Some(true), false) => return Some(ChannelEvent::RemoteDisconnected),
                        _ => {}
                    }
                }
                Side::Presence(Some(_)) => {}
            }
        }
    }

    fn on_data(&mut self, ev: GroupEvent) -> Option<ChannelEvent> {
        match ev {
            GroupEvent::Message(mut d) => {
                if d.key.as_deref() == Some(END_KEY) {
                    let _ = d.ack();
                    // Removing this side's state waits for `end()` or the next
                    // `recv()`: returning now keeps `recv` safe to cancel.
                    self.ended = true;
                    self.clean_up_due = true;
                    return Some(ChannelEvent::Ended);
                }
                if self.last_offset.is_some_and(|last| d.offset <= last) {
                    let _ = d.ack();
                    return None;
                }
                self.last_offset = Some(d.offset);
                let m = d.take_message();
                // An ack that fails (the connection is gone) brings the message back:
                // dropped above then.
                let _ = d.ack();
                Some(ChannelEvent::Message(m))
            }
            GroupEvent::Lag { missed, .. } => Some(ChannelEvent::Missed { missed }),
            GroupEvent::Refused { code, message } => {
                self.reader = None;
                Some(ChannelEvent::Refused { code, message })
            }
            _ => None,
        }
    }

    /// Ends the channel for both sides: publishes the end mark after this side's last
    /// message (the other side gets what came before, then [`ChannelEvent::Ended`], at
    /// once or when it comes back), leaves, and removes this side's state: its group
    /// and the topic it read (what the other side sent that this side had not received
    /// is dropped with it) and that topic's presence topic. The other side removes the
    /// rest when it has read the end mark (in its `end()`, or its next `recv()` after
    /// [`ChannelEvent::Ended`]; no second end mark is sent then). Removing needs the
    /// token's `manage` rule on `$chan/<name>/#`; without it the groups go after the
    /// broker's `group-expiry` without members and the topics by their retention or
    /// `idle-expiry`, and `end()` still succeeds.
    pub async fn end(mut self) -> Result<(), Error> {
        if !self.ended {
            self.client
                .publish_confirmed_with_key(&self.send_topic, Some(END_KEY), b"")
                .await?;
            self.ended = true;
            self.clean_up_due = true;
        }
        if self.clean_up_due {
            self.clean_up().await;
        }
        Ok(())
    }

    /// Leaves, then deletes what this side read: its group, the other side's topic and
    /// the presence topic of that topic's reader (this side). Refusals are logged.
    async fn clean_up(&mut self) {
        // Leaving first: the broker says `down` before the group goes, and the deletes
        // below come after the unsubscribe on the same connection.
        self.reader = None;
        self.presence = None;
        let group = group_name(&self.name, &self.mine);
        let presence = format!("{}/{READER_LEVEL}", self.read_topic);
        let ops = [
            ManageOp::DeleteGroup { group: &group },
            ManageOp::DeleteTopic {
                topic: &self.read_topic,
            },
            ManageOp::DeleteTopic { topic: &presence },
        ];
        for op in ops {
            if let Err(e) = self.client.manage(op).await {
                if e.code() != Some(ErrorCode::NOT_FOUND) {
                    log::debug!("channel {}: state left to expire: {e}", self.name);
                }
            }
        }
    }
}
