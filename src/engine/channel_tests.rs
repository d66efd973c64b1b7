//! Channel presence on a virtual clock: the broker's `up` / `down` for groups that read
//! a channel topic, and nothing for any other group.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use mote_sdk::Start;

use super::group_tests::{engine, join, open, settings};
use super::{ConnId, Delivery, Engine};

/// The payloads `c` has been delivered on plain subscriptions, in order.
fn words(e: &mut Engine, c: ConnId) -> Vec<String> {
    let mut out = Vec::new();
    e.poll_deliveries(c, |d| {
        if let Delivery::Message { payload, .. } = d {
            out.push(String::from_utf8_lossy(payload).into_owned());
        }
        true
    });
    out
}

const READER: &str = "$chan/door/local/reader";

#[test]
fn a_channel_reader_group_says_up_at_its_first_member_and_down_after_its_last() {
    let mut e = engine();
    let watcher = open(&mut e, "watcher");
    e.handle_subscribe(watcher, 1, READER, Start::Earliest, &[])
        .unwrap();
    let (a, b) = (open(&mut e, "a"), open(&mut e, "b"));
    let s = settings(0, 0, 0, true);
    join(&mut e, a, 1, "$chan/door/local", "chan:door:remote", s);
    assert_eq!(words(&mut e, watcher), ["up"]);
    // A second member changes nothing, nor does one of two leaving.
    join(&mut e, b, 1, "$chan/door/local", "chan:door:remote", s);
    e.handle_unsubscribe(a, 1).unwrap();
    assert!(words(&mut e, watcher).is_empty());
    // The last one's connection dies: the broker says it.
    e.handle_disconnect(b);
    assert_eq!(words(&mut e, watcher), ["down"]);
    // Back, then the group deleted under its member.
    let c = open(&mut e, "c");
    join(&mut e, c, 1, "$chan/door/local", "chan:door:remote", s);
    e.delete_group("chan:door:remote").unwrap();
    assert_eq!(words(&mut e, watcher), ["up", "down"]);
    assert_eq!(e.stats().channel_presence, 4);
}

#[test]
fn other_groups_say_nothing() {
    let mut e = engine();
    let watcher = open(&mut e, "watcher");
    e.handle_subscribe(watcher, 1, "$chan/#", Start::Earliest, &[])
        .unwrap();
    let m = open(&mut e, "m");
    let s = settings(0, 0, 0, true);
    // Not a channel topic: a wildcard, a fourth level, an ordinary topic.
    join(&mut e, m, 1, "$chan/door/+", "g1", s);
    join(&mut e, m, 2, "$chan/door/local/x", "g2", s);
    join(&mut e, m, 3, "jobs/#", "g3", s);
    e.handle_disconnect(m);
    assert!(words(&mut e, watcher).is_empty());
    assert_eq!(e.stats().channel_presence, 0);
}

#[test]
fn a_client_may_publish_to_a_channel_topic_and_not_to_its_presence() {
    let mut e = engine();
    let c = open(&mut e, "c");
    assert!(
        e.handle_publish(c, 1, "$chan/door/local", None, b"hi")
            .is_ok()
    );
    let m = open(&mut e, "m");
    join(
        &mut e,
        m,
        1,
        "$chan/door/local",
        "chan:door:remote",
        settings(0, 0, 0, true),
    );
    // The presence topic exists now; it is still the broker's.
    let r = e.handle_publish(c, 1, READER, None, b"up").unwrap_err();
    assert_eq!(r.code, mote_sdk::ErrorCode::BAD_TOPIC);
    assert!(
        r.message.contains("reserved for the broker"),
        "{}",
        r.message
    );
}

#[test]
fn a_restart_says_down_for_every_restored_channel_reader() {
    use super::disk_tests::{Broker, Dir, limits};
    use super::settings::TopicPatterns;
    let dir = Dir::new("chan-presence");
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    let m = b.conn("m");
    join(
        &mut b.e,
        m,
        1,
        "$chan/door/local",
        "chan:door:remote",
        settings(0, 0, 0, true),
    );
    assert_eq!(b.e.stats().channel_presence, 1);
    // Stopped with the member still there, as a kill leaves it: the last word is `up`.
    b.stop();
    let mut b = Broker::open(&dir, limits(), TopicPatterns::default());
    assert_eq!(
        b.e.stats().channel_presence,
        1,
        "the restored group said down"
    );
    let w = b.conn("w");
    b.e.handle_subscribe(w, 1, READER, Start::Earliest, &[])
        .unwrap();
    let (got, _) = b.drain(w);
    assert_eq!(got, [0, 1], "up before the restart, down at it");
    // The newest is in the ring: it says `down`.
    b.e.handle_subscribe(w, 2, READER, Start::Last(1), &[])
        .unwrap();
    assert_eq!(words(&mut b.e, w), ["down"]);
    b.stop();
}
