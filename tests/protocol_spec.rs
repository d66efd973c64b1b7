//! Behaviours `sdk/PROTOCOL.md` states that a client author relies on, checked against a
//! real broker over 127.0.0.1: the frame limit before the handshake and the client name
//! it bounds (section 5.1), what a `Pong` does and does not order (4.3), and the limits
//! query of version 5 (5.35, 5.36, 8.4) with what older connections get.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::Read;

use common::served::Served;
use common::{Broker, Got, Raw};
use mote::engine::settings::{PatternSettings, TopicPatterns};
use mote::limits::Limits;
use mote_sdk::wire::{self, Decoded, Frame, GetLimits, Hello, Ping, Publish, Subscribe};
use mote_sdk::{ErrorCode, Filter, Start};

/// A `Hello` offering `min..=max` with client name `name`.
fn hello(min: u16, max: u16, name: &str) -> Vec<u8> {
    Frame::Hello(Hello {
        min_version: min,
        max_version: max,
        ..Hello::new(name)
    })
    .to_vec()
}

/// Every byte the broker sends until it closes the connection (bounded by the read
/// timeout of [`Raw`]).
fn rest(r: &mut Raw) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.s.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
    }
}

/// The frames in `bytes`, owned.
fn frames(bytes: &[u8]) -> Vec<Got> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(Decoded::Frame(f, n)) = wire::decode(&bytes[pos..], usize::MAX) {
        out.push(common::own(f));
        pos += n;
    }
    assert_eq!(pos, bytes.len(), "the broker's bytes end inside a frame");
    out
}

/// A `Hello` longer than the 512 bytes allowed before the handshake is over is refused
/// with that limit and what to shorten, not with `--max-payload` (which has nothing to
/// do with it). A name of 503 bytes, the most a `Hello` with one-byte versions can
/// carry, is accepted (the broker keeps 64 bytes of it); so is an empty one.
#[test]
fn a_hello_over_the_handshake_limit_names_that_limit_and_the_client_name() {
    let b = Broker::default();

    let mut r = Raw::connect_silent(b.addr);
    r.send_bytes(&hello(1, 5, &"n".repeat(600)));
    let got = frames(&rest(&mut r));
    let [Got::Error { code, req, message }] = got.as_slice() else {
        panic!("expected one error, got {got:?}");
    };
    assert_eq!((*code, *req), (ErrorCode::FRAME_TOO_LARGE.0, 0));
    assert!(
        !message.contains("--max-payload"),
        "the payload limit is not the one that refused it: {message}"
    );
    assert_eq!(
        message,
        "frame is 609 bytes, the limit is 512 before the handshake is over (a hello's \
         client name may be at most 499 bytes, and the broker keeps the first 64: shorten \
         the client name)"
    );

    // The largest name that fits with one-byte versions: 512 = 1 + 4 + 1 + 1 + 2 + 503.
    let mut r = Raw::connect_silent(b.addr);
    let max = hello(1, 5, &"n".repeat(503));
    assert_eq!(max.len(), 2 + 512, "a two-byte prefix and 512 bytes");
    r.send_bytes(&max);
    assert!(matches!(r.next(), Some(Got::Welcome { .. })));
    r.ping(1);

    let mut r = Raw::connect_silent(b.addr);
    r.send_bytes(&hello(1, 5, &"n".repeat(504)));
    assert!(matches!(
        r.next(),
        Some(Got::Error { code, .. }) if code == ErrorCode::FRAME_TOO_LARGE.0
    ));

    let mut r = Raw::connect_silent(b.addr);
    r.send_bytes(&hello(1, 5, ""));
    assert!(matches!(r.next(), Some(Got::Welcome { .. })));
    r.ping(2);
}

/// The SDK sends at most the 64 bytes of a name the broker keeps, so a long name never
/// makes its `Hello` too large.
#[test]
fn the_sdk_cuts_a_long_client_name() {
    let b = Broker::default();
    let opts = b.options().name("é".repeat(400));
    let c = mote_sdk::blocking::Client::connect(opts).unwrap();
    c.flush().unwrap();
}

/// A `Pong` follows the replies to every frame sent before its `Ping`, but not the
/// deliveries of the messages those frames published: a fire-and-forget publish, two
/// pings in one write, and the connection's own subscription gets the message after both
/// pongs. What does order a delivery: a confirmed publish's `Published` (with the
/// offset) comes before the delivery of that message, which then comes in offset order.
#[test]
fn a_pong_orders_replies_not_deliveries() {
    let b = Broker::default();
    let mut r = Raw::connect(b.addr);
    r.subscribe(1, "t", Start::Latest);
    let mut batch = Frame::Publish(Publish {
        req: 0,
        topic: "t",
        key: None,
        payload: b"x",
    })
    .to_vec();
    Frame::Ping(Ping { nonce: 1 }).encode(&mut batch);
    Frame::Ping(Ping { nonce: 2 }).encode(&mut batch);
    r.send_bytes(&batch);
    assert_eq!(r.next(), Some(Got::Pong(1)));
    assert_eq!(r.next(), Some(Got::Pong(2)));
    assert!(matches!(r.next(), Some(Got::Message { offset: 0, .. })));

    // The barrier: wait for the offset a confirmed publish got.
    r.publish(9, "t", b"y");
    assert_eq!(r.next(), Some(Got::Published { req: 9, offset: 1 }));
    assert!(matches!(r.next(), Some(Got::Message { offset: 1, .. })));
}

/// Limits small enough to fill in a test: rings of 40 messages or 10 KiB, 12 KiB of
/// memory for all of them, 1 KiB payloads.
fn small_limits() -> Limits {
    Limits {
        max_payload: 1024,
        ring_messages: 40,
        ring_bytes: 10 * 1024,
        memory: 12 * 1024,
        max_partial_bytes: 4 << 20,
        ..Limits::default()
    }
}

fn get_limits(r: &mut Raw, req: u32, topic: Option<&str>) -> Vec<u8> {
    r.send(&Frame::GetLimits(GetLimits { req, topic }));
    // The answer is the next frame; re-read it as bytes to decode it in full.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Decoded::Frame(_, n)) = wire::decode(&buf, usize::MAX) {
            assert_eq!(n, buf.len(), "one frame answers");
            return buf;
        }
        let n = r.s.read(&mut chunk).unwrap();
        assert!(n > 0, "the broker closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn decode_limits(bytes: &[u8]) -> wire::Limits {
    match wire::decode(bytes, usize::MAX) {
        Ok(Decoded::Frame(Frame::Limits(l), _)) => *l,
        other => panic!("expected limits, got {other:?}"),
    }
}

/// Version 5: the limits query answers with the broker's options (and a topic's own
/// settings from its `[topics]` pattern), and what it says is what the rings do: a
/// message counts its key, its payload and `entry_overhead` bytes, a ring keeps at most
/// `ring_messages` and at most `ring_bytes` of that, and all rings together `memory`,
/// the oldest message of any topic going first.
#[test]
fn the_limits_query_tells_what_the_rings_keep() {
    let b = Broker::with(|| mote::broker::Config {
        limits: small_limits(),
        topics: TopicPatterns::new([(
            Filter::new("sensors/#").unwrap(),
            PatternSettings {
                max_age_ms: Some(Some(60_000)),
                ..Default::default()
            },
        )])
        .unwrap(),
        ..Default::default()
    });
    let mut r = Raw::connect(b.addr);
    let l = decode_limits(&get_limits(&mut r, 7, None));
    let want = wire::Limits {
        req: 7,
        max_frame: 1024 + 64 * 1024,
        max_payload: 1024,
        max_key: 1024,
        entry_overhead: mote::engine::ENTRY_OVERHEAD as u32,
        ring_messages: 40,
        ring_bytes: 10 * 1024,
        memory: 12 * 1024,
        disk: 0,
        topic: None,
    };
    assert_eq!(l, want);
    // What PROTOCOL.md (8.4, 5.36) says of a 64-bit broker.
    #[cfg(target_pointer_width = "64")]
    assert_eq!(l.entry_overhead, 112);
    let l = decode_limits(&get_limits(&mut r, 8, Some("sensors/kitchen")));
    let topic = wire::TopicLimits {
        persist: false,
        max_age_ms: Some(60_000),
        retain_messages: None,
        retain_bytes: None,
        discard_new: false,
    };
    assert_eq!(
        l,
        wire::Limits {
            req: 8,
            topic: Some(topic),
            ..want
        }
    );
    let l = decode_limits(&get_limits(&mut r, 9, Some("other")));
    assert_eq!(l.topic.map(|t| t.max_age_ms), Some(None));
    // A filter is not a topic.
    r.send(&Frame::GetLimits(GetLimits {
        req: 10,
        topic: Some("a/+"),
    }));
    assert!(matches!(
        r.next(),
        Some(Got::Error { code, req: 10, .. }) if code == ErrorCode::BAD_TOPIC.0
    ));

    // 30 messages of 500 bytes: each costs 500 + overhead, so the ring keeps as many as
    // fit in ring_bytes (fewer than ring_messages).
    let cost = 500 + u64::from(l.entry_overhead);
    let fit = (l.ring_bytes / cost).min(l.ring_messages);
    assert!(fit < 30);
    for _ in 0..30 {
        r.publish(0, "a", &[0; 500]);
    }
    r.ping(1);
    let mut r2 = Raw::connect(b.addr);
    r2.send(&Frame::Subscribe(Subscribe {
        sub: 1,
        filter: "a",
        from: Start::Offset(0),
        resume: Vec::new(),
    }));
    assert!(matches!(r2.next(), Some(Got::Subscribed { .. })));
    assert_eq!(
        r2.next(),
        Some(Got::Evicted {
            sub: 1,
            topic: "a".into(),
            missed: 30 - fit,
            next: 30 - fit,
        })
    );

    // Memory: 12 KiB for all rings. A second topic takes what it needs from the oldest
    // messages of the first.
    for _ in 0..10 {
        r.publish(0, "b", &[0; 500]);
    }
    r.ping(3);
    let in_memory = l.memory / cost;
    let kept_a = in_memory - 10;
    let mut r3 = Raw::connect(b.addr);
    r3.send(&Frame::Subscribe(Subscribe {
        sub: 1,
        filter: "a",
        from: Start::Offset(0),
        resume: Vec::new(),
    }));
    assert!(matches!(r3.next(), Some(Got::Subscribed { .. })));
    assert_eq!(
        r3.next(),
        Some(Got::Evicted {
            sub: 1,
            topic: "a".into(),
            missed: 30 - kept_a,
            next: 30 - kept_a,
        })
    );
}

/// The SDK's `limits`, async and blocking, gives the same answer.
#[test]
fn the_sdk_asks_for_limits() {
    let b = Broker::start(small_limits());
    let c = mote_sdk::blocking::Client::connect(b.options()).unwrap();
    let l = c.limits(Some("x/y")).unwrap();
    assert_eq!(
        (l.ring_messages, l.ring_bytes, l.memory),
        (40, 10 * 1024, 12 * 1024)
    );
    assert_eq!(l.topic.map(|t| t.persist), Some(false));
    let err = c.limits(Some("#")).unwrap_err();
    assert!(
        matches!(&err, mote_sdk::Error::Broker { code, .. } if *code == ErrorCode::BAD_TOPIC),
        "{err}"
    );
    let l2 = smol::block_on(async {
        let c = mote_sdk::Client::connect(b.options()).await.unwrap();
        c.limits(None).await.unwrap()
    });
    assert_eq!(l2.topic, None);
    assert_eq!(l2.max_payload, 1024);
}

/// A persisted topic: its retention on disk and the disk budget, from the config file.
#[test]
fn the_limits_of_a_persisted_topic() {
    let dir = std::env::temp_dir().join(format!("mote-protocol-spec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("mote.toml");
    std::fs::write(
        &cfg,
        "[topics.\"logs/#\"]\nretain-messages = 1000\ndiscard = \"new\"\n",
    )
    .unwrap();
    let data = dir.join("data");
    let s = Served::start(&[
        "--data",
        data.to_str().unwrap(),
        "--disk",
        "64M",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    let mut r = Raw::connect(s.addr);
    let l = decode_limits(&get_limits(&mut r, 1, Some("logs/app")));
    assert_eq!(l.disk, 64 << 20);
    assert_eq!(
        l.topic,
        Some(wire::TopicLimits {
            persist: true,
            max_age_ms: None,
            retain_messages: Some(1000),
            retain_bytes: None,
            discard_new: true,
        })
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection that agreed on version 4 gets the frames it always got (the `Welcome`
/// of version 4, byte for byte the same as a version 5 one but for the version), and a
/// limits query from it is a protocol violation, as it would be for a broker of version
/// 4 (which would not know the tag).
#[test]
fn a_version_4_connection_is_refused_the_limits_query() {
    // The same exchange on a fresh broker each: Welcome, Subscribed, Published, Message.
    let exchange = |max: u16| {
        let b = Broker::default();
        let mut r = Raw::connect_silent(b.addr);
        let mut out = hello(1, max, "same");
        Frame::Subscribe(Subscribe {
            sub: 1,
            filter: "v",
            from: Start::Latest,
            resume: Vec::new(),
        })
        .encode(&mut out);
        Frame::Publish(Publish {
            req: 2,
            topic: "v",
            key: Some(b"k"),
            payload: b"p",
        })
        .encode(&mut out);
        r.send_bytes(&out);
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while frames_in(&bytes) < 4 {
            let n = r.s.read(&mut chunk).unwrap();
            assert!(n > 0, "the broker closed the connection");
            bytes.extend_from_slice(&chunk[..n]);
        }
        (b, r, bytes)
    };
    let (_b4, mut v4, bytes4) = exchange(4);
    let (_b5, _v5, bytes5) = exchange(5);
    let (f4, f5) = (frames(&bytes4), frames(&bytes5));
    assert_eq!(f4.len(), 4, "{f4:?}");
    assert_eq!(f4[1..], f5[1..], "the frames after Welcome are the same");
    // The Welcome is the version 4 layout: the bytes the test encodes from its fields,
    // which only its version tells from a version 5 one.
    let Ok(Decoded::Frame(Frame::Welcome(w4), n4)) = wire::decode(&bytes4, usize::MAX) else {
        panic!("{f4:?}")
    };
    let Ok(Decoded::Frame(Frame::Welcome(w5), _)) = wire::decode(&bytes5, usize::MAX) else {
        panic!("{f5:?}")
    };
    assert_eq!((w4.version, w5.version), (4, 5));
    assert_eq!(Frame::Welcome(w4.clone()).to_vec(), bytes4[..n4].to_vec());
    assert_eq!(
        wire::Welcome {
            version: 5,
            broker_id: w5.broker_id,
            ..w4
        },
        w5
    );

    v4.send(&Frame::GetLimits(GetLimits {
        req: 3,
        topic: None,
    }));
    let got = frames(&rest(&mut v4));
    assert_eq!(
        got,
        vec![Got::Error {
            code: ErrorCode::PROTOCOL.0,
            req: 0,
            message: "a limits query (tag 0x3a) needs protocol 5; this connection agreed on \
                      version 4"
                .into()
        }]
    );
}

fn frames_in(bytes: &[u8]) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while let Ok(Decoded::Frame(_, used)) = wire::decode(&bytes[pos..], usize::MAX) {
        pos += used;
        n += 1;
    }
    n
}

/// PROTOCOL.md section 14: a message a persisted topic stored under `--max-payload 256K`
/// no longer fits the `Welcome.max_frame` of a restart with `--max-payload 16K`. Every
/// reader skips it with a `Lag` and gets the messages around it, in frames that fit: a
/// subscriber over the SDK (without the reconnect loop a frame past `max_frame` made),
/// a replay from its offset, a consumer group, an HTTP stream. The broker counts it once
/// and logs it once. It is skipped, not deleted: a restart with the larger limit
/// delivers it again.
#[test]
fn a_message_stored_under_a_larger_payload_limit_is_skipped_with_a_lag_after_a_restart() {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let dir = std::env::temp_dir().join(format!("mote-protocol-spec-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let serve = |payload: &str| {
        Served::start(&["--data", data, "--sync", "always", "--max-payload", payload])
    };
    let metric = |s: &Served, name: &str| -> f64 {
        let r = common::http::request(s.http.unwrap(), "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        r.text()
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    let big = vec![7u8; 200 * 1024];

    let mut s = serve("256K");
    let mut r = Raw::connect(s.addr);
    for (req, payload) in [(1, &b"a"[..]), (2, &big), (3, b"c")] {
        r.publish(req, "big", payload);
        assert_eq!(
            r.next(),
            Some(Got::Published {
                req,
                offset: u64::from(req - 1)
            })
        );
    }
    drop(r);
    s.signal("TERM");
    s.wait_log("stopped:");
    assert!(s.child.wait().unwrap().success());

    let mut s = serve("16K");
    let mut r = Raw::connect_silent(s.addr);
    r.send(&Frame::Hello(Hello::new("big")));
    let Some(Got::Welcome { max_frame, .. }) = r.next() else {
        panic!("no welcome")
    };
    assert_eq!(max_frame, 16 * 1024 + 64 * 1024);
    drop(r);
    let accepted = metric(&s, "mote_connections_accepted_total");

    // A subscriber from the start, over the SDK: it decodes against `max_frame`.
    let mut opts = mote_sdk::Options::new(s.addr.to_string());
    opts.reconnect_min = std::time::Duration::from_millis(20);
    opts.reconnect_max = std::time::Duration::from_millis(100);
    let c = mote_sdk::blocking::Client::connect(opts).unwrap();
    let mut sub = c.subscribe("big", Start::Earliest).unwrap();
    let events = |sub: &mut mote_sdk::blocking::Subscription, n: usize| {
        (0..n)
            .map(|_| match sub.recv_timeout(WAIT) {
                Ok(Some(mote_sdk::Event::Message(m))) => {
                    format!("{} {}", m.offset, String::from_utf8_lossy(&m.payload))
                }
                Ok(Some(mote_sdk::Event::Lag { missed, next, .. })) => {
                    format!("lag {missed} next {next}")
                }
                other => panic!("expected a message or a lag, got {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&mut sub, 3), ["0 a", "lag 1 next 2", "2 c"]);

    // A replay from the big message's offset.
    let mut replay = c.subscribe("big", Start::Offset(1)).unwrap();
    assert_eq!(events(&mut replay, 2), ["lag 1 next 2", "2 c"]);

    // A consumer group: the big message never blocks it.
    let group = mote_sdk::Group::new("g").from(Start::Earliest);
    let mut g = c.subscribe_group("big", group).unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match g.recv_timeout(WAIT) {
            Ok(Some(mote_sdk::GroupEvent::Message(d))) => {
                got.push(format!("{}", d.offset));
                d.ack().unwrap();
            }
            Ok(Some(mote_sdk::GroupEvent::Lag { missed, next, .. })) => {
                got.push(format!("lag {missed} next {next}"));
            }
            other => panic!("expected a group message or a lag, got {other:?}"),
        }
    }
    assert_eq!(got, ["0", "lag 1 next 2", "2"]);

    // An HTTP stream from the start.
    let mut st =
        common::http::Stream::open(s.http.unwrap(), "/t/big/json?since=earliest", &[]).unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        let v = st.event().unwrap();
        events.push(match v["event"].as_str() {
            Some("lag") => format!("lag {} next {}", v["missed"], v["next"]),
            _ => format!("{} {}", v["offset"], v["payload"]),
        });
    }
    assert_eq!(events, ["0 \"a\"", "lag 1 next 2", "2 \"c\""]);

    // No reconnect loop: the SDK's one connection, and the HTTP stream's. Counted
    // once, logged once.
    c.flush().unwrap();
    assert!(c.is_connected());
    assert_eq!(
        metric(&s, "mote_connections_accepted_total"),
        accepted + 2.0
    );
    assert_eq!(metric(&s, "mote_oversize_skipped_total"), 1.0);
    let line = s.wait_log("too large for the frame limit");
    assert!(
        line.contains("big") && line.contains("--max-payload"),
        "{line}"
    );
    assert_eq!(
        s.seen
            .iter()
            .filter(|l| l.contains("too large for the frame limit"))
            .count(),
        1,
        "{:?}",
        s.seen
    );
    drop(c);
    drop(st);
    drop(s);

    // Skipped, not deleted: the larger limit again delivers it.
    let s = serve("256K");
    let c =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    let mut sub = c.subscribe("big", Start::Offset(1)).unwrap();
    match sub.recv_timeout(WAIT) {
        Ok(Some(mote_sdk::Event::Message(m))) => assert_eq!((m.offset, m.payload), (1, big)),
        other => panic!(
            "expected the big message, got {:?}",
            other.map(|o| o.map(|_| ()))
        ),
    }
    drop(c);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a broker with tokens, a topic's limits are for a token that may publish to it,
/// subscribe to it or manage it; others are `forbidden` (the connection stays open).
#[test]
fn a_topic_s_limits_need_a_rule_that_matches_it() {
    const SECRET: &str = "kitchen-secret-0123456789abcdef";
    let b = Broker::with(|| {
        let mut auth = mote::auth::Auth::none();
        let rules = mote::auth::Rules::new("kitchen", &["home/{name}/#".into()], &["cmd/#".into()])
            .unwrap();
        auth.insert(
            "kitchen",
            mote_sdk::secure::Token::new(SECRET).unwrap(),
            rules,
        )
        .unwrap();
        mote::broker::Config {
            auth,
            ..Default::default()
        }
    });
    let opts = b.options().with_token("kitchen", SECRET).unwrap();
    let c = mote_sdk::blocking::Client::connect(opts).unwrap();
    for allowed in ["home/kitchen/temp", "cmd/x"] {
        let l = c.limits(Some(allowed)).unwrap();
        assert!(l.topic.is_some(), "{allowed}");
    }
    let err = c.limits(Some("home/hall/temp")).unwrap_err();
    assert!(
        matches!(&err, mote_sdk::Error::Broker { code, .. } if *code == ErrorCode::FORBIDDEN),
        "{err}"
    );
    assert_eq!(c.limits(None).unwrap().topic, None);
}
