//! Routing and the handlers: authentication (one backoff table with the TCP side),
//! publish, read, acks, stats, metrics, static files. Handlers run on the executor and
//! call the engine directly; what takes time (a wait for delivery, a stream, a long
//! document) is returned as an [`Outcome`] the connection task carries out.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mote_sdk::{ErrorCode, Filter, Topic};
use serde_json::{Value, json};

use super::Edge;
use super::answer::{Answer, Body, HttpError};
use super::parse::{Head, Method, Query, decode};
use super::render::Format;
use super::stats;
use super::stream::{GroupJoin, Stream};
use crate::auth::Rules;
use crate::engine::{ConnId, WaitId};

/// Default and longest `timeout` of `wait=delivered`.
const WAIT_DEFAULT: Duration = Duration::from_secs(5);
const WAIT_MAX: Duration = Duration::from_secs(60);
/// Largest body of `POST /ack` and `/nack`.
const SETTLE_MAX: usize = 64 * 1024;

/// The status page and the API description, built into the binary deflated in zlib format
/// (build.rs): 187 KB of files take 30 KB. A client that accepts `deflate` (every browser,
/// `curl --compressed`) gets the stored bytes; for any other the file is inflated per
/// request (a few milliseconds on a Pi).
struct Static {
    index: &'static [u8],
    app: &'static [u8],
    style: &'static [u8],
    openapi: &'static [u8],
}

const STATIC: Static = Static {
    index: include_bytes!(concat!(env!("OUT_DIR"), "/index.html.deflate")),
    app: include_bytes!(concat!(env!("OUT_DIR"), "/app.js.deflate")),
    style: include_bytes!(concat!(env!("OUT_DIR"), "/style.css.deflate")),
    // src/http/openapi.json without its indentation.
    openapi: include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json.deflate")),
};

/// A request whose head and body have arrived.
pub(crate) struct Request<'a> {
    pub(crate) head: &'a Head,
    /// The target's path, still percent-encoded.
    pub(crate) path: &'a str,
    pub(crate) query: &'a Query,
    pub(crate) body: Vec<u8>,
    pub(crate) peer: SocketAddr,
}

/// What a route decided.
pub(crate) enum Outcome {
    Answer(Answer),
    /// A publish waiting for delivery.
    Wait(Waiting),
    /// A request waiting for its reply (`wait=reply`).
    Reply(super::reply::AwaitReply),
    /// A stream, registered with the engine.
    Stream(Stream),
    /// A document written in slices (`/api/stats?topics=all`, `/api/topics`).
    Document(Box<dyn Document>),
}

/// A long JSON document written as a chunked answer, a slice at a time, with the
/// executor free for others between slices.
pub(crate) trait Document {
    /// The response head (chunked; the connection closes after).
    fn head(&self) -> Vec<u8>;
    /// Appends the next slice to `out` as a chunk; `false` once the document is done.
    fn next(&mut self, edge: &Edge, out: &mut Vec<u8>) -> bool;
}

/// The largest body the route of `path` takes with `method`; a declared body over it
/// is refused before it is read.
pub(crate) fn body_limit(edge: &Edge, method: Method, path: &str) -> usize {
    match (method, path) {
        (Method::Post | Method::Put, p) if p.starts_with("/t/") => edge.max_payload,
        (Method::Post, "/ack" | "/nack") => SETTLE_MAX,
        (Method::Post | Method::Put, p)
            if p.starts_with("/api/topics/") || p.starts_with("/api/groups/") =>
        {
            super::admin::BODY_MAX
        }
        // Base64 and JSON make micro-mq's form about a third larger than the payload.
        (Method::Post, "/api/edge/product" | "/api/edge/product/async") => {
            edge.max_payload / 3 * 4 + 64 * 1024
        }
        // Bodies no route reads: small ones are read and ignored.
        _ => 4 * 1024,
    }
}

/// Handles one request.
pub(crate) fn handle(edge: &Rc<Edge>, req: Request<'_>) -> Outcome {
    match route(edge, req) {
        Ok(o) => o,
        Err(e) => {
            edge.count_error(e.code);
            Outcome::Answer(Answer::error(&e))
        }
    }
}

fn route(edge: &Rc<Edge>, mut req: Request<'_>) -> Result<Outcome, HttpError> {
    let method = req.head.method;
    let get = matches!(method, Method::Get | Method::Head);
    let path = req.path;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let answer = |a: Answer| Ok(Outcome::Answer(a));
    match segments.as_slice() {
        [""] | ["index.html"] if get => {
            answer(statik(req.head, STATIC.index, "text/html; charset=utf-8"))
        }
        ["app.js"] if get => answer(statik(
            req.head,
            STATIC.app,
            "text/javascript; charset=utf-8",
        )),
        ["style.css"] if get => answer(statik(req.head, STATIC.style, "text/css; charset=utf-8")),
        ["favicon.ico"] if get => answer(Answer::empty(204)),
        ["healthz"] if get => answer(Answer::json(
            200,
            &json!({"status": "ok", "version": edge.info.version, "uptime_s": edge.shared.uptime().as_secs_f64()}),
        )),
        ["api", "openapi.json"] if get => {
            answer(statik(req.head, STATIC.openapi, "application/json"))
        }
        ["api", "stats"] if get => {
            authenticate(edge, &req)?.check_admin()?;
            stats::stats(edge, req.query)
        }
        ["metrics"] if get => {
            authenticate(edge, &req)?.check_admin()?;
            let text = stats::metrics(edge);
            answer(Answer::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Body::Owned(text.into_bytes()),
            ))
        }
        ["api", "topics"] => super::admin::list_topics(edge, &req),
        ["api", "topics", rest @ ..] => super::admin::topic(edge, &req, rest),
        ["api", "groups"] => super::admin::list_groups(edge, &req),
        ["api", "groups", rest @ ..] => super::admin::group(edge, &req, rest),
        ["t", rest @ ..] if !rest.is_empty() && !rest.iter().all(|s| s.is_empty()) => {
            let (format, name_parts) = match rest.split_last() {
                Some((&"json", head)) if get && !head.is_empty() => (Some(Format::Json), head),
                Some((&"sse", head)) if get && !head.is_empty() => (Some(Format::Sse), head),
                Some((&"raw", head)) if get && !head.is_empty() => (Some(Format::Raw), head),
                _ => (None, rest),
            };
            let name = decode(&name_parts.join("/"), false)?;
            match (method, format) {
                (Method::Post | Method::Put, _) => publish(edge, &mut req, &name),
                (Method::Get | Method::Head, None) => {
                    super::read::read(edge, &req, &name).map(Outcome::Answer)
                }
                (Method::Get | Method::Head, Some(f)) => {
                    open_stream(edge, &req, &name, f).map(Outcome::Stream)
                }
                _ => Err(HttpError::method_not_allowed("GET, POST, PUT")),
            }
        }
        ["tx", id, action] => super::tx::route(edge, &req, id, action),
        ["ack"] | ["nack"] => {
            if method != Method::Post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            settle(edge, &req, segments == ["nack"]).map(Outcome::Answer)
        }
        ["api", "edge", "product"] | ["api", "edge", "product", "async"] => {
            if method != Method::Post {
                return Err(HttpError::method_not_allowed("POST"));
            }
            let wait = segments.len() == 3;
            Ok(super::micromq::product(edge, &req, wait))
        }
        [""]
        | ["index.html"]
        | ["app.js"]
        | ["style.css"]
        | ["favicon.ico"]
        | ["healthz"]
        | ["api", "openapi.json"]
        | ["api", "stats"]
        | ["metrics"] => Err(HttpError::method_not_allowed("GET")),
        _ => Err(HttpError::new(
            404,
            "not_found",
            format!("no such route: {}", mote_sdk::topic::shown(path)),
        )),
    }
}

#[cold]
fn statik(head: &Head, deflated: &'static [u8], content_type: &str) -> Answer {
    // Either answer depends on the request's Accept-Encoding, so caches must key on it.
    let answer = if accepts_deflate(head.header("accept-encoding")) {
        Answer::new(200, content_type, Body::Static(deflated))
            .with_header("Content-Encoding", "deflate")
    } else {
        match miniz_oxide::inflate::decompress_to_vec_zlib(deflated) {
            Ok(body) => Answer::new(200, content_type, Body::Owned(body)),
            // build.rs deflated it: not reachable, but never a panic.
            Err(_) => {
                return Answer::error(&HttpError::new(
                    500,
                    "internal",
                    "the built-in file does not inflate; rebuild mote",
                ));
            }
        }
    };
    answer.with_header("Vary", "Accept-Encoding")
}

/// Whether an `Accept-Encoding` value takes the `deflate` coding (RFC 9110 §12.5.3): named,
/// or covered by `*` when not named, with a weight above 0. A weight that does not parse
/// counts as 0: the identity answer is never wrong.
fn accepts_deflate(value: Option<&[u8]>) -> bool {
    let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let (mut named, mut any) = (None, None);
    for item in value.split(',') {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or_default().trim();
        let weight = params.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
        });
        let accepted = weight.is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
        if coding.eq_ignore_ascii_case("deflate") {
            named = Some(accepted);
        } else if coding == "*" {
            any = Some(accepted);
        }
    }
    named.or(any).unwrap_or(false)
}

/// The HTTP status and code for an engine refusal.
pub(crate) fn refusal(r: &crate::engine::Refusal) -> HttpError {
    let (status, code) = match r.code {
        ErrorCode::BAD_TOPIC => (400, "bad_topic"),
        ErrorCode::BAD_FILTER => (400, "bad_filter"),
        ErrorCode::PAYLOAD_TOO_LARGE => (413, "payload_too_large"),
        ErrorCode::FORBIDDEN => (403, "forbidden"),
        ErrorCode::TOPIC_LIMIT => (503, "topic_limit"),
        ErrorCode::SUBSCRIPTION_LIMIT => (503, "subscription_limit"),
        ErrorCode::BAD_GROUP => (400, "bad_group"),
        ErrorCode::UNKNOWN_DELIVERY => (409, "unknown_delivery"),
        ErrorCode::STORAGE_FULL => (507, "storage_full"),
        ErrorCode::STORAGE_FAILED => (507, "storage_failed"),
        ErrorCode::NOT_FOUND => (404, "not_found"),
        ErrorCode::NO_RESPONDERS => (503, "no_responders"),
        ErrorCode::PENDING_LIMIT => (503, "pending_limit"),
        ErrorCode::TIMEOUT => (504, "timeout"),
        ErrorCode::PROTOCOL => (400, "bad_request"),
        ErrorCode::INVALID_PAYLOAD => (422, "invalid_payload"),
        _ => (500, "internal"),
    };
    HttpError::new(status, code, r.message.clone())
}

/// Who is asking, once authenticated: their rules, or `None` on a broker without tokens.
pub(crate) struct Caller {
    pub(crate) rules: Option<Arc<Rules>>,
    pub(crate) name: Option<String>,
}

impl Caller {
    /// The caller as the management front sees it (the single `--token`, or no tokens:
    /// every right).
    pub(crate) fn manage(&self) -> crate::manage::Caller<'_> {
        crate::manage::Caller {
            token: self.name.as_deref(),
            rules: self.rules.as_deref(),
        }
    }

    pub(crate) fn check_publish(&self, topic: &str) -> Result<(), HttpError> {
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

    pub(crate) fn check_subscribe(&self, filter: &Filter) -> Result<(), HttpError> {
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

/// Checks the per-address backoff (the one the TCP handshake uses) before a token is
/// looked at: 429 with `Retry-After` while `ip` must wait.
pub(crate) fn check_backoff(edge: &Edge, ip: std::net::IpAddr) -> Result<(), HttpError> {
    let now = edge.shared.mono_ms();
    edge.shared
        .engine
        .borrow_mut()
        .admit_address(ip, now)
        .map_err(|b| {
            let mut e = HttpError::new(429, "too_many_failures", b.to_string());
            e.retry_after = Some(b.wait_ms.div_ceil(1000));
            e
        })
}

/// A token that failed (`ok` false) or passed from `ip`, for the shared backoff.
pub(crate) fn note_auth(edge: &Edge, ip: std::net::IpAddr, ok: bool) {
    let mut engine = edge.shared.engine.borrow_mut();
    if ok {
        engine.handle_http_auth_success(ip);
    } else {
        engine.handle_http_auth_failure(Some(ip), edge.shared.mono_ms());
    }
}

/// The caller of `req`: its token from `Authorization: Bearer [NAME:]SECRET` or
/// `?auth=`, checked against the token table.
pub(crate) fn authenticate(edge: &Edge, req: &Request<'_>) -> Result<Caller, HttpError> {
    let auth = edge.shared.auth_now();
    if !auth.enabled() {
        return Ok(Caller {
            rules: None,
            name: None,
        });
    }
    let ip = req.peer.ip();
    check_backoff(edge, ip)?;
    let header = req
        .head
        .header("Authorization")
        .and_then(|v| std::str::from_utf8(v).ok());
    let bearer = header
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110).
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        })
        .or_else(|| req.query.get("auth"));
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
            note_auth(edge, ip, true);
            Ok(Caller {
                rules: Some(e.rules.clone()),
                name: Some(name.to_string()),
            })
        }
        None => {
            note_auth(edge, ip, false);
            Err(HttpError::new(401, "unauthorized", "authentication failed"))
        }
    }
}

/// A publish waiting before it is answered: for the log's sync (`--sync always`: a
/// 200 means on disk), then for a subscriber to get its message (`wait=delivered`).
pub(crate) struct Waiting {
    /// The log position to be synced first.
    gate: Option<u64>,
    delivered: Option<Delivered>,
    /// The answer when there is no delivery to wait for.
    answer: Answer,
}

/// A `wait=delivered`.
pub(crate) struct Delivered {
    id: WaitId,
    topic: String,
    stored_offset: u64,
    deadline: Instant,
    wait: Duration,
    stored: Value,
}

impl Waiting {
    /// `answer` once the log is synced up to `gate`.
    pub(crate) fn synced(gate: u64, answer: Answer) -> Waiting {
        Waiting {
            gate: Some(gate),
            delivered: None,
            answer,
        }
    }

    /// Waits for the sync, then for the delivery or the deadline: 200 with
    /// `"delivered": true`, or 504 with the offset.
    pub(crate) async fn wait(self, edge: &Edge) -> Answer {
        use futures_lite::FutureExt;
        if let Some(gate) = self.gate {
            futures_lite::future::poll_fn(|cx| {
                if edge.shared.engine.borrow().log_synced() >= gate {
                    std::task::Poll::Ready(())
                } else {
                    edge.shared.wait_store(cx);
                    std::task::Poll::Pending
                }
            })
            .await;
        }
        let Some(d) = self.delivered else {
            return self.answer;
        };
        let id = d.id;
        let delivered = async {
            futures_lite::future::poll_fn(|cx| edge.poll_wait(id, cx)).await;
            true
        }
        .or(async {
            async_io::Timer::at(d.deadline).await;
            false
        })
        .await;
        let mut v = d.stored;
        if delivered {
            v["delivered"] = true.into();
            return Answer::json(200, &v);
        }
        edge.waits.borrow_mut().remove(&id);
        let unacked = {
            let mut engine = edge.shared.engine.borrow_mut();
            engine.cancel_wait(&d.topic, id);
            engine.unacked_in_group(&d.topic, d.stored_offset)
        };
        let why = if unacked {
            "delivered to a consumer group, but not acked by the group in time"
        } else {
            "not handed to any subscriber in time"
        };
        let mut e = HttpError::new(
            504,
            "not_delivered",
            format!("stored, {why} ({:.1} s)", d.wait.as_secs_f64()),
        );
        e.extra = Some(v);
        edge.count_error(e.code);
        Answer::error(&e)
    }
}

/// A message stored by an HTTP publish: its offset, time, and the log position its
/// answer must wait for (`--sync always`).
pub(crate) struct Stored {
    pub(crate) offset: u64,
    pub(crate) time_ms: u64,
    pub(crate) gate: Option<u64>,
}

/// Stores a message published over HTTP (by an authenticated caller); the edge has no
/// engine connection of its own, so it takes no `--max-connections` slot.
pub(crate) fn publish_as(
    edge: &Edge,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<Stored, HttpError> {
    let time_ms = edge.shared.wall_ms();
    let mut engine = edge.shared.engine.borrow_mut();
    // Group deadlines count from now, also when only HTTP clients are about.
    engine.advance_clock(edge.shared.mono_ms());
    let r = engine.handle_publish(ConnId::EDGE, time_ms, topic, key, payload);
    let gate = engine.take_confirm_gate();
    edge.shared.wake_others(&mut engine, None);
    r.map(|offset| Stored {
        offset,
        time_ms,
        gate,
    })
    .map_err(|e| refusal(&e))
}

fn publish(edge: &Rc<Edge>, req: &mut Request<'_>, topic: &str) -> Result<Outcome, HttpError> {
    let caller = authenticate(edge, req)?;
    Topic::new(topic).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(topic)),
        )
    })?;
    caller.check_publish(topic)?;
    match req.query.get("tx") {
        None => {}
        Some("prepare") => return super::tx::prepare(edge, req, topic),
        Some(other) => {
            return Err(HttpError::new(
                400,
                "bad_request",
                format!("tx={other:?}: the only tx is `prepare`"),
            ));
        }
    }
    let wait = match req.query.get("wait") {
        None => None,
        Some("delivered") => {
            let t = match req.query.get("timeout") {
                None => WAIT_DEFAULT,
                Some(t) => crate::units::parse_duration(t)
                    .map_err(|e| HttpError::new(400, "bad_request", format!("timeout: {e}")))?,
            };
            Some(t.min(WAIT_MAX))
        }
        Some("reply") => {
            let t = match req.query.get("timeout") {
                None => super::reply::REPLY_WAIT_DEFAULT,
                Some(t) => crate::units::parse_duration(t)
                    .map_err(|e| HttpError::new(400, "bad_request", format!("timeout: {e}")))?,
            };
            let t = t.clamp(Duration::from_millis(1), super::reply::REPLY_WAIT_MAX);
            let key = req.head.header("X-Key").filter(|k| !k.is_empty());
            let (peer, token) = (req.peer, caller.name.as_deref());
            let w = super::reply::ask(edge, peer, token, topic, key, &req.body, t)?;
            return Ok(Outcome::Reply(w));
        }
        Some(other) => {
            return Err(HttpError::new(
                400,
                "bad_request",
                format!("wait={other:?}: the waits are `delivered` and `reply`"),
            ));
        }
    };
    let key = req.head.header("X-Key").filter(|k| !k.is_empty());
    let p = publish_as(edge, topic, key, &req.body)?;
    let stored = json!({"topic": topic, "offset": p.offset, "time": p.time_ms});
    let Some(wait) = wait else {
        let answer = Answer::json(200, &stored);
        return Ok(match p.gate {
            Some(g) => Outcome::Wait(Waiting::synced(g, answer)),
            None => Outcome::Answer(answer),
        });
    };
    let id = edge
        .shared
        .engine
        .borrow_mut()
        .handle_wait_delivered(ConnId::EDGE, topic, p.offset)
        .map_err(|e| refusal(&e))?;
    edge.waits.borrow_mut().insert(id, (None, false));
    Ok(Outcome::Wait(Waiting {
        gate: p.gate,
        delivered: Some(Delivered {
            id,
            topic: topic.to_string(),
            stored_offset: p.offset,
            deadline: Instant::now() + wait,
            wait,
            stored,
        }),
        answer: Answer::empty(200),
    }))
}

fn open_stream(
    edge: &Rc<Edge>,
    req: &Request<'_>,
    filter: &str,
    format: Format,
) -> Result<Stream, HttpError> {
    let caller = authenticate(edge, req)?;
    let q = req.query;
    let f = Filter::new(filter).map_err(|e| {
        HttpError::new(
            400,
            "bad_filter",
            format!("bad filter {}: {e}", mote_sdk::topic::shown(filter)),
        )
    })?;
    caller.check_subscribe(&f)?;
    // `10m`, `ago:10m` and `time:...` are by the broker's clock (`Start::Ago`, `Time`).
    let from = super::read::parse_start(q.get("since").unwrap_or("latest"))
        .map_err(|e| HttpError::new(400, "bad_request", format!("since: {e}")))?;
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
    if group.is_some() && format == Format::Raw {
        return Err(HttpError::new(
            400,
            "bad_request",
            "a group stream carries ack ids: use /json or /sse, not /raw",
        ));
    }
    Stream::open(
        edge,
        super::stream::Opening {
            filter,
            from,
            peer: req.peer,
            token: caller.name,
            group,
            format,
            limit,
            lifetime,
        },
    )
}

/// `?group=NAME` and the settings of a new group: `ack-timeout`, `max-deliveries`,
/// `prefetch`, `durable` (`false`: ephemeral, gone with its last member; absent or `true`:
/// durable, the broker's default) and `expiry` (a durable group's, if shorter than
/// `--group-expiry`).
fn group_join(q: &Query) -> Result<Option<GroupJoin>, HttpError> {
    let Some(name) = q.get("group") else {
        for k in [
            "ack-timeout",
            "max-deliveries",
            "prefetch",
            "durable",
            "expiry",
        ] {
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
        None => None,
        Some("false") => Some(false),
        Some("true" | "") => Some(true),
        Some(_) => return Err(bad("durable: expected true or false".into())),
    };
    let expiry_ms = match q.get("expiry") {
        None => None,
        Some(t) => {
            let d = crate::units::parse_duration(t).map_err(|e| bad(format!("expiry: {e}")))?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 {
                return Err(bad("expiry: give a duration above 0".into()));
            }
            Some(ms)
        }
    };
    if durable == Some(false) && expiry_ms.is_some() {
        return Err(bad(
            "expiry is for a durable group; durable=false makes one that goes with its last member"
                .into(),
        ));
    }
    Ok(Some(GroupJoin {
        name: name.to_string(),
        settings: crate::engine::GroupAsk {
            settings: mote_sdk::wire::GroupSettings {
                ack_timeout_ms,
                max_deliveries: count("max-deliveries")?,
                prefetch: count("prefetch")?,
                durable: durable == Some(true),
            },
            durable,
            expiry_ms,
        },
    }))
}

/// `POST /ack` and `POST /nack`: the ids of group deliveries (from the stream's `ack`
/// fields), as JSON `{"ids": [...]}` or as text, separated by white space or commas.
fn settle(edge: &Edge, req: &Request<'_>, nack: bool) -> Result<Answer, HttpError> {
    let caller = authenticate(edge, req)?;
    let raw = &req.body;
    let mut delay_ms = None;
    let ids: Vec<String> = match serde_json::from_slice::<Value>(raw) {
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
        _ => std::str::from_utf8(raw)
            .map_err(|_| HttpError::new(400, "bad_request", "ids are text"))?
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    if ids.is_empty() {
        return Err(HttpError::new(400, "bad_request", "no ack id given"));
    }
    if let Some(d) = req.query.get("delay") {
        let d = crate::units::parse_duration(d)
            .map_err(|e| HttpError::new(400, "bad_request", format!("delay: {e}")))?;
        delay_ms = Some(d.as_millis() as u64);
    }
    let nack = nack.then(|| delay_ms.unwrap_or(0));
    let s = super::stream::settle(edge, &ids, nack, caller.name.as_deref());
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
    Ok(Answer::json(200, &json!({ verb: s.done })))
}
