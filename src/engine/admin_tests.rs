//! Scenarios of a topic's lifecycle on a virtual clock: delete, purge, metadata, the
//! table of last offsets, `max-age` in memory, idle expiry, `--max-topics`.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use mote_sdk::wire::GroupSettings;
use mote_sdk::{ErrorCode, Filter, Start};

use super::settings::{DEFAULT_IDLE_EXPIRY_MS, PatternSettings, TopicPatterns};
use super::{AdminOp, ConnId, Delivery, ENTRY_OVERHEAD, Engine};
use crate::limits::Limits;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Msg(u32, String, u64),
    Lag(u32, String, u64, u64),
    Removed(u32, String, u64, u64),
    Group(String, u64),
}

fn limits() -> Limits {
    Limits {
        keepalive_ms: 1 << 31,
        ..Limits::default()
    }
}

fn engine(l: Limits) -> Engine {
    assert_eq!(l.validate(), Ok(()));
    Engine::new(l, 7)
}

fn open(e: &mut Engine, name: &str) -> ConnId {
    let c = e.handle_connect(0, None);
    e.handle_open(c, name);
    c
}

fn publish(e: &mut Engine, c: ConnId, topic: &str) -> u64 {
    e.handle_publish(c, 1_000, topic, None, b"0123456789")
        .unwrap_or_else(|r| panic!("publish to {topic:?} refused: {r:?}"))
}

fn publish_n(e: &mut Engine, c: ConnId, topic: &str, n: u64) {
    for _ in 0..n {
        publish(e, c, topic);
    }
}

fn drain(e: &mut Engine, c: ConnId) -> Vec<Got> {
    let mut out = Vec::new();
    e.poll_deliveries(c, |d| {
        out.push(match d {
            Delivery::Message {
                sub, topic, offset, ..
            } => Got::Msg(sub, topic.into(), offset),
            Delivery::Lag {
                sub,
                topic,
                missed,
                next,
                ..
            } => Got::Lag(sub, topic.into(), missed, next),
            Delivery::Removed {
                sub,
                topic,
                unread,
                next,
            } => Got::Removed(sub, topic.into(), unread, next),
            Delivery::GroupMessage { topic, offset, .. } => Got::Group(topic.into(), offset),
            Delivery::GroupGone { .. } => panic!("these scenarios delete no group"),
            Delivery::Asked { .. } => panic!("these scenarios make no request"),
        });
        true
    });
    out
}

fn wakeups(e: &mut Engine) -> Vec<ConnId> {
    let mut v = Vec::new();
    e.take_wakeups(&mut v);
    v
}

fn names(e: &Engine) -> Vec<String> {
    e.topic_infos().into_iter().map(|t| t.name).collect()
}

fn with(key: &str, s: PatternSettings) -> TopicPatterns {
    TopicPatterns::new([(Filter::new(key).unwrap(), s)]).unwrap()
}

#[test]
fn a_deleted_topic_created_again_continues_above_its_last_offset() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    publish_n(&mut e, p, "a", 5);
    publish_n(&mut e, p, "b", 2);
    assert_eq!(e.delete_topic("a"), Ok(5));
    assert_eq!(e.stats().admin_ops[AdminOp::DeleteTopic as usize], 1);
    assert!(e.topic_detail("a").is_none());
    assert_eq!(names(&e), ["b"]);
    assert_eq!((e.topic_count(), e.stored_messages()), (1, 2));
    assert_eq!(e.memory_used(), 2 * (10 + ENTRY_OVERHEAD));
    assert_eq!(e.last_offset("a"), Some(5));
    let r = e.delete_topic("a").unwrap_err();
    assert_eq!(r.code, ErrorCode::NOT_FOUND);
    assert_eq!(r.message, "no topic \"a\"");
    // The same connection publishes again: its cached topic is gone, the name is looked
    // up, and the topic comes back above where it ended.
    assert_eq!(publish(&mut e, p, "a"), 5);
    assert_eq!(e.last_offset("a"), None, "taken by the new topic");
    let d = e.topic_detail("a").unwrap();
    assert_eq!((d.info.first, d.info.next, d.info.stored), (5, 6, 1));
    // Deleted twice, it still never goes back.
    e.delete_topic("a").unwrap();
    assert_eq!(publish(&mut e, p, "a"), 6);
}

#[test]
fn subscribers_of_a_deleted_topic_are_told_and_attach_to_the_new_one() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    let s = open(&mut e, "s");
    let idle = open(&mut e, "idle");
    e.handle_subscribe(s, 1, "a", Start::Latest, &[]).unwrap();
    e.handle_subscribe(s, 2, "#", Start::Latest, &[]).unwrap();
    e.handle_subscribe(idle, 1, "a", Start::Latest, &[])
        .unwrap();
    publish_n(&mut e, p, "a", 3);
    publish_n(&mut e, p, "b", 1);
    assert_eq!(drain(&mut e, idle).len(), 3);
    // Sub 1 reads one message; the rest stays queued when the topic goes.
    let mut first = Vec::new();
    let more = e.poll_deliveries(s, |d| {
        if let Delivery::Message { sub, offset, .. } = d {
            first.push((sub, offset));
        }
        false
    });
    assert_eq!(first, [(1, 0)]);
    assert!(more);
    wakeups(&mut e);
    assert_eq!(e.delete_topic("a"), Ok(3));
    // A subscriber with nothing queued is woken to be told; one with more queued
    // already knows to come back.
    assert_eq!(wakeups(&mut e), [idle]);
    assert_eq!(drain(&mut e, idle), [Got::Removed(1, "a".into(), 0, 3)]);
    let got = drain(&mut e, s);
    assert_eq!(
        got[..2],
        [
            Got::Removed(1, "a".into(), 2, 3),
            Got::Removed(2, "a".into(), 3, 3)
        ]
    );
    assert_eq!(got[2..], [Got::Msg(2, "b".into(), 0)]);
    assert_eq!(
        e.topic_info_at(0),
        None,
        "a removed topic's index reads as none"
    );
    // Both subscriptions stay, and read the topic created again from its first offset.
    assert_eq!(publish(&mut e, p, "a"), 3);
    let got = drain(&mut e, s);
    assert_eq!(
        got,
        [Got::Msg(1, "a".into(), 3), Got::Msg(2, "a".into(), 3)]
    );
    assert_eq!(e.topic_info_at(0).unwrap().name, "a", "in the freed slot");
    e.handle_unsubscribe(s, 1).unwrap();
    e.handle_disconnect(s);
    e.delete_topic("a").unwrap();
    assert!(drain(&mut e, s).is_empty());
}

#[test]
fn a_delete_takes_a_group_off_the_topic_and_the_group_reads_it_again_when_it_comes_back() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    let w = open(&mut e, "w");
    let settings = GroupSettings {
        durable: true,
        ..GroupSettings::default()
    };
    e.handle_subscribe_group(w, 1, "jobs/#", "workers", Start::Earliest, settings)
        .unwrap();
    publish_n(&mut e, p, "jobs/a", 3);
    publish_n(&mut e, p, "jobs/b", 1);
    let got = drain(&mut e, w);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(e.topic_detail("jobs/a").unwrap().groups, ["workers"]);
    assert_eq!(e.delete_topic("jobs/a"), Ok(3));
    let g = e.group_by_name("workers").unwrap();
    assert_eq!(g.cursors, [("jobs/b".to_string(), 1)]);
    assert_eq!(g.in_flight, 1, "what it had from jobs/a is forgotten");
    assert_eq!(publish(&mut e, p, "jobs/a"), 3);
    // The member is told, as a plain subscriber is (the group had handed out all 3).
    assert_eq!(
        drain(&mut e, w),
        [
            Got::Removed(1, "jobs/a".into(), 0, 3),
            Got::Group("jobs/a".into(), 3)
        ]
    );
}

#[test]
fn every_member_of_a_group_is_told_what_the_group_had_not_handed_out() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    let (w1, w2) = (open(&mut e, "w1"), open(&mut e, "w2"));
    let ask = GroupSettings {
        prefetch: 1,
        ..GroupSettings::default()
    };
    e.handle_subscribe_group(w1, 7, "jobs/#", "workers", Start::Earliest, ask)
        .unwrap();
    e.handle_subscribe_group(w2, 8, "jobs/#", "workers", Start::Earliest, ask)
        .unwrap();
    publish_n(&mut e, p, "jobs/a", 5);
    assert_eq!(drain(&mut e, w1).len() + drain(&mut e, w2).len(), 2);
    assert_eq!(e.delete_topic("jobs/a"), Ok(5));
    assert_eq!(drain(&mut e, w1), [Got::Removed(7, "jobs/a".into(), 3, 5)]);
    assert_eq!(drain(&mut e, w2), [Got::Removed(8, "jobs/a".into(), 3, 5)]);
}

#[test]
fn purge_drops_everything_stored_and_offsets_go_on() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    let s = open(&mut e, "s");
    e.handle_subscribe(s, 1, "a", Start::Latest, &[]).unwrap();
    publish_n(&mut e, p, "a", 10);
    let mut n = 0;
    e.poll_deliveries(s, |_| {
        n += 1;
        n < 4
    });
    assert_eq!(e.purge_topic("a"), Ok(10));
    assert_eq!(e.stats().admin_ops[AdminOp::Purge as usize], 1);
    assert_eq!((e.stored_messages(), e.memory_used()), (0, 0));
    let d = e.topic_detail("a").unwrap();
    assert_eq!((d.info.first, d.info.next, d.info.stored), (10, 10, 0));
    assert_eq!(drain(&mut e, s), [Got::Lag(1, "a".into(), 6, 10)]);
    assert_eq!(publish(&mut e, p, "a"), 10);
    assert_eq!(drain(&mut e, s), [Got::Msg(1, "a".into(), 10)]);
    assert_eq!(
        e.purge_topic("nope").unwrap_err().code,
        ErrorCode::NOT_FOUND
    );
}

#[test]
fn metadata_is_set_removed_sorted_and_bounded() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    publish(&mut e, p, "a");
    e.set_topic_meta("a", &[("room", "kitchen"), ("owner", "pi")])
        .unwrap();
    e.set_topic_meta("a", &[("room", ""), ("gone", "")])
        .unwrap();
    e.set_topic_meta("a", &[("floor", "1")]).unwrap();
    assert_eq!(e.stats().admin_ops[AdminOp::Meta as usize], 3);
    let meta = e.topic_detail("a").unwrap().meta;
    assert_eq!(
        meta,
        [("floor".into(), "1".into()), ("owner".into(), "pi".into())]
    );
    let refused = |e: &mut Engine, set: &[(&str, &str)]| {
        let r = e.set_topic_meta("a", set).unwrap_err();
        assert_eq!(r.code, ErrorCode::BAD_TOPIC, "{set:?}");
        r.message
    };
    let long_key = "k".repeat(super::MAX_META_KEY + 1);
    let long_value = "v".repeat(super::MAX_META_VALUE + 1);
    assert_eq!(
        refused(&mut e, &[("", "x")]),
        "metadata key \"\" is 0 bytes: a key has 1 to 64"
    );
    assert_eq!(
        refused(&mut e, &[(&long_key, "x")]),
        format!(
            "metadata key {} is 65 bytes: a key has 1 to 64",
            mote_sdk::topic::shown(&long_key)
        )
    );
    assert_eq!(
        refused(&mut e, &[("a=b", "x")]),
        "metadata key \"a=b\" has '=' or a control character; keys have neither"
    );
    assert!(refused(&mut e, &[("a\nb", "x")]).contains("control character"));
    assert_eq!(
        refused(&mut e, &[("k", &long_value)]),
        "metadata value of \"k\" is 257 bytes, the limit is 256"
    );
    let many: Vec<(String, String)> = (0..super::MAX_META_KEYS - 1)
        .map(|i| (format!("k{i:02}"), "v".into()))
        .collect();
    let set: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(
        refused(&mut e, &set),
        "topic \"a\" would have 17 metadata keys, the limit is 16; remove some first (an empty value removes a key)"
    );
    // All or nothing: a refusal changed nothing.
    assert_eq!(e.topic_detail("a").unwrap().meta.len(), 2);
    assert_eq!(e.stats().admin_ops[AdminOp::Meta as usize], 3);
    let r = e.set_topic_meta("b", &[("k", "v")]).unwrap_err();
    assert_eq!(r.code, ErrorCode::NOT_FOUND);
    // A topic deleted and created again starts without metadata.
    e.delete_topic("a").unwrap();
    publish(&mut e, p, "a");
    assert!(e.topic_detail("a").unwrap().meta.is_empty());
}

#[test]
fn an_idle_topic_expires_after_exactly_its_idle_expiry() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    publish_n(&mut e, p, "a", 2);
    publish(&mut e, p, "b");
    let s = open(&mut e, "s");
    e.handle_subscribe(s, 1, "b", Start::Latest, &[]).unwrap();
    drain(&mut e, s);
    // Nothing stored from t = 100 on.
    e.sweep_topics(100);
    e.purge_topic("a").unwrap();
    e.purge_topic("b").unwrap();
    assert_eq!(e.topic_detail("a").unwrap().idle_ms, Some(0));
    assert_eq!(e.topic_detail("b").unwrap().idle_ms, None, "a subscriber");
    let at = 100 + DEFAULT_IDLE_EXPIRY_MS;
    assert_eq!(e.sweep_topics(at - 1), 0);
    assert_eq!(e.topic_detail("a").unwrap().idle_ms, Some(at - 101));
    assert_eq!(e.sweep_topics(at), 1);
    assert_eq!(names(&e), ["b"]);
    assert_eq!(e.stats().topics_expired, 1);
    assert_eq!(e.last_offset("a"), Some(2));
    // The subscriber leaves at `at`: b is idle from then on.
    e.handle_unsubscribe(s, 1).unwrap();
    assert_eq!(e.sweep_topics(at + DEFAULT_IDLE_EXPIRY_MS - 1), 0);
    assert_eq!(e.sweep_topics(at + DEFAULT_IDLE_EXPIRY_MS), 1);
    assert_eq!(e.topic_count(), 0);
    assert_eq!(publish(&mut e, p, "a"), 2, "above its last offset");
    assert_eq!(publish(&mut e, p, "b"), 1);
}

#[test]
fn idle_expiry_is_set_by_pattern_and_can_be_off() {
    let mut e = engine(limits());
    e.set_patterns(
        TopicPatterns::new([
            (
                Filter::new("fast/#").unwrap(),
                PatternSettings {
                    idle_expiry_ms: Some(Some(1_000)),
                    ..Default::default()
                },
            ),
            (
                Filter::new("keep/#").unwrap(),
                PatternSettings {
                    idle_expiry_ms: Some(None),
                    ..Default::default()
                },
            ),
        ])
        .unwrap(),
    );
    let p = open(&mut e, "p");
    for t in ["fast/a", "keep/a", "other"] {
        publish(&mut e, p, t);
        e.purge_topic(t).unwrap();
    }
    let d = e.topic_detail("fast/a").unwrap();
    assert_eq!(d.settings.idle_expiry_ms.value, Some(1_000));
    assert_eq!(d.settings.idle_expiry_ms.source.pattern(), Some("fast/#"));
    assert_eq!(e.sweep_topics(999), 0);
    assert_eq!(e.sweep_topics(1_000), 1);
    assert_eq!(e.sweep_topics(DEFAULT_IDLE_EXPIRY_MS), 1);
    assert_eq!(names(&e), ["keep/a"]);
    assert_eq!(e.sweep_topics(u64::MAX / 2), 0, "off: kept");
}

#[test]
fn a_topic_a_group_reads_is_not_idle_and_expires_only_after_the_group_went() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    let w = open(&mut e, "w");
    e.handle_subscribe_group(w, 1, "a", "g", Start::Earliest, GroupSettings::default())
        .unwrap();
    publish(&mut e, p, "a");
    e.purge_topic("a").unwrap();
    assert_eq!(e.sweep_topics(10), 0);
    assert_eq!(
        e.topic_detail("a").unwrap().idle_ms,
        None,
        "a group reads it"
    );
    // The group goes between two sweeps, unnoted: the topic is idle from the sweep that
    // sees it so (late rather than early). (Groups are durable by default: deleted here.)
    e.handle_unsubscribe(w, 1).unwrap();
    e.delete_group("g").unwrap();
    assert!(e.group_by_name("g").is_none());
    assert_eq!(e.sweep_topics(30), 0);
    assert_eq!(e.sweep_topics(30 + DEFAULT_IDLE_EXPIRY_MS - 1), 0);
    assert_eq!(e.sweep_topics(30 + DEFAULT_IDLE_EXPIRY_MS), 1);
}

#[test]
fn max_age_applies_in_memory() {
    let mut e = engine(limits());
    e.set_wall_clock(1_000_000, 0);
    e.set_patterns(with(
        "t/#",
        PatternSettings {
            max_age_ms: Some(Some(1_000)),
            ..Default::default()
        },
    ));
    let p = open(&mut e, "p");
    for _ in 0..3 {
        e.handle_publish(p, 1_000_000, "t/a", None, b"x").unwrap();
    }
    e.handle_publish(p, 1_000_500, "t/a", None, b"y").unwrap();
    e.handle_publish(p, 1_000_000, "other", None, b"z").unwrap();
    let s = open(&mut e, "s");
    // At 1,001 ms the first three are older than a second: never delivered.
    e.handle_timeouts(1_001);
    e.handle_subscribe(s, 1, "t/a", Start::Earliest, &[])
        .unwrap();
    assert_eq!(
        drain(&mut e, s),
        [
            Got::Lag(1, "t/a".into(), 3, 3),
            Got::Msg(1, "t/a".into(), 3)
        ]
    );
    assert_eq!(e.stats().expired, 0, "not dropped yet");
    let read = e.read_topic("t/a", super::Since::Earliest, 10, 1 << 20);
    assert_eq!(read.messages.len(), 1, "nor read over HTTP");
    assert_eq!(read.messages[0].offset, 3);
    e.sweep_topics(1_001);
    assert_eq!(e.stats().expired, 3);
    let d = e.topic_detail("t/a").unwrap();
    assert_eq!((d.expired, d.info.first, d.info.stored), (3, 3, 1));
    assert_eq!(e.stored_messages(), 2, "other has no max-age");
    // At exactly max-age a message is kept; past it, it goes.
    e.sweep_topics(1_500);
    assert_eq!(e.topic_detail("t/a").unwrap().info.stored, 1);
    e.sweep_topics(1_501);
    assert_eq!(e.topic_detail("t/a").unwrap().info.stored, 0);
    assert_eq!(e.stats().expired, 4);
    assert_eq!(e.memory_used(), 1 + ENTRY_OVERHEAD);
}

#[test]
fn max_topics_counts_live_user_topics_only() {
    let mut e = engine(Limits {
        max_topics: 3,
        ..limits()
    });
    let p = open(&mut e, "p");
    for t in ["a", "b", "c"] {
        publish(&mut e, p, t);
    }
    let r = e.handle_publish(p, 0, "d", None, b"x").unwrap_err();
    assert_eq!(r.code, ErrorCode::TOPIC_LIMIT);
    assert_eq!(
        r.message,
        "cannot create topic \"d\": the broker holds 3 topics, the limit is 3 (--max-topics; deleted and idle topics free their place)"
    );
    // The broker's own topics do not count (and have a bound of their own).
    for i in 0..3 {
        e.publish_system(&format!("$dead/g/{i}"), 0, b"", b"x")
            .unwrap();
    }
    assert_eq!((e.topic_count(), e.user_topic_count()), (6, 3));
    assert!(e.publish_system("$dead/g/3", 0, b"", b"x").is_err());
    e.delete_topic("b").unwrap();
    assert_eq!(publish(&mut e, p, "d"), 0);
    // Idle expiry frees a place too.
    e.purge_topic("c").unwrap();
    e.sweep_topics(DEFAULT_IDLE_EXPIRY_MS);
    assert_eq!(names(&e)[..2], ["a", "d"]);
    assert_eq!(publish(&mut e, p, "e"), 0);
    assert_eq!(e.user_topic_count(), 3);
    assert!(e.handle_publish(p, 0, "f", None, b"x").is_err());
}

#[test]
fn a_removed_topics_budget_entries_never_touch_the_topic_in_its_slot() {
    let cost = 10 + ENTRY_OVERHEAD;
    let mut e = engine(Limits {
        memory: 10 * cost,
        ring_bytes: 10 * cost,
        max_payload: 10,
        ..limits()
    });
    let p = open(&mut e, "p");
    publish_n(&mut e, p, "a", 5); // slot 0
    publish_n(&mut e, p, "c", 5); // slot 1
    e.delete_topic("a").unwrap();
    assert_eq!(e.memory_used(), 5 * cost);
    assert_eq!(publish(&mut e, p, "b"), 0, "b takes a's slot");
    publish_n(&mut e, p, "c", 4);
    assert_eq!(e.memory_used(), 10 * cost);
    // Over the budget: the globally oldest goes, c:0, not b:0 (which a stale entry of
    // a, offset 0 in the same slot, would name).
    publish(&mut e, p, "c");
    let info = |e: &Engine, t: &str| {
        let d = e.topic_detail(t).unwrap().info;
        (d.first, d.next)
    };
    assert_eq!(info(&e, "b"), (0, 1));
    assert_eq!(info(&e, "c"), (1, 10));
    // And on, many times over: the budget holds, the oldest go first.
    for i in 0..1_000 {
        publish(&mut e, p, if i % 3 == 0 { "b" } else { "c" });
        assert!(e.memory_used() <= 10 * cost);
    }
    assert_eq!(e.stored_messages(), 10);
    let (b, c) = (info(&e, "b"), info(&e, "c"));
    assert_eq!((b.1 - b.0) + (c.1 - c.0), 10);
    assert!(e.topic_detail("a").is_none());
}

#[test]
fn listing_skips_removed_topics() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    for t in ["a", "b", "c", "d"] {
        publish(&mut e, p, t);
    }
    e.delete_topic("b").unwrap();
    let (page, more) = e.list_topics(None, 0, 2);
    let shown: Vec<&str> = page.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(shown, ["a", "c"]);
    let (page, more) = e.list_topics(None, more.unwrap(), 2);
    assert_eq!(page.len(), 1);
    assert_eq!(more, None);
    assert_eq!(e.topic_slots(), 4);
    assert_eq!(e.topic_count(), 3);
    assert_eq!(e.busiest_topics(10).len(), 3);
    assert_eq!(e.most_published_topics(10).len(), 3);
    assert_eq!(e.topic_totals().stored, 3);
}

#[test]
fn a_sweep_looks_at_a_bounded_number_of_topics_and_goes_on_where_it_stopped() {
    let mut e = engine(limits());
    let p = open(&mut e, "p");
    for i in 0..5_000 {
        let t = format!("t/{i}");
        publish(&mut e, p, &t);
        e.purge_topic(&t).unwrap();
    }
    assert_eq!(e.sweep_topics(DEFAULT_IDLE_EXPIRY_MS), 4_096);
    assert_eq!(e.sweep_topics(DEFAULT_IDLE_EXPIRY_MS), 904);
    assert_eq!(e.topic_count(), 0);
    assert_eq!(e.stats().topics_expired, 5_000);
    assert_eq!(e.last_offsets_len(), 5_000);
    // The slots are reused: creating them again grows nothing.
    for i in 0..5_000 {
        assert_eq!(publish(&mut e, p, &format!("t/{i}")), 1);
    }
    assert_eq!(e.topic_slots(), 5_000);
    assert_eq!(e.last_offsets_len(), 0);
}

#[test]
fn the_table_of_last_offsets_forgets_the_oldest_first() {
    let mut e = engine(Limits {
        max_topics: super::MAX_LAST_OFFSETS + 10,
        ..limits()
    });
    let p = open(&mut e, "p");
    for i in 0..super::MAX_LAST_OFFSETS + 5 {
        let t = format!("t/{i}");
        publish(&mut e, p, &t);
        e.delete_topic(&t).unwrap();
    }
    assert_eq!(e.last_offsets_len(), super::MAX_LAST_OFFSETS);
    assert_eq!(e.last_offset("t/4"), None, "forgotten");
    assert_eq!(e.last_offset("t/5"), Some(1));
    assert_eq!(
        publish(&mut e, p, "t/0"),
        0,
        "starts over: it was forgotten"
    );
    assert_eq!(publish(&mut e, p, "t/5"), 1);
}

#[test]
fn a_group_is_never_handed_a_message_past_max_age() {
    let mut e = engine(limits());
    e.set_wall_clock(1_000_000, 0);
    e.set_patterns(with(
        "t/#",
        PatternSettings {
            max_age_ms: Some(Some(1_000)),
            ..Default::default()
        },
    ));
    let p = open(&mut e, "p");
    let w = open(&mut e, "w");
    let settings = GroupSettings {
        ack_timeout_ms: 100,
        durable: true,
        ..GroupSettings::default()
    };
    e.handle_subscribe_group(w, 1, "t/#", "g", Start::Earliest, settings)
        .unwrap();
    e.handle_unsubscribe(w, 1).unwrap();
    e.handle_publish(p, 1_000_000, "t/a", None, b"old").unwrap();
    e.handle_timeouts(1_001);
    e.handle_subscribe_group(w, 2, "t/#", "g", Start::Earliest, settings)
        .unwrap();
    assert!(drain(&mut e, w).is_empty(), "expired: not sent");
    e.handle_timeouts(1_200);
    assert!(drain(&mut e, w).is_empty());
    let g = e.group_by_name("g").unwrap();
    assert_eq!((g.in_flight, g.counters.lag_missed), (0, 1));
}
