//! Request/reply scenarios on a virtual clock: every time is an argument, no sockets.

#![allow(clippy::unwrap_used)] // Tests: a panic with its location is the report.

use mote_sdk::wire::MAX_REQUEST_TIMEOUT_MS;
use mote_sdk::{ErrorCode, Start};

use super::group_tests::{engine, open, settings};
use super::{Answer, ConnId, Delivery, Engine, MAX_PENDING, MAX_PENDING_PER_CONN};

/// A delivery copied out: `(sub, group, offset, inbox)` (inbox 0: a plain message).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    sub: u32,
    group: bool,
    tag: u64,
    offset: u64,
    reply: u64,
    payload: Vec<u8>,
}

fn drain(e: &mut Engine, c: ConnId) -> Vec<Got> {
    let mut out = Vec::new();
    e.poll_deliveries(c, |d| {
        out.push(match d {
            Delivery::Asked {
                sub,
                group,
                tag,
                offset,
                reply,
                payload,
                ..
            } => Got {
                sub,
                group,
                tag,
                offset,
                reply,
                payload: payload.to_vec(),
            },
            Delivery::Message {
                sub,
                offset,
                payload,
                ..
            } => Got {
                sub,
                group: false,
                tag: 0,
                offset,
                reply: 0,
                payload: payload.to_vec(),
            },
            Delivery::GroupMessage {
                sub,
                tag,
                offset,
                payload,
                ..
            } => Got {
                sub,
                group: true,
                tag,
                offset,
                reply: 0,
                payload: payload.to_vec(),
            },
            // A topic removed: nothing to compare here.
            Delivery::Removed { .. } => return true,
            other => panic!("unexpected {other:?}"),
        });
        true
    });
    out
}

fn answers(e: &mut Engine, c: ConnId) -> Vec<Answer> {
    let mut out = Vec::new();
    e.poll_answers(c, |a| {
        out.push(a.clone());
        true
    });
    out
}

fn ask(
    e: &mut Engine,
    c: ConnId,
    req: u32,
    topic: &str,
    timeout_ms: u32,
) -> Result<u64, ErrorCode> {
    e.handle_request(c, 1_000, req, topic, timeout_ms, None, b"hello")
        .map_err(|r| r.code)
}

#[test]
fn no_responders_is_answered_at_once_and_stores_nothing() {
    let mut e = engine();
    let c = open(&mut e, "asker");
    let r = e
        .handle_request(c, 1_000, 7, "svc/upper", 5_000, None, b"hello")
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::NO_RESPONDERS);
    assert_eq!(r.message, "no responders on svc/upper");
    assert_eq!(e.topic_count(), 0, "nothing stored, no topic made");
    assert_eq!(e.stats().requests_no_responders, 1);
    assert_eq!(e.stats().errors(ErrorCode::NO_RESPONDERS), 1);
    assert_eq!(e.pending_requests(), 0);
    // A subscriber elsewhere does not count; one whose filter matches does, also
    // before the topic exists.
    let s = open(&mut e, "responder");
    e.handle_subscribe(s, 1, "other/#", Start::Latest, &[])
        .unwrap();
    assert_eq!(
        ask(&mut e, c, 8, "svc/upper", 5_000),
        Err(ErrorCode::NO_RESPONDERS)
    );
    e.handle_subscribe(s, 2, "svc/+", Start::Latest, &[])
        .unwrap();
    assert_eq!(ask(&mut e, c, 9, "svc/upper", 5_000), Ok(0));
}

#[test]
fn a_group_without_connected_members_is_no_responder() {
    let mut e = engine();
    let c = open(&mut e, "asker");
    let m = open(&mut e, "member");
    e.handle_subscribe_group(
        m,
        1,
        "svc/upper",
        "upper",
        Start::Latest,
        settings(30_000, 5, 10, true),
    )
    .unwrap();
    assert_eq!(ask(&mut e, c, 1, "svc/upper", 5_000), Ok(0));
    e.handle_disconnect(m);
    // The durable group stays, without a member: nobody answers.
    assert_eq!(
        ask(&mut e, c, 2, "svc/upper", 5_000),
        Err(ErrorCode::NO_RESPONDERS)
    );
    // Oversized requests get the publish's refusal, not no_responders.
    let big = vec![0u8; e.limits().max_payload + 1];
    let r = e
        .handle_request(c, 1_000, 3, "svc/upper", 5_000, None, &big)
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::PAYLOAD_TOO_LARGE);
    let r = e
        .handle_request(c, 1_000, 4, "svc/#", 5_000, None, b"x")
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::BAD_TOPIC);
}

#[test]
fn the_first_reply_reaches_the_owner_and_later_ones_are_dropped() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r1 = open(&mut e, "r1");
    let r2 = open(&mut e, "r2");
    e.handle_subscribe(r1, 1, "svc/upper", Start::Latest, &[])
        .unwrap();
    e.handle_subscribe(r2, 5, "svc/#", Start::Latest, &[])
        .unwrap();
    let offset = e
        .handle_request(asker, 1_000, 7, "svc/upper", 5_000, Some(b"k"), b"hello")
        .unwrap();
    let g1 = drain(&mut e, r1);
    let g2 = drain(&mut e, r2);
    assert_eq!(g1.len(), 1);
    assert_eq!(
        (g1[0].sub, g1[0].offset, &g1[0].payload[..]),
        (1, offset, &b"hello"[..])
    );
    assert_ne!(g1[0].reply, 0, "delivered as Asked");
    assert_eq!(g1[0].reply, g2[0].reply, "one inbox per request");
    assert!(answers(&mut e, asker).is_empty());
    e.handle_reply(g1[0].reply, Some(b"rk"), b"HELLO");
    e.handle_reply(g2[0].reply, None, b"late");
    assert_eq!(
        answers(&mut e, asker),
        vec![Answer::Reply {
            req: 7,
            key: Some(b"rk".to_vec()),
            payload: b"HELLO".to_vec()
        }]
    );
    assert!(answers(&mut e, asker).is_empty(), "answered once");
    assert_eq!((e.stats().replies, e.stats().replies_dropped), (1, 1));
    assert_eq!(e.pending_requests(), 0);
    // Answered: a replay of the request is the plain message it also is.
    let late = open(&mut e, "late");
    e.handle_subscribe(late, 1, "svc/upper", Start::Earliest, &[])
        .unwrap();
    let g = drain(&mut e, late);
    assert_eq!((g[0].offset, g[0].reply), (offset, 0));
    // The requester sees nothing of replies on any subscription it may hold.
    e.handle_subscribe(asker, 1, "#", Start::Earliest, &[])
        .unwrap();
    let seen = drain(&mut e, asker);
    assert!(seen.iter().all(|g| g.payload == b"hello"), "{seen:?}");
    assert_eq!(e.stats().published, 1, "replies are not stored");
}

#[test]
fn a_request_past_its_deadline_times_out_and_a_late_reply_is_counted() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/slow", Start::Latest, &[])
        .unwrap();
    e.advance_clock(10_000);
    ask(&mut e, asker, 3, "svc/slow", 5_000).unwrap();
    // The timer wakes for the deadline: the whole 5 s after the millisecond the request
    // came in, which may have begun just before it arrived (the clock counts whole ms).
    assert_eq!(e.arm_timer(10_000, 60_000), 15_001);
    let inbox = drain(&mut e, r)[0].reply;
    e.handle_timeouts(15_000);
    assert!(answers(&mut e, asker).is_empty());
    e.handle_timeouts(15_001);
    assert_eq!(
        answers(&mut e, asker),
        vec![Answer::Failed {
            req: 3,
            code: ErrorCode::TIMEOUT,
            message: "no reply within 5 s".into()
        }]
    );
    e.handle_reply(inbox, None, b"too late");
    assert!(answers(&mut e, asker).is_empty());
    assert_eq!(e.stats().request_timeouts, 1);
    assert_eq!(e.stats().replies_dropped, 1);
    assert_eq!(e.stats().replies, 0);
    // A reply to an inbox that never was is dropped and counted too.
    e.handle_reply(12345, None, b"?");
    assert_eq!(e.stats().replies_dropped, 2);
}

#[test]
fn a_timeout_is_cut_to_the_maximum() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    ask(&mut e, asker, 1, "svc/x", u32::MAX).unwrap();
    let max = u64::from(MAX_REQUEST_TIMEOUT_MS) + 1;
    assert_eq!(e.arm_timer(0, u64::MAX / 2), max);
    e.handle_timeouts(max - 1);
    assert!(answers(&mut e, asker).is_empty());
    e.handle_timeouts(max);
    assert_eq!(answers(&mut e, asker).len(), 1);
}

#[test]
fn a_group_hands_each_request_to_one_member_with_a_tag() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let members: Vec<ConnId> = (0..3).map(|i| open(&mut e, &format!("m{i}"))).collect();
    for &m in &members {
        e.handle_subscribe_group(
            m,
            1,
            "svc/upper",
            "upper",
            Start::Latest,
            settings(30_000, 5, 10, true),
        )
        .unwrap();
    }
    for req in 1..=9 {
        ask(&mut e, asker, req, "svc/upper", 5_000).unwrap();
    }
    let mut inboxes = Vec::new();
    for &m in &members {
        for g in drain(&mut e, m) {
            assert!(g.group && g.reply != 0, "{g:?}");
            e.handle_reply(g.reply, None, &g.offset.to_le_bytes());
            e.handle_ack(m, 1, g.tag).unwrap();
            inboxes.push(g.reply);
        }
    }
    assert_eq!(inboxes.len(), 9, "each request to exactly one member");
    inboxes.sort_unstable();
    inboxes.dedup();
    assert_eq!(inboxes.len(), 9);
    let got = answers(&mut e, asker);
    let mut reqs: Vec<u32> = got
        .iter()
        .map(|a| match a {
            Answer::Reply { req, payload, .. } => {
                // Request `req` was stored at offset `req - 1`.
                assert_eq!(payload, &u64::from(*req - 1).to_le_bytes());
                *req
            }
            other => panic!("{other:?}"),
        })
        .collect();
    reqs.sort_unstable();
    assert_eq!(reqs, (1..=9).collect::<Vec<_>>());
}

#[test]
fn inbox_ids_are_not_a_counter() {
    let mut e = engine();
    e.seed_requests([9; 32]);
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    for req in 1..=4 {
        ask(&mut e, asker, req, "svc/x", 5_000).unwrap();
    }
    let ids: Vec<u64> = drain(&mut e, r).iter().map(|g| g.reply).collect();
    assert_eq!(ids.len(), 4);
    for w in ids.windows(2) {
        assert!(w[1].abs_diff(w[0]) > 1 << 20, "{ids:x?}");
    }
    // Another key gives other ids.
    let mut f = engine();
    f.seed_requests([10; 32]);
    let asker = open(&mut f, "asker");
    let r = open(&mut f, "r");
    f.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    ask(&mut f, asker, 1, "svc/x", 5_000).unwrap();
    assert_ne!(drain(&mut f, r)[0].reply, ids[0]);
}

#[test]
fn the_owner_leaving_drops_its_requests() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    ask(&mut e, asker, 1, "svc/x", 5_000).unwrap();
    ask(&mut e, asker, 2, "svc/x", 5_000).unwrap();
    let got = drain(&mut e, r);
    e.handle_reply(got[0].reply, None, b"answered, not read");
    e.handle_disconnect(asker);
    assert_eq!(e.pending_requests(), 0);
    e.handle_reply(got[1].reply, None, b"to nobody");
    assert_eq!(e.stats().replies_dropped, 1);
    // A new connection that gets the same id sees nothing of the old one's.
    let again = open(&mut e, "again");
    assert_eq!(again, asker, "slab ids are reused");
    assert!(answers(&mut e, again).is_empty());
    e.handle_timeouts(10_000);
    assert!(answers(&mut e, again).is_empty());
    // Its requests were forgotten: a replay is plain.
    let late = open(&mut e, "late");
    e.handle_subscribe(late, 1, "svc/x", Start::Earliest, &[])
        .unwrap();
    assert!(drain(&mut e, late).iter().all(|g| g.reply == 0));
}

#[test]
fn pending_requests_are_capped_per_connection_and_broker_wide() {
    let mut e = engine();
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    let asker = open(&mut e, "asker");
    for req in 1..=MAX_PENDING_PER_CONN as u32 {
        ask(&mut e, asker, req, "svc/x", 60_000).unwrap();
    }
    let refused = e
        .handle_request(asker, 1_000, 99_999, "svc/x", 60_000, None, b"x")
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::PENDING_LIMIT);
    assert!(
        refused.message.contains("limit is 1024"),
        "{}",
        refused.message
    );
    assert_eq!(e.stats().errors(ErrorCode::PENDING_LIMIT), 1);
    // A reply frees the slot once the answer is handed out.
    let inbox = drain(&mut e, r)[0].reply;
    e.handle_reply(inbox, None, b"ok");
    assert_eq!(
        ask(&mut e, asker, 99_999, "svc/x", 60_000),
        Err(ErrorCode::PENDING_LIMIT)
    );
    assert_eq!(answers(&mut e, asker).len(), 1);
    ask(&mut e, asker, 99_999, "svc/x", 60_000).unwrap();
    // Broker-wide.
    let mut held = MAX_PENDING_PER_CONN;
    let mut others = Vec::new();
    while held < MAX_PENDING {
        let c = open(&mut e, "more");
        others.push(c);
        for req in 1..=(MAX_PENDING - held).min(MAX_PENDING_PER_CONN) as u32 {
            ask(&mut e, c, req, "svc/x", 60_000).unwrap();
            held += 1;
        }
    }
    let c = open(&mut e, "one more");
    let r = e
        .handle_request(c, 1_000, 1, "svc/x", 60_000, None, b"x")
        .unwrap_err();
    assert_eq!(r.code, ErrorCode::PENDING_LIMIT);
    assert!(
        r.message.contains("the broker holds 16384"),
        "{}",
        r.message
    );
    e.handle_disconnect(others[0]);
    ask(&mut e, c, 1, "svc/x", 60_000).unwrap();
}

#[test]
fn req_zero_and_a_req_in_use_are_refused() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/x", Start::Latest, &[])
        .unwrap();
    assert_eq!(
        ask(&mut e, asker, 0, "svc/x", 5_000),
        Err(ErrorCode::PROTOCOL)
    );
    ask(&mut e, asker, 1, "svc/x", 5_000).unwrap();
    assert_eq!(
        ask(&mut e, asker, 1, "svc/x", 5_000),
        Err(ErrorCode::PROTOCOL)
    );
    assert_eq!(e.stats().published, 1);
}

#[test]
fn a_group_redelivery_of_a_pending_request_is_asked_again() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let m = open(&mut e, "m");
    e.handle_subscribe_group(
        m,
        1,
        "svc/x",
        "g",
        Start::Latest,
        settings(30_000, 5, 10, true),
    )
    .unwrap();
    ask(&mut e, asker, 1, "svc/x", 5_000).unwrap();
    let first = drain(&mut e, m);
    e.handle_nack(m, 1, first[0].tag, 0).unwrap();
    let again = drain(&mut e, m);
    assert_eq!(again[0].reply, first[0].reply);
    assert!(again[0].group);
    e.handle_timeouts(10_000);
    e.handle_nack(m, 1, again[0].tag, 0).unwrap();
    let after = drain(&mut e, m);
    assert_eq!(
        (after[0].reply, after[0].group),
        (0, true),
        "timed out: plain"
    );
}

#[test]
fn a_topic_removed_under_a_pending_request_is_no_trouble() {
    let mut e = engine();
    let asker = open(&mut e, "asker");
    let r = open(&mut e, "r");
    e.handle_subscribe(r, 1, "svc/#", Start::Latest, &[])
        .unwrap();
    ask(&mut e, asker, 1, "svc/gone", 5_000).unwrap();
    let inbox = drain(&mut e, r)[0].reply;
    e.delete_topic("svc/gone").unwrap();
    // Another topic takes the slot; its messages are plain.
    let offset = e
        .handle_publish(asker, 1_000, "svc/new", None, b"m")
        .unwrap();
    let got: Vec<Got> = drain(&mut e, r)
        .into_iter()
        .filter(|g| g.payload == b"m")
        .collect();
    assert_eq!((got[0].offset, got[0].reply), (offset, 0));
    // The request still waits for its reply, which reaches its owner.
    e.handle_reply(inbox, None, b"still");
    assert_eq!(answers(&mut e, asker).len(), 1);
    e.handle_timeouts(10_000);
    assert!(answers(&mut e, asker).is_empty());
}
