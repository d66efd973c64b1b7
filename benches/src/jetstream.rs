//! NATS JetStream, for the persisted runs (`--persist`): nats-server with `-js`'s file
//! store, one stream (`BENCH`) over the runs' subjects (`bench.>`), spoken to in the NATS
//! text protocol of [`crate::nats`].
//!
//! - A publish with an acknowledgement is a `PUB` to a stream subject with a reply inbox;
//!   the server answers there with `{"stream":"BENCH","seq":N}` once it stored the
//!   message (or `{"error":...}`).
//! - The JetStream API is requests to `$JS.API.*` subjects: the stream is made by
//!   `$JS.API.STREAM.CREATE.BENCH`, its state read by `$JS.API.STREAM.INFO.BENCH`.
//! - The replay is a push consumer from the first message, without acks, with flow
//!   control (answered by the parser in `nats`).
//! - The sync policy is the server's: `jetstream { sync_interval: 1s | always }` in its
//!   configuration file, which nats-server reads from 2.10 on. Debian 12's nats-server
//!   (2.9) has no such setting (its configuration parser refuses `sync_interval` and
//!   `sync`): it syncs every 2 minutes and never per message, and the runs say so.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mote::bench::{Broker, Client, Conn, Driver, Durable, DurableDriver, Started, Step, SyncMode};

use crate::nats::{Control, Nats, parse};
use crate::peer::Peer;

/// nats-server with JetStream, compared in the persisted runs only.
pub(crate) const PEER: Peer = Peer {
    driver: Driver::new::<JetStream>("jetstream", 1),
    program: "nats-server",
    package: "nats-server",
    args: |port| vec!["-a", "127.0.0.1", "-p", port, "-js"],
    version_flag: "--version",
    persisted_only: true,
};

/// The stream every run's subjects are stored in.
const STREAM: &str = "BENCH";

/// Numbers the inboxes of a process's connections.
static INBOX: AtomicU64 = AtomicU64::new(1);

pub(crate) struct JetStream {
    n: Nats,
    /// The inbox prefix of this connection's acknowledgements, once subscribed.
    inbox: Option<String>,
}

impl JetStream {
    /// Reads until a message comes (on any subscription of this connection); its payload.
    fn next_message(&mut self) -> io::Result<Vec<u8>> {
        let mut got = None;
        self.n.c.read_with(|buf, replies| {
            Ok(
                match parse(buf, replies, |p| {
                    got = Some(p.to_vec());
                    false
                })? {
                    None => Step::Need,
                    Some((_, n, false)) => Step::Stop(n),
                    Some((_, n, true)) => Step::Took(n),
                },
            )
        })?;
        got.ok_or_else(|| io::Error::other("no answer"))
    }

    /// A request to the JetStream API: `body` to `subject`, the answer's JSON.
    fn request(&mut self, subject: &str, body: &str) -> io::Result<String> {
        let inbox = format!("_INBOX.api{}", INBOX.fetch_add(1, Ordering::Relaxed));
        self.n.c.write(
            format!(
                "SUB {inbox} 9\r\nPUB {subject} {inbox} {}\r\n{body}\r\nUNSUB 9 1\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        let answer = self.next_message()?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

/// The number after `"key":` in a JSON text (the API's answers are small and flat enough
/// for this).
fn json_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// An API answer that is an error, as one.
fn api_error(answer: String) -> io::Result<String> {
    if answer.contains("\"error\"") {
        Err(io::Error::other(format!("JetStream said {answer}")))
    } else {
        Ok(answer)
    }
}

impl Client for JetStream {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<JetStream> {
        Ok(JetStream {
            n: Nats::connect(addr, name)?,
            inbox: None,
        })
    }

    fn topic(run: &str) -> String {
        Nats::topic(run)
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.n.subscribe(topic)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        Nats::encode_publish(topic, payload, out);
    }

    fn read(&mut self, f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.n.read(f)
    }

    fn conn(&mut self) -> &mut Conn {
        self.n.conn()
    }
}

impl Durable for JetStream {
    fn prepare(addr: SocketAddr) -> io::Result<()> {
        let mut c = JetStream::connect(addr, "bench-prepare")?;
        let config = format!(
            "{{\"name\":\"{STREAM}\",\"subjects\":[\"bench.>\"],\"storage\":\"file\",\
             \"retention\":\"limits\",\"discard\":\"old\",\"num_replicas\":1}}"
        );
        api_error(c.request(&format!("$JS.API.STREAM.CREATE.{STREAM}"), &config)?)?;
        Ok(())
    }

    fn ready(addr: SocketAddr) -> io::Result<()> {
        // Any answer of the JetStream API (a stream not made yet is an error answer).
        let mut c = JetStream::connect(addr, "bench-ready")?;
        c.request(&format!("$JS.API.STREAM.INFO.{STREAM}"), "")?;
        Ok(())
    }

    fn all_written(s: &Started, expected: u64) -> io::Result<bool> {
        let mut c = JetStream::connect(s.broker.addr, "bench-info")?;
        let info = api_error(c.request(&format!("$JS.API.STREAM.INFO.{STREAM}"), "")?)?;
        let state = info
            .find("\"state\"")
            .map_or(info.as_str(), |at| &info[at..]);
        Ok(json_number(state, "messages").is_some_and(|n| n >= expected))
    }

    fn publish_confirmed(&mut self, topic: &str, payload: &[u8], n: u64) -> io::Result<()> {
        let inbox = match &self.inbox {
            Some(i) => i.clone(),
            None => {
                let i = format!("_INBOX.ack{}", INBOX.fetch_add(1, Ordering::Relaxed));
                self.n.c.write(format!("SUB {i}.* 2\r\n").as_bytes())?;
                self.inbox = Some(i.clone());
                i
            }
        };
        let mut out = Vec::with_capacity(payload.len() + 64);
        out.extend_from_slice(format!("PUB {topic} {inbox}.{n} {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.n.c.write(&out)?;
        let answer = String::from_utf8_lossy(&self.next_message()?).into_owned();
        api_error(answer).map(|_| ())
    }

    fn ping(&mut self) -> io::Result<()> {
        self.n.c.write(b"PING\r\n")?;
        self.n.expect(Control::Pong)
    }

    fn subscribe_replay(&mut self, topic: &str) -> io::Result<()> {
        let deliver = format!("_INBOX.replay{}", INBOX.fetch_add(1, Ordering::Relaxed));
        self.n.subscribe(&deliver)?;
        // The consumer is made from another connection, so that its first deliveries
        // never mix with the answer.
        let mut api = JetStream::connect(self.n.c.s.peer_addr()?, "bench-consumer")?;
        let config = format!(
            "{{\"stream_name\":\"{STREAM}\",\"config\":{{\"deliver_subject\":\"{deliver}\",\
             \"deliver_policy\":\"all\",\"ack_policy\":\"none\",\"filter_subject\":\"{topic}\",\
             \"flow_control\":true,\"idle_heartbeat\":5000000000}}}}"
        );
        api_error(api.request(&format!("$JS.API.CONSUMER.CREATE.{STREAM}"), &config)?)?;
        Ok(())
    }
}

/// nats-server's version as numbers (2.9.10 is `(2, 9)`).
fn major_minor(version: Option<&str>) -> Option<(u32, u32)> {
    let mut parts = version?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The persisted runs of nats-server `binary` (which said it is `version`): each one a
/// server of its own on a free port, JetStream's file store in the run's directory.
pub(crate) fn durable_driver(binary: PathBuf, version: Option<String>) -> DurableDriver {
    let settable = major_minor(version.as_deref()).is_some_and(|v| v >= (2, 10));
    DurableDriver::new::<JetStream>(Box::new(move |dir: &Path, sync: SyncMode, disk: u64| {
        let port = mote::bench::free_port().map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let (setting, said) = match (settable, sync) {
            (true, SyncMode::Always) => ("sync_interval: always".to_string(), "always".into()),
            (true, SyncMode::Every(ms)) => (
                format!("sync_interval: \"{ms}ms\""),
                format!("sync_interval {ms}ms"),
            ),
            (false, _) => (
                String::new(),
                "every 2 min, never per message (nats-server 2.9 has no sync setting)".into(),
            ),
        };
        let store = dir.join("js");
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"{addr}\"\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: {disk}\n  {setting}\n}}\n",
                store.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let log = dir.join("nats.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut broker = Broker::new(child, addr, None);
        broker.wait_ready(t0, "nats-server").map_err(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}: {}", text.lines().last().unwrap_or(""))
        })?;
        Ok(Started {
            broker,
            dir: dir.to_path_buf(),
            http: None,
            sync: said,
            matched: settable,
            remove: true,
        })
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn api_answers() {
        let info = r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"max_msgs":-1},"state":{"messages":1234,"bytes":99}}"#;
        let state = &info[info.find("\"state\"").unwrap()..];
        assert_eq!(json_number(state, "messages"), Some(1234));
        assert_eq!(json_number(info, "nope"), None);
        assert!(api_error(r#"{"error":{"code":503}}"#.into()).is_err());
        assert!(api_error(r#"{"stream":"BENCH","seq":3}"#.into()).is_ok());
        assert_eq!(major_minor(Some("2.9.10")), Some((2, 9)));
        assert_eq!(major_minor(Some("2.15.1")), Some((2, 15)));
        assert_eq!(major_minor(None), None);
    }

    #[test]
    fn flow_control_is_answered_and_headers_skipped() {
        let head = "NATS/1.0 100 FlowControl Request\r\n\r\n";
        let fc = format!(
            "HMSG _INBOX.r 1 $JS.FC.BENCH.x.1 {0} {0}\r\n{head}\r\n",
            head.len()
        );
        let fc = fc.as_bytes();
        let mut replies = Vec::new();
        let mut got = 0;
        let (_, n, _) = parse(fc, &mut replies, |_| {
            got += 1;
            true
        })
        .unwrap()
        .unwrap();
        assert_eq!((n, got), (fc.len(), 0));
        assert_eq!(replies, b"PUB $JS.FC.BENCH.x.1 0\r\n\r\n");
        let msg = b"HMSG bench.gib 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n";
        let mut payload = Vec::new();
        parse(&msg[..], &mut replies, |p| {
            payload.extend_from_slice(p);
            true
        })
        .unwrap()
        .unwrap();
        assert_eq!(payload, b"hello");
    }
}
