//! mote's own wire protocol (the SDK's codec, no SDK client).

use std::io;
use std::net::{SocketAddr, TcpStream};

use mote_sdk::wire::{self, Decoded, Frame, Hello, Publish, Subscribe};

use super::conn::{Client, Conn, Step};

pub(super) struct Mote {
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
        let f = Frame::Subscribe(Subscribe {
            sub: 1,
            filter: topic,
            from: wire::Start::Latest,
            resume: Vec::new(),
        });
        self.c.write(&f.to_vec())?;
        if self.expect(|f| Some(matches!(f, Frame::Subscribed(_))))? {
            Ok(())
        } else {
            Err(io::Error::other("subscribe was refused"))
        }
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

    fn into_stream(self) -> TcpStream {
        self.c.s
    }
}
