//! Offsets of a persisted topic that every reader skips, told as lag: ranges lost to
//! damage on disk, and messages read back from disk that no longer fit the frame limit.
//!
//! A message on disk was checked against the limits of the broker that stored it. A
//! restart with a smaller `--max-payload` (or a smaller `--memory`, from which the payload
//! limit is derived) can leave messages that no frame within today's `Welcome.max_frame`
//! can carry; a client decoding against `max_frame` would fail on such a frame, reconnect,
//! resume at the same offset and fail again forever. So they are never handed out: the
//! first read that brings one back makes its offset a hole, which every cursor (a
//! subscription, a replay, a group, an HTTP stream) passes with a `Lag`, as it does a
//! damaged range. Counted once per message, logged once per topic. The message stays on
//! disk (retention removes it as any other): a restart with the larger limit delivers it.
//! A group neither retries it nor dead-letters it (it is never handed out); nor does it
//! dead-letter a message that fits but whose dead letter, with a longer topic and key,
//! would not. `GET /t/...` of the HTTP edge reads only the memory rings: never such a
//! message.
//!
//! Why the check is here and nowhere else: every message in a ring was published under
//! the limits in force (they do not change while the broker runs), and its frame fits by
//! construction (`FRAME_OVERHEAD` covers topic, key and fields); messages stored before
//! the start reach readers only through [`Engine::read_back`](super::Engine), which
//! copies each one into the cache anyway. One comparison per message read from disk;
//! the publish → deliver path is untouched.

use super::{Engine, TopicId};
use crate::store::DiskMessage;

/// Bytes a delivery frame carries beyond its topic, key and payload, at most: tag (1),
/// `sub` (5), `tag` (10), the topic's length (2), `offset` (10), `time_ms` (10),
/// `attempt` (5), `reply` (10), the key's presence and length (1 + 2), the payload's
/// length (5) — 61 for an `Asked`, the largest of `Message`, `GroupMessage` and `Asked`.
pub(super) const DELIVERY_OVERHEAD: usize = 64;

/// Whether every frame that may carry a message with these topic, key and payload
/// lengths fits `max_frame`.
pub(super) fn fits_frame(topic: usize, key: usize, payload: usize, max_frame: usize) -> bool {
    topic + key + payload + DELIVERY_OVERHEAD <= max_frame
}

/// Whether every frame that may carry `m`, read back for a topic named with `topic`
/// bytes, fits `max_frame`.
pub(super) fn fits(topic: usize, m: &DiskMessage, max_frame: usize) -> bool {
    let key = m.key.as_ref().map_or(0, Vec::len);
    fits_frame(topic, key, m.payload.len(), max_frame)
}

/// The end of the hole holding `offset`, if one does. `holes` is sorted, disjoint.
pub(super) fn hole_end_in(holes: &[(u64, u64)], offset: u64) -> Option<u64> {
    let i = holes.partition_point(|&(_, end)| end <= offset);
    holes.get(i).filter(|&&(a, _)| a <= offset).map(|&(_, b)| b)
}

/// Adds offsets `a..b` to `holes` (sorted, disjoint, touching ones merged); returns how
/// many of them were not in a hole yet.
pub(super) fn add_hole(holes: &mut Vec<(u64, u64)>, a: u64, b: u64) -> u64 {
    if a >= b {
        return 0;
    }
    let i = holes.partition_point(|&(_, end)| end < a);
    let (mut lo, mut hi, mut known) = (a, b, 0);
    let mut j = i;
    while let Some(&(x, y)) = holes.get(j).filter(|&&(x, _)| x <= b) {
        known += y.min(b).saturating_sub(x.max(a));
        lo = lo.min(x);
        hi = hi.max(y);
        j += 1;
    }
    holes.splice(i..j, [(lo, hi)]);
    b - a - known
}

impl Engine {
    /// Makes holes of the messages of `messages` (read back for topic `tid`) that do not
    /// fit today's frame limit: counted (the new ones), and logged for the topic's first.
    #[cold]
    #[inline(never)]
    pub(super) fn skip_oversize(&mut self, tid: TopicId, messages: &[DiskMessage]) {
        let max_frame = self.limits.max_frame();
        let t = &mut self.topics[tid.0 as usize];
        let mut new = 0;
        let mut first = None;
        for m in messages {
            if !fits(t.name.len(), m, max_frame) {
                let n = add_hole(&mut t.holes, m.offset, m.offset + 1);
                if n > 0 && first.is_none() {
                    first = Some((m.offset, m.payload.len()));
                }
                new += n;
            }
        }
        if new == 0 {
            return;
        }
        if t.oversize == 0 {
            if let Some((offset, size)) = first {
                log::warn!(
                    "store: {} offset {offset} holds a {size}-byte payload, too large for the frame limit of {max_frame} bytes (--max-payload {}: it was stored under a larger one); skipped for every reader and told as lag (others of this topic are counted in mote_oversize_skipped_total, not logged); restart with a larger --max-payload to read them",
                    mote_sdk::topic::shown(&t.name),
                    self.limits.max_payload
                );
            }
        }
        t.oversize += new;
        self.stats.oversize_skipped += new;
    }
}

impl Engine {
    /// A dead letter of message `offset` of topic `tid` that no frame within the limit
    /// could carry from its dead-letter topic (its payload, above `--max-payload`, fitted
    /// its own topic by a few bytes; the dead letter's longer topic and key do not): not
    /// stored, counted as skipped, logged once per topic.
    #[cold]
    #[inline(never)]
    pub(super) fn dead_letter_too_large(&mut self, tid: TopicId, offset: u64, dead: &str) {
        let t = &mut self.topics[tid.0 as usize];
        if t.oversize == 0 {
            log::warn!(
                "store: {} offset {offset} is too large for the frame limit of {} bytes as a dead letter in {} (--max-payload {}: it was stored under a larger one); skipped (others of this topic are counted in mote_oversize_skipped_total, not logged)",
                mote_sdk::topic::shown(&t.name),
                self.limits.max_frame(),
                mote_sdk::topic::shown(dead),
                self.limits.max_payload
            );
        }
        t.oversize += 1;
        self.stats.oversize_skipped += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use mote_sdk::wire::{Asked, Frame, GroupMessage, MAX_KEY_LEN, Message};
    use mote_sdk::wire::{Lag, MAX_LENGTH_PREFIX};

    #[test]
    fn holes_stay_sorted_and_merged_and_count_only_new_offsets() {
        let mut h = Vec::new();
        assert_eq!(add_hole(&mut h, 10, 11), 1);
        assert_eq!(add_hole(&mut h, 12, 13), 1);
        assert_eq!(h, [(10, 11), (12, 13)]);
        assert_eq!(add_hole(&mut h, 11, 12), 1, "touching both: one hole");
        assert_eq!(h, [(10, 13)]);
        assert_eq!(add_hole(&mut h, 10, 11), 0, "known already");
        assert_eq!(add_hole(&mut h, 5, 20), 12);
        assert_eq!(add_hole(&mut h, 30, 30), 0);
        assert_eq!(add_hole(&mut h, 0, 2), 2);
        assert_eq!(h, [(0, 2), (5, 20)]);
        assert_eq!(hole_end_in(&h, 1), Some(2));
        assert_eq!(hole_end_in(&h, 2), None);
        assert_eq!(hole_end_in(&h, 5), Some(20));
        assert_eq!(hole_end_in(&h, 19), Some(20));
        assert_eq!(hole_end_in(&h, 20), None);
        assert_eq!(hole_end_in(&[], 0), None);
    }

    /// `DELIVERY_OVERHEAD` bounds every frame that carries a stored message, with every
    /// varint at its longest, the longest topic and key: a message that passes
    /// `fits_frame` never makes a frame past `max_frame`.
    #[test]
    fn the_delivery_overhead_bounds_every_delivery_frame() {
        let topic = "t".repeat(mote_sdk::topic::MAX_TOPIC_LEN);
        let key = vec![1u8; MAX_KEY_LEN];
        let payload = vec![2u8; 300];
        let frames = [
            Frame::Message(Message {
                sub: u32::MAX,
                topic: &topic,
                offset: u64::MAX,
                time_ms: u64::MAX,
                key: Some(&key),
                payload: &payload,
            }),
            Frame::GroupMessage(GroupMessage {
                sub: u32::MAX,
                tag: u64::MAX,
                topic: &topic,
                offset: u64::MAX,
                time_ms: u64::MAX,
                attempt: u32::MAX,
                key: Some(&key),
                payload: &payload,
            }),
            Frame::Asked(Asked {
                sub: u32::MAX,
                tag: u64::MAX,
                topic: &topic,
                offset: u64::MAX,
                time_ms: u64::MAX,
                attempt: u32::MAX,
                reply: u64::MAX,
                key: Some(&key),
                payload: &payload,
            }),
        ];
        let m = DiskMessage {
            offset: 0,
            seq: 1,
            time_ms: 0,
            key: Some(key.clone()),
            payload: payload.clone(),
        };
        let exact = topic.len() + key.len() + payload.len() + DELIVERY_OVERHEAD;
        assert!(fits(topic.len(), &m, exact));
        assert!(!fits(topic.len(), &m, exact - 1));
        for f in &frames {
            let bytes = f.to_vec();
            let (len, prefix) = mote_sdk::wire::read_length(&bytes).unwrap().unwrap();
            assert!(prefix <= MAX_LENGTH_PREFIX);
            assert!(
                len as usize <= exact,
                "{len} > {exact} for tag {:#x}",
                f.tag()
            );
        }
        // The loss notice itself is small whatever the limit.
        let lag = Frame::Lag(Lag {
            sub: u32::MAX,
            topic: &topic,
            missed: u64::MAX,
            next: u64::MAX,
        });
        assert!(lag.to_vec().len() < 512);
    }
}
