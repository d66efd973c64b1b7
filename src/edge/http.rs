//! HTTP requests on the edge's threads: authentication, routing and the handlers. The
//! engine is reached only through [`Call`]s; every wait for an answer has a time limit.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use futures_lite::FutureExt;
use mote_sdk::{ErrorCode, Filter, Start, Topic};
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::Context;
use super::bridge::{Call, GroupJoin, Published, STREAM_QUEUE, StreamEvent};
use super::render::{self, Format};
use crate::auth::Rules;
use crate::engine::Since;

/// How long an HTTP thread waits for the broker's answer to a call.
const CALL_PATIENCE: Duration = Duration::from_secs(10);
/// Default and longest `timeout` of `wait=delivered`.
const WAIT_DEFAULT: Duration = Duration::from_secs(5);
const WAIT_MAX: Duration = Duration::from_secs(60);
/// Keepalives of a group member's stream, at most this far apart.
const GROUP_KEEPALIVE: Duration = Duration::from_secs(2);
/// A stream chunk takes waiting events until it is this large.
const CHUNK_TARGET: usize = 64 * 1024;
/// Default and largest `limit` of a read.
const READ_DEFAULT: usize = 100;
const READ_MAX: usize = 1000;

/// An HTTP error: status, machine code and message, sent as JSON.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra fields (the offset of a message that was stored but not delivered).
    extra: Option<Value>,
    pub(crate) retry_after: Option<u64>,
}

impl HttpError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }
}

/// The HTTP status and code for an engine refusal.
fn refusal(r: &crate::engine::Refusal) -> HttpError {
    let (status, code) = match r.code {
        ErrorCode::BAD_TOPIC => (400, "bad_topic"),
        ErrorCode::BAD_FILTER => (400, "bad_filter"),
        ErrorCode::PAYLOAD_TOO_LARGE => (413, "payload_too_large"),
        ErrorCode::FORBIDDEN => (403, "forbidden"),
        ErrorCode::TOPIC_LIMIT => (503, "topic_limit"),
        ErrorCode::SUBSCRIPTION_LIMIT => (503, "subscription_limit"),
        ErrorCode::BAD_GROUP => (400, "bad_group"),
        ErrorCode::UNKNOWN_DELIVERY => (409, "unknown_delivery"),
        _ => (500, "internal"),
    };
    HttpError::new(status, code, r.message.clone())
}

pub(crate) type Answer = Response<std::io::Cursor<Vec<u8>>>;

pub(crate) fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|_| unreachable!("static header names and values are valid"))
}

pub(crate) fn json_answer(status: u16, v: &Value) -> Answer {
    Response::from_data(v.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

pub(crate) fn error_answer(e: &HttpError) -> Answer {
    let mut v = json!({"error": e.message, "code": e.code});
    if let (Some(Value::Object(extra)), Value::Object(o)) = (&e.extra, &mut v) {
        o.extend(extra.clone());
    }
    let mut a = json_answer(e.status, &v);
    if let Some(allow) = v.get("allow").and_then(Value::as_str) {
        a = a.with_header(header("Allow", allow));
    }
    if e.status == 401 {
        a = a.with_header(header("WWW-Authenticate", "Bearer realm=\"mote\""));
    }
    if let Some(s) = e.retry_after {
        a = a.with_header(header("Retry-After", &s.to_string()));
    }
    a
}

/// Percent-decodes `s`; `+` is a space only in queries.
fn decode(s: &str, plus_is_space: bool) -> Result<String, HttpError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        HttpError::new(400, "bad_request", "malformed %-escape in the URL")
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| HttpError::new(400, "bad_request", "the URL is not UTF-8"))
}

/// A request's query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Query, HttpError> {
        let mut v = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            v.push((decode(k, true)?, decode(val, true)?));
        }
        Ok(Query(v))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Who is asking, once authenticated: their rules, or `None` on a broker without tokens.
struct Caller {
    rules: Option<Arc<Rules>>,
    name: Option<String>,
}

impl Caller {
    fn check_publish(&self, topic: &str) -> Result<(), HttpError> {
        match &self.rules {
            Some(r) if !r.may_publish(topic) => Err(HttpError::new(
                403,
                "forbidden",
                format!(
                    "token {:?} may not publish to {} (its publish rules: {})",
                    self.name.as_deref().unwrap_or(""),
                    mote_sdk::topic::shown(topic),
                    r.publish_rules()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_subscribe(&self, filter: &Filter) -> Result<(), HttpError> {
        match &self.rules {
            Some(r) if !r.may_subscribe(filter) => Err(HttpError::new(
                403,
                "forbidden",
                format!(
                    "token {:?} may not subscribe to {} (its subscribe rules: {})",
                    self.name.as_deref().unwrap_or(""),
                    mote_sdk::topic::shown(filter.as_str()),
                    r.subscribe_rules()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Stats name every topic and connection: only a token that may subscribe to `#`.
    fn check_admin(&self) -> Result<(), HttpError> {
        let all = Filter::new("#").unwrap_or_else(|_| unreachable!("# is a valid filter"));
        match &self.rules {
            Some(r) if !r.may_subscribe(&all) => Err(HttpError::new(
                403,
                "forbidden",
                format!(
                    "token {:?} may not read the broker's stats (that needs subscribe rights on #)",
                    self.name.as_deref().unwrap_or("")
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Context {
    /// Sends `make(reply)` to the executor and waits at most `patience` for the answer.
    fn call<T>(
        &self,
        patience: Duration,
        make: impl FnOnce(std::sync::mpsc::SyncSender<T>) -> Call,
    ) -> Result<T, HttpError> {
        let (tx, rx): (_, Receiver<T>) = sync_channel(1);
        match self.calls.try_send(make(tx)) {
            Ok(()) => {}
            Err(async_channel::TrySendError::Full(_)) => {
                return Err(HttpError::new(
                    503,
                    "overloaded",
                    "the broker is busy; retry shortly",
                ));
            }
            Err(async_channel::TrySendError::Closed(_)) => {
                return Err(HttpError::new(
                    503,
                    "shutting_down",
                    "the broker is shutting down",
                ));
            }
        }
        rx.recv_timeout(patience).map_err(|_| {
            HttpError::new(
                503,
                "overloaded",
                "the broker did not answer in time; retry shortly",
            )
        })
    }

    /// The caller of `req`: its token from `Authorization: Bearer [NAME:]SECRET` or
    /// `?auth=`, checked against the token table.
    fn authenticate(&self, req: &Request, q: &Query) -> Result<Caller, HttpError> {
        let auth = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !auth.enabled() {
            return Ok(Caller {
                rules: None,
                name: None,
            });
        }
        let ip = req.remote_addr().map(SocketAddr::ip);
        if let Some(ip) = ip {
            let now = self.epoch.elapsed().as_millis() as u64;
            if let Err(b) = self
                .backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(ip, now)
            {
                let mut e = HttpError::new(429, "too_many_failures", b.to_string());
                e.retry_after = Some(b.wait_ms.div_ceil(1000));
                return Err(e);
            }
        }
        let bearer = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .and_then(|h| {
                // The scheme is case-insensitive (RFC 9110).
                let v = h.value.as_str();
                v.get(..7)
                    .filter(|s| s.eq_ignore_ascii_case("bearer "))
                    .map(|_| v[7..].trim())
            })
            .or_else(|| q.get("auth"));
        let Some(cred) = bearer else {
            return Err(HttpError::new(
                401,
                "unauthorized",
                "this broker requires a token: send Authorization: Bearer TOKEN (or ?auth=TOKEN)",
            ));
        };
        let (name, secret) = cred
            .split_once(':')
            .unwrap_or((mote_sdk::DEFAULT_TOKEN_NAME, cred));
        match auth.get(name).filter(|e| e.token.matches(secret)) {
            Some(e) => {
                if let Some(ip) = ip {
                    self.backoff
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .handle_success(ip);
                }
                Ok(Caller {
                    rules: Some(e.rules.clone()),
                    name: Some(name.to_string()),
                })
            }
            None => {
                if let Some(ip) = ip {
                    let now = self.epoch.elapsed().as_millis() as u64;
                    self.backoff
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .handle_failure(ip, now);
                }
                let _ = self.calls.try_send(Call::AuthFailed);
                Err(HttpError::new(401, "unauthorized", "authentication failed"))
            }
        }
    }
}

/// What a route decided.
enum Plan {
    Answer(Answer),
    /// A stream, already registered with the broker: its events and how to write them.
    Stream(OpenStream),
}

/// How a request may be dropped. tiny_http 0.12 drains an unread request body when the
/// request is dropped: it blocks until the client sent all of it, and first allocates a
/// buffer of the size the client declared (tiny-http PR #290, unreleased), so a huge
/// `Content-Length` would abort the process.
pub(crate) enum Disposal {
    /// Nothing left to read (no body, or one tiny_http already read: up to 1 KiB).
    Now,
    /// Dropping it waits for the client to send its body: not on the acceptor thread.
    Later,
    /// Declares more than `drain_max`: never dropped, see [`abandon`].
    Never,
}

pub(crate) fn disposal(req: &Request, drain_max: usize) -> Disposal {
    let expects_continue = req.headers().iter().any(|h| h.field.equiv("Expect"));
    match req.body_length() {
        Some(n) if n > drain_max => Disposal::Never,
        Some(n) if n > 1024 || (n > 0 && expects_continue) => Disposal::Later,
        _ => Disposal::Now,
    }
}

/// The largest declared body a dropped request may leave unread: more than any route
/// accepts (micro-mq's base64 form is the largest), at least 16 MiB.
pub(crate) fn drain_max(max_payload: usize) -> usize {
    (max_payload / 3 * 4 + 128 * 1024).max(16 << 20)
}

pub(crate) fn too_large(drain_max: usize) -> HttpError {
    HttpError::new(
        413,
        "payload_too_large",
        format!("the declared body is over {drain_max} bytes, more than any route takes"),
    )
}

/// Most connections [`abandon`] gives up for good; past that the edge stops.
pub(crate) const MAX_ABANDONED: usize = 64;

/// Answers `req` with a 413, then leaks its connection rather than drop it unread (see
/// [`Disposal`]): a few file descriptors and a parked tiny_http thread, instead of the
/// whole broker. Only requests declaring bodies far over every limit come here. The only
/// way tiny_http gives up a request without dropping its body is `upgrade`, which
/// writes the head without a length: the JSON error follows. The leak is permanent, so
/// it is bounded: after [`MAX_ABANDONED`] of them the edge stops taking requests (the
/// TCP broker goes on) and says so in the log.
pub(crate) fn abandon(req: Request, ctx: &super::Context) {
    use std::sync::atomic::Ordering;
    let e = &too_large(ctx.drain_max);
    ctx.counts.error(e.code);
    let n = ctx.abandoned.fetch_add(1, Ordering::AcqRel) + 1;
    log::warn!(
        "http: {} declared a {} byte body; answered {} and abandoned its connection ({n} of {MAX_ABANDONED})",
        req.remote_addr()
            .map_or_else(String::new, ToString::to_string),
        req.body_length().unwrap_or(0),
        e.status
    );
    if n >= MAX_ABANDONED {
        ctx.down.store(true, Ordering::Release);
        log::error!(
            "http: {MAX_ABANDONED} requests declared bodies over {} bytes; the HTTP edge stops taking requests (the TCP broker goes on; restart to reopen it)",
            ctx.drain_max
        );
    }
    let body = json!({"error": e.message, "code": e.code}).to_string();
    let head = error_answer(e).with_data(std::io::empty(), Some(0));
    let mut stream = req.upgrade("close", head);
    let _ = stream
        .write_all(body.as_bytes())
        .and_then(|()| stream.flush());
    std::mem::forget(stream);
}

/// Handles one request on the calling thread.
pub(crate) fn handle(mut req: Request, ctx: &Context) {
    if let Disposal::Never = disposal(&req, ctx.drain_max) {
        return abandon(req, ctx);
    }
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    match Query::parse(query).and_then(|q| route(&mut req, ctx, path, &q)) {
        Ok(Plan::Answer(a)) => {
            let _ = req.respond(a);
        }
        Ok(Plan::Stream(s)) => run_stream(req, ctx, s),
        Err(e) => {
            ctx.counts.error(e.code);
            let _ = req.respond(error_answer(&e));
        }
    }
}

fn route(req: &mut Request, ctx: &Context, path: &str, q: &Query) -> Result<Plan, HttpError> {
    let method = req.method().clone();
    let get = matches!(method, Method::Get | Method::Head);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let only = |allowed: &str| -> Result<Plan, HttpError> {
        let mut e = HttpError::new(405, "method_not_allowed", format!("use {allowed} here"));
        e.extra = Some(json!({"allow": allowed}));
        Err(e)
    };
    match segments.as_slice() {
        [""] | ["index.html"] if get => Ok(Plan::Answer(statik(
            ctx.statics.index,
            "text/html; charset=utf-8",
        ))),
        ["app.js"] if get => Ok(Plan::Answer(statik(
            ctx.statics.app,
            "text/javascript; charset=utf-8",
        ))),
        ["style.css"] if get => Ok(Plan::Answer(statik(
            ctx.statics.style,
            "text/css; charset=utf-8",
        ))),
        ["favicon.ico"] if get => Ok(Plan::Answer(
            Response::from_data(Vec::new()).with_status_code(StatusCode(204)),
        )),
        ["healthz"] if get => Ok(Plan::Answer(json_answer(
            200,
            &json!({"status": "ok", "version": ctx.info.version, "uptime_s": ctx.epoch.elapsed().as_secs_f64()}),
        ))),
        ["api", "openapi.json"] if get => Ok(Plan::Answer(statik(
            ctx.statics.openapi,
            "application/json",
        ))),
        ["api", "stats"] if get => {
            ctx.authenticate(req, q)?.check_admin()?;
            let snap = ctx.call(CALL_PATIENCE, |reply| Call::Snapshot { reply })?;
            Ok(Plan::Answer(json_answer(
                200,
                &render::stats(
                    &snap,
                    &ctx.info,
                    render::rss_bytes(),
                    &ctx.counts.snapshot(),
                ),
            )))
        }
        ["metrics"] if get => {
            ctx.authenticate(req, q)?.check_admin()?;
            let snap = ctx.call(CALL_PATIENCE, |reply| Call::Snapshot { reply })?;
            let text = render::metrics(
                &snap,
                render::rss_bytes(),
                ctx.metrics_topics,
                &ctx.counts.snapshot(),
            );
            Ok(Plan::Answer(
                Response::from_data(text.into_bytes()).with_header(header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )),
            ))
        }
        ["t", rest @ ..] if !rest.is_empty() && !rest.iter().all(|s| s.is_empty()) => {
            let (format, name_parts) = match rest.split_last() {
                Some((&"json", head)) if get && !head.is_empty() => (Some(Format::Json), head),
                Some((&"sse", head)) if get && !head.is_empty() => (Some(Format::Sse), head),
                Some((&"raw", head)) if get && !head.is_empty() => (Some(Format::Raw), head),
                _ => (None, rest),
            };
            let name = decode(&name_parts.join("/"), false)?;
            match (method, format) {
                (Method::Post | Method::Put, _) => publish(req, ctx, q, &name).map(Plan::Answer),
                (Method::Get | Method::Head, None) => read(req, ctx, q, &name).map(Plan::Answer),
                (Method::Get | Method::Head, Some(f)) => {
                    open_stream(req, ctx, q, &name, f).map(Plan::Stream)
                }
                _ => only("GET, POST, PUT"),
            }
        }
        ["ack"] | ["nack"] => {
            if method != Method::Post {
                return only("POST");
            }
            settle(req, ctx, q, segments == ["nack"]).map(Plan::Answer)
        }
        ["api", "edge", "product"] | ["api", "edge", "product", "async"] => {
            if method != Method::Post {
                return only("POST");
            }
            let wait = segments.len() == 3;
            super::micromq::product(req, ctx, wait).map(Plan::Answer)
        }
        [""]
        | ["index.html"]
        | ["app.js"]
        | ["style.css"]
        | ["favicon.ico"]
        | ["healthz"]
        | ["api", "openapi.json"]
        | ["api", "stats"]
        | ["metrics"] => only("GET"),
        _ => Err(HttpError::new(
            404,
            "not_found",
            format!("no such route: {}", mote_sdk::topic::shown(path)),
        )),
    }
}

fn statik(body: &'static str, content_type: &str) -> Answer {
    Response::from_data(body.as_bytes().to_vec()).with_header(header("Content-Type", content_type))
}

/// Reads at most `limit` bytes of the request body: `None` if it is longer.
pub(crate) fn body(req: &mut Request, limit: usize) -> Result<Option<Vec<u8>>, HttpError> {
    if req.body_length().is_some_and(|n| n > limit) {
        return Ok(None);
    }
    let mut buf = Vec::new();
    req.as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| HttpError::new(400, "bad_request", format!("cannot read the body: {e}")))?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// Publishes `payload` to `topic` for an authenticated caller; shared with the
/// micro-mq compatible routes.
pub(crate) fn publish_as(
    ctx: &Context,
    topic: &str,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    wait: Option<Duration>,
) -> Result<Published, HttpError> {
    let patience = wait.map_or(CALL_PATIENCE, |w| w + CALL_PATIENCE);
    let r = ctx.call(patience, |reply| Call::Publish {
        topic: topic.to_string(),
        key,
        payload,
        wait,
        reply,
    })?;
    r.map_err(|e| refusal(&e))
}

fn publish(req: &mut Request, ctx: &Context, q: &Query, topic: &str) -> Result<Answer, HttpError> {
    let caller = ctx.authenticate(req, q)?;
    Topic::new(topic).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(topic)),
        )
    })?;
    caller.check_publish(topic)?;
    let wait = match q.get("wait") {
        None => None,
        Some("delivered") => {
            let t = match q.get("timeout") {
                None => WAIT_DEFAULT,
                Some(t) => crate::units::parse_duration(t)
                    .map_err(|e| HttpError::new(400, "bad_request", format!("timeout: {e}")))?,
            };
            Some(t.min(WAIT_MAX))
        }
        Some(other) => {
            return Err(HttpError::new(
                400,
                "bad_request",
                format!("wait={other:?}: the only wait is `delivered`"),
            ));
        }
    };
    let key = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Key"))
        .map(|h| h.value.as_str().as_bytes().to_vec())
        .filter(|k| !k.is_empty());
    let Some(payload) = body(req, ctx.max_payload)? else {
        return Err(HttpError::new(
            413,
            "payload_too_large",
            format!(
                "the payload is over the limit of {} bytes (--max-payload)",
                ctx.max_payload
            ),
        ));
    };
    let p = publish_as(ctx, topic, key, payload, wait)?;
    let mut v = json!({"topic": topic, "offset": p.offset, "time": p.time_ms});
    match p.delivered {
        Some(false) => {
            let mut e = HttpError::new(
                504,
                "not_delivered",
                format!(
                    "stored, but not handed to any subscriber within {:.1} s",
                    wait.unwrap_or_default().as_secs_f64()
                ),
            );
            e.extra = Some(v);
            Err(e)
        }
        Some(true) => {
            v["delivered"] = true.into();
            Ok(json_answer(200, &v))
        }
        None => Ok(json_answer(200, &v)),
    }
}

fn read(req: &Request, ctx: &Context, q: &Query, topic: &str) -> Result<Answer, HttpError> {
    let caller = ctx.authenticate(req, q)?;
    let t = Topic::new_system(topic).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(topic)),
        )
    })?;
    let exact =
        Filter::new(t.as_str()).map_err(|e| HttpError::new(400, "bad_topic", e.to_string()))?;
    caller.check_subscribe(&exact)?;
    let since = match q.get("since").unwrap_or("earliest") {
        "earliest" | "all" => Since::Earliest,
        "latest" => Since::Latest,
        n => Since::Offset(n.parse().map_err(|_| {
            HttpError::new(
                400,
                "bad_request",
                "since: expected earliest, latest or an offset",
            )
        })?),
    };
    let limit = match q.get("limit") {
        None => READ_DEFAULT,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| HttpError::new(400, "bad_request", "limit: expected a whole number"))?
            .min(READ_MAX),
    };
    let stored = ctx.call(CALL_PATIENCE, |reply| Call::Read {
        topic: topic.to_string(),
        since,
        limit,
        reply,
    })?;
    Ok(json_answer(
        200,
        &render::stored(topic, stored.first, stored.next, &stored.messages),
    ))
}

/// Gives back a stream slot when the stream ends, however it ends.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A stream the broker registered, ready to be written.
struct OpenStream {
    events: async_channel::Receiver<StreamEvent>,
    format: Format,
    limit: Option<u64>,
    lifetime: Option<Duration>,
    /// A consumer group member's stream.
    group: bool,
    /// Its engine connection, whose `bytes_out` counts what is written.
    conn: crate::engine::ConnId,
    /// Dropped with the stream: tells the broker to end its engine connection.
    _alive: async_channel::Sender<()>,
    _slot: Slot,
}

fn open_stream(
    req: &Request,
    ctx: &Context,
    q: &Query,
    filter: &str,
    format: Format,
) -> Result<OpenStream, HttpError> {
    use std::sync::atomic::Ordering;
    let caller = ctx.authenticate(req, q)?;
    let f = Filter::new(filter).map_err(|e| {
        HttpError::new(
            400,
            "bad_filter",
            format!("bad filter {}: {e}", mote_sdk::topic::shown(filter)),
        )
    })?;
    caller.check_subscribe(&f)?;
    let from = match q.get("since").unwrap_or("latest") {
        "latest" => Start::Latest,
        "earliest" | "all" => Start::Earliest,
        s => match s.strip_prefix("last:") {
            Some(n) => Start::Last(
                n.parse()
                    .map_err(|_| HttpError::new(400, "bad_request", "since: expected last:N"))?,
            ),
            None => Start::Offset(s.parse().map_err(|_| {
                HttpError::new(
                    400,
                    "bad_request",
                    "since: expected latest, earliest, an offset or last:N",
                )
            })?),
        },
    };
    let limit: Option<u64> = q
        .get("limit")
        .map(|n| {
            n.parse()
                .map_err(|_| HttpError::new(400, "bad_request", "limit: expected a whole number"))
        })
        .transpose()?;
    let lifetime = q
        .get("timeout")
        .map(|t| {
            crate::units::parse_duration(t)
                .map_err(|e| HttpError::new(400, "bad_request", format!("timeout: {e}")))
        })
        .transpose()?;
    let group = group_join(q)?;
    let is_group = group.is_some();
    if group.is_some() && format == Format::Raw {
        return Err(HttpError::new(
            400,
            "bad_request",
            "a group stream carries ack ids: use /json or /sse, not /raw",
        ));
    }
    if ctx.streams.fetch_add(1, Ordering::AcqRel) >= ctx.max_streams {
        ctx.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(HttpError::new(
            503,
            "too_many_streams",
            format!(
                "{} streams are open, the limit (--http-max-streams); retry later",
                ctx.max_streams
            ),
        ));
    }
    let slot = Slot(ctx.streams.clone());
    let (tx, rx) = async_channel::bounded(STREAM_QUEUE);
    let (alive, gone) = async_channel::bounded(1);
    let conn = ctx
        .call(CALL_PATIENCE, |reply| Call::Stream {
            filter: filter.to_string(),
            from,
            peer: req.remote_addr().copied(),
            token: caller.name.clone(),
            events: tx,
            gone,
            group,
            reply,
        })?
        .map_err(|e| refusal(&e))?;
    Ok(OpenStream {
        events: rx,
        format,
        limit,
        lifetime,
        group: is_group,
        conn,
        _alive: alive,
        _slot: slot,
    })
}

/// `?group=NAME` and the settings of a new group: `ack-timeout`, `max-deliveries`,
/// `prefetch`, `durable`.
fn group_join(q: &Query) -> Result<Option<GroupJoin>, HttpError> {
    let Some(name) = q.get("group") else {
        for k in ["ack-timeout", "max-deliveries", "prefetch", "durable"] {
            if q.get(k).is_some() {
                return Err(HttpError::new(
                    400,
                    "bad_request",
                    format!("{k} needs group=NAME"),
                ));
            }
        }
        return Ok(None);
    };
    let bad = |m: String| HttpError::new(400, "bad_request", m);
    let count = |k: &str| -> Result<u32, HttpError> {
        q.get(k).map_or(Ok(0), |v| {
            v.parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("{k}: expected a whole number from 1")))
        })
    };
    let ack_timeout_ms = match q.get("ack-timeout") {
        None => 0,
        Some(t) => {
            let d =
                crate::units::parse_duration(t).map_err(|e| bad(format!("ack-timeout: {e}")))?;
            u32::try_from(d.as_millis())
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| bad("ack-timeout: from 1ms to 49 days".into()))?
        }
    };
    let durable = match q.get("durable") {
        None | Some("false") => false,
        Some("true" | "") => true,
        Some(_) => return Err(bad("durable: expected true or false".into())),
    };
    Ok(Some(GroupJoin {
        name: name.to_string(),
        settings: mote_sdk::wire::GroupSettings {
            ack_timeout_ms,
            max_deliveries: count("max-deliveries")?,
            prefetch: count("prefetch")?,
            durable,
        },
    }))
}

/// `POST /ack` and `POST /nack`: the ids of group deliveries (from the stream's `ack`
/// fields), as JSON `{"ids": [...]}` or as text, separated by white space or commas.
fn settle(req: &mut Request, ctx: &Context, q: &Query, nack: bool) -> Result<Answer, HttpError> {
    let caller = ctx.authenticate(req, q)?;
    let Some(raw) = body(req, 64 * 1024)? else {
        return Err(HttpError::new(
            413,
            "payload_too_large",
            "at most 64 KiB of ids",
        ));
    };
    let mut delay_ms = None;
    let ids: Vec<String> = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(o)) => {
            if let Some(d) = o.get("delay_ms") {
                delay_ms = Some(d.as_u64().ok_or_else(|| {
                    HttpError::new(400, "bad_request", "delay_ms: expected a whole number")
                })?);
            }
            o.get("ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .or_else(|| {
                    o.get("id")
                        .and_then(Value::as_str)
                        .map(|s| vec![s.to_string()])
                })
                .ok_or_else(|| {
                    HttpError::new(
                        400,
                        "bad_request",
                        "expected {\"ids\": [\"<ack id>\", ...]}",
                    )
                })?
        }
        _ => std::str::from_utf8(&raw)
            .map_err(|_| HttpError::new(400, "bad_request", "ids are text"))?
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if ids.is_empty() {
        return Err(HttpError::new(400, "bad_request", "no ack id given"));
    }
    if let Some(d) = q.get("delay") {
        let d = crate::units::parse_duration(d)
            .map_err(|e| HttpError::new(400, "bad_request", format!("delay: {e}")))?;
        delay_ms = Some(d.as_millis() as u64);
    }
    let nack = nack.then(|| delay_ms.unwrap_or(0));
    let s = ctx.call(CALL_PATIENCE, |reply| Call::Settle {
        ids,
        nack,
        token: caller.name.clone(),
        reply,
    })?;
    let verb = if nack.is_some() { "nacked" } else { "acked" };
    if !s.forbidden.is_empty() {
        let mut e = HttpError::new(
            403,
            "forbidden",
            format!(
                "{} of the ids belong to a stream opened with another token",
                s.forbidden.len()
            ),
        );
        e.extra = Some(json!({ verb: s.done, "forbidden": s.forbidden, "unknown": s.unknown }));
        return Err(e);
    }
    if !s.unknown.is_empty() {
        let mut e = HttpError::new(
            409,
            "unknown_delivery",
            format!(
                "{} of the ids name no delivery in flight: settled already, past the ack timeout, or their stream ended (the message is delivered again)",
                s.unknown.len()
            ),
        );
        e.extra = Some(json!({ verb: s.done, "unknown": s.unknown }));
        return Err(e);
    }
    Ok(json_answer(200, &json!({ verb: s.done })))
}

/// Writes a stream: the response head, then events as chunks, flushed as they come, with
/// keepalives while idle, until the client leaves, `limit` messages or `timeout` passed,
/// or the broker stops.
fn run_stream(req: Request, ctx: &Context, s: OpenStream) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.format.content_type()
    );
    let head_only = *req.method() == Method::Head;
    let mut w = req.into_writer();
    if write_within(&mut w, head.as_bytes(), ctx.write_timeout).is_err() || head_only {
        return;
    }
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut buf = Vec::new();
    let mut unsent = 0usize;
    // A group member's stream writes keepalives often: a client that went away is only
    // noticed on a write, and what it held waits for that to go to the other members.
    let every = if s.group {
        ctx.stream_keepalive.min(GROUP_KEEPALIVE)
    } else {
        ctx.stream_keepalive
    };
    loop {
        let left = s.lifetime.map(|l| l.saturating_sub(started.elapsed()));
        let wait = left.map_or(every, |l| l.min(every));
        let got = async_io::block_on(async { s.events.recv().await.ok().map(Some) }.or(async {
            async_io::Timer::after(wait).await;
            Some(None)
        }));
        buf.clear();
        let mut end = false;
        match got {
            None => end = true,
            Some(None) => {
                if left.is_some_and(|l| l <= wait) {
                    end = true;
                } else {
                    s.format.keepalive(ctx.wall_ms(), &mut buf);
                }
            }
            Some(Some(ev)) => {
                let mut next = Some(ev);
                // Take whatever else is already waiting into the same chunk.
                while let Some(ev) = next.take() {
                    end |= matches!(ev, StreamEvent::End);
                    if matches!(ev, StreamEvent::Message { .. }) {
                        sent += 1;
                    }
                    s.format.event(&ev, &mut buf);
                    if end || s.limit.is_some_and(|l| sent >= l) {
                        end = true;
                        break;
                    }
                    // Bounded: the broker refills the channel as fast as it is drained.
                    if buf.len() >= CHUNK_TARGET {
                        break;
                    }
                    next = s.events.try_recv().ok();
                }
            }
        }
        if !buf.is_empty() {
            let chunk = [format!("{:x}\r\n", buf.len()).as_bytes(), &buf, b"\r\n"].concat();
            if write_within(&mut w, &chunk, ctx.write_timeout).is_err() {
                return;
            }
            // Counted by the broker; if its channel is full, with the next chunk.
            unsent += chunk.len();
            let sent = Call::Sent {
                conn: s.conn,
                bytes: unsent,
            };
            if ctx.calls.try_send(sent).is_ok() {
                unsent = 0;
            }
        }
        if end {
            let _ = write_within(&mut w, b"0\r\n\r\n", ctx.write_timeout);
            return;
        }
    }
}

/// Writes and flushes `data`, failing once `patience` has passed without all of it
/// written: a client that reads a trickle (the socket's own send time-out only fires
/// when nothing moves at all) cannot hold its stream forever.
fn write_within(w: &mut dyn Write, data: &[u8], patience: Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut rest = data;
    while !rest.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        match w.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}
