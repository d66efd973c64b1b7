//! micro-mq's HTTP producer form, so its existing producers publish to mote unchanged.
//!
//! `POST /api/edge/product` (answers once the message is stored, with its offset) and
//! `POST /api/edge/product/async` (answers `202` once it is queued for the broker) take
//! micro-mq's JSON body `{"topic", "key", "value", "token"}`. The answer has micro-mq's
//! shape, `{"status", "offset", "response_time", "message"}` (`status` is `Accepted` when
//! the message was taken, `response_time` in seconds since the Unix epoch), plus mote's
//! `error` and `code` on failures, with an HTTP status that says what happened.
//!
//! | micro-mq | mote |
//! |---|---|
//! | `topic` | the topic, as is (it must be a valid mote topic: no wildcards, at most 256 bytes and 16 levels) |
//! | `key` | the message key (`""`: none) |
//! | `value` (base64) | the payload; with a `token`, base64 of `nonce(12) ‖ AES-256-GCM(ciphertext ‖ tag)` under the key SHA-256(`token`), no associated data, as micro-mq's `TokenCrypto` seals it |
//! | `token` | the SHA-256 hex of the password; on a broker with tokens it must be the SHA-256 hex of one of them (configure the producer with the mote token as its password) and the message has that token's rights; on a broker without tokens it only opens `value` |
//! | `Accepted` | `200` (`offset` set) or `202` (async, `offset` 0) |
//! | `UnmarshalFailed` | `400`: not JSON of that form, `value` not base64, a bad topic, or a `value` that does not open with `token` (code `bad_request`, `bad_topic` or `decrypt_failed`) |
//! | `TokenIncorrect` | `401` (code `unauthorized`), `429` after repeated failures from one address (code `too_many_failures`, with `Retry-After`) |
//! | `Refused` | `403` (the token may not publish there), `413` (over `--max-payload`), `503` (overloaded, at a limit) |

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Edge;
use super::answer::{Answer, HttpError};
use super::routes::{Outcome, Request, Waiting, check_backoff, note_auth, publish_as};
use crate::auth::Rules;

#[derive(serde::Deserialize)]
struct Form {
    topic: String,
    #[serde(default)]
    key: String,
    value: String,
    #[serde(default)]
    token: String,
}

/// The answer in micro-mq's shape, with mote's error fields when it failed.
fn answer(status: u16, micro: &str, offset: u64, message: &str, code: Option<&str>) -> Answer {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut v =
        json!({"status": micro, "offset": offset, "response_time": now, "message": message});
    if let Some(code) = code {
        v["error"] = Value::from(message);
        v["code"] = Value::from(code);
    }
    Answer::json(status, &v)
}

fn failed(e: &HttpError) -> Answer {
    let micro = match e.status {
        400 => "UnmarshalFailed",
        401 | 429 => "TokenIncorrect",
        _ => "Refused",
    };
    let mut a = answer(e.status, micro, 0, &e.message, Some(e.code));
    if e.status == 401 {
        a = a.with_header("WWW-Authenticate", "Bearer realm=\"mote\"");
    }
    if let Some(s) = e.retry_after {
        a = a.with_header("Retry-After", &s.to_string());
    }
    a
}

/// The rules of the mote token whose SHA-256 hex is `form_token`, on a broker with tokens.
/// Failures count towards the per-address backoff, as bad Bearer tokens do.
fn rights(
    edge: &Edge,
    peer: std::net::IpAddr,
    form_token: &str,
) -> Result<Option<std::sync::Arc<Rules>>, HttpError> {
    let auth = edge.shared.auth_now();
    if !auth.enabled() {
        return Ok(None);
    }
    check_backoff(edge, peer)?;
    let wanted = form_token.to_ascii_lowercase();
    let mut found = None;
    // Every token is compared (in constant time), so timing says nothing of which matched.
    for (_, entry) in auth.entries() {
        let hex = hex(&Sha256::digest(entry.token.reveal().as_bytes()));
        if bool::from(hex.as_bytes().ct_eq(wanted.as_bytes())) {
            found = Some(entry.rules.clone());
        }
    }
    note_auth(edge, peer, found.is_some());
    found
        .map(Some)
        .ok_or_else(|| HttpError::new(401, "unauthorized", "authentication failed"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Handles a micro-mq producer request; `wait` for the synchronous route.
pub(crate) fn product(edge: &Edge, req: &Request<'_>, wait: bool) -> Outcome {
    match product_inner(edge, req, wait) {
        Ok(o) => o,
        Err(e) => {
            edge.count_error(e.code);
            Outcome::Answer(failed(&e))
        }
    }
}

fn product_inner(edge: &Edge, req: &Request<'_>, wait: bool) -> Result<Outcome, HttpError> {
    let form: Form = serde_json::from_slice(&req.body).map_err(|e| {
        HttpError::new(
            400,
            "bad_request",
            format!("expected {{\"topic\", \"key\", \"value\", \"token\"}}: {e}"),
        )
    })?;
    let rules = rights(edge, req.peer.ip(), &form.token)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(form.value.as_bytes())
        .map_err(|e| HttpError::new(400, "bad_request", format!("value is not base64: {e}")))?;
    let payload = if form.token.is_empty() {
        data
    } else {
        open_value(&form.token, &data)?
    };
    mote_sdk::Topic::new(&form.topic).map_err(|e| {
        HttpError::new(
            400,
            "bad_topic",
            format!("bad topic {}: {e}", mote_sdk::topic::shown(&form.topic)),
        )
    })?;
    if let Some(r) = &rules {
        if !r.may_publish(&form.topic) {
            return Err(HttpError::new(
                403,
                "forbidden",
                format!(
                    "this token may not publish to {} (its publish rules: {})",
                    mote_sdk::topic::shown(&form.topic),
                    r.publish_rules()
                ),
            ));
        }
    }
    if payload.len() > edge.max_payload {
        return Err(HttpError::new(
            413,
            "payload_too_large",
            format!(
                "the payload is over the limit of {} bytes (--max-payload)",
                edge.max_payload
            ),
        ));
    }
    let key = (!form.key.is_empty()).then_some(form.key.as_bytes());
    let p = publish_as(edge, &form.topic, key, &payload)?;
    Ok(if wait {
        let a = answer(200, "Accepted", p.offset, "", None);
        // The synchronous form means stored: on disk with `--sync always`.
        match p.gate {
            Some(g) => Outcome::Wait(Waiting::synced(g, a)),
            None => Outcome::Answer(a),
        }
    } else {
        // micro-mq's asynchronous form answers without an offset.
        Outcome::Answer(answer(202, "Accepted", 0, "queued", None))
    })
}

/// Opens a `value` micro-mq sealed with its token (`proto.TokenCrypto`): `data` is
/// `nonce(12) ‖ ciphertext ‖ tag(16)`, AES-256-GCM under SHA-256 of the token string as
/// sent (the hex text, not its bytes), without associated data.
fn open_value(token: &str, data: &[u8]) -> Result<Vec<u8>, HttpError> {
    const NONCE: usize = 12;
    const TAG: usize = 16;
    let failed = |why: &str| {
        HttpError::new(
            400,
            "decrypt_failed",
            format!(
                "value does not open with this token ({why}); micro-mq producers with a token \
                 send base64(nonce ‖ AES-256-GCM ciphertext and tag) under SHA-256(token)"
            ),
        )
    };
    if data.len() < NONCE + TAG {
        return Err(failed(&format!(
            "{} bytes is shorter than a nonce and a tag",
            data.len()
        )));
    }
    let key = Sha256::digest(token.as_bytes());
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| failed("bad key length"))?;
    let (nonce, sealed) = data.split_at(NONCE);
    let nonce = aes_gcm::Nonce::try_from(nonce).map_err(|_| failed("bad nonce length"))?;
    cipher
        .decrypt(&nonce, sealed)
        .map_err(|_| failed("authentication failed: wrong token or altered value"))
}
