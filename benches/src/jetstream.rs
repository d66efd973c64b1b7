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
//!   (2.9.10) has no such setting (its configuration parser refuses `sync_interval` and
//!   `sync`): it syncs every 2 minutes and never per message, and the runs say so.
//!   Counted here with perf and strace: 2 `fsync` calls in 135 s of 100 acked msgs/s,
//!   both at the 2-minute mark.

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

    /// A request to the JetStream API: `body` to `subject`, the answer.
    fn request(&mut self, subject: &str, body: &str) -> io::Result<Vec<u8>> {
        let inbox = format!("_INBOX.api{}", INBOX.fetch_add(1, Ordering::Relaxed));
        self.n.c.write(
            format!(
                "SUB {inbox} 9\r\nPUB {subject} {inbox} {}\r\n{body}\r\nUNSUB 9 1\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        self.next_message()
    }
}

/// An API answer as JSON, or the error it carries as one.
fn api_answer(answer: &[u8]) -> io::Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(answer).map_err(|e| {
        io::Error::other(format!(
            "JetStream answered {:?}: {e}",
            String::from_utf8_lossy(answer)
        ))
    })?;
    match v.get("error") {
        Some(e) => Err(io::Error::other(format!("JetStream said {e}"))),
        None => Ok(v),
    }
}

impl Client for JetStream {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<JetStream> {
        Ok(JetStream {
            n: Nats::connect_with(addr, name, true)?,
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
        api_answer(&c.request(&format!("$JS.API.STREAM.CREATE.{STREAM}"), &config)?)?;
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
        let info = api_answer(&c.request(&format!("$JS.API.STREAM.INFO.{STREAM}"), "")?)?;
        let stored = info["state"]["messages"].as_u64().unwrap_or(0);
        Ok(stored >= expected)
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
        api_answer(&self.next_message()?).map(|_| ())
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
        api_answer(&api.request(&format!("$JS.API.CONSUMER.CREATE.{STREAM}"), &config)?)?;
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
                "JetStream's default, its file store synced every 2 min and never per message \
                 (nats-server before 2.10 has no sync_interval setting)"
                    .into(),
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
        let info = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"max_msgs":-1},"state":{"messages":1234,"bytes":99}}"#;
        assert_eq!(api_answer(info).unwrap()["state"]["messages"], 1234);
        let e = api_answer(br#"{"error":{"code":503,"description":"no"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"JetStream said {"code":503,"description":"no"}"#
        );
        assert!(api_answer(br#"{"stream":"BENCH","seq":3}"#).is_ok());
        assert!(api_answer(b"-ERR").is_err());
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
