//! The end and the moves of consumer groups: seek (`mote group seek`), removal (`mote
//! group delete`, and `group-expiry` without members), and telling the members of a
//! removed group that their subscription is gone.

use mote_sdk::{ErrorCode, Start};

use super::group::GroupId;
use super::subscribe::Delivery;
use super::{ConnId, Engine, Refusal};

impl Engine {
    /// Moves group `gid` to `to` in every topic it reads. What it handed out and was
    /// not acked (in flight, or waiting to go again) is dropped: those tags answer
    /// `unknown_delivery`, and the members' credit is free for the new position at once.
    pub(super) fn seek(&mut self, gid: GroupId, to: Start) -> Result<(), Refusal> {
        if let Start::AfterSeq(_) = to {
            return Err(Refusal::new(
                ErrorCode::BAD_GROUP,
                "a group cannot seek to a broker sequence number; seek to earliest, latest, an offset, the last N, a time or a time ago".into(),
            ));
        }
        let time = self.start_time_ms(to);
        let g = &mut self.groups[gid.0 as usize];
        g.redeliver.clear();
        g.full = false;
        let (members, cursors) = (g.members.clone(), g.cursors.clone());
        for key in members {
            if let Some(m) = self.subs[key.0 as usize].member.as_mut() {
                m.inflight.clear();
                // What was assigned and not sent yet, and lag told about the old
                // position: the outbox, drained empty, leaves its ready queue by itself.
                m.outbox.clear();
            }
        }
        for ck in cursors {
            let tid = self.cursors[ck.0 as usize].topic;
            let t = &self.topics[tid.0 as usize];
            let (first, next) = (t.disk_first.min(t.ring.first()), t.ring.next());
            let at = match to {
                Start::Earliest => first,
                Start::Latest | Start::AfterSeq(_) => next,
                Start::Offset(n) => n.clamp(first, next),
                Start::Last(n) => next.saturating_sub(n).max(first),
                Start::Time(_) | Start::Ago(_) => self.offset_at_time(tid, time.unwrap_or(0)),
            };
            let cur = &mut self.cursors[ck.0 as usize];
            cur.next = at;
            cur.lag = 0;
            cur.skip_before_ms = time.unwrap_or(0);
        }
        self.touch(gid);
        self.pump(gid);
        Ok(())
    }

    /// Removes group `gid`: its cursors, what it handed out, and its members'
    /// subscriptions (each member is told, see [`Delivery::GroupGone`]); a durable
    /// group's state leaves the log too.
    pub(super) fn drop_group(&mut self, gid: GroupId) {
        if !self.groups[gid.0 as usize].members.is_empty() {
            self.channel_presence(gid, false);
        }
        let g = self.groups.remove(gid.0 as usize);
        self.group_names.remove(&*g.name);
        for ck in g.cursors {
            let cur = self.cursors.remove(ck.0 as usize);
            let w = &mut self.topics[cur.topic.0 as usize].watchers;
            if let Some(i) = w.iter().position(|&k| k == ck) {
                w.swap_remove(i);
            }
        }
        for key in g.members {
            let s = self.subs.remove(key.0 as usize);
            let conn = s.conn;
            for ck in s.cursors {
                let cur = self.cursors.remove(ck.0 as usize);
                if cur.queued {
                    if let Some(c) = self.conns.get_mut(conn.index()) {
                        c.ready.retain(|&k| k != ck);
                    }
                }
            }
            if let Some(c) = self.conns.get_mut(conn.index()) {
                c.subs.retain(|&k| k != key);
                if !self.group_gone.iter().any(|n| n.0 == conn) {
                    self.wakeups.push(conn);
                }
                self.group_gone.push((conn, s.id, g.name.clone()));
            }
        }
        if g.settings.durable {
            if let Some(log) = self.log.as_mut() {
                log.append_group_gone(&g.name);
            }
        }
    }

    /// Removes group `gid` if it has had no member for its `group-expiry` (or is not
    /// durable and has none: a durable group restored after the config opted out).
    /// Returns whether it did. A group restored from the log counts its time without
    /// members from the broker's start: the log keeps no clock of its members, so a
    /// broker restarted more often than `group-expiry` keeps its memberless groups.
    pub(super) fn expire_group(&mut self, gid: GroupId, now_ms: u64) -> bool {
        let Some(g) = self.groups.get(gid.0 as usize) else {
            return false;
        };
        if !g.members.is_empty() {
            return false;
        }
        if !g.settings.durable {
            let name = g.name.clone();
            self.drop_group(gid);
            if let Some(log) = self.log.as_mut() {
                log.append_group_gone(&name);
            }
            return true;
        }
        let (Some(since), Some(expiry)) = (g.idle_since_ms, g.expiry_ms) else {
            return false;
        };
        if now_ms.saturating_sub(since) < expiry {
            return false;
        }
        log::info!(
            "group {} expired: no member for {} (group-expiry); its position and {} unacked message(s) are dropped",
            mote_sdk::topic::shown(&g.name),
            duration_text(expiry),
            g.redeliver.len()
        );
        self.stats.groups_expired += 1;
        self.drop_group(gid);
        true
    }

    /// Hands `conn`'s notices of deleted groups to `sink`; `true` when `sink` is full.
    pub(super) fn tell_group_gone(
        &mut self,
        conn: ConnId,
        sink: &mut impl FnMut(Delivery<'_>) -> bool,
    ) -> bool {
        let mut i = 0;
        while i < self.group_gone.len() {
            if self.group_gone[i].0 != conn {
                i += 1;
                continue;
            }
            let (_, sub, group) = self.group_gone.remove(i);
            if !sink(Delivery::GroupGone { sub, group: &group }) {
                return true;
            }
        }
        false
    }
}

/// `ms` in the largest unit that divides it: `7d`, `90m`, `1500ms`.
fn duration_text(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (n, unit) in UNITS {
        if ms >= n && ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}
