//! `mote chan NAME`: a terminal on one side of a peer channel. Lines from stdin are sent
//! (one message each), messages from the other side are printed one per line, presence
//! changes go to stderr. EOF on stdin leaves the channel open (what the other side
//! sends waits for the next `mote chan`), or ends it for both with `--end`.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};

use futures_lite::future;
use mote_sdk::{Channel, ChannelEvent, Client, channel};

use super::{
    CliError, Exit, Failure, HOST, ID, Outcome, PORT, Spec, TOKEN, TOKEN_FILE, URL, args, block_on,
    options, switch, value,
};

pub(crate) static CHAN: Spec = Spec {
    name: "chan",
    about: "Talk on a peer channel: stdin lines are sent, the other side's messages printed.",
    opts: &[
        HOST,
        PORT,
        TOKEN_FILE,
        TOKEN,
        URL,
        ID,
        switch(
            "listen",
            None,
            "be the listening side (role `remote`; the default is the connecting side, `local`)",
        ),
        value(
            "role",
            None,
            "ROLE",
            "this side's role (with --remote-role; the other side swaps them)",
        ),
        value("remote-role", None, "ROLE", "the other side's role"),
        switch(
            "end",
            None,
            "at EOF on stdin, end the channel for both sides (default: leave it open)",
        ),
    ],
    after: "mote chan NAME [OPTIONS]: NAME is 1 to 32 characters of A-Z a-z 0-9 . _ -.\n\
            What one side sends while the other is away waits for it (across a broker\n\
            restart with --data). `remote connected`, `remote disconnected` and `channel\n\
            ended by the remote` are said on stderr. A token needs publish on\n\
            $chan/NAME/ROLE and subscribe on $chan/NAME/# (manage on $chan/NAME/# too for\n\
            --end to remove the channel's state; without it the state expires).\n\
            Examples:\n  mote chan door --listen      # terminal 1\n  mote chan door               # terminal 2\n  echo bye | mote chan door --end",
};

enum Step {
    Line(Option<String>),
    Chan(Option<ChannelEvent>),
}

pub(crate) fn chan(argv: Vec<OsString>) -> Result<(), Exit> {
    let p = match args::parse_positional(&CHAN, argv, &[])? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let name = match p.positional.as_slice() {
        [n] => n.clone(),
        [] => return Err(CliError("give the channel's NAME (see mote chan --help)".into()).into()),
        [_, extra, ..] => {
            return Err(CliError(format!("unexpected argument {extra:?}")).into());
        }
    };
    let roles = match (p.get("role"), p.get("remote-role")) {
        (Some(mine), Some(theirs)) => Some((mine, theirs)),
        (None, None) => None,
        _ => {
            return Err(CliError("give --role and --remote-role together".into()).into());
        }
    };
    {
        let (mine, theirs) = match &roles {
            Some((m, t)) => (m.as_str(), t.as_str()),
            None if p.on("listen") => (channel::LISTEN_ROLE, channel::CONNECT_ROLE),
            None => (channel::CONNECT_ROLE, channel::LISTEN_ROLE),
        };
        channel::check(&name, mine, theirs).map_err(|e| CliError(e.to_string()))?;
    }
    let opts = options(&p, "mote-chan")?;
    let end_at_eof = p.on("end");
    let (listen, addr) = (p.on("listen"), opts.addr.clone());
    // stdin blocks: a thread reads it, a line at a time, into a small queue.
    let (tx, lines) = async_channel::bounded::<String>(64);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send_blocking(line).is_err() {
                break;
            }
        }
    });
    block_on(async {
        let client = Client::connect(opts).await?;
        let mut open = if listen {
            Channel::listen(&client, &name)
        } else {
            Channel::connect(&client, &name)
        };
        if let Some((mine, theirs)) = roles {
            open = open.with_roles(mine, theirs);
        }
        let mut ch = open.await?;
        let mut out = io::BufWriter::new(io::stdout().lock());
        loop {
            let step = future::or(async { Step::Chan(ch.recv().await) }, async {
                Step::Line(lines.recv().await.ok())
            })
            .await;
            match step {
                Step::Line(Some(line)) => {
                    ch.send(line).await?;
                }
                Step::Line(None) => {
                    if end_at_eof {
                        ch.end().await?;
                    } else {
                        drop(ch);
                    }
                    client.close().await?;
                    return Ok(());
                }
                Step::Chan(Some(ChannelEvent::Message(m))) => {
                    out.write_all(&m.payload)?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                }
                Step::Chan(Some(ChannelEvent::RemoteConnected)) => eprintln!("remote connected"),
                Step::Chan(Some(ChannelEvent::RemoteDisconnected)) => {
                    eprintln!("remote disconnected");
                }
                Step::Chan(Some(ChannelEvent::Ended)) => {
                    eprintln!("channel ended by the remote");
                    ch.end().await?;
                    client.close().await?;
                    return Ok(());
                }
                Step::Chan(Some(ChannelEvent::Missed { missed })) => {
                    eprintln!("missed {missed} message(s) the broker no longer held");
                }
                Step::Chan(Some(ChannelEvent::Refused { message, .. })) => {
                    return Err(Failure(format!(
                        "the broker refused the channel: {message}"
                    )));
                }
                Step::Chan(Some(_)) => {}
                Step::Chan(None) => {
                    return Err(Failure(format!("lost the channel (broker {addr})")));
                }
            }
        }
    })
    .map_err(Exit::from)
}
