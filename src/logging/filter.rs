//! `RUST_LOG`, read the way env_logger read it: comma-separated directives, each a level
//! (`warn`), a target prefix (`mote::server`, meaning every level) or both
//! (`mote::server=debug`); the longest matching prefix wins and no match means off.
//! env_logger's `/text` (only messages containing `text`) is not kept: it is ignored, with a
//! warning.

use log::{Level, LevelFilter};

/// Which lines are written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    /// In the order given: of those matching a target, the longest name wins, the last one
    /// of equal length.
    directives: Vec<Directive>,
}

#[derive(Debug, PartialEq, Eq)]
struct Directive {
    /// A target prefix; `None` applies to every target.
    name: Option<String>,
    level: LevelFilter,
}

impl Filter {
    /// Reads `spec`, skipping the directives it cannot read; returns a message for each.
    pub(crate) fn parse(spec: &str) -> (Filter, Vec<String>) {
        let mut errors = Vec::new();
        let mods = match spec.split_once('/') {
            Some((mods, text)) => {
                errors.push(format!(
                    "RUST_LOG: /{text} (a message filter) is not supported"
                ));
                mods
            }
            None => spec,
        };
        let mut directives = Vec::new();
        for d in mods.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let (name, level) = match d.split_once('=') {
                None => match d.parse() {
                    Ok(level) => (None, level),
                    Err(_) => (Some(d), LevelFilter::max()),
                },
                Some((name, "")) => (Some(name), LevelFilter::max()),
                Some((name, level)) => match level.trim().parse() {
                    Ok(level) => (Some(name), level),
                    Err(_) => {
                        errors.push(format!(
                            "RUST_LOG: {level:?} in {d:?} is not off, error, warn, info, debug or trace"
                        ));
                        continue;
                    }
                },
            };
            directives.push(Directive {
                name: name.map(|n| n.trim().to_owned()),
                level,
            });
        }
        if directives.is_empty() {
            directives.push(Directive {
                name: None,
                level: LevelFilter::Error,
            });
        }
        (Filter { directives }, errors)
    }

    /// Whether lines of `level` from `target` pass.
    #[cfg(test)]
    pub(crate) fn enabled(&self, level: Level, target: &str) -> bool {
        self.enabled_in(level, ("", target))
    }

    /// Whether lines of `level` pass from the target that is `head` followed by `tail` (see
    /// [`super::public_target`]).
    pub(crate) fn enabled_in(&self, level: Level, (head, tail): (&str, &str)) -> bool {
        let mut best: Option<&Directive> = None;
        for d in &self.directives {
            let len = d.name.as_ref().map_or(0, String::len);
            let longer = best.is_none_or(|b| len >= b.name.as_ref().map_or(0, String::len));
            if longer && d.name.as_deref().is_none_or(|n| starts_with(head, tail, n)) {
                best = Some(d);
            }
        }
        best.is_some_and(|d| level <= d.level)
    }

    /// The most verbose level any target gets (for [`log::set_max_level`]).
    pub(crate) fn max_level(&self) -> LevelFilter {
        self.directives
            .iter()
            .map(|d| d.level)
            .max()
            .unwrap_or(LevelFilter::Off)
    }
}

/// Whether `head` followed by `tail` starts with `prefix`, without joining them.
fn starts_with(head: &str, tail: &str, prefix: &str) -> bool {
    match prefix.strip_prefix(head) {
        Some(rest) => tail.starts_with(rest),
        None => head.starts_with(prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(spec: &str) -> Filter {
        let (f, errors) = Filter::parse(spec);
        assert!(errors.is_empty(), "{errors:?}");
        f
    }

    #[test]
    fn a_split_target_matches_as_the_joined_name() {
        let f = filter("warn,mote::server=debug,mote::cli=error");
        // mote-core's module mote_core::server is shown and filtered as mote::server.
        let server = super::super::public_target("mote_core::server::conn");
        assert_eq!(server, ("mote", "::server::conn"));
        assert!(f.enabled_in(Level::Debug, server));
        let engine = super::super::public_target("mote_core::engine");
        assert!(!f.enabled_in(Level::Info, engine));
        assert!(f.enabled_in(Level::Warn, engine));
        let cli = super::super::public_target("mote_cli::serve");
        assert_eq!(cli, ("mote::cli", "::serve"));
        assert!(!f.enabled_in(Level::Warn, cli));
        assert!(f.enabled_in(Level::Error, cli));
        // Other crates are matched as they are.
        assert!(!f.enabled_in(Level::Info, super::super::public_target("mote_sdk::client")));
        assert!(super::starts_with("mote", "::server", "mo"));
        assert!(!super::starts_with("mote", "::server", "mote_sdk"));
    }

    #[test]
    fn a_level_applies_to_every_target() {
        let f = filter("warn");
        assert!(f.enabled(Level::Error, "mote::server"));
        assert!(f.enabled(Level::Warn, "async_io"));
        assert!(!f.enabled(Level::Info, "mote"));
        assert_eq!(f.max_level(), LevelFilter::Warn);
        let f = filter("DEBUG");
        assert!(f.enabled(Level::Debug, "mote::session"));
        assert!(!f.enabled(Level::Trace, "mote::session"));
    }

    #[test]
    fn the_longest_prefix_wins_and_no_match_is_off() {
        let f = filter("info,mote::server=debug, mote::server::conn=off");
        assert!(f.enabled(Level::Debug, "mote::server"));
        assert!(!f.enabled(Level::Trace, "mote::server"));
        assert!(!f.enabled(Level::Error, "mote::server::conn"));
        assert!(f.enabled(Level::Info, "mote::engine"));
        assert!(!f.enabled(Level::Debug, "mote::engine"));
        assert_eq!(f.max_level(), LevelFilter::Debug);

        let f = filter("mote=debug");
        assert!(f.enabled(Level::Debug, "mote::cli::serve"));
        assert!(
            f.enabled(Level::Debug, "mote_sdk::driver"),
            "a prefix, as before"
        );
        assert!(!f.enabled(Level::Error, "async_io"));

        let f = filter("mote");
        assert!(f.enabled(Level::Trace, "mote::server"));

        let f = filter("mote::server=debug,info,mote=warn,error");
        assert!(f.enabled(Level::Debug, "mote::server"));
        assert!(!f.enabled(Level::Info, "mote::engine"));
        assert!(
            !f.enabled(Level::Warn, "async_io"),
            "the last of equal length"
        );
    }

    #[test]
    fn empty_means_errors_only_and_bad_directives_are_reported_and_skipped() {
        let f = filter("");
        assert!(f.enabled(Level::Error, "x"));
        assert!(!f.enabled(Level::Warn, "x"));

        let (f, errors) = Filter::parse("mote=loud,warn");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("\"loud\""), "{errors:?}");
        assert_eq!(f, filter("warn"));
    }

    #[test]
    fn a_message_filter_is_reported_and_ignored() {
        let (f, errors) = Filter::parse("info/refused");
        assert_eq!(f, filter("info"));
        assert!(errors[0].contains("/refused"), "{errors:?}");
    }
}
