//! Token security: a handshake in which both sides prove they know the token without
//! sending it, and the record layer that encrypts everything after it.
//!
//! The exchange: the client sends `Hello`; a broker with tokens answers `AuthChallenge`
//! (its nonce); the client sends `AuthInit` (token name, its nonce, its proof); the broker
//! checks the proof and answers `AuthProof` (its proof), then `Welcome` in the first
//! record. Key schedule (all SHA-256):
//!
//! ```text
//! transcript = SHA-256(Hello frame bytes || AuthChallenge frame bytes)   as on the wire
//! okm        = HKDF(salt = client_nonce || broker_nonce, ikm = token,
//!                   info = "mote/1 keys" || 0x00 || name || transcript), 128 bytes
//! client→broker key = okm[0..32]     broker→client key = okm[32..64]
//! broker proof      = okm[64..96]    client proof      = okm[96..128]
//! ```
//!
//! The proofs are compared in constant time. After the client's proof, each direction is
//! a stream of records: `length: u32 little-endian` (of what follows), then the
//! ChaCha20-Poly1305 ciphertext of one or more whole frames, then its 16-byte tag. The
//! nonce of the n-th record in a direction is `n` as 12 bytes little-endian (n starts at
//! 0), so a replayed, reordered, dropped or tampered record fails to open.

use core::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of each side's handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof.
pub const PROOF_LEN: usize = 32;
/// Bytes of a record's length prefix.
pub const RECORD_HEADER: usize = 4;
/// Bytes of a record's authentication tag.
pub const TAG_LEN: usize = 16;
/// Plaintext a sender puts in one record at most, unless a single frame is larger.
/// Receivers accept records up to their largest frame plus some slack, so batches are
/// split at frame boundaries.
pub const RECORD_TARGET: usize = 64 * 1024;
/// Shortest token accepted: shorter ones are too easy to guess offline.
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret. Its `Debug` never shows it, and comparisons are constant-time.
#[derive(Clone)]
pub struct Token(alloc::string::String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A token that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Contains whitespace or control characters.
    BadCharacter,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::TooShort { len } => write!(
                f,
                "the token is {len} characters, at least {MIN_TOKEN_LEN} are needed (make one with `mote token new`)"
            ),
            TokenError::BadCharacter => {
                f.write_str("the token contains whitespace or a control character")
            }
        }
    }
}

impl core::error::Error for TokenError {}

impl Token {
    /// Checks `secret` as a token.
    pub fn new(secret: &str) -> Result<Token, TokenError> {
        if secret.chars().count() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort {
                len: secret.chars().count(),
            });
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::BadCharacter);
        }
        Ok(Token(secret.into()))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `secret` is this token, compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        bool::from(self.bytes().ct_eq(secret.as_bytes()))
    }

    /// The secret itself, for writing it where the user asked (`mote token new`).
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

/// What both sides derive from the token, the nonces and the transcript.
pub struct SessionKeys {
    client_to_broker: [u8; 32],
    broker_to_client: [u8; 32],
    broker_proof: [u8; PROOF_LEN],
    client_proof: [u8; PROOF_LEN],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// SHA-256 of the client's `Hello` and the broker's `AuthChallenge` frames, as on the
/// wire (length prefixes included).
pub fn transcript(hello: &[u8], challenge: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(hello);
    h.update(challenge);
    h.finalize().into()
}

impl SessionKeys {
    /// Derives the session's keys and proofs.
    pub fn derive(
        token: &Token,
        name: &str,
        client_nonce: &[u8; NONCE_LEN],
        broker_nonce: &[u8; NONCE_LEN],
        transcript: &[u8; 32],
    ) -> SessionKeys {
        let mut salt = [0u8; 2 * NONCE_LEN];
        salt[..NONCE_LEN].copy_from_slice(client_nonce);
        salt[NONCE_LEN..].copy_from_slice(broker_nonce);
        let hk = Hkdf::<Sha256>::new(Some(&salt), token.bytes());
        let mut okm = [0u8; 128];
        // 128 bytes is far below HKDF-SHA256's limit of 8160, so expand cannot fail.
        let info: [&[u8]; 4] = [b"mote/1 keys", &[0], name.as_bytes(), transcript];
        if hk.expand_multi_info(&info, &mut okm).is_err() {
            unreachable!("HKDF output of 128 bytes is within its limit");
        }
        let part = |i: usize| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&okm[32 * i..32 * (i + 1)]);
            a
        };
        SessionKeys {
            client_to_broker: part(0),
            broker_to_client: part(1),
            broker_proof: part(2),
            client_proof: part(3),
        }
    }

    /// The broker's proof of knowing the token.
    pub fn broker_proof(&self) -> [u8; PROOF_LEN] {
        self.broker_proof
    }

    /// The client's proof of knowing the token.
    pub fn client_proof(&self) -> [u8; PROOF_LEN] {
        self.client_proof
    }

    /// Whether `proof` is the broker's proof (constant time).
    pub fn check_broker_proof(&self, proof: &[u8]) -> bool {
        bool::from(self.broker_proof.ct_eq(proof))
    }

    /// Whether `proof` is the client's proof (constant time).
    pub fn check_client_proof(&self, proof: &[u8]) -> bool {
        bool::from(self.client_proof.ct_eq(proof))
    }

    /// The record layer of the client: it seals toward the broker, opens from it.
    pub fn client(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.client_to_broker),
            Opener::new(&self.broker_to_client),
        )
    }

    /// The record layer of the broker.
    pub fn broker(&self) -> (Sealer, Opener) {
        (
            Sealer::new(&self.broker_to_client),
            Opener::new(&self.client_to_broker),
        )
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// Seals outgoing records: one direction's key and record counter.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(record {})", self.counter)
    }
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            counter: 0,
        }
    }

    /// Reserves a record header at the end of `buf`: call before appending the frames
    /// of a record, then [`Sealer::seal`] with the position returned.
    pub fn begin(buf: &mut alloc::vec::Vec<u8>) -> usize {
        let at = buf.len();
        buf.extend_from_slice(&[0; RECORD_HEADER]);
        at
    }

    /// Appends `frames` (whole, length-prefixed frames back to back) to `out` as records
    /// of at most [`RECORD_TARGET`] bytes of plaintext each (or one frame, if larger).
    pub fn seal_frames(&mut self, frames: &[u8], out: &mut alloc::vec::Vec<u8>) {
        let mut start = 0;
        while start < frames.len() {
            let mut end = start;
            while end < frames.len() {
                let len = match crate::wire::read_length(&frames[end..]) {
                    Ok(Some((len, prefix))) => prefix + len as usize,
                    _ => frames.len() - end,
                };
                if end > start && end + len - start > RECORD_TARGET {
                    break;
                }
                end = (end + len).min(frames.len());
            }
            let at = Sealer::begin(out);
            out.extend_from_slice(&frames[start..end]);
            self.seal(out, at);
            start = end;
        }
    }

    /// Encrypts `buf[at + RECORD_HEADER..]` (whole frames) in place into one record that
    /// started with [`Sealer::begin`] at `at`.
    pub fn seal(&mut self, buf: &mut alloc::vec::Vec<u8>, at: usize) {
        let body = at + RECORD_HEADER;
        let Ok(tag) = self.cipher.encrypt_inout_detached(
            &nonce(self.counter),
            &[],
            (&mut buf[body..]).into(),
        ) else {
            unreachable!("ChaCha20-Poly1305 seals up to 256 GiB per record");
        };
        self.counter += 1;
        buf.extend_from_slice(&tag);
        let len = (buf.len() - body) as u32;
        buf[at..body].copy_from_slice(&len.to_le_bytes());
    }
}

/// Why a record could not be opened. The connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The record is longer than allowed.
    TooLarge {
        /// Its declared length.
        len: usize,
    },
    /// Shorter than a tag: cannot be a record.
    TooShort,
    /// Authentication failed: tampered, replayed, reordered, or another key.
    Forged,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::TooLarge { len } => write!(f, "record of {len} bytes is too large"),
            OpenError::TooShort => f.write_str("record too short"),
            OpenError::Forged => f.write_str("record failed authentication"),
        }
    }
}

impl core::error::Error for OpenError {}

/// Opens incoming records: one direction's key and record counter.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opener(record {})", self.counter)
    }
}

/// A record found at the start of some input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The whole record is there: `total` bytes long, header included.
    Complete {
        /// Header, ciphertext and tag.
        total: usize,
    },
    /// More bytes are needed; the record occupies `total` bytes when known.
    Incomplete {
        /// Its whole size, once the header is complete.
        total: Option<usize>,
    },
}

impl Opener {
    fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
            counter: 0,
        }
    }

    /// Looks at the record at the start of `input`, refusing one longer than `max` bytes
    /// (header excluded) before it has arrived.
    pub fn peek(input: &[u8], max: usize) -> Result<Record, OpenError> {
        let Some(h) = input.get(..RECORD_HEADER) else {
            return Ok(Record::Incomplete { total: None });
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > max {
            return Err(OpenError::TooLarge { len });
        }
        if len < TAG_LEN {
            return Err(OpenError::TooShort);
        }
        let total = RECORD_HEADER + len;
        Ok(if input.len() >= total {
            Record::Complete { total }
        } else {
            Record::Incomplete { total: Some(total) }
        })
    }

    /// Decrypts the complete record `record` (as found by [`Opener::peek`]) in place and
    /// returns its plaintext.
    pub fn open<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a mut [u8], OpenError> {
        if record.len() < RECORD_HEADER + TAG_LEN {
            return Err(OpenError::TooShort);
        }
        let declared = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
        if declared != record.len() - RECORD_HEADER {
            return Err(OpenError::Forged);
        }
        let body_len = record.len() - RECORD_HEADER - TAG_LEN;
        let (body, tag) = record[RECORD_HEADER..].split_at_mut(body_len);
        let tag = Tag::try_from(&*tag).map_err(|_| OpenError::TooShort)?;
        self.cipher
            .decrypt_inout_detached(&nonce(self.counter), &[], body.into(), &tag)
            .map_err(|_| OpenError::Forged)?;
        self.counter += 1;
        Ok(body)
    }
}

/// Fills `buf` with random bytes from the operating system.
pub fn random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn keys(token: &str, cn: u8, bn: u8) -> SessionKeys {
        SessionKeys::derive(
            &Token::new(token).unwrap(),
            "kitchen",
            &[cn; 32],
            &[bn; 32],
            &[9; 32],
        )
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert_eq!(
            Token::new("short").unwrap_err(),
            TokenError::TooShort { len: 5 }
        );
        assert_eq!(
            Token::new("sixteen chars ok").unwrap_err(),
            TokenError::BadCharacter
        );
        let t = Token::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(!format!("{:?}", keys("0123456789abcdef", 1, 2)).contains("0123"));
    }

    #[test]
    fn both_sides_derive_the_same_and_proofs_differ() {
        let a = keys("0123456789abcdef", 1, 2);
        let b = keys("0123456789abcdef", 1, 2);
        assert!(a.check_broker_proof(&b.broker_proof()));
        assert!(a.check_client_proof(&b.client_proof()));
        assert_ne!(a.broker_proof(), a.client_proof());
        let wrong = keys("0123456789abcdeX", 1, 2);
        assert!(!a.check_client_proof(&wrong.client_proof()));
        let other_nonce = keys("0123456789abcdef", 1, 3);
        assert!(!a.check_broker_proof(&other_nonce.broker_proof()));
        assert!(!a.check_broker_proof(&[0; 5]), "wrong length is just wrong");
    }

    #[test]
    fn records_round_trip_in_order_only() {
        let k = keys("0123456789abcdef", 1, 2);
        let (mut seal, _) = k.client();
        let (_, mut open) = k.broker();
        let mut wire = Vec::new();
        for msg in [&b"one frame"[..], b"", b"two"] {
            let at = Sealer::begin(&mut wire);
            wire.extend_from_slice(msg);
            seal.seal(&mut wire, at);
        }
        assert!(
            !wire.windows(9).any(|w| w == b"one frame"),
            "plaintext is not on the wire"
        );
        let mut pos = 0;
        for want in [&b"one frame"[..], b"", b"two"] {
            let Record::Complete { total } = Opener::peek(&wire[pos..], 1 << 20).unwrap() else {
                panic!("incomplete")
            };
            let got = open.open(&mut wire[pos..pos + total]).unwrap();
            assert_eq!(got, want);
            pos += total;
        }
    }

    #[test]
    fn replayed_reordered_tampered_and_foreign_records_fail() {
        let k = keys("0123456789abcdef", 1, 2);
        let (mut seal, _) = k.client();
        let mut records = Vec::new();
        for i in 0..3u8 {
            let mut r = Vec::new();
            let at = Sealer::begin(&mut r);
            r.extend_from_slice(&[i; 10]);
            seal.seal(&mut r, at);
            records.push(r);
        }
        // Reordered: the second record first.
        let (_, mut open) = k.broker();
        assert_eq!(open.open(&mut records[1].clone()), Err(OpenError::Forged));
        // Replayed: the first record twice.
        let (_, mut open) = k.broker();
        assert!(open.open(&mut records[0].clone()).is_ok());
        assert_eq!(open.open(&mut records[0].clone()), Err(OpenError::Forged));
        // Tampered: one bit of ciphertext.
        let (_, mut open) = k.broker();
        let mut t = records[0].clone();
        t[RECORD_HEADER] ^= 1;
        assert_eq!(open.open(&mut t), Err(OpenError::Forged));
        // Another session's keys.
        let (_, mut open) = keys("0123456789abcdef", 1, 3).broker();
        assert_eq!(open.open(&mut records[0].clone()), Err(OpenError::Forged));
        // The wrong direction.
        let (_, mut open) = k.client();
        assert_eq!(open.open(&mut records[0].clone()), Err(OpenError::Forged));
    }

    #[test]
    fn batches_are_split_into_bounded_records_at_frame_boundaries() {
        use crate::wire::{Frame, Publish};
        let k = keys("0123456789abcdef", 1, 2);
        let (mut seal, _) = k.client();
        let (_, mut open) = k.broker();
        let mut frames = Vec::new();
        let payload = [7u8; 1000];
        for _ in 0..600 {
            Frame::Publish(Publish {
                req: 0,
                topic: "t",
                key: None,
                payload: &payload,
            })
            .encode(&mut frames);
        }
        let big = [1u8; RECORD_TARGET + 10];
        Frame::Publish(Publish {
            req: 0,
            topic: "t",
            key: None,
            payload: &big,
        })
        .encode(&mut frames);
        let mut wire = Vec::new();
        seal.seal_frames(&frames, &mut wire);
        let (mut pos, mut plain, mut records) = (0, Vec::new(), 0);
        while pos < wire.len() {
            let Record::Complete { total } = Opener::peek(&wire[pos..], 1 << 24).unwrap() else {
                panic!("incomplete")
            };
            let p = open.open(&mut wire[pos..pos + total]).unwrap();
            // Every record holds whole frames, and only the lone big one exceeds the target.
            let mut q = 0;
            while q < p.len() {
                let (len, prefix) = crate::wire::read_length(&p[q..]).unwrap().unwrap();
                q += prefix + len as usize;
            }
            assert_eq!(q, p.len());
            assert!(p.len() <= RECORD_TARGET || p.len() == frames.len() - plain.len());
            plain.extend_from_slice(p);
            pos += total;
            records += 1;
        }
        assert_eq!(plain, frames);
        assert!(records >= 4, "{records}");
    }

    #[test]
    fn peek_checks_length_before_the_body() {
        assert_eq!(
            Opener::peek(&[1, 2], 100),
            Ok(Record::Incomplete { total: None })
        );
        assert_eq!(
            Opener::peek(&[0xff, 0xff, 0xff, 0x7f], 1000),
            Err(OpenError::TooLarge { len: 0x7fff_ffff })
        );
        assert_eq!(Opener::peek(&[3, 0, 0, 0], 1000), Err(OpenError::TooShort));
        assert_eq!(
            Opener::peek(&[20, 0, 0, 0, 1], 1000),
            Ok(Record::Incomplete { total: Some(24) })
        );
    }
}
