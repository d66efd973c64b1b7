//! The wire protocol: frame types and the length-prefixed framing around them.
//!
//! Every frame on a TCP connection is
//!
//! ```text
//! length: varint u32 (LEB128, 1..=5 bytes)   number of bytes that follow
//! tag:    u8                                  which frame (see [`tag`])
//! body:   postcard encoding of the frame's struct
//! ```
//!
//! The tag is the postcard varint of the frame enum's variant index; every tag is below
//! `0x80`, so it is always one byte. Tags are append-only: a tag once given never changes
//! meaning. `0x10..=0x1f` are reserved for the token handshake and encrypted records,
//! `0x20..=0x2f` for consumer groups. `sdk/PROTOCOL.md` documents every frame byte by byte.
//!
//! [`decode`] is pure: it borrows from the input, tells "need more bytes" from "broken
//! frame", and checks the length against the caller's limit before anything else.

use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Newest protocol version spoken by this crate. Version 2 adds [`Frame::Evicted`];
/// version 3 adds [`Frame::Manage`], [`Frame::Managed`], [`Frame::Removed`],
/// [`Frame::JoinGroup`] and [`Start::Time`] / [`Start::Ago`]; version 4 adds request/reply
/// ([`Frame::Request`], [`Frame::Asked`], [`Frame::Reply`], [`Frame::Response`]) and
/// transactional publishes ([`Frame::Prepare`], [`Frame::Prepared`], [`Frame::Settle`],
/// [`Frame::Settled`], [`Frame::TxCheck`]); version 5 adds the limits query
/// ([`Frame::GetLimits`], [`Frame::Limits`]). Every frame of a version is the same in the
/// next one, and a connection that agreed on an older version never sees a newer frame.
pub const PROTOCOL_VERSION: u16 = 5;
/// First protocol version with management ([`Frame::Manage`]), [`Frame::Removed`],
/// [`Frame::JoinGroup`] and [`Start::Time`] / [`Start::Ago`].
pub const MANAGE_VERSION: u16 = 3;
/// First protocol version with request/reply and transactional publishes.
pub const REQUEST_VERSION: u16 = 4;
/// First protocol version with the limits query ([`Frame::GetLimits`], [`Frame::Limits`]).
pub const LIMITS_VERSION: u16 = 5;
/// Longest request timeout a client may ask for, in milliseconds (5 minutes); a longer
/// one is cut to this.
pub const MAX_REQUEST_TIMEOUT_MS: u32 = 300_000;
/// Oldest protocol version this crate can speak.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// First bytes of every [`Hello`]: tells a mote broker from anything else on the port.
pub const MAGIC: [u8; 4] = *b"mote";
/// Default TCP port of the broker.
pub const DEFAULT_PORT: u16 = 7270;
/// Largest possible length prefix, in bytes.
pub const MAX_LENGTH_PREFIX: usize = 5;
/// Longest message key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Bytes of [`Hello::client`] the broker keeps (it cuts a longer name on a character
/// boundary); the SDK sends at most this many.
pub const MAX_CLIENT_NAME: usize = 64;

/// Frame tags: the first byte after the length prefix.
pub mod tag {
    /// [`Hello`](super::Hello), client → broker, first frame of a connection.
    pub const HELLO: u8 = 0x00;
    /// [`Welcome`](super::Welcome), broker → client, answer to `Hello`.
    pub const WELCOME: u8 = 0x01;
    /// [`Ping`](super::Ping), either direction.
    pub const PING: u8 = 0x02;
    /// [`Ping`](super::Ping) echoed back, either direction.
    pub const PONG: u8 = 0x03;
    /// [`ErrorFrame`](super::ErrorFrame), broker → client.
    pub const ERROR: u8 = 0x04;
    /// [`Publish`](super::Publish), client → broker.
    pub const PUBLISH: u8 = 0x05;
    /// [`Published`](super::Published), broker → client, confirms a publish.
    pub const PUBLISHED: u8 = 0x06;
    /// [`Subscribe`](super::Subscribe), client → broker.
    pub const SUBSCRIBE: u8 = 0x07;
    /// [`Subscribed`](super::Subscribed), broker → client.
    pub const SUBSCRIBED: u8 = 0x08;
    /// [`Unsubscribe`](super::Unsubscribe), client → broker.
    pub const UNSUBSCRIBE: u8 = 0x09;
    /// [`Unsubscribe`](super::Unsubscribe) confirmed, broker → client.
    pub const UNSUBSCRIBED: u8 = 0x0a;
    /// [`Message`](super::Message), broker → client, one delivered message.
    pub const MESSAGE: u8 = 0x0b;
    /// [`Lag`](super::Lag), broker → client, messages a subscriber missed.
    pub const LAG: u8 = 0x0c;
    /// [`Lag`](super::Lag) body under another tag, broker → client, version 2 and later:
    /// messages evicted by the topic's retention before the subscription asked for them.
    pub const EVICTED: u8 = 0x0d;
    /// [`Manage`](super::Manage), client → broker, version 3 and later: a management
    /// request.
    pub const MANAGE: u8 = 0x0e;
    /// [`Managed`](super::Managed), broker → client, version 3 and later: its answer.
    pub const MANAGED: u8 = 0x0f;
    /// [`AuthChallenge`](super::AuthChallenge), broker → client, instead of `Welcome`
    /// when the broker requires a token.
    pub const AUTH_CHALLENGE: u8 = 0x10;
    /// [`AuthInit`](super::AuthInit), client → broker: token name, nonce and proof.
    pub const AUTH_INIT: u8 = 0x11;
    /// [`AuthProof`](super::AuthProof), broker → client: its proof. Records follow.
    pub const AUTH_PROOF: u8 = 0x12;
    /// Tags reserved for the token handshake (`0x10..=0x12` are taken).
    pub const RESERVED_SECURITY: core::ops::RangeInclusive<u8> = 0x10..=0x1f;
    /// [`SubscribeGroup`](super::SubscribeGroup), client → broker: join a consumer group.
    pub const SUBSCRIBE_GROUP: u8 = 0x20;
    /// [`GroupMessage`](super::GroupMessage), broker → client: a message to ack.
    pub const GROUP_MESSAGE: u8 = 0x21;
    /// [`Ack`](super::Ack), client → broker.
    pub const ACK: u8 = 0x22;
    /// [`Nack`](super::Nack), client → broker.
    pub const NACK: u8 = 0x23;
    /// [`JoinGroup`](super::JoinGroup), client → broker, version 3 and later: join a
    /// consumer group with every setting (durability and expiry too).
    pub const JOIN_GROUP: u8 = 0x24;
    /// Tags reserved for consumer groups (`0x20..=0x24` are taken).
    pub const RESERVED_GROUPS: core::ops::RangeInclusive<u8> = 0x20..=0x2f;
    /// [`Removed`](super::Removed), broker → client, version 3 and later: a topic the
    /// subscription read was deleted. (The first tag after the reserved ranges.)
    pub const REMOVED: u8 = 0x30;
    /// [`Request`](super::Request), client → broker, version 4 and later.
    pub const REQUEST: u8 = 0x31;
    /// [`Asked`](super::Asked), broker → client (a responder), version 4 and later.
    pub const ASKED: u8 = 0x32;
    /// [`Reply`](super::Reply), client (a responder) → broker, version 4 and later.
    pub const REPLY: u8 = 0x33;
    /// [`Response`](super::Response), broker → client (the requester), version 4 and later.
    pub const RESPONSE: u8 = 0x34;
    /// [`Prepare`](super::Prepare), client → broker, version 4 and later.
    pub const PREPARE: u8 = 0x35;
    /// [`Prepared`](super::Prepared), broker → client, version 4 and later.
    pub const PREPARED: u8 = 0x36;
    /// [`Settle`](super::Settle), client → broker, version 4 and later.
    pub const SETTLE: u8 = 0x37;
    /// [`Settled`](super::Settled), broker → client, version 4 and later.
    pub const SETTLED: u8 = 0x38;
    /// [`TxCheck`](super::TxCheck), broker → client (the producer), version 4 and later.
    pub const TX_CHECK: u8 = 0x39;
    /// [`GetLimits`](super::GetLimits), client → broker, version 5 and later.
    pub const GET_LIMITS: u8 = 0x3a;
    /// [`Limits`](super::Limits), broker → client, version 5 and later.
    pub const LIMITS: u8 = 0x3b;
}

/// First frame from a client: who it is and which protocol versions it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Oldest protocol version the client speaks.
    pub min_version: u16,
    /// Newest protocol version the client speaks.
    pub max_version: u16,
    /// Free-form client name for logs, stats and transaction checks; may be empty. The
    /// broker keeps the first [`MAX_CLIENT_NAME`] bytes.
    pub client: &'a str,
}

/// The broker's answer to [`Hello`]: the chosen version and the rules of this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome<'a> {
    /// Protocol version used from now on.
    pub version: u16,
    /// The client must send something (a `Ping` will do) at least this often; the broker
    /// closes a connection that stays silent for three times this long.
    pub keepalive_ms: u32,
    /// Largest frame (after the length prefix) the broker accepts.
    pub max_frame: u32,
    /// Largest payload the broker accepts.
    pub max_payload: u32,
    /// Most subscriptions one connection may hold.
    pub max_subscriptions: u32,
    /// Random per broker process. A client that sees it change knows the broker restarted
    /// (and, without persistence, that every offset started again at 0).
    pub broker_id: u64,
    /// Broker software and version, such as `mote 0.1.0`.
    pub broker: &'a str,
}

/// Liveness probe; the peer answers with a `Pong` carrying the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Opaque value echoed back.
    pub nonce: u64,
}

/// Machine-readable error code carried by [`ErrorFrame`]. Unknown codes are kept as
/// numbers, so a newer broker's codes never break an older client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $n:expr, $text:expr;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($n);)*
            /// Short snake_case name of the code, or `"unknown"`.
            pub fn name(self) -> &'static str {
                match self.0 { $($n => $text,)* _ => "unknown" }
            }
        }
    };
}

codes! {
    /// A frame could not be decoded, or came when it was not allowed (connection closed).
    PROTOCOL = 1, "protocol";
    /// No protocol version in common (connection closed).
    UNSUPPORTED_VERSION = 2, "unsupported_version";
    /// A length prefix above the broker's frame limit (connection closed).
    FRAME_TOO_LARGE = 3, "frame_too_large";
    /// A payload above the broker's payload limit.
    PAYLOAD_TOO_LARGE = 4, "payload_too_large";
    /// An invalid publish topic.
    BAD_TOPIC = 5, "bad_topic";
    /// An invalid subscription filter.
    BAD_FILTER = 6, "bad_filter";
    /// The broker holds as many topics as it may.
    TOPIC_LIMIT = 7, "topic_limit";
    /// The connection holds as many subscriptions as it may.
    SUBSCRIPTION_LIMIT = 8, "subscription_limit";
    /// The broker holds as many connections as it may (connection closed).
    CONNECTION_LIMIT = 9, "connection_limit";
    /// The connection was silent for three keepalive periods (connection closed).
    KEEPALIVE_TIMEOUT = 10, "keepalive_timeout";
    /// The handshake (`Hello`, and `AuthInit` when a token is required) did not finish
    /// within the deadline (connection closed).
    HANDSHAKE_TIMEOUT = 11, "handshake_timeout";
    /// The broker is shutting down (connection closed).
    SHUTTING_DOWN = 12, "shutting_down";
    /// `Unsubscribe` named a subscription id this connection does not hold.
    UNKNOWN_SUBSCRIPTION = 13, "unknown_subscription";
    /// `Subscribe` reused a subscription id this connection already holds.
    DUPLICATE_SUBSCRIPTION = 14, "duplicate_subscription";
    /// Missing or wrong token, or a record that failed to open (connection closed).
    UNAUTHORIZED = 15, "unauthorized";
    /// The token's access rules refuse this publish or subscribe (connection stays open).
    FORBIDDEN = 16, "forbidden";
    /// `Ack` or `Nack` of a tag that is not in flight (already settled, or redelivered).
    UNKNOWN_DELIVERY = 17, "unknown_delivery";
    /// A group name that is not valid, or a member that does not match its group.
    BAD_GROUP = 18, "bad_group";
    /// A frame (or record) did not arrive whole within the broker's partial-input
    /// deadline (connection closed).
    FRAME_TIMEOUT = 19, "frame_timeout";
    /// A publish to a persisted topic refused because the disk (or the broker's disk
    /// budget, for a topic that keeps its data) is full; retry later.
    STORAGE_FULL = 20, "storage_full";
    /// A publish to a persisted topic refused because writing to disk fails (a
    /// read-only file system, an IO error); retry later.
    STORAGE_FAILED = 21, "storage_failed";
    /// A management request named a topic or group that does not exist (protocol 3).
    NOT_FOUND = 22, "not_found";
    /// A [`Request`] to a topic nothing answers: no subscription matches it and no group
    /// with a connected member reads it (protocol 4). Answered at once.
    NO_RESPONDERS = 23, "no_responders";
    /// A [`Request`] got no [`Reply`] within its timeout (protocol 4).
    TIMEOUT = 24, "timeout";
    /// A publish refused because its payload does not match the topic's JSON schema (or
    /// is not JSON); the message names the first failing path and rule.
    INVALID_PAYLOAD = 25, "invalid_payload";
    /// The connection (or the broker) holds as many pending requests or prepared
    /// transactions as it may (protocol 4); settle some first.
    PENDING_LIMIT = 26, "pending_limit";
}

impl ErrorCode {
    /// Codes after which the broker closes the connection.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::PROTOCOL
                | ErrorCode::UNSUPPORTED_VERSION
                | ErrorCode::FRAME_TOO_LARGE
                | ErrorCode::CONNECTION_LIMIT
                | ErrorCode::KEEPALIVE_TIMEOUT
                | ErrorCode::HANDSHAKE_TIMEOUT
                | ErrorCode::SHUTTING_DOWN
                | ErrorCode::UNAUTHORIZED
                | ErrorCode::FRAME_TIMEOUT
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// An error from the broker. `req` names the request it answers: the `req` of a
/// [`Publish`], the `sub` of a [`Subscribe`] or [`Unsubscribe`], or 0 for none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame<'a> {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// The request this answers, or 0.
    pub req: u32,
    /// What went wrong, for people: lowercase, says what to do.
    pub message: &'a str,
}

/// Publish one message. With `req == 0` it is fire-and-forget; otherwise the broker
/// answers with [`Published`] (or an [`ErrorFrame`]) carrying the same `req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish<'a> {
    /// Request id for the confirmation, 0 for none.
    pub req: u32,
    /// Topic to publish to (no wildcards).
    pub topic: &'a str,
    /// Optional key, opaque to the broker (empty is the same as none).
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The message body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Confirms a [`Publish`] with `req != 0`: the message is stored at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The `req` of the publish.
    pub req: u32,
    /// Offset the broker gave the message in its topic.
    pub offset: u64,
}

/// Where a new subscription starts in each topic its filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Start {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Everything the ring still holds.
    Earliest,
    /// From this offset on (clamped to what the ring holds; older ones are reported as lag).
    Offset(u64),
    /// The last N messages of each topic, then everything new.
    Last(u64),
    /// Every message the broker stored after the broker-wide sequence number given in
    /// [`Subscribed::seq`]. Used to resume a `Latest` subscription without a gap.
    AfterSeq(u64),
    /// The first message stored at or after this time (ms since the Unix epoch), by the
    /// broker's clock (protocol 3).
    Time(u64),
    /// The messages stored in the last this many milliseconds, by the broker's clock
    /// (protocol 3): `Time(broker_now - ms)`, without trusting the client's clock.
    Ago(u64),
}

/// A management request (protocol 3), answered with [`Managed`] (or an [`ErrorFrame`])
/// carrying the same `req`. Reads need the right to subscribe to (or manage) what they
/// show; changes need the token's `manage` rule (see `sdk/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manage<'a> {
    /// Request id, echoed in the answer (0 is allowed but cannot be told apart).
    pub req: u32,
    /// What to do.
    #[serde(borrow)]
    pub op: ManageOp<'a>,
}

/// What a [`Manage`] request does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManageOp<'a> {
    /// List the topics matching `filter` (`""`: every topic but the broker's `$` ones),
    /// a page at a time: the answer's `next`, when not null, is the `from` of the next page.
    Topics {
        /// A topic filter, or empty.
        filter: &'a str,
        /// Where the page starts: 0, or the `next` of the previous page.
        from: u32,
    },
    /// One topic: its effective settings and where they come from, counters, metadata,
    /// the groups reading it.
    TopicInfo {
        /// The topic.
        topic: &'a str,
    },
    /// Drop every stored message of the topic; offsets keep going up.
    Purge {
        /// The topic.
        topic: &'a str,
    },
    /// Remove the topic: its stored messages, metadata and name. Subscriptions stay (a
    /// wildcard one sees it again if it is re-created, above its last offset).
    DeleteTopic {
        /// The topic.
        topic: &'a str,
    },
    /// Set (a non-empty value) or remove (an empty value) metadata keys of the topic.
    Meta {
        /// The topic.
        topic: &'a str,
        /// `(key, value)` pairs, applied in order.
        #[serde(borrow)]
        set: Vec<(&'a str, &'a str)>,
    },
    /// List every consumer group.
    Groups,
    /// One group.
    GroupInfo {
        /// The group's name.
        group: &'a str,
    },
    /// Move the group's position in every topic it reads; deliveries in flight are
    /// dropped (their acks answer `unknown_delivery`).
    Seek {
        /// The group's name.
        group: &'a str,
        /// Where to: `Earliest`, `Latest`, `Offset`, `Last`, `Time` or `Ago`.
        to: Start,
    },
    /// Remove the group: its position, in-flight deliveries and members' subscriptions.
    DeleteGroup {
        /// The group's name.
        group: &'a str,
    },
}

/// The answer to a [`Manage`]: the same JSON document the HTTP API answers with for the
/// same request (see `src/http/openapi.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managed<'a> {
    /// The `req` of the request.
    pub req: u32,
    /// The answer, a JSON document.
    pub json: &'a str,
}

/// Version 3 and later: `topic`, which the subscription `sub` was reading, was deleted
/// (`mote topic delete`, or its idle expiry). The subscription stays: if the topic is
/// created again, delivery continues at offset `next`, above every offset it had. A
/// version 1 or 2 client gets a [`Lag`] with `missed` = `unread` and the same `next`
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed<'a> {
    /// The subscription reading it.
    pub sub: u32,
    /// The topic that is gone.
    pub topic: &'a str,
    /// Messages the topic stored that this subscription had not got: gone with it.
    pub unread: u64,
    /// Where the topic continues if it is created again: one past its last offset.
    pub next: u64,
}

/// Version 4 and later: publish a request to `topic` and wait for one reply. The request is
/// stored and delivered like a [`Publish`]; subscribers that speak version 4 get it as
/// [`Asked`] (with the inbox to answer to), older ones as a plain [`Message`]. The broker
/// answers with [`Response`] (the first [`Reply`]), or an [`ErrorFrame`] with the same
/// `req`: `no_responders` at once, `timeout` after `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<'a> {
    /// Request id, unique among this connection's pending requests (not 0).
    pub req: u32,
    /// Topic to publish the request to (no wildcards).
    pub topic: &'a str,
    /// How long to wait for a reply, in milliseconds (at most [`MAX_REQUEST_TIMEOUT_MS`]).
    pub timeout_ms: u32,
    /// Optional key, opaque to the broker.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The request body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Version 4 and later: a request delivered to a responder, a [`Message`] (or, for a
/// group member, a [`GroupMessage`]) with the inbox its [`Reply`] goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked<'a> {
    /// Subscription this delivery belongs to.
    pub sub: u32,
    /// Delivery tag for `Ack`/`Nack` when `sub` is a group member; 0 otherwise.
    pub tag: u64,
    /// Topic the request was published to.
    pub topic: &'a str,
    /// Offset of the request in its topic.
    pub offset: u64,
    /// When the broker stored it (ms since the Unix epoch).
    pub time_ms: u64,
    /// 1 on first delivery, more on a group's redeliveries.
    pub attempt: u32,
    /// The inbox to send the [`Reply`] to. Opaque; valid until the request times out.
    pub reply: u64,
    /// The requester's key, if any.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The request body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Version 4 and later: a responder's answer to an [`Asked`]. Not confirmed: a reply to an
/// inbox that is gone (answered already, timed out, its connection closed) is dropped and
/// counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    /// The `reply` of the [`Asked`].
    pub reply: u64,
    /// Optional key, opaque to the broker.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The reply body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Version 4 and later: the reply to this connection's [`Request`] `req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response<'a> {
    /// The `req` of the request.
    pub req: u32,
    /// The responder's key, if any.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The reply body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Version 4 and later: the first phase of a transactional publish. The message is kept
/// by the broker, invisible to every reader, until a [`Settle`] commits or rolls it back
/// (or the broker's check-back decides). Answered with [`Prepared`] or an [`ErrorFrame`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare<'a> {
    /// Request id for the answer (not 0).
    pub req: u32,
    /// Topic the message goes to when committed (no wildcards).
    pub topic: &'a str,
    /// Optional key, opaque to the broker.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The message body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Version 4 and later: the message of a [`Prepare`] is held as transaction `tx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The `req` of the prepare.
    pub req: u32,
    /// The transaction id (HTTP and the CLI write it as 16 lowercase hex digits).
    pub tx: u64,
}

/// Version 4 and later: commit or roll back transaction `tx`, by any connection allowed to
/// publish to its topic; also the answer to a [`TxCheck`]. With `req != 0` the broker
/// answers with [`Settled`] or an [`ErrorFrame`] (`not_found`: unknown or already settled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    /// Request id for the answer, 0 for none.
    pub req: u32,
    /// The transaction id.
    pub tx: u64,
    /// `true` to commit (deliver), `false` to roll back (drop).
    pub commit: bool,
}

/// Version 4 and later: the answer to a [`Settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The `req` of the settle.
    pub req: u32,
    /// Whether the message was committed.
    pub committed: bool,
    /// Offset the committed message got (0 when rolled back).
    pub offset: u64,
    /// When it was stored, ms since the Unix epoch (0 when rolled back).
    pub time_ms: u64,
}

/// Version 4 and later: the broker asks the producer of an undecided transaction whether
/// to commit it; the answer is a [`Settle`] (with `req` 0 or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxCheck<'a> {
    /// The transaction id.
    pub tx: u64,
    /// Its topic.
    pub topic: &'a str,
    /// 1 for the first check, counting up to the broker's `tx-check-max`.
    pub attempt: u32,
}

/// Version 5 and later: asks the broker for the limits that bound what it keeps, and,
/// with `topic`, that topic's own retention. Answered with [`Limits`] (or an
/// [`ErrorFrame`]: `bad_topic`, `forbidden`) carrying the same `req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetLimits<'a> {
    /// Request id, echoed in the answer.
    pub req: u32,
    /// A topic name (not a filter) whose effective settings to include, or none.
    #[serde(borrow)]
    pub topic: Option<&'a str>,
}

/// Version 5 and later: the answer to [`GetLimits`]: how much the broker keeps, so that
/// a publisher can tell how far ahead of its subscribers it may run before they lose
/// messages (each loss is still told by a `Lag`). See `sdk/PROTOCOL.md`, section 8.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The `req` of the query.
    pub req: u32,
    /// Largest frame the broker accepts (as in `Welcome`).
    pub max_frame: u32,
    /// Largest payload the broker accepts (as in `Welcome`).
    pub max_payload: u32,
    /// Longest key the broker accepts.
    pub max_key: u32,
    /// Bytes a stored message counts beyond its key and payload (it depends on the
    /// broker's machine: 112 on 64-bit ones).
    pub entry_overhead: u32,
    /// Most messages one topic's memory ring keeps (`--ring-messages`).
    pub ring_messages: u64,
    /// Most bytes (key + payload + `entry_overhead` per message) one topic's memory ring
    /// keeps (`--ring-bytes`).
    pub ring_bytes: u64,
    /// Bytes all memory rings together keep (`--memory`); past it the oldest messages of
    /// all topics are evicted first.
    pub memory: u64,
    /// Bytes the data directory may take (`--disk`); 0 when the broker has none.
    pub disk: u64,
    /// The named topic's effective settings; none when no topic was named.
    pub topic: Option<TopicLimits>,
}

/// A topic's effective retention settings, in [`Limits`] (the `[topics."pattern"]`
/// tables of the broker's config file, else the broker's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicLimits {
    /// Whether the topic is kept on disk: a subscriber behind its memory ring reads
    /// from disk, and loses messages only to the retention below and the disk budget.
    pub persist: bool,
    /// Messages older than this (ms) are dropped, in memory and on disk; none: no age
    /// limit.
    pub max_age_ms: Option<u64>,
    /// Most messages kept on disk (persisted topics); none: no bound of its own.
    pub retain_messages: Option<u64>,
    /// Most bytes kept on disk (persisted topics); none: no bound of its own.
    pub retain_bytes: Option<u64>,
    /// At the disk budget: `false` drops the oldest data, `true` refuses new publishes
    /// with `storage_full` (`discard = "new"`).
    pub discard_new: bool,
}

/// A topic the subscription resumes at a known offset, overriding `from` for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Offset of the first message wanted (one past the last one seen).
    pub next: u64,
}

/// Subscribe to every topic matching `filter`, now and in future.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe<'a> {
    /// Client-chosen id, unique on this connection; deliveries carry it.
    pub sub: u32,
    /// Topic filter, with `+` and `#` wildcards.
    pub filter: &'a str,
    /// Where to start in each matching topic.
    pub from: Start,
    /// Per-topic start offsets that override `from` (used when resuming).
    #[serde(borrow)]
    pub resume: Vec<Resume<'a>>,
}

/// Confirms a [`Subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The subscription id.
    pub sub: u32,
    /// Broker-wide sequence number of the last message stored before this subscription
    /// started; [`Start::AfterSeq`] with it resumes a `Latest` subscription.
    pub seq: u64,
}

/// Ends a subscription; also the broker's confirmation of it (tag `UNSUBSCRIBED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// The subscription id.
    pub sub: u32,
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<'a> {
    /// Subscription this delivery belongs to.
    pub sub: u32,
    /// Topic the message was published to.
    pub topic: &'a str,
    /// Offset of the message in its topic.
    pub offset: u64,
    /// When the broker stored it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The publisher's key, if any.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The message body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// The subscriber fell behind the ring and skipped `missed` messages of `topic`;
/// delivery continues at offset `next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag<'a> {
    /// Subscription that lagged.
    pub sub: u32,
    /// Topic whose messages were missed.
    pub topic: &'a str,
    /// How many messages were skipped.
    pub missed: u64,
    /// Offset delivery continues at.
    pub next: u64,
}

/// A broker with tokens answers `Hello` with this: its fresh random nonce. A client
/// without a token stops here; see [`crate::secure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallenge {
    /// 32 fresh random bytes.
    pub nonce: [u8; 32],
}

/// The client's answer to [`AuthChallenge`]: which token, its own nonce, and its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInit<'a> {
    /// Name of the token (`default` for a broker's single `--token`).
    pub name: &'a str,
    /// 32 fresh random bytes.
    pub nonce: [u8; 32],
    /// The client's proof of the token.
    pub proof: [u8; 32],
}

/// The broker's proof of the token, once it accepted the client's. Everything after it,
/// both ways, is records; the first record from the broker holds `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof {
    /// The broker's proof; a client that cannot verify it must close.
    pub proof: [u8; 32],
}

/// How a consumer group treats its messages; 0 (or `false`) means the broker's default.
/// Set by the group's first member, unless the broker's config file sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupSettings {
    /// A message not acked within this long is delivered again (default 30 s).
    pub ack_timeout_ms: u32,
    /// After this many deliveries a message goes to the dead-letter topic (default 5).
    pub max_deliveries: u32,
    /// Most unacked messages one member holds (default 64).
    pub prefetch: u32,
    /// Whether the group keeps its position while it has no member. `false` asks for the
    /// broker's default, which is durable (until `group-expiry` without members) unless
    /// the broker's config opts the group out.
    pub durable: bool,
}

/// Join consumer group `group` reading `filter`: each message goes to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeGroup<'a> {
    /// Client-chosen subscription id, as for [`Subscribe`].
    pub sub: u32,
    /// Topic filter; every member of a group uses the same.
    pub filter: &'a str,
    /// Group name: 1 to 64 characters, no `/`, `+`, `#` or control characters.
    pub group: &'a str,
    /// Where a new group starts in each topic (ignored when the group exists).
    pub from: Start,
    /// The group's settings, if it is new.
    pub settings: GroupSettings,
}

/// Whether a consumer group keeps its position while it has no member (in
/// [`JoinSettings`], protocol 3). A group named in the broker's config file with
/// `durable = true|false` is what the config says, whatever a member asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Durability {
    /// The broker's default: durable (until `group-expiry` without members).
    #[default]
    Default,
    /// Durable: kept while memberless, until its expiry passes without a member.
    Durable,
    /// Not durable: the group, its position and what it had not delivered go with its
    /// last member.
    Ephemeral,
}

/// The settings a [`JoinGroup`] asks for a new group; 0 means the broker's default.
/// [`GroupSettings`] with a [`Durability`] instead of its `durable` flag, and an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JoinSettings {
    /// A message not acked within this long is delivered again (default 30 s).
    pub ack_timeout_ms: u32,
    /// After this many deliveries a message goes to the dead-letter topic (default 5).
    pub max_deliveries: u32,
    /// Most unacked messages one member holds (default 64).
    pub prefetch: u32,
    /// Whether the group outlives its members.
    pub durability: Durability,
    /// How long a durable group is kept without members, if shorter than the broker's
    /// `group-expiry` (0: the broker's); the config's `expiry` for the group wins.
    pub expiry_ms: u64,
}

impl JoinSettings {
    /// The [`GroupSettings`] part (its `durable` set for [`Durability::Durable`]).
    pub fn group_settings(&self) -> GroupSettings {
        GroupSettings {
            ack_timeout_ms: self.ack_timeout_ms,
            max_deliveries: self.max_deliveries,
            prefetch: self.prefetch,
            durable: self.durability == Durability::Durable,
        }
    }
}

/// Version 3 and later: [`SubscribeGroup`] with [`JoinSettings`]: a new group can be
/// asked to be ephemeral, or to expire sooner than the broker's `group-expiry`. Answered
/// like `SubscribeGroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroup<'a> {
    /// Client-chosen subscription id, as for [`Subscribe`].
    pub sub: u32,
    /// Topic filter; every member of a group uses the same.
    pub filter: &'a str,
    /// Group name: 1 to 64 characters, no `/`, `+`, `#`, `$` or control characters.
    pub group: &'a str,
    /// Where a new group starts in each topic (ignored when the group exists).
    pub from: Start,
    /// The group's settings, if it is new.
    pub settings: JoinSettings,
}

/// A message for one member of a group, to be acked with `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage<'a> {
    /// The member's subscription id.
    pub sub: u32,
    /// Delivery tag for `Ack`/`Nack`, unique within the subscription.
    pub tag: u64,
    /// Topic of the message.
    pub topic: &'a str,
    /// Its offset.
    pub offset: u64,
    /// When it was stored (ms since the Unix epoch).
    pub time_ms: u64,
    /// 1 on first delivery, more on redeliveries.
    pub attempt: u32,
    /// The publisher's key, if any.
    #[serde(borrow, with = "serde_bytes")]
    pub key: Option<&'a [u8]>,
    /// The body.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// The member is done with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The member's subscription id.
    pub sub: u32,
    /// The delivery tag.
    pub tag: u64,
}

/// The member gives a message back, to be delivered again after `delay_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The member's subscription id.
    pub sub: u32,
    /// The delivery tag.
    pub tag: u64,
    /// Not before this many milliseconds (0: at once).
    pub delay_ms: u32,
}

/// Every frame of protocol versions 1 to 5 (version 2 adds [`Frame::Evicted`], version 3
/// [`Frame::Manage`], [`Frame::Managed`], [`Frame::Removed`] and [`Frame::JoinGroup`],
/// version 4 request/reply and transactions, version 5 the limits query: see
/// [`PROTOCOL_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// See [`Hello`].
    Hello(Hello<'a>),
    /// See [`Welcome`].
    Welcome(Welcome<'a>),
    /// See [`Ping`].
    Ping(Ping),
    /// A [`Ping`] answered.
    Pong(Ping),
    /// See [`ErrorFrame`].
    Error(ErrorFrame<'a>),
    /// See [`Publish`].
    Publish(Publish<'a>),
    /// See [`Published`].
    Published(Published),
    /// See [`Subscribe`].
    Subscribe(Subscribe<'a>),
    /// See [`Subscribed`].
    Subscribed(Subscribed),
    /// See [`Unsubscribe`].
    Unsubscribe(Unsubscribe),
    /// An [`Unsubscribe`] confirmed.
    Unsubscribed(Unsubscribe),
    /// See [`Message`].
    Message(Message<'a>),
    /// See [`Lag`].
    Lag(Lag<'a>),
    /// See [`AuthInit`].
    AuthInit(AuthInit<'a>),
    /// See [`AuthChallenge`].
    AuthChallenge(AuthChallenge),
    /// See [`AuthProof`].
    AuthProof(AuthProof),
    /// See [`SubscribeGroup`].
    SubscribeGroup(SubscribeGroup<'a>),
    /// See [`GroupMessage`].
    GroupMessage(GroupMessage<'a>),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// Version 2 and later: a [`Lag`] whose messages were evicted by the topic's retention
    /// before the subscription asked for them (its start was below the oldest message
    /// kept), rather than while the subscriber was reading. A version 1 client gets a
    /// `Lag` instead.
    Evicted(Lag<'a>),
    /// Version 3 and later: see [`Manage`].
    Manage(Manage<'a>),
    /// Version 3 and later: see [`Managed`].
    Managed(Managed<'a>),
    /// Version 3 and later: see [`Removed`].
    Removed(Removed<'a>),
    /// Version 3 and later: see [`JoinGroup`].
    JoinGroup(JoinGroup<'a>),
    /// Version 4 and later: see [`Request`].
    Request(Request<'a>),
    /// Version 4 and later: see [`Asked`].
    Asked(Asked<'a>),
    /// Version 4 and later: see [`Reply`].
    Reply(Reply<'a>),
    /// Version 4 and later: see [`Response`].
    Response(Response<'a>),
    /// Version 4 and later: see [`Prepare`].
    Prepare(Prepare<'a>),
    /// Version 4 and later: see [`Prepared`].
    Prepared(Prepared),
    /// Version 4 and later: see [`Settle`].
    Settle(Settle),
    /// Version 4 and later: see [`Settled`].
    Settled(Settled),
    /// Version 4 and later: see [`TxCheck`].
    TxCheck(TxCheck<'a>),
    /// Version 5 and later: see [`GetLimits`].
    GetLimits(GetLimits<'a>),
    /// Version 5 and later: see [`Limits`]. Boxed: it is the largest body, and every
    /// frame moved on the message path would otherwise carry its size (the encoding is
    /// the same).
    Limits(Box<Limits>),
}

/// Why bytes could not be decoded into a frame. Any of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is not a valid varint u32.
    BadLength,
    /// The length prefix exceeds the limit; refused before reading (or allocating) more.
    TooLarge {
        /// Declared length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A frame of length 0 (no tag).
    Empty,
    /// A tag this version does not know.
    UnknownTag(u8),
    /// The body does not decode as the tag's frame.
    Malformed {
        /// Tag of the frame.
        tag: u8,
    },
    /// The body decoded but bytes were left over.
    Trailing {
        /// Tag of the frame.
        tag: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength => f.write_str("invalid frame length prefix"),
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame is {len} bytes, the limit is {max}")
            }
            DecodeError::Empty => f.write_str("empty frame"),
            DecodeError::UnknownTag(t) => write!(f, "unknown frame tag 0x{t:02x}"),
            DecodeError::Malformed { tag } => write!(f, "malformed frame (tag 0x{tag:02x})"),
            DecodeError::Trailing { tag } => {
                write!(f, "frame has trailing bytes (tag 0x{tag:02x})")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Result of [`decode`] when the bytes are not broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame, and how many bytes of input it used (prefix included).
    Frame(Frame<'a>, usize),
    /// More bytes are needed; `total` is the whole frame's size once the prefix is known.
    Incomplete {
        /// Bytes the complete frame occupies, prefix included, when already known.
        total: Option<usize>,
    },
}

/// Reads a varint u32 length prefix: `Ok(None)` if `buf` ends inside it.
pub fn read_length(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_LENGTH_PREFIX) {
        let bits = u32::from(b & 0x7f);
        if i == MAX_LENGTH_PREFIX - 1 && b > 0x0f {
            return Err(DecodeError::BadLength);
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_LENGTH_PREFIX {
        return Err(DecodeError::BadLength);
    }
    Ok(None)
}

/// Writes `v` as a varint into `out`, returning how many bytes it took.
pub fn write_varint(mut v: u32, out: &mut [u8; MAX_LENGTH_PREFIX]) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Decodes the first frame in `buf`, refusing frames longer than `max_frame` bytes
/// before looking at their body.
pub fn decode(buf: &[u8], max_frame: usize) -> Result<Decoded<'_>, DecodeError> {
    let Some((len, prefix)) = read_length(buf)? else {
        return Ok(Decoded::Incomplete { total: None });
    };
    let len = len as usize;
    if len > max_frame {
        return Err(DecodeError::TooLarge {
            len: len as u64,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    // `max_frame` may be `usize::MAX`: on 32-bit targets the sum could overflow.
    let Some(total) = prefix.checked_add(len) else {
        return Err(DecodeError::TooLarge {
            len: len as u64,
            max: max_frame,
        });
    };
    let Some(body) = buf.get(prefix..total) else {
        return Ok(Decoded::Incomplete { total: Some(total) });
    };
    Ok(Decoded::Frame(Frame::decode_body(body)?, total))
}

fn exact<'a, T: Deserialize<'a>>(tag: u8, rest: &'a [u8]) -> Result<T, DecodeError> {
    let (v, tail) = postcard::take_from_bytes(rest).map_err(|_| DecodeError::Malformed { tag })?;
    if tail.is_empty() {
        Ok(v)
    } else {
        Err(DecodeError::Trailing { tag })
    }
}

/// postcard output flavor that appends to a borrowed `Vec`.
struct Append<'v>(&'v mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// postcard output flavor that only counts bytes.
struct Count(usize);

impl postcard::ser_flavors::Flavor for Count {
    type Output = usize;
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }
    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

/// Bytes postcard uses for the varint `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes postcard uses for a length-prefixed byte string of `n` bytes.
fn bytes_len(n: usize) -> usize {
    varint_len(n as u64) + n
}

/// Bytes postcard uses for an optional byte string.
fn opt_bytes_len(b: Option<&[u8]>) -> usize {
    1 + b.map_or(0, |k| bytes_len(k.len()))
}

/// Appends one length-prefixed frame with `tag` and `body` to `out`. `body_len` is the
/// postcard size of `body` when the caller knows it (the hot frames), so the prefix is
/// written first and nothing is moved afterwards.
fn encode_with<T: Serialize + ?Sized>(
    tag: u8,
    body: &T,
    body_len: Option<usize>,
    out: &mut Vec<u8>,
) {
    // Serializing our own frame structs cannot fail: there are no maps of unknown length
    // and neither flavor ever refuses a byte.
    let Some(body_len) = body_len.or_else(|| postcard::serialize_with_flavor(body, Count(0)).ok())
    else {
        debug_assert!(false, "sizing a frame failed");
        return;
    };
    let mut prefix = [0u8; MAX_LENGTH_PREFIX];
    let n = write_varint((1 + body_len) as u32, &mut prefix);
    let start = out.len();
    out.reserve(n + 1 + body_len);
    out.extend_from_slice(&prefix[..n]);
    out.push(tag);
    if postcard::serialize_with_flavor(body, Append(out)).is_err() {
        debug_assert!(false, "serializing a frame failed");
        out.truncate(start);
        return;
    }
    debug_assert_eq!(
        out.len() - start,
        n + 1 + body_len,
        "frame size estimate for tag {tag}"
    );
}

impl<'a> Frame<'a> {
    /// The frame's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Frame::Hello(_) => tag::HELLO,
            Frame::Welcome(_) => tag::WELCOME,
            Frame::Ping(_) => tag::PING,
            Frame::Pong(_) => tag::PONG,
            Frame::Error(_) => tag::ERROR,
            Frame::Publish(_) => tag::PUBLISH,
            Frame::Published(_) => tag::PUBLISHED,
            Frame::Subscribe(_) => tag::SUBSCRIBE,
            Frame::Subscribed(_) => tag::SUBSCRIBED,
            Frame::Unsubscribe(_) => tag::UNSUBSCRIBE,
            Frame::Unsubscribed(_) => tag::UNSUBSCRIBED,
            Frame::Message(_) => tag::MESSAGE,
            Frame::Lag(_) => tag::LAG,
            Frame::AuthInit(_) => tag::AUTH_INIT,
            Frame::AuthChallenge(_) => tag::AUTH_CHALLENGE,
            Frame::AuthProof(_) => tag::AUTH_PROOF,
            Frame::SubscribeGroup(_) => tag::SUBSCRIBE_GROUP,
            Frame::GroupMessage(_) => tag::GROUP_MESSAGE,
            Frame::Ack(_) => tag::ACK,
            Frame::Nack(_) => tag::NACK,
            Frame::Evicted(_) => tag::EVICTED,
            Frame::Manage(_) => tag::MANAGE,
            Frame::Managed(_) => tag::MANAGED,
            Frame::Removed(_) => tag::REMOVED,
            Frame::JoinGroup(_) => tag::JOIN_GROUP,
            Frame::Request(_) => tag::REQUEST,
            Frame::Asked(_) => tag::ASKED,
            Frame::Reply(_) => tag::REPLY,
            Frame::Response(_) => tag::RESPONSE,
            Frame::Prepare(_) => tag::PREPARE,
            Frame::Prepared(_) => tag::PREPARED,
            Frame::Settle(_) => tag::SETTLE,
            Frame::Settled(_) => tag::SETTLED,
            Frame::TxCheck(_) => tag::TX_CHECK,
            Frame::GetLimits(_) => tag::GET_LIMITS,
            Frame::Limits(_) => tag::LIMITS,
        }
    }

    /// Appends this frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let t = self.tag();
        match self {
            Frame::Hello(b) => encode_with(t, b, None, out),
            Frame::Welcome(b) => encode_with(t, b, None, out),
            Frame::Ping(b) | Frame::Pong(b) => encode_with(t, b, None, out),
            Frame::Error(b) => encode_with(t, b, None, out),
            Frame::Publish(b) => {
                let len = varint_len(u64::from(b.req))
                    + bytes_len(b.topic.len())
                    + opt_bytes_len(b.key)
                    + bytes_len(b.payload.len());
                encode_with(t, b, Some(len), out)
            }
            Frame::Published(b) => encode_with(t, b, None, out),
            Frame::Subscribe(b) => encode_with(t, b, None, out),
            Frame::Subscribed(b) => encode_with(t, b, None, out),
            Frame::Unsubscribe(b) | Frame::Unsubscribed(b) => encode_with(t, b, None, out),
            Frame::Message(b) => {
                let len = varint_len(u64::from(b.sub))
                    + bytes_len(b.topic.len())
                    + varint_len(b.offset)
                    + varint_len(b.time_ms)
                    + opt_bytes_len(b.key)
                    + bytes_len(b.payload.len());
                encode_with(t, b, Some(len), out)
            }
            Frame::Lag(b) | Frame::Evicted(b) => encode_with(t, b, None, out),
            Frame::AuthInit(b) => encode_with(t, b, None, out),
            Frame::AuthChallenge(b) => encode_with(t, b, None, out),
            Frame::AuthProof(b) => encode_with(t, b, None, out),
            Frame::SubscribeGroup(b) => encode_with(t, b, None, out),
            Frame::GroupMessage(b) => {
                let len = varint_len(u64::from(b.sub))
                    + varint_len(b.tag)
                    + bytes_len(b.topic.len())
                    + varint_len(b.offset)
                    + varint_len(b.time_ms)
                    + varint_len(u64::from(b.attempt))
                    + opt_bytes_len(b.key)
                    + bytes_len(b.payload.len());
                encode_with(t, b, Some(len), out)
            }
            Frame::Ack(b) => encode_with(t, b, None, out),
            Frame::Nack(b) => encode_with(t, b, None, out),
            Frame::Manage(b) => encode_with(t, b, None, out),
            Frame::Managed(b) => encode_with(t, b, None, out),
            Frame::Removed(b) => encode_with(t, b, None, out),
            Frame::JoinGroup(b) => encode_with(t, b, None, out),
            Frame::Request(b) => encode_with(t, b, None, out),
            Frame::Asked(b) => encode_with(t, b, None, out),
            Frame::Reply(b) => encode_with(t, b, None, out),
            Frame::Response(b) => encode_with(t, b, None, out),
            Frame::Prepare(b) => encode_with(t, b, None, out),
            Frame::Prepared(b) => encode_with(t, b, None, out),
            Frame::Settle(b) => encode_with(t, b, None, out),
            Frame::Settled(b) => encode_with(t, b, None, out),
            Frame::TxCheck(b) => encode_with(t, b, None, out),
            Frame::GetLimits(b) => encode_with(t, b, None, out),
            Frame::Limits(b) => encode_with(t, b, None, out),
        }
    }

    /// This frame as a new byte vector, length prefix included.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a frame body (tag and postcard bytes, without the length prefix).
    pub fn decode_body(body: &'a [u8]) -> Result<Self, DecodeError> {
        let (&t, rest) = body.split_first().ok_or(DecodeError::Empty)?;
        Ok(match t {
            tag::HELLO => Frame::Hello(exact(t, rest)?),
            tag::WELCOME => Frame::Welcome(exact(t, rest)?),
            tag::PING => Frame::Ping(exact(t, rest)?),
            tag::PONG => Frame::Pong(exact(t, rest)?),
            tag::ERROR => Frame::Error(exact(t, rest)?),
            tag::PUBLISH => Frame::Publish(exact(t, rest)?),
            tag::PUBLISHED => Frame::Published(exact(t, rest)?),
            tag::SUBSCRIBE => Frame::Subscribe(exact(t, rest)?),
            tag::SUBSCRIBED => Frame::Subscribed(exact(t, rest)?),
            tag::UNSUBSCRIBE => Frame::Unsubscribe(exact(t, rest)?),
            tag::UNSUBSCRIBED => Frame::Unsubscribed(exact(t, rest)?),
            tag::MESSAGE => Frame::Message(exact(t, rest)?),
            tag::LAG => Frame::Lag(exact(t, rest)?),
            tag::AUTH_INIT => Frame::AuthInit(exact(t, rest)?),
            tag::AUTH_CHALLENGE => Frame::AuthChallenge(exact(t, rest)?),
            tag::AUTH_PROOF => Frame::AuthProof(exact(t, rest)?),
            tag::SUBSCRIBE_GROUP => Frame::SubscribeGroup(exact(t, rest)?),
            tag::GROUP_MESSAGE => Frame::GroupMessage(exact(t, rest)?),
            tag::ACK => Frame::Ack(exact(t, rest)?),
            tag::NACK => Frame::Nack(exact(t, rest)?),
            tag::EVICTED => Frame::Evicted(exact(t, rest)?),
            tag::MANAGE => Frame::Manage(exact(t, rest)?),
            tag::MANAGED => Frame::Managed(exact(t, rest)?),
            tag::REMOVED => Frame::Removed(exact(t, rest)?),
            tag::JOIN_GROUP => Frame::JoinGroup(exact(t, rest)?),
            tag::REQUEST => Frame::Request(exact(t, rest)?),
            tag::ASKED => Frame::Asked(exact(t, rest)?),
            tag::REPLY => Frame::Reply(exact(t, rest)?),
            tag::RESPONSE => Frame::Response(exact(t, rest)?),
            tag::PREPARE => Frame::Prepare(exact(t, rest)?),
            tag::PREPARED => Frame::Prepared(exact(t, rest)?),
            tag::SETTLE => Frame::Settle(exact(t, rest)?),
            tag::SETTLED => Frame::Settled(exact(t, rest)?),
            tag::TX_CHECK => Frame::TxCheck(exact(t, rest)?),
            tag::GET_LIMITS => Frame::GetLimits(exact(t, rest)?),
            tag::LIMITS => Frame::Limits(exact(t, rest)?),
            other => return Err(DecodeError::UnknownTag(other)),
        })
    }
}

impl Hello<'_> {
    /// A `Hello` offering every version this crate speaks.
    pub fn new(client: &str) -> Hello<'_> {
        Hello {
            magic: MAGIC,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use alloc::vec;

    fn roundtrip(f: Frame<'_>) {
        let bytes = f.to_vec();
        match decode(&bytes, 1 << 20) {
            Ok(Decoded::Frame(g, n)) => {
                assert_eq!(g, f);
                assert_eq!(n, bytes.len());
            }
            other => panic!("{f:?} decoded as {other:?}"),
        }
        // Every strict prefix is incomplete, never an error.
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode(&bytes[..cut], 1 << 20),
                    Ok(Decoded::Incomplete { .. })
                ),
                "{f:?} cut at {cut}"
            );
        }
    }

    #[test]
    fn version_4_frames_roundtrip() {
        let frames = [
            Frame::Request(Request {
                req: 7,
                topic: "svc/upper",
                timeout_ms: 5_000,
                key: Some(b"k"),
                payload: b"hello",
            }),
            Frame::Asked(Asked {
                sub: 1,
                tag: 0,
                topic: "svc/upper",
                offset: 3,
                time_ms: 1_700_000_000_000,
                attempt: 1,
                reply: u64::MAX,
                key: None,
                payload: b"hello",
            }),
            Frame::Reply(Reply {
                reply: 42,
                key: None,
                payload: b"HELLO",
            }),
            Frame::Response(Response {
                req: 7,
                key: Some(b""),
                payload: b"HELLO",
            }),
            Frame::Prepare(Prepare {
                req: 9,
                topic: "orders/new",
                key: None,
                payload: b"{}",
            }),
            Frame::Prepared(Prepared { req: 9, tx: 0x1234 }),
            Frame::Settle(Settle {
                req: 0,
                tx: 0x1234,
                commit: true,
            }),
            Frame::Settled(Settled {
                req: 10,
                committed: false,
                offset: 0,
                time_ms: 0,
            }),
            Frame::TxCheck(TxCheck {
                tx: 0x1234,
                topic: "orders/new",
                attempt: 2,
            }),
        ];
        for f in frames {
            roundtrip(f);
        }
    }

    #[test]
    fn version_5_frames_roundtrip() {
        for topic in [None, Some("sensors/kitchen")] {
            roundtrip(Frame::GetLimits(GetLimits { req: 3, topic }));
        }
        let limits = Limits {
            req: 3,
            max_frame: 1_114_112,
            max_payload: 1 << 20,
            max_key: MAX_KEY_LEN as u32,
            entry_overhead: 112,
            ring_messages: 10_000,
            ring_bytes: 8 << 20,
            memory: 64 << 20,
            disk: 0,
            topic: None,
        };
        roundtrip(Frame::Limits(Box::new(limits)));
        roundtrip(Frame::Limits(Box::new(Limits {
            topic: Some(TopicLimits {
                persist: true,
                max_age_ms: Some(u64::MAX),
                retain_messages: None,
                retain_bytes: Some(1 << 30),
                discard_new: true,
            }),
            ..limits
        })));
    }

    #[test]
    fn every_frame_roundtrips() {
        let big = vec![7u8; 300];
        let frames = [
            Frame::Hello(Hello::new("t")),
            Frame::Welcome(Welcome {
                version: 1,
                keepalive_ms: 30_000,
                max_frame: 1 << 20,
                max_payload: 1 << 20,
                max_subscriptions: 64,
                broker_id: u64::MAX,
                broker: "mote 0.1.0",
            }),
            Frame::Ping(Ping { nonce: 1 }),
            Frame::Pong(Ping { nonce: u64::MAX }),
            Frame::Error(ErrorFrame {
                code: ErrorCode::BAD_TOPIC,
                req: 3,
                message: "bad",
            }),
            Frame::Publish(Publish {
                req: 0,
                topic: "a/b",
                key: Some(b"k"),
                payload: &big,
            }),
            Frame::Published(Published {
                req: 9,
                offset: 1 << 40,
            }),
            Frame::Subscribe(Subscribe {
                sub: 1,
                filter: "a/#",
                from: Start::Last(5),
                resume: vec![Resume {
                    topic: "a/b",
                    next: 3,
                }],
            }),
            Frame::Subscribed(Subscribed { sub: 1, seq: 77 }),
            Frame::Unsubscribe(Unsubscribe { sub: 1 }),
            Frame::Unsubscribed(Unsubscribe { sub: 1 }),
            Frame::Message(Message {
                sub: 1,
                topic: "a/b",
                offset: 2,
                time_ms: 1_700_000_000_000,
                key: None,
                payload: b"hello",
            }),
            Frame::Lag(Lag {
                sub: 1,
                topic: "a/b",
                missed: 10,
                next: 12,
            }),
            Frame::Evicted(Lag {
                sub: 2,
                topic: "big",
                missed: 90_000,
                next: 90_000,
            }),
        ];
        for f in frames {
            roundtrip(f);
        }
    }

    #[test]
    fn version_3_frames_roundtrip() {
        let ops = [
            ManageOp::Topics {
                filter: "sensors/#",
                from: 256,
            },
            ManageOp::TopicInfo { topic: "a/b" },
            ManageOp::Purge { topic: "a/b" },
            ManageOp::DeleteTopic { topic: "a/b" },
            ManageOp::Meta {
                topic: "a/b",
                set: vec![("owner", "pi"), ("old", "")],
            },
            ManageOp::Groups,
            ManageOp::GroupInfo { group: "workers" },
            ManageOp::Seek {
                group: "workers",
                to: Start::Ago(600_000),
            },
            ManageOp::Seek {
                group: "workers",
                to: Start::Time(1_700_000_000_000),
            },
            ManageOp::DeleteGroup { group: "workers" },
        ];
        for (req, op) in ops.into_iter().enumerate() {
            roundtrip(Frame::Manage(Manage {
                req: req as u32 + 1,
                op,
            }));
        }
        roundtrip(Frame::Managed(Managed {
            req: 1,
            json: "{\"topics\":[],\"next\":null}",
        }));
        roundtrip(Frame::Removed(Removed {
            sub: 3,
            topic: "a/b",
            unread: 12,
            next: 1 << 40,
        }));
        for (durability, expiry_ms) in [
            (Durability::Default, 0),
            (Durability::Durable, 3_600_000),
            (Durability::Ephemeral, u64::MAX),
        ] {
            roundtrip(Frame::JoinGroup(JoinGroup {
                sub: 5,
                filter: "jobs/#",
                group: "workers",
                from: Start::Ago(60_000),
                settings: JoinSettings {
                    ack_timeout_ms: 500,
                    max_deliveries: 3,
                    prefetch: 8,
                    durability,
                    expiry_ms,
                },
            }));
        }
        assert!(tag::RESERVED_GROUPS.contains(&tag::JOIN_GROUP));
        // An unknown durability is a malformed frame, not a panic.
        let mut bad = Frame::JoinGroup(JoinGroup {
            sub: 1,
            filter: "a",
            group: "g",
            from: Start::Latest,
            settings: JoinSettings::default(),
        })
        .to_vec();
        let at = bad.len() - 2;
        assert_eq!(bad[at], 0, "the durability byte");
        bad[at] = 3;
        assert_eq!(
            decode(&bad, 1 << 20),
            Err(DecodeError::Malformed {
                tag: tag::JOIN_GROUP
            })
        );
    }

    #[test]
    fn varint_sizes() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
        }
        // Frames around the one- and two-byte prefix boundary keep their estimate exact
        // (checked by the debug assertion in encode_with) and round-trip.
        for size in [100, 118, 119, 120, 121, 127, 128, 200, 16_380, 70_000] {
            let payload = vec![1u8; size];
            for key in [None, Some(&b"k"[..])] {
                roundtrip(Frame::Message(Message {
                    sub: 300,
                    topic: "t/x",
                    offset: 1 << 35,
                    time_ms: 1_700_000_000_000,
                    key,
                    payload: &payload,
                }));
                roundtrip(Frame::Publish(Publish {
                    req: 70_000,
                    topic: "t/x",
                    key,
                    payload: &payload,
                }));
            }
        }
    }

    #[test]
    fn length_prefix_limits() {
        assert_eq!(read_length(&[0x80, 0x80]), Ok(None));
        assert_eq!(read_length(&[0x05]), Ok(Some((5, 1))));
        assert_eq!(read_length(&[0xff, 0x01]), Ok(Some((255, 2))));
        assert_eq!(
            read_length(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok(Some((u32::MAX, 5)))
        );
        assert_eq!(
            read_length(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(
            read_length(&[0x80, 0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::BadLength)
        );
        // The limit is checked from the prefix alone, before the body has arrived.
        assert_eq!(
            decode(&[0x81, 0x08], 1000),
            Err(DecodeError::TooLarge {
                len: 1025,
                max: 1000
            })
        );
        assert_eq!(decode(&[0x00], 1000), Err(DecodeError::Empty));
        assert_eq!(
            decode(&[0x01, 0x7f], 1000),
            Err(DecodeError::UnknownTag(0x7f))
        );
        assert_eq!(
            decode(&[0x02, tag::PING, 0x80], 1000),
            Err(DecodeError::Malformed { tag: tag::PING })
        );
        assert_eq!(
            decode(&[0x03, tag::PING, 0x01, 0x00], 1000),
            Err(DecodeError::Trailing { tag: tag::PING })
        );
    }

    /// PROTOCOL.md 3.2: lengths are postcard `usize` varints, read by the rules of the
    /// machine's `usize`; `u32` fields and variant indexes by the `u32` rules everywhere.
    #[test]
    fn lengths_and_variant_indexes_follow_their_integer_types() {
        // A Publish with topic "a/b", the topic length 3 written
        // over-long in 6 bytes, which only a 64-bit usize takes.
        let mut long_len = vec![tag::PUBLISH, 0x00, 0x83, 0x80, 0x80, 0x80, 0x80, 0x00];
        long_len.extend_from_slice(b"a/b\x00\x00");
        let got = Frame::decode_body(&long_len);
        if cfg!(target_pointer_width = "64") {
            assert!(
                matches!(&got, Ok(Frame::Publish(p)) if p.topic == "a/b"),
                "{got:?}"
            );
        } else {
            assert_eq!(got, Err(DecodeError::Malformed { tag: tag::PUBLISH }));
        }
        // The same six bytes as a `u32` (`req`) are refused on every machine.
        let mut long_req = vec![tag::PUBLISH, 0x83, 0x80, 0x80, 0x80, 0x80, 0x00];
        long_req.extend_from_slice(b"\x03a/b\x00\x00");
        assert_eq!(
            Frame::decode_body(&long_req),
            Err(DecodeError::Malformed { tag: tag::PUBLISH })
        );
        // A variant index is a `u32` too: `Start` 0 in six bytes is refused.
        let mut long_variant = vec![tag::SUBSCRIBE, 0x01, 0x01, b'a'];
        long_variant.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00]);
        assert_eq!(
            Frame::decode_body(&long_variant),
            Err(DecodeError::Malformed {
                tag: tag::SUBSCRIBE
            })
        );
    }

    #[test]
    fn unknown_error_codes_survive() {
        let f = Frame::Error(ErrorFrame {
            code: ErrorCode(999),
            req: 0,
            message: "",
        });
        roundtrip(f);
        assert_eq!(ErrorCode(999).name(), "unknown");
        assert_eq!(ErrorCode::BAD_TOPIC.to_string(), "bad_topic (5)");
    }

    #[test]
    fn tags_are_unique_and_below_reserved() {
        let tags = [
            tag::HELLO,
            tag::WELCOME,
            tag::PING,
            tag::PONG,
            tag::ERROR,
            tag::PUBLISH,
            tag::PUBLISHED,
            tag::SUBSCRIBE,
            tag::SUBSCRIBED,
            tag::UNSUBSCRIBE,
            tag::UNSUBSCRIBED,
            tag::MESSAGE,
            tag::LAG,
        ];
        for (i, t) in tags.iter().enumerate() {
            assert_eq!(usize::from(*t), i, "tags are dense from 0");
            assert!(!tag::RESERVED_SECURITY.contains(t));
        }
        for t in [tag::AUTH_CHALLENGE, tag::AUTH_INIT, tag::AUTH_PROOF] {
            assert!(tag::RESERVED_SECURITY.contains(&t));
        }
        roundtrip(Frame::AuthInit(AuthInit {
            name: "kitchen",
            nonce: [7; 32],
            proof: [8; 32],
        }));
        roundtrip(Frame::AuthChallenge(AuthChallenge { nonce: [1; 32] }));
        roundtrip(Frame::AuthProof(AuthProof { proof: [3; 32] }));
        for t in [
            tag::SUBSCRIBE_GROUP,
            tag::GROUP_MESSAGE,
            tag::ACK,
            tag::NACK,
        ] {
            assert!(tag::RESERVED_GROUPS.contains(&t));
        }
        roundtrip(Frame::SubscribeGroup(SubscribeGroup {
            sub: 4,
            filter: "jobs/#",
            group: "workers",
            from: Start::Earliest,
            settings: GroupSettings {
                ack_timeout_ms: 500,
                max_deliveries: 3,
                prefetch: 8,
                durable: true,
            },
        }));
        for size in [10, 200] {
            let payload = vec![5u8; size];
            roundtrip(Frame::GroupMessage(GroupMessage {
                sub: 4,
                tag: 1 << 33,
                topic: "jobs/a",
                offset: 77,
                time_ms: 1_700_000_000_000,
                attempt: 2,
                key: Some(b"k"),
                payload: &payload,
            }));
        }
        roundtrip(Frame::Ack(Ack { sub: 4, tag: 9 }));
        assert!(!tag::RESERVED_GROUPS.contains(&tag::REMOVED));
        assert!(!tag::RESERVED_SECURITY.contains(&tag::MANAGED));
        roundtrip(Frame::Nack(Nack {
            sub: 4,
            tag: 9,
            delay_ms: 250,
        }));
    }
}
