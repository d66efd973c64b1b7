//! One bench run: start mote (unless measuring a running broker), take the other brokers
//! the caller started, then every throughput, group, latency and memory measurement of each,
//! the brokers taking turns.

use std::path::Path;
use std::thread;
use std::time::Duration;

use super::Plan;
#[cfg(feature = "bench-persist")]
use super::durable;
use super::group;
use super::mote::TOKEN;
use super::proc::{self, start_five};
use super::run::{self, Load, Throughput, Wait};
use super::target::{ENCRYPTED, MOTE, Role, Target};

/// The throughput runs: `--only` name, label, JSON suffix, payload size, messages
/// (divided from `--count`), subscribers.
const RUNS: [(&str, &str, &str, usize, u64, usize); 3] = [
    ("64b", "1->1 64 B", "64b", 64, 1, 1),
    ("1k", "1->1 1 KiB", "1kib", 1024, 4, 1),
    ("fanout", "1->4 64 B", "fanout4", 64, 4, 4),
];

/// The latency runs: `--only` name, what the report calls it, the prefix of its JSON
/// names, how its subscriber waits.
const LATENCY_RUNS: [(&str, &str, &str, Wait); 2] = [
    ("latency", "latency", "latency", Wait::Block),
    (
        "latency-spin",
        "latency, spinning",
        "latency_spin",
        Wait::Spin,
    ),
];

/// Runs the plan: starts mote from the binary `mote` (unless the plan names a running
/// broker), then calls `others` for the other brokers to measure alongside (started, so
/// that their startup follows mote's), then measures every one. Returns them all, mote
/// first, for [`super::report`]. A failing mote run ends the bench with its error; another
/// broker's failure is recorded in its [`Target`].
pub fn run(
    plan: &Plan,
    mote: Option<&Path>,
    others: impl FnOnce() -> Vec<Target>,
) -> Result<Vec<Target>, String> {
    if plan.pin {
        // Before any broker starts: each is pinned once it accepts connections.
        proc::pin_bench()?;
    }
    let (broker, addr, startup) = match plan.running {
        None => {
            let exe = mote.ok_or("cannot find the mote binary to start")?;
            let (b, startup) = start_five(|| proc::start_mote(exe, &[]))?;
            let addr = b.addr;
            (Some(b), addr, Some(startup))
        }
        Some(addr) => (None, addr, None),
    };
    if let Some(t) = &plan.token {
        let _ = TOKEN.set(t.clone());
    }
    let external = broker.is_none();
    let (role, driver) = if external && plan.token.is_some() {
        (Role::Encrypted, ENCRYPTED)
    } else {
        (Role::Mote, MOTE)
    };
    let mut first = Target::new(role, driver, addr, broker, None);
    first.given_pid = plan.pid;
    if let Some(s) = startup {
        first.figures.add("startup_ms", 0, s);
    }
    #[cfg(feature = "bench-persist")]
    if plan.persist.is_some() {
        match (mote, external) {
            (Some(exe), false) => first.persisted.driver = Some(durable::mote_driver(exe)),
            _ => plan.say("the persisted runs start their own brokers: not with -h/-p"),
        }
    }
    let mut targets = vec![first];
    targets.extend(others());
    if targets.iter().any(|t| t.broker.is_some()) {
        // Let the first connections' teardown settle before reading idle memory.
        thread::sleep(Duration::from_millis(100));
    }
    for t in &mut targets {
        if let Some(pid) = t.pid() {
            t.figures
                .add("idle_rss_kib", 0, proc::status_kib(pid, "VmRSS") as f64);
        }
    }
    // The same broker again with a token, right after the plaintext one.
    if let (Some(t), Some(exe), false) = (&plan.token, mote, external) {
        let (b, startup) = start_five(|| proc::start_mote(exe, &["--token", t]))?;
        let mut enc = Target::new(Role::Encrypted, ENCRYPTED, b.addr, Some(b), None);
        enc.figures.add("startup_ms", 0, startup);
        if let Some(pid) = enc.pid() {
            enc.figures
                .add("idle_rss_kib", 0, proc::status_kib(pid, "VmRSS") as f64);
        }
        targets.insert(1, enc);
    }
    plan.say(format!(
        "broker {addr}{}",
        startup.map_or(String::new(), |s| format!(", started in {s:.2} ms"))
    ));
    for t in &targets[1..] {
        let version = t
            .version
            .as_ref()
            .map_or(String::new(), |v| format!("{v} "));
        plan.say(if t.memory_runs() {
            format!(
                "{} {version}at {}, started in {:.2} ms",
                t.name(),
                t.addr,
                t.figures.median("startup_ms").unwrap_or(0.0)
            )
        } else {
            format!("{} {version}in the persisted runs only", t.name())
        });
    }
    let throughput = RUNS.iter().any(|r| plan.wanted(r.0));
    for t in targets
        .iter()
        .filter(|t| throughput && t.driver.divisor() > 1)
    {
        plan.say(format!(
            "{} runs send 1/{} of the messages (it is much slower)",
            t.name(),
            t.driver.divisor()
        ));
    }
    for rep in 0..plan.repeat {
        repetition(&mut targets, plan, rep)?;
    }
    memory(&mut targets, plan)?;
    Ok(targets)
}

/// Repetition `rep` of every throughput and latency run on every broker.
fn repetition(targets: &mut [Target], plan: &Plan, rep: usize) -> Result<(), String> {
    let comparing = targets.len() > 1;
    // Brokers take turns, starting with a different one each repetition, so that
    // machine noise hits them alike.
    let order: Vec<usize> = (0..targets.len())
        .map(|i| (i + rep) % targets.len())
        .collect();
    let tag = |t: &Target| {
        let mut s = String::new();
        if plan.repeat > 1 {
            s += &format!("[{}/{}] ", rep + 1, plan.repeat);
        }
        s + &t.who(comparing)
    };
    for (key, name, suffix, size, divide, subs) in RUNS {
        if !plan.wanted(key) {
            continue;
        }
        for &i in &order {
            let t = &mut targets[i];
            if !t.memory_runs() {
                continue;
            }
            let load = Load {
                run: key,
                size,
                count: (plan.count / divide / t.driver.divisor()).max(1),
                subs,
                window: plan.window,
            };
            let Some(tp) = t.attempt(plan, &tag(t), name, |t| {
                t.driver.throughput(t.addr, t.cpu_pid(), load)
            })?
            else {
                continue;
            };
            plan.say(format!("{}{}", tag(t), run_line(name, size, &tp)));
            record_run(t, rep, suffix, size, subs, &tp);
        }
    }
    // Consumer groups are mote's own: 3 members sharing one topic, every message acked.
    if plan.wanted("group") {
        for &i in &order {
            let t = &mut targets[i];
            if t.role != Role::Mote {
                continue;
            }
            let name = "group x3 acked 64 B";
            let count = (plan.count / 2).max(1);
            let Some(tp) = t.attempt(plan, &tag(t), name, |t| {
                group::group_throughput(t.addr, t.cpu_pid(), 64, count, 3, plan.window)
            })?
            else {
                continue;
            };
            let base = t.figures.get("msgs_per_sec_64b", rep);
            plan.say(format!(
                "{}{}{}",
                tag(t),
                run_line(name, 64, &tp),
                base.map_or(String::new(), |b| format!(
                    "  ({:.0}% of 1->1)",
                    100.0 * tp.msgs_per_sec() / b
                ))
            ));
            record_run(t, rep, "group3", 64, 1, &tp);
            if let Some(b) = base.filter(|&b| b > 0.0) {
                t.figures
                    .add("group3_fraction_of_1to1", rep, tp.msgs_per_sec() / b);
            }
        }
    }
    for (run, what, prefix, wait) in LATENCY_RUNS {
        if !plan.wanted(run) {
            continue;
        }
        for &i in &order {
            let t = &mut targets[i];
            if !t.memory_runs() {
                continue;
            }
            let Some(lat) = t.attempt(plan, &tag(t), what, |t| {
                t.driver.latency(t.addr, t.cpu_pid(), plan.samples, wait)
            })?
            else {
                continue;
            };
            let hint = t.cpu_pid().is_none();
            plan.say(format!("{}{}", tag(t), latency_line(what, &lat, hint)));
            record_latency(t, rep, prefix, &lat);
        }
    }
    // Request/reply is mote's own (protocol 4): one responder, one request in flight.
    if plan.wanted("reqrep") {
        for &i in &order {
            let t = &mut targets[i];
            if t.role != Role::Mote {
                continue;
            }
            let Some(rt) = t.attempt(plan, &tag(t), "request/reply", |t| {
                super::reqrep::round_trips(t.addr, plan.samples, 64)
            })?
            else {
                continue;
            };
            plan.say(format!(
                "{}request/reply (64 B, 1 responder)  {:.0} round trips/s  (ping {:.0}/s: {:.0}%), {:.0}/s with 64 in flight",
                tag(t),
                rt.reqrep_per_sec,
                rt.ping_per_sec,
                100.0 * rt.reqrep_per_sec / rt.ping_per_sec,
                rt.pipelined_per_sec
            ));
            t.figures
                .add("reqrep_pipelined_per_sec", rep, rt.pipelined_per_sec);
            t.figures
                .add("reqrep_round_trips_per_sec", rep, rt.reqrep_per_sec);
            t.figures
                .add("ping_round_trips_per_sec", rep, rt.ping_per_sec);
        }
    }
    #[cfg(feature = "bench-persist")]
    durable::repetition(targets, plan, rep, &order, &tag)?;
    Ok(())
}

/// Memory per idle subscriber and peak memory of every broker the bench started.
fn memory(targets: &mut [Target], plan: &Plan) -> Result<(), String> {
    let comparing = targets.len() > 1;
    for t in targets {
        let Some(pid) = t.pid() else { continue };
        let who = t.who(comparing);
        if plan.wanted("idle") && plan.idle_n > 0 {
            let pc = t.attempt(plan, &who, "idle connections", |t| {
                t.driver.idle_cost(t.addr, pid, plan.idle_n)
            })?;
            if let Some(pc) = pc {
                plan.say(format!(
                    "{who}memory: {pc:.0} bytes of broker RSS per idle subscriber ({} connections)",
                    plan.idle_n
                ));
                t.figures.add("rss_bytes_per_idle_subscriber", 0, pc);
            }
        }
        let alive = t.attempt(plan, &who, "memory", |_| Ok(()))?;
        if alive.is_none() {
            continue;
        }
        let peak = proc::status_kib(pid, "VmHWM");
        plan.say(format!(
            "{who}memory: idle RSS {} KiB, peak RSS {peak} KiB",
            t.figures.median("idle_rss_kib").unwrap_or(0.0)
        ));
        t.figures.add("peak_rss_kib", 0, peak as f64);
    }
    Ok(())
}

/// The line printed after a throughput run.
pub(super) fn run_line(name: &str, size: usize, t: &Throughput) -> String {
    format!(
        "{name:<18} {:>10.0} msgs/s  {:>8.1} MB/s  {}{}",
        t.msgs_per_sec(),
        t.msgs_per_sec() * size as f64 / 1e6,
        t.cpu_per_million().map_or(String::new(), |c| format!(
            "broker CPU {c:.3} s per million"
        )),
        if t.missed > 0 {
            format!("  ({} missed)", t.missed)
        } else {
            String::new()
        },
    )
}

fn record_run(t: &mut Target, rep: usize, suffix: &str, size: usize, subs: usize, tp: &Throughput) {
    let rate = if subs > 1 {
        format!("deliveries_per_sec_{suffix}")
    } else {
        format!("msgs_per_sec_{suffix}")
    };
    let f = &mut t.figures;
    f.add(rate, rep, tp.msgs_per_sec());
    f.add(
        format!("mbytes_per_sec_{suffix}"),
        rep,
        tp.msgs_per_sec() * size as f64 / 1e6,
    );
    f.add(format!("messages_{suffix}"), rep, tp.delivered as f64);
    if let Some(c) = tp.cpu_per_million() {
        f.add(format!("broker_cpu_sec_per_million_{suffix}"), rep, c);
    }
    t.missed += tp.missed;
}

/// The line printed after a latency run; `hint` says how to get the broker's CPU time
/// when it is unknown.
fn latency_line(what: &str, lat: &run::Latency, hint: bool) -> String {
    let p = |q| run::percentile(&lat.rtts, q);
    let cpu = |c: Option<f64>| c.map_or("unavailable".to_string(), |c| format!("{c:.1} us"));
    format!(
        "{:<18} p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  per round trip: broker CPU {}{}, client CPU {}",
        format!("{what}:"),
        p(0.5),
        p(0.99),
        p(0.999),
        cpu(lat.broker_cpu_us),
        if lat.broker_cpu_us.is_none() && hint {
            " (give the broker's --pid)"
        } else {
            ""
        },
        cpu(lat.client_cpu_us),
    )
}

fn record_latency(t: &mut Target, rep: usize, prefix: &str, lat: &run::Latency) {
    let f = &mut t.figures;
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        f.add(
            format!("{prefix}_{name}_us"),
            rep,
            run::percentile(&lat.rtts, q),
        );
    }
    if let Some(c) = lat.broker_cpu_us {
        f.add(format!("{prefix}_broker_cpu_us_per_rt"), rep, c);
    }
    if let Some(c) = lat.client_cpu_us {
        f.add(format!("{prefix}_client_cpu_us_per_rt"), rep, c);
    }
}
