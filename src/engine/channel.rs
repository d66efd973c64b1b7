//! Peer channels' presence: the one thing the broker does for channels.
//!
//! A channel is plain topics and durable groups (see `sdk/src/channel.rs` and the
//! "Channels" section of `PROTOCOL.md`): the side with role `R` publishes to
//! `$chan/<name>/<R>` and reads the other role's topic through a durable group. What a
//! client cannot say for itself is that its peer died (kill -9, a cable pulled), so the
//! broker does: when a group whose filter is exactly a channel topic `$chan/<name>/<role>`
//! gains its first member it publishes `up` to `$chan/<name>/<role>/reader`, and `down`
//! when it loses its last (a member's connection closing, or the group deleted). A group
//! restored from the log has no members, so a restart publishes `down` for it: the last
//! message of a presence topic is always the reader's state. Nothing here runs on the
//! publish path; a join or leave of any other group costs one prefix test.

use mote_sdk::channel::{PRESENCE_DOWN, PRESENCE_UP, READER_LEVEL};
use mote_sdk::topic::{CHANNEL_PREFIX, is_channel_topic};

use super::Engine;
use super::group::GroupId;

impl Engine {
    /// Says whether group `gid`, if it reads a channel topic, has a member now.
    pub(super) fn channel_presence(&mut self, gid: GroupId, up: bool) {
        let filter = self.group_filter(gid);
        if filter.starts_with(CHANNEL_PREFIX) {
            self.publish_presence(gid, up);
        }
    }

    #[cold]
    #[inline(never)]
    fn publish_presence(&mut self, gid: GroupId, up: bool) {
        let filter = self.group_filter(gid);
        if !is_channel_topic(filter) {
            return;
        }
        let name = format!("{filter}/{READER_LEVEL}");
        let payload = if up { PRESENCE_UP } else { PRESENCE_DOWN };
        let now = self.expiry_now();
        match self.publish_system(&name, now, &[], payload) {
            Ok(_) => self.stats.channel_presence += 1,
            Err(r) => log::warn!(
                "channel presence {} not published: {}",
                mote_sdk::topic::shown(&name),
                r.message
            ),
        }
    }
}
