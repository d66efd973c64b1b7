//! What `mote sub` says on stderr besides messages: the connection lost and back (with
//! what the client knows of what it replayed or missed meanwhile), messages skipped or
//! evicted, and subscriptions the broker refused after a reconnect.

use std::future::Future;
use std::io::{self, Write};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_io::Timer;
use futures_lite::FutureExt;
use futures_lite::future::pending;
use mote_sdk::{Client, Event, GroupEvent, Link, LinkWatch, Subscription};

use super::Failure;

/// Without events for this long after a reconnect, the replay is taken to be over.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a reconnect waits for its first event before it says it is back with nothing
/// replayed: the broker may read the replay from disk first, and a loaded machine is slow.
const FIRST_SETTLE: Duration = Duration::from_secs(2);

/// The next event of any of `subs`; a subscription whose events ended (refused after a
/// reconnect) is dropped from the list. `None` once none is left.
pub(super) async fn next_event(subs: &mut Vec<Subscription>) -> Option<Event> {
    futures_lite::future::poll_fn(|cx| {
        let mut i = 0;
        while i < subs.len() {
            match futures_lite::StreamExt::poll_next(&mut subs[i], cx) {
                Poll::Ready(Some(e)) => return Poll::Ready(Some(e)),
                Poll::Ready(None) => {
                    subs.swap_remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if subs.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// `s` for a count other than 1.
pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Says on stderr that `who` missed messages of `topic`, evicted before it asked for them
/// (`evicted`) or skipped while it read.
pub(super) fn report_lag(
    out: &mut impl Write,
    who: &str,
    topic: &str,
    missed: u64,
    next: u64,
    evicted: bool,
) -> io::Result<()> {
    out.flush()?;
    let s = plural(missed);
    if evicted {
        eprintln!(
            "mote sub: {missed} message{s} of {topic} from where {who} asked to start {} evicted by the topic's retention before it asked; starting at offset {next}, the oldest kept",
            if missed == 1 { "was" } else { "were" }
        );
    } else {
        eprintln!(
            "mote sub: missed {missed} message{s} of {topic} ({who} fell behind the broker's ring); continuing at offset {next}"
        );
    }
    Ok(())
}

/// Says on stderr that `topic` was deleted on the broker (the subscription stays).
pub(super) fn report_removed(
    out: &mut impl Write,
    topic: &str,
    unread: u64,
    next: u64,
) -> io::Result<()> {
    out.flush()?;
    let lost = match unread {
        0 => String::new(),
        n => format!(" with {n} message{} not yet received", plural(n)),
    };
    eprintln!(
        "mote sub: topic {topic} was deleted on the broker{lost}; if it is published to again, it continues at offset {next}"
    );
    Ok(())
}

/// Says on stderr that the broker refused a subscription when it was made again.
pub(super) fn report_refused(out: &mut impl Write, message: &str) -> io::Result<()> {
    out.flush()?;
    eprintln!("mote sub: after reconnecting, the broker refused a subscription: {message}");
    Ok(())
}

/// The link's story for the user, unless `--quiet`; and the refusals seen, to say why
/// `mote sub` ends when no subscription is left.
pub(super) struct Follow {
    watch: LinkWatch,
    addr: String,
    quiet: bool,
    link: Link,
    back: Option<Back>,
    refused: u64,
}

/// Just reconnected: what came since, until the replay looks over.
struct Back {
    /// How long the connection was away.
    away: Duration,
    /// Wall clock at the reconnect, ms since the Unix epoch: messages stored before it
    /// were replayed (as far as clocks agree; the broker stamps them).
    up_ms: u64,
    /// The last event since the reconnect, or the reconnect.
    last: Instant,
    replayed: u64,
    missed: u64,
}

impl Follow {
    pub(super) fn new(client: &Client, addr: String, quiet: bool) -> Follow {
        let watch = client.watch_link();
        let link = watch.get();
        Follow {
            watch,
            addr,
            quiet,
            link,
            back: None,
            refused: 0,
        }
    }

    /// Awaits `events`, saying meanwhile when the connection drops and comes back.
    pub(super) async fn around<T>(&mut self, events: impl Future<Output = Option<T>>) -> Option<T> {
        let mut events = std::pin::pin!(events);
        loop {
            enum Woke<T> {
                Event(Option<T>),
                Link(Link),
                Settled,
            }
            let settle_at = self.back.as_ref().map(|b| {
                let quiet = if b.replayed + b.missed == 0 {
                    FIRST_SETTLE
                } else {
                    SETTLE
                };
                b.last + quiet
            });
            let watch = &mut self.watch;
            let woke = async { Woke::Event(events.as_mut().await) }
                .or(async { Woke::Link(watch.changed().await) })
                .or(async {
                    match settle_at {
                        Some(t) => {
                            Timer::at(t).await;
                            Woke::Settled
                        }
                        None => pending().await,
                    }
                })
                .await;
            match woke {
                Woke::Event(e) => return e,
                Woke::Link(l) => self.changed(l),
                Woke::Settled => self.say_back(),
            }
        }
    }

    fn changed(&mut self, new: Link) {
        match (&self.link, &new) {
            (Link::Up, Link::Down { reason, .. }) => {
                self.back = None;
                if !self.quiet {
                    eprintln!(
                        "mote sub: lost the connection to {} ({reason}); reconnecting, and resuming where it left off",
                        self.addr
                    );
                }
            }
            (Link::Down { since, .. }, Link::Up) => {
                self.back = Some(Back {
                    away: since.elapsed(),
                    up_ms: now_ms(),
                    last: Instant::now(),
                    replayed: 0,
                    missed: 0,
                });
            }
            _ => {}
        }
        self.link = new;
    }

    /// Counts `ev` into what came since a reconnect; the first message stored after the
    /// reconnect ends the replay.
    pub(super) fn saw(&mut self, ev: &Event) {
        match ev {
            Event::Message(m) => self.saw_parts(false, Some(m.time_ms), 0),
            Event::Lag { missed, .. } | Event::Evicted { missed, .. } => {
                self.saw_parts(false, None, *missed)
            }
            Event::Refused { .. } => self.saw_parts(true, None, 0),
            _ => self.saw_parts(false, None, 0),
        }
    }

    /// [`Follow::saw`] for a group member's events.
    pub(super) fn saw_group(&mut self, ev: &GroupEvent) {
        match ev {
            GroupEvent::Message(d) => self.saw_parts(false, Some(d.message().time_ms), 0),
            GroupEvent::Lag { missed, .. } => self.saw_parts(false, None, *missed),
            GroupEvent::Refused { .. } => self.saw_parts(true, None, 0),
            _ => self.saw_parts(false, None, 0),
        }
    }

    /// [`Follow::saw`] for what `mote sub --exec` takes.
    pub(super) fn saw_got(&mut self, got: &super::exec::Got) {
        use super::exec::{Got, Job};
        match got {
            Got::Job(Job::Group(d)) => self.saw_parts(false, Some(d.message().time_ms), 0),
            Got::Job(Job::Plain(m)) => self.saw_parts(false, Some(m.time_ms), 0),
            Got::Lag { missed, .. } => self.saw_parts(false, None, *missed),
            Got::Refused(_) => self.saw_parts(true, None, 0),
            Got::Removed { .. } | Got::Other => self.saw_parts(false, None, 0),
        }
    }

    /// An event: a refusal, a message stored at `stored_ms`, or `missed` messages.
    fn saw_parts(&mut self, refused: bool, stored_ms: Option<u64>, missed: u64) {
        if refused {
            self.refused += 1;
        }
        let Some(b) = self.back.as_mut() else {
            return;
        };
        b.last = Instant::now();
        match stored_ms {
            Some(t) if t > b.up_ms => self.say_back(),
            Some(_) => b.replayed += 1,
            None => b.missed += missed,
        }
    }

    fn say_back(&mut self) {
        let Some(b) = self.back.take() else {
            return;
        };
        if self.quiet {
            return;
        }
        let missed = match b.missed {
            0 => String::new(),
            n => format!(", missed {n} (evicted meanwhile)"),
        };
        eprintln!(
            "mote sub: reconnected to {} after {}; replayed {} message{} stored meanwhile{missed}",
            self.addr,
            super::humantime(b.away),
            b.replayed,
            plural(b.replayed),
        );
    }

    /// Why `mote sub` ends when its subscriptions' events have ended.
    pub(super) fn ended(&self) -> Failure {
        match self.refused {
            0 => Failure("the client closed".into()),
            _ => Failure("no subscription is left (the broker refused them); exiting".into()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
