//! How `mote pub` runs once its command line is read: messages go out in order, offsets
//! are printed one per line as the broker confirms them, and a watchdog says on stderr
//! when the connection drops and gives up after `--timeout` without a connection, or
//! without an answer while messages wait for one. The SDK reconnects underneath and
//! sends unconfirmed messages again (`Options::resend_unconfirmed`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::FutureExt;
use futures_lite::future::{pending, poll_once};
use mote_sdk::{Client, Confirmation, Error, Event, Link, LinkWatch, Options, Start};

use super::Failure;

/// Most confirmed publishes in flight, and most payload bytes among them (at least one
/// message): the SDK keeps a copy of each until it is confirmed, to send it again.
const MAX_IN_FLIGHT: usize = 1024;
const MAX_IN_FLIGHT_BYTES: usize = 1 << 20;

/// Bytes of stdin lines read before they are handed over: a fast pipe costs one
/// hand-over per batch, a slow one none of its latency (what is there goes at once).
const LINE_BATCH_BYTES: usize = 64 * 1024;

/// What to publish, and how long to wait for the broker.
pub(crate) struct Plan<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) confirm: bool,
    /// `None`: `--retry-forever`.
    pub(crate) timeout: Option<Duration>,
    /// `--skip-bad`: a line the broker or the SDK refuses is said and skipped, not the
    /// end of the run.
    pub(crate) skip_bad: bool,
}

/// How a run of `-l` went: lines skipped with `--skip-bad`.
#[derive(Default)]
pub(crate) struct Skipped(pub(crate) u64);

/// Whether `e` refuses one message and leaves the session fine: the next line may pass.
fn refuses_one(e: &Error) -> bool {
    matches!(e, Error::PayloadTooLarge { .. } | Error::Broker { .. })
}

/// `e` about line `line` (1-based), or about the message when there is one.
fn about(line: Option<u64>, e: &Error) -> String {
    match line {
        Some(n) => format!("line {n}: {e}"),
        None => e.to_string(),
    }
}

/// Where the messages come from.
pub(crate) enum Input {
    /// One message, already read (`-m`, `-f`, `-s`, `-n`).
    One(Vec<u8>),
    /// A message per line of stdin (`-l`), read on a thread as lines come.
    Lines,
}

/// Connects; with `--retry-forever` a broker that cannot be reached yet is waited for.
pub(crate) async fn connect(opts: Options, plan: &Plan<'_>) -> Result<Client, Failure> {
    let mut delay = opts.reconnect_min;
    let mut said = false;
    loop {
        match Client::connect(opts.clone()).await {
            Ok(c) => {
                if said {
                    eprintln!("mote pub: connected to {}", opts.addr);
                }
                return Ok(c);
            }
            Err(e @ Error::Connect { .. }) if plan.timeout.is_none() => {
                if !said {
                    eprintln!("mote pub: {e}; trying again until it answers (--retry-forever)");
                    said = true;
                }
                Timer::after(delay).await;
                delay = (delay * 2).min(opts.reconnect_max);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Publishes everything `input` holds, printing offsets to `out` when confirming, and
/// gives up when the broker stays away or silent for the plan's timeout.
pub(crate) async fn run(
    client: &Client,
    addr: &str,
    plan: &Plan<'_>,
    input: Input,
    out: &mut impl Write,
    skipped: &mut Skipped,
) -> Result<(), Failure> {
    let waits = Waits::default();
    let work = publish_all(client, plan, input, out, &waits, skipped);
    let watchdog = Watchdog {
        client,
        addr,
        plan,
        waits: &waits,
    };
    work.or(watchdog.run()).await
}

/// What the publishing side tells the watchdog. Counters only: on some machines reading
/// the clock costs more than publishing a message.
#[derive(Default)]
struct Waits {
    /// Answers awaited now: unconfirmed messages, or a publish or flush under way.
    waiting: Cell<usize>,
    /// Answers so far.
    answers: Cell<u64>,
}

impl Waits {
    fn more(&self) {
        self.waiting.set(self.waiting.get() + 1);
    }

    fn answered(&self) {
        self.waiting.set(self.waiting.get().saturating_sub(1));
        self.answers.set(self.answers.get() + 1);
    }

    /// Awaits `f`, counted as a wait for the broker.
    async fn on<T>(&self, f: impl Future<Output = T>) -> T {
        self.more();
        let v = f.await;
        self.answered();
        v
    }
}

/// Messages one after another in one buffer, and where each ends: a batch of lines
/// costs two allocations, not one per line.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

/// Messages read and not yet published, oldest first.
#[derive(Default)]
struct Ready {
    batches: VecDeque<Batch>,
    /// The next message of the front batch.
    next: usize,
    /// Messages taken so far: the line number of the front one, less 1.
    taken: u64,
}

impl Ready {
    fn front(&self) -> Option<&[u8]> {
        let b = self.batches.front()?;
        let start = match self.next {
            0 => 0,
            i => *b.ends.get(i - 1)?,
        };
        b.data.get(start..*b.ends.get(self.next)?)
    }

    fn pop(&mut self) {
        self.taken += 1;
        self.next += 1;
        if self
            .batches
            .front()
            .is_some_and(|b| self.next >= b.ends.len())
        {
            self.batches.pop_front();
            self.next = 0;
        }
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Reads stdin on a thread, a batch of lines at a time (without their `\n` or `\r\n`).
fn read_lines() -> Result<async_channel::Receiver<io::Result<Batch>>, Failure> {
    let (tx, rx) = async_channel::bounded(2);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::BufReader::with_capacity(LINE_BATCH_BYTES, io::stdin().lock());
            loop {
                let mut batch = Batch::default();
                let mut end = false;
                while batch.data.len() < LINE_BATCH_BYTES {
                    match stdin.read_until(b'\n', &mut batch.data) {
                        Ok(0) => {
                            end = true;
                            break;
                        }
                        Ok(_) => {
                            if batch.data.ends_with(b"\n") {
                                batch.data.pop();
                                if batch.data.ends_with(b"\r") {
                                    batch.data.pop();
                                }
                            }
                            batch.ends.push(batch.data.len());
                        }
                        Err(e) => {
                            let _ = tx.send_blocking(Err(e));
                            return;
                        }
                    }
                    // Hand over what is here rather than wait for more.
                    if stdin.buffer().is_empty() {
                        break;
                    }
                }
                if !batch.ends.is_empty() && tx.send_blocking(Ok(batch)).is_err() {
                    return;
                }
                if end {
                    return;
                }
            }
        })
        .map_err(|e| Failure(format!("cannot start reading stdin: {e}")))?;
    Ok(rx)
}

/// The publishing side: reads, publishes, prints offsets in order.
async fn publish_all(
    client: &Client,
    plan: &Plan<'_>,
    input: Input,
    out: &mut impl Write,
    waits: &Waits,
    skipped: &mut Skipped,
) -> Result<(), Failure> {
    let mut ready = Ready::default();
    let lines = match input {
        Input::One(m) => {
            ready.batches.push_back(Batch {
                ends: vec![m.len()],
                data: m,
            });
            None
        }
        Input::Lines => Some(read_lines()?),
    };
    let mut input_open = lines.is_some();
    let numbered = lines.is_some();
    // A refused message: said with its line number, then skipped or the end of the run.
    let mut refused = |line: u64, e: Error| -> Result<(), Failure> {
        let line = numbered.then_some(line);
        if plan.skip_bad && refuses_one(&e) {
            skipped.0 += 1;
            eprintln!("mote pub: {}; skipped (--skip-bad)", about(line, &e));
            Ok(())
        } else {
            Err(Failure(about(line, &e)))
        }
    };
    let mut link = client.watch_link();
    // Each with its size and line number.
    let mut inflight: VecDeque<(Confirmation, usize, u64)> = VecDeque::new();
    let mut inflight_bytes = 0;
    // For the retention note: messages published, and the first confirmed offset.
    let mut published = 0u64;
    let mut first: Option<u64> = None;
    loop {
        // Every confirmation already in, in order.
        while let Some((c, _, _)) = inflight.front_mut() {
            let Some(r) = poll_once(c).await else { break };
            if let Some((_, len, line)) = inflight.pop_front() {
                inflight_bytes -= len;
                waits.answered();
                match r {
                    Ok(offset) => {
                        first.get_or_insert(offset);
                        writeln!(out, "{offset}")?;
                    }
                    Err(e) => refused(line, e)?,
                }
            }
        }
        let room = inflight.is_empty()
            || (inflight.len() < MAX_IN_FLIGHT && inflight_bytes < MAX_IN_FLIGHT_BYTES);
        if room {
            if let Some(m) = ready.front() {
                let line = ready.taken + 1;
                let sent = if plan.confirm {
                    match client.publish_pipelined(plan.topic, plan.key, m).await {
                        Ok(c) => {
                            inflight_bytes += m.len();
                            inflight.push_back((c, m.len(), line));
                            waits.more();
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    // Counted as a wait: it blocks while the broker does not read.
                    waits.more();
                    let r = client.publish_with_key(plan.topic, plan.key, m).await;
                    waits.answered();
                    r
                };
                match sent {
                    Ok(()) => {
                        published += 1;
                        ready.pop();
                    }
                    // Disconnected with a full queue: wait for the connection (the
                    // watchdog bounds the wait), then try again.
                    Err(Error::QueueFull { .. }) => {
                        out.flush()?;
                        up(&mut link).await?;
                    }
                    Err(e @ Error::PayloadTooLarge { .. }) => {
                        if let Err(f) = refused(line, e) {
                            // The lines before it still reach the broker (and their
                            // offsets the user) before the run ends on it.
                            while let Some((c, _, _)) = inflight.pop_front() {
                                if let Ok(offset) = waits.on(c).await {
                                    writeln!(out, "{offset}")?;
                                }
                            }
                            out.flush()?;
                            let _ = waits.on(client.flush()).await;
                            return Err(f);
                        }
                        ready.pop();
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
        }
        if !input_open && ready.is_empty() && inflight.is_empty() {
            break;
        }
        out.flush()?;
        enum Next {
            Lines(Option<io::Result<Batch>>),
            Confirmed(Result<u64, Error>),
        }
        let read = async {
            match &lines {
                Some(rx) if input_open && room && ready.is_empty() => {
                    Next::Lines(rx.recv().await.ok())
                }
                _ => pending().await,
            }
        };
        let confirmed = async {
            match inflight.front_mut() {
                Some((c, _, _)) => Next::Confirmed(c.await),
                None => pending().await,
            }
        };
        match read.or(confirmed).await {
            Next::Lines(Some(Ok(batch))) => ready.batches.push_back(batch),
            Next::Lines(Some(Err(e))) => return Err(Failure(format!("cannot read stdin: {e}"))),
            Next::Lines(None) => input_open = false,
            Next::Confirmed(r) => {
                if let Some((_, len, line)) = inflight.pop_front() {
                    inflight_bytes -= len;
                    waits.answered();
                    match r {
                        Ok(offset) => {
                            first.get_or_insert(offset);
                            writeln!(out, "{offset}")?;
                        }
                        Err(e) => {
                            out.flush()?;
                            refused(line, e)?;
                        }
                    }
                }
            }
        }
    }
    out.flush()?;
    if !plan.confirm {
        // Fire-and-forget refusals (a bad topic, a full broker) come back by the flush;
        // one lost with the connection is asked again on the next.
        loop {
            match waits.on(client.flush()).await {
                Ok(()) => break,
                Err(Error::ConnectionLost) => {}
                Err(Error::QueueFull { .. }) => up(&mut link).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    if lines.is_some() && published > 0 {
        retention_note(client, plan.topic, published, first).await;
    }
    Ok(())
}

/// How long the retention note may take; past it, nothing is said.
const NOTE_WAIT: Duration = Duration::from_secs(2);

/// Says on stderr when messages published in this run are no longer kept by the topic
/// (its retention keeps fewer than were sent). `first` is the first confirmed offset;
/// without confirmations the last message's offset is asked for, and the run is taken
/// to be the `published` messages up to it (another publisher's messages in between
/// only make the note more cautious). Then a subscription from the run's first offset
/// tells: its first event is that message, or the count evicted before it. Silent when
/// the broker does not answer in time or refuses to be read (a token without read
/// rights).
async fn retention_note(client: &Client, topic: &str, published: u64, first: Option<u64>) {
    let check = async {
        let start = match first {
            Some(f) => f,
            None => {
                let mut last = client.subscribe(topic, Start::Last(1)).await.ok()?;
                loop {
                    match last.next().await? {
                        Event::Message(m) => break (m.offset + 1).saturating_sub(published),
                        Event::Lag { .. } | Event::Evicted { .. } => {}
                        _ => return None,
                    }
                }
            }
        };
        let mut from = client.subscribe(topic, Start::Offset(start)).await.ok()?;
        match from.next().await? {
            Event::Lag { missed, next, .. } | Event::Evicted { missed, next, .. } => {
                Some((missed.min(published), next))
            }
            _ => None,
        }
    };
    let found = check
        .or(async {
            Timer::after(NOTE_WAIT).await;
            None
        })
        .await;
    if let Some((gone, oldest)) = found {
        eprintln!(
            "mote pub: note: {gone} of the {published} message{} published in this run {} no longer kept: {topic}'s retention holds fewer (its oldest is now offset {oldest}; see mote serve's --ring-messages and --ring-bytes, or persist the topic with --data)",
            plural(published),
            if gone == 1 { "is" } else { "are" }
        );
    }
}

/// Waits until the client is connected.
async fn up(link: &mut LinkWatch) -> Result<(), Failure> {
    loop {
        match link.get() {
            Link::Up => return Ok(()),
            Link::Closed => return Err(Error::Closed.into()),
            _ => {}
        }
        link.changed().await;
    }
}

/// Says on stderr when the connection drops and comes back, and ends the run when the
/// broker stays away or silent for the timeout.
struct Watchdog<'a> {
    client: &'a Client,
    addr: &'a str,
    plan: &'a Plan<'a>,
    waits: &'a Waits,
}

impl Watchdog<'_> {
    /// Returns only to give up.
    async fn run(self) -> Result<(), Failure> {
        let mut watch = self.client.watch_link();
        let mut resent = self.client.resent();
        let mut timer = Timer::never();
        // Connected when the run began; the link now is taken as its first change.
        let mut link = Link::Up;
        let mut next = Some(watch.get());
        let mut seen = self.waits.answers.get();
        // Since when messages wait without an answer, as first seen by a look.
        let mut quiet: Option<Instant> = None;
        loop {
            if let Some(new) = next.take() {
                self.report(&link, &new, &mut resent)?;
                link = new;
            }
            let now = Instant::now();
            let answers = self.waits.answers.get();
            if answers != seen || self.waits.waiting.get() == 0 || link != Link::Up {
                seen = answers;
                quiet = None;
            } else if quiet.is_none() {
                quiet = Some(now);
            }
            if let Some(t) = self.plan.timeout {
                if let Some(why) = self.expired(&link, quiet, now, t) {
                    return Err(Failure(why));
                }
                // A tenth of the timeout between looks: it gives up at most that late,
                // never early.
                let mut at = now + (t / 10).max(Duration::from_millis(1));
                if let Link::Down { since, .. } = &link {
                    at = at.min(*since + t);
                }
                timer.set_at(at);
            }
            next = async { Some(watch.changed().await) }
                .or(async {
                    (&mut timer).await;
                    None
                })
                .await;
        }
    }

    /// Says what changed from `old` to `new`, if it matters to the user.
    fn report(&self, old: &Link, new: &Link, resent: &mut u64) -> Result<(), Failure> {
        match (old, new) {
            (Link::Up, Link::Down { reason, .. }) => {
                let limit = match self.plan.timeout {
                    Some(t) => format!("for up to {} (--timeout)", super::humantime(t)),
                    None => "until it is back (--retry-forever)".into(),
                };
                eprintln!(
                    "mote pub: lost the connection to {} ({reason}); reconnecting {limit}",
                    self.addr
                );
            }
            (Link::Down { since, .. }, Link::Up) => {
                let again = self.client.resent() - *resent;
                *resent += again;
                let again = match again {
                    0 => String::new(),
                    n => format!(
                        "; sent {n} unconfirmed message{} again (the broker may store {} twice)",
                        plural(n),
                        if n == 1 { "it" } else { "them" }
                    ),
                };
                eprintln!(
                    "mote pub: reconnected to {} after {}{again}",
                    self.addr,
                    super::humantime(since.elapsed())
                );
            }
            (_, Link::Closed) => return Err(Error::Closed.into()),
            _ => {}
        }
        Ok(())
    }

    /// Why to give up now, if it is time: `t` without a connection, or `t` since `quiet`.
    fn expired(
        &self,
        link: &Link,
        quiet: Option<Instant>,
        now: Instant,
        t: Duration,
    ) -> Option<String> {
        let waiting = self.waits.waiting.get();
        let unconfirmed = match (self.plan.confirm, waiting) {
            (true, n) if n > 0 => format!("; {n} message{} not confirmed", plural(n as u64)),
            _ => String::new(),
        };
        let what_to_do = "wait longer with --timeout, or for ever with --retry-forever";
        match link {
            Link::Down { since, reason } if now >= *since + t => Some(format!(
                "no connection to {} for {} ({reason}){unconfirmed}; giving up ({what_to_do})",
                self.addr,
                super::humantime(t)
            )),
            Link::Up if quiet.is_some_and(|q| now >= q + t) => Some(format!(
                "the broker at {} answered nothing for {}{unconfirmed}; giving up ({what_to_do})",
                self.addr,
                super::humantime(t)
            )),
            _ => None,
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
