//! The hex examples of `sdk/PROTOCOL.md` are tests.
//!
//! Every fenced block with the info string `hex NAME` must be the exact encoding of the
//! frame called `NAME` in [`examples`], and must decode back to it; every entry of the
//! table must appear in the document. Blocks marked `hex-bad NAME` are the bytes
//! [`bad_examples`] builds, refused by the decoder with the error it names. Blocks marked
//! `hex-vector NAME` are the token handshake's test vectors, which [`vectors`] computes
//! with `mote_sdk::secure` (the records are sealed by its `Sealer` and opened by its
//! `Opener`). The error-code table and the varint table of the document are checked
//! against the code. So the document and the code cannot drift apart.
//!
//! (`tests/secure_vectors.rs` checks the same vectors the other way round: recomputed from
//! the document's own description with nothing but SHA-256 and ChaCha20-Poly1305.)
//!
//! To print the annotated hex of every example and vector (after changing a frame, say):
//!
//! ```text
//! cargo test -p mote-sdk --test protocol_doc -- --ignored --nocapture print_examples
//! ```

// Tests: a panic is the failure report, and every unwrap here is on data the test controls.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use mote_sdk::Topic;
use mote_sdk::secure::{self, Opener, Record, Sealer, SessionKeys, Token};
use mote_sdk::topic::shown;
use mote_sdk::wire::{
    self, Ack, Asked, AuthChallenge, AuthInit, AuthProof, DecodeError, Decoded, Durability,
    ErrorCode, ErrorFrame, Frame, GetLimits, GroupMessage, GroupSettings, Hello, JoinGroup,
    JoinSettings, Lag, Limits, MAGIC, Manage, ManageOp, Managed, Message, Nack, Ping, Prepare,
    Prepared, Publish, Published, Removed, Reply, Request, Response, Resume, Settle, Settled,
    Start, Subscribe, SubscribeGroup, Subscribed, TopicLimits, TxCheck, Unsubscribe, Welcome,
};
use sha2::Sha256;

/// The broker's default frame limit: `--max-payload` (1 MiB) plus 64 KiB of overhead.
const DEFAULT_MAX_FRAME: usize = 1024 * 1024 + 64 * 1024;

/// A payload long enough to need a two-byte length prefix.
const LONG_PAYLOAD: &[u8] = br#"{"device":"greenhouse-3","readings":[{"t":1700000000000,"temp":21.5,"hum":48},{"t":1700000060000,"temp":21.6,"hum":47}]}"#;

/// The token of the handshake test vectors (section 6.9 of the document).
const VECTOR_TOKEN: &str = "mote-test-token-0123456789";
/// The token name of the test vectors.
const VECTOR_NAME: &str = "kitchen";
/// The `Hello.client` of the test vectors: the `hello` example.
const VECTOR_CLIENT: &str = "sensor-1";

/// The client's nonce of the test vectors: `00 01 02 ... 1f`.
fn client_nonce() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The broker's nonce of the test vectors: `a0 a1 a2 ... bf`.
fn broker_nonce() -> [u8; 32] {
    std::array::from_fn(|i| 0xa0 + i as u8)
}

/// The `Hello` of a client that speaks version 1 only: the `hello` example, and the first
/// frame of the test vectors (written before version 2, and still valid).
fn hello_v1(client: &str) -> Hello<'_> {
    Hello {
        min_version: 1,
        max_version: 1,
        ..Hello::new(client)
    }
}

/// The `Hello`, `AuthChallenge` and transcript of the test vectors.
fn vector_transcript() -> (Vec<u8>, Vec<u8>, [u8; 32]) {
    let hello = Frame::Hello(hello_v1(VECTOR_CLIENT)).to_vec();
    let challenge = Frame::AuthChallenge(AuthChallenge {
        nonce: broker_nonce(),
    })
    .to_vec();
    let t = secure::transcript(&hello, &challenge);
    (hello, challenge, t)
}

/// The session keys of the test vectors, as `mote_sdk::secure` derives them.
fn vector_keys() -> SessionKeys {
    let (_, _, t) = vector_transcript();
    SessionKeys::derive(
        &Token::new(VECTOR_TOKEN).unwrap(),
        VECTOR_NAME,
        &client_nonce(),
        &broker_nonce(),
        &t,
    )
}

/// The broker's answer to a wrong proof, an unknown token name or a bad record.
const AUTH_FAILED: &str = "authentication failed";
/// The broker's answer to a client that sends anything but `AuthInit` after the challenge.
const TOKEN_REQUIRED: &str = "this broker requires a token: give one with --token or MOTE_TOKEN, \
                              or a mote://NAME:TOKEN@HOST:PORT address";

/// The `forbidden` refusal the document shows, as the broker words it.
fn forbidden_message() -> String {
    format!(
        "token {:?} may not publish to {} (its publish rules: {})",
        VECTOR_NAME,
        shown("home/hall/temp"),
        "home/kitchen/#"
    )
}

/// Every frame the document shows, by the name of its hex block.
fn examples() -> Vec<(&'static str, Frame<'static>)> {
    let keys = vector_keys();
    // Leaked so that the example table can hold `Frame<'static>`; a few bytes, once per test.
    let forbidden: &'static str = Box::leak(forbidden_message().into_boxed_str());
    vec![
        ("hello", Frame::Hello(hello_v1("sensor-1"))),
        (
            "hello-v2",
            Frame::Hello(Hello {
                max_version: 2,
                ..Hello::new("sensor-1")
            }),
        ),
        (
            "hello-v3",
            Frame::Hello(Hello {
                max_version: 3,
                ..Hello::new("sensor-1")
            }),
        ),
        (
            "hello-v4",
            Frame::Hello(Hello {
                max_version: 4,
                ..Hello::new("sensor-1")
            }),
        ),
        ("hello-v5", Frame::Hello(Hello::new("sensor-1"))),
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
        (
            "evicted",
            Frame::Evicted(Lag {
                sub: 1,
                topic: "big",
                missed: 90_000,
                next: 90_000,
            }),
        ),
        (
            "auth-challenge",
            Frame::AuthChallenge(AuthChallenge {
                nonce: broker_nonce(),
            }),
        ),
        (
            "auth-init",
            Frame::AuthInit(AuthInit {
                name: VECTOR_NAME,
                nonce: client_nonce(),
                proof: keys.client_proof(),
            }),
        ),
        (
            "auth-proof",
            Frame::AuthProof(AuthProof {
                proof: keys.broker_proof(),
            }),
        ),
        (
            "error-authentication-failed",
            Frame::Error(ErrorFrame {
                code: ErrorCode::UNAUTHORIZED,
                req: 0,
                message: AUTH_FAILED,
            }),
        ),
        (
            "error-token-required",
            Frame::Error(ErrorFrame {
                code: ErrorCode::UNAUTHORIZED,
                req: 0,
                message: TOKEN_REQUIRED,
            }),
        ),
        (
            "error-forbidden",
            Frame::Error(ErrorFrame {
                code: ErrorCode::FORBIDDEN,
                req: 7,
                message: forbidden,
            }),
        ),
        (
            "subscribe-group",
            Frame::SubscribeGroup(SubscribeGroup {
                sub: 4,
                filter: "jobs/#",
                group: "workers",
                from: Start::Earliest,
                settings: GroupSettings {
                    ack_timeout_ms: 10_000,
                    max_deliveries: 5,
                    prefetch: 16,
                    durable: true,
                },
            }),
        ),
        (
            "join-group-ephemeral",
            Frame::JoinGroup(JoinGroup {
                sub: 5,
                filter: "jobs/#",
                group: "resizers",
                from: Start::Latest,
                settings: JoinSettings {
                    ack_timeout_ms: 10_000,
                    max_deliveries: 0,
                    prefetch: 0,
                    durability: Durability::Ephemeral,
                    expiry_ms: 0,
                },
            }),
        ),
        (
            "join-group-expiry",
            Frame::JoinGroup(JoinGroup {
                sub: 6,
                filter: "jobs/#",
                group: "nightly",
                from: Start::Earliest,
                settings: JoinSettings {
                    ack_timeout_ms: 0,
                    max_deliveries: 0,
                    prefetch: 0,
                    durability: Durability::Default,
                    expiry_ms: 3_600_000,
                },
            }),
        ),
        (
            "group-message",
            Frame::GroupMessage(GroupMessage {
                sub: 4,
                tag: 7,
                topic: "jobs/resize",
                offset: 42,
                time_ms: 1_700_000_000_000,
                attempt: 2,
                key: None,
                payload: b"img-17.jpg",
            }),
        ),
        ("ack", Frame::Ack(Ack { sub: 4, tag: 7 })),
        (
            "subscribe-time",
            Frame::Subscribe(Subscribe {
                sub: 6,
                filter: "logs",
                // 2026-12-01T10:00:00Z
                from: Start::Time(1_796_119_200_000),
                resume: vec![],
            }),
        ),
        (
            "subscribe-ago",
            Frame::Subscribe(Subscribe {
                sub: 7,
                filter: "logs",
                from: Start::Ago(600_000),
                resume: vec![],
            }),
        ),
        (
            "manage-topics",
            manage(
                9,
                ManageOp::Topics {
                    filter: "sensors/#",
                    from: 0,
                },
            ),
        ),
        (
            "manage-topics-next-page",
            manage(
                10,
                ManageOp::Topics {
                    filter: "",
                    from: 256,
                },
            ),
        ),
        (
            "manage-topic-info",
            manage(
                11,
                ManageOp::TopicInfo {
                    topic: "sensors/kitchen",
                },
            ),
        ),
        (
            "manage-purge",
            manage(
                12,
                ManageOp::Purge {
                    topic: "sensors/kitchen",
                },
            ),
        ),
        (
            "manage-delete-topic",
            manage(
                13,
                ManageOp::DeleteTopic {
                    topic: "sensors/kitchen",
                },
            ),
        ),
        (
            "manage-meta",
            manage(
                14,
                ManageOp::Meta {
                    topic: "sensors/kitchen",
                    set: vec![("owner", "kitchen-pi"), ("room", "")],
                },
            ),
        ),
        ("manage-groups", manage(15, ManageOp::Groups)),
        (
            "manage-group-info",
            manage(16, ManageOp::GroupInfo { group: "workers" }),
        ),
        (
            "manage-seek",
            manage(
                17,
                ManageOp::Seek {
                    group: "workers",
                    to: Start::Time(1_796_119_200_000),
                },
            ),
        ),
        (
            "manage-delete-group",
            manage(18, ManageOp::DeleteGroup { group: "workers" }),
        ),
        (
            "managed",
            Frame::Managed(Managed {
                req: 12,
                json: r#"{"dropped":120,"topic":"sensors/kitchen"}"#,
            }),
        ),
        (
            "error-not-found",
            Frame::Error(ErrorFrame {
                code: ErrorCode::NOT_FOUND,
                req: 11,
                message: "no topic \"sensors/attic\"",
            }),
        ),
        (
            "removed",
            Frame::Removed(Removed {
                sub: 1,
                topic: "sensors/kitchen",
                unread: 2,
                next: 162,
            }),
        ),
        (
            "nack",
            Frame::Nack(Nack {
                sub: 4,
                tag: 8,
                delay_ms: 5_000,
            }),
        ),
        (
            "request",
            Frame::Request(Request {
                req: 7,
                topic: "svc/upper",
                timeout_ms: 5_000,
                key: None,
                payload: b"hello",
            }),
        ),
        (
            "asked",
            Frame::Asked(Asked {
                sub: 1,
                tag: 0,
                topic: "svc/upper",
                offset: 12,
                time_ms: 1_764_583_200_000,
                attempt: 1,
                reply: 0x0102_0304_0506_0708,
                key: None,
                payload: b"hello",
            }),
        ),
        (
            "reply",
            Frame::Reply(Reply {
                reply: 0x0102_0304_0506_0708,
                key: None,
                payload: b"HELLO",
            }),
        ),
        (
            "response",
            Frame::Response(Response {
                req: 7,
                key: None,
                payload: b"HELLO",
            }),
        ),
        (
            "error-no-responders",
            Frame::Error(ErrorFrame {
                code: ErrorCode::NO_RESPONDERS,
                req: 7,
                message: "no responders on svc/upper",
            }),
        ),
        (
            "prepare",
            Frame::Prepare(Prepare {
                req: 9,
                topic: "orders/new",
                key: None,
                payload: b"{\"order\":17}",
            }),
        ),
        (
            "prepared",
            Frame::Prepared(Prepared {
                req: 9,
                tx: 0x5f3a_91c2_0b7d_e401,
            }),
        ),
        (
            "settle",
            Frame::Settle(Settle {
                req: 10,
                tx: 0x5f3a_91c2_0b7d_e401,
                commit: true,
            }),
        ),
        (
            "settled",
            Frame::Settled(Settled {
                req: 10,
                committed: true,
                offset: 3,
                time_ms: 1_764_583_200_000,
            }),
        ),
        (
            "tx-check",
            Frame::TxCheck(TxCheck {
                tx: 0x5f3a_91c2_0b7d_e401,
                topic: "orders/new",
                attempt: 1,
            }),
        ),
        (
            "get-limits",
            Frame::GetLimits(GetLimits {
                req: 12,
                topic: None,
            }),
        ),
        (
            "get-limits-topic",
            Frame::GetLimits(GetLimits {
                req: 13,
                topic: Some("logs/app"),
            }),
        ),
        ("limits", Frame::Limits(Box::new(default_limits(12, None)))),
        (
            "limits-topic",
            Frame::Limits(Box::new(default_limits(
                13,
                Some(TopicLimits {
                    persist: true,
                    max_age_ms: Some(7 * 24 * 3_600_000),
                    retain_messages: Some(1_000_000),
                    retain_bytes: None,
                    discard_new: false,
                }),
            ))),
        ),
    ]
}

/// The broker's default limits on a 64-bit machine with `--data` (and `--disk` 1 GiB),
/// as a `Limits` answer to `req`.
fn default_limits(req: u32, topic: Option<TopicLimits>) -> Limits {
    Limits {
        req,
        max_frame: DEFAULT_MAX_FRAME as u32,
        max_payload: 1024 * 1024,
        max_key: 1024,
        entry_overhead: 112,
        ring_messages: 10_000,
        ring_bytes: 8 * 1024 * 1024,
        memory: 64 * 1024 * 1024,
        disk: 1 << 30,
        topic,
    }
}

/// A `Manage` frame.
fn manage(req: u32, op: ManageOp<'static>) -> Frame<'static> {
    Frame::Manage(Manage { req, op })
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

    // The first tag of the security range that no frame has taken.
    let reserved = wire::tag::RESERVED_SECURITY
        .clone()
        .find(|&t| matches!(Frame::decode_body(&[t]), Err(DecodeError::UnknownTag(_))))
        .unwrap();

    // `auth-challenge` with the last byte of its nonce cut off (length fixed up): a
    // `[u8; 32]` has no length of its own, so 31 bytes cannot be one.
    let challenge = Frame::AuthChallenge(AuthChallenge {
        nonce: broker_nonce(),
    })
    .to_vec();
    let short_nonce = framed(&challenge[1..challenge.len() - 1]);

    // `body` of example `name` (tag included, no length prefix), with `at..at + len`
    // replaced by `with`, behind a new length prefix.
    let edit = |name: &str, at: usize, len: usize, with: &[u8]| {
        let whole = example(name);
        let (_, prefix) = wire::read_length(&whole).unwrap().unwrap();
        let mut body = whole[prefix..].to_vec();
        body.splice(at..at + len, with.iter().copied());
        framed(&body)
    };
    // `publish-confirmed` (body: tag, req 07, topic 03 "a/b", ...): its topic length made
    // u32 max, far past the end of the body.
    let past_end = edit("publish-confirmed", 2, 1, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
    // `subscribe-latest` (body: tag, sub, filter 0b + 11 bytes, from, resume): `Start`
    // variant 7, which no version has.
    let variant = edit("subscribe-latest", 14, 1, &[0x07]);
    // `publish-confirmed` with its `req` (a u32) as five bytes whose last is above 0x0f.
    let long_varint = edit("publish-confirmed", 1, 1, &[0x87, 0x80, 0x80, 0x80, 0x10]);
    // Broker -> client. `welcome` with its version (a u16) as 80 80 04: beyond 16 bits.
    let welcome_version = edit("welcome", 1, 1, &[0x80, 0x80, 0x04]);
    // `error-empty-frame` with its code (a u16) as 80 80 04.
    let error_code = edit("error-empty-frame", 1, 1, &[0x80, 0x80, 0x04]);
    // `message` with the last byte of its payload cut off: the length says 4, 3 follow.
    let message = example("message");
    let short_payload = framed(&message[1..message.len() - 1]);
    // `lag` with a byte after its body.
    let mut lag = example("lag")[1..].to_vec();
    lag.push(0);
    // `settled` (body: tag, req 0a, committed 01, ...) with `committed` = 02.
    let settled_bool = edit("settled", 2, 1, &[0x02]);
    // `limits` with its last field, the `topic` option, = 02.
    let limits = example("limits");
    let limits_option = edit("limits", limits.len() - 2, 1, &[0x02]);

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
            framed(&[reserved]),
            DecodeError::UnknownTag(0x13),
            None,
        ),
        bad(
            "bad-short-nonce",
            short_nonce,
            DecodeError::Malformed {
                tag: wire::tag::AUTH_CHALLENGE,
            },
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
        bad(
            "bad-length-past-end",
            past_end,
            DecodeError::Malformed {
                tag: wire::tag::PUBLISH,
            },
            None,
        ),
        bad(
            "bad-variant-index",
            variant,
            DecodeError::Malformed {
                tag: wire::tag::SUBSCRIBE,
            },
            None,
        ),
        bad(
            "bad-long-varint",
            long_varint,
            DecodeError::Malformed {
                tag: wire::tag::PUBLISH,
            },
            None,
        ),
        bad(
            "bad-welcome-version",
            welcome_version,
            DecodeError::Malformed {
                tag: wire::tag::WELCOME,
            },
            None,
        ),
        bad(
            "bad-error-code",
            error_code,
            DecodeError::Malformed {
                tag: wire::tag::ERROR,
            },
            None,
        ),
        bad(
            "bad-message-short-payload",
            short_payload,
            DecodeError::Malformed {
                tag: wire::tag::MESSAGE,
            },
            None,
        ),
        bad(
            "bad-lag-trailing-byte",
            framed(&lag),
            DecodeError::Trailing {
                tag: wire::tag::LAG,
            },
            None,
        ),
        bad(
            "bad-settled-bool",
            settled_bool,
            DecodeError::Malformed {
                tag: wire::tag::SETTLED,
            },
            None,
        ),
        bad(
            "bad-limits-option",
            limits_option,
            DecodeError::Malformed {
                tag: wire::tag::LIMITS,
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
                Start::Time(_) => 5,
                Start::Ago(_) => 6,
            });
        }
    }
    assert_eq!(froms, (0..7).collect(), "Start variants without an example");

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

// ---------------------------------------------------------------------------------------
// The token handshake's test vectors (`hex-vector` blocks).

/// One test vector: its bytes, in annotated runs.
struct Vector {
    name: &'static str,
    parts: Vec<Part>,
}

impl Vector {
    fn bytes(&self) -> Vec<u8> {
        self.parts
            .iter()
            .flat_map(|p| p.0.iter().copied())
            .collect()
    }
}

/// Bytes in lines of 16, the first line saying what they are.
fn raw(name: &'static str, what: &str, b: &[u8]) -> Vector {
    let mut parts = Vec::new();
    for (i, chunk) in b.chunks(16).enumerate() {
        let note = if i == 0 {
            what.to_owned()
        } else {
            String::new()
        };
        parts.push(Part(chunk.to_vec(), note));
    }
    Vector { name, parts }
}

/// UTF-8 bytes in lines of 16, each with its text.
fn text_vector(name: &'static str, s: &str) -> Vector {
    let mut parts = Vec::new();
    seq(&mut parts, "", s.as_bytes());
    // `seq` starts with the length, which a vector of raw bytes does not have.
    parts.remove(0);
    for p in &mut parts {
        p.1 = p.1.trim_start().to_owned();
    }
    Vector { name, parts }
}

/// A sealed record, annotated: length, ciphertext (of `plain`, described by `what`), tag.
fn record_vector(name: &'static str, record: &[u8], what: &str) -> Vector {
    let (header, rest) = record.split_at(secure::RECORD_HEADER);
    let (body, tag) = rest.split_at(rest.len() - secure::TAG_LEN);
    let len = u32::from_le_bytes(header.try_into().unwrap());
    let mut parts = vec![Part(
        header.to_vec(),
        format!("length: {len} bytes follow (u32 little-endian)"),
    )];
    for (i, chunk) in body.chunks(16).enumerate() {
        let note = if i == 0 {
            format!("ciphertext of {what}")
        } else {
            String::new()
        };
        parts.push(Part(chunk.to_vec(), note));
    }
    parts.push(Part(tag.to_vec(), "tag (Poly1305)".into()));
    Vector { name, parts }
}

/// The example frame called `name`, encoded.
fn example(name: &str) -> Vec<u8> {
    examples()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.to_vec())
        .unwrap_or_else(|| panic!("no example {name}"))
}

/// `frames` sealed as one record by `sealer`.
fn seal(sealer: &mut Sealer, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let at = Sealer::begin(&mut out);
    for f in frames {
        out.extend_from_slice(f);
    }
    sealer.seal(&mut out, at);
    out
}

/// The HKDF inputs and output of the test vectors, with the `hkdf` crate the SDK uses.
struct Hkdfed {
    salt: Vec<u8>,
    info: Vec<u8>,
    prk: Vec<u8>,
    okm: [u8; 128],
}

fn vector_hkdf() -> Hkdfed {
    let (_, _, t) = vector_transcript();
    let salt = [client_nonce(), broker_nonce()].concat();
    let info = [&b"mote/1 keys"[..], &[0], VECTOR_NAME.as_bytes(), &t].concat();
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(&salt), VECTOR_TOKEN.as_bytes());
    let mut okm = [0u8; 128];
    hk.expand(&info, &mut okm).unwrap();
    Hkdfed {
        salt,
        info,
        prk: prk.to_vec(),
        okm,
    }
}

/// The frames in the records of the test vectors: (record name, sender, frames).
fn vector_records() -> Vec<(&'static str, &'static str, Vec<Vec<u8>>)> {
    vec![
        ("record-c2b-0", "c2b", vec![example("ping")]),
        (
            "record-c2b-1",
            "c2b",
            vec![
                example("publish-fire-and-forget"),
                Frame::Ping(Ping { nonce: 2 }).to_vec(),
            ],
        ),
        ("record-b2c-0", "b2c", vec![example("welcome")]),
        ("record-b2c-1", "b2c", vec![example("pong")]),
    ]
}

/// Every test vector the document shows, computed with `mote_sdk::secure`.
fn vectors() -> Vec<Vector> {
    let (hello, challenge, t) = vector_transcript();
    let keys = vector_keys();
    let h = vector_hkdf();
    let mut v = vec![
        text_vector("token", VECTOR_TOKEN),
        text_vector("token-name", VECTOR_NAME),
        raw(
            "client-nonce",
            "client nonce (in AuthInit)",
            &client_nonce(),
        ),
        raw(
            "broker-nonce",
            "broker nonce (in AuthChallenge)",
            &broker_nonce(),
        ),
        raw(
            "transcript-input",
            "the Hello frame, then the AuthChallenge frame",
            &[hello, challenge].concat(),
        ),
        raw("transcript", "SHA-256 of the two frames", &t),
        raw("hkdf-salt", "client nonce || broker nonce", &h.salt),
        raw(
            "hkdf-info",
            "\"mote/1 keys\" 00 \"kitchen\" transcript",
            &h.info,
        ),
        raw("hkdf-prk", "HMAC-SHA256(salt, token)", &h.prk),
        raw("key-c2b", "okm[0..32]: client -> broker key", &h.okm[..32]),
        raw(
            "key-b2c",
            "okm[32..64]: broker -> client key",
            &h.okm[32..64],
        ),
        raw("proof-broker", "okm[64..96]: broker proof", &h.okm[64..96]),
        raw("proof-client", "okm[96..128]: client proof", &h.okm[96..]),
    ];
    // The proofs of the table are those of the SDK.
    assert_eq!(&h.okm[64..96], &keys.broker_proof()[..]);
    assert_eq!(&h.okm[96..], &keys.client_proof()[..]);
    let (mut client_sealer, _) = keys.client();
    let (mut broker_sealer, _) = keys.broker();
    for (name, from, frames) in vector_records() {
        let sealer = if from == "c2b" {
            &mut client_sealer
        } else {
            &mut broker_sealer
        };
        let record = seal(sealer, &frames);
        let what: Vec<String> = frames
            .iter()
            .map(|f| {
                let Ok(Decoded::Frame(frame, _)) = wire::decode(f, usize::MAX) else {
                    panic!("{name}: not a frame")
                };
                format!("{} ({} bytes)", variant_name(&frame), f.len())
            })
            .collect();
        v.push(record_vector(name, &record, &what.join(" + ")));
    }
    v
}

#[test]
fn every_vector_is_in_the_document_and_right() {
    let doc = document();
    let table: BTreeMap<&str, Vec<u8>> = vectors().iter().map(|v| (v.name, v.bytes())).collect();
    let shown = blocks(&doc, "hex-vector");
    for b in &shown {
        let (name, line) = (&b.name, b.line);
        let want = table
            .get(name.as_str())
            .unwrap_or_else(|| panic!("line {line}: hex-vector {name} is not in vectors()"));
        assert_eq!(hex(&b.bytes), hex(want), "line {line}: hex-vector {name}");
    }
    let names: BTreeSet<&str> = shown.iter().map(|b| b.name.as_str()).collect();
    for name in table.keys() {
        assert!(
            names.contains(name),
            "PROTOCOL.md has no ```hex-vector {name} block"
        );
    }
}

#[test]
fn vectors_agree_with_the_handshake_frames() {
    let t: BTreeMap<&str, Vec<u8>> = vectors().iter().map(|v| (v.name, v.bytes())).collect();
    // The transcript hashes exactly the `hello` and `auth-challenge` examples.
    let input = [example("hello"), example("auth-challenge")].concat();
    assert_eq!(t["transcript-input"], input);
    // The frames carry the vectors' nonces and proofs.
    let (init, proof) = (example("auth-init"), example("auth-proof"));
    assert!(init.ends_with(&[t["client-nonce"].clone(), t["proof-client"].clone()].concat()));
    assert!(proof.ends_with(&t["proof-broker"]));
    assert!(example("auth-challenge").ends_with(&t["broker-nonce"]));
    let keys = vector_keys();
    assert!(keys.check_client_proof(&t["proof-client"]));
    assert!(keys.check_broker_proof(&t["proof-broker"]));
    assert!(
        !keys.check_client_proof(&t["proof-broker"]),
        "the proofs differ"
    );
}

/// The documented keys, used by an independent ChaCha20-Poly1305 with the documented nonces,
/// give the records the SDK seals; and the SDK opens them, in order, to the frames.
#[test]
fn vector_records_are_what_the_keys_and_nonces_say() {
    let t: BTreeMap<&str, Vec<u8>> = vectors().iter().map(|v| (v.name, v.bytes())).collect();
    let keys = vector_keys();
    let (_, mut client_opener) = keys.client();
    let (_, mut broker_opener) = keys.broker();
    let mut counters = BTreeMap::from([("c2b", 0u64), ("b2c", 0u64)]);
    for (name, from, frames) in vector_records() {
        let record = &t[name];
        let plain = frames.concat();
        // Independently: length, ChaCha20-Poly1305(key, nonce = n as 12 bytes LE, no AAD).
        let n = counters.get_mut(from).unwrap();
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        *n += 1;
        let key: [u8; 32] = t[if from == "c2b" { "key-c2b" } else { "key-b2c" }][..]
            .try_into()
            .unwrap();
        let mut body = plain.clone();
        let tag = ChaCha20Poly1305::new(&Key::from(key))
            .encrypt_inout_detached(&Nonce::from(nonce), &[], (&mut body[..]).into())
            .unwrap();
        let len = (body.len() + secure::TAG_LEN) as u32;
        let expected = [&len.to_le_bytes()[..], &body, &tag[..]].concat();
        assert_eq!(hex(record), hex(&expected), "{name}");
        // The SDK opens it.
        let opener = if from == "c2b" {
            &mut broker_opener
        } else {
            &mut client_opener
        };
        let mut copy = record.clone();
        assert_eq!(
            Opener::peek(&copy, 1 << 20),
            Ok(Record::Complete { total: copy.len() })
        );
        assert_eq!(opener.open(&mut copy).unwrap(), &plain[..], "{name}");
    }
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
        Start::Time(n) => (5, Some(n)),
        Start::Ago(n) => (6, Some(n)),
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
        Frame::Lag(l) | Frame::Evicted(l) => {
            num(&mut p, "sub", l.sub);
            seq(&mut p, "topic", l.topic.as_bytes());
            num(&mut p, "missed", l.missed);
            num(&mut p, "next", l.next);
        }
        Frame::AuthChallenge(c) => array(&mut p, "nonce", &c.nonce),
        Frame::AuthInit(a) => {
            seq(&mut p, "name", a.name.as_bytes());
            array(&mut p, "nonce", &a.nonce);
            array(&mut p, "proof", &a.proof);
        }
        Frame::AuthProof(a) => array(&mut p, "proof", &a.proof),
        Frame::SubscribeGroup(s) => {
            num(&mut p, "sub", s.sub);
            seq(&mut p, "filter", s.filter.as_bytes());
            seq(&mut p, "group", s.group.as_bytes());
            from(&mut p, s.from);
            num(&mut p, "settings.ack_timeout_ms", s.settings.ack_timeout_ms);
            num(&mut p, "settings.max_deliveries", s.settings.max_deliveries);
            num(&mut p, "settings.prefetch", s.settings.prefetch);
            p.push(Part(
                vec![u8::from(s.settings.durable)],
                format!("settings.durable: {}", s.settings.durable),
            ));
        }
        Frame::GroupMessage(m) => {
            num(&mut p, "sub", m.sub);
            num(&mut p, "tag", m.tag);
            seq(&mut p, "topic", m.topic.as_bytes());
            num(&mut p, "offset", m.offset);
            num(&mut p, "time_ms", m.time_ms);
            num(&mut p, "attempt", m.attempt);
            opt_seq(&mut p, "key", m.key);
            seq(&mut p, "payload", m.payload);
        }
        Frame::Ack(a) => {
            num(&mut p, "sub", a.sub);
            num(&mut p, "tag", a.tag);
        }
        Frame::Nack(n) => {
            num(&mut p, "sub", n.sub);
            num(&mut p, "tag", n.tag);
            num(&mut p, "delay_ms", n.delay_ms);
        }
        Frame::Manage(m) => {
            num(&mut p, "req", m.req);
            manage_op(&mut p, &m.op);
        }
        Frame::Managed(m) => {
            num(&mut p, "req", m.req);
            seq(&mut p, "json", m.json.as_bytes());
        }
        Frame::Removed(r) => {
            num(&mut p, "sub", r.sub);
            seq(&mut p, "topic", r.topic.as_bytes());
            num(&mut p, "unread", r.unread);
            num(&mut p, "next", r.next);
        }
        Frame::JoinGroup(j) => {
            num(&mut p, "sub", j.sub);
            seq(&mut p, "filter", j.filter.as_bytes());
            seq(&mut p, "group", j.group.as_bytes());
            from(&mut p, j.from);
            let s = &j.settings;
            num(&mut p, "settings.ack_timeout_ms", s.ack_timeout_ms);
            num(&mut p, "settings.max_deliveries", s.max_deliveries);
            num(&mut p, "settings.prefetch", s.prefetch);
            // Exhaustive on purpose: a new variant needs its index here.
            let index: u32 = match s.durability {
                Durability::Default => 0,
                Durability::Durable => 1,
                Durability::Ephemeral => 2,
            };
            p.push(Part(
                enc(&index),
                format!("settings.durability: {:?} (variant {index})", s.durability),
            ));
            num(&mut p, "settings.expiry_ms", s.expiry_ms);
        }
        Frame::Request(r) => {
            num(&mut p, "req", r.req);
            seq(&mut p, "topic", r.topic.as_bytes());
            num(&mut p, "timeout_ms", r.timeout_ms);
            opt_seq(&mut p, "key", r.key);
            seq(&mut p, "payload", r.payload);
        }
        Frame::Asked(a) => {
            num(&mut p, "sub", a.sub);
            num(&mut p, "tag", a.tag);
            seq(&mut p, "topic", a.topic.as_bytes());
            num(&mut p, "offset", a.offset);
            num(&mut p, "time_ms", a.time_ms);
            num(&mut p, "attempt", a.attempt);
            p.push(Part(enc(&a.reply), format!("reply: 0x{:016x}", a.reply)));
            opt_seq(&mut p, "key", a.key);
            seq(&mut p, "payload", a.payload);
        }
        Frame::Reply(r) => {
            p.push(Part(enc(&r.reply), format!("reply: 0x{:016x}", r.reply)));
            opt_seq(&mut p, "key", r.key);
            seq(&mut p, "payload", r.payload);
        }
        Frame::Response(r) => {
            num(&mut p, "req", r.req);
            opt_seq(&mut p, "key", r.key);
            seq(&mut p, "payload", r.payload);
        }
        Frame::Prepare(x) => {
            num(&mut p, "req", x.req);
            seq(&mut p, "topic", x.topic.as_bytes());
            opt_seq(&mut p, "key", x.key);
            seq(&mut p, "payload", x.payload);
        }
        Frame::Prepared(x) => {
            num(&mut p, "req", x.req);
            p.push(Part(enc(&x.tx), format!("tx: 0x{:016x}", x.tx)));
        }
        Frame::Settle(x) => {
            num(&mut p, "req", x.req);
            p.push(Part(enc(&x.tx), format!("tx: 0x{:016x}", x.tx)));
            p.push(Part(enc(&x.commit), format!("commit: {}", x.commit)));
        }
        Frame::Settled(x) => {
            num(&mut p, "req", x.req);
            p.push(Part(
                enc(&x.committed),
                format!("committed: {}", x.committed),
            ));
            num(&mut p, "offset", x.offset);
            num(&mut p, "time_ms", x.time_ms);
        }
        Frame::TxCheck(x) => {
            p.push(Part(enc(&x.tx), format!("tx: 0x{:016x}", x.tx)));
            seq(&mut p, "topic", x.topic.as_bytes());
            num(&mut p, "attempt", x.attempt);
        }
        Frame::GetLimits(x) => {
            num(&mut p, "req", x.req);
            match x.topic {
                None => p.push(Part(vec![0], "topic: none".into())),
                Some(t) => {
                    p.push(Part(vec![1], "topic: some".into()));
                    seq(&mut p, "topic", t.as_bytes());
                }
            }
        }
        Frame::Limits(x) => {
            num(&mut p, "req", x.req);
            num(&mut p, "max_frame", x.max_frame);
            num(&mut p, "max_payload", x.max_payload);
            num(&mut p, "max_key", x.max_key);
            num(&mut p, "entry_overhead", x.entry_overhead);
            num(&mut p, "ring_messages", x.ring_messages);
            num(&mut p, "ring_bytes", x.ring_bytes);
            num(&mut p, "memory", x.memory);
            num(&mut p, "disk", x.disk);
            match x.topic {
                None => p.push(Part(vec![0], "topic: none".into())),
                Some(t) => {
                    p.push(Part(vec![1], "topic: some".into()));
                    p.push(Part(enc(&t.persist), format!("  persist: {}", t.persist)));
                    for (name, v) in [
                        ("max_age_ms", t.max_age_ms),
                        ("retain_messages", t.retain_messages),
                        ("retain_bytes", t.retain_bytes),
                    ] {
                        match v {
                            None => p.push(Part(vec![0], format!("  {name}: none"))),
                            Some(v) => {
                                p.push(Part(vec![1], format!("  {name}: some")));
                                num(&mut p, &format!("  {name}"), v);
                            }
                        }
                    }
                    p.push(Part(
                        enc(&t.discard_new),
                        format!("  discard_new: {}", t.discard_new),
                    ));
                }
            }
        }
        other => panic!("no annotation for {other:?}"),
    }
    p
}

/// A `ManageOp`: its variant index, then its fields.
fn manage_op(p: &mut Vec<Part>, op: &ManageOp<'_>) {
    let index: u32 = match op {
        ManageOp::Topics { .. } => 0,
        ManageOp::TopicInfo { .. } => 1,
        ManageOp::Purge { .. } => 2,
        ManageOp::DeleteTopic { .. } => 3,
        ManageOp::Meta { .. } => 4,
        ManageOp::Groups => 5,
        ManageOp::GroupInfo { .. } => 6,
        ManageOp::Seek { .. } => 7,
        ManageOp::DeleteGroup { .. } => 8,
    };
    let variant = format!("{op:?}");
    let variant = variant
        .split([' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned();
    p.push(Part(
        enc(&index),
        format!("op: {variant} (variant {index})"),
    ));
    match op {
        ManageOp::Topics { filter, from } => {
            seq(p, "  filter", filter.as_bytes());
            num(p, "  from", from);
        }
        ManageOp::TopicInfo { topic }
        | ManageOp::Purge { topic }
        | ManageOp::DeleteTopic { topic } => seq(p, "  topic", topic.as_bytes()),
        ManageOp::Meta { topic, set } => {
            seq(p, "  topic", topic.as_bytes());
            p.push(Part(enc(&set.len()), format!("  set: {} pairs", set.len())));
            for (k, v) in set {
                seq(p, "    key", k.as_bytes());
                seq(p, "    value", v.as_bytes());
            }
        }
        ManageOp::Groups => {}
        ManageOp::GroupInfo { group } | ManageOp::DeleteGroup { group } => {
            seq(p, "  group", group.as_bytes());
        }
        ManageOp::Seek { group, to } => {
            seq(p, "  group", group.as_bytes());
            let mut parts = Vec::new();
            from(&mut parts, *to);
            for Part(b, note) in parts {
                p.push(Part(b, format!("  {}", note.replacen("from", "to", 1))));
            }
        }
    }
}

/// A fixed-size byte array: its bytes as they are, no length, in lines of 16.
fn array(parts: &mut Vec<Part>, name: &str, b: &[u8]) {
    for (i, chunk) in b.chunks(16).enumerate() {
        let note = if i == 0 {
            format!("{name}: {} bytes, no length", b.len())
        } else {
            String::new()
        };
        parts.push(Part(chunk.to_vec(), note));
    }
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
        s.push_str(&line(b, note));
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

/// One line of a block: the bytes, then the note (if any).
fn line(b: &[u8], note: &str) -> String {
    if note.is_empty() {
        format!("{}\n", hex(b))
    } else {
        format!("{:<47}  # {note}\n", hex(b))
    }
}

#[test]
#[ignore = "prints the hex blocks for PROTOCOL.md"]
fn print_examples() {
    for (name, frame) in examples() {
        println!("{}", annotate(name, &frame));
    }
    for b in bad_examples() {
        println!("```hex-bad {}\n{}```\n", b.name, line(&b.bytes, ""));
    }
    for v in vectors() {
        println!("```hex-vector {}", v.name);
        for Part(b, note) in &v.parts {
            print!("{}", line(b, note));
        }
        println!("```\n");
    }
}
