#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use mote_sdk::secure::{Opener, Record, Sealer, SessionKeys, Token, transcript};
use mote_sdk::wire::{AuthInit, Hello, Publish, Subscribe};

use super::*;
use crate::auth::{Auth, Rules};
use crate::limits::Limits;

const SECRET: &str = "0123456789abcdef0123";

fn setup(auth: Auth) -> (Engine, Session) {
    let mut e = Engine::new(Limits::default(), 42);
    let c = e.handle_connect(0, Some("10.1.2.3:4000".parse().unwrap()));
    let max = e.limits().max_frame();
    (
        e,
        Session::new(c, max, std::sync::Arc::new(auth), [0xbb; 32]),
    )
}

fn frames(bytes: &[u8]) -> Vec<Frame<'_>> {
    let mut v = Vec::new();
    let mut pos = 0;
    while let Ok(Decoded::Frame(f, n)) = wire::decode(&bytes[pos..], usize::MAX) {
        v.push(f);
        pos += n;
    }
    assert_eq!(pos, bytes.len(), "only whole frames");
    v
}

fn input(
    s: &mut Session,
    e: &mut Engine,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<Progress, ErrorCode> {
    let mut b = bytes.to_vec();
    let r = s.handle_input(e, 1000, &mut b, out);
    s.seal(out);
    r
}

#[test]
fn handshake_then_publish_confirmed() {
    let (mut e, mut s) = setup(Auth::none());
    let mut bytes = Frame::Hello(Hello::new("test")).to_vec();
    Frame::Publish(Publish {
        req: 5,
        topic: "a/b",
        key: None,
        payload: b"x",
    })
    .encode(&mut bytes);
    let mut out = Vec::new();
    let p = input(&mut s, &mut e, &bytes, &mut out).unwrap();
    assert_eq!(p.consumed, bytes.len());
    let f = frames(&out);
    assert!(
        matches!(&f[0], Frame::Welcome(w) if w.broker_id == 42 && w.version == wire::PROTOCOL_VERSION)
    );
    assert_eq!(f[1], Frame::Published(Published { req: 5, offset: 0 }));
    assert!(!s.encrypted());
}

#[test]
fn a_client_that_speaks_only_version_1_gets_version_1() {
    let (mut e, mut s) = setup(Auth::none());
    let mut h = Hello::new("old");
    h.max_version = 1;
    let mut out = Vec::new();
    input(&mut s, &mut e, &Frame::Hello(h).to_vec(), &mut out).unwrap();
    assert!(matches!(&frames(&out)[0], Frame::Welcome(w) if w.version == 1));
}

#[test]
fn publish_before_hello_is_a_protocol_error() {
    let (mut e, mut s) = setup(Auth::none());
    let bytes = Frame::Ping(Ping { nonce: 1 }).to_vec();
    let mut out = Vec::new();
    assert_eq!(
        input(&mut s, &mut e, &bytes, &mut out),
        Err(ErrorCode::PROTOCOL)
    );
    assert!(matches!(
        &frames(&out)[0],
        Frame::Error(x) if x.message == "not a mote client: the first frame must be hello"
    ));
}

#[test]
fn version_negotiation_refuses_no_overlap() {
    let (mut e, mut s) = setup(Auth::none());
    let mut h = Hello::new("future");
    h.min_version = 7;
    h.max_version = 9;
    let mut out = Vec::new();
    let r = input(&mut s, &mut e, &Frame::Hello(h).to_vec(), &mut out);
    assert_eq!(r, Err(ErrorCode::UNSUPPORTED_VERSION));
    assert!(matches!(&frames(&out)[0], Frame::Error(x) if x.message.contains("7..=9")));
}

#[test]
fn partial_frames_wait_and_oversize_is_refused() {
    let (mut e, mut s) = setup(Auth::none());
    let hello = Frame::Hello(Hello::new("t")).to_vec();
    let mut out = Vec::new();
    let p = input(&mut s, &mut e, &hello[..3], &mut out).unwrap();
    assert_eq!(
        p,
        Progress {
            consumed: 0,
            need: Some(hello.len())
        }
    );
    assert!(out.is_empty());
    input(&mut s, &mut e, &hello, &mut out).unwrap();
    out.clear();
    // Before the handshake only a small frame is accepted.
    let (mut e2, mut s2) = setup(Auth::none());
    let r = input(
        &mut s2,
        &mut e2,
        &[0x80, 0x08, wire::tag::HELLO],
        &mut Vec::new(),
    );
    assert_eq!(r, Err(ErrorCode::FRAME_TOO_LARGE));
    // An HTTP request is refused from its first bytes.
    let r = input(
        &mut setup(Auth::none()).1,
        &mut e2,
        b"GET / HTTP/1.1\r\n",
        &mut Vec::new(),
    );
    assert_eq!(r, Err(ErrorCode::PROTOCOL));
    // After it, a length prefix of 16 MiB is refused from the prefix alone.
    let r = input(&mut s, &mut e, &[0x80, 0x80, 0x80, 0x08], &mut out);
    assert_eq!(r, Err(ErrorCode::FRAME_TOO_LARGE));
    assert_eq!(e.stats().errors(ErrorCode::FRAME_TOO_LARGE), 1);
}

/// The client's half of the token handshake, written against the SDK's key schedule.
struct Client {
    keys: SessionKeys,
    sealer: Sealer,
    opener: Opener,
}

fn auth_kitchen() -> Auth {
    let mut a = Auth::none();
    let rules = Rules::new("kitchen", &["home/{name}/#".into()], &["home/#".into()]).unwrap();
    a.insert("kitchen", Token::new(SECRET).unwrap(), rules)
        .unwrap();
    a
}

/// Runs the handshake with `secret` as token `name`; returns the client and the
/// broker's records after its proof on success, or the broker's error frame.
fn handshake(
    s: &mut Session,
    e: &mut Engine,
    name: &str,
    secret: &str,
) -> Result<(Client, Vec<u8>), (ErrorCode, String)> {
    let hello = Frame::Hello(Hello::new("t")).to_vec();
    let mut challenge = Vec::new();
    input(s, e, &hello, &mut challenge).unwrap();
    let Some(Frame::AuthChallenge(c)) = frames(&challenge).first().cloned() else {
        panic!("expected a challenge: {challenge:?}")
    };
    let keys = SessionKeys::derive(
        &Token::new(secret).unwrap(),
        name,
        &[0xcc; 32],
        &c.nonce,
        &transcript(&hello, &challenge),
    );
    let init = Frame::AuthInit(AuthInit {
        name,
        nonce: [0xcc; 32],
        proof: keys.client_proof(),
    })
    .to_vec();
    let mut out = Vec::new();
    let r = input(s, e, &init, &mut out);
    let Ok(Decoded::Frame(first, used)) = wire::decode(&out, usize::MAX) else {
        panic!("no answer")
    };
    match (r, first) {
        (Ok(_), Frame::AuthProof(p)) => {
            assert!(
                keys.check_broker_proof(&p.proof),
                "the broker proved the token"
            );
            let records = out[used..].to_vec();
            let (sealer, opener) = keys.client();
            Ok((
                Client {
                    keys,
                    sealer,
                    opener,
                },
                records,
            ))
        }
        (Err(code), Frame::Error(x)) => Err((code, x.message.to_string())),
        other => panic!("unexpected {other:?}"),
    }
}

impl Client {
    fn seal(&mut self, fs: &[Frame<'_>]) -> Vec<u8> {
        let mut rec = Vec::new();
        let at = Sealer::begin(&mut rec);
        for f in fs {
            f.encode(&mut rec);
        }
        self.sealer.seal(&mut rec, at);
        rec
    }

    /// Every frame in the broker's records, as owned debug text.
    fn open_all(&mut self, mut bytes: Vec<u8>) -> Vec<String> {
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let Ok(Record::Complete { total }) = Opener::peek(&bytes[pos..], 1 << 24) else {
                panic!("incomplete record")
            };
            let plain = self
                .opener
                .open(&mut bytes[pos..pos + total])
                .unwrap()
                .to_vec();
            got.extend(frames(&plain).iter().map(|f| format!("{f:?}")));
            pos += total;
        }
        got
    }
}

#[test]
fn token_handshake_encrypts_and_enforces_rules() {
    let (mut e, mut s) = setup(auth_kitchen());
    let (mut c, welcome) = handshake(&mut s, &mut e, "kitchen", SECRET).unwrap();
    assert!(s.encrypted());
    assert!(
        !welcome.windows(4).any(|w| w == b"mote"),
        "welcome is inside a record"
    );
    let got = c.open_all(welcome);
    assert!(got[0].starts_with("Welcome("), "{got:?}");
    let _ = &c.keys;

    let rec = c.seal(&[
        Frame::Publish(Publish {
            req: 1,
            topic: "home/kitchen/temp",
            key: None,
            payload: b"21.5",
        }),
        Frame::Publish(Publish {
            req: 2,
            topic: "home/hall/temp",
            key: None,
            payload: b"19",
        }),
        Frame::Subscribe(Subscribe {
            sub: 3,
            filter: "#",
            from: Start::Latest,
            resume: Vec::new(),
        }),
        Frame::Subscribe(Subscribe {
            sub: 4,
            filter: "home/+/temp",
            from: Start::Earliest,
            resume: Vec::new(),
        }),
    ]);
    let mut out = Vec::new();
    input(&mut s, &mut e, &rec, &mut out).unwrap();
    let mut more = Vec::new();
    s.poll_output(&mut e, &mut more, 1 << 20);
    s.seal(&mut more);
    out.extend_from_slice(&more);
    let got = c.open_all(out).join("\n");
    assert!(
        got.contains("Published(Published { req: 1, offset: 0 })"),
        "{got}"
    );
    assert!(
        got.contains(r#"message: "token \"kitchen\" may not publish to \"home/hall/temp\" (its publish rules: home/kitchen/#)""#),
        "{got}"
    );
    assert!(
        got.contains(r##"may not subscribe to \"#\" (its subscribe rules: home/#)"##),
        "{got}"
    );
    assert!(got.contains("Subscribed(Subscribed { sub: 4"), "{got}");
    assert!(
        got.contains("topic: \"home/kitchen/temp\""),
        "the allowed message is delivered: {got}"
    );
    assert_eq!(e.stats().errors(ErrorCode::FORBIDDEN), 2);
    assert_eq!(e.conn_infos()[0].token.as_deref(), Some("kitchen"));
}

use mote_sdk::Start;

#[test]
fn wrong_or_missing_tokens_are_refused_alike() {
    let (mut e, mut s) = setup(auth_kitchen());
    let (code, msg) = handshake(&mut s, &mut e, "kitchen", "wrong-token-0123456789")
        .err()
        .unwrap();
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::UNAUTHORIZED, "authentication failed")
    );
    let (mut e2, mut s2) = setup(auth_kitchen());
    let (code, msg) = handshake(&mut s2, &mut e2, "nobody", SECRET).err().unwrap();
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::UNAUTHORIZED, "authentication failed")
    );
    assert_eq!(e.stats().auth_failures + e2.stats().auth_failures, 2);
    // Hello and then anything but AuthInit.
    let (mut e3, mut s3) = setup(auth_kitchen());
    let mut out = Vec::new();
    let bytes = [Frame::Hello(Hello::new("t")).to_vec(), super::ping(1)].concat();
    assert_eq!(
        input(&mut s3, &mut e3, &bytes, &mut out),
        Err(ErrorCode::UNAUTHORIZED)
    );
    let f = frames(&out);
    assert!(
        matches!(&f[0], Frame::AuthChallenge(_)),
        "the broker asks at once"
    );
    assert!(matches!(&f[1], Frame::Error(x) if x.message.contains("requires a token")));
}

#[test]
fn tampered_and_replayed_records_close_the_connection() {
    let (mut e, mut s) = setup(auth_kitchen());
    let (mut c, welcome) = handshake(&mut s, &mut e, "kitchen", SECRET).unwrap();
    c.open_all(welcome);
    let first = c.seal(&[Frame::Ping(Ping { nonce: 1 })]);
    let mut out = Vec::new();
    input(&mut s, &mut e, &first, &mut out).unwrap();
    assert_eq!(c.open_all(out), ["Pong(Ping { nonce: 1 })"]);
    // The same record again: its nonce is spent.
    let mut out = Vec::new();
    assert_eq!(
        input(&mut s, &mut e, &first, &mut out),
        Err(ErrorCode::UNAUTHORIZED)
    );
    assert_eq!(e.stats().records_rejected, 1);
    let got = c.open_all(out);
    assert!(
        got[0].contains("authentication failed"),
        "the error is sealed too: {got:?}"
    );

    let (mut e, mut s) = setup(auth_kitchen());
    let (mut c, _) = handshake(&mut s, &mut e, "kitchen", SECRET).unwrap();
    let mut rec = c.seal(&[Frame::Ping(Ping { nonce: 1 })]);
    let last = rec.len() - 1;
    rec[last] ^= 0x40;
    assert_eq!(
        input(&mut s, &mut e, &rec, &mut Vec::new()),
        Err(ErrorCode::UNAUTHORIZED)
    );
    assert_eq!(e.stats().records_rejected, 1);
}

#[test]
fn a_broker_without_tokens_says_so() {
    let (mut e, mut s) = setup(Auth::none());
    let bytes = [
        Frame::Hello(Hello::new("t")).to_vec(),
        Frame::AuthInit(AuthInit {
            name: "x",
            nonce: [1; 32],
            proof: [2; 32],
        })
        .to_vec(),
    ]
    .concat();
    let mut out = Vec::new();
    assert_eq!(
        input(&mut s, &mut e, &bytes, &mut out),
        Err(ErrorCode::UNAUTHORIZED)
    );
    let f = frames(&out);
    assert!(matches!(&f[0], Frame::Welcome(_)));
    assert!(matches!(&f[1], Frame::Error(x) if x.message.contains("no tokens")));
}

#[test]
fn an_open_session_is_small() {
    // Idle connections must cost well under 1 KiB: the handshake state and the cipher
    // state live in boxes that a plaintext session frees or never allocates.
    assert!(
        std::mem::size_of::<Session>() <= 96,
        "{}",
        std::mem::size_of::<Session>()
    );
    let (mut e, mut s) = setup(Auth::none());
    input(
        &mut s,
        &mut e,
        &Frame::Hello(Hello::new("t")).to_vec(),
        &mut Vec::new(),
    )
    .unwrap();
    assert!(s.phase.is_none() && s.crypto.is_none());
}

#[test]
fn a_member_of_a_deleted_group_is_told_on_its_subscription_id() {
    let (mut e, mut s) = setup(Auth::none());
    let mut bytes = Frame::Hello(Hello::new("test")).to_vec();
    Frame::SubscribeGroup(wire::SubscribeGroup {
        sub: 7,
        filter: "jobs",
        group: "workers",
        from: mote_sdk::Start::Latest,
        settings: wire::GroupSettings::default(),
    })
    .encode(&mut bytes);
    let mut out = Vec::new();
    input(&mut s, &mut e, &bytes, &mut out).unwrap();
    e.delete_group("workers").unwrap();
    let mut out = Vec::new();
    s.poll_output(&mut e, &mut out, 1 << 20);
    assert_eq!(
        frames(&out),
        [Frame::Error(ErrorFrame {
            code: ErrorCode::NOT_FOUND,
            req: 7,
            message: "group \"workers\" was deleted",
        })]
    );
}

#[test]
fn a_removed_topic_is_told_with_what_was_unread_as_removed_or_to_older_clients_as_lag() {
    for version in [2, 3] {
        let (mut e, mut s) = setup(Auth::none());
        let mut hello = Hello::new("test");
        hello.max_version = version;
        let mut bytes = Frame::Hello(hello).to_vec();
        Frame::Subscribe(Subscribe {
            sub: 3,
            filter: "a/b",
            from: Start::Latest,
            resume: Vec::new(),
        })
        .encode(&mut bytes);
        let mut out = Vec::new();
        input(&mut s, &mut e, &bytes, &mut out).unwrap();
        let p = e.handle_connect_http(0, None, "pub", None);
        for _ in 0..4 {
            e.handle_publish(p, 1, "a/b", None, b"x").unwrap();
        }
        e.delete_topic("a/b").unwrap();
        let mut out = Vec::new();
        assert!(!s.poll_output(&mut e, &mut out, 1 << 20));
        let want = if version == 2 {
            Frame::Lag(Lag {
                sub: 3,
                topic: "a/b",
                missed: 4,
                next: 4,
            })
        } else {
            Frame::Removed(wire::Removed {
                sub: 3,
                topic: "a/b",
                unread: 4,
                next: 4,
            })
        };
        assert_eq!(frames(&out), [want], "version {version}");
    }
}

// ---- Issue 12: management over the binary protocol (version 3).

fn hello_version(s: &mut Session, e: &mut Engine, max_version: u16) {
    let mut h = Hello::new("t");
    h.max_version = max_version;
    let mut out = Vec::new();
    input(s, e, &Frame::Hello(h).to_vec(), &mut out).unwrap();
    assert!(matches!(&frames(&out)[0], Frame::Welcome(w) if w.version == max_version));
}

fn manage(req: u32, op: wire::ManageOp<'_>) -> Vec<u8> {
    Frame::Manage(wire::Manage { req, op }).to_vec()
}

#[test]
fn manage_answers_json_or_an_error_with_its_req() {
    let (mut e, mut s) = setup(Auth::none());
    hello_version(&mut s, &mut e, 3);
    let mut bytes = Frame::Publish(Publish {
        req: 0,
        topic: "a/b",
        key: None,
        payload: b"x",
    })
    .to_vec();
    bytes.extend(manage(
        7,
        wire::ManageOp::Topics {
            filter: "",
            from: 0,
        },
    ));
    bytes.extend(manage(8, wire::ManageOp::GroupInfo { group: "nobody" }));
    bytes.extend(manage(
        9,
        wire::ManageOp::Topics {
            filter: "a/+/#/x",
            from: 0,
        },
    ));
    let mut out = Vec::new();
    input(&mut s, &mut e, &bytes, &mut out).unwrap();
    let f = frames(&out);
    let Frame::Managed(m) = &f[0] else {
        panic!("{f:?}")
    };
    assert_eq!(m.req, 7);
    let v: serde_json::Value = serde_json::from_str(m.json).unwrap();
    assert_eq!(v["topics"][0]["name"], "a/b");
    assert_eq!(v["next"], serde_json::Value::Null);
    assert!(
        matches!(&f[1], Frame::Error(x) if x.req == 8 && x.code == ErrorCode::NOT_FOUND && x.message == "no group \"nobody\""),
        "{f:?}"
    );
    assert!(
        matches!(&f[2], Frame::Error(x) if x.req == 9 && x.code == ErrorCode::BAD_FILTER),
        "{f:?}"
    );
    assert_eq!(e.stats().errors(ErrorCode::NOT_FOUND), 1);
    assert_eq!(e.stats().errors(ErrorCode::BAD_FILTER), 1);
}

#[test]
fn version_3_frames_from_an_older_client_are_protocol_errors() {
    for v in [1, 2] {
        let (mut e, mut s) = setup(Auth::none());
        hello_version(&mut s, &mut e, v);
        let mut out = Vec::new();
        let r = input(&mut s, &mut e, &manage(1, wire::ManageOp::Groups), &mut out);
        assert_eq!(r, Err(ErrorCode::PROTOCOL));
        assert!(
            matches!(&frames(&out)[0], Frame::Error(x) if x.message == format!("a management request (tag 0x0e) needs protocol 3; this connection agreed on version {v}")),
            "{:?}",
            frames(&out)
        );
        let (mut e, mut s) = setup(Auth::none());
        hello_version(&mut s, &mut e, v);
        let sub = Frame::Subscribe(Subscribe {
            sub: 1,
            filter: "a",
            from: Start::Ago(1000),
            resume: Vec::new(),
        })
        .to_vec();
        let mut out = Vec::new();
        assert_eq!(
            input(&mut s, &mut e, &sub, &mut out),
            Err(ErrorCode::PROTOCOL)
        );
        assert!(
            matches!(&frames(&out)[0], Frame::Error(x) if x.message.starts_with("a start by time needs protocol 3"))
        );
    }
}

#[test]
fn manage_needs_the_manage_rule_and_the_refusal_names_it() {
    let (mut e, mut s) = setup(auth_kitchen());
    let (mut c, welcome) = handshake(&mut s, &mut e, "kitchen", SECRET).unwrap();
    c.open_all(welcome);
    let rec = c.seal(&[
        Frame::Manage(wire::Manage {
            req: 3,
            op: wire::ManageOp::Purge {
                topic: "home/kitchen/temp",
            },
        }),
        Frame::Manage(wire::Manage {
            req: 4,
            op: wire::ManageOp::TopicInfo {
                topic: "garage/door",
            },
        }),
    ]);
    let mut out = Vec::new();
    input(&mut s, &mut e, &rec, &mut out).unwrap();
    let got = c.open_all(out).join("\n");
    assert!(
        got.contains(r#"code: ErrorCode(16), req: 3, message: "token \"kitchen\" may not manage \"home/kitchen/temp\" (its manage rules: none)""#),
        "{got}"
    );
    assert!(
        got.contains(r#"req: 4, message: "token \"kitchen\" may not see \"garage/door\""#),
        "{got}"
    );
    assert_eq!(e.stats().errors(ErrorCode::FORBIDDEN), 2);
}

#[test]
fn removed_is_a_lag_for_older_clients() {
    let mut out = Vec::new();
    encode_removed(3, 4, "a/b", 2, 17, &mut out);
    encode_removed(2, 4, "a/b", 2, 17, &mut out);
    assert_eq!(
        frames(&out),
        vec![
            Frame::Removed(Removed {
                sub: 4,
                topic: "a/b",
                unread: 2,
                next: 17
            }),
            Frame::Lag(Lag {
                sub: 4,
                topic: "a/b",
                missed: 2,
                next: 17
            }),
        ]
    );
}

// ---- Issue 12: joining a group with durability and expiry (JoinGroup, version 3).

fn join(sub: u32, group: &str, durability: wire::Durability, expiry_ms: u64) -> Vec<u8> {
    Frame::JoinGroup(wire::JoinGroup {
        sub,
        filter: "jobs/#",
        group,
        from: Start::Latest,
        settings: wire::JoinSettings {
            durability,
            expiry_ms,
            ..wire::JoinSettings::default()
        },
    })
    .to_vec()
}

#[test]
fn join_group_makes_an_ephemeral_group_or_one_with_a_shorter_expiry() {
    let (mut e, mut s) = setup(Auth::none());
    hello_version(&mut s, &mut e, 3);
    let mut bytes = join(1, "short-lived", wire::Durability::Ephemeral, 0);
    bytes.extend(join(2, "soon", wire::Durability::Default, 60_000));
    bytes.extend(join(3, "bad/name", wire::Durability::Durable, 0));
    let mut out = Vec::new();
    input(&mut s, &mut e, &bytes, &mut out).unwrap();
    let f = frames(&out);
    assert!(matches!(&f[0], Frame::Subscribed(x) if x.sub == 1), "{f:?}");
    assert!(matches!(&f[1], Frame::Subscribed(x) if x.sub == 2), "{f:?}");
    assert!(
        matches!(&f[2], Frame::Error(x) if x.req == 3 && x.code == ErrorCode::BAD_GROUP),
        "{f:?}"
    );
    let ephemeral = e.group_by_name("short-lived").unwrap();
    assert!(!ephemeral.settings.durable);
    assert_eq!(ephemeral.expiry_ms, None);
    let soon = e.group_by_name("soon").unwrap();
    assert!(soon.settings.durable);
    assert_eq!(soon.expiry_ms, Some(60_000));

    // The ephemeral group goes with its member; the durable one stays.
    let mut out = Vec::new();
    let mut bytes = Frame::Unsubscribe(Unsubscribe { sub: 1 }).to_vec();
    bytes.extend(Frame::Unsubscribe(Unsubscribe { sub: 2 }).to_vec());
    input(&mut s, &mut e, &bytes, &mut out).unwrap();
    assert!(e.group_by_name("short-lived").is_none());
    assert!(e.group_by_name("soon").is_some());
}

#[test]
fn join_group_from_an_older_client_is_a_protocol_error() {
    for v in [1, 2] {
        let (mut e, mut s) = setup(Auth::none());
        hello_version(&mut s, &mut e, v);
        let mut out = Vec::new();
        let r = input(
            &mut s,
            &mut e,
            &join(1, "workers", wire::Durability::Ephemeral, 0),
            &mut out,
        );
        assert_eq!(r, Err(ErrorCode::PROTOCOL));
        assert!(
            matches!(&frames(&out)[0], Frame::Error(x) if x.message == format!("a group join with durability and expiry (tag 0x24) needs protocol 3; this connection agreed on version {v}")),
            "{:?}",
            frames(&out)
        );
        assert!(e.group_by_name("workers").is_none());
    }
}

#[test]
fn join_group_keeps_the_tokens_subscribe_rules() {
    let (mut e, mut s) = setup(auth_kitchen());
    let (mut c, welcome) = handshake(&mut s, &mut e, "kitchen", SECRET).unwrap();
    c.open_all(welcome);
    let bytes = c.seal(&[Frame::JoinGroup(wire::JoinGroup {
        sub: 4,
        filter: "jobs/#",
        group: "workers",
        from: Start::Latest,
        settings: wire::JoinSettings::default(),
    })]);
    let mut out = Vec::new();
    input(&mut s, &mut e, &bytes, &mut out).unwrap();
    let got = c.open_all(out);
    assert!(
        got.iter()
            .any(|f| f.contains("FORBIDDEN") || f.contains("code: ErrorCode(16)")),
        "{got:?}"
    );
    assert!(e.group_by_name("workers").is_none());
}
