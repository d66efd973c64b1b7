//! mote: a tiny message broker for the edge.
//!
//! - [`engine`]: the ring-buffer topic engine (sans-IO).
//! - [`session`]: one connection's protocol on top of the engine (sans-IO).
//! - [`broker`]: the single-threaded smol executor that owns the engine and runs every
//!   front-end: [`server`] (the binary protocol over TCP) and [`http`] (the HTTP edge).
//! - [`limits`]: every bound the broker enforces.
//! - [`bench`]: measuring a broker (`mote bench`, and `mote-bench` against other brokers).
//! - [`schema`]: per-topic JSON schemas, a compact validator checked on publish.
//! - [`logging`]: log lines to stderr through a bounded queue, rate-limited per call site.

pub mod auth;
pub mod bench;
pub mod broker;
pub mod engine;
pub mod http;
pub mod limits;
pub mod logging;
pub mod manage;
pub mod schema;
pub mod server;
pub mod session;
pub mod sort;
pub mod store;
pub mod units;

/// The README's Rust examples, compiled by `cargo test` so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
