//! `mote sub --exec CMD`: a worker. Each message runs `sh -c CMD` with the payload on its
//! stdin and the message's topic, offset, key and attempt in its environment; the
//! command's stdout and stderr are mote's. In a group, exit 0 acks the message and
//! anything else nacks it, so a worker that dies mid-job loses nothing: the broker
//! delivers the message again.
//!
//! Up to `--jobs` commands run at once, each in its own process group, waited for on a
//! thread of its own. A command still running when its group's ack timeout is up is
//! killed with its whole process group (the broker gives the message to another member
//! then anyway), and nacked. On SIGINT or SIGTERM no new message is taken; running
//! commands finish (or are killed at their deadline) and mote leaves. A second signal
//! kills them at once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future::pending;
use futures_lite::{FutureExt, StreamExt};
use mote_sdk::{Client, Delivery, ErrorCode, Event, GroupEvent, Message, Options, Start};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use super::super::args::{self, CliError, Parsed};
use super::{Exit, Failure};

/// What `sh` exits with when it cannot find or cannot execute the command: the job
/// could never succeed, so the worker stops instead of burning the message's deliveries.
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

/// How the worker runs.
pub(crate) struct Plan {
    /// Given to `sh -c`.
    pub(crate) cmd: String,
    /// Commands running at once (at least 1).
    pub(crate) jobs: usize,
    /// How long a nacked message waits before it is delivered again.
    pub(crate) nack_delay: Duration,
    /// The group's ack timeout: a command running longer is killed. `None` for plain
    /// subscriptions, where nothing is acked.
    pub(crate) kill_after: Option<Duration>,
    /// Stop after this many finished commands (`-C`).
    pub(crate) count: Option<usize>,
    /// Stop taking messages after this long (`-W`).
    pub(crate) timeout: Option<Duration>,
    /// `--quiet`: nothing said on stderr when the connection is lost and back.
    pub(crate) quiet: bool,
}

/// Where the messages come from.
pub(crate) enum Source {
    /// A group membership: each message is acked or nacked after its command.
    Group {
        filter: String,
        group: mote_sdk::Group,
    },
    /// Plain subscriptions: nothing to ack.
    Plain { filters: Vec<String>, from: Start },
}

/// A message a command is run for.
pub(super) enum Job {
    Plain(Message),
    Group(Delivery),
}

impl Job {
    fn message(&self) -> &Message {
        match self {
            Job::Plain(m) => m,
            Job::Group(d) => d.message(),
        }
    }

    fn attempt(&self) -> u32 {
        match self {
            Job::Plain(_) => 1,
            Job::Group(d) => d.attempt(),
        }
    }
}

/// What the subscriptions yield, in one shape.
pub(super) enum Got {
    Job(Job),
    Lag {
        topic: Arc<str>,
        missed: u64,
        next: u64,
        who: &'static str,
        /// Evicted by the topic's retention before the subscription asked for them.
        evicted: bool,
    },
    /// The broker refused a subscription made again after a reconnect: it has ended.
    Refused(String),
    /// A topic read was deleted on the broker (the subscription stays).
    Removed {
        topic: Arc<str>,
        unread: u64,
        next: u64,
    },
    /// An event a newer SDK may add: none is a job.
    Other,
}

enum Subs {
    Group(mote_sdk::GroupSubscription),
    Plain(Vec<mote_sdk::Subscription>),
}

impl Subs {
    /// The next message or lag report; `None` once the client is closed.
    async fn next(&mut self) -> Option<Got> {
        match self {
            Subs::Group(s) => Some(match s.next().await? {
                GroupEvent::Message(d) => Got::Job(Job::Group(d)),
                GroupEvent::Lag {
                    topic,
                    missed,
                    next,
                } => Got::Lag {
                    topic,
                    missed,
                    next,
                    who: "the group",
                    evicted: false,
                },
                GroupEvent::Refused { message, .. } => Got::Refused(message),
                GroupEvent::Removed {
                    topic,
                    unread,
                    next,
                } => Got::Removed {
                    topic,
                    unread,
                    next,
                },
                _ => Got::Other,
            }),
            Subs::Plain(subs) => {
                let ev = futures_lite::future::poll_fn(|cx| {
                    for s in subs.iter_mut() {
                        if let std::task::Poll::Ready(e) = s.poll_next(cx) {
                            return std::task::Poll::Ready(e);
                        }
                    }
                    std::task::Poll::Pending
                })
                .await?;
                let evicted = matches!(ev, Event::Evicted { .. });
                Some(match ev {
                    Event::Message(m) => Got::Job(Job::Plain(m)),
                    Event::Lag {
                        topic,
                        missed,
                        next,
                    }
                    | Event::Evicted {
                        topic,
                        missed,
                        next,
                    } => Got::Lag {
                        topic,
                        missed,
                        next,
                        who: "this subscriber",
                        evicted,
                    },
                    Event::Refused { message, .. } => Got::Refused(message),
                    Event::Removed {
                        topic,
                        unread,
                        next,
                    } => Got::Removed {
                        topic,
                        unread,
                        next,
                    },
                    _ => Got::Other,
                })
            }
        }
    }
}

/// A command that is running.
struct Running {
    job: Job,
    /// Its process group (the `sh` it started leads it).
    pid: Pid,
    /// Set by the waiting thread once the process has exited and before it is reaped:
    /// while unset, `pid` is certainly still ours to kill.
    exited: Arc<Mutex<bool>>,
    deadline: Option<Instant>,
    killed: bool,
}

impl Running {
    fn kill(&mut self) {
        let exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        if !*exited {
            // Fails only if the group is gone already, which is what we want.
            let _ = rustix::process::kill_process_group(self.pid, Signal::KILL);
            self.killed = true;
        }
    }
}

/// A command's end, sent by its waiting thread.
struct Finished {
    id: u64,
    status: io::Result<ExitStatus>,
}

/// What woke the worker.
enum Wake {
    Got(Option<Got>),
    Finished(Finished),
    Deadline,
    Signal,
    Timeout,
}

/// `mote sub --exec`: reads its settings from what `subscribe` parsed, then works.
#[allow(clippy::too_many_arguments)] // What `subscribe` has read, handed on once.
pub(crate) fn subscribe(
    p: &Parsed,
    cmd: String,
    opts: Options,
    filters: Vec<String>,
    from: Start,
    group: Option<mote_sdk::Group>,
    count: Option<usize>,
    timeout: Option<Duration>,
) -> Result<(), Exit> {
    let jobs = p
        .parse_with("jobs", |s| match args::parse_count(s)? {
            0 => Err("must be at least 1".into()),
            n => Ok(n),
        })?
        .unwrap_or(1);
    let nack_delay = p.parse_with("nack-delay", args::parse_duration)?;
    if nack_delay.is_some() && group.is_none() {
        return Err(CliError("--nack-delay needs --group NAME".into()).into());
    }
    for o in ["json", "verbose"] {
        if p.on(o) {
            return Err(CliError(format!("--{o} is for printing; --exec runs CMD instead")).into());
        }
    }
    if p.on("no-ack") {
        return Err(CliError("--exec acks by the command's exit: drop --no-ack".into()).into());
    }
    let (source, kill_after) = match group {
        Some(mut g) => {
            if p.get("prefetch").is_none() {
                g = g.prefetch(u32::try_from(jobs).unwrap_or(u32::MAX));
            }
            let ack_timeout = p
                .parse_with("ack-timeout", args::parse_duration)?
                .unwrap_or(Duration::from_secs(30));
            let filter = filters.concat();
            (Source::Group { filter, group: g }, Some(ack_timeout))
        }
        None => (Source::Plain { filters, from }, None),
    };
    let plan = Plan {
        cmd,
        jobs,
        nack_delay: nack_delay.unwrap_or_default(),
        kill_after,
        count,
        timeout,
        quiet: p.on("quiet"),
    };
    Ok(run(opts, source, plan)?)
}

/// Runs the worker until `-C`, `-W`, a signal, or an error ends it.
pub(crate) fn run(opts: Options, source: Source, plan: Plan) -> Result<(), Failure> {
    use async_signal::{Signal as Sig, Signals};
    // Installed first: a signal during the connect must not kill us mid-way either.
    let mut signals = Signals::new([Sig::Int, Sig::Term])
        .map_err(|e| Failure(format!("cannot install signal handlers: {e}")))?;
    super::block_on(async {
        // Declared before the client: dropped after it, when nothing can be sent.
        let mut held: Vec<Job> = Vec::new();
        let addr = opts.addr.clone();
        let client = Client::connect(opts).await?;
        let mut follow = super::follow::Follow::new(&client, addr, plan.quiet);
        let mut subs = match &source {
            Source::Group { filter, group } => {
                Subs::Group(client.subscribe_group(filter, group.clone()).await?)
            }
            Source::Plain { filters, from } => {
                let mut v = Vec::new();
                for f in filters {
                    v.push(client.subscribe(f, *from).await?);
                }
                Subs::Plain(v)
            }
        };
        let r = work(&plan, &mut subs, &mut follow, &mut held, &mut signals).await;
        // Acks and nacks reach the broker before we leave. One that came after the ack
        // timeout is refused (the message went to another member): said, no failure.
        // Not while the broker is away: what we held is back in the group already (acks
        // of the lost connection are not sent again), and waiting for the broker would
        // keep a stopped worker running for good; a further signal ends the wait too.
        let flushed = if client.is_connected() {
            async { Some(client.flush().await) }
                .or(async {
                    signals.next().await;
                    None
                })
                .await
        } else {
            None
        };
        match flushed {
            Some(Err(e)) if e.code() == Some(ErrorCode::UNKNOWN_DELIVERY) => {
                eprintln!("mote sub: {e}");
            }
            Some(Err(e)) if r.is_ok() => return Err(e.into()),
            _ => {}
        }
        drop(subs);
        drop(client);
        r
    })
}

async fn work(
    plan: &Plan,
    subs: &mut Subs,
    follow: &mut super::follow::Follow,
    held: &mut Vec<Job>,
    signals: &mut async_signal::Signals,
) -> Result<(), Failure> {
    let (tx, rx) = async_channel::unbounded::<Finished>();
    let mut running: HashMap<u64, Running> = HashMap::new();
    let mut next_id = 0u64;
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut stopping = false;
    // A failure that ends the run once the running commands are done.
    let mut failure: Option<Failure> = None;
    let end = plan.timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    loop {
        let more_wanted = plan.count.is_none_or(|c| started < c);
        if running.is_empty() && (stopping || !more_wanted) {
            break;
        }
        let take = !stopping && more_wanted && running.len() < plan.jobs;
        let deadline = running
            .values()
            .filter(|r| !r.killed)
            .filter_map(|r| r.deadline)
            .min();
        let wake = async {
            if take {
                // Said meanwhile: the connection lost and back (while all --jobs run,
                // the next look says it).
                let got = follow.around(subs.next()).await;
                if let Some(g) = &got {
                    follow.saw_got(g);
                }
                Wake::Got(got)
            } else {
                pending().await
            }
        }
        .or(async { rx.recv().await.map_or(Wake::Deadline, Wake::Finished) })
        .or(async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                    Wake::Deadline
                }
                None => pending().await,
            }
        })
        .or(async {
            match signals.next().await {
                Some(_) => Wake::Signal,
                None => pending().await,
            }
        })
        .or(async {
            match end {
                Some(at) if !timed_out => {
                    Timer::at(at).await;
                    Wake::Timeout
                }
                _ => pending().await,
            }
        })
        .await;
        match wake {
            Wake::Got(None) => {
                stopping = true;
                failure.get_or_insert(Failure("the client closed".into()));
            }
            Wake::Got(Some(Got::Lag {
                topic,
                missed,
                next,
                who,
                evicted,
            })) => {
                super::follow::report_lag(&mut io::stdout(), who, &topic, missed, next, evicted)?
            }
            Wake::Got(Some(Got::Other)) => {}
            // Said like lag; the worker goes on (a topic published to again is read).
            Wake::Got(Some(Got::Removed {
                topic,
                unread,
                next,
            })) => super::follow::report_removed(&mut io::stdout(), &topic, unread, next)?,
            Wake::Got(Some(Got::Refused(message))) => {
                // One refused subscription ends the worker: what it was started to do
                // no longer holds.
                super::follow::report_refused(&mut io::stdout(), &message)?;
                stopping = true;
                failure.get_or_insert(Failure(
                    "the broker refused the subscription after a reconnect; exiting".into(),
                ));
            }
            Wake::Got(Some(Got::Job(job))) => {
                let id = next_id;
                next_id += 1;
                match start(plan, id, job, &tx) {
                    Ok(r) => {
                        started += 1;
                        running.insert(id, r);
                    }
                    Err(failed) => {
                        let (job, e) = *failed;
                        // Given back at once: another member (or a fixed us) can run it.
                        if let Job::Group(d) = job {
                            settle(d.nack(Duration::ZERO))?;
                        }
                        stopping = true;
                        failure.get_or_insert(e);
                    }
                }
            }
            Wake::Finished(f) => {
                let Some(r) = running.remove(&f.id) else {
                    continue;
                };
                finished += 1;
                if let Some(e) = ended(plan, r, f.status)? {
                    stopping = true;
                    failure.get_or_insert(e);
                }
            }
            Wake::Deadline => {
                let now = Instant::now();
                for r in running.values_mut() {
                    if !r.killed && r.deadline.is_some_and(|d| d <= now) {
                        r.kill();
                        // Dead before it was killed: its end is on the way anyway.
                        r.deadline = None;
                    }
                }
            }
            Wake::Signal => {
                if stopping {
                    eprintln!("mote sub: second signal: killing the running commands");
                    for r in running.values_mut() {
                        r.kill();
                    }
                } else {
                    stopping = true;
                    if !running.is_empty() {
                        eprintln!(
                            "mote sub: stopping: waiting for {} running command{} (a second signal kills them)",
                            running.len(),
                            if running.len() == 1 { "" } else { "s" }
                        );
                    }
                }
            }
            Wake::Timeout => {
                timed_out = true;
                stopping = true;
            }
        }
    }
    // Messages the SDK holds for us and no command ran: back to the group when we leave.
    if let Subs::Group(s) = subs {
        while let Some(GroupEvent::Message(d)) = s.try_next() {
            held.push(Job::Group(d));
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    match plan.count {
        Some(c) if timed_out && finished < c => Err(Failure(format!(
            "timed out after {} with {finished} of {c} commands finished",
            super::humantime(plan.timeout.unwrap_or_default())
        ))),
        _ => Ok(()),
    }
}

/// Starts the command for `job`. A command that cannot be started comes back with why.
fn start(
    plan: &Plan,
    id: u64,
    job: Job,
    tx: &async_channel::Sender<Finished>,
) -> Result<Running, Box<(Job, Failure)>> {
    let m = job.message();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&plan.cmd)
        .env("MOTE_TOPIC", &*m.topic)
        .env("MOTE_OFFSET", m.offset.to_string())
        .env("MOTE_ATTEMPT", job.attempt().to_string())
        .env_remove("MOTE_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        // Its own process group: a kill reaches what `sh` started too, and the terminal's
        // Ctrl-C reaches only mote, which lets the command finish.
        .process_group(0);
    if let Some(k) = &m.key {
        cmd.env("MOTE_KEY", OsStr::from_bytes(k));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = Failure(format!("cannot run sh -c {:?}: {e}", plan.cmd));
            return Err(Box::new((job, why)));
        }
    };
    // A process id fits in an i32 and is never 0 for a child we started.
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            Failure(format!("sh -c {:?} got an unusable process id", plan.cmd))
        });
    let pid = match pid {
        Ok(p) => p,
        Err(f) => return Err(Box::new((job, f))),
    };
    let exited = Arc::new(Mutex::new(false));
    let payload = m.payload.clone();
    let thread_exited = exited.clone();
    let tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("job".into())
        .spawn(move || {
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its stdin is no error.
                let _ = stdin.write_all(&payload);
            }
            // Waited for without reaping it, so that it can be marked exited before its
            // process id is freed for reuse.
            while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {}
            *thread_exited.lock().unwrap_or_else(|e| e.into_inner()) = true;
            let status = child.wait();
            let _ = tx.send_blocking(Finished { id, status });
        });
    if let Err(e) = spawned {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let why = Failure(format!("cannot start a thread: {e}"));
        return Err(Box::new((job, why)));
    }
    Ok(Running {
        job,
        pid,
        exited,
        deadline: plan.kill_after.map(|t| Instant::now() + kill_margin(t)),
        killed: false,
    })
}

/// When a command is killed: a little before its group's ack timeout, counted from its
/// start, so that the nack reaches the broker before the timeout gives the message to
/// another member (the broker started counting when it sent the message).
fn kill_margin(ack_timeout: Duration) -> Duration {
    ack_timeout.saturating_sub((ack_timeout / 10).min(Duration::from_millis(500)))
}

/// Acks or nacks a command's message by how it ended; says on stderr why a message goes
/// back. Returns the failure that ends the run, if the command could not run at all.
fn ended(
    plan: &Plan,
    r: Running,
    status: io::Result<ExitStatus>,
) -> Result<Option<Failure>, Failure> {
    let m = r.job.message();
    let what = format!(
        "the command for {} offset {} (attempt {})",
        m.topic,
        m.offset,
        r.job.attempt()
    );
    let status = status.map_err(|e| Failure(format!("cannot wait for {what}: {e}")))?;
    if status.success() && !r.killed {
        if let Job::Group(d) = r.job {
            settle(d.ack())?;
        }
        return Ok(None);
    }
    let why = if r.killed {
        format!(
            "ran into the ack timeout ({}) and was killed",
            super::humantime(plan.kill_after.unwrap_or_default())
        )
    } else if let Some(code) = status.code() {
        format!("exited with {code}")
    } else {
        format!("was killed by signal {}", status.signal().unwrap_or(0))
    };
    let fatal = match status.code() {
        Some(NOT_FOUND) => Some("command not found"),
        Some(NOT_EXECUTABLE) => Some("command not executable"),
        _ => None,
    };
    match r.job {
        Job::Group(d) => {
            let delay = if fatal.is_some() {
                Duration::ZERO
            } else {
                plan.nack_delay
            };
            eprintln!("mote sub: {what} {why}; nacked, it will be delivered again");
            settle(d.nack(delay))?;
        }
        Job::Plain(_) => eprintln!("mote sub: {what} {why}"),
    }
    Ok(fatal.map(|f| {
        Failure(format!(
            "sh -c {:?} exited with {} ({f}): stopping",
            plan.cmd,
            status.code().unwrap_or_default()
        ))
    }))
}

/// An ack or nack that could not be sent because the connection it came on is gone is
/// no failure: the broker has put the message back already.
fn settle(r: Result<(), mote_sdk::Error>) -> Result<(), Failure> {
    match r {
        Err(mote_sdk::Error::DeliveryExpired) => {
            eprintln!(
                "mote sub: the connection a finished command's message came on is gone; the broker delivers it again"
            );
            Ok(())
        }
        r => Ok(r?),
    }
}
