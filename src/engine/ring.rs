//! The ring of one topic: its most recent messages, in offset order.
//!
//! Offsets are dense: the entry at index `i` has offset `first + i`. The ring itself does
//! not decide when to evict; the engine does, because evictions also settle the global
//! memory budget.

use std::collections::VecDeque;

/// Memory an entry costs beyond its key and payload bytes: the entry itself, the
/// allocator's header for the payload, its slot in the budget queue, and the slack of a
/// recycled buffer (see `pool`).
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 16 + 16 + super::pool::MAX_SLACK;

/// One stored message. Key and payload share one buffer: `data[..key_len]` is the key,
/// the rest the payload.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Broker-wide sequence number (see [`mote_sdk::Start::AfterSeq`]).
    pub(crate) seq: u64,
    /// Milliseconds since the Unix epoch when the broker stored it.
    pub(crate) time_ms: u64,
    data: Vec<u8>,
    key_len: u32,
}

impl Entry {
    /// A message stored in `data` (an empty buffer, perhaps recycled).
    pub(crate) fn new(
        mut data: Vec<u8>,
        seq: u64,
        time_ms: u64,
        key: &[u8],
        payload: &[u8],
    ) -> Entry {
        data.clear();
        data.extend_from_slice(key);
        data.extend_from_slice(payload);
        Entry {
            seq,
            time_ms,
            data,
            key_len: key.len() as u32,
        }
    }

    /// The entry's buffer, for reuse.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.data
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        let k = &self.data[..self.key_len as usize];
        (!k.is_empty()).then_some(k)
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    /// Bytes this entry counts against ring and memory limits.
    pub(crate) fn cost(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD
    }
}

/// The stored messages of one topic.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    entries: VecDeque<Entry>,
    first: u64,
    bytes: usize,
    /// Sequence number of the most recently evicted entry (0 if none).
    evicted_seq: u64,
}

impl Ring {
    /// An empty ring whose first message gets offset `next` (a topic restored from disk).
    pub(crate) fn starting_at(next: u64) -> Ring {
        Ring {
            first: next,
            ..Ring::default()
        }
    }

    /// Offset of the oldest stored message (equal to `next` when empty).
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Offset the next message will get.
    pub(crate) fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as counted by [`Entry::cost`].
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores `e` and returns its offset.
    pub(crate) fn push(&mut self, e: Entry) -> u64 {
        let offset = self.next();
        self.bytes += e.cost();
        self.entries.push_back(e);
        offset
    }

    /// Removes the oldest entry and returns it.
    pub(crate) fn evict(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.first += 1;
        self.bytes -= e.cost();
        self.evicted_seq = e.seq;
        Some(e)
    }

    pub(crate) fn get(&self, offset: u64) -> Option<&Entry> {
        let i = offset.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// Offset of the first message stored at or after wall time `time_ms` (`next` when
    /// none is): a binary search, as a topic's stored times never go back.
    pub(crate) fn at_time(&self, time_ms: u64) -> u64 {
        self.first + self.entries.partition_point(|e| e.time_ms < time_ms) as u64
    }

    /// Where a cursor resuming "after broker sequence `seq`" starts, and how many
    /// messages it provably missed (those evicted with a later sequence number).
    ///
    /// Exact when the ring still holds a message stored at or before `seq`, or when the
    /// last evicted one was. Otherwise some messages after `seq` fell out and their number
    /// is unknown; the result then counts only the last one evicted, a lower bound.
    pub(crate) fn after_seq(&self, seq: u64) -> (u64, u64) {
        let i = self.entries.partition_point(|e| e.seq <= seq);
        let start = self.first + i as u64;
        let missed = u64::from(i == 0 && self.first > 0 && self.evicted_seq > seq);
        (start, missed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn ring_with(n: u64) -> Ring {
        let mut r = Ring::default();
        for i in 0..n {
            r.push(Entry::new(Vec::new(), 10 + i, i, b"", &[i as u8]));
        }
        r
    }

    #[test]
    fn offsets_are_dense_and_survive_eviction() {
        let mut r = ring_with(5);
        assert_eq!((r.first(), r.next(), r.len()), (0, 5, 5));
        assert_eq!(r.evict().map(|e| e.payload().to_vec()), Some(vec![0]));
        assert_eq!((r.first(), r.next()), (1, 5));
        assert!(r.get(0).is_none());
        assert_eq!(r.get(1).map(Entry::payload), Some(&[1u8][..]));
        assert!(r.get(5).is_none());
        assert_eq!(r.push(Entry::new(Vec::new(), 99, 0, b"", b"x")), 5);
        while r.evict().is_some() {}
        assert_eq!((r.first(), r.next(), r.bytes()), (6, 6, 0));
    }

    #[test]
    fn key_and_payload_share_one_allocation() {
        let e = Entry::new(Vec::with_capacity(10), 1, 2, b"key", b"payload");
        assert_eq!(e.key(), Some(&b"key"[..]));
        assert_eq!(e.payload(), b"payload");
        assert_eq!(Entry::new(Vec::new(), 1, 2, b"", b"p").key(), None);
        assert_eq!(e.cost(), 10 + ENTRY_OVERHEAD);
    }

    #[test]
    fn at_time_finds_the_first_message_at_or_after() {
        let mut r = Ring::default();
        for t in [10, 20, 20, 30] {
            r.push(Entry::new(Vec::new(), 1, t, b"", b"x"));
        }
        assert_eq!(r.at_time(0), 0);
        assert_eq!(r.at_time(10), 0);
        assert_eq!(r.at_time(11), 1);
        assert_eq!(r.at_time(20), 1);
        assert_eq!(r.at_time(30), 3);
        assert_eq!(r.at_time(31), 4);
        r.evict();
        r.evict();
        assert_eq!(r.at_time(0), 2);
        assert_eq!(r.at_time(25), 3);
    }

    #[test]
    fn after_seq_finds_the_first_newer_message() {
        let mut r = ring_with(5); // seqs 10..=14 at offsets 0..=4
        assert_eq!(r.after_seq(9), (0, 0));
        assert_eq!(r.after_seq(12), (3, 0));
        assert_eq!(r.after_seq(14), (5, 0));
        r.evict();
        r.evict(); // seqs 10, 11 gone
        assert_eq!(r.after_seq(11), (2, 0), "the last evicted was not after 11");
        assert_eq!(
            r.after_seq(10),
            (2, 1),
            "seq 11 fell out: at least one missed"
        );
        assert_eq!(r.after_seq(13), (4, 0));
    }
}
