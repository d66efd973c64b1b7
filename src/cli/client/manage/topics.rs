//! `mote topics` and `mote topic info|show|purge|delete|meta`.

use super::*;

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

const TOPIC_USAGE: &str = "\
Usage: mote topic <COMMAND> TOPIC [OPTIONS]

Commands:
  info     settings, counters, metadata and groups of a topic
  show     print the messages it stores
  purge    drop its stored messages
  delete   delete it
  meta     show or set its metadata (KEY=VALUE, KEY= removes)

Run `mote topic <COMMAND> --help` for a command's options; `mote topics` lists topics.";

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
            let next = page["next"].as_u64();
            if let Value::Object(mut page) = page {
                if let Some(Value::Array(items)) = page.remove("topics") {
                    all.extend(items);
                }
            }
            match next.and_then(|n| u32::try_from(n).ok()) {
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
    // One line per topic, thousands of them: buffered, not a write per line.
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    if rows.is_empty() {
        writeln!(out, "no topics")?;
        out.flush()?;
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
    out.flush()?;
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
        "show" => super::show::topic_show(argv),
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

pub(super) fn topic_arg(p: &Parsed, extra: bool) -> Result<String, CliError> {
    let t = subjects(p, &["topic"], extra)?[0].clone();
    super::super::leading_slash("topic", &t)?;
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
    if let Some(schema) = v["schema"].as_object() {
        lines.push((
            "schema".into(),
            format!(
                "{} from [topics.{:?}], {} refused",
                text(&schema["file"]),
                text(&schema["from"]),
                num(&v["schema_refused"])
            ),
        ));
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
        super::super::follow::plural(dropped)
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
