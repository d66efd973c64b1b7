//! Group lifecycle on a virtual clock (issue 12): seek, delete, expiry, durability by
//! default, dead letters held at the topic cap, and starts by time in memory.

#![allow(clippy::unwrap_used)] // Tests: a panic with its location is the report.

use mote_sdk::wire::GroupSettings;
use mote_sdk::{ErrorCode, Start};

use super::group_tests::{
    Got, ack_all, drain, engine, info, join, not_durable, open, publish_n, settings, tick,
};
use super::{AdminOp, ConnId, Engine, GroupConfig};
use crate::limits::Limits;

const DAY_MS: u64 = 24 * 3_600_000;

fn offsets(got: &[Got]) -> Vec<u64> {
    got.iter().map(Got::offset).collect()
}

/// Publishes one message to `topic` at wall time `time_ms`.
fn publish_at(e: &mut Engine, c: ConnId, topic: &str, time_ms: u64) -> u64 {
    e.handle_publish(c, time_ms, topic, None, b"x").unwrap()
}

#[test]
fn a_seek_drops_what_is_in_flight_and_delivery_goes_on_from_the_new_place() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 5, 2, false),
    );
    publish_n(&mut e, p, "jobs", 10);
    let held = drain(&mut e, a);
    assert_eq!(offsets(&held), [0, 1], "prefetch 2");
    // One nacked with a delay: a pending redelivery the seek drops too.
    e.handle_nack(a, 1, held[1].tag(), 5_000).unwrap();
    let third = drain(&mut e, a);
    assert_eq!(offsets(&third), [2]);
    assert_eq!(info(&e, "workers").redeliveries, 1);

    e.seek_group("workers", Start::Offset(7)).unwrap();
    let i = info(&e, "workers");
    assert_eq!((i.in_flight, i.redeliveries), (2, 0), "7 and 8 only");
    assert_eq!(i.cursors, [("jobs".to_string(), 9)]);
    // Credit is back at once: the member has the new position's messages already.
    let moved = drain(&mut e, a);
    assert_eq!(offsets(&moved), [7, 8]);
    for old in [&held[0], &third[0]] {
        let r = e.handle_ack(a, 1, old.tag()).unwrap_err();
        assert_eq!(r.code, ErrorCode::UNKNOWN_DELIVERY);
    }
    ack_all(&mut e, a, &moved);
    assert_eq!(offsets(&drain(&mut e, a)), [9]);
    // The nack's delay passes: nothing comes back from before the seek.
    tick(&mut e, 10_000);
    assert!(drain(&mut e, a).is_empty());
    assert_eq!(e.stats().admin_ops[AdminOp::Seek as usize], 1);
}

#[test]
fn a_seek_goes_to_each_kind_of_place_and_refuses_what_a_group_cannot() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 5, 100, false),
    );
    publish_n(&mut e, p, "jobs", 10);
    let cursor = |e: &Engine| info(e, "workers").cursors[0].1;
    let seek = |e: &mut Engine, to: Start| {
        e.seek_group("workers", to).unwrap();
        drain(e, a)
    };
    assert_eq!(offsets(&drain(&mut e, a)).len(), 10);
    assert_eq!(
        offsets(&seek(&mut e, Start::Earliest)),
        (0..10).collect::<Vec<_>>()
    );
    assert!(seek(&mut e, Start::Latest).is_empty());
    assert_eq!(cursor(&e), 10);
    assert_eq!(offsets(&seek(&mut e, Start::Last(3))), [7, 8, 9]);
    assert_eq!(offsets(&seek(&mut e, Start::Offset(99))), Vec::<u64>::new());
    assert_eq!(cursor(&e), 10, "an offset past the end is the end");
    let r = e.seek_group("workers", Start::AfterSeq(3)).unwrap_err();
    assert_eq!(r.code, ErrorCode::BAD_GROUP);
    let r = e.seek_group("nobody", Start::Earliest).unwrap_err();
    assert_eq!(r.code, ErrorCode::NOT_FOUND);
    assert_eq!(e.stats().admin_ops[AdminOp::Seek as usize], 4);
}

#[test]
fn a_seek_by_time_and_ago_finds_the_first_message_at_or_after() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    for t in [1_000, 2_000, 2_000, 3_000, 4_000] {
        publish_at(&mut e, p, "jobs", t);
    }
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 5, 100, false),
    );
    assert_eq!(drain(&mut e, a).len(), 5);
    e.seek_group("workers", Start::Time(2_000)).unwrap();
    assert_eq!(offsets(&drain(&mut e, a)), [1, 2, 3, 4]);
    e.seek_group("workers", Start::Time(3_500)).unwrap();
    assert_eq!(offsets(&drain(&mut e, a)), [4]);
    // The engine's wall clock was never set: wall time is its monotonic time, now 4,500.
    tick(&mut e, 4_500);
    e.seek_group("workers", Start::Ago(1_500)).unwrap();
    assert_eq!(offsets(&drain(&mut e, a)), [3, 4]);
    e.seek_group("workers", Start::Time(9_000)).unwrap();
    assert!(drain(&mut e, a).is_empty(), "nothing stored that late");
}

#[test]
fn subscriptions_and_new_groups_start_by_time_in_memory() {
    const WALL: u64 = 1_764_000_000_000;
    let mut e = engine();
    // The broker started at this wall time, monotonic 0 (as `broker::run` says).
    e.set_wall_clock(WALL, 0);
    let p = open(&mut e, "producer");
    for t in [1_000, 2_000, 3_000] {
        publish_at(&mut e, p, "logs", WALL + t);
    }
    let c = open(&mut e, "c");
    e.handle_subscribe(c, 1, "logs", Start::Time(WALL + 1_500), &[])
        .unwrap();
    assert_eq!(offsets(&drain(&mut e, c)), [1, 2]);
    tick(&mut e, 3_200);
    e.handle_subscribe(c, 2, "logs", Start::Ago(300), &[])
        .unwrap();
    assert_eq!(offsets(&drain(&mut e, c)), [2], "stored 200 ms ago");
    e.handle_subscribe(c, 4, "logs", Start::Ago(60_000), &[])
        .unwrap();
    assert_eq!(offsets(&drain(&mut e, c)), [0, 1, 2]);
    e.handle_subscribe_group(
        c,
        3,
        "logs",
        "g",
        Start::Time(WALL + 2_000),
        GroupSettings::default(),
    )
    .unwrap();
    assert_eq!(offsets(&drain(&mut e, c)), [1, 2]);
}

#[test]
fn deleting_a_group_ends_its_members_subscriptions_with_a_notice() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let (a, b) = (open(&mut e, "a"), open(&mut e, "b"));
    join(
        &mut e,
        a,
        4,
        "jobs",
        "workers",
        settings(60_000, 5, 1, false),
    );
    join(
        &mut e,
        b,
        9,
        "jobs",
        "workers",
        settings(60_000, 5, 1, false),
    );
    publish_n(&mut e, p, "jobs", 5);
    let held = drain(&mut e, a);
    assert_eq!(held.len(), 1);
    let mut woken = Vec::new();
    e.take_wakeups(&mut woken);

    e.delete_group("workers").unwrap();
    e.take_wakeups(&mut woken);
    assert!(woken.contains(&a) && woken.contains(&b), "{woken:?}");
    assert_eq!(
        drain(&mut e, a),
        [Got::Gone {
            sub: 4,
            group: "workers".into()
        }]
    );
    // b had one assigned and not sent yet: only the notice comes.
    assert_eq!(
        drain(&mut e, b),
        [Got::Gone {
            sub: 9,
            group: "workers".into()
        }]
    );
    assert!(drain(&mut e, a).is_empty(), "told once");
    assert!(e.group_by_name("workers").is_none());
    assert_eq!(e.group_count(), 0);
    let r = e.handle_ack(a, 4, held[0].tag()).unwrap_err();
    assert_eq!(r.code, ErrorCode::UNKNOWN_DELIVERY);
    // The subscription is gone: its id is free, and publishing goes on.
    e.handle_unsubscribe(a, 4).unwrap_err();
    publish_n(&mut e, p, "jobs", 1);
    assert!(drain(&mut e, a).is_empty());
    assert_eq!(
        e.delete_group("workers").unwrap_err().code,
        ErrorCode::NOT_FOUND
    );
    assert_eq!(e.stats().admin_ops[AdminOp::DeleteGroup as usize], 1);
    // A new group of that name starts afresh, where its first member asks.
    join(
        &mut e,
        a,
        4,
        "jobs",
        "workers",
        settings(60_000, 5, 10, false),
    );
    assert_eq!(offsets(&drain(&mut e, a)), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_notice_for_a_connection_that_closed_is_not_given_to_the_next_one() {
    let mut e = engine();
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "workers", GroupSettings::default());
    e.delete_group("workers").unwrap();
    e.handle_disconnect(a);
    let again = open(&mut e, "again");
    assert_eq!(again, a, "the slab reuses the key");
    assert!(drain(&mut e, again).is_empty());
}

#[test]
fn a_group_frees_its_max_groups_slot_when_deleted() {
    let mut e = Engine::new(
        Limits {
            keepalive_ms: 1 << 30,
            max_groups: 1,
            ..Limits::default()
        },
        7,
    );
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "one", GroupSettings::default());
    e.handle_unsubscribe(a, 1).unwrap();
    let r = e
        .handle_subscribe_group(a, 2, "jobs", "two", Start::Latest, GroupSettings::default())
        .unwrap_err();
    assert!(r.message.contains("--max-groups"), "{}", r.message);
    e.delete_group("one").unwrap();
    join(&mut e, a, 2, "jobs", "two", GroupSettings::default());
}

#[test]
fn a_group_without_members_expires_after_exactly_its_group_expiry() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    tick(&mut e, 1_000);
    join(&mut e, a, 1, "jobs", "workers", GroupSettings::default());
    tick(&mut e, 5_000);
    let i = info(&e, "workers");
    assert_eq!(
        (i.age_ms, i.idle_ms, i.expiry_ms),
        (4_000, None, Some(7 * DAY_MS))
    );
    // With a member, it never expires.
    tick(&mut e, 30 * DAY_MS);
    assert!(e.group_by_name("workers").is_some());
    let left = 30 * DAY_MS;
    e.handle_disconnect(a);
    publish_n(&mut e, p, "jobs", 3);
    tick(&mut e, left + 7 * DAY_MS - 1);
    let i = info(&e, "workers");
    assert_eq!(i.idle_ms, Some(7 * DAY_MS - 1));
    assert_eq!(i.backlog, 3, "a durable group keeps its place meanwhile");
    assert_eq!(e.stats().groups_expired, 0);
    tick(&mut e, left + 7 * DAY_MS);
    assert!(e.group_by_name("workers").is_none());
    assert_eq!(e.stats().groups_expired, 1);
}

#[test]
fn the_config_sets_a_group_expiry_and_a_member_resets_the_idle_clock() {
    let mut e = engine();
    e.configure_group(&GroupConfig {
        name: "short".into(),
        settings: GroupSettings::default(),
        filter: Some("jobs".into()),
        durable: None,
        expiry_ms: Some(60_000),
    })
    .unwrap();
    let i = info(&e, "short");
    assert_eq!(
        (i.members, i.idle_ms, i.expiry_ms),
        (0, Some(0), Some(60_000))
    );
    tick(&mut e, 59_000);
    let a = open(&mut e, "a");
    join(&mut e, a, 1, "jobs", "short", GroupSettings::default());
    tick(&mut e, 100_000);
    e.handle_disconnect(a);
    tick(&mut e, 159_999);
    assert!(e.group_by_name("short").is_some(), "idle since 100 s only");
    tick(&mut e, 160_000);
    assert!(e.group_by_name("short").is_none());
}

#[test]
fn named_groups_are_durable_by_default_and_the_config_opts_out() {
    let mut e = engine();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    // A worker asks for nothing (durable: false is "the broker's default").
    join(&mut e, a, 1, "jobs", "workers", settings(0, 0, 0, false));
    assert!(info(&e, "workers").settings.durable);
    publish_n(&mut e, p, "jobs", 2);
    let got = drain(&mut e, a);
    ack_all(&mut e, a, &got);
    // It restarts; jobs are published meanwhile; the new process finds them.
    e.handle_disconnect(a);
    publish_n(&mut e, p, "jobs", 3);
    let a2 = open(&mut e, "a again");
    join(&mut e, a2, 1, "jobs", "workers", GroupSettings::default());
    assert_eq!(offsets(&drain(&mut e, a2)), [2, 3, 4]);

    not_durable(&mut e, "scratch");
    join(&mut e, a2, 2, "jobs", "scratch", settings(0, 0, 0, true));
    let i = info(&e, "scratch");
    assert_eq!((i.settings.durable, i.expiry_ms), (false, None));
    e.handle_unsubscribe(a2, 2).unwrap();
    assert!(e.group_by_name("scratch").is_none(), "gone with its member");
}

#[test]
fn a_dead_letter_is_held_by_its_group_at_the_topic_cap_never_dropped() {
    let mut e = Engine::new(
        Limits {
            keepalive_ms: 1 << 30,
            max_topics: 1,
            ..Limits::default()
        },
        7,
    );
    // The broker's own topics have a cap of the same size: one dead-letter topic fills it.
    e.publish_system("$dead/earlier/jobs", 0, b"", b"x")
        .unwrap();
    let p = open(&mut e, "producer");
    let a = open(&mut e, "a");
    join(
        &mut e,
        a,
        1,
        "jobs",
        "workers",
        settings(60_000, 2, 10, false),
    );
    publish_n(&mut e, p, "jobs", 2);
    let got = drain(&mut e, a);
    assert_eq!(got.len(), 2);
    e.handle_ack(a, 1, got[1].tag()).unwrap();
    let mut tag = got[0].tag();
    e.handle_nack(a, 1, tag, 0).unwrap();
    tag = drain(&mut e, a)[0].tag();
    // Its second nack: out of deliveries, and `$dead/workers/jobs` would be a 2nd `$` topic.
    e.handle_nack(a, 1, tag, 0).unwrap();
    assert_eq!(e.stats().dead_letters_held, 1);
    let i = info(&e, "workers");
    assert_eq!((i.counters.dead_lettered, i.counters.lag_missed), (0, 0));
    assert_eq!(i.redeliveries, 1, "kept by the group, not acked");
    assert!(drain(&mut e, a).is_empty(), "not delivered again either");
    assert!(e.unacked_in_group("jobs", 0));
    // Tried again later (every 10 s), still held, counted once.
    let mut now = 0;
    for _ in 0..5 {
        now = e.arm_timer(now, 60_000);
        tick(&mut e, now);
    }
    assert!(now >= 40_000, "the timer does not spin: {now}");
    assert_eq!(e.stats().dead_letters_held, 1);
    assert_eq!(info(&e, "workers").redeliveries, 1);
    assert_eq!(e.stats().topics_expired, 0);
    // The cap frees: the next retry dead-letters it.
    e.delete_topic("$dead/earlier/jobs").unwrap();
    for _ in 0..2 {
        now = e.arm_timer(now, 60_000);
        tick(&mut e, now);
    }
    let i = info(&e, "workers");
    assert_eq!((i.counters.dead_lettered, i.redeliveries), (1, 0));
    assert_eq!(e.topic_detail("$dead/workers/jobs").unwrap().info.stored, 1);
}

#[test]
fn the_first_member_may_shorten_the_group_expiry_but_not_lengthen_it() {
    let mut e = engine();
    let a = open(&mut e, "a");
    let join_asking = |e: &mut Engine, sub: u32, group: &str, ms: u64| {
        e.handle_subscribe_group_with_expiry(
            a,
            sub,
            "jobs",
            group,
            Start::Latest,
            GroupSettings::default(),
            Some(ms),
        )
        .unwrap();
        info(e, group).expiry_ms
    };
    assert_eq!(join_asking(&mut e, 1, "short", 60_000), Some(60_000));
    assert_eq!(
        join_asking(&mut e, 2, "long", 30 * DAY_MS),
        Some(7 * DAY_MS)
    );
    assert_eq!(
        join_asking(&mut e, 3, "short", 1),
        Some(60_000),
        "a later member changes nothing"
    );
    e.configure_group(&GroupConfig {
        name: "configured".into(),
        settings: GroupSettings::default(),
        filter: None,
        durable: None,
        expiry_ms: Some(30 * DAY_MS),
    })
    .unwrap();
    assert_eq!(
        join_asking(&mut e, 4, "configured", 60_000),
        Some(30 * DAY_MS),
        "the config wins"
    );
    not_durable(&mut e, "scratch");
    assert_eq!(join_asking(&mut e, 5, "scratch", 60_000), None);
}

#[test]
fn a_member_may_ask_for_an_ephemeral_group_unless_the_config_says_durable() {
    let mut e = engine();
    let a = open(&mut e, "a");
    let ephemeral = |durable| super::GroupAsk {
        durable,
        expiry_ms: Some(60_000),
        ..Default::default()
    };
    e.handle_subscribe_group(a, 1, "jobs", "brief", Start::Latest, ephemeral(Some(false)))
        .unwrap();
    let i = info(&e, "brief");
    assert_eq!((i.settings.durable, i.expiry_ms), (false, None));
    e.handle_unsubscribe(a, 1).unwrap();
    assert!(
        e.group_by_name("brief").is_none(),
        "gone with its last member"
    );

    e.configure_group(&GroupConfig {
        name: "kept".into(),
        settings: GroupSettings::default(),
        filter: None,
        durable: Some(true),
        expiry_ms: None,
    })
    .unwrap();
    e.handle_subscribe_group(a, 2, "jobs", "kept", Start::Latest, ephemeral(Some(false)))
        .unwrap();
    let i = info(&e, "kept");
    assert_eq!(
        (i.settings.durable, i.expiry_ms),
        (true, Some(60_000)),
        "the config's durability wins; the asked expiry applies to a durable group"
    );
    e.handle_unsubscribe(a, 2).unwrap();
    assert!(e.group_by_name("kept").is_some());

    // The wire's `durable: false` is the broker's default: durable.
    e.handle_subscribe_group(
        a,
        3,
        "jobs",
        "plain",
        Start::Latest,
        GroupSettings::default(),
    )
    .unwrap();
    e.handle_unsubscribe(a, 3).unwrap();
    assert!(info(&e, "plain").settings.durable);
}
