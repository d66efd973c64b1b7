//! Measuring a broker: throughput, fan-out, consumer groups, latency, CPU per message and
//! memory, for `mote bench` and for the `mote-bench` crate, which runs the same
//! measurements side by side with NATS, Redis and mosquitto.
//!
//! Clients speak each broker's wire protocol directly over blocking sockets (for mote
//! the SDK's codec, no SDK client), so the measurement is of the broker, not of a client
//! library. Publishers are paced to stay at most `--window` messages ahead of the
//! slowest subscriber, so a run measures what the broker delivers without loss; any loss
//! is reported anyway.
//!
//! Everything here is written once for every broker: a broker is a [`Driver`] (the
//! measurements built for its protocol's [`Client`]) and a [`Target`] (one broker under
//! test and its figures). mote's own clients are here; other brokers' clients, and how to
//! start those brokers, are the `mote-bench` crate's, so the binary every device runs
//! does not carry them.
//!
//! The persisted runs (`durable`: every broker on fresh data directories, against NATS
//! JetStream too) are compiled only with the `bench-persist` feature, which `mote-bench`
//! turns on: they are a tool of the source tree, and the broker binary is 109 KiB smaller
//! without them.

mod conn;
#[cfg(feature = "bench-persist")]
mod durable;
mod figures;
mod group;
mod measure;
mod mote;
mod output;
mod proc;
mod reqrep;
mod run;
mod target;

use std::borrow::Cow;
use std::net::{SocketAddr, ToSocketAddrs};

pub use conn::{Client, Conn, Step};
#[cfg(feature = "bench-persist")]
pub use durable::{Durable, DurableDriver, PERSIST_FLAGS, Persist, Started, Starter, SyncMode};
pub use measure::run;
pub use output::report;
pub use proc::{Broker, free_port, start_five};
pub use target::{Driver, Target};

/// One option of `mote bench`; `mote-bench` takes them all, and a few of its own.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Its name after `--`.
    pub long: &'static str,
    /// Its one-letter form.
    pub short: Option<char>,
    /// Placeholder of its value, or `None` for a switch.
    pub value: Option<&'static str>,
    /// The value when it is not given.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
}

/// The options that shape a bench run, read by [`Plan::from_flags`].
pub const FLAGS: &[Flag] = &[
    Flag {
        long: "host",
        short: Some('h'),
        value: Some("HOST"),
        default: None,
        help: "bench a running broker at HOST instead of starting one",
    },
    Flag {
        long: "port",
        short: Some('p'),
        value: Some("PORT"),
        default: None,
        help: "port of the running broker (default 7270 with -h)",
    },
    Flag {
        long: "count",
        short: Some('n'),
        value: Some("N"),
        default: Some("3000000"),
        help: "messages per 64 B run (1 KiB and fan-out runs send a quarter)",
    },
    Flag {
        long: "window",
        short: None,
        value: Some("N"),
        default: Some("8192"),
        help: "most messages a publisher may be ahead of the slowest subscriber",
    },
    Flag {
        long: "latency-samples",
        short: None,
        value: Some("N"),
        default: Some("20000"),
        help: "round trips for each latency run, after a tenth more to warm up",
    },
    Flag {
        long: "idle-connections",
        short: None,
        value: Some("N"),
        default: Some("1000"),
        help: "idle subscribers opened to measure memory per connection",
    },
    Flag {
        long: "only",
        short: None,
        value: Some("RUNS"),
        default: None,
        help: "comma-separated subset of: 64b, 1k, fanout, group, latency, reqrep, idle; and latency-spin, run only when named (its client spins on a core of its own)",
    },
    Flag {
        long: "pin",
        short: None,
        value: None,
        default: None,
        help: "pin the brokers started here to CPU 0 and the bench's clients to CPU 1 (needs 2 CPUs)",
    },
    Flag {
        long: "pid",
        short: None,
        value: Some("PID"),
        default: None,
        help: "with -h: the running broker's process id, to read its CPU time (else CPU figures are not given)",
    },
    Flag {
        long: "token",
        short: None,
        value: Some("TOKEN"),
        default: None,
        help: "also run encrypted: a second broker with this token (or `new`); with -h, the broker's token",
    },
    Flag {
        long: "repeat",
        short: None,
        value: Some("N"),
        default: Some("1"),
        help: "run throughput and latency N times, brokers in turn; print medians",
    },
    Flag {
        long: "json",
        short: None,
        value: None,
        default: None,
        help: "print one JSON object with every figure",
    },
];

/// The runs made only when `--only` names them. A busy-polling client takes a core for
/// itself: on a one-core device (where `mote bench` runs as often as anywhere) it would
/// starve the broker it measures, and the figure would be the scheduler's time slice.
const ON_REQUEST: &[&str] = &["latency-spin"];

/// What to measure, and how: the [`FLAGS`] read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Messages per 64 B run.
    pub count: u64,
    /// Most messages a publisher may be ahead of the slowest subscriber.
    pub window: u64,
    /// Round trips for the latency run.
    pub samples: usize,
    /// Idle subscribers opened to measure memory per connection.
    pub idle_n: usize,
    /// Times each throughput and latency run is made.
    pub repeat: usize,
    /// The runs to make, comma-separated; all of them when `None`.
    pub only: Option<String>,
    /// One JSON object instead of lines for people.
    pub json: bool,
    /// A running broker to measure instead of starting one.
    pub running: Option<SocketAddr>,
    /// The token of the encrypted runs.
    pub token: Option<String>,
    /// The process of the running broker (`--pid`), to read its CPU time.
    pub pid: Option<u32>,
    /// Brokers on CPU 0, the bench's clients on CPU 1 (`--pin`).
    pub pin: bool,
    /// The persisted runs, if they are made ([`Plan::with_persisted`]).
    #[cfg(feature = "bench-persist")]
    pub persist: Option<Persist>,
}

impl Plan {
    /// The plan the options say: `value(long)` is an option's value (its default when it
    /// was not given), `on(long)` whether a switch is on, and `new_token` makes the token
    /// that `--token new` asks for.
    pub fn from_flags(
        value: impl Fn(&str) -> Option<String>,
        on: impl Fn(&str) -> bool,
        new_token: impl FnOnce() -> Result<String, String>,
    ) -> Result<Plan, String> {
        let number = |long: &str| -> Result<usize, String> {
            let v = value(long).unwrap_or_default();
            v.trim()
                .parse()
                .map_err(|_| format!("invalid value {v:?} for --{long}: expected a whole number"))
        };
        let (count, window, samples) = (
            number("count")? as u64,
            number("window")?.max(1) as u64,
            number("latency-samples")?.max(10),
        );
        let (idle_n, repeat) = (number("idle-connections")?, number("repeat")?.max(1));
        let running = match (value("host"), value("port")) {
            (None, None) => None,
            (host, port) => {
                let host = host.unwrap_or_else(|| "127.0.0.1".into());
                let port = match port {
                    None => mote_sdk::wire::DEFAULT_PORT,
                    Some(p) => p
                        .parse::<u16>()
                        .map_err(|_| format!("invalid value {p:?} for --port: expected a port"))?,
                };
                let addr = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{host} has no address"))?;
                Some(addr)
            }
        };
        let token = match value("token").as_deref() {
            None => None,
            Some("new") => Some(new_token()?),
            Some(t) => Some(t.to_string()),
        };
        if let Some(t) = &token {
            mote_sdk::secure::Token::new(t).map_err(|e| format!("--token: {e}"))?;
        }
        let pid = match value("pid") {
            None => None,
            Some(_) if running.is_none() => {
                return Err(
                    "--pid is for a running broker (-h/-p): the bench knows the process \
                            of a broker it starts"
                        .into(),
                );
            }
            Some(p) => {
                let pid = p
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| format!("invalid value {p:?} for --pid: expected a process id"))?;
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(format!("--pid {pid}: there is no such process"));
                }
                Some(pid)
            }
        };
        let pin = on("pin");
        if pin {
            if running.is_some() {
                return Err(
                    "--pin is for brokers the bench starts; pin a running broker \
                            yourself (taskset -c 0 mote serve) and the bench \
                            (taskset -c 1 mote bench -h ...)"
                        .into(),
                );
            }
            proc::check_pinnable()?;
        }
        Ok(Plan {
            count,
            window,
            samples,
            idle_n,
            repeat,
            only: value("only"),
            json: on("json"),
            running,
            token,
            pid,
            pin,
            #[cfg(feature = "bench-persist")]
            persist: None,
        })
    }

    /// Whether the run called `run` (`64b`, `group`, `idle`...) is to be made: every one
    /// but those in [`ON_REQUEST`] when `--only` is not given.
    fn wanted(&self, run: &str) -> bool {
        match self.only.as_deref() {
            None => !ON_REQUEST.contains(&run),
            Some(o) => o.split(',').any(|x| x.trim() == run),
        }
    }

    /// The figures the report shows and compares: label, JSON name.
    fn rows(&self) -> Vec<(Cow<'static, str>, &'static str)> {
        let rows = figures::ROWS
            .iter()
            .map(|&(label, key)| (Cow::Borrowed(label), key));
        #[cfg(feature = "bench-persist")]
        let rows = rows.chain(durable::rows(self));
        rows.collect()
    }

    /// Prints a line for people, on stderr (so that `--json` output stays alone on
    /// stdout), unless the output is JSON.
    pub fn say(&self, s: impl AsRef<str>) {
        if !self.json {
            eprintln!("{}", s.as_ref());
        }
    }
}
