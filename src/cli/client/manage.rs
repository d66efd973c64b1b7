//! `mote topics`, `mote topic ...`, `mote groups`, `mote group ...`: management of topics
//! and groups over the binary protocol (`Manage` frames, protocol 3), with the connection
//! options of `mote pub` and `mote sub`. Human output is compact tables and `key value`
//! lines; `--json` prints the broker's JSON answer (the HTTP API's document).

use std::ffi::OsString;
use std::io::{self, Write};
use std::time::Duration;

use futures_lite::FutureExt;
use mote_sdk::{Client, Event, ManageOp, Start};
use serde_json::Value;

use super::{
    CliError, Exit, Failure, HOST, ID, Opt, Outcome, PORT, Parsed, Printer, Spec, TOKEN,
    TOKEN_FILE, URL, args, block_on, options, switch, value,
};

const TIMEOUT: Opt = Opt {
    long: "timeout",
    short: Some('W'),
    value: Some("DURATION"),
    env: None,
    default: Some("10s"),
    help: "give up (exit 1) after DURATION without a connection or an answer",
};

const JSON: Opt = switch("json", None, "print the broker's JSON answer");

/// The options every management command takes.
macro_rules! spec {
    ($name:expr, $about:expr, $after:expr $(, $opt:expr)* $(,)?) => {
        Spec {
            name: $name,
            about: $about,
            opts: &[HOST, PORT, TOKEN_FILE, TOKEN, URL, ID, TIMEOUT, JSON $(, $opt)*],
            after: $after,
        }
    };
}

mod groups;
mod render;
mod show;
mod topics;
mod tx;

pub(crate) use groups::{group, groups};
use render::{bytes, duration_ms, num, pairs, rate, setting, source, table, text, yes_no};
pub(crate) use topics::{topic, topics};
pub(crate) use tx::{prepare as tx_prepare, tx};

/// Parses `argv` for `spec`; `None` after `--help`.
fn parse(spec: &'static Spec, argv: Vec<OsString>) -> Result<Option<Parsed>, CliError> {
    match args::parse_positional(spec, argv, &[])? {
        Outcome::Run(p) => Ok(Some(p)),
        Outcome::Help(h) => {
            print!("{h}");
            Ok(None)
        }
    }
}

/// The positional arguments of `p`: exactly `names.len()` of them, then any `extra`.
fn subjects<'p>(p: &'p Parsed, names: &[&str], extra: bool) -> Result<&'p [String], CliError> {
    let got = p.positional.len();
    if got < names.len() {
        return Err(CliError(format!(
            "give the {} (see mote {} --help)",
            names[got],
            p.spec_name()
        )));
    }
    if got > names.len() && !extra {
        return Err(CliError(format!(
            "unexpected argument {:?} (see mote {} --help)",
            p.positional[names.len()],
            p.spec_name()
        )));
    }
    Ok(&p.positional)
}

/// A refusal by the broker is its message alone (`no topic "x"`); anything else as the
/// SDK says it.
fn failure(e: mote_sdk::Error) -> Failure {
    match e {
        mote_sdk::Error::Broker { message, .. } => Failure(message),
        other => Failure(other.to_string()),
    }
}

/// One management request and its JSON answer.
async fn ask(client: &Client, op: ManageOp<'_>) -> Result<Value, Failure> {
    let text = client.manage(op).await.map_err(failure)?;
    serde_json::from_str(&text)
        .map_err(|e| Failure(format!("the broker's answer is not JSON ({e}): {text}")))
}

/// Connects with `p`'s options and runs `f`, all within `--timeout`.
fn with_client<T, F>(p: &Parsed, f: impl FnOnce(Client) -> F) -> Result<T, Exit>
where
    F: std::future::Future<Output = Result<T, Failure>>,
{
    let timeout = timeout(p)?;
    let mut opts = options(p, "mote-admin")?;
    opts.connect_timeout = timeout;
    let addr = opts.addr.clone();
    let run = async {
        let client = Client::connect(opts).await.map_err(failure)?;
        f(client).await
    };
    block_on(run.or(async {
        async_io::Timer::after(timeout).await;
        Err(Failure(format!(
            "no answer from {addr} within {} (--timeout)",
            seconds(timeout)
        )))
    }))
    .map_err(Exit::from)
}

fn timeout(p: &Parsed) -> Result<Duration, CliError> {
    Ok(p.parse_with("timeout", args::parse_duration)?
        .unwrap_or(Duration::from_secs(10)))
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints `v` as one line of JSON.
fn print_json(v: &Value) -> Result<(), Exit> {
    // Buffered: the document can be megabytes, and stdout alone writes 1 KiB at a time.
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Fails after `idle`: the other side of a wait bounded by `--timeout`.
async fn give_up<T>(idle: Duration, what: &str) -> Result<T, Failure> {
    async_io::Timer::after(idle).await;
    Err(Failure(format!(
        "no {what} within {} (--timeout)",
        seconds(idle)
    )))
}
