//! The management API: `/api/topics` and `/api/groups`, through [`crate::manage`] (the
//! same rights and JSON as the binary protocol's `Manage` frames).
//!
//! Routes (`<topic>` may span path levels: `/api/topics/sensors/kitchen` is topic
//! `sensors/kitchen`):
//! - `GET /api/topics[?filter=]`: every topic the caller may see, one document written a
//!   page at a time (`manage::PAGE` topics per slice, others served between slices);
//! - `GET|DELETE /api/topics/<topic>`, `POST /api/topics/<topic>/purge`,
//!   `PUT /api/topics/<topic>/meta` (a JSON object of strings; `""` or `null` removes);
//! - `GET /api/groups`, `GET|DELETE /api/groups/<name>`, `POST /api/groups/<name>/seek`
//!   (`{"to": "earliest"}`, `{"to": 42}` or `?to=`).
//!
//! A last path level `purge` or `meta` always names the sub-resource, whatever the method
//! (`GET /api/topics/a/purge` is 405): a topic whose last level is literally `purge` or
//! `meta` is named with its last `/` percent-encoded, `/api/topics/a%2Fpurge` (and purged
//! with `POST /api/topics/a%2Fpurge/purge`). The decision is made on the path as sent,
//! before percent-decoding.

use std::sync::Arc;

use mote_sdk::wire::ManageOp;
use mote_sdk::{Filter, Start, Topic};
use serde_json::Value;

use super::Edge;
use super::answer::{self, Answer, Body, HttpError};
use super::parse::{Method, decode};
use super::routes::{Caller, Document, Outcome, Request, authenticate, refusal};
use crate::auth::Rules;
use crate::engine::{MAX_META_KEY, MAX_META_KEYS, MAX_META_VALUE};
use crate::manage;

/// The largest body a management route reads (metadata, a seek target).
pub(crate) const BODY_MAX: usize = 16 * 1024;

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(400, "bad_request", message)
}

/// Does `op` for `caller`: the engine's clock moved on first, the connections it has news
/// for (a purged topic's subscribers, a sought group's members) woken after.
fn run(edge: &Edge, caller: &Caller, op: &ManageOp<'_>) -> Result<Value, HttpError> {
    let shared = &edge.shared;
    let mut engine = shared.engine.borrow_mut();
    engine.advance_clock(shared.mono_ms());
    let r = manage::run(&mut engine, caller.manage(), op);
    shared.wake_others(&mut engine, None);
    r.map_err(|e| refusal(&e))
}

/// `GET /api/topics[?filter=]`.
pub(crate) fn list_topics(edge: &Edge, req: &Request<'_>) -> Result<Outcome, HttpError> {
    if !matches!(req.head.method, Method::Get | Method::Head) {
        return Err(HttpError::method_not_allowed("GET"));
    }
    let caller = authenticate(edge, req)?;
    let filter = match req.query.get("filter").unwrap_or("") {
        "" => None,
        f => Some(Filter::new(f).map_err(|e| {
            HttpError::new(
                400,
                "bad_filter",
                format!("bad filter {}: {e}", mote_sdk::topic::shown(f)),
            )
        })?),
    };
    let first = {
        let engine = edge.shared.engine.borrow();
        manage::topics_page(&engine, caller.manage(), filter.as_ref(), 0)
    };
    // One page holds them all (the usual case): a plain answer, and the connection stays.
    if first.next.is_none() {
        let mut body = Vec::with_capacity(first.items.len() + 16);
        body.extend_from_slice(b"{\"topics\":[");
        body.extend_from_slice(&first.items);
        body.extend_from_slice(b"]}");
        return Ok(Outcome::Answer(
            Answer::new(200, "application/json", Body::Owned(body))
                .with_header("Cache-Control", "no-store"),
        ));
    }
    Ok(Outcome::Document(Box::new(TopicList {
        filter,
        rules: caller.rules,
        token: caller.name,
        from: Some(0),
        written: 0,
        body: Vec::new(),
    })))
}

/// The topic listing past one page: `{"topics":[` then a page of topics per slice.
struct TopicList {
    filter: Option<Filter>,
    rules: Option<Arc<Rules>>,
    token: Option<String>,
    /// Where the next page starts; `None` once the document is closed.
    from: Option<usize>,
    /// Topics written so far (a comma goes before every later one).
    written: usize,
    body: Vec<u8>,
}

impl Document for TopicList {
    fn head(&self) -> Vec<u8> {
        answer::chunked_head(
            "application/json",
            &[("Cache-Control", "no-store".to_string())],
        )
    }

    fn next(&mut self, edge: &Edge, out: &mut Vec<u8>) -> bool {
        let Some(from) = self.from else { return false };
        let caller = manage::Caller {
            token: self.token.as_deref(),
            rules: self.rules.as_deref(),
        };
        let page = {
            let engine = edge.shared.engine.borrow();
            manage::topics_page(&engine, caller, self.filter.as_ref(), from)
        };
        self.body.clear();
        if from == 0 {
            self.body.extend_from_slice(b"{\"topics\":[");
        }
        if page.count > 0 {
            if self.written > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(&page.items);
            self.written += page.count;
        }
        // `next` only moves forward: the listing ends even if topics come and go.
        self.from = page.next.filter(|&n| n > from);
        if self.from.is_none() {
            self.body.extend_from_slice(b"]}");
        }
        answer::chunk(out, &self.body);
        true
    }
}

/// What a path under `/api/topics/` or `/api/groups/` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// The topic or group itself: `GET`, `DELETE`.
    Itself,
    /// `POST .../purge`.
    Purge,
    /// `PUT .../meta`.
    Meta,
    /// `POST .../seek`.
    Seek,
}

impl Sub {
    fn allowed(self) -> &'static str {
        match self {
            Sub::Itself => "GET, DELETE",
            Sub::Purge | Sub::Seek => "POST",
            Sub::Meta => "PUT",
        }
    }

    fn takes(self, m: Method) -> bool {
        match self {
            Sub::Itself => matches!(m, Method::Get | Method::Head | Method::Delete),
            Sub::Purge | Sub::Seek => m == Method::Post,
            Sub::Meta => m == Method::Put,
        }
    }
}

/// The answer to a change: 204 for a deletion, else the JSON.
fn answer(method: Method, v: &Value) -> Outcome {
    Outcome::Answer(if method == Method::Delete {
        Answer::empty(204)
    } else {
        Answer::json(200, v)
    })
}

/// `/api/topics/<topic>[/purge|/meta]`, `rest` the path levels after `topics` as sent.
pub(crate) fn topic(edge: &Edge, req: &Request<'_>, rest: &[&str]) -> Result<Outcome, HttpError> {
    let (sub, levels) = match rest.split_last() {
        Some((&"purge", head)) if !head.is_empty() => (Sub::Purge, head),
        Some((&"meta", head)) if !head.is_empty() => (Sub::Meta, head),
        _ => (Sub::Itself, rest),
    };
    let method = req.head.method;
    if !sub.takes(method) {
        return Err(HttpError::method_not_allowed(sub.allowed()));
    }
    let name = decode(&levels.join("/"), false)?;
    Topic::new_system(&name).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(&name)),
        )
    })?;
    let caller = authenticate(edge, req)?;
    let meta;
    let op = match (sub, method) {
        (Sub::Purge, _) => ManageOp::Purge { topic: &name },
        (Sub::Meta, _) => {
            meta = meta_body(&req.body)?;
            ManageOp::Meta {
                topic: &name,
                set: meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            }
        }
        (_, Method::Delete) => ManageOp::DeleteTopic { topic: &name },
        _ => ManageOp::TopicInfo { topic: &name },
    };
    run(edge, &caller, &op).map(|v| answer(method, &v))
}

/// A metadata body: a JSON object whose values are strings (`""` or `null`: remove the
/// key), within the engine's limits on keys and values.
fn meta_body(body: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    const WHAT: &str = "expected a JSON object of strings, {\"owner\": \"kitchen-pi\"} (\"\" or null removes a key)";
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("meta: {e}; {WHAT}")))?;
    let Value::Object(o) = v else {
        return Err(bad(format!("meta: {WHAT}")));
    };
    if o.is_empty() {
        return Err(bad(format!("meta: no key given; {WHAT}")));
    }
    if o.len() > MAX_META_KEYS {
        return Err(bad(format!(
            "meta: {} keys, a topic holds at most {MAX_META_KEYS}",
            o.len()
        )));
    }
    o.into_iter()
        .map(|(k, v)| {
            if k.is_empty()
                || k.len() > MAX_META_KEY
                || k.contains(|c: char| c == '=' || c.is_control())
            {
                return Err(bad(format!(
                    "meta: key {k:?} must be 1 to {MAX_META_KEY} bytes without '=' or control characters"
                )));
            }
            let v = match v {
                Value::Null => String::new(),
                Value::String(s) if s.len() <= MAX_META_VALUE => s,
                Value::String(_) => {
                    return Err(bad(format!(
                        "meta: the value of {k:?} is over {MAX_META_VALUE} bytes"
                    )));
                }
                _ => return Err(bad(format!("meta: the value of {k:?} is not a string"))),
            };
            Ok((k, v))
        })
        .collect()
}

/// `GET /api/groups`.
pub(crate) fn list_groups(edge: &Edge, req: &Request<'_>) -> Result<Outcome, HttpError> {
    if !matches!(req.head.method, Method::Get | Method::Head) {
        return Err(HttpError::method_not_allowed("GET"));
    }
    let caller = authenticate(edge, req)?;
    run(edge, &caller, &ManageOp::Groups).map(|v| answer(Method::Get, &v))
}

/// `/api/groups/<name>[/seek]`, `rest` the path levels after `groups` as sent.
pub(crate) fn group(edge: &Edge, req: &Request<'_>, rest: &[&str]) -> Result<Outcome, HttpError> {
    let (sub, name) = match rest {
        [name] => (Sub::Itself, *name),
        [name, "seek"] => (Sub::Seek, *name),
        _ => {
            return Err(HttpError::new(
                404,
                "not_found",
                "no such route: a group's name has no '/' (/api/groups/NAME, /api/groups/NAME/seek)",
            ));
        }
    };
    let method = req.head.method;
    if !sub.takes(method) {
        return Err(HttpError::method_not_allowed(sub.allowed()));
    }
    let name = decode(name, false)?;
    let caller = authenticate(edge, req)?;
    let op = match (sub, method) {
        (Sub::Seek, _) => ManageOp::Seek {
            group: &name,
            to: seek_target(req)?,
        },
        (_, Method::Delete) => ManageOp::DeleteGroup { group: &name },
        _ => ManageOp::GroupInfo { group: &name },
    };
    run(edge, &caller, &op).map(|v| answer(method, &v))
}

/// Where a seek goes: `?to=` (it wins), or the body `{"to": "earliest"}` / `{"to": 42}`.
fn seek_target(req: &Request<'_>) -> Result<Start, HttpError> {
    const WHAT: &str = "seek needs a target: {\"to\": \"earliest\"}, {\"to\": \"latest\"}, {\"to\": 42}, {\"to\": \"time:2026-12-01T10:00:00Z\"}, {\"to\": \"ago:10m\"}, or ?to=";
    let text = |s: &str| crate::units::parse_start(s).map_err(|e| bad(format!("to: {e}")));
    if let Some(to) = req.query.get("to") {
        return text(to);
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(WHAT));
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|e| bad(format!("{e}; {WHAT}")))?;
    match v.get("to") {
        Some(Value::String(s)) => text(s),
        Some(Value::Number(n)) => n.as_u64().map(Start::Offset).ok_or_else(|| {
            bad(format!(
                "to: {n} is not an offset (a whole number from 0); {WHAT}"
            ))
        }),
        _ => Err(bad(WHAT)),
    }
}
