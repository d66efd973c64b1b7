//! Pending transactions on disk: `log/tx.log`, a small file of its own beside the
//! segments, in the store's discipline.
//!
//! ```text
//! file      := header batch*
//! header    := "MOTETX\0\0" version:u32le reserved:u32le             (16 bytes)
//! batch     := as in a segment (magic, length, CRC32C over the body; see `format`)
//! record    := kind:u8 fields
//!   1 prepare  tx:var time_ms:var topic:str client:str key:optbytes payload:bytes
//!   2 settle   tx:var                                  committed or rolled back
//! ```
//!
//! Why a file of its own rather than records in the segments: a prepared message must
//! outlive every segment retention drops, and the file stays as small as what is
//! pending. Appends go through the writer thread like the log's batches, and take a place
//! in the log's positions, so that with `--sync always` a `Prepared` waits for the sync
//! that covers its record exactly as a `Published` does. When more than three quarters
//! of the file are settled records (and it is past 64 KiB) the engine has it rewritten
//! with the pending ones only (a new file, synced, renamed over the old).
//!
//! Recovery reads the file whole at startup: a torn tail is cut off, a batch that fails
//! its checksum is skipped and counted, a damaged header sets the file aside.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{self, Batch};
use super::io::WriteCmd;
use super::{Log, StoreError};

/// The first bytes of the file.
pub(crate) const TX_MAGIC: &[u8; 8] = b"MOTETX\0\0";
/// The format written.
const TX_VERSION: u32 = 1;
/// Length of the header.
pub(crate) const TX_HEADER: usize = 16;
/// Below this the file is never rewritten: small is small enough.
const REWRITE_FROM: u64 = 64 << 10;

const KIND_PREPARE: u8 = 1;
const KIND_SETTLE: u8 = 2;

/// The file's path in the log directory.
pub(crate) fn tx_path(logdir: &Path) -> PathBuf {
    logdir.join("tx.log")
}

/// The header of a new file.
pub(crate) fn tx_header() -> [u8; TX_HEADER] {
    let mut h = [0u8; TX_HEADER];
    h[..8].copy_from_slice(TX_MAGIC);
    h[8..12].copy_from_slice(&TX_VERSION.to_le_bytes());
    h
}

/// A pending transaction found on disk at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTx {
    /// Its id.
    pub tx: u64,
    /// When it was prepared (ms since the Unix epoch).
    pub time_ms: u64,
    /// Its topic.
    pub topic: String,
    /// The client name of the connection that prepared it (empty: HTTP).
    pub client: String,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What the log knows of the file.
#[derive(Debug, Default)]
pub(crate) struct TxDisk {
    /// Bytes of the file (as handed to the writer).
    file_bytes: u64,
    /// Bytes of each pending transaction's record.
    live: HashMap<u64, u64>,
    live_bytes: u64,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    format::put_var(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a prepare record.
pub(crate) fn put_prepare(out: &mut Vec<u8>, t: &TxRecord<'_>) {
    out.push(KIND_PREPARE);
    format::put_var(out, t.tx);
    format::put_var(out, t.time_ms);
    put_bytes(out, t.topic.as_bytes());
    put_bytes(out, t.client.as_bytes());
    match t.key {
        None => format::put_var(out, 0),
        Some(k) => {
            format::put_var(out, k.len() as u64 + 1);
            out.extend_from_slice(k);
        }
    }
    put_bytes(out, t.payload);
}

/// A prepared transaction, as written.
#[derive(Debug, Clone, Copy)]
pub struct TxRecord<'a> {
    /// Its id.
    pub tx: u64,
    /// When it was prepared (wall-clock ms).
    pub time_ms: u64,
    /// Its topic.
    pub topic: &'a str,
    /// The producer's client name (empty: HTTP).
    pub client: &'a str,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload.
    pub payload: &'a [u8],
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn var(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.var()?;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// What one record says.
enum TxChange {
    Prepare(RecoveredTx),
    Settle(u64),
}

/// Reads the records of one batch body; `None` at the first record that does not parse
/// (the rest of the batch is skipped).
fn records(body: &[u8], out: &mut Vec<TxChange>) -> Option<()> {
    let mut r = Reader { b: body, pos: 0 };
    while r.pos < body.len() {
        let kind = *body.get(r.pos)?;
        r.pos += 1;
        match kind {
            KIND_PREPARE => {
                let tx = r.var()?;
                let time_ms = r.var()?;
                let topic = r.str()?.to_string();
                let client = r.str()?.to_string();
                let key = match r.var()? {
                    0 => None,
                    n => Some(r.take(n - 1)?.to_vec()),
                };
                let payload = r.bytes()?.to_vec();
                out.push(TxChange::Prepare(RecoveredTx {
                    tx,
                    time_ms,
                    topic,
                    client,
                    key,
                    payload,
                }));
            }
            KIND_SETTLE => out.push(TxChange::Settle(r.var()?)),
            _ => return None,
        }
    }
    Some(())
}

/// What recovery of the file found.
pub(crate) struct TxRecovery {
    pub(crate) pending: Vec<RecoveredTx>,
    pub(crate) disk: TxDisk,
    pub(crate) skipped: u64,
    /// Whether the file holds settled records worth dropping now.
    pub(crate) rewrite: bool,
}

/// Reads `logdir/tx.log` (blocking: at startup only): the pending transactions, in the
/// order they were prepared. A torn tail is cut off; a damaged batch is skipped and
/// counted; a file without a good header is set aside.
pub(crate) fn recover(logdir: &Path, notes: &mut Vec<String>) -> Result<TxRecovery, StoreError> {
    let path = tx_path(logdir);
    let mut rec = TxRecovery {
        pending: Vec::new(),
        disk: TxDisk::default(),
        skipped: 0,
        rewrite: false,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rec),
        Err(e) => {
            return Err(StoreError::Io(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let good_header = bytes.len() >= TX_HEADER
        && &bytes[..8] == TX_MAGIC
        && u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) == TX_VERSION;
    if !good_header {
        if bytes.is_empty() {
            let _ = std::fs::remove_file(&path);
            return Ok(rec);
        }
        let aside = path.with_extension("log.bad");
        let _ = std::fs::rename(&path, &aside);
        notes.push(format!(
            "{} has no valid header: set aside as {} (pending transactions in it are lost)",
            path.display(),
            aside.display()
        ));
        rec.skipped += 1;
        return Ok(rec);
    }
    let mut changes = Vec::new();
    let mut pos = TX_HEADER;
    let mut cut = None;
    while pos < bytes.len() {
        match format::batch(&bytes[pos..]) {
            Batch::Whole { len } => {
                let body = &bytes[pos + format::BATCH_HEADER..pos + len];
                if records(body, &mut changes).is_none() {
                    rec.skipped += 1;
                    notes.push(format!(
                        "{}: a damaged record at byte {pos}: the rest of its batch skipped",
                        path.display()
                    ));
                }
                pos += len;
            }
            Batch::Partial { .. } => {
                cut = Some(pos);
                break;
            }
            Batch::Bad => match format::resync(&bytes, pos + 1) {
                Some(p) => {
                    rec.skipped += 1;
                    notes.push(format!(
                        "{}: {} damaged bytes at byte {pos} skipped",
                        path.display(),
                        p - pos
                    ));
                    pos = p;
                }
                None => {
                    cut = Some(pos);
                    break;
                }
            },
        }
    }
    if let Some(at) = cut {
        notes.push(format!(
            "{}: a torn tail of {} bytes cut off",
            path.display(),
            bytes.len() - at
        ));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(at as u64).and_then(|()| f.sync_data()));
        if let Err(e) = f {
            return Err(StoreError::Io(format!(
                "cannot cut the torn tail of {}: {e}",
                path.display()
            )));
        }
    }
    let mut order: Vec<u64> = Vec::new();
    let mut by_id: HashMap<u64, RecoveredTx> = HashMap::new();
    let mut settled = 0u64;
    for c in changes {
        match c {
            TxChange::Prepare(t) => {
                if by_id.insert(t.tx, t.clone()).is_none() {
                    order.push(t.tx);
                }
            }
            TxChange::Settle(id) => {
                settled += 1;
                by_id.remove(&id);
            }
        }
    }
    for id in order {
        if let Some(t) = by_id.remove(&id) {
            let mut one = Vec::new();
            put_prepare(&mut one, &as_record(&t));
            rec.disk.live.insert(t.tx, one.len() as u64);
            rec.disk.live_bytes += one.len() as u64;
            rec.pending.push(t);
        }
    }
    rec.disk.file_bytes = cut.unwrap_or(bytes.len()) as u64;
    // Settled records (or damage) at startup: start from a file of the pending ones.
    rec.rewrite = settled > 0 || rec.skipped > 0;
    Ok(rec)
}

fn as_record(t: &RecoveredTx) -> TxRecord<'_> {
    TxRecord {
        tx: t.tx,
        time_ms: t.time_ms,
        topic: &t.topic,
        client: &t.client,
        key: t.key.as_deref(),
        payload: &t.payload,
    }
}

impl Log {
    /// Appends the record of a prepared transaction. Like a message, it is durable once
    /// [`Log::synced`] reaches [`Log::position`] as it is after this call.
    pub fn append_tx_prepare(&mut self, t: &TxRecord<'_>) {
        let mut bytes = Vec::with_capacity(format::BATCH_HEADER + 32 + t.payload.len());
        let at = format::begin_batch(&mut bytes);
        put_prepare(&mut bytes, t);
        let len = (bytes.len() - format::BATCH_HEADER) as u64;
        format::seal_batch(&mut bytes, at);
        self.tx.live.insert(t.tx, len);
        self.tx.live_bytes += len;
        self.hand_tx(bytes);
    }

    /// Appends that transaction `tx` was settled (committed or rolled back).
    pub fn append_tx_settle(&mut self, tx: u64) {
        let mut bytes = Vec::with_capacity(format::BATCH_HEADER + 11);
        let at = format::begin_batch(&mut bytes);
        bytes.push(KIND_SETTLE);
        format::put_var(&mut bytes, tx);
        format::seal_batch(&mut bytes, at);
        if let Some(len) = self.tx.live.remove(&tx) {
            self.tx.live_bytes -= len;
        }
        self.hand_tx(bytes);
    }

    /// Hands a batch of the transaction file to the writer, after the log's open batch
    /// (sealed first, so that every position given out before stays below this one).
    fn hand_tx(&mut self, bytes: Vec<u8>) {
        self.seal();
        let len = bytes.len() as u64;
        self.handed += len;
        self.tx.file_bytes += len;
        self.unsynced_since_ms.get_or_insert(self.now_ms);
        self.cmds.push(WriteCmd::TxAppend {
            bytes: Arc::new(bytes),
            upto: self.handed,
        });
    }

    /// Whether the transaction file is mostly settled records: the engine should hand
    /// the pending ones to [`Log::rewrite_tx`].
    pub fn tx_wants_rewrite(&self) -> bool {
        self.tx.file_bytes >= REWRITE_FROM && self.tx.live_bytes * 4 < self.tx.file_bytes
    }

    /// Has the transaction file replaced by one holding only `pending`.
    pub fn rewrite_tx<'a>(&mut self, pending: impl Iterator<Item = TxRecord<'a>>) {
        let mut bytes = Vec::new();
        self.tx.live.clear();
        self.tx.live_bytes = 0;
        for t in pending {
            let at = format::begin_batch(&mut bytes);
            put_prepare(&mut bytes, &t);
            let len = (bytes.len() - at - format::BATCH_HEADER) as u64;
            format::seal_batch(&mut bytes, at);
            self.tx.live.insert(t.tx, len);
            self.tx.live_bytes += len;
        }
        self.seal();
        self.tx.file_bytes = (TX_HEADER + bytes.len()) as u64;
        self.cmds.push(WriteCmd::TxRewrite { bytes });
    }

    /// Takes over what recovery found of the transaction file.
    pub(crate) fn set_tx_disk(&mut self, disk: TxDisk) {
        self.tx = disk;
    }

    /// Bytes of the transaction file.
    pub fn tx_file_bytes(&self) -> u64 {
        self.tx.file_bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn file(batches: &[Vec<u8>]) -> Vec<u8> {
        let mut f = tx_header().to_vec();
        for b in batches {
            f.extend_from_slice(b);
        }
        f
    }

    fn prepare(tx: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        let at = format::begin_batch(&mut b);
        put_prepare(
            &mut b,
            &TxRecord {
                tx,
                time_ms: 1_764_583_200_000,
                topic: "orders/new",
                client: "shop",
                key: Some(b"k"),
                payload,
            },
        );
        format::seal_batch(&mut b, at);
        b
    }

    fn settle(tx: u64) -> Vec<u8> {
        let mut b = Vec::new();
        let at = format::begin_batch(&mut b);
        b.push(KIND_SETTLE);
        format::put_var(&mut b, tx);
        format::seal_batch(&mut b, at);
        b
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mote-tx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pending_ones_come_back_settled_ones_do_not() {
        let d = dir("pending");
        std::fs::write(
            tx_path(&d),
            file(&[prepare(1, b"a"), prepare(2, b"b"), settle(1)]),
        )
        .unwrap();
        let mut notes = Vec::new();
        let r = recover(&d, &mut notes).unwrap();
        assert_eq!(r.pending.len(), 1);
        assert_eq!(r.pending[0].tx, 2);
        assert_eq!(r.pending[0].payload, b"b");
        assert_eq!(r.pending[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.pending[0].client, "shop");
        assert!(r.rewrite, "a settled record is worth a rewrite");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_damaged_batch_skipped_and_counted() {
        let d = dir("torn");
        let mut damaged = prepare(3, b"ccc");
        let n = damaged.len();
        damaged[n - 1] ^= 0xff;
        let whole = file(&[prepare(1, b"a"), damaged, prepare(4, b"d")]);
        let mut torn = whole.clone();
        torn.extend_from_slice(&prepare(5, b"e")[..9]);
        std::fs::write(tx_path(&d), &torn).unwrap();
        let mut notes = Vec::new();
        let r = recover(&d, &mut notes).unwrap();
        let ids: Vec<u64> = r.pending.iter().map(|t| t.tx).collect();
        assert_eq!(ids, [1, 4]);
        assert_eq!(r.skipped, 1);
        assert_eq!(
            std::fs::metadata(tx_path(&d)).unwrap().len(),
            whole.len() as u64,
            "the torn tail is cut"
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn a_file_without_a_header_is_set_aside() {
        let d = dir("header");
        std::fs::write(tx_path(&d), b"not a transaction file at all").unwrap();
        let mut notes = Vec::new();
        let r = recover(&d, &mut notes).unwrap();
        assert!(r.pending.is_empty());
        assert!(!tx_path(&d).exists());
        assert!(d.join("tx.log.bad").exists());
        assert_eq!(notes.len(), 1);
    }
}
