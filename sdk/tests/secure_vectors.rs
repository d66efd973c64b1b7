//! The token handshake's test vectors in `sdk/PROTOCOL.md` (section 6.9), recomputed from
//! the document's own description (sections 6.3 and 6.4) with nothing but SHA-256 and
//! ChaCha20-Poly1305: HMAC and HKDF are written out here as RFC 2104 and RFC 5869 define
//! them, the record nonces as the document lays them out. What a client written from the
//! document would compute is what the document shows. (`tests/protocol_doc.rs` checks the
//! same blocks against `mote_sdk::secure`.)
//!
//! The documented records are then fed to the SDK's `Opener` changed, replayed, reordered,
//! cut short and in the wrong direction: none of that opens.

// Tests: a panic is the failure report, and every unwrap here is on data the test controls.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use mote_sdk::secure::{self, OpenError, Opener, Record, SessionKeys, Token};
use mote_sdk::wire::{self, Decoded, Frame};
use sha2::{Digest, Sha256};

/// Every fenced block of `PROTOCOL.md` whose info string is `kind NAME`, by name. A name
/// shown twice must show the same bytes.
fn blocks(kind: &str) -> BTreeMap<String, Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    let mut open: Option<(String, Vec<u8>)> = None;
    for line in doc.lines() {
        let t = line.trim();
        if let Some((name, bytes)) = open.as_mut() {
            if t == "```" {
                let (name, bytes) = (std::mem::take(name), std::mem::take(bytes));
                if let Some(old) = out.insert(name.clone(), bytes.clone()) {
                    assert_eq!(old, bytes, "{kind} {name} is shown twice, differently");
                }
                open = None;
                continue;
            }
            let data = t.split('#').next().unwrap_or_default();
            for tok in data.split_whitespace() {
                bytes.push(u8::from_str_radix(tok, 16).unwrap());
            }
        } else if let Some(info) = t.strip_prefix("```") {
            let mut words = info.split_whitespace();
            if words.next() == Some(kind) {
                open = Some((words.next().unwrap().to_owned(), Vec::new()));
            }
        }
    }
    out
}

/// The document's test vectors and frame examples.
struct Doc {
    v: BTreeMap<String, Vec<u8>>,
    frames: BTreeMap<String, Vec<u8>>,
}

impl Doc {
    fn load() -> Doc {
        Doc {
            v: blocks("hex-vector"),
            frames: blocks("hex"),
        }
    }

    fn v(&self, name: &str) -> &[u8] {
        self.v
            .get(name)
            .unwrap_or_else(|| panic!("no hex-vector {name}"))
    }

    fn frame(&self, name: &str) -> &[u8] {
        self.frames
            .get(name)
            .unwrap_or_else(|| panic!("no hex {name}"))
    }

    fn v32(&self, name: &str) -> [u8; 32] {
        self.v(name).try_into().unwrap()
    }

    /// The SDK's keys for the document's inputs.
    fn sdk_keys(&self) -> SessionKeys {
        SessionKeys::derive(
            &Token::new(std::str::from_utf8(self.v("token")).unwrap()).unwrap(),
            std::str::from_utf8(self.v("token-name")).unwrap(),
            &self.v32("client-nonce"),
            &self.v32("broker-nonce"),
            &self.v32("transcript"),
        )
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA256 (RFC 2104): block size 64.
fn hmac(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner_parts: Vec<&[u8]> = vec![&ipad];
    inner_parts.extend_from_slice(message);
    let inner = sha256(&inner_parts);
    sha256(&[&opad, &inner])
}

/// HKDF-SHA256 (RFC 5869) as section 6.3 spells it out: the PRK and `len` bytes of output.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> ([u8; 32], Vec<u8>) {
    let prk = hmac(salt, &[ikm]);
    let mut okm = Vec::new();
    let mut t: Vec<u8> = Vec::new();
    let mut i = 1u8;
    while okm.len() < len {
        t = hmac(&prk, &[&t, info, &[i]]).to_vec();
        okm.extend_from_slice(&t);
        i += 1;
    }
    okm.truncate(len);
    (prk, okm)
}

/// Record `n`'s nonce as section 6.4 lays it out: `n` as 12 bytes little-endian.
fn record_nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, b) in out.iter_mut().enumerate().take(8) {
        *b = (n >> (8 * i)) as u8;
    }
    out
}

/// The documented records: name, key name, number in its direction, the plaintext the
/// document says it holds.
fn records(doc: &Doc) -> Vec<(&'static str, &'static str, u64, Vec<u8>)> {
    vec![
        ("record-c2b-0", "key-c2b", 0, doc.frame("ping").to_vec()),
        (
            "record-c2b-1",
            "key-c2b",
            1,
            [doc.frame("publish-fire-and-forget"), &[0x02, 0x02, 0x02]].concat(),
        ),
        ("record-b2c-0", "key-b2c", 0, doc.frame("welcome").to_vec()),
        ("record-b2c-1", "key-b2c", 1, doc.frame("pong").to_vec()),
    ]
}

#[test]
fn the_transcript_is_the_hash_of_the_two_frames() {
    let doc = Doc::load();
    let input = [doc.frame("hello"), doc.frame("auth-challenge")].concat();
    assert_eq!(doc.v("transcript-input"), &input[..]);
    assert_eq!(doc.v("transcript"), &sha256(&[&input])[..]);
    // The challenge carries the broker nonce, as its last 32 bytes.
    assert!(doc.frame("auth-challenge").ends_with(doc.v("broker-nonce")));
}

#[test]
fn the_key_schedule_is_hkdf_sha256_as_described() {
    let doc = Doc::load();
    let salt = [doc.v("client-nonce"), doc.v("broker-nonce")].concat();
    assert_eq!(doc.v("hkdf-salt"), &salt[..]);
    let info = [
        &b"mote/1 keys"[..],
        &[0],
        doc.v("token-name"),
        doc.v("transcript"),
    ]
    .concat();
    assert_eq!(doc.v("hkdf-info"), &info[..]);
    let (prk, okm) = hkdf(&salt, doc.v("token"), &info, 128);
    assert_eq!(doc.v("hkdf-prk"), &prk[..]);
    assert_eq!(doc.v("key-c2b"), &okm[..32]);
    assert_eq!(doc.v("key-b2c"), &okm[32..64]);
    assert_eq!(doc.v("proof-broker"), &okm[64..96]);
    assert_eq!(doc.v("proof-client"), &okm[96..]);
}

#[test]
fn the_handshake_frames_carry_the_vectors() {
    let doc = Doc::load();
    let Ok(Decoded::Frame(Frame::AuthInit(init), _)) =
        wire::decode(doc.frame("auth-init"), usize::MAX)
    else {
        panic!("auth-init is not an AuthInit");
    };
    assert_eq!(init.name.as_bytes(), doc.v("token-name"));
    assert_eq!(&init.nonce[..], doc.v("client-nonce"));
    assert_eq!(&init.proof[..], doc.v("proof-client"));
    let Ok(Decoded::Frame(Frame::AuthProof(proof), _)) =
        wire::decode(doc.frame("auth-proof"), usize::MAX)
    else {
        panic!("auth-proof is not an AuthProof");
    };
    assert_eq!(&proof.proof[..], doc.v("proof-broker"));
    // The SDK agrees, and tells one proof from the other.
    let keys = doc.sdk_keys();
    assert!(keys.check_client_proof(doc.v("proof-client")));
    assert!(keys.check_broker_proof(doc.v("proof-broker")));
    assert!(!keys.check_broker_proof(doc.v("proof-client")));
}

#[test]
fn the_records_are_chacha20_poly1305_with_counted_nonces() {
    let doc = Doc::load();
    for (name, key, n, plain) in records(&doc) {
        let record = doc.v(name);
        let (header, rest) = record.split_at(4);
        let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        assert_eq!(len, rest.len(), "{name}: the length counts what follows");
        assert_eq!(
            len,
            plain.len() + 16,
            "{name}: ciphertext and a 16-byte tag"
        );
        let cipher = ChaCha20Poly1305::new(&Key::from(doc.v32(key)));
        let nonce = Nonce::from(record_nonce(n));
        // Opens with the documented key and nonce, no associated data...
        let (body, tag) = rest.split_at(len - 16);
        let mut opened = body.to_vec();
        let tag = Tag::try_from(tag).unwrap();
        cipher
            .decrypt_inout_detached(&nonce, &[], (&mut opened[..]).into(), &tag)
            .unwrap_or_else(|_| panic!("{name} does not open with {key} and nonce {n}"));
        assert_eq!(opened, plain, "{name}");
        // ... and holds whole frames only.
        let mut pos = 0;
        while pos < opened.len() {
            let Ok(Decoded::Frame(_, used)) = wire::decode(&opened[pos..], usize::MAX) else {
                panic!("{name}: not whole frames")
            };
            pos += used;
        }
        // Sealing the plaintext again gives the same record.
        let mut sealed = plain.clone();
        let tag = cipher
            .encrypt_inout_detached(&nonce, &[], (&mut sealed[..]).into())
            .unwrap();
        assert_eq!([header, &sealed, &tag[..]].concat(), record, "{name}");
    }
}

#[test]
fn the_sdk_opens_the_records_in_order_only() {
    let doc = Doc::load();
    let keys = doc.sdk_keys();
    let c2b = [doc.v("record-c2b-0"), doc.v("record-c2b-1")];
    let b2c = [doc.v("record-b2c-0"), doc.v("record-b2c-1")];
    let open = |opener: &mut Opener, r: &[u8]| opener.open(&mut r.to_vec()).map(|p| p.to_vec());

    // In order, each side opens the other's records.
    let (_, mut broker) = keys.broker();
    let (_, mut client) = keys.client();
    for r in c2b {
        assert!(open(&mut broker, r).is_ok());
    }
    for r in b2c {
        assert!(open(&mut client, r).is_ok());
    }
    // Replayed: the first record twice.
    let (_, mut broker) = keys.broker();
    assert!(open(&mut broker, c2b[0]).is_ok());
    assert_eq!(open(&mut broker, c2b[0]), Err(OpenError::Forged));
    // Reordered, or one dropped: the second record first.
    let (_, mut broker) = keys.broker();
    assert_eq!(open(&mut broker, c2b[1]), Err(OpenError::Forged));
    // Reflected: a record back to the side that sealed it.
    let (_, mut client) = keys.client();
    assert_eq!(open(&mut client, c2b[0]), Err(OpenError::Forged));
    // Another connection: the same token and client nonce, another broker nonce.
    let mut other_nonce = doc.v32("broker-nonce");
    other_nonce[0] ^= 1;
    let other = SessionKeys::derive(
        &Token::new(std::str::from_utf8(doc.v("token")).unwrap()).unwrap(),
        std::str::from_utf8(doc.v("token-name")).unwrap(),
        &doc.v32("client-nonce"),
        &other_nonce,
        &doc.v32("transcript"),
    );
    let (_, mut foreign) = other.broker();
    assert_eq!(open(&mut foreign, c2b[0]), Err(OpenError::Forged));
}

#[test]
fn every_changed_bit_of_a_record_is_refused() {
    let doc = Doc::load();
    let keys = doc.sdk_keys();
    for name in ["record-c2b-0", "record-c2b-1"] {
        let record = doc.v(name);
        for byte in 0..record.len() {
            for bit in 0..8 {
                let mut r = record.to_vec();
                r[byte] ^= 1 << bit;
                // A fresh opener each time: the counter is at this record's number.
                let (_, mut opener) = keys.broker();
                if name == "record-c2b-1" {
                    opener.open(&mut doc.v("record-c2b-0").to_vec()).unwrap();
                }
                match Opener::peek(&r, 1 << 20) {
                    Ok(Record::Complete { total }) => assert!(
                        opener.open(&mut r[..total]).is_err(),
                        "{name}: bit {bit} of byte {byte} changed and it still opens"
                    ),
                    // A length made larger waits for bytes that never come; one made
                    // too large or too small is refused from the header.
                    Ok(Record::Incomplete { .. }) | Err(_) => {}
                }
            }
        }
    }
}

#[test]
fn every_strict_prefix_of_a_record_is_incomplete() {
    let doc = Doc::load();
    for name in [
        "record-c2b-0",
        "record-c2b-1",
        "record-b2c-0",
        "record-b2c-1",
    ] {
        let r = doc.v(name);
        assert_eq!(
            Opener::peek(r, 1 << 20),
            Ok(Record::Complete { total: r.len() })
        );
        for cut in 0..r.len() {
            let total = (cut >= secure::RECORD_HEADER).then_some(r.len());
            assert_eq!(
                Opener::peek(&r[..cut], 1 << 20),
                Ok(Record::Incomplete { total }),
                "{name} cut at {cut}"
            );
        }
        // The limit counts what follows the header, and is checked from the header alone.
        let len = r.len() - secure::RECORD_HEADER;
        assert_eq!(
            Opener::peek(&r[..4], len - 1),
            Err(OpenError::TooLarge { len })
        );
    }
}

#[test]
fn the_nonce_layout_is_what_chacha_uses() {
    assert_eq!(record_nonce(0), [0; 12]);
    assert_eq!(record_nonce(1), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        record_nonce(0x0102_0304_0506_0708),
        [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0]
    );
}

/// The HMAC and HKDF written out here are right: RFC 4231 test case 2 and RFC 5869 test
/// case 1.
#[test]
fn hmac_and_hkdf_pass_their_rfc_vectors() {
    let mac = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    assert_eq!(
        hex(&mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let (prk, okm) = hkdf(&salt, &ikm, &info, 42);
    assert_eq!(
        hex(&prk),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    );
    assert_eq!(
        hex(&okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
