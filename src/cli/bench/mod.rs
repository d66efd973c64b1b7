//! `mote bench`: throughput, fan-out, latency, CPU per message and memory of a broker,
//! optionally side by side with NATS, Redis and mosquitto run by the same command.
//!
//! Clients speak each broker's wire protocol directly over blocking sockets (for mote
//! the SDK's codec, no SDK client), so the measurement is of the broker, not of a client
//! library. Publishers are paced to stay at most `--window` messages ahead of the
//! slowest subscriber, so a run measures what the broker delivers without loss; any loss
//! is reported anyway.

mod conn;
mod group;
mod mote;
mod mqtt;
mod nats;
mod proc;
mod redis;
mod report;
mod run;

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use mote_sdk::wire;

use super::args::{self, CliError, Opt, Outcome, Spec};
use proc::{Broker, Peer};
use report::Figures;
use run::{Load, Throughput};

pub(crate) static SPEC: Spec = Spec {
    name: "bench",
    about: "Measure a broker: 1->1 throughput at 64 B and 1 KiB, 1->4 fan-out, a consumer\n\
            group of 3 acking members (mote only), ping-pong latency, and (when it starts the\n\
            broker itself) startup time, CPU per million messages, idle and per-connection\n\
            memory. With --compare, the same runs\n\
            against NATS, Redis or mosquitto started by the bench, and the ratios.",
    opts: &[
        Opt {
            long: "host",
            short: Some('h'),
            value: Some("HOST"),
            env: None,
            default: None,
            help: "bench a running broker at HOST instead of starting one",
        },
        Opt {
            long: "port",
            short: Some('p'),
            value: Some("PORT"),
            env: None,
            default: None,
            help: "port of the running broker (default 7270 with -h)",
        },
        Opt {
            long: "count",
            short: Some('n'),
            value: Some("N"),
            env: None,
            default: Some("3000000"),
            help: "messages per 64 B run (1 KiB runs send a quarter, mosquitto a tenth)",
        },
        Opt {
            long: "window",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("8192"),
            help: "most messages a publisher may be ahead of the slowest subscriber",
        },
        Opt {
            long: "latency-samples",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("20000"),
            help: "round trips for the latency run",
        },
        Opt {
            long: "idle-connections",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("1000"),
            help: "idle subscribers opened to measure memory per connection",
        },
        Opt {
            long: "only",
            short: None,
            value: Some("RUNS"),
            env: None,
            default: None,
            help: "comma-separated subset of: 64b, 1k, fanout, group, latency, idle (for profiling)",
        },
        Opt {
            long: "compare",
            short: None,
            value: Some("PEERS"),
            env: None,
            default: None,
            help: "also bench these peers (started here) and print mote/peer: nats,redis,mosquitto",
        },
        Opt {
            long: "token",
            short: None,
            value: Some("TOKEN"),
            env: None,
            default: None,
            help: "also run encrypted: a second broker with this token (or `new`); with -h, the broker's token",
        },
        Opt {
            long: "repeat",
            short: None,
            value: Some("N"),
            env: None,
            default: Some("1"),
            help: "run throughput and latency N times, brokers in turn; print medians",
        },
        Opt {
            long: "json",
            short: None,
            value: None,
            env: None,
            default: None,
            help: "print one JSON object with every figure",
        },
    ],
    after: "Ratios are mote/peer, each the median of the ratios within one repetition: above 1\n\
            is better for mote in throughput, below 1 in CPU, latency and memory.\n\n\
            Examples:\n  mote bench                  # starts its own broker on a free loopback port\n  \
            mote bench --json\n  mote bench -h 127.0.0.1 -p 7270 -n 1000000\n  \
            mote bench --compare nats,redis,mosquitto\n  mote bench --compare nats --repeat 5",
};

/// mosquitto is an order of magnitude slower: its runs send this fraction of the messages.
const MOSQUITTO_DIVISOR: u64 = 10;

/// A broker under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mote,
    /// mote with a token: authenticated and encrypted (`--token`).
    Encrypted,
    Peer(Peer),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mote => "mote",
            Kind::Encrypted => "encrypted",
            Kind::Peer(p) => p.name(),
        }
    }

    /// Messages sent in a run are divided by this.
    fn divisor(self) -> u64 {
        match self {
            Kind::Peer(Peer::Mosquitto) => MOSQUITTO_DIVISOR,
            _ => 1,
        }
    }
}

/// Calls `run::$f::<C>(args)` with the client `C` of `kind`'s protocol.
macro_rules! with_client {
    ($kind:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $kind {
            Kind::Mote => run::$f::<mote::Mote>($($arg),*),
            Kind::Encrypted => run::$f::<mote::SecureMote>($($arg),*),
            Kind::Peer(Peer::Nats) => run::$f::<nats::Nats>($($arg),*),
            Kind::Peer(Peer::Redis) => run::$f::<redis::Redis>($($arg),*),
            Kind::Peer(Peer::Mosquitto) => run::$f::<mqtt::Mqtt>($($arg),*),
        }
    };
}

/// One broker under test and everything measured of it.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    /// Set when this command started it.
    broker: Option<Broker>,
    version: Option<String>,
    figures: Figures,
    missed: u64,
    /// Runs that failed (peers only: a failing mote run ends the command).
    errors: Vec<String>,
    /// Lines of the broker's log that tell of trouble.
    notes: Vec<String>,
    /// Its broker died: nothing more to measure.
    gone: bool,
}

impl Target {
    fn new(kind: Kind, addr: SocketAddr, broker: Option<Broker>, version: Option<String>) -> Self {
        Target {
            kind,
            addr,
            broker,
            version,
            figures: Figures::default(),
            missed: 0,
            errors: Vec::new(),
            notes: Vec::new(),
            gone: false,
        }
    }

    /// Prefixes a line about this broker when there are several.
    fn who(&self, comparing: bool) -> String {
        if comparing {
            format!("{:<10}", self.kind.name())
        } else {
            String::new()
        }
    }

    fn pid(&self) -> Option<u32> {
        self.broker.as_ref().map(Broker::pid)
    }

    /// Runs one measurement `what` of this broker, unless it died. A peer's failure is
    /// reported and recorded (and a dead peer's later runs skipped); mote's ends the
    /// command.
    fn attempt<T>(
        &mut self,
        plan: &Plan,
        tag: &str,
        what: &str,
        f: impl FnOnce(&Target) -> Result<T, String>,
    ) -> Result<Option<T>, CliError> {
        if self.gone {
            return Ok(None);
        }
        let exited = self.broker.as_mut().and_then(Broker::exited);
        let r = match exited {
            Some(status) => {
                self.gone = true;
                Err(format!(
                    "the broker exited ({status}); its remaining runs are skipped"
                ))
            }
            None => f(self),
        };
        match r {
            Ok(x) => Ok(Some(x)),
            Err(e) if matches!(self.kind, Kind::Mote | Kind::Encrypted) => {
                Err(CliError(format!("{what}: {e}")))
            }
            Err(e) => {
                plan.say(format!("{tag}{what} failed: {e}"));
                self.errors.push(format!("{what}: {e}"));
                Ok(None)
            }
        }
    }
}

/// Starts a broker five times and keeps the last; the startup time is the median.
fn start_five(
    mut start: impl FnMut() -> Result<(Broker, Duration), String>,
) -> Result<(Broker, f64), String> {
    let mut times = Vec::new();
    for _ in 0..4 {
        let (b, t) = start()?;
        drop(b);
        times.push(t.as_secs_f64() * 1e3);
    }
    let (b, t) = start()?;
    times.push(t.as_secs_f64() * 1e3);
    let median = report::median(times).unwrap_or(0.0);
    Ok((b, median))
}

/// The options that shape the runs.
struct Plan {
    count: u64,
    window: u64,
    samples: usize,
    idle_n: usize,
    repeat: usize,
    only: Option<String>,
    json: bool,
}

impl Plan {
    fn wanted(&self, run: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x.trim() == run))
    }

    fn say(&self, s: impl AsRef<str>) {
        if !self.json {
            eprintln!("{}", s.as_ref());
        }
    }
}

/// The throughput runs: `--only` name, label, JSON suffix, payload size, messages
/// (divided from `--count`), subscribers.
const RUNS: [(&str, &str, &str, usize, u64, usize); 3] = [
    ("64b", "1->1 64 B", "64b", 64, 1, 1),
    ("1k", "1->1 1 KiB", "1kib", 1024, 4, 1),
    ("fanout", "1->4 64 B", "fanout4", 64, 4, 4),
];

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    let p = match args::parse(&SPEC, argv)? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let plan = Plan {
        count: p
            .parse_with("count", args::parse_count)?
            .unwrap_or(3_000_000) as u64,
        window: p
            .parse_with("window", args::parse_count)?
            .unwrap_or(8192)
            .max(1) as u64,
        samples: p
            .parse_with("latency-samples", args::parse_count)?
            .unwrap_or(20_000)
            .max(10),
        idle_n: p
            .parse_with("idle-connections", args::parse_count)?
            .unwrap_or(1000),
        repeat: p
            .parse_with("repeat", args::parse_count)?
            .unwrap_or(1)
            .max(1),
        only: p.get("only"),
        json: p.on("json"),
    };
    let mut peers: Vec<Peer> = Vec::new();
    if let Some(list) = p.get("compare") {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let peer = Peer::parse(name).ok_or_else(|| {
                CliError(format!(
                    "invalid value {name:?} for --compare: expected nats, redis or mosquitto"
                ))
            })?;
            if !peers.contains(&peer) {
                peers.push(peer);
            }
        }
    }
    let fail = |e: String| CliError(e);

    let (broker, addr, startup) = match (p.get("host"), p.get("port")) {
        (None, None) => {
            let (b, startup) = start_five(proc::start_mote).map_err(fail)?;
            let addr = b.addr;
            (Some(b), addr, Some(startup))
        }
        (host, _) => {
            let host = host.unwrap_or_else(|| "127.0.0.1".into());
            let port: u16 = p
                .parse_with("port", |s| {
                    s.parse::<u16>().map_err(|_| "expected a port".into())
                })?
                .unwrap_or(wire::DEFAULT_PORT);
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| CliError(format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| CliError(format!("{host} has no address")))?;
            (None, addr, None)
        }
    };
    let token = match p.get("token").as_deref() {
        None => None,
        Some("new") => Some(super::new_token().map_err(fail)?),
        Some(t) => Some(t.to_string()),
    };
    if let Some(t) = &token {
        mote_sdk::secure::Token::new(t).map_err(|e| CliError(format!("--token: {e}")))?;
        let _ = mote::TOKEN.set(t.clone());
    }
    let external = broker.is_none();
    let kind = if external && token.is_some() {
        Kind::Encrypted
    } else {
        Kind::Mote
    };
    let mut mote = Target::new(kind, addr, broker, None);
    if let Some(s) = startup {
        mote.figures.add("startup_ms", 0, s);
    }
    let (mut targets, skipped) = start_peers(mote, &peers, &plan);
    // The same broker again with a token, right after the plaintext one.
    if let (Some(t), false) = (&token, external) {
        let (b, startup) = start_five(|| proc::start_mote_with(&["--token", t])).map_err(fail)?;
        let mut enc = Target::new(Kind::Encrypted, b.addr, Some(b), None);
        enc.figures.add("startup_ms", 0, startup);
        if let Some(pid) = enc.pid() {
            enc.figures
                .add("idle_rss_kib", 0, proc::status_kib(pid, "VmRSS") as f64);
        }
        targets.insert(1, enc);
    }
    let comparing = targets.len() > 1;
    plan.say(format!(
        "broker {addr}{}",
        startup.map_or(String::new(), |s| format!(", started in {s:.2} ms"))
    ));
    for t in &targets[1..] {
        plan.say(format!(
            "{} {}at {}, started in {:.2} ms",
            t.kind.name(),
            t.version
                .as_ref()
                .map_or(String::new(), |v| format!("{v} ")),
            t.addr,
            t.figures.median("startup_ms").unwrap_or(0.0)
        ));
    }
    if targets.iter().any(|t| t.kind.divisor() > 1) {
        plan.say(format!(
            "mosquitto runs send 1/{MOSQUITTO_DIVISOR} of the messages (it is much slower)"
        ));
    }
    for rep in 0..plan.repeat {
        repetition(&mut targets, &plan, rep)?;
    }
    memory(&mut targets, &plan)?;
    if plan.json {
        println!("{}", json_report(&targets, &skipped, &plan));
    } else if comparing || plan.repeat > 1 {
        summary(&targets, &skipped, &plan);
    }
    Ok(())
}

/// Starts each peer after `mote` and measures every broker's idle memory; returns them
/// all, mote first, and the peers that could not be started, with why.
fn start_peers(mote: Target, peers: &[Peer], plan: &Plan) -> (Vec<Target>, Vec<(Peer, String)>) {
    let mut targets = vec![mote];
    let mut skipped: Vec<(Peer, String)> = Vec::new();
    for &peer in peers {
        let started = peer.binary().and_then(|bin| {
            let version = peer.version(&bin);
            let (b, startup) = start_five(|| proc::start_peer(peer, &bin))?;
            Ok((b, startup, version))
        });
        match started {
            Ok((b, startup, version)) => {
                let mut t = Target::new(Kind::Peer(peer), b.addr, Some(b), version);
                t.figures.add("startup_ms", 0, startup);
                targets.push(t);
            }
            Err(e) => {
                plan.say(format!("skipping {}: {e}", peer.name()));
                skipped.push((peer, e));
            }
        }
    }
    if targets.iter().any(|t| t.broker.is_some()) {
        // Let the first connections' teardown settle before reading idle memory.
        thread::sleep(Duration::from_millis(100));
    }
    for t in &mut targets {
        if let Some(pid) = t.pid() {
            t.figures
                .add("idle_rss_kib", 0, proc::status_kib(pid, "VmRSS") as f64);
        }
    }
    (targets, skipped)
}

/// Repetition `rep` of every throughput and latency run on every broker.
fn repetition(targets: &mut [Target], plan: &Plan, rep: usize) -> Result<(), CliError> {
    let comparing = targets.len() > 1;
    // Brokers take turns, starting with a different one each repetition, so that
    // machine noise hits them alike.
    let order: Vec<usize> = (0..targets.len())
        .map(|i| (i + rep) % targets.len())
        .collect();
    let tag = |t: &Target| {
        let mut s = String::new();
        if plan.repeat > 1 {
            s += &format!("[{}/{}] ", rep + 1, plan.repeat);
        }
        s + &t.who(comparing)
    };
    for (key, name, suffix, size, divide, subs) in RUNS {
        if !plan.wanted(key) {
            continue;
        }
        for &i in &order {
            let t = &mut targets[i];
            let load = Load {
                run: key,
                size,
                count: (plan.count / divide / t.kind.divisor()).max(1),
                subs,
                window: plan.window,
            };
            let Some(tp) = t.attempt(plan, &tag(t), name, |t| {
                with_client!(t.kind, throughput(t.addr, t.pid(), load))
            })?
            else {
                continue;
            };
            plan.say(format!("{}{}", tag(t), run_line(name, size, &tp)));
            record_run(t, rep, suffix, size, subs, &tp);
        }
    }
    // Consumer groups are mote's own: 3 members sharing one topic, every message acked.
    if plan.wanted("group") {
        for &i in &order {
            let t = &mut targets[i];
            if t.kind != Kind::Mote {
                continue;
            }
            let name = "group x3 acked 64 B";
            let count = (plan.count / 2).max(1);
            let Some(tp) = t.attempt(plan, &tag(t), name, |t| {
                group::group_throughput(t.addr, t.pid(), 64, count, 3, plan.window)
            })?
            else {
                continue;
            };
            let base = t.figures.get("msgs_per_sec_64b", rep);
            plan.say(format!(
                "{}{}{}",
                tag(t),
                run_line(name, 64, &tp),
                base.map_or(String::new(), |b| format!(
                    "  ({:.0}% of 1->1)",
                    100.0 * tp.msgs_per_sec() / b
                ))
            ));
            record_run(t, rep, "group3", 64, 1, &tp);
            if let Some(b) = base.filter(|&b| b > 0.0) {
                t.figures
                    .add("group3_fraction_of_1to1", rep, tp.msgs_per_sec() / b);
            }
        }
    }
    if plan.wanted("latency") {
        for &i in &order {
            let t = &mut targets[i];
            let Some(lat) = t.attempt(plan, &tag(t), "latency", |t| {
                with_client!(t.kind, latency(t.addr, plan.samples))
            })?
            else {
                continue;
            };
            let (p50, p99, p999) = (
                run::percentile(&lat, 0.5),
                run::percentile(&lat, 0.99),
                run::percentile(&lat, 0.999),
            );
            plan.say(format!(
                "{}latency (64 B round trip)  p50 {p50:.1} us  p99 {p99:.1} us  p99.9 {p999:.1} us",
                tag(t)
            ));
            t.figures.add("latency_p50_us", rep, p50);
            t.figures.add("latency_p99_us", rep, p99);
            t.figures.add("latency_p999_us", rep, p999);
        }
    }
    Ok(())
}

/// Memory per idle subscriber and peak memory of every broker this command started.
fn memory(targets: &mut [Target], plan: &Plan) -> Result<(), CliError> {
    let comparing = targets.len() > 1;
    for t in targets {
        let Some(pid) = t.pid() else { continue };
        let who = t.who(comparing);
        if plan.wanted("idle") && plan.idle_n > 0 {
            let pc = t.attempt(plan, &who, "idle connections", |t| {
                with_client!(t.kind, idle_cost(t.addr, pid, plan.idle_n))
            })?;
            if let Some(pc) = pc {
                plan.say(format!(
                    "{who}memory: {pc:.0} bytes of broker RSS per idle subscriber ({} connections)",
                    plan.idle_n
                ));
                t.figures.add("rss_bytes_per_idle_subscriber", 0, pc);
            }
        }
        if let Some(b) = &t.broker {
            t.notes = b.log_notes();
        }
        let alive = t.attempt(plan, &who, "memory", |_| Ok(()))?;
        if alive.is_none() {
            continue;
        }
        let peak = proc::status_kib(pid, "VmHWM");
        plan.say(format!(
            "{who}memory: idle RSS {} KiB, peak RSS {peak} KiB",
            t.figures.median("idle_rss_kib").unwrap_or(0.0)
        ));
        t.figures.add("peak_rss_kib", 0, peak as f64);
    }
    Ok(())
}

/// The line printed after a throughput run.
fn run_line(name: &str, size: usize, t: &Throughput) -> String {
    format!(
        "{name:<18} {:>10.0} msgs/s  {:>8.1} MB/s  {}{}",
        t.msgs_per_sec(),
        t.msgs_per_sec() * size as f64 / 1e6,
        t.cpu_per_million().map_or(String::new(), |c| format!(
            "broker CPU {c:.3} s per million"
        )),
        if t.missed > 0 {
            format!("  ({} missed)", t.missed)
        } else {
            String::new()
        },
    )
}

fn record_run(t: &mut Target, rep: usize, suffix: &str, size: usize, subs: usize, tp: &Throughput) {
    let rate = if subs > 1 {
        format!("deliveries_per_sec_{suffix}")
    } else {
        format!("msgs_per_sec_{suffix}")
    };
    let f = &mut t.figures;
    f.add(rate, rep, tp.msgs_per_sec());
    f.add(
        format!("mbytes_per_sec_{suffix}"),
        rep,
        tp.msgs_per_sec() * size as f64 / 1e6,
    );
    f.add(format!("messages_{suffix}"), rep, tp.delivered as f64);
    if let Some(c) = tp.cpu_per_million() {
        f.add(format!("broker_cpu_sec_per_million_{suffix}"), rep, c);
    }
    t.missed += tp.missed;
}

/// One JSON object: mote's figures under their names, each peer's prefixed with its name,
/// `ratio_<figure>_vs_<peer>` = mote / peer; medians when repeated, with `spread`.
fn json_report(targets: &[Target], skipped: &[(Peer, String)], plan: &Plan) -> serde_json::Value {
    use serde_json::json;
    let num = |x: f64| json!((x * 1000.0).round() / 1000.0);
    let mut report = serde_json::Map::new();
    let mut spread = serde_json::Map::new();
    report.insert("repeat".into(), json!(plan.repeat));
    for t in targets {
        let prefix = match t.kind {
            Kind::Mote => String::new(),
            Kind::Encrypted if targets.len() == 1 => String::new(),
            other => format!("{}_", other.name()),
        };
        report.insert(format!("{prefix}broker"), json!(t.addr.to_string()));
        if let Some(v) = &t.version {
            report.insert(format!("{prefix}version"), json!(v));
        }
        for key in t.figures.keys() {
            let Some(m) = t.figures.median(key) else {
                continue;
            };
            let v = if report::is_integer(key) {
                json!(m.round() as u64)
            } else {
                num(m)
            };
            report.insert(format!("{prefix}{key}"), v);
            if let Some((lo, hi)) = t.figures.range(key) {
                spread.insert(format!("{prefix}{key}"), json!([num(lo), num(hi)]));
            }
        }
        report.insert(format!("{prefix}missed_messages"), json!(t.missed));
        if t.figures.median("rss_bytes_per_idle_subscriber").is_some() && t.kind == Kind::Mote {
            report.insert("idle_subscribers".into(), json!(plan.idle_n));
        }
        if !t.errors.is_empty() {
            report.insert(format!("{prefix}errors"), json!(t.errors));
        }
        if !t.notes.is_empty() {
            report.insert(format!("{prefix}log_notes"), json!(t.notes));
        }
        if t.kind.divisor() > 1 {
            report.insert(
                format!("{prefix}count_fraction"),
                num(1.0 / t.kind.divisor() as f64),
            );
        }
    }
    if let Some(mote) = targets.first() {
        for t in &targets[1..] {
            for (_, key) in report::ROWS {
                if let Some(r) = mote.figures.ratio(&t.figures, key) {
                    report.insert(format!("ratio_{key}_vs_{}", t.kind.name()), num(r));
                }
            }
            // The cost of encryption: encrypted throughput as a fraction of plaintext.
            if t.kind == Kind::Encrypted {
                for suffix in ["64b", "1kib"] {
                    let key = format!("msgs_per_sec_{suffix}");
                    if let Some(r) = t.figures.ratio(&mote.figures, &key) {
                        report.insert(format!("encrypted_fraction_of_plaintext_{suffix}"), num(r));
                    }
                }
            }
        }
    }
    for (peer, why) in skipped {
        report.insert(format!("{}_skipped", peer.name()), json!(why));
    }
    if !spread.is_empty() {
        report.insert("spread".into(), serde_json::Value::Object(spread));
    }
    serde_json::Value::Object(report)
}

/// The human summary: the table, then anything that went wrong.
fn summary(targets: &[Target], skipped: &[(Peer, String)], plan: &Plan) {
    let cols: Vec<(&str, &Figures)> = targets
        .iter()
        .map(|t| (t.kind.name(), &t.figures))
        .collect();
    plan.say("");
    if plan.repeat > 1 {
        plan.say(format!("medians of {} repetitions:", plan.repeat));
    }
    plan.say(report::table(&cols).trim_end());
    if targets.len() > 1 {
        plan.say(
            "ratios are mote/peer, medians of per-repetition ratios: above 1 is better for mote \
             in throughput, below 1 in CPU, latency and memory",
        );
    }
    if let (Some(mote), Some(enc)) = (
        targets.iter().find(|t| t.kind == Kind::Mote),
        targets.iter().find(|t| t.kind == Kind::Encrypted),
    ) {
        for (suffix, label) in [("64b", "64 B"), ("1kib", "1 KiB")] {
            let key = format!("msgs_per_sec_{suffix}");
            if let Some(r) = enc.figures.ratio(&mote.figures, &key) {
                plan.say(format!(
                    "encrypted throughput at {label}: {:.0}% of plaintext",
                    r * 100.0
                ));
            }
        }
    }
    for t in targets {
        if t.kind.divisor() > 1 {
            plan.say(format!(
                "{} runs sent 1/{} of the messages",
                t.kind.name(),
                t.kind.divisor()
            ));
        }
        if t.missed > 0 {
            plan.say(format!("{}: {} messages missed", t.kind.name(), t.missed));
        }
        for e in &t.errors {
            plan.say(format!("{}: failed: {e}", t.kind.name()));
        }
        for n in &t.notes {
            plan.say(format!("{} log: {n}", t.kind.name()));
        }
    }
    for (peer, why) in skipped {
        plan.say(format!("{}: skipped: {why}", peer.name()));
    }
}
