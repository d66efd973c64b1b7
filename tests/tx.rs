//! Transactional publishes end to end: a real `mote serve` over real sockets (the binary
//! protocol and HTTP), check-backs, the default after check-max, a `kill -9` with
//! `--data`, and the cap.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::http::request;
use common::served::Served;
use mote_sdk::Start;
use mote_sdk::wire::{self, Decoded, Frame, Hello, Ping, Prepare, Settle, Subscribe};

/// What the tests look at of a frame.
#[derive(Debug, PartialEq)]
enum In {
    Prepared {
        req: u32,
        tx: u64,
    },
    Settled {
        req: u32,
        committed: bool,
        offset: u64,
    },
    TxCheck {
        tx: u64,
        topic: String,
        attempt: u32,
    },
    Message {
        offset: u64,
        payload: Vec<u8>,
    },
    Error {
        req: u32,
        code: u16,
        message: String,
    },
    Pong(u64),
    Published(u64),
    Other(u8),
}

struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn connect(addr: SocketAddr, name: &str) -> Peer {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut p = Peer { s, buf: Vec::new() };
        p.send(&Frame::Hello(Hello::new(name)));
        assert_eq!(p.next(), Some(In::Other(wire::tag::WELCOME)));
        p
    }

    fn send(&mut self, f: &Frame<'_>) {
        self.s.write_all(&f.to_vec()).unwrap();
    }

    fn next(&mut self) -> Option<In> {
        loop {
            if let Ok(Decoded::Frame(f, n)) = wire::decode(&self.buf, usize::MAX) {
                let got = match f {
                    Frame::Prepared(p) => In::Prepared {
                        req: p.req,
                        tx: p.tx,
                    },
                    Frame::Settled(s) => In::Settled {
                        req: s.req,
                        committed: s.committed,
                        offset: s.offset,
                    },
                    Frame::TxCheck(c) => In::TxCheck {
                        tx: c.tx,
                        topic: c.topic.into(),
                        attempt: c.attempt,
                    },
                    Frame::Message(m) => In::Message {
                        offset: m.offset,
                        payload: m.payload.to_vec(),
                    },
                    Frame::Error(e) => In::Error {
                        req: e.req,
                        code: e.code.0,
                        message: e.message.into(),
                    },
                    Frame::Pong(p) => In::Pong(p.nonce),
                    Frame::Published(p) => In::Published(p.offset),
                    other => In::Other(other.tag()),
                };
                self.buf.drain(..n);
                return Some(got);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read failed (timeout?): {e}"),
            }
        }
    }

    fn prepare(&mut self, req: u32, topic: &str, payload: &[u8]) -> u64 {
        self.send(&Frame::Prepare(Prepare {
            req,
            topic,
            key: None,
            payload,
        }));
        match self.next() {
            Some(In::Prepared { req: r, tx }) if r == req => tx,
            other => panic!("expected prepared, got {other:?}"),
        }
    }

    fn settle(&mut self, req: u32, tx: u64, commit: bool) -> Option<In> {
        self.send(&Frame::Settle(Settle { req, tx, commit }));
        self.next()
    }

    fn subscribe(&mut self, filter: &str) {
        self.send(&Frame::Subscribe(Subscribe {
            sub: 1,
            filter,
            from: Start::Earliest,
            resume: Vec::new(),
        }));
        assert_eq!(self.next(), Some(In::Other(wire::tag::SUBSCRIBED)));
    }

    /// A round trip: everything the broker had for us before it came first.
    fn ping(&mut self, nonce: u64) -> Vec<In> {
        self.send(&Frame::Ping(Ping { nonce }));
        let mut before = Vec::new();
        loop {
            match self.next() {
                Some(In::Pong(n)) if n == nonce => return before,
                Some(other) => before.push(other),
                None => panic!("closed"),
            }
        }
    }
}

/// Publishes a marker to `topic` through `by`, and asserts that it is the next thing `sub`
/// gets: a topic delivers in offset order, so nothing else (a prepared message made
/// visible) was delivered there before it. Returns its offset.
fn barrier(sub: &mut Peer, by: &mut Peer, topic: &str) -> u64 {
    by.send(&Frame::Publish(wire::Publish {
        req: 99,
        topic,
        key: None,
        payload: b"marker",
    }));
    let Some(In::Published(offset)) = by.next() else {
        panic!("the marker was not confirmed")
    };
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset,
            payload: b"marker".to_vec()
        }),
        "the marker is the next delivery"
    );
    offset
}

fn stats(b: &Served) -> serde_json::Value {
    request(b.http.unwrap(), "GET", "/api/stats", &[], b"").json()
}

#[test]
fn a_committed_message_arrives_only_after_the_commit_at_the_offset_it_gets_then() {
    let b = Served::start(&[]);
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut p = Peer::connect(b.addr, "shop");
    let tx = p.prepare(1, "orders/new", b"{\"order\":17}");
    // The prepared message took no offset and was not delivered.
    assert_eq!(barrier(&mut sub, &mut p, "orders/new"), 0);
    assert_eq!(stats(&b)["transactions"]["pending"], 1);
    match p.settle(3, tx, true) {
        Some(In::Settled {
            req: 3,
            committed: true,
            offset: 1,
        }) => {}
        other => panic!("expected settled, got {other:?}"),
    }
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 1,
            payload: b"{\"order\":17}".to_vec()
        })
    );
    // Settled already: not found.
    match p.settle(4, tx, true) {
        Some(In::Error {
            req: 4,
            code: 22,
            message,
        }) => {
            assert!(message.contains("no pending transaction"), "{message}")
        }
        other => panic!("expected not_found, got {other:?}"),
    }
    let s = stats(&b);
    assert_eq!(s["transactions"]["committed"], 1);
    assert_eq!(s["transactions"]["pending"], 0);
}

#[test]
fn a_rolled_back_message_is_never_delivered() {
    let b = Served::start(&[]);
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut p = Peer::connect(b.addr, "shop");
    let tx = p.prepare(1, "orders/new", b"no");
    match p.settle(2, tx, false) {
        Some(In::Settled {
            req: 2,
            committed: false,
            offset: 0,
        }) => {}
        other => panic!("expected settled, got {other:?}"),
    }
    assert_eq!(
        barrier(&mut sub, &mut p, "orders/new"),
        0,
        "rolled back: it took no offset and was never delivered"
    );
    assert_eq!(stats(&b)["transactions"]["rolled_back"], 1);
}

#[test]
fn a_reconnected_producer_is_checked_back_and_commits() {
    let b = Served::start(&["--tx-check-after", "200ms", "--tx-check-max", "3"]);
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let tx = {
        let mut p = Peer::connect(b.addr, "shop");
        p.prepare(1, "orders/new", b"checked")
        // The producer dies here.
    };
    let mut again = Peer::connect(b.addr, "shop");
    match again.next() {
        Some(In::TxCheck {
            tx: t,
            topic,
            attempt,
        }) => {
            assert_eq!(t, tx);
            assert_eq!(topic, "orders/new");
            assert!(attempt >= 1);
        }
        other => panic!("expected a check, got {other:?}"),
    }
    // The answer to a check: req 0, nothing comes back.
    again.send(&Frame::Settle(Settle {
        req: 0,
        tx,
        commit: true,
    }));
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 0,
            payload: b"checked".to_vec()
        })
    );
    assert_eq!(again.ping(3), []);
    let s = stats(&b);
    assert!(s["transactions"]["checked"].as_u64().unwrap() >= 1);
    assert_eq!(s["transactions"]["committed"], 1);
}

#[test]
fn nobody_answers_and_the_default_applies_after_check_max() {
    let mut b = Served::start(&["--tx-check-after", "100ms", "--tx-check-max", "2"]);
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut p = Peer::connect(b.addr, "mute");
    let tx = p.prepare(1, "orders/new", b"never");
    for attempt in 1..=2 {
        match p.next() {
            Some(In::TxCheck {
                tx: t, attempt: a, ..
            }) => assert_eq!((t, a), (tx, attempt)),
            other => panic!("expected check {attempt}, got {other:?}"),
        }
    }
    let line = b.wait_log("rolled back by --tx-default");
    assert!(line.contains(&format!("{tx:016x}")), "{line}");
    assert_eq!(
        barrier(&mut sub, &mut p, "orders/new"),
        0,
        "rolled back: nothing delivered"
    );
    let s = stats(&b);
    assert_eq!(s["transactions"]["timed_out"], 1);
    assert_eq!(s["transactions"]["checked"], 2);
    assert_eq!(
        p.settle(5, tx, true)
            .map(|i| matches!(i, In::Error { code: 22, .. })),
        Some(true)
    );
}

#[test]
fn a_prepared_message_survives_kill_9_with_data() {
    let dir = std::env::temp_dir().join(format!("mote-tx-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let mut b = Served::start(&["--data", d, "--sync", "always"]);
    let tx = Peer::connect(b.addr, "shop").prepare(1, "orders/new", b"durable");
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let mut b = Served::start(&["--data", d, "--sync", "always"]);
    b.wait_log("1 pending transaction(s) restored");
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut p = Peer::connect(b.addr, "shop");
    assert_eq!(
        barrier(&mut sub, &mut p, "orders/new"),
        0,
        "still invisible after the restart"
    );
    match p.settle(2, tx, true) {
        Some(In::Settled {
            req: 2,
            committed: true,
            offset: 1,
        }) => {}
        other => panic!("expected settled, got {other:?}"),
    }
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 1,
            payload: b"durable".to_vec()
        })
    );
    // A backup taken while the broker runs carries a pending transaction too.
    let tx2 = Peer::connect(b.addr, "shop").prepare(3, "orders/new", b"backed up");
    let copy = dir.with_extension("copy");
    let _ = std::fs::remove_dir_all(&copy);
    let out = std::process::Command::new(common::served::MOTE)
        .args(["backup", d, copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    drop(b);
    let mut b = Served::start(&["--data", copy.to_str().unwrap()]);
    b.wait_log("1 pending transaction(s) restored");
    let mut p = Peer::connect(b.addr, "shop");
    assert!(matches!(
        p.settle(4, tx2, true),
        Some(In::Settled {
            committed: true,
            offset: 2,
            ..
        })
    ));
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn over_http_prepare_commit_rollback_and_404() {
    let b = Served::start(&[]);
    let http = b.http.unwrap();
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut by = Peer::connect(b.addr, "by");
    let r = request(
        http,
        "POST",
        "/t/orders/new?tx=prepare",
        &[],
        b"{\"order\":17}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["topic"], "orders/new");
    let id = v["tx"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    assert_eq!(barrier(&mut sub, &mut by, "orders/new"), 0);
    let r = request(http, "POST", &format!("/tx/{id}/commit"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["topic"], "orders/new");
    assert_eq!(v["offset"], 1);
    assert!(v["time"].as_u64().unwrap() > 0);
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 1,
            payload: b"{\"order\":17}".to_vec()
        })
    );
    request(http, "POST", &format!("/tx/{id}/commit"), &[], b"").assert_error(404, "not_found");
    let r = request(http, "POST", "/t/orders/new?tx=prepare", &[], b"gone");
    let id = r.json()["tx"].as_str().unwrap().to_string();
    let r = request(http, "POST", &format!("/tx/{id}/rollback"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rolled_back"], true);
    request(http, "POST", &format!("/tx/{id}/rollback"), &[], b"").assert_error(404, "not_found");
    request(http, "POST", "/tx/nothex/commit", &[], b"").assert_error(400, "bad_request");
    request(http, "GET", &format!("/tx/{id}/commit"), &[], b"")
        .assert_error(405, "method_not_allowed");
    assert_eq!(barrier(&mut sub, &mut by, "orders/new"), 2);
}

#[test]
fn prepares_beyond_max_transactions_are_refused_with_pending_limit() {
    let b = Served::start(&["--max-transactions", "2"]);
    let mut p = Peer::connect(b.addr, "shop");
    let first = p.prepare(1, "a", b"1");
    p.prepare(2, "a", b"2");
    p.send(&Frame::Prepare(Prepare {
        req: 3,
        topic: "a",
        key: None,
        payload: b"3",
    }));
    match p.next() {
        Some(In::Error {
            req: 3,
            code: 26,
            message,
        }) => {
            assert!(message.contains("--max-transactions"), "{message}")
        }
        other => panic!("expected pending_limit, got {other:?}"),
    }
    let r = request(b.http.unwrap(), "POST", "/t/a?tx=prepare", &[], b"4");
    r.assert_error(503, "pending_limit");
    // Settling one makes room.
    p.settle(4, first, false);
    p.prepare(5, "a", b"5");
    assert_eq!(stats(&b)["transactions"]["refused"], 2);
}

#[test]
fn the_sdk_prepares_commits_rolls_back_and_answers_check_backs() {
    use mote_sdk::blocking::Client;
    let b = Served::start(&["--tx-check-after", "200ms", "--tx-check-max", "5"]);
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut by = Peer::connect(b.addr, "by");
    let opts = || mote_sdk::Options::new(b.addr.to_string()).name("shop");
    let c = Client::connect(opts()).unwrap();
    let tx = c.publish_prepared("orders/new", "one").unwrap();
    assert_eq!(tx.hex().len(), 16);
    assert_eq!(barrier(&mut sub, &mut by, "orders/new"), 0);
    let done = tx.commit().unwrap();
    assert_eq!(done.offset, 1);
    assert!(done.time > 0);
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 1,
            payload: b"one".to_vec()
        })
    );
    let err = tx.commit().unwrap_err();
    assert_eq!(err.code(), Some(mote_sdk::ErrorCode::NOT_FOUND), "{err}");
    c.publish_prepared_with_key("orders/new", Some(b"k"), "two")
        .unwrap()
        .rollback()
        .unwrap();
    // Prepared over HTTP, committed by id.
    let r = request(
        b.http.unwrap(),
        "POST",
        "/t/orders/new?tx=prepare",
        &[],
        b"three",
    );
    let id = u64::from_str_radix(r.json()["tx"].as_str().unwrap(), 16).unwrap();
    assert_eq!(c.tx(id).commit().unwrap().offset, 2);
    // A producer that dies with a prepared message; its successor answers the check.
    let left = c.publish_prepared("orders/new", "four").unwrap().id();
    c.close().unwrap();
    let c = Client::connect(opts()).unwrap();
    let mut checks = c.tx_checks();
    let check = checks
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(check.tx.id(), left);
    assert_eq!(check.topic, "orders/new");
    assert_eq!(check.tx.commit().unwrap().offset, 3);
    let got: Vec<_> = (0..2).map(|_| sub.next().unwrap()).collect();
    assert_eq!(
        got,
        [
            In::Message {
                offset: 2,
                payload: b"three".to_vec()
            },
            In::Message {
                offset: 3,
                payload: b"four".to_vec()
            }
        ]
    );
}

#[test]
fn the_cli_prepares_with_pub_tx_and_settles_with_mote_tx() {
    use common::served::MOTE;
    use std::process::Command;
    let b = Served::start(&[]);
    let port = b.port();
    let mut sub = Peer::connect(b.addr, "reader");
    sub.subscribe("orders/#");
    let mut by = Peer::connect(b.addr, "by");
    let run = |args: &[&str]| {
        Command::new(MOTE)
            .args(args)
            .args(["-p", &port])
            .output()
            .unwrap()
    };
    let out = run(&["pub", "--tx", "-t", "orders/new", "-m", "{\"order\":17}"]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(
        barrier(&mut sub, &mut by, "orders/new"),
        0,
        "nothing delivered before the commit"
    );
    let out = run(&["tx", "commit", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "committed at offset 1\n"
    );
    assert_eq!(
        sub.next(),
        Some(In::Message {
            offset: 1,
            payload: b"{\"order\":17}".to_vec()
        })
    );
    let out = run(&["tx", "rollback", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no pending transaction"), "{err}");
    let id =
        String::from_utf8(run(&["pub", "--tx", "-t", "orders/new", "-m", "x"]).stdout).unwrap();
    let out = run(&["tx", "rollback", id.trim()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rolled back\n");
    assert_eq!(run(&["tx", "commit"]).status.code(), Some(2));
    assert_eq!(run(&["tx", "commit", "zz"]).status.code(), Some(2));
    assert_eq!(run(&["tx", "frobnicate", &id]).status.code(), Some(2));
    assert_eq!(
        run(&["pub", "--tx", "-t", "a", "-l"]).status.code(),
        Some(2)
    );
    assert_eq!(barrier(&mut sub, &mut by, "orders/new"), 2);
}
