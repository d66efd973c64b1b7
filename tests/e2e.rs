//! End to end over loopback: a real broker on port 0, the SDK and raw wire clients.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Got, Proxy, Raw, eventually};
use mote::limits::Limits;
use mote_sdk::blocking::{Client, Subscription};
use mote_sdk::{ErrorCode, Event, Message, Start};

const WAIT: Duration = Duration::from_secs(5);

fn next_msg(sub: &mut Subscription) -> Message {
    match sub.recv_timeout(WAIT).unwrap() {
        Some(Event::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn texts(sub: &mut Subscription, n: usize) -> Vec<(String, u64, String)> {
    (0..n)
        .map(|_| {
            let m = next_msg(sub);
            (
                m.topic.to_string(),
                m.offset,
                String::from_utf8(m.payload).unwrap(),
            )
        })
        .collect()
}

#[test]
fn publish_and_subscribe() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let mut sub = c.subscribe("home/kitchen/temp", Start::Latest).unwrap();
    c.publish("home/kitchen/temp", "21.5").unwrap();
    assert_eq!(c.publish_confirmed("home/kitchen/temp", "21.6").unwrap(), 1);
    assert_eq!(
        texts(&mut sub, 2),
        vec![
            ("home/kitchen/temp".into(), 0, "21.5".into()),
            ("home/kitchen/temp".into(), 1, "21.6".into())
        ]
    );
    let stats = b.stop();
    assert_eq!((stats.published, stats.delivered), (2, 2));
}

#[test]
fn wildcards_match_existing_and_new_topics() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    c.publish_confirmed("home/kitchen/temp", "old").unwrap();
    let mut plus = c.subscribe("home/+/temp", Start::Latest).unwrap();
    let mut hash = c.subscribe("home/#", Start::Latest).unwrap();
    c.publish("home/kitchen/temp", "1").unwrap();
    c.publish("home/hall/temp", "2").unwrap(); // a new topic
    c.publish("home/hall/hum", "3").unwrap();
    c.publish("garden/temp", "4").unwrap();
    c.flush().unwrap();
    let mut got = texts(&mut plus, 2);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("home/hall/temp".into(), 0, "2".into()),
            ("home/kitchen/temp".into(), 1, "1".into())
        ]
    );
    let mut got: Vec<String> = texts(&mut hash, 3).into_iter().map(|t| t.2).collect();
    got.sort();
    assert_eq!(got, ["1", "2", "3"]);
    assert!(
        plus.recv_timeout(Duration::from_millis(100)).is_err(),
        "nothing else matches"
    );
}

#[test]
fn replay_from_earliest_offset_and_last() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    for i in 0..10 {
        c.publish("r", i.to_string()).unwrap();
    }
    c.flush().unwrap();
    let offsets = |from, n| {
        let mut s = c.subscribe("r", from).unwrap();
        texts(&mut s, n)
            .into_iter()
            .map(|t| t.1)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(Start::Earliest, 10), (0..10).collect::<Vec<_>>());
    assert_eq!(offsets(Start::Offset(7), 3), vec![7, 8, 9]);
    assert_eq!(offsets(Start::Last(2), 2), vec![8, 9]);
}

#[test]
fn stalled_subscriber_lags_while_the_publisher_keeps_its_rate() {
    let limits = Limits {
        ring_messages: 100,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    // A subscriber that stops reading: a raw socket we do not read from.
    let mut stalled = Raw::connect(b.addr);
    stalled.subscribe(1, "fast", Start::Latest);
    let c = Client::connect(b.options()).unwrap();
    // Confirmed publishes keep being answered although the subscriber reads nothing.
    let t0 = Instant::now();
    let n = 50_000u64;
    for i in 0..n {
        c.publish("fast", [b'x'; 64]).unwrap();
        if i % 10_000 == 9_999 {
            c.flush().unwrap();
        }
    }
    assert_eq!(c.publish_confirmed("fast", "last").unwrap(), n);
    let publishing = t0.elapsed();
    // The subscriber now reads: messages up to its socket buffers, a lag notice with the
    // exact number it missed, then the ring's tail through to the last message.
    let (mut got, mut missed, mut last) = (0u64, 0u64, None);
    while last != Some(n) {
        match stalled.next() {
            Some(Got::Message { offset, .. }) => {
                assert!(last.is_none_or(|l| offset > l), "offsets only go forward");
                got += 1;
                last = Some(offset);
            }
            Some(Got::Lag {
                missed: m, next, ..
            }) => {
                assert_eq!(
                    next,
                    last.map_or(0, |l| l + 1) + m,
                    "lag covers the gap exactly"
                );
                missed += m;
                last = Some(next - 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got + missed,
        n + 1,
        "every message delivered or reported missed"
    );
    assert!(
        missed > 0,
        "the ring is far smaller than what was published"
    );
    let stats = b.stop();
    assert_eq!(stats.lag_missed, missed);
    assert!(
        publishing < Duration::from_secs(30),
        "publishing {n} messages took {publishing:?}: the publisher was held back"
    );
}

#[test]
fn reconnect_resumes_without_gap_or_duplicate() {
    let b = Broker::default();
    let proxy = Proxy::start(b.addr);
    let mut opts = mote_sdk::Options::new(proxy.addr.to_string());
    opts.reconnect_min = Duration::from_millis(20);
    let sub_client = Client::connect(opts).unwrap();
    let mut sub = sub_client.subscribe("res/#", Start::Latest).unwrap();
    let publisher = Client::connect(b.options()).unwrap();
    for i in 0..5 {
        publisher.publish("res/a", format!("a{i}")).unwrap();
    }
    publisher.flush().unwrap();
    assert_eq!(texts(&mut sub, 5).last().unwrap().2, "a4");
    // The broker side of the subscriber's connection goes away; meanwhile more arrives,
    // on the known topic and on a topic the subscriber has never seen.
    proxy.cut();
    eventually(WAIT, "the subscriber notices", || {
        !sub_client.is_connected()
    });
    for i in 5..10 {
        publisher.publish("res/a", format!("a{i}")).unwrap();
        publisher.publish("res/b", format!("b{i}")).unwrap();
    }
    publisher.flush().unwrap();
    let mut got: Vec<String> = texts(&mut sub, 10).into_iter().map(|t| t.2).collect();
    got.sort();
    let mut want: Vec<String> = (5..10)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    want.sort();
    assert_eq!(got, want, "no gap, no duplicate");
    assert!(sub.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn keepalive_expiry_closes_silent_connections_only() {
    let limits = Limits {
        keepalive_ms: 100,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    let c = Client::connect(b.options()).unwrap(); // pings on its own
    // The broker counts silence from the hello it read, before this side has the welcome.
    let t0 = Instant::now();
    let mut silent = Raw::connect(b.addr);
    match silent.next() {
        Some(Got::Error { code, .. }) => assert_eq!(ErrorCode(code), ErrorCode::KEEPALIVE_TIMEOUT),
        other => panic!("expected a keepalive error, got {other:?}"),
    }
    assert_eq!(silent.next(), None, "then closed");
    let waited = t0.elapsed();
    // Three keepalives of 100 ms, on a clock of whole milliseconds.
    assert!(
        waited >= Duration::from_millis(299),
        "closed early: {waited:?}"
    );
    assert!(c.is_connected());
    assert_eq!(c.publish_confirmed("still/here", "1").unwrap(), 0);
}

#[test]
fn handshake_deadline_drops_a_silent_connection() {
    let limits = Limits {
        handshake_ms: 100,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    let mut r = Raw::connect_silent(b.addr);
    match r.next() {
        Some(Got::Error { code, .. }) => assert_eq!(ErrorCode(code), ErrorCode::HANDSHAKE_TIMEOUT),
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    assert_eq!(r.next(), None);
    assert_eq!(b.stop().errors(ErrorCode::HANDSHAKE_TIMEOUT), 1);
}

#[test]
fn oversize_frame_is_refused_before_it_arrives() {
    let b = Broker::default();
    let mut r = Raw::connect(b.addr);
    // A prefix announcing 1 GiB, and a few bytes of body that will never be completed.
    r.send_bytes(&[0x80, 0x80, 0x80, 0x80, 0x04, 1, 2, 3]);
    match r.next() {
        Some(Got::Error { code, message, .. }) => {
            assert_eq!(ErrorCode(code), ErrorCode::FRAME_TOO_LARGE);
            assert!(message.contains("limit"), "{message}");
        }
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    assert_eq!(r.next(), None);
    // A large payload under the frame limit but over the payload limit is refused alone.
    let limits = Limits {
        max_payload: 1000,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    let mut r = Raw::connect(b.addr);
    r.publish(7, "big", &[0u8; 1001]);
    match r.next() {
        Some(Got::Error { code, req, message }) => {
            assert_eq!((ErrorCode(code), req), (ErrorCode::PAYLOAD_TOO_LARGE, 7));
            assert_eq!(
                message,
                "payload is 1001 bytes, the limit is 1000 (--max-payload)"
            );
        }
        other => panic!("expected payload_too_large, got {other:?}"),
    }
    r.publish(8, "big", &[0u8; 1000]);
    assert_eq!(r.next(), Some(Got::Published { req: 8, offset: 0 }));
}

#[test]
fn garbage_closes_one_connection_and_the_broker_serves_others() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let mut sub = c.subscribe("ok", Start::Latest).unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x03, 0x7f, 0, 0],
        &[0xff; 64],
    ] {
        let mut r = Raw::connect_silent(b.addr);
        r.send_bytes(garbage);
        match r.next() {
            Some(Got::Error { code, .. }) => assert!(
                [ErrorCode::PROTOCOL, ErrorCode::FRAME_TOO_LARGE].contains(&ErrorCode(code)),
                "{code}"
            ),
            other => panic!("expected an error frame for {garbage:?}, got {other:?}"),
        }
        assert_eq!(r.next(), None);
        c.publish("ok", "still serving").unwrap();
        assert_eq!(next_msg(&mut sub).payload, b"still serving");
    }
    // Garbage after a valid handshake too.
    let mut r = Raw::connect(b.addr);
    r.send_bytes(&[0x02, 0x7e, 0x00]);
    assert!(matches!(r.next(), Some(Got::Error { code: 1, .. })));
    let stats = b.stop();
    assert_eq!(
        stats.errors(ErrorCode::PROTOCOL) + stats.errors(ErrorCode::FRAME_TOO_LARGE),
        4
    );
}

#[test]
fn connection_cap_refuses_with_an_error_frame() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    let _one = Raw::connect(b.addr);
    let _two = Raw::connect(b.addr);
    let mut three = Raw::connect_silent(b.addr);
    match three.next() {
        Some(Got::Error { code, message, .. }) => {
            assert_eq!(ErrorCode(code), ErrorCode::CONNECTION_LIMIT);
            assert!(message.contains("--max-connections"), "{message}");
        }
        other => panic!("expected connection_limit, got {other:?}"),
    }
    assert_eq!(three.next(), None);
    let err = Client::connect(b.options()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CONNECTION_LIMIT), "{err}");
    let stats = b.stop();
    assert_eq!(stats.connections_refused, 2);
}

#[test]
fn refusals_keep_the_connection_open() {
    let limits = Limits {
        max_subscriptions: 1,
        max_topics: 1,
        ..Limits::default()
    };
    let b = Broker::start(limits);
    let c = Client::connect(b.options()).unwrap();
    assert_eq!(c.publish_confirmed("one", "x").unwrap(), 0);
    let e = c.publish_confirmed("two", "x").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TOPIC_LIMIT), "{e}");
    let _s = c.subscribe("one", Start::Latest).unwrap();
    let e = c.subscribe("two", Start::Latest).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SUBSCRIPTION_LIMIT), "{e}");
    // Fire-and-forget refusals surface at the next flush.
    c.publish("three", "x").unwrap();
    let e = c.flush().unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TOPIC_LIMIT), "{e}");
    assert_eq!(
        c.publish_confirmed("one", "y").unwrap(),
        1,
        "still connected"
    );
}

#[test]
fn queue_is_bounded_while_disconnected() {
    let b = Broker::default();
    let proxy = Proxy::start(b.addr);
    let mut opts = mote_sdk::Options::new(proxy.addr.to_string());
    opts.max_queue_bytes = 4096;
    opts.reconnect_min = Duration::from_secs(30); // stay disconnected
    opts.reconnect_max = Duration::from_secs(30);
    let c = Client::connect(opts).unwrap();
    proxy.cut();
    eventually(WAIT, "disconnect noticed", || !c.is_connected());
    let mut queued = 0;
    let err = loop {
        match c.publish("q", [0u8; 100]) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 1000, "the queue never filled");
    };
    assert!(
        matches!(err, mote_sdk::Error::QueueFull { limit: 4096 }),
        "{err}"
    );
    assert!(err.to_string().contains("outgoing queue is full"));
    assert!(
        queued >= 30,
        "about 4 KiB of 100-byte messages fit, got {queued}"
    );
}

#[test]
fn shutdown_tells_clients() {
    let b = Broker::default();
    let mut r = Raw::connect(b.addr);
    let stopping = std::thread::spawn(move || b.stop());
    match r.next() {
        Some(Got::Error { code, .. }) => assert_eq!(ErrorCode(code), ErrorCode::SHUTTING_DOWN),
        other => panic!("expected shutting_down, got {other:?}"),
    }
    assert_eq!(r.next(), None);
    stopping.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Issue 13: messages evicted before a subscription asked are told apart from lag.

#[test]
fn a_start_below_what_the_ring_keeps_is_evicted_not_lag() {
    let b = Broker::start(Limits {
        ring_messages: 10,
        ..Limits::default()
    });
    let c = Client::connect(b.options()).unwrap();
    for i in 0..25 {
        c.publish("big", i.to_string()).unwrap();
    }
    assert_eq!(c.publish_confirmed("big", "25").unwrap(), 25);
    // Offsets 0..16 are gone: evicted before this subscription asked for them.
    let mut sub = c.subscribe("big", Start::Offset(0)).unwrap();
    match sub.recv_timeout(WAIT).unwrap() {
        Some(Event::Evicted {
            topic,
            missed,
            next,
        }) => {
            assert_eq!((&*topic, missed, next), ("big", 16, 16));
        }
        other => panic!("expected the eviction notice, got {other:?}"),
    }
    assert_eq!(next_msg(&mut sub).offset, 16);
    // A start inside the ring hears of nothing.
    let mut inside = c.subscribe("big", Start::Offset(20)).unwrap();
    assert_eq!(next_msg(&mut inside).offset, 20);

    // A version 2 client on the wire gets the new frame...
    let mut v2 = Raw::connect(b.addr);
    v2.subscribe(1, "big", Start::Offset(3));
    assert_eq!(
        v2.next(),
        Some(Got::Evicted {
            sub: 1,
            topic: "big".into(),
            missed: 13,
            next: 16
        })
    );
    // ...and a client speaking only version 1 gets exactly the Lag frame it always got.
    let mut v1 = Raw::connect_silent(b.addr);
    v1.send(&mote_sdk::wire::Frame::Hello(mote_sdk::wire::Hello {
        min_version: 1,
        max_version: 1,
        ..mote_sdk::wire::Hello::new("old")
    }));
    assert!(matches!(v1.next(), Some(Got::Welcome { .. })));
    v1.subscribe(1, "big", Start::Offset(3));
    assert_eq!(
        v1.next(),
        Some(Got::Lag {
            sub: 1,
            topic: "big".into(),
            missed: 13,
            next: 16
        })
    );
}
