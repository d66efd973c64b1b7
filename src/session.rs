//! One connection's protocol: the handshake, frame dispatch into the engine, and the
//! frames that go back. Pure: bytes in, bytes out, no IO.

use mote_sdk::ErrorCode;
use mote_sdk::wire::{
    self, DecodeError, Decoded, ErrorFrame, Frame, Lag, Message, PROTOCOL_VERSION, Ping, Published,
    Subscribed, Unsubscribe, Welcome,
};

use crate::engine::{ConnId, Delivery, Engine};

/// Largest frame accepted before the handshake: a `Hello` is a few dozen bytes.
const MAX_HELLO: usize = 512;

/// Software name and version sent in `Welcome`.
pub const BROKER_NAME: &str = concat!("mote ", env!("CARGO_PKG_VERSION"));

/// How far [`Session::handle_input`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input used; the rest is an incomplete frame to keep.
    pub consumed: usize,
    /// Size of that incomplete frame, prefix included, when already known.
    pub need: Option<usize>,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    conn: ConnId,
    open: bool,
    max_frame: usize,
}

/// Appends an error frame.
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, req: u32, message: &str) {
    Frame::Error(ErrorFrame { code, req, message }).encode(out);
}

impl Session {
    /// A session for `conn`, refusing frames above `max_frame` bytes.
    pub fn new(conn: ConnId, max_frame: usize) -> Session {
        Session {
            conn,
            open: false,
            max_frame,
        }
    }

    /// The engine's id for this connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Handles every complete frame at the start of `input`, appending replies to `out`.
    /// `time_ms` is wall-clock time for the messages stored. On a protocol violation an
    /// error frame is appended and the code returned: the connection must close.
    pub fn handle_input(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ErrorCode> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            if !self.open {
                self.sniff_hello(engine, rest, out)?;
            }
            let max = if self.open { self.max_frame } else { MAX_HELLO };
            match wire::decode(rest, max) {
                Ok(Decoded::Frame(frame, used)) => {
                    pos += used;
                    self.handle_frame(engine, time_ms, frame, out)?;
                }
                Ok(Decoded::Incomplete { total }) => {
                    return Ok(Progress {
                        consumed: pos,
                        need: total,
                    });
                }
                Err(e) => {
                    let code = match e {
                        DecodeError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
                        _ => ErrorCode::PROTOCOL,
                    };
                    let msg = match e {
                        DecodeError::TooLarge { .. } => {
                            format!("{e} (the payload limit is set by --max-payload)")
                        }
                        _ => e.to_string(),
                    };
                    return Err(self.fail(engine, out, code, &msg));
                }
            }
        }
    }

    /// Refuses a peer that is not speaking mote as soon as its first bytes show it,
    /// instead of waiting for a frame that never completes.
    fn sniff_hello(
        &mut self,
        engine: &mut Engine,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let Ok(Some((_, prefix))) = wire::read_length(input) else {
            return Ok(());
        };
        let body = input.get(prefix..).unwrap_or_default();
        let tag_ok = body.first().is_none_or(|&t| t == wire::tag::HELLO);
        let magic = body.get(1..5);
        if !tag_ok || magic.is_some_and(|m| m != wire::MAGIC) {
            let msg = "not a mote client: the first frame must be hello";
            return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
        }
        Ok(())
    }

    fn fail(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        code: ErrorCode,
        msg: &str,
    ) -> ErrorCode {
        log::debug!("conn {}: closing: {msg}", self.conn.index());
        engine.count_error(code);
        encode_error(out, code, 0, msg);
        code
    }

    fn handle_frame(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        frame: Frame<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if !self.open {
            return self.handle_hello(engine, frame, out);
        }
        match frame {
            Frame::Publish(p) => {
                match engine.handle_publish(self.conn, time_ms, p.topic, p.key, p.payload) {
                    Ok(offset) if p.req != 0 => {
                        Frame::Published(Published { req: p.req, offset }).encode(out)
                    }
                    Ok(_) => {}
                    Err(r) => encode_error(out, r.code, p.req, &r.message),
                }
            }
            Frame::Subscribe(s) => {
                match engine.handle_subscribe(self.conn, s.sub, s.filter, s.from, &s.resume) {
                    Ok(seq) => Frame::Subscribed(Subscribed { sub: s.sub, seq }).encode(out),
                    Err(r) => encode_error(out, r.code, s.sub, &r.message),
                }
            }
            Frame::Unsubscribe(u) => match engine.handle_unsubscribe(self.conn, u.sub) {
                Ok(()) => Frame::Unsubscribed(Unsubscribe { sub: u.sub }).encode(out),
                Err(r) => encode_error(out, r.code, u.sub, &r.message),
            },
            Frame::Ping(p) => Frame::Pong(p).encode(out),
            Frame::Pong(_) => {}
            Frame::Hello(_) => {
                return Err(self.fail(engine, out, ErrorCode::PROTOCOL, "hello sent twice"));
            }
            other => {
                let msg = format!("unexpected frame (tag 0x{:02x}) from a client", other.tag());
                return Err(self.fail(engine, out, ErrorCode::PROTOCOL, &msg));
            }
        }
        Ok(())
    }

    fn handle_hello(
        &mut self,
        engine: &mut Engine,
        frame: Frame<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let Frame::Hello(h) = frame else {
            let msg = "the first frame must be hello";
            return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
        };
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
        let client = truncate(h.client, 64);
        engine.handle_open(self.conn, client);
        self.open = true;
        let l = engine.limits();
        Frame::Welcome(Welcome {
            version,
            keepalive_ms: l.keepalive_ms as u32,
            max_frame: l.max_frame() as u32,
            max_payload: l.max_payload as u32,
            max_subscriptions: l.max_subscriptions as u32,
            broker_id: engine.broker_id(),
            broker: BROKER_NAME,
        })
        .encode(out);
        Ok(())
    }

    /// Appends what the engine has ready for this connection to `out` until it holds at
    /// least `high_water` bytes. Returns whether more is ready.
    pub fn poll_output(&self, engine: &mut Engine, out: &mut Vec<u8>, high_water: usize) -> bool {
        engine.poll_deliveries(self.conn, |d| {
            match d {
                Delivery::Message {
                    sub,
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                } => Frame::Message(Message {
                    sub,
                    topic,
                    offset,
                    time_ms,
                    key,
                    payload,
                })
                .encode(out),
                Delivery::Lag {
                    sub,
                    topic,
                    missed,
                    next,
                } => Frame::Lag(Lag {
                    sub,
                    topic,
                    missed,
                    next,
                })
                .encode(out),
            }
            out.len() < high_water
        })
    }
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

/// A `Ping` frame, for tests and tools.
pub fn ping(nonce: u64) -> Vec<u8> {
    Frame::Ping(Ping { nonce }).to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use crate::limits::Limits;
    use mote_sdk::wire::{Hello, Publish};

    fn setup() -> (Engine, Session) {
        let mut e = Engine::new(Limits::default(), 42);
        let c = e.handle_connect(0, None);
        let max = e.limits().max_frame();
        (e, Session::new(c, max))
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

    #[test]
    fn handshake_then_publish_confirmed() {
        let (mut e, mut s) = setup();
        let mut input = Frame::Hello(Hello::new("test")).to_vec();
        Frame::Publish(Publish {
            req: 5,
            topic: "a/b",
            key: None,
            payload: b"x",
        })
        .encode(&mut input);
        let mut out = Vec::new();
        let p = s.handle_input(&mut e, 1000, &input, &mut out).unwrap();
        assert_eq!(p.consumed, input.len());
        let f = frames(&out);
        assert!(matches!(&f[0], Frame::Welcome(w) if w.broker_id == 42 && w.version == 1));
        assert_eq!(f[1], Frame::Published(Published { req: 5, offset: 0 }));
    }

    #[test]
    fn publish_before_hello_is_a_protocol_error() {
        let (mut e, mut s) = setup();
        let input = Frame::Ping(Ping { nonce: 1 }).to_vec();
        let mut out = Vec::new();
        assert_eq!(
            s.handle_input(&mut e, 0, &input, &mut out),
            Err(ErrorCode::PROTOCOL)
        );
        assert!(
            matches!(&frames(&out)[0], Frame::Error(x) if x.message == "not a mote client: the first frame must be hello")
        );
    }

    #[test]
    fn version_negotiation_refuses_no_overlap() {
        let (mut e, mut s) = setup();
        let mut h = Hello::new("future");
        h.min_version = 7;
        h.max_version = 9;
        let mut out = Vec::new();
        let r = s.handle_input(&mut e, 0, &Frame::Hello(h).to_vec(), &mut out);
        assert_eq!(r, Err(ErrorCode::UNSUPPORTED_VERSION));
        assert!(matches!(&frames(&out)[0], Frame::Error(x) if x.message.contains("7..=9")));
    }

    #[test]
    fn partial_frames_wait_and_oversize_is_refused() {
        let (mut e, mut s) = setup();
        let hello = Frame::Hello(Hello::new("t")).to_vec();
        let mut out = Vec::new();
        let p = s.handle_input(&mut e, 0, &hello[..3], &mut out).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 0,
                need: Some(hello.len())
            }
        );
        assert!(out.is_empty());
        s.handle_input(&mut e, 0, &hello, &mut out).unwrap();
        out.clear();
        // Before the handshake only a hello-sized frame is accepted.
        let (mut e2, mut s2) = setup();
        let r = s2.handle_input(&mut e2, 0, &[0x80, 0x08, tag_hello()], &mut Vec::new());
        assert_eq!(r, Err(ErrorCode::FRAME_TOO_LARGE));
        // An HTTP request is refused from its first bytes.
        let r = setup()
            .1
            .handle_input(&mut e2, 0, b"GET / HTTP/1.1\r\n", &mut Vec::new());
        assert_eq!(r, Err(ErrorCode::PROTOCOL));
        // After it, a length prefix of 16 MiB is refused from the prefix alone.
        let r = s.handle_input(&mut e, 0, &[0x80, 0x80, 0x80, 0x08], &mut out);
        assert_eq!(r, Err(ErrorCode::FRAME_TOO_LARGE));
        assert_eq!(e.stats().errors(ErrorCode::FRAME_TOO_LARGE), 1);
    }

    fn tag_hello() -> u8 {
        wire::tag::HELLO
    }

    #[test]
    fn client_names_are_cut_on_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 64), "abc");
    }
}
