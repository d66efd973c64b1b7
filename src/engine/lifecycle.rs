//! The end of a topic's life, and what outlives it: removing a topic (delete, idle
//! expiry), dropping what it stores (purge, `max-age` in memory), and the table of last
//! offsets that makes a topic created again continue above where the removed one ended.
//!
//! Topics live in a vector indexed by `TopicId`, which cursors, the budget queue, the
//! log's unwritten list and connections refer to. A removed topic's slot stays, marked
//! dead (its name one that no filter matches), and the next topic created takes it: its
//! cursors are removed with it, its entries in the unwritten list too, and the budget
//! queue's entries carry the slot's generation, so an entry of the removed topic never
//! touches the one now in its slot. A connection's cached last topic is checked by name,
//! which a dead slot's never matches.
//!
//! Idle expiry: a topic notes when it last changed in a way that could leave it idle (a
//! message stored or dropped, a watcher gone); while it holds nothing and has no
//! watcher, it is idle since then. A group that goes leaves no note (that is the group
//! module's business), so the sweep also notes when it last saw a topic busy: a topic
//! busy after its last note is idle from the sweep that first sees it so, late rather
//! than early.

use std::collections::{HashMap, VecDeque};

use super::settings::TopicSettings;
use super::subscribe::Role;
use super::{CursorId, Engine, TopicId, TopicState};

/// Most names the table of last offsets keeps; the oldest is forgotten first.
pub const MAX_LAST_OFFSETS: usize = 10_000;

/// Topics one sweep looks at, at most: with more, the sweep goes on where it stopped at
/// the next round, so its cost is bounded however many topics there are.
const SWEEP_TOPICS: usize = 4096;

/// Expired topics logged one by one per sweep; beyond, one line says how many more.
const LOGGED_PER_SWEEP: usize = 16;

/// The name of a dead slot: a single level with a control character, which no filter
/// can name, and a `$` first, which no wildcard matches.
const DEAD_NAME: &str = "$\u{0}";

/// A subscription told that a topic it read was removed.
#[derive(Debug, Clone)]
pub(super) struct RemovedNotice {
    pub(super) sub: u32,
    pub(super) topic: Box<str>,
    pub(super) unread: u64,
    pub(super) next: u64,
}

/// The next offsets of removed topics, by name, at most [`MAX_LAST_OFFSETS`], the oldest
/// forgotten first.
#[derive(Debug, Default)]
pub(super) struct LastOffsets {
    /// Name → (next offset, stamp of its entry in `order`).
    next: HashMap<Box<str>, (u64, u64)>,
    /// Names in the order they were removed, with their stamp; an entry whose stamp is
    /// not the name's any more (taken, or removed again since) is skipped.
    order: VecDeque<(Box<str>, u64)>,
    stamp: u64,
}

impl LastOffsets {
    /// Notes that `name` ended before offset `next`.
    pub(super) fn insert(&mut self, name: &str, next: u64) {
        self.stamp += 1;
        let next = self.next.get(name).map_or(next, |&(n, _)| n.max(next));
        self.next.insert(name.into(), (next, self.stamp));
        self.order.push_back((name.into(), self.stamp));
        while self.next.len() > MAX_LAST_OFFSETS {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.next.get(&old).is_some_and(|&(_, s)| s == stamp) {
                self.next.remove(&old);
            }
        }
        if self.order.len() > 2 * MAX_LAST_OFFSETS {
            let next = &self.next;
            self.order
                .retain(|(n, s)| next.get(n).is_some_and(|&(_, cur)| cur == *s));
        }
    }

    /// Where a topic named `name` created now starts, forgetting it.
    pub(super) fn take(&mut self, name: &str) -> Option<u64> {
        self.next.remove(name).map(|(n, _)| n)
    }

    /// Where a topic named `name` created now would start.
    pub(super) fn get(&self, name: &str) -> Option<u64> {
        self.next.get(name).map(|&(n, _)| n)
    }

    /// How many names it holds.
    pub(super) fn len(&self) -> usize {
        self.next.len()
    }
}

impl TopicState {
    /// A dead slot, of generation `generation`.
    fn dead(generation: u32) -> TopicState {
        let mut t = TopicState::new(DEAD_NAME, 0, 0, TopicSettings::new(false));
        t.live = false;
        t.generation = generation;
        t.settings.idle_expiry_ms = None;
        t
    }

    /// Since when (monotonic ms) the topic holds nothing, in memory or on disk, has no
    /// subscriber and no group, if so.
    fn idle_since(&self) -> Option<u64> {
        let empty = self.ring.is_empty() && self.disk_first >= self.ring.next();
        let idle = self.live
            && empty
            && self.watchers.is_empty()
            && self.waits.is_empty()
            && self.reading.is_none();
        idle.then_some(self.touched_ms)
    }
}

impl Engine {
    /// Tells the engine the wall clock at monotonic time `now_mono_ms`, for `max-age` on
    /// a broker without a data directory ([`Engine::attach_log`] does it otherwise).
    pub fn set_wall_clock(&mut self, now_wall_ms: u64, now_mono_ms: u64) {
        if self.log.is_none() {
            self.expiry_base = (now_wall_ms, now_mono_ms);
            self.clock_ms = self.clock_ms.max(now_mono_ms);
        }
    }

    /// Names the table of last offsets holds (removed topics not created again).
    pub fn last_offsets_len(&self) -> usize {
        self.last_offsets.len()
    }

    /// Where a topic named `name` created now would start, if one was removed before.
    pub fn last_offset(&self, name: &str) -> Option<u64> {
        self.last_offsets.get(name)
    }

    /// Removes topic `tid`: its cursors (their subscriptions stay, told what they had
    /// not read, and attach again if the topic is created again), its groups' positions,
    /// what it stores in memory and on disk, its name. Returns how many messages it held.
    pub(super) fn remove_topic(&mut self, tid: TopicId) -> u64 {
        let t = &mut self.topics[tid.0 as usize];
        let (name, next) = (t.name.clone(), t.ring.next());
        let held = next - t.disk_first.min(t.ring.first());
        let watchers = std::mem::take(&mut t.watchers);
        let mut group_cursors = Vec::new();
        for ck in watchers {
            let Some(cur) = self.cursors.try_remove(ck.0 as usize) else {
                continue;
            };
            match cur.role {
                Role::Group(gid) => {
                    group_cursors.push(ck);
                    self.tell_members_removed(gid, &cur, &name, next);
                }
                Role::Outbox(_) => {}
                Role::Sub => self.detach_sub_cursor(ck, &cur, &name, next),
            }
        }
        if !group_cursors.is_empty() {
            self.detach_groups_from(tid, &group_cursors);
        }
        self.drop_memory(tid);
        self.unwritten.retain(|&(_, t, _)| t != tid);
        self.by_name.remove(&name);
        if let Some(log) = self.log.as_mut() {
            log.remove_topic(&name, next);
        }
        self.last_offsets.insert(&name, next);
        let slot = &mut self.topics[tid.0 as usize];
        *slot = TopicState::dead(slot.generation);
        self.free_topics.push(tid);
        self.live_topics -= 1;
        if !name.starts_with('$') {
            self.user_topics -= 1;
        }
        self.topics_changed += 1;
        held
    }

    /// A subscription's cursor `ck` (out of the cursor table) on a topic being removed
    /// leaves its subscription and its connection's queue, and the connection is told.
    fn detach_sub_cursor(
        &mut self,
        ck: CursorId,
        cur: &super::subscribe::Cursor,
        name: &str,
        next: u64,
    ) {
        let Some(c) = self.conns.get_mut(cur.conn.index()) else {
            return;
        };
        for &key in &c.subs {
            if let Some(s) = self.subs.get_mut(key.0 as usize) {
                if s.id == cur.sub_id && s.member.is_none() {
                    s.cursors.retain(|&k| k != ck);
                }
            }
        }
        if cur.queued {
            c.ready.retain(|&k| k != ck);
        }
        if c.ready.is_empty() && c.removed.is_empty() {
            self.wakeups.push(cur.conn);
        }
        c.removed.push_back(RemovedNotice {
            sub: cur.sub_id,
            topic: name.into(),
            unread: next.saturating_sub(cur.next) + cur.lag,
            next,
        });
    }

    /// Group `gid`'s cursor `cur` on a topic being removed: each member of the group is
    /// told (as a plain subscription is), with what the group had not handed out.
    fn tell_members_removed(
        &mut self,
        gid: super::group::GroupId,
        cur: &super::subscribe::Cursor,
        name: &str,
        next: u64,
    ) {
        let Some(g) = self.groups.get(gid.0 as usize) else {
            return;
        };
        let unread = next.saturating_sub(cur.next) + cur.lag;
        for key in &g.members {
            let Some(s) = self.subs.get(key.0 as usize) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(s.conn.index()) else {
                continue;
            };
            if c.ready.is_empty() && c.removed.is_empty() {
                self.wakeups.push(s.conn);
            }
            c.removed.push_back(RemovedNotice {
                sub: s.id,
                topic: name.into(),
                unread,
                next,
            });
        }
    }

    /// Drops every message topic `tid` holds in memory (ring and disk cache).
    fn drop_memory(&mut self, tid: TopicId) -> u64 {
        let t = &mut self.topics[tid.0 as usize];
        let mut n = 0;
        while let Some(old) = t.ring.evict() {
            self.used_bytes -= old.cost();
            self.stored -= 1;
            self.pool.give(old.into_buffer());
            n += 1;
        }
        let freed = t.cache.trim(u64::MAX);
        self.cache_bytes = self.cache_bytes.saturating_sub(freed);
        n
    }

    /// Drops every message topic `tid` stores, in memory and on disk; its offsets go on.
    /// Cursors behind are told what they lost, as for eviction. Returns how many.
    pub(super) fn purge_stored(&mut self, tid: TopicId) -> u64 {
        let t = &self.topics[tid.0 as usize];
        let (next, first) = (t.ring.next(), t.disk_first.min(t.ring.first()));
        self.drop_memory(tid);
        self.unwritten.retain(|&(_, t, _)| t != tid);
        let t = &mut self.topics[tid.0 as usize];
        t.disk_first = next;
        t.visible = next;
        t.holes.clear();
        t.touched_ms = self.clock_ms;
        if t.settings.persist {
            if let Some(log) = self.log.as_mut() {
                log.append_state(&t.name, next, next);
            }
        }
        let behind: Vec<CursorId> = t
            .watchers
            .iter()
            .copied()
            .filter(|ck| {
                let c = &self.cursors[ck.0 as usize];
                c.role == Role::Sub && c.next < next
            })
            .collect();
        for ck in behind {
            self.queue_cursor(ck);
        }
        self.pump_groups_on(tid);
        next - first
    }

    /// Drops the messages of topic `tid` stored before wall time `cutoff_ms` (its
    /// `max-age`) from memory, and moves its first offset past them (and past what is
    /// on disk below them): counted as expired. Stored times never go back within a
    /// topic, so they are at its front.
    pub(super) fn expire_before(&mut self, tid: TopicId, cutoff_ms: u64) {
        let t = &mut self.topics[tid.0 as usize];
        let old_first = t.disk_first.min(t.ring.first());
        let mut n = 0u64;
        while t
            .ring
            .get(t.ring.first())
            .is_some_and(|e| e.time_ms < cutoff_ms)
        {
            let Some(old) = t.ring.evict() else { break };
            self.used_bytes -= old.cost();
            self.stored -= 1;
            self.pool.give(old.into_buffer());
            n += 1;
        }
        // Whatever is on disk below the ring is older still; with the ring empty, the
        // newest time stored tells whether all of it expired.
        let new_first = if !t.ring.is_empty() || t.last_time < cutoff_ms {
            t.ring.first()
        } else {
            old_first
        };
        if n > 0 && t.ring.is_empty() {
            t.touched_ms = self.clock_ms;
        }
        if new_first <= old_first {
            return;
        }
        let gone = new_first - old_first;
        t.disk_first = new_first;
        t.expired += gone;
        self.stats.expired += gone;
        let freed = t.cache.trim(new_first);
        self.cache_bytes = self.cache_bytes.saturating_sub(freed);
        // The log is not told: its own retention drops the segments by the same
        // max-age (`enforce_retention`), without a record per topic per sweep; until
        // then, and after a restart, delivery skips what is past max-age.
    }

    /// The sweep of topics, called with the broker's timer (monotonic `now_ms`): drops
    /// what outlived a topic's `max-age`, and removes topics idle for their
    /// `idle-expiry` (counted, and logged once at info level). Looks at a bounded number
    /// of topics per call, going on where it stopped. Returns how many were removed.
    pub fn sweep_topics(&mut self, now_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(now_ms);
        let n = self.topics.len();
        if n == 0 {
            return 0;
        }
        let wall_ms = self.expiry_now();
        let mut expired = Vec::new();
        for _ in 0..n.min(SWEEP_TOPICS) {
            let i = if self.idle_scan < n {
                self.idle_scan
            } else {
                0
            };
            self.idle_scan = i + 1;
            let tid = TopicId(i as u32);
            if !self.topics[i].live {
                continue;
            }
            if let Some(age) = self.topics[i].settings.max_age_ms {
                self.expire_before(tid, wall_ms.saturating_sub(age));
            }
            let t = &mut self.topics[i];
            match t.idle_since() {
                Some(_) => {
                    // Busy when last seen, and no change noted since: idle from now.
                    if t.busy_seen_ms > t.touched_ms {
                        t.touched_ms = now_ms;
                    }
                    if let Some(after) = t.settings.idle_expiry_ms {
                        let idle = now_ms.saturating_sub(t.touched_ms);
                        if idle >= after {
                            expired.push((tid, idle));
                        }
                    }
                }
                None => t.busy_seen_ms = now_ms,
            }
        }
        let count = expired.len();
        for (k, &(tid, idle)) in expired.iter().enumerate() {
            if k < LOGGED_PER_SWEEP {
                log::info!(
                    "topic {} expired: idle for {} s (idle-expiry); a topic created again under its name continues at offset {}",
                    mote_sdk::topic::shown(&self.topics[tid.0 as usize].name),
                    idle / 1000,
                    self.topics[tid.0 as usize].ring.next()
                );
            }
            self.remove_topic(tid);
            self.stats.topics_expired += 1;
        }
        if count > LOGGED_PER_SWEEP {
            log::info!(
                "{} more idle topics expired (idle-expiry)",
                count - LOGGED_PER_SWEEP
            );
        }
        count
    }

    /// Milliseconds topic `tid` has been idle (see [`TopicState::idle_since`]), if it is.
    pub(super) fn idle_ms(&self, tid: TopicId) -> Option<u64> {
        let t = &self.topics[tid.0 as usize];
        let since = t.idle_since()?;
        Some(self.clock_ms.saturating_sub(since))
    }

    /// The topic named `name`, if it exists.
    pub(super) fn live_topic(&self, name: &str) -> Option<TopicId> {
        self.by_name.get(name).copied()
    }
}
