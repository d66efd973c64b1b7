//! Messages stored under a larger `--max-payload` than today's, read back from disk:
//! every reader skips them with a lag (no frame may pass `max_frame`), the broker counts
//! each once, and nothing waits on them (see `holes`).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use mote_sdk::Start;
use mote_sdk::wire::GroupSettings;

use super::disk_tests::{Broker, Dir, limits};
use super::settings::TopicPatterns;
use super::{ConnId, Delivery};
use crate::limits::Limits;

const BIG: usize = 100 * 1024;

/// Room for `BIG`: a 128 KiB payload limit.
fn large() -> Limits {
    Limits {
        max_payload: 128 * 1024,
        ..limits()
    }
}

/// A 1 KiB payload limit: frames up to 65 KiB, too small for `BIG`.
fn small() -> Limits {
    Limits {
        max_payload: 1024,
        ..limits()
    }
}

/// Stores payloads of `sizes` in topic `t` under `large()`, and stops.
fn stored(dir: &Dir, sizes: &[usize]) {
    let mut b = Broker::open(dir, large(), TopicPatterns::default());
    let p = b.conn("p");
    for (i, &n) in sizes.iter().enumerate() {
        b.e.handle_publish(p, 1_000_000 + i as u64, "t", None, &vec![b'x'; n])
            .unwrap();
    }
    b.settle();
    b.stop();
}

/// The deliveries of `c` until there are none and nothing is being read, as
/// `(offset, payload length)` and `(missed, next)` for lags, in order.
fn deliveries(b: &mut Broker, c: ConnId) -> Vec<(u64, usize)> {
    let mut got = Vec::new();
    for _ in 0..1_000 {
        let mut batch = Vec::new();
        b.e.poll_deliveries(c, |d| {
            match d {
                Delivery::Message {
                    offset, payload, ..
                } => batch.push((offset, payload.len())),
                Delivery::Lag { missed, next, .. } => {
                    batch.push((u64::MAX - missed, next as usize))
                }
                other => panic!("unexpected {other:?}"),
            }
            true
        });
        let reading = b.e.log().unwrap().has_reads();
        if batch.is_empty() && !reading {
            return got;
        }
        got.extend(batch);
        b.settle();
    }
    panic!("deliveries never ended");
}

/// A lag of `missed`, delivery going on at `next`, as [`deliveries`] shows it.
fn lag(missed: u64, next: usize) -> (u64, usize) {
    (u64::MAX - missed, next)
}

#[test]
fn messages_too_large_for_the_frame_limit_are_skipped_with_a_lag_and_counted_once() {
    let dir = Dir::new("oversize-sub");
    stored(&dir, &[1, BIG, 2, BIG, BIG, 3, 4]);
    let mut b = Broker::open(&dir, small(), TopicPatterns::default());
    assert!(BIG + 100 > b.e.limits().max_frame());

    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Earliest, &[])
        .unwrap();
    assert_eq!(
        deliveries(&mut b, c),
        [(0, 1), lag(1, 2), (2, 2), lag(2, 5), (5, 3), (6, 4)]
    );
    assert_eq!(b.e.stats().oversize_skipped, 3);
    assert_eq!(b.e.stats().lag_missed, 3);
    // A read per run of messages that fit (at 0, 2 and 5): a read stops its window at
    // the first big one, and a cursor passes the holes found without reading them again.
    assert_eq!(b.e.stats().disk_reads, 3);

    // A replay from a big one's offset, and one from the start: counted once still.
    let r = b.conn("r");
    b.e.handle_subscribe(r, 1, "t", Start::Offset(3), &[])
        .unwrap();
    b.e.handle_subscribe(r, 2, "t", Start::Earliest, &[])
        .unwrap();
    let got = deliveries(&mut b, r);
    assert_eq!(got.iter().filter(|d| d.0 > u64::MAX / 2).count(), 3);
    let mut offsets: Vec<u64> = got.iter().map(|d| d.0).filter(|&o| o < 100).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [0, 2, 5, 5, 6, 6]);
    assert_eq!(b.e.stats().oversize_skipped, 3);

    // New messages are delivered as usual, after them.
    let p = b.conn("p");
    b.e.handle_publish(p, 2_000_000, "t", None, b"new").unwrap();
    b.settle();
    assert_eq!(deliveries(&mut b, c), [(7, 3)]);
    b.stop();

    // Skipped, not deleted: the larger limit again delivers them.
    let mut b = Broker::open(&dir, large(), TopicPatterns::default());
    let c = b.conn("c");
    b.e.handle_subscribe(c, 1, "t", Start::Offset(3), &[])
        .unwrap();
    assert_eq!(
        deliveries(&mut b, c),
        [(3, BIG), (4, BIG), (5, 3), (6, 4), (7, 3)]
    );
    assert_eq!(b.e.stats().oversize_skipped, 0);
    b.stop();
}

/// Every group message `m` gets, acked: `(offset, attempt)`.
fn drain_group(b: &mut Broker, m: ConnId) -> Vec<(u64, u32)> {
    let mut got = Vec::new();
    for _ in 0..1_000 {
        let mut batch = Vec::new();
        b.e.poll_deliveries(m, |d| {
            match d {
                Delivery::GroupMessage {
                    tag,
                    offset,
                    attempt,
                    ..
                } => batch.push((tag, offset, attempt)),
                Delivery::Lag { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
            true
        });
        for &(tag, _, _) in &batch {
            b.e.handle_ack(m, 1, tag).unwrap();
        }
        if batch.is_empty() && !b.e.log().unwrap().has_reads() {
            b.settle();
            if !b.e.log().unwrap().has_reads() {
                return got;
            }
        }
        got.extend(batch.iter().map(|&(_, o, a)| (o, a)));
        b.settle();
    }
    panic!("deliveries never ended");
}

/// A group never waits on a message it cannot hand out: read from its cursor, or
/// handed to a member before the restart and unacked (a redelivery), it is skipped
/// (counted in the group's `lag_missed`), not tried until it goes to the dead letters:
/// a dead letter of it would be as large in `$dead/...`, and it stays on disk anyway.
#[test]
fn a_group_skips_messages_too_large_for_the_frame_limit_also_when_in_flight() {
    let dir = Dir::new("oversize-group");
    let settings = GroupSettings {
        ack_timeout_ms: 60_000,
        max_deliveries: 2,
        prefetch: 2,
        durable: true,
    };
    {
        let mut b = Broker::open(&dir, large(), TopicPatterns::default());
        let m = b.conn("m");
        b.e.handle_subscribe_group(m, 1, "t", "w", Start::Earliest, settings)
            .unwrap();
        let p = b.conn("p");
        for (i, n) in [1, BIG, 2, BIG, 3].into_iter().enumerate() {
            b.e.handle_publish(p, 1_000_000 + i as u64, "t", None, &vec![b'x'; n])
                .unwrap();
        }
        b.settle();
        // Offsets 0 and 1 handed out (the prefetch), not acked.
        let mut n = 0;
        b.e.poll_deliveries(m, |d| {
            n += usize::from(matches!(d, Delivery::GroupMessage { .. }));
            true
        });
        assert_eq!(n, 2);
        b.stop();
    }
    let mut b = Broker::open(&dir, small(), TopicPatterns::default());
    let m = b.conn("m2");
    b.e.handle_subscribe_group(m, 1, "t", "w", Start::Latest, settings)
        .unwrap();
    let mut got = drain_group(&mut b, m);
    got.sort_unstable();
    assert_eq!(got, [(0, 2), (2, 1), (4, 1)]);
    let info = b.e.group_infos();
    assert_eq!(info[0].counters.lag_missed, 2, "offsets 1 and 3");
    assert_eq!(info[0].counters.dead_lettered, 0);
    assert_eq!(b.e.stats().oversize_skipped, 2);
    assert!(
        b.e.topic_infos()
            .iter()
            .all(|t| !t.name.starts_with("$dead"))
    );

    // Not stuck: what comes next is handed out.
    let p = b.conn("p");
    b.e.handle_publish(p, 2_000_000, "t", None, b"new").unwrap();
    b.settle();
    assert_eq!(drain_group(&mut b, m), [(5, 1)]);
    b.stop();
}

/// A message whose frame still fits is delivered, its payload above today's
/// `--max-payload`; its dead letter, with a longer topic and key, would not fit: it is
/// skipped and counted, never stored in `$dead/...` for readers it would fail.
#[test]
fn a_dead_letter_that_would_not_fit_the_frame_limit_is_skipped_and_counted() {
    let dir = Dir::new("oversize-dead");
    let fits = small().max_frame() - super::holes::DELIVERY_OVERHEAD - "t".len();
    stored(&dir, &[fits, 1]);
    let mut b = Broker::open(&dir, small(), TopicPatterns::default());
    let settings = GroupSettings {
        ack_timeout_ms: 60_000,
        max_deliveries: 1,
        prefetch: 1,
        durable: false,
    };
    let m = b.conn("m");
    b.e.handle_subscribe_group(m, 1, "t", "w", Start::Earliest, settings)
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        let mut batch = Vec::new();
        b.e.poll_deliveries(m, |d| {
            if let Delivery::GroupMessage {
                tag,
                offset,
                payload,
                ..
            } = d
            {
                batch.push((tag, offset, payload.len()));
            }
            true
        });
        for &(tag, offset, _) in &batch {
            if offset == 0 {
                b.e.handle_nack(m, 1, tag, 0).unwrap();
            } else {
                b.e.handle_ack(m, 1, tag).unwrap();
            }
        }
        got.extend(batch.iter().map(|&(_, o, n)| (o, n)));
        b.settle();
        if got.len() == 2 {
            break;
        }
    }
    assert_eq!(got, [(0, fits), (1, 1)]);
    assert!(fits > small().max_payload);
    let info = b.e.group_infos();
    assert_eq!(
        (info[0].counters.dead_lettered, info[0].counters.lag_missed),
        (0, 1)
    );
    assert_eq!(b.e.stats().oversize_skipped, 1);
    assert!(
        b.e.topic_infos()
            .iter()
            .all(|t| !t.name.starts_with("$dead"))
    );
    b.stop();
}
