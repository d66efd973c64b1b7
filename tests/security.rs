//! Token security end to end: a real broker with tokens on port 0, the SDK and raw
//! clients, and a recording proxy to look at what crosses the wire.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Broker, Got, Proxy, Raw, eventually};
use mote::auth::{Auth, Rules};
use mote::limits::Limits;
use mote_sdk::blocking::Client;
use mote_sdk::secure::{Opener, Record, Sealer, SessionKeys, Token, transcript};
use mote_sdk::wire::{self, AuthInit, Decoded, Frame, Hello, Ping};
use mote_sdk::{ErrorCode, Event, Options, Start};

const SECRET: &str = "kitchen-secret-0123456789abcdef";
const ADMIN: &str = "admin-secret-0123456789abcdef00";
const WAIT: Duration = Duration::from_secs(5);

/// A broker with tokens `kitchen` (publish home/kitchen/#, subscribe home/#) and `admin`
/// (everything).
fn broker(limits: Limits) -> Broker {
    Broker::with(move || {
        let mut auth = Auth::none();
        let kitchen = Rules::new("kitchen", &["home/{name}/#".into()], &["home/#".into()]).unwrap();
        auth.insert("kitchen", Token::new(SECRET).unwrap(), kitchen)
            .unwrap();
        auth.insert("admin", Token::new(ADMIN).unwrap(), Rules::all())
            .unwrap();
        mote::broker::Config {
            limits,
            auth,
            ..Default::default()
        }
    })
}

fn opts(addr: SocketAddr, name: &str, secret: &str) -> Options {
    Options::new(addr.to_string())
        .with_token(name, secret)
        .unwrap()
}

/// A raw client through the token handshake, with its record layer.
struct Secure {
    s: TcpStream,
    /// Bytes received and not yet opened.
    inbuf: Vec<u8>,
    /// Opened plaintext not yet decoded.
    plain: Vec<u8>,
    sealer: Sealer,
    opener: Opener,
}

/// Reads from `s` until `buf` starts with a whole plaintext frame; returns its length.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    loop {
        if let Ok(Decoded::Frame(_, n)) = wire::decode(buf, 4096) {
            return n;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Secure {
    fn connect(addr: SocketAddr, name: &str, secret: &str) -> Secure {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let hello = Frame::Hello(Hello::new("raw")).to_vec();
        s.write_all(&hello).unwrap();
        let mut buf = Vec::new();
        let n = read_frame(&mut s, &mut buf);
        let challenge = buf[..n].to_vec();
        buf.drain(..n);
        let Ok(Decoded::Frame(Frame::AuthChallenge(c), _)) = wire::decode(&challenge, 4096) else {
            panic!("expected a challenge")
        };
        let keys = SessionKeys::derive(
            &Token::new(secret).unwrap(),
            name,
            &[5; 32],
            &c.nonce,
            &transcript(&hello, &challenge),
        );
        let init = Frame::AuthInit(AuthInit {
            name,
            nonce: [5; 32],
            proof: keys.client_proof(),
        });
        s.write_all(&init.to_vec()).unwrap();
        let n = read_frame(&mut s, &mut buf);
        let Ok(Decoded::Frame(Frame::AuthProof(p), _)) = wire::decode(&buf[..n], 4096) else {
            panic!("expected the broker's proof")
        };
        assert!(keys.check_broker_proof(&p.proof));
        buf.drain(..n);
        let (sealer, opener) = keys.client();
        let mut sec = Secure {
            s,
            inbuf: buf,
            plain: Vec::new(),
            sealer,
            opener,
        };
        assert!(matches!(sec.next(), Some(Got::Welcome { .. })));
        sec
    }

    fn send(&mut self, frames: &[Frame<'_>]) {
        let mut rec = Vec::new();
        let at = Sealer::begin(&mut rec);
        for f in frames {
            f.encode(&mut rec);
        }
        self.sealer.seal(&mut rec, at);
        self.s.write_all(&rec).unwrap();
    }

    /// The next frame from the broker's records; `None` once it closed.
    fn next(&mut self) -> Option<Got> {
        loop {
            if let Ok(Decoded::Frame(f, n)) = wire::decode(&self.plain, usize::MAX) {
                let g = common::own(f);
                self.plain.drain(..n);
                return Some(g);
            }
            if let Ok(Record::Complete { total }) = Opener::peek(&self.inbuf, 1 << 24) {
                let p = self.opener.open(&mut self.inbuf[..total]).unwrap().to_vec();
                self.plain.extend_from_slice(&p);
                self.inbuf.drain(..total);
                continue;
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed (timeout?): {e}"),
            }
        }
    }
}

#[test]
fn encrypted_pub_sub_shows_nothing_on_the_wire() {
    let b = broker(Limits::default());
    let proxy = Proxy::start(b.addr);
    let subscriber = Client::connect(opts(proxy.addr, "admin", ADMIN)).unwrap();
    let mut sub = subscriber.subscribe("secret/#", Start::Latest).unwrap();
    let publisher = Client::connect(opts(proxy.addr, "admin", ADMIN)).unwrap();
    let payload = "PAYLOAD-that-must-not-leak-0123456789";
    let topic = "secret/topic-that-must-not-leak";
    assert_eq!(publisher.publish_confirmed(topic, payload).unwrap(), 0);
    for i in 0..100 {
        publisher.publish(topic, format!("{payload}-{i}")).unwrap();
    }
    publisher.flush().unwrap();
    let Some(Event::Message(m)) = sub.recv_timeout(WAIT).unwrap() else {
        panic!()
    };
    assert_eq!(
        (&*m.topic, m.payload.as_slice()),
        (topic, payload.as_bytes())
    );
    for _ in 0..100 {
        sub.recv_timeout(WAIT).unwrap();
    }
    let wire = proxy.all_bytes();
    assert!(
        wire.len() > 100 * payload.len(),
        "the capture holds the traffic"
    );
    assert!(
        wire.windows(4).any(|w| w == b"mote"),
        "the plaintext hello is in the capture"
    );
    for secret in [
        ADMIN.as_bytes(),
        payload.as_bytes(),
        topic.as_bytes(),
        b"secret/",
        b"PAYLOAD",
    ] {
        assert!(
            !wire.windows(secret.len()).any(|w| w == secret),
            "{:?} appears on the wire",
            String::from_utf8_lossy(secret)
        );
    }
}

#[test]
fn wrong_missing_and_unknown_tokens_fail_fast_with_one_line() {
    let b = broker(Limits::default());
    for (o, want) in [
        (
            opts(b.addr, "kitchen", "wrong-secret-0123456789abcd"),
            "authentication failed (unauthorized)",
        ),
        (
            opts(b.addr, "nobody", SECRET),
            "authentication failed (unauthorized)",
        ),
        (
            Options::new(b.addr.to_string()),
            "this broker requires a token",
        ),
    ] {
        let t0 = Instant::now();
        let e = Client::connect(o).unwrap_err();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not a hang: {:?}",
            t0.elapsed()
        );
        assert_eq!(e.code(), Some(ErrorCode::UNAUTHORIZED), "{e}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
    let stats = b.stop();
    // The client without a token hangs up after the challenge without guessing: only
    // the two wrong proofs count (and feed the per-address backoff).
    assert_eq!(stats.auth_failures, 2);
}

#[test]
fn a_client_with_a_token_refuses_a_broker_without() {
    let b = Broker::default();
    let e = Client::connect(opts(b.addr, "default", SECRET)).unwrap_err();
    assert!(
        e.to_string().contains("refusing to talk to it unencrypted"),
        "{e}"
    );
}

#[test]
fn access_rules_refuse_with_the_rule_and_keep_the_connection() {
    let b = broker(Limits::default());
    let c = Client::connect(opts(b.addr, "kitchen", SECRET)).unwrap();
    assert_eq!(c.publish_confirmed("home/kitchen/temp", "21.5").unwrap(), 0);
    let e = c.publish_confirmed("home/hall/temp", "19").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN));
    assert_eq!(
        e.to_string(),
        "token \"kitchen\" may not publish to \"home/hall/temp\" (its publish rules: home/kitchen/#) (forbidden)"
    );
    let e = c.subscribe("#", Start::Latest).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN));
    assert!(e.to_string().contains("its subscribe rules: home/#"), "{e}");
    let mut s = c.subscribe("home/+/temp", Start::Earliest).unwrap();
    let Some(Event::Message(m)) = s.recv_timeout(WAIT).unwrap() else {
        panic!()
    };
    assert_eq!(m.payload, b"21.5");
    // Fire-and-forget refusals come back at the flush; still connected after all that.
    c.publish("home/hall/temp", "x").unwrap();
    assert_eq!(c.flush().unwrap_err().code(), Some(ErrorCode::FORBIDDEN));
    assert_eq!(c.publish_confirmed("home/kitchen/temp", "22").unwrap(), 1);
    let stats = b.stop();
    assert_eq!(stats.errors(ErrorCode::FORBIDDEN), 3);
}

#[test]
fn records_from_one_session_are_rejected_in_another() {
    let b = broker(Limits::default());
    let proxy = Proxy::start(b.addr);
    // Session A through the recording proxy publishes a few messages.
    let a = Client::connect(opts(proxy.addr, "admin", ADMIN)).unwrap();
    for i in 0..3 {
        a.publish_confirmed("replay/me", format!("m{i}")).unwrap();
    }
    let upstream = proxy.captured.lock().unwrap()[0].0.lock().unwrap().clone();
    // Skip A's plaintext Hello and AuthInit: what follows are its records.
    let mut pos = 0;
    for _ in 0..2 {
        let Ok(Decoded::Frame(_, n)) = wire::decode(&upstream[pos..], 4096) else {
            panic!("no handshake frame")
        };
        pos += n;
    }
    let Ok(Record::Complete { total }) = Opener::peek(&upstream[pos..], 1 << 24) else {
        panic!("no record captured")
    };
    let record = upstream[pos..pos + total].to_vec();
    // Session B, with the same token, gets A's first record.
    let mut s = Secure::connect(b.addr, "admin", ADMIN);
    s.s.write_all(&record).unwrap();
    match s.next() {
        Some(Got::Error { code, message, .. }) => {
            assert_eq!(ErrorCode(code), ErrorCode::UNAUTHORIZED);
            assert_eq!(message, "authentication failed");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.next(), None, "closed");
    // The broker still serves session A and everyone else.
    assert_eq!(a.publish_confirmed("replay/me", "after").unwrap(), 3);
    let stats = b.stop();
    assert_eq!(stats.records_rejected, 1);
}

#[test]
fn an_oversized_record_is_refused_from_its_header() {
    let b = broker(Limits::default());
    let mut s = Secure::connect(b.addr, "admin", ADMIN);
    s.send(&[Frame::Ping(Ping { nonce: 7 })]);
    assert_eq!(s.next(), Some(Got::Pong(7)));
    s.s.write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]).unwrap();
    assert!(matches!(s.next(), Some(Got::Error { code: 15, .. })));
    assert_eq!(s.next(), None);
    assert_eq!(b.stop().records_rejected, 1);
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    let b = broker(Limits {
        handshake_ms: 150,
        ..Limits::default()
    });
    let mut r = Raw::connect_silent(b.addr);
    r.send(&Frame::Hello(Hello::new("slow")));
    assert_eq!(r.next(), Some(Got::Other(0x10)), "the challenge");
    // ... and then it says nothing.
    match r.next() {
        Some(Got::Error { code, .. }) => assert_eq!(ErrorCode(code), ErrorCode::HANDSHAKE_TIMEOUT),
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    assert_eq!(r.next(), None);
}

#[test]
fn repeated_failures_from_one_address_back_off() {
    let b = broker(Limits::default());
    for _ in 0..4 {
        let e =
            Client::connect(opts(b.addr, "kitchen", "wrong-secret-0123456789abcd")).unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
    }
    // The fifth attempt waits, even with the right token, and is told why.
    let e = Client::connect(opts(b.addr, "kitchen", SECRET)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UNAUTHORIZED), "{e}");
    assert!(
        e.to_string()
            .contains("too many failed handshakes from this address; retry in 1 s"),
        "{e}"
    );
    // After the wait the right token works again.
    let mut c = None;
    eventually(Duration::from_secs(5), "the backoff to end", || {
        c = Client::connect(opts(b.addr, "kitchen", SECRET)).ok();
        c.is_some()
    });
    assert_eq!(
        c.unwrap().publish_confirmed("home/kitchen/x", "1").unwrap(),
        0
    );
    let stats = b.stop();
    assert_eq!(stats.auth_failures, 4);
    assert!(stats.auth_blocked >= 1);
}

#[test]
fn encrypted_reconnect_resumes_too() {
    let b = broker(Limits::default());
    let proxy = Proxy::start(b.addr);
    let mut o = opts(proxy.addr, "admin", ADMIN);
    o.reconnect_min = Duration::from_millis(20);
    let sub_client = Client::connect(o).unwrap();
    let mut sub = sub_client.subscribe("res/#", Start::Latest).unwrap();
    let publisher = Client::connect(opts(b.addr, "admin", ADMIN)).unwrap();
    publisher.publish_confirmed("res/a", "1").unwrap();
    assert!(matches!(
        sub.recv_timeout(WAIT).unwrap(),
        Some(Event::Message(_))
    ));
    proxy.cut();
    eventually(WAIT, "the subscriber notices", || {
        !sub_client.is_connected()
    });
    publisher.publish_confirmed("res/a", "2").unwrap();
    publisher.publish_confirmed("res/b", "3").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let Some(Event::Message(m)) = sub.recv_timeout(WAIT).unwrap() else {
            panic!()
        };
        got.push(String::from_utf8(m.payload).unwrap());
    }
    got.sort();
    assert_eq!(got, ["2", "3"]);
}

#[test]
fn an_idle_encrypted_client_keeps_its_connection_with_sealed_pings() {
    let b = broker(Limits {
        keepalive_ms: 100,
        ..Limits::default()
    });
    let c = Client::connect(opts(b.addr, "admin", ADMIN)).unwrap();
    // Three keepalive periods of silence would close it, unless its pings count.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(600) {
        assert!(c.is_connected(), "dropped after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.publish_confirmed("idle/ok", "1").unwrap(), 0);
    let stats = b.stop();
    assert_eq!(stats.records_rejected, 0, "every ping was a valid record");
    assert_eq!(stats.errors(ErrorCode::KEEPALIVE_TIMEOUT), 0);
}

/// A TCP connection to `to` from the loopback address `from` (127.x.y.z), so one test
/// can be several peers.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    connect(&fd, &to).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

#[test]
fn anonymous_peers_cannot_take_the_room_of_those_with_a_token() {
    // Eight connections in all, at most four still in their handshake, two per address.
    let b = broker(Limits {
        max_connections: 8,
        max_pending: 4,
        max_pending_per_address: 2,
        ..Limits::default()
    });
    // Two peers without a token open ten silent connections each.
    let mut held = Vec::new();
    let mut refused = 0;
    for from in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..10 {
            let mut s = connect_from(from, b.addr);
            // Refused ones are told why at once and closed; held ones hear nothing
            // until they say hello.
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(n) => match wire::decode(&buf[..n], usize::MAX) {
                    Ok(Decoded::Frame(Frame::Error(e), _)) => {
                        assert_eq!(e.code, ErrorCode::CONNECTION_LIMIT);
                        assert!(
                            e.message.contains("--max-pending-per-address"),
                            "{}",
                            e.message
                        );
                        refused += 1;
                    }
                    other => panic!("{other:?}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held.push(s),
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!((held.len(), refused), (4, 16));
    // A peer with a token still gets in, closing the oldest silent one, and is served.
    let c = Client::connect(opts(b.addr, "admin", ADMIN)).unwrap();
    c.publish_confirmed("home/x", "in").unwrap();
    held[0].set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 512];
    let n = held[0].read(&mut buf).unwrap();
    match wire::decode(&buf[..n], usize::MAX) {
        Ok(Decoded::Frame(Frame::Error(e), _)) => {
            assert_eq!(e.code, ErrorCode::HANDSHAKE_TIMEOUT);
        }
        other => panic!("the oldest was not closed: {other:?}"),
    }
    // With one place free again, the next needs to close none.
    let k = Client::connect(opts(b.addr, "kitchen", SECRET)).unwrap();
    k.publish_confirmed("home/kitchen/t", "in too").unwrap();
    drop(held);
    let stats = b.stop();
    assert_eq!(
        (stats.connections_refused, stats.connections_evicted),
        (16, 1)
    );
}

// ---------------------------------------------------------------------------------------
// Issue 13: a refused re-subscription, and a token given without its name.

#[test]
fn a_subscription_refused_after_a_reconnect_is_an_event_and_ends() {
    let (reload_tx, reload_rx) = async_channel::bounded(1);
    let b = Broker::with(move || {
        let mut auth = Auth::none();
        let kitchen = Rules::new("kitchen", &["home/{name}/#".into()], &["home/#".into()]).unwrap();
        auth.insert("kitchen", Token::new(SECRET).unwrap(), kitchen)
            .unwrap();
        mote::broker::Config {
            auth,
            reload: Some(reload_rx),
            ..Default::default()
        }
    });
    let proxy = Proxy::start(b.addr);
    let mut o = opts(proxy.addr, "kitchen", SECRET);
    o.reconnect_min = Duration::from_millis(20);
    let c = Client::connect(o).unwrap();
    let mut wide = c.subscribe("home/#", Start::Latest).unwrap();
    let mut narrow = c.subscribe("home/kitchen/#", Start::Latest).unwrap();
    // The reload narrows what the token may read to its own room.
    let mut auth = Auth::none();
    let kitchen = Rules::new(
        "kitchen",
        &["home/{name}/#".into()],
        &["home/{name}/#".into()],
    )
    .unwrap();
    auth.insert("kitchen", Token::new(SECRET).unwrap(), kitchen)
        .unwrap();
    reload_tx
        .send_blocking(mote::broker::Reload {
            auth,
            topics: Default::default(),
            schemas: Default::default(),
        })
        .unwrap();
    eventually(WAIT, "the reload is in force", || {
        let probe = Client::connect(opts(b.addr, "kitchen", SECRET)).unwrap();
        probe.subscribe("home/#", Start::Latest).is_err()
    });
    proxy.cut();
    match wide.recv_timeout(WAIT).unwrap() {
        Some(Event::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::FORBIDDEN);
            assert!(message.contains("may not subscribe"), "{message}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // Its last event: the subscription has ended.
    assert_eq!(wide.recv_timeout(WAIT).unwrap(), None);
    // The other one was accepted again and goes on.
    eventually(WAIT, "reconnected", || c.is_connected());
    let publisher = Client::connect(opts(b.addr, "kitchen", SECRET)).unwrap();
    publisher.publish_confirmed("home/kitchen/t", "21").unwrap();
    match narrow.recv_timeout(WAIT).unwrap() {
        Some(Event::Message(m)) => assert_eq!(m.payload, b"21"),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[test]
fn a_token_without_its_name_is_told_that_a_name_may_be_needed() {
    let b = broker(Limits::default());
    let e = Client::connect(opts(b.addr, "", SECRET)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UNAUTHORIZED), "{e}");
    let text = e.to_string();
    assert!(text.starts_with("authentication failed: "), "{text}");
    assert!(text.contains("--token NAME:SECRET"), "{text}");
    // No token names are given away.
    assert!(
        !text.contains("kitchen") && !text.contains("admin"),
        "{text}"
    );
    // With a name, a wrong secret gets no hint about names.
    let e = Client::connect(opts(b.addr, "kitchen", "wrong-secret-0123456789abcd")).unwrap_err();
    assert_eq!(e.to_string(), "authentication failed (unauthorized)");
}
