//! The on-disk format, pure: segment headers, batches (a magic, a length and a CRC32C
//! over the body), and the records inside a batch. No IO.
//!
//! ```text
//! segment   := header batch*
//! header    := "MOTESEG\0" version:u32le reserved:u32le              (16 bytes)
//! batch     := magic:u32le len:u32le crc32c(body):u32le body[len]    (12 + len bytes)
//! body      := record+
//! record    := kind:u8 fields
//!   1 topic     id:var name:str                        a topic id, defined before its use in the segment
//!   2 message   id:var offset:var seq:var time_ms:var key:optbytes payload:bytes
//!   3 state     id:var first:var next:var              a topic's retained range (trims, carried state)
//!   4 group     name:str filter:str settings cursors:list(id:var next:var)
//!               pending:list(id:var offset:var attempt:var)
//!   5 group gone name:str
//!   6 removed   id:var name:str next:var               a topic removed (deleted, expired): its
//!               id is never used again, and a topic of that name continues at `next`
//!               (id 0: a topic that was not on disk)
//!   7 meta      id:var list(key:str value:str)         a topic's metadata, whole (the newest wins)
//! var       := unsigned LEB128 (at most 10 bytes)
//! str/bytes := len:var data[len]
//! optbytes  := (len + 1):var data[len], 0 for none
//! ```
//!
//! Integers are little-endian; the version is 2 (1 had no kinds 6 and 7). A reader refuses a segment of a newer
//! version (the data of a newer mote), reads every older one, and skips a record kind it
//! does not know only by refusing the segment's version: kinds never change meaning.

/// The first bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"MOTESEG\0";
/// The format this mote writes; it reads this one and every older one.
pub(crate) const VERSION: u32 = 2;
/// Length of a segment header.
pub(crate) const SEGMENT_HEADER: usize = 16;
/// The first bytes of every batch: "MOTB".
pub(crate) const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"MOTB");
/// Length of a batch header.
pub(crate) const BATCH_HEADER: usize = 12;
/// The largest batch body a reader accepts: a batch holds at most one message over the
/// ring's largest payload, plus records of small size.
pub(crate) const MAX_BATCH: usize = 64 << 20;

const KIND_TOPIC: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_STATE: u8 = 3;
const KIND_GROUP: u8 = 4;
const KIND_GROUP_GONE: u8 = 5;
const KIND_REMOVED: u8 = 6;
const KIND_META: u8 = 7;

/// A segment header for `version`.
pub(crate) fn segment_header(version: u32) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a segment at all (or a damaged one).
    NotASegment,
    /// Written by a newer mote.
    Newer(u32),
}

/// The version of the segment starting with `bytes`.
pub(crate) fn parse_segment_header(bytes: &[u8]) -> Result<u32, HeaderError> {
    let h = bytes
        .get(..SEGMENT_HEADER)
        .ok_or(HeaderError::NotASegment)?;
    if &h[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::NotASegment);
    }
    let v = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    match v {
        0 => Err(HeaderError::NotASegment),
        v if v > VERSION => Err(HeaderError::Newer(v)),
        v => Ok(v),
    }
}

/// Appends a LEB128 varint.
pub(crate) fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_var(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Starts a batch in `out`; returns where it starts, for [`seal_batch`].
pub(crate) fn begin_batch(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; BATCH_HEADER]);
    at
}

/// Fills in the header of the batch started at `at`, over everything after it.
pub(crate) fn seal_batch(out: &mut [u8], at: usize) {
    let body_len = out.len() - at - BATCH_HEADER;
    let crc = crc32c::crc32c(&out[at + BATCH_HEADER..]);
    out[at..at + 4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a topic definition.
pub(crate) fn put_topic(out: &mut Vec<u8>, id: u64, name: &str) {
    out.push(KIND_TOPIC);
    put_var(out, id);
    put_bytes(out, name.as_bytes());
}

/// Appends a message; `seq` is its broker-wide sequence number.
pub(crate) fn put_message(
    out: &mut Vec<u8>,
    id: u64,
    offset: u64,
    seq: u64,
    time_ms: u64,
    key: Option<&[u8]>,
    payload: &[u8],
) {
    out.push(KIND_MESSAGE);
    put_var(out, id);
    put_var(out, offset);
    put_var(out, seq);
    put_var(out, time_ms);
    match key {
        None => put_var(out, 0),
        Some(k) => {
            put_var(out, k.len() as u64 + 1);
            out.extend_from_slice(k);
        }
    }
    put_bytes(out, payload);
}

/// Appends a topic's retained range: offsets below `first` are gone, the next message
/// gets `next`.
pub(crate) fn put_state(out: &mut Vec<u8>, id: u64, first: u64, next: u64) {
    out.push(KIND_STATE);
    put_var(out, id);
    put_var(out, first);
    put_var(out, next);
}

/// A durable consumer group's state: where it reads each topic, and what it handed out
/// without an ack yet (delivered again after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct GroupRecord {
    pub(crate) name: String,
    pub(crate) filter: String,
    pub(crate) ack_timeout_ms: u64,
    pub(crate) max_deliveries: u32,
    pub(crate) prefetch: u32,
    /// `(topic id, next offset)`.
    pub(crate) cursors: Vec<(u64, u64)>,
    /// `(topic id, offset, deliveries made so far)`.
    pub(crate) pending: Vec<(u64, u64, u32)>,
}

/// Appends a group's state.
pub(crate) fn put_group(out: &mut Vec<u8>, g: &GroupRecord) {
    out.push(KIND_GROUP);
    put_bytes(out, g.name.as_bytes());
    put_bytes(out, g.filter.as_bytes());
    put_var(out, g.ack_timeout_ms);
    put_var(out, u64::from(g.max_deliveries));
    put_var(out, u64::from(g.prefetch));
    put_var(out, g.cursors.len() as u64);
    for &(id, next) in &g.cursors {
        put_var(out, id);
        put_var(out, next);
    }
    put_var(out, g.pending.len() as u64);
    for &(id, offset, attempt) in &g.pending {
        put_var(out, id);
        put_var(out, offset);
        put_var(out, u64::from(attempt));
    }
}

/// Appends the end of a group.
pub(crate) fn put_group_gone(out: &mut Vec<u8>, name: &str) {
    out.push(KIND_GROUP_GONE);
    put_bytes(out, name.as_bytes());
}

/// Appends the removal of a topic: id `id` (0 if it had none) is retired, and a topic
/// named `name` created again continues at `next`.
pub(crate) fn put_removed(out: &mut Vec<u8>, id: u64, name: &str, next: u64) {
    out.push(KIND_REMOVED);
    put_var(out, id);
    put_bytes(out, name.as_bytes());
    put_var(out, next);
}

/// Appends a topic's metadata, all of it.
pub(crate) fn put_meta<K: AsRef<str>, V: AsRef<str>>(out: &mut Vec<u8>, id: u64, meta: &[(K, V)]) {
    out.push(KIND_META);
    put_var(out, id);
    put_var(out, meta.len() as u64);
    for (k, v) in meta {
        put_bytes(out, k.as_ref().as_bytes());
        put_bytes(out, v.as_ref().as_bytes());
    }
}

/// A record decoded from a batch body, borrowing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Topic {
        id: u64,
        name: &'a str,
    },
    Message {
        id: u64,
        offset: u64,
        seq: u64,
        time_ms: u64,
        key: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    State {
        id: u64,
        first: u64,
        next: u64,
    },
    Group(GroupRecord),
    GroupGone {
        name: &'a str,
    },
    Removed {
        id: u64,
        name: &'a str,
        next: u64,
    },
    Meta {
        id: u64,
        meta: Vec<(&'a str, &'a str)>,
    },
}

/// A record or batch that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub &'static str);

/// Reads records from a batch body.
pub(crate) struct Records<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Records<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Records<'a> {
        Records { body, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Reads a varint.
    pub(crate) fn var(&mut self) -> Result<u64, Corrupt> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.body.get(self.pos).ok_or(Corrupt("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(Corrupt("varint overflows"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Corrupt("varint too long"))
    }

    fn small(&mut self) -> Result<u32, Corrupt> {
        u32::try_from(self.var()?).map_err(|_| Corrupt("value out of range"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = usize::try_from(self.var()?).map_err(|_| Corrupt("length out of range"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.body.len())
            .ok_or(Corrupt("length past the batch"))?;
        let b = &self.body[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn str(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt("name is not UTF-8"))
    }

    /// A list's length, refused when it could not fit in what is left of the body.
    pub(crate) fn list_len(&mut self) -> Result<usize, Corrupt> {
        let n = usize::try_from(self.var()?).map_err(|_| Corrupt("count out of range"))?;
        if n > self.body.len() - self.pos {
            return Err(Corrupt("count past the batch"));
        }
        Ok(n)
    }

    fn record(&mut self) -> Result<Record<'a>, Corrupt> {
        let kind = self.body[self.pos];
        self.pos += 1;
        Ok(match kind {
            KIND_TOPIC => Record::Topic {
                id: self.var()?,
                name: self.str()?,
            },
            KIND_MESSAGE => {
                let id = self.var()?;
                let offset = self.var()?;
                let seq = self.var()?;
                let time_ms = self.var()?;
                let key = match self.var()? {
                    0 => None,
                    n => {
                        let n = usize::try_from(n - 1).map_err(|_| Corrupt("key too long"))?;
                        let end = self
                            .pos
                            .checked_add(n)
                            .filter(|&e| e <= self.body.len())
                            .ok_or(Corrupt("key past the batch"))?;
                        let k = &self.body[self.pos..end];
                        self.pos = end;
                        Some(k)
                    }
                };
                Record::Message {
                    id,
                    offset,
                    seq,
                    time_ms,
                    key,
                    payload: self.bytes()?,
                }
            }
            KIND_STATE => Record::State {
                id: self.var()?,
                first: self.var()?,
                next: self.var()?,
            },
            KIND_GROUP => {
                let name = self.str()?.to_string();
                let filter = self.str()?.to_string();
                let ack_timeout_ms = self.var()?;
                let max_deliveries = self.small()?;
                let prefetch = self.small()?;
                let n = self.list_len()?;
                let mut cursors = Vec::with_capacity(n);
                for _ in 0..n {
                    cursors.push((self.var()?, self.var()?));
                }
                let n = self.list_len()?;
                let mut pending = Vec::with_capacity(n);
                for _ in 0..n {
                    pending.push((self.var()?, self.var()?, self.small()?));
                }
                Record::Group(GroupRecord {
                    name,
                    filter,
                    ack_timeout_ms,
                    max_deliveries,
                    prefetch,
                    cursors,
                    pending,
                })
            }
            KIND_GROUP_GONE => Record::GroupGone { name: self.str()? },
            KIND_REMOVED => Record::Removed {
                id: self.var()?,
                name: self.str()?,
                next: self.var()?,
            },
            KIND_META => {
                let id = self.var()?;
                let n = self.list_len()?;
                let mut meta = Vec::with_capacity(n);
                for _ in 0..n {
                    meta.push((self.str()?, self.str()?));
                }
                Record::Meta { id, meta }
            }
            _ => return Err(Corrupt("unknown record kind")),
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, Corrupt>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.body.len() {
            return None;
        }
        let r = self.record();
        if r.is_err() {
            // Nothing after a bad record can be trusted to start where it seems to.
            self.pos = self.body.len();
        }
        Some(r)
    }
}

/// What is at the start of some bytes of a segment, after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// A whole batch: its body is `bytes[BATCH_HEADER..len]`.
    Whole { len: usize },
    /// The start of a batch whose length is plausible: `len` bytes in all are needed.
    Partial { len: usize },
    /// Not a batch: a wrong magic, a length out of bounds, or a CRC that does not match.
    Bad,
}

/// Looks at the batch at the start of `bytes`.
pub(crate) fn batch(bytes: &[u8]) -> Batch {
    if bytes.len() < BATCH_HEADER {
        // Not even a header: partial if what is there could start one.
        let magic = BATCH_MAGIC.to_le_bytes();
        let n = bytes.len().min(4);
        return if bytes[..n] == magic[..n] {
            Batch::Partial { len: BATCH_HEADER }
        } else {
            Batch::Bad
        };
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if word(0) != BATCH_MAGIC {
        return Batch::Bad;
    }
    let body = word(4) as usize;
    if body == 0 || body > MAX_BATCH {
        return Batch::Bad;
    }
    let len = BATCH_HEADER + body;
    if bytes.len() < len {
        return Batch::Partial { len };
    }
    if crc32c::crc32c(&bytes[BATCH_HEADER..len]) != word(8) {
        return Batch::Bad;
    }
    Batch::Whole { len }
}

/// Where the next batch that checks out starts in `bytes`, looking from `from` on.
pub(crate) fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = BATCH_MAGIC.to_le_bytes();
    let mut i = from;
    while i + BATCH_HEADER <= bytes.len() {
        let at = bytes[i..].windows(4).position(|w| w == magic)? + i;
        if let Batch::Whole { .. } = batch(&bytes[at..]) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn one_batch(fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        let at = begin_batch(&mut out);
        fill(&mut out);
        seal_batch(&mut out, at);
        out
    }

    #[test]
    fn records_round_trip() {
        let g = GroupRecord {
            name: "workers".into(),
            filter: "jobs/#".into(),
            ack_timeout_ms: 30_000,
            max_deliveries: 5,
            prefetch: 64,
            cursors: vec![(1, 17), (2, u64::MAX)],
            pending: vec![(1, 15, 2)],
        };
        let b = one_batch(|out| {
            put_topic(out, 1, "home/kitchen");
            put_message(out, 1, 0, 7, 1_796_000_000_000, None, b"21.5");
            put_message(out, 1, 1, 8, 1_796_000_000_001, Some(b""), b"");
            put_message(out, 1, u64::MAX, u64::MAX, 0, Some(b"k"), &[0xff; 300]);
            put_state(out, 1, 1, 2);
            put_group(out, &g);
            put_group_gone(out, "old");
            put_removed(out, 1, "home/kitchen", 2);
            put_meta(out, 2, &[("owner", "pi"), ("room", "")]);
        });
        assert_eq!(batch(&b), Batch::Whole { len: b.len() });
        let recs: Vec<Record<'_>> = Records::new(&b[BATCH_HEADER..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            recs,
            vec![
                Record::Topic {
                    id: 1,
                    name: "home/kitchen"
                },
                Record::Message {
                    id: 1,
                    offset: 0,
                    seq: 7,
                    time_ms: 1_796_000_000_000,
                    key: None,
                    payload: b"21.5"
                },
                Record::Message {
                    id: 1,
                    offset: 1,
                    seq: 8,
                    time_ms: 1_796_000_000_001,
                    key: Some(b""),
                    payload: b""
                },
                Record::Message {
                    id: 1,
                    offset: u64::MAX,
                    seq: u64::MAX,
                    time_ms: 0,
                    key: Some(b"k"),
                    payload: &[0xff; 300]
                },
                Record::State {
                    id: 1,
                    first: 1,
                    next: 2
                },
                Record::Group(g),
                Record::GroupGone { name: "old" },
                Record::Removed {
                    id: 1,
                    name: "home/kitchen",
                    next: 2
                },
                Record::Meta {
                    id: 2,
                    meta: vec![("owner", "pi"), ("room", "")]
                },
            ]
        );
    }

    #[test]
    fn a_message_of_64_bytes_costs_little_more() {
        let b = one_batch(|out| {
            put_message(
                out,
                3,
                123_456,
                1 << 41,
                1_796_000_000_000,
                None,
                &[b'x'; 64],
            )
        });
        let record = b.len() - BATCH_HEADER;
        assert!(record <= 64 + 24, "{record} bytes");
    }

    #[test]
    fn damage_is_found_and_skipped() {
        let good = one_batch(|out| put_topic(out, 1, "a"));
        let mut log = good.clone();
        log.extend_from_slice(&good);
        // A flipped bit in the second batch's body.
        let mut flipped = log.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert_eq!(batch(&flipped[good.len()..]), Batch::Bad);
        // A torn tail: the second batch cut short.
        let torn = &log[..log.len() - 2];
        assert_eq!(
            batch(&torn[good.len()..]),
            Batch::Partial { len: good.len() }
        );
        assert_eq!(
            batch(&torn[good.len()..good.len() + 2]),
            Batch::Partial { len: BATCH_HEADER }
        );
        // Garbage, then a good batch: found again.
        let mut mixed = b"garbage MOTB garbage".to_vec();
        let at = mixed.len();
        mixed.extend_from_slice(&good);
        assert_eq!(resync(&mixed, 0), Some(at));
        assert_eq!(resync(&flipped, good.len()), None);
        // Lengths out of bounds are refused before anything is allocated.
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(batch(&huge), Batch::Bad);
    }

    #[test]
    fn bad_records_stop_the_batch() {
        for body in [
            &[9u8][..],                                         // unknown kind
            &[KIND_TOPIC, 0x80][..],                            // truncated varint
            &[KIND_TOPIC, 1, 5, b'a'][..],                      // name past the batch
            &[KIND_TOPIC, 1, 1, 0xff][..],                      // not UTF-8
            &[KIND_GROUP, 1, b'g', 0, 0, 0, 0, 0xff, 0x7f][..], // count past the batch
            &[
                KIND_STATE, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
        ] {
            let mut r = Records::new(body);
            assert!(r.next().unwrap().is_err(), "{body:?}");
            assert!(r.next().is_none());
        }
    }

    #[test]
    fn newer_segments_are_refused_older_ones_read() {
        assert_eq!(parse_segment_header(&segment_header(VERSION)), Ok(VERSION));
        assert_eq!(
            parse_segment_header(&segment_header(VERSION + 1)),
            Err(HeaderError::Newer(VERSION + 1))
        );
        assert_eq!(
            parse_segment_header(b"not a segment at all"),
            Err(HeaderError::NotASegment)
        );
    }
}
