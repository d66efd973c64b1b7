//! NATS's text protocol: `INFO`, `CONNECT`, `SUB`, `PUB`, `MSG`, `PING`/`PONG`.
//!
//! `PING` after a command is the confirmation: the server answers `PONG` once it has
//! handled everything before it. Pings from the server are answered with `PONG`.
//! Messages with headers (`HMSG`, JetStream's) are read too; a JetStream flow-control
//! request among them is answered, as JetStream's clients do.

use std::io;
use std::net::SocketAddr;

use mote::bench::{Client, Conn, Driver, Step};

use crate::peer::Peer;
use crate::text::{line, parse_len, push_decimal};

/// nats-server, plain core NATS (no JetStream).
pub(crate) const PEER: Peer = Peer {
    driver: Driver::new::<Nats>("nats", 1),
    program: "nats-server",
    package: "nats-server",
    args: |port| vec!["-a", "127.0.0.1", "-p", port],
    version_flag: "--version",
    persisted_only: false,
};

pub(crate) struct Nats {
    pub(crate) c: Conn,
}

/// What the server sent, other than a delivery.
#[derive(PartialEq, Eq)]
pub(crate) enum Control {
    Info,
    Pong,
    Other,
}

/// Parses one unit at the start of `buf`: a delivery's payload goes to `msg`; the rest is
/// returned (a server `PING` is answered through `replies`, `-ERR` is an error).
pub(crate) fn parse(
    buf: &[u8],
    replies: &mut Vec<u8>,
    mut msg: impl FnMut(&[u8]) -> bool,
) -> io::Result<Option<(Control, usize, bool)>> {
    let Some((l, used)) = line(buf)? else {
        return Ok(None);
    };
    if let Some(rest) = l.strip_prefix(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let len = parse_len(rest.rsplit(|&b| b == b' ').next().unwrap_or(b""))?;
        let total = used + len + 2;
        if buf.len() < total {
            return Ok(None);
        }
        let more = msg(&buf[used..used + len]);
        return Ok(Some((Control::Other, total, more)));
    }
    if let Some(rest) = l.strip_prefix(b"HMSG ") {
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
        let [.., head, all] = fields[..] else {
            return Err(io::Error::other("a bad HMSG line"));
        };
        let (head, all) = (parse_len(head)?, parse_len(all)?);
        let total = used + all + 2;
        if buf.len() < total || head > all {
            return Ok(None);
        }
        let headers = &buf[used..used + head];
        // A status (`NATS/1.0 100 ...`) is not a message: a flow-control request is
        // answered on its reply subject, an idle heartbeat needs nothing.
        if headers.starts_with(b"NATS/1.0 1") {
            if fields.len() == 5 && headers.windows(11).any(|w| w == b"FlowControl") {
                replies.extend_from_slice(b"PUB ");
                replies.extend_from_slice(fields[2]);
                replies.extend_from_slice(b" 0\r\n\r\n");
            }
            return Ok(Some((Control::Other, total, true)));
        }
        let more = msg(&buf[used + head..used + all]);
        return Ok(Some((Control::Other, total, more)));
    }
    let control = if l == b"PING" {
        replies.extend_from_slice(b"PONG\r\n");
        Control::Other
    } else if l == b"PONG" {
        Control::Pong
    } else if l.starts_with(b"INFO") {
        Control::Info
    } else if l.starts_with(b"-ERR") {
        return Err(io::Error::other(format!(
            "NATS said {}",
            String::from_utf8_lossy(l)
        )));
    } else {
        Control::Other
    };
    Ok(Some((control, used, true)))
}

impl Nats {
    /// Reads until the server sends `want`.
    pub(crate) fn expect(&mut self, want: Control) -> io::Result<()> {
        self.c.read_with(|buf, replies| {
            Ok(match parse(buf, replies, |_| true)? {
                None => Step::Need,
                Some((c, n, _)) if c == want => Step::Stop(n),
                Some((_, n, _)) => Step::Took(n),
            })
        })
    }
}

impl Nats {
    /// Connects as `name`; with `headers`, the server may send messages with headers
    /// (`HMSG`): JetStream sends its flow-control requests and heartbeats so, and
    /// without them strips the headers and delivers those as empty messages.
    pub(crate) fn connect_with(addr: SocketAddr, name: &str, headers: bool) -> io::Result<Nats> {
        let mut n = Nats {
            c: Conn::connect(addr)?,
        };
        n.expect(Control::Info)?;
        n.c.write(
            format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":{headers},\"name\":\"{name}\"}}\r\nPING\r\n"
            )
            .as_bytes(),
        )?;
        n.expect(Control::Pong)?;
        Ok(n)
    }
}

impl Client for Nats {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Nats> {
        Nats::connect_with(addr, name, false)
    }

    fn topic(run: &str) -> String {
        format!("bench.{run}")
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.c
            .write(format!("SUB {topic} 1\r\nPING\r\n").as_bytes())?;
        self.expect(Control::Pong)
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(topic.as_bytes());
        out.push(b' ');
        push_decimal(out, payload.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.c.read_with(|buf, replies| {
            Ok(match parse(buf, replies, &mut f)? {
                None => Step::Need,
                Some((_, n, true)) => Step::Took(n),
                Some((_, n, false)) => Step::Stop(n),
            })
        })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn deliveries_pings_and_errors() {
        let mut out = Vec::new();
        Nats::encode_publish("bench.x", b"hello", &mut out);
        assert_eq!(out, b"PUB bench.x 5\r\nhello\r\n");
        let msg = b"MSG bench.x 1 5\r\nhello\r\nPING\r\n";
        let (mut replies, mut got) = (Vec::new(), Vec::new());
        let (c, n, more) = parse(msg, &mut replies, |p| {
            got.extend_from_slice(p);
            false
        })
        .unwrap()
        .unwrap();
        assert!(c == Control::Other && n == msg.len() - b"PING\r\n".len() && !more);
        assert_eq!(got, b"hello");
        // A delivery cut short waits for more bytes.
        assert!(parse(&msg[..20], &mut replies, |_| true).unwrap().is_none());
        let (c, n, _) = parse(&msg[n..], &mut replies, |_| true).unwrap().unwrap();
        assert!(c == Control::Other && n == 6);
        assert_eq!(replies, b"PONG\r\n");
        assert!(
            parse(b"PONG\r\n", &mut replies, |_| true)
                .unwrap()
                .unwrap()
                .0
                == Control::Pong
        );
        let e = parse(b"-ERR 'Authorization Violation'\r\n", &mut replies, |_| {
            true
        });
        assert!(
            e.err()
                .unwrap()
                .to_string()
                .contains("Authorization Violation")
        );
    }
}
