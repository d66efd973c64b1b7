//! The HTTP edge's bounds, tried as a hostile client would: every resource a client can
//! make the broker hold (connections, bytes of heads and bodies, time, request slots) has
//! a cap with a clear answer, and the rest of the broker keeps serving. Also the edge's
//! place beside the TCP side: no TCP slot of its own, one backoff table for both.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::http::*;
use common::{Broker, Got, Raw};
use mote::limits::Limits;
use mote_sdk::ErrorCode;
use serde_json::Value;

/// Reads until the broker closes `s`; fails if it does not within `PATIENCE`.
fn closed(s: &mut impl Read) {
    let mut sink = [0u8; 4096];
    let started = Instant::now();
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => assert!(started.elapsed() < PATIENCE, "never closed"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

/// The body of an answer whose head was read from `r`.
fn body_of(r: &mut impl Read, headers: &[(String, String)]) -> Value {
    let n: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut b = vec![0; n];
    r.read_exact(&mut b).unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn heads_and_urls_over_their_limits_get_431_and_414() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| {
            h.max_head = 4096;
            h.max_url = 1024;
        }),
        ..Setup::default()
    });
    // A header line far over the limit: refused once the limit is passed, not buffered.
    let mut s = connect(edge.http).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Big: ").unwrap();
    let _ = s.write_all(&vec![b'a'; 1 << 20]);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 431);
    assert_eq!(body_of(&mut r, &headers)["code"], "header_too_large");
    closed(&mut r);
    // A request line over the URL limit.
    let long = format!("/t/{}", "u".repeat(2000));
    let r = edge.get(&long);
    let v = r.assert_error(414, "uri_too_long");
    assert!(v["error"].as_str().unwrap().contains("1024"));
    // Too many header fields.
    let many: Vec<(String, String)> = (0..80).map(|i| (format!("X-{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    edge.req("GET", "/healthz", &many, b"")
        .assert_error(431, "header_too_large");
    // Nothing is left held.
    assert_eq!(edge.stats()["broker"]["partial_bytes"], 0);
}

#[test]
fn requests_that_stall_get_408_within_the_partial_timeout() {
    let edge = Edge::with(Setup {
        limits: Limits {
            partial_timeout_ms: 300,
            ..Limits::default()
        },
        ..Setup::default()
    });
    let stalls: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half",
        b"POST /t/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
        b"POST /t/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ];
    for stall in stalls {
        let mut s = connect(edge.http).unwrap();
        s.write_all(stall).unwrap();
        let started = Instant::now();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 408, "{:?}", String::from_utf8_lossy(stall));
        assert_eq!(body_of(&mut r, &headers)["code"], "request_timeout");
        closed(&mut r);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let stats = edge.stats();
    assert_eq!(stats["http"]["errors"]["request_timeout"], 3);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.idle_timeout = Duration::from_millis(200)),
        ..Setup::default()
    });
    let mut s = connect(edge.http).unwrap();
    let started = Instant::now();
    closed(&mut s);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn past_the_connection_cap_new_connections_get_503_and_a_close() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.max_connections = 4),
        ..Setup::default()
    });
    // Four idle connections take every place (each is counted once accepted).
    let held: Vec<_> = (0..4).map(|_| connect(edge.http).unwrap()).collect();
    // Counted from their accept, so a fifth is refused at once.
    let mut r = BufReader::new(connect(edge.http).unwrap());
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 503);
    let v = body_of(&mut r, &headers);
    assert_eq!(v["code"], "too_many_connections");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("--http-max-connections")
    );
    closed(&mut r);
    drop(held);
    let stats = wait_for("room again", || {
        try_request(edge.http, "GET", "/api/stats", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    })
    .json();
    assert!(stats["http"]["connections_refused"].as_u64().unwrap() >= 1);
}

#[test]
fn keep_alive_answers_pipelined_requests_in_order() {
    let edge = Edge::start();
    let mut s = connect(edge.http).unwrap();
    s.write_all(
        b"POST /t/ka HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
          POST /t/ka HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
          GET /t/ka?since=0 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    for offset in [0, 1] {
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body_of(&mut r, &headers)["offset"], offset);
    }
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let read = body_of(&mut r, &headers);
    let payloads: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["one", "two"]);
}

#[test]
fn chunked_bodies_have_the_payload_limit_too() {
    let edge = Edge::with(Setup {
        limits: Limits {
            max_payload: 1024,
            ..Limits::default()
        },
        ..Setup::default()
    });
    let mut s = connect(edge.http).unwrap();
    s.write_all(b"POST /t/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        let _ = s.write_all(format!("200\r\n{}\r\n", "c".repeat(512)).as_bytes());
    }
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 413);
    assert_eq!(body_of(&mut r, &headers)["code"], "payload_too_large");
    closed(&mut r);
    let r = edge.req("POST", "/t/c", &[("Transfer-Encoding", "gzip")], b"");
    r.assert_error(501, "not_implemented");
}

#[test]
fn the_http_edge_takes_no_tcp_connection_slot() {
    let edge = Edge::with(Setup {
        limits: Limits {
            max_connections: 1,
            ..Limits::default()
        },
        ..Setup::default()
    });
    assert_eq!(edge.post("/t/h", b"over http").status, 200);
    // The one TCP place is free for a client.
    let client = edge.sdk();
    assert_eq!(client.publish_confirmed("h", "over tcp").unwrap(), 1);
    // HTTP streams do not take it either.
    let _s = Stream::open(edge.http, "/t/h/json", &[]).unwrap();
    assert_eq!(client.publish_confirmed("h", "still").unwrap(), 2);
}

#[test]
fn bad_tokens_over_http_slow_the_address_down_on_tcp_too() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    for _ in 0..4 {
        let r = edge.req(
            "GET",
            "/t/x",
            &[("Authorization", "Bearer wrong-token-0123456789")],
            b"",
        );
        assert!(matches!(r.status, 401 | 429), "{}", r.status);
    }
    // The same address on the binary protocol is refused at once.
    let mut raw = Raw::connect_silent(edge.broker.addr);
    match raw.next() {
        Some(Got::Error { code, message, .. }) => {
            assert_eq!(ErrorCode(code), ErrorCode::UNAUTHORIZED);
            assert!(message.contains("failed handshakes"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn bad_handshakes_over_tcp_slow_the_address_down_on_http_too() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    for _ in 0..4 {
        let opts = edge
            .broker
            .options()
            .with_token("default", "not-the-token-0123456789")
            .unwrap();
        assert!(mote_sdk::blocking::Client::connect(opts).is_err());
    }
    let r = edge.req(
        "GET",
        "/t/x",
        &[("Authorization", &format!("Bearer {DEFAULT_SECRET}"))],
        b"",
    );
    r.assert_error(429, "too_many_failures");
}

#[test]
fn stats_list_the_busiest_and_everything_on_request() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.stats_topics = 10),
        ..Setup::default()
    });
    let client = edge.sdk();
    for i in 0..300u64 {
        for _ in 0..=i % 50 {
            client.publish(&format!("many/{i}"), "m").unwrap();
        }
    }
    client.publish_confirmed("many/last", "m").unwrap();
    let stats = edge.stats();
    assert_eq!(stats["topics_total"], 301);
    assert_eq!(stats["broker"]["topics"], 301);
    let topics = stats["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 10, "the busiest only");
    // Six topics got 50 messages, the next ones 49: those, busiest first.
    let published: Vec<u64> = topics
        .iter()
        .map(|t| t["published"].as_u64().unwrap())
        .collect();
    assert_eq!(published, [50, 50, 50, 50, 50, 50, 49, 49, 49, 49]);
    let r = edge.get("/api/stats?topics=all");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    let all: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(all["topics"].as_array().unwrap().len(), 301);
    assert_eq!(all["topics_total"], 301);
    assert!(!all["connections"].as_array().unwrap().is_empty());
    assert_eq!(all["totals"]["published"], stats["totals"]["published"]);
    edge.get("/api/stats?topics=some")
        .assert_error(400, "bad_request");
}

#[test]
fn a_frame_that_trickles_is_cut_at_the_partial_timeout() {
    let b = Broker::start(Limits {
        partial_timeout_ms: 300,
        ..Limits::default()
    });
    let mut raw = Raw::connect(b.addr);
    // The length prefix of a 100 KiB frame, then a byte now and then.
    raw.send_bytes(&[0x80, 0x80, 0x06]);
    let started = Instant::now();
    let cut = loop {
        let _ = raw.s.write_all(b"x");
        raw.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 256];
        match raw.s.read(&mut buf) {
            Ok(n) => break buf[..n].to_vec(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert!(started.elapsed() < PATIENCE, "never cut");
    };
    let (frame, _) = match mote_sdk::wire::decode(&cut, usize::MAX) {
        Ok(mote_sdk::wire::Decoded::Frame(f, n)) => (common::own(f), n),
        other => panic!("{other:?}"),
    };
    match frame {
        Got::Error { code, .. } => assert_eq!(ErrorCode(code), ErrorCode::FRAME_TIMEOUT),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    let stats = b.stop();
    assert_eq!(stats.errors(ErrorCode::FRAME_TIMEOUT), 1);
}

#[test]
fn unfinished_frames_across_connections_stay_within_max_partial() {
    const MAX: usize = 2 << 20;
    let edge = Edge::with(Setup {
        limits: Limits {
            max_partial_bytes: MAX,
            ..Limits::default()
        },
        ..Setup::default()
    });
    // Twenty connections each send half of a 512 KiB publish and stop: 10 MiB wanted.
    let frame = mote_sdk::wire::Frame::Publish(mote_sdk::wire::Publish {
        req: 1,
        topic: "big",
        key: None,
        payload: &vec![b'p'; 512 * 1024],
    })
    .to_vec();
    let mut conns: Vec<(Raw, usize)> = (0..20)
        .map(|_| (Raw::connect(edge.broker.addr), 0))
        .collect();
    let half = frame.len() / 2;
    for (c, sent) in &mut conns {
        c.s.set_nonblocking(true).unwrap();
        let started = Instant::now();
        // As much of the first half as the broker takes in a moment.
        while *sent < half && started.elapsed() < Duration::from_millis(200) {
            match c.s.write(&frame[*sent..half]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let offered: usize = conns.iter().map(|(_, n)| n).sum();
    assert!(offered > 2 * MAX, "only {offered} bytes offered");
    // What the broker holds of them stays near the cap (each connection may be over by
    // one small read), however much is offered; the rest waits in the sockets.
    let held = edge.stats()["broker"]["partial_bytes"].as_u64().unwrap() as usize;
    assert!(held <= MAX + 20 * 4096, "{held}");
    // The rest arrives: every publish completes as room frees, and nothing stays held.
    std::thread::scope(|s| {
        for (c, sent) in &mut conns {
            let frame = &frame;
            s.spawn(move || {
                c.s.set_nonblocking(false).unwrap();
                c.s.write_all(&frame[*sent..]).unwrap();
                match c.next() {
                    Some(Got::Published { req: 1, .. }) => {}
                    other => panic!("expected the publish to be stored, got {other:?}"),
                }
            });
        }
    });
    assert_eq!(edge.stats()["broker"]["partial_bytes"], 0);
}
