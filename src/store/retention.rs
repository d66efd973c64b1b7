//! Retention: per-topic limits, the disk budget, deleting dead segments (carrying forward
//! what a restart still needs) and compacting a mostly dead one.

use super::*;

impl Log {
    /// Applies retention: each topic's own limits (`retention(name)`), then the disk
    /// budget (oldest data first, except topics that keep theirs), then deletes
    /// segments with nothing live left, carrying forward what a restart still needs
    /// from them, and starts a compaction of the oldest segment when it is mostly dead.
    /// `now_wall_ms` is the time retention by age compares stored times with. Returns
    /// the topics whose first offset moved.
    pub fn enforce(
        &mut self,
        now_wall_ms: u64,
        retention: &mut dyn FnMut(&str) -> Retention,
    ) -> Vec<Trim> {
        let mut trims: HashMap<u64, Trim> = HashMap::new();
        let active = self.active_no();
        // Per topic: count, bytes and age.
        let ids: Vec<u64> = self.topics.keys().copied().collect();
        let mut keeps_data = HashSet::new();
        for id in ids {
            let (name, first, next) = {
                let t = &self.topics[&id];
                (t.name.clone(), t.first, t.next)
            };
            let r = retention(&name);
            if r.discard_new {
                keeps_data.insert(id);
            }
            let mut new_first = first;
            if let Some(n) = r.max_messages {
                new_first = new_first.max(next.saturating_sub(n));
            }
            if r.max_bytes.is_some() || r.max_age_ms.is_some() {
                // Walk its runs newest first.
                let mut kept_bytes = 0u64;
                let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
                for &no in &self.topics[&id].segs {
                    if let Ok(i) = self.segments.binary_search_by_key(&no, |s| s.no) {
                        if let Some(st) = self.segments[i].topics.iter().find(|t| t.id == id) {
                            for run in &st.runs {
                                runs.push((run.first, run.last, run.bytes, run.last_time));
                            }
                        }
                    }
                }
                crate::sort::sort_by_key(&mut runs, |r| std::cmp::Reverse(r.0));
                for (rf, rl, rb, rt) in runs {
                    if rl < new_first {
                        break;
                    }
                    let live_first = rf.max(new_first);
                    let live = rl - live_first + 1;
                    let per = rb / (rl - rf + 1).max(1);
                    if let Some(max_age) = r.max_age_ms {
                        if now_wall_ms.saturating_sub(rt) > max_age {
                            new_first = new_first.max(rl + 1);
                            break;
                        }
                    }
                    if let Some(max) = r.max_bytes {
                        if kept_bytes + live * per > max {
                            let fit = (max - kept_bytes.min(max)) / per.max(1);
                            new_first = new_first.max(rl + 1 - fit.min(live));
                            break;
                        }
                    }
                    kept_bytes += live * per;
                }
            }
            if new_first > first {
                let t = self.topics.get_mut(&id).unwrap_or_else(|| unreachable!());
                t.first = new_first;
                trims.insert(
                    id,
                    Trim {
                        topic: name.to_string(),
                        first: new_first,
                        expired: new_first - first,
                        evicted: 0,
                    },
                );
            }
        }
        // The disk budget: the oldest segments go, but not those with data of topics
        // that keep theirs.
        let mut total: u64 = self.segments.iter().map(|s| s.len).sum();
        let mut dropped = HashSet::new();
        self.full_for_new = false;
        for i in 0..self.segments.len() {
            if total <= self.cfg.disk {
                break;
            }
            let seg = &self.segments[i];
            if seg.no == active {
                break;
            }
            let keeps = seg.topics.iter().any(|st| {
                keeps_data.contains(&st.id)
                    && st
                        .runs
                        .iter()
                        .any(|r| r.last >= self.topics.get(&st.id).map_or(u64::MAX, |t| t.first))
            });
            if keeps {
                self.full_for_new = true;
                continue;
            }
            total -= seg.len;
            dropped.insert(seg.no);
            for st in &seg.topics {
                let Some(t) = self.topics.get_mut(&st.id) else {
                    continue;
                };
                let last = st.runs.iter().map(|r| r.last).max().unwrap_or(0);
                if last >= t.first {
                    let evicted = last + 1 - t.first;
                    let before = t.first;
                    t.first = last + 1;
                    self.stats.evicted_disk += evicted;
                    let e = trims.entry(st.id).or_insert(Trim {
                        topic: t.name.to_string(),
                        first: before,
                        expired: 0,
                        evicted: 0,
                    });
                    e.first = t.first;
                    e.evicted += evicted;
                }
            }
        }
        for t in trims.values() {
            if let Some(&id) = self.ids.get(t.topic.as_str()) {
                let (first, next) = (self.topics[&id].first, self.topics[&id].next);
                let name = t.topic.clone();
                self.append_state(&name, first, next);
            }
        }
        self.delete_dead(&dropped);
        self.maybe_compact();
        trims.into_values().collect()
    }

    /// Whether any record in segment `seg` is still live.
    fn live_bytes(&self, seg: &SegmentInfo) -> u64 {
        let mut live = 0;
        for st in &seg.topics {
            let first = self.topics.get(&st.id).map_or(u64::MAX, |t| t.first);
            for r in &st.runs {
                if r.last >= first {
                    let live_first = r.first.max(first);
                    let per = r.bytes / (r.last - r.first + 1).max(1);
                    live += (r.last - live_first + 1) * per;
                }
            }
        }
        live
    }

    /// Deletes sealed segments that are dead (or in `dropped`), oldest first, after
    /// appending what a restart needs from them: the state of each topic and group
    /// whose newest record they hold.
    fn delete_dead(&mut self, dropped: &HashSet<u64>) {
        let active = self.active_no();
        let mut gone = Vec::new();
        for seg in &self.segments {
            if seg.no == active || Some(seg.no) == self.compacting {
                continue;
            }
            if dropped.contains(&seg.no) || self.live_bytes(seg) == 0 {
                gone.push(seg.no);
            }
        }
        if gone.is_empty() {
            return;
        }
        // Carried forward: topics and groups whose newest record is in a doomed segment.
        let carry: Vec<(Box<str>, u64, u64)> = self
            .topics
            .values()
            .filter(|t| gone.contains(&t.last_seg))
            .map(|t| (t.name.clone(), t.first, t.next))
            .collect();
        let metas: Vec<u64> = self
            .topics
            .iter()
            .filter(|(_, t)| gone.contains(&t.meta_seg) && !t.meta.is_empty())
            .map(|(&id, _)| id)
            .collect();
        for (name, first, next) in carry {
            self.append_state(&name, first, next);
        }
        for id in metas {
            if let Some(t) = self.topics.get(&id) {
                let (name, meta) = (t.name.clone(), t.meta.clone());
                self.append_meta(&name, &meta);
            }
        }
        // Removed topics too: their last offsets, and that their ids are retired.
        let removed: Vec<(Box<str>, u64, u64)> = self
            .removed
            .iter()
            .filter(|(_, r)| gone.contains(&r.seg))
            .map(|(n, r)| (n.clone(), r.next, r.id))
            .collect();
        let active = self.active_no();
        for (name, next, id) in removed {
            self.open_batch();
            format::put_removed(&mut self.batch, id, &name, next);
            self.active_mut().removed.push((id, name.to_string(), next));
            if let Some(r) = self.removed.get_mut(&name) {
                r.seg = active;
            }
        }
        let groups: Vec<GroupRecord> = self
            .groups
            .values()
            .filter(|(no, _)| gone.contains(no))
            .map(|(_, g)| g.clone())
            .collect();
        for g in groups {
            let rec = self.recovered_group(&g);
            self.append_group(&rec);
        }
        // What was carried must be durable before its old copy is deleted: the writer
        // syncs before every delete.
        self.seal();
        for no in gone {
            if let Ok(i) = self.segments.binary_search_by_key(&no, |s| s.no) {
                let seg = self.segments.remove(i);
                self.stats.disk_bytes = self.stats.disk_bytes.saturating_sub(seg.len);
                for st in &seg.topics {
                    if let Some(t) = self.topics.get_mut(&st.id) {
                        t.segs.retain(|&n| n != no);
                    }
                }
            }
            self.cmds.push(WriteCmd::Delete { no });
        }
    }

    /// Starts compacting the oldest sealed segment when less than a quarter of it is
    /// live: its live records are read back and appended again, then it goes.
    fn maybe_compact(&mut self) {
        if self.compacting.is_some() || self.failure.is_some() || self.segments.len() < 2 {
            return;
        }
        let seg = &self.segments[0];
        let live = self.live_bytes(seg);
        if live == 0 || live * 4 >= seg.len {
            return;
        }
        let no = seg.no;
        let len = seg.len as usize;
        self.compacting = Some(no);
        self.queue_read(PendingRead {
            topic: 0,
            from: 0,
            no,
            pos: 0,
            len,
            compact: true,
        });
    }

    pub(super) fn compact_done(
        &mut self,
        r: PendingRead,
        bytes: std::io::Result<Vec<u8>>,
    ) -> Completion {
        self.compacting = None;
        let Ok(bytes) = bytes else {
            return Completion::None;
        };
        let mut copied = 0u64;
        let mut pos = format::SEGMENT_HEADER;
        while pos < bytes.len() {
            let format::Batch::Whole { len } = format::batch(&bytes[pos..]) else {
                match format::resync(&bytes, pos + 1) {
                    Some(p) => {
                        pos = p;
                        continue;
                    }
                    None => break,
                }
            };
            let body = &bytes[pos + format::BATCH_HEADER..pos + len];
            for rec in Records::new(body).flatten() {
                if let Record::Message {
                    id,
                    offset,
                    seq,
                    time_ms,
                    key,
                    payload,
                } = rec
                {
                    let Some(t) = self.topics.get(&id) else {
                        continue;
                    };
                    if offset < t.first {
                        continue;
                    }
                    let name = t.name.clone();
                    self.append_copy(&name, offset, seq, time_ms, key, payload);
                    copied += 1;
                }
            }
            pos += len;
        }
        self.stats.compactions += 1;
        log::info!(
            "store: compacted segment {}: {copied} live messages copied forward",
            r.no
        );
        let mut dropped = HashSet::new();
        dropped.insert(r.no);
        self.delete_dead(&dropped);
        Completion::None
    }

    /// Appends a copy of an old message (compaction): like a message, but its run is
    /// apart from the topic's newest.
    fn append_copy(
        &mut self,
        name: &str,
        offset: u64,
        seq: u64,
        time_ms: u64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        let next = self
            .ids
            .get(name)
            .and_then(|id| self.topics.get(id))
            .map(|t| t.next);
        self.append_message(name, offset, seq, time_ms, key, payload);
        // append_message moved `next` to this old offset + 1: put it back.
        if let Some(next) = next {
            if let Some(id) = self.ids.get(name).copied() {
                if let Some(t) = self.topics.get_mut(&id) {
                    t.next = t.next.max(next);
                }
            }
        }
    }
}
