//! Property tests of the frame decoder: it never panics on any input, every frame
//! round-trips, a partial frame is always "incomplete" (never an error), and the size limit
//! is enforced from the length prefix alone. The same for the record opener of encrypted
//! connections (`secure::Opener`): arbitrary bytes never panic `peek` or `open` and never
//! open, every strict prefix of a sealed record is "incomplete", sealed records open in
//! order to exactly what was sealed, and a changed record never opens. Every frame of
//! protocol 3 is among them (`Manage` with each operation, `Managed`, `Removed`,
//! `JoinGroup`).

// Tests: a panic is the failure report, and every unwrap here is on data the test controls.
#![allow(clippy::unwrap_used)]

use mote_sdk::secure::{self, OpenError, Opener, Record, Sealer, SessionKeys, Token};
use mote_sdk::wire::{
    self, AuthChallenge, AuthInit, AuthProof, DecodeError, Decoded, Durability, ErrorCode,
    ErrorFrame, Frame, Hello, JoinGroup, JoinSettings, Lag, MAX_LENGTH_PREFIX, Manage, ManageOp,
    Managed, Message, Ping, Publish, Published, Removed, Resume, Start, Subscribe, Subscribed,
    Unsubscribe, Welcome,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Modest case counts keep `cargo test` fast; no regression files are written into the tree.
fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A frame's field values, owned, so that a strategy can produce them.
#[derive(Debug, Clone)]
enum Owned {
    Hello([u8; 4], u16, u16, String),
    Welcome(u16, u32, u32, u32, u32, u64, String),
    Ping(u64),
    Pong(u64),
    Error(u16, u32, String),
    Publish(u32, String, Option<Vec<u8>>, Vec<u8>),
    Published(u32, u64),
    Subscribe(u32, String, Start, Vec<(String, u64)>),
    Subscribed(u32, u64),
    Unsubscribe(u32),
    Unsubscribed(u32),
    Message(u32, String, u64, u64, Option<Vec<u8>>, Vec<u8>),
    Lag(u32, String, u64, u64),
    AuthChallenge([u8; 32]),
    AuthInit(String, [u8; 32], [u8; 32]),
    AuthProof([u8; 32]),
    /// `req`, which operation (0..=8), its name or filter, `from`, metadata pairs, seek target.
    Manage(u32, u8, String, u32, Vec<(String, String)>, Start),
    Managed(u32, String),
    Removed(u32, String, u64, u64),
    /// `sub`, filter, group, `from`, ack timeout, deliveries, prefetch, durability (0..=2),
    /// expiry.
    JoinGroup(u32, String, String, Start, [u32; 3], u8, u64),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Owned::Hello(magic, min_version, max_version, client) => Frame::Hello(Hello {
                magic: *magic,
                min_version: *min_version,
                max_version: *max_version,
                client,
            }),
            Owned::Welcome(version, keepalive_ms, max_frame, max_payload, max_subs, id, broker) => {
                Frame::Welcome(Welcome {
                    version: *version,
                    keepalive_ms: *keepalive_ms,
                    max_frame: *max_frame,
                    max_payload: *max_payload,
                    max_subscriptions: *max_subs,
                    broker_id: *id,
                    broker,
                })
            }
            Owned::Ping(nonce) => Frame::Ping(Ping { nonce: *nonce }),
            Owned::Pong(nonce) => Frame::Pong(Ping { nonce: *nonce }),
            Owned::Error(code, req, message) => Frame::Error(ErrorFrame {
                code: ErrorCode(*code),
                req: *req,
                message,
            }),
            Owned::Publish(req, topic, key, payload) => Frame::Publish(Publish {
                req: *req,
                topic,
                key: key.as_deref(),
                payload,
            }),
            Owned::Published(req, offset) => Frame::Published(Published {
                req: *req,
                offset: *offset,
            }),
            Owned::Subscribe(sub, filter, from, resume) => Frame::Subscribe(Subscribe {
                sub: *sub,
                filter,
                from: *from,
                resume: resume
                    .iter()
                    .map(|(topic, next)| Resume { topic, next: *next })
                    .collect(),
            }),
            Owned::Subscribed(sub, seq) => Frame::Subscribed(Subscribed {
                sub: *sub,
                seq: *seq,
            }),
            Owned::Unsubscribe(sub) => Frame::Unsubscribe(Unsubscribe { sub: *sub }),
            Owned::Unsubscribed(sub) => Frame::Unsubscribed(Unsubscribe { sub: *sub }),
            Owned::Message(sub, topic, offset, time_ms, key, payload) => Frame::Message(Message {
                sub: *sub,
                topic,
                offset: *offset,
                time_ms: *time_ms,
                key: key.as_deref(),
                payload,
            }),
            Owned::Lag(sub, topic, missed, next) => Frame::Lag(Lag {
                sub: *sub,
                topic,
                missed: *missed,
                next: *next,
            }),
            Owned::AuthChallenge(nonce) => Frame::AuthChallenge(AuthChallenge { nonce: *nonce }),
            Owned::AuthInit(name, nonce, proof) => Frame::AuthInit(AuthInit {
                name,
                nonce: *nonce,
                proof: *proof,
            }),
            Owned::AuthProof(proof) => Frame::AuthProof(AuthProof { proof: *proof }),
            Owned::Manage(req, kind, name, from, set, to) => {
                let name = name.as_str();
                let op = match kind % 9 {
                    0 => ManageOp::Topics {
                        filter: name,
                        from: *from,
                    },
                    1 => ManageOp::TopicInfo { topic: name },
                    2 => ManageOp::Purge { topic: name },
                    3 => ManageOp::DeleteTopic { topic: name },
                    4 => ManageOp::Meta {
                        topic: name,
                        set: set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                    },
                    5 => ManageOp::Groups,
                    6 => ManageOp::GroupInfo { group: name },
                    7 => ManageOp::Seek {
                        group: name,
                        to: *to,
                    },
                    _ => ManageOp::DeleteGroup { group: name },
                };
                Frame::Manage(Manage { req: *req, op })
            }
            Owned::Managed(req, json) => Frame::Managed(Managed { req: *req, json }),
            Owned::Removed(sub, topic, unread, next) => Frame::Removed(Removed {
                sub: *sub,
                topic,
                unread: *unread,
                next: *next,
            }),
            Owned::JoinGroup(sub, filter, group, from, [a, m, p], d, expiry_ms) => {
                Frame::JoinGroup(JoinGroup {
                    sub: *sub,
                    filter,
                    group,
                    from: *from,
                    settings: JoinSettings {
                        ack_timeout_ms: *a,
                        max_deliveries: *m,
                        prefetch: *p,
                        durability: match d % 3 {
                            0 => Durability::Default,
                            1 => Durability::Durable,
                            _ => Durability::Ephemeral,
                        },
                        expiry_ms: *expiry_ms,
                    },
                })
            }
        }
    }
}

/// Small values (one-byte varints), the extremes, and anything in between.
fn u16s() -> impl Strategy<Value = u16> {
    prop_oneof![0..130u16, Just(u16::MAX), any::<u16>()]
}

fn u32s() -> impl Strategy<Value = u32> {
    prop_oneof![0..130u32, Just(u32::MAX), any::<u32>()]
}

fn u64s() -> impl Strategy<Value = u64> {
    prop_oneof![0..130u64, Just(u64::MAX), any::<u64>()]
}

/// Any Unicode, control characters included: the wire does not care, the broker does.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..24).prop_map(String::from_iter),
        "[a-z/+#$]{0,200}",
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300)
}

fn froms() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Latest),
        Just(Start::Earliest),
        u64s().prop_map(Start::Offset),
        u64s().prop_map(Start::Last),
        u64s().prop_map(Start::AfterSeq),
        u64s().prop_map(Start::Time),
        u64s().prop_map(Start::Ago),
    ]
}

fn frames() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<[u8; 4]>(), u16s(), u16s(), text())
            .prop_map(|(m, a, b, c)| Owned::Hello(m, a, b, c)),
        (u16s(), u32s(), u32s(), u32s(), u32s(), u64s(), text())
            .prop_map(|(v, k, f, p, s, id, b)| Owned::Welcome(v, k, f, p, s, id, b)),
        u64s().prop_map(Owned::Ping),
        u64s().prop_map(Owned::Pong),
        (u16s(), u32s(), text()).prop_map(|(c, r, m)| Owned::Error(c, r, m)),
        (u32s(), text(), proptest::option::of(bytes()), bytes())
            .prop_map(|(r, t, k, p)| Owned::Publish(r, t, k, p)),
        (u32s(), u64s()).prop_map(|(r, o)| Owned::Published(r, o)),
        (u32s(), text(), froms(), vec((text(), u64s()), 0..4))
            .prop_map(|(s, f, from, r)| Owned::Subscribe(s, f, from, r)),
        (u32s(), u64s()).prop_map(|(s, q)| Owned::Subscribed(s, q)),
        u32s().prop_map(Owned::Unsubscribe),
        u32s().prop_map(Owned::Unsubscribed),
        (
            u32s(),
            text(),
            u64s(),
            u64s(),
            proptest::option::of(bytes()),
            bytes()
        )
            .prop_map(|(s, t, o, ms, k, p)| Owned::Message(s, t, o, ms, k, p)),
        (u32s(), text(), u64s(), u64s()).prop_map(|(s, t, m, n)| Owned::Lag(s, t, m, n)),
        any::<[u8; 32]>().prop_map(Owned::AuthChallenge),
        (text(), any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(n, c, p)| Owned::AuthInit(n, c, p)),
        any::<[u8; 32]>().prop_map(Owned::AuthProof),
        (
            u32s(),
            0..9u8,
            text(),
            u32s(),
            vec((text(), text()), 0..4),
            froms()
        )
            .prop_map(|(r, k, n, f, set, to)| Owned::Manage(r, k, n, f, set, to)),
        (u32s(), text()).prop_map(|(r, j)| Owned::Managed(r, j)),
        (u32s(), text(), u64s(), u64s()).prop_map(|(s, t, u, n)| Owned::Removed(s, t, u, n)),
        (
            u32s(),
            text(),
            text(),
            froms(),
            [u32s(), u32s(), u32s()],
            0..3u8,
            u64s()
        )
            .prop_map(|(s, f, g, from, n, d, e)| Owned::JoinGroup(s, f, g, from, n, d, e)),
    ]
}

/// `body` behind a correct length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = framed_prefix(body.len() as u32);
    out.extend_from_slice(body);
    out
}

/// Checks what `decode` promises about any input, and returns its result.
fn decode_checked(input: &[u8], max: usize) -> Result<Decoded<'_>, DecodeError> {
    let r = wire::decode(input, max);
    match &r {
        Ok(Decoded::Frame(_, n)) => assert!(*n >= 2 && *n <= input.len(), "frame size {n}"),
        Ok(Decoded::Incomplete { total: Some(t) }) => {
            assert!(*t > input.len(), "incomplete, but all {t} bytes are there");
        }
        Ok(Decoded::Incomplete { total: None }) => {
            assert!(
                input.len() < MAX_LENGTH_PREFIX,
                "a whole prefix is not read"
            );
        }
        Err(_) => {}
    }
    r
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        input in vec(any::<u8>(), 0..400),
        max in prop_oneof![0usize..600, Just(usize::MAX)],
    ) {
        let _ = decode_checked(&input, max);
    }

    /// Correctly framed bodies of any tag reach the body decoders. A whole frame is never
    /// "incomplete", and whatever decodes encodes to something that decodes the same.
    #[test]
    fn arbitrary_bodies_never_panic(
        tag in prop_oneof![0u8..0x0e, 0x10u8..0x14, any::<u8>()],
        rest in vec(any::<u8>(), 0..200),
    ) {
        let mut body = vec![tag];
        body.extend_from_slice(&rest);
        let input = framed(&body);
        match decode_checked(&input, usize::MAX) {
            Ok(Decoded::Frame(f, n)) => {
                prop_assert_eq!(n, input.len());
                prop_assert_eq!(f.tag(), tag);
                let again = f.to_vec();
                prop_assert_eq!(
                    wire::decode(&again, usize::MAX),
                    Ok(Decoded::Frame(f, again.len()))
                );
            }
            Ok(Decoded::Incomplete { .. }) => prop_assert!(false, "a whole frame is incomplete"),
            Err(_) => {}
        }
    }

    /// Valid frames with one body byte changed and the length fixed up: close to valid,
    /// so they reach deep into the body decoders.
    #[test]
    fn mutated_frames_never_panic(owned in frames(), at in any::<usize>(), byte in any::<u8>()) {
        let bytes = owned.frame().to_vec();
        let (_, prefix) = wire::read_length(&bytes).unwrap().unwrap();
        let mut body = bytes[prefix..].to_vec();
        let i = at % body.len();
        body[i] = byte;
        let input = framed(&body);
        match decode_checked(&input, usize::MAX) {
            Ok(Decoded::Frame(f, n)) => {
                prop_assert_eq!(n, input.len());
                let again = f.to_vec();
                prop_assert_eq!(
                    wire::decode(&again, usize::MAX),
                    Ok(Decoded::Frame(f, again.len()))
                );
            }
            Ok(Decoded::Incomplete { .. }) => prop_assert!(false, "a whole frame is incomplete"),
            Err(_) => {}
        }
    }

    #[test]
    fn frames_roundtrip(owned in frames()) {
        let f = owned.frame();
        let bytes = f.to_vec();
        let (len, prefix) = wire::read_length(&bytes).unwrap().unwrap();
        let len = len as usize;
        prop_assert_eq!(prefix + len, bytes.len());
        prop_assert_eq!(bytes[prefix], f.tag());
        prop_assert_eq!(
            wire::decode(&bytes, usize::MAX),
            Ok(Decoded::Frame(f.clone(), bytes.len()))
        );
        // The limit counts tag and body, not the prefix.
        prop_assert_eq!(
            wire::decode(&bytes, len),
            Ok(Decoded::Frame(f.clone(), bytes.len()))
        );
        prop_assert_eq!(
            wire::decode(&bytes, len - 1),
            Err(DecodeError::TooLarge { len: len as u64, max: len - 1 })
        );
        // Frames back to back: the first is decoded alone.
        let mut two = bytes.clone();
        Frame::Ping(Ping { nonce: 7 }).encode(&mut two);
        prop_assert_eq!(
            wire::decode(&two, usize::MAX),
            Ok(Decoded::Frame(f, bytes.len()))
        );
    }

    #[test]
    fn strict_prefixes_are_incomplete(owned in frames()) {
        let f = owned.frame();
        let bytes = f.to_vec();
        let (_, prefix) = wire::read_length(&bytes).unwrap().unwrap();
        for cut in 0..bytes.len() {
            let total = (cut >= prefix).then_some(bytes.len());
            prop_assert_eq!(
                decode_checked(&bytes[..cut], usize::MAX),
                Ok(Decoded::Incomplete { total }),
                "cut at {}", cut
            );
        }
    }

    #[test]
    fn oversized_length_prefix_is_too_large(
        (max, len) in (0usize..200_000)
            .prop_flat_map(|max| (Just(max), (max as u64 + 1)..=u64::from(u32::MAX))),
        rest in vec(any::<u8>(), 0..64),
    ) {
        let mut input = framed_prefix(len as u32);
        input.extend_from_slice(&rest);
        prop_assert_eq!(
            decode_checked(&input, max),
            Err(DecodeError::TooLarge { len, max })
        );
    }

    #[test]
    fn length_prefixes_roundtrip(v in any::<u32>()) {
        let prefix = framed_prefix(v);
        let shortest = (1..=MAX_LENGTH_PREFIX)
            .find(|&n| n == MAX_LENGTH_PREFIX || u64::from(v) < 1u64 << (7 * n))
            .unwrap();
        prop_assert_eq!(prefix.len(), shortest);
        prop_assert_eq!(wire::read_length(&prefix), Ok(Some((v, prefix.len()))));
        for cut in 0..prefix.len() {
            prop_assert_eq!(wire::read_length(&prefix[..cut]), Ok(None));
        }
    }
}

/// Just the length prefix for `len`.
fn framed_prefix(len: u32) -> Vec<u8> {
    let mut prefix = [0u8; MAX_LENGTH_PREFIX];
    let n = wire::write_varint(len, &mut prefix);
    prefix[..n].to_vec()
}

// ---------------------------------------------------------------------------------------
// The record layer of encrypted connections.

/// A fixed session's keys: the record properties need keys, any will do.
fn session() -> SessionKeys {
    SessionKeys::derive(
        &Token::new("mote-test-token-0123456789").unwrap(),
        "kitchen",
        &[1; 32],
        &[2; 32],
        &[3; 32],
    )
}

/// Each entry of `records` (a list of frames) sealed by one client sealer, back to back;
/// and each record's plaintext.
fn seal_all(records: &[Vec<Owned>]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (mut sealer, _) = session().client();
    let mut wire = Vec::new();
    let mut plains = Vec::new();
    for frames in records {
        let at = Sealer::begin(&mut wire);
        let mut plain = Vec::new();
        for f in frames {
            f.frame().encode(&mut plain);
        }
        wire.extend_from_slice(&plain);
        sealer.seal(&mut wire, at);
        plains.push(plain);
    }
    (wire, plains)
}

/// Checks what `Opener::peek` promises about any input, and returns its result.
fn peek_checked(input: &[u8], max: usize) -> Result<Record, OpenError> {
    let r = Opener::peek(input, max);
    let header = |i: &[u8]| u32::from_le_bytes([i[0], i[1], i[2], i[3]]) as usize;
    match r {
        Ok(Record::Complete { total }) => {
            assert!(
                total <= input.len(),
                "complete, but only {} bytes",
                input.len()
            );
            assert_eq!(total, secure::RECORD_HEADER + header(input));
            assert!(total >= secure::RECORD_HEADER + secure::TAG_LEN);
            assert!(total - secure::RECORD_HEADER <= max);
        }
        Ok(Record::Incomplete { total: Some(t) }) => {
            assert!(t > input.len(), "incomplete, but all {t} bytes are there");
            assert_eq!(t, secure::RECORD_HEADER + header(input));
            assert!(t - secure::RECORD_HEADER <= max);
        }
        Ok(Record::Incomplete { total: None }) => {
            assert!(
                input.len() < secure::RECORD_HEADER,
                "a whole header is not read"
            );
        }
        Err(OpenError::TooLarge { len }) => {
            assert!(len > max);
            assert_eq!(len, header(input));
        }
        Err(OpenError::TooShort) => assert!(header(input) < secure::TAG_LEN),
        Err(e) => panic!("peek cannot fail with {e:?}"),
    }
    r
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes never panic `peek` or `open`, and never open: a forger has to guess
    /// a 128-bit tag.
    #[test]
    fn arbitrary_bytes_never_open(
        input in prop_oneof![
            vec(any::<u8>(), 0..600),
            // A plausible header in front: reaches `open` far more often.
            (16u32..300, vec(any::<u8>(), 0..320)).prop_map(|(len, rest)| {
                let mut v = len.to_le_bytes().to_vec();
                v.extend_from_slice(&rest);
                v
            }),
        ],
        max in prop_oneof![0usize..700, Just(usize::MAX)],
    ) {
        let (_, mut opener) = session().broker();
        if let Ok(Record::Complete { total }) = peek_checked(&input, max) {
            let mut record = input[..total].to_vec();
            prop_assert_eq!(opener.open(&mut record), Err(OpenError::Forged));
        }
        // `open` on bytes `peek` did not vouch for: an error, never a panic.
        let mut whole = input.clone();
        let r = opener.open(&mut whole);
        if input.len() < secure::RECORD_HEADER + secure::TAG_LEN {
            prop_assert_eq!(r, Err(OpenError::TooShort));
        } else {
            prop_assert_eq!(r, Err(OpenError::Forged));
        }
    }

    /// Every strict prefix of a sealed record is incomplete, its size known once the
    /// header is there; the whole record opens to exactly the frames sealed.
    #[test]
    fn strict_prefixes_of_a_record_are_incomplete(frames in vec(frames(), 0..4)) {
        let (wire, plains) = seal_all(std::slice::from_ref(&frames));
        let total = wire.len();
        prop_assert_eq!(total, secure::RECORD_HEADER + plains[0].len() + secure::TAG_LEN);
        for cut in 0..total {
            let want = (cut >= secure::RECORD_HEADER).then_some(total);
            prop_assert_eq!(
                peek_checked(&wire[..cut], usize::MAX),
                Ok(Record::Incomplete { total: want }),
                "cut at {}", cut
            );
        }
        prop_assert_eq!(peek_checked(&wire, usize::MAX), Ok(Record::Complete { total }));
        let (_, mut opener) = session().broker();
        let mut record = wire.clone();
        let plain = opener.open(&mut record).unwrap();
        prop_assert_eq!(&*plain, &plains[0][..]);
        // Whole frames, and the frames sealed.
        let mut pos = 0;
        for f in &frames {
            let Ok(Decoded::Frame(got, used)) = wire::decode(&plain[pos..], usize::MAX) else {
                return Err(TestCaseError::fail("not a whole frame"));
            };
            prop_assert_eq!(got, f.frame());
            pos += used;
        }
        prop_assert_eq!(pos, plain.len());
    }

    /// Records back to back, arriving in two pieces split anywhere, open in order.
    #[test]
    fn sealed_streams_open_in_order(
        records in vec(vec(frames(), 0..3), 1..5),
        split in any::<usize>(),
    ) {
        let (wire, plains) = seal_all(&records);
        let split = split % (wire.len() + 1);
        let (_, mut opener) = session().broker();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in [&wire[..split], &wire[split..]] {
            buf.extend_from_slice(piece);
            loop {
                match peek_checked(&buf, 1 << 20) {
                    Ok(Record::Complete { total }) => {
                        let plain = opener.open(&mut buf[..total]).unwrap().to_vec();
                        got.push(plain);
                        buf.drain(..total);
                    }
                    Ok(Record::Incomplete { .. }) => break,
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, plains);
    }

    /// A sealed record with any byte changed never opens: it is refused from its header,
    /// waits for bytes that never come, or fails authentication.
    #[test]
    fn changed_records_never_open(
        frames in vec(frames(), 0..3),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let (mut wire, _) = seal_all(std::slice::from_ref(&frames));
        let i = at % wire.len();
        wire[i] ^= flip;
        let (_, mut opener) = session().broker();
        if let Ok(Record::Complete { total }) = peek_checked(&wire, 1 << 20) {
            prop_assert!(opener.open(&mut wire[..total]).is_err(), "byte {} changed", i);
        }
    }

    /// The size limit is enforced from the 4 header bytes alone.
    #[test]
    fn oversized_records_are_refused_from_the_header(
        (max, len) in (0usize..200_000)
            .prop_flat_map(|max| (Just(max), (max + 1)..=(u32::MAX as usize))),
        rest in vec(any::<u8>(), 0..64),
    ) {
        let mut input = (len as u32).to_le_bytes().to_vec();
        input.extend_from_slice(&rest);
        prop_assert_eq!(peek_checked(&input, max), Err(OpenError::TooLarge { len }));
    }
}
