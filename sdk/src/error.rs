//! The SDK's error type.

use std::fmt;
use std::io;

use crate::TopicError;
use crate::wire::ErrorCode;

/// Everything a client operation can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached.
    Connect {
        /// Address tried.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The broker answered, but not as a mote broker would, or refused the handshake.
    Handshake {
        /// Address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker refused an operation.
    Broker {
        /// Machine-readable code.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// A topic or filter is invalid (checked before anything is sent).
    Topic {
        /// The topic or filter.
        name: String,
        /// What is wrong with it.
        source: TopicError,
    },
    /// A payload exceeds the broker's limit (checked before anything is sent).
    PayloadTooLarge {
        /// Its size.
        len: usize,
        /// The broker's limit.
        max: usize,
    },
    /// Not connected, and the outgoing queue is full.
    QueueFull {
        /// The queue's size limit in bytes.
        limit: usize,
    },
    /// The connection dropped after the request was sent and before the broker answered:
    /// the operation may or may not have taken effect.
    ConnectionLost,
    /// The client was closed.
    Closed,
    /// An address that cannot be used.
    Address(String),
    /// No answer in time (for [`crate::Client::request`]: no reply within its timeout).
    Timeout,
    /// A request (protocol 4) to a topic nothing answers: no subscription matches it and
    /// no consumer group with a connected member reads it. Nothing was stored.
    NoResponders {
        /// The request's topic.
        topic: String,
    },
    /// A token that cannot be used.
    Token(crate::secure::TokenError),
    /// An ack or nack of a group message whose connection is gone: the broker has put
    /// the message back, and it will be delivered again.
    DeliveryExpired,
    /// The broker speaks an older protocol version than the operation needs (checked
    /// before anything is sent).
    Unsupported {
        /// The version the connection agreed on.
        broker: u16,
        /// The version the operation needs.
        needed: u16,
        /// What needs it, such as `management`.
        what: &'static str,
    },
    /// A channel name or role that cannot be used (checked before anything is sent).
    Channel {
        /// The name or role, quoted and cut short.
        name: String,
        /// What a good one looks like.
        reason: &'static str,
    },
    /// The channel ended (by either side): nothing more can be sent on it.
    ChannelEnded,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Handshake { addr, reason } => write!(f, "handshake with {addr} failed: {reason}"),
            Error::Broker { code, message } => write!(f, "{message} ({})", code.name()),
            Error::Topic { name, source } => write!(f, "bad topic {name:?}: {source}"),
            Error::PayloadTooLarge { len, max } => {
                write!(f, "payload is {len} bytes, the broker's limit is {max}")
            }
            Error::QueueFull { limit } => write!(
                f,
                "not connected to the broker and the outgoing queue is full ({limit} bytes)"
            ),
            Error::ConnectionLost => f.write_str(
                "the connection was lost before the broker answered; the operation may or may not have taken effect",
            ),
            Error::Closed => f.write_str("the client is closed"),
            Error::Address(a) => write!(
                f,
                "bad broker address {a:?}: expected HOST:PORT or mote://NAME:TOKEN@HOST:PORT"
            ),
            Error::Timeout => f.write_str("timed out"),
            Error::NoResponders { topic } => write!(f, "no responders on {topic}"),
            Error::Token(e) => write!(f, "bad token: {e}"),
            Error::DeliveryExpired => f.write_str(
                "the connection this message came on is gone; the broker delivers it again",
            ),
            Error::Unsupported {
                broker,
                needed,
                what,
            } => write!(
                f,
                "the broker speaks protocol {broker}; {what} needs {needed} (upgrade the broker)"
            ),
            Error::Channel { name, reason } => write!(f, "bad channel {name}: {reason}"),
            Error::ChannelEnded => {
                f.write_str("the channel has ended; open it again to start a new one")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } => Some(source),
            Error::Topic { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// The broker's error code, if the broker refused the operation.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            Error::NoResponders { .. } => Some(ErrorCode::NO_RESPONDERS),
            _ => None,
        }
    }
}
