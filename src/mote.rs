//! mote: a tiny message broker for the edge.
//!
//! The library is the `mote-core` crate (src/Cargo.toml, rooted at src/lib.rs), re-exported
//! here whole, so `mote::engine`, `mote::store` and the rest are what they always were. This
//! package adds the `mote` binary (src/main.rs), which runs the command line (src/cli, the
//! `mote-cli` crate).

pub use mote_core::*;
