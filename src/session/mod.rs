//! One connection's protocol: the handshake (and token proof), the record layer when
//! encrypted, frame dispatch into the engine with access checks, and what goes back.
//! Pure: bytes in, bytes out, no IO.
//!
//! Output contract with the transport: the session appends frames to `out`; when the
//! connection is encrypted it opens a record in `out` first. Before `out` is written to
//! the socket or kept for later, the transport calls [`Session::seal`].

mod handshake;
mod tx;

use std::sync::Arc;

use mote_sdk::ErrorCode;
use mote_sdk::Filter;
use mote_sdk::Start;
use mote_sdk::secure::{Opener, RECORD_TARGET, Record, Sealer};
use mote_sdk::topic::shown;
use mote_sdk::wire::{
    self, Asked, DecodeError, Decoded, ErrorFrame, Frame, GetLimits, GroupMessage, LIMITS_VERSION,
    Lag, MANAGE_VERSION, Manage, ManageOp, Managed, Message, Ping, Published, REQUEST_VERSION,
    Removed, Response, Subscribed, TopicLimits, Unsubscribe,
};

use crate::auth::{Auth, Rules};
use crate::engine::{Answer, ConnId, Delivery, Engine, GroupAsk};
use handshake::Phase;

/// Software name and version sent in `Welcome`.
pub const BROKER_NAME: &str = concat!("mote ", env!("CARGO_PKG_VERSION"));

use crate::limits::RECORD_SLACK;

/// How far [`Session::handle_input`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input used; the rest is an incomplete frame (or record) to keep.
    pub consumed: usize,
    /// Size of that incomplete frame or record, when already known.
    pub need: Option<usize>,
}

/// The record layer of an encrypted connection.
struct Crypto {
    sealer: Sealer,
    opener: Opener,
    /// Where the record being filled starts in `out`, if one is open.
    record_at: Option<usize>,
}

/// The protocol state of one connection.
pub struct Session {
    conn: ConnId,
    max_frame: usize,
    /// The handshake in progress; `None` once it is over (freed: idle connections are
    /// small).
    phase: Option<Box<Phase>>,
    /// Boxed: plaintext connections do not pay for cipher state.
    crypto: Option<Box<Crypto>>,
    /// The token's rights; `None` on a broker without tokens.
    rights: Option<std::sync::Arc<Rules>>,
    token_name: Option<Box<str>>,
    /// The last topic this connection was allowed to publish to (skips the rule check).
    allowed_topic: String,
    /// Replies held until the log is synced (`--sync always`), and every reply after
    /// them, in order (boxed: most connections never hold any).
    held: Option<Box<Held>>,
    /// The protocol version agreed in the handshake (1 until it is over).
    version: u16,
}

/// Replies waiting for the log to be synced: encoded frames, and for each confirmation
/// among them the log position it waits for and where it starts in `frames`.
#[derive(Debug, Default)]
struct Held {
    frames: Vec<u8>,
    gates: std::collections::VecDeque<(u64, usize)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conn", &self.conn)
            .field("encrypted", &self.crypto.is_some())
            .field("token", &self.token_name)
            .finish_non_exhaustive()
    }
}

/// Appends an error frame (plaintext: for callers outside a session).
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, req: u32, message: &str) {
    Frame::Error(ErrorFrame { code, req, message }).encode(out);
}

impl Session {
    /// A session for `conn`, refusing frames above `max_frame` bytes. `auth` is the
    /// broker's token table; `nonce` 32 fresh random bytes for the token handshake.
    pub fn new(conn: ConnId, max_frame: usize, auth: Arc<Auth>, nonce: [u8; 32]) -> Session {
        Session {
            conn,
            max_frame,
            phase: Some(Box::new(Phase::new(auth, nonce))),
            crypto: None,
            rights: None,
            token_name: None,
            allowed_topic: String::new(),
            held: None,
            version: 1,
        }
    }

    /// The engine's id for this connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Whether the connection is encrypted.
    pub fn encrypted(&self) -> bool {
        self.crypto.is_some()
    }

    /// Appends `frame` to `out`, inside the open record when encrypted; a record that
    /// has grown past `RECORD_TARGET` is sealed first, so replies to one read never make
    /// a record larger than a client accepts.
    fn emit(&mut self, out: &mut Vec<u8>, frame: &Frame<'_>) {
        if let Some(h) = &mut self.held {
            // Behind a confirmation that waits for a sync: replies keep their order.
            frame.encode(&mut h.frames);
            return;
        }
        self.emit_now(out, frame);
    }

    fn emit_now(&mut self, out: &mut Vec<u8>, frame: &Frame<'_>) {
        if let Some(c) = &mut self.crypto {
            if c.record_at.is_some_and(|at| out.len() - at > RECORD_TARGET) {
                if let Some(at) = c.record_at.take() {
                    c.sealer.seal(out, at);
                }
            }
            if c.record_at.is_none() {
                c.record_at = Some(Sealer::begin(out));
            }
        }
        frame.encode(out);
    }

    fn emit_error(&mut self, out: &mut Vec<u8>, code: ErrorCode, req: u32, message: &str) {
        self.emit(out, &Frame::Error(ErrorFrame { code, req, message }));
    }

    /// Holds `frame` (a confirmation) until the log is synced up to `gate`.
    fn hold(&mut self, gate: u64, frame: &Frame<'_>) {
        let h = self.held.get_or_insert_with(Box::default);
        h.gates.push_back((gate, h.frames.len()));
        frame.encode(&mut h.frames);
    }

    /// Whether replies wait for a sync.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// Lets go the replies whose syncs are done (`synced`: the log position synced),
    /// appending them to `out`.
    pub fn release(&mut self, synced: u64, out: &mut Vec<u8>) {
        let Some(h) = &mut self.held else {
            return;
        };
        while h.gates.front().is_some_and(|&(gate, _)| gate <= synced) {
            h.gates.pop_front();
        }
        // Everything before the first confirmation still waiting may go.
        let upto = h.gates.front().map_or(h.frames.len(), |&(_, start)| start);
        if upto == 0 {
            return;
        }
        let Some(h) = self.held.take() else { return };
        let mut h = h;
        let rest = h.frames.split_off(upto);
        let done = std::mem::replace(&mut h.frames, rest);
        let shift = upto;
        for g in &mut h.gates {
            g.1 -= shift;
        }
        // Whole frames, decoded again only to be emitted in a record when encrypted.
        let mut pos = 0;
        while pos < done.len() {
            match wire::decode(&done[pos..], usize::MAX) {
                Ok(Decoded::Frame(f, n)) => {
                    self.emit_now(out, &f);
                    pos += n;
                }
                _ => break,
            }
        }
        if !h.gates.is_empty() || !h.frames.is_empty() {
            self.held = Some(h);
        }
    }

    /// Seals the record being filled in `out`, if any. Call before `out` leaves.
    pub fn seal(&mut self, out: &mut Vec<u8>) {
        if let Some(c) = &mut self.crypto {
            if let Some(at) = c.record_at.take() {
                c.sealer.seal(out, at);
            }
        }
    }

    /// Tells the peer why the broker closes the connection (counting it).
    pub fn close_with(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        code: ErrorCode,
        message: &str,
    ) {
        engine.count_error(code);
        self.emit_close(out, code, message);
    }

    /// Tells the peer why the connection closes, when the engine decided (and counted) it.
    pub fn emit_close(&mut self, out: &mut Vec<u8>, code: ErrorCode, message: &str) {
        self.emit_error(out, code, 0, message);
    }

    /// Handles every complete frame (or record) at the start of `input`, appending
    /// replies to `out`; records are decrypted in place. `time_ms` is wall-clock time for
    /// the messages stored. On a violation an error frame is appended and its code
    /// returned: the connection must close.
    pub fn handle_input(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        input: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ErrorCode> {
        let mut pos = 0;
        loop {
            if self.crypto.is_some() {
                match self.handle_record(engine, time_ms, &mut input[pos..], out)? {
                    Ok(used) => pos += used,
                    Err(need) => {
                        return Ok(Progress {
                            consumed: pos,
                            need,
                        });
                    }
                }
                continue;
            }
            let rest = &input[pos..];
            if let Some(max) = self.phase.as_ref().and_then(|p| p.frame_limit()) {
                if let Err(msg) = self.phase.as_ref().map_or(Ok(()), |p| p.sniff(rest)) {
                    return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
                }
                match wire::decode(rest, max) {
                    Ok(Decoded::Frame(frame, used)) => {
                        let raw = &rest[..used];
                        pos += used;
                        self.handle_handshake(engine, frame, raw, out)?;
                    }
                    Ok(Decoded::Incomplete { total }) => {
                        return Ok(Progress {
                            consumed: pos,
                            need: total,
                        });
                    }
                    Err(e) => return Err(self.handshake_decode_failed(engine, out, &e)),
                }
                continue;
            }
            match wire::decode(rest, self.max_frame) {
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
                Err(e) => return Err(self.decode_failed(engine, out, &e)),
            }
        }
    }

    /// Opens the record at the start of `input` and handles its frames. `Ok(Ok(n))`:
    /// a record of `n` bytes was handled; `Ok(Err(need))`: incomplete.
    fn handle_record(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        input: &mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<Result<usize, Option<usize>>, ErrorCode> {
        let max = self.max_frame + RECORD_SLACK;
        let total = match Opener::peek(input, max) {
            Ok(Record::Complete { total }) => total,
            Ok(Record::Incomplete { total }) => return Ok(Err(total)),
            Err(e) => return Err(self.record_failed(engine, out, &e.to_string())),
        };
        let opened = match &mut self.crypto {
            Some(c) => c.opener.open(&mut input[..total]),
            None => return Ok(Err(None)),
        };
        let plain = match opened {
            Ok(p) => &*p,
            Err(e) => return Err(self.record_failed(engine, out, &e.to_string())),
        };
        let mut p = 0;
        while p < plain.len() {
            match wire::decode(&plain[p..], self.max_frame) {
                Ok(Decoded::Frame(frame, used)) => {
                    p += used;
                    self.handle_frame(engine, time_ms, frame, out)?;
                }
                Ok(Decoded::Incomplete { .. }) => {
                    let msg = "a record must hold whole frames";
                    return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
                }
                Err(e) => return Err(self.decode_failed(engine, out, &e)),
            }
        }
        Ok(Ok(total))
    }

    /// A record that does not open: the same answer whatever the cause.
    fn record_failed(&mut self, engine: &mut Engine, out: &mut Vec<u8>, why: &str) -> ErrorCode {
        log::debug!("conn {}: bad record: {why}", self.conn.index());
        engine.count_bad_record();
        self.fail(
            engine,
            out,
            ErrorCode::UNAUTHORIZED,
            "authentication failed",
        )
    }

    fn decode_failed(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        e: &DecodeError,
    ) -> ErrorCode {
        let (code, msg) = match e {
            DecodeError::TooLarge { .. } => (
                ErrorCode::FRAME_TOO_LARGE,
                format!("{e} (the payload limit is set by --max-payload)"),
            ),
            _ => (ErrorCode::PROTOCOL, e.to_string()),
        };
        self.fail(engine, out, code, &msg)
    }

    fn fail(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        code: ErrorCode,
        msg: &str,
    ) -> ErrorCode {
        log::debug!("conn {}: closing: {msg}", self.conn.index());
        self.close_with(engine, out, code, msg);
        code
    }

    fn handle_frame(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        frame: Frame<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if let Some((what, needed)) = self.newer_than_agreed(&frame) {
            let msg = format!(
                "{what} needs protocol {needed}; this connection agreed on version {}",
                self.version
            );
            return Err(self.fail(engine, out, ErrorCode::PROTOCOL, &msg));
        }
        match frame {
            Frame::Manage(m) => self.handle_manage(engine, &m, out),
            Frame::Publish(p) => {
                if let Err(msg) = self.check_publish(p.topic) {
                    engine.count_error(ErrorCode::FORBIDDEN);
                    self.emit_error(out, ErrorCode::FORBIDDEN, p.req, &msg);
                    return Ok(());
                }
                match engine.handle_publish(self.conn, time_ms, p.topic, p.key, p.payload) {
                    Ok(offset) => {
                        // With `--sync always` a confirmation goes once it is on disk.
                        let gate = engine.take_confirm_gate();
                        let reply = Frame::Published(Published { req: p.req, offset });
                        match gate {
                            _ if p.req == 0 => {}
                            Some(g) => self.hold(g, &reply),
                            None => self.emit(out, &reply),
                        }
                    }
                    Err(r) => self.emit_error(out, r.code, p.req, &r.message),
                }
            }
            Frame::Subscribe(s) => {
                if let Err(msg) = self.check_subscribe(s.filter) {
                    engine.count_error(ErrorCode::FORBIDDEN);
                    self.emit_error(out, ErrorCode::FORBIDDEN, s.sub, &msg);
                    return Ok(());
                }
                match engine.handle_subscribe(self.conn, s.sub, s.filter, s.from, &s.resume) {
                    Ok(seq) => self.emit(out, &Frame::Subscribed(Subscribed { sub: s.sub, seq })),
                    Err(r) => self.emit_error(out, r.code, s.sub, &r.message),
                }
            }
            Frame::SubscribeGroup(s) => {
                self.join_group(engine, s.sub, s.filter, s.group, s.from, s.settings, out);
            }
            Frame::JoinGroup(j) => {
                self.join_group(engine, j.sub, j.filter, j.group, j.from, j.settings, out);
            }
            // An ack or nack the engine cannot place is reported, not fatal: it is what a
            // member sees after its ack timeout passed. `req` 0: no request to match.
            Frame::Ack(a) => {
                if let Err(r) = engine.handle_ack(self.conn, a.sub, a.tag) {
                    self.emit_error(out, r.code, 0, &r.message);
                }
            }
            Frame::Nack(n) => {
                if let Err(r) = engine.handle_nack(self.conn, n.sub, n.tag, u64::from(n.delay_ms)) {
                    self.emit_error(out, r.code, 0, &r.message);
                }
            }
            Frame::Unsubscribe(u) => match engine.handle_unsubscribe(self.conn, u.sub) {
                Ok(()) => self.emit(out, &Frame::Unsubscribed(Unsubscribe { sub: u.sub })),
                Err(r) => self.emit_error(out, r.code, u.sub, &r.message),
            },
            Frame::Request(r) => self.handle_request(engine, time_ms, &r, out)?,
            Frame::Reply(r) => engine.handle_reply(r.reply, r.key, r.payload),
            Frame::Prepare(p) => self.handle_prepare(engine, time_ms, &p, out),
            Frame::Settle(s) => self.handle_settle(engine, time_ms, &s, out),
            Frame::Ping(p) => self.emit(out, &Frame::Pong(p)),
            Frame::Pong(_) => {}
            Frame::GetLimits(q) => self.handle_get_limits(engine, &q, out),
            Frame::Hello(_) => {
                return Err(self.fail(engine, out, ErrorCode::PROTOCOL, "hello sent twice"));
            }
            Frame::AuthInit(_) if self.rights.is_none() => {
                let msg = "this broker has no tokens: connect without one";
                return Err(self.fail(engine, out, ErrorCode::UNAUTHORIZED, msg));
            }
            other => {
                let msg = format!("unexpected frame (tag 0x{:02x}) from a client", other.tag());
                return Err(self.fail(engine, out, ErrorCode::PROTOCOL, &msg));
            }
        }
        Ok(())
    }

    /// A `Request`: the token's publish rules, then the engine; its answer comes later
    /// (see [`Engine::poll_answers`]), a refusal now with the request's `req`. A `req` of
    /// 0 is a protocol violation: the answer could not name it.
    fn handle_request(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        r: &wire::Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if r.req == 0 {
            let msg = "a request needs a req id other than 0 (its answer carries it)";
            return Err(self.fail(engine, out, ErrorCode::PROTOCOL, msg));
        }
        if let Err(msg) = self.check_publish(r.topic) {
            engine.count_error(ErrorCode::FORBIDDEN);
            self.emit_error(out, ErrorCode::FORBIDDEN, r.req, &msg);
            return Ok(());
        }
        let res = engine.handle_request(
            self.conn,
            time_ms,
            r.req,
            r.topic,
            r.timeout_ms,
            r.key,
            r.payload,
        );
        match res {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::PROTOCOL => {
                return Err(self.fail(engine, out, ErrorCode::PROTOCOL, &e.message));
            }
            Err(e) => self.emit_error(out, e.code, r.req, &e.message),
        }
        Ok(())
    }

    /// A `SubscribeGroup` or `JoinGroup`: the token's subscribe rules, then the engine;
    /// `Subscribed` or the refusal, with `req` = `sub`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of SubscribeGroup and JoinGroup, which differ only in settings"
    )]
    fn join_group(
        &mut self,
        engine: &mut Engine,
        sub: u32,
        filter: &str,
        group: &str,
        from: Start,
        settings: impl Into<GroupAsk>,
        out: &mut Vec<u8>,
    ) {
        if let Err(msg) = self.check_subscribe(filter) {
            engine.count_error(ErrorCode::FORBIDDEN);
            self.emit_error(out, ErrorCode::FORBIDDEN, sub, &msg);
            return;
        }
        match engine.handle_subscribe_group(self.conn, sub, filter, group, from, settings) {
            Ok(seq) => self.emit(out, &Frame::Subscribed(Subscribed { sub, seq })),
            Err(r) => self.emit_error(out, r.code, sub, &r.message),
        }
    }

    /// What in `frame` a client of the agreed version cannot send, if anything: a client
    /// gets the broker of the version it agreed on, so a version 1 or 2 client sending a
    /// version 3 frame (or `Start` variant) is a protocol violation, as it is for a
    /// broker that only speaks version 2.
    fn newer_than_agreed(&self, frame: &Frame<'_>) -> Option<(&'static str, u16)> {
        if self.version >= LIMITS_VERSION {
            return None;
        }
        if let Frame::GetLimits(_) = frame {
            return Some(("a limits query (tag 0x3a)", LIMITS_VERSION));
        }
        if self.version >= REQUEST_VERSION {
            return None;
        }
        let v4 = |what| Some((what, REQUEST_VERSION));
        match frame {
            Frame::Request(_) => return v4("a request (tag 0x31)"),
            Frame::Reply(_) => return v4("a reply (tag 0x33)"),
            Frame::Prepare(_) => return v4("a transactional publish (tag 0x35)"),
            Frame::Settle(_) => return v4("a transaction's commit or rollback (tag 0x37)"),
            _ => {}
        }
        if self.version >= MANAGE_VERSION {
            return None;
        }
        let by_time = |s: Start| matches!(s, Start::Time(_) | Start::Ago(_));
        let what = match frame {
            Frame::Manage(_) => "a management request (tag 0x0e)",
            Frame::JoinGroup(_) => "a group join with durability and expiry (tag 0x24)",
            Frame::Subscribe(s) if by_time(s.from) => "a start by time",
            Frame::SubscribeGroup(s) if by_time(s.from) => "a start by time",
            _ => return None,
        };
        Some((what, MANAGE_VERSION))
    }

    /// A management request: rights and JSON from [`crate::manage`], the answer (or the
    /// refusal, counted like any other) with the request's `req`.
    fn handle_manage(&mut self, engine: &mut Engine, m: &Manage<'_>, out: &mut Vec<u8>) {
        let rights = self.rights.clone();
        let caller = crate::manage::Caller {
            token: self.token_name.as_deref(),
            rules: rights.as_deref(),
        };
        // A listing page is rendered straight to text (the hot case with many topics).
        let answer = match m.op {
            ManageOp::Topics { filter, from } => {
                crate::manage::topics_text(engine, caller, filter, from)
            }
            ref op => crate::manage::run(engine, caller, op).map(|v| v.to_string()),
        };
        match answer {
            Ok(json) => {
                // The client refuses frames above the limit it was told in `Welcome`.
                if json.len() + MANAGED_OVERHEAD > self.max_frame {
                    let msg = format!(
                        "the answer is {} bytes, above the frame limit of {} (--max-payload): ask for less",
                        json.len(),
                        self.max_frame
                    );
                    engine.count_error(ErrorCode::PAYLOAD_TOO_LARGE);
                    self.emit_error(out, ErrorCode::PAYLOAD_TOO_LARGE, m.req, &msg);
                    return;
                }
                let reply = Frame::Managed(Managed {
                    req: m.req,
                    json: &json,
                });
                self.emit(out, &reply);
            }
            Err(r) => {
                engine.count_error(r.code);
                self.emit_error(out, r.code, m.req, &r.message);
            }
        }
    }

    /// A limits query (version 5): the broker's bounds on what it keeps and, for a named
    /// topic the token may publish to or inspect, that topic's effective retention.
    #[inline(never)]
    fn handle_get_limits(&mut self, engine: &mut Engine, q: &GetLimits<'_>, out: &mut Vec<u8>) {
        let mut topic = None;
        if let Some(name) = q.topic {
            if let Err(e) = mote_sdk::Topic::new_system(name) {
                let msg = format!("bad topic {}: {e}", shown(name));
                engine.count_error(ErrorCode::BAD_TOPIC);
                self.emit_error(out, ErrorCode::BAD_TOPIC, q.req, &msg);
                return;
            }
            if let Some(rules) = &self.rights {
                if !rules.may_publish(name) && !rules.may_inspect(name) {
                    let msg = format!(
                        "token {:?} may not see the limits of {} (it needs a publish, subscribe or manage rule matching it)",
                        self.token_name.as_deref().unwrap_or(""),
                        shown(name)
                    );
                    engine.count_error(ErrorCode::FORBIDDEN);
                    self.emit_error(out, ErrorCode::FORBIDDEN, q.req, &msg);
                    return;
                }
            }
            let s = engine.effective_settings(name);
            topic = Some(TopicLimits {
                persist: s.persist,
                max_age_ms: s.max_age_ms,
                retain_messages: s.retain_messages,
                retain_bytes: s.retain_bytes,
                discard_new: s.discard == crate::engine::settings::Discard::New,
            });
        }
        let l = engine.limits();
        let answer = wire::Limits {
            req: q.req,
            max_frame: l.max_frame() as u32,
            max_payload: l.max_payload as u32,
            max_key: wire::MAX_KEY_LEN as u32,
            entry_overhead: crate::engine::ENTRY_OVERHEAD as u32,
            ring_messages: l.ring_messages as u64,
            ring_bytes: l.ring_bytes as u64,
            memory: l.memory as u64,
            disk: engine.log().map_or(0, |log| log.disk_budget()),
            topic,
        };
        self.emit(out, &Frame::Limits(Box::new(answer)));
    }

    /// Whether this connection's token may publish to `topic`.
    // Inlined: on the publish path of every message, and (called from two places since
    // requests) no longer inlined on its own: 21 instructions per message more without.
    #[inline(always)]
    fn check_publish(&mut self, topic: &str) -> Result<(), String> {
        let Some(rules) = &self.rights else {
            return Ok(());
        };
        // A `#` rule (a single `--token` has one) needs no matching; for narrower rules
        // the last allowed topic is remembered.
        if rules.may_publish_anywhere(topic) || self.allowed_topic == topic {
            return Ok(());
        }
        if rules.may_publish(topic) {
            self.allowed_topic.clear();
            self.allowed_topic.push_str(topic);
            return Ok(());
        }
        Err(format!(
            "token {:?} may not publish to {} (its publish rules: {})",
            self.token_name.as_deref().unwrap_or(""),
            shown(topic),
            rules.publish_rules()
        ))
    }

    /// Whether this connection's token may subscribe with `filter`. An invalid filter
    /// passes here and is refused by the engine with the reason.
    fn check_subscribe(&self, filter: &str) -> Result<(), String> {
        let Some(rules) = &self.rights else {
            return Ok(());
        };
        let Ok(f) = Filter::new(filter) else {
            return Ok(());
        };
        if rules.may_subscribe(&f) {
            return Ok(());
        }
        Err(format!(
            "token {:?} may not subscribe to {} (its subscribe rules: {})",
            self.token_name.as_deref().unwrap_or(""),
            shown(filter),
            rules.subscribe_rules()
        ))
    }

    /// Appends what the engine has ready for this connection to `out` until it holds at
    /// least `high_water` bytes. Returns whether more is ready.
    pub fn poll_output(
        &mut self,
        engine: &mut Engine,
        out: &mut Vec<u8>,
        high_water: usize,
    ) -> bool {
        if self.phase.is_some() {
            return false;
        }
        if let Some(c) = &mut self.crypto {
            if c.record_at.is_none() {
                c.record_at = Some(Sealer::begin(out));
            }
        }
        // Answers to this connection's requests first (none below version 4).
        let answers_more = self.version >= REQUEST_VERSION && {
            let crypto = &mut self.crypto;
            engine.poll_answers(self.conn, |a| {
                if let Some(c) = crypto {
                    if c.record_at.is_some_and(|at| out.len() - at > RECORD_TARGET) {
                        if let Some(at) = c.record_at.take() {
                            c.sealer.seal(out, at);
                        }
                        c.record_at = Some(Sealer::begin(out));
                    }
                }
                encode_answer(a, out);
                out.len() < high_water
            })
        };
        if self.version >= REQUEST_VERSION {
            self.poll_tx_checks(engine, out);
        }
        let crypto = &mut self.crypto;
        // Version 1 clients know no `Evicted`: they get the same `Lag` as ever.
        let evicted_frame = self.version >= 2;
        let version = self.version;
        let more = engine.poll_deliveries(self.conn, |d| {
            // Records stay near RECORD_TARGET: seal a full one and open the next.
            if let Some(c) = crypto {
                if c.record_at.is_some_and(|at| out.len() - at > RECORD_TARGET) {
                    if let Some(at) = c.record_at.take() {
                        c.sealer.seal(out, at);
                    }
                    c.record_at = Some(Sealer::begin(out));
                }
            }
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
                    before_start,
                } => {
                    let lag = Lag {
                        sub,
                        topic,
                        missed,
                        next,
                    };
                    if before_start && evicted_frame {
                        Frame::Evicted(lag).encode(out)
                    } else {
                        Frame::Lag(lag).encode(out)
                    }
                }
                // The topic was removed: a `Lag` frame for now, with what the subscriber
                // had not got and where a topic created again under that name starts.
                Delivery::Removed {
                    sub,
                    topic,
                    unread,
                    next,
                } => encode_removed(version, sub, topic, unread, next, out),
                Delivery::GroupMessage {
                    sub,
                    tag,
                    topic,
                    offset,
                    time_ms,
                    attempt,
                    key,
                    payload,
                } => Frame::GroupMessage(GroupMessage {
                    sub,
                    tag,
                    topic,
                    offset,
                    time_ms,
                    attempt,
                    key,
                    payload,
                })
                .encode(out),
                Delivery::Asked {
                    sub,
                    group,
                    tag,
                    topic,
                    offset,
                    time_ms,
                    attempt,
                    reply,
                    key,
                    payload,
                } => encode_asked(
                    version,
                    Asked {
                        sub,
                        tag,
                        topic,
                        offset,
                        time_ms,
                        attempt,
                        reply,
                        key,
                        payload,
                    },
                    group,
                    out,
                ),
                Delivery::GroupGone { sub, group } => Frame::Error(ErrorFrame {
                    code: ErrorCode::NOT_FOUND,
                    req: sub,
                    message: &format!("group {} was deleted", shown(group)),
                })
                .encode(out),
            }
            out.len() < high_water
        }) || answers_more;
        // Nothing was added: do not leave an empty record behind.
        if let Some(c) = &mut self.crypto {
            if c.record_at
                .is_some_and(|at| at + mote_sdk::secure::RECORD_HEADER == out.len())
            {
                out.truncate(out.len() - mote_sdk::secure::RECORD_HEADER);
                c.record_at = None;
            }
        }
        more
    }
}

/// Bytes a `Managed` frame takes besides its JSON: length prefix, tag, `req`, string
/// length.
const MANAGED_OVERHEAD: usize = 5 + 1 + 5 + 5;

/// Appends the notice that `topic`, read by subscription `sub`, was deleted with `unread`
/// messages it had not got, and would continue at `next`: a [`Removed`] for a client of
/// version 3 or later, a [`Lag`] of the `unread` messages for an older one (so its resume
/// point still moves to `next`).
pub fn encode_removed(
    version: u16,
    sub: u32,
    topic: &str,
    unread: u64,
    next: u64,
    out: &mut Vec<u8>,
) {
    if version >= MANAGE_VERSION {
        Frame::Removed(Removed {
            sub,
            topic,
            unread,
            next,
        })
        .encode(out);
    } else {
        Frame::Lag(Lag {
            sub,
            topic,
            missed: unread,
            next,
        })
        .encode(out);
    }
}

/// Appends a request delivered to a subscriber: `Asked` for a client of version 4 or
/// later, else the plain `Message` (or, `group`, `GroupMessage`) it also is.
fn encode_asked(version: u16, a: Asked<'_>, group: bool, out: &mut Vec<u8>) {
    if version >= REQUEST_VERSION {
        Frame::Asked(a).encode(out);
    } else if group {
        Frame::GroupMessage(GroupMessage {
            sub: a.sub,
            tag: a.tag,
            topic: a.topic,
            offset: a.offset,
            time_ms: a.time_ms,
            attempt: a.attempt,
            key: a.key,
            payload: a.payload,
        })
        .encode(out);
    } else {
        Frame::Message(Message {
            sub: a.sub,
            topic: a.topic,
            offset: a.offset,
            time_ms: a.time_ms,
            key: a.key,
            payload: a.payload,
        })
        .encode(out);
    }
}

/// Appends the answer to one of the connection's requests: `Response`, or an `Error`
/// with the request's `req`.
fn encode_answer(a: &Answer, out: &mut Vec<u8>) {
    match a {
        Answer::Reply { req, key, payload } => Frame::Response(Response {
            req: *req,
            key: key.as_deref(),
            payload,
        })
        .encode(out),
        Answer::Failed { req, code, message } => Frame::Error(ErrorFrame {
            code: *code,
            req: *req,
            message,
        })
        .encode(out),
    }
}

/// A `Ping` frame, for tests and tools.
pub fn ping(nonce: u64) -> Vec<u8> {
    Frame::Ping(Ping { nonce }).to_vec()
}

#[cfg(test)]
mod tests;
