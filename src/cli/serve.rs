//! `mote serve`: run the broker.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};

use futures_lite::StreamExt;
use mote::auth::{Auth, Rules};
use mote::engine::GroupConfig;
use mote::engine::schemas::SchemaPatterns;
use mote::engine::settings::TopicPatterns;
use mote::limits::Limits;
use mote_sdk::secure::Token;
use mote_sdk::wire::GroupSettings;

use super::args::{self, CliError, Opt, Outcome, Spec};

mod exposure;
mod sizes;

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
        Opt {
            long: "config",
            short: Some('c'),
            value: Some("FILE"),
            env: Some("MOTE_CONFIG"),
            default: None,
            help: "TOML file whose keys are these options' long names (flags and MOTE_* override it)",
        },
        Opt {
            long: "token-file",
            short: None,
            value: Some("FILE"),
            env: Some("MOTE_TOKEN_FILE"),
            default: None,
            help: "require the token written in FILE (named `default`, every right; read again on SIGHUP); more in the config file's [tokens.NAME]",
        },
        Opt {
            long: "token",
            short: None,
            value: Some("TOKEN"),
            env: Some("MOTE_TOKEN"),
            default: None,
            help: "require this token; on the command line every local user sees it in ps: prefer --token-file or MOTE_TOKEN",
        },
        Opt {
            long: "insecure",
            short: None,
            value: None,
            env: Some("MOTE_INSECURE"),
            default: None,
            help: "allow a listener (--tcp, --http) on a non-loopback address without any token",
        },
        Opt {
            long: "data",
            short: None,
            value: Some("DIR"),
            env: Some("MOTE_DATA"),
            default: None,
            help: "keep topics, groups and unacked deliveries on disk in DIR [default: memory only]",
        },
        opt(
            "sync",
            "always|never|DURATION",
            "MOTE_SYNC",
            "1s",
            "with --data: when the log is synced to disk (always: a confirm means on disk)",
        ),
        opt(
            "disk",
            "SIZE",
            "MOTE_DISK",
            "1G",
            "with --data: most bytes on disk, the oldest data going first",
        ),
        opt(
            "tcp",
            "ADDR",
            "MOTE_TCP",
            "127.0.0.1:7270",
            "address of the binary protocol listener",
        ),
        Opt {
            long: "http",
            short: None,
            value: Some("ADDR|off"),
            env: Some("MOTE_HTTP"),
            default: None,
            help: "address of the HTTP edge (curl, stats, metrics, status page), or off; plain HTTP: beyond loopback, put it behind a TLS proxy [default: 127.0.0.1:7271]",
        },
        opt(
            "http-max-connections",
            "N",
            "MOTE_HTTP_MAX_CONNECTIONS",
            "256",
            "most HTTP connections open at once (503 past it)",
        ),
        opt(
            "http-max-requests",
            "N",
            "MOTE_HTTP_MAX_REQUESTS",
            "64",
            "most HTTP requests being answered at once, streams and waits included (503 past it)",
        ),
        opt(
            "http-max-streams",
            "N",
            "MOTE_HTTP_MAX_STREAMS",
            "32",
            "most HTTP streams open at once (503 past it)",
        ),
        opt(
            "max-connections",
            "N",
            "MOTE_MAX_CONNECTIONS",
            "1024",
            "most connections at once",
        ),
        Opt {
            long: "max-pending",
            short: None,
            value: Some("N"),
            env: Some("MOTE_MAX_PENDING"),
            default: None,
            help: "most connections still in their handshake [default: a quarter of --max-connections]",
        },
        Opt {
            long: "max-pending-per-address",
            short: None,
            value: Some("N"),
            env: Some("MOTE_MAX_PENDING_PER_ADDRESS"),
            default: None,
            help: "most of those from one address [default: a quarter of --max-pending]",
        },
        opt(
            "max-partial",
            "SIZE",
            "MOTE_MAX_PARTIAL",
            "16M",
            "bytes of frames and HTTP requests still arriving, all connections together; if not given, at least two records at --max-payload",
        ),
        opt(
            "partial-timeout",
            "DURATION",
            "MOTE_PARTIAL_TIMEOUT",
            "30s",
            "a frame or HTTP request must arrive whole within this of its first byte",
        ),
        opt(
            "max-topics",
            "N",
            "MOTE_MAX_TOPICS",
            "10000",
            "most topics kept",
        ),
        opt(
            "max-groups",
            "N",
            "MOTE_MAX_GROUPS",
            "1000",
            "most consumer groups at once",
        ),
        opt(
            "group-expiry",
            "DURATION",
            "MOTE_GROUP_EXPIRY",
            "7d",
            "a durable consumer group without members is removed after this ([groups.NAME] expiry sets it per group)",
        ),
        opt(
            "max-transactions",
            "N",
            "MOTE_MAX_TRANSACTIONS",
            "1000",
            "most prepared (transactional) publishes held at once; more are refused with pending_limit",
        ),
        opt(
            "max-transaction-bytes",
            "SIZE",
            "MOTE_MAX_TRANSACTION_BYTES",
            "16M",
            "bytes all prepared transactions may hold together (outside --memory)",
        ),
        opt(
            "tx-check-after",
            "DURATION",
            "MOTE_TX_CHECK_AFTER",
            "5s",
            "an undecided transaction's producer is asked to commit or roll back after this, and again every this",
        ),
        opt(
            "tx-check-max",
            "N",
            "MOTE_TX_CHECK_MAX",
            "3",
            "checks of an undecided transaction before --tx-default applies (over HTTP: it waits --tx-check-after times this)",
        ),
        opt(
            "tx-default",
            "ACTION",
            "MOTE_TX_DEFAULT",
            "rollback",
            "what happens to a transaction nobody settles: rollback or commit",
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
            "largest message payload; if not given, at most an eighth of --ring-bytes",
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
            "most bytes each topic keeps; if not given, at most an eighth of --memory, and room for one --max-payload",
        ),
        opt(
            "memory",
            "SIZE",
            "MOTE_MEMORY",
            "64M",
            "most bytes all topics keep together (oldest go first); if not given, at least --ring-bytes",
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
    after: "Sizes take K, M or G (powers of 1024); durations ms, s, m or h. Sizes not given are\n\
            derived from those given (--memory 1M alone: --ring-bytes 128K, --max-payload 16K).\n\
            Every listener binds to loopback unless told otherwise; beyond it, one needs a token\n\
            or --insecure.\n\
            Logs go to stderr; set RUST_LOG=debug for more, RUST_LOG=warn for less.\n\
            Example, with a token only you can read:\n  (umask 077; mote token new > ~/.mote-token)\n  mote serve --tcp 0.0.0.0:7270 --token-file ~/.mote-token",
};

/// Everything `mote serve` was asked for.
pub(crate) struct ServeConfig {
    pub(crate) tcp: SocketAddr,
    /// `None`: `--http off`. `Some(None)`: the default, 127.0.0.1:7271.
    pub(crate) http: Option<Option<SocketAddr>>,
    pub(crate) http_max_connections: usize,
    pub(crate) http_max_requests: usize,
    pub(crate) http_max_streams: usize,
    pub(crate) limits: Limits,
    pub(crate) auth: Auth,
    /// A line for the log when some sizes were derived from others.
    pub(crate) sizes_note: Option<String>,
}

/// The token table from `--token` or `--token-file` and the config file's
/// `[tokens.NAME]` tables.
fn auth(p: &args::Parsed, tokens: Option<&toml::Value>) -> Result<Auth, CliError> {
    let mut auth = match tokens {
        Some(toml::Value::Table(t)) => Auth::from_toml(t).map_err(CliError)?,
        Some(_) => {
            return Err(CliError(
                "[tokens] in the config file must be tables: [tokens.NAME]".into(),
            ));
        }
        None => Auth::none(),
    };
    if let Some((secret, from)) = p.token()? {
        let token = Token::new(&secret).map_err(|e| CliError(format!("{from}: {e}")))?;
        auth.insert(mote::auth::DEFAULT_NAME, token, Rules::all())
            .map_err(|e| CliError(format!("{from}: {e}")))?;
    }
    Ok(auth)
}

/// The config file's `[groups.NAME]` tables.
fn groups(groups: Option<&toml::Value>) -> Result<Vec<GroupConfig>, CliError> {
    let Some(groups) = groups else {
        return Ok(Vec::new());
    };
    let Some(groups) = groups.as_table() else {
        return Err(CliError(
            "[groups] in the config file must be tables: [groups.NAME]".into(),
        ));
    };
    let mut out = Vec::new();
    for (name, v) in groups {
        let err = |m: String| CliError(format!("[groups.{name}] {m}"));
        let t = v.as_table().ok_or_else(|| err("must be a table".into()))?;
        let mut g = GroupConfig {
            name: name.clone(),
            settings: GroupSettings::default(),
            filter: None,
            durable: None,
            expiry_ms: None,
        };
        let count = |key: &str, v: &toml::Value| {
            v.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .filter(|&i| i > 0)
                .ok_or_else(|| err(format!("{key} must be a whole number from 1")))
        };
        for (key, v) in t {
            match key.as_str() {
                "ack-timeout" => {
                    let d = v
                        .as_str()
                        .ok_or_else(|| err("ack-timeout must be a duration such as \"30s\"".into()))
                        .and_then(|s| {
                            args::parse_duration(s).map_err(|e| err(format!("ack-timeout: {e}")))
                        })?;
                    g.settings.ack_timeout_ms = u32::try_from(d.as_millis())
                        .ok()
                        .filter(|&ms| ms > 0)
                        .ok_or_else(|| err("ack-timeout must be from 1ms to 49 days".into()))?;
                }
                "max-deliveries" => g.settings.max_deliveries = count(key, v)?,
                "prefetch" => g.settings.prefetch = count(key, v)?,
                "durable" => {
                    g.durable = Some(
                        v.as_bool()
                            .ok_or_else(|| err("durable must be true or false".into()))?,
                    );
                }
                "expiry" => {
                    let d = v
                        .as_str()
                        .ok_or_else(|| err("expiry must be a duration such as \"7d\"".into()))
                        .and_then(|s| {
                            args::parse_duration(s).map_err(|e| err(format!("expiry: {e}")))
                        })?;
                    g.expiry_ms = Some(
                        u64::try_from(d.as_millis())
                            .ok()
                            .filter(|&ms| ms > 0)
                            .ok_or_else(|| err("expiry must be at least 1ms".into()))?,
                    );
                }
                "filter" => {
                    let f = v
                        .as_str()
                        .ok_or_else(|| err("filter must be a string".into()))?;
                    g.filter = Some(f.to_string());
                }
                _ => {
                    return Err(err(format!(
                        "unknown key {key:?} (filter, ack-timeout, max-deliveries, prefetch, durable, expiry)"
                    )));
                }
            }
        }
        out.push(g);
    }
    Ok(out)
}

/// What the config file's tables say (its plain keys are options, in `args::Parsed`).
struct FileConfig {
    auth: Auth,
    groups: Vec<GroupConfig>,
    #[allow(
        dead_code,
        reason = "checked at start and on SIGHUP; the engine takes them with --data (issue 11)"
    )]
    topics: TopicPatterns,
    /// The `schema` of `[topics]` patterns.
    schemas: SchemaPatterns,
}

/// Loads the config file (if any): the token table, the groups and the topic patterns.
/// `old`: on a reload, the schemas in force (a schema that fails to load keeps its old one).
fn load(p: &mut args::Parsed, old: Option<&SchemaPatterns>) -> Result<FileConfig, CliError> {
    let path = p.get("config");
    let rest = match &path {
        Some(path) => p.load_config(path, &["tokens", "groups", "topics"])?,
        None => toml::Table::new(),
    };
    Ok(FileConfig {
        auth: auth(p, rest.get("tokens"))?,
        groups: groups(rest.get("groups"))?,
        topics: super::topics::topics(rest.get("topics"))?,
        schemas: super::schemas::schemas(rest.get("topics"), path.as_deref(), old)?,
    })
}

/// `--data`, `--sync` and `--disk`: the store's configuration, if there is a data
/// directory.
fn data_config(
    p: &args::Parsed,
    topics: TopicPatterns,
) -> Result<Option<mote::broker::DataConfig>, CliError> {
    let sync = p.parse_with("sync", |s| match s {
        "always" => Ok(mote::store::SyncPolicy::Always),
        "never" => Ok(mote::store::SyncPolicy::Never),
        d => {
            let d = args::parse_duration(d).map_err(|e| format!("{e}; or always, or never"))?;
            if d.is_zero() {
                return Err("use always for a sync after every write".into());
            }
            Ok(mote::store::SyncPolicy::Every(d.as_millis() as u64))
        }
    })?;
    let disk = p.parse_with("disk", args::parse_size)?;
    let Some(dir) = p.get("data") else {
        return Ok(None);
    };
    let mut log = mote::store::LogConfig::default();
    if let Some(s) = sync {
        log.sync = s;
    }
    if let Some(d) = disk {
        log.disk = d as u64;
    }
    Ok(Some(mote::broker::DataConfig {
        dir: dir.into(),
        log,
        topics,
    }))
}

/// Reads the config file again on `SIGHUP`. A file that is missing, does not parse or
/// is empty (an edit cut short by a power cut) changes nothing: the error says why. (That
/// the tokens never go from some to none is the broker's rule, whatever asks.)
fn reload(p: &mut args::Parsed, old: &SchemaPatterns) -> Result<FileConfig, CliError> {
    if let Some(path) = p.get("config") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError(format!("cannot read config file {path}: {e}")))?;
        if text.trim().is_empty() {
            return Err(CliError(format!(
                "config file {path} is empty (an edit cut short?)"
            )));
        }
    }
    load(p, Some(old))
}

pub(crate) fn config(p: &args::Parsed) -> Result<ServeConfig, CliError> {
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
    let (sizes, sizes_note) = sizes::sizes(p)?;
    let max_connections = count("max-connections")?.unwrap_or(Limits::default().max_connections);
    // Derived from the limits given, when not given themselves.
    let d = Limits::with_connections(max_connections);
    let max_pending = count("max-pending")?.unwrap_or(d.max_pending);
    let limits = Limits {
        max_connections,
        max_pending,
        max_pending_per_address: count("max-pending-per-address")?
            .unwrap_or((max_pending / 4).max(1)),
        max_partial_bytes: sizes.max_partial,
        partial_timeout_ms: ms("partial-timeout")?.unwrap_or(d.partial_timeout_ms),
        max_topics: count("max-topics")?.unwrap_or(d.max_topics),
        max_groups: count("max-groups")?.unwrap_or(d.max_groups),
        max_subscriptions: count("max-subscriptions")?.unwrap_or(d.max_subscriptions),
        max_payload: sizes.max_payload,
        ring_messages: count("ring-messages")?.unwrap_or(d.ring_messages),
        ring_bytes: sizes.ring_bytes,
        memory: sizes.memory,
        keepalive_ms: ms("keepalive")?.unwrap_or(d.keepalive_ms),
        handshake_ms: ms("handshake-timeout")?.unwrap_or(d.handshake_ms),
        group_expiry_ms: ms("group-expiry")?.unwrap_or(d.group_expiry_ms),
        max_transactions: count("max-transactions")?.unwrap_or(d.max_transactions),
        max_transaction_bytes: p
            .parse_with("max-transaction-bytes", args::parse_size)?
            .unwrap_or(d.max_transaction_bytes),
        tx_check_after_ms: ms("tx-check-after")?.unwrap_or(d.tx_check_after_ms),
        tx_check_max: count("tx-check-max")?
            .map_or(d.tx_check_max, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        tx_default_commit: p
            .parse_with("tx-default", |s| match s {
                "commit" => Ok(true),
                "rollback" => Ok(false),
                _ => Err("expected rollback or commit".to_string()),
            })?
            .unwrap_or(d.tx_default_commit),
    };
    limits.validate().map_err(|e| CliError(e.to_string()))?;
    let tcp = p
        .parse_with("tcp", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT such as 127.0.0.1:7270 or 0.0.0.0:7270".to_string())
        })?
        .ok_or_else(|| CliError("--tcp is required".into()))?;
    let http = match p.get("http").as_deref() {
        Some("off") => None,
        None => Some(None),
        Some(_) => Some(p.parse_with("http", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected IP:PORT such as 127.0.0.1:7271, or off".to_string())
        })?),
    };
    Ok(ServeConfig {
        tcp,
        http,
        http_max_connections: count("http-max-connections")?.unwrap_or(256).max(1),
        http_max_requests: count("http-max-requests")?.unwrap_or(64).max(1),
        http_max_streams: count("http-max-streams")?.unwrap_or(32),
        limits,
        auth: Auth::none(),
        sizes_note,
    })
}

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    let mut p = match args::parse(&SPEC, argv)? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let FileConfig {
        auth,
        groups,
        topics,
        schemas,
    } = load(&mut p, None)?;
    let mut cfg = config(&p)?;
    // Without --data the patterns still set what is not about disk (idle-expiry, max-age).
    let memory_topics = topics.clone();
    let data = data_config(&p, topics)?;
    cfg.auth = auth;
    super::init_logging("info", mote::logging::Output::Background);
    if let Some(note) = &cfg.sizes_note {
        log::info!("{note}");
    }
    // Every listener binds where it is told, by default to loopback.
    let http_addr = cfg
        .http
        .map(|a| a.unwrap_or_else(|| ([127, 0, 0, 1], 7271).into()));
    let mut listeners = vec![exposure::Listener {
        option: p.named("tcp"),
        addr: cfg.tcp,
        token_in_clear: false,
    }];
    if let Some(addr) = http_addr {
        listeners.push(exposure::Listener {
            option: p.named("http"),
            addr,
            token_in_clear: true,
        });
    }
    for l in &listeners {
        if let Some(warning) = exposure::check(l, cfg.auth.enabled(), p.on("insecure"))? {
            log::warn!("{warning}");
        }
    }
    raise_fd_limit();
    let listener = TcpListener::bind(cfg.tcp)
        .map_err(|e| CliError(format!("cannot listen on {} (--tcp): {e}", cfg.tcp)))?;
    let http = match http_addr {
        Some(a) => {
            let l = TcpListener::bind(a)
                .map_err(|e| CliError(format!("cannot listen on {a} (--http): {e}")))?;
            let mut h = mote::http::HttpConfig::new(l);
            h.max_connections = cfg.http_max_connections;
            h.max_requests = cfg.http_max_requests;
            h.max_streams = cfg.http_max_streams;
            Some(h)
        }
        None => None,
    };
    // Signal handlers first: a SIGTERM right after "ready" must shut down gracefully.
    use async_signal::Signal;
    let mut signals = async_signal::Signals::new([Signal::Int, Signal::Term, Signal::Hup])
        .map_err(|e| CliError(format!("cannot install signal handlers: {e}")))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    log::info!(
        "{} listening on {addr} (tcp){}",
        mote::session::BROKER_NAME,
        match cfg.auth.len() {
            0 => String::new(),
            n => format!(", {n} token(s): authenticated and encrypted"),
        }
    );
    let (reload_tx, reload_rx) = async_channel::unbounded();
    let mut schemas_now = schemas.clone();
    // Runs on the broker's thread: SIGHUP re-reads the tokens, SIGINT/SIGTERM stop.
    let shutdown = async move {
        while let Some(Ok(sig)) = signals.next().await {
            if sig != Signal::Hup {
                log::info!("received {sig:?}");
                return;
            }
            match reload(&mut p, &schemas_now) {
                // Groups are read at start only.
                Ok(FileConfig {
                    auth,
                    topics,
                    schemas,
                    ..
                }) => {
                    schemas_now = schemas.clone();
                    let reload = mote::broker::Reload {
                        auth,
                        topics,
                        schemas,
                    };
                    let _ = reload_tx.send(reload).await;
                }
                Err(e) => log::error!("SIGHUP: keeping the current configuration: {e}"),
            }
        }
    };
    let server = mote::broker::Config {
        limits: cfg.limits,
        auth: cfg.auth,
        reload: Some(reload_rx),
        http,
        groups,
        watchdog: mote::broker::systemd::watchdog_interval(),
        data,
        topics: memory_topics,
        schemas,
    };
    let stats = mote::broker::serve_with(listener, server, shutdown)
        .map_err(|e| CliError(format!("broker failed: {e}")))?;
    mote::broker::systemd::notify("STOPPING=1");
    log::info!(
        "stopped: {} message{} published, {} delivered, {} skipped by slow subscribers",
        stats.published,
        if stats.published == 1 { "" } else { "s" },
        stats.delivered,
        stats.lag_missed
    );
    Ok(())
}

/// Each connection is a file descriptor: lift the soft limit to the hard one so
/// `--max-connections` is not cut short by a default of 1024.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            log::debug!("cannot raise the open file limit: {e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
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
    fn config_file_sits_below_flags() {
        let dir = std::env::temp_dir().join(format!("mote-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mote.toml");
        std::fs::write(
            &file,
            "tcp = \"127.0.0.1:9999\"\nmax-payload = \"64K\"\nring-messages = 50\n",
        )
        .unwrap();
        let argv = ["--ring-messages", "70"].map(OsString::from);
        let Outcome::Run(mut p) = args::parse(&SPEC, argv).unwrap() else {
            panic!("help")
        };
        p.load_config(file.to_str().unwrap(), &[]).unwrap();
        let cfg = config(&p).unwrap();
        assert_eq!(cfg.tcp, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(cfg.limits.max_payload, 64 * 1024);
        assert_eq!(cfg.limits.ring_messages, 70, "the flag wins over the file");
        std::fs::write(&file, "ring-mesages = 5\n").unwrap();
        let Outcome::Run(mut p) = args::parse(&SPEC, Vec::<OsString>::new()).unwrap() else {
            panic!("help")
        };
        let e = p.load_config(file.to_str().unwrap(), &[]).unwrap_err();
        assert!(e.0.contains("unknown key \"ring-mesages\""), "{e}");
        std::fs::write(&file, "keepalive = \"soon\"\n").unwrap();
        let Outcome::Run(mut p) = args::parse(&SPEC, Vec::<OsString>::new()).unwrap() else {
            panic!("help")
        };
        p.load_config(file.to_str().unwrap(), &[]).unwrap();
        let e = config(&p).err().unwrap();
        assert!(e.0.contains("for keepalive in the config file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_config_file_has_topic_tables() {
        let dir = std::env::temp_dir().join(format!("mote-topics-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mote.toml");
        let argv = ["--config", file.to_str().unwrap()].map(OsString::from);
        let Outcome::Run(mut p) = args::parse(&SPEC, argv).unwrap() else {
            panic!("help")
        };
        std::fs::write(&file, "[topics.\"debug/#\"]\npersist = false\n").unwrap();
        let loaded = load(&mut p, None).unwrap();
        assert_eq!(loaded.topics.len(), 1);
        std::fs::write(&file, "[topics.\"debug/#\"]\npersist = 0\n").unwrap();
        let e = reload(&mut p, &SchemaPatterns::default()).err().unwrap();
        assert_eq!(e.0, "[topics.\"debug/#\"] persist: must be true or false");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_tables_take_durable_and_expiry() {
        let table: toml::Table = "[groups.w]\ndurable = false\nexpiry = \"1h\"\n[groups.v]\n"
            .parse()
            .unwrap();
        let mut g = groups(table.get("groups")).unwrap();
        mote::sort::sort_by(&mut g, |a, b| a.name.cmp(&b.name));
        assert_eq!(
            (g[0].durable, g[0].expiry_ms),
            (None, None),
            "v: the defaults"
        );
        assert_eq!(
            (g[1].durable, g[1].expiry_ms),
            (Some(false), Some(3_600_000))
        );
        for (bad, says) in [
            ("expiry = 5", "expiry must be a duration"),
            ("expiry = \"0s\"", "expiry must be at least 1ms"),
            ("expiry = \"soon\"", "[groups.w] expiry: "),
            ("durable = \"no\"", "durable must be true or false"),
        ] {
            let table: toml::Table = format!("[groups.w]\n{bad}\n").parse().unwrap();
            let e = groups(table.get("groups")).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
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
        let argv = ["--ring-bytes", "1K", "--max-payload", "1K"].map(OsString::from);
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
