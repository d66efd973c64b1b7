//! Transactions on the virtual clock: invisible until committed, check-backs by owner
//! and by client name, `--tx-default` after `--tx-check-max`, HTTP's longer wait, caps.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use mote_sdk::{ErrorCode, Start};

use super::{ConnId, Delivery, Engine};
use crate::limits::Limits;

fn engine(l: Limits) -> Engine {
    Engine::new(
        Limits {
            tx_check_after_ms: 1_000,
            tx_check_max: 2,
            ..l
        },
        7,
    )
}

fn open(e: &mut Engine, name: &str, at: u64) -> ConnId {
    let c = e.handle_connect(at, None);
    e.handle_open(c, name);
    e.handle_tx_capable(c);
    c
}

/// Offsets and payloads delivered to `c`.
fn drain(e: &mut Engine, c: ConnId) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    e.poll_deliveries(c, |d| {
        if let Delivery::Message {
            offset, payload, ..
        } = d
        {
            out.push((offset, payload.to_vec()));
        }
        true
    });
    out
}

fn checks(e: &mut Engine, c: ConnId) -> Vec<(u64, String, u32)> {
    let mut out = Vec::new();
    e.take_tx_checks(c, |tx, topic, attempt| {
        out.push((tx, topic.to_string(), attempt))
    });
    out
}

#[test]
fn prepared_is_invisible_and_commit_publishes_at_the_offset_of_then() {
    let mut e = engine(Limits::default());
    let sub = open(&mut e, "reader", 0);
    e.handle_subscribe(sub, 1, "orders/#", Start::Earliest, &[])
        .unwrap();
    let p = open(&mut e, "shop", 0);
    let tx = e
        .handle_prepare(p, 1_000, "orders/new", None, b"tx")
        .unwrap();
    assert_eq!(drain(&mut e, sub), []);
    assert_eq!(e.stored_messages(), 0, "not counted as stored");
    assert_eq!(
        e.handle_publish(p, 1_000, "orders/new", None, b"plain"),
        Ok(0)
    );
    let done = e.handle_settle(p, 2_000, tx, true).unwrap();
    assert!(done.committed);
    assert_eq!(done.offset, 1);
    assert_eq!(done.time_ms, 2_000);
    assert_eq!(
        drain(&mut e, sub),
        [(0, b"plain".to_vec()), (1, b"tx".to_vec())]
    );
    let again = e.handle_settle(p, 2_000, tx, false).unwrap_err();
    assert_eq!(again.code, ErrorCode::NOT_FOUND);
    let s = e.tx_stats();
    assert_eq!((s.prepared, s.committed, s.pending), (1, 1, 0));
}

#[test]
fn a_rollback_drops_it() {
    let mut e = engine(Limits::default());
    let sub = open(&mut e, "reader", 0);
    e.handle_subscribe(sub, 1, "#", Start::Earliest, &[])
        .unwrap();
    let p = open(&mut e, "shop", 0);
    let tx = e.handle_prepare(p, 1_000, "a", Some(b"k"), b"x").unwrap();
    assert!(!e.handle_settle(p, 1_000, tx, false).unwrap().committed);
    assert_eq!(drain(&mut e, sub), []);
    assert_eq!(e.tx_stats().rolled_back, 1);
    assert_eq!(e.tx_stats().pending_bytes, 0);
}

#[test]
fn checks_go_to_the_owner_then_to_the_newest_of_its_name_then_the_default() {
    let mut e = engine(Limits::default());
    let p = open(&mut e, "shop", 0);
    let tx = e.handle_prepare(p, 1_000, "a", None, b"x").unwrap();
    // Before tx-check-after nothing happens, and the timer is armed for it.
    assert_eq!(e.arm_timer(0, 60_000), 1_000);
    e.handle_timeouts(999);
    assert_eq!(checks(&mut e, p), []);
    e.handle_timeouts(1_000);
    assert_eq!(checks(&mut e, p), [(tx, "a".to_string(), 1)]);
    // The owner is gone: the newest connection named "shop" is asked.
    e.handle_disconnect(p);
    let old = open(&mut e, "shop", 1_100);
    let new = open(&mut e, "shop", 1_200);
    let _other = open(&mut e, "else", 1_300);
    e.handle_timeouts(2_000);
    assert_eq!(checks(&mut e, old), []);
    assert_eq!(checks(&mut e, new), [(tx, "a".to_string(), 2)]);
    assert_eq!(e.tx_stats().checked, 2);
    // No answer after tx-check-max checks: the default (rollback) one interval later.
    e.handle_timeouts(2_999);
    assert_eq!(e.tx_stats().pending, 1);
    e.handle_timeouts(3_000);
    let s = e.tx_stats();
    assert_eq!((s.pending, s.timed_out, s.rolled_back), (0, 1, 1));
    // Nothing left to wake for.
    assert_eq!(e.arm_timer(3_000, 60_000), 63_000);
}

#[test]
fn a_default_of_commit_publishes_it() {
    let mut e = engine(Limits {
        tx_default_commit: true,
        ..Limits::default()
    });
    e.set_wall_clock(50_000, 0);
    let sub = open(&mut e, "reader", 0);
    e.handle_subscribe(sub, 1, "#", Start::Earliest, &[])
        .unwrap();
    let p = open(&mut e, "", 0);
    e.handle_prepare(p, 1_000, "a", None, b"x").unwrap();
    for t in [1_000, 2_000, 3_000] {
        e.handle_timeouts(t);
    }
    assert_eq!(drain(&mut e, sub), [(0, b"x".to_vec())]);
    let s = e.tx_stats();
    assert_eq!((s.timed_out, s.committed, s.pending), (1, 1, 0));
}

#[test]
fn over_http_it_waits_check_after_times_check_max_without_checks() {
    let mut e = engine(Limits::default());
    e.handle_prepare(ConnId::EDGE, 1_000, "a", None, b"x")
        .unwrap();
    assert_eq!(e.arm_timer(0, 60_000), 2_000);
    e.handle_timeouts(1_999);
    assert_eq!(e.tx_stats().pending, 1);
    e.handle_timeouts(2_000);
    let s = e.tx_stats();
    assert_eq!((s.pending, s.timed_out, s.checked), (0, 1, 0));
}

#[test]
fn caps_refuse_with_pending_limit_and_bad_input_is_refused() {
    let mut e = engine(Limits {
        max_transactions: 2,
        max_transaction_bytes: 10,
        ..Limits::default()
    });
    let p = open(&mut e, "shop", 0);
    let a = e.handle_prepare(p, 0, "a", None, b"12345").unwrap();
    let r = e.handle_prepare(p, 0, "a", None, b"123456").unwrap_err();
    assert_eq!(r.code, ErrorCode::PENDING_LIMIT);
    assert!(
        r.message.contains("--max-transaction-bytes"),
        "{}",
        r.message
    );
    e.handle_prepare(p, 0, "a", None, b"1").unwrap();
    let r = e.handle_prepare(p, 0, "a", None, b"1").unwrap_err();
    assert_eq!(r.code, ErrorCode::PENDING_LIMIT);
    assert!(r.message.contains("--max-transactions"), "{}", r.message);
    assert_eq!(e.tx_stats().refused, 2);
    e.handle_settle(p, 0, a, false).unwrap();
    e.handle_prepare(p, 0, "a", None, b"1").unwrap();
    let r = e.handle_prepare(p, 0, "a/+", None, b"1").unwrap_err();
    assert_eq!(r.code, ErrorCode::BAD_TOPIC);
    let r = e.handle_settle(p, 0, 42, true).unwrap_err();
    assert_eq!(r.code, ErrorCode::NOT_FOUND);
}

#[test]
fn ids_are_distinct_and_written_as_16_hex_digits() {
    let mut e = engine(Limits::default());
    let p = open(&mut e, "shop", 0);
    let a = e.handle_prepare(p, 0, "a", None, b"1").unwrap();
    let b = e.handle_prepare(p, 0, "a", None, b"1").unwrap();
    assert_ne!(a, b);
    assert_ne!(a, 0);
    let hex = super::tx_hex(a);
    assert_eq!(hex.len(), 16);
    assert_eq!(super::parse_tx(&hex), Some(a));
    assert_eq!(super::parse_tx("xyz"), None);
    assert_eq!(super::parse_tx("00000000000000001"), None);
}

#[test]
fn pending_ones_survive_a_restart_and_a_mostly_settled_file_is_rewritten() {
    use super::disk_tests::{Broker, Dir};
    let dir = Dir::new("tx");
    let file = dir.0.join("log").join("tx.log");
    let mut b = Broker::open(&dir, Limits::default(), Default::default());
    let p = b.conn("shop");
    let payload = vec![7u8; 2048];
    let ids: Vec<u64> = (0..100)
        .map(|_| b.e.handle_prepare(p, 1_000, "a", None, &payload).unwrap())
        .collect();
    b.settle();
    let full = std::fs::metadata(&file).unwrap().len();
    assert!(full > 100 * 2048, "{full}");
    // Settled: 90 of them; once three quarters are settled records, the file is rewritten.
    for &id in &ids[..90] {
        b.e.handle_settle(p, 2_000, id, id % 2 == 0).unwrap();
    }
    b.settle();
    let small = std::fs::metadata(&file).unwrap().len();
    // Rewritten when 76 were settled (24 pending then), appended to since.
    assert!(small * 3 < full, "rewritten: {small} of {full} bytes");
    b.stop();
    let mut b = Broker::open(&dir, Limits::default(), Default::default());
    assert_eq!(b.e.tx_stats().pending, 10);
    let p = b.conn("shop");
    for &id in &ids[90..] {
        assert!(b.e.handle_settle(p, 3_000, id, true).unwrap().committed);
    }
    for &id in &ids[..90] {
        assert_eq!(
            b.e.handle_settle(p, 3_000, id, true).unwrap_err().code,
            ErrorCode::NOT_FOUND
        );
    }
    b.settle();
    b.stop();
}
