//! Finding a topic's messages by store time on disk, from the segments' summaries alone:
//! no read. A run (consecutive offsets of one topic in one segment) knows the newest
//! store time of its messages, and a topic's store times never go back, so the first
//! run whose newest message is not older than a time holds the first message at or
//! after it. A reader starts at that run and passes over its older messages as they come
//! (at most one segment's worth).

use super::Log;

impl Log {
    /// The first offset of the log's run of topic `name` that holds its first message
    /// stored at or after wall time `time_ms` (at or before that message's offset), or
    /// the topic's next offset when every message it holds is older; `None` for a topic
    /// the log does not hold.
    pub fn offset_near_time(&self, name: &str, time_ms: u64) -> Option<u64> {
        let (t, runs) = self.runs_of(name)?;
        let found = runs
            .filter(|r| r.last >= t.first && r.last_time >= time_ms)
            .map(|r| r.first.max(t.first))
            .min();
        Some(found.unwrap_or(t.next))
    }
}
