//! mote-bench: mote measured side by side with NATS, Redis and mosquitto.
//!
//! The measurements are `mote bench`'s own ([`mote::bench`]); this tool adds the other
//! brokers: a client of each one's protocol (`nats`, `redis`, `mqtt`, each also saying how
//! to start its broker) and the peers' side of a run (`peer`). Run from the source tree:
//!
//! ```text
//! cargo run -p mote-bench --release -- --compare nats,redis,mosquitto --token new --repeat 3
//! ```

mod locate;
mod mqtt;
mod nats;
mod options;
mod peer;
mod redis;
mod text;

use std::path::PathBuf;

use mote::bench::{self, Plan, Target, start_five};

use peer::Peer;

fn main() {
    let code = match run(std::env::args_os().skip(1)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mote-bench: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<(), String> {
    let Some(opts) = options::parse(args)? else {
        print!("{}", options::help());
        return Ok(());
    };
    let peers = opts.peers()?;
    let external = opts.value("host").is_some() || opts.value("port").is_some();
    let mote = if external {
        None
    } else {
        Some(locate::mote_binary(opts.value("mote").map(PathBuf::from))?)
    };
    let plan = Plan::from_flags(
        |l| opts.value(l),
        |l| opts.on(l),
        || locate::new_token(mote.as_deref()),
    )?;
    let mut skipped = Vec::new();
    let mut targets = bench::run(&plan, mote.as_deref(), || {
        start_peers(&peers, &plan, &mut skipped)
    })?;
    for t in &mut targets {
        let notes = t.broker().map(peer::log_notes).unwrap_or_default();
        t.add_notes(notes);
    }
    bench::report(&targets, &skipped, &plan);
    Ok(())
}

/// Starts each of `peers`; the ones that cannot be started are said and added to
/// `skipped`, with why.
fn start_peers(
    peers: &[&'static Peer],
    plan: &Plan,
    skipped: &mut Vec<(&'static str, String)>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for peer in peers {
        let started = peer.binary().and_then(|bin| {
            let version = peer.version(&bin);
            let (b, startup) = start_five(|| peer.start(&bin))?;
            Ok((b, startup, version))
        });
        match started {
            Ok((b, startup, version)) => {
                targets.push(Target::peer(peer.driver, b, startup, version));
            }
            Err(e) => {
                plan.say(format!("skipping {}: {e}", peer.name()));
                skipped.push((peer.name(), e));
            }
        }
    }
    targets
}
