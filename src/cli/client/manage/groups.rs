//! `mote groups` and `mote group info|seek|delete`.

use super::*;

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

const GROUP_USAGE: &str = "\
Usage: mote group <COMMAND> NAME [OPTIONS]

Commands:
  info     members, position, backlog and settings of a group
  seek     move it (--to earliest|latest|OFFSET|last:N|ago:10m|time:RFC3339)
  delete   delete it

Run `mote group <COMMAND> --help` for a command's options; `mote groups` lists groups.";

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
        super::super::follow::plural(v["backlog"].as_u64().unwrap_or(0))
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
