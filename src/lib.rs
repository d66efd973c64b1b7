//! mote: a tiny message broker for the edge.
//!
//! - [`engine`]: the ring-buffer topic engine (sans-IO).
//! - [`session`]: one connection's protocol on top of the engine (sans-IO).
//! - [`server`]: the TCP transport on a single-threaded smol executor.
//! - [`limits`]: every bound the broker enforces.
//! - [`logging`]: log lines to stderr through a bounded queue, rate-limited per call site.

pub mod auth;
pub mod edge;
pub mod engine;
pub mod limits;
pub mod logging;
pub mod server;
pub mod session;
pub mod units;

/// The README's Rust examples, compiled by `cargo test` so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
