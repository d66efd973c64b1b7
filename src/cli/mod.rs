//! The `mote` command line: one binary, several commands.

pub(crate) mod args;
pub(crate) mod backup;
pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod schemas;
pub(crate) mod serve;
pub(crate) mod topics;

use std::ffi::OsString;

const USAGE: &str = "\
mote: a tiny message broker for the edge

Usage: mote <COMMAND> [OPTIONS]

Commands:
  serve   run the broker
  pub     publish messages (like mosquitto_pub)
  sub     subscribe and print messages (like mosquitto_sub)
  req     send a request and print the reply (exit 1: no responders, no reply in time)
  reply   answer requests with a command (stdin: the request, stdout: the reply)
  ping    check that a broker answers (exit 0) or not (exit 1)
  chan    talk on a peer channel: stdin lines sent, the other side's printed
  topics  list topics: name, stored, offsets, bytes, rate, subscribers, settings
  topic   info, show, purge, delete or meta (metadata) of one topic
  groups  list consumer groups
  group   info, seek or delete of one consumer group
  tx      commit or roll back a transaction (mote pub --tx prepares one)
  token   `mote token new` prints a strong random token
  backup  copy a data directory while a broker runs on it
  bench   measure throughput, latency, CPU and memory

Run `mote <COMMAND> --help` for a command's options.
";

/// A strong random token: 32 random bytes, base64url.
pub(crate) fn new_token() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    mote_sdk::secure::random(&mut bytes)
        .map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

const TOKEN_USAGE: &str = "Usage: mote token new\n\nPrints a strong random token (256 bits, base64url) for `mote serve --token`\nor a [tokens.NAME] table of the config file.";

/// `mote token new`.
fn token(argv: Vec<OsString>) -> Result<(), args::CliError> {
    match argv.first().and_then(|a| a.to_str()) {
        Some("new") if argv.len() == 1 => {
            println!("{}", new_token().map_err(args::CliError)?);
            Ok(())
        }
        Some("--help") => {
            println!("{TOKEN_USAGE}");
            Ok(())
        }
        // No subcommand is a usage error like any other (exit 2), with the usage.
        None => Err(args::CliError(format!(
            "a subcommand is needed\n{TOKEN_USAGE}"
        ))),
        _ => Err(args::CliError("usage: mote token new".into())),
    }
}

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise; `output` says from
/// which thread (the broker's lines never wait for stderr).
pub(crate) fn init_logging(default: &str, output: mote::logging::Output) {
    mote::logging::init(default, output);
}

/// How long the last log lines may take to reach stderr at exit.
const LOG_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.is_empty() {
        eprint!("{USAGE}");
        return 2;
    }
    let cmd = argv.remove(0);
    let client = |r: Result<(), client::Exit>, name: &str| {
        // Counts of rate-limited lines come before the last word.
        mote::logging::flush(LOG_FLUSH_WAIT);
        match r {
            Ok(()) => 0,
            Err(client::Exit::Usage(e)) => {
                eprintln!("mote {name}: {e}");
                2
            }
            Err(client::Exit::Failed(client::Failure(m))) => {
                if !m.is_empty() {
                    eprintln!("mote {name}: {m}");
                }
                1
            }
        }
    };
    let result = match cmd.to_str().unwrap_or("") {
        "serve" => serve::main(argv),
        "bench" => bench::main(argv),
        "pub" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::publish(argv), "pub");
        }
        "sub" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::subscribe(argv), "sub");
        }
        "req" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::req(argv), "req");
        }
        "reply" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::reply(argv), "reply");
        }
        "ping" => return client(client::ping(argv), "ping"),
        "chan" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::chan(argv), "chan");
        }
        "topics" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::topics(argv), "topics");
        }
        "topic" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::topic(argv), "topic");
        }
        "groups" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::groups(argv), "groups");
        }
        "group" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::group(argv), "group");
        }
        "tx" => {
            init_logging("warn", mote::logging::Output::Direct);
            return client(client::tx(argv), "tx");
        }
        "token" => token(argv),
        "backup" => backup::main(argv),
        "--version" | "-V" | "version" => {
            println!("{}", mote::session::BROKER_NAME);
            Ok(())
        }
        "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(args::CliError(format!(
            "unknown command {other:?} (try mote --help)"
        ))),
    };
    // `mote serve`'s last lines ("stopped: ...") may still be queued: before the exit, and
    // before an error that comes after them.
    mote::logging::flush(LOG_FLUSH_WAIT);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mote: {e}");
            2
        }
    }
}
