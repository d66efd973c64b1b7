//! Topic names and subscription filters, validated once at the edge of the system.
//!
//! A topic is a `/`-separated path such as `home/kitchen/temp`. A filter may use MQTT's
//! wildcards: `+` matches exactly one level, `#` (last level only) matches the rest,
//! including nothing (`home/#` matches `home`). Topics starting with `$` are reserved for
//! the broker (`$dead/...` and friends) and are not matched by a filter whose first level
//! is a wildcard, as in MQTT. The one exception clients may publish to is a peer
//! channel's topic `$chan/<name>/<role>` (exactly three levels; see [`is_channel_topic`]).

use core::fmt;

/// Longest topic or filter, in bytes of UTF-8.
pub const MAX_TOPIC_LEN: usize = 256;
/// Most levels in a topic or filter (`a/b/c` has three).
pub const MAX_DEPTH: usize = 16;

/// Why a topic or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    TooLong {
        /// Length of the refused name in bytes.
        len: usize,
    },
    /// The name has more than [`MAX_DEPTH`] levels.
    TooDeep,
    /// A level is empty: a leading, trailing or doubled `/`.
    EmptyLevel,
    /// A publish topic contains `+` or `#`.
    Wildcard,
    /// A filter uses `+` or `#` inside a level, or `#` before the last level.
    BadWildcard,
    /// The name contains a control character (including NUL).
    ControlChar,
    /// A publish topic starts with `$`, which is reserved for the broker (but for a
    /// channel's `$chan/<name>/<role>`).
    Reserved,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("topic is empty"),
            TopicError::TooLong { len } => {
                write!(f, "topic is {len} bytes, the limit is {MAX_TOPIC_LEN}")
            }
            TopicError::TooDeep => write!(f, "topic has more than {MAX_DEPTH} levels"),
            TopicError::EmptyLevel => {
                f.write_str("topic has an empty level (a leading, trailing or double '/')")
            }
            TopicError::Wildcard => f.write_str(
                "a publish topic cannot contain '+' or '#' (wildcards are for subscribing)",
            ),
            TopicError::BadWildcard => {
                f.write_str("'+' and '#' must fill a whole level, and '#' must be the last level")
            }
            TopicError::ControlChar => f.write_str("topic contains a control character"),
            TopicError::Reserved => {
                f.write_str("topics starting with '$' are reserved for the broker (clients may only publish to a channel's $chan/<name>/<role>)")
            }
        }
    }
}

impl core::error::Error for TopicError {}

/// `name` for an error message: at most 64 characters, so a refusal never echoes a
/// megabyte back at its sender.
pub fn shown(name: &str) -> alloc::string::String {
    const MAX: usize = 64;
    match name.char_indices().nth(MAX) {
        None => alloc::format!("{name:?}"),
        Some((cut, _)) => alloc::format!("{:?}...", &name[..cut]),
    }
}

/// Splits `name` into levels, checking what topics and filters have in common.
fn levels(name: &str) -> Result<heapless::Vec<&str, MAX_DEPTH>, TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: name.len() });
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(TopicError::ControlChar);
    }
    let mut out = heapless::Vec::new();
    for level in name.split('/') {
        if level.is_empty() {
            return Err(TopicError::EmptyLevel);
        }
        out.push(level).map_err(|_| TopicError::TooDeep)?;
    }
    Ok(out)
}

/// First level of the topics of peer channels: `$chan/<name>/<role>` carries what the
/// side with role `<role>` sends; `$chan/<name>/<role>/reader` is where the broker says
/// whether that topic's reader (the other side) is there.
pub const CHANNEL_PREFIX: &str = "$chan/";

/// Whether `name` is a channel topic a client may publish to: `$chan/<name>/<role>`,
/// exactly three levels (a channel's presence topics have four and stay the broker's).
pub fn is_channel_topic(name: &str) -> bool {
    name.strip_prefix(CHANNEL_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('/'))
}

/// A valid publish topic: no wildcards, no empty levels, not reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic<'a>(&'a str);

impl<'a> Topic<'a> {
    /// Checks `name` as a topic a client may publish to.
    pub fn new(name: &'a str) -> Result<Self, TopicError> {
        let t = Self::new_system(name)?;
        if name.starts_with('$') && !is_channel_topic(name) {
            return Err(TopicError::Reserved);
        }
        Ok(t)
    }

    /// Checks `name` as a topic the broker itself may write, where `$` names are allowed.
    pub fn new_system(name: &'a str) -> Result<Self, TopicError> {
        for level in levels(name)? {
            if level.contains(['+', '#']) {
                return Err(TopicError::Wildcard);
            }
        }
        Ok(Topic(name))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A valid subscription filter, owning its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    text: alloc::boxed::Box<str>,
    exact: bool,
}

impl Filter {
    /// Checks `text` as a subscription filter.
    pub fn new(text: &str) -> Result<Self, TopicError> {
        let lv = levels(text)?;
        let last = lv.len() - 1;
        let mut exact = true;
        for (i, level) in lv.iter().enumerate() {
            match *level {
                "+" => exact = false,
                "#" if i == last => exact = false,
                l if l.contains(['+', '#']) => return Err(TopicError::BadWildcard),
                _ => {}
            }
        }
        Ok(Filter {
            text: text.into(),
            exact,
        })
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the filter has no wildcard, so it matches exactly one topic (itself).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Whether `topic` matches this filter.
    pub fn matches(&self, topic: &str) -> bool {
        let mut f = self.text.split('/');
        let mut t = topic.split('/');
        if topic.starts_with('$') && self.text.starts_with(['+', '#']) {
            return false;
        }
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl Filter {
    /// Whether every topic `other` can match is also matched by this filter, so a rule
    /// `self` allows subscribing to `other`.
    pub fn covers(&self, other: &Filter) -> bool {
        if other.text.starts_with('$') && self.text.starts_with(['+', '#']) {
            return false;
        }
        let mut mine = self.text.split('/');
        let mut theirs = other.text.split('/');
        loop {
            match (mine.next(), theirs.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(l)) if l != "#" => {}
                (Some(a), Some(b)) if a == b && b != "+" && b != "#" => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn topics_accept_plain_paths() {
        for ok in ["a", "home/kitchen/temp", "a b/c", "ünï/cødé", "x/y/z/1/2/3"] {
            assert_eq!(Topic::new(ok).map(|t| t.as_str()), Ok(ok));
        }
    }

    #[test]
    fn topics_refuse_with_reasons() {
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        let deep = vec!["a"; MAX_DEPTH + 1].join("/");
        let cases: &[(&str, TopicError)] = &[
            ("", TopicError::Empty),
            (&long, TopicError::TooLong { len: 257 }),
            (&deep, TopicError::TooDeep),
            ("/a", TopicError::EmptyLevel),
            ("a/", TopicError::EmptyLevel),
            ("a//b", TopicError::EmptyLevel),
            ("a/+/b", TopicError::Wildcard),
            ("a/#", TopicError::Wildcard),
            ("a+b", TopicError::Wildcard),
            ("a\0b", TopicError::ControlChar),
            ("a\nb", TopicError::ControlChar),
            ("$sys/x", TopicError::Reserved),
            ("$chan", TopicError::Reserved),
            ("$chan/a", TopicError::Reserved),
            ("$chan/a/b/reader", TopicError::Reserved),
            ("$dead/chan/a", TopicError::Reserved),
            ("$chan/a/+", TopicError::Wildcard),
        ];
        for (name, err) in cases {
            assert_eq!(Topic::new(name), Err(*err), "{name:?}");
        }
        assert!(Topic::new_system("$dead/g/a").is_ok());
        assert!(Topic::new("$chan/door/local").is_ok());
        assert!(Topic::new_system("$chan/door/local/reader").is_ok());
        assert_eq!(
            TopicError::TooLong { len: 300 }.to_string(),
            "topic is 300 bytes, the limit is 256"
        );
    }

    #[test]
    fn shown_names_are_short() {
        assert_eq!(shown("a/b"), "\"a/b\"");
        let long = "x".repeat(10_000);
        assert_eq!(shown(&long), format!("{:?}...", "x".repeat(64)));
    }

    #[test]
    fn depth_limit_is_inclusive() {
        let deep = vec!["a"; MAX_DEPTH].join("/");
        assert!(Topic::new(&deep).is_ok());
        assert!(Filter::new(&deep).is_ok());
    }

    #[test]
    fn filters_validate_wildcards() {
        for ok in ["#", "+", "a/+/c", "a/#", "+/+/#", "a/b"] {
            assert!(Filter::new(ok).is_ok(), "{ok}");
        }
        for bad in ["a/#/c", "a+/b", "a/b#", "#/a", "a/++"] {
            assert_eq!(Filter::new(bad), Err(TopicError::BadWildcard), "{bad}");
        }
        assert_eq!(Filter::new("a//b"), Err(TopicError::EmptyLevel));
        assert!(Filter::new("a/b").unwrap().is_exact());
        assert!(!Filter::new("a/+").unwrap().is_exact());
    }

    #[test]
    fn covering_is_containment() {
        let cases: &[(&str, &str, bool)] = &[
            ("#", "anything/+/#", true),
            ("home/#", "home", true),
            ("home/#", "home/+/temp", true),
            ("home/+/temp", "home/kitchen/temp", true),
            ("home/+/temp", "home/+/temp", true),
            ("home/+/temp", "home/#", false),
            ("home/kitchen/temp", "home/+/temp", false),
            ("home/+", "home/+/temp", false),
            ("home/+/#", "home/a", true),
            ("home/+/#", "home", false),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("#", "$dead/#", false),
            ("$dead/#", "$dead/g/t", true),
        ];
        for (rule, sub, want) in cases {
            let (r, s) = (Filter::new(rule).unwrap(), Filter::new(sub).unwrap());
            assert_eq!(r.covers(&s), *want, "{rule} covers {sub}");
            // Whatever a rule covers, it also matches every topic the filter matches.
            if *want && s.is_exact() {
                assert!(r.matches(sub));
            }
        }
    }

    #[test]
    fn filters_match_like_mqtt() {
        let cases: &[(&str, &str, bool)] = &[
            ("home/+/temp", "home/kitchen/temp", true),
            ("home/+/temp", "home/kitchen/hum", false),
            ("home/+/temp", "home/a/b/temp", false),
            ("home/#", "home", true),
            ("home/#", "home/a/b/c", true),
            ("home/#", "homes/a", false),
            ("#", "anything/at/all", true),
            ("+", "one", true),
            ("+", "one/two", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "$dead/g/t", false),
            ("+/g/t", "$dead/g/t", false),
            ("$dead/#", "$dead/g/t", true),
            ("#", "$chan/a/local", false),
            ("+/a/local", "$chan/a/local", false),
            ("$chan/#", "$chan/a/local", true),
            ("$chan/+/local", "$chan/a/local", true),
        ];
        for (f, t, m) in cases {
            assert_eq!(Filter::new(f).unwrap().matches(t), *m, "{f} vs {t}");
        }
    }
}
