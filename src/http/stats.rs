//! `/api/stats` and `/metrics`, cheap whatever the broker holds: by default the busiest
//! topics, connections and groups (`stats_topics` of each) with the totals, in one pass
//! over the engine; `?topics=all` lists every one, written in slices so the executor is
//! never held for long.

use super::Edge;
use super::answer::{self, Answer, Body, HttpError};
use super::parse::Query;
use super::render::{self, Summary};
use super::routes::{Document, Outcome};
use crate::engine::{ConnId, Engine};

/// Topics, connections or groups rendered per slice of a `?topics=all` document.
const SLICE: usize = 200;

/// What the stats document and the metrics share.
fn summary(edge: &Edge, engine: &Engine) -> Summary {
    let counts = edge.counts.borrow();
    let time_ms = edge.shared.wall_ms();
    let history = engine.rate_history().clone();
    let history_end_ms = history.end_ms().map_or(time_ms, |end| {
        time_ms.saturating_sub(edge.shared.mono_ms().saturating_sub(end))
    });
    Summary {
        stats: engine.stats().clone(),
        limits: engine.limits().clone(),
        memory_used: engine.memory_used(),
        stored: engine.stored_messages(),
        partial_bytes: edge.shared.partial_bytes(),
        uptime: edge.shared.uptime(),
        rates: engine.rates(),
        history,
        history_end_ms,
        tokens: edge.shared.auth_now().len(),
        time_ms,
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
        pending_requests: engine.pending_requests(),
        tx: engine.tx_stats(),
        store: engine.log().map(|l| render::StoreSummary {
            sync: l.sync_policy(),
            stats: l.stats(),
            disk_budget: l.disk_budget(),
            failure: l.failure().map(|f| match f {
                crate::store::Failure::Full(m) | crate::store::Failure::Failed(m) => m.clone(),
            }),
        }),
    }
}

/// `GET /api/stats[?topics=all]`.
pub(crate) fn stats(edge: &Edge, q: &Query) -> Result<Outcome, HttpError> {
    match q.get("topics") {
        None | Some("busiest") => {}
        Some("all") => return Ok(Outcome::Document(Box::new(Paged::new(edge)))),
        Some(other) => {
            return Err(HttpError::new(
                400,
                "bad_request",
                format!("topics={other:?}: expected all (or busiest, the default)"),
            ));
        }
    }
    let mut engine = edge.shared.engine.borrow_mut();
    let n = edge.cfg.stats_topics;
    let mut out = render::stats_open(&summary(edge, &engine), &edge.info);
    let mut written = 0;
    out.extend_from_slice(b",\"topics\":[");
    let busiest = engine.busiest_topics(n);
    let with_data = engine.log().is_some();
    render::push_items(
        &mut out,
        &mut written,
        busiest.iter().map(|t| {
            let s = with_data.then(|| render::settings(&engine.topic_settings(&t.name)));
            render::topic_with(t, s)
        }),
    );
    written = 0;
    out.extend_from_slice(b"],\"connections\":[");
    let conns = engine.busiest_conns(n, None);
    render::push_items(&mut out, &mut written, conns.iter().map(render::connection));
    let mut groups = engine.group_infos();
    crate::sort::sort_by(&mut groups, |a, b| {
        b.counters
            .delivered
            .cmp(&a.counters.delivered)
            .then(a.name.cmp(&b.name))
    });
    groups.truncate(n);
    written = 0;
    out.extend_from_slice(b"],\"groups\":[");
    render::push_items(&mut out, &mut written, groups.iter().map(render::group));
    out.extend_from_slice(b"]}");
    Ok(Outcome::Answer(
        Answer::new(200, "application/json", Body::Owned(out))
            .with_header("Cache-Control", "no-store"),
    ))
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
            rest.schema_refused -= t.schema_refused;
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
}

impl Document for Paged {
    fn head(&self) -> Vec<u8> {
        answer::chunked_head(
            "application/json",
            &[("Cache-Control", "no-store".to_string())],
        )
    }

    fn next(&mut self, edge: &Edge, out: &mut Vec<u8>) -> bool {
        let engine = edge.shared.engine.borrow();
        self.body.clear();
        let body = &mut self.body;
        let written = &mut self.written;
        self.part = match std::mem::replace(&mut self.part, Part::Done) {
            Part::Head => {
                body.extend_from_slice(&render::stats_open(&summary(edge, &engine), &edge.info));
                body.extend_from_slice(b",\"topics\":[");
                Part::Topics(0)
            }
            Part::Topics(from) => {
                let to = (from + SLICE).min(engine.topic_slots());
                let topics: Vec<_> = (from..to).filter_map(|i| engine.topic_info_at(i)).collect();
                let with_data = engine.log().is_some();
                render::push_items(
                    body,
                    written,
                    topics.iter().map(|t| {
                        let s =
                            with_data.then(|| render::settings(&engine.topic_settings(&t.name)));
                        render::topic_with(t, s)
                    }),
                );
                if to < engine.topic_slots() {
                    Part::Topics(to)
                } else {
                    body.extend_from_slice(b"],\"connections\":[");
                    *written = 0;
                    Part::Conns(engine.conn_ids(), 0)
                }
            }
            Part::Conns(ids, from) => {
                let to = (from + SLICE).min(ids.len());
                let conns: Vec<_> = ids[from..to]
                    .iter()
                    .filter_map(|id| engine.conn_info(*id))
                    .collect();
                render::push_items(body, written, conns.iter().map(render::connection));
                if to < ids.len() {
                    Part::Conns(ids, to)
                } else {
                    body.extend_from_slice(b"],\"groups\":[");
                    *written = 0;
                    Part::Groups(engine.group_keys(), 0)
                }
            }
            Part::Groups(keys, from) => {
                let to = (from + SLICE).min(keys.len());
                let groups: Vec<_> = keys[from..to]
                    .iter()
                    .filter_map(|k| engine.group_info(*k))
                    .collect();
                render::push_items(body, written, groups.iter().map(render::group));
                if to < keys.len() {
                    Part::Groups(keys, to)
                } else {
                    body.extend_from_slice(b"]}");
                    Part::Done
                }
            }
            Part::Done => return false,
        };
        answer::chunk(out, &self.body);
        true
    }
}
