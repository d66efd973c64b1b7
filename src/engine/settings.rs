//! Per-topic settings by pattern: what a topic keeps on disk, and which pattern said so.
//!
//! The config file sets keys for MQTT-style patterns (`[topics."sensors/#"]`); each pattern
//! sets some keys and leaves the others alone. [`TopicPatterns::resolve`] gives a topic its
//! effective value for every key and where that value came from ([`Source`]): a pattern, or
//! the broker's default. The engine resolves once per topic creation and on reload, never
//! per publish. This module is pure: no TOML, no IO (the CLI parses the file).
//!
//! # Which pattern wins
//!
//! **Per key, the most specific matching pattern that sets the key wins.** A key the most
//! specific pattern leaves unset falls through to the next pattern that sets it, then to
//! the default. TOML tables have no order, so neither does this: patterns are ranked by
//! the rules below, each deciding only when every rule before it is a tie.
//!
//! 1. **Class**: an exact topic (no wildcard), then patterns with `+` but no `#`, then
//!    patterns with `#`. For `sensors/kitchen/temp`: `sensors/kitchen/temp`, then
//!    `sensors/+/temp`, then `sensors/#`. The class decides before anything else, so
//!    `+/+/+` wins over `sensors/#` too.
//! 2. **Longer literal prefix**: more whole levels before the first wildcard.
//!    `sensors/kitchen/#` wins over `sensors/#`, `sensors/kitchen/+` over `sensors/+/temp`.
//!    Levels, not characters: the two patterns compete only for a topic both match, so both
//!    prefixes are leading levels of that topic and the one with more levels is also the one
//!    with more characters. The counts always agree where it matters; levels are what a
//!    reader sees in the pattern.
//! 3. **More literal levels** in all: `sensors/+/temp/#` wins over `sensors/+/#`, and
//!    `a/+/c/+` over `a/+/+/+`.
//! 4. **More levels** in all: `a/+/#` wins over `a/#` (for `a/b`; only `a/#` matches `a`).
//!    Only `#` patterns can still differ here (two `+` patterns matching one topic have its
//!    depth), and then the longer one matches a subset of what the shorter one matches. (So
//!    not "fewer `+`": among patterns this rule compares, fewer `+` means the broader one.)
//! 5. **The earlier literal**: at the first level where one pattern has a literal and the
//!    other a wildcard, the literal wins. `a/+/c/+` wins over `a/+/+/d` for `a/b/c/d`; this
//!    is rule 2 carried on past the first wildcard.
//! 6. **The pattern text**, byte by byte. Two patterns that both match one topic and tie on
//!    rules 1–5 are the same pattern, so this never picks between two that compete; it only
//!    makes the ranking a total order, so nothing depends on the order patterns were given.
//!
//! Whenever one pattern matches a strict subset of what another matches (`a/b/#` and
//! `a/#`), the narrower one ranks first: rules 1–5 never contradict containment.
//!
//! **`$` topics**: a pattern whose first level is `+` or `#` does not match a topic starting
//! with `$`, as in MQTT and [`Filter::matches`]. `#` configures every client topic; dead
//! letters are configured by naming them: `$dead/#`.
//!
//! ```
//! # extern crate mote_core as mote; // the `mote` package re-exports it
//! use mote::engine::settings::{PatternSettings, Source, TopicPatterns, TopicSettings};
//! use mote_sdk::Filter;
//!
//! let patterns = TopicPatterns::new([
//!     (
//!         Filter::new("sensors/#").unwrap(),
//!         PatternSettings { retain_messages: Some(Some(1_000_000)), ..Default::default() },
//!     ),
//!     (
//!         Filter::new("sensors/+/debug").unwrap(),
//!         PatternSettings { persist: Some(false), ..Default::default() },
//!     ),
//! ])
//! .unwrap();
//! let r = patterns.resolve("sensors/pump/debug", &TopicSettings::new(true));
//! assert!(!r.persist.value);
//! assert_eq!(r.persist.source.pattern(), Some("sensors/+/debug"));
//! assert_eq!(r.retain_messages.value, Some(1_000_000)); // falls through to sensors/#
//! assert_eq!(r.retain_messages.source.pattern(), Some("sensors/#"));
//! assert_eq!(r.max_age_ms.source, Source::Default);
//! ```
//!
//! # Cost
//!
//! Building [`TopicPatterns`] ranks the patterns (O(P log P) for P patterns) and puts them
//! in a tree of levels (O(P × L), L ≤ 16 levels). A resolve walks that tree along the
//! topic's levels, following at each level the literal child (one hash lookup) and the `+`
//! child, and collecting the `#` patterns on the way, so it visits only patterns that could
//! still match: unrelated patterns cost nothing, and the worst case is the size of the tree.
//! It then sorts the m patterns that match (m is small) and takes each key from the first
//! that sets it. It allocates that list and nothing else; a [`Source`] shares its pattern's
//! text. Measured (`resolving_cost` below, release build, a shared and loaded 2-core x86
//! machine): 10,000 topics against 302 patterns all under one first level, with `#` and
//! `+` patterns every topic walks through, take 40 ms, 4 µs a topic; a plain scan matching
//! every pattern took 800 ms for an easier set. On a Pi, expect a few times that: about a
//! tenth of a second per reload of 10,000 topics.

use core::cmp::{Ordering, Reverse};
use core::fmt;
use core::str::Split;
use std::collections::HashMap;
use std::sync::Arc;

use mote_sdk::Filter;
use mote_sdk::topic::MAX_DEPTH;

/// What a topic does when the global disk budget is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discard {
    /// The oldest stored data goes first, to make room (counted). The default.
    #[default]
    Old,
    /// Publishes to the topic are refused with `storage full` until there is room.
    New,
}

impl Discard {
    /// The name as written in the config file: `old` or `new`.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::Old => "old",
            Discard::New => "new",
        }
    }
}

impl fmt::Display for Discard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Whether the topic's messages are written to disk (only on a broker with a data
    /// directory); otherwise the memory ring is all there is.
    pub persist: bool,
    /// Most messages kept on disk; `None`: no bound of its own (the disk budget still is).
    pub retain_messages: Option<u64>,
    /// Most bytes kept on disk; `None`: no bound of its own.
    pub retain_bytes: Option<u64>,
    /// Messages older than this many milliseconds are dropped (counted as expired); `None`:
    /// kept whatever their age.
    pub max_age_ms: Option<u64>,
    /// What happens at the global disk budget.
    pub discard: Discard,
    /// A topic with nothing stored, no subscriber and no group for this many
    /// milliseconds is removed and its name freed; `None`: never.
    pub idle_expiry_ms: Option<u64>,
}

/// The default `idle-expiry`: 10 minutes.
///
/// An idle topic holds only its name and its next offset, and the table of last offsets
/// keeps that offset when the topic goes, so reclaiming it loses nothing: a publish
/// re-creates it above its last offset. Why not busmq's 30 s: an edge broker's topics
/// are sensors that report every few minutes and subscribers that reconnect after a
/// network blip, and a topic that flickers in and out of `mote topics` between readings
/// would confuse more than the name costs. Why not never: clients that publish to ever
/// new names (a request id in the topic) would otherwise reach `--max-topics` and lock
/// everyone out of creating topics until a restart.
pub const DEFAULT_IDLE_EXPIRY_MS: u64 = 10 * 60 * 1000;

impl TopicSettings {
    /// The defaults: persisted when `persist` (the broker has a data directory), no
    /// retention bound but the global disk budget, [`Discard::Old`], idle topics removed
    /// after [`DEFAULT_IDLE_EXPIRY_MS`].
    pub fn new(persist: bool) -> TopicSettings {
        TopicSettings {
            persist,
            retain_messages: None,
            retain_bytes: None,
            max_age_ms: None,
            discard: Discard::Old,
            idle_expiry_ms: Some(DEFAULT_IDLE_EXPIRY_MS),
        }
    }
}

/// The keys one pattern sets; `None` leaves a key to less specific patterns and the default.
///
/// For the retention keys, `Some(None)` sets "no bound" explicitly (`"unlimited"` in the
/// config file), so a narrow pattern can lift a bound a broad one sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatternSettings {
    /// See [`TopicSettings::persist`].
    pub persist: Option<bool>,
    /// See [`TopicSettings::retain_messages`].
    pub retain_messages: Option<Option<u64>>,
    /// See [`TopicSettings::retain_bytes`].
    pub retain_bytes: Option<Option<u64>>,
    /// See [`TopicSettings::max_age_ms`].
    pub max_age_ms: Option<Option<u64>>,
    /// See [`TopicSettings::discard`].
    pub discard: Option<Discard>,
    /// See [`TopicSettings::idle_expiry_ms`]; `Some(None)`: never (`"off"`).
    pub idle_expiry_ms: Option<Option<u64>>,
}

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No matching pattern sets the key: the broker's default.
    Default,
    /// The pattern (its text) that set the key. Shared with the pattern list, so a resolve
    /// copies no text.
    Pattern(Arc<str>),
}

impl Source {
    /// The pattern's text, or `None` for the default.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            Source::Default => None,
            Source::Pattern(p) => Some(p),
        }
    }
}

/// `default`, or the config file's table: `[topics."sensors/#"]`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Pattern(p) => write!(f, "[topics.{p:?}]"),
        }
    }
}

/// A key's effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The effective value.
    pub value: T,
    /// The pattern that set it, or the default.
    pub source: Source,
}

/// Every key of a topic's settings, resolved, with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// See [`TopicSettings::persist`].
    pub persist: Sourced<bool>,
    /// See [`TopicSettings::retain_messages`].
    pub retain_messages: Sourced<Option<u64>>,
    /// See [`TopicSettings::retain_bytes`].
    pub retain_bytes: Sourced<Option<u64>>,
    /// See [`TopicSettings::max_age_ms`].
    pub max_age_ms: Sourced<Option<u64>>,
    /// See [`TopicSettings::discard`].
    pub discard: Sourced<Discard>,
    /// See [`TopicSettings::idle_expiry_ms`].
    pub idle_expiry_ms: Sourced<Option<u64>>,
}

impl Resolved {
    /// The effective values without their sources.
    pub fn settings(&self) -> TopicSettings {
        TopicSettings {
            persist: self.persist.value,
            retain_messages: self.retain_messages.value,
            retain_bytes: self.retain_bytes.value,
            max_age_ms: self.max_age_ms.value,
            discard: self.discard.value,
            idle_expiry_ms: self.idle_expiry_ms.value,
        }
    }
}

/// The same pattern was given twice. (TOML cannot say that; other callers can.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicatePattern(pub String);

impl fmt::Display for DuplicatePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pattern {:?} is configured twice: merge its settings into one",
            self.0
        )
    }
}

impl core::error::Error for DuplicatePattern {}

#[derive(Debug, Clone)]
struct Entry {
    filter: Filter,
    /// The filter's text, shared by every [`Source`] naming it.
    text: Arc<str>,
    settings: PatternSettings,
}

/// The configured patterns, ranked most specific first (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct TopicPatterns {
    entries: Vec<Entry>,
    /// The patterns level by level, so a resolve visits only those that can still match.
    root: Node,
}

/// One level of the pattern tree. Patterns are named by their index in the ranked list.
#[derive(Debug, Clone, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// The pattern that ends at this level.
    end: Option<usize>,
    /// The pattern that is this level followed by `#`.
    hash: Option<usize>,
}

impl Node {
    fn insert(&mut self, pattern: &str, index: usize) {
        let mut node = self;
        for level in pattern.split('/') {
            node = match level {
                // `#` is always the last level (a Filter says so).
                "#" => {
                    node.hash = Some(index);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        node.end = Some(index);
    }

    /// Adds to `out` every pattern at or below this node that matches the rest of a topic,
    /// `levels`. `root_of_dollar`: this is the root and the topic starts with `$`, which
    /// wildcards in the first level do not match.
    fn matches(&self, mut levels: Split<'_, char>, root_of_dollar: bool, out: &mut Vec<usize>) {
        if !root_of_dollar {
            out.extend(self.hash);
        }
        let Some(level) = levels.next() else {
            out.extend(self.end);
            return;
        };
        if let Some(next) = self.literal.get(level) {
            next.matches(levels.clone(), false, out);
        }
        if let Some(next) = self.plus.as_deref().filter(|_| !root_of_dollar) {
            next.matches(levels, false, out);
        }
    }
}

/// Rules 1–5 of the module docs as a sort key, compared field by field: smaller is more
/// specific.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 0: exact, 1: `+` but no `#`, 2: `#`.
    class: u8,
    /// Literal levels before the first wildcard.
    prefix: Reverse<usize>,
    literals: Reverse<usize>,
    levels: Reverse<usize>,
    /// Bit 31 - i set when level i is literal: a larger mask has its literals earlier.
    literal_mask: Reverse<u32>,
}

// Rule 5 keeps one bit per level.
const _: () = assert!(MAX_DEPTH <= 32);

fn rank(pattern: &str) -> Rank {
    let (mut class, mut prefix, mut literals, mut levels, mut mask) = (0, 0, 0, 0, 0u32);
    for (i, level) in pattern.split('/').enumerate() {
        levels += 1;
        match level {
            "#" => class = 2,
            "+" => class = class.max(1),
            _ => {
                literals += 1;
                mask |= 1 << (31 - i.min(31));
                if literals == i + 1 {
                    prefix += 1;
                }
            }
        }
    }
    Rank {
        class,
        prefix: Reverse(prefix),
        literals: Reverse(literals),
        levels: Reverse(levels),
        literal_mask: Reverse(mask),
    }
}

pub(super) fn by_specificity(a: &str, b: &str) -> Ordering {
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

impl TopicPatterns {
    /// Ranks `patterns` most specific first. The order they come in does not matter; the
    /// same pattern twice is refused.
    pub fn new(
        patterns: impl IntoIterator<Item = (Filter, PatternSettings)>,
    ) -> Result<TopicPatterns, DuplicatePattern> {
        let mut entries: Vec<Entry> = patterns
            .into_iter()
            .map(|(filter, settings)| Entry {
                text: filter.as_str().into(),
                filter,
                settings,
            })
            .collect();
        crate::sort::sort_by(&mut entries, |a, b| by_specificity(&a.text, &b.text));
        if let Some(w) = entries.windows(2).find(|w| w[0].text == w[1].text) {
            return Err(DuplicatePattern(w[0].text.to_string()));
        }
        let mut root = Node::default();
        for (i, e) in entries.iter().enumerate() {
            root.insert(&e.text, i);
        }
        Ok(TopicPatterns { entries, root })
    }

    /// How many patterns there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no pattern is configured: every topic has the defaults.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The patterns and what each sets, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = (&Filter, &PatternSettings)> {
        self.entries.iter().map(|e| (&e.filter, &e.settings))
    }

    /// `topic`'s effective settings: per key, the value of the most specific matching
    /// pattern that sets it, else `defaults`' value; each with its source.
    pub fn resolve(&self, topic: &str, defaults: &TopicSettings) -> Resolved {
        let mut persist = None;
        let mut retain_messages = None;
        let mut retain_bytes = None;
        let mut max_age_ms = None;
        let mut discard = None;
        let mut idle_expiry_ms = None;
        let mut matching = Vec::new();
        self.root
            .matches(topic.split('/'), topic.starts_with('$'), &mut matching);
        // Indices in the ranked list: ascending is most specific first.
        crate::sort::sort(&mut matching);
        for e in matching.into_iter().map(|i| &self.entries[i]) {
            let s = &e.settings;
            take(&mut persist, s.persist, &e.text);
            take(&mut retain_messages, s.retain_messages, &e.text);
            take(&mut retain_bytes, s.retain_bytes, &e.text);
            take(&mut max_age_ms, s.max_age_ms, &e.text);
            take(&mut discard, s.discard, &e.text);
            take(&mut idle_expiry_ms, s.idle_expiry_ms, &e.text);
        }
        Resolved {
            persist: or_default(persist, defaults.persist),
            retain_messages: or_default(retain_messages, defaults.retain_messages),
            retain_bytes: or_default(retain_bytes, defaults.retain_bytes),
            max_age_ms: or_default(max_age_ms, defaults.max_age_ms),
            discard: or_default(discard, defaults.discard),
            idle_expiry_ms: or_default(idle_expiry_ms, defaults.idle_expiry_ms),
        }
    }
}

/// Fills `slot` from a pattern that sets the key, unless a more specific one already did.
fn take<T>(slot: &mut Option<Sourced<T>>, set: Option<T>, pattern: &Arc<str>) {
    if slot.is_none() {
        *slot = set.map(|value| Sourced {
            value,
            source: Source::Pattern(Arc::clone(pattern)),
        });
    }
}

fn or_default<T>(slot: Option<Sourced<T>>, default: T) -> Sourced<T> {
    slot.unwrap_or(Sourced {
        value: default,
        source: Source::Default,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn sets(s: PatternSettings) -> impl Fn(&str) -> (Filter, PatternSettings) {
        move |p| (Filter::new(p).unwrap(), s)
    }

    /// Patterns that each set `retain_messages` to their position in `texts`.
    fn numbered(texts: &[&str]) -> TopicPatterns {
        TopicPatterns::new(texts.iter().enumerate().map(|(i, p)| {
            let s = PatternSettings {
                retain_messages: Some(Some(i as u64)),
                ..Default::default()
            };
            (Filter::new(p).unwrap(), s)
        }))
        .unwrap()
    }

    /// The pattern whose `retain_messages` `topic` gets, given the patterns in any order.
    fn winner(texts: &[&str], topic: &str) -> Option<String> {
        let mut seen = None;
        let mut order = texts.to_vec();
        for _ in 0..2 {
            for _ in 0..order.len() {
                let r = numbered(&order).resolve(topic, &TopicSettings::new(true));
                let got = r.retain_messages.source.pattern().map(str::to_string);
                if let Some(p) = &got {
                    let i = r.retain_messages.value.unwrap() as usize;
                    assert_eq!(order[i], p, "the value comes from its source");
                }
                if let Some(prev) = &seen {
                    assert_eq!(&got, prev, "the order of {order:?} changed the result");
                }
                seen = Some(got);
                order.rotate_left(1);
            }
            order.reverse();
        }
        seen.unwrap()
    }

    fn ranked(texts: &[&str]) -> Vec<String> {
        numbered(texts)
            .iter()
            .map(|(f, _)| f.as_str().to_string())
            .collect()
    }

    #[test]
    fn no_patterns_give_the_defaults() {
        let defaults = TopicSettings {
            retain_bytes: Some(5),
            ..TopicSettings::new(false)
        };
        let r = TopicPatterns::default().resolve("a/b", &defaults);
        assert_eq!(r.settings(), defaults);
        assert_eq!(r.persist.source, Source::Default);
        assert_eq!(r.retain_bytes.source, Source::Default);
        assert_eq!(r.discard.value, Discard::Old);
        assert!(TopicPatterns::default().is_empty());
    }

    #[test]
    fn patterns_that_do_not_match_are_ignored() {
        assert_eq!(
            winner(&["home/#", "sensors/+", "sensors/a/b"], "sensors/a"),
            Some("sensors/+".into())
        );
        assert_eq!(winner(&["home/#", "sensors/+/x"], "sensors/a"), None);
    }

    #[test]
    fn rule_1_exact_then_plus_then_hash() {
        let all = ["sensors/#", "sensors/+/temp", "sensors/kitchen/temp"];
        assert_eq!(
            winner(&all, "sensors/kitchen/temp"),
            Some("sensors/kitchen/temp".into())
        );
        assert_eq!(
            winner(&all, "sensors/hall/temp"),
            Some("sensors/+/temp".into())
        );
        assert_eq!(winner(&all, "sensors/hall/hum"), Some("sensors/#".into()));
        // The class decides before the literal prefix.
        assert_eq!(
            winner(&["sensors/#", "+/+/+"], "sensors/a/b"),
            Some("+/+/+".into())
        );
        assert_eq!(
            winner(&["sensors/kitchen/#", "+"], "sensors"),
            Some("+".into())
        );
    }

    #[test]
    fn rule_2_longer_literal_prefix() {
        assert_eq!(
            winner(
                &["sensors/#", "sensors/kitchen/#", "#"],
                "sensors/kitchen/temp"
            ),
            Some("sensors/kitchen/#".into())
        );
        assert_eq!(
            winner(
                &["sensors/+/temp", "sensors/kitchen/+"],
                "sensors/kitchen/temp"
            ),
            Some("sensors/kitchen/+".into())
        );
        // Before the count of literals: sensors/+/+/x/y has more of them.
        assert_eq!(
            winner(&["sensors/+/+/x/y", "sensors/a/+/+/+"], "sensors/a/b/x/y"),
            Some("sensors/a/+/+/+".into())
        );
    }

    #[test]
    fn rule_3_more_literal_levels() {
        assert_eq!(
            winner(&["sensors/+/#", "sensors/+/temp/#"], "sensors/a/temp/x"),
            Some("sensors/+/temp/#".into())
        );
        assert_eq!(
            winner(&["a/+/+/+", "a/+/c/+"], "a/b/c/d"),
            Some("a/+/c/+".into())
        );
        // Before the count of levels: a/+/+/# is longer, a/+/c/# has more literals.
        assert_eq!(
            winner(&["a/+/+/+/#", "a/+/c/#"], "a/b/c/d/e"),
            Some("a/+/c/#".into())
        );
    }

    #[test]
    fn rule_4_more_levels() {
        assert_eq!(winner(&["a/#", "a/+/#"], "a/b"), Some("a/+/#".into()));
        assert_eq!(
            winner(&["a/#", "a/+/#", "a/+/+/#"], "a/b/c"),
            Some("a/+/+/#".into())
        );
        assert_eq!(winner(&["a/#", "a/+/#"], "a"), Some("a/#".into()));
    }

    #[test]
    fn rule_5_the_earlier_literal() {
        assert_eq!(
            winner(&["a/+/+/d", "a/+/c/+"], "a/b/c/d"),
            Some("a/+/c/+".into())
        );
        assert_eq!(
            winner(&["+/b/+/#", "+/+/c/#"], "a/b/c/d"),
            Some("+/b/+/#".into())
        );
    }

    #[test]
    fn rule_6_the_text_makes_the_order_total() {
        // Never both matching one topic, yet ranked, whatever order they came in.
        let want = ["a/+/c", "x/+/z", "a/#", "b/#"];
        assert_eq!(ranked(&["b/#", "x/+/z", "a/#", "a/+/c"]), want);
        assert_eq!(ranked(&["a/#", "a/+/c", "b/#", "x/+/z"]), want);
    }

    #[test]
    fn the_whole_ranking() {
        let want = [
            "a/b/c", "a/b/+", "a/+/c", "a/+/+", "+/b/c", "+/+/+", "a/b/#", "a/+/c/#", "a/+/+/#",
            "a/+/#", "a/#", "+/b/#", "#",
        ];
        let mut given = want;
        given.reverse();
        assert_eq!(ranked(&given), want);
    }

    #[test]
    fn an_unset_key_falls_through() {
        let none = PatternSettings::default();
        let p = TopicPatterns::new([
            sets(PatternSettings {
                persist: Some(true),
                retain_bytes: Some(Some(1 << 30)),
                max_age_ms: Some(Some(1000)),
                ..none
            })("#"),
            sets(PatternSettings {
                retain_bytes: Some(Some(1 << 20)),
                discard: Some(Discard::New),
                ..none
            })("sensors/#"),
            sets(PatternSettings {
                persist: Some(false),
                ..none
            })("sensors/+/debug"),
            // Sets nothing: matches, changes nothing.
            sets(none)("sensors/pump/debug"),
        ])
        .unwrap();
        let r = p.resolve("sensors/pump/debug", &TopicSettings::new(true));
        let from = |s: &Source| s.pattern().map(str::to_string);
        assert_eq!(
            (r.persist.value, from(&r.persist.source)),
            (false, Some("sensors/+/debug".into()))
        );
        assert_eq!(r.retain_bytes.value, Some(1 << 20));
        assert_eq!(from(&r.retain_bytes.source), Some("sensors/#".into()));
        assert_eq!(r.discard.value, Discard::New);
        assert_eq!(from(&r.discard.source), Some("sensors/#".into()));
        assert_eq!(r.max_age_ms.value, Some(1000));
        assert_eq!(from(&r.max_age_ms.source), Some("#".into()));
        assert_eq!(
            (r.retain_messages.value, &r.retain_messages.source),
            (None, &Source::Default)
        );
        // Elsewhere only # applies.
        let r = p.resolve("home/door", &TopicSettings::new(false));
        assert!(r.persist.value);
        assert_eq!(r.retain_bytes.value, Some(1 << 30));
        assert_eq!(r.discard.source, Source::Default);
    }

    #[test]
    fn a_narrow_pattern_lifts_a_bound_explicitly() {
        let p = TopicPatterns::new([
            sets(PatternSettings {
                max_age_ms: Some(Some(7 * 86_400_000)),
                ..Default::default()
            })("#"),
            sets(PatternSettings {
                max_age_ms: Some(None),
                ..Default::default()
            })("audit/#"),
        ])
        .unwrap();
        let r = p.resolve("audit/door", &TopicSettings::new(true));
        assert_eq!(r.max_age_ms.value, None);
        assert_eq!(r.max_age_ms.source.pattern(), Some("audit/#"));
        let r = p.resolve("home/door", &TopicSettings::new(true));
        assert_eq!(r.max_age_ms.value, Some(7 * 86_400_000));
    }

    #[test]
    fn dollar_topics_are_configured_by_name() {
        let off = PatternSettings {
            persist: Some(false),
            ..Default::default()
        };
        let keep = PatternSettings {
            retain_messages: Some(Some(10)),
            ..Default::default()
        };
        let p = TopicPatterns::new([sets(off)("#"), sets(off)("+/g/t"), sets(keep)("$dead/#")])
            .unwrap();
        let r = p.resolve("$dead/g/t", &TopicSettings::new(true));
        assert!(
            r.persist.value,
            "# and +/g/t do not reach $dead: $dead persists"
        );
        assert_eq!(r.persist.source, Source::Default);
        assert_eq!(r.retain_messages.value, Some(10));
        assert!(!p.resolve("x/g/t", &TopicSettings::new(true)).persist.value);
    }

    #[test]
    fn the_same_pattern_twice_is_refused() {
        let s = PatternSettings::default();
        let e = TopicPatterns::new([sets(s)("a/#"), sets(s)("b"), sets(s)("a/#")]).unwrap_err();
        assert_eq!(e, DuplicatePattern("a/#".into()));
        assert_eq!(
            e.to_string(),
            "pattern \"a/#\" is configured twice: merge its settings into one"
        );
    }

    #[test]
    fn sources_name_their_table() {
        assert_eq!(Source::Default.to_string(), "default");
        assert_eq!(
            Source::Pattern("sensors/#".into()).to_string(),
            "[topics.\"sensors/#\"]"
        );
        assert_eq!(Discard::New.to_string(), "new");
    }

    /// Every pattern of up to `depth` levels taken from `levels`, and each of them followed
    /// by `#`, and `#`.
    fn all_patterns(levels: &[&str], depth: usize) -> Vec<String> {
        let mut same_depth: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        let mut out = same_depth.clone();
        for _ in 1..depth {
            same_depth = same_depth
                .iter()
                .flat_map(|p| levels.iter().map(move |l| format!("{p}/{l}")))
                .collect();
            out.extend(same_depth.iter().cloned());
        }
        let with_hash: Vec<String> = out.iter().map(|p| format!("{p}/#")).collect();
        out.extend(with_hash);
        out.push("#".into());
        out
    }

    /// The tree finds exactly the patterns `Filter::matches` says match, `$` rule included.
    #[test]
    fn the_tree_matches_like_filters() {
        let patterns = all_patterns(&["a", "b", "$a", "+"], 3);
        let p = numbered(&patterns.iter().map(String::as_str).collect::<Vec<_>>());
        let mut topics = all_patterns(&["a", "b", "$a"], 4);
        topics.retain(|t| !t.contains('#'));
        for topic in &topics {
            let mut found = Vec::new();
            p.root
                .matches(topic.split('/'), topic.starts_with('$'), &mut found);
            found.sort_unstable();
            let want: Vec<usize> = (0..p.entries.len())
                .filter(|&i| p.entries[i].filter.matches(topic))
                .collect();
            assert_eq!(found, want, "{topic}");
        }
    }

    /// Whenever one pattern matches a strict subset of what another matches, it ranks first.
    #[test]
    fn narrower_patterns_always_rank_first() {
        let patterns = all_patterns(&["a", "b", "$a", "+"], 4);
        let filters: Vec<Filter> = patterns.iter().map(|p| Filter::new(p).unwrap()).collect();
        let mut pairs = 0;
        for narrow in &filters {
            for wide in &filters {
                if narrow != wide && wide.covers(narrow) && !narrow.covers(wide) {
                    pairs += 1;
                    assert_eq!(
                        by_specificity(narrow.as_str(), wide.as_str()),
                        Ordering::Less,
                        "{narrow} is narrower than {wide}"
                    );
                }
            }
        }
        assert!(pairs > 1000, "{pairs} pairs checked");
    }

    /// Run by hand: `cargo test --release --lib resolving_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn resolving_cost() {
        // All under one first level, and a `+` every topic goes through.
        let mut patterns = vec!["#".to_string(), "site/+/+/#".to_string()];
        for i in 0..100 {
            patterns.push(format!("site/line{i}/#"));
            patterns.push(format!("site/line{i}/+/temp"));
            patterns.push(format!("site/+/dev{i}/+"));
        }
        let texts: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let p = numbered(&texts);
        let topics: Vec<String> = (0..10_000)
            .map(|i| format!("site/line{}/dev{}/temp", i % 120, i % 37))
            .collect();
        let defaults = TopicSettings::new(true);
        let start = std::time::Instant::now();
        let mut set = 0;
        for t in &topics {
            set += usize::from(p.resolve(t, &defaults).retain_messages.source != Source::Default);
        }
        println!(
            "{} topics x {} patterns: {:?} ({set} matched)",
            topics.len(),
            p.len(),
            start.elapsed()
        );
    }
}
