//! MQTT 3.1.1 at QoS 0, for mosquitto: `CONNECT`/`CONNACK`, `SUBSCRIBE`/`SUBACK`,
//! `PUBLISH`, and `PINGREQ` to keep a quiet subscriber's session alive.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mote::bench::{Client, Conn, Driver, Step};

use crate::peer::Peer;

/// The keepalive we announce; a quiet connection pings at a third of it.
const KEEPALIVE_SECS: u16 = 60;

const CONNACK: u8 = 0x20;
const PUBLISH: u8 = 0x30;
const SUBACK: u8 = 0x90;

/// mosquitto is an order of magnitude slower: its runs send this fraction of the messages.
const MOSQUITTO_DIVISOR: u64 = 10;

/// mosquitto, spoken to in MQTT 3.1.1.
pub(crate) const PEER: Peer = Peer {
    driver: Driver::new::<Mqtt>("mosquitto", MOSQUITTO_DIVISOR),
    program: "mosquitto",
    package: "mosquitto",
    args: |port| vec!["-p", port],
    version_flag: "-h",
    persisted_only: false,
};

pub(crate) struct Mqtt {
    c: Conn,
    last_sent: Instant,
}

/// Appends a remaining length: 7 bits a byte, low bits first.
fn push_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// The packet at the start of `buf`: its first byte, its body, and its whole length.
fn packet(buf: &[u8]) -> io::Result<Option<(u8, &[u8], usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = 2 + i;
            return Ok(buf
                .get(start..start + len)
                .map(|body| (first, body, start + len)));
        }
    }
    Err(io::Error::other("a bad MQTT remaining length"))
}

/// The payload of a PUBLISH packet's body (`flags` are the low bits of its first byte).
fn publish_payload(flags: u8, body: &[u8]) -> io::Result<&[u8]> {
    let topic_len = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or_else(|| io::Error::other("a short MQTT PUBLISH"))?;
    let id_len = if flags & 0x06 != 0 { 2 } else { 0 };
    body.get(2 + topic_len + id_len..)
        .ok_or_else(|| io::Error::other("a short MQTT PUBLISH"))
}

impl Mqtt {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.last_sent = Instant::now();
        self.c.write(bytes)
    }

    /// Reads packets until one of type `kind`; returns its body's first bytes.
    fn expect(&mut self, kind: u8) -> io::Result<[u8; 4]> {
        let mut got = [0u8; 4];
        self.c.read_with(|buf, _| {
            Ok(match packet(buf)? {
                None => Step::Need,
                Some((first, body, n)) if first & 0xf0 == kind => {
                    for (g, b) in got.iter_mut().zip(body) {
                        *g = *b;
                    }
                    Step::Stop(n)
                }
                Some((_, _, n)) => Step::Took(n),
            })
        })?;
        Ok(got)
    }
}

impl Client for Mqtt {
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Mqtt> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut body = Vec::new();
        push_string(&mut body, b"MQTT");
        body.push(4); // protocol level 3.1.1
        body.push(0x02); // clean session
        body.extend_from_slice(&KEEPALIVE_SECS.to_be_bytes());
        push_string(&mut body, id.as_bytes());
        let mut out = vec![0x10];
        push_length(&mut out, body.len());
        out.extend_from_slice(&body);
        let mut m = Mqtt {
            c: Conn::connect(addr)?,
            last_sent: Instant::now(),
        };
        m.send(&out)?;
        let ack = m.expect(CONNACK)?;
        if ack[1] != 0 {
            return Err(io::Error::other(format!(
                "mosquitto refused the connection (CONNACK code {})",
                ack[1]
            )));
        }
        Ok(m)
    }

    fn topic(run: &str) -> String {
        format!("bench/{run}")
    }

    fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        let mut body = vec![0, 1]; // packet id 1
        push_string(&mut body, topic.as_bytes());
        body.push(0); // QoS 0
        let mut out = vec![0x82];
        push_length(&mut out, body.len());
        out.extend_from_slice(&body);
        self.send(&out)?;
        let ack = self.expect(SUBACK)?;
        if ack[2] & 0x80 != 0 {
            return Err(io::Error::other("mosquitto refused the subscription"));
        }
        Ok(())
    }

    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        out.push(PUBLISH);
        push_length(out, 2 + topic.len() + payload.len());
        push_string(out, topic.as_bytes());
        out.extend_from_slice(payload);
    }

    fn read(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        self.c.read_with(|buf, _| {
            Ok(match packet(buf)? {
                None => Step::Need,
                Some((first, body, n)) if first & 0xf0 == PUBLISH => {
                    if f(publish_payload(first & 0x0f, body)?) {
                        Step::Took(n)
                    } else {
                        Step::Stop(n)
                    }
                }
                Some((_, _, n)) => Step::Took(n),
            })
        })
    }

    fn tick(&mut self) -> io::Result<()> {
        if self.last_sent.elapsed() > Duration::from_secs(u64::from(KEEPALIVE_SECS) / 3) {
            self.send(&[0xc0, 0x00])?;
        }
        Ok(())
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
    fn publish_round_trip_with_a_two_byte_length() {
        let payload = [b'm'; 200];
        let mut out = Vec::new();
        Mqtt::encode_publish("bench/x", &payload, &mut out);
        // 2 + 7 + 200 = 209 = 0x51 + 1 * 128.
        assert_eq!(out[..3], [PUBLISH, 0xd1, 0x01]);
        let (first, body, n) = packet(&out).unwrap().unwrap();
        assert_eq!((first, n), (PUBLISH, out.len()));
        assert_eq!(publish_payload(first & 0x0f, body).unwrap(), payload);
        assert!(packet(&out[..out.len() - 1]).unwrap().is_none());
        assert!(packet(&[PUBLISH, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
