//! Scenario tests for the engine, driven directly on a virtual clock: no sockets, no
//! threads, every time is an argument.

// Tests unwrap and index freely: a panic with its location is the failure report wanted
// here, and the `unwrap_used` lint guards code that handles peer or user input.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use mote_sdk::wire::{MAX_KEY_LEN, Resume};
use mote_sdk::{ErrorCode, Filter, Start};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{ConnId, ConnInfo, Delivery, ENTRY_OVERHEAD, Engine, TopicInfo};
use crate::limits::Limits;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A delivery copied out of the ring, so it outlives the poll.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Msg {
        sub: u32,
        topic: String,
        offset: u64,
        time_ms: u64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Lag {
        sub: u32,
        topic: String,
        missed: u64,
        next: u64,
    },
    Removed {
        sub: u32,
        topic: String,
        unread: u64,
        next: u64,
    },
}

fn own(d: Delivery<'_>) -> Got {
    match d {
        Delivery::Message {
            sub,
            topic,
            offset,
            time_ms,
            key,
            payload,
        } => Got::Msg {
            sub,
            topic: topic.to_owned(),
            offset,
            time_ms,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        },
        Delivery::GroupMessage { .. } | Delivery::GroupGone { .. } => {
            panic!("these scenarios join no group")
        }
        Delivery::Asked { .. } => panic!("these scenarios make no request"),
        Delivery::Lag {
            sub,
            topic,
            missed,
            next,
            ..
        } => Got::Lag {
            sub,
            topic: topic.to_owned(),
            missed,
            next,
        },
        Delivery::Removed {
            sub,
            topic,
            unread,
            next,
        } => Got::Removed {
            sub,
            topic: topic.to_owned(),
            unread,
            next,
        },
    }
}

/// Cost of a stored message with no key, as counted against ring and memory limits.
fn cost(payload_len: usize) -> usize {
    payload_len + ENTRY_OVERHEAD
}

/// Roomy limits, with short timeouts so the virtual clock stays readable.
fn limits() -> Limits {
    Limits {
        keepalive_ms: 10_000,
        handshake_ms: 5_000,
        ..Limits::default()
    }
}

/// Limits whose rings keep only `n` messages.
fn ring_of(n: usize) -> Limits {
    Limits {
        ring_messages: n,
        ..limits()
    }
}

fn engine(l: Limits) -> Engine {
    assert_eq!(l.validate(), Ok(()), "the scenario's limits must be valid");
    Engine::new(l, 7)
}

/// A connection through its handshake at time 0.
fn open(e: &mut Engine, name: &str) -> ConnId {
    let c = e.handle_connect(0, None);
    e.handle_open(c, name);
    c
}

/// Publishes `payload` with no key at wall time 1000; returns the offset.
fn publish(e: &mut Engine, c: ConnId, topic: &str, payload: &[u8]) -> u64 {
    e.handle_publish(c, 1_000, topic, None, payload)
        .unwrap_or_else(|r| panic!("publish to {topic:?} refused: {r:?}"))
}

/// Publishes `n` messages whose payloads are `"<topic>:<offset>"`.
fn publish_n(e: &mut Engine, c: ConnId, topic: &str, n: u64) {
    for _ in 0..n {
        let next = next_offset(e, topic);
        let off = publish(e, c, topic, format!("{topic}:{next}").as_bytes());
        assert_eq!(off, next);
    }
}

fn payload_of(topic: &str, offset: u64) -> Vec<u8> {
    format!("{topic}:{offset}").into_bytes()
}

fn subscribe(e: &mut Engine, c: ConnId, sub: u32, filter: &str, from: Start) -> u64 {
    e.handle_subscribe(c, sub, filter, from, &[])
        .unwrap_or_else(|r| panic!("subscribe {filter:?} refused: {r:?}"))
}

/// Everything ready for `c`, with a sink that always has room.
fn drain(e: &mut Engine, c: ConnId) -> Vec<Got> {
    let mut out = Vec::new();
    let more = e.poll_deliveries(c, |d| {
        out.push(own(d));
        true
    });
    assert!(!more, "a sink with room left nothing ready");
    out
}

/// At most `k` deliveries: the sink reports itself full after the `k`-th.
fn poll_k(e: &mut Engine, c: ConnId, k: usize) -> (Vec<Got>, bool) {
    let mut out = Vec::new();
    let more = e.poll_deliveries(c, |d| {
        out.push(own(d));
        out.len() < k
    });
    (out, more)
}

fn wakeups(e: &mut Engine) -> Vec<ConnId> {
    let mut v = vec![ConnId(u32::MAX)]; // take_wakeups must clear what it is given
    e.take_wakeups(&mut v);
    v
}

fn next_offset(e: &Engine, topic: &str) -> u64 {
    e.topic_infos()
        .into_iter()
        .find(|t| t.name == topic)
        .map_or(0, |t| t.next)
}

fn topic_count(e: &Engine) -> usize {
    e.topic_infos().len()
}

fn topic_info(e: &Engine, topic: &str) -> TopicInfo {
    e.topic_infos()
        .into_iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("no topic {topic:?}"))
}

fn conn_info(e: &Engine, c: ConnId) -> ConnInfo {
    e.conn_infos()
        .into_iter()
        .find(|i| i.id == c)
        .unwrap_or_else(|| panic!("no connection {c:?}"))
}

/// `(topic, offset)` of every message delivery, in order.
fn offsets(got: &[Got]) -> Vec<(&str, u64)> {
    got.iter()
        .filter_map(|g| match g {
            Got::Msg { topic, offset, .. } => Some((topic.as_str(), *offset)),
            Got::Lag { .. } | Got::Removed { .. } => None,
        })
        .collect()
}

/// Offsets of the message deliveries of `topic`, in order.
fn offsets_of(got: &[Got], topic: &str) -> Vec<u64> {
    offsets(got)
        .into_iter()
        .filter(|&(t, _)| t == topic)
        .map(|(_, o)| o)
        .collect()
}

/// Checks every message delivery carries the payload [`publish_n`] gave it.
fn assert_payloads(got: &[Got]) {
    for g in got {
        if let Got::Msg {
            topic,
            offset,
            payload,
            ..
        } = g
        {
            assert_eq!(payload, &payload_of(topic, *offset), "{g:?}");
        }
    }
}

fn lag(sub: u32, topic: &str, missed: u64, next: u64) -> Got {
    Got::Lag {
        sub,
        topic: topic.to_owned(),
        missed,
        next,
    }
}

// ---------------------------------------------------------------------------------------
// Publish and replay
// ---------------------------------------------------------------------------------------

#[test]
fn publish_reaches_subscriber_in_offset_order() {
    let mut e = engine(limits());
    let sub = open(&mut e, "sub");
    let publ = open(&mut e, "pub");
    // The topic does not exist yet: the exact filter matches nothing until it does.
    subscribe(&mut e, sub, 9, "a/b", Start::Latest);
    assert_eq!(topic_count(&e), 0);
    assert!(drain(&mut e, sub).is_empty());

    assert_eq!(
        e.handle_publish(publ, 111, "a/b", Some(b"k1"), b"one"),
        Ok(0)
    );
    assert_eq!(e.handle_publish(publ, 222, "a/b", None, b"two"), Ok(1));
    assert_eq!(e.handle_publish(publ, 333, "a/b", Some(b""), b""), Ok(2));
    let got = drain(&mut e, sub);
    let msg = |offset, time_ms, key: Option<&[u8]>, payload: &[u8]| Got::Msg {
        sub: 9,
        topic: "a/b".into(),
        offset,
        time_ms,
        key: key.map(<[u8]>::to_vec),
        payload: payload.to_vec(),
    };
    assert_eq!(
        got,
        [
            msg(0, 111, Some(b"k1"), b"one"),
            msg(1, 222, None, b"two"),
            // An empty key is no key.
            msg(2, 333, None, b""),
        ]
    );
    assert!(drain(&mut e, sub).is_empty(), "nothing is delivered twice");

    let s = e.stats();
    assert_eq!((s.published, s.delivered), (3, 3));
    assert_eq!((s.bytes_published, s.bytes_delivered), (6, 6));
    let t = topic_info(&e, "a/b");
    assert_eq!(
        (t.first, t.next, t.stored, t.published, t.delivered),
        (0, 3, 3, 3, 3)
    );
    assert_eq!(t.subscribers, 1);
    assert_eq!(conn_info(&e, publ).msgs_in, 3);
    assert_eq!(conn_info(&e, sub).msgs_out, 3);
    assert_eq!(conn_info(&e, sub).pending, 0);
    assert_eq!(e.stored_messages(), 3);
    assert_eq!(e.memory_used(), cost(5) + cost(3) + cost(0));
}

#[test]
fn latest_does_not_replay() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 3);
    subscribe(&mut e, c, 1, "t", Start::Latest);
    assert!(drain(&mut e, c).is_empty());
    assert_eq!(conn_info(&e, c).pending, 0);
    publish_n(&mut e, c, "t", 1);
    let got = drain(&mut e, c);
    assert_eq!(offsets(&got), [("t", 3)]);
    assert_payloads(&got);
}

#[test]
fn earliest_offset_and_last_replay_their_ranges() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 10);
    let cases: &[(Start, std::ops::Range<u64>)] = &[
        (Start::Earliest, 0..10),
        (Start::Offset(0), 0..10),
        (Start::Offset(4), 4..10),
        (Start::Offset(9), 9..10),
        (Start::Offset(10), 10..10),
        (Start::Last(3), 7..10),
        (Start::Last(1), 9..10),
        (Start::Last(0), 10..10),
        (Start::Last(10), 0..10),
        (Start::Last(50), 0..10),
        (Start::Last(u64::MAX), 0..10),
        (Start::Latest, 10..10),
    ];
    for (i, (from, want)) in cases.iter().enumerate() {
        let sub = open(&mut e, "s");
        subscribe(&mut e, sub, i as u32, "t", *from);
        assert_eq!(
            conn_info(&e, sub).pending,
            want.end - want.start,
            "{from:?}"
        );
        let got = drain(&mut e, sub);
        assert_eq!(
            offsets_of(&got, "t"),
            want.clone().collect::<Vec<_>>(),
            "{from:?}"
        );
        assert_eq!(got.len() as u64, want.end - want.start, "{from:?}: no lag");
        assert_payloads(&got);
        e.handle_disconnect(sub);
    }
}

#[test]
fn offset_beyond_the_end_starts_at_the_end() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 10);
    subscribe(&mut e, c, 1, "t", Start::Offset(1_000));
    assert!(drain(&mut e, c).is_empty());
    assert!(wakeups(&mut e).is_empty());
    publish_n(&mut e, c, "t", 2);
    let got = drain(&mut e, c);
    assert_eq!(
        offsets(&got),
        [("t", 10), ("t", 11)],
        "no gap reported, no skip"
    );
}

#[test]
fn offset_below_the_ring_reports_the_exact_lag_first() {
    let mut e = engine(ring_of(4));
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 10); // the ring keeps offsets 6..10
    assert_eq!(topic_info(&e, "t").first, 6);

    subscribe(&mut e, c, 1, "t", Start::Offset(2));
    let got = drain(&mut e, c);
    assert_eq!(got[0], lag(1, "t", 4, 6));
    assert_eq!(offsets(&got[1..]), [("t", 6), ("t", 7), ("t", 8), ("t", 9)]);
    assert_eq!(got.len(), 5);
    assert_payloads(&got);

    subscribe(&mut e, c, 2, "t", Start::Offset(0));
    let got = drain(&mut e, c);
    assert_eq!(got[0], lag(2, "t", 6, 6));
    assert_eq!(offsets_of(&got, "t"), [6, 7, 8, 9]);

    // Earliest and Last never report lag: they ask for what the ring holds.
    subscribe(&mut e, c, 3, "t", Start::Earliest);
    subscribe(&mut e, c, 4, "t", Start::Last(100));
    let got = drain(&mut e, c);
    assert!(got.iter().all(|g| matches!(g, Got::Msg { .. })), "{got:?}");
    assert_eq!(got.len(), 8);

    let s = e.stats();
    assert_eq!((s.lag_events, s.lag_missed), (2, 10));
    assert_eq!(topic_info(&e, "t").lag_missed, 10);
    assert_eq!(conn_info(&e, c).lag_missed, 10);
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

#[test]
fn wildcards_match_existing_topics_and_topics_created_later() {
    let mut e = engine(limits());
    let p = open(&mut e, "pub");
    let c = open(&mut e, "sub");
    publish_n(&mut e, p, "home/kitchen/temp", 2);
    publish_n(&mut e, p, "home/hall/temp", 1);
    publish_n(&mut e, p, "home/hall/hum", 1);
    publish_n(&mut e, p, "office/desk/temp", 1);

    subscribe(&mut e, c, 1, "home/+/temp", Start::Earliest);
    subscribe(&mut e, c, 2, "home/#", Start::Latest);
    subscribe(&mut e, c, 3, "+/+/temp", Start::Last(1));
    let got = drain(&mut e, c);
    let by_sub = |sub: u32, got: &[Got]| -> Vec<(String, u64)> {
        let mut v: Vec<_> = got
            .iter()
            .filter_map(|g| match g {
                Got::Msg {
                    sub: s,
                    topic,
                    offset,
                    ..
                } if *s == sub => Some((topic.clone(), *offset)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        let mut v: Vec<_> = v.iter().map(|&(t, o)| (t.to_owned(), o)).collect();
        v.sort();
        v
    };
    assert_eq!(
        by_sub(1, &got),
        pairs(&[
            ("home/kitchen/temp", 0),
            ("home/kitchen/temp", 1),
            ("home/hall/temp", 0)
        ])
    );
    assert!(by_sub(2, &got).is_empty(), "Latest replays nothing");
    assert_eq!(
        by_sub(3, &got),
        pairs(&[
            ("home/kitchen/temp", 1),
            ("home/hall/temp", 0),
            ("office/desk/temp", 0)
        ])
    );
    assert_eq!(topic_info(&e, "home/kitchen/temp").subscribers, 3);
    assert_eq!(topic_info(&e, "home/hall/hum").subscribers, 1);
    assert_eq!(topic_info(&e, "office/desk/temp").subscribers, 1);

    // Topics created after the subscribe join every matching subscription at offset 0,
    // whatever its `from` was.
    publish_n(&mut e, p, "home/cellar/temp", 2);
    publish_n(&mut e, p, "home", 1);
    publish_n(&mut e, p, "home/cellar/temp/raw", 1);
    publish_n(&mut e, p, "garden/temp", 1);
    let got = drain(&mut e, c);
    assert_payloads(&got);
    assert_eq!(
        by_sub(1, &got),
        pairs(&[("home/cellar/temp", 0), ("home/cellar/temp", 1)])
    );
    assert_eq!(
        by_sub(2, &got),
        pairs(&[
            ("home/cellar/temp", 0),
            ("home/cellar/temp", 1),
            ("home", 0),
            ("home/cellar/temp/raw", 0)
        ])
    );
    assert_eq!(
        by_sub(3, &got),
        pairs(&[("home/cellar/temp", 0), ("home/cellar/temp", 1)])
    );
    assert_eq!(topic_info(&e, "garden/temp").subscribers, 0);
    assert_eq!(topic_info(&e, "home/cellar/temp").subscribers, 3);
}

#[test]
fn a_filter_matching_nothing_yet_attaches_when_the_topic_appears() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    subscribe(&mut e, c, 1, "sensors/+", Start::Latest);
    subscribe(&mut e, c, 2, "sensors/x", Start::Offset(5));
    assert!(drain(&mut e, c).is_empty());
    assert!(wakeups(&mut e).is_empty());
    assert_eq!(conn_info(&e, c).subscriptions, ["sensors/+", "sensors/x"]);

    publish_n(&mut e, c, "sensors/x", 2);
    assert_eq!(topic_info(&e, "sensors/x").subscribers, 2);
    assert_eq!(wakeups(&mut e), [c]);
    let got = drain(&mut e, c);
    assert_eq!(
        offsets_of(&got, "sensors/x"),
        [0, 1, 0, 1],
        "per cursor, in order"
    );
    assert!(got.iter().all(|g| matches!(g, Got::Msg { .. })));
}

#[test]
fn dollar_topics_are_reserved_for_the_broker() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    subscribe(&mut e, c, 1, "#", Start::Earliest);
    // A client cannot create a `$` topic...
    for name in ["$SYS/x", "$dead/g/t", "$"] {
        let r = e.handle_publish(c, 0, name, None, b"x").unwrap_err();
        assert_eq!(r.code, ErrorCode::BAD_TOPIC, "{name}");
        assert!(r.message.contains(name), "{}", r.message);
        assert!(r.message.contains("reserved"), "{}", r.message);
    }
    assert_eq!(topic_count(&e), 0);
    assert!(drain(&mut e, c).is_empty());
    // ...but may subscribe to one, which matches nothing yet.
    subscribe(&mut e, c, 2, "$SYS/#", Start::Earliest);
    subscribe(&mut e, c, 3, "$dead/+/t", Start::Earliest);
    assert_eq!(e.stats().publish_refused, 3);
    assert_eq!(e.stats().errors(ErrorCode::BAD_TOPIC), 3);
    assert_eq!(e.stats().subscribe_refused, 0);
    // The matching rule the engine relies on when a broker topic exists.
    let hash = Filter::new("#").unwrap();
    assert!(!hash.matches("$dead/g/t"));
    assert!(!Filter::new("+/g/t").unwrap().matches("$dead/g/t"));
    assert!(Filter::new("$dead/#").unwrap().matches("$dead/g/t"));
}

// ---------------------------------------------------------------------------------------
// Ring bounds and the memory budget
// ---------------------------------------------------------------------------------------

#[test]
fn ring_count_limit_evicts_the_oldest() {
    let mut e = engine(ring_of(3));
    let c = open(&mut e, "c");
    for i in 0..10u64 {
        assert_eq!(
            publish(&mut e, c, "t", b"0123456789"),
            i,
            "offsets keep increasing"
        );
        let t = topic_info(&e, "t");
        assert!(t.stored <= 3);
        assert_eq!(t.first, (i + 1).saturating_sub(3));
    }
    let t = topic_info(&e, "t");
    assert_eq!((t.first, t.next, t.stored, t.evicted), (7, 10, 3, 7));
    assert_eq!(t.bytes, 3 * cost(10));
    assert_eq!(e.stats().evicted_ring, 7);
    assert_eq!(e.stats().evicted_memory, 0);
    assert_eq!(e.stored_messages(), 3);
    assert_eq!(e.memory_used(), 3 * cost(10));
    subscribe(&mut e, c, 1, "t", Start::Earliest);
    assert_eq!(offsets_of(&drain(&mut e, c), "t"), [7, 8, 9]);
}

#[test]
fn ring_byte_limit_evicts_the_oldest() {
    let l = Limits {
        ring_bytes: 3 * cost(100),
        max_payload: 250,
        ..limits()
    };
    let mut e = engine(l.clone());
    let c = open(&mut e, "c");
    let other = open(&mut e, "o");
    publish(&mut e, other, "other", &[0; 100]);
    for i in 0..5u64 {
        assert_eq!(publish(&mut e, c, "t", &[i as u8; 100]), i);
    }
    let t = topic_info(&e, "t");
    assert_eq!(
        (t.first, t.next, t.stored, t.bytes),
        (2, 5, 3, 3 * cost(100))
    );
    assert_eq!(e.stats().evicted_ring, 2);
    // A big message pushes out as many as it takes, and only from its own topic.
    assert_eq!(publish(&mut e, c, "t", &[9; 250]), 5);
    let t = topic_info(&e, "t");
    assert_eq!((t.first, t.next, t.stored), (4, 6, 2));
    assert!(t.bytes <= l.ring_bytes);
    assert_eq!(t.bytes, cost(100) + cost(250));
    assert_eq!(e.stats().evicted_ring, 4);
    assert_eq!(topic_info(&e, "other").stored, 1);
    assert_eq!(e.memory_used(), cost(100) + t.bytes);
    subscribe(&mut e, c, 1, "t", Start::Earliest);
    let got = drain(&mut e, c);
    assert_eq!(offsets_of(&got, "t"), [4, 5]);
    assert!(matches!(&got[1], Got::Msg { payload, .. } if *payload == [9; 250]));
}

#[test]
fn memory_budget_evicts_the_globally_oldest_first() {
    let l = Limits {
        memory: 5 * cost(10),
        ring_bytes: 5 * cost(10),
        max_payload: 10,
        ..limits()
    };
    let mut e = engine(l);
    let c = open(&mut e, "c");
    let firsts = |e: &Engine| -> Vec<(String, u64, u64)> {
        e.topic_infos()
            .into_iter()
            .map(|t| (t.name, t.first, t.next))
            .collect()
    };
    for t in ["a", "a", "b", "b", "a"] {
        publish(&mut e, c, t, &[0; 10]);
    }
    assert_eq!(
        e.memory_used(),
        5 * cost(10),
        "exactly at the budget is fine"
    );
    assert_eq!(e.stats().evicted_memory, 0);

    publish(&mut e, c, "c", &[0; 10]); // a0 is the oldest
    assert_eq!(
        firsts(&e),
        [("a".into(), 1, 3), ("b".into(), 0, 2), ("c".into(), 0, 1)]
    );
    publish(&mut e, c, "b", &[0; 10]); // then a1
    publish(&mut e, c, "c", &[0; 10]); // then b0
    assert_eq!(
        firsts(&e),
        [("a".into(), 2, 3), ("b".into(), 1, 3), ("c".into(), 0, 2)]
    );
    assert_eq!(e.stats().evicted_memory, 3);
    assert_eq!(e.stats().evicted_ring, 0);
    assert_eq!(topic_info(&e, "a").evicted, 2);
    assert_eq!(e.stored_messages(), 5);
    assert_eq!(e.memory_used(), 5 * cost(10));

    // Stored now, oldest first: b1 (seq 4), a2 (seq 5), c0, b2, c1.
    publish(&mut e, c, "c", &[]); // b1 goes, though `a` is the busier topic
    assert_eq!(
        firsts(&e),
        [("a".into(), 2, 3), ("b".into(), 2, 3), ("c".into(), 0, 3)]
    );
    publish(&mut e, c, "c", &[]); // then a2, the last of `a`: its ring is left empty
    assert_eq!(
        firsts(&e),
        [("a".into(), 3, 3), ("b".into(), 2, 3), ("c".into(), 0, 4)]
    );
    assert_eq!(e.memory_used(), 3 * cost(10) + 2 * cost(0));
    assert_eq!(e.stats().evicted_memory, 5);
    let a = topic_info(&e, "a");
    assert_eq!((a.stored, a.bytes), (0, 0));
}

#[test]
fn memory_budget_skips_messages_their_ring_already_dropped() {
    let l = Limits {
        memory: 4 * cost(10),
        ring_bytes: 4 * cost(10),
        ring_messages: 2,
        max_payload: 10,
        ..limits()
    };
    let mut e = engine(l.clone());
    let c = open(&mut e, "c");
    let ten = b"0123456789";
    // a0 b0 a1 a2: the ring drops a0, so the oldest stored is b0, not a1.
    for t in ["a", "b", "a", "a", "c"] {
        publish(&mut e, c, t, ten);
    }
    assert_eq!(e.stats().evicted_ring, 1);
    assert_eq!(e.memory_used(), 4 * cost(10), "at the budget");
    publish(&mut e, c, "c", ten);
    assert_eq!(e.stats().evicted_memory, 1);
    assert_eq!(
        (topic_info(&e, "a").first, topic_info(&e, "b").first),
        (1, 1)
    );
    assert_eq!(topic_info(&e, "b").stored, 0, "b0 went, a1 stayed");
    for i in 0..40u64 {
        let topic = ["a", "b", "c"][(i % 3) as usize];
        publish(&mut e, c, topic, b"0123456789");
        assert!(e.memory_used() <= l.memory, "after publish {i}");
        let sum: usize = e.topic_infos().iter().map(|t| t.bytes).sum();
        assert_eq!(e.memory_used(), sum);
        let stored: usize = e.topic_infos().iter().map(|t| t.stored).sum();
        assert_eq!(e.stored_messages(), stored);
    }
    let s = e.stats();
    let evicted: u64 = e.topic_infos().iter().map(|t| t.evicted).sum();
    assert_eq!(s.evicted_ring + s.evicted_memory, evicted);
    assert_eq!(s.published - evicted, e.stored_messages() as u64);
    assert!(s.evicted_memory > 0);
}

#[test]
fn memory_never_exceeds_the_budget_with_many_topics() {
    let l = Limits {
        memory: 10_000,
        ring_bytes: 3_000,
        max_payload: 500,
        ..limits()
    };
    let mut e = engine(l.clone());
    let c = open(&mut e, "c");
    let mut x = 12345u64;
    for i in 0..2_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let topic = format!("t/{}", (x >> 33) % 17);
        let len = ((x >> 13) % 501) as usize;
        publish(&mut e, c, &topic, &vec![1; len]);
        assert!(e.memory_used() <= l.memory, "after publish {i}");
        for t in e.topic_infos() {
            assert!(t.bytes <= l.ring_bytes, "{t:?}");
        }
    }
    let sum: usize = e.topic_infos().iter().map(|t| t.bytes).sum();
    assert_eq!(e.memory_used(), sum);
    assert!(e.stats().evicted_memory > 0 && e.stats().evicted_ring > 0);
}

#[test]
fn a_message_larger_than_a_ring_is_refused_not_stored() {
    // `Limits::validate` fits `max_payload` into `ring_bytes` without the key. Such a
    // message once came back `Ok` and was then evicted at once with the rest of its ring.
    let l = Limits {
        max_payload: 1_000,
        ring_bytes: 1_000 + ENTRY_OVERHEAD,
        memory: 1_000 + ENTRY_OVERHEAD,
        ..limits()
    };
    let mut e = engine(l);
    let c = open(&mut e, "c");
    publish(&mut e, c, "t", b"small");
    let r = e
        .handle_publish(c, 0, "t", Some(b"key"), &[7; 1_000])
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::PAYLOAD_TOO_LARGE);
    assert!(r.message.contains("--ring-bytes"), "{}", r.message);
    assert!(
        r.message.contains(&cost(1_003).to_string()),
        "{}",
        r.message
    );
    let t = topic_info(&e, "t");
    assert_eq!(
        (t.first, t.next, t.stored),
        (0, 1, 1),
        "the ring is untouched"
    );
    assert_eq!(e.stats().publish_refused, 1);
    assert_eq!(e.stats().errors(ErrorCode::PAYLOAD_TOO_LARGE), 1);
    assert_eq!(e.stats().evicted_ring + e.stats().evicted_memory, 0);

    // Exactly a ring's worth is stored, and readable.
    assert_eq!(e.handle_publish(c, 0, "t", Some(b"key"), &[7; 997]), Ok(1));
    subscribe(&mut e, c, 1, "t", Start::Earliest);
    let got = drain(&mut e, c);
    assert_eq!(offsets(&got), [("t", 1)]);
    assert!(matches!(&got[0], Got::Msg { key: Some(k), payload, .. }
        if k == b"key" && *payload == [7; 997]));
    assert!(e.memory_used() <= 1_000 + ENTRY_OVERHEAD);
}

// ---------------------------------------------------------------------------------------
// Slow subscribers and flow control
// ---------------------------------------------------------------------------------------

#[test]
fn slow_subscriber_skips_ahead_and_is_told_exactly_how_much() {
    let mut e = engine(ring_of(8));
    let p = open(&mut e, "pub");
    let slow = open(&mut e, "slow");
    subscribe(&mut e, slow, 5, "t", Start::Latest);
    publish_n(&mut e, p, "t", 3);
    let got = drain(&mut e, slow);
    assert_eq!(offsets_of(&got, "t"), [0, 1, 2]);

    for i in 3..1_003u64 {
        let off = e.handle_publish(p, i, "t", None, &payload_of("t", i));
        assert_eq!(off, Ok(i), "the publisher is never refused");
    }
    assert_eq!(e.stats().publish_refused, 0);
    assert_eq!(e.stored_messages(), 8, "a slow subscriber costs no memory");
    assert_eq!(conn_info(&e, slow).pending, 1_000);

    let got = drain(&mut e, slow);
    assert_eq!(got[0], lag(5, "t", 992, 995));
    assert_eq!(offsets_of(&got, "t"), (995..1_003).collect::<Vec<_>>());
    assert_eq!(got.len(), 9);
    assert_payloads(&got);

    // Partly caught up, then behind again: the next lag counts from where it stopped.
    publish_n(&mut e, p, "t", 4);
    let (got, more) = poll_k(&mut e, slow, 2);
    assert!(more);
    assert_eq!(offsets_of(&got, "t"), [1_003, 1_004]);
    publish_n(&mut e, p, "t", 20); // next = 1027, the ring keeps 1019..1027
    let got = drain(&mut e, slow);
    assert_eq!(got[0], lag(5, "t", 1_019 - 1_005, 1_019));
    assert_eq!(offsets_of(&got, "t"), (1_019..1_027).collect::<Vec<_>>());

    let missed = 992 + 14;
    let s = e.stats();
    assert_eq!((s.lag_events, s.lag_missed), (2, missed));
    assert_eq!(topic_info(&e, "t").lag_missed, missed);
    assert_eq!(conn_info(&e, slow).lag_missed, missed);
    assert_eq!(conn_info(&e, p).lag_missed, 0);
    assert_eq!(s.delivered, 3 + 8 + 2 + 8);
}

#[test]
fn a_full_sink_gets_exactly_k_and_the_rest_comes_next_time() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 10);
    subscribe(&mut e, c, 1, "t", Start::Earliest);
    let mut all = Vec::new();
    for k in [3, 1, 4] {
        let (got, more) = poll_k(&mut e, c, k);
        assert_eq!(got.len(), k);
        assert!(more);
        all.extend(got);
    }
    let rest = drain(&mut e, c);
    assert_eq!(rest.len(), 2);
    all.extend(rest);
    assert_eq!(offsets_of(&all, "t"), (0..10).collect::<Vec<_>>());
    assert_payloads(&all);
    assert_eq!(e.stats().delivered, 10);
    assert_eq!(topic_info(&e, "t").delivered, 10);
    assert_eq!(conn_info(&e, c).msgs_out, 10);
    assert!(drain(&mut e, c).is_empty());
}

#[test]
fn a_lag_notice_takes_a_slot_in_the_sink() {
    let mut e = engine(ring_of(2));
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 5);
    subscribe(&mut e, c, 1, "t", Start::Offset(0));
    let (got, more) = poll_k(&mut e, c, 1);
    assert_eq!(got, [lag(1, "t", 3, 3)]);
    assert!(more);
    let got = drain(&mut e, c);
    assert_eq!(
        offsets(&got),
        [("t", 3), ("t", 4)],
        "the lag is not repeated"
    );
    assert_eq!(e.stats().lag_events, 1);
}

#[test]
fn topics_of_one_connection_are_served_round_robin() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "a", 200);
    publish_n(&mut e, c, "b", 200);
    subscribe(&mut e, c, 1, "#", Start::Earliest);

    let (got, more) = poll_k(&mut e, c, 150);
    assert!(more);
    let a = offsets_of(&got, "a");
    let b = offsets_of(&got, "b");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both topics progress in one poll"
    );
    assert_eq!(a.len() + b.len(), 150);
    assert_eq!(a, (0..a.len() as u64).collect::<Vec<_>>());
    assert_eq!(b, (0..b.len() as u64).collect::<Vec<_>>());
    // Neither waits for more than one fair share of the other.
    assert!(
        a.len().abs_diff(b.len()) <= 64,
        "{} vs {}",
        a.len(),
        b.len()
    );
    let first_b = got
        .iter()
        .position(|g| matches!(g, Got::Msg { topic, .. } if topic == "b"))
        .unwrap();
    assert!(first_b <= 64, "b waited for {first_b} messages of a");

    let rest = drain(&mut e, c);
    let mut all = got;
    all.extend(rest);
    assert_eq!(offsets_of(&all, "a"), (0..200).collect::<Vec<_>>());
    assert_eq!(offsets_of(&all, "b"), (0..200).collect::<Vec<_>>());
    assert_payloads(&all);
}

#[test]
fn subscriptions_of_one_connection_are_served_round_robin() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 300);
    subscribe(&mut e, c, 1, "t", Start::Earliest);
    subscribe(&mut e, c, 2, "t", Start::Earliest);
    let (got, _) = poll_k(&mut e, c, 200);
    let n1 = got
        .iter()
        .filter(|g| matches!(g, Got::Msg { sub: 1, .. }))
        .count();
    assert!(n1 > 0 && n1 < 200, "both subscriptions progress: {n1}");
}

// ---------------------------------------------------------------------------------------
// Wakeups
// ---------------------------------------------------------------------------------------

#[test]
fn a_subscriber_is_woken_once_while_it_has_something_queued() {
    let mut e = engine(limits());
    let p = open(&mut e, "pub");
    let s = open(&mut e, "sub");
    let other = open(&mut e, "other");
    subscribe(&mut e, s, 1, "a", Start::Latest);
    subscribe(&mut e, s, 2, "b/#", Start::Latest);
    subscribe(&mut e, other, 1, "zzz", Start::Latest);
    assert!(wakeups(&mut e).is_empty(), "nothing to send yet");

    publish_n(&mut e, p, "a", 5);
    publish_n(&mut e, p, "b/x", 5);
    assert_eq!(
        wakeups(&mut e),
        [s],
        "one wakeup, not one per message or topic"
    );
    publish_n(&mut e, p, "a", 1);
    assert!(wakeups(&mut e).is_empty(), "still queued: no new wakeup");

    // Partly drained: the poll said more is ready, so no wakeup is needed.
    let (_, more) = poll_k(&mut e, s, 3);
    assert!(more);
    publish_n(&mut e, p, "a", 1);
    assert!(wakeups(&mut e).is_empty());

    assert_eq!(drain(&mut e, s).len(), 12 - 3);
    publish_n(&mut e, p, "b/y", 1);
    assert_eq!(wakeups(&mut e), [s], "drained, so woken again");
    drain(&mut e, s);

    // The publisher and connections without matching subscriptions are never woken.
    publish_n(&mut e, p, "c", 3);
    assert!(wakeups(&mut e).is_empty());
    assert!(drain(&mut e, other).is_empty());
}

#[test]
fn a_subscribe_with_something_to_replay_wakes_its_connection() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 2);
    subscribe(&mut e, c, 1, "t", Start::Latest);
    assert!(wakeups(&mut e).is_empty());
    subscribe(&mut e, c, 2, "t", Start::Last(1));
    subscribe(&mut e, c, 3, "t", Start::Earliest);
    assert_eq!(wakeups(&mut e), [c]);
}

// ---------------------------------------------------------------------------------------
// Resuming
// ---------------------------------------------------------------------------------------

#[test]
fn resume_entries_override_from_per_topic() {
    let mut e = engine(ring_of(6));
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "r/a", 10); // ring: 4..10
    publish_n(&mut e, c, "r/b", 10);
    publish_n(&mut e, c, "r/c", 3);
    publish_n(&mut e, c, "r/d", 3);
    let resume = [
        Resume {
            topic: "r/a",
            next: 7,
        },
        Resume {
            topic: "r/b",
            next: 1,
        }, // below the ring: lag
        Resume {
            topic: "r/c",
            next: 50,
        }, // beyond the end: the end
        Resume {
            topic: "elsewhere",
            next: 0,
        }, // not matched: ignored
    ];
    e.handle_subscribe(c, 1, "r/+", Start::Latest, &resume)
        .unwrap();
    let got = drain(&mut e, c);
    assert_eq!(offsets_of(&got, "r/a"), [7, 8, 9]);
    assert_eq!(offsets_of(&got, "r/b"), [4, 5, 6, 7, 8, 9]);
    assert!(got.contains(&lag(1, "r/b", 3, 4)));
    assert_eq!(offsets_of(&got, "r/c"), [] as [u64; 0]);
    assert_eq!(offsets_of(&got, "r/d"), [] as [u64; 0], "from = Latest");
    assert_eq!(got.len(), 3 + 1 + 6);
    assert!(e.topic_infos().iter().all(|t| t.name != "elsewhere"));

    // `from` still applies to the topics without a resume entry.
    e.handle_subscribe(c, 2, "r/+", Start::Earliest, &resume[..1])
        .unwrap();
    let got = drain(&mut e, c);
    assert_eq!(offsets_of(&got, "r/a"), [7, 8, 9]);
    assert_eq!(offsets_of(&got, "r/b"), [4, 5, 6, 7, 8, 9]);
    assert_eq!(offsets_of(&got, "r/c"), [0, 1, 2]);
    assert_eq!(offsets_of(&got, "r/d"), [0, 1, 2]);
    assert!(got.iter().all(|g| matches!(g, Got::Msg { .. })));

    publish_n(&mut e, c, "r/c", 1);
    let got = drain(&mut e, c);
    assert_eq!(offsets(&got), [("r/c", 3), ("r/c", 3)]);
}

#[test]
fn after_seq_resumes_without_gap_or_duplicates() {
    let mut e = engine(limits());
    let p = open(&mut e, "pub");
    publish_n(&mut e, p, "s/a", 3);
    publish_n(&mut e, p, "s/b", 2);
    publish_n(&mut e, p, "x", 2);

    // The first session subscribes Latest and sees everything after its subscribe.
    let first = open(&mut e, "first");
    let seq = subscribe(&mut e, first, 1, "s/#", Start::Latest);
    assert_eq!(seq, 7, "the broker stored 7 messages before");
    publish_n(&mut e, p, "s/a", 2);
    publish_n(&mut e, p, "x", 1);
    let seen_before_drop = drain(&mut e, first);
    publish_n(&mut e, p, "s/b", 3);
    publish_n(&mut e, p, "s/c", 2); // created after the subscribe
    publish_n(&mut e, p, "s/a", 1);
    let mut first_saw = seen_before_drop.clone();
    first_saw.extend(drain(&mut e, first));
    e.handle_disconnect(first);

    // A later session resumes from the sequence number: the same messages, no more.
    let second = open(&mut e, "second");
    let seq2 = subscribe(&mut e, second, 1, "s/#", Start::AfterSeq(seq));
    assert_eq!(seq2, 7 + 2 + 1 + 3 + 2 + 1);
    let got = drain(&mut e, second);
    for t in ["s/a", "s/b", "s/c"] {
        assert_eq!(offsets_of(&got, t), offsets_of(&first_saw, t), "{t}");
    }
    assert_eq!(offsets_of(&got, "s/a"), [3, 4, 5]);
    assert_eq!(offsets_of(&got, "s/b"), [2, 3, 4]);
    assert_eq!(offsets_of(&got, "s/c"), [0, 1]);
    assert_eq!(got.len(), 8, "no lag, nothing else");
    assert_payloads(&got);

    // Resuming from "now" gives nothing old and everything new.
    let third = open(&mut e, "third");
    subscribe(&mut e, third, 1, "s/#", Start::AfterSeq(seq2));
    assert!(drain(&mut e, third).is_empty());
    publish_n(&mut e, p, "s/d", 1);
    assert_eq!(offsets(&drain(&mut e, third)), [("s/d", 0)]);
}

#[test]
fn after_seq_is_exact_while_the_ring_holds_an_older_message() {
    let mut e = engine(ring_of(3));
    let p = open(&mut e, "pub");
    publish_n(&mut e, p, "t", 4); // seqs 1..=4 at offsets 0..4, the ring keeps 1..4
    let c = open(&mut e, "c");
    let seq = subscribe(&mut e, c, 1, "t", Start::Latest);
    publish_n(&mut e, p, "t", 2); // offsets 4, 5; the ring keeps 3..6 (offset 3 is seq 4)
    let got = drain(&mut e, c);
    assert_eq!(offsets(&got), [("t", 4), ("t", 5)]);
    subscribe(&mut e, c, 2, "t", Start::AfterSeq(seq));
    assert_eq!(
        drain(&mut e, c),
        got.iter().map(|g| with_sub(g, 2)).collect::<Vec<_>>()
    );
}

fn with_sub(g: &Got, new: u32) -> Got {
    let mut g = g.clone();
    match &mut g {
        Got::Msg { sub, .. } | Got::Lag { sub, .. } | Got::Removed { sub, .. } => *sub = new,
    }
    g
}

#[test]
fn after_seq_past_a_wrapped_ring_reports_a_lower_bound() {
    // Documented on `Ring::after_seq`: when every message after `seq` that the ring held
    // has fallen out, the engine cannot tell how many there were and reports one.
    let mut e = engine(ring_of(3));
    let p = open(&mut e, "pub");
    publish_n(&mut e, p, "t", 2); // offsets 0, 1 (seqs 1, 2)
    let c = open(&mut e, "c");
    let seq = subscribe(&mut e, c, 1, "t", Start::Latest);
    assert_eq!(seq, 2);
    e.handle_unsubscribe(c, 1).unwrap();
    publish_n(&mut e, p, "t", 10); // offsets 2..12; the ring keeps 9..12

    subscribe(&mut e, c, 2, "t", Start::AfterSeq(seq));
    let got = drain(&mut e, c);
    let truly_missed = 9 - 2;
    assert_eq!(got[0], lag(2, "t", 1, 9), "a lower bound of {truly_missed}");
    assert_eq!(offsets_of(&got, "t"), [9, 10, 11]);

    // A topic created after `seq` is exact: its offsets start at 0.
    publish_n(&mut e, p, "u", 5); // the ring keeps 2..5
    subscribe(&mut e, c, 3, "u", Start::AfterSeq(seq));
    let got = drain(&mut e, c);
    assert_eq!(got[0], lag(3, "u", 2, 2));
    assert_eq!(offsets_of(&got, "u"), [2, 3, 4]);
}

// ---------------------------------------------------------------------------------------
// Limits and refusals
// ---------------------------------------------------------------------------------------

#[test]
fn a_payload_over_the_limit_is_refused() {
    let mut e = engine(Limits {
        max_payload: 100,
        ..limits()
    });
    let c = open(&mut e, "c");
    let r = e.handle_publish(c, 0, "t", None, &[0; 101]).unwrap_err();
    assert_eq!(r.code, ErrorCode::PAYLOAD_TOO_LARGE);
    assert!(r.message.contains("101"), "{}", r.message);
    assert!(r.message.contains("100"), "{}", r.message);
    assert!(r.message.contains("--max-payload"), "{}", r.message);
    assert_eq!(topic_count(&e), 0, "a refused publish creates no topic");
    assert_eq!(
        publish(&mut e, c, "t", &[0; 100]),
        0,
        "the limit is inclusive"
    );
    let s = e.stats();
    assert_eq!((s.publish_refused, s.published), (1, 1));
    assert_eq!(s.errors(ErrorCode::PAYLOAD_TOO_LARGE), 1);
    assert_eq!(conn_info(&e, c).msgs_in, 1);
}

#[test]
fn a_key_over_the_limit_is_refused() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    let long = vec![b'k'; MAX_KEY_LEN + 1];
    let r = e.handle_publish(c, 0, "t", Some(&long), b"x").unwrap_err();
    assert_eq!(r.code, ErrorCode::PAYLOAD_TOO_LARGE);
    assert!(r.message.contains("key"), "{}", r.message);
    assert!(
        r.message.contains(&(MAX_KEY_LEN + 1).to_string()),
        "{}",
        r.message
    );
    assert!(
        r.message.contains(&MAX_KEY_LEN.to_string()),
        "{}",
        r.message
    );
    assert_eq!(topic_count(&e), 0);
    let ok = vec![b'k'; MAX_KEY_LEN];
    assert_eq!(e.handle_publish(c, 0, "t", Some(&ok), b"x"), Ok(0));
    assert_eq!(e.stats().publish_refused, 1);
    assert_eq!(e.stats().errors(ErrorCode::PAYLOAD_TOO_LARGE), 1);
    assert_eq!(e.memory_used(), cost(MAX_KEY_LEN + 1), "the key counts too");
}

#[test]
fn bad_topics_are_refused_with_the_reason() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    let cases = [
        ("a/+", "wildcard"),
        ("a/#", "wildcard"),
        ("#", "wildcard"),
        ("$SYS/x", "reserved"),
        ("a//b", "empty level"),
        ("/a", "empty level"),
        ("a/", "empty level"),
        ("", "empty"),
        ("a\nb", "control"),
    ];
    for (i, (name, why)) in cases.iter().enumerate() {
        let r = e.handle_publish(c, 0, name, None, b"x").unwrap_err();
        assert_eq!(r.code, ErrorCode::BAD_TOPIC, "{name:?}");
        assert!(r.message.contains(&format!("{name:?}")), "{}", r.message);
        assert!(r.message.contains(why), "{name:?}: {}", r.message);
        assert_eq!(e.stats().publish_refused, i as u64 + 1);
    }
    assert_eq!(e.stats().errors(ErrorCode::BAD_TOPIC), cases.len() as u64);
    assert_eq!(topic_count(&e), 0);
    assert_eq!(e.stats().published, 0);
    // A good publish after a refused one still works, also to the cached last topic.
    publish(&mut e, c, "a", b"x");
    assert!(e.handle_publish(c, 0, "a/+", None, b"x").is_err());
    assert_eq!(publish(&mut e, c, "a", b"x"), 1);
}

#[test]
fn the_topic_limit_refuses_new_topics_only() {
    let mut e = engine(Limits {
        max_topics: 2,
        ..limits()
    });
    let c = open(&mut e, "c");
    subscribe(&mut e, c, 1, "#", Start::Latest);
    publish(&mut e, c, "a", b"x");
    publish(&mut e, c, "b", b"x");
    let r = e.handle_publish(c, 0, "c", None, b"x").unwrap_err();
    assert_eq!(r.code, ErrorCode::TOPIC_LIMIT);
    assert!(r.message.contains("--max-topics"), "{}", r.message);
    assert!(r.message.contains("\"c\""), "{}", r.message);
    assert!(r.message.contains('2'), "{}", r.message);
    assert_eq!(topic_count(&e), 2);
    assert_eq!(
        publish(&mut e, c, "a", b"x"),
        1,
        "existing topics still work"
    );
    assert_eq!(publish(&mut e, c, "b", b"x"), 1);
    let s = e.stats();
    assert_eq!((s.publish_refused, s.published), (1, 4));
    assert_eq!(s.errors(ErrorCode::TOPIC_LIMIT), 1);
    assert_eq!(offsets(&drain(&mut e, c)).len(), 4);
}

#[test]
fn the_subscription_limit_is_per_connection() {
    let mut e = engine(Limits {
        max_subscriptions: 2,
        ..limits()
    });
    let c = open(&mut e, "c");
    let d = open(&mut e, "d");
    subscribe(&mut e, c, 1, "a", Start::Latest);
    subscribe(&mut e, c, 2, "b", Start::Latest);
    let r = e
        .handle_subscribe(c, 3, "c", Start::Latest, &[])
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::SUBSCRIPTION_LIMIT);
    assert!(r.message.contains("--max-subscriptions"), "{}", r.message);
    assert!(r.message.contains('2'), "{}", r.message);
    assert_eq!(conn_info(&e, c).subscriptions, ["a", "b"]);
    subscribe(&mut e, d, 1, "a", Start::Latest); // another connection has its own
    e.handle_unsubscribe(c, 1).unwrap();
    subscribe(&mut e, c, 3, "c", Start::Latest);
    let s = e.stats();
    assert_eq!(s.subscribe_refused, 1);
    assert_eq!(s.errors(ErrorCode::SUBSCRIPTION_LIMIT), 1);
}

#[test]
fn a_duplicate_subscription_id_is_refused() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "t", 2);
    subscribe(&mut e, c, 4, "t", Start::Latest);
    let r = e
        .handle_subscribe(c, 4, "#", Start::Earliest, &[])
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::DUPLICATE_SUBSCRIPTION);
    assert!(r.message.contains('4'), "{}", r.message);
    assert!(r.message.contains("already"), "{}", r.message);
    assert_eq!(topic_info(&e, "t").subscribers, 1, "no cursor added");
    assert!(drain(&mut e, c).is_empty(), "nothing replayed");
    assert_eq!(e.stats().subscribe_refused, 1);
    assert_eq!(e.stats().errors(ErrorCode::DUPLICATE_SUBSCRIPTION), 1);
    // Ids are per connection.
    let d = open(&mut e, "d");
    subscribe(&mut e, d, 4, "t", Start::Latest);
}

#[test]
fn unsubscribing_an_unknown_id_is_refused() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    let d = open(&mut e, "d");
    subscribe(&mut e, d, 8, "t", Start::Latest);
    let r = e.handle_unsubscribe(c, 8).unwrap_err();
    assert_eq!(r.code, ErrorCode::UNKNOWN_SUBSCRIPTION);
    assert!(r.message.contains('8'), "{}", r.message);
    subscribe(&mut e, c, 8, "t", Start::Latest);
    e.handle_unsubscribe(c, 8).unwrap();
    let r = e.handle_unsubscribe(c, 8).unwrap_err();
    assert_eq!(r.code, ErrorCode::UNKNOWN_SUBSCRIPTION, "not twice");
    assert_eq!(e.stats().errors(ErrorCode::UNKNOWN_SUBSCRIPTION), 2);
    assert_eq!(
        conn_info(&e, d).subscriptions,
        ["t"],
        "the other is untouched"
    );
}

#[test]
fn bad_filters_are_refused_and_leave_no_trace() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    publish_n(&mut e, c, "a", 1);
    let bad = ["a/#/b", "a+", "a/b#", "#/a", "", "a//b", "/a", "a\0"];
    for (i, f) in bad.iter().enumerate() {
        let r = e
            .handle_subscribe(c, 1, f, Start::Earliest, &[])
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::BAD_FILTER, "{f:?}");
        assert!(r.message.contains(&format!("{f:?}")), "{}", r.message);
        assert_eq!(e.stats().subscribe_refused, i as u64 + 1);
    }
    assert_eq!(e.stats().errors(ErrorCode::BAD_FILTER), bad.len() as u64);
    assert!(conn_info(&e, c).subscriptions.is_empty());
    assert_eq!(topic_info(&e, "a").subscribers, 0);
    assert!(drain(&mut e, c).is_empty());
    // The id was not taken by the refused subscribes.
    subscribe(&mut e, c, 1, "a", Start::Earliest);
    assert_eq!(offsets(&drain(&mut e, c)), [("a", 0)]);
}

#[test]
fn a_subscribe_on_an_unknown_connection_is_refused() {
    let mut e = engine(limits());
    let c = open(&mut e, "c");
    e.handle_disconnect(c);
    let r = e
        .handle_subscribe(c, 1, "t", Start::Latest, &[])
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::PROTOCOL);
}

// ---------------------------------------------------------------------------------------
// Unsubscribe and disconnect
// ---------------------------------------------------------------------------------------

#[test]
fn unsubscribe_removes_cursors_and_what_they_had_queued() {
    let mut e = engine(limits());
    let p = open(&mut e, "pub");
    let c = open(&mut e, "c");
    publish_n(&mut e, p, "a", 1);
    publish_n(&mut e, p, "b", 1);
    subscribe(&mut e, c, 1, "#", Start::Latest);
    subscribe(&mut e, c, 2, "a", Start::Latest);
    assert_eq!(topic_info(&e, "a").subscribers, 2);
    assert_eq!(topic_info(&e, "b").subscribers, 1);

    publish_n(&mut e, p, "a", 3); // queued for both, not polled
    assert_eq!(wakeups(&mut e), [c]);
    e.handle_unsubscribe(c, 1).unwrap();
    assert_eq!(topic_info(&e, "a").subscribers, 1);
    assert_eq!(topic_info(&e, "b").subscribers, 0);
    assert_eq!(conn_info(&e, c).subscriptions, ["a"]);
    let got = drain(&mut e, c);
    assert!(
        got.iter().all(|g| matches!(g, Got::Msg { sub: 2, .. })),
        "{got:?}"
    );
    assert_eq!(got.len(), 3);

    e.handle_unsubscribe(c, 2).unwrap();
    publish_n(&mut e, p, "a", 2);
    publish_n(&mut e, p, "new", 2); // not attached to the gone `#` either
    assert!(wakeups(&mut e).is_empty());
    assert!(drain(&mut e, c).is_empty());
    assert_eq!(topic_info(&e, "a").subscribers, 0);
    assert_eq!(topic_info(&e, "new").subscribers, 0);
    assert_eq!(conn_info(&e, c).pending, 0);
}

#[test]
fn disconnect_removes_every_cursor() {
    let mut e = engine(limits());
    let p = open(&mut e, "pub");
    let c = open(&mut e, "c");
    let stay = open(&mut e, "stay");
    publish_n(&mut e, p, "a", 1);
    subscribe(&mut e, c, 1, "#", Start::Latest);
    subscribe(&mut e, c, 2, "a", Start::Latest);
    subscribe(&mut e, stay, 1, "a", Start::Latest);
    publish_n(&mut e, p, "a", 2); // queued, not polled
    assert_eq!(wakeups(&mut e), [c, stay]);
    drain(&mut e, stay);

    e.handle_disconnect(c);
    assert_eq!(e.connection_count(), 2);
    assert_eq!(e.stats().connections_closed, 1);
    assert_eq!(topic_info(&e, "a").subscribers, 1);
    assert!(drain(&mut e, c).is_empty());
    assert!(e.close_reason(c).is_none());
    publish_n(&mut e, p, "a", 1);
    publish_n(&mut e, p, "b", 1);
    assert_eq!(wakeups(&mut e), [stay], "the gone connection is not woken");
    assert_eq!(topic_info(&e, "b").subscribers, 0);
    assert_eq!(offsets(&drain(&mut e, stay)), [("a", 3)]);
    e.handle_disconnect(c); // twice is harmless
    assert_eq!(e.stats().connections_closed, 1);

    // Its id may be reused; the new connection inherits nothing.
    let n = open(&mut e, "new");
    assert!(conn_info(&e, n).subscriptions.is_empty());
    publish_n(&mut e, p, "a", 1);
    assert_eq!(wakeups(&mut e), [stay]);
    assert!(drain(&mut e, n).is_empty());
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

#[test]
fn the_handshake_deadline_is_exact() {
    let mut e = engine(limits()); // handshake 5 s
    let slow = e.handle_connect(1_000, None);
    let quick = e.handle_connect(1_000, None);
    e.handle_open(quick, "quick");
    assert_eq!(e.handle_timeouts(5_999), 0);
    assert!(e.close_reason(slow).is_none());
    assert!(wakeups(&mut e).is_empty());
    assert_eq!(e.handle_timeouts(6_000), 1);
    assert_eq!(e.close_reason(slow), Some(ErrorCode::HANDSHAKE_TIMEOUT));
    assert!(e.close_reason(quick).is_none());
    assert_eq!(wakeups(&mut e), [slow], "its task learns through a wakeup");
    assert_eq!(e.handle_timeouts(9_000), 0, "closed once");
    assert_eq!(e.stats().errors(ErrorCode::HANDSHAKE_TIMEOUT), 1);
    // Closing is the task's job: until it disconnects, the connection counts.
    assert_eq!(e.connection_count(), 2);
    e.handle_disconnect(slow);
    assert_eq!(e.connection_count(), 1);
}

#[test]
fn silence_for_three_keepalives_closes_an_open_connection() {
    let mut e = engine(Limits {
        keepalive_ms: 1_000,
        ..limits()
    });
    let silent = open(&mut e, "silent");
    let chatty = open(&mut e, "chatty");
    e.handle_received(silent, 500, 10); // silent from 500 on: closes at 3500
    let mut now = 0;
    for t in [700, 1_400, 2_100, 2_800, 3_499] {
        now = t;
        e.handle_received(chatty, now, 4);
        assert_eq!(e.handle_timeouts(now), 0, "at {now}");
    }
    assert!(e.close_reason(silent).is_none());
    assert_eq!(e.handle_timeouts(3_500), 1);
    assert_eq!(e.close_reason(silent), Some(ErrorCode::KEEPALIVE_TIMEOUT));
    assert_eq!(wakeups(&mut e), [silent]);
    // Activity keeps the other alive as long as it lasts.
    for _ in 0..100 {
        now += 2_999;
        assert_eq!(e.handle_timeouts(now), 0, "at {now}");
        e.handle_received(chatty, now, 1);
    }
    assert!(e.close_reason(chatty).is_none());
    assert_eq!(conn_info(&e, chatty).bytes_in, 5 * 4 + 100);
    assert_eq!(e.handle_timeouts(now + 3_000), 1);
    assert_eq!(e.close_reason(chatty), Some(ErrorCode::KEEPALIVE_TIMEOUT));
    assert_eq!(e.stats().errors(ErrorCode::KEEPALIVE_TIMEOUT), 2);
}

#[test]
fn shutdown_closes_everyone_once() {
    let mut e = engine(limits());
    let a = open(&mut e, "a");
    let b = e.handle_connect(0, None); // not through the handshake
    let timed_out = e.handle_connect(0, None);
    assert_eq!(e.handle_timeouts(5_000), 2);
    assert_eq!(e.close_reason(b), Some(ErrorCode::HANDSHAKE_TIMEOUT));
    assert_eq!(
        e.close_reason(timed_out),
        Some(ErrorCode::HANDSHAKE_TIMEOUT)
    );
    wakeups(&mut e);
    let fresh = e.handle_connect(5_000, None);

    e.handle_shutdown();
    assert_eq!(e.close_reason(a), Some(ErrorCode::SHUTTING_DOWN));
    assert_eq!(e.close_reason(fresh), Some(ErrorCode::SHUTTING_DOWN));
    assert_eq!(
        e.close_reason(b),
        Some(ErrorCode::HANDSHAKE_TIMEOUT),
        "first reason kept"
    );
    let mut woken = wakeups(&mut e);
    woken.sort();
    assert_eq!(woken, [a, fresh]);
    assert_eq!(e.stats().errors(ErrorCode::SHUTTING_DOWN), 2);
    e.handle_shutdown();
    assert!(
        wakeups(&mut e).is_empty(),
        "a second shutdown changes nothing"
    );
    assert_eq!(e.stats().errors(ErrorCode::SHUTTING_DOWN), 2);
    assert_eq!(
        e.handle_timeouts(1_000_000),
        0,
        "closed connections do not time out"
    );
}

#[test]
fn admit_refuses_at_the_connection_cap() {
    let mut e = engine(Limits {
        max_connections: 2,
        ..limits()
    });
    assert!(e.admit(None).is_ok());
    let a = e.handle_connect(0, None);
    assert!(e.admit(None).is_ok());
    let _b = e.handle_connect(0, None);
    let why = e.admit(None).unwrap_err();
    assert!(why.contains("--max-connections"), "{why}");
    assert!(e.admit(None).is_err());
    let s = e.stats();
    assert_eq!((s.connections_accepted, s.connections_refused), (2, 2));
    assert_eq!(s.errors(ErrorCode::CONNECTION_LIMIT), 2);
    e.handle_disconnect(a);
    assert!(e.admit(None).is_ok());
    assert_eq!(e.stats().connections_refused, 2);
}

#[test]
fn connections_in_their_handshake_are_capped_per_address_and_the_oldest_make_room() {
    let mut e = engine(Limits {
        max_connections: 10,
        max_pending: 4,
        max_pending_per_address: 2,
        ..limits()
    });
    let peer = |last: u8| -> std::net::SocketAddr { ([10, 0, 0, last], 1000).into() };
    let ip = |last: u8| Some(peer(last).ip());
    // One address may hold two unfinished handshakes, not three.
    assert!(e.admit(ip(1)).is_ok());
    let a1 = e.handle_connect(0, Some(peer(1)));
    assert!(e.admit(ip(1)).is_ok());
    let a2 = e.handle_connect(1, Some(peer(1)));
    let why = e.admit(ip(1)).unwrap_err();
    assert!(why.contains("--max-pending-per-address"), "{why}");
    // Another address is still welcome; at four pending in all, a newcomer closes the
    // oldest (it would have finished by now if it ever meant to).
    let b1 = e.handle_connect(2, Some(peer(2)));
    let _b2 = e.handle_connect(3, Some(peer(2)));
    assert!(e.admit(ip(3)).is_ok());
    assert_eq!(e.close_reason(a1), Some(ErrorCode::HANDSHAKE_TIMEOUT));
    assert_eq!(e.close_reason(a2), None);
    let _c1 = e.handle_connect(4, Some(peer(3)));
    assert!(e.admit(ip(4)).is_ok());
    assert_eq!(e.close_reason(a2), Some(ErrorCode::HANDSHAKE_TIMEOUT));
    assert_eq!(e.stats().connections_evicted, 2);
    // A finished handshake leaves the pending ones; the room left is for connections
    // that authenticate, up to --max-connections.
    e.handle_disconnect(a1);
    e.handle_disconnect(a2);
    e.handle_open(b1, "b1");
    for i in 0..6 {
        let c = e.handle_connect(10, Some(peer(20 + i)));
        e.handle_open(c, "open");
    }
    let _d = e.handle_connect(11, Some(peer(9)));
    let why = e.admit(ip(9)).unwrap_err();
    assert!(why.contains("--max-connections"), "{why}");
    // HTTP streams never count toward the TCP limits.
    let _h = e.handle_connect_http(0, None, "http", None);
    assert_eq!(e.tcp_connection_count(), 10);
    assert_eq!(e.connection_count(), 11);
    assert_eq!(e.stats().connections_refused, 2);
}

#[test]
fn a_frame_that_does_not_arrive_whole_in_time_closes_its_connection() {
    let mut e = engine(Limits {
        partial_timeout_ms: 1_000,
        ..limits()
    });
    let c = e.handle_connect(0, None);
    e.handle_open(c, "slow");
    e.handle_partial(c, Some(100));
    assert_eq!(e.handle_timeouts(1_099), 0);
    assert_eq!(e.handle_timeouts(1_100), 1);
    assert_eq!(e.close_reason(c), Some(ErrorCode::FRAME_TIMEOUT));
    // A frame that completed in time leaves nothing to time out.
    let d = e.handle_connect(0, None);
    e.handle_open(d, "fine");
    e.handle_partial(d, Some(100));
    e.handle_partial(d, None);
    assert_eq!(e.handle_timeouts(5_000), 0);
}

// ---------------------------------------------------------------------------------------
// A randomized comparison with a reference model
// ---------------------------------------------------------------------------------------

const TOPICS: [&str; 3] = ["t/a", "t/b", "u/c"];
const FILTERS: [&str; 6] = ["t/a", "t/+", "#", "u/#", "+/c", "v/#"];
const CONNS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        conn: usize,
        topic: usize,
        len: usize,
    },
    Subscribe {
        conn: usize,
        filter: usize,
        from: Start,
        resume: Option<(usize, u64)>,
    },
    Unsubscribe {
        conn: usize,
        pick: usize,
    },
    Poll {
        conn: usize,
        cap: usize,
    },
}

fn from_strategy() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Latest),
        Just(Start::Earliest),
        (0u64..30).prop_map(Start::Offset),
        (0u64..10).prop_map(Start::Last),
        // A sequence number: mapped onto the ones the broker actually gave out.
        (0u64..1_000).prop_map(Start::AfterSeq),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let conn = 0..CONNS;
    prop_oneof![
        6 => (conn.clone(), 0..TOPICS.len(), 0usize..=40)
            .prop_map(|(conn, topic, len)| Op::Publish { conn, topic, len }),
        2 => (
            conn.clone(),
            0..FILTERS.len(),
            from_strategy(),
            proptest::option::weighted(0.3, (0..TOPICS.len(), 0u64..30)),
        )
            .prop_map(|(conn, filter, from, resume)| Op::Subscribe {
                conn,
                filter,
                from,
                resume,
            }),
        1 => (conn.clone(), 0usize..8).prop_map(|(conn, pick)| Op::Unsubscribe { conn, pick }),
        4 => (conn, 1usize..12).prop_map(|(conn, cap)| Op::Poll { conn, cap }),
    ]
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (1usize..6, 0usize..4, 0usize..6).prop_map(|(n, extra_ring, extra_mem)| {
        let ring_bytes = cost(40) + extra_ring * cost(20);
        Limits {
            max_payload: 40,
            ring_messages: n,
            ring_bytes,
            memory: ring_bytes + extra_mem * cost(20),
            ..limits()
        }
    })
}

/// The reference: every message ever published, and which are still stored.
struct ModelTopic {
    /// `(broker seq, payload)` by offset.
    log: Vec<(u64, Vec<u8>)>,
    first: u64,
    bytes: usize,
}

impl ModelTopic {
    fn next(&self) -> u64 {
        self.log.len() as u64
    }
}

/// What one subscription has seen of one topic.
struct Track {
    /// The offset it must be handed next.
    expected: u64,
    /// Its start was past messages that had already fallen out of a wrapped ring, where
    /// `AfterSeq` reports a lower bound (see `Ring::after_seq`).
    lenient: bool,
}

struct ModelSub {
    id: u32,
    filter: &'static str,
    topics: HashMap<&'static str, Track>,
}

struct Model {
    limits: Limits,
    topics: HashMap<&'static str, ModelTopic>,
    seq: u64,
    subs: Vec<Vec<ModelSub>>,
    next_sub_id: Vec<u32>,
    seqs_given: Vec<u64>,
    delivered: u64,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

impl Model {
    fn publish(&mut self, topic: &'static str, payload: Vec<u8>) -> u64 {
        self.seq += 1;
        let (max_n, max_b) = (self.limits.ring_messages, self.limits.ring_bytes);
        let created = !self.topics.contains_key(topic);
        let t = self.topics.entry(topic).or_insert(ModelTopic {
            log: Vec::new(),
            first: 0,
            bytes: 0,
        });
        t.bytes += cost(payload.len());
        t.log.push((self.seq, payload));
        while (t.next() - t.first) as usize > max_n || t.bytes > max_b {
            t.bytes -= cost(t.log[t.first as usize].1.len());
            t.first += 1;
        }
        // The memory budget drops the globally oldest stored message first.
        while self.topics.values().map(|t| t.bytes).sum::<usize>() > self.limits.memory {
            let oldest = self
                .topics
                .values_mut()
                .filter(|t| t.first < t.next())
                .min_by_key(|t| t.log[t.first as usize].0)
                .unwrap();
            oldest.bytes -= cost(oldest.log[oldest.first as usize].1.len());
            oldest.first += 1;
        }
        if created {
            for s in self.subs.iter_mut().flatten() {
                if Filter::new(s.filter).unwrap().matches(topic) {
                    let track = Track {
                        expected: 0,
                        lenient: false,
                    };
                    s.topics.insert(topic, track);
                }
            }
        }
        self.topics[topic].next() - 1
    }

    /// Where a new subscription starts in `topic`: the offset it is owed first, and
    /// whether a lag notice before it may undercount.
    fn start(&self, topic: &str, from: Start, resume: Option<(&str, u64)>) -> Track {
        let t = &self.topics[topic];
        let strict = |expected| Track {
            expected,
            lenient: false,
        };
        if let Some((rt, next)) = resume {
            if rt == topic {
                return strict(next.min(t.next()));
            }
        }
        match from {
            Start::Latest => strict(t.next()),
            Start::Earliest => strict(t.first),
            Start::Offset(n) => strict(n.min(t.next())),
            Start::Last(n) => strict(t.next().saturating_sub(n).max(t.first)),
            Start::AfterSeq(s) => {
                let expected = t.log.partition_point(|&(seq, _)| seq <= s) as u64;
                // A topic created after `s` (expected == 0) starts at 0, exactly.
                Track {
                    expected,
                    lenient: 0 < expected && expected < t.first,
                }
            }
            Start::Time(_) | Start::Ago(_) => unreachable!("the model makes no time starts"),
        }
    }

    /// Whether connection `conn` is owed a delivery or a lag notice.
    fn pending(&self, conn: usize) -> bool {
        self.subs[conn].iter().any(|s| {
            s.topics
                .iter()
                .any(|(t, track)| track.expected < self.topics[t].next())
        })
    }

    fn check_delivery(&mut self, conn: usize, g: &Got) -> Result<(), String> {
        let (sub, topic) = match g {
            Got::Msg { sub, topic, .. } | Got::Lag { sub, topic, .. } => (*sub, topic.as_str()),
            Got::Removed { .. } => return Err(format!("conn {conn}: no topic is removed: {g:?}")),
        };
        let s = self.subs[conn].iter_mut().find(|s| s.id == sub);
        let Some(s) = s else {
            return Err(format!("conn {conn}: delivery for unknown sub: {g:?}"));
        };
        let Some(track) = s.topics.get_mut(topic) else {
            return Err(format!(
                "conn {conn}: sub {sub} does not watch {topic}: {g:?}"
            ));
        };
        let t = &self.topics[topic];
        match g {
            Got::Lag { missed, next, .. } => {
                ensure!(
                    *next > track.expected,
                    "lag backwards: {g:?}, expected {}",
                    track.expected
                );
                ensure!(
                    *next <= t.first,
                    "lag past the ring's start {}: {g:?}",
                    t.first
                );
                let gap = next - track.expected;
                if track.lenient {
                    ensure!(
                        (1..=gap).contains(missed),
                        "lag not within 1..={gap}: {g:?}"
                    );
                } else {
                    ensure!(*missed == gap, "lag of {gap} reported as {g:?}");
                }
                track.expected = *next;
            }
            Got::Msg {
                offset,
                payload,
                key,
                ..
            } => {
                ensure!(
                    *offset == track.expected,
                    "conn {conn} sub {sub}: expected offset {} got {g:?}",
                    track.expected
                );
                ensure!(*offset >= t.first, "delivered an evicted message: {g:?}");
                ensure!(
                    *payload == t.log[*offset as usize].1,
                    "payload mismatch at {topic}:{offset}"
                );
                ensure!(key.is_none(), "key appeared: {g:?}");
                track.expected += 1;
                self.delivered += 1;
            }
            Got::Removed { .. } => unreachable!("refused above"),
        }
        track.lenient = false;
        Ok(())
    }
}

fn run_model(limits: Limits, ops: &[Op]) -> Result<(), String> {
    let mut e = Engine::new(limits.clone(), 1);
    let conns: Vec<ConnId> = (0..CONNS).map(|i| open(&mut e, &format!("c{i}"))).collect();
    let mut m = Model {
        limits: limits.clone(),
        topics: HashMap::new(),
        seq: 0,
        subs: (0..CONNS).map(|_| Vec::new()).collect(),
        next_sub_id: vec![1; CONNS],
        seqs_given: vec![0],
        delivered: 0,
    };
    let mut woken = Vec::new();
    let mut alert = [false; CONNS];
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Publish { conn, topic, len } => {
                let topic = TOPICS[topic];
                let mut payload = (m.seq + 1).to_le_bytes().to_vec();
                payload.resize(len, b'.');
                let want = m.publish(topic, payload.clone());
                let got = e.handle_publish(conns[conn], step as u64, topic, None, &payload);
                ensure!(
                    got == Ok(want),
                    "step {step}: publish {got:?}, model {want}"
                );
                ensure!(e.memory_used() <= limits.memory, "step {step}: over budget");
            }
            Op::Subscribe {
                conn,
                filter,
                from,
                resume,
            } => {
                let from = match from {
                    // Mostly a sequence number the broker gave out, sometimes any.
                    Start::AfterSeq(i) if i % 2 == 0 => {
                        Start::AfterSeq(m.seqs_given[(i / 2) as usize % m.seqs_given.len()])
                    }
                    Start::AfterSeq(i) => Start::AfterSeq(i % (m.seq + 1)),
                    f => f,
                };
                let resume = resume.map(|(t, next)| (TOPICS[t], next));
                let id = m.next_sub_id[conn];
                m.next_sub_id[conn] += 1;
                let filter = FILTERS[filter];
                let r: Vec<Resume<'_>> = resume
                    .iter()
                    .map(|&(topic, next)| Resume { topic, next })
                    .collect();
                let seq = e
                    .handle_subscribe(conns[conn], id, filter, from, &r)
                    .map_err(|r| format!("step {step}: subscribe refused: {r:?}"))?;
                ensure!(
                    seq == m.seq,
                    "step {step}: subscribe seq {seq}, model {}",
                    m.seq
                );
                m.seqs_given.push(seq);
                let f = Filter::new(filter).unwrap();
                let mut topics = HashMap::new();
                for &t in TOPICS.iter().filter(|t| m.topics.contains_key(**t)) {
                    if f.matches(t) {
                        topics.insert(t, m.start(t, from, resume));
                    }
                }
                m.subs[conn].push(ModelSub { id, filter, topics });
            }
            Op::Unsubscribe { conn, pick } => {
                if m.subs[conn].is_empty() {
                    continue;
                }
                let n = m.subs[conn].len();
                let s = m.subs[conn].remove(pick % n);
                e.handle_unsubscribe(conns[conn], s.id)
                    .map_err(|r| format!("step {step}: unsubscribe refused: {r:?}"))?;
            }
            Op::Poll { conn, cap } => {
                let (got, more) = poll_k(&mut e, conns[conn], cap);
                ensure!(got.len() <= cap, "step {step}: sink overfilled");
                ensure!(
                    got.len() == cap || !more,
                    "step {step}: the sink had room yet more is ready"
                );
                for g in &got {
                    m.check_delivery(conn, g)
                        .map_err(|s| format!("step {step}: {s}"))?;
                }
                alert[conn] = more;
            }
        }
        e.take_wakeups(&mut woken);
        for (n, c) in woken.iter().enumerate() {
            let i = conns.iter().position(|x| x == c).unwrap();
            ensure!(
                !m.subs[i].is_empty(),
                "step {step}: woke {i} without subscriptions"
            );
            ensure!(
                !woken[..n].contains(c),
                "step {step}: woke {i} twice: {woken:?}"
            );
            alert[i] = true;
        }
        // No lost wakeups: a connection owed something was woken since its last poll, or
        // that poll said more was ready.
        for (i, owed) in alert.iter().enumerate() {
            ensure!(
                *owed || !m.pending(i),
                "step {step} ({op:?}): conn {i} has something pending but was not woken"
            );
        }
    }

    // Catch up: everything still stored arrives, after a lag for what fell out.
    for (i, &c) in conns.iter().enumerate() {
        for g in drain(&mut e, c) {
            m.check_delivery(i, &g)
                .map_err(|s| format!("final drain: {s}"))?;
        }
        for s in &m.subs[i] {
            for (topic, track) in &s.topics {
                let next = m.topics[topic].next();
                ensure!(
                    track.expected == next,
                    "conn {i} sub {} on {topic}: stopped at {}, next is {next}",
                    s.id,
                    track.expected
                );
            }
        }
    }

    // The engine's books agree with the model and with themselves.
    for t in e.topic_infos() {
        let mt = &m.topics[t.name.as_str()];
        ensure!(
            (t.first, t.next, t.bytes) == (mt.first, mt.next(), mt.bytes),
            "{t:?} vs model first {} next {} bytes {}",
            mt.first,
            mt.next(),
            mt.bytes
        );
        let watchers: usize = m
            .subs
            .iter()
            .flatten()
            .filter(|s| s.topics.contains_key(t.name.as_str()))
            .count();
        ensure!(
            t.subscribers == watchers,
            "{t:?}: model has {watchers} watchers"
        );
    }
    ensure!(e.topic_infos().len() == m.topics.len(), "topic count");
    let sum_bytes: usize = e.topic_infos().iter().map(|t| t.bytes).sum();
    ensure!(
        e.memory_used() == sum_bytes,
        "memory_used {} vs {sum_bytes}",
        e.memory_used()
    );
    let s = e.stats().clone();
    ensure!(
        s.delivered == m.delivered,
        "delivered {} vs {}",
        s.delivered,
        m.delivered
    );
    let by_topic: u64 = e.topic_infos().iter().map(|t| t.lag_missed).sum();
    let by_conn: u64 = e.conn_infos().iter().map(|c| c.lag_missed).sum();
    ensure!(
        s.lag_missed == by_topic && s.lag_missed == by_conn,
        "lag_missed {} / topics {by_topic} / conns {by_conn}",
        s.lag_missed
    );
    let evicted: u64 = e.topic_infos().iter().map(|t| t.evicted).sum();
    ensure!(
        s.evicted_ring + s.evicted_memory == evicted,
        "evictions {s:?} vs {evicted}"
    );
    ensure!(
        s.published == evicted + e.stored_messages() as u64,
        "stored count"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Keep failures out of the source tree; the seed is printed on failure.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_the_reference_model(
        limits in limits_strategy(),
        ops in proptest::collection::vec(op_strategy(), 1..120),
    ) {
        run_model(limits, &ops).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------
// The rate history of `/api/stats`.

#[test]
fn rate_history_keeps_a_point_a_second_for_the_last_minute() {
    let mut e = engine(limits());
    let c = open(&mut e, "p");
    // From the broker's start (0 ms): these are in the first point.
    publish_n(&mut e, c, "a", 5);
    e.roll_rate_history(500);
    assert!(e.rate_history().is_empty(), "half a second is not a point");
    e.roll_rate_history(1_000);
    assert_eq!(e.rate_history().points().collect::<Vec<_>>(), [(5.0, 0.0)]);
    assert_eq!(e.rate_history().end_ms(), Some(1_000));
    // A late sweep: 6 messages over 2 s are 3 a second.
    publish_n(&mut e, c, "a", 6);
    e.roll_rate_history(3_000);
    assert_eq!(
        e.rate_history().points().collect::<Vec<_>>(),
        [(5.0, 0.0), (3.0, 0.0)]
    );
    // Past a minute the oldest go: 70 more seconds, one message in each.
    for s in 0..70u64 {
        publish(&mut e, c, "a", b"x");
        e.roll_rate_history(4_000 + s * 1_000);
    }
    let h = e.rate_history();
    assert_eq!(h.len(), crate::engine::HISTORY_SLOTS);
    assert!(h.points().all(|p| p == (1.0, 0.0)), "{h:?}");
    assert_eq!(h.end_ms(), Some(73_000));
}
