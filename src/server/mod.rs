//! The binary protocol's front-end: the TCP accept loop and a task per connection
//! ([`conn`]), on the broker's executor.
//!
//! Admission, before a connection costs more than its socket: `--max-connections` in
//! all, and for connections that have not finished their handshake `--max-pending` in
//! all and `--max-pending-per-address` from one address, so anonymous peers cannot take
//! the room of those that authenticate; an address that failed its handshake repeatedly
//! waits (the per-address backoff, shared with the HTTP edge). A refused connection is
//! told why in an error frame and closed.

mod conn;

use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use async_io::{Async, Timer};
use mote_sdk::ErrorCode;
use smol::{LocalExecutor, Task};

use crate::broker::Shared;
use crate::session::encode_error;
pub(crate) use conn::READ_CHUNK;

/// Accepts in a row before the accept loop lets other tasks run.
const ACCEPT_BURST: u32 = 64;

/// Starts accepting on `listener`; the returned task stops it when dropped.
pub(crate) fn start(
    ex: &Rc<LocalExecutor<'static>>,
    shared: &Rc<Shared>,
    listener: TcpListener,
) -> io::Result<Task<()>> {
    let listener = Async::new(listener)?;
    let (ex2, shared) = (ex.clone(), shared.clone());
    Ok(ex.spawn(async move { accept(&ex2, &shared, listener).await }))
}

async fn accept(ex: &LocalExecutor<'static>, shared: &Rc<Shared>, listener: Async<TcpListener>) {
    let mut burst = 0;
    loop {
        burst += 1;
        if burst >= ACCEPT_BURST {
            // A flood of connections must not starve the connections already in.
            burst = 0;
            futures_lite::future::yield_now().await;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut engine = shared.engine.borrow_mut();
        if let Err(why) = engine.admit(Some(peer.ip())) {
            drop(engine);
            log::warn!("refused {peer}: {why}");
            refuse(ex, shared, stream, ErrorCode::CONNECTION_LIMIT, &why);
            continue;
        }
        if shared.auth_now().enabled() {
            if let Err(blocked) = engine.admit_address(peer.ip(), shared.mono_ms()) {
                drop(engine);
                log::warn!("refused {peer}: {blocked}");
                refuse(
                    ex,
                    shared,
                    stream,
                    ErrorCode::UNAUTHORIZED,
                    &blocked.to_string(),
                );
                continue;
            }
        }
        let _ = stream.get_ref().set_nodelay(true);
        let id = engine.handle_connect(shared.mono_ms(), Some(peer));
        drop(engine);
        log::debug!("conn {}: accepted {peer}", id.index());
        if let Some(task) = conn::ConnTask::new(shared.clone(), stream, id) {
            ex.spawn(task).detach();
        }
    }
}

/// Tells a refused connection why in an error frame, and closes it.
fn refuse(
    ex: &LocalExecutor<'_>,
    shared: &Rc<Shared>,
    stream: Async<std::net::TcpStream>,
    code: ErrorCode,
    message: &str,
) {
    let mut buf = Vec::new();
    encode_error(&mut buf, code, 0, message);
    shared.refuse(ex, stream, &buf);
}
