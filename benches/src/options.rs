//! mote-bench's command line: every option of `mote bench` ([`FLAGS`], the same table),
//! the persisted runs' ([`PERSIST_FLAGS`], which `mote bench` has not) and its own
//! ([`OWN`]).

use std::ffi::OsString;

use mote::bench::{FLAGS, Flag, PERSIST_FLAGS};

use crate::peer::{PEERS, Peer};

/// The options `mote bench` does not have.
const OWN: &[Flag] = &[
    Flag {
        long: "compare",
        short: None,
        value: Some("PEERS"),
        default: None,
        help: "also bench these brokers (started here) and print mote/peer: nats,redis,mosquitto; jetstream (with --persist)",
    },
    Flag {
        long: "nats-server",
        short: None,
        value: Some("PATH"),
        default: None,
        help: "the nats-server program of nats and jetstream (default: on PATH, or Debian's); 2.10 or later takes the sync policy",
    },
    Flag {
        long: "mote",
        short: None,
        value: Some("PATH"),
        default: None,
        help: "the mote binary to start (default: the one beside this program, which cargo run builds first)",
    },
    Flag {
        long: "topics",
        short: None,
        value: Some("N"),
        default: None,
        help: "instead of the runs: list N topics over the management API (as `mote topics` does) while pinging; listing time and ping round trips, quiet and during",
    },
];

const ABOUT: &str = "\
mote-bench: the measurements of `mote bench`, made of mote and, side by side, of NATS,
Redis and mosquitto started from their Debian packages' programs, with the ratios.
mosquitto's runs send a tenth of the messages (it is much slower).

With --persist, the persisted runs too (this tool's alone), each broker on fresh data
directories: 1->1 persisted, 16 publishers confirming under --sync always and --sync,
100 msgs/s paced (fsyncs/s, bytes written per payload byte); --only gib adds a restart
with 1 GiB on disk and its replay. NATS JetStream is compared in those only, with the
same sync policy where its nats-server takes one (2.10 and later; Debian 12's 2.9 syncs
every 2 minutes).

Usage: cargo run -p mote-bench --release -- --compare nats,redis,mosquitto [OPTIONS]
       cargo run -p mote-bench --release -- --persist [--compare jetstream] [OPTIONS]
";

const AFTER: &str = "\
Ratios are mote/peer, each the median of the ratios within one repetition: above 1
is better for mote in throughput, below 1 in CPU, latency and memory.

Examples:
  cargo run -p mote-bench --release -- --compare nats,redis,mosquitto --token new --repeat 3
  cargo run -p mote-bench --release -- --compare nats --only 64b,1k --json
  cargo run -p mote-bench --release -- --compare mosquitto --only latency,latency-spin --pin --repeat 3
  cargo run -p mote-bench --release -- --compare jetstream --persist --repeat 3
  cargo run -p mote-bench --release -- --persist --data /var/tmp --only p64b,confirm,paced,gib
  cargo run -p mote-bench --release -- --topics 10000 --repeat 3
";

/// The options given: values in command-line order, and the switches.
pub(crate) struct Options {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
}

fn flags() -> impl Iterator<Item = &'static Flag> {
    OWN.iter().chain(FLAGS).chain(PERSIST_FLAGS)
}

/// Parses `args`; `Ok(None)` means `--help` was asked for.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Options>, String> {
    use lexopt::Arg;
    let mut p = lexopt::Parser::from_args(args);
    let mut out = Options {
        values: Vec::new(),
        switches: Vec::new(),
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            Arg::Long("help") => return Ok(None),
            Arg::Long(l) => flags().find(|f| f.long == l),
            Arg::Short(c) => flags().find(|f| f.short == Some(c)),
            Arg::Value(v) => {
                return Err(format!(
                    "unexpected argument {:?} (see --help)",
                    v.to_string_lossy()
                ));
            }
        };
        let Some(flag) = flag else {
            return Err(format!("unknown option {} (see --help)", arg_text(&arg)));
        };
        if flag.value.is_none() {
            out.switches.push(flag.long);
            continue;
        }
        let v = p
            .value()
            .map_err(|_| format!("--{} needs a value", flag.long))?
            .into_string()
            .map_err(|_| format!("--{} must be valid UTF-8", flag.long))?;
        out.values.push((flag.long, v));
    }
    Ok(Some(out))
}

fn arg_text(arg: &lexopt::Arg<'_>) -> String {
    match arg {
        lexopt::Arg::Long(l) => format!("--{l}"),
        lexopt::Arg::Short(c) => format!("-{c}"),
        lexopt::Arg::Value(v) => v.to_string_lossy().into_owned(),
    }
}

impl Options {
    /// The value of `--long`: the last one given, else its default.
    pub(crate) fn value(&self, long: &str) -> Option<String> {
        let given = self.values.iter().rev().find(|(l, _)| *l == long);
        given.map(|(_, v)| v.clone()).or_else(|| {
            flags()
                .find(|f| f.long == long)
                .and_then(|f| f.default.map(str::to_owned))
        })
    }

    /// Whether the switch `--long` was given.
    pub(crate) fn on(&self, long: &str) -> bool {
        self.switches.contains(&long)
    }

    /// The brokers `--compare` names, each once, in its order.
    pub(crate) fn peers(&self) -> Result<Vec<&'static Peer>, String> {
        let mut peers: Vec<&'static Peer> = Vec::new();
        let list = self.value("compare").unwrap_or_default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let peer = Peer::named(name).ok_or_else(|| {
                let names: Vec<&str> = PEERS.iter().map(|p| p.name()).collect();
                let (last, rest) = names.split_last().unwrap_or((&"", &[]));
                format!(
                    "invalid value {name:?} for --compare: expected {} or {last}",
                    rest.join(", ")
                )
            })?;
            if !peers.iter().any(|p| std::ptr::eq(*p, peer)) {
                peers.push(peer);
            }
        }
        Ok(peers)
    }
}

/// `--help`: the usage, then every option with its default.
pub(crate) fn help() -> String {
    let left = |f: &Flag| {
        let short = f.short.map_or("    ".to_string(), |c| format!("-{c}, "));
        match f.value {
            Some(v) => format!("{short}--{} {v}", f.long),
            None => format!("{short}--{}", f.long),
        }
    };
    let width = flags().map(|f| left(f).len()).max().unwrap_or(0);
    let mut s = format!("{ABOUT}\nOptions:\n");
    for f in flags() {
        let default = f
            .default
            .map_or(String::new(), |d| format!(" [default: {d}]"));
        s += &format!("  {:width$}  {}{default}\n", left(f), f.help);
    }
    s += &format!("  {:width$}  print this help\n\n{AFTER}", "    --help");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Option<Options>, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn options_of_mote_bench_and_its_own() {
        let o = parse_args(&["--compare", "nats, mosquitto,nats", "-n", "1000", "--json"])
            .unwrap()
            .unwrap();
        let names: Vec<&str> = o.peers().unwrap().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["nats", "mosquitto"]);
        assert_eq!(o.value("count").as_deref(), Some("1000"));
        assert_eq!(o.value("window").as_deref(), Some("8192"));
        assert_eq!(o.value("mote"), None);
        assert!(o.on("json"));
        assert!(!o.on("nope"));
    }

    #[test]
    fn errors_name_the_option() {
        assert_eq!(
            parse_args(&["--nope"]).err().unwrap(),
            "unknown option --nope (see --help)"
        );
        assert_eq!(
            parse_args(&["--count"]).err().unwrap(),
            "--count needs a value"
        );
        let o = parse_args(&["--compare", "kafka"]).unwrap().unwrap();
        assert_eq!(
            o.peers().err().unwrap(),
            "invalid value \"kafka\" for --compare: expected nats, redis, mosquitto or jetstream"
        );
    }

    #[test]
    fn help_lists_every_option_with_its_default() {
        let h = help();
        for f in flags() {
            assert!(h.contains(&format!("--{}", f.long)), "{h}");
        }
        assert!(h.contains("-n, --count N"), "{h}");
        assert!(h.contains("[default: 3000000]"), "{h}");
    }
}
