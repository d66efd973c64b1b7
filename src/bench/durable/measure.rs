//! The persisted runs in a bench run: which are made, of which brokers, in each
//! repetition, and what is kept of them in the brokers' [`Target`]s.

use super::super::Plan;
use super::super::measure::run_line;
use super::super::target::Target;
use super::runs::{DurableFigures, confirm, gib, paced, persisted_throughput};
use super::{DurableDriver, SyncMode};

/// What a [`Target`] has of the persisted runs.
#[derive(Default)]
pub(crate) struct Persisted {
    /// How they start and speak to it; `None` when they are not made of it.
    pub(crate) driver: Option<DurableDriver>,
    /// It is compared in the persisted runs only: no in-memory runs of it.
    pub(crate) only: bool,
    /// What they should know: a sync policy asked for and not in force, fsyncs counted
    /// otherwise than by perf.
    pub(crate) settings: Vec<String>,
}

/// The persisted throughput runs: `--only` name, label, JSON suffix, payload size,
/// messages (divided from `--count`).
const PERSISTED_RUNS: [(&str, &str, &str, usize, u64); 2] = [
    ("p64b", "persisted 1->1 64 B", "64b", 64, 1),
    ("p1k", "persisted 1->1 1 KiB", "1kib", 1024, 4),
];

/// One persisted measurement of a broker: the lines to print, or why it failed.
type PersistedRun<'a> =
    &'a dyn Fn(&DurableDriver, &mut DurableFigures) -> Result<Vec<String>, String>;

/// Makes the persisted measurement `f` of `t` (if it has persisted runs) in repetition
/// `rep`; keeps its figures and what it says of the sync policy.
fn persisted_one(
    t: &mut Target,
    plan: &Plan,
    rep: usize,
    tag: &dyn Fn(&Target) -> String,
    what: &str,
    f: PersistedRun<'_>,
) -> Result<(), String> {
    if t.persisted.driver.is_none() {
        return Ok(());
    }
    let r = t.attempt(plan, &tag(t), what, |t| {
        let mut out = DurableFigures::default();
        let d = t.persisted.driver.as_ref().ok_or("no persisted runs")?;
        f(d, &mut out).map(|lines| (lines, out))
    })?;
    if let Some((lines, out)) = r {
        for l in lines {
            plan.say(format!("{}{l}", tag(t)));
        }
        for (k, x) in out.figures {
            t.figures.add(k, rep, x);
        }
        for n in out.notes {
            if !t.persisted.settings.contains(&n) {
                t.persisted.settings.push(n);
            }
        }
    }
    Ok(())
}

/// Repetition `rep` of the persisted runs, on every broker that has them.
pub(crate) fn repetition(
    targets: &mut [Target],
    plan: &Plan,
    rep: usize,
    order: &[usize],
    tag: &dyn Fn(&Target) -> String,
) -> Result<(), String> {
    let Some(persist) = &plan.persist else {
        return Ok(());
    };
    let (base, sync) = (persist.data.as_path(), persist.sync);
    let sync_label = sync.label();
    for (key, name, suffix, size, divide) in PERSISTED_RUNS {
        if !plan.wanted_persisted(key) {
            continue;
        }
        for &i in order {
            let t = &mut targets[i];
            let who = t.name();
            let count = (plan.count / divide / t.driver.divisor()).max(1);
            persisted_one(t, plan, rep, tag, name, &|d, out| {
                let tp = persisted_throughput(
                    d,
                    base,
                    who,
                    (key, suffix, size, count, plan.window),
                    sync,
                    out,
                )?;
                let wa = out
                    .figures
                    .iter()
                    .find(|(k, _)| k.starts_with("persisted_write_per_payload"))
                    .map_or(0.0, |(_, x)| *x);
                Ok(vec![format!(
                    "{}  sync {sync_label}, {wa:.2} B written per payload B",
                    run_line(name, size, &tp)
                )])
            })?;
            // Persisted as a fraction of the same broker's in-memory run, this repetition.
            let (mem, disk) = (
                t.figures.get(&format!("msgs_per_sec_{suffix}"), rep),
                t.figures
                    .get(&format!("persisted_msgs_per_sec_{suffix}"), rep),
            );
            if let (Some(m), Some(p)) = (mem, disk) {
                if m > 0.0 {
                    t.figures
                        .add(format!("persisted_fraction_of_memory_{suffix}"), rep, p / m);
                    plan.say(format!(
                        "{}{name}: {:.0}% of the in-memory 1->1",
                        tag(t),
                        100.0 * p / m
                    ));
                }
            }
        }
    }
    // Under `always`, then under `--sync` (unless that is `always` too).
    let mut policies = vec![SyncMode::Always];
    if sync != SyncMode::Always {
        policies.push(sync);
    }
    if plan.wanted_persisted("confirm") {
        for size in [(64, "64b"), (1024, "1kib")] {
            for &sync in &policies {
                for &i in order {
                    let t = &mut targets[i];
                    let who = t.name();
                    persisted_one(t, plan, rep, tag, "confirmed", &|d, out| {
                        confirm(d, base, who, size, sync, out).map(|l| vec![l])
                    })?;
                }
            }
        }
    }
    if plan.wanted_persisted("paced") {
        for &sync in &policies {
            for &i in order {
                let t = &mut targets[i];
                let who = t.name();
                persisted_one(t, plan, rep, tag, "paced", &|d, out| {
                    paced(d, base, who, sync, out).map(|l| vec![l])
                })?;
            }
        }
    }
    if plan.wanted_persisted("gib") {
        // Stored under an interval even when --sync is always: 1 GiB one sync at a time
        // would measure the disk, not the restart.
        let sync = match sync {
            SyncMode::Always => SyncMode::Every(1000),
            s => s,
        };
        for &i in order {
            let t = &mut targets[i];
            let who = t.name();
            persisted_one(t, plan, rep, tag, "1 GiB stored", &|d, out| {
                gib(d, base, who, sync, plan.window, out)
            })?;
        }
    }
    Ok(())
}
