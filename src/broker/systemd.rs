//! Talking to systemd when it started us: `Type=notify` states and the watchdog.

use std::time::Duration;

/// Tells systemd (`Type=notify`) about our state (`READY=1`, `WATCHDOG=1`, ...), when
/// started by it (`NOTIFY_SOCKET` set); does nothing otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = sent {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// How often to send `WATCHDOG=1`: half the `WatchdogSec=` systemd asks for
/// (`WATCHDOG_USEC`, meant for this process when `WATCHDOG_PID` is absent or ours), or
/// `None` when there is no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
