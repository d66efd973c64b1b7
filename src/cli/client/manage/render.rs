//! How the management commands show the broker's JSON to people: aligned tables,
//! `key value` lines, sizes and durations in units that read well.

use serde_json::Value;

/// A string value as it is, anything else as JSON.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub(super) fn num(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), |n| n.to_string())
}

pub(super) fn rate(v: &Value) -> String {
    v.as_f64().map_or_else(|| text(v), |r| format!("{r:.1}"))
}

pub(super) fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

pub(super) fn bytes(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), human_bytes)
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// `850 ms`, `12 s`, `5 min`, `3 h`, `2 d`.
pub(super) fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1_000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// Where a setting comes from: its `[topics]` pattern, or the broker's default.
pub(super) fn source(v: &Value) -> String {
    match v.as_str() {
        Some(p) => format!("[topics.\"{p}\"]"),
        None => "default".into(),
    }
}

/// A setting's value as the config file would write it.
pub(super) fn setting(key: &str, v: &Value) -> String {
    match (key, v) {
        (_, Value::Null) => "unlimited".into(),
        ("retain_bytes", Value::Number(n)) => n.as_u64().map_or(n.to_string(), human_bytes),
        ("max_age_ms", Value::Number(n)) => n.as_u64().map_or(n.to_string(), duration_ms),
        _ => text(v),
    }
}

/// Rows under a head, each column as wide as its widest cell; `right` columns are aligned
/// right. The last column is not padded.
pub(super) fn table(head: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let last = i + 1 == cells.len();
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            if right.get(i) == Some(&true) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if !last {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut head.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// `key  value` lines, keys padded to the widest.
pub(super) fn pairs(lines: &[(String, String)], indent: &str) -> String {
    let w = lines
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(k, v)| format!("{indent}{k:w$}  {v}\n"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["TOPIC", "STORED", "SETTINGS"],
            &[
                vec!["a".into(), "5".into(), "default".into()],
                vec!["sensors/kitchen".into(), "1200".into(), "x".into()],
            ],
            &[false, true, false],
        );
        assert_eq!(
            t,
            "TOPIC            STORED  SETTINGS\n\
             a                     5  default\n\
             sensors/kitchen    1200  x\n"
        );
    }

    #[test]
    fn units_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(90_000), "90 s");
        assert_eq!(duration_ms(600_000), "10 min");
        assert_eq!(duration_ms(7 * 86_400_000), "7 d");
        assert_eq!(setting("max_age_ms", &Value::Null), "unlimited");
        assert_eq!(source(&Value::Null), "default");
        assert_eq!(source(&"sensors/#".into()), "[topics.\"sensors/#\"]");
    }
}
