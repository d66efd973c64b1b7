//! The config file's `[topics."PATTERN"]` tables: per-topic settings by pattern.
//!
//! ```toml
//! [topics."sensors/#"]
//! persist = true
//! retain-messages = 1000000   # or "unlimited"
//! retain-bytes = "512M"       # or a number of bytes, or "unlimited"
//! max-age = "7d"              # or "unlimited"
//! discard = "old"             # or "new"
//! idle-expiry = "10m"         # or "off": see DEFAULT_IDLE_EXPIRY_MS for the default
//! schema = "schemas/s.json"   # a JSON schema its payloads must match (`super::schemas`)
//! ```
//!
//! This file only reads the tables into [`TopicPatterns`]; which pattern wins for a topic
//! is the engine's rule (`mote::engine::settings`).

use mote::engine::settings::{Discard, PatternSettings, TopicPatterns};
use mote_sdk::Filter;

use super::args::{self, CliError};

/// The keys of a `[topics."PATTERN"]` table, for error messages.
const KEYS: &str = "persist, retain-messages, retain-bytes, max-age, discard, idle-expiry, schema";

/// The config file's `topics` section (`None`: there is none, every topic has the defaults).
pub(crate) fn topics(section: Option<&toml::Value>) -> Result<TopicPatterns, CliError> {
    let Some(section) = section else {
        return Ok(TopicPatterns::default());
    };
    let Some(section) = section.as_table() else {
        return Err(CliError(
            "[topics] in the config file must be tables: [topics.\"PATTERN\"]".into(),
        ));
    };
    let mut patterns = Vec::with_capacity(section.len());
    for (pattern, v) in section {
        let name = format!("[topics.{pattern:?}]");
        let filter = Filter::new(pattern)
            .map_err(|e| CliError(format!("{name}: not a topic pattern: {e}")))?;
        let t = v
            .as_table()
            .ok_or_else(|| CliError(format!("{name} must be a table with keys {KEYS}")))?;
        let settings = settings(pattern, t).map_err(|e| CliError(format!("{name} {e}")))?;
        patterns.push((filter, settings));
    }
    TopicPatterns::new(patterns).map_err(|e| CliError(format!("[topics]: {e}")))
}

/// The keys one table sets.
fn settings(pattern: &str, t: &toml::Table) -> Result<PatternSettings, String> {
    let mut s = PatternSettings::default();
    for (key, v) in t {
        let err = |m: &str| format!("{key}: {m}");
        match key.as_str() {
            "persist" => {
                s.persist = Some(v.as_bool().ok_or_else(|| err("must be true or false"))?);
            }
            "retain-messages" => {
                s.retain_messages = Some(bound(key, v, |v| {
                    v.as_integer()
                        .and_then(|i| u64::try_from(i).ok())
                        .ok_or_else(|| "must be a whole number such as 1000000".into())
                })?);
            }
            "retain-bytes" => {
                s.retain_bytes = Some(bound(key, v, |v| match v {
                    toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
                    toml::Value::String(s) => args::parse_size(s).map(|n| n as u64),
                    _ => Err("must be a size such as \"512M\"".into()),
                })?);
            }
            "max-age" => {
                s.max_age_ms = Some(bound(key, v, |v| {
                    let s = v
                        .as_str()
                        .ok_or_else(|| "must be a duration such as \"7d\"".to_string())?;
                    let d = args::parse_duration(s)?;
                    u64::try_from(d.as_millis()).map_err(|_| "is too long".into())
                })?);
            }
            "idle-expiry" => {
                s.idle_expiry_ms = Some(match v.as_str() {
                    Some("off") => None,
                    Some(text) => {
                        let d = args::parse_duration(text)
                            .map_err(|e| err(&format!("{e}, or \"off\"")))?;
                        let ms = u64::try_from(d.as_millis()).map_err(|_| err("is too long"))?;
                        if ms == 0 {
                            return Err(err(
                                "0 would remove topics at once; to keep idle topics, use \"off\"",
                            ));
                        }
                        Some(ms)
                    }
                    None => return Err(err("must be a duration such as \"10m\", or \"off\"")),
                });
            }
            // Loaded by `super::schemas`, which needs the config file's path.
            "schema" => {
                if !v.is_str() {
                    return Err(err(
                        "must be the path of a JSON schema file, relative to the config file",
                    ));
                }
            }
            "discard" => {
                s.discard = Some(match v.as_str() {
                    Some("old") => Discard::Old,
                    Some("new") => Discard::New,
                    _ => return Err(err("must be \"old\" or \"new\"")),
                });
            }
            _ if v.is_table() => {
                return Err(err(&format!(
                    "is not a key ({KEYS}); a pattern with more levels is quoted whole: [topics.\"{pattern}/{key}\"]"
                )));
            }
            _ => return Err(format!("unknown key {key:?} ({KEYS})")),
        }
    }
    Ok(s)
}

/// A retention bound: `"unlimited"` (`None`), or what `parse` reads from `v`, at least 1.
fn bound(
    key: &str,
    v: &toml::Value,
    parse: impl Fn(&toml::Value) -> Result<u64, String>,
) -> Result<Option<u64>, String> {
    if v.as_str() == Some("unlimited") {
        return Ok(None);
    }
    match parse(v) {
        Ok(0) => Err(format!(
            "{key}: 0 would keep nothing; to keep nothing on disk, set persist = false"
        )),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(format!("{key}: {e}, or \"unlimited\"")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use mote::engine::settings::{Source, TopicSettings};

    fn parse(text: &str) -> Result<TopicPatterns, String> {
        let t: toml::Table = text.parse().unwrap();
        topics(t.get("topics")).map_err(|e| e.0)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn every_key() {
        let p = parse(
            r#"
            [topics."sensors/#"]
            persist = true
            retain-messages = 1_000_000
            retain-bytes = "512M"
            max-age = "7d"
            discard = "new"
            idle-expiry = "1m"
            [topics."debug/#"]
            persist = false
            retain-bytes = 4096
            [topics."audit/+"]
            retain-messages = "unlimited"
            retain-bytes = "unlimited"
            max-age = "unlimited"
            discard = "old"
            idle-expiry = "off"
            "#,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        let r = p.resolve("sensors/a", &TopicSettings::new(false));
        let want = TopicSettings {
            persist: true,
            retain_messages: Some(1_000_000),
            retain_bytes: Some(512 << 20),
            max_age_ms: Some(7 * 86_400_000),
            discard: Discard::New,
            idle_expiry_ms: Some(60_000),
        };
        assert_eq!(r.settings(), want);
        assert_eq!(r.max_age_ms.source.to_string(), "[topics.\"sensors/#\"]");
        let r = p.resolve("debug/x", &TopicSettings::new(true));
        assert!(!r.persist.value);
        assert_eq!(r.retain_bytes.value, Some(4096));
        assert_eq!(r.discard.source, Source::Default);
        let (_, audit) = p.iter().find(|(f, _)| f.as_str() == "audit/+").unwrap();
        assert_eq!(
            *audit,
            PatternSettings {
                persist: None,
                retain_messages: Some(None),
                retain_bytes: Some(None),
                max_age_ms: Some(None),
                discard: Some(Discard::Old),
                idle_expiry_ms: Some(None),
            }
        );
    }

    #[test]
    fn no_section_and_empty_tables() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("[topics]").unwrap().is_empty());
        let p = parse("[topics.\"a\"]").unwrap();
        let r = p.resolve("a", &TopicSettings::new(true));
        assert_eq!(r.persist.source, Source::Default);
    }

    #[test]
    fn bad_values_name_the_table_and_key() {
        let cases = [
            (
                "[topics.\"sensors/#\"]\nretain-bytes = \"512X\"",
                "[topics.\"sensors/#\"] retain-bytes: unknown size unit \"x\" (use K, M or G), or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nretain-bytes = true",
                "[topics.\"s\"] retain-bytes: must be a size such as \"512M\", or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nretain-bytes = -1",
                "[topics.\"s\"] retain-bytes: must be a size such as \"512M\", or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nretain-messages = \"lots\"",
                "[topics.\"s\"] retain-messages: must be a whole number such as 1000000, or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nretain-messages = -5",
                "[topics.\"s\"] retain-messages: must be a whole number such as 1000000, or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nretain-messages = 0",
                "[topics.\"s\"] retain-messages: 0 would keep nothing; to keep nothing on disk, set persist = false",
            ),
            (
                "[topics.\"s\"]\nretain-bytes = \"0K\"",
                "[topics.\"s\"] retain-bytes: 0 would keep nothing; to keep nothing on disk, set persist = false",
            ),
            (
                "[topics.\"s\"]\nmax-age = \"7 weeks\"",
                "[topics.\"s\"] max-age: unknown duration unit \"weeks\" (use ms, s, m, h or d), or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nmax-age = 7",
                "[topics.\"s\"] max-age: must be a duration such as \"7d\", or \"unlimited\"",
            ),
            (
                "[topics.\"s\"]\nmax-age = \"0.1ms\"",
                "[topics.\"s\"] max-age: 0 would keep nothing; to keep nothing on disk, set persist = false",
            ),
            (
                "[topics.\"s\"]\nidle-expiry = 600",
                "[topics.\"s\"] idle-expiry: must be a duration such as \"10m\", or \"off\"",
            ),
            (
                "[topics.\"s\"]\nidle-expiry = \"0s\"",
                "[topics.\"s\"] idle-expiry: 0 would remove topics at once; to keep idle topics, use \"off\"",
            ),
            (
                "[topics.\"s\"]\npersist = \"yes\"",
                "[topics.\"s\"] persist: must be true or false",
            ),
            (
                "[topics.\"s\"]\ndiscard = \"oldest\"",
                "[topics.\"s\"] discard: must be \"old\" or \"new\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "{text}");
        }
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        assert_eq!(
            error("[topics.\"s\"]\nretain = 5"),
            "[topics.\"s\"] unknown key \"retain\" (persist, retain-messages, retain-bytes, max-age, discard, idle-expiry, schema)"
        );
        // An unquoted pattern with levels: TOML reads it as nested tables.
        assert_eq!(
            error("[topics.sensors.temp]\npersist = false"),
            "[topics.\"sensors\"] temp: is not a key (persist, retain-messages, retain-bytes, max-age, discard, idle-expiry, schema); a pattern with more levels is quoted whole: [topics.\"sensors/temp\"]"
        );
    }

    #[test]
    fn the_packaged_example_parses() {
        let file = include_str!("../../cross/debian/mote.toml");
        let start = file.find("#[topics.").unwrap();
        let text: String = file[start..]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix('#').unwrap_or(l)))
            .collect();
        let p = parse(&text).unwrap();
        assert_eq!(p.len(), 3);
        let r = p.resolve("debug/x", &TopicSettings::new(true));
        assert!(!r.persist.value);
        let r = p.resolve("sensors/x", &TopicSettings::new(false));
        assert!(r.persist.value);
        assert_eq!(r.max_age_ms.value, Some(7 * 86_400_000));
    }

    #[test]
    fn bad_patterns_and_shapes_are_refused() {
        assert_eq!(
            error("[topics.\"a/#/b\"]\npersist = false"),
            "[topics.\"a/#/b\"]: not a topic pattern: '+' and '#' must fill a whole level, and '#' must be the last level"
        );
        assert_eq!(
            error("[topics.\"a//b\"]"),
            "[topics.\"a//b\"]: not a topic pattern: topic has an empty level (a leading, trailing or double '/')"
        );
        assert_eq!(
            error("topics = 5"),
            "[topics] in the config file must be tables: [topics.\"PATTERN\"]"
        );
        assert_eq!(
            error("[topics]\n\"a/#\" = false"),
            "[topics.\"a/#\"] must be a table with keys persist, retain-messages, retain-bytes, max-age, discard, idle-expiry, schema"
        );
    }
}
