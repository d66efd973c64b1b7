//! Shared test fixtures: a real broker on 127.0.0.1:0 in a thread, raw wire clients, and
//! a TCP proxy whose connections a test can cut.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // Test fixture: panics are the failure report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mote::engine::Stats;
use mote::limits::Limits;
use mote_sdk::wire::{self, Decoded, Frame, Hello};

pub mod http;
pub mod served;

/// A broker running on its own thread until dropped (or `stop`ped).
pub struct Broker {
    pub addr: SocketAddr,
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<Stats>>>,
}

impl Broker {
    pub fn start(limits: Limits) -> Broker {
        Broker::with(move || mote::broker::Config {
            limits,
            ..Default::default()
        })
    }

    /// A broker with the config `make` builds (on the broker's thread: `Auth` is not
    /// `Send`).
    pub fn with(make: impl FnOnce() -> mote::broker::Config + Send + 'static) -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            mote::broker::serve_with(listener, make(), async move {
                let _ = stopped.recv().await;
            })
        });
        Broker {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn default() -> Broker {
        Broker::start(Limits::default())
    }

    /// Shuts the broker down and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.stop.take();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }

    pub fn options(&self) -> mote_sdk::Options {
        mote_sdk::Options::new(self.addr.to_string())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Frames decoded into owned form (tag + re-encoded bytes are not needed by tests).
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Welcome {
        keepalive_ms: u32,
        max_frame: u32,
        broker_id: u64,
    },
    Error {
        code: u16,
        req: u32,
        message: String,
    },
    Published {
        req: u32,
        offset: u64,
    },
    Subscribed {
        sub: u32,
        seq: u64,
    },
    Unsubscribed {
        sub: u32,
    },
    Message {
        sub: u32,
        topic: String,
        offset: u64,
        payload: Vec<u8>,
    },
    Lag {
        sub: u32,
        topic: String,
        missed: u64,
        next: u64,
    },
    /// A `Lag` of messages evicted before the subscription asked (protocol version 2).
    Evicted {
        sub: u32,
        topic: String,
        missed: u64,
        next: u64,
    },
    GroupMessage {
        sub: u32,
        tag: u64,
        offset: u64,
        attempt: u32,
    },
    Pong(u64),
    Other(u8),
}

pub fn own(f: Frame<'_>) -> Got {
    match f {
        Frame::Welcome(w) => Got::Welcome {
            keepalive_ms: w.keepalive_ms,
            max_frame: w.max_frame,
            broker_id: w.broker_id,
        },
        Frame::Error(e) => Got::Error {
            code: e.code.0,
            req: e.req,
            message: e.message.to_string(),
        },
        Frame::Published(p) => Got::Published {
            req: p.req,
            offset: p.offset,
        },
        Frame::Subscribed(s) => Got::Subscribed {
            sub: s.sub,
            seq: s.seq,
        },
        Frame::Unsubscribed(u) => Got::Unsubscribed { sub: u.sub },
        Frame::Message(m) => Got::Message {
            sub: m.sub,
            topic: m.topic.to_string(),
            offset: m.offset,
            payload: m.payload.to_vec(),
        },
        Frame::Lag(l) => Got::Lag {
            sub: l.sub,
            topic: l.topic.to_string(),
            missed: l.missed,
            next: l.next,
        },
        Frame::Evicted(l) => Got::Evicted {
            sub: l.sub,
            topic: l.topic.to_string(),
            missed: l.missed,
            next: l.next,
        },
        Frame::GroupMessage(m) => Got::GroupMessage {
            sub: m.sub,
            tag: m.tag,
            offset: m.offset,
            attempt: m.attempt,
        },
        Frame::Pong(p) => Got::Pong(p.nonce),
        other => Got::Other(other.tag()),
    }
}

/// A raw wire client on a blocking socket; every read has a timeout.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects without saying hello.
    pub fn connect_silent(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut r = Raw::connect_silent(addr);
        r.send(&Frame::Hello(Hello::new("test")));
        match r.next() {
            Some(Got::Welcome { .. }) => r,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub fn send(&mut self, f: &Frame<'_>) {
        self.s.write_all(&f.to_vec()).unwrap();
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next frame; `None` when the broker closed the connection. Panics after the
    /// read timeout.
    pub fn next(&mut self) -> Option<Got> {
        loop {
            match wire::decode(&self.buf, usize::MAX) {
                Ok(Decoded::Frame(f, n)) => {
                    let g = own(f);
                    self.buf.drain(..n);
                    return Some(g);
                }
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => panic!("broker sent a broken frame: {e}"),
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed (timeout?): {e}"),
            }
        }
    }

    pub fn subscribe(&mut self, sub: u32, filter: &str, from: mote_sdk::Start) -> u64 {
        self.send(&Frame::Subscribe(wire::Subscribe {
            sub,
            filter,
            from,
            resume: Vec::new(),
        }));
        match self.next() {
            Some(Got::Subscribed { sub: s, seq }) if s == sub => seq,
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    /// Joins consumer group `group` as subscription `sub`, with `settings`.
    pub fn join_group(
        &mut self,
        sub: u32,
        filter: &str,
        group: &str,
        settings: wire::GroupSettings,
    ) {
        self.send(&Frame::SubscribeGroup(wire::SubscribeGroup {
            sub,
            filter,
            group,
            from: mote_sdk::Start::Earliest,
            settings,
        }));
        match self.next() {
            Some(Got::Subscribed { sub: s, .. }) if s == sub => {}
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    /// Pings and waits for the pong, failing after the read timeout.
    pub fn ping(&mut self, nonce: u64) {
        self.send(&Frame::Ping(wire::Ping { nonce }));
        loop {
            match self.next() {
                Some(Got::Pong(n)) if n == nonce => return,
                Some(_) => {}
                None => panic!("the broker closed the connection instead of answering a ping"),
            }
        }
    }

    pub fn publish(&mut self, req: u32, topic: &str, payload: &[u8]) {
        self.send(&Frame::Publish(wire::Publish {
            req,
            topic,
            key: None,
            payload,
        }));
    }
}

/// Polls `cond` until true, failing after `timeout`: for state that has no event to
/// wait on (such as broker counters).
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The bytes one proxied connection carried: (client → broker, broker → client).
pub type Capture = (Arc<Mutex<Vec<u8>>>, Arc<Mutex<Vec<u8>>>);

/// A TCP proxy to `target` whose live connections `cut()` closes on both sides, and
/// which keeps a copy of every byte in each direction.
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Per connection: (client → broker bytes, broker → client bytes).
    pub captured: Arc<Mutex<Vec<Capture>>>,
}

/// Copies `from` to `to`, keeping a copy of the bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, copy: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                copy.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let captured: Arc<Mutex<Vec<Capture>>> = Arc::default();
        let (c, cap) = (conns.clone(), captured.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut c = c.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                let (up, down): Capture = Default::default();
                cap.lock().unwrap().push((up.clone(), down.clone()));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, up));
                std::thread::spawn(move || pump(server, client, down));
            }
        });
        Proxy {
            addr,
            conns,
            captured,
        }
    }

    /// Every byte seen so far, both directions, all connections.
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for (up, down) in self.captured.lock().unwrap().iter() {
            all.extend_from_slice(&up.lock().unwrap());
            all.extend_from_slice(&down.lock().unwrap());
        }
        all
    }

    /// Closes every connection through the proxy; new ones are still accepted.
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
