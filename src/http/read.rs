//! Polls of stored messages: `GET /t/<topic>` reads one topic's ring; `GET /t/<filter>`
//! (a `+` or `#` level) reads every matching topic the caller may subscribe to, each
//! message with its topic. Both start at `since` (`earliest`, `latest`, an offset,
//! `last:N`, `10m` or `ago:10m`, `time:RFC3339`) and are bounded in messages (`limit`)
//! and payload bytes; the wildcard poll also in topics.

use mote_sdk::{Filter, Start, Topic};
use serde_json::{Value, json};

use super::Edge;
use super::answer::{Answer, HttpError};
use super::parse::Query;
use super::render;
use super::routes::{Caller, Request, authenticate};
use crate::engine::Since;

/// Default and largest `limit` of a read, and the payload bytes one read returns at
/// most (at least one message).
const READ_DEFAULT: usize = 100;
const READ_MAX: usize = 1000;
const READ_MAX_BYTES: usize = 4 << 20;
/// Most topics a wildcard poll reads (and lists); `more` says when there were others.
const POLL_MAX_TOPICS: usize = 1000;

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(400, "bad_request", message)
}

/// `GET /t/<topic or filter>`.
pub(crate) fn read(edge: &Edge, req: &Request<'_>, name: &str) -> Result<Answer, HttpError> {
    let caller = authenticate(edge, req)?;
    let since = since(edge, req.query)?;
    let limit = limit(req.query, since)?;
    if name.contains(['+', '#']) {
        return poll(edge, &caller, name, since, limit);
    }
    let t = Topic::new_system(name).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(name)),
        )
    })?;
    let exact =
        Filter::new(t.as_str()).map_err(|e| HttpError::new(400, "bad_topic", e.to_string()))?;
    caller.check_subscribe(&exact)?;
    let stored = edge
        .shared
        .engine
        .borrow()
        .read_topic(name, since, limit, READ_MAX_BYTES);
    Ok(Answer::json(
        200,
        &render::stored(name, stored.first, stored.next, &stored.messages),
    ))
}

/// `since=`: where a read starts in each topic (`earliest` by default). Durations are
/// by the broker's clock.
fn since(edge: &Edge, q: &Query) -> Result<Since, HttpError> {
    let start = parse_start(q.get("since").unwrap_or("earliest"))
        .map_err(|e| bad(format!("since: {e}")))?;
    Ok(match start {
        Start::Earliest => Since::Earliest,
        Start::Latest => Since::Latest,
        Start::Offset(n) => Since::Offset(n),
        Start::Last(n) => Since::Last(n),
        Start::Time(ms) => Since::Time(ms),
        Start::Ago(ms) => Since::Time(edge.shared.wall_ms().saturating_sub(ms)),
        Start::AfterSeq(_) => return Err(bad("since: a sequence number is not a start here")),
    })
}

/// A start as `units::parse_start` reads it, but with a `+` of a time's UTC offset
/// restored where an unencoded query turned it into a space
/// (`since=time:2026-12-01T10:00:00+01:00` as typed into curl).
pub(crate) fn parse_start(s: &str) -> Result<Start, String> {
    let fixed;
    let s = match s.len().checked_sub(6).and_then(|i| s.get(i..)) {
        Some(tail) if s.starts_with("time:") && tail.starts_with(' ') => {
            fixed = format!("{}+{}", &s[..s.len() - 6], &tail[1..]);
            fixed.as_str()
        }
        _ => s,
    };
    crate::units::parse_start(s)
}

/// `limit=`: 100 by default (`N` for `since=last:N`), at most 1000.
fn limit(q: &Query, since: Since) -> Result<usize, HttpError> {
    Ok(match q.get("limit") {
        None => match since {
            Since::Last(n) => usize::try_from(n).unwrap_or(READ_MAX).max(READ_DEFAULT),
            _ => READ_DEFAULT,
        },
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| bad("limit: expected a whole number"))?,
    }
    .min(READ_MAX))
}

/// A wildcard poll: the topics matching `filter` that the caller may subscribe to, in
/// the order they were created, each read from `since` until `limit` messages or the
/// byte bound are reached for them all. `more` says an answer was cut short (by the
/// limit, the bytes or the topic bound): read on with a later `since` or a narrower
/// filter.
fn poll(
    edge: &Edge,
    caller: &Caller,
    filter: &str,
    since: Since,
    limit: usize,
) -> Result<Answer, HttpError> {
    let f = Filter::new(filter).map_err(|e| {
        HttpError::new(
            400,
            "bad_filter",
            format!("bad filter {}: {e}", mote_sdk::topic::shown(filter)),
        )
    })?;
    let engine = edge.shared.engine.borrow();
    let (topics, rest) = engine.list_topics(Some(&f), 0, POLL_MAX_TOPICS);
    let mut more = rest.is_some();
    let (mut left, mut bytes_left) = (limit, READ_MAX_BYTES);
    let mut listed = Vec::new();
    let mut messages = Vec::new();
    for t in &topics {
        let readable = caller
            .rules
            .as_ref()
            .is_none_or(|r| Filter::new(&t.name).is_ok_and(|exact| r.may_subscribe(&exact)));
        if !readable {
            continue;
        }
        listed.push(json!({"topic": t.name, "first": t.first, "next": t.next}));
        if left == 0 || bytes_left == 0 {
            // Cut short: say so if this topic had something to give.
            more |= t.next > t.first;
            continue;
        }
        let s = engine.read_topic(&t.name, since, left, bytes_left);
        let used: usize = s.messages.iter().map(|m| m.payload.len().max(1)).sum();
        let last = s.messages.last().map(|m| m.offset + 1);
        more |= s.messages.len() == left && last.is_some_and(|l| l < s.next);
        more |= used >= bytes_left && last.is_some_and(|l| l < s.next);
        left -= s.messages.len().min(left);
        bytes_left = bytes_left.saturating_sub(used);
        messages.extend(
            s.messages.iter().map(|m| {
                render::message(&t.name, m.offset, m.time_ms, m.key.as_deref(), &m.payload)
            }),
        );
    }
    Ok(Answer::json(
        200,
        &json!({
            "filter": f.as_str(),
            "topics": Value::Array(listed),
            "messages": Value::Array(messages),
            "more": more,
        }),
    ))
}
