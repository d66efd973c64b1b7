//! Subscriptions, their cursors, and delivery from the rings.

use std::collections::HashMap;

use mote_sdk::wire::Resume;
use mote_sdk::{ErrorCode, Filter, Start};

use super::group::{GroupId, Member, Out};
use super::{ConnId, CursorId, Engine, Refusal, SubId, TopicId};

/// Messages one cursor delivers before the next ready cursor gets a turn.
const FAIR_SHARE: u32 = 64;

pub(super) struct SubState {
    pub(super) conn: ConnId,
    pub(super) id: u32,
    pub(super) filter: Filter,
    pub(super) cursors: Vec<CursorId>,
    /// Set when the subscription is a consumer group's member.
    pub(super) member: Option<Box<Member>>,
}

/// What a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A subscription's position in a topic.
    Sub,
    /// A consumer group's shared position in a topic (in no connection's queue).
    Group(GroupId),
    /// A group member's outbox: in its connection's ready queue while not empty.
    Outbox(SubId),
}

/// A subscription's position in one topic.
pub(super) struct Cursor {
    pub(super) conn: ConnId,
    pub(super) sub_id: u32,
    pub(super) topic: TopicId,
    /// Offset of the next message to deliver.
    pub(super) next: u64,
    /// Messages known missed and not yet reported.
    pub(super) lag: u64,
    /// Whether the cursor is in its connection's ready queue.
    pub(super) queued: bool,
    pub(super) role: Role,
    /// Messages with a broker sequence number up to this one are passed over silently
    /// (a resumed subscription whose start the log only knew roughly); 0 for none.
    pub(super) skip_seq: u64,
    /// Messages stored before this wall time (ms) are passed over silently (a start by
    /// time that the log only knew to the run holding it); 0 for none.
    pub(super) skip_before_ms: u64,
    /// The start asked for was below the oldest message retained when the subscription
    /// was made: the first lag reported was evicted before the subscriber asked, not
    /// missed while it read.
    pub(super) before_start: bool,
}

/// Something to send to a subscriber, borrowed from the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// One message.
    Message {
        /// The connection's subscription id.
        sub: u32,
        /// Topic of the message.
        topic: &'a str,
        /// Its offset.
        offset: u64,
        /// When it was stored (ms since the Unix epoch).
        time_ms: u64,
        /// Its key, if any.
        key: Option<&'a [u8]>,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A message for a consumer group member, to ack with `tag`.
    GroupMessage {
        /// The member's subscription id.
        sub: u32,
        /// Delivery tag.
        tag: u64,
        /// Topic of the message.
        topic: &'a str,
        /// Its offset.
        offset: u64,
        /// When it was stored (ms since the Unix epoch).
        time_ms: u64,
        /// 1 on first delivery, more on redeliveries.
        attempt: u32,
        /// Its key, if any.
        key: Option<&'a [u8]>,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A request (protocol 4) still waiting for its reply: a `Message` (`group` false,
    /// `tag` 0, `attempt` 1) or a `GroupMessage` with the inbox its reply goes to. A
    /// connection of an older version renders it as that plain message.
    Asked {
        /// The connection's subscription id.
        sub: u32,
        /// Whether it is a group delivery (to ack with `tag`).
        group: bool,
        /// Delivery tag (group deliveries).
        tag: u64,
        /// Topic of the request.
        topic: &'a str,
        /// Its offset.
        offset: u64,
        /// When it was stored (ms since the Unix epoch).
        time_ms: u64,
        /// 1 on first delivery, more on a group's redeliveries.
        attempt: u32,
        /// The inbox to reply to.
        reply: u64,
        /// Its key, if any.
        key: Option<&'a [u8]>,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The subscriber missed `missed` messages; delivery goes on at `next`.
    Lag {
        /// The connection's subscription id.
        sub: u32,
        /// Topic of the missed messages.
        topic: &'a str,
        /// How many.
        missed: u64,
        /// Next offset delivered.
        next: u64,
        /// They were evicted by the topic's retention before the subscription asked for
        /// them (its start was below the oldest message kept), not while it was reading.
        before_start: bool,
    },
    /// The consumer group of subscription `sub` was deleted (`mote group delete`): the
    /// subscription is gone. The binary protocol tells it as an `Error` frame with code
    /// `not_found` and `req` = `sub`; an HTTP group stream ends.
    GroupGone {
        /// The member's subscription id.
        sub: u32,
        /// The group's name.
        group: &'a str,
    },
    /// The topic was removed (`mote topic delete`, or idle expiry) with `unread` messages
    /// the subscriber had not got. The subscription stays: if the topic is created
    /// again, delivery goes on there from `next`, where the removed topic ended.
    Removed {
        /// The connection's subscription id.
        sub: u32,
        /// The topic removed.
        topic: &'a str,
        /// Messages stored and not delivered to this subscription, gone with the topic.
        unread: u64,
        /// The offset a topic of that name created again starts at.
        next: u64,
    },
}

impl Engine {
    /// Subscribes `conn` to `filter` under its id `sub`. Returns the broker sequence number
    /// at this moment (for resuming with [`Start::AfterSeq`]).
    pub fn handle_subscribe(
        &mut self,
        conn: ConnId,
        sub: u32,
        filter: &str,
        from: Start,
        resume: &[Resume<'_>],
    ) -> Result<u64, Refusal> {
        let r = self.try_subscribe(conn, sub, filter, from, resume);
        if let Err(e) = &r {
            self.stats.subscribe_refused += 1;
            self.stats.count_error(e.code);
        }
        r
    }

    fn try_subscribe(
        &mut self,
        conn: ConnId,
        sub: u32,
        filter: &str,
        from: Start,
        resume: &[Resume<'_>],
    ) -> Result<u64, Refusal> {
        self.check_new_subscription(conn, sub)?;
        if resume.len() > self.limits.max_topics {
            return Err(Refusal::new(
                ErrorCode::BAD_FILTER,
                format!(
                    "the resume list has {} entries, more than the {} topics the broker may hold (--max-topics)",
                    resume.len(),
                    self.limits.max_topics
                ),
            ));
        }
        let filter = Filter::new(filter).map_err(|e| {
            Refusal::new(
                ErrorCode::BAD_FILTER,
                format!("bad filter {}: {e}", mote_sdk::topic::shown(filter)),
            )
        })?;
        let matched: Vec<TopicId> = if filter.is_exact() {
            self.by_name
                .get(filter.as_str())
                .copied()
                .into_iter()
                .collect()
        } else {
            (0..self.topics.len())
                .filter(|&i| filter.matches(&self.topics[i].name))
                .map(|i| TopicId(i as u32))
                .collect()
        };
        let key = SubId(self.subs.insert(SubState {
            conn,
            id: sub,
            filter,
            cursors: Vec::with_capacity(matched.len()),
            member: None,
        }) as u32);
        self.conns[conn.index()].subs.push(key);
        // A lookup per matched topic: hashed when the list is long.
        let resumed: HashMap<&str, u64> = if resume.len() > 8 {
            resume.iter().map(|r| (r.topic, r.next)).collect()
        } else {
            HashMap::new()
        };
        let resume_at = |name: &str| {
            if resumed.is_empty() {
                resume.iter().find(|r| r.topic == name).map(|r| r.next)
            } else {
                resumed.get(name).copied()
            }
        };
        for tid in matched {
            let t = &self.topics[tid.0 as usize];
            // Retained on disk or in memory: a subscription may start anywhere in it.
            let (first, next) = (t.disk_first.min(t.ring.first()), t.ring.next());
            let (mut skip_seq, mut skip_before_ms) = (0, 0);
            let (start, lag) = match resume_at(&t.name) {
                Some(n) => (n.min(next), 0),
                None => match from {
                    Start::Latest => (next, 0),
                    Start::Earliest => (first, 0),
                    Start::Offset(n) => (n.min(next), 0),
                    Start::Last(n) => (next.saturating_sub(n).max(first), 0),
                    Start::AfterSeq(s) if t.created_seq >= s => (0, 0),
                    Start::AfterSeq(s)
                        if first == t.ring.first() || t.ring.get(first).is_some() =>
                    {
                        t.ring.after_seq(s)
                    }
                    Start::Time(_) | Start::Ago(_) => {
                        let at = self.start_time_ms(from).unwrap_or(0);
                        skip_before_ms = at;
                        (self.offset_at_time(tid, at), 0)
                    }
                    Start::AfterSeq(s) => {
                        // Partly on disk: start where the log may still hold what came
                        // after `s`, and pass over the rest as it is read.
                        skip_seq = s;
                        (self.offset_after_seq(tid, s), 0)
                    }
                },
            };
            let ck = self.attach(key, tid, start, lag);
            let cur = &mut self.cursors[ck.0 as usize];
            cur.skip_seq = skip_seq;
            cur.skip_before_ms = skip_before_ms;
            cur.before_start = start < first || lag > 0;
        }
        Ok(self.seq)
    }

    /// Whether `conn` may add a subscription with id `sub`.
    pub(super) fn check_new_subscription(&self, conn: ConnId, sub: u32) -> Result<(), Refusal> {
        let Some(c) = self.conns.get(conn.index()) else {
            return Err(Refusal::new(
                ErrorCode::PROTOCOL,
                "unknown connection".into(),
            ));
        };
        if c.subs.iter().any(|s| self.subs[s.0 as usize].id == sub) {
            return Err(Refusal::new(
                ErrorCode::DUPLICATE_SUBSCRIPTION,
                format!("subscription id {sub} is already in use on this connection"),
            ));
        }
        if c.subs.len() >= self.limits.max_subscriptions {
            return Err(Refusal::new(
                ErrorCode::SUBSCRIPTION_LIMIT,
                format!(
                    "this connection holds {} subscriptions, the limit is {} (--max-subscriptions)",
                    c.subs.len(),
                    self.limits.max_subscriptions
                ),
            ));
        }
        Ok(())
    }

    /// Puts cursor `ck` in its connection's ready queue, waking the connection if the
    /// queue was empty.
    pub(super) fn queue_cursor(&mut self, ck: CursorId) {
        let cur = &mut self.cursors[ck.0 as usize];
        if cur.queued {
            return;
        }
        cur.queued = true;
        let Some(c) = self.conns.get_mut(cur.conn.index()) else {
            return;
        };
        if c.ready.is_empty() {
            self.wakeups.push(cur.conn);
        }
        c.ready.push_back(ck);
    }

    /// Gives subscription `sub` a cursor on topic `tid` starting at offset `start`.
    pub(super) fn attach(&mut self, sub: SubId, tid: TopicId, start: u64, lag: u64) -> CursorId {
        let s = &mut self.subs[sub.0 as usize];
        let ck = CursorId(self.cursors.insert(Cursor {
            conn: s.conn,
            sub_id: s.id,
            topic: tid,
            next: start,
            lag,
            queued: false,
            role: Role::Sub,
            skip_seq: 0,
            skip_before_ms: 0,
            before_start: false,
        }) as u32);
        s.cursors.push(ck);
        let t = &mut self.topics[tid.0 as usize];
        t.watchers.push(ck);
        if start < t.visible || lag > 0 {
            self.queue_cursor(ck);
        }
        ck
    }

    /// Ends subscription `sub` of `conn`.
    pub fn handle_unsubscribe(&mut self, conn: ConnId, sub: u32) -> Result<(), Refusal> {
        let found = self.conns.get(conn.index()).and_then(|c| {
            c.subs
                .iter()
                .copied()
                .find(|s| self.subs[s.0 as usize].id == sub)
        });
        match found {
            Some(key) => {
                self.remove_sub(key);
                Ok(())
            }
            None => {
                self.stats.count_error(ErrorCode::UNKNOWN_SUBSCRIPTION);
                Err(Refusal::new(
                    ErrorCode::UNKNOWN_SUBSCRIPTION,
                    format!("no subscription with id {sub} on this connection"),
                ))
            }
        }
    }

    pub(super) fn remove_sub(&mut self, key: SubId) {
        let mut s = self.subs.remove(key.0 as usize);
        let conn = self.conns.get_mut(s.conn.index());
        let mut ready = conn.map(|c| {
            c.subs.retain(|&k| k != key);
            &mut c.ready
        });
        for ck in s.cursors {
            let cur = self.cursors.remove(ck.0 as usize);
            if cur.role == Role::Sub {
                let t = &mut self.topics[cur.topic.0 as usize];
                if let Some(i) = t.watchers.iter().position(|&k| k == ck) {
                    t.watchers.swap_remove(i);
                }
                t.touched_ms = self.clock_ms;
            }
            if cur.queued {
                if let Some(r) = ready.as_mut() {
                    r.retain(|&k| k != ck);
                }
            }
        }
        if let Some(m) = s.member.take() {
            self.remove_member(key, *m);
        }
    }

    /// Hands what `conn` should receive next to `sink`, oldest first per topic and
    /// round-robin across topics, until `sink` returns `false` (its buffer is full) or
    /// nothing is left. Returns whether more is ready.
    pub fn poll_deliveries(
        &mut self,
        conn: ConnId,
        mut sink: impl FnMut(Delivery<'_>) -> bool,
    ) -> bool {
        if !self.group_gone.is_empty() && self.tell_group_gone(conn, &mut sink) {
            return true;
        }
        let wall_ms = self.expiry_now();
        let Some(c) = self.conns.get_mut(conn.index()) else {
            return false;
        };
        // Topics removed first: their cursors are gone.
        while let Some(n) = c.removed.front() {
            let room = sink(Delivery::Removed {
                sub: n.sub,
                topic: &n.topic,
                unread: n.unread,
                next: n.next,
            });
            c.removed.pop_front();
            if !room {
                return !c.removed.is_empty() || !c.ready.is_empty();
            }
        }
        let (mut msgs, mut bytes) = (0u64, 0u64);
        let mut need_read: Vec<(TopicId, u64, CursorId)> = Vec::new();
        let mut hurry = false;
        let more = 'cursors: loop {
            let Some(&ck) = c.ready.front() else {
                break false;
            };
            let cur = &mut self.cursors[ck.0 as usize];
            if let Role::Outbox(key) = cur.role {
                // A group member's outbox: the messages assigned to it, then done.
                let sub_id = cur.sub_id;
                if let Some(m) = self
                    .subs
                    .get_mut(key.0 as usize)
                    .and_then(|s| s.member.as_mut())
                {
                    while let Some(out) = m.outbox.pop_front() {
                        let d = match out {
                            Out::Lag {
                                topic,
                                missed,
                                next,
                            } => Delivery::Lag {
                                sub: sub_id,
                                topic: &self.topics[topic.0 as usize].name,
                                missed,
                                next,
                                before_start: false,
                            },
                            Out::Tag(tag) => {
                                // Settled or timed out meanwhile: nothing to send.
                                let Some((topic, offset, attempt)) = m.lookup(tag) else {
                                    continue;
                                };
                                let t = &mut self.topics[topic.0 as usize];
                                // Gone from memory meanwhile (a window of messages read
                                // back was dropped), or past its max-age: its ack
                                // timeout puts it back (or finds it gone).
                                let expired = t.settings.max_age_ms.is_some_and(|age| {
                                    let cutoff = wall_ms.saturating_sub(age);
                                    t.ring
                                        .get(offset)
                                        .or_else(|| t.cache.get(offset))
                                        .is_some_and(|e| e.time_ms < cutoff)
                                });
                                if expired
                                    || t.ring.get(offset).is_none() && t.cache.get(offset).is_none()
                                {
                                    continue;
                                }
                                t.delivered += 1;
                                let t = &self.topics[topic.0 as usize];
                                let Some(e) = t.ring.get(offset).or_else(|| t.cache.get(offset))
                                else {
                                    continue;
                                };
                                msgs += 1;
                                bytes += e.payload().len() as u64;
                                let asked = if t.asks.is_empty() {
                                    None
                                } else {
                                    super::request::inbox_at(&t.asks, offset)
                                };
                                match asked {
                                    None => Delivery::GroupMessage {
                                        sub: sub_id,
                                        tag,
                                        topic: &t.name,
                                        offset,
                                        time_ms: e.time_ms,
                                        attempt,
                                        key: e.key(),
                                        payload: e.payload(),
                                    },
                                    Some(reply) => Delivery::Asked {
                                        sub: sub_id,
                                        group: true,
                                        tag,
                                        topic: &t.name,
                                        offset,
                                        time_ms: e.time_ms,
                                        attempt,
                                        reply,
                                        key: e.key(),
                                        payload: e.payload(),
                                    },
                                }
                            }
                        };
                        if !sink(d) {
                            if m.outbox.is_empty() {
                                cur.queued = false;
                                c.ready.pop_front();
                            }
                            break 'cursors true;
                        }
                    }
                }
                cur.queued = false;
                c.ready.pop_front();
                continue;
            }
            let tid = cur.topic;
            let t = &mut self.topics[tid.0 as usize];
            if let Some(age) = t.settings.max_age_ms {
                // Past the topic's max-age and not dropped yet (the sweep does that):
                // never delivered, told as lag.
                let cutoff = wall_ms.saturating_sub(age);
                while cur.next < t.visible {
                    match t.ring.get(cur.next).or_else(|| t.cache.get(cur.next)) {
                        Some(e) if e.time_ms < cutoff => {
                            cur.next += 1;
                            cur.lag += 1;
                        }
                        _ => break,
                    }
                }
            }
            // Below what is retained (in memory or on disk): told as lag.
            let first = t.disk_first.min(t.ring.first());
            if cur.next < first {
                cur.lag += first - cur.next;
                cur.next = first;
            }
            if cur.next < t.ring.first() {
                if let Some(end) = super::holes::hole_end_in(&t.holes, cur.next) {
                    // Lost to damage on disk, or too large for the frame limit.
                    cur.lag += end - cur.next;
                    cur.next = end;
                }
            }
            if cur.lag > 0 {
                let missed = std::mem::take(&mut cur.lag);
                t.lag_missed += missed;
                c.lag_missed += missed;
                self.stats.lag_events += 1;
                self.stats.lag_missed += missed;
                let d = Delivery::Lag {
                    sub: cur.sub_id,
                    topic: &t.name,
                    missed,
                    next: cur.next,
                    before_start: std::mem::take(&mut cur.before_start),
                };
                if !sink(d) {
                    break true;
                }
            }
            let mut n = 0u32;
            // From the ring, or, behind it, from what was read back from disk.
            // Only what is visible (a persisted topic's messages once the log wrote them).
            let end = t.visible;
            while cur.next < end {
                let Some(e) = t.ring.get(cur.next).or_else(|| t.cache.get(cur.next)) else {
                    break;
                };
                // Nothing to pass over (the usual case) is one test per message.
                if (cur.skip_seq | cur.skip_before_ms) != 0 {
                    if e.seq <= cur.skip_seq || e.time_ms < cur.skip_before_ms {
                        cur.next += 1;
                        continue;
                    }
                    cur.skip_seq = 0;
                    cur.skip_before_ms = 0;
                }
                let payload = e.payload();
                // One test per message for topics without pending requests.
                let d = if t.asks.is_empty() {
                    Delivery::Message {
                        sub: cur.sub_id,
                        topic: &t.name,
                        offset: cur.next,
                        time_ms: e.time_ms,
                        key: e.key(),
                        payload,
                    }
                } else {
                    asked_or_message(t, cur.sub_id, cur.next, e)
                };
                cur.next += 1;
                n += 1;
                bytes += payload.len() as u64;
                let room = sink(d);
                if !room {
                    t.delivered += u64::from(n);
                    if !t.waits.is_empty() {
                        t.settle_waits(cur.next, &mut self.delivered_waits, &mut self.wakeups);
                    }
                    msgs += u64::from(n);
                    break 'cursors true;
                }
                if n == FAIR_SHARE && c.ready.len() > 1 {
                    c.ready.rotate_left(1);
                    t.delivered += u64::from(n);
                    if !t.waits.is_empty() {
                        t.settle_waits(cur.next, &mut self.delivered_waits, &mut self.wakeups);
                    }
                    msgs += u64::from(n);
                    continue 'cursors;
                }
            }
            t.delivered += u64::from(n);
            if !t.waits.is_empty() {
                t.settle_waits(cur.next, &mut self.delivered_waits, &mut self.wakeups);
            }
            msgs += u64::from(n);
            cur.queued = false;
            c.ready.pop_front();
            if cur.next >= t.visible && t.visible < t.ring.next() {
                // Caught up with what the log wrote, and more is coming.
                hurry = true;
            }
            if cur.next < t.ring.first() && cur.next < t.visible {
                // Behind the ring and not in memory: read back from disk; the cursor is
                // queued again when the read comes.
                need_read.push((tid, cur.next, ck));
            }
        };
        c.msgs_out += msgs;
        self.stats.delivered += msgs;
        self.stats.bytes_delivered += bytes;
        for (tid, offset, ck) in need_read {
            self.want(tid, offset, Some(ck));
        }
        if hurry {
            if let Some(log) = self.log.as_mut() {
                log.hurry();
                self.log_wanted = true;
            }
        }
        more
    }
}

/// The delivery of the message `e` at `offset` of topic `t` (which has pending
/// requests) to subscription `sub`: `Asked` while its request waits, else a `Message`.
#[cold]
#[inline(never)]
fn asked_or_message<'a>(
    t: &'a super::TopicState,
    sub: u32,
    offset: u64,
    e: &'a super::ring::Entry,
) -> Delivery<'a> {
    match super::request::inbox_at(&t.asks, offset) {
        Some(reply) => Delivery::Asked {
            sub,
            group: false,
            tag: 0,
            topic: &t.name,
            offset,
            time_ms: e.time_ms,
            attempt: 1,
            reply,
            key: e.key(),
            payload: e.payload(),
        },
        None => Delivery::Message {
            sub,
            topic: &t.name,
            offset,
            time_ms: e.time_ms,
            key: e.key(),
            payload: e.payload(),
        },
    }
}
