//! `mote topics`, `mote topic ...`, `mote groups`, `mote group ...`: management of topics
//! and groups over the binary protocol (`Manage` frames, protocol 3), with the connection
//! options of `mote pub` and `mote sub`. Human output is compact tables and `key value`
//! lines; `--json` prints the broker's JSON answer (the HTTP API's document).

use std::ffi::OsString;
use std::io::{self, Write};
use std::time::Duration;

use futures_lite::FutureExt;
use mote_sdk::{Client, Event, ManageOp, Start};
use serde_json::Value;

use super::{
    CliError, Exit, Failure, HOST, ID, Opt, Outcome, PORT, Parsed, Printer, Spec, TOKEN,
    TOKEN_FILE, URL, args, block_on, options, switch, value,
};

const TIMEOUT: Opt = Opt {
    long: "timeout",
    short: Some('W'),
    value: Some("DURATION"),
    env: None,
    default: Some("10s"),
    help: "give up (exit 1) after DURATION without a connection or an answer",
};
const JSON: Opt = switch("json", None, "print the broker's JSON answer");

/// The options every management command takes.
macro_rules! spec {
    ($name:expr, $about:expr, $after:expr $(, $opt:expr)* $(,)?) => {
        Spec {
            name: $name,
            about: $about,
            opts: &[HOST, PORT, TOKEN_FILE, TOKEN, URL, ID, TIMEOUT, JSON $(, $opt)*],
            after: $after,
        }
    };
}

static TOPICS: Spec = spec!(
    "topics",
    "List the topics of a mote broker: mote topics [FILTER]",
    "Columns: the topic, messages stored, the offsets stored (first..next), bytes stored,\n\
     messages published per second, subscribers, and the [topics] pattern of the config\n\
     file its settings come from. The broker's own $-topics show only when FILTER names them.\n\
     Examples:\n  mote topics\n  mote topics 'sensors/#' --json",
);
static TOPIC_INFO: Spec = spec!(
    "topic info",
    "Show one topic: mote topic info TOPIC",
    "Shows its offsets and counters, its effective settings with the [topics] pattern each\n\
     comes from, its metadata and the groups reading it.",
);
static TOPIC_SHOW: Spec = spec!(
    "topic show",
    "Print the messages a topic stores: mote topic show TOPIC",
    "Prints the last N messages stored (-n, default 20), or N from --from on, and stops at\n\
     the newest message stored when it started (like mote sub, one payload per line).\n\
     Examples:\n  mote topic show sensors/kitchen -n 5 -v\n  mote topic show logs --from ago:10m -n 1000",
    value("count", Some('n'), "N", "at most N messages (default 20)"),
    value(
        "from",
        None,
        "WHERE",
        "start at an offset, earliest, last:N, ago:10m (or 10m), time:RFC3339 (default: the last N)",
    ),
    switch("verbose", Some('v'), "print the topic before each payload"),
);
static TOPIC_PURGE: Spec = spec!(
    "topic purge",
    "Drop every message a topic stores: mote topic purge TOPIC",
    "The topic stays, and its offsets keep going up.",
);
static TOPIC_DELETE: Spec = spec!(
    "topic delete",
    "Delete a topic: mote topic delete TOPIC",
    "Its stored messages and metadata are dropped and its name is free (it no longer counts\n\
     toward --max-topics). Subscribers are told. Published again, it continues above its\n\
     last offset.",
);
static TOPIC_META: Spec = spec!(
    "topic meta",
    "Show or set a topic's metadata: mote topic meta TOPIC [KEY=VALUE | KEY=]...",
    "KEY= (an empty value) removes KEY. Without pairs it prints the metadata.\n\
     Example:\n  mote topic meta sensors/kitchen owner=kitchen-pi room=",
);
static GROUPS: Spec = spec!(
    "groups",
    "List the consumer groups of a mote broker.",
    "Columns: the group, its filter, members, messages in flight (delivered, not acked),\n\
     backlog (not yet delivered), whether it is durable, and its age.",
);
static GROUP_INFO: Spec = spec!(
    "group info",
    "Show one consumer group: mote group info NAME",
    "",
);
static GROUP_SEEK: Spec = spec!(
    "group seek",
    "Move a consumer group: mote group seek NAME --to WHERE",
    "Moves the group in every topic it reads; messages in flight are dropped (their acks are\n\
     refused) and delivered again from the new position.\n\
     Examples:\n  mote group seek workers --to earliest\n  mote group seek workers --to time:2026-12-01T10:00:00Z",
    value(
        "to",
        None,
        "WHERE",
        "earliest, latest, an offset, last:N, ago:10m (or 10m), time:RFC3339 (required)",
    ),
);
static GROUP_DELETE: Spec = spec!(
    "group delete",
    "Delete a consumer group: mote group delete NAME",
    "Its position and messages in flight are dropped; its members' subscriptions end.",
);

const TOPIC_USAGE: &str = "\
Usage: mote topic <COMMAND> TOPIC [OPTIONS]

Commands:
  info     settings, counters, metadata and groups of a topic
  show     print the messages it stores
  purge    drop its stored messages
  delete   delete it
  meta     show or set its metadata (KEY=VALUE, KEY= removes)

Run `mote topic <COMMAND> --help` for a command's options; `mote topics` lists topics.";

const GROUP_USAGE: &str = "\
Usage: mote group <COMMAND> NAME [OPTIONS]

Commands:
  info     members, position, backlog and settings of a group
  seek     move it (--to earliest|latest|OFFSET|last:N|ago:10m|time:RFC3339)
  delete   delete it

Run `mote group <COMMAND> --help` for a command's options; `mote groups` lists groups.";

/// Parses `argv` for `spec`; `None` after `--help`.
fn parse(spec: &'static Spec, argv: Vec<OsString>) -> Result<Option<Parsed>, CliError> {
    match args::parse_positional(spec, argv, &[])? {
        Outcome::Run(p) => Ok(Some(p)),
        Outcome::Help(h) => {
            print!("{h}");
            Ok(None)
        }
    }
}

/// The positional arguments of `p`: exactly `names.len()` of them, then any `extra`.
fn subjects<'p>(p: &'p Parsed, names: &[&str], extra: bool) -> Result<&'p [String], CliError> {
    let got = p.positional.len();
    if got < names.len() {
        return Err(CliError(format!(
            "give the {} (see mote {} --help)",
            names[got],
            p_name(p)
        )));
    }
    if got > names.len() && !extra {
        return Err(CliError(format!(
            "unexpected argument {:?} (see mote {} --help)",
            p.positional[names.len()],
            p_name(p)
        )));
    }
    Ok(&p.positional)
}

fn p_name(p: &Parsed) -> &'static str {
    p.spec_name()
}

/// A refusal by the broker is its message alone (`no topic "x"`); anything else as the
/// SDK says it.
fn failure(e: mote_sdk::Error) -> Failure {
    match e {
        mote_sdk::Error::Broker { message, .. } => Failure(message),
        other => Failure(other.to_string()),
    }
}

/// One management request and its JSON answer.
async fn ask(client: &Client, op: ManageOp<'_>) -> Result<Value, Failure> {
    let text = client.manage(op).await.map_err(failure)?;
    serde_json::from_str(&text)
        .map_err(|e| Failure(format!("the broker's answer is not JSON ({e}): {text}")))
}

/// Connects with `p`'s options and runs `f`, all within `--timeout`.
fn with_client<T, F>(p: &Parsed, f: impl FnOnce(Client) -> F) -> Result<T, Exit>
where
    F: std::future::Future<Output = Result<T, Failure>>,
{
    let timeout = timeout(p)?;
    let mut opts = options(p, "mote-admin")?;
    opts.connect_timeout = timeout;
    let addr = opts.addr.clone();
    let run = async {
        let client = Client::connect(opts).await.map_err(failure)?;
        f(client).await
    };
    block_on(run.or(async {
        async_io::Timer::after(timeout).await;
        Err(Failure(format!(
            "no answer from {addr} within {} (--timeout)",
            seconds(timeout)
        )))
    }))
    .map_err(Exit::from)
}

fn timeout(p: &Parsed) -> Result<Duration, CliError> {
    Ok(p.parse_with("timeout", args::parse_duration)?
        .unwrap_or(Duration::from_secs(10)))
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints `v` as one line of JSON.
fn print_json(v: &Value) -> Result<(), Exit> {
    let mut out = io::stdout().lock();
    writeln!(out, "{v}")?;
    Ok(())
}

/// `mote topics [FILTER]`: every page of the listing.
pub(crate) fn topics(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&TOPICS, argv)? else {
        return Ok(());
    };
    if p.positional.len() > 1 {
        return Err(CliError(format!(
            "give one filter at most (got {}); quote filters with # in them",
            p.positional.len()
        ))
        .into());
    }
    let filter = p.positional.first().cloned().unwrap_or_default();
    if !filter.is_empty() {
        mote_sdk::Filter::new(&filter)
            .map_err(|e| CliError(format!("bad filter {filter:?}: {e}")))?;
    }
    let topics = with_client(&p, |client| async move {
        let mut all = Vec::new();
        let mut from = 0u32;
        loop {
            let page = ask(
                &client,
                ManageOp::Topics {
                    filter: &filter,
                    from,
                },
            )
            .await?;
            if let Some(items) = page["topics"].as_array() {
                all.extend(items.iter().cloned());
            }
            match page["next"].as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > from => from = n,
                Some(_) => return Err(Failure("the broker's listing does not advance".into())),
                None => break,
            }
        }
        Ok(all)
    })?;
    if p.on("json") {
        return print_json(&serde_json::json!({"topics": topics, "next": null}));
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                text(&t["name"]),
                num(&t["stored"]),
                format!("{}..{}", num(&t["first"]), num(&t["next"])),
                bytes(&t["bytes"]),
                rate(&t["publish_per_s"]),
                num(&t["subscribers"]),
                source(&t["settings_from"]),
            ]
        })
        .collect();
    let mut out = io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no topics")?;
        return Ok(());
    }
    let head = [
        "TOPIC", "STORED", "OFFSETS", "BYTES", "IN/S", "SUBS", "SETTINGS",
    ];
    write!(
        out,
        "{}",
        table(&head, &rows, &[false, true, true, true, true, true, false])
    )?;
    Ok(())
}

/// `mote topic <info|show|purge|delete|meta> TOPIC ...`.
pub(crate) fn topic(mut argv: Vec<OsString>) -> Result<(), Exit> {
    let sub = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0).to_string_lossy().into_owned()
    };
    match sub.as_str() {
        "info" => topic_info(argv),
        "show" => topic_show(argv),
        "purge" => topic_change(&TOPIC_PURGE, argv, false),
        "delete" => topic_change(&TOPIC_DELETE, argv, true),
        "meta" => topic_meta(argv),
        "--help" | "help" => {
            println!("{TOPIC_USAGE}");
            Ok(())
        }
        "" => Err(CliError(format!("a command is needed\n{TOPIC_USAGE}")).into()),
        other => Err(CliError(format!(
            "unknown command {other:?}: mote topic info|show|purge|delete|meta TOPIC (see mote topic --help)"
        ))
        .into()),
    }
}

/// `mote group <info|seek|delete> NAME ...`.
pub(crate) fn group(mut argv: Vec<OsString>) -> Result<(), Exit> {
    let sub = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0).to_string_lossy().into_owned()
    };
    match sub.as_str() {
        "info" => group_info(argv),
        "seek" => group_seek(argv),
        "delete" => group_delete(argv),
        "--help" | "help" => {
            println!("{GROUP_USAGE}");
            Ok(())
        }
        "" => Err(CliError(format!("a command is needed\n{GROUP_USAGE}")).into()),
        other => Err(CliError(format!(
            "unknown command {other:?}: mote group info|seek|delete NAME (see mote group --help)"
        ))
        .into()),
    }
}

fn topic_arg(p: &Parsed, extra: bool) -> Result<String, CliError> {
    let t = subjects(p, &["topic"], extra)?[0].clone();
    super::leading_slash("topic", &t)?;
    mote_sdk::Topic::new(&t).map_err(|e| CliError(format!("bad topic {t:?}: {e}")))?;
    Ok(t)
}

fn topic_info(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&TOPIC_INFO, argv)? else {
        return Ok(());
    };
    let topic = topic_arg(&p, false)?;
    let v = with_client(&p, |client| async move {
        ask(&client, ManageOp::TopicInfo { topic: &topic }).await
    })?;
    if p.on("json") {
        return print_json(&v);
    }
    let mut lines: Vec<(String, String)> = vec![
        ("topic".into(), text(&v["name"])),
        (
            "offsets".into(),
            format!("{}..{}", num(&v["first"]), num(&v["next"])),
        ),
        (
            "stored".into(),
            format!("{} messages, {}", num(&v["stored"]), bytes(&v["bytes"])),
        ),
        (
            "published".into(),
            format!("{} ({}/s)", num(&v["published"]), rate(&v["publish_per_s"])),
        ),
        (
            "delivered".into(),
            format!("{} ({}/s)", num(&v["delivered"]), rate(&v["deliver_per_s"])),
        ),
        ("subscribers".into(), num(&v["subscribers"])),
        (
            "dropped".into(),
            format!(
                "{} evicted, {} expired, {} missed by slow subscribers",
                num(&v["evicted"]),
                num(&v["expired"]),
                num(&v["lag_missed"])
            ),
        ),
    ];
    if let Some(ms) = v["idle_ms"].as_u64() {
        lines.push(("idle".into(), duration_ms(ms)));
    }
    let groups: Vec<String> = v["groups"]
        .as_array()
        .map(|g| g.iter().map(text).collect())
        .unwrap_or_default();
    lines.push((
        "groups".into(),
        if groups.is_empty() {
            "none".into()
        } else {
            groups.join(", ")
        },
    ));
    let mut out = io::stdout().lock();
    write!(out, "{}", pairs(&lines, ""))?;
    if let Some(settings) = v["settings"].as_object() {
        writeln!(out, "settings:")?;
        let rows: Vec<Vec<String>> = settings
            .iter()
            .map(|(k, s)| {
                vec![
                    k.trim_end_matches("_ms").replace('_', "-"),
                    setting(k, &s["value"]),
                    source(&s["from"]),
                ]
            })
            .collect();
        for line in table(&["", "", ""], &rows, &[false, false, false])
            .lines()
            .skip(1)
        {
            writeln!(out, "  {line}")?;
        }
    }
    write_meta(&mut out, &v["meta"], "meta:", "  ")?;
    Ok(())
}

/// Prints metadata as `KEY=VALUE` lines under `title` (nothing if there is none).
fn write_meta(out: &mut impl Write, meta: &Value, title: &str, indent: &str) -> io::Result<()> {
    let Some(m) = meta.as_object().filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    if !title.is_empty() {
        writeln!(out, "{title}")?;
    }
    for (k, v) in m {
        writeln!(out, "{indent}{k}={}", text(v))?;
    }
    Ok(())
}

fn topic_change(spec: &'static Spec, argv: Vec<OsString>, delete: bool) -> Result<(), Exit> {
    let Some(p) = parse(spec, argv)? else {
        return Ok(());
    };
    let topic = topic_arg(&p, false)?;
    let t = topic.clone();
    let v = with_client(&p, |client| async move {
        let op = if delete {
            ManageOp::DeleteTopic { topic: &t }
        } else {
            ManageOp::Purge { topic: &t }
        };
        ask(&client, op).await
    })?;
    if p.on("json") {
        return print_json(&v);
    }
    let dropped = v["dropped"].as_u64().unwrap_or(0);
    println!(
        "{} {topic}: {dropped} message{} dropped",
        if delete { "deleted" } else { "purged" },
        super::follow::plural(dropped)
    );
    Ok(())
}

fn topic_meta(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&TOPIC_META, argv)? else {
        return Ok(());
    };
    let topic = topic_arg(&p, true)?;
    let mut set = Vec::new();
    for pair in &p.positional[1..] {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CliError(format!(
                "expected KEY=VALUE (KEY= removes KEY), got {pair:?}"
            ))
            .into());
        };
        if k.is_empty() {
            return Err(CliError(format!("{pair:?}: the key is empty")).into());
        }
        set.push((k.to_string(), v.to_string()));
    }
    let v = with_client(&p, |client| async move {
        if set.is_empty() {
            return ask(&client, ManageOp::TopicInfo { topic: &topic }).await;
        }
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (&**k, &**v)).collect();
        ask(&client, ManageOp::Meta { topic: &topic, set }).await
    })?;
    if p.on("json") {
        return print_json(
            &serde_json::json!({"topic": v.get("name").or(v.get("topic")), "meta": v["meta"]}),
        );
    }
    write_meta(&mut io::stdout().lock(), &v["meta"], "", "")?;
    Ok(())
}

/// Where `mote topic show` starts, given what the topic stores (`first..next`), or `None`
/// when there is nothing to show. Starts by time are decided by the broker.
fn show_start(from: Option<Start>, n: u64, first: u64, next: u64) -> Option<Start> {
    if first >= next {
        return None;
    }
    let offset = match from {
        None => next.saturating_sub(n).max(first),
        Some(Start::Earliest) => first,
        Some(Start::Latest) => next,
        Some(Start::Offset(o)) => o,
        Some(Start::Last(k)) => next.saturating_sub(k).max(first),
        Some(other) => return Some(other),
    };
    (offset < next).then_some(Start::Offset(offset))
}

fn topic_show(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&TOPIC_SHOW, argv)? else {
        return Ok(());
    };
    let topic = topic_arg(&p, false)?;
    let n = p.parse_with("count", args::parse_count)?.unwrap_or(20) as u64;
    let from = p.parse_with("from", mote::units::parse_start)?;
    if matches!(from, Some(Start::AfterSeq(_))) {
        return Err(CliError("--from: a sequence number is not a place in a topic".into()).into());
    }
    let printer = Printer {
        verbose: p.on("verbose"),
        json: p.on("json"),
    };
    let idle = timeout(&p)?;
    let mut opts = options(&p, "mote-admin")?;
    opts.connect_timeout = idle;
    // Each step is bounded by --timeout; the whole run is not (it may print a lot).
    block_on(async {
        let client = Client::connect(opts).await.map_err(failure)?;
        let info = ask(&client, ManageOp::TopicInfo { topic: &topic })
            .or(give_up(idle, "answer"))
            .await?;
        let (first, next) = (
            info["first"].as_u64().unwrap_or(0),
            info["next"].as_u64().unwrap_or(0),
        );
        let Some(start) = show_start(from, n, first, next) else {
            return Ok(());
        };
        if matches!(start, Start::Time(_) | Start::Ago(_)) {
            // Nothing stored since that time: the newest message tells, without waiting
            // for messages that will not come.
            let mut probe = client
                .subscribe(&topic, Start::Offset(next - 1))
                .await
                .map_err(failure)?;
            let newest = loop {
                let ev = async { Ok(probe.next().await) }
                    .or(give_up(idle, "message"))
                    .await?;
                match ev {
                    Some(Event::Message(m)) => break m.time_ms,
                    Some(Event::Lag { .. } | Event::Evicted { .. }) => {}
                    _ => return Ok(()),
                }
            };
            drop(probe);
            let since = match start {
                Start::Time(t) => t,
                Start::Ago(ms) => now_ms().saturating_sub(ms),
                _ => 0,
            };
            if newest < since {
                return Ok(());
            }
        }
        let mut sub = client.subscribe(&topic, start).await.map_err(failure)?;
        let mut out = io::BufWriter::new(io::stdout().lock());
        let mut shown = 0u64;
        while shown < n {
            let ev = async { Ok(sub.next().await) }
                .or(give_up(idle, "message"))
                .await?;
            match ev {
                Some(Event::Message(m)) => {
                    if m.offset >= next {
                        break;
                    }
                    printer.message(&mut out, &m, None)?;
                    shown += 1;
                    if m.offset + 1 >= next {
                        break;
                    }
                }
                Some(Event::Lag {
                    topic,
                    missed,
                    next: at,
                }) => {
                    super::follow::report_lag(&mut out, "this reader", &topic, missed, at, false)?;
                    if at >= next {
                        break;
                    }
                }
                Some(Event::Evicted {
                    topic,
                    missed,
                    next: at,
                }) => {
                    super::follow::report_lag(&mut out, "this reader", &topic, missed, at, true)?;
                    if at >= next {
                        break;
                    }
                }
                Some(Event::Removed { topic, .. }) => {
                    out.flush()?;
                    return Err(Failure(format!("topic {topic} was deleted meanwhile")));
                }
                Some(Event::Refused { message, .. }) => return Err(Failure(message)),
                Some(_) => {}
                None => return Err(Failure("the client closed".into())),
            }
        }
        out.flush()?;
        Ok(())
    })
    .map_err(Exit::from)
}

/// Fails after `idle`: the other side of a wait bounded by `--timeout`.
async fn give_up<T>(idle: Duration, what: &str) -> Result<T, Failure> {
    async_io::Timer::after(idle).await;
    Err(Failure(format!(
        "no {what} within {} (--timeout)",
        seconds(idle)
    )))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `mote groups`.
pub(crate) fn groups(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&GROUPS, argv)? else {
        return Ok(());
    };
    subjects(&p, &[], false)?;
    let v = with_client(
        &p,
        |client| async move { ask(&client, ManageOp::Groups).await },
    )?;
    if p.on("json") {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .map(|g| {
                    vec![
                        text(&g["name"]),
                        text(&g["filter"]),
                        num(&g["members"]),
                        num(&g["in_flight"]),
                        num(&g["backlog"]),
                        yes_no(&g["settings"]["durable"]),
                        g["age_ms"].as_u64().map_or("-".into(), duration_ms),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no groups")?;
        return Ok(());
    }
    let head = [
        "GROUP",
        "FILTER",
        "MEMBERS",
        "IN-FLIGHT",
        "BACKLOG",
        "DURABLE",
        "AGE",
    ];
    write!(
        out,
        "{}",
        table(&head, &rows, &[false, false, true, true, true, false, true])
    )?;
    Ok(())
}

fn group_arg(p: &Parsed) -> Result<String, CliError> {
    let name = subjects(p, &["group name"], false)?[0].clone();
    if name.is_empty() {
        return Err(CliError("the group name is empty".into()));
    }
    Ok(name)
}

fn group_info(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&GROUP_INFO, argv)? else {
        return Ok(());
    };
    let name = group_arg(&p)?;
    let v = with_client(&p, |client| async move {
        ask(&client, ManageOp::GroupInfo { group: &name }).await
    })?;
    if p.on("json") {
        return print_json(&v);
    }
    write_group(&v)?;
    Ok(())
}

/// A group as `key value` lines, then its position in each topic.
fn write_group(g: &Value) -> io::Result<()> {
    let s = &g["settings"];
    let mut lines: Vec<(String, String)> = vec![
        ("group".into(), text(&g["name"])),
        ("filter".into(), text(&g["filter"])),
        ("members".into(), num(&g["members"])),
        (
            "messages".into(),
            format!(
                "{} in flight, {} to redeliver, {} not yet delivered",
                num(&g["in_flight"]),
                num(&g["redeliveries_pending"]),
                num(&g["backlog"])
            ),
        ),
        (
            "counted".into(),
            format!(
                "{} delivered, {} acked, {} redelivered, {} dead-lettered, {} missed",
                num(&g["delivered"]),
                num(&g["acked"]),
                num(&g["redelivered"]),
                num(&g["dead_lettered"]),
                num(&g["lag_missed"])
            ),
        ),
        (
            "settings".into(),
            format!(
                "ack timeout {}, {} deliveries, prefetch {}, {}",
                s["ack_timeout_ms"].as_u64().map_or("-".into(), duration_ms),
                num(&s["max_deliveries"]),
                num(&s["prefetch"]),
                if s["durable"].as_bool() == Some(true) {
                    "durable"
                } else {
                    "not durable"
                }
            ),
        ),
    ];
    if let Some(ms) = g["age_ms"].as_u64() {
        lines.push(("age".into(), duration_ms(ms)));
    }
    if let Some(ms) = g["idle_ms"].as_u64() {
        let expiry = g["expiry_ms"]
            .as_u64()
            .map(|e| format!(" (removed after {})", duration_ms(e)))
            .unwrap_or_default();
        lines.push((
            "no members for".into(),
            format!("{}{expiry}", duration_ms(ms)),
        ));
    }
    let mut out = io::stdout().lock();
    write!(out, "{}", pairs(&lines, ""))?;
    if let Some(c) = g["cursors"].as_object().filter(|c| !c.is_empty()) {
        writeln!(out, "positions:")?;
        let rows: Vec<(String, String)> = c.iter().map(|(t, n)| (t.clone(), num(n))).collect();
        write!(out, "{}", pairs(&rows, "  "))?;
        let total = g["topics"].as_u64().unwrap_or(c.len() as u64);
        if total > c.len() as u64 {
            writeln!(out, "  ... and {} more topics", total - c.len() as u64)?;
        }
    }
    Ok(())
}

fn group_seek(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&GROUP_SEEK, argv)? else {
        return Ok(());
    };
    let name = group_arg(&p)?;
    let to = p
        .parse_with("to", mote::units::parse_start)?
        .ok_or_else(|| {
            CliError(
                "give where to with --to (earliest, latest, OFFSET, last:N, ago:10m, time:RFC3339)"
                    .into(),
            )
        })?;
    let shown = p.get("to").unwrap_or_default();
    let v = with_client(&p, |client| async move {
        ask(&client, ManageOp::Seek { group: &name, to }).await
    })?;
    if p.on("json") {
        return print_json(&v);
    }
    println!(
        "moved group {} to {shown}: {} message{} to deliver",
        text(&v["name"]),
        num(&v["backlog"]),
        super::follow::plural(v["backlog"].as_u64().unwrap_or(0))
    );
    Ok(())
}

fn group_delete(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&GROUP_DELETE, argv)? else {
        return Ok(());
    };
    let name = group_arg(&p)?;
    let n = name.clone();
    let v = with_client(&p, |client| async move {
        ask(&client, ManageOp::DeleteGroup { group: &n }).await
    })?;
    if p.on("json") {
        return print_json(&v);
    }
    println!("deleted group {name}");
    Ok(())
}

// ---- Rendering.

/// A string value as it is, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), |n| n.to_string())
}

fn rate(v: &Value) -> String {
    v.as_f64().map_or_else(|| text(v), |r| format!("{r:.1}"))
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

fn bytes(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), human_bytes)
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// `850 ms`, `12 s`, `5 min`, `3 h`, `2 d`.
fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1_000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// Where a setting comes from: its `[topics]` pattern, or the broker's default.
fn source(v: &Value) -> String {
    match v.as_str() {
        Some(p) => format!("[topics.\"{p}\"]"),
        None => "default".into(),
    }
}

/// A setting's value as the config file would write it.
fn setting(key: &str, v: &Value) -> String {
    match (key, v) {
        (_, Value::Null) => "unlimited".into(),
        ("retain_bytes", Value::Number(n)) => n.as_u64().map_or(n.to_string(), human_bytes),
        ("max_age_ms", Value::Number(n)) => n.as_u64().map_or(n.to_string(), duration_ms),
        _ => text(v),
    }
}

/// Rows under a head, each column as wide as its widest cell; `right` columns are aligned
/// right. The last column is not padded.
fn table(head: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let last = i + 1 == cells.len();
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            if right.get(i) == Some(&true) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if !last {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut head.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// `key  value` lines, keys padded to the widest.
fn pairs(lines: &[(String, String)], indent: &str) -> String {
    let w = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{indent}{k:w$}  {v}\n"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["TOPIC", "STORED", "SETTINGS"],
            &[
                vec!["a".into(), "5".into(), "default".into()],
                vec!["sensors/kitchen".into(), "1200".into(), "x".into()],
            ],
            &[false, true, false],
        );
        assert_eq!(
            t,
            "TOPIC            STORED  SETTINGS\n\
             a                     5  default\n\
             sensors/kitchen    1200  x\n"
        );
    }

    #[test]
    fn units_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(90_000), "90 s");
        assert_eq!(duration_ms(600_000), "10 min");
        assert_eq!(duration_ms(7 * 86_400_000), "7 d");
        assert_eq!(setting("max_age_ms", &Value::Null), "unlimited");
        assert_eq!(source(&Value::Null), "default");
        assert_eq!(source(&"sensors/#".into()), "[topics.\"sensors/#\"]");
    }

    #[test]
    fn show_starts_inside_what_is_stored() {
        assert_eq!(show_start(None, 20, 0, 0), None);
        assert_eq!(show_start(None, 20, 5, 100), Some(Start::Offset(80)));
        assert_eq!(show_start(None, 20, 90, 100), Some(Start::Offset(90)));
        assert_eq!(
            show_start(Some(Start::Earliest), 3, 7, 9),
            Some(Start::Offset(7))
        );
        assert_eq!(show_start(Some(Start::Latest), 3, 7, 9), None);
        assert_eq!(show_start(Some(Start::Offset(9)), 3, 7, 9), None);
        assert_eq!(
            show_start(Some(Start::Offset(2)), 3, 7, 9),
            Some(Start::Offset(2))
        );
        assert_eq!(
            show_start(Some(Start::Ago(5)), 3, 7, 9),
            Some(Start::Ago(5))
        );
    }
}
