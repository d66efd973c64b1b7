//! Request/reply (protocol 4): a request is an ordinary publish plus a pending entry
//! `inbox → (owner, req, deadline)`; the first reply to the inbox goes to the owner.
//!
//! The plain publish/deliver path does not pay for it: a request is stored as any message
//! (no field in the ring entry), and a side table per topic (`TopicState::asks`, offset →
//! inbox, sorted by offset) tells delivery to render it as `Asked`. Delivery consults it
//! only while it is not empty: one test per message otherwise. An entry lives until the
//! first reply, the deadline, or its owner's disconnect, whichever comes first; after that
//! the request is delivered (replayed, redelivered) as the plain message it also is.
//!
//! Inbox ids come from a keyed hash (SHA-256 over a secret key the broker passes in at
//! start and a counter), so they cannot be guessed from the ones a responder sees: the
//! inbox is the only capability to answer, and no filter or token rule can read another
//! connection's replies (replies are never stored in a topic).

use std::collections::{BTreeSet, HashMap, VecDeque};

use mote_sdk::wire::{MAX_KEY_LEN, MAX_REQUEST_TIMEOUT_MS};
use mote_sdk::{ErrorCode, Topic};
use sha2::{Digest, Sha256};

use super::subscribe::Role;
use super::{ConnId, Engine, Refusal, TopicId};

/// Requests one connection (or one HTTP `?wait=reply`) may have waiting for replies,
/// answers not yet handed to it included (see `sdk/PROTOCOL.md` §13).
pub const MAX_PENDING_PER_CONN: usize = 1024;
/// Requests the whole broker may have waiting for replies (see `sdk/PROTOCOL.md` §13).
pub const MAX_PENDING: usize = 16_384;

/// A request waiting for its reply.
#[derive(Debug)]
struct Entry {
    owner: ConnId,
    req: u32,
    deadline_ms: u64,
    /// The stored message: topic slot, its generation, offset.
    at: (TopicId, u32, u64),
    /// The timeout asked for (after the cut), for the message at the deadline.
    timeout_ms: u32,
}

/// What the owner of a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The first reply.
    Reply {
        /// The request's id.
        req: u32,
        /// The responder's key.
        key: Option<Vec<u8>>,
        /// The reply.
        payload: Vec<u8>,
    },
    /// No reply within the timeout (`TIMEOUT`).
    Failed {
        /// The request's id.
        req: u32,
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

/// The engine's request/reply state.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Key of the inbox id hash (set by [`Engine::seed_requests`]).
    key: [u8; 32],
    counter: u64,
    pending: HashMap<u64, Entry>,
    deadlines: BTreeSet<(u64, u64)>,
    /// Pending entries and undelivered answers per owner.
    per_conn: HashMap<ConnId, usize>,
    answers: HashMap<ConnId, VecDeque<Answer>>,
    held: usize,
}

/// The inbox of the pending request stored at `offset`, among a topic's `asks`.
#[inline]
pub(super) fn inbox_at(asks: &[(u64, u64)], offset: u64) -> Option<u64> {
    let i = asks.binary_search_by_key(&offset, |a| a.0).ok()?;
    Some(asks[i].1)
}

impl Requests {
    fn next_inbox(&mut self) -> u64 {
        loop {
            self.counter += 1;
            let mut h = Sha256::new();
            h.update(self.key);
            h.update(self.counter.to_le_bytes());
            let d = h.finalize();
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[..8]);
            let id = u64::from_le_bytes(b);
            if id != 0 && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn release(&mut self, owner: ConnId) {
        self.held = self.held.saturating_sub(1);
        if let Some(n) = self.per_conn.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&owner);
            }
        }
    }
}

impl Engine {
    /// Sets the secret that inbox ids are derived from (32 random bytes, once at start).
    pub fn seed_requests(&mut self, key: [u8; 32]) {
        self.requests.key = key;
    }

    /// A request from `conn` (the HTTP edge passes a connection of its own): checked like
    /// a publish, refused with `no_responders` before anything is stored when nothing
    /// could answer it, else stored and remembered until the first reply, the deadline
    /// (`timeout_ms`, cut to [`MAX_REQUEST_TIMEOUT_MS`]) or `conn`'s end. Returns the
    /// request's offset. `time_ms` is wall-clock (the stored time); the deadline counts
    /// from the engine's monotonic clock (moved by every input: `handle_received`,
    /// [`Engine::advance_clock`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of a Request frame and the clock"
    )]
    pub fn handle_request(
        &mut self,
        conn: ConnId,
        time_ms: u64,
        req: u32,
        topic: &str,
        timeout_ms: u32,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<u64, Refusal> {
        let r = self.try_request(conn, time_ms, req, topic, timeout_ms, key, payload);
        if let Err(e) = &r {
            if e.code == ErrorCode::NO_RESPONDERS {
                self.stats.requests_no_responders += 1;
            }
            if matches!(e.code, ErrorCode::NO_RESPONDERS | ErrorCode::PENDING_LIMIT) {
                self.stats.count_error(e.code);
            }
        }
        r
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of a Request frame and the clock"
    )]
    fn try_request(
        &mut self,
        conn: ConnId,
        time_ms: u64,
        req: u32,
        topic: &str,
        timeout_ms: u32,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<u64, Refusal> {
        let rq = &self.requests;
        let mine = rq.per_conn.get(&conn).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_CONN {
            return Err(Refusal::new(
                ErrorCode::PENDING_LIMIT,
                format!(
                    "this connection waits for {mine} replies, the limit is {MAX_PENDING_PER_CONN}; wait for some first"
                ),
            ));
        }
        if rq.held >= MAX_PENDING {
            return Err(Refusal::new(
                ErrorCode::PENDING_LIMIT,
                format!(
                    "the broker holds {} requests waiting for replies, its limit; retry later",
                    rq.held
                ),
            ));
        }
        if let Some(r) = self.requests_in_use(req, conn) {
            return Err(r);
        }
        // An oversized or badly named request gets the publish's own refusal, whatever
        // listens: only a request that could be stored is told there is nobody.
        let oversized =
            payload.len() > self.limits.max_payload || key.is_some_and(|k| k.len() > MAX_KEY_LEN);
        if !oversized && Topic::new(topic).is_ok() && !self.has_responders(topic) {
            return Err(Refusal::new(
                ErrorCode::NO_RESPONDERS,
                // A valid topic: no control characters to escape, as the CLI prints it.
                format!("no responders on {topic}"),
            ));
        }
        let offset = self.handle_publish(conn, time_ms, topic, key, payload)?;
        // A request is confirmed by its reply, not by the sync of its message.
        let _ = self.take_confirm_gate();
        let Some(&tid) = self.by_name.get(topic) else {
            return Ok(offset);
        };
        let inbox = self.requests.next_inbox();
        let t = &mut self.topics[tid.0 as usize];
        // Offsets only grow: pushed in order.
        t.asks.push((offset, inbox));
        let at = (tid, t.generation, offset);
        let timeout_ms = timeout_ms.clamp(1, MAX_REQUEST_TIMEOUT_MS);
        let deadline_ms = super::group::deadline_after(self.clock_ms, u64::from(timeout_ms));
        let rq = &mut self.requests;
        rq.pending.insert(
            inbox,
            Entry {
                owner: conn,
                req,
                deadline_ms,
                at,
                timeout_ms,
            },
        );
        rq.deadlines.insert((deadline_ms, inbox));
        *rq.per_conn.entry(conn).or_insert(0) += 1;
        rq.held += 1;
        self.stats.requests += 1;
        self.note_deadline(deadline_ms);
        Ok(offset)
    }

    /// `req` is 0, or already names a pending request of `conn`: refused.
    #[cold]
    fn requests_in_use(&self, req: u32, conn: ConnId) -> Option<Refusal> {
        if req == 0 {
            return Some(Refusal::new(
                ErrorCode::PROTOCOL,
                "a request needs a req id other than 0 (its answer carries it)".into(),
            ));
        }
        if !self.requests.per_conn.contains_key(&conn) {
            return None;
        }
        let taken = self
            .requests
            .pending
            .values()
            .any(|e| e.owner == conn && e.req == req);
        taken.then(|| {
            Refusal::new(
                ErrorCode::PROTOCOL,
                format!("request id {req} already waits for a reply on this connection"),
            )
        })
    }

    /// Whether anything could answer a request to `name`: a subscription (not a group
    /// member's) whose filter matches it, or a group reading it with a connected member.
    fn has_responders(&self, name: &str) -> bool {
        let group_live = |g: super::group::GroupId| {
            self.groups
                .get(g.0 as usize)
                .is_some_and(|g| !g.members.is_empty())
        };
        if let Some(&tid) = self.by_name.get(name) {
            return self.topics[tid.0 as usize].watchers.iter().any(|ck| {
                match self.cursors[ck.0 as usize].role {
                    Role::Sub => true,
                    Role::Group(g) => group_live(g),
                    Role::Outbox(_) => false,
                }
            });
        }
        self.subs
            .iter()
            .any(|(_, s)| s.member.is_none() && s.filter.matches(name))
            || self.groups_matching(name).into_iter().any(group_live)
    }

    /// A reply to inbox `inbox`: handed to the request's owner if it still waits (the
    /// first reply wins), else dropped and counted.
    pub fn handle_reply(&mut self, inbox: u64, key: Option<&[u8]>, payload: &[u8]) {
        let Some(e) = self.requests.pending.remove(&inbox) else {
            self.stats.replies_dropped += 1;
            return;
        };
        self.forget_request(inbox, &e);
        self.stats.replies += 1;
        let key = key.filter(|k| !k.is_empty()).map(<[u8]>::to_vec);
        self.answer(
            e.owner,
            Answer::Reply {
                req: e.req,
                key,
                payload: payload.to_vec(),
            },
        );
    }

    /// Removes the side-table entries of pending request `inbox` (already out of
    /// `pending`); its owner's slot stays held until the answer is handed out.
    fn forget_request(&mut self, inbox: u64, e: &Entry) {
        let rq = &mut self.requests;
        rq.deadlines.remove(&(e.deadline_ms, inbox));
        let (tid, generation, offset) = e.at;
        // A topic removed since (its slot reused or not) took its asks with it.
        if let Some(t) = self.topics.get_mut(tid.0 as usize) {
            if t.generation == generation {
                if let Ok(i) = t.asks.binary_search_by_key(&offset, |a| a.0) {
                    t.asks.remove(i);
                }
            }
        }
    }

    fn answer(&mut self, owner: ConnId, a: Answer) {
        let q = self.requests.answers.entry(owner).or_default();
        if q.is_empty() {
            self.wakeups.push(owner);
        }
        q.push_back(a);
    }

    /// Requests past their deadline: their owners are told `timeout`.
    pub(super) fn request_timeouts(&mut self, now_ms: u64) {
        while let Some(&(at, inbox)) = self.requests.deadlines.first() {
            if at > now_ms {
                break;
            }
            self.requests.deadlines.pop_first();
            let Some(e) = self.requests.pending.remove(&inbox) else {
                continue;
            };
            self.forget_request(inbox, &e);
            self.stats.request_timeouts += 1;
            self.stats.count_error(ErrorCode::TIMEOUT);
            let secs = f64::from(e.timeout_ms) / 1000.0;
            self.answer(
                e.owner,
                Answer::Failed {
                    req: e.req,
                    code: ErrorCode::TIMEOUT,
                    message: format!("no reply within {secs} s"),
                },
            );
        }
    }

    /// The soonest request deadline, if any.
    pub(super) fn next_request_deadline(&self) -> Option<u64> {
        self.requests.deadlines.first().map(|&(at, _)| at)
    }

    /// `conn` is gone: its pending requests and undelivered answers go with it.
    pub(super) fn drop_requests_of(&mut self, conn: ConnId) {
        if !self.requests.per_conn.contains_key(&conn) {
            return;
        }
        let mine: Vec<u64> = self
            .requests
            .pending
            .iter()
            .filter(|(_, e)| e.owner == conn)
            .map(|(&k, _)| k)
            .collect();
        for inbox in mine {
            if let Some(e) = self.requests.pending.remove(&inbox) {
                self.forget_request(inbox, &e);
            }
        }
        let n = self.requests.per_conn.remove(&conn).unwrap_or(0);
        self.requests.held = self.requests.held.saturating_sub(n);
        self.requests.answers.remove(&conn);
    }

    /// Hands `conn`'s answers (replies, timeouts) to `sink` until it returns `false`.
    /// Returns whether more are waiting.
    pub fn poll_answers(&mut self, conn: ConnId, mut sink: impl FnMut(&Answer) -> bool) -> bool {
        if self.requests.answers.is_empty() {
            return false;
        }
        let Some(q) = self.requests.answers.get_mut(&conn) else {
            return false;
        };
        let mut handed = 0;
        let mut more = false;
        while let Some(a) = q.front() {
            let room = sink(a);
            q.pop_front();
            handed += 1;
            if !room {
                more = !q.is_empty();
                break;
            }
        }
        if q.is_empty() {
            self.requests.answers.remove(&conn);
        }
        for _ in 0..handed {
            self.requests.release(conn);
        }
        more
    }

    /// Requests waiting for replies, broker-wide.
    pub fn pending_requests(&self) -> usize {
        self.requests.pending.len()
    }
}
