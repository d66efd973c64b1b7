//! mote's side of the persisted runs: `mote serve --data` started on a fresh directory, and
//! what the runs ask of it beyond the in-memory runs' client (confirmed publishes, pings,
//! a replay from the oldest message, its store's progress and fsyncs over its HTTP edge).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use mote_sdk::wire::{self, Frame, Ping, Publish, Subscribe};

use super::super::conn::{Client, PATIENCE};
use super::super::mote::{Mote, subscribed};
use super::super::proc::{free_port, start_mote_at};
use super::{Durable, DurableDriver, Started, SyncMode};

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
pub(crate) fn driver(exe: &Path) -> DurableDriver {
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
