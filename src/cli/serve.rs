//! `mote serve`: run the broker.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};

use futures_lite::StreamExt;
use mote::limits::Limits;

use super::args::{self, CliError, Opt, Outcome, Spec};

const fn opt(
    long: &'static str,
    value: &'static str,
    env: &'static str,
    default: &'static str,
    help: &'static str,
) -> Opt {
    Opt {
        long,
        short: None,
        value: Some(value),
        env: Some(env),
        default: Some(default),
        help,
    }
}

pub(crate) static SPEC: Spec = Spec {
    name: "serve",
    about: "Run the mote broker.",
    opts: &[
        opt(
            "tcp",
            "ADDR",
            "MOTE_TCP",
            "127.0.0.1:7270",
            "address of the binary protocol listener",
        ),
        opt(
            "max-connections",
            "N",
            "MOTE_MAX_CONNECTIONS",
            "1024",
            "most connections at once",
        ),
        opt(
            "max-topics",
            "N",
            "MOTE_MAX_TOPICS",
            "10000",
            "most topics kept",
        ),
        opt(
            "max-subscriptions",
            "N",
            "MOTE_MAX_SUBSCRIPTIONS",
            "64",
            "most subscriptions per connection",
        ),
        opt(
            "max-payload",
            "SIZE",
            "MOTE_MAX_PAYLOAD",
            "1M",
            "largest message payload",
        ),
        opt(
            "ring-messages",
            "N",
            "MOTE_RING_MESSAGES",
            "10000",
            "most messages each topic keeps",
        ),
        opt(
            "ring-bytes",
            "SIZE",
            "MOTE_RING_BYTES",
            "8M",
            "most bytes each topic keeps",
        ),
        opt(
            "memory",
            "SIZE",
            "MOTE_MEMORY",
            "64M",
            "most bytes all topics keep together (oldest go first)",
        ),
        opt(
            "keepalive",
            "DURATION",
            "MOTE_KEEPALIVE",
            "30s",
            "keepalive clients must keep; 3x silence closes",
        ),
        opt(
            "handshake-timeout",
            "DURATION",
            "MOTE_HANDSHAKE_TIMEOUT",
            "5s",
            "time a new connection has to say hello",
        ),
    ],
    after: "Sizes take K, M or G (powers of 1024); durations ms, s, m or h.\n\
            Logs go to stderr; set RUST_LOG=debug for more, RUST_LOG=warn for less.",
};

/// Everything `mote serve` was asked for.
pub(crate) struct ServeConfig {
    pub(crate) tcp: SocketAddr,
    pub(crate) limits: Limits,
}

pub(crate) fn config(p: &args::Parsed) -> Result<ServeConfig, CliError> {
    let size = |l: &str| p.parse_with(l, args::parse_size);
    let count = |l: &str| p.parse_with(l, args::parse_count);
    let ms = |l: &str| {
        p.parse_with(l, |s| {
            let d = args::parse_duration(s)?;
            if d.as_millis() == 0 {
                return Err("must be at least 1ms".into());
            }
            Ok(d.as_millis() as u64)
        })
    };
    let d = Limits::default();
    let limits = Limits {
        max_connections: count("max-connections")?.unwrap_or(d.max_connections),
        max_topics: count("max-topics")?.unwrap_or(d.max_topics),
        max_subscriptions: count("max-subscriptions")?.unwrap_or(d.max_subscriptions),
        max_payload: size("max-payload")?.unwrap_or(d.max_payload),
        ring_messages: count("ring-messages")?.unwrap_or(d.ring_messages),
        ring_bytes: size("ring-bytes")?.unwrap_or(d.ring_bytes),
        memory: size("memory")?.unwrap_or(d.memory),
        keepalive_ms: ms("keepalive")?.unwrap_or(d.keepalive_ms),
        handshake_ms: ms("handshake-timeout")?.unwrap_or(d.handshake_ms),
    };
    limits.validate().map_err(|e| CliError(e.to_string()))?;
    let tcp = p
        .parse_with("tcp", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT such as 127.0.0.1:7270 or 0.0.0.0:7270".to_string())
        })?
        .ok_or_else(|| CliError("--tcp is required".into()))?;
    Ok(ServeConfig { tcp, limits })
}

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    let p = match args::parse(&SPEC, argv)? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let cfg = config(&p)?;
    super::init_logging("info");
    let listener = TcpListener::bind(cfg.tcp)
        .map_err(|e| CliError(format!("cannot listen on {} (--tcp): {e}", cfg.tcp)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    log::info!("{} listening on {addr} (tcp)", mote::session::BROKER_NAME);
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
            .map_err(|e| CliError(format!("cannot install signal handlers: {e}")))?;
    let shutdown = async move {
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}");
        }
    };
    let stats = mote::server::serve(listener, cfg.limits, shutdown)
        .map_err(|e| CliError(format!("broker failed: {e}")))?;
    log::info!(
        "stopped: {} messages published, {} delivered, {} skipped by slow subscribers",
        stats.published,
        stats.delivered,
        stats.lag_missed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_defaults_are_the_limits_defaults() {
        let Outcome::Run(p) = args::parse(&SPEC, Vec::<OsString>::new()).unwrap() else {
            panic!("help")
        };
        let cfg = config(&p).unwrap();
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.tcp, "127.0.0.1:7270".parse().unwrap());
    }

    #[test]
    fn bad_values_are_named() {
        let argv = ["--max-payload", "lots"].map(OsString::from);
        let Outcome::Run(p) = args::parse(&SPEC, argv).unwrap() else {
            panic!("help")
        };
        let e = config(&p).err().unwrap();
        assert!(
            e.0.starts_with("invalid value \"lots\" for --max-payload"),
            "{e}"
        );
        let argv = ["--ring-bytes", "1K"].map(OsString::from);
        let Outcome::Run(p) = args::parse(&SPEC, argv).unwrap() else {
            panic!("help")
        };
        assert!(
            config(&p)
                .err()
                .unwrap()
                .0
                .contains("must fit in --ring-bytes")
        );
    }
}
