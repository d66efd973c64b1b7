//! `mote topic show`: the messages a topic stores, read with a plain subscription from
//! where the user asked, up to the newest message stored when it started.

use super::topics::topic_arg;
use super::*;

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

pub(super) fn topic_show(argv: Vec<OsString>) -> Result<(), Exit> {
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
            let evicted = matches!(ev, Some(Event::Evicted { .. }));
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
                Some(
                    Event::Lag {
                        topic,
                        missed,
                        next: at,
                    }
                    | Event::Evicted {
                        topic,
                        missed,
                        next: at,
                    },
                ) => {
                    super::super::follow::report_lag(
                        &mut out,
                        "this reader",
                        &topic,
                        missed,
                        at,
                        evicted,
                    )?;
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

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
