//! The engine's side of durable topics: what it appends to the [`Log`], what it reads
//! back for cursors behind a topic's memory ring (kept in a small cache per topic, shared
//! by every cursor reading there), retention moving a topic's first offset, the state of
//! durable groups, and the broker's state restored at startup. No IO: the log is the
//! store's sans-IO front, driven by the broker with the store's threads.

use std::collections::VecDeque;

use mote_sdk::{ErrorCode, Filter, Start};

use super::group::GroupId;
use super::ring::Entry;
use super::settings::{Discard, Resolved, TopicPatterns, TopicSettings};
use super::{CursorId, Engine, Refusal, TopicId};
use crate::store::{Completion, DiskMessage, Failure, Log, RecoveredGroup, Retention};

/// Windows of messages read back that one topic keeps at most.
const MAX_WINDOWS: usize = 4;

/// A topic's retention as the log takes it.
fn retention(s: &TopicSettings) -> Retention {
    Retention {
        max_messages: s.retain_messages,
        max_bytes: s.retain_bytes,
        max_age_ms: s.max_age_ms,
        discard_new: s.discard == Discard::New,
    }
}

/// A window of consecutive offsets read back from disk.
#[derive(Debug)]
struct Window {
    first: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    used: u64,
}

/// Messages read back from disk for one topic.
#[derive(Debug, Default)]
pub(super) struct DiskCache {
    windows: Vec<Window>,
}

impl DiskCache {
    pub(super) fn get(&self, offset: u64) -> Option<&Entry> {
        self.windows.iter().find_map(|w| {
            let i = offset.checked_sub(w.first)?;
            w.entries.get(usize::try_from(i).ok()?)
        })
    }

    /// The least recently used window's tick, if any.
    fn oldest(&self) -> Option<u64> {
        self.windows.iter().map(|w| w.used).min()
    }

    /// Drops the least recently used window; returns its bytes.
    fn evict_oldest(&mut self) -> usize {
        let Some(i) = self
            .windows
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.used)
            .map(|(i, _)| i)
        else {
            return 0;
        };
        self.windows.swap_remove(i).bytes
    }

    /// Drops what is below `first` (gone from retention); returns the bytes freed.
    pub(super) fn trim(&mut self, first: u64) -> usize {
        let mut freed = 0;
        for w in &mut self.windows {
            while w.first < first {
                let Some(e) = w.entries.pop_front() else {
                    break;
                };
                w.first += 1;
                w.bytes -= e.cost();
                freed += e.cost();
            }
        }
        self.windows.retain(|w| !w.entries.is_empty());
        freed
    }

    /// Adds what was read from `from` on; returns (bytes added, bytes dropped).
    fn insert(&mut self, from: u64, entries: VecDeque<Entry>, tick: u64) -> (usize, usize) {
        let end = from + entries.len() as u64;
        let mut dropped = 0;
        // A window overlapping the new one goes: the new one is as fresh.
        self.windows.retain(|w| {
            let wend = w.first + w.entries.len() as u64;
            let keep = wend <= from || w.first >= end;
            if !keep {
                dropped += w.bytes;
            }
            keep
        });
        while self.windows.len() >= MAX_WINDOWS {
            dropped += self.evict_oldest();
        }
        let bytes = entries.iter().map(Entry::cost).sum();
        self.windows.push(Window {
            first: from,
            entries,
            bytes,
            used: tick,
        });
        (bytes, dropped)
    }
}

/// Whether a message can be had now.
pub(super) enum Avail<'a> {
    /// In the ring or the cache.
    Here(&'a Entry),
    /// Retained on disk, not in memory: read it first.
    Read,
    /// Not retained any more (or never stored).
    Gone,
}

impl Engine {
    /// Starts the engine on a recovered log: every topic it holds at its next offset
    /// (the memory ring empty: reads go to disk), and every durable group at its place
    /// with what it had handed out and not seen acked queued to go again.
    pub fn attach_log(
        &mut self,
        log: Log,
        opened: &crate::store::Opened,
        patterns: TopicPatterns,
        now_wall_ms: u64,
        now_mono_ms: u64,
    ) {
        self.seq = self.seq.max(opened.seq_base);
        self.expiry_base = (now_wall_ms, now_mono_ms);
        self.clock_ms = self.clock_ms.max(now_mono_ms);
        self.defaults = TopicSettings::new(true);
        self.patterns = patterns;
        self.log = Some(Box::new(log));
        for (name, next) in &opened.removed {
            self.last_offsets.insert(name, *next);
        }
        let mut topics = opened.topics.clone();
        // By name, so that a restart lists them the same each time.
        crate::sort::sort_by(&mut topics, |a, b| a.name.cmp(&b.name));
        for t in topics {
            let Ok(topic) = mote_sdk::Topic::new_system(&t.name) else {
                continue;
            };
            match self.create_topic_at(topic, t.next) {
                Ok(tid) => {
                    let ts = &mut self.topics[tid.0 as usize];
                    ts.disk_first = t.first.min(t.next);
                    ts.last_time = t.last_time;
                    ts.meta = t
                        .meta
                        .iter()
                        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                        .collect();
                    crate::sort::sort(&mut ts.meta);
                }
                Err(r) => log::warn!("store: topic {:?} not restored: {}", t.name, r.message),
            }
        }
        for g in &opened.groups {
            self.restore_group(g);
        }
    }

    /// The settings of topic `name`: from the patterns, with the broker's defaults (a
    /// broker without a data directory persists nothing; its other keys still apply).
    pub(super) fn settings_for(&self, name: &str) -> TopicSettings {
        let mut s = self.topic_settings(name).settings();
        s.persist &= self.log.is_some();
        s
    }

    /// The settings topic `name` has (an existing topic's, which a reload may have kept
    /// longer) or would get if it were created now.
    pub fn effective_settings(&self, name: &str) -> TopicSettings {
        match self.by_name.get(name) {
            Some(&tid) => self.topics[tid.0 as usize].settings,
            None => self.settings_for(name),
        }
    }

    /// Every key of topic `name`'s settings with the pattern it came from.
    pub fn topic_settings(&self, name: &str) -> Resolved {
        let defaults = if self.log.is_some() {
            self.defaults
        } else {
            TopicSettings::new(false)
        };
        self.patterns.resolve(name, &defaults)
    }

    /// New patterns (a reload): every topic takes its settings again. A retention that
    /// shrinks keeps its old bound until the next restart (a reload never destroys
    /// data), and says so; one that grows applies at once, as does `idle-expiry`.
    pub fn set_patterns(&mut self, patterns: TopicPatterns) {
        self.patterns = patterns;
        let mut kept = 0;
        for i in 0..self.topics.len() {
            if !self.topics[i].live {
                continue;
            }
            let new = self.settings_for(&self.topics[i].name);
            let t = &mut self.topics[i];
            let old = t.settings;
            let keep = |o: Option<u64>, n: Option<u64>| match (o, n) {
                (None, _) | (_, None) => None,
                (Some(o), Some(n)) => Some(o.max(n)),
            };
            let merged = TopicSettings {
                persist: new.persist,
                retain_messages: keep(old.retain_messages, new.retain_messages),
                retain_bytes: keep(old.retain_bytes, new.retain_bytes),
                max_age_ms: keep(old.max_age_ms, new.max_age_ms),
                discard: new.discard,
                idle_expiry_ms: new.idle_expiry_ms,
            };
            if merged != new {
                kept += 1;
            }
            t.settings = merged;
        }
        if kept > 0 {
            log::warn!(
                "reload: {kept} topic(s) get a shorter retention; what they store now is kept by the old bound until the next restart (a reload never deletes stored data)"
            );
        }
    }

    fn restore_group(&mut self, g: &RecoveredGroup) {
        let Ok(filter) = Filter::new(&g.filter) else {
            return;
        };
        if self.group_names.contains_key(g.name.as_str()) {
            return;
        }
        let settings = mote_sdk::wire::GroupSettings {
            ack_timeout_ms: u32::try_from(g.ack_timeout_ms).unwrap_or(u32::MAX),
            max_deliveries: g.max_deliveries,
            prefetch: g.prefetch,
            durable: true,
        };
        // Created at the start of each topic; the recorded cursors put it back.
        let gid = self.create_group(&g.name, filter, Start::Earliest, settings, None);
        for (topic, next) in &g.cursors {
            if let Some(&tid) = self.by_name.get(topic.as_str()) {
                self.set_group_cursor(gid, tid, *next);
            }
        }
        for (topic, offset, attempt) in &g.pending {
            if let Some(&tid) = self.by_name.get(topic.as_str()) {
                self.requeue_restored(gid, tid, *offset, *attempt);
            }
        }
        // Whoever read it before the restart is gone: a channel's peer learns it.
        self.channel_presence(gid, false);
    }

    /// The data directory's log, if the broker has one.
    pub fn log(&self) -> Option<&Log> {
        self.log.as_deref()
    }

    /// The log, to drive it (the broker's store task).
    pub fn log_mut(&mut self) -> Option<&mut Log> {
        self.log.as_deref_mut()
    }

    /// The time retention by age compares stored times with: the wall clock at start,
    /// advanced by the monotonic clock, so that a wall clock jumping while the broker
    /// runs (NTP at boot, a Pi without a real-time clock) never wipes data.
    pub(super) fn expiry_now(&self) -> u64 {
        let (wall0, mono0) = self.expiry_base;
        wall0 + self.clock_ms.saturating_sub(mono0)
    }

    /// Refuses a publish to a persisted topic while the log refuses appends.
    pub(super) fn log_refusal(&self, tid: TopicId) -> Option<Refusal> {
        let t = &self.topics[tid.0 as usize];
        if !t.settings.persist {
            return None;
        }
        let log = self.log.as_ref()?;
        let f = log.refusal(t.settings.discard == Discard::New)?;
        Some(match f {
            Failure::Full(m) => Refusal::new(ErrorCode::STORAGE_FULL, m),
            Failure::Failed(m) => Refusal::new(ErrorCode::STORAGE_FAILED, m),
        })
    }

    /// Whether a read was asked of the log since the last call: the store task must
    /// look (cheap enough to ask after every delivery round).
    pub fn take_log_wanted(&mut self) -> bool {
        std::mem::take(&mut self.log_wanted)
    }

    /// Whether the log is behind by more than its backlog: the broker stops reading
    /// publishers until it catches up.
    pub fn log_congested(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.congested())
    }

    /// When the last confirmed publish may be answered: `Some(position)` when it must
    /// wait for the sync of that log position (`--sync always`), `None` at once.
    pub fn take_confirm_gate(&mut self) -> Option<u64> {
        self.confirm_gate.take()
    }

    /// The log position synced to disk.
    pub fn log_synced(&self) -> u64 {
        self.log.as_ref().map_or(u64::MAX, |l| l.synced())
    }

    /// Whether message `offset` of topic `tid` can be had now.
    pub(super) fn avail(&self, tid: TopicId, offset: u64) -> Avail<'_> {
        let t = &self.topics[tid.0 as usize];
        if let Some(e) = t.ring.get(offset) {
            if self.past_max_age(tid, e) {
                return Avail::Gone;
            }
            return Avail::Here(e);
        }
        // An offset in a hole is gone too: a redelivery or a dead letter of it would
        // otherwise ask the log for it again at every pump.
        if offset < t.disk_first || offset >= t.visible || self.hole_end(tid, offset).is_some() {
            return Avail::Gone;
        }
        match t.cache.get(offset) {
            Some(e) if self.past_max_age(tid, e) => Avail::Gone,
            Some(e) => Avail::Here(e),
            None if t.settings.persist => Avail::Read,
            None => Avail::Gone,
        }
    }

    /// Whether message `e` of topic `tid` outlived the topic's `max-age` (the sweep
    /// drops it soon; until then it is never delivered).
    pub(super) fn past_max_age(&self, tid: TopicId, e: &Entry) -> bool {
        self.topics[tid.0 as usize]
            .settings
            .max_age_ms
            .is_some_and(|age| e.time_ms < self.expiry_now().saturating_sub(age))
    }

    /// Asks the log for topic `tid` from `offset` on (once at a time per topic), and
    /// remembers cursor `ck` to queue again when it comes.
    pub(super) fn want(&mut self, tid: TopicId, offset: u64, ck: Option<CursorId>) {
        let t = &mut self.topics[tid.0 as usize];
        if let Some(ck) = ck {
            if super::holes::hole_end_in(&t.holes, offset).is_some() {
                // A hole the read that stopped the cursor found after what it cached
                // (a message too large for the frame limit): the cursor's next turn
                // passes it, told as lag; nothing to read.
                self.queue_cursor(ck);
                return;
            }
            if !t.waiting.contains(&ck) {
                t.waiting.push(ck);
            }
        }
        if t.reading.is_some() {
            return;
        }
        let asked = self
            .log
            .as_mut()
            .is_some_and(|l| l.request_read(&t.name, offset));
        if asked {
            t.reading = Some(offset);
            self.log_wanted = true;
        } else {
            // Not on disk after all: lost to damage or set aside (a hole up to what is
            // stored next), or never written or gone meanwhile (given up). Either way
            // cursors go on rather than wait forever.
            match self
                .log
                .as_ref()
                .and_then(|l| l.next_stored(&t.name, offset))
            {
                Some(end) if end > offset => {
                    log::warn!(
                        "store: {} offsets {offset}..{end} are not on disk (damaged or set aside); skipped",
                        mote_sdk::topic::shown(&t.name)
                    );
                    super::holes::add_hole(&mut t.holes, offset, end);
                }
                _ => t.disk_first = t.disk_first.max(t.ring.first().min(offset + 1)),
            }
            self.wake_waiting(tid);
        }
    }

    fn wake_waiting(&mut self, tid: TopicId) {
        let waiting = std::mem::take(&mut self.topics[tid.0 as usize].waiting);
        for ck in waiting {
            if self.cursors.contains(ck.0 as usize) {
                self.queue_cursor(ck);
            }
        }
        self.pump_groups_on(tid);
    }

    /// Pumps every group reading topic `tid`.
    pub(super) fn pump_groups_on(&mut self, tid: TopicId) {
        let gids: Vec<GroupId> = self.topics[tid.0 as usize]
            .watchers
            .iter()
            .filter_map(|&ck| match self.cursors[ck.0 as usize].role {
                super::subscribe::Role::Group(g) => Some(g),
                _ => None,
            })
            .collect();
        for g in gids {
            self.pump(g);
        }
    }

    /// Takes a completion of the store's threads; returns whether confirmations waiting
    /// for a sync may go now.
    pub(crate) fn handle_log_done(
        &mut self,
        done: crate::store::io::Done,
        now_mono_ms: u64,
    ) -> bool {
        self.clock_ms = self.clock_ms.max(now_mono_ms);
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        let c = log.handle(done);
        if !self.unwritten.is_empty() {
            self.release_written();
        }
        match c {
            Completion::None | Completion::Failed => false,
            Completion::Synced => true,
            Completion::Read {
                topic,
                from,
                messages,
                skip_to,
            } => {
                self.read_back(&topic, from, messages, skip_to);
                false
            }
        }
    }

    /// Makes what the log has written (synced, under `--sync always`) deliverable, and
    /// wakes the cursors and groups waiting for it.
    fn release_written(&mut self) {
        let Some(log) = self.log.as_ref() else {
            return;
        };
        let done = if log.sync_always() {
            log.synced()
        } else {
            log.written()
        };
        while let Some(&(pos, tid, end)) = self.unwritten.front() {
            if pos > done {
                break;
            }
            self.unwritten.pop_front();
            let t = &mut self.topics[tid.0 as usize];
            if end > t.visible {
                t.visible = end;
                self.notify_watchers(tid);
            }
        }
    }

    /// Messages read back for `topic` from `from` on.
    fn read_back(
        &mut self,
        topic: &str,
        from: u64,
        messages: Vec<DiskMessage>,
        skip_to: Option<u64>,
    ) {
        let Some(&tid) = self.by_name.get(topic) else {
            return;
        };
        self.cache_tick += 1;
        let tick = self.cache_tick;
        let t = &mut self.topics[tid.0 as usize];
        if t.reading == Some(from) {
            t.reading = None;
        }
        if let Some(to) = skip_to {
            // Damaged on disk: those offsets are lost, and cursors go past them (told so).
            log::warn!(
                "store: {} offsets {from}..{to} could not be read back (damaged); skipped",
                mote_sdk::topic::shown(topic)
            );
            super::holes::add_hole(&mut t.holes, from, to);
        }
        // The cache window ends before the first message no frame within today's limit
        // can carry (stored under a larger one): those become holes, and what follows
        // them is read again when a cursor gets there.
        let max_frame = self.limits.max_frame();
        let fit = messages
            .iter()
            .position(|m| !super::holes::fits(topic.len(), m, max_frame))
            .unwrap_or(messages.len());
        if fit < messages.len() {
            self.skip_oversize(tid, &messages[fit..]);
        }
        if !messages.is_empty() {
            self.stats.disk_reads += 1;
        }
        let t = &mut self.topics[tid.0 as usize];
        if fit > 0 {
            let entries: VecDeque<Entry> = messages
                .into_iter()
                .take(fit)
                .map(|m| {
                    let key = m.key.as_deref().unwrap_or_default();
                    Entry::new(Vec::new(), m.seq, m.time_ms, key, &m.payload)
                })
                .collect();
            let (added, dropped) = t.cache.insert(from, entries, tick);
            self.cache_bytes = self.cache_bytes + added - dropped.min(self.cache_bytes + added);
            self.trim_cache();
        }
        self.wake_waiting(tid);
    }

    /// Keeps the caches of all topics within their budget, the least recently filled
    /// window going first.
    fn trim_cache(&mut self) {
        let budget = self.limits.memory / 8;
        while self.cache_bytes > budget {
            // Never the window just read: its cursors have yet to take it.
            let oldest = self
                .topics
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.cache.oldest().map(|u| (u, i)))
                .filter(|&(u, _)| u < self.cache_tick)
                .min();
            let Some((_, i)) = oldest else {
                break;
            };
            let freed = self.topics[i].cache.evict_oldest();
            self.cache_bytes = self.cache_bytes.saturating_sub(freed);
        }
    }

    /// Where offsets of topic `tid` starting at `offset` are lost to damage: the end of
    /// that hole.
    pub(super) fn hole_end(&self, tid: TopicId, offset: u64) -> Option<u64> {
        super::holes::hole_end_in(&self.topics[tid.0 as usize].holes, offset)
    }

    /// Applies retention on disk (each topic's own, then the disk budget) and moves
    /// first offsets: cursors behind them are told what they missed at their next
    /// delivery. Called every second or so.
    pub fn enforce_retention(&mut self) {
        let now = self.expiry_now();
        let Some(mut log) = self.log.take() else {
            return;
        };
        let topics = &self.topics;
        let by_name = &self.by_name;
        let mut retention_of = |name: &str| {
            by_name
                .get(name)
                .map(|t| retention(&topics[t.0 as usize].settings))
                .unwrap_or_default()
        };
        let trims = log.enforce(now, &mut retention_of);
        self.log = Some(log);
        for t in trims {
            let Some(&tid) = self.by_name.get(t.topic.as_str()) else {
                continue;
            };
            let ts = &mut self.topics[tid.0 as usize];
            if t.first > ts.disk_first {
                ts.disk_first = t.first.min(ts.ring.next());
                ts.expired += t.expired;
                ts.evicted_disk += t.evicted;
                self.stats.expired += t.expired;
                self.stats.evicted_disk += t.evicted;
                let freed = ts.cache.trim(ts.disk_first);
                self.cache_bytes = self.cache_bytes.saturating_sub(freed);
                let below = ts.holes.partition_point(|&(_, end)| end <= ts.disk_first);
                ts.holes.drain(..below);
                // A ring holding messages below the new first drops them too.
                while ts.ring.first() < ts.disk_first {
                    let Some(old) = ts.ring.evict() else { break };
                    self.used_bytes -= old.cost();
                    self.stored -= 1;
                    self.pool.give(old.into_buffer());
                }
            }
        }
    }

    /// Appends the state of every durable group that changed since the last call.
    pub fn persist_groups(&mut self) {
        if self.log.is_none() || !self.groups_dirty {
            return;
        }
        self.groups_dirty = false;
        let records: Vec<RecoveredGroup> = self
            .groups
            .iter()
            .filter(|(_, g)| g.dirty && g.settings.durable)
            .map(|(k, _)| self.group_record(GroupId(k as u32)))
            .collect();
        for (_, g) in self.groups.iter_mut() {
            g.dirty = false;
        }
        if let Some(log) = self.log.as_mut() {
            for r in &records {
                log.append_group(r);
            }
        }
    }

    /// A topic's retained range, written when a topic is created (so that its offsets
    /// survive a restart even before its first message is written).
    pub(super) fn persist_topic_state(&mut self, tid: TopicId) {
        let t = &self.topics[tid.0 as usize];
        if !t.settings.persist {
            return;
        }
        let (name, first, next) = (t.name.clone(), t.disk_first, t.ring.next());
        if let Some(log) = self.log.as_mut() {
            log.append_state(&name, first, next);
        }
    }

    /// Publishes are refused with this code while the log refuses appends.
    pub(super) fn note_log_refusal(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.count_refused();
        }
    }

    /// The first offset of topic `tid` stored after broker sequence number `seq`, as
    /// near as memory and the log's runs tell (at or before the exact one: a cursor
    /// starting there skips what is not after `seq`), and whether the ring alone could
    /// not tell.
    pub(super) fn offset_after_seq(&self, tid: TopicId, seq: u64) -> u64 {
        let t = &self.topics[tid.0 as usize];
        // In memory: exact.
        if let Some(e) = t.ring.get(t.ring.first()) {
            if e.seq <= seq || !t.settings.persist {
                return t.ring.after_seq(seq).0;
            }
        }
        t.disk_first
    }
}
