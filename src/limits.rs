//! Every bound the broker enforces, in one place, with its documented default.

use std::fmt;

/// Bytes a frame may carry beyond its payload: topic, key, and field overhead.
pub const FRAME_OVERHEAD: usize = 64 * 1024;

/// Bytes a record may hold beyond the largest frame: replies and deliveries are batched
/// into records of up to a few hundred KiB.
pub const RECORD_SLACK: usize = 512 * 1024;

/// The broker's bounds. Each one has a `mote serve` flag and a `MOTE_*` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most TCP connections at once (`--max-connections`, default 1024).
    pub max_connections: usize,
    /// Most TCP connections that have not finished their handshake, in all
    /// (`--max-pending`, default a quarter of `--max-connections`: 256); the rest is kept
    /// for peers that authenticate.
    pub max_pending: usize,
    /// Most of those from one address (`--max-pending-per-address`, default a quarter of
    /// `--max-pending`: 64).
    pub max_pending_per_address: usize,
    /// Bytes of frames, records and HTTP requests still arriving, over all connections
    /// (`--max-partial`, default 16 MiB). A connection that would go past it is not read
    /// until room frees; one frame alone always fits.
    pub max_partial_bytes: usize,
    /// A frame, record or HTTP request must arrive whole within this of its first byte
    /// (`--partial-timeout`, default 30 s).
    pub partial_timeout_ms: u64,
    /// Most topics the broker keeps (`--max-topics`, default 10,000).
    pub max_topics: usize,
    /// Most subscriptions per connection (`--max-subscriptions`, default 64).
    pub max_subscriptions: usize,
    /// Most consumer groups at once (`--max-groups`, default 1,000).
    pub max_groups: usize,
    /// Largest payload in bytes (`--max-payload`, default 1 MiB).
    pub max_payload: usize,
    /// Most messages one topic's ring keeps (`--ring-messages`, default 10,000).
    pub ring_messages: usize,
    /// Most bytes one topic's ring keeps (`--ring-bytes`, default 8 MiB).
    pub ring_bytes: usize,
    /// Bytes all rings together may keep; the oldest messages go first (`--memory`,
    /// default 64 MiB).
    pub memory: usize,
    /// Keepalive the broker dictates; silence for 3× closes (`--keepalive`, default 30 s).
    pub keepalive_ms: u64,
    /// Time a new connection has to send `Hello` (`--handshake-timeout`, default 5 s).
    pub handshake_ms: u64,
    /// How long a durable consumer group is kept without members before it is removed
    /// (`--group-expiry`, default 7 days; `[groups.NAME] expiry` sets it per group):
    /// generous, so that a worker down for a long weekend finds its jobs, and still
    /// bounded, so that groups nobody uses any more free their `--max-groups` slot.
    pub group_expiry_ms: u64,
    /// Most prepared transactions held at once, broker-wide (`--max-transactions`,
    /// default 1,000); a `Prepare` beyond it is refused with `pending_limit`.
    pub max_transactions: usize,
    /// Bytes of key and payload all prepared transactions may hold together
    /// (`--max-transaction-bytes`, default 16 MiB); held outside the rings and `--memory`.
    pub max_transaction_bytes: usize,
    /// An undecided transaction's producer is asked to settle it after this, and again
    /// every this (`--tx-check-after`, default 5 s).
    pub tx_check_after_ms: u64,
    /// Checks sent before `--tx-default` is applied (`--tx-check-max`, default 3).
    pub tx_check_max: u32,
    /// What happens to a transaction nobody settled: commit (`true`) or roll back
    /// (`--tx-default`, default rollback).
    pub tx_default_commit: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 256,
            max_pending_per_address: 64,
            max_partial_bytes: 16 * 1024 * 1024,
            partial_timeout_ms: 30_000,
            max_topics: 10_000,
            max_subscriptions: 64,
            max_groups: 1_000,
            max_payload: 1024 * 1024,
            ring_messages: 10_000,
            ring_bytes: 8 * 1024 * 1024,
            memory: 64 * 1024 * 1024,
            keepalive_ms: 30_000,
            handshake_ms: 5_000,
            group_expiry_ms: 7 * 24 * 3_600_000,
            max_transactions: 1_000,
            max_transaction_bytes: 16 * 1024 * 1024,
            tx_check_after_ms: 5_000,
            tx_check_max: 3,
            tx_default_commit: false,
        }
    }
}

/// A set of limits that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsError(String);

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitsError {}

impl Limits {
    /// The defaults around `max_connections`: `--max-pending` a quarter of it and
    /// `--max-pending-per-address` a quarter of that (each at least 1).
    pub fn with_connections(max_connections: usize) -> Limits {
        let max_pending = (max_connections / 4).max(1);
        Limits {
            max_connections,
            max_pending,
            max_pending_per_address: (max_pending / 4).max(1),
            ..Limits::default()
        }
    }

    /// Largest frame the broker accepts after the length prefix.
    pub fn max_frame(&self) -> usize {
        self.max_payload + FRAME_OVERHEAD
    }

    /// Largest encrypted record the broker accepts (length prefix and tag included).
    pub fn max_record(&self) -> usize {
        self.max_frame() + RECORD_SLACK
    }

    /// Checks the limits make sense together.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let err = |m: String| Err(LimitsError(m));
        let nonzero = [
            ("--max-connections", self.max_connections),
            ("--max-pending", self.max_pending),
            ("--max-pending-per-address", self.max_pending_per_address),
            ("--max-partial", self.max_partial_bytes),
            ("--max-topics", self.max_topics),
            ("--max-subscriptions", self.max_subscriptions),
            ("--max-payload", self.max_payload),
            ("--ring-messages", self.ring_messages),
            ("--ring-bytes", self.ring_bytes),
            ("--memory", self.memory),
        ];
        for (flag, v) in nonzero {
            if v == 0 {
                return err(format!("{flag} must be greater than 0"));
            }
        }
        if self.max_payload > u32::MAX as usize - FRAME_OVERHEAD {
            return err("--max-payload must be below 4 GiB".into());
        }
        // A message with a key can still exceed a ring sized this tightly; the engine
        // refuses that one message with a clear error rather than evicting the ring.
        if self.max_payload + super::engine::ENTRY_OVERHEAD > self.ring_bytes {
            return err(format!(
                "--max-payload ({}) must fit in --ring-bytes ({}) with {} bytes of overhead",
                self.max_payload,
                self.ring_bytes,
                super::engine::ENTRY_OVERHEAD
            ));
        }
        if self.ring_bytes > self.memory {
            return err(format!(
                "--ring-bytes ({}) must not exceed --memory ({})",
                self.ring_bytes, self.memory
            ));
        }
        if self.max_partial_bytes < self.max_record() {
            return err(format!(
                "--max-partial ({}) must hold one whole record: --max-payload ({}) and {} bytes",
                self.max_partial_bytes,
                self.max_payload,
                self.max_record() - self.max_payload
            ));
        }
        if self.keepalive_ms == 0 || self.keepalive_ms > u64::from(u32::MAX) {
            return err("--keepalive must be between 1 ms and 49 days".into());
        }
        if self.handshake_ms == 0 {
            return err("--handshake-timeout must be greater than 0".into());
        }
        if self.partial_timeout_ms == 0 {
            return err("--partial-timeout must be greater than 0".into());
        }
        if self.tx_check_after_ms == 0 {
            return err("--tx-check-after must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn contradictions_are_named() {
        let l = Limits {
            max_payload: 9 << 20,
            ..Limits::default()
        };
        assert_eq!(
            l.validate().unwrap_err().to_string(),
            format!(
                "--max-payload (9437184) must fit in --ring-bytes (8388608) with {} bytes of overhead",
                crate::engine::ENTRY_OVERHEAD
            )
        );
        let l = Limits {
            memory: 1 << 20,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("--memory"));
        let l = Limits {
            max_topics: 0,
            ..Limits::default()
        };
        assert_eq!(
            l.validate().unwrap_err().to_string(),
            "--max-topics must be greater than 0"
        );
    }
}
