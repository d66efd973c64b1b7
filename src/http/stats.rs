//! `/api/stats` and `/metrics`, cheap whatever the broker holds: by default the busiest
//! topics, connections and groups (`stats_topics` of each) with the totals, in one pass
//! over the engine; `?topics=all` lists every one, written in slices so the executor is
//! never held for long.

use serde_json::{Map, Value};

use super::Edge;
use super::answer::{self, Answer, HttpError};
use super::parse::Query;
use super::render::{self, Summary};
use super::routes::Outcome;
use crate::engine::{ConnId, Engine};

/// Topics, connections or groups rendered per slice of a `?topics=all` document.
const SLICE: usize = 200;

/// What the stats document and the metrics share.
fn summary(edge: &Edge, engine: &Engine) -> Summary {
    let counts = edge.counts.borrow();
    Summary {
        stats: engine.stats().clone(),
        limits: engine.limits().clone(),
        memory_used: engine.memory_used(),
        stored: engine.stored_messages(),
        partial_bytes: edge.shared.partial_bytes(),
        uptime: edge.shared.uptime(),
        rates: engine.rates(),
        tokens: edge.shared.auth_now().len(),
        time_ms: edge.shared.wall_ms(),
        topics: engine.topic_count(),
        tcp_connections: engine.tcp_connection_count(),
        http_streams: engine.connection_count() - engine.tcp_connection_count(),
        groups: engine.group_count(),
        rss: render::rss_bytes(),
        http: render::HttpTotals {
            requests: counts.requests,
            refused: counts.refused,
            connections: edge.conns.get(),
            errors: counts.errors.iter().map(|(k, v)| (*k, *v)).collect(),
        },
        log_dropped: crate::logging::dropped(),
    }
}

/// `GET /api/stats[?topics=all]`.
pub(crate) fn stats(edge: &Edge, q: &Query) -> Result<Outcome, HttpError> {
    match q.get("topics") {
        None | Some("busiest") => {}
        Some("all") => return Ok(Outcome::Document(Paged::new(edge))),
        Some(other) => {
            return Err(HttpError::new(
                400,
                "bad_request",
                format!("topics={other:?}: expected all (or busiest, the default)"),
            ));
        }
    }
    let engine = edge.shared.engine.borrow();
    let n = edge.cfg.stats_topics;
    let mut doc = render::stats_head(&summary(edge, &engine), &edge.info);
    let topics: Vec<Value> = engine.busiest_topics(n).iter().map(render::topic).collect();
    let conns: Vec<Value> = engine
        .busiest_conns(n, None)
        .iter()
        .map(render::connection)
        .collect();
    let mut groups = engine.group_infos();
    groups.sort_by(|a, b| {
        b.counters
            .delivered
            .cmp(&a.counters.delivered)
            .then(a.name.cmp(&b.name))
    });
    groups.truncate(n);
    doc.insert("topics".into(), Value::Array(topics));
    doc.insert("connections".into(), Value::Array(conns));
    doc.insert(
        "groups".into(),
        Value::Array(groups.iter().map(render::group).collect()),
    );
    Ok(Outcome::Answer(Answer::json(200, &Value::Object(doc))))
}

/// `GET /metrics`.
pub(crate) fn metrics(edge: &Edge) -> String {
    let engine = edge.shared.engine.borrow();
    let n = edge.cfg.metrics_topics;
    let shown = engine.most_published_topics(n);
    let rest = (engine.topic_count() > shown.len()).then(|| {
        let mut rest = engine.topic_totals();
        for t in &shown {
            rest.published -= t.published;
            rest.delivered -= t.delivered;
            rest.lag_missed -= t.lag_missed;
            rest.evicted -= t.evicted;
            rest.stored -= t.stored;
            rest.bytes -= t.bytes;
        }
        rest
    });
    render::metrics(
        &summary(edge, &engine),
        &shown,
        rest.as_ref(),
        &engine.group_infos(),
        n,
    )
}

/// Where a `?topics=all` document is.
enum Part {
    Head,
    Topics(usize),
    Conns(Vec<ConnId>, usize),
    Groups(Vec<usize>, usize),
    Done,
}

/// The `?topics=all` stats document, made one slice at a time.
pub(crate) struct Paged {
    part: Part,
    body: Vec<u8>,
    /// Items written in the current list (a comma goes before every later one).
    written: usize,
}

impl Paged {
    fn new(_edge: &Edge) -> Paged {
        Paged {
            part: Part::Head,
            body: Vec::new(),
            written: 0,
        }
    }

    /// The response head: chunked, closed after.
    pub(crate) fn head(&self) -> Vec<u8> {
        answer::chunked_head(
            "application/json",
            &[("Cache-Control", "no-store".to_string())],
        )
    }

    /// Appends the next slice to `out` as a chunk; `false` once the document is done.
    pub(crate) fn next(&mut self, edge: &Edge, out: &mut Vec<u8>) -> bool {
        let engine = edge.shared.engine.borrow();
        self.body.clear();
        let written = &mut self.written;
        let mut list = |body: &mut Vec<u8>, v: Value| {
            if *written > 0 {
                body.push(b',');
            }
            *written += 1;
            body.extend_from_slice(v.to_string().as_bytes());
        };
        self.part = match std::mem::replace(&mut self.part, Part::Done) {
            Part::Head => {
                let head: Map<String, Value> =
                    render::stats_head(&summary(edge, &engine), &edge.info);
                let text = Value::Object(head).to_string();
                // The head's object, left open for the lists: without its last `}`.
                let open = text.strip_suffix('}').unwrap_or(&text);
                self.body.extend_from_slice(open.as_bytes());
                self.body.extend_from_slice(b",\"topics\":[");
                Part::Topics(0)
            }
            Part::Topics(from) => {
                let to = (from + SLICE).min(engine.topic_count());
                for i in from..to {
                    if let Some(t) = engine.topic_info_at(i) {
                        list(&mut self.body, render::topic(&t));
                    }
                }
                if to < engine.topic_count() {
                    Part::Topics(to)
                } else {
                    self.body.extend_from_slice(b"],\"connections\":[");
                    self.written = 0;
                    Part::Conns(engine.conn_ids(), 0)
                }
            }
            Part::Conns(ids, from) => {
                let to = (from + SLICE).min(ids.len());
                for id in &ids[from..to] {
                    if let Some(c) = engine.conn_info(*id) {
                        list(&mut self.body, render::connection(&c));
                    }
                }
                if to < ids.len() {
                    Part::Conns(ids, to)
                } else {
                    self.body.extend_from_slice(b"],\"groups\":[");
                    self.written = 0;
                    Part::Groups(engine.group_keys(), 0)
                }
            }
            Part::Groups(keys, from) => {
                let to = (from + SLICE).min(keys.len());
                for k in &keys[from..to] {
                    if let Some(g) = engine.group_info(*k) {
                        list(&mut self.body, render::group(&g));
                    }
                }
                if to < keys.len() {
                    Part::Groups(keys, to)
                } else {
                    self.body.extend_from_slice(b"]}");
                    Part::Done
                }
            }
            Part::Done => return false,
        };
        answer::chunk(out, &self.body);
        true
    }
}
