//! The hex examples of `sdk/PROTOCOL.md` are tests.
//!
//! Every fenced block with the info string `hex NAME` must be the exact encoding of the
//! frame called `NAME` in [`examples`], and must decode back to it; every entry of the
//! table must appear in the document. Blocks marked `hex-bad NAME` are the bytes
//! [`bad_examples`] builds, refused by the decoder with the error it names. The error-code
//! table and the varint table of the document are checked against the code. So the
//! document and the code cannot drift apart.
//!
//! To print the annotated hex of every example (after changing a frame, say):
//!
//! ```text
//! cargo test -p mote-sdk --test protocol_doc -- --ignored --nocapture print_examples
//! ```

// Tests: a panic is the failure report, and every unwrap here is on data the test controls.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use mote_sdk::Topic;
use mote_sdk::wire::{
    self, DecodeError, Decoded, ErrorCode, ErrorFrame, Frame, Hello, Lag, MAGIC, Message, Ping,
    Publish, Published, Resume, Start, Subscribe, Subscribed, Unsubscribe, Welcome,
};

/// The broker's default frame limit: `--max-payload` (1 MiB) plus 64 KiB of overhead.
const DEFAULT_MAX_FRAME: usize = 1024 * 1024 + 64 * 1024;

/// A payload long enough to need a two-byte length prefix.
const LONG_PAYLOAD: &[u8] = br#"{"device":"greenhouse-3","readings":[{"t":1700000000000,"temp":21.5,"hum":48},{"t":1700000060000,"temp":21.6,"hum":47}]}"#;

/// Every frame the document shows, by the name of its hex block.
fn examples() -> Vec<(&'static str, Frame<'static>)> {
    vec![
        ("hello", Frame::Hello(Hello::new("sensor-1"))),
        (
            "welcome",
            Frame::Welcome(Welcome {
                version: 1,
                keepalive_ms: 30_000,
                max_frame: DEFAULT_MAX_FRAME as u32,
                max_payload: 1024 * 1024,
                max_subscriptions: 64,
                broker_id: 0x0123_4567_89ab_cdef,
                broker: "mote 0.1.0",
            }),
        ),
        ("ping", Frame::Ping(Ping { nonce: 1 })),
        ("pong", Frame::Pong(Ping { nonce: 1 })),
        ("ping-max-nonce", Frame::Ping(Ping { nonce: u64::MAX })),
        (
            "error-bad-topic",
            Frame::Error(ErrorFrame {
                code: ErrorCode::BAD_TOPIC,
                req: 7,
                message: "bad topic \"a/+\": a publish topic cannot contain '+' or '#' \
                          (wildcards are for subscribing)",
            }),
        ),
        (
            "error-unsupported-version",
            Frame::Error(ErrorFrame {
                code: ErrorCode::UNSUPPORTED_VERSION,
                req: 0,
                message: "no common protocol version: the client speaks 2..=3, the broker 1..=1",
            }),
        ),
        (
            "error-empty-frame",
            Frame::Error(ErrorFrame {
                code: ErrorCode::PROTOCOL,
                req: 0,
                message: "empty frame",
            }),
        ),
        (
            "error-frame-too-large",
            Frame::Error(ErrorFrame {
                code: ErrorCode::FRAME_TOO_LARGE,
                req: 0,
                message: "frame is 16777216 bytes, the limit is 1114112 \
                          (the payload limit is set by --max-payload)",
            }),
        ),
        (
            "publish-fire-and-forget",
            Frame::Publish(Publish {
                req: 0,
                topic: "home/kitchen/temp",
                key: None,
                payload: b"21.5",
            }),
        ),
        (
            "publish-confirmed",
            Frame::Publish(Publish {
                req: 7,
                topic: "a/b",
                key: Some(b"k1"),
                payload: b"hi",
            }),
        ),
        (
            "published",
            Frame::Published(Published { req: 7, offset: 41 }),
        ),
        (
            "subscribe-latest",
            Frame::Subscribe(Subscribe {
                sub: 1,
                filter: "home/+/temp",
                from: Start::Latest,
                resume: vec![],
            }),
        ),
        (
            "subscribe-earliest",
            Frame::Subscribe(Subscribe {
                sub: 2,
                filter: "home/#",
                from: Start::Earliest,
                resume: vec![],
            }),
        ),
        (
            "subscribe-offset",
            Frame::Subscribe(Subscribe {
                sub: 3,
                filter: "a/b",
                from: Start::Offset(300),
                resume: vec![],
            }),
        ),
        (
            "subscribe-last",
            Frame::Subscribe(Subscribe {
                sub: 4,
                filter: "sensors/#",
                from: Start::Last(10),
                resume: vec![],
            }),
        ),
        (
            "subscribe-resume",
            Frame::Subscribe(Subscribe {
                sub: 1,
                filter: "home/+/temp",
                from: Start::AfterSeq(1234),
                resume: vec![
                    Resume {
                        topic: "home/kitchen/temp",
                        next: 43,
                    },
                    Resume {
                        topic: "home/hall/temp",
                        next: 7,
                    },
                ],
            }),
        ),
        (
            "subscribed",
            Frame::Subscribed(Subscribed { sub: 1, seq: 1234 }),
        ),
        ("unsubscribe", Frame::Unsubscribe(Unsubscribe { sub: 1 })),
        ("unsubscribed", Frame::Unsubscribed(Unsubscribe { sub: 1 })),
        (
            "message",
            Frame::Message(Message {
                sub: 1,
                topic: "home/kitchen/temp",
                offset: 42,
                time_ms: 1_700_000_000_000,
                key: None,
                payload: b"21.5",
            }),
        ),
        (
            "message-with-key",
            Frame::Message(Message {
                sub: 2,
                topic: "a/b",
                offset: 0,
                time_ms: 1_700_000_000_123,
                key: Some(b"k1"),
                payload: b"hi",
            }),
        ),
        (
            "message-long",
            Frame::Message(Message {
                sub: 5,
                topic: "greenhouse/3",
                offset: 1000,
                time_ms: 1_700_000_120_000,
                key: None,
                payload: LONG_PAYLOAD,
            }),
        ),
        (
            "lag",
            Frame::Lag(Lag {
                sub: 1,
                topic: "home/kitchen/temp",
                missed: 120,
                next: 162,
            }),
        ),
    ]
}

/// A refused input: the name of its `hex-bad` block, its bytes (built from valid frames),
/// the decoder's error, and the `hex` example the broker answers with, if the document
/// shows one.
struct Bad {
    name: &'static str,
    bytes: Vec<u8>,
    err: DecodeError,
    answer: Option<&'static str>,
}

/// `body` (tag included) behind its length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut prefix = [0u8; wire::MAX_LENGTH_PREFIX];
    let n = wire::write_varint(body.len() as u32, &mut prefix);
    let mut out = prefix[..n].to_vec();
    out.extend_from_slice(body);
    out
}

/// Every input the document shows the decoder refusing.
fn bad_examples() -> Vec<Bad> {
    let mut prefix = [0u8; wire::MAX_LENGTH_PREFIX];
    let n = wire::write_varint(16 * 1024 * 1024, &mut prefix);
    let too_large = prefix[..n].to_vec();

    // The body of a Ping, and one byte more.
    let mut trailing = Frame::Ping(Ping { nonce: 1 }).to_vec()[1..].to_vec();
    trailing.push(0);

    // `publish-confirmed` with its `key` option byte (after length, tag, req and "a/b")
    // changed from 01 to 02.
    let mut option = examples()
        .into_iter()
        .find(|(n, _)| *n == "publish-confirmed")
        .map(|(_, f)| f.to_vec())
        .unwrap();
    assert_eq!(option[7], 0x01, "the key option byte");
    option[7] = 0x02;

    // A one-byte topic, then that byte made invalid UTF-8.
    let mut utf8 = Frame::Publish(Publish {
        req: 0,
        topic: "x",
        key: None,
        payload: b"",
    })
    .to_vec();
    assert_eq!(utf8[4], b'x', "the topic byte");
    utf8[4] = 0xff;

    let bad = |name, bytes, err, answer| Bad {
        name,
        bytes,
        err,
        answer,
    };
    vec![
        bad(
            "bad-empty-frame",
            framed(&[]),
            DecodeError::Empty,
            Some("error-empty-frame"),
        ),
        bad(
            "bad-too-large",
            too_large,
            DecodeError::TooLarge {
                len: 16 * 1024 * 1024,
                max: DEFAULT_MAX_FRAME,
            },
            Some("error-frame-too-large"),
        ),
        // Five bytes of prefix, the last one with bits beyond 32 (and no room for more).
        bad(
            "bad-length-prefix",
            vec![0xff, 0xff, 0xff, 0xff, 0x10],
            DecodeError::BadLength,
            None,
        ),
        bad(
            "bad-reserved-tag",
            framed(&[*wire::tag::RESERVED_SECURITY.start()]),
            DecodeError::UnknownTag(0x10),
            None,
        ),
        bad(
            "bad-trailing-byte",
            framed(&trailing),
            DecodeError::Trailing {
                tag: wire::tag::PING,
            },
            None,
        ),
        bad(
            "bad-option-byte",
            option,
            DecodeError::Malformed {
                tag: wire::tag::PUBLISH,
            },
            None,
        ),
        bad(
            "bad-utf8-topic",
            utf8,
            DecodeError::Malformed {
                tag: wire::tag::PUBLISH,
            },
            None,
        ),
    ]
}

/// One fenced block of the document.
struct Block {
    name: String,
    bytes: Vec<u8>,
    line: usize,
}

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Every block whose info string is `kind NAME`, with its bytes: two hex digits per byte,
/// separated by white space, `#` starting a comment. A name may appear more than once (an
/// example shown in two sections); every occurrence is checked.
fn blocks(doc: &str, kind: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if let Some(block) = open.as_mut() {
            if trimmed == "```" {
                out.extend(open.take());
                continue;
            }
            let data = trimmed.split('#').next().unwrap_or_default();
            for tok in data.split_whitespace() {
                let ok = tok.len() == 2 && tok.bytes().all(|b| b.is_ascii_hexdigit());
                assert!(ok, "line {line_no}: {tok:?} is not one hex byte");
                block.bytes.push(u8::from_str_radix(tok, 16).unwrap());
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let mut words = info.split_whitespace();
            if words.next() == Some(kind) {
                let name = words.next();
                let name =
                    name.unwrap_or_else(|| panic!("line {line_no}: a {kind} block needs a name"));
                open = Some(Block {
                    name: name.to_owned(),
                    bytes: Vec::new(),
                    line: line_no,
                });
            }
        }
    }
    assert!(open.is_none(), "a {kind} block is not closed");
    out
}

#[test]
fn every_hex_example_is_the_encoding_of_its_frame() {
    let table: BTreeMap<_, _> = examples().into_iter().collect();
    let doc = document();
    let blocks = blocks(&doc, "hex");
    assert!(!blocks.is_empty(), "no hex blocks found");
    for b in &blocks {
        let (name, line) = (&b.name, b.line);
        let frame = table
            .get(name.as_str())
            .unwrap_or_else(|| panic!("line {line}: hex block {name} is not in examples()"));
        assert_eq!(
            hex(&b.bytes),
            hex(&frame.to_vec()),
            "line {line}: hex block {name} is not the encoding of {frame:?}"
        );
        assert_eq!(
            wire::decode(&b.bytes, DEFAULT_MAX_FRAME),
            Ok(Decoded::Frame(frame.clone(), b.bytes.len())),
            "line {line}: hex block {name} does not decode to its frame"
        );
    }
}

#[test]
fn every_example_is_in_the_document() {
    let doc = document();
    let shown: BTreeSet<String> = blocks(&doc, "hex").into_iter().map(|b| b.name).collect();
    let mut names = BTreeSet::new();
    for (name, _) in examples() {
        assert!(names.insert(name), "examples() names {name} twice");
        assert!(
            shown.contains(name),
            "PROTOCOL.md has no ```hex {name} block"
        );
    }
    let shown_bad: BTreeSet<String> = blocks(&doc, "hex-bad")
        .into_iter()
        .map(|b| b.name)
        .collect();
    for bad in bad_examples() {
        let name = bad.name;
        assert!(
            shown_bad.contains(name),
            "PROTOCOL.md has no ```hex-bad {name} block"
        );
    }
}

#[test]
fn examples_cover_every_tag_every_from_and_a_long_frame() {
    let examples = examples();
    // A tag the decoder knows fails on an empty body as malformed, an unknown one as
    // unknown: so a frame added to the code without an example here fails this test.
    let known: BTreeSet<u8> = (0..=u8::MAX)
        .filter(|&t| !matches!(Frame::decode_body(&[t]), Err(DecodeError::UnknownTag(_))))
        .collect();
    let shown: BTreeSet<u8> = examples.iter().map(|(_, f)| f.tag()).collect();
    assert_eq!(shown, known, "tags without an example");

    let mut froms = BTreeSet::new();
    for (_, f) in &examples {
        if let Frame::Subscribe(s) = f {
            // Exhaustive on purpose: a new `Start` variant must get an example.
            froms.insert(match s.from {
                Start::Latest => 0,
                Start::Earliest => 1,
                Start::Offset(_) => 2,
                Start::Last(_) => 3,
                Start::AfterSeq(_) => 4,
            });
        }
    }
    assert_eq!(froms, (0..5).collect(), "Start variants without an example");

    assert!(
        examples.iter().any(|(_, f)| f.to_vec()[0] & 0x80 != 0),
        "no example with a multi-byte length prefix"
    );
    assert!(
        examples
            .iter()
            .any(|(_, f)| matches!(f, Frame::Subscribe(s) if s.resume.len() > 1)),
        "no example with a resume list"
    );
}

#[test]
fn bad_examples_are_refused_as_documented() {
    let doc = document();
    let table: BTreeMap<_, _> = examples().into_iter().collect();
    let bad = bad_examples();
    for b in blocks(&doc, "hex-bad") {
        let (name, line) = (&b.name, b.line);
        let Some(expected) = bad.iter().find(|x| x.name == name) else {
            panic!("line {line}: hex-bad block {name} is not in bad_examples()");
        };
        assert_eq!(
            hex(&b.bytes),
            hex(&expected.bytes),
            "line {line}: hex-bad block {name} is not the bytes the test builds"
        );
        assert_eq!(
            wire::decode(&b.bytes, DEFAULT_MAX_FRAME),
            Err(expected.err.clone()),
            "line {line}: hex-bad block {name}"
        );
        if let Some(answer) = expected.answer {
            let Some(Frame::Error(e)) = table.get(answer) else {
                panic!("{name} is answered by {answer}, which is not an error example");
            };
            // What the broker's session answers to a decode error.
            let code = match expected.err {
                DecodeError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
                _ => ErrorCode::PROTOCOL,
            };
            assert_eq!((e.code, e.req), (code, 0), "{answer}");
            assert!(e.message.starts_with(&expected.err.to_string()), "{answer}");
            assert!(e.code.closes_connection(), "{answer}");
        }
    }
}

#[test]
fn error_examples_quote_the_real_reasons() {
    let table: BTreeMap<_, _> = examples().into_iter().collect();
    let Some(Frame::Error(e)) = table.get("error-bad-topic") else {
        panic!("no error-bad-topic example");
    };
    let reason = Topic::new("a/+").unwrap_err();
    assert_eq!(e.message, format!("bad topic {:?}: {reason}", "a/+"));
}

#[test]
fn varint_table_matches_the_encoder() {
    let doc = document();
    let section = doc
        .split("\n### ")
        .find(|s| s.starts_with("3.1 "))
        .expect("no section 3.1");
    let mut rows = 0;
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, value, bytes, ..] = cells.as_slice() else {
            continue;
        };
        // "4,294,967,295 (u32 max)" is 4294967295.
        let digits: String = value
            .split(' ')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != ',')
            .collect();
        let (Ok(v), Some(bytes)) = (
            digits.parse::<u64>(),
            bytes.strip_prefix('`').and_then(|b| b.strip_suffix('`')),
        ) else {
            continue;
        };
        assert_eq!(bytes, hex(&postcard::to_allocvec(&v).unwrap()), "{v}");
        rows += 1;
    }
    assert!(rows >= 8, "the varint table has only {rows} rows");
}

#[test]
fn error_code_table_matches_the_code() {
    let doc = document();
    // The table of the section whose heading ends in "Error codes".
    let section = doc
        .split("\n## ")
        .find(|s| s.lines().next().is_some_and(|h| h.ends_with("Error codes")))
        .expect("no error codes section");
    let mut rows = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | code | `name` | yes/no | ... |
        let [_, code, name, closes, ..] = cells.as_slice() else {
            continue;
        };
        let (Ok(code), Some(name)) = (
            code.parse::<u16>(),
            name.strip_prefix('`').and_then(|n| n.strip_suffix('`')),
        ) else {
            continue;
        };
        let closes = match *closes {
            "yes" => true,
            "no" => false,
            other => panic!("error code {code}: closes is {other:?}, not yes or no"),
        };
        assert!(
            rows.insert(code, (name.to_owned(), closes)).is_none(),
            "code {code} twice"
        );
    }
    let last = *rows.keys().last().expect("no error code table found");
    assert_eq!(
        ErrorCode(last + 1).name(),
        "unknown",
        "the code has error codes the document lacks"
    );
    for n in 1..=last {
        let code = ErrorCode(n);
        let row = rows
            .get(&n)
            .unwrap_or_else(|| panic!("error code {n} is missing"));
        assert_eq!(
            row,
            &(code.name().to_owned(), code.closes_connection()),
            "code {n}"
        );
    }
    assert_eq!(ErrorCode(0).name(), "unknown", "code 0 means no error");
}

fn hex(bytes: &[u8]) -> String {
    let s: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.join(" ")
}

// ---------------------------------------------------------------------------------------
// The generator of the annotated hex blocks in PROTOCOL.md.

/// A run of bytes and what they mean.
struct Part(Vec<u8>, String);

fn enc<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

fn num<T: serde::Serialize + std::fmt::Display>(parts: &mut Vec<Part>, name: &str, v: T) {
    parts.push(Part(enc(&v), format!("{name}: {v}")));
}

/// Bytes or UTF-8: length, then the content in lines of 16 bytes.
fn seq(parts: &mut Vec<Part>, name: &str, b: &[u8]) {
    parts.push(Part(enc(&b.len()), format!("{name}: {} bytes", b.len())));
    for chunk in b.chunks(16) {
        let text = String::from_utf8_lossy(chunk);
        parts.push(Part(chunk.to_vec(), format!("  {text:?}")));
    }
}

fn opt_seq(parts: &mut Vec<Part>, name: &str, b: Option<&[u8]>) {
    match b {
        None => parts.push(Part(vec![0], format!("{name}: none"))),
        Some(b) => {
            parts.push(Part(vec![1], format!("{name}: some")));
            seq(parts, name, b);
        }
    }
}

fn from(parts: &mut Vec<Part>, f: Start) {
    let (index, value) = match f {
        Start::Latest => (0u32, None),
        Start::Earliest => (1, None),
        Start::Offset(n) => (2, Some(n)),
        Start::Last(n) => (3, Some(n)),
        Start::AfterSeq(n) => (4, Some(n)),
    };
    let variant = format!("{f:?}");
    let variant = variant.split('(').next().unwrap_or_default();
    parts.push(Part(
        enc(&index),
        format!("from: {variant} (variant {index})"),
    ));
    if let Some(n) = value {
        num(parts, "  value", n);
    }
}

/// The fields of `frame`'s body, each encoded on its own.
fn fields(frame: &Frame<'_>) -> Vec<Part> {
    let mut p = Vec::new();
    match frame {
        Frame::Hello(h) => {
            p.push(Part(
                h.magic.to_vec(),
                format!("magic: {:?}", String::from_utf8_lossy(&h.magic)),
            ));
            num(&mut p, "min_version", h.min_version);
            num(&mut p, "max_version", h.max_version);
            seq(&mut p, "client", h.client.as_bytes());
        }
        Frame::Welcome(w) => {
            num(&mut p, "version", w.version);
            num(&mut p, "keepalive_ms", w.keepalive_ms);
            num(&mut p, "max_frame", w.max_frame);
            num(&mut p, "max_payload", w.max_payload);
            num(&mut p, "max_subscriptions", w.max_subscriptions);
            p.push(Part(
                enc(&w.broker_id),
                format!("broker_id: 0x{:016x}", w.broker_id),
            ));
            seq(&mut p, "broker", w.broker.as_bytes());
        }
        Frame::Ping(x) | Frame::Pong(x) => num(&mut p, "nonce", x.nonce),
        Frame::Error(e) => {
            p.push(Part(
                enc(&e.code.0),
                format!("code: {} ({})", e.code.0, e.code.name()),
            ));
            num(&mut p, "req", e.req);
            seq(&mut p, "message", e.message.as_bytes());
        }
        Frame::Publish(x) => {
            num(&mut p, "req", x.req);
            seq(&mut p, "topic", x.topic.as_bytes());
            opt_seq(&mut p, "key", x.key);
            seq(&mut p, "payload", x.payload);
        }
        Frame::Published(x) => {
            num(&mut p, "req", x.req);
            num(&mut p, "offset", x.offset);
        }
        Frame::Subscribe(s) => {
            num(&mut p, "sub", s.sub);
            seq(&mut p, "filter", s.filter.as_bytes());
            from(&mut p, s.from);
            p.push(Part(
                enc(&s.resume.len()),
                format!("resume: {} entries", s.resume.len()),
            ));
            for r in &s.resume {
                seq(&mut p, "  topic", r.topic.as_bytes());
                num(&mut p, "  next", r.next);
            }
        }
        Frame::Subscribed(s) => {
            num(&mut p, "sub", s.sub);
            num(&mut p, "seq", s.seq);
        }
        Frame::Unsubscribe(u) | Frame::Unsubscribed(u) => num(&mut p, "sub", u.sub),
        Frame::Message(m) => {
            num(&mut p, "sub", m.sub);
            seq(&mut p, "topic", m.topic.as_bytes());
            num(&mut p, "offset", m.offset);
            num(&mut p, "time_ms", m.time_ms);
            opt_seq(&mut p, "key", m.key);
            seq(&mut p, "payload", m.payload);
        }
        Frame::Lag(l) => {
            num(&mut p, "sub", l.sub);
            seq(&mut p, "topic", l.topic.as_bytes());
            num(&mut p, "missed", l.missed);
            num(&mut p, "next", l.next);
        }
        other => panic!("no annotation for {other:?}"),
    }
    p
}

fn variant_name(frame: &Frame<'_>) -> String {
    let d = format!("{frame:?}");
    d.split('(').next().unwrap_or_default().to_owned()
}

/// The annotated hex block of `frame`, checked against its real encoding.
fn annotate(name: &str, frame: &Frame<'_>) -> String {
    let bytes = frame.to_vec();
    let (len, prefix) = wire::read_length(&bytes).unwrap().unwrap();
    let mut parts = vec![
        Part(
            bytes[..prefix].to_vec(),
            format!("length: {len} bytes follow"),
        ),
        Part(
            vec![frame.tag()],
            format!("tag: {} (0x{:02x})", variant_name(frame), frame.tag()),
        ),
    ];
    parts.extend(fields(frame));
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.0.iter().copied()).collect();
    assert_eq!(
        hex(&joined),
        hex(&bytes),
        "the annotation of {name} is wrong"
    );
    let mut s = format!("```hex {name}\n");
    for Part(b, note) in &parts {
        s.push_str(&format!("{:<47}  # {note}\n", hex(b)));
    }
    s.push_str("```\n");
    s
}

#[test]
fn annotations_match_the_encoding() {
    for (name, frame) in examples() {
        annotate(name, &frame);
    }
    assert_eq!(MAGIC, *b"mote");
}

#[test]
#[ignore = "prints the hex blocks for PROTOCOL.md"]
fn print_examples() {
    for (name, frame) in examples() {
        println!("{}", annotate(name, &frame));
    }
}
