//! What the edge answers: a status, a few headers and a body, written as HTTP/1.1; and
//! the JSON errors, `{"error": "...", "code": "..."}` with the status that says what
//! happened.

use serde_json::{Value, json};

/// An HTTP error: status, machine code and message, sent as JSON.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra fields (the offset of a message that was stored but not delivered).
    pub(crate) extra: Option<Value>,
    pub(crate) retry_after: Option<u64>,
    /// For 405: the methods the route takes.
    pub(crate) allow: Option<&'static str>,
}

impl HttpError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
            allow: None,
        }
    }

    /// 405 for a route that takes only `allowed`.
    pub(crate) fn method_not_allowed(allowed: &'static str) -> HttpError {
        let mut e = HttpError::new(405, "method_not_allowed", format!("use {allowed} here"));
        e.extra = Some(json!({"allow": allowed}));
        e.allow = Some(allowed);
        e
    }
}

/// A body: built for this answer, or one of the files built into the binary.
#[derive(Debug)]
pub(crate) enum Body {
    Owned(Vec<u8>),
    Static(&'static [u8]),
}

impl Body {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Static(s) => s,
        }
    }
}

/// A complete answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Body,
}

impl Answer {
    pub(crate) fn new(status: u16, content_type: &str, body: Body) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
        }
    }

    pub(crate) fn json(status: u16, v: &Value) -> Answer {
        Answer::new(
            status,
            "application/json",
            Body::Owned(v.to_string().into_bytes()),
        )
        .with_header("Cache-Control", "no-store")
    }

    pub(crate) fn error(e: &HttpError) -> Answer {
        let mut v = json!({"error": e.message, "code": e.code});
        if let (Some(Value::Object(extra)), Value::Object(o)) = (&e.extra, &mut v) {
            o.extend(extra.clone());
        }
        let mut a = Answer::json(e.status, &v);
        if let Some(allow) = e.allow {
            a = a.with_header("Allow", allow);
        }
        if e.status == 401 {
            a = a.with_header("WWW-Authenticate", "Bearer realm=\"mote\"");
        }
        if let Some(s) = e.retry_after {
            a = a.with_header("Retry-After", &s.to_string());
        }
        a
    }

    pub(crate) fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Body::Static(b""),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The whole answer as bytes: status line, headers (with `Content-Length` and, when
    /// the connection will close, `Connection: close`), and the body unless `head_only`.
    pub(crate) fn to_bytes(&self, close: bool, head_only: bool) -> Vec<u8> {
        let body = self.body.bytes();
        let mut out = head(self.status, &self.headers, close);
        // The last line of the head: the length, then the blank line.
        out.truncate(out.len() - 2);
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        if !head_only {
            out.extend_from_slice(body);
        }
        out
    }
}

/// A response head with `headers` (no length: the caller adds it, or a chunked one).
pub(crate) fn head(status: u16, headers: &[(&'static str, String)], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The head of a chunked answer (streams, long documents); the connection closes after.
pub(crate) fn chunked_head(content_type: &str, extra: &[(&'static str, String)]) -> Vec<u8> {
    let mut headers = vec![("Content-Type", content_type.to_string())];
    headers.extend(extra.iter().cloned());
    headers.push(("Transfer-Encoding", "chunked".into()));
    head(200, &headers, true)
}

/// Appends `data` to `out` as one chunk of a chunked body (nothing for no data: an
/// empty chunk would end the body).
pub(crate) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn answers_carry_their_length_and_close_when_asked() {
        let a = Answer::json(200, &json!({"a": 1}));
        let bytes = String::from_utf8(a.to_bytes(false, false)).unwrap();
        assert_eq!(
            bytes,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
        let head_only = String::from_utf8(a.to_bytes(true, true)).unwrap();
        assert!(head_only.ends_with("Connection: close\r\nContent-Length: 7\r\n\r\n"));
        let e = Answer::error(&HttpError::method_not_allowed("GET"));
        assert!(e.headers.contains(&("Allow", "GET".into())));
        let mut out = Vec::new();
        chunk(&mut out, b"hello");
        chunk(&mut out, b"");
        assert_eq!(out, b"5\r\nhello\r\n");
    }
}
