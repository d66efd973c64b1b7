//! Property tests of the frame decoder: it never panics on any input, every frame
//! round-trips, a partial frame is always "incomplete" (never an error), and the size limit
//! is enforced from the length prefix alone.

// Tests: a panic is the failure report, and every unwrap here is on data the test controls.
#![allow(clippy::unwrap_used)]

use mote_sdk::wire::{
    self, DecodeError, Decoded, ErrorCode, ErrorFrame, Frame, Hello, Lag, MAX_LENGTH_PREFIX,
    Message, Ping, Publish, Published, Resume, Start, Subscribe, Subscribed, Unsubscribe, Welcome,
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
        tag in prop_oneof![0u8..0x0e, any::<u8>()],
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
