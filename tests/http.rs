//! The HTTP edge end to end: a real broker on 127.0.0.1:0 with its HTTP listener, spoken
//! to over real sockets by a small blocking HTTP/1.1 client (below) that can also read a
//! chunked stream one line at a time, send half a request, or never read. Every wait is
//! bounded: sockets have read timeouts and polls of counters go through `eventually`.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use common::eventually;
use common::http::*;
use mote::limits::Limits;
use mote_sdk::Start;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------
// Publishing.

#[test]
fn publish_with_post_and_put_answers_topic_offset_and_time() {
    let edge = Edge::start();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let r = edge.post("/t/home/kitchen/temp", b"21.5");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let v = r.json();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["offset", "time", "topic"],
        "exactly these fields: {v}"
    );
    assert_eq!(v["topic"], "home/kitchen/temp");
    assert_eq!(v["offset"], 0);
    let time = v["time"].as_u64().unwrap();
    assert!(
        time >= before && time < before + 60_000,
        "ms since the epoch"
    );

    // PUT too, binary with a key: base64 with `encoding` on the way back.
    let binary: Vec<u8> = (0u8..=255).rev().collect();
    let r = edge.req(
        "PUT",
        "/t/home/kitchen/temp",
        &[
            ("X-Key", "sensor-7"),
            ("Content-Type", "application/octet-stream"),
        ],
        &binary,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"topic": "home/kitchen/temp", "offset": 1, "time": r.json()["time"]})
    );
    // An empty body is an empty message.
    let r = edge.post("/t/home/kitchen/temp", b"");
    assert_eq!(r.json()["offset"], 2);

    let read = edge.get("/t/home/kitchen/temp").json();
    let m = &read["messages"];
    assert_eq!(m.as_array().unwrap().len(), 3, "{read}");
    assert_eq!(
        m[0],
        json!({"topic": "home/kitchen/temp", "offset": 0, "time": time, "payload": "21.5"})
    );
    assert!(m[0].get("encoding").is_none() && m[0].get("key").is_none());
    assert_eq!(m[1]["encoding"], "base64");
    assert_eq!(m[1]["key"], "sensor-7");
    assert!(m[1].get("key_encoding").is_none(), "a text key stays text");
    assert_eq!(
        B64.decode(m[1]["payload"].as_str().unwrap()).unwrap(),
        binary,
        "binary payloads round-trip through base64"
    );
    assert_eq!(m[2]["payload"], "");
}

#[test]
fn publish_reaches_sdk_subscribers_with_key_and_bytes_intact() {
    let edge = Edge::start();
    let client = edge.sdk();
    let mut sub = client.subscribe("dev/#", Start::Latest).unwrap();
    let payload = [0u8, 159, 146, 150, 255];
    let r = edge.req("POST", "/t/dev/raw", &[("X-Key", "k1")], &payload);
    assert_eq!(r.status, 200, "{}", r.text());
    match sub.recv_timeout(PATIENCE).unwrap() {
        Some(mote_sdk::Event::Message(m)) => {
            assert_eq!(&*m.topic, "dev/raw");
            assert_eq!(&m.payload[..], &payload);
            assert_eq!(m.key.as_deref(), Some(&b"k1"[..]));
        }
        other => panic!("expected the message, got {other:?}"),
    }
}

#[test]
fn read_with_since_and_limit() {
    let edge = Edge::start();
    for i in 0..5 {
        assert_eq!(edge.post("/t/r/x", format!("m{i}").as_bytes()).status, 200);
    }
    let all = edge.get("/t/r/x").json();
    assert_eq!(all["topic"], "r/x");
    assert_eq!(all["first"], 0);
    assert_eq!(all["next"], 5);
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);

    let page = edge.get("/t/r/x?since=1&limit=2").json();
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2]);
    assert_eq!(page["messages"][0]["payload"], "m1");

    let earliest = edge.get("/t/r/x?since=earliest&limit=1").json();
    assert_eq!(earliest["messages"][0]["offset"], 0);
    let latest = edge.get("/t/r/x?since=latest").json();
    assert_eq!(latest["messages"], json!([]));
    assert_eq!(latest["next"], 5);
    let past_end = edge.get("/t/r/x?since=99").json();
    assert_eq!(past_end["messages"], json!([]));
    let zero = edge.get("/t/r/x?limit=0").json();
    assert_eq!(zero["messages"], json!([]));

    // A topic nobody published to reads as empty, not as an error.
    let none = edge.get("/t/never/used").json();
    assert_eq!(none["messages"], json!([]));
    assert_eq!(none["topic"], "never/used");
}

/// `ms` since the epoch as RFC 3339 (UTC, with milliseconds), for `since=time:`.
fn rfc3339(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

fn offsets(r: &Reply) -> Vec<u64> {
    assert_eq!(r.status, 200, "{}", r.text());
    let read = r.json();
    read["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {read}"))
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn read_since_last_ago_and_time() {
    let edge = Edge::start();
    let first = edge.post("/t/r/t", b"old").json()["time"].as_u64().unwrap();
    // Messages a clock tick later than the first, so that a time falls between them.
    let mut later = first;
    eventually(PATIENCE, "a message stored a millisecond later", || {
        later = edge.post("/t/r/t", b"new").json()["time"].as_u64().unwrap();
        later > first
    });
    let n = offsets(&edge.get("/t/r/t")).len() as u64;
    assert!(n >= 2);

    // last:N: exactly the newest N, and all of them when fewer are stored.
    assert_eq!(offsets(&edge.get("/t/r/t?since=last:2")), [n - 2, n - 1]);
    assert_eq!(offsets(&edge.get("/t/r/t?since=last:1")), [n - 1]);
    assert_eq!(offsets(&edge.get("/t/r/t?since=last:0")), Vec::<u64>::new());
    assert_eq!(offsets(&edge.get("/t/r/t?since=last:500")).len() as u64, n);
    // last:N past the default limit of 100 reads N (at most 1000).
    for i in 0..150 {
        edge.post("/t/r/many", format!("{i}").as_bytes());
    }
    let read = offsets(&edge.get("/t/r/many?since=last:120"));
    assert_eq!(read.len(), 120);
    assert_eq!(read[0], 30);
    assert_eq!(
        offsets(&edge.get("/t/r/many?since=last:120&limit=5")),
        [30, 31, 32, 33, 34],
        "a limit still holds"
    );

    // Durations and times, by the broker's clock.
    for since in ["10m", "ago:10m", "ago:1h", "1d"] {
        let o = offsets(&edge.get(&format!("/t/r/t?since={since}")));
        assert_eq!(o.len() as u64, n, "since={since}");
    }
    let at = |ms: u64| offsets(&edge.get(&format!("/t/r/t?since=time:{}", rfc3339(ms))));
    assert_eq!(at(first).len() as u64, n, "at the first message's time");
    assert_eq!(at(first - 60_000).len() as u64, n);
    let after_first = at(first + 1);
    assert!(
        !after_first.contains(&0) && !after_first.is_empty(),
        "{after_first:?}"
    );
    assert_eq!(
        at(later + 60_000),
        Vec::<u64>::new(),
        "nothing in the future"
    );
    // A UTC offset, its `+` encoded or (as typed into curl) not.
    for plus in ["%2B00:00", "+00:00", "%2B01:00"] {
        let t = rfc3339(first + if plus.contains("01") { 3_600_000 } else { 0 });
        let t = t.replace('Z', plus);
        let o = offsets(&edge.get(&format!("/t/r/t?since=time:{t}")));
        assert_eq!(o.len() as u64, n, "time:{t}");
    }
}

#[test]
fn a_wildcard_poll_reads_every_matching_topic_with_its_topic() {
    let edge = Edge::start();
    for (t, p) in [
        ("sensors/a", "a0"),
        ("sensors/b", "b0"),
        ("sensors/a", "a1"),
        ("sensors/a/deep", "deep"),
        ("other/x", "x"),
    ] {
        assert_eq!(edge.post(&format!("/t/{t}"), p.as_bytes()).status, 200);
    }
    let plus = edge.get("/t/sensors/+").json();
    assert_eq!(plus["filter"], "sensors/+");
    assert_eq!(plus["more"], false, "{plus}");
    let got: Vec<(String, String)> = plus["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_string(),
                m["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("sensors/a".into(), "a0".into()),
            ("sensors/a".into(), "a1".into()),
            ("sensors/b".into(), "b0".into())
        ],
        "by topic, then offset: {plus}"
    );
    assert_eq!(
        plus["topics"],
        json!([
            {"topic": "sensors/a", "first": 0, "next": 2},
            {"topic": "sensors/b", "first": 0, "next": 1},
        ])
    );
    // Percent-encoded wildcards are the same; # takes the deeper levels too.
    let hash = edge.get("/t/sensors/%23").json();
    assert_eq!(hash["messages"].as_array().unwrap().len(), 4, "{hash}");
    assert_eq!(edge.get("/t/sensors/%2B").json()["filter"], "sensors/+");
    // since= applies in every topic: the newest of each sensor.
    let newest = edge.get("/t/sensors/+?since=last:1").json();
    let payloads: Vec<&str> = newest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["a1", "b0"]);
    // Bounded: the limit cuts it short and says there is more.
    let cut = edge.get("/t/sensors/%23?limit=2").json();
    assert_eq!(cut["messages"].as_array().unwrap().len(), 2);
    assert_eq!(cut["more"], true, "{cut}");
    // Nothing matches: empty, not an error.
    let none = edge.get("/t/nothing/%23").json();
    assert_eq!(none["messages"], json!([]));
    assert_eq!(none["topics"], json!([]));
}

#[test]
fn a_wildcard_poll_leaves_out_what_the_token_may_not_read() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    let bearer = format!("Bearer {DEFAULT_SECRET}");
    let kitchen = format!("Bearer kitchen:{KITCHEN_SECRET}");
    for t in ["home/kitchen/t", "office/t", "home/hall/t"] {
        let r = edge.req(
            "POST",
            &format!("/t/{t}"),
            &[("Authorization", &bearer)],
            b"1",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all = edge.req("GET", "/t/%23", &[("Authorization", &bearer)], b"");
    assert_eq!(all.json()["topics"].as_array().unwrap().len(), 3);
    // The kitchen token subscribes to home/#: office/t is not shown.
    let some = edge
        .req("GET", "/t/%23", &[("Authorization", &kitchen)], b"")
        .json();
    let topics: Vec<&str> = some["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["home/kitchen/t", "home/hall/t"], "{some}");
    edge.get("/t/%23").assert_error(401, "unauthorized");
}

#[test]
fn wait_delivered_answers_200_when_a_subscriber_got_it_and_504_when_nobody_did() {
    let edge = Edge::start();
    // Nobody listening: 504 with the offset it was stored at.
    let started = Instant::now();
    let r = edge.post("/t/w/a?wait=delivered&timeout=200ms", b"lonely");
    let v = r.assert_error(504, "not_delivered");
    assert_eq!(
        v["error"], "stored, not handed to any subscriber in time (0.2 s)",
        "{v}"
    );
    assert_eq!(v["offset"], 0, "{v}");
    assert_eq!(v["topic"], "w/a");
    assert!(v["time"].is_u64());
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < PATIENCE);

    // An SDK subscriber gets it: 200 with delivered:true.
    let client = edge.sdk();
    let mut sub = client.subscribe("w/#", Start::Latest).unwrap();
    let r = edge.post("/t/w/a?wait=delivered&timeout=5s", b"hello");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["offset"], 1);
    match sub.recv_timeout(PATIENCE).unwrap() {
        Some(mote_sdk::Event::Message(m)) => assert_eq!(&m.payload[..], b"hello"),
        other => panic!("expected the message, got {other:?}"),
    }
    drop(sub);
    drop(client);

    // An HTTP stream counts as a subscriber too.
    let mut s = Stream::open(edge.http, "/t/w/%23/json", &[]).unwrap();
    let r = edge.post("/t/w/b?wait=delivered&timeout=5s", b"via http");
    assert_eq!(r.json()["delivered"], true);
    assert_eq!(s.event().unwrap()["payload"], "via http");
}

// ---------------------------------------------------------------------------------------
// Streams.

#[test]
fn ndjson_stream_with_a_wildcard_filter_binary_payloads_and_limit() {
    let edge = Edge::start();
    edge.post("/t/s/old", b"before");
    let mut s = Stream::open(edge.http, "/t/s/%23/json?limit=3", &[]).unwrap();
    assert_eq!(s.header("Content-Type"), Some("application/x-ndjson"));
    assert_eq!(s.header("Cache-Control"), Some("no-cache"));
    edge.req("POST", "/t/s/a", &[("X-Key", "k")], b"one");
    edge.post("/t/other", b"not matched");
    edge.post("/t/s/b/c", &[0xff, 0x00, 0xfe]);
    edge.post("/t/s", b"the parent level matches # too");

    let one = s.event().unwrap();
    assert_eq!(one["topic"], "s/a");
    assert_eq!(one["payload"], "one");
    assert_eq!(one["key"], "k");
    assert!(one["time"].is_u64() && one["offset"].is_u64());
    let two = s.event().unwrap();
    assert_eq!(two["topic"], "s/b/c");
    assert_eq!(two["encoding"], "base64");
    assert_eq!(
        B64.decode(two["payload"].as_str().unwrap()).unwrap(),
        [0xff, 0x00, 0xfe]
    );
    let three = s.event().unwrap();
    assert_eq!(three["topic"], "s");
    assert_eq!(
        s.json(),
        None,
        "limit=3: the stream ends after three messages"
    );
}

#[test]
fn stream_since_replays_stored_messages() {
    let edge = Edge::start();
    for i in 0..4 {
        edge.post("/t/rp", format!("{i}").as_bytes());
    }
    let mut s = Stream::open(edge.http, "/t/rp/json?since=earliest&limit=4", &[]).unwrap();
    let got: Vec<Value> = std::iter::from_fn(|| s.event()).collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0]["payload"], "0");
    let mut s = Stream::open(edge.http, "/t/rp/json?since=2&limit=1", &[]).unwrap();
    assert_eq!(s.event().unwrap()["offset"], 2);
    let mut s = Stream::open(edge.http, "/t/rp/json?since=last:1&limit=1", &[]).unwrap();
    assert_eq!(s.event().unwrap()["offset"], 3);
}

/// Waits for the engine: `Start::Ago` and `Start::Time` go through
/// `Engine::offset_at_time`, a stub (the next offset) until the groups work is merged.
#[test]
fn stream_since_a_duration_or_a_time_replays_by_the_brokers_clock() {
    let edge = Edge::start();
    let first = edge.post("/t/st", b"0").json()["time"].as_u64().unwrap();
    for i in 1..3 {
        edge.post("/t/st", format!("{i}").as_bytes());
    }
    for since in ["10m", "ago:10m", "1h"] {
        let mut s =
            Stream::open(edge.http, &format!("/t/st/json?since={since}&limit=3"), &[]).unwrap();
        let got: Vec<Value> = std::iter::from_fn(|| s.event()).collect();
        assert_eq!(got.len(), 3, "since={since}: {got:?}");
        assert_eq!(got[0]["offset"], 0, "since={since}");
    }
    let t = rfc3339(first);
    let mut s = Stream::open(
        edge.http,
        &format!("/t/%23/json?since=time:{t}&limit=1"),
        &[],
    )
    .unwrap();
    let e = s.event().unwrap();
    assert_eq!(
        (e["topic"].as_str(), e["offset"].as_u64()),
        (Some("st"), Some(0))
    );
    // A time to come: nothing stored before it, not even what is published meanwhile.
    let t = rfc3339(first + 3_600_000);
    let mut s = Stream::open(
        edge.http,
        &format!("/t/st/json?since=time:{t}&timeout=300ms"),
        &[],
    )
    .unwrap();
    edge.post("/t/st", b"new");
    let got: Vec<Value> = std::iter::from_fn(|| s.event()).collect();
    assert!(got.iter().all(|e| e.get("payload").is_none()), "{got:?}");
}

#[test]
fn sse_and_raw_streams() {
    let edge = Edge::start();
    let mut sse = Stream::open(edge.http, "/t/e/%2B/sse?limit=2", &[]).unwrap();
    assert_eq!(sse.header("Content-Type"), Some("text/event-stream"));
    let mut raw = Stream::open(edge.http, "/t/e/%2B/raw?limit=2", &[]).unwrap();
    assert_eq!(
        raw.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    edge.post("/t/e/x", b"first");
    edge.post("/t/e/y/deeper", b"not matched by +");
    edge.post("/t/e/y", b"second");

    let (ev, data) = sse.sse().unwrap();
    assert_eq!(ev, "message");
    let v: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (v["topic"].as_str(), v["payload"].as_str()),
        (Some("e/x"), Some("first"))
    );
    let (ev, data) = sse.sse().unwrap();
    assert_eq!(ev, "message");
    assert!(data.contains("\"second\""));
    assert_eq!(sse.sse(), None, "limit=2 ends the SSE stream");

    assert_eq!(raw.line().as_deref(), Some("first"));
    assert_eq!(raw.line().as_deref(), Some("second"));
    assert_eq!(raw.line(), None, "limit=2 ends the raw stream");
}

#[test]
fn quiet_streams_get_keepalives_and_timeout_ends_them() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.stream_keepalive = Duration::from_millis(100)),
        ..Setup::default()
    });
    let started = Instant::now();
    let mut s = Stream::open(edge.http, "/t/quiet/json?timeout=2s", &[]).unwrap();
    let ka = s.json().unwrap();
    assert_eq!(ka["event"], "keepalive", "{ka}");
    assert!(ka["time"].is_u64());
    let mut keepalives = 1;
    while let Some(v) = s.json() {
        assert_eq!(v["event"], "keepalive", "{v}");
        keepalives += 1;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "timeout=2s ended it after {took:?}"
    );
    assert!(keepalives >= 5, "a keepalive every 100 ms: {keepalives}");

    let mut sse = Stream::open(edge.http, "/t/quiet/sse?timeout=1s", &[]).unwrap();
    assert_eq!(sse.sse(), Some(("comment".into(), "keepalive".into())));
    let mut raw = Stream::open(edge.http, "/t/quiet/raw?timeout=1s", &[]).unwrap();
    assert_eq!(
        raw.line().as_deref(),
        Some(""),
        "an empty line on a raw stream"
    );
    while sse.sse().is_some() {}
    while raw.line().is_some() {}
}

#[test]
fn a_stream_that_falls_behind_gets_a_lag_event() {
    const RING: u64 = 16;
    let edge = Edge::with(Setup {
        limits: Limits {
            ring_messages: RING as usize,
            ..Limits::default()
        },
        ..Setup::default()
    });
    let mut s = Stream::open(edge.http, "/t/lag/t/json", &[]).unwrap();
    // Publish without reading the stream until the broker holds back more than a ring's
    // worth for it: its socket and its channel are full, and the ring overtook it.
    let client = edge.sdk();
    let payload = vec![b'x'; 4096];
    let mut sent = 0u64;
    let pending = || {
        http_conns(&edge.stats())
            .first()
            .and_then(|c| c["pending"].as_u64())
            .unwrap_or(0)
    };
    while pending() <= 2 * RING {
        for _ in 0..200 {
            client.publish("lag/t", &payload).unwrap();
        }
        sent += 200;
        client.publish_confirmed("lag/t", &payload).unwrap();
        sent += 1;
        assert!(
            sent < 100_000,
            "the stream never fell behind: {}",
            edge.stats()
        );
    }
    // Now read: messages, then a lag event saying how many were skipped and where the
    // stream goes on.
    let mut messages = 0u64;
    let lag = loop {
        let v = s.event().expect("the stream goes on");
        if v["event"] == "lag" {
            break v;
        }
        assert_eq!(v["topic"], "lag/t");
        messages += 1;
        assert!(messages <= sent, "no lag event after {messages} messages");
    };
    assert_eq!(lag["topic"], "lag/t");
    assert!(lag["missed"].as_u64().unwrap() > 0, "{lag}");
    let next = lag["next"].as_u64().unwrap();
    assert_eq!(lag.as_object().unwrap().len(), 4, "{lag}");
    // The next message is the one the lag event named.
    let after = s.event().unwrap();
    assert_eq!(after["offset"].as_u64(), Some(next), "{after}");
    eventually(PATIENCE, "the lag is counted", || {
        edge.stats()["totals"]["lag_events"].as_u64() >= Some(1)
    });
}

#[test]
fn an_ended_stream_frees_its_connection_and_slot() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.max_streams = 1),
        ..Setup::default()
    });
    for round in 0..3 {
        let mut s = Stream::open(edge.http, "/t/once/json?limit=1", &[])
            .unwrap_or_else(|r| panic!("round {round}: {}", r.text()));
        edge.post("/t/once", b"x");
        assert_eq!(s.event().unwrap()["payload"], "x");
        assert_eq!(s.json(), None);
        // No message will come to the finished stream's engine connection: it must go
        // anyway, and its slot with it.
        eventually(PATIENCE, "the stream's connection is gone", || {
            http_conns(&edge.stats()).is_empty()
        });
    }
    // A stream whose time ran out goes the same way.
    let mut s = Stream::open(edge.http, "/t/once/json?timeout=100ms", &[]).unwrap();
    while s.json().is_some() {}
    eventually(
        PATIENCE,
        "the timed-out stream's connection is gone",
        || http_conns(&edge.stats()).is_empty(),
    );
    // And one whose client left.
    let s = Stream::open(edge.http, "/t/once/json", &[]).unwrap();
    drop(s);
    // Noticed when a write fails (the first one after the close may still succeed).
    eventually(
        PATIENCE,
        "the abandoned stream's connection is gone",
        || {
            edge.post("/t/once", b"noticed when written");
            http_conns(&edge.stats()).is_empty()
        },
    );
    assert!(Stream::open(edge.http, "/t/once/json?timeout=10ms", &[]).is_ok());
}

// ---------------------------------------------------------------------------------------
// Errors.

#[test]
fn errors_are_json_with_the_right_status_and_code() {
    let edge = Edge::with(Setup {
        limits: Limits {
            max_payload: 1024,
            ..Limits::default()
        },
        ..Setup::default()
    });
    edge.get("/nope").assert_error(404, "not_found");
    edge.get("/t/").assert_error(404, "not_found");
    edge.get("/api/nothing").assert_error(404, "not_found");

    for (method, target, allow) in [
        ("DELETE", "/t/a/b", "GET, POST, PUT"),
        ("PATCH", "/t/a/b/json", "GET, POST, PUT"),
        ("POST", "/api/stats", "GET"),
        ("PUT", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
        ("DELETE", "/", "GET"),
        ("GET", "/api/edge/product", "POST"),
        ("PUT", "/api/edge/product/async", "POST"),
    ] {
        let r = edge.req(method, target, &[], b"");
        let v = r.assert_error(405, "method_not_allowed");
        assert_eq!(v["allow"], allow, "{method} {target}");
    }

    let big = vec![b'x'; 1025];
    let v = edge
        .post("/t/big", &big)
        .assert_error(413, "payload_too_large");
    assert!(v["error"].as_str().unwrap().contains("1024"), "{v}");
    assert_eq!(
        edge.post("/t/big", &big[..1024]).status,
        200,
        "at the limit is fine"
    );

    edge.post("/t/a/%2B", b"x").assert_error(400, "bad_topic");
    edge.post("/t/a/%23", b"x").assert_error(400, "bad_topic");
    edge.post("/t/a//b", b"x").assert_error(400, "bad_topic");
    let long = "x/".repeat(20) + "x";
    edge.post(&format!("/t/{long}"), b"x")
        .assert_error(400, "bad_topic");
    // A wildcard level makes a GET a poll of every matching topic; a broken filter is 400.
    assert_eq!(edge.get("/t/a/%2B").status, 200);
    edge.get("/t/a%2Bb/%2B").assert_error(400, "bad_filter");
    edge.get("/t/a/%23/b").assert_error(400, "bad_filter");
    edge.get("/t/a/%ZZ").assert_error(400, "bad_request");
    let r = Stream::open(edge.http, "/t/a/%23/b/json", &[]).unwrap_err();
    r.assert_error(400, "bad_filter");
    for target in [
        "/t/a?since=soon",
        "/t/a?since=time:yesterday",
        "/t/a?since=ago:forever",
        "/t/a?since=last:-1",
        "/t/a/%2B?since=soon",
        "/t/a/json?since=time:2026-13-01T00:00:00Z",
        "/t/a?limit=-1",
        "/t/a?limit=many",
        "/t/a/json?since=never",
        "/t/a/json?since=last:x",
        "/t/a/json?limit=x",
        "/t/a/json?timeout=forever",
    ] {
        match Stream::open(edge.http, target, &[]) {
            Err(r) => {
                r.assert_error(400, "bad_request");
            }
            Ok(_) => panic!("{target} opened a stream"),
        }
    }
    edge.post("/t/a?wait=forever", b"x")
        .assert_error(400, "bad_request");
    edge.post("/t/a?wait=delivered&timeout=soon", b"x")
        .assert_error(400, "bad_request");
    // Every error above was JSON; none was a 200, nor HTML.
}

#[test]
fn tokens_as_bearer_or_query_named_and_with_rules() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    let bearer = format!("Bearer {DEFAULT_SECRET}");
    let kitchen = format!("Bearer kitchen:{KITCHEN_SECRET}");

    // Missing or wrong: 401 with WWW-Authenticate.
    let r = edge.post("/t/home/kitchen/t", b"x");
    r.assert_error(401, "unauthorized");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer realm=\"mote\""));
    let r = edge.req(
        "GET",
        "/t/home/kitchen/t",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        b"",
    );
    r.assert_error(401, "unauthorized");
    assert!(r.header("WWW-Authenticate").is_some());
    // The health check and the API description are open; the status page too.
    assert_eq!(edge.get("/healthz").status, 200);
    assert_eq!(edge.get("/api/openapi.json").status, 200);
    assert_eq!(edge.get("/").status, 200);
    edge.get("/api/stats").assert_error(401, "unauthorized");
    edge.get("/metrics").assert_error(401, "unauthorized");
    Stream::open(edge.http, "/t/home/%23/json", &[])
        .unwrap_err()
        .assert_error(401, "unauthorized");

    // Bearer, ?auth= and named tokens work.
    let r = edge.req(
        "POST",
        "/t/home/kitchen/t",
        &[("Authorization", &bearer)],
        b"1",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lower = format!("bearer {DEFAULT_SECRET}");
    let r = edge.req(
        "POST",
        "/t/home/kitchen/t",
        &[("Authorization", &lower)],
        b"1b",
    );
    assert_eq!(
        r.status,
        200,
        "the scheme is case-insensitive: {}",
        r.text()
    );
    let r = edge.post(&format!("/t/home/kitchen/t?auth={DEFAULT_SECRET}"), b"2");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.post(
        &format!("/t/home/kitchen/t?auth=kitchen:{KITCHEN_SECRET}"),
        b"3",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.req(
        "POST",
        "/t/home/kitchen/t",
        &[("Authorization", &kitchen)],
        b"4",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let read = edge.req(
        "GET",
        "/t/home/kitchen/t",
        &[("Authorization", &kitchen)],
        b"",
    );
    assert_eq!(read.json()["messages"].as_array().unwrap().len(), 5);

    // The kitchen token's rules: 403 outside them, naming the rule.
    let v = edge
        .req(
            "POST",
            "/t/home/hall/t",
            &[("Authorization", &kitchen)],
            b"x",
        )
        .assert_error(403, "forbidden");
    assert!(
        v["error"].as_str().unwrap().contains("home/kitchen/#"),
        "{v}"
    );
    edge.req("GET", "/t/office/x", &[("Authorization", &kitchen)], b"")
        .assert_error(403, "forbidden");
    Stream::open(edge.http, "/t/%23/json", &[("Authorization", &kitchen)])
        .unwrap_err()
        .assert_error(403, "forbidden");
    edge.req("GET", "/api/stats", &[("Authorization", &kitchen)], b"")
        .assert_error(403, "forbidden");
    edge.req("GET", "/metrics", &[("Authorization", &kitchen)], b"")
        .assert_error(403, "forbidden");
    // ... and what they allow.
    let mut s = Stream::open(
        edge.http,
        &format!("/t/home/%23/json?limit=1&auth=kitchen:{KITCHEN_SECRET}"),
        &[],
    )
    .unwrap();
    edge.req(
        "POST",
        "/t/home/kitchen/t",
        &[("Authorization", &bearer)],
        b"seen",
    );
    assert_eq!(s.event().unwrap()["payload"], "seen");

    // The stream shows its token's name in the stats; the secret appears nowhere.
    let admin = format!("Bearer admin:{ADMIN_SECRET}");
    let _s = Stream::open(
        edge.http,
        "/t/home/%23/json",
        &[("Authorization", &kitchen)],
    )
    .unwrap();
    let stats = edge.stats_as(&[("Authorization", &admin)]);
    let conns = http_conns(&stats);
    assert!(conns.iter().any(|c| c["token"] == "kitchen"), "{stats}");
    assert_eq!(stats["broker"]["tokens"], 3);
    assert!(!stats.to_string().contains(KITCHEN_SECRET));
}

#[test]
fn repeated_bad_tokens_get_429_with_retry_after() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    let mut statuses = Vec::new();
    let blocked = loop {
        let r = edge.req(
            "GET",
            "/t/x",
            &[("Authorization", "Bearer nope:not-the-token-012345")],
            b"",
        );
        statuses.push(r.status);
        if r.status == 429 {
            break r;
        }
        r.assert_error(401, "unauthorized");
        assert!(statuses.len() < 10, "never blocked: {statuses:?}");
    };
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 429],
        "three mistakes are free"
    );
    blocked.assert_error(429, "too_many_failures");
    let wait: u64 = blocked.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // Blocked means blocked, whatever the token, until the wait is over.
    edge.req(
        "GET",
        "/t/x",
        &[("Authorization", &format!("Bearer {DEFAULT_SECRET}"))],
        b"",
    )
    .assert_error(429, "too_many_failures");
    assert_eq!(edge.get("/healthz").status, 200, "open routes stay open");
    // The failures are counted (the stats need the right to read them: wait it out).
    std::thread::sleep(Duration::from_secs(wait)); // the backoff is time itself
    let stats = edge.stats_as(&[("Authorization", &format!("Bearer {DEFAULT_SECRET}"))]);
    assert_eq!(stats["totals"]["auth_failures"], 4, "{}", stats["totals"]);
}

#[test]
fn past_max_requests_and_max_streams_comes_503() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| {
            h.max_requests = 3;
            h.max_streams = 2;
        }),
        ..Setup::default()
    });
    let s1 = Stream::open(edge.http, "/t/o/json", &[]).unwrap();
    let s2 = Stream::open(edge.http, "/t/o/sse", &[]).unwrap();
    let r = edge.get("/t/o/raw");
    let v = r.assert_error(503, "too_many_streams");
    assert!(v["error"].as_str().unwrap().contains("--http-max-streams"));
    // Two streams hold two of the three request slots: one request at a time remains.
    assert_eq!(edge.post("/t/o", b"ok").status, 200);
    // A publish waiting for a delivery that will not come takes the last one, and the
    // next request is told to come back.
    let mut waiting = connect(edge.http).unwrap();
    send_head(
        &mut waiting,
        "POST",
        "/t/nobody?wait=delivered&timeout=10s",
        &[],
        b"w",
    )
    .unwrap();
    let r = wait_for("the waiting publish to take the last slot", || {
        let r = edge.get("/healthz");
        (r.status == 503).then_some(r)
    });
    let v = r.assert_error(503, "overloaded");
    assert!(v["error"].as_str().unwrap().contains("--http-max-requests"));
    // Slots come back when requests end: the streams when their clients go.
    drop(s1);
    drop(s2);
    assert_eq!(edge.get("/healthz").status, 200);
    eventually(PATIENCE, "stream slots are given back", || {
        Stream::open(edge.http, "/t/o/json?timeout=10ms", &[]).is_ok()
    });
    drop(waiting);
}

#[test]
fn a_stalled_body_holds_no_request_slot() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.max_requests = 1),
        ..Setup::default()
    });
    // Bodies still arriving are capped by connections, bytes and time, not by request
    // slots: a stalled one does not stop others from being answered.
    let mut stalled = connect(edge.http).unwrap();
    stalled
        .write_all(b"POST /t/b HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhalf")
        .unwrap();
    for _ in 0..5 {
        assert_eq!(edge.get("/healthz").status, 200);
    }
    // When the rest comes, it is answered.
    stalled.write_all(b"-done").unwrap();
    let (status, _) = read_head(&mut BufReader::new(stalled)).unwrap();
    assert_eq!(status, 200);
    let read = edge.get("/t/b").json();
    assert_eq!(read["messages"][0]["payload"], "half-done");
}

#[test]
fn a_huge_declared_body_is_refused_without_harm() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.max_requests = 2),
        ..Setup::default()
    });
    // Refused by its declared length before a byte of it is read (tiny_http used to
    // allocate the declared size to drain it: 100 TB), with a length and a close, so the
    // client is done at once.
    for target in ["/t/a", "/healthz", "/api/edge/product", "/nope"] {
        let mut s = connect(edge.http).unwrap();
        s.write_all(
            format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\nab"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 413, "{target}");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("Content-Type").as_deref(), Some("application/json"));
        assert_eq!(header("Connection").as_deref(), Some("close"));
        let n: usize = header("Content-Length").unwrap().parse().unwrap();
        let mut body = vec![0; n];
        r.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "payload_too_large");
        // And then the broker closes the connection.
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{target}: {rest:?}");
    }
    // Also while every request slot is taken.
    let _a = Stream::open(edge.http, "/t/h/json?timeout=1s", &[]).unwrap();
    let _b = Stream::open(edge.http, "/t/h/sse?timeout=1s", &[]).unwrap();
    let mut s = connect(edge.http).unwrap();
    s.write_all(b"PUT /t/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n")
        .unwrap();
    let (status, _) = read_head(&mut BufReader::new(s)).unwrap();
    assert_eq!(status, 413);
    drop((_a, _b));
    assert_eq!(edge.post("/t/a", b"fine").status, 200);
    let client = edge.sdk();
    client
        .publish_confirmed("t/tcp", "and the TCP side too")
        .unwrap();
}

#[test]
fn a_client_waiting_for_100_continue_gets_413_and_a_close() {
    let edge = Edge::start();
    // What `curl --data-binary @20MB.bin` sends: it waits for 100 Continue.
    let mut s = connect(edge.http).unwrap();
    s.write_all(
        b"POST /t/x HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 413);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "Connection" && v == "close")
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once");
    // One that sends its body anyway is answered as soon as the head is read.
    let mut s = connect(edge.http).unwrap();
    s.write_all(b"POST /t/x HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n")
        .unwrap();
    let _ = s.write_all(&vec![b'z'; 256 * 1024]);
    let (status, _) = read_head(&mut BufReader::new(s)).unwrap();
    assert_eq!(status, 413);
    // And a body within the limit that waits for 100 Continue gets it.
    let mut s = connect(edge.http).unwrap();
    s.write_all(
        b"POST /t/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 100);
    s.write_all(b"hello").unwrap();
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn slow_clients_do_not_hold_up_others() {
    let edge = Edge::start();
    // Half a request line, half a body, and a stream that is never read.
    let mut half_head = connect(edge.http).unwrap();
    half_head.write_all(b"GET /t/slow HT").unwrap();
    let mut half_body = connect(edge.http).unwrap();
    half_body
        .write_all(b"POST /t/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
        .unwrap();
    let _unread = Stream::open(edge.http, "/t/slow/json", &[]).unwrap();
    let client = edge.sdk();
    for _ in 0..2000 {
        client.publish("slow", vec![b'z'; 1024]).unwrap();
    }
    client.flush().unwrap();
    // Others are served at once.
    for i in 0..20 {
        let started = Instant::now();
        assert_eq!(edge.post("/t/fast", format!("{i}").as_bytes()).status, 200);
        let read = edge.get(&format!("/t/fast?since={i}")).json();
        assert_eq!(read["messages"][0]["payload"], format!("{i}"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "publish and read took {:?}",
            started.elapsed()
        );
    }
    drop(half_head);
    drop(half_body);
}

#[test]
fn a_stream_that_never_reads_is_cut_by_the_write_timeout() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| {
            h.max_streams = 1;
            h.write_timeout = Duration::from_millis(300);
        }),
        ..Setup::default()
    });
    let unread = Stream::open(edge.http, "/t/nr/json", &[]).unwrap();
    let client = edge.sdk();
    // Enough to fill the socket buffers both ways, in batches until the writer gives up.
    let payload = vec![b'n'; 16 * 1024];
    wait_for("the stuck stream to be cut", || {
        for _ in 0..64 {
            client.publish("nr", &payload).unwrap();
        }
        client.flush().unwrap();
        Stream::open(edge.http, "/t/nr/json?timeout=10ms", &[]).ok()
    });
    drop(unread);
}

// ---------------------------------------------------------------------------------------
// Stats, metrics, health, static files and the API description.

#[test]
fn stats_match_what_was_published() {
    let edge = Edge::with(Setup {
        limits: Limits {
            max_payload: 4096,
            ..Limits::default()
        },
        ..Setup::default()
    });
    let mut s = Stream::open(edge.http, "/t/st/%23/json", &[]).unwrap();
    for (topic, n) in [("st/a", 3), ("st/b", 2)] {
        for _ in 0..n {
            assert_eq!(edge.post(&format!("/t/{topic}"), b"12345").status, 200);
        }
    }
    for _ in 0..5 {
        s.event().unwrap();
    }
    let stats = edge.stats();
    let b = &stats["broker"];
    assert_eq!(b["version"], mote::session::BROKER_NAME);
    assert_eq!(b["topics"], 2);
    assert_eq!(b["stored_messages"], 5);
    assert_eq!(b["http"], edge.http.to_string());
    assert_eq!(b["tcp"], edge.broker.addr.to_string());
    assert_eq!(b["tokens"], 0);
    assert!(b["uptime_s"].as_f64().unwrap() >= 0.0);
    assert!(b["rss_bytes"].as_u64().unwrap() > 0);
    assert!(b["memory_used_bytes"].as_u64().unwrap() >= 25);
    assert!(b["time_ms"].is_u64());
    let t = &stats["totals"];
    assert_eq!(t["published"], 5);
    assert_eq!(t["bytes_published"], 25);
    assert_eq!(t["delivered"], 5);
    assert_eq!(t["errors"], json!({}));
    assert_eq!(stats["limits"]["max_payload"], 4096);
    for k in ["publish_per_s", "deliver_per_s"] {
        assert!(stats["rates"][k].is_number());
    }
    let topics = stats["topics"].as_array().unwrap();
    let a = topics.iter().find(|t| t["name"] == "st/a").unwrap();
    assert_eq!(a["published"], 3);
    assert_eq!(a["stored"], 3);
    assert_eq!(a["first"], 0);
    assert_eq!(a["next"], 3);
    assert_eq!(a["delivered"], 3);
    assert_eq!(a["subscribers"], 1);
    let conns = http_conns(&stats);
    assert_eq!(conns.len(), 1, "the stream is an http connection: {stats}");
    assert_eq!(conns[0]["subscriptions"], json!(["st/#"]));
    assert_eq!(conns[0]["msgs_out"], 5);
    // What the stream wrote to its client: five JSON lines of at least 60 bytes each.
    wait_for("the stream's bytes counted", || {
        let n = http_conns(&edge.stats())[0]["bytes_out"].as_u64().unwrap();
        (n >= 5 * 60).then_some(n)
    });
    assert!(conns[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The publishing side is not listed as a connection.
    assert_eq!(b["connections"], 1);

    // A TCP client shows up with kind tcp.
    let client = edge.sdk();
    client.publish_confirmed("st/c", "x").unwrap();
    let stats = edge.stats();
    let kinds: Vec<&str> = stats["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"tcp") && kinds.contains(&"http"),
        "{kinds:?}"
    );
}

#[test]
fn metrics_parse_as_prometheus_text_with_capped_topic_series() {
    let edge = Edge::with(Setup {
        tune: Box::new(|h| h.metrics_topics = 2),
        ..Setup::default()
    });
    for (topic, n) in [("m/a", 4), ("m/b", 3), ("m/c", 2), ("m/d", 1)] {
        for _ in 0..n {
            edge.post(&format!("/t/{topic}"), b"1234");
        }
    }
    let _s = Stream::open(edge.http, "/t/m/%23/json", &[]).unwrap();
    let r = edge.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    // Every line is a HELP, a TYPE or a sample (the parser skips what it cannot read).
    for line in text.lines() {
        assert!(
            !matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Ignored
            ),
            "unparsable line {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let one = |name: &str, label: Option<(&str, &str)>| -> prometheus_parse::Value {
        let found: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {label:?}: {found:?}");
        found[0].value.clone()
    };
    use prometheus_parse::Value::{Counter, Gauge};
    assert_eq!(one("mote_published_total", None), Counter(10.0));
    assert_eq!(one("mote_published_bytes_total", None), Counter(40.0));
    assert_eq!(one("mote_topics", None), Gauge(4.0));
    assert_eq!(one("mote_stored_messages", None), Gauge(10.0));
    assert_eq!(one("mote_connections", Some(("kind", "http"))), Gauge(1.0));
    assert_eq!(one("mote_connections", Some(("kind", "tcp"))), Gauge(0.0));
    assert_eq!(
        one("mote_evicted_total", Some(("reason", "ring"))),
        Counter(0.0)
    );
    // Management and expiry: every kind of operation has its series, from 0.
    for op in ["purge", "delete_topic", "meta", "seek", "delete_group"] {
        assert_eq!(
            one("mote_admin_ops_total", Some(("op", op))),
            Counter(0.0),
            "{op}"
        );
    }
    for name in [
        "mote_topics_expired_total",
        "mote_groups_expired_total",
        "mote_dead_letters_held_total",
    ] {
        assert_eq!(one(name, None), Counter(0.0), "{name}");
    }
    assert!(matches!(one("mote_uptime_seconds", None), Gauge(x) if x >= 0.0));
    assert!(matches!(one("mote_rss_bytes", None), Gauge(x) if x > 0.0));
    // Per topic: the two most published by name, the rest summed as _other.
    let per_topic: Vec<(String, f64)> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mote_topic_published_total")
        .map(|s| match s.value {
            Counter(v) => (s.labels.get("topic").unwrap().to_string(), v),
            ref other => panic!("a counter: {other:?}"),
        })
        .collect();
    assert_eq!(
        per_topic,
        [
            ("m/a".into(), 4.0),
            ("m/b".into(), 3.0),
            ("_other".into(), 3.0)
        ]
    );
    // The _other series sums the topics it stands for.
    let stats = edge.stats();
    let bytes = |name: &str| {
        stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["bytes"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        one("mote_topic_stored_bytes", Some(("topic", "_other"))),
        Gauge(bytes("m/c") + bytes("m/d"))
    );
    assert_eq!(
        one("mote_topic_stored_messages", Some(("topic", "m/a"))),
        Gauge(4.0)
    );
    // Series per topic stay bounded however many topics there are.
    for i in 0..20 {
        edge.post(&format!("/t/m/many/{i}"), b"1");
    }
    let text = edge.get("/metrics").text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let series = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mote_topic_published_total")
        .count();
    assert_eq!(series, 3, "two topics and _other");
    // Every sample has a TYPE, and counters are named _total.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = line.split_whitespace().skip(2);
        let (name, kind) = (w.next().unwrap(), w.next().unwrap());
        assert!(name.starts_with("mote_"), "{line}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
    }
    for s in &scrape.samples {
        assert!(
            text.contains(&format!("# TYPE {} ", s.metric)),
            "{} has no TYPE",
            s.metric
        );
    }
}

#[test]
fn health_static_files_and_the_api_description() {
    let edge = Edge::start();
    let h = edge.get("/healthz").json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], mote::session::BROKER_NAME);
    assert!(h["uptime_s"].is_number());
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/api/openapi.json", "application/json"),
    ] {
        let r = edge.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Type"), Some(ty), "{path}");
        assert!(!r.body.is_empty(), "{path}");
    }
    assert_eq!(edge.get("/favicon.ico").status, 204);
    let head = edge.req("HEAD", "/healthz", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("application/json"));
    // HEAD on a stream: its head, no stream.
    let head = edge.req("HEAD", "/t/x/json", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("application/x-ndjson"));
    eventually(PATIENCE, "no stream is left open", || {
        http_conns(&edge.stats()).is_empty()
    });

    // The API description is OpenAPI 3 and describes every route the edge serves.
    let doc = edge.get("/api/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/",
        "/index.html",
        "/app.js",
        "/style.css",
        "/favicon.ico",
        "/healthz",
        "/api/openapi.json",
        "/api/stats",
        "/metrics",
        "/api/topics",
        "/api/topics/{topic}",
        "/api/topics/{topic}/purge",
        "/api/topics/{topic}/meta",
        "/api/groups",
        "/api/groups/{name}",
        "/api/groups/{name}/seek",
        "/t/{topic}",
        "/t/{filter}/json",
        "/t/{filter}/sse",
        "/t/{filter}/raw",
        "/api/edge/product",
        "/api/edge/product/async",
        "/ack",
        "/nack",
        "/tx/{id}/commit",
        "/tx/{id}/rollback",
    ] {
        assert!(paths.iter().any(|x| *x == p), "{p} is not described");
    }
    assert_eq!(paths.len(), 26, "{paths:?}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["components"]["securitySchemes"]["auth"]["in"], "query");
}

/// The built-in files are the work tree's. A client that accepts `deflate` gets them as the
/// binary stores them (zlib); any other gets them inflated. Both answers say `Vary`.
#[test]
fn static_files_are_sent_deflated_to_clients_that_accept_it() {
    let edge = Edge::start();
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |file: &str| std::fs::read(format!("{root}/{file}")).unwrap();
    let openapi: Value = serde_json::from_slice(&read("src/http/openapi.json")).unwrap();
    // The page's files byte for byte; the API description as a document (it is stored
    // without its indentation).
    let same = |file: &str, body: &[u8]| {
        if file.ends_with(".json") {
            serde_json::from_slice::<Value>(body).unwrap() == openapi
        } else {
            body == read(file).as_slice()
        }
    };
    let accepting = [
        "deflate",
        "gzip, deflate, br, zstd",
        "br;q=1.0, deflate;q=0.5",
        "DEFLATE ; Q=0.1",
        "*",
        "gzip;q=0, *;q=0.2",
    ];
    let refusing = [
        "",
        "gzip, br",
        "identity",
        "deflate;q=0",
        "deflate;q=0.000",
        "*;q=0",
        "*, deflate;q=0",
        "deflate;q=zero",
        "deflated",
    ];
    for (path, file) in [
        ("/", "web/index.html"),
        ("/index.html", "web/index.html"),
        ("/app.js", "web/app.js"),
        ("/style.css", "web/style.css"),
        ("/api/openapi.json", "src/http/openapi.json"),
    ] {
        let plain = edge.get(path);
        assert_eq!(plain.status, 200, "{path}");
        assert_eq!(plain.header("Content-Encoding"), None, "{path}");
        assert_eq!(plain.header("Vary"), Some("Accept-Encoding"), "{path}");
        assert!(same(file, &plain.body), "{path} is not {file}");
        for accept in refusing {
            let r = edge.req("GET", path, &[("Accept-Encoding", accept)], b"");
            assert_eq!(r.header("Content-Encoding"), None, "{path}, {accept:?}");
            assert_eq!(r.body, plain.body, "{path}, {accept:?}");
        }
        let mut stored = None;
        for accept in accepting {
            let r = edge.req("GET", path, &[("Accept-Encoding", accept)], b"");
            assert_eq!(r.status, 200, "{path}, {accept:?}");
            assert_eq!(
                r.header("Content-Encoding"),
                Some("deflate"),
                "{path}, {accept:?}"
            );
            assert_eq!(r.header("Vary"), Some("Accept-Encoding"), "{path}");
            let inflated = miniz_oxide::inflate::decompress_to_vec_zlib(&r.body)
                .unwrap_or_else(|e| panic!("{path}: not zlib: {e:?}"));
            assert_eq!(inflated, plain.body, "{path}, {accept:?}");
            assert!(
                r.body.len() * 2 < plain.body.len(),
                "{path}: {} of {} bytes",
                r.body.len(),
                plain.body.len()
            );
            stored = Some(r.body);
        }
        // HEAD says the length GET would send, in the same coding.
        let head = edge.req("HEAD", path, &[("Accept-Encoding", "deflate")], b"");
        assert_eq!(head.header("Content-Encoding"), Some("deflate"), "{path}");
        let len = stored.unwrap().len().to_string();
        assert_eq!(head.header("Content-Length"), Some(len.as_str()), "{path}");
    }
}

// ---------------------------------------------------------------------------------------
// micro-mq's producer form.

/// A `value` sealed as micro-mq's `TokenCrypto` does (Go): key = SHA-256 of the token
/// text, AES-256-GCM, no associated data, `nonce ‖ ciphertext ‖ tag`, base64.
fn micromq_seal(token: &str, nonce: [u8; 12], plain: &[u8]) -> String {
    let key = Sha256::digest(token.as_bytes());
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let sealed = cipher.encrypt(&aes_gcm::Nonce::from(nonce), plain).unwrap();
    B64.encode([&nonce[..], &sealed].concat())
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn micromq_plain_form_without_tokens() {
    let edge = Edge::start();
    let form = json!({"topic": "mq/plain", "key": "k1", "value": B64.encode(b"21.5")});
    let r = edge.post("/api/edge/product", form.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "Accepted");
    assert_eq!(v["offset"], 0);
    assert!(v["response_time"].is_u64());
    assert!(v.get("code").is_none());
    let read = edge.get("/t/mq/plain").json();
    assert_eq!(read["messages"][0]["payload"], "21.5");
    assert_eq!(read["messages"][0]["key"], "k1");

    // The asynchronous route answers 202 once queued; the message is stored soon after.
    let form = json!({"topic": "mq/plain", "value": B64.encode([0xffu8, 0, 1])});
    let r = edge.post("/api/edge/product/async", form.to_string().as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["status"], "Accepted");
    let m = wait_for("the async message to be stored", || {
        let read = edge.get("/t/mq/plain?since=1").json();
        read["messages"].get(0).cloned()
    });
    assert_eq!(m["encoding"], "base64");
    assert_eq!(m["payload"], B64.encode([0xffu8, 0, 1]));
    assert!(m.get("key").is_none(), "an empty key is no key");

    // A producer with a token encrypts even when the broker has none: it is opened.
    let token = sha256_hex("some micro-mq password");
    let form = json!({
        "topic": "mq/plain", "key": "", "token": token,
        "value": micromq_seal(&token, [9; 12], b"sealed"),
    });
    let r = edge.post("/api/edge/product", form.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let read = edge
        .get(&format!("/t/mq/plain?since={}", r.json()["offset"]))
        .json();
    assert_eq!(read["messages"][0]["payload"], "sealed");

    // Failures in micro-mq's words, with mote's status and code.
    for (body, status, micro, code) in [
        (
            "not json".to_string(),
            400,
            "UnmarshalFailed",
            "bad_request",
        ),
        (
            json!({"topic": "mq/x"}).to_string(),
            400,
            "UnmarshalFailed",
            "bad_request",
        ),
        (
            json!({"topic": "mq/x", "value": "%%%"}).to_string(),
            400,
            "UnmarshalFailed",
            "bad_request",
        ),
        (
            json!({"topic": "mq/+", "value": ""}).to_string(),
            400,
            "UnmarshalFailed",
            "bad_topic",
        ),
        (
            json!({"topic": "mq/x", "value": B64.encode(b"short"), "token": token}).to_string(),
            400,
            "UnmarshalFailed",
            "decrypt_failed",
        ),
    ] {
        let r = edge.post("/api/edge/product", body.as_bytes());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["status"], micro, "{body}: {v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(v["error"].is_string() && v["message"] == v["error"]);
    }
}

#[test]
fn micromq_encrypted_values_with_broker_tokens() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    // A vector sealed by another implementation (Python `cryptography`, OpenSSL) from
    // the default token: password = the mote token, token = SHA-256 hex of it, nonce
    // 00 01 .. 0b, plaintext "21.5".
    let token = sha256_hex(DEFAULT_SECRET);
    assert_eq!(
        token,
        "1bd8fd47297046f993e608e398d5905b00a33e163c6b1172dd38887fed05ed6a"
    );
    let known = "AAECAwQFBgcICQoL4kSl9YWRr+YbGpL3erhjmkaR/LY=";
    let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
    assert_eq!(micromq_seal(&token, nonce, b"21.5"), known);
    let form = json!({"topic": "home/kitchen/temp", "key": "", "value": known, "token": token});
    let r = edge.post("/api/edge/product", form.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "Accepted");
    let admin = format!("Bearer admin:{ADMIN_SECRET}");
    let read = edge.req(
        "GET",
        "/t/home/kitchen/temp",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(read.json()["messages"][0]["payload"], "21.5");

    // Binary, with a key, through the async route; upper-case hex is the same token.
    let binary: Vec<u8> = (0..=255).collect();
    let form = json!({
        "topic": "home/kitchen/bin", "key": "k", "token": token.to_uppercase(),
        "value": micromq_seal(&token.to_uppercase(), [7; 12], &binary),
    });
    let r = edge.post("/api/edge/product/async", form.to_string().as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    let m = wait_for("the async message to be stored", || {
        let r = edge.req(
            "GET",
            "/t/home/kitchen/bin",
            &[("Authorization", &admin)],
            b"",
        );
        r.json()["messages"].get(0).cloned()
    });
    assert_eq!(B64.decode(m["payload"].as_str().unwrap()).unwrap(), binary);
    assert_eq!(m["key"], "k");

    // The kitchen token's rights apply to its micro-mq producers.
    let kitchen = sha256_hex(KITCHEN_SECRET);
    let sealed = |topic: &str| {
        json!({"topic": topic, "value": micromq_seal(&kitchen, [1; 12], b"x"), "token": kitchen})
            .to_string()
    };
    assert_eq!(
        edge.post("/api/edge/product", sealed("home/kitchen/t").as_bytes())
            .status,
        200
    );
    let r = edge.post("/api/edge/product", sealed("home/hall/t").as_bytes());
    let v = r.assert_error(403, "forbidden");
    assert_eq!(v["status"], "Refused");

    // A value altered in transit, or sealed with another token, does not open.
    let mut raw = B64.decode(known).unwrap();
    raw[14] ^= 1;
    let form = json!({"topic": "home/kitchen/temp", "value": B64.encode(&raw), "token": token});
    let r = edge.post("/api/edge/product", form.to_string().as_bytes());
    let v = r.assert_error(400, "decrypt_failed");
    assert_eq!(v["status"], "UnmarshalFailed");
    let form = json!({
        "topic": "home/kitchen/temp", "token": token,
        "value": micromq_seal(&kitchen, nonce, b"21.5"),
    });
    edge.post("/api/edge/product", form.to_string().as_bytes())
        .assert_error(400, "decrypt_failed");

    // A token that is no mote token's hash, or none: 401, then 429 like Bearer tokens.
    let form = json!({"topic": "home/kitchen/temp", "value": known, "token": sha256_hex("guess")});
    let r = edge.post("/api/edge/product", form.to_string().as_bytes());
    let v = r.assert_error(401, "unauthorized");
    assert_eq!(v["status"], "TokenIncorrect");
    assert!(r.header("WWW-Authenticate").is_some());
    let form = json!({"topic": "home/kitchen/temp", "value": B64.encode(b"plain")});
    edge.post("/api/edge/product", form.to_string().as_bytes())
        .assert_error(401, "unauthorized");
    let bad = json!({"topic": "home/kitchen/temp", "value": known, "token": "0".repeat(64)});
    let mut last = None;
    for _ in 0..3 {
        last = Some(edge.post("/api/edge/product", bad.to_string().as_bytes()));
    }
    let r = last.unwrap();
    let v = r.assert_error(429, "too_many_failures");
    assert_eq!(v["status"], "TokenIncorrect");
    assert!(r.header("Retry-After").is_some());
}

// ---------------------------------------------------------------------------------------
// Consumer groups over HTTP.

#[test]
fn group_streams_share_messages_and_ack_by_id() {
    let edge = Edge::start();
    let mut a = Stream::open(edge.http, "/t/jobs/%23/json?group=w&prefetch=2", &[]).unwrap();
    let mut b = Stream::open(edge.http, "/t/jobs/%23/json?group=w", &[]).unwrap();
    // A plain stream sees everything.
    let mut all = Stream::open(edge.http, "/t/jobs/%23/json", &[]).unwrap();
    for i in 0..4 {
        assert_eq!(edge.post(&format!("/t/jobs/{i}"), b"job").status, 200);
    }
    let (mut got, mut ids) = (Vec::new(), Vec::new());
    for s in [&mut a, &mut b] {
        for _ in 0..2 {
            let v = s.event().unwrap();
            assert_eq!(v["attempt"], 1, "{v}");
            got.push(v["topic"].as_str().unwrap().to_string());
            ids.push(v["ack"].as_str().unwrap().to_string());
        }
    }
    got.sort();
    assert_eq!(
        got,
        ["jobs/0", "jobs/1", "jobs/2", "jobs/3"],
        "each message to one member"
    );
    for _ in 0..4 {
        assert!(
            all.event().unwrap()["ack"].is_null(),
            "plain streams carry no ack id"
        );
    }
    // JSON ids, text ids; a second ack is refused as unknown.
    let r = edge.post(
        "/ack",
        json!({ "ids": [ids[0], ids[1]] }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["acked"], 2);
    let r = edge.post("/ack", format!("{} {}", ids[2], ids[3]).as_bytes());
    assert_eq!(r.json()["acked"], 2);
    let v = edge
        .post("/ack", ids[0].as_bytes())
        .assert_error(409, "unknown_delivery");
    assert_eq!(v["unknown"], json!([ids[0]]));
    edge.post("/ack", b"nonsense")
        .assert_error(409, "unknown_delivery");
    edge.req("GET", "/ack", &[], b"")
        .assert_error(405, "method_not_allowed");
    edge.post("/ack", b"").assert_error(400, "bad_request");
    let g = &edge.stats()["groups"][0];
    assert_eq!(
        (
            g["name"].as_str(),
            g["members"].as_u64(),
            g["acked"].as_u64()
        ),
        (Some("w"), Some(2), Some(4))
    );
    assert_eq!(g["settings"]["prefetch"], 2, "the first member's settings");
}

#[test]
fn a_group_stream_nacks_and_its_unacked_messages_go_to_the_others_when_it_ends() {
    let edge = Edge::start();
    let mut a = Stream::open(edge.http, "/t/q/json?group=w&durable=true", &[]).unwrap();
    edge.post("/t/q", b"x");
    let first = a.event().unwrap();
    // The delay counts from when the broker took the nack, which is after this instant
    // and before its answer reaches us (measuring from the answer is early under qemu).
    let nacked = Instant::now();
    let r = edge.post(
        "/nack?delay=200ms",
        first["ack"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(r.json()["nacked"], 1, "{}", r.text());
    let again = a.event().unwrap();
    let waited = nacked.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "back after {waited:?}"
    );
    assert_eq!(
        (again["offset"].as_u64(), again["attempt"].as_u64()),
        (Some(0), Some(2))
    );
    // The stream ends without acking: an SDK member of the same durable group gets it.
    drop(a);
    let client = edge.sdk();
    let mut sub = client
        .subscribe_group("q", mote_sdk::Group::new("w"))
        .unwrap();
    match sub.recv_timeout(PATIENCE).unwrap() {
        Some(mote_sdk::GroupEvent::Message(d)) => {
            assert_eq!((d.offset, d.attempt()), (0, 3));
            d.ack().unwrap();
        }
        other => panic!("expected the message, got {other:?}"),
    }
    // Its old id is gone with its stream.
    edge.post("/ack", again["ack"].as_str().unwrap().as_bytes())
        .assert_error(409, "unknown_delivery");
}

#[test]
fn wait_delivered_with_a_group_answers_on_the_ack() {
    let edge = Edge::start();
    let mut a = Stream::open(edge.http, "/t/acked/json?group=w", &[]).unwrap();
    let http = edge.http;
    let waiting = std::thread::spawn(move || {
        request(
            http,
            "POST",
            "/t/acked?wait=delivered&timeout=5s",
            &[],
            b"do it",
        )
    });
    let v = a.event().unwrap();
    assert!(!waiting.is_finished(), "answered before the ack");
    assert_eq!(
        edge.post("/ack", v["ack"].as_str().unwrap().as_bytes())
            .status,
        200
    );
    let r = waiting.join().unwrap();
    assert_eq!(r.json()["delivered"], true, "{}", r.text());
}

#[test]
fn group_stream_errors() {
    let edge = Edge::start();
    let r = Stream::open(edge.http, "/t/jobs/raw?group=w", &[]).unwrap_err();
    r.assert_error(400, "bad_request");
    let r = Stream::open(edge.http, "/t/jobs/json?prefetch=3", &[]).unwrap_err();
    assert!(
        r.assert_error(400, "bad_request")["error"]
            .as_str()
            .unwrap()
            .contains("needs group")
    );
    let r = Stream::open(edge.http, "/t/jobs/json?group=a%2Fb", &[]).unwrap_err();
    r.assert_error(400, "bad_group");
    let r = Stream::open(edge.http, "/t/jobs/json?group=w&ack-timeout=soon", &[]).unwrap_err();
    r.assert_error(400, "bad_request");
}

#[test]
fn group_acks_need_the_token_of_the_stream() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    let kitchen = format!("Bearer kitchen:{KITCHEN_SECRET}");
    let admin = format!("Bearer admin:{ADMIN_SECRET}");
    let mut s = Stream::open(
        edge.http,
        "/t/home/%23/json?group=cooks",
        &[("Authorization", kitchen.as_str())],
    )
    .unwrap();
    edge.req(
        "POST",
        "/t/home/kitchen/oven",
        &[("Authorization", kitchen.as_str())],
        b"on",
    );
    let id = s.event().unwrap()["ack"].as_str().unwrap().to_string();
    edge.req("POST", "/ack", &[], id.as_bytes())
        .assert_error(401, "unauthorized");
    edge.req(
        "POST",
        "/ack",
        &[("Authorization", admin.as_str())],
        id.as_bytes(),
    )
    .assert_error(403, "forbidden");
    let r = edge.req(
        "POST",
        "/ack",
        &[("Authorization", kitchen.as_str())],
        id.as_bytes(),
    );
    assert_eq!(r.json()["acked"], 1, "{}", r.text());
}

#[test]
fn http_errors_are_counted_by_code() {
    let edge = Edge::start();
    edge.post("/t/bad/%2B/t", b"x")
        .assert_error(400, "bad_topic");
    edge.post("/t/bad/%2B/t", b"x")
        .assert_error(400, "bad_topic");
    edge.get("/nowhere").assert_error(404, "not_found");
    let stats = edge.stats();
    let h = &stats["http"];
    assert_eq!(h["errors"]["bad_topic"], 2, "{h}");
    assert_eq!(h["errors"]["not_found"], 1, "{h}");
    assert!(h["requests"].as_u64().unwrap() >= 4, "{h}");
    let metrics = edge.get("/metrics").text();
    assert!(
        metrics.contains("mote_http_errors_total{code=\"bad_topic\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("mote_http_requests_total "), "{metrics}");
}

// ---------------------------------------------------------------------------------------
// Issue 13: a 504 for a group message that was delivered but not acked says so.

#[test]
fn wait_delivered_to_a_group_that_does_not_ack_in_time_says_so() {
    let edge = Edge::start();
    let client = edge.sdk();
    let group = mote_sdk::Group::new("slow").ack_timeout(Duration::from_secs(30));
    let mut member = client.subscribe_group("jobs/#", group).unwrap();
    let r = edge.post("/t/jobs/a?wait=delivered&timeout=300ms", b"job");
    // The member got it (and holds it unacked).
    let held = match member.recv_timeout(PATIENCE).unwrap() {
        Some(mote_sdk::GroupEvent::Message(d)) => d,
        other => panic!("expected the delivery, got {other:?}"),
    };
    assert_eq!(&held.payload[..], b"job");
    let v = r.assert_error(504, "not_delivered");
    assert_eq!(
        v["error"],
        "stored, delivered to a consumer group, but not acked by the group in time (0.3 s)",
        "{v}"
    );
    assert_eq!(v["offset"], 0, "{v}");
    // Acked in time, it is a 200.
    let wait = std::thread::spawn({
        let http = edge.http;
        move || {
            let mut s = connect(http).unwrap();
            send_head(
                &mut s,
                "POST",
                "/t/jobs/b?wait=delivered&timeout=5s",
                &[],
                b"job 2",
            )
            .unwrap();
            read_head(&mut BufReader::new(s)).unwrap().0
        }
    });
    let next = match member.recv_timeout(PATIENCE).unwrap() {
        Some(mote_sdk::GroupEvent::Message(d)) => d,
        other => panic!("expected the delivery, got {other:?}"),
    };
    next.ack().unwrap();
    assert_eq!(wait.join().unwrap(), 200);
    held.ack().unwrap();
}

// ---------------------------------------------------------------------------------------
// The last minute's rates in /api/stats, for the status page's chart.

#[test]
fn stats_carry_the_last_minute_of_rates_a_point_a_second() {
    let edge = Edge::start();
    let h = &edge.stats()["rates"]["history"];
    let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["deliver_per_s", "end_ms", "publish_per_s", "step_ms"],
        "{h}"
    );
    assert_eq!(h["step_ms"], 1000);

    let mut s = Stream::open(edge.http, "/t/hist/%23/json", &[]).unwrap();
    for _ in 0..20 {
        assert_eq!(edge.post("/t/hist/a", b"x").status, 200);
    }
    for _ in 0..20 {
        s.event().unwrap();
    }
    // The points, once rolled, add up to the 20 messages in and out (each point is per
    // the second or so it covers); a point never changes once taken.
    let sum = |v: &Value| -> f64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum()
    };
    let first = wait_for("messages in the rate history, in and out", || {
        let h = edge.stats()["rates"]["history"].clone();
        (sum(&h["publish_per_s"]) >= 15.0 && sum(&h["deliver_per_s"]) >= 15.0).then_some(h)
    });
    let n = first["publish_per_s"].as_array().unwrap().len();
    let stats = wait_for("a quiet second after them", || {
        let st = edge.stats();
        let h = &st["rates"]["history"];
        let quiet = |k: &str| {
            let v = h[k].as_array().unwrap();
            v.len() > n && v.last().unwrap().as_f64() == Some(0.0)
        };
        (quiet("publish_per_s") && quiet("deliver_per_s")).then_some(st)
    });
    let h = &stats["rates"]["history"];
    for k in ["publish_per_s", "deliver_per_s"] {
        let (was, now) = (first[k].as_array().unwrap(), h[k].as_array().unwrap());
        assert_eq!(was[..], now[..was.len()], "{first} then {h}");
        assert!((15.0..=22.0).contains(&sum(&h[k])), "{h}");
        assert!(now.len() <= 60, "{h}");
    }
    let (end, now) = (
        h["end_ms"].as_u64().unwrap(),
        stats["broker"]["time_ms"].as_u64().unwrap(),
    );
    assert!(
        end <= now && now - end <= 2_000,
        "end_ms {end}, time_ms {now}"
    );
}
