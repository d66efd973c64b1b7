//! The client's side of a connection's start: `Hello`/`Welcome`, and with a token the
//! proof exchange that turns on encryption. A client given a token never talks to a
//! broker that cannot prove it knows the token: no fallback to plaintext.

use std::io;
use std::time::Duration;

use async_io::Timer;
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use crate::client::{BrokerInfo, DEFAULT_TOKEN_NAME, Options};
use crate::error::Error;
use crate::secure::{Opener, Record, Sealer, SessionKeys, random, transcript};
use crate::wire::{self, AuthInit, Decoded, Frame, Hello, Welcome};

/// Largest record accepted before `Welcome` says how large frames may be.
const MAX_WELCOME_RECORD: usize = 64 * 1024;

/// A connection through its handshake.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) info: BrokerInfo,
    pub(crate) broker_id: u64,
    /// Bytes read past the handshake.
    pub(crate) leftover: Vec<u8>,
    /// The record layer, when the connection is encrypted.
    pub(crate) crypto: Option<(Sealer, Opener)>,
}

/// What the broker has sent so far during the handshake.
struct Incoming {
    s: TcpStream,
    buf: Vec<u8>,
    end: usize,
}

impl Incoming {
    async fn fill(&mut self) -> io::Result<bool> {
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.s.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Reads until a whole frame is at the front; returns its length.
    async fn frame(&mut self) -> Result<usize, String> {
        loop {
            match wire::decode(&self.buf[..self.end], MAX_WELCOME_RECORD) {
                Ok(Decoded::Frame(_, n)) => return Ok(n),
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => return Err(format!("not a mote broker ({e})")),
            }
            if !self.fill().await.map_err(|e| e.to_string())? {
                return Err("the broker closed the connection".into());
            }
        }
    }

    /// Reads until a whole record is at the front; `None` if the bytes cannot be one
    /// or the broker closed first.
    async fn record(&mut self) -> Option<usize> {
        loop {
            match Opener::peek(&self.buf[..self.end], MAX_WELCOME_RECORD) {
                Ok(Record::Complete { total }) => return Some(total),
                Ok(Record::Incomplete { .. }) => {}
                Err(_) => return None,
            }
            if !self.fill().await.unwrap_or(false) {
                return None;
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.end, 0);
        self.end -= n;
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn info(w: &Welcome<'_>) -> BrokerInfo {
    BrokerInfo {
        version: w.version,
        max_payload: w.max_payload as usize,
        keepalive: Duration::from_millis(u64::from(w.keepalive_ms.max(20))),
        max_frame: w.max_frame as usize,
    }
}

/// Connects and handshakes within `opts.connect_timeout`.
pub(crate) async fn connect(opts: &Options) -> Result<Connected, Error> {
    let timeout = opts.connect_timeout;
    handshake(opts)
        .or(async {
            Timer::after(timeout).await;
            Err(Error::Connect {
                addr: opts.addr.clone(),
                source: io::ErrorKind::TimedOut.into(),
            })
        })
        .await
}

async fn handshake(opts: &Options) -> Result<Connected, Error> {
    let addr = &opts.addr;
    let stream = TcpStream::connect(addr.as_str())
        .await
        .map_err(|source| Error::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let fail = |reason: String| Error::Handshake {
        addr: addr.clone(),
        reason,
    };
    // The broker keeps this much of the name; a longer one could pass the limit on
    // frames before the handshake is over.
    let hello = Frame::Hello(Hello::new(cut(&opts.name, wire::MAX_CLIENT_NAME))).to_vec();
    let mut s = stream.clone();
    s.write_all(&hello).await.map_err(|e| fail(e.to_string()))?;
    let mut inc = Incoming {
        s: stream.clone(),
        buf: vec![0; 4096],
        end: 0,
    };
    let broker_error = |e: &wire::ErrorFrame<'_>| Error::Broker {
        code: e.code,
        message: e.message.to_string(),
    };

    let n = inc.frame().await.map_err(fail)?;
    let challenge_raw = inc.buf[..n].to_vec();
    let challenge = match Frame::decode_body(&inc.buf[wire_prefix(&inc.buf)..n]) {
        Ok(Frame::Welcome(w)) => {
            if opts.token.is_some() {
                return Err(fail(
                    "the broker does not use tokens, so it cannot prove it knows yours; refusing to talk to it unencrypted".into(),
                ));
            }
            let (info, broker_id) = (info(&w), w.broker_id);
            inc.consume(n);
            return Ok(Connected {
                stream,
                info,
                broker_id,
                leftover: inc.buf[..inc.end].to_vec(),
                crypto: None,
            });
        }
        Ok(Frame::AuthChallenge(c)) => c,
        Ok(Frame::Error(e)) => return Err(broker_error(&e)),
        Ok(f) => {
            return Err(fail(format!(
                "unexpected frame 0x{:02x} in the handshake",
                f.tag()
            )));
        }
        Err(e) => return Err(fail(format!("not a mote broker ({e})"))),
    };
    inc.consume(n);
    let Some((name, token)) = &opts.token else {
        return Err(Error::Broker {
            code: wire::ErrorCode::UNAUTHORIZED,
            message: "this broker requires a token: give one with --token or MOTE_TOKEN, or a mote://NAME:TOKEN@HOST:PORT address".into(),
        });
    };
    let mut client_nonce = [0u8; 32];
    random(&mut client_nonce).map_err(|e| fail(format!("no randomness: {e}")))?;
    let keys = SessionKeys::derive(
        token,
        name,
        &client_nonce,
        &challenge.nonce,
        &transcript(&hello, &challenge_raw),
    );
    s.write_all(
        &Frame::AuthInit(AuthInit {
            name,
            nonce: client_nonce,
            proof: keys.client_proof(),
        })
        .to_vec(),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;

    // A good proof is answered by the broker's proof; a bad one by an error.
    let n = inc.frame().await.map_err(fail)?;
    match Frame::decode_body(&inc.buf[wire_prefix(&inc.buf)..n]) {
        Ok(Frame::AuthProof(p)) if keys.check_broker_proof(&p.proof) => {}
        Ok(Frame::AuthProof(_)) => {
            return Err(fail(
                "the broker could not prove it knows the token: not the broker you meant".into(),
            ));
        }
        Ok(Frame::Error(e))
            if e.code == wire::ErrorCode::UNAUTHORIZED && name == DEFAULT_TOKEN_NAME =>
        {
            // The broker may not say whether the name or the secret was wrong (names
            // would be guessable), but a token given without a name is the likely cause.
            return Err(Error::Broker {
                code: e.code,
                message: format!(
                    "{}: the token went under the name `{DEFAULT_TOKEN_NAME}`, the name used when none is given; \
                     if the broker's tokens have names, give the name too: --token NAME:SECRET \
                     (or mote://NAME:SECRET@HOST:PORT)",
                    e.message
                ),
            });
        }
        Ok(Frame::Error(e)) => return Err(broker_error(&e)),
        Ok(f) => {
            return Err(fail(format!(
                "unexpected frame 0x{:02x} in the handshake",
                f.tag()
            )));
        }
        Err(e) => return Err(fail(format!("not a mote broker ({e})"))),
    }
    inc.consume(n);
    let (sealer, mut opener) = keys.client();
    let Some(total) = inc.record().await else {
        return Err(fail("the broker closed before its welcome".into()));
    };
    let mut rec = inc.buf[..total].to_vec();
    let plain = opener
        .open(&mut rec)
        .map_err(|e| fail(format!("the broker's first record: {e}")))?;
    match wire::decode(plain, MAX_WELCOME_RECORD) {
        Ok(Decoded::Frame(Frame::Welcome(w), used)) if used == plain.len() => {
            let (info, broker_id) = (info(&w), w.broker_id);
            inc.consume(total);
            Ok(Connected {
                stream,
                info,
                broker_id,
                leftover: inc.buf[..inc.end].to_vec(),
                crypto: Some((sealer, opener)),
            })
        }
        _ => Err(fail("the broker's first record is not a welcome".into())),
    }
}

/// Length of the length prefix of the frame at the start of `buf` (already checked).
fn wire_prefix(buf: &[u8]) -> usize {
    match wire::read_length(buf) {
        Ok(Some((_, p))) => p,
        _ => 0,
    }
}
