//! Management of topics and groups, one front for the binary protocol (`Manage` frames)
//! and the HTTP API (`/api/topics`, `/api/groups`): checks the caller's rights, asks the
//! engine, and renders the answer as JSON (the same document on both, described in
//! `src/http/openapi.json`).
//!
//! Rights: with tokens, reading a topic's or group's state needs a `subscribe` or `manage`
//! rule covering it; purge, delete, metadata, seek and group delete need `manage`. A
//! broker's single `--token` may do everything. Listings leave out what the caller may
//! not see.

use mote_sdk::wire::ManageOp;
use mote_sdk::{ErrorCode, Filter, Start};
use serde_json::{Value, json};

use crate::auth::Rules;
use crate::engine::{AdminOp, Engine, GroupInfo, Refusal, TopicDetail};

/// Most topics one page of a listing holds.
pub const PAGE: usize = 256;
/// Most per-topic positions shown for one group.
pub const MAX_GROUP_CURSORS: usize = 1000;

/// Who asks: the token's name and rules, or `None` on a broker without tokens (and for
/// the single `--token`, which may do everything).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The token's name, for error messages.
    pub token: Option<&'a str>,
    /// Its rules; `None`: every right.
    pub rules: Option<&'a Rules>,
}

impl Caller<'_> {
    fn forbidden(&self, what: &str, rules: String) -> Refusal {
        let name = self.token.unwrap_or("this token");
        Refusal {
            code: ErrorCode::FORBIDDEN,
            message: format!("token {name:?} may not {what} (its {rules})"),
        }
    }

    fn check_manage(&self, topic: &str) -> Result<(), Refusal> {
        match self.rules {
            Some(r) if !r.may_manage(topic) => Err(self.forbidden(
                &format!("manage {}", mote_sdk::topic::shown(topic)),
                format!("manage rules: {}", r.manage_rules()),
            )),
            _ => Ok(()),
        }
    }

    fn may_inspect(&self, topic: &str) -> bool {
        self.rules.is_none_or(|r| r.may_inspect(topic))
    }

    fn check_inspect(&self, topic: &str) -> Result<(), Refusal> {
        match self.rules {
            Some(r) if !r.may_inspect(topic) => Err(self.forbidden(
                &format!("see {}", mote_sdk::topic::shown(topic)),
                format!(
                    "subscribe rules: {}; manage rules: {}",
                    r.subscribe_rules(),
                    r.manage_rules()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn may_see_group(&self, filter: &str) -> bool {
        let Some(r) = self.rules else { return true };
        Filter::new(filter).is_ok_and(|f| r.may_subscribe(&f) || r.may_manage_filter(&f))
    }

    fn check_manage_group(&self, g: &GroupInfo) -> Result<(), Refusal> {
        let Some(r) = self.rules else { return Ok(()) };
        if Filter::new(&g.filter).is_ok_and(|f| r.may_manage_filter(&f)) {
            return Ok(());
        }
        Err(self.forbidden(
            &format!("manage group {:?} (it reads {})", g.name, g.filter),
            format!("manage rules: {}", r.manage_rules()),
        ))
    }
}

fn not_found(what: &str, name: &str) -> Refusal {
    Refusal {
        code: ErrorCode::NOT_FOUND,
        message: format!("no {what} {}", mote_sdk::topic::shown(name)),
    }
}

fn bad_filter(e: impl std::fmt::Display) -> Refusal {
    Refusal {
        code: ErrorCode::BAD_FILTER,
        message: format!("bad filter: {e}"),
    }
}

/// Does `op` for `caller` and answers with its JSON document. Changes are logged once at
/// info level and counted by the engine.
pub fn run(engine: &mut Engine, caller: Caller<'_>, op: &ManageOp<'_>) -> Result<Value, Refusal> {
    match *op {
        ManageOp::Topics { filter, from } => {
            let text = topics_text(engine, caller, filter, from)?;
            Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        ManageOp::TopicInfo { topic } => {
            caller.check_inspect(topic)?;
            let d = engine
                .topic_detail(topic)
                .ok_or_else(|| not_found("topic", topic))?;
            Ok(topic_detail(&d))
        }
        ManageOp::Purge { topic } => {
            caller.check_manage(topic)?;
            let dropped = engine.purge_topic(topic)?;
            log_op(
                caller,
                AdminOp::Purge,
                topic,
                &format!("{dropped} messages dropped"),
            );
            Ok(json!({"topic": topic, "dropped": dropped}))
        }
        ManageOp::DeleteTopic { topic } => {
            caller.check_manage(topic)?;
            let dropped = engine.delete_topic(topic)?;
            log_op(
                caller,
                AdminOp::DeleteTopic,
                topic,
                &format!("{dropped} messages dropped"),
            );
            Ok(json!({"topic": topic, "dropped": dropped}))
        }
        ManageOp::Meta { topic, ref set } => {
            caller.check_manage(topic)?;
            engine.set_topic_meta(topic, set)?;
            let keys: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
            log_op(
                caller,
                AdminOp::Meta,
                topic,
                &format!("keys {}", keys.join(", ")),
            );
            let d = engine
                .topic_detail(topic)
                .ok_or_else(|| not_found("topic", topic))?;
            Ok(json!({"topic": topic, "meta": meta(&d.meta)}))
        }
        ManageOp::Groups => {
            let mut groups: Vec<GroupInfo> = engine
                .group_infos()
                .into_iter()
                .filter(|g| caller.may_see_group(&g.filter))
                .collect();
            crate::sort::sort_by(&mut groups, |a, b| a.name.cmp(&b.name));
            Ok(json!({"groups": groups.iter().map(group).collect::<Vec<_>>()}))
        }
        ManageOp::GroupInfo { group: name } => {
            let g = engine
                .group_by_name(name)
                .ok_or_else(|| not_found("group", name))?;
            if !caller.may_see_group(&g.filter) {
                caller.check_manage_group(&g)?;
            }
            Ok(group(&g))
        }
        ManageOp::Seek { group: name, to } => {
            let g = engine
                .group_by_name(name)
                .ok_or_else(|| not_found("group", name))?;
            caller.check_manage_group(&g)?;
            engine.seek_group(name, to)?;
            log_op(
                caller,
                AdminOp::Seek,
                name,
                &format!("to {}", start_text(to)),
            );
            let g = engine
                .group_by_name(name)
                .ok_or_else(|| not_found("group", name))?;
            Ok(group(&g))
        }
        ManageOp::DeleteGroup { group: name } => {
            let g = engine
                .group_by_name(name)
                .ok_or_else(|| not_found("group", name))?;
            caller.check_manage_group(&g)?;
            engine.delete_group(name)?;
            log_op(caller, AdminOp::DeleteGroup, name, "");
            Ok(json!({"group": name}))
        }
    }
}

fn log_op(caller: Caller<'_>, op: AdminOp, name: &str, what: &str) {
    let by = caller
        .token
        .map(|t| format!(" by token {t:?}"))
        .unwrap_or_default();
    log::info!(
        "{} {}{by}{}{what}",
        op.name(),
        mote_sdk::topic::shown(name),
        if what.is_empty() { "" } else { ": " }
    );
}

/// How a seek target reads in logs and messages.
pub fn start_text(s: Start) -> String {
    match s {
        Start::Latest => "latest".into(),
        Start::Earliest => "earliest".into(),
        Start::Offset(n) => format!("offset {n}"),
        Start::Last(n) => format!("the last {n}"),
        Start::AfterSeq(n) => format!("after sequence {n}"),
        Start::Time(t) => format!("time {t} ms"),
        Start::Ago(ms) => format!("{ms} ms ago"),
    }
}

/// One page of the topic listing, rendered.
#[derive(Debug, Clone, Default)]
pub struct TopicsPage {
    /// The topics as JSON objects, separated by commas (no brackets).
    pub items: Vec<u8>,
    /// How many there are.
    pub count: usize,
    /// Where the next page starts, if there are more topics.
    pub next: Option<usize>,
}

impl TopicsPage {
    /// The page as a document: `{"topics":[...],"next":N|null}`.
    pub fn document(&self) -> String {
        let mut out = String::with_capacity(self.items.len() + 32);
        out.push_str("{\"topics\":[");
        out.push_str(std::str::from_utf8(&self.items).unwrap_or_default());
        out.push_str("],\"next\":");
        match self.next {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }
}

/// A topic in a listing (serialized straight into the page: no map per topic, so a page
/// of [`PAGE`] topics holds the executor for a fraction of a millisecond).
#[derive(serde::Serialize)]
struct Summary<'a> {
    name: &'a str,
    first: u64,
    next: u64,
    stored: usize,
    bytes: usize,
    published: u64,
    delivered: u64,
    subscribers: usize,
    publish_per_s: f64,
    deliver_per_s: f64,
    persist: bool,
    settings_from: Option<&'a str>,
}

/// One page of the topic listing: up to [`PAGE`] topics from position `from` that
/// `filter` matches and the caller may see.
pub fn topics_page(
    engine: &Engine,
    caller: Caller<'_>,
    filter: Option<&Filter>,
    from: usize,
) -> TopicsPage {
    let (topics, next) = engine.list_topics(filter, from, PAGE);
    let mut page = TopicsPage {
        items: Vec::with_capacity(topics.len() * 256),
        count: 0,
        next,
    };
    for t in topics.iter().filter(|t| caller.may_inspect(&t.name)) {
        let s = engine.topic_settings(&t.name);
        let item = Summary {
            name: &t.name,
            first: t.first,
            next: t.next,
            stored: t.stored,
            bytes: t.bytes,
            published: t.published,
            delivered: t.delivered,
            subscribers: t.subscribers,
            publish_per_s: round(t.publish_per_s),
            deliver_per_s: round(t.deliver_per_s),
            persist: s.persist.value,
            settings_from: s.persist.source.pattern(),
        };
        if page.count > 0 {
            page.items.push(b',');
        }
        page.count += 1;
        // Serializing a plain struct into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut page.items, &item);
    }
    page
}

/// `ManageOp::Topics` as its JSON text (what a `Managed` frame carries).
pub fn topics_text(
    engine: &Engine,
    caller: Caller<'_>,
    filter: &str,
    from: u32,
) -> Result<String, Refusal> {
    let filter = match filter {
        "" => None,
        f => Some(Filter::new(f).map_err(bad_filter)?),
    };
    Ok(topics_page(engine, caller, filter.as_ref(), from as usize).document())
}

/// `GET /api/topics/<topic>`, `TopicInfo`.
pub fn topic_detail(d: &TopicDetail) -> Value {
    let t = &d.info;
    json!({
        "name": t.name, "first": t.first, "next": t.next, "stored": t.stored,
        "bytes": t.bytes, "published": t.published, "delivered": t.delivered,
        "lag_missed": t.lag_missed, "evicted": t.evicted, "expired": d.expired,
        "subscribers": t.subscribers, "publish_per_s": round(t.publish_per_s),
        "deliver_per_s": round(t.deliver_per_s), "idle_ms": d.idle_ms,
        "settings": crate::http::render::settings(&d.settings),
        "meta": meta(&d.meta), "groups": d.groups,
        "schema_refused": t.schema_refused,
        "schema": d.schema.as_ref().map(|(file, from)| json!({"file": file, "from": from})),
    })
}

fn meta(m: &[(String, String)]) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A group, listed or alone.
pub fn group(g: &GroupInfo) -> Value {
    let mut v = crate::http::render::group(g);
    if let Value::Object(o) = &mut v {
        if g.cursors.len() > MAX_GROUP_CURSORS {
            let shown: serde_json::Map<String, Value> = g
                .cursors
                .iter()
                .take(MAX_GROUP_CURSORS)
                .map(|(t, n)| (t.clone(), (*n).into()))
                .collect();
            o.insert("cursors".into(), Value::Object(shown));
        }
        o.insert("topics".into(), g.cursors.len().into());
        o.insert("age_ms".into(), g.age_ms.into());
        o.insert("idle_ms".into(), g.idle_ms.into());
        o.insert("expiry_ms".into(), g.expiry_ms.into());
    }
    v
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
