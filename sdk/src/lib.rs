//! Client SDK and wire protocol for the [mote](https://github.com/mote-broker/mote) edge
//! message broker.
//!
//! - [`wire`]: the one definition of the TCP protocol (frames, framing, error codes),
//!   shared with the broker.
//! - [`topic`]: topic and filter validation and matching.

extern crate alloc;

pub mod topic;
pub mod wire;

pub use topic::{Filter, Topic, TopicError};
pub use wire::{ErrorCode, From};
