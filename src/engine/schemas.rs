//! Per-topic JSON schemas: which schema a topic's payloads must match, and the check.
//!
//! The config file gives a pattern a schema (`[topics."sensors/+/temp"] schema = "..."`);
//! the most specific matching pattern with a schema wins, by the same ranking as every
//! other per-topic key (see [`super::settings`]). A topic takes its schema when it is
//! created and again on a reload, never per publish; every topic matching one pattern
//! shares that pattern's compiled schema. A topic without a schema pays one branch on the
//! publish path; one with a schema parses and checks each payload ([`Engine::check_schema`]),
//! out of line.

use std::sync::Arc;

use mote_sdk::{ErrorCode, Filter};

use super::settings::{DuplicatePattern, by_specificity};
use super::{Engine, Refusal, TopicId};
use crate::schema::Schema;

/// A pattern's schema: shared by every topic the pattern gives it to.
#[derive(Debug)]
pub struct TopicSchema {
    /// The pattern, as written in the config file.
    pub pattern: Box<str>,
    /// The schema file, as written in the config file (for messages).
    pub file: Box<str>,
    /// The compiled schema.
    pub schema: Schema,
}

/// The patterns with a schema, most specific first.
#[derive(Debug, Clone, Default)]
pub struct SchemaPatterns {
    entries: Vec<(Filter, Arc<TopicSchema>)>,
}

impl SchemaPatterns {
    /// Ranks the patterns most specific first; the same pattern twice is refused.
    pub fn new(
        patterns: impl IntoIterator<Item = (Filter, Arc<TopicSchema>)>,
    ) -> Result<SchemaPatterns, DuplicatePattern> {
        let mut entries: Vec<_> = patterns.into_iter().collect();
        crate::sort::sort_by(&mut entries, |a, b| {
            by_specificity(a.0.as_str(), b.0.as_str())
        });
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(DuplicatePattern(w[0].0.as_str().to_string()));
        }
        Ok(SchemaPatterns { entries })
    }

    /// How many patterns have a schema.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no pattern has a schema.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each pattern's schema, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TopicSchema>> {
        self.entries.iter().map(|(_, s)| s)
    }

    /// The schema of the most specific pattern matching `topic`, if any.
    pub fn resolve(&self, topic: &str) -> Option<Arc<TopicSchema>> {
        self.entries
            .iter()
            .find(|(f, _)| f.matches(topic))
            .map(|(_, s)| Arc::clone(s))
    }
}

impl Engine {
    /// New schemas (at start, and on a reload): every topic takes its schema again.
    pub fn set_schemas(&mut self, schemas: SchemaPatterns) {
        for t in self.topics.iter_mut().filter(|t| t.live) {
            t.schema = schemas.resolve(&t.name);
        }
        self.schemas = schemas;
    }

    /// The configured schemas.
    pub fn schemas(&self) -> &SchemaPatterns {
        &self.schemas
    }

    /// Checks `payload` against the schema of `topic` (the topic's own if it exists, else
    /// the one its patterns would give it): `Ok` if it has none or the payload matches,
    /// else an `INVALID_PAYLOAD` refusal naming the first failing path and rule, counted
    /// for the topic and in total. The publish path calls it; so may any path that stores
    /// a message later (it counts the schema refusal, the caller its own refusal).
    pub fn check_schema(&mut self, topic: &str, payload: &[u8]) -> Result<(), Refusal> {
        match self.by_name.get(topic) {
            Some(&tid) if self.topics[tid.0 as usize].schema.is_some() => {
                self.check_topic_schema(tid, payload)
            }
            Some(_) => Ok(()),
            None => match self.schemas.resolve(topic) {
                Some(s) => check(&s, payload).inspect_err(|_| self.stats.schema_refused += 1),
                None => Ok(()),
            },
        }
    }

    /// [`Engine::check_schema`] for a topic that has a schema.
    #[cold]
    #[inline(never)]
    pub(super) fn check_topic_schema(
        &mut self,
        tid: TopicId,
        payload: &[u8],
    ) -> Result<(), Refusal> {
        let t = &mut self.topics[tid.0 as usize];
        let Some(s) = &t.schema else {
            return Ok(());
        };
        let r = check(s, payload);
        if r.is_err() {
            t.schema_refused += 1;
            self.stats.schema_refused += 1;
        }
        r
    }

    /// The schema topic `name` has, if any.
    pub fn topic_schema(&self, name: &str) -> Option<&Arc<TopicSchema>> {
        let &tid = self.by_name.get(name)?;
        self.topics[tid.0 as usize].schema.as_ref()
    }
}

fn check(s: &TopicSchema, payload: &[u8]) -> Result<(), Refusal> {
    s.schema.check(payload).map_err(|e| {
        Refusal::new(
            ErrorCode::INVALID_PAYLOAD,
            format!("{e} (schema {} of [topics.{:?}])", s.file, &*s.pattern),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn schema(pattern: &str, text: &str) -> (Filter, Arc<TopicSchema>) {
        let s = TopicSchema {
            pattern: pattern.into(),
            file: format!("{pattern}.json").into(),
            schema: Schema::from_slice(text.as_bytes()).unwrap(),
        };
        (Filter::new(pattern).unwrap(), Arc::new(s))
    }

    fn engine() -> (Engine, super::super::ConnId) {
        let mut e = Engine::new(Limits::default(), 7);
        let c = e.handle_connect(0, None);
        e.handle_open(c, "t");
        (e, c)
    }

    #[test]
    fn the_most_specific_pattern_with_a_schema_wins() {
        let p = SchemaPatterns::new([
            schema("#", r#"{"type": "object"}"#),
            schema("a/+", r#"{"type": "number"}"#),
            schema("a/b", r#"{"type": "string"}"#),
        ])
        .unwrap();
        let file = |t: &str| p.resolve(t).map(|s| s.file.to_string());
        assert_eq!(file("a/b").as_deref(), Some("a/b.json"));
        assert_eq!(file("a/c").as_deref(), Some("a/+.json"));
        assert_eq!(file("x").as_deref(), Some("#.json"));
        assert_eq!(file("$dead/x"), None, "# does not reach $ topics");
        let e = SchemaPatterns::new([schema("a", "true"), schema("a", "false")]).unwrap_err();
        assert_eq!(e, DuplicatePattern("a".into()));
    }

    #[test]
    fn publishes_are_checked_counted_and_share_the_schema() {
        let (mut e, c) = engine();
        e.handle_publish(c, 1, "a/x", None, b"before").unwrap();
        let p = SchemaPatterns::new([schema("a/+", r#"{"type": "number"}"#)]).unwrap();
        e.set_schemas(p);
        // An existing topic takes its schema on the reload; a new one when created.
        let r = e.handle_publish(c, 1, "a/x", None, b"\"s\"").unwrap_err();
        assert_eq!(r.code, ErrorCode::INVALID_PAYLOAD);
        assert_eq!(
            r.message,
            "/: expected number, got string (schema a/+.json of [topics.\"a/+\"])"
        );
        assert_eq!(e.handle_publish(c, 1, "a/x", None, b"1.5").unwrap(), 1);
        assert!(e.handle_publish(c, 1, "a/y", None, b"{").is_err());
        // A refused publish creates no topic: it would hold a --max-topics place.
        assert!(e.topic_schema("a/y").is_none());
        assert_eq!(e.topic_count(), 1, "a/x only");
        assert_eq!(e.handle_publish(c, 1, "a/y", None, b"2").unwrap(), 0);
        assert_eq!(e.handle_publish(c, 1, "b", None, b"{").unwrap(), 0);
        assert!(Arc::ptr_eq(
            e.topic_schema("a/x").unwrap(),
            e.topic_schema("a/y").unwrap()
        ));
        assert_eq!(e.topic_info_at(0).unwrap().schema_refused, 1);
        assert_eq!(e.stats().schema_refused, 2);
        assert_eq!(e.stats().publish_refused, 2);
        assert_eq!(e.stats().errors(ErrorCode::INVALID_PAYLOAD), 2);
        // The check on its own, for a topic not created yet too (counted in total only).
        assert!(e.check_schema("a/z", b"1").is_ok());
        assert!(e.check_schema("a/z", b"[]").is_err());
        assert!(e.check_schema("b", b"[]").is_ok());
        assert_eq!(e.stats().schema_refused, 3);
        // Schemas taken away: anything goes.
        e.set_schemas(SchemaPatterns::default());
        assert!(e.topic_schema("a/x").is_none());
        e.handle_publish(c, 1, "a/x", None, b"{").unwrap();
    }
}
