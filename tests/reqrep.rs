//! Request/reply (protocol 4) end to end, over real sockets: the SDK, the raw protocol,
//! the HTTP edge, and the `mote req` / `mote reply` commands of the real binary.
#![allow(clippy::unwrap_used)] // Tests: a panic with its location is the report.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::{Edge, KITCHEN_SECRET, Setup, tokens};
use common::served::{MOTE, Served};
use common::{Broker, Got, Proxy, Raw, eventually};
use mote_sdk::blocking::Client;
use mote_sdk::wire::{self, Frame};
use mote_sdk::{Error, ErrorCode, Event, Group, Start};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(10);

fn totals(edge: &Edge) -> Value {
    edge.stats()["requests"].clone()
}

/// A responder thread answering every request to `filter` (in `group`, if any) with
/// its payload upper-cased, counting what it answered, until `stop`.
fn responder(
    c: Client,
    filter: &str,
    group: Option<&str>,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, std::thread::JoinHandle<()>) {
    let mut reqs = match group {
        Some(g) => c.serve_group(filter, Group::new(g)).unwrap(),
        None => c.serve(filter).unwrap(),
    };
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match reqs.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(r)) => {
                    let up = r.payload.to_ascii_uppercase();
                    r.reply(up).unwrap();
                    n2.fetch_add(1, Ordering::SeqCst);
                }
                Ok(None) => return,
                Err(_) => {}
            }
        }
        drop(c);
    });
    (n, t)
}

#[test]
fn a_request_with_three_grouped_responders_gets_exactly_one_reply() {
    let edge = Edge::start();
    let stop = Arc::new(AtomicBool::new(false));
    let members: Vec<_> = (0..3)
        .map(|_| responder(edge.sdk(), "svc/upper", Some("upper"), stop.clone()))
        .collect();
    let asker = edge.sdk();
    for i in 0..30 {
        let r = asker
            .request("svc/upper", format!("hello {i}"), PATIENCE)
            .unwrap();
        assert_eq!(r.payload, format!("HELLO {i}").as_bytes());
    }
    let answered: usize = members.iter().map(|(n, _)| n.load(Ordering::SeqCst)).sum();
    assert_eq!(answered, 30, "each request answered by one member, once");
    let t = totals(&edge);
    assert_eq!(t["requests"], 30);
    assert_eq!(t["replies"], 30);
    assert_eq!(t["replies_dropped"], 0, "no second reply to any request");
    assert_eq!(t["pending"], 0);
    stop.store(true, Ordering::SeqCst);
    for (_, h) in members {
        h.join().unwrap();
    }
}

#[test]
fn no_responders_and_a_timeout_are_told_apart_over_tcp() {
    let edge = Edge::start();
    let asker = edge.sdk();
    let t0 = Instant::now();
    let e = asker
        .request("svc/nobody", "hello", Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(&e, Error::NoResponders { topic } if topic == "svc/nobody"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "no responders on svc/nobody");
    assert_eq!(e.code(), Some(ErrorCode::NO_RESPONDERS));
    assert!(t0.elapsed() < Duration::from_secs(5), "answered at once");
    // Nothing stored: the topic does not exist.
    edge.get("/api/topics/svc%2Fnobody")
        .assert_error(404, "not_found");
    // A responder that never answers: a timeout, not no_responders.
    let silent = edge.sdk();
    let mut held = silent.serve("svc/silent").unwrap();
    let t0 = Instant::now();
    let e = asker
        .request("svc/silent", "hello", Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(
        held.recv_timeout(PATIENCE).unwrap().is_some(),
        "it was delivered"
    );
    let t = totals(&edge);
    assert_eq!(
        (t["no_responders"].clone(), t["timeouts"].clone()),
        (1.into(), 1.into())
    );
    let m = edge.get("/metrics").text();
    assert!(m.contains("mote_requests_no_responders_total 1"), "{m}");
    assert!(m.contains("mote_request_timeouts_total 1"), "{m}");
    assert!(
        m.contains("# TYPE mote_replies_dropped_total counter"),
        "{m}"
    );
}

#[test]
fn http_waits_for_the_reply_and_tells_no_responders_from_a_timeout() {
    let edge = Edge::start();
    let r = edge.post("/t/svc/upper?wait=reply&timeout=5s", b"hello");
    let v = r.assert_error(503, "no_responders");
    assert_eq!(v["error"], "no responders on svc/upper");
    // A responder answering with a key.
    let c = edge.sdk();
    let mut reqs = c.serve("svc/+").unwrap();
    let t = std::thread::spawn(move || {
        for _ in 0..2 {
            let r = reqs.recv_timeout(PATIENCE).unwrap().unwrap();
            if r.topic.as_ref() == "svc/upper" {
                assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
                let up = r.payload.to_ascii_uppercase();
                r.reply_with_key(Some(b"rk"), up).unwrap();
            } else {
                // svc/slow: held past its timeout, then answered late.
                std::thread::sleep(Duration::from_millis(400));
                r.reply("late").unwrap();
            }
        }
        drop(c);
    });
    let r = edge.req(
        "POST",
        "/t/svc/upper?wait=reply&timeout=5s",
        &[("X-Key", "k1")],
        b"hello",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, b"HELLO");
    assert_eq!(r.header("X-Key"), Some("rk"));
    let r = edge.post("/t/svc/slow?wait=reply&timeout=200ms", b"x");
    let v = r.assert_error(504, "timeout");
    assert_eq!(v["error"], "no reply within 0.2 s");
    t.join().unwrap();
    // The late reply was dropped and counted.
    eventually(PATIENCE, "the late reply counted", || {
        totals(&edge)["replies_dropped"] == 1
    });
    // The waiting requests' connections are gone with them.
    assert_eq!(totals(&edge)["pending"], 0);
    let r = edge.post("/t/svc/upper?wait=sometime", b"x");
    r.assert_error(400, "bad_request");
}

#[test]
fn replies_reach_only_the_requester_whatever_another_token_may_read() {
    let edge = Edge::with(Setup {
        auth: tokens,
        ..Setup::default()
    });
    let opts = |name: &str, secret: &str| edge.broker.options().with_token(name, secret).unwrap();
    // A: every right. B (kitchen): subscribes to home/#, publishes home/kitchen/#.
    let a = Client::connect(opts("default", common::http::DEFAULT_SECRET)).unwrap();
    let b = Client::connect(opts("kitchen", KITCHEN_SECRET)).unwrap();
    // B reads everything it may read, and answers requests to home/kitchen/svc.
    let mut b_all = b.subscribe("home/#", Start::Earliest).unwrap();
    let mut b_reqs = b.serve("home/kitchen/svc").unwrap();
    // An admin reading everything there is sees no reply either.
    let admin = Client::connect(opts("admin", common::http::ADMIN_SECRET)).unwrap();
    let mut admin_all = admin.subscribe("#", Start::Earliest).unwrap();
    let asker = std::thread::spawn(move || {
        let r = a.request("home/kitchen/svc", "question", PATIENCE).unwrap();
        (r, a)
    });
    let q = b_reqs.recv_timeout(PATIENCE).unwrap().unwrap();
    assert_eq!(q.payload, b"question");
    q.reply("SECRET-ANSWER").unwrap();
    let (reply, a) = asker.join().unwrap();
    assert_eq!(reply.payload, b"SECRET-ANSWER");
    // Everything B and the admin got, up to a marker published after: the request, never
    // the reply.
    a.publish_confirmed("home/kitchen/marker", "end").unwrap();
    for sub in [&mut b_all, &mut admin_all] {
        let mut seen = Vec::new();
        loop {
            match sub.recv_timeout(PATIENCE).unwrap() {
                Some(Event::Message(m)) if m.payload == b"end" => break,
                Some(Event::Message(m)) => seen.push(m.payload),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
        assert_eq!(seen, vec![b"question".to_vec()]);
    }
    // No token may even ask for the replies of another: there is no topic to name.
    let e = b.subscribe("$inbox/#", Start::Earliest).unwrap_err();
    assert!(
        matches!(e, Error::Broker { .. } | Error::Topic { .. }),
        "{e:?}"
    );
    // A request from A answered by B reaches only A: the replies are not stored.
    let topics = edge
        .req(
            "GET",
            "/api/topics",
            &[(
                "Authorization",
                &format!("Bearer admin:{}", common::http::ADMIN_SECRET),
            )],
            b"",
        )
        .json();
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the request's and the marker's topics: {names:?}"
    );
}

#[test]
fn a_version_3_subscriber_gets_a_plain_message_and_a_version_4_one_asked() {
    let b = Broker::default();
    let mut v3 = Raw::connect_silent(b.addr);
    v3.send(&Frame::Hello(wire::Hello {
        max_version: 3,
        ..wire::Hello::new("old")
    }));
    assert!(matches!(v3.next(), Some(Got::Welcome { .. })));
    v3.subscribe(1, "svc/x", Start::Latest);
    let mut v4 = Raw::connect(b.addr);
    v4.subscribe(2, "svc/x", Start::Latest);
    let asker = Client::connect(b.options()).unwrap();
    let t = std::thread::spawn(move || asker.request("svc/x", "hi", Duration::from_millis(500)));
    match v3.next() {
        Some(Got::Message {
            sub,
            topic,
            payload,
            ..
        }) => {
            assert_eq!(
                (sub, topic.as_str(), &payload[..]),
                (1, "svc/x", &b"hi"[..])
            );
        }
        other => panic!("expected a plain message, got {other:?}"),
    }
    assert_eq!(v4.next(), Some(Got::Other(wire::tag::ASKED)));
    assert!(matches!(t.join().unwrap(), Err(Error::Timeout)));
    // A version 3 connection sending a request is refused, naming protocol 4.
    v3.send(&Frame::Request(wire::Request {
        req: 1,
        topic: "svc/x",
        timeout_ms: 100,
        key: None,
        payload: b"",
    }));
    match v3.next() {
        Some(Got::Error { code, message, .. }) => {
            assert_eq!(code, ErrorCode::PROTOCOL.0);
            assert!(message.contains("needs protocol 4"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_late_reply_is_dropped_and_counted() {
    let edge = Edge::start();
    let r = edge.sdk();
    let mut reqs = r.serve("svc/late").unwrap();
    let asker = edge.sdk();
    let e = asker
        .request("svc/late", "x", Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e:?}");
    let q = reqs.recv_timeout(PATIENCE).unwrap().unwrap();
    q.reply("too late").unwrap();
    r.flush().unwrap();
    let t = totals(&edge);
    assert_eq!(
        (t["replies"].clone(), t["replies_dropped"].clone()),
        (0.into(), 1.into())
    );
    assert_eq!(t["timeouts"], 1);
}

#[test]
fn pending_requests_per_connection_are_capped() {
    let b = Broker::default();
    // A responder that never reads: the requests stay pending.
    let mut silent = Raw::connect(b.addr);
    silent.subscribe(1, "svc/cap", Start::Latest);
    let mut asker = Raw::connect(b.addr);
    let cap = mote::engine::MAX_PENDING_PER_CONN as u32;
    let mut batch = Vec::new();
    for req in 1..=cap + 1 {
        Frame::Request(wire::Request {
            req,
            topic: "svc/cap",
            timeout_ms: 60_000,
            key: None,
            payload: b"q",
        })
        .encode(&mut batch);
    }
    asker.send_bytes(&batch);
    match asker.next() {
        Some(Got::Error { code, req, message }) => {
            assert_eq!((code, req), (ErrorCode::PENDING_LIMIT.0, cap + 1));
            assert!(message.contains("limit is 1024"), "{message}");
        }
        other => panic!("expected pending_limit, got {other:?}"),
    }
    // The connection stays usable.
    asker.ping(9);
    drop(silent);
}

#[test]
fn pending_requests_fail_cleanly_when_the_connection_drops() {
    let b = Broker::default();
    let proxy = Proxy::start(b.addr);
    let responder = Client::connect(b.options()).unwrap();
    let mut held = responder.serve("svc/hold").unwrap();
    let asker = Client::connect(mote_sdk::Options::new(proxy.addr.to_string())).unwrap();
    let t = std::thread::spawn(move || {
        let t0 = Instant::now();
        (
            asker.request("svc/hold", "x", Duration::from_secs(60)),
            t0.elapsed(),
        )
    });
    // Once the request reached the responder, the requester's connection is cut.
    assert!(held.recv_timeout(PATIENCE).unwrap().is_some());
    proxy.cut();
    let (r, took) = t.join().unwrap();
    assert!(matches!(r, Err(Error::ConnectionLost)), "{r:?}");
    assert!(took < Duration::from_secs(30), "no hang: {took:?}");
}

/// A broker of protocol 3 (before request/reply), as far as the handshake goes.
fn old_broker() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let w = Frame::Welcome(wire::Welcome {
                    version: 3,
                    keepalive_ms: 30_000,
                    max_frame: 1 << 20,
                    max_payload: 1 << 20,
                    max_subscriptions: 64,
                    broker_id: 7,
                    broker: "mote 0.0.3",
                });
                let _ = s.write_all(&w.to_vec());
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn an_older_broker_gets_no_request() {
    let c = Client::connect(mote_sdk::Options::new(old_broker().to_string())).unwrap();
    assert_eq!(c.protocol_version(), Some(3));
    let e = c.request("svc/x", "hi", PATIENCE).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsupported {
                broker: 3,
                needed: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(c.serve("svc/x").is_err());
    assert!(c.is_connected(), "nothing was sent");
}

fn mote(args: &[&str]) -> std::process::Output {
    Command::new(MOTE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_cli_answers_with_a_command_and_tells_no_responders_from_a_timeout() {
    let s = Served::start(&[]);
    let port = s.port();
    let out = mote(&["req", "-p", &port, "-t", "svc/upper", "-m", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "mote req: no responders on svc/upper\n"
    );
    let mut upper = Command::new(MOTE)
        .args([
            "reply",
            "-p",
            &port,
            "-t",
            "svc/upper",
            "--exec",
            "tr a-z A-Z",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut slow = Command::new(MOTE)
        .args(["reply", "-p", &port, "-t", "svc/slow", "--group", "slow"])
        .args(["--exec", "sleep 2", "--cmd-timeout", "5s"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // The responders subscribe when they have connected: until then, nobody answers.
    let mut last = None;
    eventually(PATIENCE, "mote reply answers", || {
        let out = mote(&["req", "-p", &port, "-t", "svc/upper", "-m", "hello"]);
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    assert_eq!(last.unwrap().stdout, b"HELLO\n");
    eventually(PATIENCE, "the slow responder subscribed", || {
        let out = mote(&["req", "-p", &port, "-t", "svc/slow", "-m", "x", "-W", "0.3"]);
        String::from_utf8_lossy(&out.stderr).contains("no reply")
    });
    let out = mote(&["req", "-p", &port, "-t", "svc/slow", "-m", "x", "-W", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "mote req: no reply within 0.5 s\n"
    );
    assert!(out.stdout.is_empty());
    // Usage errors exit 2.
    let out = mote(&["req", "-p", &port, "-m", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t TOPIC"));
    let out = mote(&["reply", "-p", &port, "-t", "svc/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exec CMD"));
    // The usage lists both.
    let help = mote(&["help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("  req ") && help.contains("  reply "),
        "{help}"
    );
    let _ = upper.kill();
    let _ = slow.kill();
    let _ = upper.wait();
    let _ = slow.wait();
}

#[test]
fn a_failing_command_answers_nothing_and_another_member_may_answer() {
    let s = Served::start(&[]);
    let port = s.port();
    // A member that always fails, and one that answers: with prefetch 1, the request the
    // failing one took is nacked and goes to the other.
    let mut bad = Command::new(MOTE)
        .args(["reply", "-p", &port, "-t", "svc/two", "--group", "two"])
        .args(["--exec", "exit 3"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut good = Command::new(MOTE)
        .args(["reply", "-p", &port, "-t", "svc/two", "--group", "two"])
        .args(["--exec", "echo ok"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Both members subscribed: every request is answered (by the good one).
    eventually(PATIENCE, "the members subscribed", || {
        mote(&["req", "-p", &port, "-t", "svc/two", "-m", "x", "-W", "2"])
            .status
            .success()
    });
    for _ in 0..10 {
        let out = mote(&["req", "-p", &port, "-t", "svc/two", "-m", "x", "-W", "5"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"ok\n");
    }
    let _ = bad.kill();
    let mut err = String::new();
    bad.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let _ = bad.wait();
    let _ = good.kill();
    let _ = good.wait();
    assert!(err.contains("exited with 3; no reply sent"), "{err}");
    assert!(!err.contains("without ack or nack"), "{err}");
}

#[test]
fn the_readme_shows_the_commands_these_tests_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for line in [
        "mote reply -t svc/upper --exec 'tr a-z A-Z'",
        "mote req -t svc/upper -m hello                     # prints HELLO",
        "curl -d hello 'http://127.0.0.1:7271/t/svc/upper?wait=reply&timeout=5s'",
    ] {
        assert!(readme.contains(line), "the README lost {line:?}");
    }
}

/// The README's curl line (as curl sends it), against a broker with `mote reply` answering.
#[test]
fn the_readme_curl_line_prints_the_reply() {
    let s = Served::start(&[]);
    let port = s.port();
    let http = s.http.unwrap();
    let mut upper = Command::new(MOTE)
        .args([
            "reply",
            "-p",
            &port,
            "-t",
            "svc/upper",
            "--exec",
            "tr a-z A-Z",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // What `curl -d hello URL` sends: a form-encoded POST.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let mut last = None;
    eventually(PATIENCE, "the request is answered", || {
        let r = common::http::request(
            http,
            "POST",
            "/t/svc/upper?wait=reply&timeout=5s",
            &form,
            b"hello",
        );
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    let r = last.unwrap();
    assert_eq!(r.body, b"HELLO");
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    let _ = upper.kill();
    let _ = upper.wait();
}

#[test]
fn a_command_past_its_time_is_killed_and_answers_nothing() {
    let s = Served::start(&[]);
    let port = s.port();
    let mut slow = Command::new(MOTE)
        .args([
            "reply",
            "-p",
            &port,
            "-t",
            "svc/stuck",
            "--exec",
            "sleep 30",
        ])
        .args(["--cmd-timeout", "200ms", "-C", "1"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(PATIENCE, "the responder subscribed", || {
        let out = mote(&["req", "-p", &port, "-t", "svc/stuck", "-m", "x", "-W", "1"]);
        String::from_utf8_lossy(&out.stderr).contains("no reply within 1 s")
    });
    let _ = slow.kill();
    let mut err = String::new();
    slow.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = slow.wait();
    assert!(
        err.contains("ran past --cmd-timeout (0.2 s) and was killed; no reply sent"),
        "{err}"
    );
}
