//! A broker under test: how the bench speaks to it ([`Driver`]) and what was measured of
//! it ([`Target`]).

use std::net::SocketAddr;

use super::Plan;
use super::conn::Client;
#[cfg(feature = "bench-persist")]
use super::durable::{DurableDriver, Persisted};
use super::figures::Figures;
use super::mote::{Mote, SecureMote};
use super::proc::Broker;
use super::run::{self, Latency, Load, Throughput, Wait};

/// How the bench speaks to one kind of broker: its name in reports, and the measurements
/// built for its protocol's [`Client`].
#[derive(Clone, Copy)]
pub struct Driver {
    name: &'static str,
    divisor: u64,
    throughput: fn(SocketAddr, Option<u32>, Load) -> Result<Throughput, String>,
    latency: fn(SocketAddr, Option<u32>, usize, Wait) -> Result<Latency, String>,
    idle_cost: fn(SocketAddr, u32, usize) -> Result<f64, String>,
}

impl Driver {
    /// The driver of a broker spoken to with `C`, called `name` in reports (and in the
    /// JSON keys of its figures); its throughput runs send `1/divisor` of the messages
    /// (for a broker much slower than mote).
    pub const fn new<C: Client>(name: &'static str, divisor: u64) -> Driver {
        Driver {
            name,
            divisor,
            throughput: run::throughput::<C>,
            latency: run::latency::<C>,
            idle_cost: run::idle_cost::<C>,
        }
    }

    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Messages sent in its runs are divided by this.
    pub(crate) fn divisor(&self) -> u64 {
        self.divisor
    }

    pub(crate) fn throughput(
        &self,
        addr: SocketAddr,
        pid: Option<u32>,
        load: Load,
    ) -> Result<Throughput, String> {
        (self.throughput)(addr, pid, load)
    }

    pub(crate) fn latency(
        &self,
        addr: SocketAddr,
        pid: Option<u32>,
        samples: usize,
        wait: Wait,
    ) -> Result<Latency, String> {
        (self.latency)(addr, pid, samples, wait)
    }

    pub(crate) fn idle_cost(&self, addr: SocketAddr, pid: u32, n: usize) -> Result<f64, String> {
        (self.idle_cost)(addr, pid, n)
    }
}

/// mote in plaintext.
pub(crate) const MOTE: Driver = Driver::new::<Mote>("mote", 1);
/// mote with a token: authenticated and encrypted (`--token`).
pub(crate) const ENCRYPTED: Driver = Driver::new::<SecureMote>("encrypted", 1);

/// What a broker is to the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// mote: the first column, the baseline of every ratio.
    Mote,
    /// mote with a token.
    Encrypted,
    /// Another broker mote is compared with.
    Peer,
}

/// One broker under test and everything measured of it.
pub struct Target {
    pub(crate) role: Role,
    pub(crate) driver: Driver,
    pub(crate) addr: SocketAddr,
    /// Set when the bench started it.
    pub(crate) broker: Option<Broker>,
    /// The process of a running broker, given with `--pid`.
    pub(crate) given_pid: Option<u32>,
    pub(crate) version: Option<String>,
    pub(crate) figures: Figures,
    pub(crate) missed: u64,
    /// Runs that failed (peers only: a failing mote run ends the bench).
    pub(crate) errors: Vec<String>,
    /// Lines of the broker's log that tell of trouble.
    pub(crate) notes: Vec<String>,
    /// What it has of the persisted runs.
    #[cfg(feature = "bench-persist")]
    pub(crate) persisted: Persisted,
    /// Its broker died: nothing more to measure.
    gone: bool,
}

impl Target {
    pub(crate) fn new(
        role: Role,
        driver: Driver,
        addr: SocketAddr,
        broker: Option<Broker>,
        version: Option<String>,
    ) -> Self {
        Target {
            role,
            driver,
            addr,
            broker,
            given_pid: None,
            version,
            figures: Figures::default(),
            missed: 0,
            errors: Vec::new(),
            notes: Vec::new(),
            #[cfg(feature = "bench-persist")]
            persisted: Persisted::default(),
            gone: false,
        }
    }

    /// A broker compared with mote in the persisted runs only (`--persist`): each of
    /// those starts it anew by `durable`; `driver` names it.
    #[cfg(feature = "bench-persist")]
    pub fn durable_peer(driver: Driver, durable: DurableDriver, version: Option<String>) -> Self {
        let mut t = Target::new(
            Role::Peer,
            driver,
            ([127, 0, 0, 1], 0).into(),
            None,
            version,
        );
        t.persisted.driver = Some(durable);
        t.persisted.only = true;
        t
    }

    /// Another broker that mote is compared with, spoken to by `driver`: `broker`, started
    /// in `startup_ms` (a median, see [`super::start_five`]), which said it is `version`.
    pub fn peer(driver: Driver, broker: Broker, startup_ms: f64, version: Option<String>) -> Self {
        let mut t = Target::new(Role::Peer, driver, broker.addr, Some(broker), version);
        t.figures.add("startup_ms", 0, startup_ms);
        t
    }

    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        self.driver.name
    }

    /// Whether throughput runs were made of it with a fraction of the messages.
    pub(crate) fn divided(&self) -> bool {
        let counted = |k: &str| k.starts_with("messages_") || k.starts_with("persisted_");
        self.driver.divisor > 1 && self.figures.keys().any(counted)
    }

    /// The broker process, when the bench started it.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Adds lines of the broker's own log that tell of trouble, for the report.
    pub fn add_notes(&mut self, notes: impl IntoIterator<Item = String>) {
        self.notes.extend(notes);
    }

    /// Whether the in-memory runs are made of it: all but a broker compared in the
    /// persisted runs only.
    pub(crate) fn memory_runs(&self) -> bool {
        #[cfg(feature = "bench-persist")]
        if self.persisted.only {
            return false;
        }
        true
    }

    /// Whether it is mote, plaintext or encrypted.
    pub(crate) fn is_mote(&self) -> bool {
        matches!(self.role, Role::Mote | Role::Encrypted)
    }

    /// Prefixes a line about this broker when there are several.
    pub(crate) fn who(&self, comparing: bool) -> String {
        if comparing {
            format!("{:<10}", self.name())
        } else {
            String::new()
        }
    }

    /// The process of the broker the bench started.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.broker.as_ref().map(Broker::pid)
    }

    /// The process whose CPU time is the broker's: the one the bench started, or the
    /// one `--pid` named.
    pub(crate) fn cpu_pid(&self) -> Option<u32> {
        self.pid().or(self.given_pid)
    }

    /// Runs one measurement `what` of this broker, unless it died. A peer's failure is
    /// reported and recorded (and a dead peer's later runs skipped); mote's ends the
    /// bench.
    pub(crate) fn attempt<T>(
        &mut self,
        plan: &Plan,
        tag: &str,
        what: &str,
        f: impl FnOnce(&Target) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        if self.gone {
            return Ok(None);
        }
        let exited = self.broker.as_mut().and_then(Broker::exited);
        let r = match exited {
            Some(status) => {
                self.gone = true;
                Err(format!(
                    "the broker exited ({status}); its remaining runs are skipped"
                ))
            }
            None => f(self),
        };
        match r {
            Ok(x) => Ok(Some(x)),
            Err(e) if self.is_mote() => Err(format!("{what}: {e}")),
            Err(e) => {
                plan.say(format!("{tag}{what} failed: {e}"));
                self.errors.push(format!("{what}: {e}"));
                Ok(None)
            }
        }
    }
}
