//! Where a listener may bind: one rule for every listener `mote serve` opens (the binary
//! protocol, the HTTP edge, and the MQTT listener to come).
//!
//! Loopback is always fine. Beyond it, a listener needs a token, or `--insecure` to accept
//! that anyone who reaches it can read and write every topic. A listener that carries the
//! token in clear (plain HTTP's bearer token) may open beyond loopback with a token, with a
//! warning: the token crosses the network readable by anyone on the path.

use std::net::SocketAddr;

use super::super::args::CliError;

/// One listener about to bind.
pub(crate) struct Listener {
    /// The option that sets its address, named as the user gave it (`--http`, `MOTE_TCP`).
    pub(crate) option: String,
    pub(crate) addr: SocketAddr,
    /// Whether clients send the token over it in clear (HTTP's `Authorization: Bearer`);
    /// the binary protocol never sends it.
    pub(crate) token_in_clear: bool,
}

/// Whether `l` may bind: `Ok(Some(warning))` to log at start, or the refusal (exit 2).
pub(crate) fn check(
    l: &Listener,
    tokens: bool,
    insecure: bool,
) -> Result<Option<String>, CliError> {
    let Listener {
        option,
        addr,
        token_in_clear,
    } = l;
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    if tokens {
        return Ok(token_in_clear.then(|| {
            format!(
                "{option} {addr}: plain HTTP beyond loopback carries the token in clear; \
                 put it behind a TLS proxy (and bind it to 127.0.0.1), or keep it on loopback"
            )
        }));
    }
    // Not "listening on": that line comes once the listener is bound (scripts wait for it).
    if insecure {
        return Ok(Some(format!(
            "{addr} ({option}) is open without a token (--insecure): anyone who can reach it can read and write every topic"
        )));
    }
    Err(CliError(format!(
        "refusing to listen on {addr} without a token ({option}): anyone on the network could read and write every topic.\n\
         Set one with --token-file or --token (make one with `mote token new`), listen on 127.0.0.1, \
         or pass --insecure (MOTE_INSECURE=1, or insecure = true in the config file) to accept that."
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn at(addr: &str, token_in_clear: bool) -> Listener {
        Listener {
            option: "--x".into(),
            addr: addr.parse().unwrap(),
            token_in_clear,
        }
    }

    #[test]
    fn one_rule_for_every_listener() {
        for clear in [false, true] {
            for lo in ["127.0.0.1:1", "127.8.0.1:1", "[::1]:1"] {
                assert_eq!(check(&at(lo, clear), false, false).unwrap(), None);
                assert_eq!(check(&at(lo, clear), true, false).unwrap(), None);
            }
            for open in ["0.0.0.0:1", "192.168.1.2:1", "[::]:1"] {
                let e = check(&at(open, clear), false, false).unwrap_err().0;
                assert!(e.starts_with("refusing to listen on"), "{e}");
                assert!(e.contains("(--x)") && e.contains("--insecure"), "{e}");
                let w = check(&at(open, clear), false, true).unwrap().unwrap();
                assert!(w.contains("without a token (--insecure)"), "{w}");
            }
        }
        assert_eq!(check(&at("0.0.0.0:1", false), true, false).unwrap(), None);
        let w = check(&at("0.0.0.0:1", true), true, false).unwrap().unwrap();
        assert!(w.contains("in clear") && w.contains("TLS proxy"), "{w}");
    }
}
