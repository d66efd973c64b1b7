//! Tokens, their access rules, and the per-address backoff after failed handshakes.
//! Pure: no IO; time is passed in.
//!
//! Rules are topic filters: a token may publish to a topic that one of its `publish`
//! filters matches, and subscribe with a filter that one of its `subscribe` filters covers
//! (every topic the subscription could match is allowed). `{name}` in a rule stands for
//! the token's own name. A single `--token` is named `default` and may do everything.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use mote_sdk::Filter;
use mote_sdk::secure::Token;

/// Name of the token given with `--token`.
pub const DEFAULT_NAME: &str = "default";

/// What one token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    publish: Vec<Filter>,
    subscribe: Vec<Filter>,
    /// Topics the token may purge, delete, give metadata, and whose groups it may seek
    /// or delete (`manage = [...]`); reading their state needs this or `subscribe`.
    manage: Vec<Filter>,
    /// A publish rule is `#`: every topic but `$…` ones, decided without matching.
    publish_hash: bool,
}

impl Rules {
    /// Everything (`#` both ways, and `$chan/#`: peer channels, which `#` does not match).
    pub fn all() -> Rules {
        let all = || {
            ["#", "$chan/#"]
                .iter()
                .map(|f| Filter::new(f).unwrap_or_else(|_| unreachable!("{f} is a valid filter")))
                .collect::<Vec<_>>()
        };
        Rules {
            publish: all(),
            subscribe: all(),
            manage: all(),
            publish_hash: true,
        }
    }

    /// Rules from filter texts, `{name}` replaced by `name`.
    pub fn new(name: &str, publish: &[String], subscribe: &[String]) -> Result<Rules, String> {
        let parse = |kind: &str, texts: &[String]| {
            texts
                .iter()
                .map(|t| {
                    let t = t.replace("{name}", name);
                    Filter::new(&t).map_err(|e| format!("token {name:?}: {kind} rule {t:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let publish = parse("publish", publish)?;
        Ok(Rules {
            publish_hash: publish.iter().any(|f| f.as_str() == "#"),
            publish,
            subscribe: parse("subscribe", subscribe)?,
            manage: Vec::new(),
        })
    }

    /// These rules with `manage` filters (`{name}` replaced by `name`).
    pub fn with_manage(mut self, name: &str, manage: &[String]) -> Result<Rules, String> {
        self.manage = manage
            .iter()
            .map(|t| {
                let t = t.replace("{name}", name);
                Filter::new(&t).map_err(|e| format!("token {name:?}: manage rule {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self)
    }

    /// Whether the token may purge, delete or give metadata to `topic`.
    pub fn may_manage(&self, topic: &str) -> bool {
        self.manage.iter().any(|f| f.matches(topic))
    }

    /// Whether the token may seek or delete a group reading `filter`: a manage rule
    /// covers every topic the group could read.
    pub fn may_manage_filter(&self, filter: &Filter) -> bool {
        self.manage.iter().any(|f| f.covers(filter))
    }

    /// Whether the token may see the state of `topic` (its subscribe or manage rules).
    pub fn may_inspect(&self, topic: &str) -> bool {
        self.may_manage(topic) || self.subscribe.iter().any(|f| f.matches(topic))
    }

    /// The manage rules, for error messages.
    pub fn manage_rules(&self) -> String {
        list(&self.manage)
    }

    /// Whether the token may publish to `topic` because it has a `#` rule: no matching,
    /// so a session checks this first, for every publish.
    pub fn may_publish_anywhere(&self, topic: &str) -> bool {
        self.publish_hash && !topic.starts_with('$')
    }

    /// Whether the token may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.may_publish_anywhere(topic) || self.publish.iter().any(|f| f.matches(topic))
    }

    /// Whether the token may subscribe with `filter`.
    pub fn may_subscribe(&self, filter: &Filter) -> bool {
        self.subscribe.iter().any(|f| f.covers(filter))
    }

    /// The publish rules, for error messages.
    pub fn publish_rules(&self) -> String {
        list(&self.publish)
    }

    /// The subscribe rules, for error messages.
    pub fn subscribe_rules(&self) -> String {
        list(&self.subscribe)
    }
}

fn list(f: &[Filter]) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter().map(Filter::as_str).collect::<Vec<_>>().join(", ")
}

/// One token and what it may do.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// The secret.
    pub token: Token,
    /// Its rights.
    pub rules: std::sync::Arc<Rules>,
}

/// The tokens a broker accepts. Empty: no authentication (loopback only by default).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, TokenEntry>,
}

impl Auth {
    /// No tokens.
    pub fn none() -> Auth {
        Auth::default()
    }

    /// One token named `default` with every right.
    pub fn single(token: Token) -> Auth {
        let mut tokens = HashMap::new();
        tokens.insert(
            DEFAULT_NAME.to_string(),
            TokenEntry {
                token,
                rules: std::sync::Arc::new(Rules::all()),
            },
        );
        Auth { tokens }
    }

    /// Adds a named token.
    pub fn insert(&mut self, name: &str, token: Token, rules: Rules) -> Result<(), String> {
        if name.is_empty()
            || name.len() > 64
            || name.contains(|c: char| c == ':' || c == '/' || c.is_control())
        {
            return Err(format!(
                "token name {name:?} must be 1 to 64 characters without ':', '/' or control characters"
            ));
        }
        if self.tokens.contains_key(name) {
            return Err(format!("token {name:?} is defined twice"));
        }
        self.tokens.insert(
            name.to_string(),
            TokenEntry {
                token,
                rules: std::sync::Arc::new(rules),
            },
        );
        Ok(())
    }

    /// Reads `[tokens.NAME]` tables: `token = "..."`, `publish = [...]`,
    /// `subscribe = [...]`, `manage = [...]` (missing rule lists allow nothing).
    pub fn from_toml(tokens: &toml::Table) -> Result<Auth, String> {
        let mut auth = Auth::none();
        for (name, v) in tokens {
            let t = v
                .as_table()
                .ok_or_else(|| format!("[tokens.{name}] must be a table"))?;
            for key in t.keys() {
                if !["token", "publish", "subscribe", "manage"].contains(&key.as_str()) {
                    return Err(format!(
                        "[tokens.{name}]: unknown key {key:?} (token, publish, subscribe, manage)"
                    ));
                }
            }
            let secret = t
                .get("token")
                .and_then(toml::Value::as_str)
                .ok_or_else(|| {
                    format!(
                        "[tokens.{name}] needs token = \"...\" (make one with `mote token new`)"
                    )
                })?;
            let token = Token::new(secret).map_err(|e| format!("[tokens.{name}]: {e}"))?;
            let rules = |key: &str| -> Result<Vec<String>, String> {
                match t.get(key) {
                    None => Ok(Vec::new()),
                    Some(toml::Value::Array(a)) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| format!("[tokens.{name}] {key}: rules are strings"))
                        })
                        .collect(),
                    Some(_) => Err(format!("[tokens.{name}] {key} must be a list of filters")),
                }
            };
            let r = Rules::new(name, &rules("publish")?, &rules("subscribe")?)?
                .with_manage(name, &rules("manage")?)?;
            auth.insert(name, token, r)?;
        }
        Ok(auth)
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token named `name`.
    pub fn get(&self, name: &str) -> Option<&TokenEntry> {
        self.tokens.get(name)
    }

    /// Every token with its name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &TokenEntry)> {
        self.tokens.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// How many failures an address may have before it waits.
const FREE_FAILURES: u32 = 3;
/// First wait; doubles with each further failure.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// Longest wait.
const MAX_BACKOFF_MS: u64 = 60_000;
/// An address with no failure for this long is forgotten.
const FORGET_MS: u64 = 10 * 60_000;
/// Most addresses remembered; the stalest are forgotten first.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
    blocked_until_ms: u64,
}

/// Remembers failed handshakes per address and makes repeat offenders wait.
#[derive(Debug, Default)]
pub struct Backoff {
    by_ip: HashMap<IpAddr, Failures>,
}

/// An address that must wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Milliseconds left.
    pub wait_ms: u64,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many failed handshakes from this address; retry in {} s",
            self.wait_ms.div_ceil(1000)
        )
    }
}

impl Backoff {
    /// A failed handshake from `ip` at monotonic time `now_ms`.
    pub fn handle_failure(&mut self, ip: IpAddr, now_ms: u64) {
        if self.by_ip.len() >= MAX_ADDRESSES && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, f| now_ms.saturating_sub(f.last_ms) < FORGET_MS);
            if self.by_ip.len() >= MAX_ADDRESSES {
                if let Some(stalest) = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, f)| f.last_ms)
                    .map(|(k, _)| *k)
                {
                    self.by_ip.remove(&stalest);
                }
            }
        }
        let f = self.by_ip.entry(ip).or_insert(Failures {
            count: 0,
            last_ms: now_ms,
            blocked_until_ms: 0,
        });
        if now_ms.saturating_sub(f.last_ms) >= FORGET_MS {
            f.count = 0;
        }
        f.count += 1;
        f.last_ms = now_ms;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(16);
            let wait = (FIRST_BACKOFF_MS << doublings).min(MAX_BACKOFF_MS);
            f.blocked_until_ms = now_ms + wait;
        }
    }

    /// A successful handshake: the address starts afresh.
    pub fn handle_success(&mut self, ip: IpAddr) {
        self.by_ip.remove(&ip);
    }

    /// Whether `ip` must wait before its next attempt.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), Blocked> {
        match self.by_ip.get(&ip) {
            Some(f) if f.blocked_until_ms > now_ms => Err(Blocked {
                wait_ms: f.blocked_until_ms - now_ms,
            }),
            _ => Ok(()),
        }
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn tok() -> Token {
        Token::new("0123456789abcdef0123").unwrap()
    }

    #[test]
    fn rules_with_the_name_placeholder() {
        let r = Rules::new(
            "kitchen",
            &["home/{name}/#".into()],
            &["home/#".into(), "cmd/{name}".into()],
        )
        .unwrap();
        assert!(r.may_publish("home/kitchen/temp"));
        assert!(!r.may_publish("home/hall/temp"));
        assert!(r.may_subscribe(&Filter::new("home/+/temp").unwrap()));
        assert!(r.may_subscribe(&Filter::new("cmd/kitchen").unwrap()));
        assert!(!r.may_subscribe(&Filter::new("#").unwrap()));
        assert!(!r.may_subscribe(&Filter::new("cmd/+").unwrap()));
        assert_eq!(r.publish_rules(), "home/kitchen/#");
        let none = Rules::new("x", &[], &[]).unwrap();
        assert!(!none.may_publish("a"));
        assert_eq!(none.subscribe_rules(), "none");
        assert!(
            Rules::new("x", &["a/#/b".into()], &[])
                .unwrap_err()
                .contains("publish rule")
        );
    }

    #[test]
    fn a_hash_rule_allows_every_topic_but_system_ones_without_matching() {
        let filtered = Rules::new("x", &["home/#".into(), "#".into()], &[]).unwrap();
        for r in [Rules::all(), filtered] {
            for topic in ["a", "home/kitchen/temp", "x/y/z"] {
                assert!(
                    r.may_publish_anywhere(topic) && r.may_publish(topic),
                    "{topic}"
                );
            }
            for topic in ["$dead/g/a", "$sys"] {
                assert!(
                    !r.may_publish_anywhere(topic) && !r.may_publish(topic),
                    "{topic}"
                );
            }
        }
        let narrow = Rules::new("x", &["home/#".into()], &[]).unwrap();
        assert!(!narrow.may_publish_anywhere("home/a"));
        assert!(narrow.may_publish("home/a"));
    }

    #[test]
    fn channels_need_rules_that_name_them_and_the_single_token_has_them() {
        let chan = Filter::new("$chan/door/#").unwrap();
        let hash = Rules::new("x", &["#".into()], &["#".into()]).unwrap();
        assert!(!hash.may_publish("$chan/door/local"));
        assert!(!hash.may_subscribe(&chan));
        let all = Rules::all();
        assert!(all.may_publish("$chan/door/local"));
        assert!(all.may_subscribe(&chan));
        assert!(all.may_manage("$chan/door/local"));
        assert!(all.may_manage_filter(&Filter::new("$chan/door/local").unwrap()));
        // `$chan/#` is not a way into the other `$` topics.
        assert!(!all.may_publish("$dead/g/a"));
        let named = Rules::new(
            "door",
            &["$chan/{name}/local".into()],
            &["$chan/{name}/#".into()],
        )
        .unwrap();
        assert!(named.may_publish("$chan/door/local"));
        assert!(!named.may_publish("$chan/door/remote"));
        assert!(named.may_subscribe(&chan));
    }

    #[test]
    fn tokens_from_toml() {
        let t: toml::Table = r##"
            [kitchen]
            token = "0123456789abcdef0123"
            publish = ["home/{name}/#"]
            subscribe = ["home/#"]
            [admin]
            token = "abcdefabcdefabcdefab"
            publish = ["#"]
            subscribe = ["#"]
        "##
        .parse()
        .unwrap();
        let a = Auth::from_toml(&t).unwrap();
        assert_eq!(a.len(), 2);
        assert!(
            a.get("kitchen")
                .unwrap()
                .rules
                .may_publish("home/kitchen/x")
        );
        assert!(a.get("admin").unwrap().rules.may_publish("anything"));
        assert!(format!("{:?}", a).contains("<redacted>"));
        assert!(
            !format!("{:?}", a).contains("0123456789"),
            "secrets never in Debug"
        );
        for (bad, msg) in [
            ("[x]\ntoken = \"short\"", "at least 16"),
            ("[x]\npublish = [\"#\"]", "needs token"),
            (
                "[x]\ntoken = \"0123456789abcdef0123\"\npublsh = []",
                "unknown key \"publsh\"",
            ),
            (
                "[x]\ntoken = \"0123456789abcdef0123\"\npublish = \"#\"",
                "must be a list",
            ),
        ] {
            let e = Auth::from_toml(&bad.parse().unwrap()).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
        let mut a = Auth::single(tok());
        assert!(
            a.insert("default", tok(), Rules::all())
                .unwrap_err()
                .contains("twice")
        );
        assert!(a.insert("a:b", tok(), Rules::all()).is_err());
    }

    #[test]
    fn backoff_after_repeated_failures() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let mut b = Backoff::default();
        for _ in 0..FREE_FAILURES {
            b.handle_failure(ip, 0);
            assert_eq!(b.check(ip, 0), Ok(()), "a few mistakes are free");
        }
        b.handle_failure(ip, 0);
        assert_eq!(b.check(ip, 0), Err(Blocked { wait_ms: 1000 }));
        assert_eq!(b.check(ip, 999), Err(Blocked { wait_ms: 1 }));
        assert_eq!(b.check(ip, 1000), Ok(()));
        assert_eq!(b.check(other, 0), Ok(()), "per address");
        b.handle_failure(ip, 1000);
        assert_eq!(b.check(ip, 1000), Err(Blocked { wait_ms: 2000 }), "doubles");
        for _ in 0..30 {
            b.handle_failure(ip, 2000);
        }
        assert_eq!(
            b.check(ip, 2000),
            Err(Blocked {
                wait_ms: MAX_BACKOFF_MS
            })
        );
        assert_eq!(
            Blocked { wait_ms: 1500 }.to_string(),
            "too many failed handshakes from this address; retry in 2 s"
        );
        b.handle_success(ip);
        assert_eq!(b.check(ip, 2000), Ok(()));
    }

    #[test]
    fn backoff_memory_is_bounded() {
        let mut b = Backoff::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            b.handle_failure(IpAddr::from(i.to_be_bytes()), u64::from(i));
        }
        assert!(b.len() <= MAX_ADDRESSES);
    }
}
