//! The management API over real HTTP against a real broker on 127.0.0.1:0:
//! `/api/topics[/<topic>[/purge|/meta]]`, `/api/groups[/<name>[/seek]]`, their rights
//! (a token's `manage` rule), methods and routes, the topic listing written in slices,
//! and the `/metrics` counters they move. Every wait is bounded.
//!
//! Tests marked "waits for the engine" need the engine's purge, delete, metadata and
//! seek (`src/engine/admin.rs`, stubs answering `not_found` until the topics and groups
//! work is merged); the rest pass on their own.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use common::eventually;
use common::http::*;
use mote::auth::{Auth, Rules};
use mote_sdk::secure::Token;
use serde_json::{Value, json};

const OPS_SECRET: &str = "ops-secret-0123456789abcd";
const READER_SECRET: &str = "reader-secret-0123456789";

/// `default` (every right), `ops` (publishes and subscribes everywhere, manages
/// `sensors/#`) and `reader` (subscribes to `#`, no manage rule).
fn manage_tokens() -> Auth {
    let mut a = Auth::single(Token::new(DEFAULT_SECRET).unwrap());
    let all = ["#".to_string()];
    let ops = Rules::new("ops", &all, &all)
        .unwrap()
        .with_manage("ops", &["sensors/#".to_string()])
        .unwrap();
    a.insert("ops", Token::new(OPS_SECRET).unwrap(), ops)
        .unwrap();
    let reader = Rules::new("reader", &[], &all).unwrap();
    a.insert("reader", Token::new(READER_SECRET).unwrap(), reader)
        .unwrap();
    a
}

fn publish(edge: &Edge, topic: &str, payload: &str) -> u64 {
    let r = edge.post(&format!("/t/{topic}"), payload.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["offset"].as_u64().unwrap()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Topics.

#[test]
fn topics_are_listed_filtered_and_shown_in_detail() {
    let edge = Edge::start();
    for (t, p) in [
        ("sensors/kitchen", "21.5"),
        ("sensors/kitchen", "21.6"),
        ("sensors/hall", "19"),
        ("logs/app", "x"),
    ] {
        publish(&edge, t, p);
    }
    let r = edge.get("/api/topics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let all = r.json();
    assert_eq!(
        names(&all, "topics"),
        ["sensors/kitchen", "sensors/hall", "logs/app"],
        "in creation order: {all}"
    );
    let kitchen = &all["topics"][0];
    assert_eq!(kitchen["stored"], 2);
    assert_eq!(kitchen["first"], 0);
    assert_eq!(kitchen["next"], 2);
    assert_eq!(kitchen["published"], 2);
    assert!(kitchen["bytes"].as_u64().unwrap() > 0);
    assert!(kitchen["persist"].is_boolean(), "{kitchen}");

    let some = edge.get("/api/topics?filter=sensors/%2B").json();
    assert_eq!(names(&some, "topics"), ["sensors/kitchen", "sensors/hall"]);
    assert_eq!(
        edge.get("/api/topics?filter=nothing/%23").json(),
        json!({"topics": []})
    );
    edge.get("/api/topics?filter=a/%23/b")
        .assert_error(400, "bad_filter");

    // One topic, its levels as path levels or percent-encoded.
    let d = edge.get("/api/topics/sensors/kitchen").json();
    assert_eq!(d["name"], "sensors/kitchen");
    assert_eq!(d["stored"], 2);
    assert_eq!(d["next"], 2);
    assert_eq!(d["meta"], json!({}));
    assert!(d["groups"].is_array(), "{d}");
    assert!(d["settings"]["persist"]["value"].is_boolean(), "{d}");
    assert_eq!(
        edge.get("/api/topics/sensors%2Fkitchen").json()["name"],
        "sensors/kitchen"
    );
    let v = edge
        .get("/api/topics/sensors/cellar")
        .assert_error(404, "not_found");
    assert!(
        v["error"].as_str().unwrap().contains("sensors/cellar"),
        "{v}"
    );
    edge.get("/api/topics/sensors/%2B")
        .assert_error(400, "bad_topic");
}

/// Waits for the engine (purge, delete, metadata).
#[test]
fn purge_delete_and_metadata() {
    let edge = Edge::start();
    for i in 0..3 {
        publish(&edge, "sensors/kitchen", &format!("{i}"));
    }
    // Purge: the stored messages go, offsets keep going up.
    let r = edge.post("/api/topics/sensors/kitchen/purge", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"topic": "sensors/kitchen", "dropped": 3}));
    let read = edge.get("/t/sensors/kitchen").json();
    assert_eq!(read["messages"], json!([]), "{read}");
    assert_eq!(read["next"], 3);
    assert_eq!(publish(&edge, "sensors/kitchen", "after"), 3);

    // Metadata: set, shown in the detail, removed with "" or null.
    let r = edge.req(
        "PUT",
        "/api/topics/sensors/kitchen/meta",
        &[("Content-Type", "application/json")],
        br#"{"owner": "kitchen-pi", "room": "kitchen"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"topic": "sensors/kitchen", "meta": {"owner": "kitchen-pi", "room": "kitchen"}})
    );
    let r = edge.req(
        "PUT",
        "/api/topics/sensors/kitchen/meta",
        &[],
        br#"{"owner": null, "room": ""}"#,
    );
    assert_eq!(r.json()["meta"], json!({}));
    let r = edge.req(
        "PUT",
        "/api/topics/sensors/kitchen/meta",
        &[],
        br#"{"owner": "x"}"#,
    );
    assert_eq!(r.json()["meta"], json!({"owner": "x"}));
    assert_eq!(
        edge.get("/api/topics/sensors/kitchen").json()["meta"],
        json!({"owner": "x"})
    );
    // The stats document shows it too (and nothing for a topic without metadata).
    publish(&edge, "logs/app", "x");
    let stats = edge.get("/api/stats?topics=all").json();
    let topic = |name: &str| {
        stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
    };
    assert_eq!(topic("sensors/kitchen")["meta"], json!({"owner": "x"}));
    assert!(topic("logs/app").get("meta").is_none(), "{stats}");
    let r = edge.req("DELETE", "/api/topics/logs/app", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());

    // Delete: 204 without a body, then 404 everywhere.
    let r = edge.req("DELETE", "/api/topics/sensors/kitchen", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    edge.get("/api/topics/sensors/kitchen")
        .assert_error(404, "not_found");
    edge.req("DELETE", "/api/topics/sensors/kitchen", &[], b"")
        .assert_error(404, "not_found");
    edge.post("/api/topics/sensors/kitchen/purge", b"")
        .assert_error(404, "not_found");
    assert_eq!(
        names(&edge.get("/api/topics").json(), "topics"),
        Vec::<String>::new()
    );
    // Re-created, it continues above its last offset.
    assert_eq!(publish(&edge, "sensors/kitchen", "again"), 4);
}

#[test]
fn unknown_topics_are_404_and_bad_bodies_400() {
    let edge = Edge::start();
    edge.post("/api/topics/no/such/purge", b"")
        .assert_error(404, "not_found");
    edge.req("DELETE", "/api/topics/no/such", &[], b"")
        .assert_error(404, "not_found");
    edge.req("PUT", "/api/topics/no/such/meta", &[], br#"{"a": "b"}"#)
        .assert_error(404, "not_found");
    publish(&edge, "m/t", "x");
    for body in [
        &b"not json"[..],
        b"",
        b"[1, 2]",
        b"{}",
        br#"{"a": 1}"#,
        br#"{"": "x"}"#,
        br#"{"a=b": "x"}"#,
    ] {
        let v = edge
            .req("PUT", "/api/topics/m/t/meta", &[], body)
            .assert_error(400, "bad_request");
        assert!(v["error"].as_str().unwrap().starts_with("meta: "), "{v}");
    }
    let long = format!(r#"{{"a": "{}"}}"#, "v".repeat(300));
    edge.req("PUT", "/api/topics/m/t/meta", &[], long.as_bytes())
        .assert_error(400, "bad_request");
    let many: String = (0..17)
        .map(|i| format!(r#""k{i}": "v""#))
        .collect::<Vec<_>>()
        .join(",");
    edge.req(
        "PUT",
        "/api/topics/m/t/meta",
        &[],
        format!("{{{many}}}").as_bytes(),
    )
    .assert_error(400, "bad_request");
    // A body over 16 KiB is refused before it is read.
    let huge = vec![b' '; 17 * 1024];
    edge.req("PUT", "/api/topics/m/t/meta", &[], &huge)
        .assert_error(413, "payload_too_large");
}

#[test]
fn methods_and_the_purge_and_meta_suffixes() {
    let edge = Edge::start();
    for (method, target, allow) in [
        ("POST", "/api/topics", "GET"),
        ("DELETE", "/api/topics", "GET"),
        ("POST", "/api/topics/a/b", "GET, DELETE"),
        ("PUT", "/api/topics/a/b", "GET, DELETE"),
        ("GET", "/api/topics/a/b/purge", "POST"),
        ("DELETE", "/api/topics/a/purge", "POST"),
        ("GET", "/api/topics/a/meta", "PUT"),
        ("POST", "/api/topics/a/meta", "PUT"),
        ("PUT", "/api/groups", "GET"),
        ("POST", "/api/groups/g", "GET, DELETE"),
        ("GET", "/api/groups/g/seek", "POST"),
        ("PATCH", "/api/groups/g", "GET, DELETE"),
    ] {
        let r = edge.req(method, target, &[], b"");
        let v = r.assert_error(405, "method_not_allowed");
        assert_eq!(v["allow"], allow, "{method} {target}");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {target}");
    }
    edge.get("/api/groups/a/b").assert_error(404, "not_found");
    edge.get("/api/groups/g/seek/x")
        .assert_error(404, "not_found");

    // A topic whose last level is `purge` or `meta`: its last `/` percent-encoded.
    publish(&edge, "cmd/purge", "x");
    publish(&edge, "cmd/meta", "y");
    let d = edge.get("/api/topics/cmd%2Fpurge").json();
    assert_eq!(
        (d["name"].as_str(), d["stored"].as_u64()),
        (Some("cmd/purge"), Some(1))
    );
    assert_eq!(
        edge.get("/api/topics/cmd%2Fmeta").json()["name"],
        "cmd/meta"
    );
    // A topic named just `purge` needs nothing encoded (there is no topic before it).
    publish(&edge, "purge", "z");
    assert_eq!(edge.get("/api/topics/purge").json()["name"], "purge");
    // An empty topic before the suffix is a bad topic.
    edge.post("/api/topics//purge", b"")
        .assert_error(400, "bad_topic");
}

/// Waits for the engine (purge).
#[test]
fn a_topic_ending_in_purge_is_purged_with_its_slash_encoded() {
    let edge = Edge::start();
    publish(&edge, "cmd/purge", "x");
    let r = edge.post("/api/topics/cmd%2Fpurge/purge", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"topic": "cmd/purge", "dropped": 1}));
}

#[test]
fn a_long_listing_is_written_in_slices_and_others_are_served_meanwhile() {
    let edge = Edge::start();
    let client = edge.sdk();
    const N: usize = 1200;
    for i in 0..N {
        client.publish(&format!("many/{i:04}"), b"x").unwrap();
    }
    client.publish("other", b"x").unwrap();
    // Published: the last one answered, so every one is there.
    eventually(PATIENCE, "every topic published", || {
        edge.get("/t/other").json()["next"] == 1
    });
    let mut s = connect(edge.http).unwrap();
    send_head(&mut s, "GET", "/api/topics?filter=many/%2B", &[], b"").unwrap();
    let mut r = std::io::BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    assert!(
        chunked,
        "more than a page is written in chunks: {headers:?}"
    );
    // The first slice, then a request on another connection while the rest waits.
    let first = read_chunk(&mut r).unwrap().unwrap();
    assert!(first.starts_with(b"{\"topics\":["));
    assert_eq!(edge.get("/healthz").status, 200);
    let mut body = first;
    while let Some(c) = read_chunk(&mut r).unwrap() {
        body.extend_from_slice(&c);
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let listed = names(&v, "topics");
    assert_eq!(listed.len(), N, "every topic once");
    assert_eq!(listed[0], "many/0000");
    assert_eq!(listed[N - 1], format!("many/{:04}", N - 1));
    assert!(v.get("next").is_none(), "no paging left in the document");
    // HEAD: the head alone.
    let head = edge.req("HEAD", "/api/topics", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

// ---------------------------------------------------------------------------------------
// Groups.

fn group_stream(edge: &Edge, name: &str) -> Stream {
    Stream::open(
        edge.http,
        &format!("/t/jobs/%23/json?group={name}&durable=true"),
        &[],
    )
    .unwrap()
}

#[test]
fn groups_are_listed_and_shown() {
    let edge = Edge::start();
    assert_eq!(edge.get("/api/groups").json(), json!({"groups": []}));
    let _a = group_stream(&edge, "workers");
    let _b = group_stream(&edge, "auditors");
    let list = edge.get("/api/groups").json();
    assert_eq!(names(&list, "groups"), ["auditors", "workers"], "by name");
    let g = edge.get("/api/groups/workers").json();
    assert_eq!(g["name"], "workers");
    assert_eq!(g["filter"], "jobs/#");
    assert_eq!(g["members"], 1);
    assert_eq!(g["settings"]["durable"], true);
    for k in ["topics", "age_ms", "in_flight", "backlog", "cursors"] {
        assert!(g.get(k).is_some(), "{k} in {g}");
    }
    let v = edge
        .get("/api/groups/nobody")
        .assert_error(404, "not_found");
    assert!(v["error"].as_str().unwrap().contains("nobody"), "{v}");
    edge.req("DELETE", "/api/groups/nobody", &[], b"")
        .assert_error(404, "not_found");
    edge.req(
        "POST",
        "/api/groups/nobody/seek",
        &[],
        br#"{"to": "earliest"}"#,
    )
    .assert_error(404, "not_found");
}

#[test]
fn seek_targets_are_checked() {
    let edge = Edge::start();
    let _g = group_stream(&edge, "workers");
    for (target, body) in [
        ("/api/groups/workers/seek", &b""[..]),
        ("/api/groups/workers/seek", b"{}"),
        ("/api/groups/workers/seek", b"not json"),
        ("/api/groups/workers/seek", br#"{"to": "soon"}"#),
        ("/api/groups/workers/seek", br#"{"to": -1}"#),
        ("/api/groups/workers/seek", br#"{"to": 1.5}"#),
        ("/api/groups/workers/seek", br#"{"to": true}"#),
        (
            "/api/groups/workers/seek",
            br#"{"to": "time:2026-13-01T00:00:00Z"}"#,
        ),
        ("/api/groups/workers/seek?to=never", b""),
    ] {
        let v = edge
            .req("POST", target, &[], body)
            .assert_error(400, "bad_request");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
}

/// The position of `group` in `topic` as `/api/groups/<group>` shows it.
fn cursor(edge: &Edge, group: &str, topic: &str) -> Value {
    let g = edge.get(&format!("/api/groups/{group}")).json();
    g["cursors"][topic].clone()
}

/// Waits for the engine (seek, delete).
#[test]
fn seek_moves_a_group_and_delete_removes_it() {
    let edge = Edge::start();
    for i in 0..4 {
        publish(&edge, "jobs/a", &format!("{i}"));
    }
    // A durable group that took everything and left: it stays, at the end.
    {
        let mut s = Stream::open(
            edge.http,
            "/t/jobs/%23/json?group=workers&durable=true&since=earliest",
            &[],
        )
        .unwrap();
        for _ in 0..4 {
            let ack = s.event().unwrap()["ack"].as_str().unwrap().to_string();
            let r = edge.post("/ack", ack.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    eventually(PATIENCE, "the member left", || {
        edge.get("/api/groups/workers").json()["members"] == 0
    });
    assert_eq!(cursor(&edge, "workers", "jobs/a"), 4);

    for (how, body, want) in [
        ("/api/groups/workers/seek", &br#"{"to": "earliest"}"#[..], 0),
        ("/api/groups/workers/seek", br#"{"to": 2}"#, 2),
        ("/api/groups/workers/seek?to=latest", b"", 4),
        ("/api/groups/workers/seek", br#"{"to": "last:3"}"#, 1),
        ("/api/groups/workers/seek", br#"{"to": "ago:1h"}"#, 0),
        (
            "/api/groups/workers/seek",
            br#"{"to": "time:2999-01-01T00:00:00Z"}"#,
            4,
        ),
    ] {
        let r = edge.req("POST", how, &[("Content-Type", "application/json")], body);
        assert_eq!(
            r.status,
            200,
            "{how} {}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        let g = r.json();
        assert_eq!(g["name"], "workers");
        assert_eq!(
            g["cursors"]["jobs/a"],
            want,
            "{how} {}: {g}",
            String::from_utf8_lossy(body)
        );
    }
    // After a seek to earliest, a member gets everything again.
    edge.req(
        "POST",
        "/api/groups/workers/seek",
        &[],
        br#"{"to": "earliest"}"#,
    );
    let mut s = Stream::open(
        edge.http,
        "/t/jobs/%23/json?group=workers&durable=true",
        &[],
    )
    .unwrap();
    assert_eq!(s.event().unwrap()["offset"], 0);
    drop(s);

    let r = edge.req("DELETE", "/api/groups/workers", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    edge.get("/api/groups/workers")
        .assert_error(404, "not_found");
    edge.req("DELETE", "/api/groups/workers", &[], b"")
        .assert_error(404, "not_found");
    assert_eq!(edge.get("/api/groups").json(), json!({"groups": []}));
}

// ---------------------------------------------------------------------------------------
// Rights.

#[test]
fn changes_need_a_manage_rule_and_refusals_name_it() {
    let edge = Edge::with(Setup {
        auth: manage_tokens,
        ..Setup::default()
    });
    let default = format!("Bearer {DEFAULT_SECRET}");
    let reader = format!("Bearer reader:{READER_SECRET}");
    let ops = format!("Bearer ops:{OPS_SECRET}");
    for t in ["sensors/kitchen", "logs/app"] {
        let r = edge.req(
            "POST",
            &format!("/t/{t}"),
            &[("Authorization", &default)],
            b"1",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let _g = Stream::open(
        edge.http,
        "/t/logs/%23/json?group=archivers&durable=true",
        &[("Authorization", &default)],
    )
    .unwrap();

    // No token: 401, as everywhere.
    edge.get("/api/topics").assert_error(401, "unauthorized");
    edge.post("/api/topics/sensors/kitchen/purge", b"")
        .assert_error(401, "unauthorized");

    // A token without a manage rule reads, and is refused every change, naming its rules.
    let as_reader = |method: &str, target: &str, body: &[u8]| {
        edge.req(method, target, &[("Authorization", &reader)], body)
    };
    let list = as_reader("GET", "/api/topics", b"").json();
    assert_eq!(names(&list, "topics"), ["sensors/kitchen", "logs/app"]);
    assert_eq!(
        as_reader("GET", "/api/topics/sensors/kitchen", b"").json()["name"],
        "sensors/kitchen"
    );
    for (method, target, body) in [
        ("POST", "/api/topics/sensors/kitchen/purge", &b""[..]),
        ("DELETE", "/api/topics/sensors/kitchen", b""),
        ("PUT", "/api/topics/sensors/kitchen/meta", br#"{"a": "b"}"#),
        (
            "POST",
            "/api/groups/archivers/seek",
            br#"{"to": "earliest"}"#,
        ),
        ("DELETE", "/api/groups/archivers", b""),
    ] {
        let v = as_reader(method, target, body).assert_error(403, "forbidden");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("\"reader\"") && e.contains("manage rules: none"),
            "{method} {target}: {v}"
        );
    }

    // ops manages sensors/#: a change outside it is refused, naming the rule.
    let as_ops = |method: &str, target: &str, body: &[u8]| {
        edge.req(method, target, &[("Authorization", &ops)], body)
    };
    for (method, target, body) in [
        ("POST", "/api/topics/logs/app/purge", &b""[..]),
        ("DELETE", "/api/topics/logs/app", b""),
        ("DELETE", "/api/groups/archivers", b""),
        ("POST", "/api/groups/archivers/seek?to=earliest", b""),
    ] {
        let v = as_ops(method, target, body).assert_error(403, "forbidden");
        assert!(
            v["error"].as_str().unwrap().contains("sensors/#"),
            "{method} {target}: {v}"
        );
    }
    // Inside it, the engine is asked (answers 200 once the engine's purge is merged).
    let r = as_ops("POST", "/api/topics/sensors/kitchen/purge", b"");
    assert_ne!(r.status, 403, "{}", r.text());
}

/// Waits for the engine (purge, delete).
#[test]
fn a_manage_rule_allows_changes_under_it() {
    let edge = Edge::with(Setup {
        auth: manage_tokens,
        ..Setup::default()
    });
    let ops = format!("Bearer ops:{OPS_SECRET}");
    let default = format!("Bearer {DEFAULT_SECRET}");
    let r = edge.req(
        "POST",
        "/t/sensors/kitchen",
        &[("Authorization", &ops)],
        b"1",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.req(
        "POST",
        "/api/topics/sensors/kitchen/purge",
        &[("Authorization", &ops)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.req(
        "DELETE",
        "/api/topics/sensors/kitchen",
        &[("Authorization", &ops)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    // The single-token broker's default token may do everything.
    let r = edge.req("POST", "/t/logs/app", &[("Authorization", &default)], b"1");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.req(
        "DELETE",
        "/api/topics/logs/app",
        &[("Authorization", &default)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// Metrics.

/// The value of `name{op="..."}` (or without labels) in `/metrics`.
fn metric(edge: &Edge, name: &str, op: Option<&str>) -> f64 {
    let text = edge.get("/metrics").text();
    let want = match op {
        Some(op) => format!("{name}{{op=\"{op}\"}} "),
        None => format!("{name} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .unwrap_or_else(|| panic!("no {want} in /metrics"))
        .parse()
        .unwrap()
}

/// Waits for the engine (every operation counted).
#[test]
fn metrics_count_each_kind_of_operation() {
    let edge = Edge::start();
    publish(&edge, "sensors/a", "1");
    let _g = group_stream(&edge, "workers");
    let ok = |r: Reply, status: u16| assert_eq!(r.status, status, "{}", r.text());
    ok(edge.post("/api/topics/sensors/a/purge", b""), 200);
    ok(edge.post("/api/topics/sensors/a/purge", b""), 200);
    ok(
        edge.req("PUT", "/api/topics/sensors/a/meta", &[], br#"{"k": "v"}"#),
        200,
    );
    ok(edge.post("/api/groups/workers/seek?to=earliest", b""), 200);
    ok(edge.req("DELETE", "/api/groups/workers", &[], b""), 204);
    ok(edge.req("DELETE", "/api/topics/sensors/a", &[], b""), 204);
    for (op, n) in [
        ("purge", 2.0),
        ("meta", 1.0),
        ("seek", 1.0),
        ("delete_group", 1.0),
        ("delete_topic", 1.0),
    ] {
        assert_eq!(metric(&edge, "mote_admin_ops_total", Some(op)), n, "{op}");
    }
    // Refused or not found: not counted.
    edge.post("/api/topics/sensors/a/purge", b"")
        .assert_error(404, "not_found");
    assert_eq!(metric(&edge, "mote_admin_ops_total", Some("purge")), 2.0);
    for name in [
        "mote_topics_expired_total",
        "mote_groups_expired_total",
        "mote_dead_letters_held_total",
    ] {
        assert_eq!(metric(&edge, name, None), 0.0, "{name}");
    }
}

#[test]
fn a_stream_on_a_deleted_topic_gets_a_removed_event_and_goes_on_when_it_is_created_again() {
    let edge = Edge::start();
    publish(&edge, "gone/t", "a");
    let mut s = Stream::open(edge.http, "/t/gone/%23/json", &[]).unwrap();
    publish(&edge, "gone/t", "b");
    assert_eq!(s.json().unwrap()["payload"], "b");
    let r = edge.req("DELETE", "/api/topics/gone/t", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    let ev = s.json().unwrap();
    assert_eq!(
        ev,
        json!({"event": "removed", "topic": "gone/t", "unread": 0, "next": 2}),
        "{ev}"
    );
    // Created again above its last offset: the wildcard stream reads it there.
    assert_eq!(publish(&edge, "gone/t", "c"), 2);
    let m = s.json().unwrap();
    assert_eq!(
        (m["payload"].as_str(), m["offset"].as_u64()),
        (Some("c"), Some(2))
    );
}

#[test]
fn a_group_stream_asks_for_an_ephemeral_group_or_a_shorter_expiry() {
    let edge = Edge::start();
    let brief = Stream::open(edge.http, "/t/jobs/%23/json?group=brief&durable=false", &[]).unwrap();
    let nightly = Stream::open(edge.http, "/t/jobs/%23/json?group=nightly&expiry=1h", &[]).unwrap();
    let g = edge.get("/api/groups/brief").json();
    assert_eq!(
        (&g["settings"]["durable"], &g["expiry_ms"]),
        (&json!(false), &json!(null)),
        "{g}"
    );
    let g = edge.get("/api/groups/nightly").json();
    assert_eq!(
        (&g["settings"]["durable"], &g["expiry_ms"]),
        (&json!(true), &json!(3_600_000)),
        "{g}"
    );
    drop((brief, nightly));
    eventually(PATIENCE, "the ephemeral group goes with its stream", || {
        edge.get("/api/groups/brief").status == 404
    });
    eventually(PATIENCE, "the durable one stays, without members", || {
        edge.get("/api/groups/nightly").json()["members"] == 0
    });
    for (q, says) in [
        (
            "group=g&durable=false&expiry=1h",
            "expiry is for a durable group",
        ),
        ("group=g&expiry=0s", "expiry: give a duration above 0"),
        ("group=g&expiry=soon", "expiry:"),
        ("expiry=1h", "expiry needs group=NAME"),
    ] {
        let v = edge
            .get(&format!("/t/jobs/%23/json?{q}"))
            .assert_error(400, "bad_request");
        assert!(v["error"].as_str().unwrap().contains(says), "{q}: {v}");
    }
}
