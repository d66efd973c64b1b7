//! The record layer of encrypted connections: `secure::Opener::peek` and `Opener::open`,
//! with keys derived from a fixed token.
//!
//! The first input byte picks the mode:
//!
//! - even: the rest, as arbitrary bytes, goes to `peek` under a few limits and, record
//!   after record, to `open`. Invariants: no panic, `peek`'s sizes are consistent with
//!   the header and the input, and nothing ever opens (a forger would have to guess a
//!   Poly1305 tag).
//! - odd: structured. The rest describes frames, which are encoded and sealed into a few
//!   records; then one mutation (a changed byte, a record cut short, dropped, replayed or
//!   two swapped, or none) and the stream is fed to a fresh opener in arbitrary pieces.
//!   Invariants: every record before the first one touched opens to exactly the frames
//!   sealed in it, none from there on opens, and an unmodified stream opens completely.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mote_sdk::secure::{self, OpenError, Opener, Record, Sealer, SessionKeys, Token};
use mote_sdk::wire::{
    self, AuthChallenge, AuthInit, AuthProof, Decoded, ErrorCode, ErrorFrame, Frame, Lag, Message,
    Ping, Publish, Published, Resume, Start, Subscribe, Subscribed, Unsubscribe, Welcome,
};

/// The fixed session every input is checked against.
fn keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        SessionKeys::derive(
            &Token::new("mote-fuzz-token-0123456789").unwrap(),
            "fuzz",
            &[1; 32],
            &[2; 32],
            &[3; 32],
        )
    })
}

/// The limits `peek` is asked with: none, a small one, the SDK's first-record limit, the
/// broker's default (`max_frame` + 512 KiB).
const LIMITS: [usize; 5] = [0, 16, 64 * 1024, 1_114_112 + 512 * 1024, usize::MAX];

/// Checks what `peek` promises about `input`, and returns its answer.
fn peek(input: &[u8], max: usize) -> core::result::Result<Record, OpenError> {
    let r = Opener::peek(input, max);
    let header = || u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
    match r {
        Ok(Record::Complete { total }) => {
            assert!(total <= input.len());
            assert_eq!(total, secure::RECORD_HEADER + header());
            assert!(header() >= secure::TAG_LEN && header() <= max);
        }
        Ok(Record::Incomplete { total: Some(total) }) => {
            assert!(total > input.len());
            assert_eq!(total, secure::RECORD_HEADER + header());
            assert!(header() >= secure::TAG_LEN && header() <= max);
        }
        Ok(Record::Incomplete { total: None }) => assert!(input.len() < secure::RECORD_HEADER),
        Err(OpenError::TooLarge { len }) => assert!(len == header() && len > max),
        Err(OpenError::TooShort) => assert!(header() < secure::TAG_LEN),
        Err(e) => panic!("peek failed with {e:?}"),
    }
    r
}

fn raw(data: &[u8]) {
    for max in LIMITS {
        let _ = peek(data, max);
    }
    // `open` on bytes `peek` did not vouch for: an error, never a panic, never a record.
    let (_, mut opener) = keys().broker();
    assert!(opener.open(&mut data.to_vec()).is_err());
    // Record after record, as a receiver reads them, in both directions.
    for mut opener in [keys().broker().1, keys().client().1] {
        let mut buf = data.to_vec();
        if let Ok(Record::Complete { total }) = peek(&buf, usize::MAX) {
            match opener.open(&mut buf[..total]) {
                Err(OpenError::Forged) => {}
                other => panic!("arbitrary bytes gave {other:?}"),
            }
        }
    }
}

/// One frame of any kind with arbitrary field values.
fn frame<'a>(u: &mut Unstructured<'a>) -> Result<Frame<'a>> {
    let start = |u: &mut Unstructured<'a>| -> Result<Start> {
        Ok(match u.int_in_range(0..=4)? {
            0 => Start::Latest,
            1 => Start::Earliest,
            2 => Start::Offset(u.arbitrary()?),
            3 => Start::Last(u.arbitrary()?),
            _ => Start::AfterSeq(u.arbitrary()?),
        })
    };
    Ok(match u.int_in_range(0..=15)? {
        0 => Frame::Hello(wire::Hello {
            magic: u.arbitrary()?,
            min_version: u.arbitrary()?,
            max_version: u.arbitrary()?,
            client: u.arbitrary()?,
        }),
        1 => Frame::Welcome(Welcome {
            version: u.arbitrary()?,
            keepalive_ms: u.arbitrary()?,
            max_frame: u.arbitrary()?,
            max_payload: u.arbitrary()?,
            max_subscriptions: u.arbitrary()?,
            broker_id: u.arbitrary()?,
            broker: u.arbitrary()?,
        }),
        2 => Frame::Ping(Ping {
            nonce: u.arbitrary()?,
        }),
        3 => Frame::Pong(Ping {
            nonce: u.arbitrary()?,
        }),
        4 => Frame::Error(ErrorFrame {
            code: ErrorCode(u.arbitrary()?),
            req: u.arbitrary()?,
            message: u.arbitrary()?,
        }),
        5 => Frame::Publish(Publish {
            req: u.arbitrary()?,
            topic: u.arbitrary()?,
            key: u.arbitrary()?,
            payload: u.arbitrary()?,
        }),
        6 => Frame::Published(Published {
            req: u.arbitrary()?,
            offset: u.arbitrary()?,
        }),
        7 => {
            let (sub, filter, from) = (u.arbitrary()?, u.arbitrary()?, start(u)?);
            let mut resume = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                resume.push(Resume {
                    topic: u.arbitrary()?,
                    next: u.arbitrary()?,
                });
            }
            Frame::Subscribe(Subscribe {
                sub,
                filter,
                from,
                resume,
            })
        }
        8 => Frame::Subscribed(Subscribed {
            sub: u.arbitrary()?,
            seq: u.arbitrary()?,
        }),
        9 => Frame::Unsubscribe(Unsubscribe {
            sub: u.arbitrary()?,
        }),
        10 => Frame::Unsubscribed(Unsubscribe {
            sub: u.arbitrary()?,
        }),
        11 => Frame::Message(Message {
            sub: u.arbitrary()?,
            topic: u.arbitrary()?,
            offset: u.arbitrary()?,
            time_ms: u.arbitrary()?,
            key: u.arbitrary()?,
            payload: u.arbitrary()?,
        }),
        12 => Frame::Lag(Lag {
            sub: u.arbitrary()?,
            topic: u.arbitrary()?,
            missed: u.arbitrary()?,
            next: u.arbitrary()?,
        }),
        13 => Frame::AuthChallenge(AuthChallenge {
            nonce: u.arbitrary()?,
        }),
        14 => Frame::AuthInit(AuthInit {
            name: u.arbitrary()?,
            nonce: u.arbitrary()?,
            proof: u.arbitrary()?,
        }),
        _ => Frame::AuthProof(AuthProof {
            proof: u.arbitrary()?,
        }),
    })
}

/// What happens to the sealed stream.
#[derive(Debug)]
enum Mutation {
    None,
    /// Byte `at` of record `record` XORed with `with` (never 0).
    Flip {
        record: usize,
        at: usize,
        with: u8,
    },
    /// The stream ends `keep` bytes into record `record`.
    Cut {
        record: usize,
        keep: usize,
    },
    Drop {
        record: usize,
    },
    Replay {
        record: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
}

fn structured(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    // Frames into records, sealed by the client.
    let (mut sealer, _) = keys().client();
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut plains: Vec<Vec<u8>> = Vec::new();
    let mut frames: Vec<Vec<Vec<u8>>> = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let mut plain = Vec::new();
        let mut these = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let f = frame(&mut u)?.to_vec();
            plain.extend_from_slice(&f);
            these.push(f);
        }
        let mut record = Vec::new();
        let at = Sealer::begin(&mut record);
        record.extend_from_slice(&plain);
        sealer.seal(&mut record, at);
        assert_eq!(
            record.len(),
            secure::RECORD_HEADER + plain.len() + secure::TAG_LEN
        );
        records.push(record);
        plains.push(plain);
        frames.push(these);
    }
    let n = records.len();
    let mutation = match u.int_in_range(0..=5)? {
        0 => Mutation::None,
        1 => {
            let record = u.choose_index(n)?;
            Mutation::Flip {
                record,
                at: u.choose_index(records[record].len())?,
                with: u.int_in_range(1..=255)?,
            }
        }
        2 => {
            let record = u.choose_index(n)?;
            Mutation::Cut {
                record,
                keep: u.choose_index(records[record].len())?,
            }
        }
        3 => Mutation::Drop {
            record: u.choose_index(n)?,
        },
        4 => Mutation::Replay {
            record: u.choose_index(n)?,
        },
        _ => {
            let (a, b) = (u.choose_index(n)?, u.choose_index(n)?);
            if a == b {
                Mutation::None
            } else {
                Mutation::Swap {
                    a: a.min(b),
                    b: a.max(b),
                }
            }
        }
    };
    // The records that open: all of them before the first one touched.
    let mut stream = records.clone();
    let good = match mutation {
        Mutation::None => n,
        Mutation::Flip { record, at, with } => {
            stream[record][at] ^= with;
            record
        }
        Mutation::Cut { record, keep } => {
            stream[record].truncate(keep);
            stream.truncate(record + 1);
            record
        }
        Mutation::Drop { record } => {
            stream.remove(record);
            record
        }
        Mutation::Replay { record } => {
            stream.insert(record + 1, records[record].clone());
            record + 1
        }
        Mutation::Swap { a, b } => {
            stream.swap(a, b);
            a
        }
    };
    let wire: Vec<u8> = stream.concat();

    // A receiver reading the stream in arbitrary pieces; it stops at the first failure.
    let (_, mut opener) = keys().broker();
    let mut opened: Vec<Vec<u8>> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    'reading: while pos < wire.len() {
        let piece = u
            .int_in_range(1..=wire.len() - pos)
            .unwrap_or(wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + piece]);
        pos += piece;
        loop {
            match peek(&buf, 1 << 24) {
                Ok(Record::Complete { total }) => match opener.open(&mut buf[..total]) {
                    Ok(plain) => {
                        let plain = plain.to_vec();
                        buf.drain(..total);
                        opened.push(plain);
                    }
                    Err(_) => break 'reading,
                },
                Ok(Record::Incomplete { .. }) => break,
                Err(_) => break 'reading,
            }
        }
    }
    assert!(
        opened.len() <= good,
        "{mutation:?}: record {} opened",
        opened.len()
    );
    assert_eq!(
        &opened[..],
        &plains[..good],
        "{mutation:?}: the untouched records"
    );
    if let Mutation::None = mutation {
        assert!(buf.is_empty(), "bytes left over from whole records");
    }
    // What opened is the frames sealed, whole, in order.
    for (plain, these) in opened.iter().zip(&frames) {
        let mut p = 0;
        for f in these {
            match wire::decode(&plain[p..], usize::MAX) {
                Ok(Decoded::Frame(_, used)) => {
                    assert_eq!(&plain[p..p + used], &f[..]);
                    p += used;
                }
                other => panic!("a sealed frame decodes as {other:?}"),
            }
        }
        assert_eq!(p, plain.len());
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => {
            let _ = structured(rest);
        }
        Some((_, rest)) => raw(rest),
        None => raw(data),
    }
});
