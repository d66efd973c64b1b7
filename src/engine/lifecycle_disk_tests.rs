//! The topic lifecycle on a real data directory: what a restart keeps of removed topics
//! (their last offsets), of metadata, and that a deleted topic's data leaves the disk.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use super::disk_tests::{Broker, Dir, limits, publish};
use super::settings::{DEFAULT_IDLE_EXPIRY_MS, TopicPatterns};

fn segments_hold(dir: &Dir, needle: &[u8]) -> bool {
    std::fs::read_dir(dir.0.join("log"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .any(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
}

#[test]
fn last_offsets_and_metadata_survive_a_restart() {
    let dir = Dir::new("lifecycle-restart");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    publish(&mut b, p, "a", 3);
    b.e.set_topic_meta("a", &[("owner", "pi"), ("room", "kitchen")])
        .unwrap();
    b.e.set_topic_meta("a", &[("room", "")]).unwrap();
    publish(&mut b, p, "b", 4);
    assert_eq!(b.e.delete_topic("b"), Ok(4));
    publish(&mut b, p, "c", 2);
    assert_eq!(b.e.purge_topic("c"), Ok(2));
    publish(&mut b, p, "d", 5);
    b.e.purge_topic("d").unwrap();
    b.settle();
    // c and d hold nothing from now on, and expire.
    b.now = DEFAULT_IDLE_EXPIRY_MS;
    assert_eq!(b.e.sweep_topics(DEFAULT_IDLE_EXPIRY_MS), 2);
    b.settle();
    b.stop();

    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let a = b.e.topic_detail("a").unwrap();
    assert_eq!(a.meta, [("owner".to_string(), "pi".to_string())]);
    assert_eq!((a.info.first, a.info.next), (0, 3));
    assert!(b.e.topic_detail("b").is_none());
    assert_eq!(b.e.last_offset("b"), Some(4));
    assert_eq!(b.e.last_offset("d"), Some(5));
    assert_eq!(b.e.last_offset("c"), Some(2));
    let p = b.conn("p");
    publish(&mut b, p, "b", 1);
    publish(&mut b, p, "d", 1);
    assert_eq!(b.e.topic_detail("b").unwrap().info.next, 5);
    assert_eq!(b.e.topic_detail("d").unwrap().info.next, 6);
    assert!(b.e.topic_detail("b").unwrap().meta.is_empty());
    // Purged and not expired: the topic stays, empty, its offsets kept.
    publish(&mut b, p, "c", 1);
    b.e.purge_topic("c").unwrap();
    // Deleted again after the restart: the newest end is what counts.
    b.e.delete_topic("b").unwrap();
    b.stop();

    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    assert_eq!(b.e.last_offset("b"), Some(5));
    assert!(b.e.topic_detail("b").is_none(), "its old id stays retired");
    assert_eq!(b.e.topic_detail("d").unwrap().info.next, 6);
    let c = b.e.topic_detail("c").unwrap().info;
    assert_eq!((c.first, c.next), (3, 3), "purged, its offsets kept");
    let p = b.conn("p");
    publish(&mut b, p, "b", 1);
    assert_eq!(b.e.topic_detail("b").unwrap().info.next, 6);
    b.stop();
}

#[test]
fn a_deleted_topics_data_leaves_the_disk_and_metadata_is_carried_forward() {
    let dir = Dir::new("lifecycle-files");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let p = b.conn("p");
    publish(&mut b, p, "x", 2_000);
    publish(&mut b, p, "m", 5);
    b.e.set_topic_meta("m", &[("owner", "pi")]).unwrap();
    b.settle();
    assert!(segments_hold(&dir, b"x:1234"));
    // Past the segment age: the segment is sealed and the next one started.
    b.now = 4_000_000;
    b.settle();
    assert_eq!(b.e.delete_topic("x"), Ok(2_000));
    b.e.purge_topic("m").unwrap();
    b.e.enforce_retention();
    b.settle();
    assert!(
        !segments_hold(&dir, b"x:1234"),
        "the segment with x's data was deleted"
    );
    b.stop();

    let b = Broker::open(&dir, limits(), TopicPatterns::default());
    assert!(b.e.topic_detail("x").is_none());
    assert_eq!(b.e.last_offset("x"), Some(2_000));
    let m = b.e.topic_detail("m").unwrap();
    assert_eq!(m.meta, [("owner".to_string(), "pi".to_string())]);
    assert_eq!((m.info.first, m.info.next), (5, 5));
    b.stop();
}
