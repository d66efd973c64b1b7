//! Transactional publishes on a connection: `Prepare` → `Prepared`, `Settle` →
//! `Settled` (when asked for), and the broker's `TxCheck`s (see `engine::tx`).

use mote_sdk::ErrorCode;
use mote_sdk::wire::{Frame, Prepare, Prepared, Settle, Settled, TxCheck};

use super::Session;
use crate::engine::Engine;

impl Session {
    /// A `Prepare`: the token's publish rules, then the engine; `Prepared` waits for the
    /// sync of its record under `--sync always`.
    pub(super) fn handle_prepare(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        p: &Prepare<'_>,
        out: &mut Vec<u8>,
    ) {
        if let Err(msg) = self.check_publish(p.topic) {
            engine.count_error(ErrorCode::FORBIDDEN);
            self.emit_error(out, ErrorCode::FORBIDDEN, p.req, &msg);
            return;
        }
        match engine.handle_prepare(self.conn, time_ms, p.topic, p.key, p.payload) {
            Ok(tx) => {
                let reply = Frame::Prepared(Prepared { req: p.req, tx });
                match engine.take_confirm_gate() {
                    Some(g) => self.hold(g, &reply),
                    None => self.emit(out, &reply),
                }
            }
            Err(r) => self.emit_error(out, r.code, p.req, &r.message),
        }
    }

    /// A `Settle`: allowed to whoever may publish to the transaction's topic.
    pub(super) fn handle_settle(
        &mut self,
        engine: &mut Engine,
        time_ms: u64,
        s: &Settle,
        out: &mut Vec<u8>,
    ) {
        if let Some(topic) = engine.tx_topic(s.tx) {
            let topic = topic.to_string();
            if let Err(msg) = self.check_publish(&topic) {
                engine.count_error(ErrorCode::FORBIDDEN);
                if s.req != 0 {
                    self.emit_error(out, ErrorCode::FORBIDDEN, s.req, &msg);
                }
                return;
            }
        }
        match engine.handle_settle(self.conn, time_ms, s.tx, s.commit) {
            Ok(done) => {
                if s.req == 0 {
                    // Nothing asked: a commit's confirm gate is left unused.
                    engine.take_confirm_gate();
                    return;
                }
                let reply = Frame::Settled(Settled {
                    req: s.req,
                    committed: done.committed,
                    offset: done.offset,
                    time_ms: done.time_ms,
                });
                match engine.take_confirm_gate() {
                    Some(g) => self.hold(g, &reply),
                    None => self.emit(out, &reply),
                }
            }
            Err(r) if s.req != 0 => self.emit_error(out, r.code, s.req, &r.message),
            Err(_) => {}
        }
    }

    /// Appends the checks the engine queued for this connection.
    pub(super) fn poll_tx_checks(&mut self, engine: &mut Engine, out: &mut Vec<u8>) {
        let mut frames = Vec::new();
        engine.take_tx_checks(self.conn, |tx, topic, attempt| {
            Frame::TxCheck(TxCheck { tx, topic, attempt }).encode(&mut frames);
        });
        if !frames.is_empty() {
            out.extend_from_slice(&frames);
        }
    }
}
