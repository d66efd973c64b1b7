//! `mote bench`: throughput, fan-out, consumer groups, latency, CPU per message and memory
//! of mote, measured by [`mote::bench`]. The comparison with NATS, Redis and mosquitto is
//! the `mote-bench` crate's (benches/), so the broker binary does not carry their clients.

use std::ffi::OsString;

use mote::bench::{self, FLAGS, Flag, Plan};

use super::args::{self, CliError, Opt, Outcome, Spec};

/// [`FLAGS`] as this command line's options.
static OPTS: [Opt; FLAGS.len()] = {
    const fn opt(f: &Flag) -> Opt {
        Opt {
            long: f.long,
            short: f.short,
            value: f.value,
            env: None,
            default: f.default,
            help: f.help,
        }
    }
    let mut opts = [const { opt(&FLAGS[0]) }; FLAGS.len()];
    let mut i = 1;
    while i < FLAGS.len() {
        opts[i] = opt(&FLAGS[i]);
        i += 1;
    }
    opts
};

pub(crate) static SPEC: Spec = Spec {
    name: "bench",
    about: "Measure a broker: 1->1 throughput at 64 B and 1 KiB, 1->4 fan-out, a consumer\n\
            group of 3 acking members, latency of sparse traffic (one connection publishes\n\
            64 B fire-and-forget, a second one receives it, then the next: p50/p99/p99.9\n\
            and CPU per round trip), and (when it starts the broker itself) startup time,\n\
            CPU per million messages, idle and per-connection memory.\n\
            The same runs side by side with NATS, Redis and mosquitto, and persisted runs\n\
            on fresh data directories (also against NATS JetStream), are a tool of the\n\
            source tree, mote-bench (cargo run -p mote-bench --release -- --help):\n  \
            cargo run -p mote-bench --release -- --compare nats,redis,mosquitto",
    opts: &OPTS,
    after: "With --token, ratios are plaintext/encrypted, each the median of the ratios within\n\
            one repetition.\n\n\
            Examples:\n  mote bench                  # starts its own broker on a free loopback port\n  \
            mote bench --json\n  mote bench -h 127.0.0.1 -p 7270 -n 1000000\n  \
            mote bench --token new --repeat 3\n  \
            mote bench --only latency,latency-spin --pin --repeat 3\n  \
            mote bench -h 127.0.0.1 -p 7270 --pid $(pidof -s mote) --only latency",
};

pub(crate) fn main(argv: Vec<OsString>) -> Result<(), CliError> {
    if argv
        .iter()
        .any(|a| a.to_str().is_some_and(|a| a.starts_with("--compare")))
    {
        return Err(CliError(
            "--compare moved out of the broker binary into the mote-bench tool: in mote's \
             source tree, run cargo run -p mote-bench --release -- --compare nats,redis,mosquitto"
                .into(),
        ));
    }
    let p = match args::parse(&SPEC, argv)? {
        Outcome::Run(p) => p,
        Outcome::Help(h) => {
            print!("{h}");
            return Ok(());
        }
    };
    let plan = Plan::from_flags(|l| p.get(l), |l| p.on(l), super::new_token).map_err(CliError)?;
    let exe = std::env::current_exe().ok();
    let targets = bench::run(&plan, exe.as_deref(), Vec::new).map_err(CliError)?;
    bench::report(&targets, &[], &plan);
    Ok(())
}
