//! What a bench run prints: one JSON object, or a table of medians and ratios with
//! anything that went wrong.

use serde_json::json;

use super::Plan;
use super::figures::{self, Figures};
use super::target::{Role, Target};

/// Prints the figures of `targets` (mote first) as [`run`](fn@super::run) left them: one JSON object on
/// stdout with `--json`, else a table on stderr when there is more than one broker or
/// repetition (single runs printed their lines as they went). `skipped` names the brokers
/// that could not be measured, with why.
pub fn report(targets: &[Target], skipped: &[(&str, String)], plan: &Plan) {
    if plan.json {
        println!("{}", json_report(targets, skipped, plan));
    } else if targets.len() > 1 || plan.repeat > 1 {
        summary(targets, skipped, plan);
    }
}

/// One JSON object: mote's figures under their names, each peer's prefixed with its name,
/// `ratio_<figure>_vs_<peer>` = mote / peer; medians when repeated, with `spread`.
fn json_report(targets: &[Target], skipped: &[(&str, String)], plan: &Plan) -> serde_json::Value {
    let num = |x: f64| json!((x * 1000.0).round() / 1000.0);
    let mut report = serde_json::Map::new();
    let mut spread = serde_json::Map::new();
    report.insert("repeat".into(), json!(plan.repeat));
    #[cfg(feature = "bench-persist")]
    if let Some(p) = &plan.persist {
        report.insert("persisted_sync".into(), json!(p.sync.label()));
    }
    for t in targets {
        let prefix = match t.role {
            Role::Mote => String::new(),
            Role::Encrypted if targets.len() == 1 => String::new(),
            _ => format!("{}_", t.name()),
        };
        report.insert(format!("{prefix}broker"), json!(t.addr.to_string()));
        if let Some(v) = &t.version {
            report.insert(format!("{prefix}version"), json!(v));
        }
        for key in t.figures.keys() {
            let Some(m) = t.figures.median(key) else {
                continue;
            };
            let v = if figures::is_integer(key) {
                json!(m.round() as u64)
            } else {
                num(m)
            };
            report.insert(format!("{prefix}{key}"), v);
            if let Some((lo, hi)) = t.figures.range(key) {
                spread.insert(format!("{prefix}{key}"), json!([num(lo), num(hi)]));
            }
        }
        report.insert(format!("{prefix}missed_messages"), json!(t.missed));
        if t.figures.median("rss_bytes_per_idle_subscriber").is_some() && t.role == Role::Mote {
            report.insert("idle_subscribers".into(), json!(plan.idle_n));
        }
        if !t.errors.is_empty() {
            report.insert(format!("{prefix}errors"), json!(t.errors));
        }
        if !t.notes.is_empty() {
            report.insert(format!("{prefix}log_notes"), json!(t.notes));
        }
        #[cfg(feature = "bench-persist")]
        if !t.persisted.settings.is_empty() {
            let settings = &t.persisted.settings;
            report.insert(format!("{prefix}persisted_settings"), json!(settings));
        }
        if t.divided() {
            report.insert(
                format!("{prefix}count_fraction"),
                num(1.0 / t.driver.divisor() as f64),
            );
        }
    }
    if let Some(mote) = targets.first() {
        for t in &targets[1..] {
            for (_, key) in plan.rows() {
                if let Some(r) = mote.figures.ratio(&t.figures, key) {
                    report.insert(format!("ratio_{key}_vs_{}", t.name()), num(r));
                }
            }
            // The cost of encryption: encrypted throughput as a fraction of plaintext.
            if t.role == Role::Encrypted {
                for suffix in ["64b", "1kib"] {
                    let key = format!("msgs_per_sec_{suffix}");
                    if let Some(r) = t.figures.ratio(&mote.figures, &key) {
                        report.insert(format!("encrypted_fraction_of_plaintext_{suffix}"), num(r));
                    }
                }
            }
        }
    }
    for (peer, why) in skipped {
        report.insert(format!("{}_skipped", peer), json!(why));
    }
    if !spread.is_empty() {
        report.insert("spread".into(), serde_json::Value::Object(spread));
    }
    serde_json::Value::Object(report)
}

/// The human summary: the table, then anything that went wrong.
fn summary(targets: &[Target], skipped: &[(&str, String)], plan: &Plan) {
    let cols: Vec<(&str, &Figures)> = targets.iter().map(|t| (t.name(), &t.figures)).collect();
    plan.say("");
    if plan.repeat > 1 {
        plan.say(format!("medians of {} repetitions:", plan.repeat));
    }
    plan.say(figures::table(&cols, &plan.rows()).trim_end());
    if targets.len() > 1 {
        plan.say(
            "ratios are mote/peer, medians of per-repetition ratios: above 1 is better for mote \
             in throughput, below 1 in CPU, latency and memory",
        );
    }
    if let (Some(mote), Some(enc)) = (
        targets.iter().find(|t| t.role == Role::Mote),
        targets.iter().find(|t| t.role == Role::Encrypted),
    ) {
        for (suffix, label) in [("64b", "64 B"), ("1kib", "1 KiB")] {
            let key = format!("msgs_per_sec_{suffix}");
            if let Some(r) = enc.figures.ratio(&mote.figures, &key) {
                plan.say(format!(
                    "encrypted throughput at {label}: {:.0}% of plaintext",
                    r * 100.0
                ));
            }
        }
    }
    for t in targets {
        if t.divided() {
            plan.say(format!(
                "{} runs sent 1/{} of the messages",
                t.name(),
                t.driver.divisor()
            ));
        }
        if t.missed > 0 {
            plan.say(format!("{}: {} messages missed", t.name(), t.missed));
        }
        for e in &t.errors {
            plan.say(format!("{}: failed: {e}", t.name()));
        }
        for n in &t.notes {
            plan.say(format!("{} log: {n}", t.name()));
        }
        #[cfg(feature = "bench-persist")]
        for n in &t.persisted.settings {
            plan.say(format!("{}: {n}", t.name()));
        }
    }
    for (peer, why) in skipped {
        plan.say(format!("{}: skipped: {why}", peer));
    }
}
