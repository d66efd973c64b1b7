//! Consumer groups: competing consumers with acks.
//!
//! A group has one shared cursor per topic its filter matches. A message at a group
//! cursor is assigned to the next member with free credit (round-robin; credit is the
//! group's `prefetch` minus the member's unacked messages), tagged, and put in that
//! member's outbox, which its connection drains like any other cursor. The member acks
//! or nacks by tag. A message not acked within the ack timeout, nacked, or left unacked
//! by a member that went away is delivered again (to anyone, after the nack's delay);
//! after `max_deliveries` deliveries it goes to the dead-letter topic
//! `$dead/<group>/<topic>` instead, its key set to `<offset>` (or `<offset>/<key>`).
//! A durable group keeps its cursors while it has no member, until `group-expiry`
//! passes without one; others go with the last.
//!
//! Named groups are durable by default (a member's `durable: false` means "the broker's
//! default"; only `[groups.NAME] durable = false` in the config opts out): a worker that
//! restarts, or is down for a weekend, finds the jobs published meanwhile instead of a
//! group recreated at the latest message. What a forgotten group costs is bounded:
//! its position and unacked deliveries, one `--max-groups` slot, until `group-expiry`
//! (7 days by default) without members removes it.

use std::collections::VecDeque;

use mote_sdk::wire::{Durability, GroupSettings, JoinSettings};
use mote_sdk::{ErrorCode, Filter, Start, Topic};

use super::subscribe::{Cursor, Role, SubState};
use super::{ConnId, CursorId, Engine, Refusal, SubId, TopicId};

/// Defaults for settings a group's creator leaves at 0.
pub(crate) const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// Deliveries before a message is dead-lettered, by default.
pub(crate) const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Unacked messages a member may hold, by default.
pub(crate) const DEFAULT_PREFETCH: u32 = 64;
/// Longest group name.
const MAX_GROUP_NAME: usize = 64;
/// Whether a group is durable when the config does not say (see the module docs).
pub(crate) const DEFAULT_DURABLE: bool = true;
/// How long a dead letter the group keeps (its dead-letter topic could not be created)
/// waits before it is tried again.
pub(crate) const DEAD_LETTER_RETRY_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct GroupId(pub(super) u32);

/// A group's settings with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Time a member has to ack.
    pub ack_timeout_ms: u64,
    /// Deliveries before the dead-letter topic.
    pub max_deliveries: u32,
    /// Unacked messages per member.
    pub prefetch: u32,
    /// Kept while memberless (until `group-expiry`).
    pub durable: bool,
}

/// What the config file says of a group, by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Configured {
    /// Settings that win over what members ask for (0: the default).
    pub(super) settings: GroupSettings,
    /// `durable = true|false`; none: [`DEFAULT_DURABLE`].
    pub(super) durable: Option<bool>,
    /// `expiry = "1h"`; none: `--group-expiry`.
    pub(super) expiry_ms: Option<u64>,
}

impl Settings {
    /// `s` with 0 meaning the default, and `durable` as given (the engine decides it from
    /// the config: see the module docs).
    pub fn resolve(s: GroupSettings) -> Settings {
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        Settings {
            ack_timeout_ms: if s.ack_timeout_ms == 0 {
                DEFAULT_ACK_TIMEOUT_MS
            } else {
                u64::from(s.ack_timeout_ms)
            },
            max_deliveries: or(s.max_deliveries, DEFAULT_MAX_DELIVERIES),
            prefetch: or(s.prefetch, DEFAULT_PREFETCH),
            durable: s.durable,
        }
    }
}

/// What a joining member asks of the group it creates (ignored when the group exists).
/// The config file's `[groups.NAME]` wins over each part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Ack timeout, deliveries and prefetch (0: the default); its `durable` is not read.
    pub settings: GroupSettings,
    /// `Some(false)`: ephemeral, the group goes with its last member; `Some(true)`:
    /// durable; `None`: the broker's default (durable).
    pub durable: Option<bool>,
    /// How long a durable group is kept without members, if shorter than
    /// `--group-expiry` (a member may only shorten it: how long a forgotten group holds
    /// its slot is the operator's bound). Not kept across a restart (the log's group
    /// record has no field for it): a restored group has the config's expiry or
    /// `--group-expiry`.
    pub expiry_ms: Option<u64>,
}

impl From<GroupSettings> for Ask {
    /// The wire's `SubscribeGroup` settings: `durable: true` asks for a durable group,
    /// `false` for the broker's default.
    fn from(settings: GroupSettings) -> Ask {
        Ask {
            settings,
            durable: settings.durable.then_some(true),
            expiry_ms: None,
        }
    }
}

impl From<JoinSettings> for Ask {
    /// The settings of a protocol-3 `JoinGroup` (an `expiry_ms` of 0: the default).
    fn from(s: JoinSettings) -> Ask {
        Ask {
            settings: s.group_settings(),
            durable: match s.durability {
                Durability::Default => None,
                Durability::Durable => Some(true),
                Durability::Ephemeral => Some(false),
            },
            expiry_ms: (s.expiry_ms > 0).then_some(s.expiry_ms),
        }
    }
}

/// A message handed to a member and not settled yet.
pub(super) struct InFlight {
    tag: u64,
    topic: TopicId,
    offset: u64,
    attempt: u32,
    deadline_ms: u64,
}

/// What a member's connection has to send for the group.
pub(super) enum Out {
    Tag(u64),
    Lag {
        topic: TopicId,
        missed: u64,
        next: u64,
    },
}

/// A message waiting to be delivered again.
pub(super) struct Redelivery {
    topic: TopicId,
    offset: u64,
    /// The delivery it will be (2 for the first redelivery).
    attempt: u32,
    not_before_ms: u64,
    /// Out of deliveries: it goes to the dead-letter topic once its message is at hand
    /// (read back from disk first, if need be).
    dead: bool,
    /// A dead letter kept because its dead-letter topic could not be created
    /// (`--max-topics`): counted in `dead_letters_held` once, tried again later.
    held: bool,
}

/// A member's side of a group subscription.
pub(super) struct Member {
    pub(super) group: GroupId,
    next_tag: u64,
    /// By tag, ascending.
    pub(super) inflight: VecDeque<InFlight>,
    pub(super) outbox: VecDeque<Out>,
    /// The pseudo-cursor that puts the outbox in the connection's ready queue.
    pub(super) outbox_cursor: CursorId,
}

impl Member {
    /// Messages assigned to the member and not sent to it yet.
    pub(super) fn unsent(&self) -> usize {
        self.outbox
            .iter()
            .filter(|o| matches!(o, Out::Tag(_)))
            .count()
    }

    /// Where delivery `tag` is in `inflight`. Tags are handed out in order and mostly
    /// settled in order, so the guess from the front's tag is nearly always right.
    fn position(&self, tag: u64) -> Option<usize> {
        let front = self.inflight.front()?.tag;
        let guess = usize::try_from(tag.checked_sub(front)?).ok()?;
        if self.inflight.get(guess).is_some_and(|f| f.tag == tag) {
            return Some(guess);
        }
        self.inflight.binary_search_by_key(&tag, |f| f.tag).ok()
    }

    /// The message behind in-flight delivery `tag`: `(topic, offset, attempt)`.
    pub(super) fn lookup(&self, tag: u64) -> Option<(TopicId, u64, u32)> {
        let f = &self.inflight[self.position(tag)?];
        Some((f.topic, f.offset, f.attempt))
    }
}

/// Counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Deliveries made (first ones and redeliveries).
    pub delivered: u64,
    /// Messages acked.
    pub acked: u64,
    /// Redeliveries made.
    pub redelivered: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages the group never got: they fell out of a ring first.
    pub lag_missed: u64,
}

pub(super) struct GroupState {
    pub(super) name: Box<str>,
    filter: Filter,
    pub(super) settings: Settings,
    /// Changed since its state was last appended to the log (durable groups).
    pub(super) dirty: bool,
    pub(super) cursors: Vec<CursorId>,
    pub(super) members: Vec<SubId>,
    next_member: usize,
    /// Every member holds `prefetch` deliveries (or there is none): nothing to hand out
    /// until an ack, a nack, a timeout or a new member frees credit.
    pub(super) full: bool,
    next_cursor: usize,
    pub(super) redeliver: VecDeque<Redelivery>,
    counters: GroupCounters,
    /// Monotonic time it was created (or restored).
    created_ms: u64,
    /// Monotonic time its last member left (or it was created without one); none while
    /// it has members.
    pub(super) idle_since_ms: Option<u64>,
    /// Kept this long without members (durable groups); none: goes with its last member.
    pub(super) expiry_ms: Option<u64>,
    /// A dead letter is held for want of a topic, and that was logged.
    dead_held_logged: bool,
}

/// A group named in the broker's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Its name.
    pub name: String,
    /// Its settings (0: the default), which win over what members ask for; their
    /// `durable` is not read (see `durable`).
    pub settings: GroupSettings,
    /// With a filter, a durable group exists from the start, at the latest message of
    /// every topic, so it misses nothing published before its first member comes.
    pub filter: Option<String>,
    /// `durable = true|false`; none: durable (the default, see the module docs).
    pub durable: Option<bool>,
    /// `expiry = "1h"`: kept this long without members; none: `--group-expiry`.
    pub expiry_ms: Option<u64>,
}

/// A snapshot of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// The filter its members read.
    pub filter: String,
    /// Its settings.
    pub settings: Settings,
    /// Members connected.
    pub members: usize,
    /// Messages handed out and not settled.
    pub in_flight: usize,
    /// Messages waiting to be delivered again.
    pub redeliveries: usize,
    /// Messages stored but not handed out yet, over all its topics.
    pub backlog: u64,
    /// Its position in each topic.
    pub cursors: Vec<(String, u64)>,
    /// Its counters.
    pub counters: GroupCounters,
    /// Milliseconds since it was created (or restored).
    pub age_ms: u64,
    /// Milliseconds it has been without members, if it has none.
    pub idle_ms: Option<u64>,
    /// How long a durable group is kept without members (`group-expiry`); `None` for a
    /// group that is not durable (it goes with its last member).
    pub expiry_ms: Option<u64>,
}

/// Checks a group name: 1 to 64 characters, no `/`, `+`, `#`, `$` or control characters.
fn check_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_NAME
        && !name.contains(['/', '+', '#', '$'])
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::BAD_GROUP,
            format!(
                "bad group name {}: 1 to {MAX_GROUP_NAME} characters, without '/', '+', '#', '$' or control characters",
                mote_sdk::topic::shown(name)
            ),
        ))
    }
}

/// The earliest time at which a wait of `ms` that began with input at `clock_ms` is surely
/// over: the clock counts whole milliseconds and the input may have come late within
/// `clock_ms`, so one more (the whole wait, not a millisecond less).
pub(super) fn deadline_after(clock_ms: u64, ms: u64) -> u64 {
    clock_ms.saturating_add(ms).saturating_add(1)
}

impl Engine {
    /// Called by the broker's timer before it sleeps: returns when it should wake
    /// (monotonic ms), at most `max_ms` after `now_ms`, sooner for a group deadline, and
    /// always after `now_ms`: a deadline that is already due was acted on by the sweep
    /// just before, and what is left of it cannot be (a redelivery with no member that
    /// has credit). It waits for the event that gives credit (an ack, a nack, a timeout,
    /// a member joining or leaving), which hands it out then; waking for it again would
    /// only spin.
    pub fn arm_timer(&mut self, now_ms: u64, max_ms: u64) -> u64 {
        let mut at = now_ms.saturating_add(max_ms.max(1));
        for (_, g) in &self.groups {
            for r in &g.redeliver {
                if r.not_before_ms > now_ms {
                    at = at.min(r.not_before_ms);
                }
            }
            for k in &g.members {
                if let Some(f) = self.subs[k.0 as usize]
                    .member
                    .as_ref()
                    .and_then(|m| m.inflight.front())
                {
                    at = at.min(f.deadline_ms);
                }
            }
        }
        if let Some(d) = self.next_request_deadline() {
            at = at.min(d);
        }
        if let Some(t) = self.tx_next_due(now_ms) {
            at = at.min(t);
        }
        let at = at.max(now_ms.saturating_add(1));
        self.timer_armed_ms = at;
        self.timer_moved = false;
        at
    }

    /// Time passes: `now_ms` (monotonic) is the clock ack deadlines and nack delays count
    /// from. Called with every input; TCP input does it in `handle_received`.
    pub fn advance_clock(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    /// Whether a deadline before the armed timer appeared since [`Engine::arm_timer`].
    pub fn take_timer_moved(&mut self) -> bool {
        std::mem::take(&mut self.timer_moved)
    }

    pub(super) fn note_deadline(&mut self, at_ms: u64) {
        if at_ms < self.timer_armed_ms {
            self.timer_armed_ms = at_ms;
            self.timer_moved = true;
        }
    }

    /// Sets the settings of group `name` from the config file; they win over what its
    /// first member asks for.
    pub fn set_group_settings(&mut self, name: &str, settings: GroupSettings) {
        self.group_config.entry(name.into()).or_default().settings = settings;
    }

    /// Whether group `name` is durable, and how long it is kept without members: as the
    /// config says, else as its creator asked (`asked`), else [`DEFAULT_DURABLE`].
    fn durability(&self, name: &str, asked: Option<bool>) -> (bool, Option<u64>) {
        let c = self.group_config.get(name);
        let durable = c
            .and_then(|c| c.durable)
            .or(asked)
            .unwrap_or(DEFAULT_DURABLE);
        let expiry = c
            .and_then(|c| c.expiry_ms)
            .unwrap_or(self.limits.group_expiry_ms);
        (durable, durable.then_some(expiry))
    }

    /// A group from the config file: its settings, and the group itself if it is durable
    /// and names its filter.
    pub fn configure_group(&mut self, g: &GroupConfig) -> Result<(), Refusal> {
        check_name(&g.name)?;
        self.group_config.insert(
            g.name.as_str().into(),
            Configured {
                settings: g.settings,
                durable: g.durable,
                expiry_ms: g.expiry_ms,
            },
        );
        if let Some(&gid) = self.group_names.get(g.name.as_str()) {
            // Restored from the log before the config was read: the config's durability
            // and expiry apply to it (its other settings are the ones it was created with).
            let (durable, expiry_ms) = self.durability(&g.name, None);
            let state = &mut self.groups[gid.0 as usize];
            state.settings.durable = durable;
            state.expiry_ms = expiry_ms;
        }
        let Some(filter) = &g.filter else {
            return Ok(());
        };
        let filter = Filter::new(filter).map_err(|e| {
            Refusal::new(
                ErrorCode::BAD_FILTER,
                format!(
                    "group {}: bad filter {}: {e}",
                    g.name,
                    mote_sdk::topic::shown(filter)
                ),
            )
        })?;
        if self.group_names.contains_key(g.name.as_str()) {
            return Ok(());
        }
        if self.durability(&g.name, None).0 {
            self.create_group(&g.name, filter, Start::Latest, g.settings, None);
        } else {
            self.group_filters.insert(g.name.as_str().into(), filter);
        }
        Ok(())
    }

    /// Makes `conn`'s subscription `sub` a member of group `group` reading `filter`,
    /// creating the group (at `from`, with `settings`) if needed. `settings` is the wire's
    /// [`GroupSettings`] (its `durable: false` asks for the broker's default), or an
    /// [`Ask`] that can also ask for an ephemeral group or a shorter expiry.
    pub fn handle_subscribe_group(
        &mut self,
        conn: ConnId,
        sub: u32,
        filter: &str,
        group: &str,
        from: Start,
        settings: impl Into<Ask>,
    ) -> Result<u64, Refusal> {
        let r = self.try_subscribe_group(conn, sub, filter, group, from, settings.into());
        if let Err(e) = &r {
            self.stats.subscribe_refused += 1;
            self.stats.count_error(e.code);
        }
        r
    }

    /// [`Engine::handle_subscribe_group`] for a member that also asks how long a new
    /// durable group is kept without members (`expiry_ms`; see [`Ask::expiry_ms`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the wire's SubscribeGroup fields, one by one, as handle_subscribe_group takes them"
    )]
    pub fn handle_subscribe_group_with_expiry(
        &mut self,
        conn: ConnId,
        sub: u32,
        filter: &str,
        group: &str,
        from: Start,
        settings: GroupSettings,
        expiry_ms: Option<u64>,
    ) -> Result<u64, Refusal> {
        let ask = Ask {
            expiry_ms,
            ..Ask::from(settings)
        };
        self.handle_subscribe_group(conn, sub, filter, group, from, ask)
    }

    fn try_subscribe_group(
        &mut self,
        conn: ConnId,
        sub: u32,
        filter: &str,
        group: &str,
        from: Start,
        ask: Ask,
    ) -> Result<u64, Refusal> {
        check_name(group)?;
        self.check_new_subscription(conn, sub)?;
        let filter = Filter::new(filter).map_err(|e| {
            Refusal::new(
                ErrorCode::BAD_FILTER,
                format!("bad filter {}: {e}", mote_sdk::topic::shown(filter)),
            )
        })?;
        let gid = match self.group_names.get(group) {
            Some(&g) => {
                let existing = &self.groups[g.0 as usize].filter;
                if *existing != filter {
                    return Err(Refusal::new(
                        ErrorCode::BAD_GROUP,
                        format!("group {group:?} reads {existing}; join it with that filter"),
                    ));
                }
                g
            }
            None => {
                if self.groups.len() >= self.limits.max_groups {
                    return Err(Refusal::new(
                        ErrorCode::BAD_GROUP,
                        format!(
                            "the broker holds {} consumer groups, the limit is {} (--max-groups); `mote group delete` removes one, and one without members goes after --group-expiry",
                            self.groups.len(),
                            self.limits.max_groups
                        ),
                    ));
                }
                if let Some(want) = self.group_filters.get(group) {
                    if *want != filter {
                        return Err(Refusal::new(
                            ErrorCode::BAD_GROUP,
                            format!(
                                "group {group:?} reads {want} (the broker's config); join it with that filter"
                            ),
                        ));
                    }
                }
                let gid = self.create_group(group, filter.clone(), from, ask.settings, ask.durable);
                let configured = self.group_config.get(group).and_then(|c| c.expiry_ms);
                let g = &mut self.groups[gid.0 as usize];
                if let (Some(asked), None, Some(kept)) = (ask.expiry_ms, configured, g.expiry_ms) {
                    // Not `clamp`: it panics if `kept` is 0 (a `Limits` built by hand), and
                    // a peer chose `asked`.
                    g.expiry_ms = Some(asked.max(1).min(kept));
                }
                gid
            }
        };
        let key = SubId(self.subs.insert(SubState {
            conn,
            id: sub,
            filter,
            cursors: Vec::new(),
            member: None,
        }) as u32);
        let outbox = CursorId(self.cursors.insert(Cursor {
            conn,
            sub_id: sub,
            topic: TopicId(0),
            next: 0,
            lag: 0,
            queued: false,
            role: Role::Outbox(key),
            skip_seq: 0,
            skip_before_ms: 0,
            before_start: false,
        }) as u32);
        let s = &mut self.subs[key.0 as usize];
        s.cursors.push(outbox);
        s.member = Some(Box::new(Member {
            group: gid,
            next_tag: 0,
            inflight: VecDeque::new(),
            outbox: VecDeque::new(),
            outbox_cursor: outbox,
        }));
        self.conns[conn.index()].subs.push(key);
        let g = &mut self.groups[gid.0 as usize];
        g.members.push(key);
        g.full = false;
        g.idle_since_ms = None;
        let first = g.members.len() == 1;
        if first {
            self.channel_presence(gid, true);
        }
        self.pump(gid);
        Ok(self.seq)
    }

    pub(super) fn create_group(
        &mut self,
        name: &str,
        filter: Filter,
        from: Start,
        asked: GroupSettings,
        asked_durable: Option<bool>,
    ) -> GroupId {
        let configured = self.group_config.get(name).map(|c| c.settings);
        let mut settings = Settings::resolve(configured.unwrap_or(asked));
        let (durable, expiry_ms) = self.durability(name, asked_durable);
        settings.durable = durable;
        let gid = GroupId(self.groups.insert(GroupState {
            name: name.into(),
            filter,
            settings,
            dirty: true,
            cursors: Vec::new(),
            members: Vec::new(),
            next_member: 0,
            full: false,
            next_cursor: 0,
            redeliver: VecDeque::new(),
            counters: GroupCounters::default(),
            created_ms: self.clock_ms,
            idle_since_ms: Some(self.clock_ms),
            expiry_ms,
            dead_held_logged: false,
        }) as u32);
        self.group_names.insert(name.into(), gid);
        self.groups_dirty = true;
        let g = &self.groups[gid.0 as usize];
        let matched: Vec<TopicId> = (0..self.topics.len())
            .filter(|&i| g.filter.matches(&self.topics[i].name))
            .map(|i| TopicId(i as u32))
            .collect();
        for tid in matched {
            let t = &self.topics[tid.0 as usize];
            let (first, next) = (t.disk_first.min(t.ring.first()), t.ring.next());
            let start = match from {
                Start::Latest | Start::AfterSeq(_) => next,
                Start::Earliest => first,
                Start::Offset(n) => n.min(next),
                Start::Last(n) => next.saturating_sub(n).max(first),
                Start::Time(_) | Start::Ago(_) => {
                    self.offset_at_time(tid, self.start_time_ms(from).unwrap_or(0))
                }
            };
            self.attach_group(gid, tid, start);
            if let Some(&ck) = self.groups[gid.0 as usize].cursors.last() {
                // On disk the start is the run holding the time: older ones are passed over.
                self.cursors[ck.0 as usize].skip_before_ms = self.start_time_ms(from).unwrap_or(0);
            }
        }
        gid
    }

    /// Gives group `gid` a cursor on topic `tid` at `start`.
    pub(super) fn attach_group(&mut self, gid: GroupId, tid: TopicId, start: u64) {
        let ck = CursorId(self.cursors.insert(Cursor {
            conn: ConnId::EDGE,
            sub_id: 0,
            topic: tid,
            next: start,
            lag: 0,
            queued: false,
            role: Role::Group(gid),
            skip_seq: 0,
            skip_before_ms: 0,
            before_start: false,
        }) as u32);
        self.groups[gid.0 as usize].cursors.push(ck);
        self.topics[tid.0 as usize].watchers.push(ck);
    }

    /// The groups whose filter matches `name`, for a new topic.
    pub(super) fn groups_matching(&self, name: &str) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| g.filter.matches(name))
            .map(|(k, _)| GroupId(k as u32))
            .collect()
    }

    /// The filter of group `gid`, as text.
    pub(super) fn group_filter(&self, gid: GroupId) -> &str {
        self.groups
            .get(gid.0 as usize)
            .map_or("", |g| g.filter.as_str())
    }

    /// The name of group `gid`.
    pub(super) fn group_name(&self, gid: GroupId) -> &str {
        self.groups.get(gid.0 as usize).map_or("", |g| &g.name)
    }

    /// The member state of `conn`'s subscription `sub`.
    fn member_of(&mut self, conn: ConnId, sub: u32) -> Option<SubId> {
        let c = self.conns.get(conn.index())?;
        c.subs
            .iter()
            .copied()
            .find(|s| self.subs[s.0 as usize].id == sub && self.subs[s.0 as usize].member.is_some())
    }

    fn unknown_delivery(&mut self, sub: u32, tag: u64) -> Refusal {
        self.stats.count_error(ErrorCode::UNKNOWN_DELIVERY);
        Refusal::new(
            ErrorCode::UNKNOWN_DELIVERY,
            format!(
                "subscription {sub} has no delivery {tag} in flight (acked already, or redelivered after its ack timeout)"
            ),
        )
    }

    /// Takes delivery `tag` out of `sub`'s in-flight messages.
    fn settle(&mut self, key: SubId, tag: u64) -> Option<(GroupId, InFlight)> {
        let m = self.subs[key.0 as usize].member.as_mut()?;
        let i = m.position(tag)?;
        let f = m.inflight.remove(i)?;
        Some((m.group, f))
    }

    /// Notes that group `gid` changed (its durable state is appended at the next poll).
    pub(super) fn touch(&mut self, gid: GroupId) {
        if let Some(g) = self.groups.get_mut(gid.0 as usize) {
            if g.settings.durable && !g.dirty {
                g.dirty = true;
                self.groups_dirty = true;
            }
        }
    }

    /// Whether a consumer group handed the message at `offset` of `topic` to a member
    /// that has not acked it yet (in flight, or waiting to be delivered again): a
    /// `wait=delivered` publish that times out then was delivered, just not acked.
    pub fn unacked_in_group(&self, topic: &str, offset: u64) -> bool {
        let Some(&tid) = self.by_name.get(topic) else {
            return false;
        };
        let in_flight = self.subs.iter().any(|(_, s)| {
            s.member.as_ref().is_some_and(|m| {
                m.inflight
                    .iter()
                    .any(|f| f.topic == tid && f.offset == offset)
            })
        });
        in_flight
            || self.groups.iter().any(|(_, g)| {
                g.redeliver
                    .iter()
                    .any(|r| r.topic == tid && r.offset == offset)
            })
    }

    /// The member acks delivery `tag`.
    pub fn handle_ack(&mut self, conn: ConnId, sub: u32, tag: u64) -> Result<(), Refusal> {
        let settled = self.member_of(conn, sub).and_then(|k| self.settle(k, tag));
        let Some((gid, f)) = settled else {
            return Err(self.unknown_delivery(sub, tag));
        };
        self.touch(gid);
        let g = &mut self.groups[gid.0 as usize];
        g.counters.acked += 1;
        g.full = false;
        // An HTTP publish waiting for delivery counts an ack as one.
        let t = &mut self.topics[f.topic.0 as usize];
        if !t.waits.is_empty() {
            t.settle_waits_at(f.offset, &mut self.delivered_waits, &mut self.wakeups);
        }
        self.pump(gid);
        Ok(())
    }

    /// The member gives delivery `tag` back, to be delivered again after `delay_ms`.
    pub fn handle_nack(
        &mut self,
        conn: ConnId,
        sub: u32,
        tag: u64,
        delay_ms: u64,
    ) -> Result<(), Refusal> {
        let settled = self.member_of(conn, sub).and_then(|k| self.settle(k, tag));
        let Some((gid, f)) = settled else {
            return Err(self.unknown_delivery(sub, tag));
        };
        self.touch(gid);
        self.groups[gid.0 as usize].full = false;
        self.requeue(gid, f.topic, f.offset, f.attempt, delay_ms, false);
        self.pump(gid);
        Ok(())
    }

    /// A delivery that was not acked goes back, or to the dead-letter topic once it has
    /// had `max_deliveries` tries. `front`: ahead of other redeliveries.
    fn requeue(
        &mut self,
        gid: GroupId,
        topic: TopicId,
        offset: u64,
        attempt: u32,
        delay_ms: u64,
        front: bool,
    ) {
        self.touch(gid);
        let g = &mut self.groups[gid.0 as usize];
        if attempt >= g.settings.max_deliveries {
            if !self.dead_letter(gid, topic, offset, false) {
                // Its message is on disk only: to the dead letters once read back.
                self.groups[gid.0 as usize]
                    .redeliver
                    .push_front(Redelivery {
                        topic,
                        offset,
                        attempt,
                        not_before_ms: 0,
                        dead: true,
                        held: false,
                    });
            }
            return;
        }
        let not_before_ms = if delay_ms > 0 {
            deadline_after(self.clock_ms, delay_ms)
        } else {
            self.clock_ms
        };
        let r = Redelivery {
            topic,
            offset,
            attempt: attempt + 1,
            not_before_ms,
            dead: false,
            held: false,
        };
        let at = r.not_before_ms;
        if front {
            g.redeliver.push_front(r);
        } else {
            g.redeliver.push_back(r);
        }
        if delay_ms > 0 {
            self.note_deadline(at);
        }
    }

    /// A restored group's delivery that was never acked, `attempt` deliveries made: it
    /// goes again (or to the dead letters) when a member can take it.
    pub(super) fn requeue_restored(
        &mut self,
        gid: GroupId,
        tid: TopicId,
        offset: u64,
        attempt: u32,
    ) {
        self.requeue(gid, tid, offset, attempt, 0, false);
    }

    /// Puts group `gid`'s cursor on topic `tid` at `next` (a restored group).
    pub(super) fn set_group_cursor(&mut self, gid: GroupId, tid: TopicId, next: u64) {
        let t = &self.topics[tid.0 as usize];
        let next = next.clamp(t.disk_first.min(t.ring.first()), t.ring.next());
        let g = &self.groups[gid.0 as usize];
        for &ck in &g.cursors {
            let cur = &mut self.cursors[ck.0 as usize];
            if cur.topic == tid {
                cur.next = next;
            }
        }
    }

    /// Group `gid`'s durable state: where it reads each topic, and what it handed out
    /// without an ack (in flight or waiting to go again), by topic name.
    pub(super) fn group_record(&self, gid: GroupId) -> crate::store::RecoveredGroup {
        let g = &self.groups[gid.0 as usize];
        let name = |tid: TopicId| self.topics[tid.0 as usize].name.to_string();
        let cursors = g
            .cursors
            .iter()
            .map(|ck| {
                let cur = &self.cursors[ck.0 as usize];
                (name(cur.topic), cur.next)
            })
            .collect();
        let mut pending = Vec::new();
        for k in &g.members {
            if let Some(m) = &self.subs[k.0 as usize].member {
                for f in &m.inflight {
                    pending.push((name(f.topic), f.offset, f.attempt));
                }
            }
        }
        for r in &g.redeliver {
            // `attempt` is the delivery it will be: one fewer were made.
            let made = if r.dead { r.attempt } else { r.attempt - 1 };
            pending.push((name(r.topic), r.offset, made));
        }
        crate::store::RecoveredGroup {
            name: g.name.to_string(),
            filter: g.filter.to_string(),
            ack_timeout_ms: g.settings.ack_timeout_ms,
            max_deliveries: g.settings.max_deliveries,
            prefetch: g.settings.prefetch,
            cursors,
            pending,
        }
    }

    /// Stores the message at `offset` of `topic` in `$dead/<group>/<topic>`; `false`
    /// when the message must be read back from disk first (a read is asked for).
    /// When the dead-letter topic cannot be created (`--max-topics`), the group keeps
    /// the message (unacked, tried again after [`DEAD_LETTER_RETRY_MS`]), counts it in
    /// `dead_letters_held` (once per message; `held`: it was already) and logs it once
    /// per group until a dead letter goes through again: never dropped silently.
    fn dead_letter(&mut self, gid: GroupId, topic: TopicId, offset: u64, held: bool) -> bool {
        let e = match self.avail(topic, offset) {
            super::disk::Avail::Here(e) => e,
            super::disk::Avail::Read => {
                self.want(topic, offset, None);
                return false;
            }
            super::disk::Avail::Gone => {
                // Gone from retention already: nothing left to keep.
                self.groups[gid.0 as usize].counters.lag_missed += 1;
                return true;
            }
        };
        let t = &self.topics[topic.0 as usize];
        let mut key = offset.to_string().into_bytes();
        if let Some(k) = e.key() {
            key.push(b'/');
            key.extend_from_slice(k);
        }
        let (payload, time_ms) = (e.payload().to_vec(), e.time_ms);
        let g = &self.groups[gid.0 as usize];
        let full = format!("$dead/{}/{}", g.name, t.name);
        let name = if Topic::new_system(&full).is_ok() {
            full
        } else {
            format!("$dead/{}", g.name)
        };
        let max_frame = self.limits.max_frame();
        if !super::holes::fits_frame(name.len(), key.len(), payload.len(), max_frame) {
            self.groups[gid.0 as usize].counters.lag_missed += 1;
            self.dead_letter_too_large(topic, offset, &name);
            return true;
        }
        match self.publish_system(&name, time_ms, &key, &payload) {
            Ok(_) => {
                let g = &mut self.groups[gid.0 as usize];
                g.counters.dead_lettered += 1;
                g.dead_held_logged = false;
            }
            Err(r) if r.code == ErrorCode::TOPIC_LIMIT => {
                if !held {
                    self.stats.dead_letters_held += 1;
                }
                let g = &mut self.groups[gid.0 as usize];
                if !std::mem::replace(&mut g.dead_held_logged, true) {
                    log::error!(
                        "group {}: keeping a message of {} that is out of deliveries (and more, unlogged, while this lasts): {}; it is tried again every {} s",
                        mote_sdk::topic::shown(&g.name),
                        mote_sdk::topic::shown(&self.topics[topic.0 as usize].name),
                        r.message,
                        DEAD_LETTER_RETRY_MS / 1_000
                    );
                }
                let at = self.clock_ms.saturating_add(DEAD_LETTER_RETRY_MS);
                let attempt = g.settings.max_deliveries;
                g.redeliver.push_back(Redelivery {
                    topic,
                    offset,
                    attempt,
                    not_before_ms: at,
                    dead: true,
                    held: true,
                });
                if !held {
                    // Its state changed once; a retry that fails changes nothing.
                    self.touch(gid);
                }
                self.note_deadline(at);
            }
            Err(_) => self.groups[gid.0 as usize].counters.lag_missed += 1,
        }
        true
    }

    /// Hands messages to members with free credit, round-robin, until there is no
    /// message or no credit left.
    pub(super) fn pump(&mut self, gid: GroupId) {
        loop {
            let g = &self.groups[gid.0 as usize];
            // The common case while publishers are ahead: no credit, nothing to scan.
            if g.full {
                return;
            }
            let n = g.members.len();
            let prefetch = g.settings.prefetch as usize;
            let (mut i, mut chosen) = (g.next_member.min(n), None);
            for _ in 0..n {
                if i >= n {
                    i = 0;
                }
                let m = self.subs[g.members[i].0 as usize].member.as_ref();
                if m.is_some_and(|m| m.inflight.len() < prefetch) {
                    chosen = Some(i);
                    break;
                }
                i += 1;
            }
            let Some(idx) = chosen else {
                self.groups[gid.0 as usize].full = true;
                return;
            };
            let member = g.members[idx];
            let Some((topic, offset, attempt)) = self.next_for(gid, member) else {
                return;
            };
            self.touch(gid);
            let g = &mut self.groups[gid.0 as usize];
            g.next_member = if idx + 1 == n { 0 } else { idx + 1 };
            g.counters.delivered += 1;
            if attempt > 1 {
                g.counters.redelivered += 1;
            }
            let deadline_ms = deadline_after(self.clock_ms, g.settings.ack_timeout_ms);
            self.note_deadline(deadline_ms);
            let Some(m) = self.subs[member.0 as usize].member.as_mut() else {
                return;
            };
            let tag = m.next_tag;
            m.next_tag += 1;
            m.inflight.push_back(InFlight {
                tag,
                topic,
                offset,
                attempt,
                deadline_ms,
            });
            m.outbox.push_back(Out::Tag(tag));
            let ck = m.outbox_cursor;
            self.queue_cursor(ck);
        }
    }

    /// The next message for the group: a due redelivery first, else the next message at
    /// one of its cursors (taking turns across topics). Lag found on the way is told to
    /// `member`.
    fn next_for(&mut self, gid: GroupId, member: SubId) -> Option<(TopicId, u64, u32)> {
        use super::disk::Avail;
        let now = self.clock_ms;
        loop {
            let g = &mut self.groups[gid.0 as usize];
            let Some(i) = g.redeliver.iter().position(|r| r.not_before_ms <= now) else {
                break;
            };
            let (topic, offset, attempt, dead, held) = {
                let r = &g.redeliver[i];
                (r.topic, r.offset, r.attempt, r.dead, r.held)
            };
            match self.avail(topic, offset) {
                Avail::Here(_) if dead => {
                    self.groups[gid.0 as usize].redeliver.remove(i);
                    self.dead_letter(gid, topic, offset, held);
                }
                Avail::Here(_) => {
                    self.groups[gid.0 as usize].redeliver.remove(i);
                    return Some((topic, offset, attempt));
                }
                Avail::Read => {
                    // Read back from disk first; the group goes on when it comes.
                    self.want(topic, offset, None);
                    return None;
                }
                Avail::Gone => {
                    let g = &mut self.groups[gid.0 as usize];
                    g.redeliver.remove(i);
                    g.counters.lag_missed += 1;
                }
            }
        }
        let g = &mut self.groups[gid.0 as usize];
        let n = g.cursors.len();
        for i in 0..n {
            let ci = (g.next_cursor + i) % n;
            let ck = g.cursors[ci];
            let cur = &mut self.cursors[ck.0 as usize];
            let tid = cur.topic;
            let t = &self.topics[tid.0 as usize];
            let first = t.disk_first.min(t.ring.first());
            if cur.next < first {
                let missed = first - cur.next;
                cur.next = first;
                g.counters.lag_missed += missed;
                self.stats.lag_events += 1;
                self.stats.lag_missed += missed;
                let lag = Out::Lag {
                    topic: tid,
                    missed,
                    next: cur.next,
                };
                if let Some(m) = self.subs[member.0 as usize].member.as_mut() {
                    m.outbox.push_back(lag);
                }
            }
            // Stored before the time the group was moved to: passed over (what is not
            // in memory is read back first, below).
            while cur.skip_before_ms > 0 && cur.next < t.visible {
                match t.ring.get(cur.next).or_else(|| t.cache.get(cur.next)) {
                    Some(e) if e.time_ms < cur.skip_before_ms => cur.next += 1,
                    Some(_) => cur.skip_before_ms = 0,
                    None => break,
                }
            }
            if cur.next < t.visible {
                let offset = cur.next;
                if offset < t.ring.first() {
                    if let Some(end) = self.hole_end(tid, offset) {
                        // Lost to damage on disk: skipped, and told as lag.
                        let cur = &mut self.cursors[ck.0 as usize];
                        let missed = end - offset;
                        cur.next = end;
                        let g = &mut self.groups[gid.0 as usize];
                        g.counters.lag_missed += missed;
                        if let Some(m) = self.subs[member.0 as usize].member.as_mut() {
                            m.outbox.push_back(Out::Lag {
                                topic: tid,
                                missed,
                                next: end,
                            });
                        }
                        return self.next_for(gid, member);
                    }
                    if let Avail::Read = self.avail(tid, offset) {
                        self.want(tid, offset, None);
                        return None;
                    }
                }
                let cur = &mut self.cursors[ck.0 as usize];
                cur.next += 1;
                self.groups[gid.0 as usize].next_cursor = ci;
                return Some((tid, offset, 1));
            }
        }
        None
    }

    /// Redelivers what is past its ack timeout, and pumps the groups with redeliveries
    /// now due. `now_ms` is monotonic.
    pub(super) fn group_timeouts(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let ids: Vec<GroupId> = self.groups.iter().map(|(k, _)| GroupId(k as u32)).collect();
        for gid in ids {
            if self.expire_group(gid, now_ms) {
                continue;
            }
            let members = self.groups[gid.0 as usize].members.clone();
            let mut expired = Vec::new();
            for key in members {
                // Deadlines grow with tags: the expired ones are at the front.
                if let Some(m) = self.subs[key.0 as usize].member.as_mut() {
                    while m.inflight.front().is_some_and(|f| f.deadline_ms <= now_ms) {
                        expired.extend(m.inflight.pop_front());
                    }
                }
            }
            if !expired.is_empty() {
                self.groups[gid.0 as usize].full = false;
                self.touch(gid);
            }
            for f in expired {
                self.requeue(gid, f.topic, f.offset, f.attempt, 0, false);
            }
            let g = &self.groups[gid.0 as usize];
            if !g.redeliver.is_empty()
                || g.cursors.iter().any(|c| {
                    let cur = &self.cursors[c.0 as usize];
                    cur.next < self.topics[cur.topic.0 as usize].visible
                })
            {
                self.pump(gid);
            }
        }
    }

    /// A member leaves: what it held goes to the others at once; a non-durable group
    /// without members goes away.
    pub(super) fn remove_member(&mut self, key: SubId, m: Member) {
        let gid = m.group;
        let unsent: Vec<u64> = m
            .outbox
            .iter()
            .filter_map(|o| if let Out::Tag(t) = o { Some(*t) } else { None })
            .collect();
        // In reverse, each to the front: the oldest ends up first.
        for f in m.inflight.into_iter().rev() {
            let tried = if unsent.contains(&f.tag) {
                f.attempt - 1
            } else {
                f.attempt
            };
            self.requeue(gid, f.topic, f.offset, tried, 0, true);
        }
        self.touch(gid);
        let g = &mut self.groups[gid.0 as usize];
        g.members.retain(|&k| k != key);
        if g.members.is_empty() {
            self.channel_presence(gid, false);
            let g = &mut self.groups[gid.0 as usize];
            if !g.settings.durable {
                self.drop_group(gid);
                return;
            }
            g.idle_since_ms = Some(self.clock_ms);
        }
        self.pump(gid);
    }

    /// A snapshot of every group.
    pub fn group_infos(&self) -> Vec<GroupInfo> {
        self.groups
            .iter()
            .filter_map(|(k, _)| self.group_info(k))
            .collect()
    }

    /// The keys of every group now, for reading their snapshots in slices.
    pub fn group_keys(&self) -> Vec<usize> {
        self.groups.iter().map(|(k, _)| k).collect()
    }

    /// Number of consumer groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// A snapshot of the group with key `key` (see [`Engine::group_keys`]), if it still
    /// exists.
    pub fn group_info(&self, key: usize) -> Option<GroupInfo> {
        let g = self.groups.get(key)?;
        let mut in_flight = 0;
        for k in &g.members {
            if let Some(m) = &self.subs[k.0 as usize].member {
                in_flight += m.inflight.len();
            }
        }
        let mut backlog = 0;
        let cursors = g
            .cursors
            .iter()
            .map(|c| {
                let cur = &self.cursors[c.0 as usize];
                let t = &self.topics[cur.topic.0 as usize];
                backlog += t.ring.next().saturating_sub(cur.next);
                (t.name.to_string(), cur.next)
            })
            .collect();
        Some(GroupInfo {
            name: g.name.to_string(),
            filter: g.filter.to_string(),
            settings: g.settings,
            members: g.members.len(),
            in_flight,
            redeliveries: g.redeliver.len(),
            backlog,
            cursors,
            counters: g.counters,
            age_ms: self.clock_ms.saturating_sub(g.created_ms),
            idle_ms: g.idle_since_ms.map(|t| self.clock_ms.saturating_sub(t)),
            expiry_ms: g.expiry_ms,
        })
    }
}

impl Engine {
    /// Topic `tid` is being removed and `gone` are the group cursors it had (already out
    /// of the cursor table): each group forgets its cursor there and what it handed out
    /// or keeps for redelivery from it. A hook for `lifecycle`.
    pub(super) fn detach_groups_from(&mut self, tid: TopicId, gone: &[CursorId]) {
        let mut changed = Vec::new();
        for (k, g) in self.groups.iter_mut() {
            let before = g.cursors.len() + g.redeliver.len();
            g.cursors.retain(|ck| !gone.contains(ck));
            g.redeliver.retain(|r| r.topic != tid);
            if g.next_cursor >= g.cursors.len() {
                g.next_cursor = 0;
            }
            for key in &g.members {
                if let Some(m) = self
                    .subs
                    .get_mut(key.0 as usize)
                    .and_then(|s| s.member.as_mut())
                {
                    m.inflight.retain(|f| f.topic != tid);
                    m.outbox
                        .retain(|o| !matches!(o, Out::Lag { topic, .. } if *topic == tid));
                }
            }
            // Credit may have been freed: the next pump looks again.
            g.full = false;
            if before != g.cursors.len() + g.redeliver.len() {
                changed.push(GroupId(k as u32));
            }
        }
        for gid in changed {
            self.touch(gid);
        }
    }
}
