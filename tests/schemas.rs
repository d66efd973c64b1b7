//! Per-topic JSON schemas end to end: `mote serve` with a config file naming schema files,
//! publishes over TCP (the SDK) and HTTP, a schema refused at start, and SIGHUP reloads.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::http::request;
use common::served::{MOTE, Served};
use mote_sdk::blocking::Client;
use mote_sdk::{Error, ErrorCode, Event, Options, Start};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

const TEMP: &str = r#"{
  "type": "object",
  "required": ["value"],
  "properties": {
    "value": { "type": "number", "minimum": -40, "maximum": 125 },
    "unit": { "enum": ["C", "F"] }
  }
}"#;

/// A fresh directory with `mote.toml` (giving `sensors/+/temp` the schema
/// `schemas/temp.json`) and that schema.
fn setup(name: &str, schema: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mote-schemas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    let config = dir.join("mote.toml");
    std::fs::write(
        &config,
        "[topics.\"sensors/+/temp\"]\nschema = \"schemas/temp.json\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("schemas/temp.json"), schema).unwrap();
    (dir, config)
}

fn serve(config: &Path) -> Served {
    Served::start(&["--config", config.to_str().unwrap()])
}

fn client(s: &Served) -> Client {
    Client::connect(Options::new(s.addr.to_string())).unwrap()
}

/// The broker's refusal of a confirmed publish.
fn refusal(r: Result<u64, Error>) -> (ErrorCode, String) {
    match r {
        Err(Error::Broker { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn get_json(s: &Served, target: &str) -> Value {
    let r = request(s.http.unwrap(), "GET", target, &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn tcp_publishes_are_checked_and_valid_ones_stored_unchanged() {
    let (dir, config) = setup("tcp", TEMP);
    let s = serve(&config);
    let c = client(&s);
    // Spaces and key order kept: stored as sent, not re-serialized.
    let valid = br#"{ "unit":"C",  "value": 21.5 }"#;
    let first = c.publish_confirmed("sensors/kitchen/temp", valid).unwrap();
    let (code, message) =
        refusal(c.publish_confirmed("sensors/kitchen/temp", r#"{"value":"warm"}"#));
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert_eq!(
        message,
        "/value: expected number, got string (schema schemas/temp.json of [topics.\"sensors/+/temp\"])"
    );
    let (_, message) = refusal(c.publish_confirmed("sensors/hall/temp", "{}"));
    assert!(
        message.starts_with("/: missing required property \"value\""),
        "{message}"
    );
    let (_, message) = refusal(c.publish_confirmed("sensors/hall/temp", "21.5 C"));
    assert!(message.starts_with("payload is not JSON: "), "{message}");
    // The connection stays usable; a topic without a schema takes anything.
    c.publish_confirmed("sensors/kitchen/humidity", "not json")
        .unwrap();
    let second = c
        .publish_confirmed("sensors/kitchen/temp", r#"{"value":-40}"#)
        .unwrap();
    assert_eq!(second, first + 1, "refused payloads take no offset");

    let mut sub = c
        .subscribe("sensors/kitchen/temp", Start::Earliest)
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match sub.recv_timeout(WAIT).unwrap() {
            Some(Event::Message(m)) => got.push(m.payload),
            Some(_) => {}
            None => panic!("no message within {WAIT:?}; got {got:?}"),
        }
    }
    assert_eq!(got, [valid.to_vec(), br#"{"value":-40}"#.to_vec()]);

    let t = get_json(&s, "/api/topics/sensors/kitchen/temp");
    assert_eq!(t["schema_refused"], 1, "{t}");
    assert_eq!(t["published"], 2, "{t}");
    assert_eq!(t["schema"]["file"], "schemas/temp.json", "{t}");
    assert_eq!(t["schema"]["from"], "sensors/+/temp", "{t}");
    let h = get_json(&s, "/api/topics/sensors/kitchen/humidity");
    assert_eq!(h["schema"], Value::Null, "{h}");
    assert_eq!(h["schema_refused"], 0, "{h}");
    let stats = get_json(&s, "/api/stats");
    assert_eq!(stats["totals"]["schema_refused"], 3, "{stats}");
    assert_eq!(stats["totals"]["errors"]["invalid_payload"], 3, "{stats}");
    let metrics = request(s.http.unwrap(), "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("\nmote_schema_refused_total 3\n"),
        "{metrics}"
    );
    // The two refused publishes to sensors/hall/temp made no topic (it would hold a
    // --max-topics place): they are counted in the total only.
    assert!(!metrics.contains("sensors/hall/temp"), "{metrics}");
    let hall = request(
        s.http.unwrap(),
        "GET",
        "/api/topics/sensors/hall/temp",
        &[],
        b"",
    );
    assert_eq!(hall.status, 404, "{}", hall.text());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Requests and prepared transactions store a message too: their payloads are checked
/// like a publish's (a prepare at once, not at its commit).
#[test]
fn requests_and_prepared_transactions_are_checked_like_publishes() {
    let (dir, config) = setup("v4", TEMP);
    let s = serve(&config);
    let c = client(&s);
    match c.publish_prepared("sensors/kitchen/temp", r#"{"value":"warm"}"#) {
        Err(Error::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
            assert!(message.starts_with("/value: expected number"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let tx = c
        .publish_prepared("sensors/kitchen/temp", r#"{"value":1}"#)
        .unwrap();
    tx.rollback().unwrap();
    // A responder, so the request is not refused as having none.
    let _responder = c.serve("sensors/kitchen/temp").unwrap();
    match c.request("sensors/kitchen/temp", "21.5 C", WAIT) {
        Err(Error::Broker { code, message }) => {
            assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
            assert!(message.starts_with("payload is not JSON: "), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let stats = get_json(&s, "/api/stats");
    assert_eq!(stats["totals"]["schema_refused"], 2, "{stats}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn http_publishes_answer_422_with_the_message() {
    let (dir, config) = setup("http", TEMP);
    let s = serve(&config);
    let http = s.http.unwrap();
    let ok = request(http, "POST", "/t/sensors/a/temp", &[], br#"{"value": 3}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["offset"], 0);
    let bad = request(http, "POST", "/t/sensors/a/temp", &[], br#"{"value": 300}"#);
    let v = bad.assert_error(422, "invalid_payload");
    assert_eq!(
        v["error"],
        "/value: 300 is greater than the maximum 125 (schema schemas/temp.json of [topics.\"sensors/+/temp\"])"
    );
    let bad = request(http, "PUT", "/t/sensors/a/temp", &[], b"<xml/>");
    let v = bad.assert_error(422, "invalid_payload");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("payload is not JSON"),
        "{v}"
    );
    // What is stored is the valid one only, unchanged.
    let c = client(&s);
    let mut sub = c.subscribe("sensors/a/temp", Start::Earliest).unwrap();
    match sub.recv_timeout(WAIT).unwrap() {
        Some(Event::Message(m)) => assert_eq!(m.payload, br#"{"value": 3}"#),
        other => panic!("expected the stored message, got {other:?}"),
    }
    let t = get_json(&s, "/api/topics/sensors/a/temp");
    assert_eq!(t["schema_refused"], 2, "{t}");
    assert_eq!(t["published"], 1, "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_schema_with_an_unsupported_keyword_is_refused_at_start() {
    let (dir, config) = setup(
        "refused",
        r#"{"type": "object", "properties": {"value": {"oneOf": [{"type": "number"}]}}}"#,
    );
    let o = Command::new(MOTE)
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "off", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    let file = dir.join("schemas/temp.json");
    assert!(
        e.starts_with(&format!(
            "mote: [topics.\"sensors/+/temp\"] schema \"schemas/temp.json\" ({}): /properties/value: keyword \"oneOf\" is not supported (mote supports type, properties,",
            file.display()
        )),
        "{e}"
    );
    // A missing file, likewise.
    std::fs::remove_file(&file).unwrap();
    let o = Command::new(MOTE)
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "off", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot read it: No such file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_loads_a_new_schema_and_keeps_the_old_one_when_the_new_one_is_broken() {
    let (dir, config) = setup("hup", TEMP);
    let mut s = serve(&config);
    let c = client(&s);
    c.publish_confirmed("sensors/a/temp", r#"{"value":1}"#)
        .unwrap();
    // A new schema: the unit is now required.
    let stricter = TEMP.replace(r#"["value"]"#, r#"["value", "unit"]"#);
    std::fs::write(dir.join("schemas/temp.json"), &stricter).unwrap();
    s.signal("HUP");
    s.wait_log("per-topic settings reloaded: 1 pattern(s) with a JSON schema");
    let (code, message) = refusal(c.publish_confirmed("sensors/a/temp", r#"{"value":1}"#));
    assert_eq!(code, ErrorCode::INVALID_PAYLOAD);
    assert!(
        message.starts_with("/: missing required property \"unit\""),
        "{message}"
    );
    // A topic created after the reload gets it too.
    let (_, message) = refusal(c.publish_confirmed("sensors/new/temp", r#"{"value":1}"#));
    assert!(message.contains("\"unit\""), "{message}");
    // A broken one: the stricter schema stays, and the log says why.
    std::fs::write(
        dir.join("schemas/temp.json"),
        r#"{"type": "object", "not": {}}"#,
    )
    .unwrap();
    s.signal("HUP");
    let line = s.wait_log("keeping the schema loaded before");
    assert!(
        line.contains("[topics.\"sensors/+/temp\"] schema \"schemas/temp.json\"")
            && line.contains("keyword \"not\" is not supported"),
        "{line}"
    );
    let (_, message) = refusal(c.publish_confirmed("sensors/a/temp", r#"{"value":1}"#));
    assert!(message.contains("\"unit\""), "{message}");
    c.publish_confirmed("sensors/a/temp", r#"{"value":1,"unit":"C"}"#)
        .unwrap();
    // Taking the schema away: anything goes again.
    std::fs::write(&config, "[topics.\"sensors/+/temp\"]\npersist = false\n").unwrap();
    s.signal("HUP");
    s.wait_log("reloaded: 0 pattern(s) with a JSON schema");
    c.publish_confirmed("sensors/a/temp", "anything").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The code blocks of the README section `## Per-topic JSON schemas`, in order.
fn readme_blocks() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("## Per-topic JSON schemas\n").unwrap();
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").unwrap() + 3];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let lang_end = after.find('\n').unwrap();
        let body = &after[lang_end + 1..];
        let end = body.find("```").unwrap();
        blocks.push((after[..lang_end].to_string(), body[..end].to_string()));
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn the_readme_example_works_as_written() {
    let blocks = readme_blocks();
    let langs: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(langs, ["toml", "json", "console"]);
    let (dir, config) = setup("readme", &blocks[1].1);
    std::fs::write(&config, &blocks[0].1).unwrap();
    let s = serve(&config);
    let port = s.port();
    let lines: Vec<&str> = blocks[2].1.lines().collect();
    let mut i = 0;
    let mut commands = 0;
    while i < lines.len() {
        let command = lines[i].strip_prefix("$ ").unwrap();
        let expected: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("$ "))
            .copied()
            .collect();
        i += 1 + expected.len();
        commands += 1;
        if let Some(args) = command.strip_prefix("mote pub -t ") {
            let (topic, message) = args.split_once(" -m ").unwrap();
            let message = message.trim_matches('\'');
            let o = Command::new(MOTE)
                .args(["pub", "-p", &port, "--confirm", "-t", topic, "-m", message])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            let got: Vec<&str> = err.lines().collect();
            assert_eq!(got, expected, "{command}");
            assert_eq!(o.status.success(), expected.is_empty(), "{command}: {err}");
        } else if let Some(args) = command.strip_prefix("curl -d '") {
            let (body, rest) = args.split_once("' ").unwrap();
            let target = rest
                .split_whitespace()
                .next()
                .unwrap()
                .strip_prefix("http://127.0.0.1:7271")
                .unwrap();
            assert!(command.ends_with("# HTTP 422"), "{command}");
            let r = request(s.http.unwrap(), "POST", target, &[], body.as_bytes());
            assert_eq!(r.status, 422, "{}", r.text());
            assert_eq!(r.text(), expected.join("\n"), "{command}");
        } else {
            panic!("no runner for {command:?}");
        }
    }
    assert_eq!(commands, 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
