//! Client SDK and wire protocol for the mote edge message broker.
//!
//! - [`Client`]: async client with automatic reconnect that resumes every subscription
//!   after the last offset it delivered; [`blocking`] for plain threads; [`Link`] to
//!   watch the connection and bound how long to wait for the broker.
//! - [`wire`]: the one definition of the TCP protocol (frames, framing, error codes),
//!   shared with the broker. `PROTOCOL.md` documents it byte by byte.
//! - [`topic`]: topic and filter validation and matching.
//! - [`Channel`]: a peer channel, two sides each consuming what the other sends once,
//!   in order, with presence events (built on `$chan/` topics and durable groups).
//! - [`Client::manage`]: list, inspect, purge and delete topics, seek and delete groups
//!   (protocol 3); the answers are the broker's JSON documents.
//! - [`Client::request`]: request/reply (protocol 4); [`Client::serve`] and
//!   [`Client::serve_group`] for responders.
//! - [`Client::publish_prepared`]: transactional publishes (protocol 4), committed or
//!   rolled back later ([`Tx`]), with the broker's check-backs ([`Client::tx_checks`]).
//! - [`Client::limits`]: the broker's ring, memory and disk limits and a topic's retention
//!   (protocol 5), to tell how far ahead of its subscribers a publisher may run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mote_sdk::Error> {
//! use mote_sdk::{Client, Options};
//! let client = Client::connect(Options::new("127.0.0.1:7270")).await?;
//! let offset = client.publish_confirmed("home/kitchen/temp", "21.5").await?;
//! println!("stored at offset {offset}");
//! # Ok(()) }
//! ```

extern crate alloc;

pub mod blocking;
pub mod channel;
mod client;
mod driver;
mod error;
mod group;
mod handshake;
mod link;
mod request;
pub mod secure;
pub mod topic;
mod tx;
pub mod wire;

pub use channel::{Channel, ChannelEvent};
pub use client::{Client, Confirmation, DEFAULT_TOKEN_NAME, Event, Message, Options, Subscription};
pub use error::Error;
pub use group::{Delivery, Group, GroupEvent, GroupSubscription};
pub use link::{Link, LinkWatch};
pub use request::{Reply, Request, Requests};
pub use topic::{Filter, Topic, TopicError};
pub use tx::{Committed, Tx, TxCheck, TxChecks};
pub use wire::{ErrorCode, ManageOp, Start};
