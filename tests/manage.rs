//! Management over the binary protocol (protocol 3), through the SDK and raw wire clients
//! against a real broker on 127.0.0.1:0: `Client::manage`, its errors, paging, version
//! gating, the `Removed` notice and starts by time.
//!
//! Tests marked "needs the engine" exercise purge, delete, seek and starts by time, which
//! the engine's admin functions implement.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{Broker, Got, Proxy, Raw, eventually};
use mote_sdk::blocking::{Client, Subscription};
use mote_sdk::wire::{self, Frame, Manage};
use mote_sdk::{Error, ErrorCode, Event, Group, GroupEvent, ManageOp, Start};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

fn json(c: &Client, op: ManageOp<'_>) -> Value {
    serde_json::from_str(&c.manage(op).unwrap()).unwrap()
}

fn next_event(sub: &mut Subscription) -> Event {
    sub.recv_timeout(WAIT).unwrap().expect("the client is open")
}

#[test]
fn manage_answers_with_the_brokers_json_and_refusals_with_its_code() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    assert_eq!(c.protocol_version(), Some(wire::PROTOCOL_VERSION));
    for t in ["sensors/kitchen", "sensors/hall", "logs"] {
        c.publish_confirmed(t, "x").unwrap();
    }
    c.publish_confirmed("sensors/kitchen", "y").unwrap();
    let all = json(
        &c,
        ManageOp::Topics {
            filter: "",
            from: 0,
        },
    );
    let names: Vec<&str> = all["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sensors/kitchen", "sensors/hall", "logs"]);
    assert_eq!(all["next"], Value::Null);
    let some = json(
        &c,
        ManageOp::Topics {
            filter: "sensors/#",
            from: 0,
        },
    );
    assert_eq!(some["topics"].as_array().unwrap().len(), 2);
    let info = json(
        &c,
        ManageOp::TopicInfo {
            topic: "sensors/kitchen",
        },
    );
    assert_eq!(
        (
            &info["name"],
            &info["first"],
            &info["next"],
            &info["stored"]
        ),
        (&"sensors/kitchen".into(), &0.into(), &2.into(), &2.into())
    );
    assert!(info["settings"]["persist"].is_object(), "{info}");
    assert_eq!(json(&c, ManageOp::Groups)["groups"], serde_json::json!([]));

    let e = c
        .manage(ManageOp::TopicInfo {
            topic: "sensors/attic",
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NOT_FOUND));
    assert_eq!(e.to_string(), "no topic \"sensors/attic\" (not_found)");
    let e = c.manage(ManageOp::GroupInfo { group: "w" }).unwrap_err();
    assert_eq!(e.to_string(), "no group \"w\" (not_found)");
    let e = c
        .manage(ManageOp::Topics {
            filter: "a/#/b",
            from: 0,
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BAD_FILTER));
    // Refusals leave the connection as it was.
    assert_eq!(c.publish_confirmed("logs", "z").unwrap(), 1);
    let stats = b.stop();
    assert_eq!(stats.errors(ErrorCode::NOT_FOUND), 2);
}

#[test]
fn topics_are_listed_a_page_at_a_time() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    for i in 0..600 {
        c.publish(&format!("many/{i}"), "x").unwrap();
    }
    c.flush().unwrap();
    let mut seen = Vec::new();
    let mut from = 0;
    let mut pages = 0;
    loop {
        let page = json(
            &c,
            ManageOp::Topics {
                filter: "many/+",
                from,
            },
        );
        pages += 1;
        for t in page["topics"].as_array().unwrap() {
            seen.push(t["name"].as_str().unwrap().to_string());
        }
        match page["next"].as_u64() {
            Some(n) => from = u32::try_from(n).unwrap(),
            None => break,
        }
    }
    assert_eq!(pages, 3, "256 topics a page");
    assert_eq!(seen.len(), 600);
    assert_eq!(seen[599], "many/599");
}

/// A broker that speaks protocol 2: it answers `Hello` with a version 2 `Welcome`, then
/// closes on anything it does not know (as a version 2 broker does).
fn old_broker() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let w = Frame::Welcome(wire::Welcome {
                    version: 2,
                    keepalive_ms: 30_000,
                    max_frame: 1 << 20,
                    max_payload: 1 << 20,
                    max_subscriptions: 64,
                    broker_id: 7,
                    broker: "mote 0.0.2",
                });
                let _ = s.write_all(&w.to_vec());
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn an_older_broker_gets_no_management_request() {
    let addr = old_broker();
    let c = Client::connect(mote_sdk::Options::new(addr.to_string())).unwrap();
    assert_eq!(c.protocol_version(), Some(2));
    let e = c.manage(ManageOp::Groups).unwrap_err();
    assert!(matches!(
        e,
        Error::Unsupported {
            broker: 2,
            needed: 3,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "the broker speaks protocol 2; management needs 3 (upgrade the broker)"
    );
    let e = c.subscribe("logs", Start::Ago(60_000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the broker speaks protocol 2; starting at a time (Start::Time, Start::Ago) needs 3 (upgrade the broker)"
    );
    assert!(c.is_connected(), "nothing was sent");
}

#[test]
fn an_older_client_gets_the_broker_of_its_version() {
    let b = Broker::default();
    let mut v2 = Raw::connect_silent(b.addr);
    v2.send(&Frame::Hello(wire::Hello {
        max_version: 2,
        ..wire::Hello::new("old")
    }));
    assert!(matches!(v2.next(), Some(Got::Welcome { .. })));
    v2.send(&Frame::Manage(Manage {
        req: 1,
        op: ManageOp::Groups,
    }));
    assert_eq!(
        v2.next(),
        Some(Got::Error {
            code: ErrorCode::PROTOCOL.0,
            req: 0,
            message:
                "a management request (tag 0x0e) needs protocol 3; this connection agreed on version 2"
                    .into()
        })
    );
    assert_eq!(v2.next(), None, "closed");
    // A version 3 client on the same broker is answered.
    let mut v3 = Raw::connect(b.addr);
    v3.send(&Frame::Manage(Manage {
        req: 5,
        op: ManageOp::Groups,
    }));
    assert_eq!(v3.next(), Some(Got::Other(wire::tag::MANAGED)));
}

/// Needs the engine (`delete_topic`, `Delivery::Removed`).
#[test]
fn a_deleted_topic_is_announced_and_continues_above_its_offsets() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let mut sub = c.subscribe("sensors/#", Start::Earliest).unwrap();
    for i in 0..3 {
        c.publish_confirmed("sensors/a", i.to_string()).unwrap();
    }
    for _ in 0..3 {
        assert!(matches!(next_event(&mut sub), Event::Message(_)));
    }
    let v = json(&c, ManageOp::DeleteTopic { topic: "sensors/a" });
    assert_eq!(v["dropped"], 3);
    match next_event(&mut sub) {
        Event::Removed {
            topic,
            unread,
            next,
        } => assert_eq!((&*topic, unread, next), ("sensors/a", 0, 3)),
        other => panic!("expected the notice, got {other:?}"),
    }
    let e = c
        .manage(ManageOp::TopicInfo { topic: "sensors/a" })
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NOT_FOUND));
    assert_eq!(c.publish_confirmed("sensors/a", "again").unwrap(), 3);
    match next_event(&mut sub) {
        Event::Message(m) => assert_eq!((m.offset, &m.payload[..]), (3, &b"again"[..])),
        other => panic!("expected the new message, got {other:?}"),
    }
}

/// Needs the engine (`purge_topic`).
#[test]
fn purge_drops_what_is_stored_and_offsets_go_on() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    for i in 0..5 {
        c.publish_confirmed("logs", i.to_string()).unwrap();
    }
    let v = json(&c, ManageOp::Purge { topic: "logs" });
    assert_eq!(v["dropped"], 5);
    let info = json(&c, ManageOp::TopicInfo { topic: "logs" });
    assert_eq!(
        (&info["stored"], &info["first"], &info["next"]),
        (&0.into(), &5.into(), &5.into())
    );
    assert_eq!(c.publish_confirmed("logs", "5").unwrap(), 5);
    let mut sub = c.subscribe("logs", Start::Earliest).unwrap();
    match next_event(&mut sub) {
        Event::Message(m) => assert_eq!(m.offset, 5),
        other => panic!("{other:?}"),
    }
}

/// Needs the engine (`offset_at_time`).
#[test]
fn subscriptions_start_by_time() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    for i in 0..3 {
        c.publish_confirmed("logs", i.to_string()).unwrap();
    }
    let mut ago = c.subscribe("logs", Start::Ago(600_000)).unwrap();
    let mut since_2020 = c.subscribe("logs", Start::Time(1_577_836_800_000)).unwrap();
    for sub in [&mut ago, &mut since_2020] {
        for want in 0..3 {
            match next_event(sub) {
                Event::Message(m) => assert_eq!(m.offset, want),
                other => panic!("{other:?}"),
            }
        }
    }
    // Messages published later come too.
    assert_eq!(c.publish_confirmed("logs", "new").unwrap(), 3);
    for sub in [&mut ago, &mut since_2020] {
        match next_event(sub) {
            Event::Message(m) => assert_eq!(m.offset, 3),
            other => panic!("{other:?}"),
        }
    }
}

// ---- Issue 12: ephemeral groups and a shorter expiry (JoinGroup, 0x24).

/// The broker's `GroupInfo` for `group`, or `None` when there is no such group.
fn group_info(c: &Client, group: &str) -> Option<Value> {
    match c.manage(ManageOp::GroupInfo { group }) {
        Ok(j) => Some(serde_json::from_str(&j).unwrap()),
        Err(e) if e.code() == Some(ErrorCode::NOT_FOUND) => None,
        Err(e) => panic!("group info: {e}"),
    }
}

#[test]
fn an_ephemeral_group_goes_with_its_last_member_and_a_durable_one_keeps_its_expiry() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let brief = c
        .subscribe_group("jobs/#", Group::new("brief").ephemeral())
        .unwrap();
    let nightly = c
        .subscribe_group(
            "jobs/#",
            Group::new("nightly").expiry(Duration::from_secs(2)),
        )
        .unwrap();
    let plain = c.subscribe_group("jobs/#", Group::new("plain")).unwrap();
    let i = group_info(&c, "brief").unwrap();
    assert_eq!(
        (&i["settings"]["durable"], &i["expiry_ms"]),
        (&false.into(), &Value::Null),
        "{i}"
    );
    let i = group_info(&c, "nightly").unwrap();
    assert_eq!(
        (&i["settings"]["durable"], &i["expiry_ms"]),
        (&true.into(), &2000.into()),
        "{i}"
    );
    let i = group_info(&c, "plain").unwrap();
    let week = 7 * 24 * 3600 * 1000u64;
    assert_eq!(
        (&i["settings"]["durable"], &i["expiry_ms"]),
        (&true.into(), &week.into()),
        "{i}"
    );
    // Leaving is queued before the next request on the same connection: the broker has
    // handled it when it answers.
    drop((brief, nightly, plain));
    assert_eq!(group_info(&c, "brief"), None, "gone with its last member");
    let i = group_info(&c, "nightly").unwrap();
    assert_eq!(
        (&i["members"], &i["expiry_ms"]),
        (&0.into(), &2000.into()),
        "{i}"
    );
    assert!(group_info(&c, "plain").is_some());
    // Through the CLI's JSON too.
    let groups = json(&c, ManageOp::Groups);
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{groups}");
    assert!(!names.contains(&"brief"));
}

#[test]
fn an_older_broker_refuses_an_ephemeral_group_before_anything_is_sent() {
    let addr = old_broker();
    let c = Client::connect(mote_sdk::Options::new(addr.to_string())).unwrap();
    for g in [
        Group::new("w").ephemeral(),
        Group::new("w").expiry(Duration::from_secs(60)),
    ] {
        let e = c.subscribe_group("jobs", g).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the broker speaks protocol 2; an ephemeral group or a group expiry needs 3 (upgrade the broker)"
        );
    }
    assert!(c.is_connected(), "nothing was sent");
}

#[test]
fn an_ephemeral_member_joins_again_after_a_reconnect() {
    let b = Broker::default();
    let proxy = Proxy::start(b.addr);
    let mut opts = mote_sdk::Options::new(proxy.addr.to_string());
    opts.reconnect_min = Duration::from_millis(20);
    let c = Client::connect(opts).unwrap();
    let watcher = Client::connect(b.options()).unwrap();
    let mut sub = c
        .subscribe_group("jobs", Group::new("brief").ephemeral())
        .unwrap();
    proxy.cut();
    // The second connection's `Subscribed`: the member has joined again (with `JoinGroup`).
    let joined_again = || {
        let caps = proxy.captured.lock().unwrap();
        caps.get(1).is_some_and(|(up, down)| {
            let up = up.lock().unwrap();
            let down = down.lock().unwrap();
            frames(&up).contains(&wire::tag::JOIN_GROUP)
                && frames(&down).contains(&wire::tag::SUBSCRIBED)
        })
    };
    eventually(WAIT, "the member joins again", joined_again);
    // Once the first connection's member is gone too, the group has one member.
    eventually(WAIT, "one member", || {
        group_info(&watcher, "brief").is_some_and(|i| i["members"] == 1)
    });
    let i = group_info(&watcher, "brief").unwrap();
    assert_eq!(i["settings"]["durable"], false, "{i}");
    watcher.publish_confirmed("jobs", "after").unwrap();
    match sub.recv_timeout(WAIT) {
        Ok(Some(GroupEvent::Message(d))) => {
            assert_eq!(d.payload, b"after");
            d.ack().unwrap();
        }
        other => panic!("expected the message, got {other:?}"),
    }
}

/// The tags of the whole frames in `bytes`.
fn frames(bytes: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut pos = 0;
    while let Ok(wire::Decoded::Frame(f, n)) = wire::decode(&bytes[pos..], usize::MAX) {
        tags.push(f.tag());
        pos += n;
    }
    tags
}

/// A proxy whose first connection goes to `first` and every later one to `then`; closing
/// `cut` (dropping it) ends the first one.
fn switching_proxy(
    first: std::net::SocketAddr,
    then: std::net::SocketAddr,
) -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
    use std::net::{Shutdown, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (cut, cut_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut cut_rx = Some(cut_rx);
        for (n, s) in l.incoming().enumerate() {
            let Ok(client) = s else { return };
            let target = if n == 0 { first } else { then };
            let Ok(server) = TcpStream::connect(target) else {
                return;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server.try_clone().unwrap(), client.try_clone().unwrap());
            if let Some(rx) = cut_rx.take() {
                std::thread::spawn(move || {
                    let _ = rx.recv();
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                });
            }
        }
    });
    (addr, cut)
}

#[test]
fn an_ephemeral_membership_is_refused_when_a_reconnect_lands_on_an_older_broker() {
    let b = Broker::default();
    let (addr, cut) = switching_proxy(b.addr, old_broker());
    let mut opts = mote_sdk::Options::new(addr.to_string());
    opts.reconnect_min = Duration::from_millis(20);
    let c = Client::connect(opts).unwrap();
    let mut eph = c
        .subscribe_group("jobs", Group::new("brief").ephemeral())
        .unwrap();
    let mut plain = c.subscribe_group("jobs", Group::new("plain")).unwrap();
    drop(cut);
    match eph.recv_timeout(WAIT) {
        Ok(Some(GroupEvent::Refused { code, message })) => {
            assert_eq!(code, ErrorCode::UNSUPPORTED_VERSION);
            assert_eq!(
                message,
                "the broker speaks protocol 2; an ephemeral group or a group expiry needs 3 (upgrade the broker)"
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert!(
        matches!(eph.recv_timeout(WAIT), Ok(None)),
        "the membership has ended"
    );
    // The other membership is joined again with `SubscribeGroup`, which the old broker
    // knows; it is not refused.
    assert!(matches!(
        plain.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    assert_eq!(c.protocol_version(), Some(2));
}
