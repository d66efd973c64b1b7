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
use mote_sdk::{Client, Confirmation, Error, Link, LinkWatch, Options};

use super::Failure;

/// Most confirmed publishes in flight, and most payload bytes among them (at least one
/// message): the SDK keeps a copy of each until it is confirmed, to send it again.
const MAX_IN_FLIGHT: usize = 1024;
const MAX_IN_FLIGHT_BYTES: usize = 1 << 20;

/// Lines of stdin read before they are handed over, so a fast pipe costs one hand-over
/// per batch and a slow one none of its latency.
const LINE_BATCH: usize = 256;

/// What to publish, and how long to wait for the broker.
pub(crate) struct Plan<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) confirm: bool,
    /// `None`: `--retry-forever`.
    pub(crate) timeout: Option<Duration>,
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
) -> Result<(), Failure> {
    let waits = Waits::new();
    let work = publish_all(client, plan, input, out, &waits);
    let watchdog = Watchdog {
        client,
        addr,
        plan,
        waits: &waits,
    };
    work.or(watchdog.run()).await
}

/// What the publishing side tells the watchdog: how many answers it waits for, and
/// since when nothing came back.
struct Waits {
    waiting: Cell<usize>,
    /// The latest answer (or reconnect), or when waiting began.
    since: Cell<Instant>,
}

impl Waits {
    fn new() -> Waits {
        Waits {
            waiting: Cell::new(0),
            since: Cell::new(Instant::now()),
        }
    }

    fn more(&self) {
        if self.waiting.get() == 0 {
            self.since.set(Instant::now());
        }
        self.waiting.set(self.waiting.get() + 1);
    }

    fn answered(&self) {
        self.waiting.set(self.waiting.get().saturating_sub(1));
        self.since.set(Instant::now());
    }

    /// Awaits `f`, counting it as a wait for the broker unless it is ready at once.
    async fn on<T>(&self, f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        if let Some(v) = poll_once(f.as_mut()).await {
            return v;
        }
        self.more();
        let v = f.await;
        self.answered();
        v
    }
}

/// Reads stdin on a thread, a batch of lines at a time (without their `\n` or `\r\n`).
fn read_lines() -> Result<async_channel::Receiver<io::Result<Vec<Vec<u8>>>>, Failure> {
    let (tx, rx) = async_channel::bounded(2);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::BufReader::with_capacity(64 * 1024, io::stdin().lock());
            loop {
                let mut batch = Vec::new();
                let mut end = false;
                while batch.len() < LINE_BATCH {
                    let mut line = Vec::new();
                    match stdin.read_until(b'\n', &mut line) {
                        Ok(0) => {
                            end = true;
                            break;
                        }
                        Ok(_) => {
                            if line.ends_with(b"\n") {
                                line.pop();
                                if line.ends_with(b"\r") {
                                    line.pop();
                                }
                            }
                            batch.push(line);
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
                if !batch.is_empty() && tx.send_blocking(Ok(batch)).is_err() {
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
) -> Result<(), Failure> {
    let (mut ready, lines) = match input {
        Input::One(m) => (VecDeque::from([m]), None),
        Input::Lines => (VecDeque::new(), Some(read_lines()?)),
    };
    let mut input_open = lines.is_some();
    let mut link = client.watch_link();
    let mut inflight: VecDeque<(Confirmation, usize)> = VecDeque::new();
    let mut inflight_bytes = 0;
    loop {
        // Every confirmation already in, in order.
        while let Some((c, _)) = inflight.front_mut() {
            let Some(r) = poll_once(c).await else { break };
            if let Some((_, len)) = inflight.pop_front() {
                inflight_bytes -= len;
            }
            waits.answered();
            writeln!(out, "{}", r?)?;
        }
        let room = inflight.is_empty()
            || (inflight.len() < MAX_IN_FLIGHT && inflight_bytes < MAX_IN_FLIGHT_BYTES);
        if room {
            if let Some(m) = ready.front() {
                let sent = if plan.confirm {
                    match client.publish_pipelined(plan.topic, plan.key, m).await {
                        Ok(c) => {
                            inflight_bytes += m.len();
                            inflight.push_back((c, m.len()));
                            waits.more();
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    waits
                        .on(client.publish_with_key(plan.topic, plan.key, m))
                        .await
                };
                match sent {
                    Ok(()) => {
                        ready.pop_front();
                    }
                    // Disconnected with a full queue: wait for the connection (the
                    // watchdog bounds the wait), then try again.
                    Err(Error::QueueFull { .. }) => {
                        out.flush()?;
                        up(&mut link).await?;
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
            Lines(Option<io::Result<Vec<Vec<u8>>>>),
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
                Some((c, _)) => Next::Confirmed(c.await),
                None => pending().await,
            }
        };
        match read.or(confirmed).await {
            Next::Lines(Some(Ok(batch))) => ready.extend(batch),
            Next::Lines(Some(Err(e))) => return Err(Failure(format!("cannot read stdin: {e}"))),
            Next::Lines(None) => input_open = false,
            Next::Confirmed(r) => {
                if let Some((_, len)) = inflight.pop_front() {
                    inflight_bytes -= len;
                }
                waits.answered();
                writeln!(out, "{}", r?)?;
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
    Ok(())
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
        loop {
            if let Some(new) = next.take() {
                self.report(&link, &new, &mut resent)?;
                link = new;
            }
            if let Some(t) = self.plan.timeout {
                let since = match &link {
                    Link::Down { since, .. } => *since,
                    _ if self.waits.waiting.get() > 0 => self.waits.since.get(),
                    // Nothing to wait for: look again later, as waits may have begun.
                    _ => Instant::now(),
                };
                timer.set_at(since + t);
            }
            next = async { Some(watch.changed().await) }
                .or(async {
                    (&mut timer).await;
                    None
                })
                .await;
            if next.is_none() {
                if let Some(why) = self.expired(&link) {
                    return Err(Failure(why));
                }
            }
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
                self.waits.since.set(Instant::now());
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

    /// Why to give up now, if it is time.
    fn expired(&self, link: &Link) -> Option<String> {
        let t = self.plan.timeout?;
        let now = Instant::now();
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
            Link::Up if waiting > 0 && now >= self.waits.since.get() + t => Some(format!(
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
