//! `mote req` and `mote reply`: request/reply from the shell (protocol 4).
//!
//! `mote req` sends one request and prints the reply's payload. `mote reply --exec CMD`
//! is a responder: each request runs `sh -c CMD` with the payload on its stdin (and
//! `MOTE_TOPIC`, `MOTE_OFFSET`, `MOTE_KEY` set), and the command's stdout is the reply.
//! A command that fails (exits non-zero, runs past `--cmd-timeout` and is killed, or
//! writes more than the broker's payload limit) answers nothing: it is said on stderr,
//! and in a group the request is nacked, so another member may answer it while its
//! requester still waits. Commands run one at a time; a group member takes one request
//! at a time (prefetch 1), so several members share the load.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_lite::FutureExt;
use mote_sdk::{Client, Error, Group};
use rustix::process::{Pid, Signal};

use super::super::args::{self, CliError, Spec};
use super::{Exit, Failure, HOST, ID, PORT, TOKEN, TOKEN_FILE, URL, block_on, options, parse};
use super::{leading_slash, switch, value};

/// Default wait for a reply (`-W`).
const REQ_DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Default bound on one command's run (`--cmd-timeout`).
const CMD_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) static REQ: Spec = Spec {
    name: "req",
    about: "Send a request and print the reply (request/reply, protocol 4).",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        value(
            "topic",
            Some('t'),
            "TOPIC",
            "topic to send the request to (required)",
        ),
        value("message", Some('m'), "MSG", "the request's payload"),
        switch(
            "stdin-file",
            Some('s'),
            "read the request's payload from stdin",
        ),
        value("key", Some('k'), "KEY", "attach KEY to the request"),
        value(
            "timeout",
            Some('W'),
            "SECONDS",
            "wait at most SECONDS for the reply (default 5, at most 300)",
        ),
    ],
    after: "Prints the reply's payload as it is (a newline after it unless it ends with one).\n\
            Exit 1 with `no responders on TOPIC` when nothing is subscribed to TOPIC (told at\n\
            once, nothing is stored), or `no reply within ...` when no reply came in time.\n\
            Examples:\n  mote req -t svc/upper -m hello\n  echo '{\"n\": 2}' | mote req -t svc/square -s -W 2",
};

pub(crate) static REPLY: Spec = Spec {
    name: "reply",
    about: "Answer requests with a command: stdin is the request, stdout the reply.",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        value(
            "topic",
            Some('t'),
            "FILTER",
            "answer the requests to FILTER, + and # wildcards (required)",
        ),
        value(
            "group",
            Some('g'),
            "NAME",
            "answer as a member of consumer group NAME: each request goes to one member",
        ),
        value(
            "exec",
            None,
            "CMD",
            "run sh -c CMD for each request: payload on stdin, MOTE_TOPIC, MOTE_OFFSET, MOTE_KEY set; its stdout is the reply (required)",
        ),
        value(
            "cmd-timeout",
            None,
            "DURATION",
            "kill a command still running after DURATION, with its process group (default 30s)",
        ),
        value("count", Some('C'), "N", "exit after answering N requests"),
    ],
    after: "A command that exits 0 answers with its stdout. One that fails (another exit code,\n\
            killed at --cmd-timeout, or more output than the broker's payload limit) answers\n\
            nothing: it is said on stderr, and with --group the request is nacked so another\n\
            member may answer it; the requester gets `no reply within ...` otherwise.\n\
            Commands run one at a time; with --group this member takes one request at a time.\n\
            Examples:\n  mote reply -t svc/upper --exec 'tr a-z A-Z'\n  mote reply -t svc/upper --group upper --exec 'tr a-z A-Z'",
};

/// `mote req`.
pub(crate) fn req(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&REQ, argv)? else {
        return Ok(());
    };
    let topic = p
        .get("topic")
        .ok_or_else(|| CliError("give a topic with -t TOPIC".into()))?;
    leading_slash("topic", &topic)?;
    mote_sdk::Topic::new(&topic).map_err(|e| CliError(format!("bad topic {topic:?}: {e}")))?;
    let payload = match (p.get("message"), p.on("stdin-file")) {
        (Some(m), false) => m.into_bytes(),
        (None, true) => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            b
        }
        (None, false) => {
            return Err(CliError("give the request with -m MSG or -s (stdin)".into()).into());
        }
        (Some(_), true) => return Err(CliError("give only one of -m and -s".into()).into()),
    };
    let wait = p
        .parse_with("timeout", args::parse_duration)?
        .unwrap_or(REQ_DEFAULT_WAIT);
    if wait.is_zero() {
        return Err(CliError("-W: give a time above 0".into()).into());
    }
    let key = p.get("key");
    let opts = options(&p, "mote-req")?;
    let r = block_on(async {
        let c = Client::connect(opts).await?;
        let r = c
            .request_with_key(&topic, key.as_deref().map(str::as_bytes), &payload, wait)
            .await;
        drop(c);
        r
    });
    match r {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&reply.payload)?;
            if !reply.payload.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        Err(Error::NoResponders { topic }) => {
            Err(Failure(format!("no responders on {topic}")).into())
        }
        Err(Error::Timeout) => {
            let max = Duration::from_millis(u64::from(mote_sdk::wire::MAX_REQUEST_TIMEOUT_MS));
            let secs = wait.min(max).as_secs_f64();
            Err(Failure(format!("no reply within {secs} s")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `mote reply`.
pub(crate) fn reply(argv: Vec<OsString>) -> Result<(), Exit> {
    let Some(p) = parse(&REPLY, argv)? else {
        return Ok(());
    };
    let filter = p
        .get("topic")
        .ok_or_else(|| CliError("give the requests' topic with -t FILTER".into()))?;
    leading_slash("filter", &filter)?;
    mote_sdk::Filter::new(&filter).map_err(|e| CliError(format!("bad filter {filter:?}: {e}")))?;
    let cmd = p
        .get("exec")
        .ok_or_else(|| CliError("give the command that answers with --exec CMD".into()))?;
    let limit = p
        .parse_with("cmd-timeout", args::parse_duration)?
        .unwrap_or(CMD_DEFAULT_TIMEOUT);
    let count: Option<u64> = p.parse_with("count", |s| {
        s.parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| "expected a whole number from 1".into())
    })?;
    let group = p.get("group");
    let opts = options(&p, "mote-reply")?;
    block_on(async {
        let c = Client::connect(opts).await?;
        let mut requests = match group {
            Some(g) => c.serve_group(&filter, Group::new(g).prefetch(1)).await?,
            None => c.serve(&filter).await?,
        };
        let mut answered = 0u64;
        while let Some(r) = requests.next().await {
            let max = c.max_payload().unwrap_or(usize::MAX);
            let what = format!("the command for {} offset {}", r.topic, r.offset);
            // Run here: the client's own thread keeps the connection meanwhile.
            let meta = (r.topic.to_string(), r.offset);
            let job = run(&cmd, &r.payload, r.key.as_deref(), &meta, limit, max);
            match job {
                Ok(out) => {
                    r.reply(out)?;
                    answered += 1;
                    if count.is_some_and(|n| answered >= n) {
                        break;
                    }
                }
                Err(why) => {
                    // A group request goes back: another member may answer.
                    eprintln!("mote reply: {what} {why}; no reply sent");
                    r.decline()?;
                }
            }
        }
        c.close().await?;
        Ok::<(), Error>(())
    })?;
    Ok(())
}

/// Runs `sh -c cmd` with `payload` on stdin; its stdout if it exits 0 within `limit`
/// and writes at most `max` bytes, else why not.
fn run(
    cmd: &str,
    payload: &[u8],
    key: Option<&[u8]>,
    (topic, offset): &(String, u64),
    limit: Duration,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("MOTE_TOPIC", topic)
        .env("MOTE_OFFSET", offset.to_string())
        .env_remove("MOTE_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group: a kill at the time limit reaches what `sh` started.
        .process_group(0);
    if let Some(k) = key {
        c.env("MOTE_KEY", OsStr::from_bytes(k));
    }
    let mut child = c
        .spawn()
        .map_err(|e| format!("could not start sh -c {cmd:?}: {e}"))?;
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let stdin = child.stdin.take();
    let payload = payload.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            // A command that does not read its stdin is no error.
            let _ = s.write_all(&payload);
        }
    });
    let mut stdout = child.stdout.take();
    // async-channel and a timer, as the rest of the client uses: no std mpsc code in
    // the binary for this one wait.
    let (tx, rx) = async_channel::bounded(1);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(max as u64 + 1).read_to_end(&mut out);
            // Drain the rest so the command does not block on a full pipe.
            let _ = std::io::copy(s, &mut std::io::sink());
        }
        let _ = tx.send_blocking(out);
    });
    let got = async_io::block_on(async { rx.recv().await.map_err(|_| ()) }.or(async {
        async_io::Timer::after(limit).await;
        Err(())
    }));
    let killed = got.is_err();
    if killed {
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
    let status = child.wait();
    let _ = writer.join();
    let out = match got {
        Ok(v) => v,
        Err(_) => {
            let _ = reader.join();
            return Err(format!(
                "ran past --cmd-timeout ({}) and was killed",
                super::humantime(limit)
            ));
        }
    };
    let _ = reader.join();
    let status = status.map_err(|e| format!("could not be waited for: {e}"))?;
    if !status.success() {
        return Err(match status.code() {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".into(),
        });
    }
    if out.len() > max {
        return Err(format!(
            "wrote more than the broker's payload limit ({max} bytes)"
        ));
    }
    Ok(out)
}
