//! The SDK across a lost connection, against a scripted broker on loopback: what
//! happens to confirmed publishes that were on the wire, and what `Client::link` and
//! `LinkWatch` report.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use futures_lite::FutureExt;
use futures_lite::future::block_on;
use mote_sdk::wire::{self, Decoded, Frame, Published, Welcome};
use mote_sdk::{Client, Error, Link, Options};

const WAIT: Duration = Duration::from_secs(10);

/// A frame the client sent, owned.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Hello,
    Publish { req: u32, payload: Vec<u8> },
    Other(u8),
}

/// A scripted broker: accepts connections, says welcome, reads frames, answers what the
/// test tells it to.
struct Fake {
    conns: mpsc::Receiver<TcpStream>,
}

/// One connection of the scripted broker; every read has a timeout.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Fake {
    fn start() -> (Fake, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, conns) = mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        (Fake { conns }, addr)
    }

    /// The next connection, through its handshake.
    fn accept(&self) -> Conn {
        let s = self.conns.recv_timeout(WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = Conn { s, buf: Vec::new() };
        assert_eq!(c.next(), Sent::Hello);
        c.send(&Frame::Welcome(Welcome {
            version: wire::PROTOCOL_VERSION,
            keepalive_ms: 30_000,
            max_frame: 1 << 20,
            max_payload: 1 << 16,
            max_subscriptions: 64,
            broker_id: 7,
            broker: "scripted",
        }));
        c
    }
}

impl Conn {
    fn send(&mut self, f: &Frame<'_>) {
        self.s.write_all(&f.to_vec()).unwrap();
    }

    fn next(&mut self) -> Sent {
        loop {
            match wire::decode(&self.buf, usize::MAX) {
                Ok(Decoded::Frame(f, n)) => {
                    let sent = match f {
                        Frame::Hello(_) => Sent::Hello,
                        Frame::Publish(p) => Sent::Publish {
                            req: p.req,
                            payload: p.payload.to_vec(),
                        },
                        other => Sent::Other(other.tag()),
                    };
                    self.buf.drain(..n);
                    return sent;
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => panic!("the client sent a broken frame: {e}"),
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next publish, skipping keepalive pings.
    fn publish(&mut self) -> (u32, Vec<u8>) {
        loop {
            match self.next() {
                Sent::Publish { req, payload } => return (req, payload),
                Sent::Other(t) if t == wire::tag::PING => {}
                other => panic!("expected a publish, got {other:?}"),
            }
        }
    }
}

/// Connects to the scripted broker (which must answer the handshake meanwhile).
fn connect(fake: &Fake, opts: Options) -> (Client, Conn) {
    let client = std::thread::spawn(move || block_on(Client::connect(opts)));
    let conn = fake.accept();
    (client.join().unwrap().unwrap(), conn)
}

/// Awaits `f`, failing after [`WAIT`].
fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    block_on(f.or(async {
        async_io::Timer::after(WAIT).await;
        panic!("timed out")
    }))
}

fn options(addr: &str) -> Options {
    let mut o = Options::new(addr);
    o.reconnect_min = Duration::from_millis(10);
    o.reconnect_max = Duration::from_millis(50);
    o
}

#[test]
fn unconfirmed_publishes_are_sent_again_first_and_in_order() {
    let (fake, addr) = Fake::start();
    let mut opts = options(&addr);
    opts.resend_unconfirmed = true;
    let (client, mut conn) = connect(&fake, opts);
    assert_eq!(client.link(), Link::Up);
    let mut watch = client.watch_link();
    let mut pending = Vec::new();
    let mut reqs = Vec::new();
    for m in ["m0", "m1", "m2"] {
        pending.push(block_on(client.publish_pipelined("t", None, m)).unwrap());
        let (req, payload) = conn.publish();
        assert_eq!(payload, m.as_bytes());
        reqs.push(req);
    }
    // The broker goes away without answering: the three are on the wire, unconfirmed.
    drop(conn);
    match within(watch.changed()) {
        Link::Down { reason, since } => {
            assert_eq!(reason, "the broker closed the connection");
            assert!(since.elapsed() < WAIT);
        }
        other => panic!("expected down, got {other:?}"),
    }
    // Queued while disconnected: goes after the three.
    pending.push(block_on(client.publish_pipelined("t", None, "m3")).unwrap());
    let mut conn = fake.accept();
    for (i, m) in ["m0", "m1", "m2", "m3"].iter().enumerate() {
        let (req, payload) = conn.publish();
        assert_eq!(payload, m.as_bytes(), "in order");
        if let Some(&r) = reqs.get(i) {
            assert_eq!(req, r, "the same request");
        }
        conn.send(&Frame::Published(Published {
            req,
            offset: 10 + i as u64,
        }));
    }
    for (i, c) in pending.into_iter().enumerate() {
        assert_eq!(within(c).unwrap(), 10 + i as u64);
    }
    assert_eq!(client.resent(), 3);
    assert_eq!(client.link(), Link::Up);
    assert_eq!(within(watch.changed()), Link::Up);
    // Closed: the watch says so, and says nothing after.
    drop(client);
    assert_eq!(within(watch.changed()), Link::Closed);
}

#[test]
fn without_resending_a_lost_confirmation_is_connection_lost() {
    let (fake, addr) = Fake::start();
    let (client, mut conn) = connect(&fake, options(&addr));
    let c = block_on(client.publish_pipelined("t", None, "m0")).unwrap();
    conn.publish();
    drop(conn);
    assert!(matches!(within(c), Err(Error::ConnectionLost)));
    // Reconnected, nothing is sent again.
    let mut conn = fake.accept();
    let c = block_on(client.publish_pipelined("t", None, "m1")).unwrap();
    let (req, payload) = conn.publish();
    assert_eq!(payload, b"m1");
    conn.send(&Frame::Published(Published { req, offset: 1 }));
    assert_eq!(within(c).unwrap(), 1);
    assert_eq!(client.resent(), 0);
}

#[test]
fn a_failed_reconnect_updates_the_reason_and_keeps_the_time_it_went_down() {
    let (fake, addr) = Fake::start();
    let (client, conn) = connect(&fake, options(&addr));
    let mut watch = client.watch_link();
    drop(conn);
    let Link::Down { since, .. } = within(watch.changed()) else {
        panic!("expected down")
    };
    // The next attempt reaches the listener but is closed before its welcome.
    let s = fake.conns.recv_timeout(WAIT).unwrap();
    drop(s);
    match within(watch.changed()) {
        Link::Down { since: s, reason } => {
            assert_eq!(s, since, "down since the connection was lost");
            assert!(
                reason.starts_with(&format!("handshake with {addr} failed")),
                "{reason}"
            );
        }
        other => panic!("expected down, got {other:?}"),
    }
    let _conn = fake.accept();
    loop {
        if within(watch.changed()) == Link::Up {
            break;
        }
    }
}
