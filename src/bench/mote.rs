//! mote's own wire protocol (the SDK's codec, no SDK client).

use std::io;
use std::net::SocketAddr;

use mote_sdk::secure::{Opener, Record, Sealer, SessionKeys, Token, transcript};

use mote_sdk::wire::{self, AuthInit, Decoded, Frame, Hello, Publish, Subscribe};

use super::conn::{Client, Conn, Step};

/// The frame that subscribes to `topic` from its next message.
fn subscribe_frame(topic: &str) -> Vec<u8> {
    Frame::Subscribe(Subscribe {
        sub: 1,
        filter: topic,
        from: wire::Start::Latest,
        resume: Vec::new(),
    })
    .to_vec()
}

/// Whether the broker's answer to a subscribe was `Subscribed`, as an error if not.
pub(super) fn subscribed(ok: bool) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::Error::other("subscribe was refused"))
    }
}

pub(crate) struct Mote {
    pub(super) c: Conn,
}

impl Mote {
    /// Reads frames until one that `f` maps to `Some`, which is returned.
    pub(super) fn expect<T>(
        &mut self,
        mut f: impl FnMut(&Frame<'_>) -> Option<T>,
    ) -> io::Result<T> {
        let mut got = None;
        self.c
            .read_with(|buf, _| match wire::decode(buf, usize::MAX) {
                Err(e) => Err(io::Error::other(e)),
                Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
                Ok(Decoded::Frame(frame, n)) => {
                    got = f(&frame);
                    Ok(if got.is_some() {
                        Step::Stop(n)
                    } else {
                        Step::Took(n)
                    })
                }
            })?;
        got.ok_or_else(|| io::Error::other("no answer"))
    }
}

impl Client for Mote {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Mote> {
        let mut m = Mote {
            c: Conn::connect(addr)?,
        };
        m.c.write(&Frame::Hello(Hello::new(name)).to_vec())?;
        // The first frame answers the hello.
        if m.expect(|f| Some(matches!(f, Frame::Welcome(_))))? {
            Ok(m)
        } else {
            Err(io::Error::other("the broker did not welcome us"))
        }
    }

    fn topic(run: &str) -> String {
        format!("bench/{run}")
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.c.write(&subscribe_frame(topic))?;
        subscribed(self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))?)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        Frame::Publish(Publish {
            req: 0,
            topic,
            key: None,
            payload,
        })
        .encode(out);
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.c
            .read_with(|buf, _| match wire::decode(buf, usize::MAX) {
                Err(e) => Err(io::Error::other(e)),
                Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
                // A `Lag` needs no handling: the sequence numbers in the payloads show the gap.
                Ok(Decoded::Frame(Frame::Message(m), n)) => Ok(if f(m.payload) {
                    Step::Took(n)
                } else {
                    Step::Stop(n)
                }),
                Ok(Decoded::Frame(_, n)) => Ok(Step::Took(n)),
            })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.c
    }
}

/// The token of the encrypted runs (`mote bench --token`), set once before they start.
pub(crate) static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// mote's protocol with a token: the handshake, then every batch sealed into one record
/// and every record opened, as the SDK does.
pub(crate) struct SecureMote {
    c: Conn,
    sealer: Sealer,
    opener: Opener,
    /// Opened plaintext of the current record, and how far it was read.
    plain: Vec<u8>,
    read: usize,
    record: Vec<u8>,
}

impl SecureMote {
    /// Reads plaintext frames until one that `f` maps to `Some`.
    fn expect<T>(&mut self, mut f: impl FnMut(&Frame<'_>) -> Option<T>) -> io::Result<T> {
        loop {
            while let Ok(Decoded::Frame(frame, n)) =
                wire::decode(&self.plain[self.read..], usize::MAX)
            {
                self.read += n;
                if let Some(t) = f(&frame) {
                    return Ok(t);
                }
            }
            self.next_record()?;
        }
    }

    /// Reads and opens the next record into `plain`.
    fn next_record(&mut self) -> io::Result<()> {
        let record = &mut self.record;
        self.c
            .read_with(|buf, _| match Opener::peek(buf, usize::MAX >> 1) {
                Ok(Record::Complete { total }) => {
                    record.clear();
                    record.extend_from_slice(&buf[..total]);
                    Ok(Step::Stop(total))
                }
                Ok(Record::Incomplete { .. }) => Ok(Step::Need),
                Err(e) => Err(io::Error::other(e)),
            })?;
        let plain = self
            .opener
            .open(&mut self.record)
            .map_err(io::Error::other)?;
        self.plain.clear();
        self.plain.extend_from_slice(plain);
        self.read = 0;
        Ok(())
    }

    /// Sends frames as records, in one write.
    fn seal_and_send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.record.clear();
        self.sealer.seal_frames(frames, &mut self.record);
        self.c.write(&self.record)
    }
}

impl Client for SecureMote {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<SecureMote> {
        let secret = TOKEN
            .get()
            .ok_or_else(|| io::Error::other("no token for the encrypted runs"))?;
        let token = Token::new(secret).map_err(io::Error::other)?;
        let mut c = Conn::connect(addr)?;
        let hello = Frame::Hello(Hello::new(name)).to_vec();
        c.write(&hello)?;
        let mut challenge = Vec::new();
        c.read_with(|buf, _| match wire::decode(buf, 4096) {
            Ok(Decoded::Frame(_, n)) => {
                challenge.extend_from_slice(&buf[..n]);
                Ok(Step::Stop(n))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
            Err(e) => Err(io::Error::other(e)),
        })?;
        let Ok(Decoded::Frame(Frame::AuthChallenge(ch), _)) = wire::decode(&challenge, 4096) else {
            return Err(io::Error::other("the broker did not ask for a token"));
        };
        let mut nonce = [0u8; 32];
        mote_sdk::secure::random(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let keys = SessionKeys::derive(
            &token,
            mote_sdk::DEFAULT_TOKEN_NAME,
            &nonce,
            &ch.nonce,
            &transcript(&hello, &challenge),
        );
        c.write(
            &Frame::AuthInit(AuthInit {
                name: mote_sdk::DEFAULT_TOKEN_NAME,
                nonce,
                proof: keys.client_proof(),
            })
            .to_vec(),
        )?;
        let mut proved = false;
        c.read_with(|buf, _| match wire::decode(buf, 4096) {
            Ok(Decoded::Frame(Frame::AuthProof(p), n)) => {
                proved = keys.check_broker_proof(&p.proof);
                Ok(Step::Stop(n))
            }
            Ok(Decoded::Frame(_, _)) => Err(io::Error::other("the broker refused the token")),
            Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
            Err(e) => Err(io::Error::other(e)),
        })?;
        if !proved {
            return Err(io::Error::other("the broker could not prove the token"));
        }
        let (sealer, opener) = keys.client();
        let mut m = SecureMote {
            c,
            sealer,
            opener,
            plain: Vec::new(),
            read: 0,
            record: Vec::with_capacity(256 * 1024),
        };
        if m.expect(|f| Some(matches!(f, Frame::Welcome(_))))? {
            Ok(m)
        } else {
            Err(io::Error::other("the broker did not welcome us"))
        }
    }

    fn topic(run: &str) -> String {
        Mote::topic(run)
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.seal_and_send(&subscribe_frame(topic))?;
        subscribed(self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))?)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        Mote::encode_publish(topic, payload, out);
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.seal_and_send(bytes)
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        loop {
            while let Ok(Decoded::Frame(frame, n)) =
                wire::decode(&self.plain[self.read..], usize::MAX)
            {
                self.read += n;
                if let Frame::Message(m) = frame {
                    if !f(m.payload) {
                        return Ok(());
                    }
                }
            }
            self.next_record()?;
        }
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.c
    }
}
