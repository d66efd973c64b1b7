//! HTTP/1.x requests from bytes, without IO: the head through `httparse` into a small
//! owned form with every limit checked before anything grows, chunked bodies through a
//! state machine, and the target's path and query percent-decoded.
//!
//! Each function says `Ok(None)` (or consumes less) when it needs more bytes and `Err`
//! with the HTTP answer when the request is broken or over a limit.

use super::answer::HttpError;

/// Headers a request may have.
const MAX_HEADERS: usize = 64;
/// Bytes of chunk extensions on one chunk-size line, and of trailers in all.
const MAX_CHUNK_EXT: usize = 1024;
const MAX_TRAILERS: usize = 8 * 1024;

/// The limits of a request head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// Request line and headers together, in bytes (431 past it).
    pub(crate) max_head: usize,
    /// The request target, in bytes (414 past it).
    pub(crate) max_url: usize,
}

/// The request methods the edge knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    /// Any other: answered 405 where a route exists.
    Other,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) target: String,
    /// The headers, names as sent.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Framing,
    /// The client asked to close after this request (or speaks HTTP/1.0 without
    /// keep-alive).
    pub(crate) close: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before the body.
    pub(crate) expect_continue: bool,
}

impl Head {
    /// The value of header `name` (case-insensitive), the last one if repeated.
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(400, "bad_request", message)
}

/// Parses the head at the start of `buf`: `Ok(Some((head, length)))` when complete,
/// `Ok(None)` when more bytes are needed (and may come within the limits).
pub(crate) fn head(buf: &[u8], limits: HeadLimits) -> Result<Option<(Head, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // Which limit a partial head is over: the request line, or the whole head.
            let line_done = buf.contains(&b'\n');
            if !line_done && buf.len() > limits.max_url + 32 {
                return Err(uri_too_long(limits));
            }
            if buf.len() >= limits.max_head {
                return Err(head_too_large(limits));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                "header_too_large",
                format!("more than {MAX_HEADERS} header fields"),
            ));
        }
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    if len > limits.max_head {
        return Err(head_too_large(limits));
    }
    let target = req.path.unwrap_or("/");
    if target.len() > limits.max_url {
        return Err(uri_too_long(limits));
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let http11 = req.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = !http11;
    let mut expect_continue = false;
    let mut owned = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let v = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let codings = String::from_utf8_lossy(v).to_ascii_lowercase();
            let last = codings.rsplit(',').next().map(str::trim).unwrap_or("");
            if last != "chunked" || codings.split(',').filter(|c| c.trim() == "chunked").count() > 1
            {
                return Err(HttpError::new(
                    501,
                    "not_implemented",
                    "only the chunked transfer coding is supported",
                ));
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            for token in v.split(',').map(str::trim) {
                match token {
                    "close" => close = true,
                    "keep-alive" if !http11 => close = false,
                    _ => {}
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if v.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = http11;
            } else {
                return Err(HttpError::new(
                    417,
                    "expectation_failed",
                    "the only expectation understood is 100-continue",
                ));
            }
        }
        owned.push((h.name.to_string(), v.to_vec()));
    }
    if chunked && length.is_some() {
        // A request smuggling vector when proxies disagree: refuse it outright.
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    let body = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some((
        Head {
            method,
            target: target.to_string(),
            headers: owned,
            body,
            close,
            expect_continue: expect_continue && body != Framing::None,
        },
        len,
    )))
}

fn uri_too_long(l: HeadLimits) -> HttpError {
    HttpError::new(
        414,
        "uri_too_long",
        format!("the request target is over {} bytes", l.max_url),
    )
}

fn head_too_large(l: HeadLimits) -> HttpError {
    HttpError::new(
        431,
        "header_too_large",
        format!("the request line and headers are over {} bytes", l.max_head),
    )
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size: its value so far and how many digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size, up to the line's end: extension bytes so far, the size.
    Ext {
        len: usize,
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Trailer lines: bytes of this line so far.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
    Done,
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// The decoded body would be over the limit.
    TooLarge,
    /// Not chunked encoding.
    Bad(&'static str),
}

/// Decodes a chunked body as it arrives.
#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    state: State,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            trailers: 0,
        }
    }
}

impl Chunked {
    /// Whether the last chunk and the trailers have been read.
    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input`, appending the body to `out` (which must stay
    /// within `limit` bytes); returns how many input bytes it used. Stops at the end of
    /// the body: what follows belongs to the next request.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Size { value, digits } => {
                    let d = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    match (d, b) {
                        (Some(d), _) => {
                            if digits >= 15 {
                                return Err(ChunkError::Bad("chunk size too long"));
                            }
                            self.state = State::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                            };
                        }
                        (None, _) if digits == 0 => {
                            return Err(ChunkError::Bad("chunk size is not hexadecimal"));
                        }
                        (None, b';' | b' ' | b'\t') => self.state = State::Ext { len: 0, value },
                        (None, b'\r') => self.state = State::SizeLf { value },
                        (None, _) => return Err(ChunkError::Bad("bad chunk size line")),
                    }
                }
                State::Ext { len, value } => match b {
                    b'\r' => self.state = State::SizeLf { value },
                    b'\n' => return Err(ChunkError::Bad("chunk size line without CR")),
                    _ if len >= MAX_CHUNK_EXT => {
                        return Err(ChunkError::Bad("chunk extensions too long"));
                    }
                    _ => {
                        self.state = State::Ext {
                            len: len + 1,
                            value,
                        }
                    }
                },
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ChunkError::Bad("chunk size line without LF"));
                    }
                    if value == 0 {
                        self.state = State::Trailer { line: 0 };
                    } else {
                        if out.len() as u64 + value > limit as u64 {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = State::Data { left: value };
                    }
                }
                State::Data { left } => {
                    let take = (left.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Bad("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Bad("chunk data without CRLF"));
                    }
                    self.state = State::Size {
                        value: 0,
                        digits: 0,
                    };
                }
                State::Trailer { line } => match b {
                    b'\r' => self.state = State::TrailerLf { line },
                    _ => {
                        self.trailers += 1;
                        if self.trailers > MAX_TRAILERS {
                            return Err(ChunkError::Bad("trailers too long"));
                        }
                        self.state = State::Trailer { line: line + 1 };
                    }
                },
                State::TrailerLf { line } => {
                    if b != b'\n' {
                        return Err(ChunkError::Bad("trailer line without LF"));
                    }
                    self.state = if line == 0 {
                        State::Done
                    } else {
                        State::Trailer { line: 0 }
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Percent-decodes `s`; `+` is a space only in queries.
pub(crate) fn decode(s: &str, plus_is_space: bool) -> Result<String, HttpError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("malformed %-escape in the URL"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("the URL is not UTF-8"))
}

/// A request's query parameters.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: &str) -> Result<Query, HttpError> {
        let mut v = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            v.push((decode(k, true)?, decode(val, true)?));
        }
        Ok(Query(v))
    }

    /// The last value of `k`.
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    const L: HeadLimits = HeadLimits {
        max_head: 1024,
        max_url: 256,
    };

    fn parsed(raw: &str) -> Head {
        let (h, n) = head(raw.as_bytes(), L).unwrap().unwrap();
        assert_eq!(n, raw.len());
        h
    }

    #[test]
    fn a_head_with_length_keep_alive_and_expect() {
        let h = parsed(
            "POST /t/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/t/a%2Fb?x=1");
        assert_eq!(h.body, Framing::Length(5));
        assert!(!h.close && h.expect_continue);
        assert_eq!(h.header("host"), Some(&b"h"[..]));
        let h = parsed("GET / HTTP/1.0\r\n\r\n");
        assert!(h.close, "HTTP/1.0 closes unless asked otherwise");
        let h = parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!h.close);
        let h = parsed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(h.close);
        let h = parsed("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, Framing::Chunked);
    }

    #[test]
    fn partial_heads_wait_until_a_limit() {
        assert!(head(b"GET / HTTP/1.1\r\nHost:", L).unwrap().is_none());
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(400));
        assert_eq!(head(long_line.as_bytes(), L).unwrap_err().status, 414);
        let whole = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(300));
        assert_eq!(head(whole.as_bytes(), L).unwrap_err().status, 414);
        let many = format!("GET / HTTP/1.1\r\nX-A: {}\r\n", "b".repeat(2000));
        assert_eq!(head(many.as_bytes(), L).unwrap_err().status, 431);
        let fields: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        let big = HeadLimits {
            max_head: 1 << 20,
            max_url: 256,
        };
        assert_eq!(head(raw.as_bytes(), big).unwrap_err().status, 431);
    }

    #[test]
    fn broken_and_ambiguous_bodies_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            let e = head(raw.as_bytes(), L).unwrap_err();
            assert_eq!(e.status, 400, "{raw:?}: {e:?}");
        }
        let e = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", L).unwrap_err();
        assert_eq!(e.status, 501);
        let e = head(b"POST / HTTP/1.1\r\nExpect: magic\r\n\r\n", L).unwrap_err();
        assert_eq!(e.status, 417);
    }

    fn dechunk(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        // One byte at a time: every state must carry over between reads.
        let mut used = 0;
        for i in 0..input.len() {
            if c.done() {
                break;
            }
            used += c.feed(&input[i..=i], &mut out, limit)?;
        }
        Ok((out, used, c.done()))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, used, done) = dechunk(body, 100).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(&body[used..], b"NEXT", "stops at the end of the body");
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let n = c.feed(body, &mut out, 100).unwrap();
        assert_eq!(
            (out.as_slice(), &body[n..]),
            (&b"hello world"[..], &b"NEXT"[..])
        );
        assert!(!dechunk(b"5\r\nhel", 100).unwrap().2, "unfinished");
    }

    #[test]
    fn chunked_limits_and_errors() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 8).unwrap_err(),
            ChunkError::TooLarge
        );
        assert_eq!(
            dechunk(b"ffffffffffffffff0\r\n", 8).unwrap_err(),
            ChunkError::Bad("chunk size too long")
        );
        assert!(matches!(dechunk(b"zz\r\n", 8), Err(ChunkError::Bad(_))));
        assert!(matches!(
            dechunk(b"2\r\nabc\r\n", 8),
            Err(ChunkError::Bad(_))
        ));
        let ext = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(2000));
        assert!(matches!(
            dechunk(ext.as_bytes(), 8),
            Err(ChunkError::Bad(_))
        ));
        let trailers = format!("0\r\n{}", "t".repeat(10_000));
        assert!(matches!(
            dechunk(trailers.as_bytes(), 8),
            Err(ChunkError::Bad(_))
        ));
    }

    #[test]
    fn queries_and_escapes() {
        let q = Query::parse("a=1&b=x+y&a=2&c").unwrap();
        assert_eq!(q.get("a"), Some("2"));
        assert_eq!(q.get("b"), Some("x y"));
        assert_eq!(q.get("c"), Some(""));
        assert_eq!(decode("a%2Fb+c", false).unwrap(), "a/b+c");
        assert_eq!(decode("%zz", false).unwrap_err().status, 400);
        assert_eq!(decode("%ff", false).unwrap_err().status, 400);
    }
}
