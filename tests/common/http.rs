//! The HTTP edge under test and a small blocking HTTP/1.1 client that can also read a
//! chunked stream one line at a time, send half a request, or never read. Every read has
//! a timeout.
#![allow(dead_code)] // Each test crate uses a part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use std::time::Duration;

use super::{Broker, eventually};
use mote::auth::{Auth, Rules};
use mote::http::HttpConfig;
use mote::limits::Limits;
use mote_sdk::secure::Token;
use serde_json::Value;

/// How long any single read may block before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The broker under test.

/// A broker with its HTTP edge; both stop when it is dropped.
pub struct Edge {
    pub http: SocketAddr,
    pub broker: Broker,
}

/// How to set one up.
pub struct Setup {
    pub limits: Limits,
    pub auth: fn() -> Auth,
    pub tune: Box<dyn FnOnce(&mut HttpConfig) + Send>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            limits: Limits::default(),
            auth: Auth::none,
            tune: Box::new(|_| {}),
        }
    }
}

impl Edge {
    pub fn start() -> Edge {
        Edge::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Edge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = listener.local_addr().unwrap();
        let Setup { limits, auth, tune } = setup;
        let broker = Broker::with(move || {
            let mut h = HttpConfig::new(listener);
            tune(&mut h);
            mote::broker::Config {
                limits,
                auth: auth(),
                http: Some(h),
                ..Default::default()
            }
        });
        let edge = Edge { http, broker };
        // The listener is bound already: this waits (bounded by the read timeout) until
        // the broker's thread has started the edge and answers.
        assert_eq!(edge.get("/healthz").status, 200);
        edge
    }

    pub fn get(&self, target: &str) -> Reply {
        request(self.http, "GET", target, &[], b"")
    }

    pub fn post(&self, target: &str, body: &[u8]) -> Reply {
        request(self.http, "POST", target, &[], body)
    }

    pub fn req(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.http, method, target, headers, body)
    }

    pub fn stats(&self) -> Value {
        self.stats_as(&[])
    }

    pub fn stats_as(&self, headers: &[(&str, &str)]) -> Value {
        let r = self.req("GET", "/api/stats", headers, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn sdk(&self) -> mote_sdk::blocking::Client {
        mote_sdk::blocking::Client::connect(self.broker.options()).unwrap()
    }
}

/// Tokens for the authentication tests: `default` (every right), `kitchen` (publishes
/// under `home/kitchen/#`, subscribes to `home/#`) and `admin` (everything).
pub const DEFAULT_SECRET: &str = "0123456789abcdef0123";
pub const KITCHEN_SECRET: &str = "kitchen-secret-0123456789";
pub const ADMIN_SECRET: &str = "admin-secret-0123456789ab";

pub fn tokens() -> Auth {
    let mut a = Auth::single(Token::new(DEFAULT_SECRET).unwrap());
    a.insert(
        "kitchen",
        Token::new(KITCHEN_SECRET).unwrap(),
        Rules::new(
            "kitchen",
            &["home/{name}/#".to_string()],
            &["home/#".to_string()],
        )
        .unwrap(),
    )
    .unwrap();
    a.insert("admin", Token::new(ADMIN_SECRET).unwrap(), Rules::all())
        .unwrap();
    a
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 client.

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; it must say it is JSON.
    pub fn json(&self) -> Value {
        assert_eq!(
            self.header("Content-Type"),
            Some("application/json"),
            "status {}: {}",
            self.status,
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// An error answer: `status`, a JSON body with `error` and this `code`.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "an error message: {v}"
        );
        v
    }
}

pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.set_write_timeout(Some(PATIENCE))?;
    Ok(s)
}

pub fn send_head(
    s: &mut TcpStream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: mote.test\r\nConnection: close\r\n");
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

/// Reads a response head: status and headers.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, headers))
}

/// Reads one chunk of a chunked body: `None` after the last.
pub fn read_chunk(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let size = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut data = vec![0; size];
    r.read_exact(&mut data)?;
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf)?;
    assert_eq!(&crlf, b"\r\n");
    Ok((size > 0).then_some(data))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = connect(addr)?;
    send_head(&mut s, method, target, headers, body)?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status == 204 {
        return Ok(reply);
    }
    if reply
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        while let Some(c) = read_chunk(&mut r)? {
            reply.body.extend_from_slice(&c);
        }
    } else if let Some(n) = reply.header("Content-Length") {
        let mut b = vec![0; n.parse().unwrap()];
        r.read_exact(&mut b)?;
        reply.body = b;
    } else {
        r.read_to_end(&mut reply.body)?;
    }
    Ok(reply)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// An open chunked stream, read one line at a time.
#[derive(Debug)]
pub struct Stream {
    pub r: BufReader<TcpStream>,
    pub headers: Vec<(String, String)>,
    pub pending: Vec<u8>,
    pub ended: bool,
}

impl Stream {
    /// Opens `target`: `Err` with the complete answer if it is not a 200 stream.
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Result<Stream, Reply> {
        let mut s = connect(addr).unwrap();
        send_head(&mut s, "GET", target, headers, b"").unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r).unwrap();
        if status != 200 {
            let mut reply = Reply {
                status,
                headers,
                body: Vec::new(),
            };
            let n: usize = reply.header("Content-Length").unwrap().parse().unwrap();
            reply.body = vec![0; n];
            r.read_exact(&mut reply.body).unwrap();
            return Err(reply);
        }
        let st = Stream {
            r,
            headers,
            pending: Vec::new(),
            ended: false,
        };
        assert_eq!(st.header("Transfer-Encoding"), Some("chunked"));
        Ok(st)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next line (without its `\n`); `None` once the stream ended.
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.ended {
                assert!(self.pending.is_empty(), "a stream ends with a full line");
                return None;
            }
            match read_chunk(&mut self.r).unwrap() {
                Some(c) => self.pending.extend_from_slice(&c),
                None => self.ended = true,
            }
        }
    }

    /// The next NDJSON object.
    pub fn json(&mut self) -> Option<Value> {
        self.line()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
    }

    /// The next NDJSON object that is not a keepalive.
    pub fn event(&mut self) -> Option<Value> {
        loop {
            let v = self.json()?;
            if v["event"] != "keepalive" {
                return Some(v);
            }
        }
    }

    /// The next server-sent event: its name and data, or `("comment", text)`.
    pub fn sse(&mut self) -> Option<(String, String)> {
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            let l = self.line()?;
            if l.is_empty() {
                if !event.is_empty() || !data.is_empty() {
                    return Some((event, data));
                }
            } else if let Some(c) = l.strip_prefix(':') {
                // A comment stands alone, followed by its blank line.
                assert_eq!(self.line().as_deref(), Some(""));
                return Some(("comment".into(), c.trim().to_string()));
            } else if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                data = d.to_string();
            } else {
                panic!("not an SSE line: {l:?}");
            }
        }
    }
}

/// Polls `f` until it gives `Some`, failing after `PATIENCE`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    eventually(PATIENCE, what, || {
        out = f();
        out.is_some()
    });
    out.unwrap()
}

/// The stats' connections of kind `http`.
pub fn http_conns(stats: &Value) -> Vec<Value> {
    stats["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "http")
        .cloned()
        .collect()
}
