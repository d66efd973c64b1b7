//! The start of a connection: `Hello` and version negotiation, then, on a broker with
//! tokens, the proof exchange (`AuthChallenge` → `AuthInit` → `AuthProof`) that turns on
//! the record layer. See `mote_sdk::secure` for the key schedule.

use std::sync::Arc;

use mote_sdk::ErrorCode;
use mote_sdk::secure::{SessionKeys, Token, transcript};
use mote_sdk::wire::{self, AuthChallenge, AuthProof, Frame, PROTOCOL_VERSION, Welcome};

use super::{BROKER_NAME, Crypto, Session};
use crate::auth::Auth;
use crate::engine::Engine;

/// Largest frame accepted before the handshake is over: these frames are small.
pub(crate) const MAX_HANDSHAKE_FRAME: usize = 512;

/// The longest client name a `Hello` can carry within [`MAX_HANDSHAKE_FRAME`] whatever
/// its versions: tag, magic, two three-byte `u16` varints and a two-byte length.
pub(crate) const MAX_HELLO_NAME: usize = MAX_HANDSHAKE_FRAME - 1 - 4 - 3 - 3 - 2;

/// The one answer to every failed proof, so a prober learns nothing from it.
const AUTH_FAILED: &str = "authentication failed";

/// Where a connection is in its handshake.
pub(super) enum Phase {
    /// Waiting for `Hello`.
    Hello { auth: Arc<Auth>, nonce: [u8; 32] },
    /// The broker has tokens and sent its challenge: waiting for `AuthInit`.
    AuthInit {
        auth: Arc<Auth>,
        nonce: [u8; 32],
        /// SHA-256 of `Hello` and `AuthChallenge` as on the wire.
        transcript: [u8; 32],
        version: u16,
        client: String,
    },
    /// Handshake done (or failed: the connection is closing).
    Open,
}

impl Phase {
    pub(super) fn new(auth: Arc<Auth>, nonce: [u8; 32]) -> Phase {
        Phase::Hello { auth, nonce }
    }

    /// The frame size limit while the handshake lasts; `None` once it is over.
    pub(super) fn frame_limit(&self) -> Option<usize> {
        match self {
            Phase::Open => None,
            _ => Some(MAX_HANDSHAKE_FRAME),
        }
    }

    /// Refuses a peer that is not speaking mote as soon as its first bytes show it,
    /// instead of waiting for a frame that never completes.
    pub(super) fn sniff(&self, input: &[u8]) -> Result<(), &'static str> {
        if !matches!(self, Phase::Hello { .. }) {
            return Ok(());
        }
        let Ok(Some((_, prefix))) = wire::read_length(input) else {
            return Ok(());
        };
        let body = input.get(prefix..).unwrap_or_default();
        let tag_ok = body.first().is_none_or(|&t| t == wire::tag::HELLO);
        let magic = body.get(1..5);
        if !tag_ok || magic.is_some_and(|m| m != wire::MAGIC) {
            return Err("not a mote client: the first frame must be hello");
        }
        Ok(())
    }
}

impl Session {
    /// A frame of the handshake that does not decode: an oversized one is refused with
    /// the limit that applies before the handshake is over, and what to shorten.
    pub(super) fn handshake_decode_failed(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        e: &wire::DecodeError,
    ) -> ErrorCode {
        let wire::DecodeError::TooLarge { .. } = e else {
            return self.decode_failed(engine, out, e);
        };
        let what = match self.phase.as_deref() {
            Some(Phase::AuthInit { .. }) => "a token name is at most 64 bytes".to_string(),
            _ => format!(
                "a hello's client name may be at most {MAX_HELLO_NAME} bytes, and the broker keeps the first {}: shorten the client name",
                wire::MAX_CLIENT_NAME
            ),
        };
        let msg = format!("{e} before the handshake is over ({what})");
        self.fail(engine, out, ErrorCode::FRAME_TOO_LARGE, &msg)
    }

    /// Handles a frame of the handshake; `raw` is its bytes as received.
    pub(super) fn handle_handshake(
        &mut self,
        engine: &mut Engine,
        frame: Frame<'_>,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let phase = self.phase.take().map_or(Phase::Open, |p| *p);
        match (phase, frame) {
            (Phase::Hello { auth, nonce }, Frame::Hello(h)) => {
                if h.magic != wire::MAGIC {
                    let msg = "not a mote client: the first frame must be hello";
                    return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
                }
                let version = h.max_version.min(PROTOCOL_VERSION);
                if version < h.min_version || version < wire::MIN_PROTOCOL_VERSION {
                    let msg = format!(
                        "no common protocol version: the client speaks {}..={}, the broker {}..={}",
                        h.min_version,
                        h.max_version,
                        wire::MIN_PROTOCOL_VERSION,
                        PROTOCOL_VERSION
                    );
                    return Err(self.fail(engine, out, ErrorCode::UNSUPPORTED_VERSION, &msg));
                }
                let client = truncate(h.client, wire::MAX_CLIENT_NAME).to_string();
                if !auth.enabled() {
                    self.open(engine, out, version, &client);
                    return Ok(());
                }
                let challenge = Frame::AuthChallenge(AuthChallenge { nonce }).to_vec();
                out.extend_from_slice(&challenge);
                self.phase = Some(Box::new(Phase::AuthInit {
                    auth,
                    nonce,
                    transcript: transcript(raw, &challenge),
                    version,
                    client,
                }));
                Ok(())
            }
            (
                Phase::AuthInit {
                    auth,
                    nonce,
                    transcript,
                    version,
                    client,
                },
                Frame::AuthInit(a),
            ) => {
                // An unknown name goes through the same derivation and comparison (with a
                // stand-in token), so timing does not tell which names exist.
                let entry = auth.get(a.name);
                let token = entry.map_or_else(stand_in_token, |e| e.token.clone());
                let keys = SessionKeys::derive(&token, a.name, &a.nonce, &nonce, &transcript);
                let proof_ok = keys.check_client_proof(&a.proof);
                let Some(entry) = entry.filter(|_| proof_ok) else {
                    log::info!(
                        "conn {}: failed proof for token {:?}",
                        self.conn.index(),
                        a.name
                    );
                    engine.handle_auth_failure(self.conn);
                    return Err(self.fail(engine, out, ErrorCode::UNAUTHORIZED, AUTH_FAILED));
                };
                self.emit(
                    out,
                    &Frame::AuthProof(AuthProof {
                        proof: keys.broker_proof(),
                    }),
                );
                let (sealer, opener) = keys.broker();
                self.crypto = Some(Box::new(Crypto {
                    sealer,
                    opener,
                    record_at: None,
                }));
                self.rights = Some(entry.rules.clone());
                self.token_name = Some(a.name.into());
                engine.handle_auth_success(self.conn, a.name);
                self.open(engine, out, version, &client);
                Ok(())
            }
            (Phase::AuthInit { .. }, _) => {
                let msg = "this broker requires a token: give one with --token or MOTE_TOKEN, or a mote://NAME:TOKEN@HOST:PORT address";
                engine.handle_auth_failure(self.conn);
                Err(self.fail(engine, out, ErrorCode::UNAUTHORIZED, msg))
            }
            (Phase::Hello { .. }, _) => {
                let msg = "not a mote client: the first frame must be hello";
                Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg))
            }
            (Phase::Open, other) => {
                let msg = format!(
                    "unexpected frame (tag 0x{:02x}) during the handshake",
                    other.tag()
                );
                Err(self.fail(engine, out, ErrorCode::PROTOCOL, &msg))
            }
        }
    }

    /// The handshake is over: say `Welcome` (inside a record when encrypted).
    fn open(&mut self, engine: &mut Engine, out: &mut Vec<u8>, version: u16, client: &str) {
        engine.handle_open(self.conn, client);
        self.version = version;
        if version >= wire::REQUEST_VERSION {
            engine.handle_tx_capable(self.conn);
        }
        let l = engine.limits();
        let welcome = Welcome {
            version,
            keepalive_ms: l.keepalive_ms as u32,
            max_frame: l.max_frame() as u32,
            max_payload: l.max_payload as u32,
            max_subscriptions: l.max_subscriptions as u32,
            broker_id: engine.broker_id(),
            broker: BROKER_NAME,
        };
        self.emit(out, &Frame::Welcome(welcome));
    }
}

/// The token an unknown name is checked against: nobody can prove it.
fn stand_in_token() -> Token {
    Token::new("mote-stand-in-for-an-unknown-token-name")
        .unwrap_or_else(|_| unreachable!("a valid token literal"))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    #[test]
    fn client_names_are_cut_on_char_boundaries() {
        assert_eq!(super::truncate("ééé", 3), "é");
        assert_eq!(super::truncate("abc", 64), "abc");
    }
}
