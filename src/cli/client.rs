//! `mote pub`, `mote sub`, `mote chan` and `mote ping`: command-line clients in the manner of
//! mosquitto_pub and mosquitto_sub (`-h` is the host; `--help` is help).

mod chan;
mod exec;
mod follow;
mod manage;
mod publish;
mod reqrep;

pub(crate) use chan::chan;
pub(crate) use manage::{group, groups, topic, topics, tx};
pub(crate) use reqrep::{reply, req};

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::time::Duration;

use base64::Engine as _;
use futures_lite::FutureExt;
use mote_sdk::Start;
use mote_sdk::{Client, Event, Options};

use super::args::{self, CliError, Opt, Outcome, Parsed, Spec};

const HOST: Opt = Opt {
    long: "host",
    short: Some('h'),
    value: Some("HOST[:PORT]"),
    env: Some("MOTE_HOST"),
    default: Some("127.0.0.1"),
    help: "broker host, with its port if you like (pi.local:7270, [::1]:7270)",
};
const PORT: Opt = Opt {
    long: "port",
    short: Some('p'),
    value: Some("PORT"),
    env: Some("MOTE_PORT"),
    default: Some("7270"),
    help: "broker port",
};
const TOKEN_FILE: Opt = Opt {
    long: "token-file",
    short: None,
    value: Some("FILE"),
    env: Some("MOTE_TOKEN_FILE"),
    default: None,
    help: "authenticate and encrypt with the token written in FILE as [NAME:]TOKEN (NAME defaults to `default`)",
};
const TOKEN: Opt = Opt {
    long: "token",
    short: None,
    value: Some("[NAME:]TOKEN"),
    env: Some("MOTE_TOKEN"),
    default: None,
    help: "the token itself; on the command line every local user sees it in ps: prefer --token-file or MOTE_TOKEN",
};
const URL: Opt = Opt {
    long: "url",
    short: Some('L'),
    value: Some("URL"),
    env: Some("MOTE_URL"),
    default: None,
    help: "broker as mote://[NAME:TOKEN@]HOST[:PORT] (instead of -h, -p, --token)",
};
const ID: Opt = Opt {
    long: "id",
    short: Some('i'),
    value: Some("NAME"),
    env: None,
    default: None,
    help: "client name shown by the broker",
};

const fn switch(long: &'static str, short: Option<char>, help: &'static str) -> Opt {
    Opt {
        long,
        short,
        value: None,
        env: None,
        default: None,
        help,
    }
}

const fn value(
    long: &'static str,
    short: Option<char>,
    value: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        long,
        short,
        value: Some(value),
        env: None,
        default: None,
        help,
    }
}

pub(crate) static PUB: Spec = Spec {
    name: "pub",
    about: "Publish messages to a mote broker.",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        value(
            "topic",
            Some('t'),
            "TOPIC",
            "topic to publish to (required)",
        ),
        value("message", Some('m'), "MSG", "publish MSG"),
        value(
            "file",
            Some('f'),
            "FILE",
            "publish the contents of FILE as one message",
        ),
        switch(
            "stdin-line",
            Some('l'),
            "publish each line of stdin as a message",
        ),
        switch(
            "stdin-file",
            Some('s'),
            "publish all of stdin as one message",
        ),
        switch("null-message", Some('n'), "publish an empty message"),
        value("key", Some('k'), "KEY", "attach KEY to every message"),
        switch(
            "confirm",
            None,
            "wait for the broker to store each message; print its offset",
        ),
        switch(
            "tx",
            None,
            "prepare the message as a transaction and print its id; nothing is delivered until mote tx commit ID",
        ),
        value(
            "qos",
            Some('q'),
            "0|1",
            "as mosquitto_pub's -q: 0 sends and forgets (the default), 1 is --confirm; mote has no 2",
        ),
        Opt {
            long: "timeout",
            short: None,
            value: Some("DURATION"),
            env: None,
            default: Some("5s"),
            help: "give up (exit 1) after DURATION without a connection, or without an answer while messages wait for one",
        },
        switch(
            "retry-forever",
            None,
            "never give up: wait for the broker as long as it takes (--timeout then bounds each attempt to connect)",
        ),
        switch(
            "skip-bad",
            None,
            "with -l: say and skip a line the broker refuses (over --max-payload; any refusal with --confirm) instead of stopping there; exit 1 if any was skipped",
        ),
    ],
    after: "With --confirm, offsets are printed one per line, in order, as the broker confirms\n\
            them. If the connection drops, pub says so on stderr and reconnects; messages not\n\
            yet confirmed are sent again (the broker may then store one twice).\n\
            With -l, a line the broker refuses ends the run (exit 1) with its line number; the\n\
            lines before it are sent. --skip-bad says it and goes on, then exits 1.\n\
            Examples:\n  mote pub -t home/kitchen/temp -m 21.5\n  mote pub -t home/kitchen/temp -m 21.5 --confirm\n  id=$(mote pub --tx -t orders/new -m '{\"order\":17}') && mote tx commit \"$id\"\n  seq 1 1000 | mote pub -t lines -l\n  mote pub -h pi.local --token-file ~/.mote-token -t home/kitchen/temp -m 21.5",
};

pub(crate) static SUB: Spec = Spec {
    name: "sub",
    about: "Subscribe to a mote broker and print messages as they arrive.",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        value(
            "topic",
            Some('t'),
            "FILTER",
            "topic filter, + and # wildcards (repeatable, required)",
        ),
        value("count", Some('C'), "N", "exit after N messages"),
        switch("verbose", Some('v'), "print the topic before each payload"),
        value(
            "qos",
            Some('q'),
            "0|1",
            "taken for mosquitto_sub's sake, changes nothing: 0 and 1 alike get every message the ring holds, in order; mote has no 2",
        ),
        value(
            "timeout",
            Some('W'),
            "SECONDS",
            "exit after SECONDS (error if -C was not reached)",
        ),
        Opt {
            long: "from",
            short: None,
            value: Some("WHERE"),
            env: None,
            default: Some("latest"),
            help: "latest, earliest, an offset, last:N, ago:10m (or 10m: stored in the last ten minutes), time:2026-12-01T10:00:00Z",
        },
        switch(
            "json",
            None,
            "print one JSON object per message: topic, offset, time, key, payload",
        ),
        value(
            "group",
            Some('g'),
            "NAME",
            "join consumer group NAME: each message goes to one member; acked once printed (with --exec: once CMD exits 0)",
        ),
        switch(
            "no-ack",
            None,
            "with --group: never ack, so messages come back after the ack timeout",
        ),
        value(
            "ack-timeout",
            None,
            "DURATION",
            "with --group, for a new group: redeliver what is not acked in time (default 30s)",
        ),
        value(
            "max-deliveries",
            None,
            "N",
            "with --group, for a new group: then to $dead/GROUP/TOPIC (default 5)",
        ),
        value(
            "prefetch",
            None,
            "N",
            "with --group, for a new group: unacked messages per member (default 64)",
        ),
        switch(
            "durable",
            None,
            "with --group: keep its position while no member is connected (the default; kept for scripts and older brokers)",
        ),
        switch(
            "ephemeral",
            None,
            "with --group, for a new group: remove it, with its position, when its last member leaves",
        ),
        value(
            "group-expiry",
            None,
            "DURATION",
            "with --group, for a new group: remove it after DURATION without members, if shorter than the broker's --group-expiry (default 7d)",
        ),
        value(
            "exec",
            None,
            "CMD",
            "run sh -c CMD for each message instead of printing it: payload on stdin, MOTE_TOPIC, MOTE_OFFSET, MOTE_KEY, MOTE_ATTEMPT set; with --group, exit 0 acks and anything else nacks",
        ),
        value(
            "jobs",
            Some('j'),
            "N",
            "with --exec: run up to N commands at once (default 1: one at a time, in order; a new group gets --prefetch N)",
        ),
        value(
            "nack-delay",
            None,
            "DURATION",
            "with --exec --group: a failed command's message comes back after DURATION (default 0s)",
        ),
        switch(
            "quiet",
            None,
            "do not say on stderr when the connection is lost and when it is back",
        ),
    ],
    after: "Binary payloads are printed raw (base64 with --json, marked \"encoding\":\"base64\").\n\
            A group reads one filter; --from and the group settings apply when the group is new\n\
            (the broker's config file may set them for good). A group is durable by default: it\n\
            keeps its position while no member is connected, until --group-expiry (the broker's,\n\
            7 days by default, or the shorter one asked here) passes without one; --ephemeral and\n\
            --group-expiry need a broker of protocol 3. With --json, group messages carry\n\
            \"attempt\" (1 on the first delivery).\n\
            Printing acks a group message once it is printed: a `| while read` worker that dies\n\
            mid-job loses that job. With --exec, a message is acked only after CMD exits 0; a\n\
            CMD that fails is nacked, one running past the ack timeout (--ack-timeout, 30s by\n\
            default) is killed with its process group and nacked, so the message comes back.\n\
            -C counts finished commands. On Ctrl-C or SIGTERM no new message is taken and the\n\
            running commands finish (a second signal kills them).\n\
            Examples:\n  mote sub -t 'home/+/temp' -v\n  mote sub -t lines --from earliest -C 1000\n  mote sub -t logs --from ago:10m\n  mote sub -t sensors/# --from last:10 --json\n  mote sub -t 'jobs/#' --group workers\n  mote sub -t 'jobs/#' --group scratch --ephemeral\n  mote sub -t 'jobs/#' --group nightly --group-expiry 1h\n  mote sub -t 'jobs/#' --group workers --exec 'gzip > \"/tmp/job-$MOTE_OFFSET.gz\"' -j 2",
};

pub(crate) static PING: Spec = Spec {
    name: "ping",
    about: "Check that a broker answers: handshake and one ping. Exit 0 if it does, 1 if not.",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        value(
            "timeout",
            Some('W'),
            "SECONDS",
            "give up after SECONDS (default 5)",
        ),
        switch("quiet", Some('q'), "print nothing, only set the exit code"),
    ],
    after: "Used as the docker HEALTHCHECK.",
};

/// mosquitto_pub and mosquitto_sub options mote has no counterpart for: what to use instead.
/// (`-q` and `-i` are mote options too; `-h host:port` is understood.)
const MOSQUITTO: &[args::Hint] = &[
    args::Hint {
        names: &["-u", "--username", "-P", "--pw"],
        hint: "mote has no user names and passwords: use --token NAME:SECRET (better: --token-file FILE holding NAME:SECRET)",
    },
    args::Hint {
        names: &["-r", "--retain"],
        hint: "mote has no retained messages and needs none: every topic keeps its last messages; read the latest with mote sub -t TOPIC --from last:1",
    },
];

fn parse(spec: &'static Spec, argv: Vec<OsString>) -> Result<Option<Parsed>, CliError> {
    match args::parse_hinted(spec, argv, MOSQUITTO)? {
        Outcome::Run(p) => Ok(Some(p)),
        Outcome::Help(h) => {
            print!("{h}");
            Ok(None)
        }
    }
}

/// What went wrong once the command line was fine: printed, exit code 1.
pub(crate) struct Failure(pub(crate) String);

impl From<mote_sdk::Error> for Failure {
    fn from(e: mote_sdk::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure(e.to_string())
    }
}

/// Result of a client command: usage errors exit 2, failures exit 1.
pub(crate) enum Exit {
    Usage(CliError),
    Failed(Failure),
}

impl From<CliError> for Exit {
    fn from(e: CliError) -> Self {
        Exit::Usage(e)
    }
}

impl From<Failure> for Exit {
    fn from(e: Failure) -> Self {
        Exit::Failed(e)
    }
}

impl From<mote_sdk::Error> for Exit {
    fn from(e: mote_sdk::Error) -> Self {
        Exit::Failed(e.into())
    }
}

impl From<io::Error> for Exit {
    fn from(e: io::Error) -> Self {
        Exit::Failed(e.into())
    }
}

fn options(p: &Parsed, default_name: &str) -> Result<Options, CliError> {
    let bad = |flag: &str, e: mote_sdk::Error| CliError(format!("{flag}: {e}"));
    let mut o = match p.get("url") {
        Some(url) => Options::from_url(&url).map_err(|e| bad("--url", e))?,
        None => {
            let (host, in_host) = p
                .parse_with("host", split_host)?
                .unwrap_or_else(|| ("127.0.0.1".into(), None));
            let port = p.parse_with("port", |s| {
                s.parse::<u16>()
                    .map_err(|_| "expected a port number".into())
            })?;
            // A port in -h and a port from -p: the one given more directly (flag, then
            // variable) wins; two flags that disagree are an error.
            let rank = |l: &str| match p.source(l) {
                args::Source::Line => 3,
                args::Source::Env => 2,
                args::Source::Config => 1,
                args::Source::Default => 0,
            };
            let port = match (in_host, port) {
                (Some(h), Some(p2)) if h != p2 && rank("port") == rank("host") => {
                    return Err(CliError(format!(
                        "{} says port {h} and {} says {p2}: give the port once",
                        p.named("host"),
                        p.named("port")
                    )));
                }
                (Some(_), Some(p2)) if rank("port") > rank("host") => p2,
                (Some(h), _) => h,
                (None, p2) => p2.unwrap_or(mote_sdk::wire::DEFAULT_PORT),
            };
            Options::new(format!("{host}:{port}"))
        }
    };
    if let Some((t, from)) = p.token()? {
        let (name, secret) = t.split_once(':').unwrap_or(("", t.as_str()));
        o = o.with_token(name, secret).map_err(|e| bad(&from, e))?;
    }
    o.name = p.get("id").unwrap_or_else(|| default_name.to_string());
    Ok(o)
}

/// `-h` as mosquitto users write it: `HOST`, `HOST:PORT`, `[IPV6]:PORT`, or a bare IPv6
/// address. The host comes back ready for `HOST:PORT` (IPv6 in brackets).
fn split_host(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map(Some)
            .map_err(|_| format!("{p:?} is not a port number"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address in [ ] needs its closing ]")?;
        return match after {
            "" => Ok((format!("[{ip}]"), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((format!("[{ip}]"), port(p)?)),
                None => Err(format!("expected [{ip}]:PORT")),
            },
        };
    }
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        // Two colons or more: an IPv6 address without a port.
        Some((_, rest)) if rest.contains(':') => Ok((format!("[{s}]"), None)),
        Some((host, p)) if !host.is_empty() => Ok((host.to_string(), port(p)?)),
        Some(_) => Err("the host is missing before the :".into()),
    }
}

/// mosquitto takes `/a/b`; mote has no empty levels, so say what is wrong with a leading
/// `/` (and what to write) instead of a generic "bad topic".
fn leading_slash(what: &str, t: &str) -> Result<(), CliError> {
    if !t.starts_with('/') {
        return Ok(());
    }
    let rest = t.trim_start_matches('/');
    let instead = if rest.is_empty() {
        String::new()
    } else {
        format!(": write {rest:?}")
    };
    Err(CliError(format!(
        "{what} {t:?} starts with '/': mote topics have no leading slash (no empty levels){instead}"
    )))
}

/// `-q`: 0 or 1; 2 is answered with what mote does instead (`then` says what).
fn qos(p: &Parsed, then: &str) -> Result<Option<u8>, CliError> {
    if p.get("qos").as_deref() == Some("2") {
        return Err(CliError(format!(
            "-q 2: mote has no exactly-once delivery; {then}"
        )));
    }
    p.parse_with("qos", |s| match s {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err("expected 0 or 1".into()),
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    async_io::block_on(f)
}

pub(crate) fn publish(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&PUB, argv)? else {
        return Ok(());
    };
    let topic = p
        .get("topic")
        .ok_or_else(|| CliError("give a topic with -t TOPIC".into()))?;
    let sources = [
        p.get("message").is_some(),
        p.get("file").is_some(),
        p.on("stdin-line"),
        p.on("stdin-file"),
        p.on("null-message"),
    ];
    match sources.iter().filter(|&&b| b).count() {
        1 => {}
        0 => {
            return Err(
                CliError("give the message with one of -m, -f, -l, -s or -n".into()).into(),
            );
        }
        _ => return Err(CliError("give only one of -m, -f, -l, -s and -n".into()).into()),
    }
    leading_slash("topic", &topic)?;
    mote_sdk::Topic::new(&topic).map_err(|e| CliError(format!("bad topic {topic:?}: {e}")))?;
    let qos = qos(
        &p,
        "-q 1 (--confirm) waits until the broker has stored each message (one sent again after a lost connection may be stored twice)",
    )?;
    let timeout = p
        .parse_with("timeout", |s| {
            let d = args::parse_duration(s)?;
            if d.is_zero() {
                return Err("must be more than 0 (--retry-forever waits for ever)".into());
            }
            Ok(d)
        })?
        .unwrap_or(Duration::from_secs(5));
    let key = p.get("key");
    let plan = publish::Plan {
        topic: &topic,
        key: key.as_deref().map(str::as_bytes),
        confirm: p.on("confirm") || qos == Some(1),
        timeout: (!p.on("retry-forever")).then_some(timeout),
        skip_bad: p.on("skip-bad"),
    };
    if plan.skip_bad && !p.on("stdin-line") {
        return Err(CliError("--skip-bad is for -l: give -l or drop --skip-bad".into()).into());
    }
    let mut opts = options(&p, "mote-pub")?;
    opts.connect_timeout = timeout;
    // Unconfirmed messages go again after a reconnect: one offset per message, in order.
    opts.resend_unconfirmed = true;
    let input = if let Some(m) = p.get("message") {
        publish::Input::One(m.into_bytes())
    } else if let Some(f) = p.get("file") {
        publish::Input::One(
            std::fs::read(&f).map_err(|e| Failure(format!("cannot read {f}: {e}")))?,
        )
    } else if p.on("stdin-file") {
        let mut data = Vec::new();
        io::stdin().lock().read_to_end(&mut data)?;
        publish::Input::One(data)
    } else if p.on("null-message") {
        publish::Input::One(Vec::new())
    } else {
        publish::Input::Lines
    };
    if p.on("tx") {
        let publish::Input::One(payload) = input else {
            return Err(CliError(
                "--tx prepares one message: give -m, -f, -s or -n, not -l".into(),
            )
            .into());
        };
        if plan.confirm {
            return Err(CliError("--tx prints the transaction's id: drop --confirm (mote tx commit prints the offset)".into()).into());
        }
        return manage::tx_prepare(opts, plan.timeout, &topic, plan.key, &payload);
    }
    let addr = opts.addr.clone();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut skipped = publish::Skipped::default();
    let r = block_on(async {
        let client = publish::connect(opts, &plan).await?;
        publish::run(&client, &addr, &plan, input, &mut out, &mut skipped).await
    });
    // The offsets confirmed before a failure are printed before it is.
    out.flush()?;
    r?;
    match skipped.0 {
        0 => Ok(()),
        n => Err(Failure(format!(
            "skipped {n} line{} the broker refused (--skip-bad)",
            if n == 1 { "" } else { "s" }
        ))
        .into()),
    }
}

/// Where `--from` starts: everything [`mote::units::parse_start`] reads but a sequence
/// number (which only the SDK's resume uses).
fn parse_from(s: &str) -> Result<Start, String> {
    match mote::units::parse_start(s)? {
        Start::AfterSeq(_) => Err(format!("{s:?}: not a place in a topic")),
        start => Ok(start),
    }
}

/// One message as a JSON object.
fn json_object(m: &mote_sdk::Message) -> serde_json::Value {
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => (serde_json::Value::from(s), None),
        Err(_) => (
            serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
            Some("base64"),
        ),
    };
    let mut o = serde_json::Map::new();
    o.insert("topic".into(), (*m.topic).into());
    o.insert("offset".into(), m.offset.into());
    o.insert("time".into(), m.time_ms.into());
    if let Some(k) = &m.key {
        let (v, enc) = text(k);
        o.insert("key".into(), v);
        if let Some(e) = enc {
            o.insert("key_encoding".into(), e.into());
        }
    }
    let (v, enc) = text(&m.payload);
    o.insert("payload".into(), v);
    if let Some(e) = enc {
        o.insert("encoding".into(), e.into());
    }
    serde_json::Value::Object(o)
}

/// How `mote sub` prints a message.
#[derive(Clone, Copy)]
struct Printer {
    verbose: bool,
    json: bool,
}

impl Printer {
    fn message(
        self,
        out: &mut impl Write,
        m: &mote_sdk::Message,
        attempt: Option<u32>,
    ) -> io::Result<()> {
        if self.json {
            let mut v = json_object(m);
            if let (Some(a), Some(o)) = (attempt, v.as_object_mut()) {
                o.insert("attempt".into(), a.into());
            }
            writeln!(out, "{v}")
        } else {
            if self.verbose {
                write!(out, "{} ", m.topic)?;
            }
            out.write_all(&m.payload)?;
            out.write_all(b"\n")
        }
    }
}

/// `--group` and its settings.
fn group_of(p: &args::Parsed, from: Start) -> Result<Option<mote_sdk::Group>, Exit> {
    let Some(name) = p.get("group") else {
        for o in [
            "no-ack",
            "durable",
            "ephemeral",
            "group-expiry",
            "ack-timeout",
            "max-deliveries",
            "prefetch",
        ] {
            if p.on(o) || p.get(o).is_some() {
                return Err(CliError(format!("--{o} needs --group NAME")).into());
            }
        }
        return Ok(None);
    };
    // Durable is the broker's default: `--durable` is kept for scripts and asks for it.
    let mut g = mote_sdk::Group::new(name)
        .from(from)
        .durable(p.on("durable"));
    let expiry = p.parse_with("group-expiry", args::parse_duration)?;
    match (p.on("ephemeral"), p.on("durable"), expiry) {
        (true, true, _) => {
            return Err(CliError("--ephemeral and --durable contradict each other".into()).into());
        }
        (true, _, Some(_)) => {
            return Err(CliError(
                "--group-expiry is for a durable group; an --ephemeral one goes with its last member"
                    .into(),
            )
            .into());
        }
        (true, _, None) => g = g.ephemeral(),
        (false, _, Some(d)) if d.is_zero() => {
            return Err(CliError("--group-expiry: give a duration above 0".into()).into());
        }
        (false, _, Some(d)) => g = g.expiry(d),
        (false, _, None) => {}
    }
    if let Some(t) = p.parse_with("ack-timeout", args::parse_duration)? {
        g = g.ack_timeout(t);
    }
    let count = |s: &str| {
        args::parse_count(s).and_then(|n| u32::try_from(n).map_err(|_| "too large".to_string()))
    };
    if let Some(n) = p.parse_with("max-deliveries", count)? {
        g = g.max_deliveries(n);
    }
    if let Some(n) = p.parse_with("prefetch", count)? {
        g = g.prefetch(n);
    }
    Ok(Some(g))
}

pub(crate) fn subscribe(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&SUB, argv)? else {
        return Ok(());
    };
    let filters = p.all("topic");
    if filters.is_empty() {
        return Err(CliError("give at least one filter with -t FILTER".into()).into());
    }
    // mote has one kind of delivery: -q 0 and -q 1 change nothing.
    qos(
        &p,
        "mote sub prints every message the broker holds, in order, with -q 0 and -q 1 alike",
    )?;
    for f in &filters {
        leading_slash("filter", f)?;
        mote_sdk::Filter::new(f).map_err(|e| CliError(format!("bad filter {f:?}: {e}")))?;
    }
    let count = p.parse_with("count", args::parse_count)?;
    let timeout = p.parse_with("timeout", args::parse_duration)?;
    let from = p.parse_with("from", parse_from)?.unwrap_or_default();
    let printer = Printer {
        verbose: p.on("verbose"),
        json: p.on("json"),
    };
    let group = group_of(&p, from)?;
    if group.is_some() && filters.len() > 1 {
        return Err(CliError("a group reads one filter: give -t once with --group".into()).into());
    }
    let opts = options(&p, "mote-sub")?;
    if let Some(cmd) = p.get("exec") {
        return exec::subscribe(&p, cmd, opts, filters, from, group, count, timeout);
    }
    for o in ["jobs", "nack-delay"] {
        if p.get(o).is_some() {
            return Err(CliError(format!("--{o} needs --exec CMD")).into());
        }
    }
    let (addr, quiet) = (opts.addr.clone(), p.on("quiet"));
    if let Some(group) = group {
        let run = subscribe_group(
            opts,
            filters.concat(),
            group,
            printer,
            count,
            p.on("no-ack"),
            quiet,
        );
        return finish_sub(run, timeout, count);
    }
    let run = async {
        let client = Client::connect(opts).await?;
        let mut subs = Vec::new();
        for f in &filters {
            subs.push(client.subscribe(f, from).await?);
        }
        let mut follow = follow::Follow::new(&client, addr, quiet);
        let mut out = io::BufWriter::new(io::stdout().lock());
        let mut seen = 0usize;
        while count.is_none_or(|c| seen < c) {
            // Wait for any subscription, then print everything already buffered.
            let next = follow.around(follow::next_event(&mut subs)).await;
            let Some(ev) = next else {
                return Err(follow.ended());
            };
            let mut batch = vec![ev];
            for s in subs.iter_mut() {
                while let Some(e) = s.try_next() {
                    batch.push(e);
                }
            }
            for ev in batch {
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
                follow.saw(&ev);
                match ev {
                    Event::Message(m) => {
                        seen += 1;
                        printer.message(&mut out, &m, None)?;
                    }
                    other => report_event(&mut out, &other)?,
                }
            }
            out.flush()?;
        }
        Ok(())
    };
    finish_sub(run, timeout, count)
}

/// Says on stderr what `ev` (anything but a message) means.
fn report_event(out: &mut impl Write, ev: &Event) -> io::Result<()> {
    let who = "this subscriber";
    match ev {
        Event::Lag {
            topic,
            missed,
            next,
        } => follow::report_lag(out, who, topic, *missed, *next, false),
        Event::Evicted {
            topic,
            missed,
            next,
        } => follow::report_lag(out, who, topic, *missed, *next, true),
        Event::Refused { message, .. } => follow::report_refused(out, message),
        Event::Removed {
            topic,
            unread,
            next,
        } => follow::report_removed(out, topic, *unread, *next),
        _ => Ok(()),
    }
}

/// `mote sub --group`: print each message, then ack it (unless `no_ack`).
async fn subscribe_group(
    opts: mote_sdk::Options,
    filter: String,
    group: mote_sdk::Group,
    printer: Printer,
    count: Option<usize>,
    no_ack: bool,
    quiet: bool,
) -> Result<(), Failure> {
    // Declared before the client: dropped after it, when acks can no longer be sent.
    let mut held = Vec::new();
    let addr = opts.addr.clone();
    let client = Client::connect(opts).await?;
    let mut sub = client.subscribe_group(&filter, group).await?;
    let mut follow = follow::Follow::new(&client, addr, quiet);
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut seen = 0usize;
    while count.is_none_or(|c| seen < c) {
        let Some(ev) = follow.around(sub.next()).await else {
            return Err(Failure("the client closed".into()));
        };
        let mut batch = vec![ev];
        while let Some(e) = sub.try_next() {
            batch.push(e);
        }
        let mut done = Vec::new();
        for ev in batch {
            follow.saw_group(&ev);
            match ev {
                // Past the count: left unacked, they go back to the group when we leave.
                mote_sdk::GroupEvent::Message(d) if count.is_some_and(|c| seen >= c) => {
                    held.push(d);
                }
                mote_sdk::GroupEvent::Message(d) => {
                    seen += 1;
                    printer.message(&mut out, &d, Some(d.attempt()))?;
                    done.push(d);
                }
                mote_sdk::GroupEvent::Lag {
                    topic,
                    missed,
                    next,
                } => follow::report_lag(&mut out, "the group", &topic, missed, next, false)?,
                mote_sdk::GroupEvent::Removed {
                    topic,
                    unread,
                    next,
                } => {
                    follow::report_removed(&mut out, &topic, unread, next)?;
                }
                mote_sdk::GroupEvent::Refused { message, .. } => {
                    follow::report_refused(&mut out, &message)?;
                    return Err(Failure(
                        "no subscription is left (the broker refused it); exiting".into(),
                    ));
                }
                _ => {}
            }
        }
        // Acked only once what they carried is written out.
        out.flush()?;
        for d in done {
            if no_ack {
                held.push(d);
            } else {
                d.ack()?;
            }
        }
    }
    // The acks reach the broker before we leave the group. One that came after the ack
    // timeout is refused (the message went to another member): say so, it is no failure.
    match client.flush().await {
        Err(e) if e.code() == Some(mote_sdk::ErrorCode::UNKNOWN_DELIVERY) => {
            eprintln!("mote sub: {e}");
        }
        r => r?,
    }
    drop(sub);
    drop(client);
    Ok(())
}

fn finish_sub(
    run: impl std::future::Future<Output = Result<(), Failure>>,
    timeout: Option<Duration>,
    count: Option<usize>,
) -> Result<(), Exit> {
    let result = match timeout {
        Some(t) => block_on(run.or(async {
            async_io::Timer::after(t).await;
            Err(Failure(String::new()))
        })),
        None => block_on(run),
    };
    match result {
        Ok(()) => Ok(()),
        Err(Failure(m)) if m.is_empty() => match count {
            Some(c) => Err(Failure(format!(
                "timed out after {} before receiving {c} message{}",
                humantime(timeout.unwrap_or_default()),
                follow::plural(c as u64)
            ))
            .into()),
            None => Ok(()),
        },
        Err(f) => Err(f.into()),
    }
}

fn humantime(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub(crate) fn ping(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&PING, argv)? else {
        return Ok(());
    };
    let timeout = p
        .parse_with("timeout", args::parse_duration)?
        .unwrap_or(Duration::from_secs(5));
    let mut opts = options(&p, "mote-ping")?;
    opts.connect_timeout = timeout;
    let addr = opts.addr.clone();
    let t0 = std::time::Instant::now();
    let r = block_on(
        async {
            let c = Client::connect(opts).await?;
            c.flush().await?;
            c.close().await
        }
        .or(async {
            async_io::Timer::after(timeout).await;
            Err(mote_sdk::Error::Timeout)
        }),
    );
    match r {
        Ok(()) => {
            if !p.on("quiet") {
                println!("{addr}: ok ({:.2} ms)", t0.elapsed().as_secs_f64() * 1e3);
            }
            Ok(())
        }
        Err(_) if p.on("quiet") => Err(Failure(String::new()).into()),
        Err(e) => Err(Failure(format!("{addr}: {e}")).into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn hosts_as_mosquitto_users_write_them() {
        let ok = |s: &str| split_host(s).unwrap();
        assert_eq!(ok("pi.local"), ("pi.local".into(), None));
        assert_eq!(ok("pi.local:7300"), ("pi.local".into(), Some(7300)));
        assert_eq!(ok("10.0.0.2:1"), ("10.0.0.2".into(), Some(1)));
        assert_eq!(ok("[::1]:7270"), ("[::1]".into(), Some(7270)));
        assert_eq!(ok("[::1]"), ("[::1]".into(), None));
        assert_eq!(ok("::1"), ("[::1]".into(), None));
        assert_eq!(ok("fe80::1:2"), ("[fe80::1:2]".into(), None));
        assert_eq!(
            split_host("pi.local:x").unwrap_err(),
            "\"x\" is not a port number"
        );
        assert!(split_host("[::1").is_err());
        assert!(split_host("[::1]7270").is_err());
        assert!(split_host(":7270").is_err());
    }

    #[test]
    fn leading_slashes_are_named() {
        assert!(leading_slash("topic", "a/b").is_ok());
        assert_eq!(
            leading_slash("topic", "/a/b").unwrap_err().0,
            "topic \"/a/b\" starts with '/': mote topics have no leading slash (no empty levels): write \"a/b\""
        );
        assert!(
            !leading_slash("filter", "/")
                .unwrap_err()
                .0
                .contains("write")
        );
    }

    #[test]
    fn from_values() {
        assert_eq!(parse_from("latest"), Ok(Start::Latest));
        assert_eq!(parse_from("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_from("42"), Ok(Start::Offset(42)));
        assert_eq!(parse_from("last:10"), Ok(Start::Last(10)));
        assert!(parse_from("last:x").is_err());
        assert!(parse_from("soon").is_err());
        assert_eq!(parse_from("ago:10m"), Ok(Start::Ago(600_000)));
        assert_eq!(parse_from("10m"), Ok(Start::Ago(600_000)));
        assert_eq!(
            parse_from("time:2026-12-01T10:00:00Z"),
            Ok(Start::Time(1_796_119_200_000))
        );
    }

    #[test]
    fn json_lines_mark_binary() {
        let m = mote_sdk::Message {
            topic: "a/b".into(),
            offset: 3,
            time_ms: 5,
            key: None,
            payload: b"21.5".to_vec(),
        };
        assert_eq!(
            json_object(&m).to_string(),
            r#"{"offset":3,"payload":"21.5","time":5,"topic":"a/b"}"#
        );
        let m = mote_sdk::Message {
            payload: vec![0xff, 0x00],
            key: Some(b"k".to_vec()),
            ..m
        };
        assert_eq!(
            json_object(&m).to_string(),
            r#"{"encoding":"base64","key":"k","offset":3,"payload":"/wA=","time":5,"topic":"a/b"}"#
        );
    }
}
