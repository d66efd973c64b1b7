//! Durable topics: one append-only log on disk behind every persisted topic.
//!
//! [`Log`] is the store's front, on the executor and without IO of its own: the engine
//! appends records to it (encoded into a batch in memory), and it says what the
//! [`io`] threads must do — write a batch, sync, start or delete a segment, read a
//! range back for a cursor behind the memory ring — and takes their completions. The
//! threads do the IO; the executor never waits for a disk.
//!
//! Why one log for all topics rather than a file per topic: an edge broker has many
//! small topics (a sensor each), and one log makes their writes one sequential stream
//! with one `fsync` per sync interval whatever the number of topics, where per-topic
//! files would sync (and wear a flash page) per topic, and hold a file descriptor each.
//! The cost is that a quiet topic with long retention keeps old segments alive: such a
//! segment, once mostly dead, is compacted (its live records copied to the head) and
//! deleted. Retention drops whole segments; nothing is rewritten on a timer.
//!
//! Layout of a data directory: `lock` (held with `flock` while a broker runs), `meta`
//! (format version, broker id, sequence epoch), `log/<no>.seg` (segments, see
//! [`format`]) and `log/<no>.idx` (their summaries, see [`segment`]).

mod backup;
pub(crate) mod format;
pub(crate) mod io;
mod read;
pub(crate) mod recover;
mod retention;
pub(crate) mod segment;
#[cfg(test)]
mod tests;
mod time;
mod tx;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use backup::{BackupReport, backup};
use format::{GroupRecord, Record, Records};
use io::{Done, ReadCmd, WriteCmd};
use segment::{GroupChange, Noted, SegmentInfo};
pub use tx::{RecoveredTx, TxRecord};

/// Why the store cannot open or go on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Another broker holds the data directory.
    Locked(String),
    /// The data was written by a newer mote.
    Newer {
        /// The directory.
        dir: String,
        /// The format found.
        version: u32,
    },
    /// A file operation failed.
    Io(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked(dir) => write!(
                f,
                "{dir} is in use by another mote broker (two brokers may not share a data directory)"
            ),
            StoreError::Newer { dir, version } => write!(
                f,
                "{dir} holds data in format {version}, written by a newer mote; this mote reads up to format {} (upgrade mote, or point --data elsewhere)",
                format::VERSION
            ),
            StoreError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

/// When the log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every batch; a confirmed publish is answered after the sync that covers it
    /// (group commit: publishes arriving during a sync share the next one).
    Always,
    /// At most this many milliseconds after a write.
    Every(u64),
    /// When the OS decides (and at a clean shutdown).
    Never,
}

/// How the log runs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// When to sync.
    pub sync: SyncPolicy,
    /// Bytes all segments may take together (`--disk`).
    pub disk: u64,
    /// A segment is closed past this size ...
    pub segment_bytes: u64,
    /// ... or this age (so age-based retention has a grain).
    pub segment_ms: u64,
    /// A batch is written once it holds this much ...
    pub batch_bytes: usize,
    /// ... or this long after its first record.
    pub batch_ms: u64,
    /// Bytes handed to the writer and not written yet above which publishers should
    /// be held back (a slow card must slow publishers, not grow memory).
    pub backlog: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            sync: SyncPolicy::Every(1_000),
            disk: 1 << 30,
            segment_bytes: 16 << 20,
            segment_ms: 3_600_000,
            batch_bytes: 64 << 10,
            batch_ms: 5,
            backlog: 32 << 20,
        }
    }
}

/// A topic found on disk at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTopic {
    /// Its name.
    pub name: String,
    /// The oldest offset retained.
    pub first: u64,
    /// The offset its next message gets.
    pub next: u64,
    /// The newest store time among its messages (its stored times never go back).
    pub last_time: u64,
    /// Its metadata (`mote topic meta`), sorted by key.
    pub meta: Vec<(String, String)>,
}

/// A durable group found on disk, its topics by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredGroup {
    /// Its name.
    pub name: String,
    /// Its filter.
    pub filter: String,
    /// Its settings.
    pub ack_timeout_ms: u64,
    /// Its settings.
    pub max_deliveries: u32,
    /// Its settings.
    pub prefetch: u32,
    /// `(topic, next offset)`.
    pub cursors: Vec<(String, u64)>,
    /// `(topic, offset, deliveries made)`: handed out and never acked.
    pub pending: Vec<(String, u64, u32)>,
}

/// What opening a data directory found.
#[derive(Debug)]
pub struct Opened {
    /// The broker's id, kept across restarts.
    pub broker_id: u64,
    /// The first broker-wide sequence number of this run: above every one given out
    /// before.
    pub seq_base: u64,
    /// Topics with their offsets.
    pub topics: Vec<RecoveredTopic>,
    /// Durable groups.
    pub groups: Vec<RecoveredGroup>,
    /// Removed topics (deleted, purged away, expired) and where a topic of that name
    /// created again continues, oldest first: at most [`MAX_REMOVED`].
    pub removed: Vec<(String, u64)>,
    /// Bytes stored.
    pub disk_bytes: u64,
    /// Damaged regions skipped, torn bytes cut, segments set aside.
    pub skipped: u64,
    /// See `skipped`.
    pub truncated: u64,
    /// See `skipped`.
    pub bad_segments: u64,
    /// What recovery did, one line each, for the log.
    pub notes: Vec<String>,
    /// Pending transactions (`tx.log`), in the order they were prepared.
    pub txs: Vec<RecoveredTx>,
}

/// A message read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMessage {
    /// Its offset.
    pub offset: u64,
    /// Its broker-wide sequence number.
    pub seq: u64,
    /// When it was stored (ms since the Unix epoch).
    pub time_ms: u64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why the log refuses appends for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The disk is full, or the disk budget is taken by data that may not be dropped.
    Full(String),
    /// Writing failed otherwise (a read-only file system, an IO error).
    Failed(String),
}

/// What the engine learns from a completion.
#[derive(Debug)]
pub enum Completion {
    /// Nothing the engine must act on.
    None,
    /// Synced up to a new position: confirmations waiting for it may go.
    Synced,
    /// Messages read back for `topic` from `from` on (empty: nothing could be read
    /// there; the offsets up to `skip_to` are lost to damage).
    Read {
        /// The topic.
        topic: String,
        /// The offset asked for.
        from: u64,
        /// What was read, contiguous from `from`.
        messages: Vec<DiskMessage>,
        /// Offsets before this one could not be read (damage): skip them.
        skip_to: Option<u64>,
    },
    /// Writing failed: appends are refused until a retry succeeds.
    Failed,
}

/// Most removed topics the log remembers the last offset of (the engine's table holds
/// as many); the oldest is forgotten first.
pub const MAX_REMOVED: usize = crate::engine::MAX_LAST_OFFSETS;

/// A removed topic the log remembers.
#[derive(Debug, Clone)]
struct Removed {
    next: u64,
    /// Its retired id (0: none).
    id: u64,
    /// The segment holding its newest record, carried forward when that one goes.
    seg: u64,
    /// Its place in `removed_order`.
    stamp: u64,
}

/// What the log holds of one topic.
#[derive(Debug, Clone)]
struct TopicDisk {
    name: Box<str>,
    /// Its metadata, whole, and the segment of its newest record (carried forward
    /// when that segment goes).
    meta: Vec<(String, String)>,
    meta_seg: u64,
    /// The oldest offset retained (records below it are dead).
    first: u64,
    /// The offset after the newest stored.
    next: u64,
    last_time: u64,
    /// Segments holding runs of it, ascending.
    segs: Vec<u64>,
    /// The newest segment holding any record of it.
    last_seg: u64,
}

impl TopicDisk {
    /// A topic known by name, nothing stored yet, first seen in segment `seg`; `first`
    /// is `u64::MAX` while recovery has not found its oldest offset.
    fn new(name: Box<str>, first: u64, seg: u64) -> TopicDisk {
        TopicDisk {
            name,
            meta: Vec::new(),
            meta_seg: 0,
            first,
            next: 0,
            last_time: 0,
            segs: Vec::new(),
            last_seg: seg,
        }
    }
}

/// A read in progress.
#[derive(Debug, Clone)]
struct PendingRead {
    topic: u64,
    from: u64,
    no: u64,
    pos: u64,
    len: usize,
    /// For a compaction: the whole segment.
    compact: bool,
}

/// A batch handed to the writer and not yet reported written.
#[derive(Debug)]
struct Inflight {
    /// Log position after it.
    upto: u64,
    no: u64,
    /// Where it starts in its segment.
    at: u64,
    bytes: Arc<Vec<u8>>,
}

/// Counters of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes of all segments.
    pub disk_bytes: u64,
    /// Bytes handed to the writer and not synced yet.
    pub unsynced_bytes: u64,
    /// Milliseconds since the oldest unsynced write (0 when all is synced).
    pub unsynced_age_ms: u64,
    /// Syncs done.
    pub fsyncs: u64,
    /// Batch bytes written.
    pub bytes_written: u64,
    /// Segments.
    pub segments: u64,
    /// Segments compacted (their live records copied forward).
    pub compactions: u64,
    /// Messages dropped because the disk budget was reached.
    pub evicted_disk: u64,
    /// Appends refused because of a storage failure.
    pub refused: u64,
    /// Damaged regions skipped (at recovery and in reads).
    pub skipped: u64,
}

/// The store's front; see the module docs.
pub struct Log {
    /// The directory's `flock`, held as long as the log: released when it is dropped
    /// or, however the broker exits, by the kernel.
    _lock: recover::DirLock,
    dir: PathBuf,
    cfg: LogConfig,
    /// Every segment, oldest first; the last is the one appended to.
    segments: Vec<SegmentInfo>,
    /// Bytes of the active segment with every handed batch in.
    active_len: u64,
    active_since_ms: Option<u64>,
    /// Topic ids defined in the active segment.
    defined: HashSet<u64>,
    ids: HashMap<Box<str>, u64>,
    names: HashMap<u64, Box<str>>,
    topics: HashMap<u64, TopicDisk>,
    next_id: u64,
    /// Groups whose newest record is in segment `.0`, with that record.
    groups: HashMap<Box<str>, (u64, GroupRecord)>,
    /// Removed topics by name, at most [`MAX_REMOVED`], and their order (entries whose
    /// stamp is not the name's any more are stale).
    removed: HashMap<Box<str>, Removed>,
    removed_order: VecDeque<(Box<str>, u64)>,
    removed_stamp: u64,
    /// The batch being filled (its header reserved), and since when.
    batch: Vec<u8>,
    batch_since_ms: Option<u64>,
    /// Whether the open batch is awaited (by a subscriber): sealed at the next poll.
    hurry: bool,
    /// Log positions: bytes handed to the writer, written, synced, and asked to sync.
    handed: u64,
    written: u64,
    synced: u64,
    sync_asked: u64,
    /// When the oldest byte not synced was handed.
    unsynced_since_ms: Option<u64>,
    inflight: VecDeque<Inflight>,
    cmds: Vec<WriteCmd>,
    reads: Vec<ReadCmd>,
    pending_reads: HashMap<u64, PendingRead>,
    next_read: u64,
    /// Reads that must wait until their bytes are written.
    reads_waiting: Vec<(u64, u64)>,
    failure: Option<Failure>,
    retry_at_ms: u64,
    /// Whether the budget is taken by data that may not be dropped (`discard = new`).
    full_for_new: bool,
    compacting: Option<u64>,
    stats: LogStats,
    now_ms: u64,
    /// The pending transactions' file (see [`tx`]).
    tx: tx::TxDisk,
}

/// A topic's retention, as the engine resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Messages kept at most.
    pub max_messages: Option<u64>,
    /// Message bytes kept at most (to the average message size).
    pub max_bytes: Option<u64>,
    /// Messages older than this many milliseconds are dropped.
    pub max_age_ms: Option<u64>,
    /// At the disk budget, refuse its publishes rather than drop its oldest data.
    pub discard_new: bool,
}

/// A topic's retained range moved: offsets before `first` are gone, `expired` of them
/// by age or retention, `evicted` by the disk budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    /// The topic.
    pub topic: String,
    /// Its new first offset.
    pub first: u64,
    /// Messages dropped by its retention (count, age, bytes).
    pub expired: u64,
    /// Messages dropped by the disk budget.
    pub evicted: u64,
}

impl Log {
    /// Opens (and recovers) the data directory `dir`, creating it if needed. Blocking
    /// file IO: at startup only. `fresh_id` is the broker id if the directory has none.
    pub fn open(dir: &Path, cfg: LogConfig, fresh_id: u64) -> Result<(Log, Opened), StoreError> {
        let io_err = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err(&format!("cannot create {}", dir.display()), e))?;
        let lock = recover::lock(dir)?;
        let mut notes = Vec::new();
        let meta = recover::meta(dir, fresh_id, &mut notes)?;
        let logdir = dir.join("log");
        std::fs::create_dir_all(&logdir)
            .map_err(|e| io_err(&format!("cannot create {}", logdir.display()), e))?;
        let rec = recover::segments(&logdir)?;
        notes.extend(rec.notes);
        let txr = tx::recover(&logdir, &mut notes)?;
        // Sequence numbers of this run start above every one stored, also when `meta`
        // was damaged or lost (its epoch then starts again at 1).
        let max_seq = rec
            .segments
            .iter()
            .flat_map(|s| &s.topics)
            .flat_map(|t| &t.runs)
            .map(|r| r.last_seq)
            .max()
            .unwrap_or(0);
        let mut meta = meta;
        if meta.epoch <= max_seq >> 40 {
            meta.epoch = (max_seq >> 40) + 1;
            recover::write_meta(dir, &meta)
                .map_err(|e| io_err(&format!("cannot write {}/meta", dir.display()), e))?;
        }
        let mut log = Log {
            _lock: lock,
            dir: logdir,
            cfg,
            segments: Vec::new(),
            active_len: format::SEGMENT_HEADER as u64,
            active_since_ms: None,
            defined: HashSet::new(),
            ids: HashMap::new(),
            names: HashMap::new(),
            topics: HashMap::new(),
            next_id: 1,
            groups: HashMap::new(),
            removed: HashMap::new(),
            removed_order: VecDeque::new(),
            removed_stamp: 0,
            batch: Vec::new(),
            batch_since_ms: None,
            hurry: false,
            handed: 0,
            written: 0,
            synced: 0,
            sync_asked: 0,
            unsynced_since_ms: None,
            inflight: VecDeque::new(),
            cmds: Vec::new(),
            reads: Vec::new(),
            pending_reads: HashMap::new(),
            next_read: 1,
            reads_waiting: Vec::new(),
            failure: None,
            retry_at_ms: 0,
            full_for_new: false,
            compacting: None,
            stats: LogStats {
                skipped: rec.skipped,
                ..LogStats::default()
            },
            now_ms: 0,
            tx: tx::TxDisk::default(),
        };
        // Topic ids are the log's own, never used again once their topic is removed: a
        // name's live id is its newest that was not removed.
        let retired: HashSet<u64> = rec
            .segments
            .iter()
            .flat_map(|s| &s.removed)
            .map(|&(id, _, _)| id)
            .filter(|&id| id != 0)
            .collect();
        for s in &rec.segments {
            for (id, name) in &s.names {
                log.next_id = log.next_id.max(id + 1);
                if retired.contains(id) {
                    continue;
                }
                let live = log.ids.entry(name.as_str().into()).or_insert(*id);
                *live = (*live).max(*id);
            }
            for (id, _, _) in &s.removed {
                log.next_id = log.next_id.max(id + 1);
            }
        }
        let mut topics: HashMap<u64, TopicDisk> = HashMap::new();
        let by_id: HashMap<u64, Box<str>> = log.ids.iter().map(|(n, i)| (*i, n.clone())).collect();
        for s in &rec.segments {
            for t in &s.topics {
                let Some(name) = by_id.get(&t.id) else {
                    continue;
                };
                let d = topics
                    .entry(t.id)
                    .or_insert_with(|| TopicDisk::new(name.clone(), u64::MAX, s.no));
                for r in &t.runs {
                    d.first = d.first.min(r.first);
                    d.next = d.next.max(r.last + 1);
                    d.last_time = d.last_time.max(r.last_time);
                }
                if !t.runs.is_empty() && d.segs.last() != Some(&s.no) {
                    d.segs.push(s.no);
                }
                d.last_seg = s.no;
            }
            for &(id, first, next) in &s.states {
                let Some(name) = by_id.get(&id) else { continue };
                let d = topics
                    .entry(id)
                    .or_insert_with(|| TopicDisk::new(name.clone(), u64::MAX, s.no));
                if d.first == u64::MAX {
                    d.first = first;
                }
                d.first = d.first.max(first);
                d.next = d.next.max(next);
                d.last_seg = s.no;
            }
            for (id, meta) in &s.meta {
                let Some(name) = by_id.get(id) else { continue };
                let d = topics
                    .entry(*id)
                    .or_insert_with(|| TopicDisk::new(name.clone(), u64::MAX, s.no));
                d.meta.clone_from(meta);
                d.meta_seg = s.no;
                d.last_seg = s.no;
            }
            for (id, name, next) in &s.removed {
                log.note_removed(name, *next, *id, s.no);
            }
            for g in &s.groups {
                match g {
                    GroupChange::State(g) => {
                        log.groups.insert(g.name.as_str().into(), (s.no, g.clone()));
                    }
                    GroupChange::Gone(name) => {
                        log.groups.remove(name.as_str());
                    }
                }
            }
        }
        for d in topics.values_mut() {
            d.first = d.first.min(d.next);
        }
        // A name removed and not created again since (a live topic of that name
        // continues on its own).
        let ids = &log.ids;
        log.removed.retain(|name, _| !ids.contains_key(name));
        log.topics = topics;
        log.names = by_id;
        log.stats.disk_bytes = rec.segments.iter().map(|s| s.len).sum();
        log.segments = rec.segments;
        // This run appends to a segment of its own.
        let no = log.segments.last().map_or(1, |s| s.no + 1);
        log.segments.push(SegmentInfo::new(no));
        log.stats.disk_bytes += format::SEGMENT_HEADER as u64;
        log.cmds.push(WriteCmd::Create { no });
        log.stats.skipped += txr.skipped;
        log.set_tx_disk(txr.disk);
        if txr.rewrite {
            log.rewrite_tx(txr.pending.iter().map(|t| TxRecord {
                tx: t.tx,
                time_ms: t.time_ms,
                topic: &t.topic,
                client: &t.client,
                key: t.key.as_deref(),
                payload: &t.payload,
            }));
        }
        let opened = Opened {
            broker_id: meta.broker_id,
            seq_base: meta.epoch << 40,
            topics: log
                .topics
                .values()
                .map(|d| RecoveredTopic {
                    name: d.name.to_string(),
                    first: d.first,
                    next: d.next,
                    last_time: d.last_time,
                    meta: d.meta.clone(),
                })
                .collect(),
            groups: log
                .groups
                .values()
                .map(|(_, g)| log.recovered_group(g))
                .collect(),
            removed: log.removed_in_order(),
            disk_bytes: log.stats.disk_bytes,
            skipped: rec.skipped,
            truncated: rec.truncated,
            bad_segments: rec.bad,
            notes,
            txs: txr.pending,
        };
        Ok((log, opened))
    }

    fn recovered_group(&self, g: &GroupRecord) -> RecoveredGroup {
        let name = |id: u64| self.names.get(&id).map(|n| n.to_string());
        RecoveredGroup {
            name: g.name.clone(),
            filter: g.filter.clone(),
            ack_timeout_ms: g.ack_timeout_ms,
            max_deliveries: g.max_deliveries,
            prefetch: g.prefetch,
            cursors: g
                .cursors
                .iter()
                .filter_map(|&(id, next)| Some((name(id)?, next)))
                .collect(),
            pending: g
                .pending
                .iter()
                .filter_map(|&(id, o, a)| Some((name(id)?, o, a)))
                .collect(),
        }
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of topic `name`, defined in the active segment (and created) if needed.
    fn id_for(&mut self, name: &str) -> u64 {
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(name.into(), id);
                self.names.insert(id, name.into());
                id
            }
        };
        if !self.defined.contains(&id) {
            self.open_batch();
            format::put_topic(&mut self.batch, id, name);
            self.defined.insert(id);
            self.active_mut().names.push((id, name.to_string()));
        }
        id
    }

    fn active_mut(&mut self) -> &mut SegmentInfo {
        self.segments
            .last_mut()
            .unwrap_or_else(|| unreachable!("the log always has an active segment"))
    }

    fn active_no(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.no)
    }

    fn open_batch(&mut self) {
        if self.batch.is_empty() {
            format::begin_batch(&mut self.batch);
        }
    }

    fn topic_mut(&mut self, id: u64, name: &str) -> &mut TopicDisk {
        let active = self.active_no();
        self.topics
            .entry(id)
            .or_insert_with(|| TopicDisk::new(name.into(), 0, active))
    }

    /// Why appends are refused now, if they are: after a failure until a retry works,
    /// and for `discard_new` topics while the budget is full of data that stays.
    pub fn refusal(&self, discard_new: bool) -> Option<Failure> {
        match &self.failure {
            Some(f) => Some(f.clone()),
            None if discard_new && self.full_for_new => Some(Failure::Full(
                "storage full: the disk budget (--disk) is taken and this topic keeps its data (discard = \"new\")"
                    .into(),
            )),
            None => None,
        }
    }

    /// Counts a refused append.
    pub fn count_refused(&mut self) {
        self.stats.refused += 1;
    }

    /// Appends a message of topic `name`. The caller checked [`Log::refusal`].
    pub fn append_message(
        &mut self,
        name: &str,
        offset: u64,
        seq: u64,
        time_ms: u64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        let id = self.id_for(name);
        self.open_batch();
        let at = self.batch.len();
        format::put_message(&mut self.batch, id, offset, seq, time_ms, key, payload);
        let bytes = (self.batch.len() - at) as u64;
        let pos = self.active_len;
        let active = self.active_no();
        self.active_mut().note_message(
            Noted {
                id,
                offset,
                seq,
                time_ms,
                bytes,
            },
            pos,
        );
        let t = self.topic_mut(id, name);
        if t.next == 0 && t.segs.is_empty() {
            t.first = offset;
        }
        t.next = offset + 1;
        t.last_time = t.last_time.max(time_ms);
        if t.segs.last() != Some(&active) {
            t.segs.push(active);
        }
        t.last_seg = active;
        if self.batch.len() >= self.cfg.batch_bytes {
            // Full: to the writer now, whatever the time (poll seals it when it is old).
            self.seal();
        }
    }

    /// Appends topic `name`'s retained range (kept across restarts even when no
    /// message of it is left).
    pub fn append_state(&mut self, name: &str, first: u64, next: u64) {
        let id = self.id_for(name);
        self.open_batch();
        format::put_state(&mut self.batch, id, first, next);
        let active = self.active_no();
        self.active_mut().states.push((id, first, next));
        let t = self.topic_mut(id, name);
        t.first = t.first.max(first);
        t.next = t.next.max(next);
        t.last_seg = active;
    }

    /// Appends topic `name`'s metadata, whole (kept across restarts with the topic).
    pub fn append_meta<K: AsRef<str>, V: AsRef<str>>(&mut self, name: &str, meta: &[(K, V)]) {
        let id = self.id_for(name);
        self.open_batch();
        format::put_meta(&mut self.batch, id, meta);
        let active = self.active_no();
        let owned: Vec<(String, String)> = meta
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        self.active_mut().meta.push((id, owned.clone()));
        let t = self.topic_mut(id, name);
        t.meta = owned;
        t.meta_seg = active;
        t.last_seg = active;
    }

    /// Removes topic `name` (deleted or expired) whose next offset was `next`: what it
    /// stored is dead (its segments go when nothing else in them lives), its id is
    /// retired, and a topic of that name created again, also after a restart,
    /// continues at `next`.
    pub fn remove_topic(&mut self, name: &str, next: u64) {
        let id = self.ids.remove(name).unwrap_or(0);
        if id != 0 {
            self.topics.remove(&id);
            self.defined.remove(&id);
        }
        self.open_batch();
        format::put_removed(&mut self.batch, id, name, next);
        let active = self.active_no();
        self.active_mut().removed.push((id, name.to_string(), next));
        self.note_removed(name, next, id, active);
    }

    /// Remembers a removed topic (at most [`MAX_REMOVED`], the oldest forgotten).
    fn note_removed(&mut self, name: &str, next: u64, id: u64, seg: u64) {
        self.removed_stamp += 1;
        let stamp = self.removed_stamp;
        // Offsets never go back, whatever order records were found in.
        let next = self.removed.get(name).map_or(next, |r| r.next.max(next));
        self.removed.insert(
            name.into(),
            Removed {
                next,
                id,
                seg,
                stamp,
            },
        );
        self.removed_order.push_back((name.into(), stamp));
        while self.removed.len() > MAX_REMOVED {
            let Some((old, stamp)) = self.removed_order.pop_front() else {
                break;
            };
            if self.removed.get(&old).is_some_and(|r| r.stamp == stamp) {
                self.removed.remove(&old);
            }
        }
        if self.removed_order.len() > 2 * MAX_REMOVED {
            let removed = &self.removed;
            self.removed_order
                .retain(|(n, s)| removed.get(n).is_some_and(|r| r.stamp == *s));
        }
    }

    /// The removed topics, oldest first, with where each continues.
    fn removed_in_order(&self) -> Vec<(String, u64)> {
        self.removed_order
            .iter()
            .filter(|(n, s)| self.removed.get(n).is_some_and(|r| r.stamp == *s))
            .filter_map(|(n, _)| Some((n.to_string(), self.removed.get(n)?.next)))
            .collect()
    }

    /// Appends a durable group's state.
    pub fn append_group(&mut self, g: &RecoveredGroup) {
        let mut rec = GroupRecord {
            name: g.name.clone(),
            filter: g.filter.clone(),
            ack_timeout_ms: g.ack_timeout_ms,
            max_deliveries: g.max_deliveries,
            prefetch: g.prefetch,
            cursors: Vec::with_capacity(g.cursors.len()),
            pending: Vec::with_capacity(g.pending.len()),
        };
        for (t, next) in &g.cursors {
            let id = self.id_for(t);
            rec.cursors.push((id, *next));
        }
        for (t, o, a) in &g.pending {
            let id = self.id_for(t);
            rec.pending.push((id, *o, *a));
        }
        self.open_batch();
        format::put_group(&mut self.batch, &rec);
        let active = self.active_no();
        self.active_mut()
            .groups
            .push(GroupChange::State(rec.clone()));
        self.groups.insert(g.name.as_str().into(), (active, rec));
    }

    /// Appends the end of a durable group.
    pub fn append_group_gone(&mut self, name: &str) {
        self.open_batch();
        format::put_group_gone(&mut self.batch, name);
        self.active_mut()
            .groups
            .push(GroupChange::Gone(name.into()));
        self.groups.remove(name);
    }

    /// The log position after everything appended so far: a confirmation of a record
    /// appended now may go once [`Log::synced`] reaches it.
    pub fn position(&self) -> u64 {
        self.handed + self.batch.len() as u64
    }

    /// The position up to which everything is on disk.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// The position up to which everything was written (to the OS: it survives the
    /// process, not a power cut, until synced).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Has the open batch handed to the writer at the next poll when the writer is idle,
    /// else as soon as it finished what it has (someone waits for the batch; while a
    /// write is under way, what comes meanwhile makes the next batch bigger).
    pub fn hurry(&mut self) {
        self.hurry = true;
    }

    /// Whether a read of old messages is queued, in flight or waiting for its bytes.
    pub fn has_reads(&self) -> bool {
        !self.pending_reads.is_empty() || !self.reads_waiting.is_empty() || !self.reads.is_empty()
    }

    /// Whether confirmations wait for the sync (`--sync always`).
    pub fn sync_always(&self) -> bool {
        self.cfg.sync == SyncPolicy::Always
    }

    /// Whether publishers should be held back: the writer is behind by more than
    /// `backlog` bytes.
    pub fn congested(&self) -> bool {
        (self.handed - self.written) as usize > self.cfg.backlog
    }

    /// Hands the open batch to the writer.
    fn seal(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        format::seal_batch(&mut self.batch, 0);
        let bytes = Arc::new(std::mem::take(&mut self.batch));
        self.batch_since_ms = None;
        self.hurry = false;
        let len = bytes.len() as u64;
        let at = self.active_len;
        self.handed += len;
        self.active_len += len;
        self.active_mut().len = at + len;
        self.stats.disk_bytes += len;
        self.unsynced_since_ms.get_or_insert(self.now_ms);
        self.inflight.push_back(Inflight {
            upto: self.handed,
            no: self.active_no(),
            at,
            bytes: bytes.clone(),
        });
        if self.failure.is_none() {
            self.cmds.push(WriteCmd::Append {
                bytes,
                upto: self.handed,
            });
        }
        if self.active_len >= self.cfg.segment_bytes {
            self.roll();
        }
    }

    /// Closes the active segment (its index written) and starts the next.
    fn roll(&mut self) {
        let idx = self
            .segments
            .last()
            .map(segment::encode_idx)
            .unwrap_or_default();
        let no = self.active_no();
        self.cmds.push(WriteCmd::Index { no, bytes: idx });
        self.segments.push(SegmentInfo::new(no + 1));
        self.cmds.push(WriteCmd::Create { no: no + 1 });
        self.active_len = format::SEGMENT_HEADER as u64;
        self.active_since_ms = None;
        self.defined.clear();
        self.stats.disk_bytes += format::SEGMENT_HEADER as u64;
    }

    /// Time passes (`now_ms`, monotonic): seals a batch that is big or old enough,
    /// asks for syncs by the policy, retries after a failure. Returns when it wants to be
    /// polled again at the latest.
    pub fn poll(&mut self, now_ms: u64) -> Option<u64> {
        self.now_ms = now_ms;
        if self.failure.is_some() {
            if now_ms >= self.retry_at_ms {
                self.retry();
            }
            return Some(self.retry_at_ms);
        }
        if !self.batch.is_empty() {
            let since = *self.batch_since_ms.get_or_insert(now_ms);
            let due = self.batch.len() >= self.cfg.batch_bytes
                || (self.hurry && self.written == self.handed)
                || now_ms >= since + self.cfg.batch_ms
                || self.cfg.sync == SyncPolicy::Always;
            if due {
                self.seal();
            }
        }
        if self.active_len > format::SEGMENT_HEADER as u64 {
            let since = *self.active_since_ms.get_or_insert(now_ms);
            if now_ms >= since + self.cfg.segment_ms && self.batch.is_empty() {
                self.roll();
            }
        }
        let mut wake = self.batch_since_ms.map(|s| s + self.cfg.batch_ms);
        match self.cfg.sync {
            SyncPolicy::Always => {
                if self.handed > self.sync_asked {
                    self.cmds.push(WriteCmd::Sync { upto: self.handed });
                    self.sync_asked = self.handed;
                }
            }
            SyncPolicy::Every(ms) => {
                if let Some(since) = self.unsynced_since_ms {
                    if self.handed > self.sync_asked && now_ms >= since + ms {
                        self.cmds.push(WriteCmd::Sync { upto: self.handed });
                        self.sync_asked = self.handed;
                    } else if self.handed > self.sync_asked {
                        wake = Some(wake.map_or(since + ms, |w| w.min(since + ms)));
                    }
                }
            }
            SyncPolicy::Never => {}
        }
        wake
    }

    /// Asks for everything appended so far to be written and synced (a clean stop).
    pub fn flush(&mut self) {
        self.seal();
        if self.failure.is_none() && self.handed > self.sync_asked {
            self.cmds.push(WriteCmd::Sync { upto: self.handed });
            self.sync_asked = self.handed;
        }
    }

    /// Cuts back to what was written and sends everything after again.
    fn retry(&mut self) {
        self.retry_at_ms = self.now_ms + 1_000;
        let Some(first) = self.inflight.front() else {
            self.failure = None;
            return;
        };
        self.cmds.push(WriteCmd::Truncate {
            no: first.no,
            len: first.at,
            upto: self.written,
        });
        let mut seg = first.no;
        for b in &self.inflight {
            if b.no != seg {
                seg = b.no;
                self.cmds.push(WriteCmd::Create { no: seg });
            }
            self.cmds.push(WriteCmd::Append {
                bytes: b.bytes.clone(),
                upto: b.upto,
            });
        }
        if self.cfg.sync != SyncPolicy::Never {
            self.cmds.push(WriteCmd::Sync { upto: self.handed });
            self.sync_asked = self.handed;
        }
        // Optimistic until the writer says otherwise.
        self.failure = None;
    }

    /// Whether the log has something for its threads, or a batch to seal: the broker's
    /// store task should poll it.
    pub fn needs_poll(&self) -> bool {
        !self.batch.is_empty() || !self.cmds.is_empty() || !self.reads.is_empty()
    }

    /// Takes the commands for the writer and the reader.
    pub(crate) fn take_commands(&mut self, write: &mut Vec<WriteCmd>, read: &mut Vec<ReadCmd>) {
        write.append(&mut self.cmds);
        read.append(&mut self.reads);
    }

    /// Takes a completion of the threads.
    pub(crate) fn handle(&mut self, done: Done) -> Completion {
        match done {
            Done::Written { upto } => {
                self.written = self.written.max(upto);
                self.stats.bytes_written = self.written;
                while self
                    .inflight
                    .front()
                    .is_some_and(|b| b.upto <= self.written)
                {
                    self.inflight.pop_front();
                }
                // Reads that waited for these bytes can go now.
                let waiting = std::mem::take(&mut self.reads_waiting);
                let mut still = Vec::new();
                for (topic, from) in waiting {
                    if !self.request_read_id(topic, from) {
                        still.push((topic, from));
                    }
                }
                self.reads_waiting.extend(still);
                Completion::None
            }
            Done::Synced { upto } => {
                self.stats.fsyncs += 1;
                if upto > self.synced {
                    self.synced = upto;
                }
                if self.synced >= self.handed {
                    self.unsynced_since_ms = None;
                } else {
                    self.unsynced_since_ms = Some(self.now_ms);
                }
                Completion::Synced
            }
            Done::Failed { upto, error } => {
                self.written = self.written.max(upto);
                while self
                    .inflight
                    .front()
                    .is_some_and(|b| b.upto <= self.written)
                {
                    self.inflight.pop_front();
                }
                let full = matches!(error.raw_os_error(), Some(28) | Some(122)); // ENOSPC, EDQUOT
                let msg = format!("the data directory {}: {error}", self.dir.display());
                self.failure = Some(if full {
                    Failure::Full(format!("storage full: {msg}"))
                } else {
                    Failure::Failed(format!("storage failed: {msg}"))
                });
                self.retry_at_ms = self.now_ms + 1_000;
                self.sync_asked = self.synced;
                Completion::Failed
            }
            Done::Read { id, bytes } => self.read_done(id, bytes),
        }
    }

    /// Why the log refuses appends, as one line, if it does.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The sync policy, as the command line takes it.
    pub fn sync_policy(&self) -> String {
        match self.cfg.sync {
            SyncPolicy::Always => "always".into(),
            SyncPolicy::Never => "never".into(),
            SyncPolicy::Every(ms) => format!("{ms}ms"),
        }
    }

    /// The disk budget (`--disk`).
    pub fn disk_budget(&self) -> u64 {
        self.cfg.disk
    }

    /// Counters now.
    pub fn stats(&self) -> LogStats {
        LogStats {
            unsynced_bytes: self.handed + self.batch.len() as u64 - self.synced,
            unsynced_age_ms: self
                .unsynced_since_ms
                .map_or(0, |s| self.now_ms.saturating_sub(s)),
            segments: self.segments.len() as u64,
            ..self.stats
        }
    }
}
