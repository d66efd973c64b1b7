//! mote-bench: mote measured side by side with NATS, Redis and mosquitto, and the
//! persisted runs, of mote and NATS JetStream.
//!
//! The measurements are `mote bench`'s own ([`mote::bench`]), the persisted runs
//! included: mote's library compiles those only with its `bench-persist` feature, which
//! this crate turns on, so the broker binary does not carry them. This tool adds the
//! other brokers: a client of each one's protocol (`nats`, `redis`, `mqtt`, `jetstream`,
//! each also saying how to start its broker) and the peers' side of a run (`peer`). Run
//! from the source tree:
//!
//! ```text
//! cargo run -p mote-bench --release -- --compare nats,redis,mosquitto --token new --repeat 3
//! cargo run -p mote-bench --release -- --persist --compare jetstream
//! ```

mod jetstream;
mod locate;
mod mqtt;
mod nats;
mod options;
mod peer;
mod redis;
mod text;
mod topics;

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
    if let Some(n) = opts.value("topics") {
        let n: usize = n
            .parse()
            .map_err(|_| "--topics: expected a number".to_string())?;
        let repeat: usize = opts
            .value("repeat")
            .map_or(Ok(1), |s| s.parse())
            .map_err(|_| "--repeat: expected a number".to_string())?;
        let mote = locate::mote_binary(opts.value("mote").map(PathBuf::from))?;
        return topics::run(&mote, n, repeat.max(1));
    }
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
    )?
    .with_persisted(|l| opts.value(l), |l| opts.on(l))?;
    let mut skipped = Vec::new();
    let nats_server = opts.value("nats-server").map(PathBuf::from);
    let mut targets = bench::run(&plan, mote.as_deref(), || {
        start_peers(&peers, &plan, nats_server.as_deref(), &mut skipped)
    })?;
    for t in &mut targets {
        let notes = t.broker().map(peer::log_notes).unwrap_or_default();
        t.add_notes(notes);
    }
    bench::report(&targets, &skipped, &plan);
    Ok(())
}

/// Starts each of `peers` (those compared in the persisted runs only are started by
/// each of those runs); the ones that cannot be started are said and added to
/// `skipped`, with why. `nats_server` is the nats-server program given.
fn start_peers(
    peers: &[&'static Peer],
    plan: &Plan,
    nats_server: Option<&std::path::Path>,
    skipped: &mut Vec<(&'static str, String)>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for peer in peers {
        let given = nats_server
            .filter(|_| peer.program == "nats-server")
            .map(PathBuf::from);
        if peer.persisted_only {
            let why = if plan.persist.is_some() {
                peer.binary(given)
            } else {
                Err("compared in the persisted runs only: add --persist".into())
            };
            match why {
                Ok(bin) => {
                    let version = peer.version(&bin);
                    let durable = jetstream::durable_driver(bin, version.clone());
                    targets.push(Target::durable_peer(peer.driver, durable, version));
                }
                Err(e) => {
                    plan.say(format!("skipping {}: {e}", peer.name()));
                    skipped.push((peer.name(), e));
                }
            }
            continue;
        }
        let started = peer.binary(given).and_then(|bin| {
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
