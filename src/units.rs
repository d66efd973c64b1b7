//! Sizes and durations as people write them: `64K`, `8M`, `500ms`, `30s`, `7d`.

use std::time::Duration;

/// Parses a byte size: `1048576`, `64K`, `1M`, `1MiB`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 65536, 64K, 8M or 1G".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| "size is too large".to_string())
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`, `7d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 30s, 5m or 7d".to_string())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err("duration is out of range".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses where a read starts, as `mote sub --from`, `mote group seek --to` and the HTTP
/// `since=` take it: `latest`, `earliest` (or `all`), an offset, `last:N` (the newest N),
/// `ago:DURATION` or a bare duration with a unit (`10m`: stored in the last ten minutes,
/// by the broker's clock), `time:RFC3339` (`time:2026-12-01T10:00:00Z`, or with an
/// offset such as `+01:00`).
pub fn parse_start(s: &str) -> Result<mote_sdk::Start, String> {
    use mote_sdk::Start;
    const WHAT: &str = "expected latest, earliest, an offset, last:N, ago:10m (or 10m) or time:2026-12-01T10:00:00Z";
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match s {
        "latest" => Ok(Start::Latest),
        "earliest" | "all" => Ok(Start::Earliest),
        _ => {
            if let Some(n) = s.strip_prefix("last:") {
                n.parse()
                    .map(Start::Last)
                    .map_err(|_| format!("{s:?}: last:N needs a whole number"))
            } else if let Some(d) = s.strip_prefix("ago:") {
                parse_duration(d)
                    .map(|d| Start::Ago(ms(d)))
                    .map_err(|e| format!("{s:?}: {e}"))
            } else if let Some(t) = s.strip_prefix("time:") {
                parse_rfc3339(t)
                    .map(Start::Time)
                    .map_err(|e| format!("{s:?}: {e}"))
            } else if let Ok(n) = s.parse::<u64>() {
                Ok(Start::Offset(n))
            } else if s.starts_with(|c: char| c.is_ascii_digit()) {
                parse_duration(s)
                    .map(|d| Start::Ago(ms(d)))
                    .map_err(|e| format!("{s:?}: {e}; {WHAT}"))
            } else {
                Err(format!("{s:?}: {WHAT}"))
            }
        }
    }
}

/// Parses an RFC 3339 time (`2026-12-01T10:00:00Z`, `2026-12-01T10:00:00.250+01:00`; a
/// space may stand for the `T`) into milliseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let mut ms = 0;
        for (i, c) in f.bytes().take(3).enumerate().take(digits) {
            ms += u64::from(c - b'0') * [100, 10, 1][i];
        }
        frac_ms = ms;
        rest = &f[digits..];
    }
    let offset_min: i64 = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6
            && (o.starts_with('+') || o.starts_with('-'))
            && o.as_bytes()[3] == b':' =>
        {
            let hh = num(s.len() - 5..s.len() - 3)? as i64;
            let mm = num(s.len() - 2..s.len())? as i64;
            let m = hh * 60 + mm;
            if o.starts_with('-') { -m } else { m }
        }
        _ => return Err(bad()),
    };
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    let days: u64 = (1970..y)
        .map(|yy| if leap(yy) { 366 } else { 365 })
        .sum::<u64>()
        + month_days[..(mo - 1) as usize].iter().sum::<u64>()
        + (d - 1);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59);
    let ms = (secs * 1000 + frac_ms) as i64 - offset_min * 60_000;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn starts() {
        use mote_sdk::Start;
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("all"), Ok(Start::Earliest));
        assert_eq!(parse_start("17"), Ok(Start::Offset(17)));
        assert_eq!(parse_start("last:5"), Ok(Start::Last(5)));
        assert_eq!(parse_start("10m"), Ok(Start::Ago(600_000)));
        assert_eq!(parse_start("ago:1h"), Ok(Start::Ago(3_600_000)));
        assert_eq!(
            parse_start("time:2026-12-01T10:00:00Z"),
            Ok(Start::Time(1_796_119_200_000))
        );
        assert!(parse_start("soon").unwrap_err().contains("ago:10m"));
        assert!(parse_start("last:x").is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.5Z"), Ok(951_868_800_500));
        assert_eq!(
            parse_rfc3339("2024-02-29 12:00:00+01:00"),
            Ok(1_709_204_400_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T10:00:00.123-00:30"),
            Ok(1_796_121_000_123)
        );
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-13-01T00:00:00Z",
            "x026-12-01T10:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12X").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("0.5d"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(
            parse_duration("5 parsecs").unwrap_err(),
            "unknown duration unit \"parsecs\" (use ms, s, m, h or d)"
        );
        assert!(parse_duration("-1s").is_err());
    }
}
