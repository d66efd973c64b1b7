//! Redis pub/sub over RESP: `PUBLISH`, `SUBSCRIBE`, and `message` pushes (RESP2 arrays,
//! or RESP3 `>` pushes).
//!
//! Redis answers every `PUBLISH` with the number of subscribers reached; the latency runs'
//! publisher, fire and forget, turns those answers off (`CLIENT REPLY OFF`).

use std::io;
use std::net::SocketAddr;

use mote::bench::{Client, Conn, Driver, Step};

use crate::peer::Peer;
use crate::text::{line, parse_len, push_decimal};

/// redis-server with persistence off.
pub(crate) const PEER: Peer = Peer {
    driver: Driver::new::<Redis>("redis", 1),
    program: "redis-server",
    package: "redis-server",
    args: |port| {
        vec![
            "--port",
            port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
    },
    version_flag: "--version",
    persisted_only: false,
};

pub(crate) struct Redis {
    c: Conn,
}

/// One RESP token: a scalar, or the head of an aggregate with how many values follow.
enum Tok<'a> {
    Aggregate(usize),
    Bulk(&'a [u8]),
    Simple(&'a [u8]),
    Other,
}

/// Reads one token at `buf[pos..]`; returns it and where the next one starts.
fn tok(buf: &[u8], pos: usize) -> io::Result<Option<(Tok<'_>, usize)>> {
    let Some((l, used)) = line(&buf[pos..])? else {
        return Ok(None);
    };
    let next = pos + used;
    let Some((&kind, rest)) = l.split_first() else {
        return Err(io::Error::other("an empty line from Redis"));
    };
    let signed = |rest: &[u8]| -> io::Result<Option<usize>> {
        if rest == b"-1" {
            Ok(None)
        } else {
            parse_len(rest).map(Some)
        }
    };
    Ok(Some(match kind {
        b'$' | b'=' | b'!' => match signed(rest)? {
            None => (Tok::Other, next),
            Some(len) if buf.len() < next + len + 2 => return Ok(None),
            Some(len) if kind == b'!' => {
                return Err(io::Error::other(format!(
                    "Redis said {}",
                    String::from_utf8_lossy(&buf[next..next + len])
                )));
            }
            Some(len) => (Tok::Bulk(&buf[next..next + len]), next + len + 2),
        },
        b'*' | b'>' | b'~' => (Tok::Aggregate(signed(rest)?.unwrap_or(0)), next),
        b'%' | b'|' => (Tok::Aggregate(2 * signed(rest)?.unwrap_or(0)), next),
        b'+' => (Tok::Simple(rest), next),
        b'-' => {
            return Err(io::Error::other(format!(
                "Redis said {}",
                String::from_utf8_lossy(rest)
            )));
        }
        _ => (Tok::Other, next),
    }))
}

/// Skips `count` values at `buf[pos..]`; returns where the next one starts.
fn skip(buf: &[u8], mut pos: usize, mut count: usize) -> io::Result<Option<usize>> {
    while count > 0 {
        let Some((t, next)) = tok(buf, pos)? else {
            return Ok(None);
        };
        count -= 1;
        if let Tok::Aggregate(n) = t {
            count += n;
        }
        pos = next;
    }
    Ok(Some(pos))
}

/// What one top-level value was.
enum Value<'a> {
    Message(&'a [u8]),
    Subscribed,
    Pong,
    Other,
}

/// Parses one top-level value at the start of `buf`; returns it and its length.
fn value(buf: &[u8]) -> io::Result<Option<(Value<'_>, usize)>> {
    let Some((first, mut pos)) = tok(buf, 0)? else {
        return Ok(None);
    };
    let n = match first {
        Tok::Aggregate(n) => n,
        Tok::Simple(b"PONG") => return Ok(Some((Value::Pong, pos))),
        _ => return Ok(Some((Value::Other, pos))),
    };
    // The first three elements, when they are bulk strings: kind, channel, payload.
    let mut items: [&[u8]; 3] = [b""; 3];
    for item in items.iter_mut().take(n) {
        let Some((t, next)) = tok(buf, pos)? else {
            return Ok(None);
        };
        pos = next;
        match t {
            Tok::Bulk(b) => *item = b,
            Tok::Aggregate(m) => match skip(buf, pos, m)? {
                Some(p) => pos = p,
                None => return Ok(None),
            },
            _ => {}
        }
    }
    let Some(end) = skip(buf, pos, n.saturating_sub(3))? else {
        return Ok(None);
    };
    let v = match items[0] {
        b"message" if n == 3 => Value::Message(items[2]),
        b"subscribe" => Value::Subscribed,
        _ => Value::Other,
    };
    Ok(Some((v, end)))
}

/// Appends a command as a RESP array of bulk strings.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    /// Sends `args` and reads values until one that `want` accepts.
    fn call(&mut self, args: &[&[u8]], want: fn(&Value<'_>) -> bool) -> io::Result<()> {
        let mut out = Vec::new();
        command(&mut out, args);
        self.c.write(&out)?;
        self.c.read_with(|buf, _| {
            Ok(match value(buf)? {
                None => Step::Need,
                Some((v, n)) if want(&v) => Step::Stop(n),
                Some((_, n)) => Step::Took(n),
            })
        })
    }
}

impl Client for Redis {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Redis> {
        let mut r = Redis {
            c: Conn::connect(addr)?,
        };
        r.call(&[b"CLIENT", b"SETNAME", name.as_bytes()], |_| true)?;
        r.call(&[b"PING"], |v| matches!(v, Value::Pong))?;
        Ok(r)
    }

    fn connect_publisher(addr: SocketAddr) -> io::Result<Redis> {
        let mut r = Redis::connect(addr, "bench-latency-pub")?;
        // Answered by nothing, as every command after it.
        let mut out = Vec::new();
        command(&mut out, &[b"CLIENT", b"REPLY", b"OFF"]);
        r.c.write(&out)?;
        Ok(r)
    }

    fn topic(run: &str) -> String {
        format!("bench:{run}")
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.call(&[b"SUBSCRIBE", topic.as_bytes()], |v| {
            matches!(v, Value::Subscribed)
        })
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        command(out, &[b"PUBLISH", topic.as_bytes(), payload]);
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.c.read_with(|buf, _| {
            Ok(match value(buf)? {
                None => Step::Need,
                Some((Value::Message(p), n)) => {
                    if f(p) {
                        Step::Took(n)
                    } else {
                        Step::Stop(n)
                    }
                }
                Some((_, n)) => Step::Took(n),
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
    fn messages_pushes_and_errors() {
        let mut out = Vec::new();
        Redis::encode_publish("bench:x", b"hi", &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$7\r\nbench:x\r\n$2\r\nhi\r\n");
        // RESP2 array and RESP3 push: the same message.
        for kind in ["*", ">"] {
            let m = format!("{kind}3\r\n$7\r\nmessage\r\n$7\r\nbench:x\r\n$5\r\nhello\r\n");
            let Some((Value::Message(p), n)) = value(m.as_bytes()).unwrap() else {
                panic!("not a message: {m:?}");
            };
            assert_eq!((p, n), (&b"hello"[..], m.len()));
            assert!(value(&m.as_bytes()[..m.len() - 1]).unwrap().is_none());
        }
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$7\r\nbench:x\r\n:1\r\n";
        assert!(matches!(value(sub).unwrap(), Some((Value::Subscribed, 36))));
        assert!(matches!(
            value(b"+PONG\r\n").unwrap(),
            Some((Value::Pong, 7))
        ));
        // A HELLO 3 answer (a map holding an array) is skipped whole.
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n+OK\r\n";
        assert!(matches!(value(hello).unwrap(), Some((Value::Other, n)) if n == hello.len() - 5));
        let e = value(b"-ERR unknown command\r\n").err().unwrap();
        assert!(e.to_string().contains("unknown command"), "{e}");
    }
}
