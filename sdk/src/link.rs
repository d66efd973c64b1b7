//! The state of a client's connection, for applications that decide themselves how long
//! to wait for a broker: [`Link`], and [`LinkWatch`] to wait for it to change.
//!
//! ```no_run
//! # async fn demo(client: mote_sdk::Client) {
//! use mote_sdk::Link;
//! let mut watch = client.watch_link();
//! loop {
//!     match watch.changed().await {
//!         Link::Down { reason, .. } => eprintln!("disconnected: {reason}"),
//!         Link::Up => eprintln!("connected again"),
//!         _ => break,
//!     }
//! }
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use event_listener::EventListener;

use crate::client::Shared;

/// Whether a [`crate::Client`] is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Link {
    /// Connected to the broker.
    Up,
    /// Not connected; the client is reconnecting with backoff.
    Down {
        /// When the connection was lost.
        since: Instant,
        /// How the connection ended, or how the latest attempt to reconnect failed.
        reason: String,
    },
    /// The client is closed; the link never changes again.
    Closed,
}

/// Waits for a client's [`Link`] to change; made by [`crate::Client::watch_link`]. It does
/// not keep the client open.
pub struct LinkWatch {
    shared: Arc<Shared>,
    /// The version of the link last returned.
    seen: u64,
    /// Kept across polls, so waiting in a loop costs no allocation per poll.
    listener: Option<EventListener>,
}

impl std::fmt::Debug for LinkWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWatch")
            .field("link", &self.get())
            .finish_non_exhaustive()
    }
}

impl LinkWatch {
    pub(crate) fn new(shared: Arc<Shared>) -> LinkWatch {
        let seen = shared.lock().link_version;
        LinkWatch {
            shared,
            seen,
            listener: None,
        }
    }

    /// The link now.
    pub fn get(&self) -> Link {
        self.shared.lock().link.clone()
    }

    /// Waits until the link changed since this watch was made or last returned, and
    /// returns it as it is then. A new reason for being down (another failed attempt) is
    /// a change. Changes in between are not replayed: the latest state wins.
    pub async fn changed(&mut self) -> Link {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// [`LinkWatch::changed`] for hand-written futures.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<Link> {
        loop {
            {
                let st = self.shared.lock();
                if st.link_version != self.seen {
                    self.seen = st.link_version;
                    self.listener = None;
                    return Poll::Ready(st.link.clone());
                }
            }
            match &mut self.listener {
                // Listen, then look again: a change between the look and the listen is
                // not missed.
                None => self.listener = Some(self.shared.link_changed.listen()),
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}
