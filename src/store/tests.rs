//! The log on real threads in temporary directories: reads back, damage, restarts.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use super::*;

/// A fresh data directory under the system's temp directory, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "mote-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the log's commands on real threads until it has nothing left to do, feeding
/// every completion back; returns the completions the engine would see.
pub(crate) fn settle(log: &mut Log, threads: &io::Threads, now: u64) -> Vec<Completion> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        log.poll(now);
        let (mut w, mut r) = (Vec::new(), Vec::new());
        log.take_commands(&mut w, &mut r);
        let sent = !w.is_empty() || !r.is_empty();
        for c in w {
            threads.write.try_send(c).unwrap();
        }
        for c in r {
            threads.read.try_send(c).unwrap();
        }
        let busy = sent
            || log.handed > log.written
            || log.sync_asked > log.synced
            || !log.pending_reads.is_empty();
        if !busy {
            return out;
        }
        match threads.done.recv_blocking() {
            Ok(d) => out.push(log.handle(d)),
            Err(_) => return out,
        }
        while let Ok(d) = threads.done.try_recv() {
            out.push(log.handle(d));
        }
    }
    panic!("the log never settled");
}

fn cfg() -> LogConfig {
    LogConfig {
        sync: SyncPolicy::Always,
        ..LogConfig::default()
    }
}

/// Startup scans only a segment without a valid index (it reads no other segment
/// beyond its header: the 1 GiB restart in the benchmarks measures that). Only the
/// segment being written when the broker stopped has none; recovery writes it, so
/// the next start scans nothing.
#[test]
fn startup_reads_indexes_not_segments() {
    let dir = TempDir::new("indexed");
    let small = LogConfig {
        segment_bytes: 4096,
        ..cfg()
    };
    let (mut log, _) = Log::open(&dir.0, small, 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    for i in 0..200u64 {
        log.append_message("x", i, i + 1, 1000, None, &[b'a'; 100]);
        if i % 20 == 19 {
            settle(&mut log, &threads, 0);
        }
    }
    log.flush();
    settle(&mut log, &threads, 0);
    threads.stop();
    drop(log);
    let logdir = dir.0.join("log");
    let r = recover::segments(&logdir).unwrap();
    assert!(r.segments.len() >= 4, "{} segments", r.segments.len());
    assert_eq!(r.scanned, 1, "only the segment written last has no index");
    let r = recover::segments(&logdir).unwrap();
    assert_eq!(r.scanned, 0, "every segment has its index now");
    let (_, opened) = Log::open(&dir.0, cfg(), 7).unwrap();
    assert_eq!(opened.topics[0].next, 200);
}

#[test]
fn messages_are_read_back_from_any_offset() {
    let dir = TempDir::new("read");
    let (mut log, opened) = Log::open(&dir.0, cfg(), 7).unwrap();
    assert_eq!(opened.broker_id, 7);
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    for i in 0..20_000u64 {
        log.append_message("x", i, i + 1, 1000 + i, None, format!("m{i}").as_bytes());
        if i % 500 == 0 {
            settle(&mut log, &threads, i);
        }
    }
    settle(&mut log, &threads, 20_000);
    for from in [0u64, 1, 592, 4_095, 10_000, 19_999] {
        assert!(log.request_read("x", from));
        let done = settle(&mut log, &threads, 20_000);
        let read = done
            .into_iter()
            .find_map(|c| match c {
                Completion::Read {
                    from: f,
                    messages,
                    skip_to,
                    ..
                } => Some((f, messages, skip_to)),
                _ => None,
            })
            .unwrap();
        assert_eq!(read.0, from);
        assert_eq!(read.2, None, "from {from}: nothing skipped");
        assert!(!read.1.is_empty(), "from {from}: something read");
        for (i, m) in read.1.iter().enumerate() {
            let o = from + i as u64;
            assert_eq!(m.offset, o);
            assert_eq!(m.payload, format!("m{o}").into_bytes());
            assert_eq!((m.seq, m.time_ms), (o + 1, 1000 + o));
        }
    }
    threads.stop();
}

/// The completion of a read of `x` from `from`.
fn read_from(log: &mut Log, threads: &io::Threads, from: u64) -> (Vec<u64>, Option<u64>) {
    assert!(log.request_read("x", from));
    settle(log, threads, 0)
        .into_iter()
        .find_map(|c| match c {
            Completion::Read {
                messages, skip_to, ..
            } => Some((messages.iter().map(|m| m.offset).collect(), skip_to)),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_batch_larger_than_a_read_after_others_is_read_whole() {
    let dir = TempDir::new("large");
    let (mut log, _) = Log::open(&dir.0, cfg(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    // Small batches, then one of 300 KiB that no index entry points at.
    for i in 0..100u64 {
        log.append_message("x", i, i + 1, 1000, None, b"small");
        settle(&mut log, &threads, 0);
    }
    let big = vec![b'L'; 300 << 10];
    log.append_message("x", 100, 101, 1000, None, &big);
    log.append_message("x", 101, 102, 1000, None, b"after");
    settle(&mut log, &threads, 0);
    // The big one fills a read: the rest comes with the next.
    assert_eq!(read_from(&mut log, &threads, 100), (vec![100], None));
    assert_eq!(read_from(&mut log, &threads, 101), (vec![101], None));
    threads.stop();
}

/// Topic `x` gets 500 messages in 50 batches of 10, all within one index entry. Returns
/// segment 1's path, its bytes, and where batch 20 (offsets 200..210) starts in them.
fn fifty_batches(log: &mut Log, threads: &io::Threads) -> (PathBuf, Vec<u8>, usize) {
    for i in 0..500u64 {
        log.append_message("x", i, i + 1, 1000, None, format!("m{i}").as_bytes());
        if i % 10 == 9 {
            settle(log, threads, 0);
        }
    }
    let path = io::segment_path(log.dir(), 1);
    let bytes = std::fs::read(&path).unwrap();
    let mut at = format::SEGMENT_HEADER;
    for _ in 0..20 {
        let format::Batch::Whole { len } = format::batch(&bytes[at..]) else {
            panic!("a whole batch at {at}");
        };
        at += len;
    }
    (path, bytes, at)
}

#[test]
fn damage_inside_a_run_loses_its_batch_only() {
    let dir = TempDir::new("damage");
    let (mut log, _) = Log::open(&dir.0, cfg(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    let (path, mut bytes, at) = fifty_batches(&mut log, &threads);
    // A bit flipped in the body of batch 20 (offsets 200..210).
    bytes[at + format::BATCH_HEADER + 3] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    // From before it: up to it. From inside it: past it, to the next batch.
    let (offsets, skipped) = read_from(&mut log, &threads, 150);
    assert_eq!((offsets, skipped), ((150..200).collect(), None));
    assert_eq!(read_from(&mut log, &threads, 200), (vec![], Some(210)));
    assert_eq!(read_from(&mut log, &threads, 205), (vec![], Some(210)));
    assert_eq!(log.stats().skipped, 2);
    let (offsets, _) = read_from(&mut log, &threads, 210);
    assert_eq!(offsets, (210..500).collect::<Vec<_>>());
    threads.stop();
}

/// A cursor can ask for an offset whose batch is handed to the writer but not
/// reported written yet (the executor busy with publishers): what is read before
/// it holds only older offsets, which is no sign of damage.
#[test]
fn an_offset_not_written_yet_is_read_once_written() {
    let dir = TempDir::new("unwritten");
    let (mut log, _) = Log::open(&dir.0, cfg(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    for i in 0..10u64 {
        log.append_message("x", i, i + 1, 1000, None, b"written");
    }
    settle(&mut log, &threads, 0);
    for i in 10..20u64 {
        log.append_message("x", i, i + 1, 1000, None, b"handed");
    }
    log.poll(0);
    let (mut held, mut reads) = (Vec::new(), Vec::new());
    log.take_commands(&mut held, &mut reads);
    assert!(log.request_read("x", 15));
    log.take_commands(&mut held, &mut reads);
    assert_eq!(
        reads.len(),
        1,
        "a read of what is written, from offset 0's batch"
    );
    threads.read.try_send(reads.remove(0)).unwrap();
    let done = threads.done.recv_blocking().unwrap();
    assert!(
        matches!(log.handle(done), Completion::None),
        "neither read nor skipped yet"
    );
    for c in held {
        threads.write.try_send(c).unwrap();
    }
    let read = settle(&mut log, &threads, 0)
        .into_iter()
        .find_map(|c| match c {
            Completion::Read {
                messages, skip_to, ..
            } => Some((
                messages.iter().map(|m| m.offset).collect::<Vec<_>>(),
                skip_to,
            )),
            _ => None,
        })
        .unwrap();
    assert_eq!(read, ((15..20).collect(), None));
    assert_eq!(log.stats().skipped, 0);
    threads.stop();
}

#[test]
fn sequence_numbers_go_up_when_meta_is_lost() {
    let dir = TempDir::new("meta-lost");
    // Three starts: this run's sequence numbers are at 3 << 40.
    for _ in 0..2 {
        drop(Log::open(&dir.0, cfg(), 7).unwrap());
    }
    let (mut log, opened) = Log::open(&dir.0, cfg(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    for i in 0..10u64 {
        log.append_message("x", i, opened.seq_base + i, 1000, None, b"m");
    }
    settle(&mut log, &threads, 0);
    drop(log);
    threads.stop();
    std::fs::remove_file(dir.0.join("meta")).unwrap();
    let (_log, fresh) = Log::open(&dir.0, cfg(), 8).unwrap();
    assert_eq!(fresh.broker_id, 8, "a new broker id");
    let last = opened.seq_base + 9;
    assert!(
        fresh.seq_base > last,
        "sequence numbers from {} after a lost meta, {last} stored",
        fresh.seq_base
    );
}

/// Reads topic `name` from `from` on, as the engine would: its messages (offset, payload).
fn read_topic(log: &mut Log, threads: &io::Threads, name: &str, from: u64) -> Vec<(u64, Vec<u8>)> {
    assert!(log.request_read(name, from));
    settle(log, threads, 0)
        .into_iter()
        .find_map(|c| match c {
            Completion::Read { messages, .. } => Some(
                messages
                    .into_iter()
                    .map(|m| (m.offset, m.payload.to_vec()))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap()
}

/// The oldest segment held alive only by a few messages of a quiet topic (long retention)
/// while a busy topic's retention dropped the rest: compaction copies those messages to
/// the head and deletes the segment. They read back the same, also after a restart, and
/// the disk no longer holds the old segment.
#[test]
fn a_mostly_dead_segment_is_compacted() {
    let dir = TempDir::new("compact");
    let small = LogConfig {
        segment_bytes: 4096,
        ..cfg()
    };
    let (mut log, _) = Log::open(&dir.0, small.clone(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    let mut seq = 0;
    let quiet: Vec<(u64, Vec<u8>)> = (0..3u64)
        .map(|i| (i, format!("quiet {i}").into_bytes()))
        .collect();
    for (i, p) in &quiet {
        seq += 1;
        log.append_message("quiet", *i, seq, 1000, None, p);
    }
    for i in 0..400u64 {
        seq += 1;
        log.append_message("busy", i, seq, 1000, None, &[b'b'; 100]);
        if i % 20 == 19 {
            settle(&mut log, &threads, 0);
        }
    }
    settle(&mut log, &threads, 0);
    let oldest = log.segments[0].no;
    assert!(log.segments.len() > 5, "{} segments", log.segments.len());
    let mut keep_50 = |name: &str| Retention {
        max_messages: (name == "busy").then_some(50),
        ..Retention::default()
    };
    for _ in 0..5 {
        log.enforce(2_000, &mut keep_50);
        settle(&mut log, &threads, 0);
    }
    assert!(log.stats().compactions >= 1, "no compaction");
    assert!(
        log.segments.iter().all(|s| s.no != oldest),
        "the oldest segment is still there"
    );
    assert!(!io::segment_path(log.dir(), oldest).exists());
    assert_eq!(read_topic(&mut log, &threads, "quiet", 0), quiet);
    assert_eq!(log.range("busy"), Some((350, 400)));
    log.flush();
    settle(&mut log, &threads, 0);
    threads.stop();
    drop(log);

    let (mut log, opened) = Log::open(&dir.0, small, 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    let q = opened.topics.iter().find(|t| t.name == "quiet").unwrap();
    assert_eq!((q.first, q.next), (0, 3));
    assert_eq!(read_topic(&mut log, &threads, "quiet", 0), quiet);
    let b = opened.topics.iter().find(|t| t.name == "busy").unwrap();
    assert_eq!((b.first, b.next), (350, 400));
    threads.stop();
}

/// A batch header whose magic checks out but whose length was damaged (here to 60 MiB)
/// is damage: the reader is never asked for more than the segment holds (it used to be
/// asked for the whole claimed length, and allocated it), and the cursor goes past it.
#[test]
fn a_damaged_batch_length_is_not_read() {
    let dir = TempDir::new("length");
    let (mut log, _) = Log::open(&dir.0, cfg(), 7).unwrap();
    let threads = io::Threads::start(log.dir(), 0).unwrap();
    let (path, mut bytes, at) = fifty_batches(&mut log, &threads);
    let file_len = bytes.len();
    bytes[at + 4..at + 8].copy_from_slice(&(60u32 << 20).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert!(log.request_read("x", 200));
    let (mut biggest, mut got) = (0, None);
    for _ in 0..100 {
        let (mut w, mut r) = (Vec::new(), Vec::new());
        log.take_commands(&mut w, &mut r);
        for c in r {
            biggest = biggest.max(c.len);
            threads.read.try_send(c).unwrap();
        }
        let d = threads.done.recv_blocking().unwrap();
        if let Completion::Read {
            messages, skip_to, ..
        } = log.handle(d)
        {
            got = Some((messages.len(), skip_to));
            break;
        }
    }
    assert!(
        biggest <= file_len,
        "a read of {biggest} bytes, the segment has {file_len}"
    );
    assert_eq!(got, Some((0, Some(210))));
    threads.stop();
}
