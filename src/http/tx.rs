//! Transactional publishes over HTTP: `POST /t/<topic>?tx=prepare` (the publish route),
//! `POST /tx/<id>/commit`, `POST /tx/<id>/rollback`. Ids are 16 lowercase hex digits.
//! A transaction prepared here has no connection to be asked about it: it waits
//! `--tx-check-after` × `--tx-check-max`, then `--tx-default` applies.

use mote_sdk::ErrorCode;
use serde_json::json;

use super::Edge;
use super::answer::{Answer, HttpError};
use super::parse::Method;
use super::routes::{Outcome, Request, Waiting, authenticate, refusal};
use crate::engine::{ConnId, parse_tx, tx_hex};

/// A refusal of the engine, as HTTP: `pending_limit` is 503, the rest as for a publish.
fn tx_refusal(r: &crate::engine::Refusal) -> HttpError {
    if r.code == ErrorCode::PENDING_LIMIT {
        return HttpError::new(503, "pending_limit", r.message.clone());
    }
    refusal(r)
}

/// `POST /t/<topic>?tx=prepare`: the caller may publish to `topic` (checked already).
pub(crate) fn prepare(edge: &Edge, req: &Request<'_>, topic: &str) -> Result<Outcome, HttpError> {
    if req.query.get("wait").is_some() {
        return Err(HttpError::new(
            400,
            "bad_request",
            "tx=prepare takes no wait: nothing is delivered before the commit",
        ));
    }
    let key = req.head.header("X-Key").filter(|k| !k.is_empty());
    let time_ms = edge.shared.wall_ms();
    let (r, gate) = {
        let mut engine = edge.shared.engine.borrow_mut();
        engine.advance_clock(edge.shared.mono_ms());
        let r = engine.handle_prepare(ConnId::EDGE, time_ms, topic, key, &req.body);
        let gate = engine.take_confirm_gate();
        edge.shared.wake_others(&mut engine, None);
        (r, gate)
    };
    let tx = r.map_err(|e| tx_refusal(&e))?;
    let answer = Answer::json(200, &json!({"tx": tx_hex(tx), "topic": topic}));
    Ok(match gate {
        Some(g) => Outcome::Wait(Waiting::synced(g, answer)),
        None => Outcome::Answer(answer),
    })
}

/// `/tx/<id>/<action>`.
pub(crate) fn route(
    edge: &Edge,
    req: &Request<'_>,
    id: &str,
    action: &str,
) -> Result<Outcome, HttpError> {
    let commit = match action {
        "commit" => true,
        "rollback" => false,
        _ => {
            return Err(HttpError::new(
                404,
                "not_found",
                "no such route: a transaction takes /commit or /rollback",
            ));
        }
    };
    if req.head.method != Method::Post {
        return Err(HttpError::method_not_allowed("POST"));
    }
    let caller = authenticate(edge, req)?;
    let tx = parse_tx(id).ok_or_else(|| {
        HttpError::new(
            400,
            "bad_request",
            format!(
                "bad transaction id {}: 16 hex digits, as the prepare answered",
                mote_sdk::topic::shown(id)
            ),
        )
    })?;
    let not_found = || {
        HttpError::new(
            404,
            "not_found",
            format!(
                "no pending transaction {}: unknown, or already committed or rolled back",
                tx_hex(tx)
            ),
        )
    };
    let topic = {
        let engine = edge.shared.engine.borrow();
        engine.tx_topic(tx).map(str::to_string)
    };
    let Some(topic) = topic else {
        edge.shared
            .engine
            .borrow_mut()
            .count_error(ErrorCode::NOT_FOUND);
        return Err(not_found());
    };
    caller.check_publish(&topic)?;
    let time_ms = edge.shared.wall_ms();
    let (r, gate) = {
        let mut engine = edge.shared.engine.borrow_mut();
        engine.advance_clock(edge.shared.mono_ms());
        let r = engine.handle_settle(ConnId::EDGE, time_ms, tx, commit);
        let gate = engine.take_confirm_gate();
        edge.shared.wake_others(&mut engine, None);
        (r, gate)
    };
    let done = r.map_err(|e| tx_refusal(&e))?;
    let body = if done.committed {
        json!({"tx": tx_hex(tx), "topic": topic, "offset": done.offset, "time": done.time_ms})
    } else {
        json!({"tx": tx_hex(tx), "topic": topic, "rolled_back": true})
    };
    let answer = Answer::json(200, &body);
    Ok(match gate {
        Some(g) => Outcome::Wait(Waiting::synced(g, answer)),
        None => Outcome::Answer(answer),
    })
}
