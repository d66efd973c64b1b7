//! Publishing: topic lookup and creation, storing in the ring, the memory budget.

use mote_sdk::wire::MAX_KEY_LEN;
use mote_sdk::{ErrorCode, Topic};

use super::ring::Entry;
use super::subscribe::Role;
use super::{ConnId, Engine, Refusal, TopicId, TopicState};

impl Engine {
    /// Stores a message published by `conn` at wall-clock `time_ms` and returns its offset.
    ///
    /// On the steady-state path (a topic the connection published to before) this does one
    /// allocation, for the stored key and payload.
    pub fn handle_publish(
        &mut self,
        conn: ConnId,
        time_ms: u64,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<u64, Refusal> {
        let refused = |e: &mut Engine, r: Refusal| {
            e.stats.publish_refused += 1;
            e.stats.count_error(r.code);
            Err(r)
        };
        if payload.len() > self.limits.max_payload {
            let r = Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "payload is {} bytes, the limit is {} (--max-payload)",
                    payload.len(),
                    self.limits.max_payload
                ),
            );
            return refused(self, r);
        }
        let key = key.unwrap_or_default();
        if key.len() > MAX_KEY_LEN {
            let r = Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!("key is {} bytes, the limit is {MAX_KEY_LEN}", key.len()),
            );
            return refused(self, r);
        }
        // Limits::validate keeps this from happening with a key of any allowed size; an
        // engine built with other limits still never stores what its ring cannot hold.
        let cost = key.len() + payload.len() + super::ENTRY_OVERHEAD;
        let room = self.limits.ring_bytes.min(self.limits.memory);
        if cost > room {
            let r = Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "message with its key needs {cost} bytes, a ring holds at most {room} (--ring-bytes, --memory)"
                ),
            );
            return refused(self, r);
        }
        let tid = match self.topic_for_publish(conn, topic, payload) {
            Ok(t) => t,
            Err(r) => return refused(self, r),
        };
        if self.topics[tid.0 as usize].schema.is_some() {
            if let Err(r) = self.check_topic_schema(tid, payload) {
                return refused(self, r);
            }
        }
        if self.log.is_some() {
            if let Some(r) = self.log_refusal(tid) {
                self.note_log_refusal();
                return refused(self, r);
            }
        }
        let offset = self.store(tid, time_ms, key, payload);
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.msgs_in += 1;
        }
        Ok(offset)
    }

    /// Stores a message the broker itself writes (dead letters) in the `$`-topic `name`.
    pub(super) fn publish_system(
        &mut self,
        name: &str,
        time_ms: u64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<u64, Refusal> {
        let topic = Topic::new_system(name)
            .map_err(|e| Refusal::new(ErrorCode::BAD_TOPIC, format!("bad topic {name:?}: {e}")))?;
        let tid = match self.by_name.get(name) {
            Some(&t) => t,
            None => self.create_topic(topic)?,
        };
        let cost = key.len() + payload.len() + super::ENTRY_OVERHEAD;
        if cost > self.limits.ring_bytes.min(self.limits.memory) {
            return Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                "too large for a ring".into(),
            ));
        }
        Ok(self.store(tid, time_ms, key, payload))
    }

    /// Stores a checked message in topic `tid`, evicting what the limits require, and
    /// tells its watchers. Returns its offset.
    fn store(&mut self, tid: TopicId, time_ms: u64, key: &[u8], payload: &[u8]) -> u64 {
        let cost = key.len() + payload.len() + super::ENTRY_OVERHEAD;
        self.seq += 1;
        let mut t = &mut self.topics[tid.0 as usize];
        if let Some(age) = t.settings.max_age_ms {
            self.expire_for_store(tid, age);
            t = &mut self.topics[tid.0 as usize];
        }
        // A topic's stored times never go back, whatever the wall clock does.
        let time_ms = time_ms.max(t.last_time);
        t.last_time = time_ms;
        // Make room first, so the evicted buffer can carry the new message.
        let (max_n, max_b) = (self.limits.ring_messages, self.limits.ring_bytes);
        while !t.ring.is_empty() && (t.ring.len() >= max_n || t.ring.bytes() + cost > max_b) {
            let Some(old) = t.ring.evict() else { break };
            t.evicted += 1;
            self.used_bytes -= old.cost();
            self.stored -= 1;
            self.stats.evicted_ring += 1;
            self.pool.give(old.into_buffer());
        }
        // Out of memory is out of retention, unless the topic is on disk.
        if !t.settings.persist {
            t.disk_first = t.ring.first();
        }
        let entry = Entry::new(
            self.pool.take(key.len() + payload.len()),
            self.seq,
            time_ms,
            key,
            payload,
        );
        debug_assert_eq!(cost, entry.cost());
        let offset = t.ring.push(entry);
        t.published += 1;
        // No `touched_ms` here: a topic holding a message is not idle, and every way it
        // empties again (eviction, expiry, purge, the sweep seeing it) sets it.
        let generation = t.generation;
        let held = t.settings.persist && self.log.is_some();
        if held {
            self.append_to_log(tid, offset, time_ms, key, payload);
        } else {
            t.visible = offset + 1;
        }
        self.used_bytes += cost;
        self.stored += 1;
        self.budget_queue.push_back((tid, generation, offset));
        if self.used_bytes > self.limits.memory {
            self.evict_for_memory();
        }
        if self.budget_queue.len() > 2 * self.stored + 1024 {
            let topics = &self.topics;
            self.budget_queue.retain(|&(t, g, o)| {
                let t = &topics[t.0 as usize];
                t.generation == g && o >= t.ring.first()
            });
        }
        if !held {
            self.notify_watchers(tid);
        }
        self.stats.published += 1;
        self.stats.bytes_published += payload.len() as u64;
        offset
    }

    /// Appends a message stored in persisted topic `tid` to the log; it is delivered once
    /// the log has written it (see `TopicState::visible`).
    #[inline(never)]
    fn append_to_log(
        &mut self,
        tid: TopicId,
        offset: u64,
        time_ms: u64,
        key: &[u8],
        payload: &[u8],
    ) {
        let t = &self.topics[tid.0 as usize];
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let key = (!key.is_empty()).then_some(key);
        log.append_message(&t.name, offset, self.seq, time_ms, key, payload);
        let at = log.position();
        if log.sync_always() {
            self.confirm_gate = Some(at);
        }
        // A reader waits for it (a subscriber with nothing else to send, a group): the
        // batch goes to the writer at the end of this turn rather than after `batch_ms`.
        // A subscriber still sending what is visible does not hurry it, so that under
        // load batches stay large.
        let cursors = &self.cursors;
        let waiting = t.watchers.iter().any(|ck| {
            let c = &cursors[ck.0 as usize];
            !c.queued || matches!(c.role, Role::Group(_))
        });
        if waiting {
            log.hurry();
        }
        match self.unwritten.back_mut() {
            Some((pos, id, end)) if *id == tid => (*pos, *end) = (at, offset + 1),
            _ => self.unwritten.push_back((at, tid, offset + 1)),
        }
    }

    /// Queues the cursors watching topic `tid` (new messages became visible there), and
    /// has its groups hand them to members.
    #[inline(always)]
    pub(super) fn notify_watchers(&mut self, tid: TopicId) {
        let t = &self.topics[tid.0 as usize];
        let mut grouped = false;
        for &ck in &t.watchers {
            let cur = &mut self.cursors[ck.0 as usize];
            match cur.role {
                Role::Group(_) => grouped = true,
                _ if cur.queued => {}
                _ => {
                    cur.queued = true;
                    let c = &mut self.conns[cur.conn.index()];
                    if c.ready.is_empty() {
                        self.wakeups.push(cur.conn);
                    }
                    c.ready.push_back(ck);
                }
            }
        }
        // Groups reading the topic hand the message to a member now (no list: no
        // allocation per message). Pumping never changes this topic's watchers.
        if grouped {
            let mut i = 0;
            while let Some(&ck) = self.topics[tid.0 as usize].watchers.get(i) {
                if let Role::Group(g) = self.cursors[ck.0 as usize].role {
                    self.pump(g);
                }
                i += 1;
            }
        }
    }

    /// What outlived topic `tid`'s max-age `age` goes before a new message comes. Out of
    /// line: most topics have no max-age, and the store path stays small without it.
    #[cold]
    #[inline(never)]
    fn expire_for_store(&mut self, tid: TopicId, age: u64) {
        let now = self.expiry_now().max(self.topics[tid.0 as usize].last_time);
        self.expire_before(tid, now.saturating_sub(age));
    }

    /// Drops the oldest messages across all topics until the budget holds.
    fn evict_for_memory(&mut self) {
        while self.used_bytes > self.limits.memory {
            let Some((tid, generation, offset)) = self.budget_queue.pop_front() else {
                break;
            };
            let t = &mut self.topics[tid.0 as usize];
            // A removed topic's entries never touch the one now in its slot.
            if t.generation == generation && t.ring.first() == offset {
                if t.ring.len() == 1 {
                    t.touched_ms = self.clock_ms;
                }
                if let Some(old) = t.ring.evict() {
                    t.evicted += 1;
                    self.used_bytes -= old.cost();
                    self.stored -= 1;
                    self.stats.evicted_memory += 1;
                    self.pool.give(old.into_buffer());
                }
                if !t.settings.persist {
                    t.disk_first = t.ring.first();
                }
            }
        }
    }

    /// The topic a publish goes to, created if new; a payload the new topic's JSON schema
    /// would refuse is refused before, so refused publishes never take a topic's place.
    fn topic_for_publish(
        &mut self,
        conn: ConnId,
        name: &str,
        payload: &[u8],
    ) -> Result<TopicId, Refusal> {
        let last = self.conns.get(conn.index()).and_then(|c| c.last_topic);
        if let Some(t) = last {
            if *self.topics[t.0 as usize].name == *name {
                return Ok(t);
            }
        }
        let found = self.by_name.get(name).copied();
        let tid = match found {
            // A `$` topic the broker made (`$dead/...`) exists too: checked below.
            Some(t) if !name.starts_with('$') => t,
            _ => {
                let topic = Topic::new(name).map_err(|e| {
                    Refusal::new(
                        ErrorCode::BAD_TOPIC,
                        format!("bad topic {}: {e}", mote_sdk::topic::shown(name)),
                    )
                })?;
                match found {
                    Some(t) => t,
                    None => {
                        self.check_schema(name, payload)?;
                        self.create_topic(topic)?
                    }
                }
            }
        };
        if let Some(c) = self.conns.get_mut(conn.index()) {
            c.last_topic = Some(tid);
        }
        Ok(tid)
    }

    /// Creates a topic and attaches every subscription whose filter matches it, starting
    /// at its first offset: all of a new topic's messages are new to existing
    /// subscribers. A topic removed before continues above its last offset.
    fn create_topic(&mut self, topic: Topic<'_>) -> Result<TopicId, Refusal> {
        let tid = self.create_topic_at(topic, 0)?;
        self.persist_topic_state(tid);
        Ok(tid)
    }

    /// Creates a topic whose next message gets offset `next` (0 for a new topic; a
    /// restored one continues where it was), or above, where a topic of that name that
    /// was removed ended. Takes the slot of a removed topic if there is one.
    pub(super) fn create_topic_at(
        &mut self,
        topic: Topic<'_>,
        next: u64,
    ) -> Result<TopicId, Refusal> {
        let name = topic.as_str();
        // The broker's own `$` topics do not count toward `--max-topics`, but they are
        // bounded too: as many again at most.
        let system = name.starts_with('$');
        let held = if system {
            self.live_topics - self.user_topics
        } else {
            self.user_topics
        };
        if held >= self.limits.max_topics {
            let what = if system {
                "broker (`$`) topics"
            } else {
                "topics"
            };
            return Err(Refusal::new(
                ErrorCode::TOPIC_LIMIT,
                format!(
                    "cannot create topic {}: the broker holds {held} {what}, the limit is {} (--max-topics; deleted and idle topics free their place)",
                    mote_sdk::topic::shown(name),
                    self.limits.max_topics
                ),
            ));
        }
        // Continues above the last offset of a topic of that name removed before.
        let next = next.max(self.last_offsets.take(name).unwrap_or(0));
        let mut state = TopicState::new(name, self.seq, next, self.settings_for(name));
        state.schema = self.schemas.resolve(name);
        state.touched_ms = self.clock_ms;
        let tid = match self.free_topics.pop() {
            Some(tid) => {
                let slot = &mut self.topics[tid.0 as usize];
                state.generation = slot.generation.wrapping_add(1);
                *slot = state;
                tid
            }
            None => {
                self.topics.push(state);
                TopicId((self.topics.len() - 1) as u32)
            }
        };
        self.live_topics += 1;
        if !system {
            self.user_topics += 1;
        }
        self.topics_changed += 1;
        self.by_name.insert(name.into(), tid);
        let matching: Vec<_> = self
            .subs
            .iter()
            // Group members read through their group's cursors.
            .filter(|(_, s)| s.member.is_none() && s.filter.matches(name))
            .map(|(k, _)| super::SubId(k as u32))
            .collect();
        for sub in matching {
            self.attach(sub, tid, next, 0);
        }
        for g in self.groups_matching(name) {
            self.attach_group(g, tid, next);
        }
        Ok(tid)
    }
}
