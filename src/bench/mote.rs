//! mote's own wire protocol (the SDK's codec, no SDK client).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use mote_sdk::secure::{Opener, Record, Sealer, SessionKeys, Token, transcript};

use mote_sdk::wire::{self, AuthInit, Decoded, Frame, Hello, Ping, Publish, Subscribe};

use super::conn::{Client, Conn, PATIENCE, Step};
use super::durable::{Durable, DurableDriver, Started, SyncMode};
use super::proc::{free_port, start_mote_at};

/// The frame that subscribes to `topic` from its next message.
fn subscribe_frame(topic: &str) -> Vec<u8> {
    Frame::Subscribe(Subscribe {
        sub: 1,
        filter: topic,
        from: wire::Start::Latest,
        resume: Vec::new(),
    })
    .to_vec()
}

/// Whether the broker's answer to a subscribe was `Subscribed`, as an error if not.
fn subscribed(ok: bool) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::Error::other("subscribe was refused"))
    }
}

pub(crate) struct Mote {
    c: Conn,
}

impl Mote {
    /// Reads frames until one that `f` maps to `Some`, which is returned.
    fn expect<T>(&mut self, mut f: impl FnMut(&Frame<'_>) -> Option<T>) -> io::Result<T> {
        let mut got = None;
        self.c
            .read_with(|buf, _| match wire::decode(buf, usize::MAX) {
                Err(e) => Err(io::Error::other(e)),
                Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
                Ok(Decoded::Frame(frame, n)) => {
                    got = f(&frame);
                    Ok(if got.is_some() {
                        Step::Stop(n)
                    } else {
                        Step::Took(n)
                    })
                }
            })?;
        got.ok_or_else(|| io::Error::other("no answer"))
    }
}

impl Client for Mote {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Mote> {
        let mut m = Mote {
            c: Conn::connect(addr)?,
        };
        m.c.write(&Frame::Hello(Hello::new(name)).to_vec())?;
        // The first frame answers the hello.
        if m.expect(|f| Some(matches!(f, Frame::Welcome(_))))? {
            Ok(m)
        } else {
            Err(io::Error::other("the broker did not welcome us"))
        }
    }

    fn topic(run: &str) -> String {
        format!("bench/{run}")
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.c.write(&subscribe_frame(topic))?;
        subscribed(self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))?)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        Frame::Publish(Publish {
            req: 0,
            topic,
            key: None,
            payload,
        })
        .encode(out);
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.c
            .read_with(|buf, _| match wire::decode(buf, usize::MAX) {
                Err(e) => Err(io::Error::other(e)),
                Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
                // A `Lag` needs no handling: the sequence numbers in the payloads show the gap.
                Ok(Decoded::Frame(Frame::Message(m), n)) => Ok(if f(m.payload) {
                    Step::Took(n)
                } else {
                    Step::Stop(n)
                }),
                Ok(Decoded::Frame(_, n)) => Ok(Step::Took(n)),
            })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.c
    }
}

/// The token of the encrypted runs (`mote bench --token`), set once before they start.
pub(crate) static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// mote's protocol with a token: the handshake, then every batch sealed into one record
/// and every record opened, as the SDK does.
pub(crate) struct SecureMote {
    c: Conn,
    sealer: Sealer,
    opener: Opener,
    /// Opened plaintext of the current record, and how far it was read.
    plain: Vec<u8>,
    read: usize,
    record: Vec<u8>,
}

impl SecureMote {
    /// Reads plaintext frames until one that `f` maps to `Some`.
    fn expect<T>(&mut self, mut f: impl FnMut(&Frame<'_>) -> Option<T>) -> io::Result<T> {
        loop {
            while let Ok(Decoded::Frame(frame, n)) =
                wire::decode(&self.plain[self.read..], usize::MAX)
            {
                self.read += n;
                if let Some(t) = f(&frame) {
                    return Ok(t);
                }
            }
            self.next_record()?;
        }
    }

    /// Reads and opens the next record into `plain`.
    fn next_record(&mut self) -> io::Result<()> {
        let record = &mut self.record;
        self.c
            .read_with(|buf, _| match Opener::peek(buf, usize::MAX >> 1) {
                Ok(Record::Complete { total }) => {
                    record.clear();
                    record.extend_from_slice(&buf[..total]);
                    Ok(Step::Stop(total))
                }
                Ok(Record::Incomplete { .. }) => Ok(Step::Need),
                Err(e) => Err(io::Error::other(e)),
            })?;
        let plain = self
            .opener
            .open(&mut self.record)
            .map_err(io::Error::other)?;
        self.plain.clear();
        self.plain.extend_from_slice(plain);
        self.read = 0;
        Ok(())
    }

    /// Sends frames as records, in one write.
    fn seal_and_send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.record.clear();
        self.sealer.seal_frames(frames, &mut self.record);
        self.c.write(&self.record)
    }
}

impl Client for SecureMote {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<SecureMote> {
        let secret = TOKEN
            .get()
            .ok_or_else(|| io::Error::other("no token for the encrypted runs"))?;
        let token = Token::new(secret).map_err(io::Error::other)?;
        let mut c = Conn::connect(addr)?;
        let hello = Frame::Hello(Hello::new(name)).to_vec();
        c.write(&hello)?;
        let mut challenge = Vec::new();
        c.read_with(|buf, _| match wire::decode(buf, 4096) {
            Ok(Decoded::Frame(_, n)) => {
                challenge.extend_from_slice(&buf[..n]);
                Ok(Step::Stop(n))
            }
            Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
            Err(e) => Err(io::Error::other(e)),
        })?;
        let Ok(Decoded::Frame(Frame::AuthChallenge(ch), _)) = wire::decode(&challenge, 4096) else {
            return Err(io::Error::other("the broker did not ask for a token"));
        };
        let mut nonce = [0u8; 32];
        mote_sdk::secure::random(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let keys = SessionKeys::derive(
            &token,
            mote_sdk::DEFAULT_TOKEN_NAME,
            &nonce,
            &ch.nonce,
            &transcript(&hello, &challenge),
        );
        c.write(
            &Frame::AuthInit(AuthInit {
                name: mote_sdk::DEFAULT_TOKEN_NAME,
                nonce,
                proof: keys.client_proof(),
            })
            .to_vec(),
        )?;
        let mut proved = false;
        c.read_with(|buf, _| match wire::decode(buf, 4096) {
            Ok(Decoded::Frame(Frame::AuthProof(p), n)) => {
                proved = keys.check_broker_proof(&p.proof);
                Ok(Step::Stop(n))
            }
            Ok(Decoded::Frame(_, _)) => Err(io::Error::other("the broker refused the token")),
            Ok(Decoded::Incomplete { .. }) => Ok(Step::Need),
            Err(e) => Err(io::Error::other(e)),
        })?;
        if !proved {
            return Err(io::Error::other("the broker could not prove the token"));
        }
        let (sealer, opener) = keys.client();
        let mut m = SecureMote {
            c,
            sealer,
            opener,
            plain: Vec::new(),
            read: 0,
            record: Vec::with_capacity(256 * 1024),
        };
        if m.expect(|f| Some(matches!(f, Frame::Welcome(_))))? {
            Ok(m)
        } else {
            Err(io::Error::other("the broker did not welcome us"))
        }
    }

    fn topic(run: &str) -> String {
        Mote::topic(run)
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.seal_and_send(&subscribe_frame(topic))?;
        subscribed(self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))?)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        Mote::encode_publish(topic, payload, out);
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.seal_and_send(bytes)
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        loop {
            while let Ok(Decoded::Frame(frame, n)) =
                wire::decode(&self.plain[self.read..], usize::MAX)
            {
                self.read += n;
                if let Frame::Message(m) = frame {
                    if !f(m.payload) {
                        return Ok(());
                    }
                }
            }
            self.next_record()?;
        }
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.c
    }
}

impl Mote {
    /// Reads frames until the one answering request `req`: `Ok` for `Published`, an
    /// error for `Error`.
    fn confirmation(&mut self, req: u32) -> io::Result<()> {
        let r = self.expect(|f| match f {
            Frame::Published(p) if p.req == req => Some(Ok(())),
            Frame::Error(e) if e.req == req => Some(Err(e.message.to_string())),
            _ => None,
        })?;
        r.map_err(|m| io::Error::other(format!("the broker refused a publish: {m}")))
    }
}

impl Durable for Mote {
    fn ready(addr: SocketAddr) -> io::Result<()> {
        Mote::connect(addr, "bench-ready")?.ping()
    }

    fn all_written(s: &Started, _expected: u64) -> io::Result<bool> {
        let http = s.http.ok_or_else(|| io::Error::other("no HTTP address"))?;
        let stats: serde_json::Value =
            serde_json::from_str(&http_get(http, "/api/stats")?).map_err(io::Error::other)?;
        let store = &stats["store"];
        let n = |k: &str| store[k].as_u64().unwrap_or(0);
        // Every segment begins with a header, the rest is batches handed to the writer.
        let header = crate::store::format::SEGMENT_HEADER as u64;
        Ok(n("bytes_written") + n("segments") * header >= n("disk_bytes"))
    }

    fn publish_confirmed(&mut self, topic: &str, payload: &[u8], n: u64) -> io::Result<()> {
        let req = (n % u64::from(u32::MAX)) as u32 + 1;
        self.c.write(
            &Frame::Publish(Publish {
                req,
                topic,
                key: None,
                payload,
            })
            .to_vec(),
        )?;
        self.confirmation(req)
    }

    fn ping(&mut self) -> io::Result<()> {
        self.c.write(&Frame::Ping(Ping { nonce: 7 }).to_vec())?;
        self.expect(|f| matches!(f, Frame::Pong(_)).then_some(()))
    }

    fn subscribe_replay(&mut self, topic: &str) -> io::Result<()> {
        let frame = Frame::Subscribe(Subscribe {
            sub: 1,
            filter: topic,
            from: wire::Start::Earliest,
            resume: Vec::new(),
        });
        self.c.write(&frame.to_vec())?;
        subscribed(self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))?)
    }

    fn fsyncs(s: &Started) -> Option<u64> {
        let text = http_get(s.http?, "/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("mote_store_fsyncs_total "))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The persisted runs of the mote binary `exe`: `mote serve --data DIR --sync S --disk D`
/// with the in-memory runs' settings, its HTTP edge on a port of its own.
pub(crate) fn durable_driver(exe: &Path) -> DurableDriver {
    let exe = exe.to_path_buf();
    DurableDriver::new::<Mote>(Box::new(move |dir: &Path, sync: SyncMode, disk: u64| {
        let http = free_port().map_err(|e| e.to_string())?;
        let http: SocketAddr = ([127, 0, 0, 1], http).into();
        let data = dir.to_string_lossy().into_owned();
        let (sync_arg, disk_arg) = (sync.arg(), disk.to_string());
        let (broker, _) = start_mote_at(
            &exe,
            &http.to_string(),
            &["--data", &data, "--sync", &sync_arg, "--disk", &disk_arg],
        )?;
        Ok(Started {
            broker,
            dir: dir.to_path_buf(),
            http: Some(http),
            sync: sync_arg,
            matched: true,
            remove: true,
        })
    }))
}

/// A plain HTTP/1.1 GET of mote's HTTP edge; the body.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(body.to_string());
    }
    // Chunked: sizes in hex, each on a line of its own before its bytes.
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::other("a bad chunk size"))?;
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    Ok(out)
}
