//! Management of topics and groups: list, inspect, purge, delete, metadata, seek.
//! The management front (`crate::manage`) checks rights and renders; this does the work,
//! counts it in [`super::Stats::admin_ops`] and logs it once at info level.

use mote_sdk::{ErrorCode, Filter, Start};

use super::settings::Resolved;
use super::subscribe::Role;
use super::{AdminOp, Engine, GroupInfo, Refusal, TopicInfo};

/// Most metadata keys a topic holds.
pub const MAX_META_KEYS: usize = 16;
/// Longest metadata key, in bytes (1 at least; no control characters, no `=`).
pub const MAX_META_KEY: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_META_VALUE: usize = 256;

/// One topic in detail.
#[derive(Debug, Clone)]
pub struct TopicDetail {
    /// Its counters and offsets.
    pub info: TopicInfo,
    /// Its effective settings and the `[topics]` pattern (or default) each comes from.
    pub settings: Resolved,
    /// Its metadata, sorted by key.
    pub meta: Vec<(String, String)>,
    /// Names of the groups reading it.
    pub groups: Vec<String>,
    /// Messages dropped by its retention (count, bytes, age).
    pub expired: u64,
    /// Milliseconds it has had nothing stored, no subscriber and no group, if so: it is
    /// removed once this reaches its `idle-expiry`.
    pub idle_ms: Option<u64>,
    /// Its JSON schema: the file and the pattern that gave it, if any.
    pub schema: Option<(String, String)>,
}

/// Checks one metadata key and value against the limits.
fn check_meta(key: &str, value: &str) -> Result<(), Refusal> {
    let bad = |m: String| Err(Refusal::new(ErrorCode::BAD_TOPIC, m));
    let shown = mote_sdk::topic::shown(key);
    if key.is_empty() || key.len() > MAX_META_KEY {
        return bad(format!(
            "metadata key {shown} is {} bytes: a key has 1 to {MAX_META_KEY}",
            key.len()
        ));
    }
    if key.contains('=') || key.chars().any(char::is_control) {
        return bad(format!(
            "metadata key {shown} has '=' or a control character; keys have neither"
        ));
    }
    if value.len() > MAX_META_VALUE {
        return bad(format!(
            "metadata value of {shown} is {} bytes, the limit is {MAX_META_VALUE}",
            value.len()
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return bad(format!(
            "metadata value of {shown} has a control character; values are one line of text"
        ));
    }
    Ok(())
}

fn not_found(what: &str, name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NOT_FOUND,
        format!("no {what} {}", mote_sdk::topic::shown(name)),
    )
}

impl Engine {
    /// Up to `max` live topics that `filter` matches (every topic but the broker's `$`
    /// ones without one), in creation order from position `from` (0 first), and the
    /// position to ask for next if there are more. A page at a time, so listing 10,000
    /// topics never holds the executor for long; a topic created or removed meanwhile
    /// may be missed or seen twice, as with any paged listing.
    pub fn list_topics(
        &self,
        filter: Option<&Filter>,
        from: usize,
        max: usize,
    ) -> (Vec<TopicInfo>, Option<usize>) {
        let mut out = Vec::new();
        let mut i = from;
        while i < self.topics.len() {
            if out.len() >= max {
                return (out, Some(i));
            }
            if let Some(t) = self.topic_info_at(i) {
                let shown = match filter {
                    Some(f) => f.matches(&t.name),
                    None => !t.name.starts_with('$'),
                };
                if shown {
                    out.push(t);
                }
            }
            i += 1;
        }
        (out, None)
    }

    /// One topic in detail, if it exists.
    pub fn topic_detail(&self, topic: &str) -> Option<TopicDetail> {
        let tid = *self.by_name.get(topic)?;
        let info = self.topic_info_at(tid.0 as usize)?;
        let t = &self.topics[tid.0 as usize];
        let mut groups: Vec<String> = t
            .watchers
            .iter()
            .filter_map(|ck| match self.cursors.get(ck.0 as usize)?.role {
                Role::Group(g) => Some(self.group_name(g).to_string()),
                _ => None,
            })
            .collect();
        crate::sort::sort(&mut groups);
        groups.dedup();
        Some(TopicDetail {
            info,
            settings: self.topic_settings(topic),
            meta: t
                .meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            groups,
            expired: t.expired,
            idle_ms: self.idle_ms(tid),
            schema: t
                .schema
                .as_ref()
                .map(|s| (s.file.to_string(), s.pattern.to_string())),
        })
    }

    /// Drops every stored message of `topic` (memory and disk); offsets keep going up.
    /// Subscribers behind are told what they lost, as for eviction. Returns how many
    /// messages were dropped.
    pub fn purge_topic(&mut self, topic: &str) -> Result<u64, Refusal> {
        let tid = self
            .live_topic(topic)
            .ok_or_else(|| not_found("topic", topic))?;
        let dropped = self.purge_stored(tid);
        self.stats.admin_ops[AdminOp::Purge as usize] += 1;
        Ok(dropped)
    }

    /// Removes `topic`: stored messages, metadata, its name. Returns how many messages
    /// were dropped. A topic re-created later continues above its last offset.
    ///
    /// Its subscribers get [`super::Delivery::Removed`] and keep their subscriptions;
    /// its groups forget their position there and what they handed out from it. A
    /// publish after the delete creates the topic again (above its last offset): the
    /// engine is single-threaded, so a publish is stored either before the delete (and
    /// removed with it) or after it (in the new topic).
    pub fn delete_topic(&mut self, topic: &str) -> Result<u64, Refusal> {
        let tid = self
            .live_topic(topic)
            .ok_or_else(|| not_found("topic", topic))?;
        let dropped = self.remove_topic(tid);
        self.stats.admin_ops[AdminOp::DeleteTopic as usize] += 1;
        Ok(dropped)
    }

    /// Sets (non-empty value) or removes (empty value) metadata keys of `topic`. All or
    /// nothing: a refused key leaves the metadata as it was.
    pub fn set_topic_meta(&mut self, topic: &str, set: &[(&str, &str)]) -> Result<(), Refusal> {
        let tid = self
            .live_topic(topic)
            .ok_or_else(|| not_found("topic", topic))?;
        let mut meta = self.topics[tid.0 as usize].meta.clone();
        for &(k, v) in set {
            check_meta(k, v)?;
            match meta.binary_search_by(|(mk, _)| (**mk).cmp(k)) {
                Ok(i) if v.is_empty() => {
                    meta.remove(i);
                }
                Ok(i) => meta[i].1 = v.into(),
                Err(_) if v.is_empty() => {}
                Err(i) => meta.insert(i, (k.into(), v.into())),
            }
        }
        if meta.len() > MAX_META_KEYS {
            return Err(Refusal::new(
                ErrorCode::BAD_TOPIC,
                format!(
                    "topic {} would have {} metadata keys, the limit is {MAX_META_KEYS}; remove some first (an empty value removes a key)",
                    mote_sdk::topic::shown(topic),
                    meta.len()
                ),
            ));
        }
        let t = &mut self.topics[tid.0 as usize];
        t.meta = meta;
        if t.settings.persist {
            if let Some(log) = self.log.as_mut() {
                let pairs: Vec<(&str, &str)> = t.meta.iter().map(|(k, v)| (&**k, &**v)).collect();
                log.append_meta(&t.name, &pairs);
            }
        }
        self.stats.admin_ops[AdminOp::Meta as usize] += 1;
        Ok(())
    }

    /// The group named `name`, if it exists.
    pub fn group_by_name(&self, name: &str) -> Option<GroupInfo> {
        let gid = self.group_names.get(name)?;
        self.group_info(gid.0 as usize)
    }

    /// Moves group `name` to `to` in every topic it reads (`Start::AfterSeq` is refused);
    /// its in-flight deliveries and pending redeliveries are dropped.
    pub fn seek_group(&mut self, name: &str, to: Start) -> Result<(), Refusal> {
        let gid = *self
            .group_names
            .get(name)
            .ok_or_else(|| not_found("group", name))?;
        self.seek(gid, to)?;
        self.stats.admin_ops[AdminOp::Seek as usize] += 1;
        Ok(())
    }

    /// Removes group `name`: its position, in-flight deliveries, and its members'
    /// subscriptions (each member is told with an error on its subscription id).
    pub fn delete_group(&mut self, name: &str) -> Result<(), Refusal> {
        let gid = *self
            .group_names
            .get(name)
            .ok_or_else(|| not_found("group", name))?;
        self.drop_group(gid);
        self.stats.admin_ops[AdminOp::DeleteGroup as usize] += 1;
        Ok(())
    }
}

impl Engine {
    /// The offset of the first message of topic `tid` stored at or after wall time
    /// `time_ms` (its next offset when there is none), in memory or on disk. Exact in
    /// memory (a binary search: a topic's store times never go back); on disk, the
    /// first offset of the log's run holding it (at or before it, found without a
    /// read): a cursor starting there passes over the older messages as it reads them
    /// (its `skip_before_ms`).
    pub(super) fn offset_at_time(&self, tid: super::TopicId, time_ms: u64) -> u64 {
        let t = &self.topics[tid.0 as usize];
        let in_ring = t.ring.at_time(time_ms);
        let first = t.ring.first();
        if in_ring > first || t.disk_first >= first || !t.settings.persist {
            return in_ring;
        }
        // Every message in memory is at or after `time_ms`; older ones are on disk.
        self.log
            .as_ref()
            .and_then(|l| l.offset_near_time(&t.name, time_ms))
            .unwrap_or(t.disk_first)
            .clamp(t.disk_first, first)
    }

    /// `Start::Time` and `Start::Ago` as a wall time, by the broker's clock.
    pub(super) fn start_time_ms(&self, from: Start) -> Option<u64> {
        match from {
            Start::Time(t) => Some(t),
            Start::Ago(ms) => Some(self.expiry_now().saturating_sub(ms)),
            _ => None,
        }
    }
}
