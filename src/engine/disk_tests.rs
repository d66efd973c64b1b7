//! The engine on a real log in a temporary directory, driven as the broker's store task
//! drives it (the store's own threads do the IO), without sockets: restarts, reads back
//! for cursors behind the ring, durable groups, retention.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::PathBuf;

use mote_sdk::Start;
use mote_sdk::wire::GroupSettings;

use super::settings::{PatternSettings, TopicPatterns};
use super::{ConnId, Delivery, Engine};
use crate::limits::Limits;
use crate::store::io::Threads;
use crate::store::{Log, LogConfig, SyncPolicy};

/// A data directory removed when dropped.
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "mote-engine-disk-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine on a log, with the store's threads.
pub(super) struct Broker {
    pub(super) e: Engine,
    threads: Threads,
    pub(super) now: u64,
}

impl Broker {
    pub(super) fn open(dir: &Dir, limits: Limits, patterns: TopicPatterns) -> Broker {
        let cfg = LogConfig {
            sync: SyncPolicy::Always,
            ..LogConfig::default()
        };
        Broker::open_with(dir, limits, patterns, cfg)
    }

    fn open_with(dir: &Dir, limits: Limits, patterns: TopicPatterns, cfg: LogConfig) -> Broker {
        let (log, opened) = Log::open(&dir.0, cfg, 9).unwrap();
        let threads = Threads::start(log.dir(), 0).unwrap();
        let mut e = Engine::new(limits, opened.broker_id);
        e.attach_log(log, &opened, patterns, 1_000_000, 0);
        e.restore_txs(&opened.txs, 0);
        Broker { e, threads, now: 0 }
    }

    /// Runs the store until it has nothing left to do.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            self.e.persist_groups();
            let log = self.e.log_mut().unwrap();
            log.poll(self.now);
            let (mut w, mut r) = (Vec::new(), Vec::new());
            log.take_commands(&mut w, &mut r);
            let sent = !w.is_empty() || !r.is_empty();
            for c in w {
                self.threads.write.try_send(c).unwrap();
            }
            for c in r {
                self.threads.read.try_send(c).unwrap();
            }
            let waiting = {
                let l = self.e.log().unwrap();
                l.synced() < l.position() || l.has_reads()
            };
            if !waiting {
                // Creates, index writes and deletes answer nothing: once nothing is
                // left to send, done.
                if sent {
                    continue;
                }
                return;
            }
            let d = self.threads.done.recv_blocking().unwrap();
            self.e.handle_log_done(d, self.now);
        }
        panic!("the store never settled");
    }

    /// Stops as `SIGTERM` does: everything synced.
    pub(super) fn stop(mut self) {
        self.e.persist_groups();
        self.e.log_mut().unwrap().flush();
        self.settle();
        self.threads.stop();
    }

    pub(super) fn conn(&mut self, name: &str) -> ConnId {
        let c = self.e.handle_connect(0, None);
        self.e.handle_open(c, name);
        c
    }

    /// Every message delivered to `c` (reading back from disk as needed), as offsets.
    pub(super) fn drain(&mut self, c: ConnId) -> (Vec<u64>, u64) {
        let (mut got, mut lag) = (Vec::new(), 0);
        for _ in 0..10_000 {
            let mut batch = Vec::new();
            let mut missed = 0;
            self.e.poll_deliveries(c, |d| {
                match d {
                    Delivery::Message { offset, .. } => batch.push(offset),
                    Delivery::GroupMessage { offset, .. } => batch.push(offset),
                    Delivery::Lag { missed: m, .. } => missed += m,
                    Delivery::GroupGone { .. } => panic!("no group is deleted here"),
                    Delivery::Asked { .. } => panic!("no request is made here"),
                    Delivery::Removed { unread, .. } => missed += unread,
                }
                true
            });
            lag += missed;
            let read = self.e.log().unwrap().has_reads();
            if batch.is_empty() && missed == 0 && !read {
                return (got, lag);
            }
            got.extend(batch);
            self.settle();
        }
        panic!("deliveries never ended");
    }
}

pub(super) fn limits() -> Limits {
    Limits {
        keepalive_ms: 1 << 30,
        ring_messages: 100,
        ..Limits::default()
    }
}

pub(super) fn publish(b: &mut Broker, c: ConnId, topic: &str, n: u64) {
    for i in 0..n {
        b.e.handle_publish(
            c,
            1_000_000 + i,
            topic,
            None,
            format!("{topic}:{i}").as_bytes(),
        )
        .unwrap();
        if i % 1_000 == 999 {
            b.settle();
        }
    }
    b.settle();
}

#[test]
fn a_subscriber_behind_the_ring_reads_the_rest_back_from_disk() {
    let dir = Dir::new("behind");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    publish(&mut b, p, "t", 5_000);
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Earliest, &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!(lag, 0, "nothing missed: the ring holds 100, the disk all");
    assert_eq!(got, (0..5_000).collect::<Vec<_>>());
    assert!(b.e.stats().disk_reads > 0);
    b.stop();
}

/// A persisted message reaches subscribers and groups only once the log holds it (here,
/// under `--sync always`, once synced): a crash can then never give an offset someone
/// saw to another message.
#[test]
fn delivery_waits_until_the_log_holds_the_message() {
    let dir = Dir::new("visible");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let (p, c, m) = (b.conn("p"), b.conn("c"), b.conn("m"));
    b.e.handle_subscribe(c, 1, "t", Start::Latest, &[]).unwrap();
    let settings = GroupSettings {
        ack_timeout_ms: 60_000,
        max_deliveries: 5,
        prefetch: 10,
        durable: false,
    };
    b.e.handle_subscribe_group(m, 1, "t", "w", Start::Latest, settings)
        .unwrap();
    for i in 0..3u64 {
        b.e.handle_publish(p, 1_000_000 + i, "t", None, b"x")
            .unwrap();
    }
    let mut early = 0;
    for conn in [c, m] {
        b.e.poll_deliveries(conn, |_| {
            early += 1;
            true
        });
    }
    assert_eq!(early, 0, "delivered before the log wrote it");
    assert!(b.e.log().unwrap().synced() < b.e.log().unwrap().position());
    b.settle();
    assert_eq!(b.drain(c).0, vec![0, 1, 2]);
    assert_eq!(b.drain(m).0, vec![0, 1, 2]);
    b.stop();
}

#[test]
fn topics_and_offsets_survive_a_restart() {
    let dir = Dir::new("restart");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    publish(&mut b, p, "a", 250);
    publish(&mut b, p, "b/c", 3);
    b.stop();

    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    // Offsets go on where they were.
    assert_eq!(
        b.e.handle_publish(p, 2_000_000, "a", None, b"new").unwrap(),
        250
    );
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "#", Start::Earliest, &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!(lag, 0);
    assert_eq!(got.len(), 251 + 3);
    b.stop();
}

#[test]
fn a_durable_group_keeps_its_place_and_what_it_had_not_acked() {
    let dir = Dir::new("group");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    let m = b.conn("m");
    let settings = GroupSettings {
        ack_timeout_ms: 60_000,
        max_deliveries: 5,
        prefetch: 10,
        durable: true,
    };
    b.e.handle_subscribe_group(m, 1, "jobs/#", "w", Start::Earliest, settings)
        .unwrap();
    publish(&mut b, p, "jobs/a", 30);
    // The member takes 10 (its prefetch) and acks the first 4.
    let mut tags = Vec::new();
    b.e.poll_deliveries(m, |d| {
        if let Delivery::GroupMessage { tag, offset, .. } = d {
            tags.push((tag, offset));
        }
        true
    });
    assert_eq!(tags.len(), 10);
    for &(tag, _) in &tags[..4] {
        b.e.handle_ack(m, 1, tag).unwrap();
    }
    b.settle();
    // A crash would lose nothing synced; a stop syncs everything.
    b.stop();

    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let info = b.e.group_infos();
    assert_eq!(info.len(), 1, "the durable group is back");
    let m = b.conn("m2");
    b.e.handle_subscribe_group(m, 1, "jobs/#", "w", Start::Latest, GroupSettings::default())
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        let mut batch = Vec::new();
        b.e.poll_deliveries(m, |d| {
            if let Delivery::GroupMessage {
                tag,
                offset,
                attempt,
                ..
            } = d
            {
                batch.push((tag, offset, attempt));
            }
            true
        });
        for &(tag, _, _) in &batch {
            b.e.handle_ack(m, 1, tag).unwrap();
        }
        got.extend(batch);
        b.settle();
        if got.len() >= 26 && !b.e.log().unwrap().has_reads() {
            break;
        }
    }
    let mut offsets: Vec<u64> = got.iter().map(|g| g.1).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(
        offsets,
        (4..30).collect::<Vec<_>>(),
        "all but the 4 acked, none lost"
    );
    for (_, o, attempt) in &got {
        // 0..10 went to the member, and its 4 acks made room for 10..14, handed to it
        // (in flight) before the stop.
        let was_handed = *o < 14;
        assert_eq!(*attempt > 1, was_handed, "offset {o}: attempt {attempt}");
    }
    b.stop();
}

#[test]
fn a_segment_set_aside_is_told_as_lag_and_the_rest_is_read() {
    let dir = Dir::new("aside");
    // Three runs: segments 1, 2 and 3 hold 300 messages each.
    for _ in 0..3 {
        let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
        let p = b.conn("p");
        publish(&mut b, p, "t", 300);
        b.stop();
    }
    let seg = dir.0.join("log").join(format!("{:020}.seg", 2));
    std::fs::write(&seg, b"not a segment").unwrap();
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Earliest, &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!(
        lag, 300,
        "segment 2's offsets, told as lag rather than waited for"
    );
    assert_eq!(got, (0..300).chain(600..900).collect::<Vec<_>>());
    b.stop();
}

#[test]
fn retention_by_count_moves_the_first_offset_and_counts_expired() {
    let dir = Dir::new("retention");
    let patterns = TopicPatterns::new([(
        mote_sdk::Filter::new("r/#").unwrap(),
        PatternSettings {
            retain_messages: Some(Some(1_000)),
            ..Default::default()
        },
    )])
    .unwrap();
    let mut b = Broker::open(&dir, limits(), patterns);
    let p = b.conn("p");
    publish(&mut b, p, "r/x", 3_000);
    publish(&mut b, p, "other", 3_000);
    b.e.enforce_retention();
    b.settle();
    let info = b.e.topic_infos();
    let rx = info.iter().find(|t| t.name == "r/x").unwrap();
    assert_eq!(rx.first, 2_000, "the newest 1,000 kept");
    assert_eq!(b.e.stats().expired, 2_000);
    let other = info.iter().find(|t| t.name == "other").unwrap();
    assert_eq!(other.first, 0, "no retention of its own");
    // A subscriber from the start is told what retention dropped, then gets the rest.
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "r/x", Start::Offset(0), &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!((lag, got.len()), (2_000, 1_000));
    b.stop();
    // And a restart remembers it.
    let b = Broker::open(&dir, limits(), TopicPatterns::default());
    let rx =
        b.e.topic_infos()
            .into_iter()
            .find(|t| t.name == "r/x")
            .unwrap();
    assert_eq!((rx.first, rx.next), (2_000, 3_000));
    b.stop();
}

#[test]
fn topics_not_persisted_stay_in_memory() {
    let dir = Dir::new("memory");
    let patterns = TopicPatterns::new([(
        mote_sdk::Filter::new("debug/#").unwrap(),
        PatternSettings {
            persist: Some(false),
            ..Default::default()
        },
    )])
    .unwrap();
    let mut b = Broker::open(&dir, limits(), patterns.clone());
    let p = b.conn("p");
    publish(&mut b, p, "debug/x", 500);
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "debug/x", Start::Offset(0), &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!((lag, got.len()), (400, 100), "only the ring: 100");
    b.stop();
    let b = Broker::open(&dir, limits(), patterns);
    assert!(
        b.e.topic_infos().iter().all(|t| t.name != "debug/x"),
        "nothing of it on disk"
    );
    b.stop();
}

// ---- Issue 12: starts by time on disk, group deletion and expiry in the log. ----

/// Every group message `m` gets (reading back from disk as needed), acked, as offsets.
fn drain_group(b: &mut Broker, m: ConnId, sub: u32) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        let mut batch = Vec::new();
        b.e.poll_deliveries(m, |d| {
            if let Delivery::GroupMessage { tag, offset, .. } = d {
                batch.push((tag, offset));
            }
            true
        });
        for &(tag, _) in &batch {
            b.e.handle_ack(m, sub, tag).unwrap();
        }
        let read = b.e.log().unwrap().has_reads();
        if batch.is_empty() && !read {
            b.settle();
            if !b.e.log().unwrap().has_reads() {
                return got;
            }
        }
        got.extend(batch.iter().map(|g| g.1));
        b.settle();
    }
    panic!("deliveries never ended");
}

#[test]
fn starts_by_time_find_messages_only_on_disk_reading_little() {
    let dir = Dir::new("by-time");
    // Small segments: the log's runs (and so its time lookup) are fine-grained.
    let cfg = LogConfig {
        sync: SyncPolicy::Always,
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let mut b = Broker::open_with(&dir, limits(), TopicPatterns::default(), cfg.clone());
    let p = b.conn("p");
    // Message i is stored at wall time 1,000,000 + i; the ring holds the last 100.
    publish(&mut b, p, "t", 2_000);
    let tid = b.e.by_name["t"];
    let near = b.e.offset_at_time(tid, 1_001_000);
    assert!(
        (800..=1_000).contains(&near),
        "a start at or a little before 1000, found without a read: {near}"
    );
    assert_eq!(
        b.e.offset_at_time(tid, 1_001_950),
        1_950,
        "in memory: exact"
    );
    assert_eq!(b.e.offset_at_time(tid, 9_000_000), 2_000, "none: the next");
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Time(1_001_000), &[])
        .unwrap();
    let (got, lag) = b.drain(c);
    assert_eq!(lag, 0);
    assert_eq!(got, (1_000..2_000).collect::<Vec<_>>());

    // The broker's wall clock: 1,000,000 at start (see `open`), 2,000 ms later.
    b.e.advance_clock(2_000);
    let m = b.conn("m");
    b.e.handle_subscribe_group(m, 1, "t", "g", Start::Ago(500), GroupSettings::default())
        .unwrap();
    assert_eq!(
        drain_group(&mut b, m, 1),
        (1_500..2_000).collect::<Vec<_>>()
    );
    b.e.seek_group("g", Start::Time(1_000_300)).unwrap();
    assert_eq!(drain_group(&mut b, m, 1), (300..2_000).collect::<Vec<_>>());
    b.stop();

    // After a restart the runs come from the segments' indexes.
    let mut b = Broker::open_with(&dir, limits(), TopicPatterns::default(), cfg);
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Time(1_001_234), &[])
        .unwrap();
    let (got, _) = b.drain(c);
    assert_eq!(got, (1_234..2_000).collect::<Vec<_>>());
    b.stop();
}

#[test]
fn groups_are_durable_by_default_and_deleted_or_expired_ones_leave_the_log() {
    let dir = Dir::new("group-life");
    let l = Limits {
        group_expiry_ms: 60_000,
        ..limits()
    };
    let mut b = Broker::open(&dir, l.clone(), TopicPatterns::default());
    let p = b.conn("p");
    let m = b.conn("m");
    for (sub, name) in [(1, "kept"), (2, "deleted"), (3, "expired")] {
        b.e.handle_subscribe_group(
            m,
            sub,
            "jobs",
            name,
            Start::Earliest,
            GroupSettings::default(),
        )
        .unwrap();
    }
    publish(&mut b, p, "jobs", 3);
    b.e.handle_unsubscribe(m, 3).unwrap();
    b.e.delete_group("deleted").unwrap();
    b.e.handle_timeouts(59_999);
    assert!(b.e.group_by_name("expired").is_some());
    b.e.handle_timeouts(60_000);
    assert!(b.e.group_by_name("expired").is_none());
    assert_eq!(b.e.stats().groups_expired, 1);
    b.settle();
    b.stop();

    let mut b = Broker::open(&dir, l.clone(), TopicPatterns::default());
    let names: Vec<String> = b.e.group_infos().into_iter().map(|g| g.name).collect();
    assert_eq!(
        names,
        ["kept"],
        "asked for nothing, and durable across a restart"
    );
    // The config, read after the log, opts the restored group out: it goes at the sweep.
    b.e.configure_group(&super::GroupConfig {
        name: "kept".into(),
        settings: GroupSettings::default(),
        filter: None,
        durable: Some(false),
        expiry_ms: None,
    })
    .unwrap();
    assert!(!b.e.group_by_name("kept").unwrap().settings.durable);
    b.e.handle_timeouts(1);
    assert!(b.e.group_by_name("kept").is_none());
    b.settle();
    b.stop();
    let b = Broker::open(&dir, l, TopicPatterns::default());
    assert!(b.e.group_infos().is_empty());
    b.stop();
}

#[test]
fn a_seek_is_kept_across_a_restart() {
    let dir = Dir::new("seek");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    let m = b.conn("m");
    b.e.handle_subscribe_group(m, 1, "jobs", "w", Start::Earliest, GroupSettings::default())
        .unwrap();
    publish(&mut b, p, "jobs", 300);
    assert_eq!(drain_group(&mut b, m, 1).len(), 300);
    b.e.seek_group("w", Start::Offset(250)).unwrap();
    b.settle();
    b.stop();

    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let m = b.conn("m");
    b.e.handle_subscribe_group(m, 1, "jobs", "w", Start::Latest, GroupSettings::default())
        .unwrap();
    let mut got = drain_group(&mut b, m, 1);
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got,
        (250..300).collect::<Vec<_>>(),
        "from where it was moved to"
    );
    b.stop();
}
