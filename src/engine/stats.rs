//! Counters and snapshots: what the engine did, for logs, `/api/stats` and `/metrics`.

use std::net::SocketAddr;

use mote_sdk::ErrorCode;

use super::{ConnId, Engine};

/// Error codes are counted in a fixed table; codes at or above this share the last slot.
const CODE_SLOTS: usize = 32;

/// Broker-wide counters. Every refusal, drop and skip has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the cap.
    pub connections_refused: u64,
    /// Connections closed in their handshake to make room for new ones (`--max-pending`).
    pub connections_evicted: u64,
    /// Connections ended, for any reason.
    pub connections_closed: u64,
    /// Messages stored.
    pub published: u64,
    /// Payload bytes stored.
    pub bytes_published: u64,
    /// Publishes refused (bad topic, too large, topic limit).
    pub publish_refused: u64,
    /// Subscribes refused (bad filter, limits, duplicate id).
    pub subscribe_refused: u64,
    /// Messages handed to subscribers.
    pub delivered: u64,
    /// Payload bytes handed to subscribers.
    pub bytes_delivered: u64,
    /// Times a subscriber fell behind the ring and skipped ahead.
    pub lag_events: u64,
    /// Messages subscribers skipped that way.
    pub lag_missed: u64,
    /// Messages dropped because their ring was full (count or bytes).
    pub evicted_ring: u64,
    /// Messages dropped to keep all rings within the memory budget.
    pub evicted_memory: u64,
    /// Failed token handshakes (unknown token name, wrong proof, no token).
    pub auth_failures: u64,
    /// Connections refused because their address failed too often recently.
    pub auth_blocked: u64,
    /// Encrypted records that failed to open (each closed its connection).
    pub records_rejected: u64,
    /// Messages dropped by a topic's retention on disk (count, bytes, age).
    pub expired: u64,
    /// Messages dropped to keep the disk within its budget (`--disk`).
    pub evicted_disk: u64,
    /// Reads of messages back from disk, for cursors behind the memory rings.
    pub disk_reads: u64,
    /// Messages read back from disk that no frame within today's `max_frame` can carry
    /// (stored under a larger `--max-payload`): skipped for every reader, told as lag.
    pub oversize_skipped: u64,
    /// Management operations done, by kind (see [`AdminOp`]).
    pub admin_ops: [u64; AdminOp::COUNT],
    /// Topics removed after `idle-expiry` with nothing stored, no subscriber and no group.
    pub topics_expired: u64,
    /// Durable groups removed after `group-expiry` without members.
    pub groups_expired: u64,
    /// Dead letters kept by their group because the dead-letter topic could not be
    /// created (`--max-topics`): retried later, never dropped.
    pub dead_letters_held: u64,
    /// Publishes refused because their payload did not match their topic's JSON schema
    /// (or was not JSON).
    pub schema_refused: u64,
    /// Requests stored and waiting for a reply (protocol 4).
    pub requests: u64,
    /// Requests refused at once because nothing could answer them.
    pub requests_no_responders: u64,
    /// Requests that got no reply within their timeout.
    pub request_timeouts: u64,
    /// Replies handed to a waiting requester.
    pub replies: u64,
    /// Replies dropped: their request was answered already, timed out, or its requester
    /// is gone (or the inbox never existed).
    pub replies_dropped: u64,
    /// Presence messages the broker published for peer channels (`$chan/.../reader`).
    pub channel_presence: u64,
    errors: [u64; CODE_SLOTS],
}

/// A kind of management operation, counted in [`Stats::admin_ops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    /// `mote topic purge`.
    Purge,
    /// `mote topic delete`.
    DeleteTopic,
    /// `mote topic meta`.
    Meta,
    /// `mote group seek`.
    Seek,
    /// `mote group delete`.
    DeleteGroup,
}

impl AdminOp {
    /// How many kinds there are.
    pub const COUNT: usize = 5;
    /// Every kind, in counter order.
    pub const ALL: [AdminOp; AdminOp::COUNT] = [
        AdminOp::Purge,
        AdminOp::DeleteTopic,
        AdminOp::Meta,
        AdminOp::Seek,
        AdminOp::DeleteGroup,
    ];

    /// Its name in `/metrics` (`mote_admin_ops_total{op=...}`) and logs.
    pub fn name(self) -> &'static str {
        match self {
            AdminOp::Purge => "purge",
            AdminOp::DeleteTopic => "delete_topic",
            AdminOp::Meta => "meta",
            AdminOp::Seek => "seek",
            AdminOp::DeleteGroup => "delete_group",
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_accepted: 0,
            connections_refused: 0,
            connections_evicted: 0,
            connections_closed: 0,
            published: 0,
            bytes_published: 0,
            publish_refused: 0,
            subscribe_refused: 0,
            delivered: 0,
            bytes_delivered: 0,
            lag_events: 0,
            lag_missed: 0,
            evicted_ring: 0,
            evicted_memory: 0,
            auth_failures: 0,
            auth_blocked: 0,
            records_rejected: 0,
            expired: 0,
            evicted_disk: 0,
            disk_reads: 0,
            oversize_skipped: 0,
            admin_ops: [0; AdminOp::COUNT],
            topics_expired: 0,
            groups_expired: 0,
            dead_letters_held: 0,
            schema_refused: 0,
            requests: 0,
            requests_no_responders: 0,
            request_timeouts: 0,
            replies: 0,
            replies_dropped: 0,
            channel_presence: 0,
            errors: [0; CODE_SLOTS],
        }
    }
}

impl Stats {
    pub(crate) fn count_error(&mut self, code: ErrorCode) {
        let i = usize::from(code.0).min(CODE_SLOTS - 1);
        self.errors[i] += 1;
    }

    /// How many error frames (or closes) with `code` the broker produced.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors[usize::from(code.0).min(CODE_SLOTS - 1)]
    }

    /// Every code with a non-zero count.
    pub fn error_counts(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        self.errors
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (ErrorCode(i as u16), n))
    }
}

/// Broker-wide message rates over the last sampling period ([`Engine::sample_rates`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Messages stored per second.
    pub publish_per_s: f64,
    /// Messages handed to subscribers per second.
    pub deliver_per_s: f64,
    /// When the last sample was taken (monotonic ms), and the totals then.
    at_ms: Option<u64>,
    /// Samples taken.
    pub(super) samples: u64,
    published: u64,
    delivered: u64,
}

/// Seconds of broker-wide rates [`RateHistory`] keeps.
pub const HISTORY_SLOTS: usize = 60;

/// The broker-wide rates of the last [`HISTORY_SLOTS`] seconds, one point a second, for a
/// chart that has a past as soon as it opens. A fixed ring (480 bytes), filled from the
/// existing totals once a second by [`Engine::roll_rate_history`]: nothing per message.
/// Only broker-wide: per topic it would cost the same 480 bytes for every topic.
#[derive(Debug, Clone, PartialEq)]
pub struct RateHistory {
    publish: [f32; HISTORY_SLOTS],
    deliver: [f32; HISTORY_SLOTS],
    /// Points held (at most [`HISTORY_SLOTS`]), and where the next one goes.
    len: usize,
    head: usize,
    /// When the last point ended (monotonic ms), and the totals then: from the broker's
    /// start (0 ms, no messages), so the first second's messages are in the first point.
    at_ms: u64,
    published: u64,
    delivered: u64,
}

impl Default for RateHistory {
    fn default() -> Self {
        RateHistory {
            publish: [0.0; HISTORY_SLOTS],
            deliver: [0.0; HISTORY_SLOTS],
            len: 0,
            head: 0,
            at_ms: 0,
            published: 0,
            delivered: 0,
        }
    }
}

impl RateHistory {
    /// The points, oldest first: messages stored and delivered per second.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let start = (self.head + HISTORY_SLOTS - self.len) % HISTORY_SLOTS;
        (0..self.len).map(move |i| {
            let j = (start + i) % HISTORY_SLOTS;
            (f64::from(self.publish[j]), f64::from(self.deliver[j]))
        })
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no point was taken yet (the first second of the broker).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When the newest point ended (monotonic ms), if there is one.
    pub fn end_ms(&self) -> Option<u64> {
        (self.len > 0).then_some(self.at_ms)
    }
}

/// A snapshot of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Oldest offset still stored, in memory or on disk.
    pub first: u64,
    /// Offset the next message gets.
    pub next: u64,
    /// Messages stored now.
    pub stored: usize,
    /// Bytes stored now (as counted against the limits).
    pub bytes: usize,
    /// Messages ever published.
    pub published: u64,
    /// Deliveries ever made.
    pub delivered: u64,
    /// Messages subscribers skipped after falling behind.
    pub lag_missed: u64,
    /// Messages evicted (ring full or memory budget).
    pub evicted: u64,
    /// Cursors watching it.
    pub subscribers: usize,
    /// Messages stored per second over the last sampling period.
    pub publish_per_s: f64,
    /// Deliveries per second over the last sampling period.
    pub deliver_per_s: f64,
    /// Its metadata (`mote topic meta`), sorted by key; usually none.
    pub meta: Vec<(String, String)>,
    /// Payloads refused by its JSON schema.
    pub schema_refused: u64,
}

/// A snapshot of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnInfo {
    /// Its id.
    pub id: ConnId,
    /// Remote address.
    pub peer: Option<SocketAddr>,
    /// Name from its `Hello`.
    pub client: String,
    /// The token it proved, on a broker with tokens.
    pub token: Option<String>,
    /// An HTTP stream rather than a TCP connection.
    pub http: bool,
    /// Subscription filters it holds.
    pub subscriptions: Vec<String>,
    /// Messages it published.
    pub msgs_in: u64,
    /// Messages delivered to it.
    pub msgs_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Messages it missed by falling behind.
    pub lag_missed: u64,
    /// Messages stored but not yet delivered to it, over all its cursors.
    pub pending: u64,
    /// Messages in and out per second over the last sampling period.
    pub msgs_per_s: f64,
}

impl Engine {
    /// The broker-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes all rings hold, as counted against `--memory`.
    pub fn memory_used(&self) -> usize {
        self.used_bytes
    }

    /// Bytes of evicted messages' buffers kept for reuse (at most 256 KiB, freed when the
    /// broker goes quiet).
    pub fn recycled_bytes(&self) -> usize {
        self.pool.bytes()
    }

    /// Messages all rings hold.
    pub fn stored_messages(&self) -> usize {
        self.stored
    }

    /// Number of topics (the broker's own `$` topics included).
    pub fn topic_count(&self) -> usize {
        self.live_topics
    }

    /// Number of topics `--max-topics` counts: all but the broker's own `$` topics.
    pub fn user_topic_count(&self) -> usize {
        self.user_topics
    }

    /// One past the highest topic index: [`Engine::topic_info_at`] reads below it (a
    /// removed topic's index reads as `None`).
    pub fn topic_slots(&self) -> usize {
        self.topics.len()
    }

    /// A snapshot of every topic, in creation order.
    pub fn topic_infos(&self) -> Vec<TopicInfo> {
        (0..self.topics.len())
            .filter_map(|i| self.topic_info_at(i))
            .collect()
    }

    /// A snapshot of the topic at `index` (creation order, a removed topic's index
    /// taken by the next one created), if there is one: the HTTP edge reads long lists
    /// in slices by index.
    pub fn topic_info_at(&self, index: usize) -> Option<TopicInfo> {
        let t = self.topics.get(index).filter(|t| t.live)?;
        Some(TopicInfo {
            name: t.name.to_string(),
            first: t.disk_first.min(t.ring.first()),
            next: t.ring.next(),
            stored: t.ring.len(),
            bytes: t.ring.bytes(),
            published: t.published,
            delivered: t.delivered,
            lag_missed: t.lag_missed,
            evicted: t.evicted,
            subscribers: t.watchers.len(),
            publish_per_s: f64::from(t.rates.0),
            deliver_per_s: f64::from(t.rates.1),
            meta: t
                .meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            schema_refused: t.schema_refused,
        })
    }

    /// Every topic's counters summed (the `name` is empty; rates too are sums).
    pub fn topic_totals(&self) -> TopicInfo {
        let mut sum = TopicInfo {
            name: String::new(),
            first: 0,
            next: 0,
            stored: 0,
            bytes: 0,
            published: 0,
            delivered: 0,
            lag_missed: 0,
            evicted: 0,
            subscribers: 0,
            publish_per_s: 0.0,
            deliver_per_s: 0.0,
            meta: Vec::new(),
            schema_refused: 0,
        };
        for t in self.topics.iter().filter(|t| t.live) {
            sum.schema_refused += t.schema_refused;
            sum.stored += t.ring.len();
            sum.bytes += t.ring.bytes();
            sum.published += t.published;
            sum.delivered += t.delivered;
            sum.lag_missed += t.lag_missed;
            sum.evicted += t.evicted;
            sum.subscribers += t.watchers.len();
            sum.publish_per_s += f64::from(t.rates.0);
            sum.deliver_per_s += f64::from(t.rates.1);
        }
        sum
    }

    /// The `n` most published topics, most first (ties by name).
    pub fn most_published_topics(&self, n: usize) -> Vec<TopicInfo> {
        let mut keys: Vec<(u64, u32)> = self
            .topics
            .iter()
            .enumerate()
            .filter(|(_, t)| t.live)
            .map(|(i, t)| (t.published, i as u32))
            .collect();
        crate::sort::first_n_by(&mut keys, n, |a, b| {
            let (ta, tb) = (&self.topics[a.1 as usize], &self.topics[b.1 as usize]);
            b.0.cmp(&a.0).then(ta.name.cmp(&tb.name))
        });
        keys.into_iter()
            .filter_map(|(_, i)| self.topic_info_at(i as usize))
            .collect()
    }

    /// The `n` busiest topics (most messages in and out per second, then most
    /// published), busiest first. Costs one pass over the topics and a snapshot of
    /// `n` of them, however many there are.
    pub fn busiest_topics(&mut self, n: usize) -> Vec<TopicInfo> {
        // Ranked again only when the rates were sampled again or topics came: the rates
        // change no more often, and a ranking touches every topic.
        let stamp = (self.rates.samples, self.topics_changed as usize, n);
        let fresh = self
            .busiest
            .as_ref()
            .is_some_and(|(s, len, k, _)| (*s, *len, *k) == stamp);
        if !fresh {
            // Keys first, in one array: the selection then compares without chasing
            // topics.
            let mut keys: Vec<(f32, u64, u32)> = self
                .topics
                .iter()
                .enumerate()
                .filter(|(_, t)| t.live)
                .map(|(i, t)| (t.rates.0 + t.rates.1, t.published + t.delivered, i as u32))
                .collect();
            crate::sort::first_n_by(&mut keys, n, |a, b| {
                b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2))
            });
            let order = keys.into_iter().map(|(_, _, i)| i).collect();
            self.busiest = Some((stamp.0, stamp.1, stamp.2, order));
        }
        let Some((_, _, _, order)) = &self.busiest else {
            return Vec::new();
        };
        order
            .iter()
            .filter_map(|&i| self.topic_info_at(i as usize))
            .collect()
    }

    /// A snapshot of every connection.
    pub fn conn_infos(&self) -> Vec<ConnInfo> {
        self.conns
            .iter()
            .map(|(k, _)| self.conn_info(ConnId(k as u32)))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    }

    /// The `n` busiest connections (most messages per second, then most in all),
    /// busiest first, leaving out `skip` (the HTTP edge's own publisher).
    pub fn busiest_conns(&self, n: usize, skip: Option<ConnId>) -> Vec<ConnInfo> {
        let mut keys: Vec<(f32, u64, u32)> = self
            .conns
            .iter()
            .filter(|&(k, _)| Some(ConnId(k as u32)) != skip)
            .map(|(k, c)| (c.msgs_per_s, c.msgs_in + c.msgs_out, k as u32))
            .collect();
        crate::sort::first_n_by(&mut keys, n, |a, b| {
            b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2))
        });
        keys.into_iter()
            .filter_map(|(_, _, k)| self.conn_info(ConnId(k)))
            .collect()
    }

    /// The ids of every connection now, for reading their snapshots in slices.
    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.iter().map(|(k, _)| ConnId(k as u32)).collect()
    }

    /// A snapshot of one connection.
    pub fn conn_info(&self, id: ConnId) -> Option<ConnInfo> {
        let c = self.conns.get(id.index())?;
        let mut pending = 0;
        let mut subscriptions = Vec::new();
        for s in &c.subs {
            let s = &self.subs[s.0 as usize];
            if let Some(m) = &s.member {
                // A group member: what the group assigned it and it was not sent yet.
                subscriptions.push(format!("{} (group {})", s.filter, self.group_name(m.group)));
                pending += m.unsent() as u64;
                continue;
            }
            subscriptions.push(s.filter.to_string());
            for ck in &s.cursors {
                let cur = &self.cursors[ck.0 as usize];
                let next = self.topics[cur.topic.0 as usize].ring.next();
                pending += next.saturating_sub(cur.next);
            }
        }
        Some(ConnInfo {
            id,
            peer: c.peer,
            client: c.client.to_string(),
            token: c.token.as_deref().map(str::to_string),
            http: c.http,
            subscriptions,
            msgs_in: c.msgs_in,
            msgs_out: c.msgs_out,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            lag_missed: c.lag_missed,
            pending,
            msgs_per_s: f64::from(c.msgs_per_s),
        })
    }

    /// Broker-wide rates over the last sampling period.
    pub fn rates(&self) -> Rates {
        self.rates
    }

    /// The broker-wide rates of the last minute, a point a second.
    pub fn rate_history(&self) -> &RateHistory {
        &self.history
    }

    /// Adds a point to the rate history once at least a second passed since the last one
    /// (or since the broker started): called on every sweep with monotonic `now_ms`.
    /// Reads the broker-wide totals, so it costs the same however busy the broker is; a
    /// late sweep makes one longer point, its rate still per second.
    pub fn roll_rate_history(&mut self, now_ms: u64) {
        let (p, d) = (self.stats.published, self.stats.delivered);
        let h = &mut self.history;
        let ms = now_ms.saturating_sub(h.at_ms);
        // A sweep a few ms early still rolls: the rate is per the time that passed.
        if ms < 950 {
            return;
        }
        let secs = ms as f64 / 1000.0;
        h.publish[h.head] = (p.saturating_sub(h.published) as f64 / secs) as f32;
        h.deliver[h.head] = (d.saturating_sub(h.delivered) as f64 / secs) as f32;
        h.head = (h.head + 1) % HISTORY_SLOTS;
        h.len = (h.len + 1).min(HISTORY_SLOTS);
        (h.published, h.delivered, h.at_ms) = (p, d, now_ms);
    }

    /// Turns the counters since the last call into per-second rates, for the broker,
    /// every topic and every connection, in place (no allocation): called every few
    /// seconds with monotonic `now_ms`.
    pub fn sample_rates(&mut self, now_ms: u64) {
        let secs = self
            .rates
            .at_ms
            .map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0);
        let rate = |now: u64, then: u64| {
            if secs > 0.0 {
                (now.saturating_sub(then) as f64 / secs) as f32
            } else {
                0.0
            }
        };
        for t in &mut self.topics {
            t.rates = (
                rate(t.published, t.sampled.0),
                rate(t.delivered, t.sampled.1),
            );
            t.sampled = (t.published, t.delivered);
        }
        for (_, c) in &mut self.conns {
            let msgs = c.msgs_in + c.msgs_out;
            c.msgs_per_s = rate(msgs, c.sampled_msgs);
            c.sampled_msgs = msgs;
        }
        let r = &mut self.rates;
        let (p, d) = (self.stats.published, self.stats.delivered);
        r.publish_per_s = f64::from(rate(p, r.published));
        r.deliver_per_s = f64::from(rate(d, r.delivered));
        (r.published, r.delivered, r.at_ms) = (p, d, Some(now_ms));
        r.samples += 1;
    }
}
