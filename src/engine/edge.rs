//! What the HTTP edge needs beyond the TCP protocol: reading a topic's stored messages,
//! and knowing when a published message was handed to a subscriber (`?wait=delivered`).

use mote_sdk::ErrorCode;

use super::{ConnId, Engine, Refusal};

/// A copy of one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its offset.
    pub offset: u64,
    /// When it was stored (ms since the Unix epoch).
    pub time_ms: u64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Where a read of stored messages starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The oldest stored message.
    Earliest,
    /// After the newest: nothing yet.
    Latest,
    /// This offset (clamped to what is stored).
    Offset(u64),
    /// The first message stored at or after this wall time (ms since the Unix epoch):
    /// `since=10m` is `Time(now - 10 min)`.
    Time(u64),
    /// Exactly the newest this many messages (fewer if fewer are stored).
    Last(u64),
}

/// A read of stored messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Oldest offset stored.
    pub first: u64,
    /// Offset the next message will get.
    pub next: u64,
    /// The messages read, oldest first.
    pub messages: Vec<StoredMessage>,
}

/// A pending `wait=delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaitId(pub u64);

impl Engine {
    /// Copies up to `limit` stored messages of `topic` from `since`, and no more once
    /// their payloads reach `max_bytes` (one at least). An unknown topic reads as empty.
    pub fn read_topic(&self, topic: &str, since: Since, limit: usize, max_bytes: usize) -> Stored {
        let Some(&tid) = self.by_name.get(topic) else {
            return Stored {
                first: 0,
                next: 0,
                messages: Vec::new(),
            };
        };
        let t = &self.topics[tid.0 as usize];
        let (ring, end) = (&t.ring, t.visible);
        let start = match since {
            Since::Earliest => ring.first(),
            Since::Latest => end,
            Since::Offset(o) => o.clamp(ring.first(), end),
            Since::Time(ms) => ring.at_time(ms).min(end),
            Since::Last(n) => end.saturating_sub(n).max(ring.first()),
        };
        let mut bytes = 0;
        let messages = (start..end)
            .take(limit)
            .filter_map(|o| ring.get(o).map(|e| (o, e)))
            .take_while(|(_, e)| {
                let first = bytes == 0;
                bytes += e.payload().len().max(1);
                first || bytes <= max_bytes
            })
            .map(|(o, e)| StoredMessage {
                offset: o,
                time_ms: e.time_ms,
                key: e.key().map(<[u8]>::to_vec),
                payload: e.payload().to_vec(),
            })
            .collect();
        Stored {
            first: ring.first().min(end),
            next: end,
            messages,
        }
    }

    /// Asks to be told (through `waiter`'s wakeup and [`Engine::take_delivered`]) once the
    /// message at `offset` of `topic` was handed to at least one subscriber.
    pub fn handle_wait_delivered(
        &mut self,
        waiter: ConnId,
        topic: &str,
        offset: u64,
    ) -> Result<WaitId, Refusal> {
        let Some(&tid) = self.by_name.get(topic) else {
            return Err(Refusal::new(
                ErrorCode::BAD_TOPIC,
                format!("no topic {topic:?}"),
            ));
        };
        self.next_wait += 1;
        let id = WaitId(self.next_wait);
        self.topics[tid.0 as usize].waits.push((offset, id, waiter));
        Ok(id)
    }

    /// Forgets a wait that timed out.
    pub fn cancel_wait(&mut self, topic: &str, id: WaitId) {
        if let Some(&tid) = self.by_name.get(topic) {
            self.topics[tid.0 as usize].waits.retain(|w| w.1 != id);
        }
    }

    /// Moves the waits whose message was delivered into `into` (cleared first).
    pub fn take_delivered(&mut self, into: &mut Vec<WaitId>) {
        into.clear();
        std::mem::swap(into, &mut self.delivered_waits);
    }
}
