//! `mote tx commit|rollback ID`, and `mote pub --tx`: transactional publishes from a
//! script (protocol 4). `pub --tx` prints the transaction's id (16 hex digits); nothing
//! is delivered until `mote tx commit ID`.

use std::ffi::OsString;
use std::time::Duration;

use futures_lite::FutureExt;
use mote_sdk::{Client, Options};

use super::{
    CliError, Exit, Failure, HOST, ID, JSON, PORT, Spec, TIMEOUT, TOKEN, TOKEN_FILE, URL, block_on,
    failure, parse, seconds, subjects, with_client,
};

static TX_COMMIT: Spec = spec!(
    "tx commit",
    "Commit a transaction prepared with mote pub --tx (or over HTTP): deliver its message now.",
    "Prints the topic and the offset the message got. Exit 1 with the broker's message if\n\
     the transaction is unknown or already settled.\n\
     Example:\n  id=$(mote pub --tx -t orders/new -m '{\"order\":17}') && mote tx commit \"$id\"",
);

static TX_ROLLBACK: Spec = spec!(
    "tx rollback",
    "Roll back a transaction prepared with mote pub --tx (or over HTTP): its message is dropped.",
    "Exit 1 with the broker's message if the transaction is unknown or already settled.\n\
     Example:\n  mote tx rollback 5f3a91c20b7de401",
);

const TX_USAGE: &str = "usage: mote tx commit ID | mote tx rollback ID (the id mote pub --tx printed; see mote tx commit --help)";

/// `mote tx ...`.
pub(crate) fn tx(mut argv: Vec<OsString>) -> Result<(), Exit> {
    let sub = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0).to_string_lossy().into_owned()
    };
    let (spec, commit) = match sub.as_str() {
        "commit" => (&TX_COMMIT, true),
        "rollback" => (&TX_ROLLBACK, false),
        "--help" | "help" => {
            println!("{TX_USAGE}");
            return Ok(());
        }
        "" => return Err(CliError(format!("a command is needed\n{TX_USAGE}")).into()),
        other => {
            return Err(CliError(format!("unknown command {other:?}\n{TX_USAGE}")).into());
        }
    };
    let Some(p) = parse(spec, argv)? else {
        return Ok(());
    };
    let raw = subjects(&p, &["transaction id"], false)?[0].clone();
    let id = mote::engine::parse_tx(&raw).ok_or_else(|| {
        CliError(format!(
            "bad transaction id {raw:?}: 16 hex digits, as mote pub --tx printed"
        ))
    })?;
    let done = with_client(&p, |client| async move {
        let tx = client.tx(id);
        if commit {
            tx.commit().await.map(Some).map_err(failure)
        } else {
            tx.rollback().await.map(|()| None).map_err(failure)
        }
    })?;
    if p.on("json") {
        let v = match done {
            Some(c) => serde_json::json!({"tx": raw, "offset": c.offset, "time": c.time}),
            None => serde_json::json!({"tx": raw, "rolled_back": true}),
        };
        println!("{v}");
    } else if let Some(c) = done {
        println!("committed at offset {}", c.offset);
    } else {
        println!("rolled back");
    }
    Ok(())
}

/// `mote pub --tx`: prepares one message and prints its transaction's id.
pub(crate) fn prepare(
    opts: Options,
    timeout: Option<Duration>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), Exit> {
    let addr = opts.addr.clone();
    let run = async {
        let client = Client::connect(opts).await.map_err(failure)?;
        let tx = client
            .publish_prepared_with_key(topic, key, payload)
            .await
            .map_err(failure)?;
        let _ = client.close().await;
        Ok::<_, Failure>(tx.hex())
    };
    let id = match timeout {
        Some(t) => block_on(run.or(async {
            async_io::Timer::after(t).await;
            Err(Failure(format!(
                "no answer from {addr} within {} (--timeout)",
                seconds(t)
            )))
        }))?,
        None => block_on(run)?,
    };
    println!("{id}");
    Ok(())
}
