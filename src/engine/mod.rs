//! The ring-buffer topic engine: topics, rings, subscriptions and their cursors.
//!
//! The engine does no IO. Inputs arrive through `handle_*` methods that take the time as
//! an argument; outputs are return values, [`Engine::poll_deliveries`] (what a connection
//! should send next) and [`Engine::take_wakeups`] (which connections have something to
//! send). Tests drive it on a virtual clock without sockets.
//!
//! A subscription holds one cursor per topic its filter matches. Publishing stores the
//! message once in its topic's ring and queues the cursors watching that topic on their
//! connection; delivery then reads from the ring at each cursor. A cursor that falls
//! behind the ring's oldest message skips ahead and reports how many it missed, so a slow
//! subscriber never blocks a publisher and never makes the broker hold more.

mod admin;
mod channel;
mod disk;
mod edge;
mod group;
mod group_admin;
mod holes;
mod lifecycle;
mod pool;
mod publish;
mod request;
mod ring;
pub mod schemas;
pub mod settings;
mod stats;
mod subscribe;
mod tx;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use mote_sdk::ErrorCode;
use slab::Slab;

use crate::limits::Limits;
pub use admin::{MAX_META_KEY, MAX_META_KEYS, MAX_META_VALUE, TopicDetail};
pub use edge::{Since, Stored, StoredMessage, WaitId};
pub use group::{
    Ask as GroupAsk, GroupConfig, GroupCounters, GroupInfo, Settings as GroupSettings,
};
pub use lifecycle::MAX_LAST_OFFSETS;
pub use request::{Answer, MAX_PENDING, MAX_PENDING_PER_CONN};
pub use ring::ENTRY_OVERHEAD;
use ring::Ring;
pub use stats::{AdminOp, ConnInfo, HISTORY_SLOTS, RateHistory, Rates, Stats, TopicInfo};
pub use subscribe::Delivery;
pub use tx::{TxSettled, TxStats, parse_tx, tx_hex};

/// A connection known to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

impl ConnId {
    /// Not a connection: the HTTP edge, woken when a `wait=delivered` is settled.
    pub const EDGE: ConnId = ConnId(u32::MAX);

    /// Small dense number, reused after the connection ends.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopicId(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubId(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CursorId(u32);

/// An operation the engine refused; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Code for the error frame.
    pub code: ErrorCode,
    /// Message for people: what was wrong and what to do.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: String) -> Refusal {
        Refusal { code, message }
    }
}

struct TopicState {
    name: Box<str>,
    ring: Ring,
    /// Cursors of subscriptions whose filter matches this topic.
    watchers: Vec<CursorId>,
    /// Broker sequence number when the topic was created.
    created_seq: u64,
    published: u64,
    delivered: u64,
    lag_missed: u64,
    evicted: u64,
    /// `wait=delivered` publishes: (offset, id, waiting connection).
    waits: Vec<(u64, edge::WaitId, ConnId)>,
    /// `published` and `delivered` at the last rate sample, and the rates they gave.
    sampled: (u64, u64),
    rates: (f32, f32),
    /// Persisted or not, and its retention (from the `[topics]` patterns).
    settings: settings::TopicSettings,
    /// The JSON schema its payloads must match (shared with the pattern), if any.
    schema: Option<std::sync::Arc<schemas::TopicSchema>>,
    /// Payloads refused by that schema.
    schema_refused: u64,
    /// The oldest offset retained, in memory or on disk (the ring's first when the
    /// topic is not persisted); below it, messages are gone.
    disk_first: u64,
    /// The newest store time given out: stored times never go back.
    last_time: u64,
    /// Messages read back from disk for cursors behind the ring.
    cache: disk::DiskCache,
    /// The offset a read from disk was asked for, while it is in flight.
    reading: Option<u64>,
    /// Cursors waiting for that read.
    waiting: Vec<CursorId>,
    /// Offset ranges lost to damage on disk, or holding messages too large for today's
    /// frame limit: cursors skip them, told so. Sorted, disjoint (see `holes`).
    holes: Vec<(u64, u64)>,
    /// Messages read back from disk that were too large for the frame limit (skipped).
    oversize: u64,
    /// Messages dropped by retention (count, bytes or age), and by the disk budget.
    expired: u64,
    evicted_disk: u64,
    /// Offsets below this may be delivered: the ring's next, except for a persisted
    /// topic, whose messages are held back until the log has written them (synced them,
    /// under `--sync always`), so that no subscriber sees an offset a crash could give
    /// to another message.
    visible: u64,
    /// False for a slot whose topic was removed (kept for reuse; see `lifecycle`).
    live: bool,
    /// Bumped each time the slot gets a new topic, so that a stale `(slot, offset)` of
    /// an earlier topic there (in the budget queue) never touches the new one.
    generation: u32,
    /// Small key/values set by `mote topic meta`, sorted by key.
    meta: Vec<(Box<str>, Box<str>)>,
    /// Monotonic time of the last change that could have left it idle (a message
    /// stored or dropped, a watcher gone): while idle, idle since then.
    touched_ms: u64,
    /// When the idle sweep last found it busy: idle since after a later change that
    /// `touched_ms` did not see (a group gone), counted from when the sweep saw it.
    busy_seen_ms: u64,
    /// Pending requests stored in this topic, `(offset, inbox)` in offset order (see
    /// `request`): delivery looks them up only while there are any.
    asks: Vec<(u64, u64)>,
}

impl TopicState {
    fn new(name: &str, created_seq: u64, next: u64, settings: settings::TopicSettings) -> Self {
        TopicState {
            name: name.into(),
            ring: Ring::starting_at(next),
            watchers: Vec::new(),
            created_seq,
            published: 0,
            delivered: 0,
            lag_missed: 0,
            evicted: 0,
            waits: Vec::new(),
            sampled: (0, 0),
            rates: (0.0, 0.0),
            settings,
            schema: None,
            schema_refused: 0,
            disk_first: next,
            last_time: 0,
            cache: disk::DiskCache::default(),
            reading: None,
            waiting: Vec::new(),
            holes: Vec::new(),
            oversize: 0,
            expired: 0,
            evicted_disk: 0,
            visible: next,
            live: true,
            generation: 0,
            meta: Vec::new(),
            touched_ms: 0,
            busy_seen_ms: 0,
            asks: Vec::new(),
        }
    }

    /// Settles the waits for messages before `next` now that a subscriber got them.
    fn settle_waits(&mut self, next: u64, done: &mut Vec<edge::WaitId>, wake: &mut Vec<ConnId>) {
        self.waits.retain(|&(offset, id, waiter)| {
            if offset < next {
                done.push(id);
                wake.push(waiter);
                false
            } else {
                true
            }
        });
    }

    /// Settles the waits for the message at `offset` now that a group member acked it.
    fn settle_waits_at(
        &mut self,
        offset: u64,
        done: &mut Vec<edge::WaitId>,
        wake: &mut Vec<ConnId>,
    ) {
        self.waits.retain(|&(o, id, waiter)| {
            if o == offset {
                done.push(id);
                wake.push(waiter);
                false
            } else {
                true
            }
        });
    }
}

struct ConnState {
    peer: Option<SocketAddr>,
    client: Box<str>,
    /// Name of the token the connection proved, on a broker with tokens.
    token: Option<Box<str>>,
    /// An HTTP stream rather than a TCP connection.
    http: bool,
    connected_ms: u64,
    last_rx_ms: u64,
    /// Since when a frame (or record) has been arriving without being whole yet.
    partial_since_ms: Option<u64>,
    open: bool,
    close: Option<ErrorCode>,
    subs: Vec<SubId>,
    /// Cursors with something to deliver, served round-robin.
    ready: VecDeque<CursorId>,
    /// Subscriptions to tell that a topic they read was removed (sent before `ready`).
    removed: VecDeque<lifecycle::RemovedNotice>,
    /// The topic this connection published to last: skips the name lookup.
    last_topic: Option<TopicId>,
    msgs_in: u64,
    msgs_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    lag_missed: u64,
    /// `msgs_in + msgs_out` at the last rate sample, and the rate it gave.
    sampled_msgs: u64,
    msgs_per_s: f32,
}

/// The broker's state. One owner, one thread; see the module docs.
pub struct Engine {
    limits: Limits,
    broker_id: u64,
    topics: Vec<TopicState>,
    by_name: HashMap<Box<str>, TopicId>,
    conns: Slab<ConnState>,
    subs: Slab<subscribe::SubState>,
    cursors: Slab<subscribe::Cursor>,
    /// Every stored message in publish order, for evicting the oldest first when the
    /// memory budget is exceeded: (slot, its generation, offset). Entries of messages a
    /// ring already evicted, or of a topic removed since, are skipped when they reach the
    /// front, and compacted away when they pile up.
    budget_queue: VecDeque<(TopicId, u32, u64)>,
    used_bytes: usize,
    stored: usize,
    /// Broker-wide sequence number of the last stored message.
    seq: u64,
    wakeups: Vec<ConnId>,
    stats: Stats,
    /// Buffers of evicted messages for the next ones.
    pool: pool::Pool,
    /// `stats.published` when the pool was last looked at by [`Engine::handle_idle`].
    published_at_idle_check: u64,
    /// Failed handshakes per address.
    backoff: crate::auth::Backoff,
    next_wait: u64,
    delivered_waits: Vec<WaitId>,
    groups: Slab<group::GroupState>,
    group_names: HashMap<Box<str>, group::GroupId>,
    /// What the config file says of groups, by name.
    group_config: HashMap<Box<str>, group::Configured>,
    /// Members of deleted groups still to be told: (connection, subscription, group).
    group_gone: Vec<(ConnId, u32, Box<str>)>,
    /// Filters from the config file of groups that are not durable (created on demand).
    group_filters: HashMap<Box<str>, mote_sdk::Filter>,
    /// The latest monotonic time seen (input and timeouts): ack deadlines count from it.
    clock_ms: u64,
    /// When the broker's timer fires next (monotonic ms), and whether a group deadline
    /// before it appeared since.
    timer_armed_ms: u64,
    timer_moved: bool,
    /// Connections of the HTTP edge (its publisher and its streams): they do not count
    /// toward `--max-connections`, which is the TCP listener's.
    http_conns: usize,
    /// TCP connections that have not finished their handshake, in all and per address.
    pending: usize,
    pending_by_ip: HashMap<IpAddr, u32>,
    rates: stats::Rates,
    /// The broker-wide rates of the last minute, a point a second.
    history: stats::RateHistory,
    /// The busiest topics (indexes) as ranked last, for how many topics, at which rate
    /// sample: ranking every topic per `/api/stats` would touch all of them each time.
    busiest: Option<(u64, usize, usize, Vec<u32>)>,
    /// The data directory's log (`--data`), its front without IO.
    log: Option<Box<crate::store::Log>>,
    /// What topics are, by pattern, and the defaults for keys no pattern sets.
    patterns: settings::TopicPatterns,
    defaults: settings::TopicSettings,
    /// The JSON schemas by pattern (`[topics."..."] schema`).
    schemas: schemas::SchemaPatterns,
    /// The wall clock and the monotonic clock when the log was attached (retention by
    /// age counts from them: see `expiry_now`).
    expiry_base: (u64, u64),
    /// Set by a confirmed publish that must wait for the sync of this log position.
    confirm_gate: Option<u64>,
    /// Messages of persisted topics appended to the log and not yet written (synced,
    /// under `--sync always`): (log position after them, topic, offset after them),
    /// consecutive messages of one topic as one entry. Delivery waits for them.
    unwritten: VecDeque<(u64, TopicId, u64)>,
    /// Bytes all topics' disk caches hold, and a tick telling their windows' age.
    cache_bytes: usize,
    cache_tick: u64,
    /// Whether a durable group changed since its state was last appended.
    groups_dirty: bool,
    /// Whether a read from disk was asked for since the store task last looked.
    log_wanted: bool,
    /// Slots of removed topics, reused by the next topics created.
    free_topics: Vec<TopicId>,
    /// Live topics, and those of them that are not the broker's own (`--max-topics`).
    live_topics: usize,
    user_topics: usize,
    /// Bumped whenever a topic is created or removed (rankings cached by it).
    topics_changed: u64,
    /// The next offsets of removed topics, so a topic re-created continues above them.
    last_offsets: lifecycle::LastOffsets,
    /// Where the sweep of topics goes on next.
    idle_scan: usize,
    /// Requests waiting for replies (protocol 4).
    requests: request::Requests,
    /// Prepared transactions (see `tx`).
    tx: tx::TxTable,
}

impl Engine {
    /// A new engine. `broker_id` is this process's random id (see `Welcome`).
    pub fn new(limits: Limits, broker_id: u64) -> Engine {
        Engine {
            limits,
            broker_id,
            topics: Vec::new(),
            by_name: HashMap::new(),
            conns: Slab::new(),
            subs: Slab::new(),
            cursors: Slab::new(),
            budget_queue: VecDeque::new(),
            used_bytes: 0,
            stored: 0,
            seq: 0,
            wakeups: Vec::new(),
            stats: Stats::default(),
            pool: pool::Pool::default(),
            published_at_idle_check: 0,
            backoff: crate::auth::Backoff::default(),
            next_wait: 0,
            delivered_waits: Vec::new(),
            groups: Slab::new(),
            group_names: HashMap::new(),
            group_config: HashMap::new(),
            group_gone: Vec::new(),
            group_filters: HashMap::new(),
            clock_ms: 0,
            timer_armed_ms: u64::MAX,
            timer_moved: false,
            http_conns: 0,
            pending: 0,
            pending_by_ip: HashMap::new(),
            rates: stats::Rates::default(),
            history: stats::RateHistory::default(),
            busiest: None,
            log: None,
            patterns: settings::TopicPatterns::default(),
            defaults: settings::TopicSettings::new(false),
            schemas: schemas::SchemaPatterns::default(),
            expiry_base: (0, 0),
            confirm_gate: None,
            unwritten: VecDeque::new(),
            cache_bytes: 0,
            cache_tick: 0,
            groups_dirty: false,
            log_wanted: false,
            free_topics: Vec::new(),
            live_topics: 0,
            user_topics: 0,
            topics_changed: 0,
            last_offsets: lifecycle::LastOffsets::default(),
            idle_scan: 0,
            requests: request::Requests::default(),
            tx: tx::TxTable::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This broker process's random id.
    pub fn broker_id(&self) -> u64 {
        self.broker_id
    }

    /// Whether another TCP connection from `ip` may be accepted: below
    /// `--max-connections`, and below `--max-pending-per-address` connections from `ip`
    /// that have not finished their handshake. At `--max-pending` such connections in
    /// all, the oldest of them is closed to make room (counted as evicted): peers that
    /// authenticate finish in milliseconds, so the oldest is the likeliest never to, and
    /// silent peers from many addresses cannot keep the others out. Counts a refusal,
    /// and says which limit, if not.
    pub fn admit(&mut self, ip: Option<IpAddr>) -> Result<(), String> {
        let l = &self.limits;
        let tcp = self.conns.len() - self.http_conns;
        let why = if tcp >= l.max_connections {
            Some(format!(
                "the broker holds {tcp} connections, its limit (--max-connections); try later"
            ))
        } else if ip.is_some_and(|ip| {
            self.pending_by_ip.get(&ip).copied().unwrap_or(0) as usize >= l.max_pending_per_address
        }) {
            Some(format!(
                "{} connections from this address are still in their handshake, the limit (--max-pending-per-address); finish those first",
                l.max_pending_per_address
            ))
        } else if self.pending >= l.max_pending.min(l.max_connections) {
            match self.oldest_pending() {
                Some(oldest) => {
                    self.close(oldest, ErrorCode::HANDSHAKE_TIMEOUT);
                    self.stats.connections_evicted += 1;
                    None
                }
                None => Some(format!(
                    "{} connections are still in their handshake, the limit (--max-pending); try later",
                    self.pending
                )),
            }
        } else {
            None
        };
        match why {
            None => Ok(()),
            Some(m) => {
                self.stats.connections_refused += 1;
                self.stats.count_error(ErrorCode::CONNECTION_LIMIT);
                Err(m)
            }
        }
    }

    /// The connection that has been in its handshake the longest and is not closing.
    fn oldest_pending(&self) -> Option<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.open && !c.http && c.close.is_none())
            .min_by_key(|(k, c)| (c.connected_ms, *k))
            .map(|(k, _)| ConnId(k as u32))
    }

    /// A new TCP connection, not yet through the handshake. `now_ms` is monotonic time.
    pub fn handle_connect(&mut self, now_ms: u64, peer: Option<SocketAddr>) -> ConnId {
        self.pending += 1;
        if let Some(p) = peer {
            *self.pending_by_ip.entry(p.ip()).or_insert(0) += 1;
        }
        self.insert_conn(now_ms, peer, false)
    }

    /// A connection of the HTTP edge (its publisher, or a stream) named `client`, proven
    /// as `token` if any: open at once, outside `--max-connections` and the TCP
    /// deadlines (the edge has its own).
    pub fn handle_connect_http(
        &mut self,
        now_ms: u64,
        peer: Option<SocketAddr>,
        client: &str,
        token: Option<&str>,
    ) -> ConnId {
        self.http_conns += 1;
        let id = self.insert_conn(now_ms, peer, true);
        let c = &mut self.conns[id.index()];
        c.client = client.into();
        c.token = token.map(Into::into);
        id
    }

    fn insert_conn(&mut self, now_ms: u64, peer: Option<SocketAddr>, http: bool) -> ConnId {
        self.stats.connections_accepted += 1;
        let key = self.conns.insert(ConnState {
            peer,
            client: Box::from(""),
            token: None,
            http,
            connected_ms: now_ms,
            last_rx_ms: now_ms,
            partial_since_ms: None,
            open: http,
            close: None,
            subs: Vec::new(),
            ready: VecDeque::new(),
            removed: VecDeque::new(),
            last_topic: None,
            msgs_in: 0,
            msgs_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            lag_missed: 0,
            sampled_msgs: 0,
            msgs_per_s: 0.0,
        });
        ConnId(key as u32)
    }

    /// A connection leaves the handshake (opened or gone): it no longer counts as pending.
    fn end_pending(&mut self, peer: Option<SocketAddr>) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(ip) = peer.map(|p| p.ip()) {
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.pending_by_ip.entry(ip)
            {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// The connection finished its handshake as `client`.
    pub fn handle_open(&mut self, conn: ConnId, client: &str) {
        let Some(c) = self.conns.get_mut(conn.index()) else {
            return;
        };
        c.client = client.into();
        if !c.open {
            c.open = true;
            let peer = c.peer;
            self.end_pending(peer);
        }
    }

    /// The connection proved token `name`.
    pub fn handle_auth_success(&mut self, conn: ConnId, name: &str) {
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.token = Some(name.into());
            if let Some(p) = c.peer {
                self.backoff.handle_success(p.ip());
            }
        }
    }

    /// The connection failed its token handshake (at the time of its last input).
    pub fn handle_auth_failure(&mut self, conn: ConnId) {
        self.stats.auth_failures += 1;
        if let Some(c) = self.conns.get(conn.index()) {
            if let Some(p) = c.peer {
                self.backoff.handle_failure(p.ip(), c.last_rx_ms);
            }
        }
    }

    /// Whether a new connection from `ip` may try to authenticate at monotonic time
    /// `now_ms`; counts a refusal if not.
    pub fn admit_address(
        &mut self,
        ip: std::net::IpAddr,
        now_ms: u64,
    ) -> Result<(), crate::auth::Blocked> {
        let r = self.backoff.check(ip, now_ms);
        if r.is_err() {
            self.stats.auth_blocked += 1;
            self.stats.count_error(ErrorCode::UNAUTHORIZED);
        }
        r
    }

    /// A missing or wrong token on the HTTP edge from `ip`, at monotonic `now_ms`:
    /// counted, and the address slowed on both front-ends (one backoff table).
    pub fn handle_http_auth_failure(&mut self, ip: Option<IpAddr>, now_ms: u64) {
        self.stats.auth_failures += 1;
        self.stats.count_error(ErrorCode::UNAUTHORIZED);
        if let Some(ip) = ip {
            self.backoff.handle_failure(ip, now_ms);
        }
    }

    /// A good token on the HTTP edge from `ip`: its failures are forgotten.
    pub fn handle_http_auth_success(&mut self, ip: IpAddr) {
        self.backoff.handle_success(ip);
    }

    /// A record that failed to open (tampered, replayed, reordered, foreign).
    pub fn count_bad_record(&mut self) {
        self.stats.records_rejected += 1;
    }

    /// Bytes arrived on the connection at monotonic time `now_ms`.
    pub fn handle_received(&mut self, conn: ConnId, now_ms: u64, bytes: usize) {
        self.clock_ms = self.clock_ms.max(now_ms);
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.last_rx_ms = now_ms;
            c.bytes_in += bytes as u64;
        }
    }

    /// Whether the connection holds part of a frame (or record) since monotonic `since_ms`
    /// (`None`: nothing partial). A frame must arrive whole within `--partial-timeout`.
    pub fn handle_partial(&mut self, conn: ConnId, since_ms: Option<u64>) {
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.partial_since_ms = since_ms;
        }
    }

    /// Bytes were written to the connection.
    pub fn handle_sent(&mut self, conn: ConnId, bytes: usize) {
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.bytes_out += bytes as u64;
        }
    }

    /// The connection is gone: drop its subscriptions and cursors.
    pub fn handle_disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.try_remove(conn.index()) else {
            return;
        };
        if c.http {
            self.http_conns -= 1;
        } else if !c.open {
            self.end_pending(c.peer);
        }
        for sub in c.subs {
            self.remove_sub(sub);
        }
        if !self.group_gone.is_empty() {
            self.group_gone.retain(|g| g.0 != conn);
        }
        self.drop_requests_of(conn);
        self.tx_conn_gone(conn);
        self.stats.connections_closed += 1;
    }

    /// Asks for the connection to be closed with `code`; its task sees it in
    /// [`Engine::close_reason`] after the wakeup.
    pub fn close(&mut self, conn: ConnId, code: ErrorCode) {
        if let Some(c) = self.conns.get_mut(conn.index()) {
            if c.close.is_none() {
                c.close = Some(code);
                self.stats.count_error(code);
                self.wakeups.push(conn);
            }
        }
    }

    /// Why the connection must close, if it must.
    pub fn close_reason(&self, conn: ConnId) -> Option<ErrorCode> {
        self.conns.get(conn.index()).and_then(|c| c.close)
    }

    /// Counts an error frame the session sent on its own (decode errors and the like).
    pub fn count_error(&mut self, code: ErrorCode) {
        self.stats.count_error(code);
    }

    /// Closes connections past the handshake deadline or silent for three keepalives.
    /// `now_ms` is monotonic. Returns how many were closed.
    pub fn handle_timeouts(&mut self, now_ms: u64) -> usize {
        let handshake = self.limits.handshake_ms;
        let silence = self.limits.keepalive_ms.saturating_mul(3);
        let partial = self.limits.partial_timeout_ms;
        let expired: Vec<(ConnId, ErrorCode)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.close.is_none())
            .filter_map(|(k, c)| {
                let id = ConnId(k as u32);
                if c.http {
                    // HTTP streams answer to the HTTP side's own time-outs.
                    None
                } else if !c.open && now_ms.saturating_sub(c.connected_ms) >= handshake {
                    Some((id, ErrorCode::HANDSHAKE_TIMEOUT))
                } else if c.open && now_ms.saturating_sub(c.last_rx_ms) >= silence {
                    Some((id, ErrorCode::KEEPALIVE_TIMEOUT))
                } else if c
                    .partial_since_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= partial)
                {
                    Some((id, ErrorCode::FRAME_TIMEOUT))
                } else {
                    None
                }
            })
            .collect();
        for &(id, code) in &expired {
            self.close(id, code);
        }
        self.group_timeouts(now_ms);
        self.request_timeouts(now_ms);
        self.tx_timeouts(now_ms);
        expired.len()
    }

    /// Called periodically: when nothing was published since the last call, frees the
    /// buffers kept for recycling, so a quiet broker holds only what it stores.
    pub fn handle_idle(&mut self) {
        if self.stats.published == self.published_at_idle_check {
            self.pool.clear();
        }
        self.published_at_idle_check = self.stats.published;
    }

    /// Closes every connection with `SHUTTING_DOWN`.
    pub fn handle_shutdown(&mut self) {
        let all: Vec<ConnId> = self.conns.iter().map(|(k, _)| ConnId(k as u32)).collect();
        for id in all {
            self.close(id, ErrorCode::SHUTTING_DOWN);
        }
    }

    /// Moves the connections that have something new to send into `into` (cleared first).
    pub fn take_wakeups(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        std::mem::swap(into, &mut self.wakeups);
    }

    /// Number of connections, TCP and HTTP streams (and the edge's publisher).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of TCP connections (those `--max-connections` counts).
    pub fn tcp_connection_count(&self) -> usize {
        self.conns.len() - self.http_conns
    }
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod channel_tests;
#[cfg(test)]
mod disk_tests;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod lifecycle_disk_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod oversize_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tx_tests;
