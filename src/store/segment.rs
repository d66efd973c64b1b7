//! What a segment holds, without IO: scanning a segment's bytes (recovery: a torn tail is
//! cut, a damaged batch in the middle is skipped and counted), the summary kept in
//! memory for each segment (per topic: runs of consecutive offsets with a sparse index
//! of where they are), and its `.idx` file, which spares a scan at startup.

use super::format::{
    self, BATCH_HEADER, Batch, Corrupt, GroupRecord, Record, Records, SEGMENT_HEADER,
};

/// An index entry every this many bytes of a topic's run, at least.
pub(crate) const INDEX_EVERY: u64 = 64 * 1024;

/// Consecutive offsets of one topic in one segment, in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Bytes of its messages' records.
    pub(crate) bytes: u64,
    /// The largest store time of its messages.
    pub(crate) last_time: u64,
    /// Broker-wide sequence numbers of its first and last messages.
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    /// `(offset, position of the batch holding it)`, ascending, the first message's
    /// included: a read of offset `o` starts at the last entry at or before `o`.
    pub(crate) entries: Vec<(u64, u64)>,
}

/// What one segment holds for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SegTopic {
    pub(crate) id: u64,
    pub(crate) runs: Vec<Run>,
}

/// A message as the summary notes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Noted {
    pub(crate) id: u64,
    pub(crate) offset: u64,
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    /// Bytes of its record.
    pub(crate) bytes: u64,
}

/// A segment's summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SegmentInfo {
    /// Its number (the file is `<no>.seg`), ascending with age.
    pub(crate) no: u64,
    /// Its length in bytes, header included.
    pub(crate) len: u64,
    /// Topic ids and names defined in it.
    pub(crate) names: Vec<(u64, String)>,
    pub(crate) topics: Vec<SegTopic>,
    /// Topic states, in the order they were written.
    pub(crate) states: Vec<(u64, u64, u64)>,
    /// Group states and ends, in the order they were written.
    pub(crate) groups: Vec<GroupChange>,
    /// Topics removed: `(id, name, next offset)`, in the order they were written.
    pub(crate) removed: Vec<(u64, String, u64)>,
    /// Topic metadata: `(id, key/values)`, in the order they were written.
    pub(crate) meta: Vec<(u64, Vec<(String, String)>)>,
}

/// A change of a durable group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupChange {
    State(GroupRecord),
    Gone(String),
}

impl SegmentInfo {
    pub(crate) fn new(no: u64) -> SegmentInfo {
        SegmentInfo {
            no,
            len: SEGMENT_HEADER as u64,
            ..SegmentInfo::default()
        }
    }

    fn topic_mut(&mut self, id: u64) -> &mut SegTopic {
        // Few topics per segment are typical; the last used is usually the one wanted.
        match self.topics.iter().rposition(|t| t.id == id) {
            Some(i) => &mut self.topics[i],
            None => {
                self.topics.push(SegTopic {
                    id,
                    runs: Vec::new(),
                });
                self.topics
                    .last_mut()
                    .unwrap_or_else(|| unreachable!("just pushed"))
            }
        }
    }

    /// Notes a message record of `bytes` bytes in the batch at `pos`.
    pub(crate) fn note_message(&mut self, m: Noted, pos: u64) {
        let Noted {
            id,
            offset,
            seq,
            time_ms,
            bytes,
        } = m;
        let t = self.topic_mut(id);
        match t.runs.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(offset) => {
                r.last = offset;
                r.bytes += bytes;
                r.last_time = r.last_time.max(time_ms);
                r.last_seq = seq;
                let (_, at) = r.entries.last().copied().unwrap_or((0, 0));
                if pos >= at + INDEX_EVERY {
                    r.entries.push((offset, pos));
                }
            }
            _ => t.runs.push(Run {
                first: offset,
                last: offset,
                bytes,
                last_time: time_ms,
                first_seq: seq,
                last_seq: seq,
                entries: vec![(offset, pos)],
            }),
        }
    }

    /// Notes a record (other than a message) of the batch at `pos`.
    pub(crate) fn note(&mut self, rec: &Record<'_>) {
        match rec {
            Record::Topic { id, name } => {
                if !self.names.iter().any(|(i, _)| i == id) {
                    self.names.push((*id, (*name).to_string()));
                }
            }
            Record::State { id, first, next } => self.states.push((*id, *first, *next)),
            Record::Group(g) => self.groups.push(GroupChange::State(g.clone())),
            Record::GroupGone { name } => self.groups.push(GroupChange::Gone((*name).into())),
            Record::Removed { id, name, next } => {
                self.removed.push((*id, (*name).to_string(), *next));
            }
            Record::Meta { id, meta } => self.meta.push((
                *id,
                meta.iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            )),
            Record::Message { .. } => {}
        }
    }

    /// Notes every record of the batch `b` found at `pos`.
    pub(crate) fn note_batch(&mut self, b: &[u8], pos: u64) -> Result<(), Corrupt> {
        let body = &b[BATCH_HEADER..];
        let mut records = Records::new(body);
        let mut at = 0usize;
        while let Some(r) = records.next() {
            let r = r?;
            let end = records.position();
            match r {
                Record::Message {
                    id,
                    offset,
                    seq,
                    time_ms,
                    ..
                } => self.note_message(
                    Noted {
                        id,
                        offset,
                        seq,
                        time_ms,
                        bytes: (end - at) as u64,
                    },
                    pos,
                ),
                other => self.note(&other),
            }
            at = end;
        }
        Ok(())
    }
}

/// What scanning a segment found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Scanned {
    pub(crate) info: SegmentInfo,
    /// Where the last whole batch ends: past it, only a torn write (to be cut).
    pub(crate) valid_len: u64,
    /// Damaged regions skipped before `valid_len`, and their bytes.
    pub(crate) skipped: u64,
    pub(crate) skipped_bytes: u64,
    /// Batches whose CRC passed but whose records did not decode (counted in `skipped`).
    pub(crate) bad_records: u64,
}

/// Scans the bytes of segment `no` (header included). A damaged batch followed by good
/// ones is skipped and counted; a damaged or partial tail is left out of `valid_len`.
pub(crate) fn scan(no: u64, bytes: &[u8]) -> Scanned {
    let mut s = Scanned {
        info: SegmentInfo::new(no),
        valid_len: SEGMENT_HEADER as u64,
        ..Scanned::default()
    };
    let mut pos = SEGMENT_HEADER;
    while pos < bytes.len() {
        match format::batch(&bytes[pos..]) {
            Batch::Whole { len } => {
                let b = &bytes[pos..pos + len];
                if s.info.note_batch(b, pos as u64).is_err() {
                    // The CRC passed but the records do not decode: written wrong, not
                    // damaged later. What decoded before the bad record is kept.
                    s.skipped += 1;
                    s.bad_records += 1;
                }
                pos += len;
                s.valid_len = pos as u64;
            }
            Batch::Partial { .. } | Batch::Bad => match format::resync(bytes, pos + 1) {
                Some(next) => {
                    s.skipped += 1;
                    s.skipped_bytes += (next - pos) as u64;
                    pos = next;
                }
                None => break,
            },
        }
    }
    s.info.len = s.valid_len;
    s
}

/// The first bytes of every index file.
const IDX_MAGIC: &[u8; 8] = b"MOTEIDX\0";

/// Encodes a segment's summary as an `.idx` file.
pub(crate) fn encode_idx(info: &SegmentInfo) -> Vec<u8> {
    use format::put_var;
    let mut out = Vec::new();
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(&format::VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let mut body = Vec::new();
    put_var(&mut body, info.no);
    put_var(&mut body, info.len);
    put_var(&mut body, info.names.len() as u64);
    for (id, name) in &info.names {
        format::put_topic(&mut body, *id, name);
    }
    put_var(&mut body, info.topics.len() as u64);
    for t in &info.topics {
        put_var(&mut body, t.id);
        put_var(&mut body, t.runs.len() as u64);
        for r in &t.runs {
            for v in [
                r.first,
                r.last,
                r.bytes,
                r.last_time,
                r.first_seq,
                r.last_seq,
            ] {
                put_var(&mut body, v);
            }
            put_var(&mut body, r.entries.len() as u64);
            for &(o, p) in &r.entries {
                put_var(&mut body, o);
                put_var(&mut body, p);
            }
        }
    }
    put_var(&mut body, info.states.len() as u64);
    for &(id, first, next) in &info.states {
        format::put_state(&mut body, id, first, next);
    }
    put_var(&mut body, info.groups.len() as u64);
    for g in &info.groups {
        match g {
            GroupChange::State(g) => format::put_group(&mut body, g),
            GroupChange::Gone(name) => format::put_group_gone(&mut body, name),
        }
    }
    put_var(&mut body, info.removed.len() as u64);
    for (id, name, next) in &info.removed {
        format::put_removed(&mut body, *id, name, *next);
    }
    put_var(&mut body, info.meta.len() as u64);
    for (id, meta) in &info.meta {
        format::put_meta(&mut body, *id, meta);
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes an `.idx` file for segment `no` of `seg_len` bytes: `None` if it is damaged,
/// of another segment or length (then the segment is scanned again), or newer.
pub(crate) fn decode_idx(no: u64, seg_len: u64, bytes: &[u8]) -> Option<SegmentInfo> {
    let head = bytes.get(..24)?;
    if &head[..8] != IDX_MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(head[8..12].try_into().ok()?);
    if version == 0 || version > format::VERSION {
        return None;
    }
    let len = u32::from_le_bytes(head[16..20].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[20..24].try_into().ok()?);
    let body = bytes.get(24..24usize.checked_add(len)?)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let info = parse_idx_body(body).ok()?;
    (info.no == no && info.len == seg_len).then_some(info)
}

fn parse_idx_body(body: &[u8]) -> Result<SegmentInfo, Corrupt> {
    let mut r = Records::new(body);
    let no = r.var()?;
    let len = r.var()?;
    let mut info = SegmentInfo::new(no);
    info.len = len;
    for _ in 0..r.list_len()? {
        match r.next().ok_or(Corrupt("names"))?? {
            Record::Topic { id, name } => info.names.push((id, name.to_string())),
            _ => return Err(Corrupt("names")),
        }
    }
    for _ in 0..r.list_len()? {
        let id = r.var()?;
        let mut t = SegTopic {
            id,
            runs: Vec::new(),
        };
        for _ in 0..r.list_len()? {
            let (first, last, bytes, last_time) = (r.var()?, r.var()?, r.var()?, r.var()?);
            let (first_seq, last_seq) = (r.var()?, r.var()?);
            if last < first {
                return Err(Corrupt("run"));
            }
            let n = r.list_len()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((r.var()?, r.var()?));
            }
            t.runs.push(Run {
                first,
                last,
                bytes,
                last_time,
                first_seq,
                last_seq,
                entries,
            });
        }
        info.topics.push(t);
    }
    for _ in 0..r.list_len()? {
        match r.next().ok_or(Corrupt("states"))?? {
            Record::State { id, first, next } => info.states.push((id, first, next)),
            _ => return Err(Corrupt("states")),
        }
    }
    for _ in 0..r.list_len()? {
        match r.next().ok_or(Corrupt("groups"))?? {
            Record::Group(g) => info.groups.push(GroupChange::State(g)),
            Record::GroupGone { name } => info.groups.push(GroupChange::Gone(name.into())),
            _ => return Err(Corrupt("groups")),
        }
    }
    // Version 1 indexes end here.
    if r.position() == body.len() {
        return Ok(info);
    }
    for _ in 0..r.list_len()? {
        match r.next().ok_or(Corrupt("removed"))?? {
            Record::Removed { id, name, next } => info.removed.push((id, name.into(), next)),
            _ => return Err(Corrupt("removed")),
        }
    }
    for _ in 0..r.list_len()? {
        match r.next().ok_or(Corrupt("meta"))?? {
            Record::Meta { id, meta } => info.meta.push((
                id,
                meta.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
            _ => return Err(Corrupt("meta")),
        }
    }
    Ok(info)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use crate::store::format::{begin_batch, put_message, put_topic, seal_batch, segment_header};

    /// A segment with `batches` batches of `per` messages of topic 1 ("t"), offsets
    /// counting from 0; returns its bytes and where each batch starts.
    fn segment(batches: u64, per: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = segment_header(format::VERSION).to_vec();
        let mut starts = Vec::new();
        let mut offset = 0;
        for b in 0..batches {
            starts.push(out.len());
            let at = begin_batch(&mut out);
            if b == 0 {
                put_topic(&mut out, 1, "t");
            }
            for _ in 0..per {
                put_message(
                    &mut out,
                    1,
                    offset,
                    offset + 1,
                    1000 + offset,
                    None,
                    &[b'p'; 100],
                );
                offset += 1;
            }
            seal_batch(&mut out, at);
        }
        (out, starts)
    }

    fn offsets(info: &SegmentInfo) -> Vec<(u64, u64)> {
        info.topics
            .iter()
            .flat_map(|t| &t.runs)
            .map(|r| (r.first, r.last))
            .collect()
    }

    #[test]
    fn a_clean_segment_scans_whole() {
        let (bytes, _) = segment(3, 10);
        let s = scan(7, &bytes);
        assert_eq!(s.valid_len, bytes.len() as u64);
        assert_eq!((s.skipped, s.bad_records), (0, 0));
        assert_eq!(s.info.names, vec![(1, "t".to_string())]);
        assert_eq!(offsets(&s.info), vec![(0, 29)]);
        let run = &s.info.topics[0].runs[0];
        assert_eq!(run.last_time, 1029);
        assert_eq!(run.entries[0], (0, SEGMENT_HEADER as u64));
    }

    #[test]
    fn a_torn_tail_is_left_out_at_every_cut() {
        let (bytes, starts) = segment(3, 10);
        let last = *starts.last().unwrap();
        for cut in last..bytes.len() {
            let s = scan(1, &bytes[..cut]);
            assert_eq!(s.valid_len, last as u64, "cut at {cut}");
            assert_eq!(offsets(&s.info), vec![(0, 19)], "cut at {cut}");
            assert_eq!(
                s.skipped, 0,
                "a torn tail is not counted as damage (cut at {cut})"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_the_middle_loses_one_batch_only() {
        let (bytes, starts) = segment(3, 10);
        for i in [starts[1], starts[1] + 5, starts[1] + 50, starts[2] - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            let s = scan(1, &b);
            assert_eq!(s.valid_len, bytes.len() as u64, "flip at {i}");
            assert_eq!(s.skipped, 1, "flip at {i}");
            assert_eq!(offsets(&s.info), vec![(0, 9), (20, 29)], "flip at {i}");
        }
    }

    #[test]
    fn index_files_round_trip_and_refuse_damage() {
        let (bytes, _) = segment(5, 200);
        let mut info = scan(3, &bytes).info;
        info.states.push((1, 4, 1000));
        info.groups.push(GroupChange::Gone("g".into()));
        info.removed.push((1, "t".into(), 1000));
        info.meta.push((2, vec![("owner".into(), "pi".into())]));
        assert!(
            info.topics[0].runs[0].entries.len() > 1,
            "sparse entries every 64 KiB"
        );
        let idx = encode_idx(&info);
        assert_eq!(decode_idx(3, info.len, &idx), Some(info.clone()));
        assert_eq!(decode_idx(4, info.len, &idx), None, "another segment's");
        assert_eq!(
            decode_idx(3, info.len + 1, &idx),
            None,
            "a segment that grew"
        );
        // Every byte but the reserved ones (12..16) is checked.
        for i in (0..idx.len()).filter(|i| !(12..16).contains(i)) {
            let mut bad = idx.clone();
            bad[i] ^= 1;
            assert_ne!(
                decode_idx(3, info.len, &bad),
                Some(info.clone()),
                "flip at {i}"
            );
        }
        assert_eq!(decode_idx(3, info.len, &idx[..idx.len() - 1]), None);
    }

    #[test]
    fn index_files_of_format_1_are_read() {
        let (bytes, _) = segment(2, 10);
        let info = scan(5, &bytes).info;
        let idx = encode_idx(&info);
        // Format 1 ended after the groups: no removed topics, no metadata (two empty
        // lists here, one byte each).
        let body = &idx[24..idx.len() - 2];
        let mut old = idx[..24].to_vec();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        old[16..20].copy_from_slice(&(body.len() as u32).to_le_bytes());
        old[20..24].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
        old.extend_from_slice(body);
        assert_eq!(decode_idx(5, info.len, &old), Some(info));
    }
}
