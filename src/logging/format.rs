//! One log line: `[2025-01-31T12:00:00.123Z WARN  mote::server] message`, the layout
//! env_logger gave, with a UTC timestamp unless journald adds its own.

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime};

use log::Level;

/// The longest line written, newline included; longer messages are cut at a char boundary
/// so that one line can never take the whole queue.
pub(crate) const MAX_LINE: usize = 4096;

/// How lines look where they go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Style {
    /// Start each line with a UTC timestamp.
    pub(crate) timestamp: bool,
    /// Start each line with a syslog priority (`<4>`), which journald turns into the
    /// entry's priority (`journalctl -p warning`) and removes.
    pub(crate) priority: bool,
}

impl Style {
    /// journald when stderr is the stream systemd set up for us (`JOURNAL_STREAM` names its
    /// device and inode; a shell started by a service inherits the variable, not the stream),
    /// a terminal or file otherwise.
    pub(crate) fn detect() -> Style {
        let journald = std::env::var("JOURNAL_STREAM").is_ok_and(|v| stderr_is(&v));
        Style {
            timestamp: !journald,
            priority: journald,
        }
    }
}

/// Whether stderr is the `DEVICE:INODE` in `journal_stream`.
fn stderr_is(journal_stream: &str) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let meta = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    match meta {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// Appends one line (with its newline) to `out`, cut to [`MAX_LINE`].
pub(crate) fn line(
    out: &mut String,
    style: Style,
    level: Level,
    (head, tail): (&str, &str),
    message: fmt::Arguments<'_>,
) {
    let start = out.len();
    if style.priority {
        let priority = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let _ = write!(out, "<{priority}>");
    }
    out.push('[');
    if style.timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        timestamp(out, since_epoch);
        out.push(' ');
    }
    let _ = write!(out, "{level:<5} {head}{tail}] {message}");
    if out.len() - start >= MAX_LINE {
        let mut end = start + MAX_LINE - "…\n".len();
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out.push('\n');
}

/// RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`.
pub(crate) fn timestamp(out: &mut String, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        since_epoch.subsec_millis()
    );
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: u64) -> String {
        let mut s = String::new();
        timestamp(&mut s, Duration::from_millis(ms));
        s
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(ts(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(ts(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn lines_keep_env_loggers_layout() {
        let plain = Style {
            timestamp: false,
            priority: false,
        };
        let mut s = String::new();
        line(
            &mut s,
            plain,
            Level::Info,
            ("mote", "::server"),
            format_args!("hi {}", 1),
        );
        assert_eq!(s, "[INFO  mote::server] hi 1\n");

        let journald = Style {
            timestamp: false,
            priority: true,
        };
        s.clear();
        line(
            &mut s,
            journald,
            Level::Warn,
            ("", "mote"),
            format_args!("x"),
        );
        assert_eq!(s, "<4>[WARN  mote] x\n");

        let stamped = Style {
            timestamp: true,
            priority: false,
        };
        s.clear();
        line(
            &mut s,
            stamped,
            Level::Error,
            ("", "mote"),
            format_args!("x"),
        );
        // [YYYY-MM-DDTHH:MM:SS.mmmZ ERROR mote] x
        assert_eq!(s.len(), 1 + 24 + 1 + "ERROR mote] x\n".len(), "{s}");
        assert!(s.ends_with("Z ERROR mote] x\n"), "{s}");
    }

    #[test]
    fn long_lines_are_cut_at_a_char_boundary() {
        let style = Style {
            timestamp: false,
            priority: false,
        };
        let long = "é".repeat(MAX_LINE);
        let mut s = String::from("kept");
        line(
            &mut s,
            style,
            Level::Info,
            ("", "t"),
            format_args!("{long}"),
        );
        assert!(s.len() - "kept".len() <= MAX_LINE, "{}", s.len());
        assert!(s.starts_with("kept[INFO  t] éé"));
        assert!(s.ends_with("é…\n"));
    }
}
