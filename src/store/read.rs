//! Reading back: where an offset of a topic is on disk, reads for cursors behind the
//! memory ring (asked of the reader thread, waiting for bytes not written yet), and what
//! a read brings: messages, or damage to skip.

use super::*;

impl Log {
    /// The oldest offset of topic `name` retained on disk, and the next.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let id = self.ids.get(name)?;
        let t = self.topics.get(id)?;
        Some((t.first, t.next))
    }

    /// Asks to read topic `name` from `from` on. `false` when nothing of it is on disk
    /// there (the caller treats those offsets as gone).
    pub fn request_read(&mut self, name: &str, from: u64) -> bool {
        let Some(&id) = self.ids.get(name) else {
            return false;
        };
        if self
            .pending_reads
            .values()
            .any(|r| r.topic == id && r.from == from && !r.compact)
            || self.reads_waiting.contains(&(id, from))
        {
            return true;
        }
        if self.request_read_id(id, from) {
            return true;
        }
        // Stored but not written yet: once written. An offset in no run is not coming
        // (lost to damage, or in a segment set aside): see `next_stored`.
        let stored = self.locate(id, from).is_some();
        if stored {
            self.reads_waiting.push((id, from));
        }
        stored
    }

    /// The first offset of topic `name` stored after `from`, for an offset in none of
    /// its runs (lost to damage, or in a segment set aside): where a reader goes on.
    /// The topic's next offset when nothing after `from` is stored; `None` when the
    /// topic holds nothing at or after `from`.
    pub fn next_stored(&self, name: &str, from: u64) -> Option<u64> {
        let (t, runs) = self.runs_of(name)?;
        let after = runs.filter(|r| r.first > from).map(|r| r.first).min();
        after.or((from < t.next).then_some(t.next))
    }

    /// Topic `name`'s index and every run of it the log's segments hold, if the log
    /// holds the topic.
    pub(super) fn runs_of(
        &self,
        name: &str,
    ) -> Option<(&TopicDisk, impl Iterator<Item = &super::segment::Run> + '_)> {
        let id = *self.ids.get(name)?;
        let t = self.topics.get(&id)?;
        let runs = t
            .segs
            .iter()
            .filter_map(move |no| {
                let i = self.segments.binary_search_by_key(no, |s| s.no).ok()?;
                self.segments[i].topics.iter().find(|st| st.id == id)
            })
            .flat_map(|st| &st.runs);
        Some((t, runs))
    }

    /// Where offset `from` of topic `id` is: the segment, and the position of the
    /// batch to read from.
    fn locate(&self, id: u64, from: u64) -> Option<(u64, u64)> {
        let t = self.topics.get(&id)?;
        if from < t.first || from >= t.next {
            return None;
        }
        for &no in t.segs.iter().rev() {
            let Ok(i) = self.segments.binary_search_by_key(&no, |s| s.no) else {
                continue;
            };
            let seg = &self.segments[i];
            let Some(st) = seg.topics.iter().find(|st| st.id == id) else {
                continue;
            };
            if let Some(run) = st.runs.iter().find(|r| r.first <= from && from <= r.last) {
                let k = run.entries.partition_point(|&(o, _)| o <= from);
                let pos = run.entries[k.saturating_sub(1)].1;
                return Some((no, pos));
            }
        }
        None
    }

    /// Bytes of segment `no` written so far.
    fn written_len(&self, no: u64) -> u64 {
        match self.inflight.iter().find(|b| b.no == no) {
            Some(b) => b.at,
            None => self
                .segments
                .binary_search_by_key(&no, |s| s.no)
                .map_or(0, |i| self.segments[i].len),
        }
    }

    /// Bytes read at a time for a cursor.
    const READ_BYTES: usize = 256 * 1024;

    pub(super) fn request_read_id(&mut self, id: u64, from: u64) -> bool {
        let Some((no, pos)) = self.locate(id, from) else {
            return false;
        };
        let written = self.written_len(no);
        if pos >= written {
            return false;
        }
        let len = ((written - pos) as usize).min(Self::READ_BYTES);
        self.queue_read(PendingRead {
            topic: id,
            from,
            no,
            pos,
            len,
            compact: false,
        });
        true
    }

    pub(super) fn queue_read(&mut self, r: PendingRead) {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.push(ReadCmd {
            id,
            no: r.no,
            pos: r.pos,
            len: r.len,
        });
        self.pending_reads.insert(id, r);
    }

    pub(super) fn read_done(&mut self, id: u64, bytes: std::io::Result<Vec<u8>>) -> Completion {
        let Some(r) = self.pending_reads.remove(&id) else {
            return Completion::None;
        };
        let name = self
            .topics
            .get(&r.topic)
            .map_or_else(String::new, |t| t.name.to_string());
        if r.compact {
            return self.compact_done(r, bytes);
        }
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                log::warn!(
                    "store: cannot read segment {} of {}: {e}",
                    r.no,
                    self.dir.display()
                );
                return Completion::Read {
                    topic: name,
                    from: r.from,
                    messages: Vec::new(),
                    skip_to: self.skip_past(r.topic, r.no, r.from, None),
                };
            }
        };
        // A message of the topic outside the run of `from` (a compaction's copy, another
        // run) is not the one looked for, nor a sign of damage.
        let run_last = self
            .run_of(r.topic, r.no, r.from)
            .map_or(u64::MAX, |run| run.last);
        let mut messages = Vec::new();
        let mut expect = r.from;
        let mut at = 0usize;
        let mut taken = 0usize;
        // Damage met before anything of `from` was read (where), and the first offset
        // of the run found after it.
        let mut damage_at = None;
        let mut resume_at = None;
        'batches: while at < bytes.len() {
            match format::batch(&bytes[at..]) {
                format::Batch::Whole { len } => {
                    let body = &bytes[at + format::BATCH_HEADER..at + len];
                    for rec in Records::new(body) {
                        let Ok(rec) = rec else { break };
                        if let Record::Message {
                            id,
                            offset,
                            seq,
                            time_ms,
                            key,
                            payload,
                        } = rec
                        {
                            if id != r.topic || offset < expect || offset > run_last {
                                continue;
                            }
                            if offset != expect {
                                if messages.is_empty() {
                                    resume_at = Some(offset);
                                }
                                break 'batches;
                            }
                            taken += payload.len() + key.map_or(0, <[u8]>::len) + 32;
                            messages.push(DiskMessage {
                                offset,
                                seq,
                                time_ms,
                                key: key.map(<[u8]>::to_vec),
                                payload: payload.to_vec(),
                            });
                            expect += 1;
                            if taken >= Self::READ_BYTES || expect > run_last {
                                // Enough for one read, or the run is done: the rest
                                // comes with the next.
                                break 'batches;
                            }
                        }
                    }
                    at += len;
                }
                format::Batch::Partial { len }
                    if messages.is_empty()
                        && bytes.len() == r.len
                        && r.pos + (at + len) as u64 <= self.written_len(r.no) =>
                {
                    // A batch going past what was read: read it whole, from where it
                    // starts (a read starts at an index entry, and the batch holding
                    // `from` may come after others). Not when the segment ended before
                    // what was asked: then its length is damaged, and reading it again
                    // would only end there again. Nor when it would end past what is
                    // written there: a damaged length is no reason to allocate up to
                    // `MAX_BATCH`.
                    self.queue_read(PendingRead {
                        pos: r.pos + at as u64,
                        len,
                        ..r
                    });
                    return Completion::None;
                }
                format::Batch::Partial { .. } | format::Batch::Bad => {
                    if !messages.is_empty() {
                        // What came before the damage goes now; the next read meets it.
                        break;
                    }
                    // Damage before `from`'s message, which may be past it: look on.
                    damage_at.get_or_insert(at);
                    match format::resync(&bytes, at + 1) {
                        Some(next) => at = next,
                        None => break,
                    }
                }
            }
        }
        if messages.is_empty() && damage_at.is_none() && resume_at.is_none() && bytes.len() == r.len
        {
            // Every batch read was whole, and none held `from`: it is further on. The read
            // ended where the log knew the segment written when it was asked for, and a
            // cursor can fall behind the memory ring before the writer's report of the
            // batch holding `from` reached the log (the executor busy with publishers):
            // read on from there, or wait until that batch is written.
            let next = r.pos + r.len as u64;
            let written = self.written_len(r.no);
            if next < written {
                let len = ((written - next) as usize).min(Self::READ_BYTES);
                self.queue_read(PendingRead {
                    pos: next,
                    len,
                    ..r
                });
                return Completion::None;
            }
            let unwritten = self.inflight.iter().any(|b| b.no == r.no)
                || (r.no == self.active_no() && !self.batch.is_empty());
            if unwritten {
                self.reads_waiting.push((r.topic, r.from));
                return Completion::None;
            }
        }
        if messages.is_empty() {
            // The run said the offset is here, the bytes say otherwise: damage. Go on at
            // the run's first offset found after it, else past the damage as the run's
            // index tells, else past the run.
            self.stats.skipped += 1;
            let past = r.pos + damage_at.unwrap_or(bytes.len()) as u64;
            return Completion::Read {
                topic: name,
                from: r.from,
                messages,
                skip_to: resume_at.or_else(|| self.skip_past(r.topic, r.no, r.from, Some(past))),
            };
        }
        Completion::Read {
            topic: name,
            from: r.from,
            messages,
            skip_to: None,
        }
    }

    /// The run of topic `id` in segment `no` holding offset `from`.
    fn run_of(&self, id: u64, no: u64, from: u64) -> Option<&segment::Run> {
        let seg = self
            .segments
            .binary_search_by_key(&no, |s| s.no)
            .ok()
            .map(|i| &self.segments[i])?;
        let st = seg.topics.iter().find(|t| t.id == id)?;
        st.runs.iter().find(|r| r.first <= from && from <= r.last)
    }

    /// Where a cursor goes on when the run of topic `id` holding `from` in segment `no`
    /// cannot be read from `from` on: at the first offset the run's index places after
    /// segment position `past` (where the damage is, if known), else after the run.
    fn skip_past(&self, id: u64, no: u64, from: u64, past: Option<u64>) -> Option<u64> {
        let run = self.run_of(id, no, from)?;
        let indexed = past.and_then(|p| {
            run.entries
                .iter()
                .find(|&&(o, at)| at > p && o > from)
                .map(|&(o, _)| o)
        });
        Some(indexed.unwrap_or(run.last + 1))
    }
}
