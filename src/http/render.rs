//! What the HTTP edge writes: message JSON, stream lines (NDJSON, SSE, raw), the stats
//! document and the Prometheus text. Pure functions of their inputs.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::engine::{
    AdminOp, ConnInfo, GroupInfo, RateHistory, Rates, Stats, StoredMessage, TopicInfo,
};
use crate::limits::Limits;

/// A byte string as JSON: text if it is UTF-8, else base64 (the caller marks which).
fn bytes(b: &[u8]) -> (Value, bool) {
    match std::str::from_utf8(b) {
        Ok(s) => (Value::from(s), false),
        Err(_) => (
            Value::from(base64::engine::general_purpose::STANDARD.encode(b)),
            true,
        ),
    }
}

/// One message as a JSON object: `topic`, `offset`, `time`, `payload` (with
/// `"encoding":"base64"` when binary) and `key` (with `"key_encoding"`) if any.
pub(crate) fn message(
    topic: &str,
    offset: u64,
    time_ms: u64,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Value {
    let mut o = Map::new();
    o.insert("topic".into(), topic.into());
    o.insert("offset".into(), offset.into());
    o.insert("time".into(), time_ms.into());
    if let Some(k) = key {
        let (v, b64) = bytes(k);
        o.insert("key".into(), v);
        if b64 {
            o.insert("key_encoding".into(), "base64".into());
        }
    }
    let (v, b64) = bytes(payload);
    o.insert("payload".into(), v);
    if b64 {
        o.insert("encoding".into(), "base64".into());
    }
    Value::Object(o)
}

/// A read of stored messages.
pub(crate) fn stored(topic: &str, first: u64, next: u64, messages: &[StoredMessage]) -> Value {
    json!({
        "topic": topic,
        "first": first,
        "next": next,
        "messages": messages
            .iter()
            .map(|m| message(topic, m.offset, m.time_ms, m.key.as_deref(), &m.payload))
            .collect::<Vec<_>>(),
    })
}

/// One event of an HTTP stream, borrowed from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    Message {
        topic: &'a str,
        offset: u64,
        time_ms: u64,
        key: Option<&'a [u8]>,
        payload: &'a [u8],
        /// For a consumer group: the stream's number, the delivery's tag (the ack id is
        /// `<stream>.<tag>`) and the delivery attempt.
        ack: Option<(u64, u64, u32)>,
    },
    Lag {
        topic: &'a str,
        missed: u64,
        next: u64,
    },
    /// The topic was removed with `unread` messages the stream had not got.
    Removed {
        topic: &'a str,
        unread: u64,
        next: u64,
    },
    /// The broker is shutting down.
    End,
    /// The stream's consumer group was deleted: the stream ends.
    GroupGone { group: &'a str },
}

/// How a stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One JSON object per line.
    Json,
    /// Server-sent events.
    Sse,
    /// Payloads only, one per line.
    Raw,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/x-ndjson",
            Format::Sse => "text/event-stream",
            Format::Raw => "text/plain; charset=utf-8",
        }
    }

    /// Appends `ev` to `out` in this format.
    pub(crate) fn event(self, ev: &Event<'_>, out: &mut Vec<u8>) {
        match (self, ev) {
            (Format::Raw, Event::Message { payload, .. }) => {
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            // Raw streams carry payloads only; lag goes to the JSON and SSE forms.
            (Format::Raw, _) => {}
            (
                _,
                Event::Message {
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                    ack,
                },
            ) => {
                let mut v = message(topic, *offset, *time_ms, *key, payload);
                if let (Some((stream, tag, attempt)), Some(o)) = (ack, v.as_object_mut()) {
                    o.insert("ack".into(), format!("{stream}.{tag}").into());
                    o.insert("attempt".into(), (*attempt).into());
                }
                self.line(out, "message", &v);
            }
            (
                _,
                Event::Lag {
                    topic,
                    missed,
                    next,
                },
            ) => {
                let v = json!({"event": "lag", "topic": topic, "missed": missed, "next": next});
                self.line(out, "lag", &v);
            }
            (
                _,
                Event::Removed {
                    topic,
                    unread,
                    next,
                },
            ) => {
                let v = json!({"event": "removed", "topic": topic, "unread": unread, "next": next});
                self.line(out, "removed", &v);
            }
            (_, Event::End) => {
                let v = json!({"event": "end", "reason": "the broker is shutting down"});
                self.line(out, "end", &v);
            }
            (_, Event::GroupGone { group }) => {
                let reason = format!("group {} was deleted", mote_sdk::topic::shown(group));
                let v = json!({"event": "end", "reason": reason});
                self.line(out, "end", &v);
            }
        }
    }

    fn line(self, out: &mut Vec<u8>, event: &str, v: &Value) {
        if self == Format::Sse {
            out.extend_from_slice(format!("event: {event}\ndata: {v}\n\n").as_bytes());
        } else {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
    }

    /// Appends a keepalive: a line readers can ignore.
    pub(crate) fn keepalive(self, time_ms: u64, out: &mut Vec<u8>) {
        match self {
            Format::Sse => out.extend_from_slice(b": keepalive\n\n"),
            Format::Json => {
                out.extend_from_slice(
                    json!({"event": "keepalive", "time": time_ms})
                        .to_string()
                        .as_bytes(),
                );
                out.push(b'\n');
            }
            // An empty line: nothing else fits a payload-only stream.
            Format::Raw => out.push(b'\n'),
        }
    }
}

/// The broker's own RSS in bytes, from /proc.
pub(crate) fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Addresses and version for the stats document.
#[derive(Debug, Clone)]
pub(crate) struct Info {
    pub(crate) version: &'static str,
    pub(crate) tcp: String,
    pub(crate) http: String,
}

/// Everything `/api/stats` and `/metrics` show besides the lists of topics,
/// connections and groups.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) stats: Stats,
    pub(crate) limits: Limits,
    pub(crate) memory_used: usize,
    pub(crate) stored: usize,
    pub(crate) partial_bytes: usize,
    pub(crate) uptime: std::time::Duration,
    pub(crate) rates: Rates,
    /// The last minute's rates, a point a second.
    pub(crate) history: RateHistory,
    /// When its newest point ended, in `time_ms`'s clock (`time_ms` without one).
    pub(crate) history_end_ms: u64,
    pub(crate) tokens: usize,
    pub(crate) time_ms: u64,
    pub(crate) topics: usize,
    pub(crate) tcp_connections: usize,
    pub(crate) http_streams: usize,
    pub(crate) groups: usize,
    pub(crate) rss: u64,
    pub(crate) http: HttpTotals,
    pub(crate) log_dropped: u64,
    /// The data directory's figures, with `--data`.
    pub(crate) store: Option<StoreSummary>,
    /// Requests waiting for a reply.
    pub(crate) pending_requests: usize,
    /// Transactional publishes.
    pub(crate) tx: crate::engine::TxStats,
}

/// What `/api/stats` and `/metrics` show of the store.
#[derive(Debug, Clone)]
pub(crate) struct StoreSummary {
    pub(crate) sync: String,
    pub(crate) stats: crate::store::LogStats,
    pub(crate) disk_budget: u64,
    pub(crate) failure: Option<String>,
}

/// The edge's own counts: requests, connections refused, and error answers by code.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpTotals {
    pub(crate) requests: u64,
    pub(crate) refused: u64,
    pub(crate) connections: usize,
    pub(crate) errors: Vec<(&'static str, u64)>,
}

/// One topic of the stats document, written straight from its snapshot.
#[derive(serde::Serialize)]
pub(crate) struct TopicJson<'a> {
    name: &'a str,
    first: u64,
    next: u64,
    stored: usize,
    bytes: usize,
    published: u64,
    delivered: u64,
    lag_missed: u64,
    evicted: u64,
    subscribers: usize,
    publish_per_s: f64,
    deliver_per_s: f64,
    /// Payloads refused by its JSON schema.
    schema_refused: u64,
    /// Its settings, each with the `[topics]` pattern it came from (with `--data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<Value>,
    /// Its metadata (`mote topic meta`), when it has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<Value>,
}

/// A topic's settings with where each came from: `{"persist": {"value": true, "from":
/// "sensors/#"}, ...}` (`from` is null for the broker's default).
pub(crate) fn settings(r: &crate::engine::settings::Resolved) -> Value {
    let from = |s: &crate::engine::settings::Source| s.pattern().map(str::to_string);
    json!({
        "persist": {"value": r.persist.value, "from": from(&r.persist.source)},
        "retain_messages": {"value": r.retain_messages.value, "from": from(&r.retain_messages.source)},
        "retain_bytes": {"value": r.retain_bytes.value, "from": from(&r.retain_bytes.source)},
        "max_age_ms": {"value": r.max_age_ms.value, "from": from(&r.max_age_ms.source)},
        "discard": {"value": r.discard.value.as_str(), "from": from(&r.discard.source)},
    })
}

pub(crate) fn topic(t: &TopicInfo) -> TopicJson<'_> {
    TopicJson {
        name: &t.name,
        first: t.first,
        next: t.next,
        stored: t.stored,
        bytes: t.bytes,
        published: t.published,
        delivered: t.delivered,
        lag_missed: t.lag_missed,
        evicted: t.evicted,
        subscribers: t.subscribers,
        publish_per_s: round(t.publish_per_s),
        deliver_per_s: round(t.deliver_per_s),
        schema_refused: t.schema_refused,
        settings: None,
        meta: (!t.meta.is_empty()).then(|| {
            Value::Object(
                t.meta
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        }),
    }
}

/// A topic with its settings and their sources.
pub(crate) fn topic_with(t: &TopicInfo, settings_of: Option<Value>) -> TopicJson<'_> {
    TopicJson {
        settings: settings_of,
        ..topic(t)
    }
}

/// One connection of the stats document.
#[derive(serde::Serialize)]
pub(crate) struct ConnJson<'a> {
    id: usize,
    kind: &'static str,
    peer: Option<String>,
    client: &'a str,
    token: Option<&'a str>,
    subscriptions: &'a [String],
    msgs_in: u64,
    msgs_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    lag_missed: u64,
    pending: u64,
    msgs_per_s: f64,
}

pub(crate) fn connection(c: &ConnInfo) -> ConnJson<'_> {
    ConnJson {
        id: c.id.index(),
        kind: if c.http { "http" } else { "tcp" },
        peer: c.peer.map(|p| p.to_string()),
        client: &c.client,
        token: c.token.as_deref(),
        subscriptions: &c.subscriptions,
        msgs_in: c.msgs_in,
        msgs_out: c.msgs_out,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        lag_missed: c.lag_missed,
        pending: c.pending,
        msgs_per_s: round(c.msgs_per_s),
    }
}

pub(crate) fn group(g: &GroupInfo) -> Value {
    let c = &g.counters;
    let cursors: Map<String, Value> = g
        .cursors
        .iter()
        .map(|(t, n)| (t.clone(), (*n).into()))
        .collect();
    json!({
        "name": g.name, "filter": g.filter, "members": g.members,
        "in_flight": g.in_flight, "redeliveries_pending": g.redeliveries,
        "backlog": g.backlog, "cursors": cursors,
        "settings": {
            "ack_timeout_ms": g.settings.ack_timeout_ms,
            "max_deliveries": g.settings.max_deliveries,
            "prefetch": g.settings.prefetch, "durable": g.settings.durable,
        },
        "delivered": c.delivered, "acked": c.acked, "redelivered": c.redelivered,
        "dead_lettered": c.dead_lettered, "lag_missed": c.lag_missed,
    })
}

/// Appends `items` to `out` as a JSON array's elements (after `written` earlier ones).
pub(crate) fn push_items<T: serde::Serialize>(
    out: &mut Vec<u8>,
    written: &mut usize,
    items: impl IntoIterator<Item = T>,
) {
    for item in items {
        if *written > 0 {
            out.push(b',');
        }
        *written += 1;
        // Serializing plain structs and maps into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &item);
    }
}

/// The stats document's head as JSON, left open (without its last `}`) for the lists.
pub(crate) fn stats_open(s: &Summary, info: &Info) -> Vec<u8> {
    let mut text = Value::Object(stats_head(s, info)).to_string().into_bytes();
    text.pop();
    text
}

/// The `/api/stats` document without its lists (`topics`, `connections`, `groups`),
/// which the caller adds: the busiest, or all of them in slices.
pub(crate) fn stats_head(s: &Summary, info: &Info) -> Map<String, Value> {
    let st = &s.stats;
    let errors: Map<String, Value> = st
        .error_counts()
        .map(|(code, n)| (code.name().to_string(), n.into()))
        .collect();
    let l = &s.limits;
    let connections = s.tcp_connections + s.http_streams;
    let v = json!({
        "broker": {
            "version": info.version, "uptime_s": round(s.uptime.as_secs_f64()), "rss_bytes": s.rss,
            "memory_used_bytes": s.memory_used, "memory_budget_bytes": l.memory,
            "partial_bytes": s.partial_bytes, "log_dropped": s.log_dropped,
            "stored_messages": s.stored, "topics": s.topics, "connections": connections,
            "tokens": s.tokens, "time_ms": s.time_ms, "tcp": info.tcp, "http": info.http,
        },
        "limits": {
            "max_connections": l.max_connections, "max_topics": l.max_topics,
            "max_subscriptions": l.max_subscriptions, "max_payload": l.max_payload,
            "ring_messages": l.ring_messages, "ring_bytes": l.ring_bytes, "memory": l.memory,
            "keepalive_ms": l.keepalive_ms, "max_pending": l.max_pending,
            "max_partial_bytes": l.max_partial_bytes,
        },
        "totals": {
            "published": st.published, "delivered": st.delivered,
            "bytes_published": st.bytes_published, "bytes_delivered": st.bytes_delivered,
            "publish_refused": st.publish_refused, "subscribe_refused": st.subscribe_refused,
            "lag_events": st.lag_events, "lag_missed": st.lag_missed,
            "evicted_ring": st.evicted_ring, "evicted_memory": st.evicted_memory,
            "connections_accepted": st.connections_accepted,
            "connections_refused": st.connections_refused,
            "connections_evicted": st.connections_evicted,
            "connections_closed": st.connections_closed, "auth_failures": st.auth_failures,
            "auth_blocked": st.auth_blocked, "records_rejected": st.records_rejected,
            "expired": st.expired, "evicted_disk": st.evicted_disk, "disk_reads": st.disk_reads,
            "schema_refused": st.schema_refused, "oversize_skipped": st.oversize_skipped,
            "errors": errors,
        },
        "rates": {
            "publish_per_s": round(s.rates.publish_per_s),
            "deliver_per_s": round(s.rates.deliver_per_s),
            "history": {
                "step_ms": 1000,
                "end_ms": s.history_end_ms,
                "publish_per_s": s.history.points().map(|p| round(p.0)).collect::<Vec<_>>(),
                "deliver_per_s": s.history.points().map(|p| round(p.1)).collect::<Vec<_>>(),
            },
        },
        "store": s.store.as_ref().map(|st| json!({
            "sync": st.sync, "disk_bytes": st.stats.disk_bytes, "disk_budget_bytes": st.disk_budget,
            "segments": st.stats.segments, "unsynced_bytes": st.stats.unsynced_bytes,
            "unsynced_age_ms": st.stats.unsynced_age_ms, "fsyncs": st.stats.fsyncs,
            "bytes_written": st.stats.bytes_written, "compactions": st.stats.compactions,
            "evicted_disk": st.stats.evicted_disk, "refused": st.stats.refused,
            "skipped_damaged": st.stats.skipped, "failure": st.failure,
        })),
        "requests": {
            "requests": st.requests, "no_responders": st.requests_no_responders,
            "timeouts": st.request_timeouts, "replies": st.replies,
            "replies_dropped": st.replies_dropped, "pending": s.pending_requests,
        },
        "transactions": {
            "prepared": s.tx.prepared, "committed": s.tx.committed,
            "rolled_back": s.tx.rolled_back, "checked": s.tx.checked,
            "timed_out": s.tx.timed_out, "refused": s.tx.refused,
            "pending": s.tx.pending, "pending_bytes": s.tx.pending_bytes,
            "max": l.max_transactions,
        },
        "topics_total": s.topics,
        "connections_total": connections,
        "groups_total": s.groups,
        "http": {
            "requests": s.http.requests,
            "connections": s.http.connections,
            "connections_refused": s.http.refused,
            "errors": s.http.errors.iter().map(|(c, n)| ((*c).to_string(), Value::from(*n))).collect::<Map<String, Value>>(),
        },
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Request/reply counters (protocol 4) for `/metrics`.
fn request_counters(st: &crate::engine::Stats) -> [(&'static str, &'static str, u64); 5] {
    [
        (
            "mote_requests_total",
            "Requests stored and waiting for a reply (protocol 4 and HTTP wait=reply).",
            st.requests,
        ),
        (
            "mote_requests_no_responders_total",
            "Requests refused at once because nothing was subscribed to their topic.",
            st.requests_no_responders,
        ),
        (
            "mote_request_timeouts_total",
            "Requests that got no reply within their timeout.",
            st.request_timeouts,
        ),
        (
            "mote_replies_total",
            "Replies handed to a waiting requester.",
            st.replies,
        ),
        (
            "mote_replies_dropped_total",
            "Replies dropped: their request was answered already, timed out, or its requester is gone.",
            st.replies_dropped,
        ),
    ]
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` document, Prometheus text format 0.0.4. Per-topic series are those of
/// `shown` (the most published topics), with `rest` (the sum of all the others) under
/// `topic="_other"`; groups likewise past `max_groups`: the number of series stays
/// bounded whatever clients do.
pub(crate) fn metrics(
    s: &Summary,
    shown: &[TopicInfo],
    rest: Option<&TopicInfo>,
    groups: &[GroupInfo],
    max_groups: usize,
) -> String {
    let st = &s.stats;
    let rss = s.rss;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "mote_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        &one(s.uptime.as_secs_f64()),
    );
    metric(
        "mote_rss_bytes",
        "gauge",
        "Resident memory of the broker process.",
        &one(rss as f64),
    );
    metric(
        "mote_memory_used_bytes",
        "gauge",
        "Bytes all rings hold, as counted against --memory.",
        &one(s.memory_used as f64),
    );
    metric(
        "mote_memory_budget_bytes",
        "gauge",
        "The --memory budget.",
        &one(s.limits.memory as f64),
    );
    metric(
        "mote_stored_messages",
        "gauge",
        "Messages all rings hold.",
        &one(s.stored as f64),
    );
    metric("mote_topics", "gauge", "Topics.", &one(s.topics as f64));
    metric(
        "mote_connections",
        "gauge",
        "Open connections by kind (HTTP streams are connections too).",
        &[
            ("{kind=\"tcp\"}".into(), s.tcp_connections as f64),
            ("{kind=\"http\"}".into(), s.http_streams as f64),
        ],
    );
    metric(
        "mote_http_connections",
        "gauge",
        "Open HTTP connections (streams and keep-alive ones).",
        &one(s.http.connections as f64),
    );
    if let Some(st) = &s.store {
        let gauges: [(&str, &str, u64); 5] = [
            (
                "mote_store_disk_bytes",
                "Bytes of the log's segments on disk.",
                st.stats.disk_bytes,
            ),
            (
                "mote_store_disk_budget_bytes",
                "The --disk budget.",
                st.disk_budget,
            ),
            (
                "mote_store_unsynced_bytes",
                "Bytes appended to the log and not synced to disk yet (lost to a power cut).",
                st.stats.unsynced_bytes,
            ),
            (
                "mote_store_unsynced_age_seconds",
                "Age of the oldest byte not synced yet, in seconds.",
                st.stats.unsynced_age_ms,
            ),
            (
                "mote_store_failed",
                "1 while writing to the data directory fails (publishes to persisted topics are refused).",
                u64::from(st.failure.is_some()),
            ),
        ];
        for (name, help, v) in gauges {
            let v = if name == "mote_store_unsynced_age_seconds" {
                v as f64 / 1000.0
            } else {
                v as f64
            };
            metric(name, "gauge", help, &one(v));
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "mote_store_fsyncs_total",
                "Syncs of the log to disk.",
                st.stats.fsyncs,
            ),
            (
                "mote_store_written_bytes_total",
                "Bytes written to the log.",
                st.stats.bytes_written,
            ),
            (
                "mote_store_compactions_total",
                "Segments compacted (their live records copied forward, the segment deleted).",
                st.stats.compactions,
            ),
            (
                "mote_store_refused_total",
                "Publishes refused because the store could not take them (storage full or failed).",
                st.stats.refused,
            ),
            (
                "mote_store_skipped_damaged_total",
                "Damaged regions of the log skipped (at recovery and in reads).",
                st.stats.skipped,
            ),
        ];
        for (name, help, v) in counters {
            metric(name, "counter", help, &one(v as f64));
        }
    }
    metric(
        "mote_partial_bytes",
        "gauge",
        "Bytes held for frames and HTTP requests still arriving (capped by --max-partial).",
        &one(s.partial_bytes as f64),
    );
    let counters: [(&str, &str, u64); 25] = [
        ("mote_published_total", "Messages stored.", st.published),
        (
            "mote_published_bytes_total",
            "Payload bytes stored.",
            st.bytes_published,
        ),
        (
            "mote_delivered_total",
            "Messages handed to subscribers.",
            st.delivered,
        ),
        (
            "mote_delivered_bytes_total",
            "Payload bytes handed to subscribers.",
            st.bytes_delivered,
        ),
        (
            "mote_publish_refused_total",
            "Publishes refused.",
            st.publish_refused,
        ),
        (
            "mote_subscribe_refused_total",
            "Subscribes refused.",
            st.subscribe_refused,
        ),
        (
            "mote_schema_refused_total",
            "Publishes refused because the payload did not match the topic's JSON schema (or was not JSON).",
            st.schema_refused,
        ),
        (
            "mote_lag_events_total",
            "Times a subscriber fell behind a ring and skipped ahead.",
            st.lag_events,
        ),
        (
            "mote_lag_missed_total",
            "Messages subscribers skipped after falling behind.",
            st.lag_missed,
        ),
        (
            "mote_connections_accepted_total",
            "Connections accepted.",
            st.connections_accepted,
        ),
        (
            "mote_connections_refused_total",
            "TCP connections refused at --max-connections, --max-pending or --max-pending-per-address.",
            st.connections_refused,
        ),
        (
            "mote_connections_evicted_total",
            "Connections closed in their handshake to make room for new ones (--max-pending).",
            st.connections_evicted,
        ),
        (
            "mote_http_connections_refused_total",
            "HTTP connections refused at --http-max-connections.",
            s.http.refused,
        ),
        (
            "mote_log_dropped_total",
            "Log lines dropped because stderr was not being read fast enough.",
            s.log_dropped,
        ),
        (
            "mote_auth_failures_total",
            "Failed token handshakes and bad HTTP tokens.",
            st.auth_failures,
        ),
        (
            "mote_auth_blocked_total",
            "Connections refused by the per-address backoff.",
            st.auth_blocked,
        ),
        (
            "mote_expired_total",
            "Messages dropped by a topic's retention on disk (count, bytes or age).",
            st.expired,
        ),
        (
            "mote_evicted_disk_total",
            "Messages dropped to keep the disk within --disk (the oldest first).",
            st.evicted_disk,
        ),
        (
            "mote_disk_reads_total",
            "Reads of messages back from disk for subscribers behind the memory rings.",
            st.disk_reads,
        ),
        (
            "mote_oversize_skipped_total",
            "Stored messages too large for the frame limit (stored under a larger --max-payload): skipped for every reader, told as lag.",
            st.oversize_skipped,
        ),
        (
            "mote_records_rejected_total",
            "Encrypted records that failed to open.",
            st.records_rejected,
        ),
        (
            "mote_topics_expired_total",
            "Topics removed after their idle-expiry with nothing stored, no subscriber and no group.",
            st.topics_expired,
        ),
        (
            "mote_groups_expired_total",
            "Durable groups removed after their group-expiry without members.",
            st.groups_expired,
        ),
        (
            "mote_dead_letters_held_total",
            "Dead letters kept by their group because the dead-letter topic could not be created (--max-topics); retried, never dropped.",
            st.dead_letters_held,
        ),
        (
            "mote_channel_presence_total",
            "Presence messages the broker published for peer channels ($chan/NAME/ROLE/reader).",
            st.channel_presence,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, &one(v as f64));
    }
    for (name, help, v) in request_counters(st) {
        metric(name, "counter", help, &one(v as f64));
    }
    metric(
        "mote_requests_pending",
        "gauge",
        "Requests waiting for a reply.",
        &one(s.pending_requests as f64),
    );
    let tx = &s.tx;
    let tx_counters: [(&str, &str, u64); 6] = [
        (
            "mote_tx_prepared_total",
            "Transactional publishes prepared.",
            tx.prepared,
        ),
        (
            "mote_tx_committed_total",
            "Transactions committed (by a producer or --tx-default commit).",
            tx.committed,
        ),
        (
            "mote_tx_rolled_back_total",
            "Transactions rolled back (by a producer or --tx-default rollback).",
            tx.rolled_back,
        ),
        (
            "mote_tx_checked_total",
            "Checks sent to producers of undecided transactions.",
            tx.checked,
        ),
        (
            "mote_tx_timed_out_total",
            "Transactions nobody settled in time, settled by --tx-default.",
            tx.timed_out,
        ),
        (
            "mote_tx_refused_total",
            "Prepares refused at --max-transactions or --max-transaction-bytes.",
            tx.refused,
        ),
    ];
    for (name, help, v) in tx_counters {
        metric(name, "counter", help, &one(v as f64));
    }
    metric(
        "mote_tx_pending",
        "gauge",
        "Transactions prepared and not yet committed or rolled back.",
        &one(tx.pending as f64),
    );
    metric(
        "mote_evicted_total",
        "counter",
        "Messages dropped from full rings or to keep within --memory.",
        &[
            ("{reason=\"ring\"}".into(), st.evicted_ring as f64),
            ("{reason=\"memory\"}".into(), st.evicted_memory as f64),
        ],
    );
    let admin_ops: Vec<(String, f64)> = AdminOp::ALL
        .iter()
        .zip(st.admin_ops)
        .map(|(op, n)| (format!("{{op=\"{}\"}}", op.name()), n as f64))
        .collect();
    metric(
        "mote_admin_ops_total",
        "counter",
        "Management operations done (purge, delete_topic, meta, seek, delete_group), over TCP and HTTP.",
        &admin_ops,
    );
    let errors: Vec<(String, f64)> = st
        .error_counts()
        .map(|(c, n)| (format!("{{code=\"{}\"}}", c.name()), n as f64))
        .collect();
    metric(
        "mote_http_requests_total",
        "counter",
        "HTTP requests received.",
        &one(s.http.requests as f64),
    );
    let http_errors: Vec<(String, f64)> = s
        .http
        .errors
        .iter()
        .map(|(c, n)| (format!("{{code=\"{c}\"}}"), *n as f64))
        .collect();
    metric(
        "mote_http_errors_total",
        "counter",
        "HTTP error answers by code.",
        &http_errors,
    );
    metric(
        "mote_errors_total",
        "counter",
        "Error frames sent, by code.",
        &errors,
    );

    // Per topic, bounded: the most published topics, the rest as one series.
    type Pick = fn(&TopicInfo) -> u64;
    let per_topic: [(&str, &str, &str, Pick); 7] = [
        (
            "mote_topic_published_total",
            "counter",
            "Messages stored, per topic.",
            |t| t.published,
        ),
        (
            "mote_topic_delivered_total",
            "counter",
            "Deliveries, per topic.",
            |t| t.delivered,
        ),
        (
            "mote_topic_lag_missed_total",
            "counter",
            "Messages subscribers missed, per topic.",
            |t| t.lag_missed,
        ),
        (
            "mote_topic_evicted_total",
            "counter",
            "Messages evicted, per topic.",
            |t| t.evicted,
        ),
        (
            "mote_topic_schema_refused_total",
            "counter",
            "Payloads refused by the topic's JSON schema, per topic.",
            |t| t.schema_refused,
        ),
        (
            "mote_topic_stored_messages",
            "gauge",
            "Messages stored now, per topic.",
            |t| t.stored as u64,
        ),
        (
            "mote_topic_stored_bytes",
            "gauge",
            "Bytes stored now, per topic.",
            |t| t.bytes as u64,
        ),
    ];
    for (name, kind, help, pick) in per_topic {
        let mut samples: Vec<(String, f64)> = shown
            .iter()
            .map(|t| (format!("{{topic=\"{}\"}}", label(&t.name)), pick(t) as f64))
            .collect();
        if let Some(rest) = rest {
            samples.push(("{topic=\"_other\"}".into(), pick(rest) as f64));
        }
        metric(name, kind, help, &samples);
    }

    // Per consumer group, bounded like topics.
    let mut groups: Vec<&GroupInfo> = groups.iter().collect();
    crate::sort::sort_by(&mut groups, |a, b| {
        b.counters
            .delivered
            .cmp(&a.counters.delivered)
            .then(a.name.cmp(&b.name))
    });
    let (shown, rest) = groups.split_at(groups.len().min(max_groups));
    type PickGroup = fn(&GroupInfo) -> u64;
    let per_group: [(&str, &str, &str, PickGroup); 9] = [
        (
            "mote_group_members",
            "gauge",
            "Members connected, per group.",
            |g| g.members as u64,
        ),
        (
            "mote_group_in_flight",
            "gauge",
            "Messages handed to members and not acked yet, per group.",
            |g| g.in_flight as u64,
        ),
        (
            "mote_group_backlog",
            "gauge",
            "Messages stored and not handed out yet, per group.",
            |g| g.backlog,
        ),
        (
            "mote_group_delivered_total",
            "counter",
            "Deliveries to members (first ones and redeliveries), per group.",
            |g| g.counters.delivered,
        ),
        (
            "mote_group_acked_total",
            "counter",
            "Messages acked, per group.",
            |g| g.counters.acked,
        ),
        (
            "mote_group_redelivered_total",
            "counter",
            "Messages delivered again (nacked, timed out, member gone), per group.",
            |g| g.counters.redelivered,
        ),
        (
            "mote_group_dead_lettered_total",
            "counter",
            "Messages sent to $dead/<group>/<topic> after max deliveries, per group.",
            |g| g.counters.dead_lettered,
        ),
        (
            "mote_group_lag_missed_total",
            "counter",
            "Messages that left a ring before the group got them, per group.",
            |g| g.counters.lag_missed,
        ),
        (
            "mote_group_redeliveries_pending",
            "gauge",
            "Messages waiting to be delivered again, per group.",
            |g| g.redeliveries as u64,
        ),
    ];
    for (name, kind, help, pick) in per_group {
        let mut samples: Vec<(String, f64)> = shown
            .iter()
            .map(|g| (format!("{{group=\"{}\"}}", label(&g.name)), pick(g) as f64))
            .collect();
        if !rest.is_empty() {
            samples.push((
                "{group=\"_other\"}".into(),
                rest.iter().map(|g| pick(g)).sum::<u64>() as f64,
            ));
        }
        metric(name, kind, help, &samples);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn messages_are_text_or_marked_base64() {
        let v = message("a/b", 3, 5, Some(b"k"), b"21.5");
        assert_eq!(
            v.to_string(),
            r#"{"key":"k","offset":3,"payload":"21.5","time":5,"topic":"a/b"}"#
        );
        let v = message("a/b", 3, 5, Some(&[0xff]), &[0, 0xff]);
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["payload"], "AP8=");
        assert_eq!(v["key_encoding"], "base64");
    }

    #[test]
    fn a_group_stream_whose_group_was_deleted_ends_saying_so() {
        let mut out = Vec::new();
        Format::Json.event(&Event::GroupGone { group: "w" }, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"event\":\"end\",\"reason\":\"group \\\"w\\\" was deleted\"}\n"
        );
        let mut out = Vec::new();
        Format::Raw.event(&Event::GroupGone { group: "w" }, &mut out);
        assert!(out.is_empty(), "raw streams carry payloads only");
    }

    #[test]
    fn stream_formats() {
        let ev = Event::Message {
            topic: "t",
            offset: 1,
            time_ms: 2,
            key: None,
            payload: b"x",
            ack: None,
        };
        let mut out = Vec::new();
        Format::Json.event(&ev, &mut out);
        assert_eq!(
            out,
            b"{\"offset\":1,\"payload\":\"x\",\"time\":2,\"topic\":\"t\"}\n"
        );
        out.clear();
        Format::Sse.event(&ev, &mut out);
        assert!(out.starts_with(b"event: message\ndata: {") && out.ends_with(b"}\n\n"));
        out.clear();
        Format::Raw.event(&ev, &mut out);
        assert_eq!(out, b"x\n");
        out.clear();
        let lag = Event::Lag {
            topic: "t",
            missed: 5,
            next: 9,
        };
        Format::Raw.event(&lag, &mut out);
        assert!(out.is_empty());
        Format::Json.event(&lag, &mut out);
        assert_eq!(
            out,
            b"{\"event\":\"lag\",\"missed\":5,\"next\":9,\"topic\":\"t\"}\n"
        );
        out.clear();
        Format::Sse.keepalive(0, &mut out);
        assert_eq!(out, b": keepalive\n\n");
        out.clear();
        let group = Event::Message {
            topic: "t",
            offset: 1,
            time_ms: 2,
            key: None,
            payload: b"x",
            ack: Some((3, 7, 2)),
        };
        Format::Json.event(&group, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["ack"].as_str(), v["attempt"].as_u64()),
            (Some("3.7"), Some(2))
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
