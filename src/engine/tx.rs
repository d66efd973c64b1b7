//! Transactional publishes (two-phase commit): prepared messages held apart from every
//! ring until they are committed (published then, through the normal publish path) or
//! rolled back (dropped), and the check-back of undecided ones.
//!
//! A transaction is prepared by a connection (its owner, known also by the client name
//! of its `Hello`) or over HTTP (no owner). After `--tx-check-after` an undecided one is
//! checked back: a `TxCheck` goes to its owner, or, if the owner is gone, to the newest
//! connection (of protocol 4) with the same client name; again every `--tx-check-after`,
//! at most `--tx-check-max` times; one `--tx-check-after` after the last check (or at
//! once when nobody could be asked then) `--tx-default` is applied. One prepared over
//! HTTP waits `--tx-check-after` × `--tx-check-max` and then takes `--tx-default`.
//!
//! Timers are data: each pending transaction has one deadline in `due`, ordered; the
//! broker's timer wakes for the first (see `arm_timer`), and a deadline acted on is
//! always moved forward or removed.

use std::collections::{BTreeSet, HashMap, HashSet};

use mote_sdk::wire::MAX_KEY_LEN;
use mote_sdk::{ErrorCode, Topic};
use sha2::Digest;

use super::{ConnId, Engine, Refusal};
use crate::store::{RecoveredTx, TxRecord};

/// Counters of transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Transactions prepared.
    pub prepared: u64,
    /// Committed (by a producer, or by `--tx-default commit`).
    pub committed: u64,
    /// Rolled back (by a producer, or by `--tx-default rollback`).
    pub rolled_back: u64,
    /// Checks sent to producers.
    pub checked: u64,
    /// Settled by `--tx-default` because nobody settled them in time.
    pub timed_out: u64,
    /// Prepares refused at `--max-transactions` or `--max-transaction-bytes`.
    pub refused: u64,
    /// Pending now.
    pub pending: u64,
    /// Bytes of key and payload they hold.
    pub pending_bytes: u64,
}

/// How a transaction was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSettled {
    /// Whether it was committed.
    pub committed: bool,
    /// The offset the message got (0 when rolled back).
    pub offset: u64,
    /// When it was stored, wall-clock ms (0 when rolled back).
    pub time_ms: u64,
}

struct PendingTx {
    topic: Box<str>,
    key: Option<Box<[u8]>>,
    payload: Box<[u8]>,
    /// The connection that prepared it, while it is connected.
    owner: Option<ConnId>,
    /// Its client name (empty: over HTTP, or a nameless client).
    client: Box<str>,
    http: bool,
    /// Wall-clock time of the prepare.
    time_ms: u64,
    /// Checks made so far.
    checks: u32,
    /// Its deadline in `due`.
    due_ms: u64,
}

impl PendingTx {
    fn cost(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, |k| k.len())
    }
}

/// The pending transactions; see the module docs.
pub(super) struct TxTable {
    pending: HashMap<u64, PendingTx>,
    /// `(deadline, tx)`, the soonest first.
    due: BTreeSet<(u64, u64)>,
    bytes: usize,
    /// Checks waiting for their connection to take them: `(conn, tx, attempt)`.
    outbox: Vec<(ConnId, u64, u32)>,
    /// Connections of protocol 4 or later (they understand `TxCheck`).
    capable: HashSet<ConnId>,
    /// Secret key and counter the ids are made from.
    key: [u8; 32],
    counter: u64,
    stats: TxStats,
}

impl TxTable {
    pub(super) fn new() -> TxTable {
        // Replaced by the broker's randomness (`Engine::set_tx_key`); this one is only
        // as good as the standard library's hash seeds, which is enough for tests.
        use std::hash::{BuildHasher, Hasher};
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        TxTable {
            pending: HashMap::new(),
            due: BTreeSet::new(),
            bytes: 0,
            outbox: Vec::new(),
            capable: HashSet::new(),
            key,
            counter: 0,
            stats: TxStats::default(),
        }
    }

    /// A fresh id: SHA-256 of the secret key and a counter, never 0 nor one in use.
    fn next_id(&mut self) -> u64 {
        loop {
            self.counter += 1;
            let mut h = sha2::Sha256::new();
            h.update(self.key);
            h.update(self.counter.to_le_bytes());
            let d = h.finalize();
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[..8]);
            let id = u64::from_le_bytes(b);
            if id != 0 && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn remove(&mut self, tx: u64) -> Option<PendingTx> {
        let p = self.pending.remove(&tx)?;
        self.due.remove(&(p.due_ms, tx));
        self.bytes -= p.cost();
        Some(p)
    }
}

/// `tx` as HTTP and the CLI write it: 16 lowercase hex digits.
pub fn tx_hex(tx: u64) -> String {
    format!("{tx:016x}")
}

/// A transaction id written as 16 hex digits (either case).
pub fn parse_tx(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

impl Engine {
    /// Sets the secret the transaction ids are made from (the broker's randomness).
    pub fn set_tx_key(&mut self, key: [u8; 32]) {
        self.tx.key = key;
    }

    /// Connection `conn` speaks protocol 4 or later: it may be asked to settle.
    pub fn handle_tx_capable(&mut self, conn: ConnId) {
        self.tx.capable.insert(conn);
    }

    /// Counters of transactions.
    pub fn tx_stats(&self) -> TxStats {
        TxStats {
            pending: self.tx.pending.len() as u64,
            pending_bytes: self.tx.bytes as u64,
            ..self.tx.stats
        }
    }

    /// The topic of pending transaction `tx`, for the caller's rights.
    pub fn tx_topic(&self, tx: u64) -> Option<&str> {
        self.tx.pending.get(&tx).map(|p| &*p.topic)
    }

    /// Prepares a transactional publish by `conn` (or [`ConnId::EDGE`]) at wall-clock
    /// `time_ms`: checked as a publish would be, held apart from every ring. Returns its
    /// id. With `--sync always`, the answer waits for [`Engine::take_confirm_gate`].
    pub fn handle_prepare(
        &mut self,
        conn: ConnId,
        time_ms: u64,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<u64, Refusal> {
        let r = self.check_prepare(topic, key, payload);
        if let Err(r) = r {
            self.stats.count_error(r.code);
            return Err(r);
        }
        let key = key.filter(|k| !k.is_empty());
        let (owner, client, http) = match self.conns.get(conn.index()) {
            Some(c) if !c.http => (Some(conn), c.client.clone(), false),
            Some(c) => (None, c.client.clone(), true),
            None => (None, Box::from(""), true),
        };
        let tx = self.tx.next_id();
        let after = self.limits.tx_check_after_ms;
        let wait = if http {
            after.saturating_mul(u64::from(self.limits.tx_check_max.max(1)))
        } else {
            after
        };
        let due_ms = self.clock_ms.saturating_add(wait);
        if let Some(log) = self.log.as_mut() {
            log.append_tx_prepare(&TxRecord {
                tx,
                time_ms,
                topic,
                client: if http { "" } else { &client },
                key,
                payload,
            });
            if log.sync_always() {
                self.confirm_gate = Some(log.position());
            }
            self.log_wanted = true;
        }
        let p = PendingTx {
            topic: topic.into(),
            key: key.map(Into::into),
            payload: payload.into(),
            owner,
            client,
            http,
            time_ms,
            checks: 0,
            due_ms,
        };
        self.tx.bytes += p.cost();
        self.tx.pending.insert(tx, p);
        self.tx.due.insert((due_ms, tx));
        self.tx.stats.prepared += 1;
        self.note_deadline(due_ms);
        Ok(tx)
    }

    fn check_prepare(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), Refusal> {
        let l = &self.limits;
        if payload.len() > l.max_payload {
            return Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "payload is {} bytes, the limit is {} (--max-payload)",
                    payload.len(),
                    l.max_payload
                ),
            ));
        }
        let klen = key.map_or(0, <[u8]>::len);
        if klen > MAX_KEY_LEN {
            return Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!("key is {klen} bytes, the limit is {MAX_KEY_LEN}"),
            ));
        }
        let cost = klen + payload.len() + super::ENTRY_OVERHEAD;
        let room = l.ring_bytes.min(l.memory);
        if cost > room {
            return Err(Refusal::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                format!(
                    "message with its key needs {cost} bytes, a ring holds at most {room} (--ring-bytes, --memory)"
                ),
            ));
        }
        Topic::new(topic).map_err(|e| {
            Refusal::new(
                ErrorCode::BAD_TOPIC,
                format!("bad topic {}: {e}", mote_sdk::topic::shown(topic)),
            )
        })?;
        // A payload its topic's JSON schema refuses is refused now, not at the commit
        // (which could not tell the producer).
        self.check_schema(topic, payload)?;
        let l = &self.limits;
        let held = self.tx.pending.len();
        if held >= l.max_transactions {
            self.tx.stats.refused += 1;
            return Err(Refusal::new(
                ErrorCode::PENDING_LIMIT,
                format!(
                    "the broker holds {held} prepared transactions, the limit is {} (--max-transactions); commit or roll back some first",
                    l.max_transactions
                ),
            ));
        }
        if self.tx.bytes + klen + payload.len() > l.max_transaction_bytes {
            self.tx.stats.refused += 1;
            return Err(Refusal::new(
                ErrorCode::PENDING_LIMIT,
                format!(
                    "prepared transactions hold {} bytes, this one would go past the limit of {} (--max-transaction-bytes); commit or roll back some first",
                    self.tx.bytes, l.max_transaction_bytes
                ),
            ));
        }
        if let Some(log) = self.log.as_ref() {
            if let Some(f) = log.refusal(false) {
                return Err(match f {
                    crate::store::Failure::Full(m) => Refusal::new(ErrorCode::STORAGE_FULL, m),
                    crate::store::Failure::Failed(m) => Refusal::new(ErrorCode::STORAGE_FAILED, m),
                });
            }
        }
        Ok(())
    }

    /// Commits (publishes now, as `conn` at wall-clock `time_ms`) or rolls back
    /// transaction `tx`. The caller checked that `conn` may publish to its topic
    /// ([`Engine::tx_topic`]). A commit the publish path refuses leaves it pending.
    pub fn handle_settle(
        &mut self,
        conn: ConnId,
        time_ms: u64,
        tx: u64,
        commit: bool,
    ) -> Result<TxSettled, Refusal> {
        let Some(p) = self.tx.pending.get(&tx) else {
            self.stats.count_error(ErrorCode::NOT_FOUND);
            return Err(Refusal::new(
                ErrorCode::NOT_FOUND,
                format!(
                    "no pending transaction {}: unknown, or already committed or rolled back",
                    tx_hex(tx)
                ),
            ));
        };
        if !commit {
            self.tx.stats.rolled_back += 1;
            self.drop_tx(tx);
            return Ok(TxSettled {
                committed: false,
                offset: 0,
                time_ms: 0,
            });
        }
        let (topic, key, payload) = (p.topic.clone(), p.key.clone(), p.payload.clone());
        let offset = self.handle_publish(conn, time_ms, &topic, key.as_deref(), &payload)?;
        let stored = self
            .by_name
            .get(&*topic)
            .map_or(time_ms, |t| self.topics[t.0 as usize].last_time);
        // The message's own confirm gate stays for the caller; the settle record is
        // behind it in the log.
        let gate = self.confirm_gate.take();
        self.tx.stats.committed += 1;
        self.drop_tx(tx);
        if gate.is_some() {
            self.confirm_gate = self.log.as_ref().map(|l| l.position());
        }
        Ok(TxSettled {
            committed: true,
            offset,
            time_ms: stored,
        })
    }

    /// Forgets settled transaction `tx`, on disk too.
    fn drop_tx(&mut self, tx: u64) {
        if self.tx.remove(tx).is_none() {
            return;
        }
        if let Some(log) = self.log.as_mut() {
            log.append_tx_settle(tx);
            self.log_wanted = true;
            if log.tx_wants_rewrite() {
                let pending = self.tx.pending.iter().map(|(&id, p)| TxRecord {
                    tx: id,
                    time_ms: p.time_ms,
                    topic: &p.topic,
                    client: if p.http { "" } else { &p.client },
                    key: p.key.as_deref(),
                    payload: &p.payload,
                });
                log.rewrite_tx(pending);
            }
        }
    }

    /// The soonest transaction deadline after `now_ms`, for the broker's timer.
    pub(super) fn tx_next_due(&self, now_ms: u64) -> Option<u64> {
        self.tx
            .due
            .range((now_ms.saturating_add(1), 0)..)
            .next()
            .map(|&(at, _)| at)
    }

    /// Checks back, or settles by `--tx-default`, the transactions due at `now_ms`
    /// (monotonic). Each one acted on gets a later deadline or is gone.
    pub(super) fn tx_timeouts(&mut self, now_ms: u64) {
        while let Some(&(at, tx)) = self.tx.due.first() {
            if at > now_ms {
                break;
            }
            self.tx.due.remove(&(at, tx));
            let Some(p) = self.tx.pending.get(&tx) else {
                continue;
            };
            let max = self.limits.tx_check_max;
            if !p.http && p.checks < max {
                let attempt = p.checks + 1;
                let target = self.tx_check_target(p.owner, &p.client);
                let p = self
                    .tx
                    .pending
                    .get_mut(&tx)
                    .unwrap_or_else(|| unreachable!());
                p.checks = attempt;
                p.due_ms = now_ms.saturating_add(self.limits.tx_check_after_ms);
                self.tx.due.insert((p.due_ms, tx));
                if let Some(conn) = target {
                    self.tx.outbox.push((conn, tx, attempt));
                    self.tx.stats.checked += 1;
                    self.wakeups.push(conn);
                }
                continue;
            }
            self.tx_default(tx);
        }
    }

    /// Who is asked about a transaction: its owner while connected, else the newest
    /// connection of protocol 4 with its client name.
    fn tx_check_target(&self, owner: Option<ConnId>, client: &str) -> Option<ConnId> {
        if let Some(o) = owner {
            return Some(o);
        }
        if client.is_empty() {
            return None;
        }
        self.tx
            .capable
            .iter()
            .filter_map(|&id| {
                let c = self.conns.get(id.index())?;
                (c.open && c.close.is_none() && *c.client == *client)
                    .then_some((c.connected_ms, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Applies `--tx-default` to `tx`, nobody having settled it.
    #[cold]
    fn tx_default(&mut self, tx: u64) {
        let Some(p) = self.tx.pending.get(&tx) else {
            return;
        };
        let who = if p.http {
            "prepared over HTTP".to_string()
        } else if p.client.is_empty() {
            "its producer did not answer".to_string()
        } else {
            format!("producer {:?} did not answer", &*p.client)
        };
        let topic = p.topic.clone();
        self.tx.stats.timed_out += 1;
        if self.limits.tx_default_commit {
            let now = self.expiry_now();
            match self.handle_settle(ConnId::EDGE, now, tx, true) {
                Ok(s) => log::info!(
                    "transaction {} on {} committed by --tx-default ({who}): offset {}",
                    tx_hex(tx),
                    mote_sdk::topic::shown(&topic),
                    s.offset
                ),
                Err(r) => {
                    log::warn!(
                        "transaction {} on {}: --tx-default commit refused ({}), rolled back",
                        tx_hex(tx),
                        mote_sdk::topic::shown(&topic),
                        r.message
                    );
                    self.tx.stats.rolled_back += 1;
                    self.drop_tx(tx);
                }
            }
        } else {
            log::info!(
                "transaction {} on {} rolled back by --tx-default ({who})",
                tx_hex(tx),
                mote_sdk::topic::shown(&topic)
            );
            self.tx.stats.rolled_back += 1;
            self.drop_tx(tx);
        }
    }

    /// Hands the checks queued for `conn` to `f` as `(tx, topic, attempt)`.
    pub fn take_tx_checks(&mut self, conn: ConnId, mut f: impl FnMut(u64, &str, u32)) {
        if self.tx.outbox.is_empty() {
            return;
        }
        let pending = &self.tx.pending;
        self.tx.outbox.retain(|&(c, tx, attempt)| {
            if c != conn {
                return true;
            }
            if let Some(p) = pending.get(&tx) {
                f(tx, &p.topic, attempt);
            }
            false
        });
    }

    /// Connection `conn` is gone: its transactions are known by client name from now.
    pub(super) fn tx_conn_gone(&mut self, conn: ConnId) {
        self.tx.capable.remove(&conn);
        if self.tx.pending.is_empty() {
            return;
        }
        for p in self.tx.pending.values_mut() {
            if p.owner == Some(conn) {
                p.owner = None;
            }
        }
        self.tx.outbox.retain(|o| o.0 != conn);
    }

    /// Takes over the transactions found on disk at startup (monotonic `now_ms`): their
    /// check clocks start again, their owners known by client name.
    pub fn restore_txs(&mut self, txs: &[RecoveredTx], now_ms: u64) {
        let after = self.limits.tx_check_after_ms;
        for t in txs {
            if self.tx.pending.contains_key(&t.tx) {
                continue;
            }
            let http = t.client.is_empty();
            let wait = if http {
                after.saturating_mul(u64::from(self.limits.tx_check_max.max(1)))
            } else {
                after
            };
            let due_ms = now_ms.saturating_add(wait);
            let p = PendingTx {
                topic: t.topic.as_str().into(),
                key: t.key.as_deref().map(Into::into),
                payload: t.payload.as_slice().into(),
                owner: None,
                client: t.client.as_str().into(),
                http,
                time_ms: t.time_ms,
                checks: 0,
                due_ms,
            };
            self.tx.bytes += p.cost();
            self.tx.pending.insert(t.tx, p);
            self.tx.due.insert((due_ms, t.tx));
            self.note_deadline(due_ms);
        }
        if !txs.is_empty() {
            log::info!("{} pending transaction(s) restored", txs.len());
        }
    }
}
