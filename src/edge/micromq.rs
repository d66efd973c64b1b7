//! micro-mq's HTTP producer form, so its existing producers publish to mote unchanged.
//!
//! `POST /api/edge/product` (waits until the message is stored) and
//! `POST /api/edge/product/async` (answers once it is queued) take
//! `{"topic", "key", "value", "token"}`: `value` is the payload in base64 and `token`, if
//! set, is micro-mq's token, the SHA-256 hex of a password. The answer has micro-mq's
//! shape, `{"status", "offset", "response_time", "message"}` (`status` is `Accepted`
//! when the message was taken), plus mote's `error` and `code` on failures, with a
//! status code that says what happened.
//!
//! Mapping: the topic is used as is (it must be a valid mote topic); `key` becomes the
//! message key. On a broker with tokens, `token` must be the SHA-256 hex of one of them
//! (configure a micro-mq producer with the mote token as its password); the message then
//! has that token's rights.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tiny_http::Request;

use super::Context;
use super::http::{HttpError, body, publish_as};
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
fn answer(
    status: u16,
    micro: &str,
    offset: u64,
    message: &str,
    code: Option<&str>,
) -> super::http::Answer {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut v =
        json!({"status": micro, "offset": offset, "response_time": now, "message": message});
    if let Some(code) = code {
        v["error"] = Value::from(message);
        v["code"] = Value::from(code);
    }
    super::http::json_answer(status, &v)
}

fn failed(e: &HttpError) -> super::http::Answer {
    let micro = match e.status {
        400 => "UnmarshalFailed",
        401 => "TokenIncorrect",
        _ => "Refused",
    };
    answer(e.status, micro, 0, &e.message, Some(e.code))
}

/// The rules of the mote token whose SHA-256 hex is `form_token`, on a broker with tokens.
fn rights(ctx: &Context, form_token: &str) -> Result<Option<std::sync::Arc<Rules>>, HttpError> {
    let auth = ctx.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
    if !auth.enabled() {
        return Ok(None);
    }
    let wanted = form_token.to_ascii_lowercase();
    let mut found = None;
    // Every token is compared (in constant time), so timing says nothing of which matched.
    for (_, entry) in auth.entries() {
        let hex = hex(&Sha256::digest(entry.token.reveal().as_bytes()));
        if bool::from(hex.as_bytes().ct_eq(wanted.as_bytes())) {
            found = Some(entry.rules.clone());
        }
    }
    match found {
        Some(r) => Ok(Some(r)),
        None => {
            let _ = ctx.calls.try_send(super::bridge::Call::AuthFailed);
            Err(HttpError::new(401, "unauthorized", "authentication failed"))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Handles a micro-mq producer request; `wait` for the synchronous route.
pub(crate) fn product(
    req: &mut Request,
    ctx: &Context,
    wait: bool,
) -> Result<super::http::Answer, HttpError> {
    Ok(match product_inner(req, ctx, wait) {
        Ok(a) => a,
        Err(e) => failed(&e),
    })
}

fn product_inner(
    req: &mut Request,
    ctx: &Context,
    wait: bool,
) -> Result<super::http::Answer, HttpError> {
    // Base64 and JSON make the form about a third larger than the payload.
    let limit = ctx.max_payload / 3 * 4 + 64 * 1024;
    let Some(raw) = body(req, limit)? else {
        return Err(HttpError::new(
            413,
            "payload_too_large",
            "the form is over the payload limit (--max-payload)",
        ));
    };
    let form: Form = serde_json::from_slice(&raw).map_err(|e| {
        HttpError::new(
            400,
            "bad_request",
            format!("expected {{\"topic\", \"key\", \"value\", \"token\"}}: {e}"),
        )
    })?;
    let rules = rights(ctx, &form.token)?;
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
    if payload.len() > ctx.max_payload {
        return Err(HttpError::new(
            413,
            "payload_too_large",
            format!(
                "the payload is over the limit of {} bytes (--max-payload)",
                ctx.max_payload
            ),
        ));
    }
    let key = (!form.key.is_empty()).then(|| form.key.into_bytes());
    if !wait {
        let (reply, _answer) = std::sync::mpsc::sync_channel(1);
        let call = super::bridge::Call::Publish {
            topic: form.topic,
            key,
            payload,
            wait: None,
            reply,
        };
        return match ctx.calls.try_send(call) {
            Ok(()) => Ok(answer(202, "Accepted", 0, "queued", None)),
            Err(_) => Err(HttpError::new(
                503,
                "overloaded",
                "the broker is busy; retry shortly",
            )),
        };
    }
    let p = publish_as(ctx, &form.topic, key, payload, None)?;
    Ok(answer(200, "Accepted", p.offset, "", None))
}

/// Opens a `value` micro-mq encrypted with its token.
fn open_value(_token: &str, _data: &[u8]) -> Result<Vec<u8>, HttpError> {
    Err(HttpError::new(
        501,
        "not_implemented",
        "encrypted micro-mq values are not supported yet",
    ))
}
