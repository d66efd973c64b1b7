//! `POST /t/<topic>?wait=reply`: a request over HTTP. The waiting request is an inbox
//! owner like a TCP connection: an engine connection of its own (outside
//! `--max-connections`, within `--http-max-requests`), gone with the HTTP request, which
//! drops its pending entry. The answer is the reply's payload as the body (200), or JSON
//! errors: 503 `no_responders` at once, 504 `timeout`.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use super::Edge;
use super::answer::{Answer, Body, HttpError};
use super::routes::refusal;
use crate::engine::{self, ConnId};

/// Default and longest `timeout` of `wait=reply`.
pub(crate) const REPLY_WAIT_DEFAULT: Duration = Duration::from_secs(5);
pub(crate) const REPLY_WAIT_MAX: Duration = Duration::from_secs(60);

/// An HTTP request waiting for its reply; dropping it ends its engine connection (and
/// with it the pending request).
pub(crate) struct AwaitReply {
    edge: Rc<Edge>,
    conn: ConnId,
    wait: Duration,
}

impl Drop for AwaitReply {
    fn drop(&mut self) {
        let shared = &self.edge.shared;
        shared.forget_waker(self.conn);
        let mut engine = shared.engine.borrow_mut();
        engine.handle_disconnect(self.conn);
        shared.wake_others(&mut engine, None);
    }
}

/// Stores the request (checked by the caller: topic, token) and returns the wait for
/// its answer, or the refusal (`no_responders` among them).
pub(crate) fn ask(
    edge: &Rc<Edge>,
    peer: std::net::SocketAddr,
    token: Option<&str>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    wait: Duration,
) -> Result<AwaitReply, HttpError> {
    let shared = &edge.shared;
    let time_ms = shared.wall_ms();
    let mut engine = shared.engine.borrow_mut();
    engine.advance_clock(shared.mono_ms());
    let conn = engine.handle_connect_http(shared.mono_ms(), Some(peer), "http reply", token);
    let timeout_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
    let r = engine.handle_request(conn, time_ms, 1, topic, timeout_ms, key, payload);
    shared.wake_others(&mut engine, None);
    drop(engine);
    let waiting = AwaitReply {
        edge: edge.clone(),
        conn,
        wait,
    };
    match r {
        Ok(_) => Ok(waiting),
        Err(e) => Err(refusal(&e)),
    }
}

impl AwaitReply {
    /// Waits for the engine's answer (it times the request out itself; a backstop a
    /// second later covers a broker shutting down): the reply, or 504.
    pub(crate) async fn wait(self) -> Answer {
        use futures_lite::FutureExt;
        let answered = futures_lite::future::poll_fn(|cx| {
            let shared = &self.edge.shared;
            shared.set_waker(self.conn, cx.waker());
            let mut got = None;
            shared.engine.borrow_mut().poll_answers(self.conn, |a| {
                got = Some(a.clone());
                false
            });
            match got {
                Some(a) => Poll::Ready(Some(a)),
                None => Poll::Pending,
            }
        })
        .or(async {
            async_io::Timer::after(self.wait + Duration::from_secs(1)).await;
            None
        })
        .await;
        match answered {
            Some(engine::Answer::Reply { key, payload, .. }) => {
                let a = Answer::new(200, "application/octet-stream", Body::Owned(payload));
                match key.as_deref().and_then(header_value) {
                    Some(k) => a.with_header("X-Key", k),
                    None => a,
                }
            }
            Some(engine::Answer::Failed { message, .. }) => {
                let e = HttpError::new(504, "timeout", message);
                self.edge.count_error(e.code);
                Answer::error(&e)
            }
            None => {
                let e = HttpError::new(
                    504,
                    "timeout",
                    format!("no reply within {} s", self.wait.as_secs_f64()),
                );
                self.edge.count_error(e.code);
                Answer::error(&e)
            }
        }
    }
}

/// The key as a header value, when it is printable ASCII.
fn header_value(key: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(key).ok()?;
    s.bytes().all(|b| (0x20..0x7f).contains(&b)).then_some(s)
}
