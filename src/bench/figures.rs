//! Figures gathered over repetitions, their medians and spreads, ratios against mote,
//! and the table that shows them side by side.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every value of each figure, with the repetition it came from (0 for figures measured
/// once), keyed by mote's JSON name for it.
#[derive(Default)]
pub(crate) struct Figures(BTreeMap<String, Vec<(usize, f64)>>);

impl Figures {
    pub(crate) fn add(&mut self, key: impl Into<String>, rep: usize, x: f64) {
        self.0.entry(key.into()).or_default().push((rep, x));
    }

    /// The value measured in repetition `rep`.
    pub(crate) fn get(&self, key: &str, rep: usize) -> Option<f64> {
        self.0
            .get(key)?
            .iter()
            .find(|(r, _)| *r == rep)
            .map(|(_, x)| *x)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub(crate) fn median(&self, key: &str) -> Option<f64> {
        let v = self.0.get(key)?;
        median(v.iter().map(|(_, x)| *x).collect())
    }

    /// The smallest and largest value, if the figure was measured more than once.
    pub(crate) fn range(&self, key: &str) -> Option<(f64, f64)> {
        let v = self.0.get(key).filter(|v| v.len() > 1)?;
        let lo = v.iter().map(|(_, x)| *x).fold(f64::INFINITY, f64::min);
        let hi = v.iter().map(|(_, x)| *x).fold(f64::NEG_INFINITY, f64::max);
        Some((lo, hi))
    }

    /// The median over repetitions of `self / other`, each ratio taken within one
    /// repetition, so that noise which hit both runs of a repetition cancels.
    pub(crate) fn ratio(&self, other: &Figures, key: &str) -> Option<f64> {
        let (a, b) = (self.0.get(key)?, other.0.get(key)?);
        let ratios = a
            .iter()
            .filter_map(|(rep, x)| {
                let y = b.iter().find(|(r, _)| r == rep)?.1;
                (y > 0.0).then(|| x / y)
            })
            .collect();
        median(ratios)
    }
}

pub(crate) fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    crate::sort::sort_by(&mut xs, f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// The figures shown and compared: label, JSON name.
pub(crate) const ROWS: &[(&str, &str)] = &[
    ("1->1 64 B msgs/s", "msgs_per_sec_64b"),
    ("  CPU s per million", "broker_cpu_sec_per_million_64b"),
    ("1->1 1 KiB msgs/s", "msgs_per_sec_1kib"),
    ("  CPU s per million", "broker_cpu_sec_per_million_1kib"),
    ("1->4 64 B deliveries/s", "deliveries_per_sec_fanout4"),
    ("  CPU s per million", "broker_cpu_sec_per_million_fanout4"),
    ("group x3 acked msgs/s", "msgs_per_sec_group3"),
    ("  CPU s per million", "broker_cpu_sec_per_million_group3"),
    ("  of 1->1 64 B", "group3_fraction_of_1to1"),
    ("latency p50 us", "latency_p50_us"),
    ("latency p99 us", "latency_p99_us"),
    ("latency p99.9 us", "latency_p999_us"),
    ("  broker CPU us/trip", "latency_broker_cpu_us_per_rt"),
    ("  client CPU us/trip", "latency_client_cpu_us_per_rt"),
    ("spinning p50 us", "latency_spin_p50_us"),
    ("spinning p99 us", "latency_spin_p99_us"),
    ("spinning p99.9 us", "latency_spin_p999_us"),
    ("  broker CPU us/trip", "latency_spin_broker_cpu_us_per_rt"),
    ("  client CPU us/trip", "latency_spin_client_cpu_us_per_rt"),
    ("request/reply per s", "reqrep_round_trips_per_sec"),
    ("  ping round trips/s", "ping_round_trips_per_sec"),
    ("  64 in flight, per s", "reqrep_pipelined_per_sec"),
    ("startup ms", "startup_ms"),
    ("idle RSS KiB", "idle_rss_kib"),
    ("RSS per idle sub, B", "rss_bytes_per_idle_subscriber"),
    ("peak RSS KiB", "peak_rss_kib"),
];

/// Figures whose JSON value is a whole number.
pub(crate) fn is_integer(key: &str) -> bool {
    key.starts_with("messages_") || key.ends_with("_kib")
}

/// A figure in about four significant digits: `2.41M`, `612.3k`, `95`, `0.412`.
pub(crate) fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The side-by-side table of `rows` (label, JSON name): a column per broker (mote first),
/// then mote/peer for each peer; with repetitions, a min-max line under each figure
/// measured more than once.
pub(crate) fn table(cols: &[(&str, &Figures)], rows: &[(Cow<'_, str>, &str)]) -> String {
    const LABEL: usize = 22;
    const W: usize = 15;
    let Some((_, mote)) = cols.first() else {
        return String::new();
    };
    let shown: Vec<(&str, &str)> = rows
        .iter()
        .filter(|(_, key)| cols.iter().any(|(_, f)| f.median(key).is_some()))
        .map(|(label, key)| (label.as_ref(), *key))
        .collect();
    // LABEL wide, or as wide as a longer label shown (the persisted runs' are).
    let label_w = shown.iter().map(|(l, _)| l.len()).fold(LABEL, usize::max);
    let peers = &cols[1..];
    // Each column as wide as its header needs, and at least W.
    let w = |name: &str| W.max(name.len() + 7);
    let mut out = String::new();
    let _ = write!(out, "{:<label_w$}", "");
    for (name, _) in cols {
        let _ = write!(out, "{name:>W$}");
    }
    for (name, _) in peers {
        let _ = write!(out, "{:>1$}", format!("mote/{name}"), w(name));
    }
    out.push('\n');
    for (label, key) in shown {
        let _ = write!(out, "{label:<label_w$}");
        for (_, f) in cols {
            let _ = write!(out, "{:>W$}", f.median(key).map_or("-".into(), short));
        }
        for (name, f) in peers {
            let r = mote
                .ratio(f, key)
                .map_or("-".into(), |r| format!("{r:.2}x"));
            let _ = write!(out, "{r:>0$}", w(name));
        }
        out.push('\n');
        if cols.iter().any(|(_, f)| f.range(key).is_some()) {
            let _ = write!(out, "{:<label_w$}", "    min-max");
            for (_, f) in cols {
                let _ = write!(
                    out,
                    "{:>W$}",
                    f.range(key).map_or(String::new(), |(lo, hi)| format!(
                        "{}-{}",
                        short(lo),
                        short(hi)
                    ))
                );
            }
            out.push('\n');
        }
    }
    out
}
