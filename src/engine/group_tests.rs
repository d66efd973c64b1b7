//! Consumer-group scenarios on a virtual clock: every time is an argument, no sockets.

#![allow(clippy::unwrap_used)] // Tests: a panic with its location is the report.

use std::collections::{BTreeSet, HashMap};

use mote_sdk::wire::GroupSettings;
use mote_sdk::{ErrorCode, Start};

use super::{ConnId, Delivery, Engine, GroupConfig, GroupInfo};
use crate::limits::Limits;

/// A group delivery copied out of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Got {
    Msg {
        sub: u32,
        tag: u64,
        topic: String,
        offset: u64,
        attempt: u32,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Plain {
        topic: String,
        offset: u64,
    },
    Lag {
        topic: String,
        missed: u64,
        next: u64,
    },
    Gone {
        sub: u32,
        group: String,
    },
}

impl Got {
    pub(super) fn tag(&self) -> u64 {
        match self {
            Got::Msg { tag, .. } => *tag,
            other => panic!("not a group message: {other:?}"),
        }
    }
    pub(super) fn offset(&self) -> u64 {
        match self {
            Got::Msg { offset, .. } | Got::Plain { offset, .. } => *offset,
            other => panic!("not a message: {other:?}"),
        }
    }
    pub(super) fn attempt(&self) -> u32 {
        match self {
            Got::Msg { attempt, .. } => *attempt,
            other => panic!("not a group message: {other:?}"),
        }
    }
}

pub(super) fn own(d: Delivery<'_>) -> Got {
    match d {
        Delivery::GroupMessage {
            sub,
            tag,
            topic,
            offset,
            attempt,
            key,
            payload,
            ..
        } => Got::Msg {
            sub,
            tag,
            topic: topic.into(),
            offset,
            attempt,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        },
        Delivery::Message { topic, offset, .. } => Got::Plain {
            topic: topic.into(),
            offset,
        },
        Delivery::Lag {
            topic,
            missed,
            next,
            ..
        } => Got::Lag {
            topic: topic.into(),
            missed,
            next,
        },
        Delivery::GroupGone { sub, group } => Got::Gone {
            sub,
            group: group.into(),
        },
        Delivery::Removed { .. } => panic!("these scenarios remove no topic"),
        Delivery::Asked { .. } => panic!("these scenarios make no request"),
    }
}

/// Keepalive long enough that the virtual clock never trips it.
pub(super) fn engine() -> Engine {
    let l = Limits {
        keepalive_ms: 1 << 30,
        ..Limits::default()
    };
    Engine::new(l, 7)
}

pub(super) fn open(e: &mut Engine, name: &str) -> ConnId {
    let c = e.handle_connect(0, None);
    e.handle_open(c, name);
    c
}

pub(super) fn settings(
    ack_timeout_ms: u32,
    max_deliveries: u32,
    prefetch: u32,
    durable: bool,
) -> GroupSettings {
    GroupSettings {
        ack_timeout_ms,
        max_deliveries,
        prefetch,
        durable,
    }
}

pub(super) fn join(
    e: &mut Engine,
    c: ConnId,
    sub: u32,
    filter: &str,
    group: &str,
    s: GroupSettings,
) {
    e.handle_subscribe_group(c, sub, filter, group, Start::Earliest, s)
        .unwrap_or_else(|r| panic!("joining {group:?} refused: {r:?}"));
}

/// Publishes `n` messages to `topic` whose payloads are their index; returns offsets.
pub(super) fn publish_n(e: &mut Engine, c: ConnId, topic: &str, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| {
            e.handle_publish(c, 1_000, topic, None, i.to_string().as_bytes())
                .unwrap()
        })
        .collect()
}

pub(super) fn drain(e: &mut Engine, c: ConnId) -> Vec<Got> {
    let mut out = Vec::new();
    let more = e.poll_deliveries(c, |d| {
        out.push(own(d));
        true
    });
    assert!(!more, "a sink with room left nothing ready");
    out
}

/// Time passes to `now_ms` for the broker (its timer fires).
pub(super) fn tick(e: &mut Engine, now_ms: u64) {
    e.handle_timeouts(now_ms);
}

pub(super) fn ack_all(e: &mut Engine, c: ConnId, got: &[Got]) {
    for g in got {
        if let Got::Msg { sub, tag, .. } = g {
            e.handle_ack(c, *sub, *tag).unwrap();
        }
    }
}

pub(super) fn info(e: &Engine, group: &str) -> GroupInfo {
    e.group_infos()
        .into_iter()
        .find(|g| g.name == group)
        .unwrap_or_else(|| panic!("no group {group:?}"))
}

#[test]
fn three_members_share_every_message_once_and_fairly() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let members: Vec<ConnId> = (0..3).map(|i| open(&mut e, &format!("w{i}"))).collect();
    for &m in &members {
        join(&mut e, m, 1, "jobs/#", "workers", GroupSettings::default());
    }
    // A plain listener and a second group see every message too.
    let listener = open(&mut e, "listener");
    e.handle_subscribe(listener, 9, "jobs/#", Start::Earliest, &[])
        .unwrap();
    let audit = open(&mut e, "audit");
    join(
        &mut e,
        audit,
        1,
        "jobs/#",
        "audit",
        GroupSettings::default(),
    );

    let mut acked: HashMap<u64, usize> = HashMap::new();
    let mut per_member = [0usize; 3];
    let (mut audited, mut heard) = (BTreeSet::new(), 0usize);
    for round in 0..100 {
        publish_n(&mut e, p, "jobs/a", 100);
        for (i, &m) in members.iter().enumerate() {
            let got = drain(&mut e, m);
            for g in &got {
                *acked.entry(g.offset()).or_default() += 1;
            }
            per_member[i] += got.len();
            ack_all(&mut e, m, &got);
        }
        let got = drain(&mut e, audit);
        for g in &got {
            assert!(
                audited.insert(g.offset()),
                "round {round}: audit got {g:?} twice"
            );
        }
        ack_all(&mut e, audit, &got);
        heard += drain(&mut e, listener).len();
    }
    // What is left after the last round.
    for (i, &m) in members.iter().enumerate() {
        let got = drain(&mut e, m);
        for g in &got {
            *acked.entry(g.offset()).or_default() += 1;
        }
        per_member[i] += got.len();
        ack_all(&mut e, m, &got);
    }
    // The audit group's one member holds 64 at a time: it is behind by now.
    loop {
        let got = drain(&mut e, audit);
        if got.is_empty() {
            break;
        }
        for g in &got {
            assert!(audited.insert(g.offset()), "audit got {g:?} twice");
        }
        ack_all(&mut e, audit, &got);
    }

    assert_eq!(acked.len(), 10_000, "every message reached the group");
    assert!(
        acked.values().all(|&n| n == 1),
        "each message went to exactly one member"
    );
    assert_eq!(
        audited.len(),
        10_000,
        "the second group got every message once"
    );
    assert_eq!(heard, 10_000, "the listener saw every message");
    let (min, max) = (
        per_member.iter().min().unwrap(),
        per_member.iter().max().unwrap(),
    );
    assert!(*max <= 2 * *min, "unfair shares: {per_member:?}");
    let i = info(&e, "workers");
    assert_eq!((i.members, i.in_flight, i.backlog), (3, 0, 0));
    assert_eq!(i.counters.delivered, 10_000);
    assert_eq!(i.counters.acked, 10_000);
    assert_eq!(i.counters.redelivered, 0);
}

#[test]
fn a_member_that_dies_unacked_hands_everything_to_the_others() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    let b = open(&mut e, "b");
    let s = settings(60_000, 5, 10, false);
    join(&mut e, a, 1, "jobs", "workers", s);
    join(&mut e, b, 1, "jobs", "workers", s);
    publish_n(&mut e, p, "jobs", 100);

    let took = drain(&mut e, a);
    assert_eq!(took.len(), 10, "a holds its prefetch");
    e.handle_disconnect(a);

    let mut acked: HashMap<u64, u32> = HashMap::new();
    let mut redelivered = BTreeSet::new();
    loop {
        let got = drain(&mut e, b);
        if got.is_empty() {
            break;
        }
        for g in &got {
            *acked.entry(g.offset()).or_default() += 1;
            if g.attempt() > 1 {
                redelivered.insert(g.offset());
            }
        }
        ack_all(&mut e, b, &got);
    }
    assert_eq!(acked.len(), 100, "nothing lost");
    assert!(acked.values().all(|&n| n == 1), "b got each message once");
    let a_had: BTreeSet<u64> = took.iter().map(Got::offset).collect();
    assert_eq!(redelivered, a_had, "exactly what a held came again");
    let i = info(&e, "workers");
    assert_eq!(i.counters.redelivered, 10);
    assert_eq!(i.counters.acked, 100);
}

#[test]
fn what_a_dead_member_never_received_is_not_counted_as_a_delivery() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    let b = open(&mut e, "b");
    let s = settings(60_000, 1, 4, false);
    join(&mut e, a, 1, "jobs", "workers", s);
    publish_n(&mut e, p, "jobs", 4);
    // Assigned to a, but a's connection never took them; then a dies.
    e.handle_disconnect(a);
    join(&mut e, b, 1, "jobs", "workers", s);
    let got = drain(&mut e, b);
    assert_eq!(
        got.iter().map(Got::offset).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    // max_deliveries 1: had a's deliveries counted, all four would be dead letters.
    assert!(got.iter().all(|g| g.attempt() == 1), "{got:?}");
    assert_eq!(info(&e, "workers").counters.dead_lettered, 0);
}

#[test]
fn an_unacked_message_comes_back_after_the_ack_timeout() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(5_000, 5, 10, false),
    );
    e.handle_received(a, 1_000, 0);
    publish_n(&mut e, p, "jobs", 1);
    let first = drain(&mut e, a);
    assert_eq!(first.len(), 1);
    // Whole milliseconds: the timeout is waited in full, so the message may come 1 ms late
    // but never early.
    tick(&mut e, 6_000);
    assert!(
        drain(&mut e, a).is_empty(),
        "redelivered before its ack timeout"
    );
    tick(&mut e, 6_001);
    let again = drain(&mut e, a);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].offset(), again[0].attempt()), (0, 2));
    assert_ne!(again[0].tag(), first[0].tag(), "a redelivery has a new tag");
    // The old tag is settled: acking it is an error the member can read.
    let err = e.handle_ack(a, 1, first[0].tag()).unwrap_err();
    assert_eq!(err.code, ErrorCode::UNKNOWN_DELIVERY);
    assert!(err.message.contains("ack timeout"), "{}", err.message);
    e.handle_ack(a, 1, again[0].tag()).unwrap();
    let err = e.handle_ack(a, 1, again[0].tag()).unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::UNKNOWN_DELIVERY,
        "a second ack is refused"
    );
    assert_eq!(e.stats().errors(ErrorCode::UNKNOWN_DELIVERY), 2);
}

#[test]
fn a_nack_with_delay_is_not_redelivered_before_the_delay() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 5, 10, false),
    );
    publish_n(&mut e, p, "jobs", 1);
    let got = drain(&mut e, a);
    e.handle_received(a, 10_000, 0);
    let armed = e.arm_timer(10_000, 1_000);
    assert_eq!(armed, 11_000, "no group deadline sooner than the sweep");
    e.handle_nack(a, 1, got[0].tag(), 500).unwrap();
    assert!(
        e.take_timer_moved(),
        "the nack's deadline is sooner than the armed timer"
    );
    assert_eq!(e.arm_timer(10_000, 1_000), 10_501);
    assert!(drain(&mut e, a).is_empty(), "redelivered at once");
    tick(&mut e, 10_500);
    assert!(
        drain(&mut e, a).is_empty(),
        "redelivered before the whole delay"
    );
    tick(&mut e, 10_501);
    let again = drain(&mut e, a);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].offset(), again[0].attempt()), (0, 2));
}

#[test]
fn a_nack_without_delay_comes_back_at_once_before_newer_messages_wait() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 5, 1, false),
    );
    publish_n(&mut e, p, "jobs", 2);
    let got = drain(&mut e, a);
    assert_eq!(got.len(), 1, "prefetch 1");
    e.handle_nack(a, 1, got[0].tag(), 0).unwrap();
    let again = drain(&mut e, a);
    assert_eq!((again[0].offset(), again[0].attempt()), (0, 2));
}

#[test]
fn the_redelivery_limit_sends_the_message_to_the_dead_letter_topic() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    let watcher = open(&mut e, "watcher");
    e.handle_subscribe(watcher, 1, "$dead/#", Start::Earliest, &[])
        .unwrap();
    join(
        &mut e,
        a,
        1,
        "jobs/+",
        "workers",
        settings(60_000, 3, 10, false),
    );
    e.handle_publish(p, 1_234, "jobs/x", None, b"first")
        .unwrap();
    let off = e
        .handle_publish(p, 1_235, "jobs/x", Some(b"k1"), b"poison")
        .unwrap();
    let first = drain(&mut e, a);
    e.handle_ack(a, 1, first[0].tag()).unwrap();
    let mut tag = first[1].tag();
    for attempt in 1..=3 {
        e.handle_nack(a, 1, tag, 0).unwrap();
        let got = drain(&mut e, a);
        if attempt == 3 {
            assert!(got.is_empty(), "delivered a 4th time: {got:?}");
        } else {
            assert_eq!(got[0].attempt(), attempt + 1);
            tag = got[0].tag();
        }
    }
    let mut dead = Vec::new();
    e.poll_deliveries(watcher, |d| {
        if let Delivery::Message {
            topic,
            key,
            payload,
            time_ms,
            ..
        } = d
        {
            dead.push((
                topic.to_string(),
                key.map(<[u8]>::to_vec),
                payload.to_vec(),
                time_ms,
            ));
        }
        true
    });
    assert_eq!(
        dead,
        [(
            "$dead/workers/jobs/x".to_string(),
            Some(format!("{off}/k1").into_bytes()),
            b"poison".to_vec(),
            1_235
        )],
        "the dead letter keeps topic, offset, key, payload and time"
    );
    let i = info(&e, "workers");
    assert_eq!(i.counters.dead_lettered, 1);
    assert_eq!(i.counters.redelivered, 2);
}

#[test]
fn a_durable_group_without_members_keeps_its_place() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", settings(0, 0, 0, true));
    e.handle_disconnect(a);
    assert_eq!(
        info(&e, "workers").members,
        0,
        "the group outlives its member"
    );
    publish_n(&mut e, p, "jobs", 1_000);
    assert_eq!(info(&e, "workers").backlog, 1_000);

    let b = open(&mut e, "b");
    // Joining an existing group: its own position, not `from`.
    e.handle_subscribe_group(
        b,
        3,
        "jobs",
        "workers",
        Start::Latest,
        GroupSettings::default(),
    )
    .unwrap();
    let mut order = Vec::new();
    loop {
        let got = drain(&mut e, b);
        if got.is_empty() {
            break;
        }
        order.extend(got.iter().map(Got::offset));
        ack_all(&mut e, b, &got);
    }
    assert_eq!(order, (0..1_000).collect::<Vec<_>>(), "all 1000, in order");
}

#[test]
fn a_durable_group_is_told_what_fell_out_of_the_ring() {
    let l = Limits {
        keepalive_ms: 1 << 30,
        ring_messages: 100,
        ..Limits::default()
    };
    let mut e = Engine::new(l, 7);
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", settings(0, 0, 1_000, true));
    e.handle_disconnect(a);
    publish_n(&mut e, p, "jobs", 250);
    let b = open(&mut e, "b");
    join(&mut e, b, 1, "jobs", "workers", GroupSettings::default());
    let got = drain(&mut e, b);
    assert_eq!(
        got[0],
        Got::Lag {
            topic: "jobs".into(),
            missed: 150,
            next: 150
        }
    );
    assert_eq!(
        got[1..].iter().map(Got::offset).collect::<Vec<_>>(),
        (150..250).collect::<Vec<_>>()
    );
    assert_eq!(info(&e, "workers").counters.lag_missed, 150);
    assert!(e.stats().lag_missed >= 150);
}

/// A group the config opts out of durability (`[groups.NAME] durable = false`).
pub(super) fn not_durable(e: &mut Engine, name: &str) {
    e.configure_group(&GroupConfig {
        name: name.into(),
        settings: GroupSettings::default(),
        filter: None,
        durable: Some(false),
        expiry_ms: None,
    })
    .unwrap();
}

#[test]
fn a_group_that_is_not_durable_goes_with_its_last_member() {
    let mut e = engine();
    not_durable(&mut e, "workers");
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", GroupSettings::default());
    publish_n(&mut e, p, "jobs", 5);
    e.handle_unsubscribe(a, 1).unwrap();
    assert!(e.group_infos().is_empty());
    publish_n(&mut e, p, "jobs", 5);
    let b = open(&mut e, "b");
    e.handle_subscribe_group(
        b,
        1,
        "jobs",
        "workers",
        Start::Latest,
        GroupSettings::default(),
    )
    .unwrap();
    assert!(drain(&mut e, b).is_empty(), "a new group at latest");
    publish_n(&mut e, p, "jobs", 1);
    assert_eq!(
        drain(&mut e, b).iter().map(Got::offset).collect::<Vec<_>>(),
        [10]
    );
}

#[test]
fn prefetch_bounds_what_a_member_holds() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", settings(0, 0, 5, false));
    publish_n(&mut e, p, "jobs", 20);
    let got = drain(&mut e, a);
    assert_eq!(got.len(), 5);
    assert_eq!(info(&e, "workers").in_flight, 5);
    assert_eq!(info(&e, "workers").backlog, 15);
    e.handle_ack(a, 1, got[0].tag()).unwrap();
    let more = drain(&mut e, a);
    assert_eq!(
        more.iter().map(Got::offset).collect::<Vec<_>>(),
        [5],
        "one ack, one more"
    );
}

#[test]
fn a_group_spans_the_topics_its_filter_matches_including_new_ones() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    publish_n(&mut e, p, "jobs/a", 2);
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs/+", "workers", GroupSettings::default());
    publish_n(&mut e, p, "jobs/b", 2);
    let got = drain(&mut e, a);
    let mut seen: Vec<(String, u64)> = got
        .iter()
        .map(|g| match g {
            Got::Msg { topic, offset, .. } => (topic.clone(), *offset),
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("jobs/a".into(), 0),
            ("jobs/a".into(), 1),
            ("jobs/b".into(), 0),
            ("jobs/b".into(), 1)
        ]
    );
}

#[test]
fn settings_come_from_the_first_member_unless_the_config_sets_them() {
    let mut e = engine();
    e.set_group_settings("configured", settings(1_000, 2, 3, true));
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "x",
        "configured",
        settings(9_000, 9, 9, false),
    );
    join(&mut e, a, 2, "x", "asked", settings(9_000, 9, 9, false));
    let b = open(&mut e, "b");
    join(&mut e, b, 1, "x", "asked", settings(1, 1, 1, true));
    let c = info(&e, "configured").settings;
    assert_eq!(
        (c.ack_timeout_ms, c.max_deliveries, c.prefetch, c.durable),
        (1_000, 2, 3, true)
    );
    let s = info(&e, "asked").settings;
    assert_eq!(
        (s.ack_timeout_ms, s.max_deliveries, s.prefetch, s.durable),
        (9_000, 9, 9, true),
        "a later member does not change them; durable: false is the broker's default"
    );
    join(&mut e, a, 3, "x", "defaults", GroupSettings::default());
    let d = info(&e, "defaults").settings;
    assert_eq!(
        (d.ack_timeout_ms, d.max_deliveries, d.prefetch, d.durable),
        (30_000, 5, 64, true)
    );
}

#[test]
fn bad_names_and_mismatched_filters_are_refused_with_the_reason() {
    let mut e = engine();
    let a = open(&mut e, "a");
    for bad in ["", "a/b", "w+", "#", "$sys", "x\n", &"n".repeat(65)] {
        let r = e
            .handle_subscribe_group(a, 1, "jobs", bad, Start::Latest, GroupSettings::default())
            .unwrap_err();
        assert_eq!(r.code, ErrorCode::BAD_GROUP, "{bad:?}");
        assert!(r.message.contains("bad group name"), "{}", r.message);
    }
    join(&mut e, a, 1, "jobs", "workers", GroupSettings::default());
    let r = e
        .handle_subscribe_group(
            a,
            2,
            "other",
            "workers",
            Start::Latest,
            GroupSettings::default(),
        )
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::BAD_GROUP);
    assert!(r.message.contains("reads jobs"), "{}", r.message);
    let r = e
        .handle_subscribe_group(
            a,
            1,
            "jobs",
            "workers",
            Start::Latest,
            GroupSettings::default(),
        )
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::DUPLICATE_SUBSCRIPTION);
    let r = e.handle_ack(a, 7, 0).unwrap_err();
    assert_eq!(
        r.code,
        ErrorCode::UNKNOWN_DELIVERY,
        "ack on a subscription that is no member"
    );
    assert_eq!(e.stats().errors(ErrorCode::BAD_GROUP), 8);
}

#[test]
fn a_slow_member_connection_keeps_assigned_messages_for_later_polls() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", settings(0, 0, 10, false));
    publish_n(&mut e, p, "jobs", 10);
    let mut first = Vec::new();
    let more = e.poll_deliveries(a, |d| {
        first.push(own(d));
        first.len() < 4
    });
    assert!(more, "the outbox still holds messages");
    let rest = drain(&mut e, a);
    let all: Vec<u64> = first.iter().chain(&rest).map(Got::offset).collect();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[test]
fn a_publish_waiting_for_delivery_is_answered_by_the_ack() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", GroupSettings::default());
    let off = e.handle_publish(p, 1_000, "jobs", None, b"x").unwrap();
    let id = e.handle_wait_delivered(p, "jobs", off).unwrap();
    let got = drain(&mut e, a);
    let mut done = Vec::new();
    e.take_delivered(&mut done);
    assert!(done.is_empty(), "handed to a member is not done yet");
    e.handle_ack(a, 1, got[0].tag()).unwrap();
    e.take_delivered(&mut done);
    assert_eq!(done, [id], "the ack answers the waiting publish");
}

#[test]
fn stats_of_a_member_that_joined_before_any_topic() {
    let mut e = engine();
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs/#", "workers", settings(0, 0, 2, false));
    // No topic exists yet: the member's outbox has no topic to read.
    let info = e.conn_infos().into_iter().find(|c| c.id == a).unwrap();
    assert_eq!(info.subscriptions, ["jobs/# (group workers)"]);
    assert_eq!(info.pending, 0);
    let p = open(&mut e, "producer");
    publish_n(&mut e, p, "jobs/a", 5);
    let info = e.conn_infos().into_iter().find(|c| c.id == a).unwrap();
    assert_eq!(info.pending, 2, "assigned (prefetch 2), not sent yet");
    assert_eq!(drain(&mut e, a).len(), 2);
    let info = e.conn_infos().into_iter().find(|c| c.id == a).unwrap();
    assert_eq!(info.pending, 0);
    assert_eq!(info.subscriptions.len(), 1);
}

/// Runs the broker's timer loop as the server does (arm, sleep until then, sweep) from
/// `from_ms` until virtual time reaches `until_ms`, and fails if it would spin: every
/// armed deadline must lie ahead of the clock, and the loop must reach the end in a
/// bounded number of wake-ups.
fn sweep_until(e: &mut Engine, from_ms: u64, until_ms: u64) {
    let mut now = from_ms;
    for _ in 0..10_000 {
        if now >= until_ms {
            return;
        }
        let at = e.arm_timer(now, 1_000);
        assert!(
            at > now,
            "timer armed at {at} ms, not after the clock ({now} ms): a spin"
        );
        now = at;
        tick(e, now);
    }
    panic!("the timer sweep woke 10,000 times before reaching {until_ms} ms");
}

#[test]
fn a_durable_group_without_members_does_not_spin_on_a_due_redelivery() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs/#", "h", settings(1_000, 5, 0, true));
    publish_n(&mut e, p, "jobs/a", 1);
    let got = drain(&mut e, a);
    assert_eq!(got.len(), 1);
    // The member dies holding it: a redelivery is due at once, but nobody can take it.
    e.handle_disconnect(a);
    sweep_until(&mut e, 0, 60_000);
    let i = info(&e, "h");
    assert_eq!(
        i.counters.dead_lettered, 0,
        "went to $dead without a live member"
    );
    assert_eq!(i.redeliveries, 1, "the message waits for a member");
    // The next member to join gets it, as its second delivery.
    let b = open(&mut e, "b");
    join(&mut e, b, 1, "jobs/#", "h", settings(0, 0, 0, false));
    let again = drain(&mut e, b);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].offset(), again[0].attempt()), (0, 2));
}

#[test]
fn members_at_their_prefetch_do_not_make_a_due_redelivery_spin() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    let b = open(&mut e, "b");
    join(&mut e, a, 1, "jobs", "g", settings(60_000, 5, 1, false));
    join(&mut e, b, 1, "jobs", "g", settings(60_000, 5, 1, false));
    publish_n(&mut e, p, "jobs", 3);
    let (ga, gb) = (drain(&mut e, a), drain(&mut e, b));
    assert_eq!((ga.len(), gb.len()), (1, 1));
    // `a` dies holding one: `b` is at its prefetch, so the redelivery cannot be placed.
    e.handle_disconnect(a);
    sweep_until(&mut e, 0, 30_000);
    assert!(drain(&mut e, b).is_empty(), "b is at its prefetch");
    // b's ack frees credit: the waiting redelivery goes first.
    e.handle_ack(b, 1, gb[0].tag()).unwrap();
    let next = drain(&mut e, b);
    assert_eq!((next[0].offset(), next[0].attempt()), (ga[0].offset(), 2));
}

#[test]
fn a_nack_delay_that_ends_while_every_member_is_full_does_not_spin() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "g", settings(600_000, 5, 1, false));
    publish_n(&mut e, p, "jobs", 2);
    let first = drain(&mut e, a);
    e.handle_nack(a, 1, first[0].tag(), 500).unwrap();
    // The nack freed credit: the member takes the next message and is full again when
    // the nack's delay ends.
    let second = drain(&mut e, a);
    assert_eq!(second[0].offset(), 1);
    sweep_until(&mut e, 0, 120_000);
    e.handle_ack(a, 1, second[0].tag()).unwrap();
    let again = drain(&mut e, a);
    assert_eq!((again[0].offset(), again[0].attempt()), (0, 2));
}

#[test]
fn a_read_since_a_time_or_the_last_n_starts_where_asked() {
    use super::Since;
    let mut e = engine();
    let p = open(&mut e, "producer");
    for (i, t) in [1_000, 2_000, 2_000, 3_000].into_iter().enumerate() {
        e.handle_publish(p, t, "logs", None, i.to_string().as_bytes())
            .unwrap();
    }
    let offsets = |s: Since| -> Vec<u64> {
        let r = e.read_topic("logs", s, 100, 1 << 20);
        r.messages.iter().map(|m| m.offset).collect()
    };
    assert_eq!(offsets(Since::Time(0)), [0, 1, 2, 3]);
    assert_eq!(offsets(Since::Time(2_000)), [1, 2, 3]);
    assert_eq!(offsets(Since::Time(2_001)), [3]);
    assert_eq!(offsets(Since::Time(3_001)), Vec::<u64>::new());
    assert_eq!(offsets(Since::Last(2)), [2, 3]);
    assert_eq!(offsets(Since::Last(0)), Vec::<u64>::new());
    assert_eq!(offsets(Since::Last(99)), [0, 1, 2, 3]);
}
