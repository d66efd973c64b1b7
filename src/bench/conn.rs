//! A buffered blocking socket and the few operations every protocol's client needs: mote's
//! own clients here, the other brokers' in the `mote-bench` crate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a handshake, a confirmation or a latency round trip may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// What a parser made of the start of the buffered bytes.
pub enum Step {
    /// The bytes end inside a unit: read more.
    Need,
    /// A unit of this many bytes was handled; go on.
    Took(usize),
    /// A unit of this many bytes was handled; return to the caller.
    Stop(usize),
}

/// A connected socket with a read buffer that keeps a partial unit across reads and
/// timeouts, and a buffer of replies the parser wants sent (a NATS `PONG`).
pub struct Conn {
    /// The socket, for what the buffering does not cover (a clone to drain, a shutdown).
    pub s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    replies: Vec<u8>,
}

impl Conn {
    /// Connects with [`PATIENCE`] (10 s) as the connect, read and write timeout, Nagle off.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, PATIENCE)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(PATIENCE))?;
        s.set_write_timeout(Some(PATIENCE))?;
        Ok(Conn {
            s,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            replies: Vec::new(),
        })
    }

    /// Writes all of `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Sends the replies the parser queued, now rather than before the next read.
    pub fn flush_replies(&mut self) -> io::Result<()> {
        if !self.replies.is_empty() {
            self.s.write_all(&self.replies)?;
            self.replies.clear();
        }
        Ok(())
    }

    /// How long one read may wait before failing with [`is_timeout`].
    pub fn set_patience(&self, d: Duration) -> io::Result<()> {
        self.s.set_read_timeout(Some(d))
    }

    /// Hands the buffered bytes to `parse` (with a buffer for replies) until it says
    /// [`Step::Stop`], reading more whenever it says [`Step::Need`]. A read timeout is
    /// returned as an error; the bytes read so far stay buffered for the next call.
    pub fn read_with(
        &mut self,
        mut parse: impl FnMut(&[u8], &mut Vec<u8>) -> io::Result<Step>,
    ) -> io::Result<()> {
        loop {
            loop {
                match parse(&self.buf[self.start..self.end], &mut self.replies)? {
                    Step::Need => break,
                    Step::Took(n) => self.start += n,
                    Step::Stop(n) => {
                        self.start += n;
                        return Ok(());
                    }
                }
            }
            if !self.replies.is_empty() {
                self.s.write_all(&self.replies)?;
                self.replies.clear();
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.s.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ));
            }
            self.end += n;
        }
    }
}

/// Whether `e` is a read timeout rather than a failure.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A benchmark client of one broker's protocol.
pub trait Client: Sized + Send + 'static {
    /// Connects and completes the protocol's handshake; `name` tells the broker who we are
    /// where the protocol has a place for it.
    fn connect(addr: SocketAddr, name: &str) -> io::Result<Self>;

    /// The publisher of the latency runs: a connection that only publishes, fire and
    /// forget, and is never read while it does (a protocol that answers every publish
    /// turns that off here).
    fn connect_publisher(addr: SocketAddr) -> io::Result<Self> {
        Self::connect(addr, "bench-latency-pub")
    }

    /// The topic (subject, channel) of the run called `run`, in the protocol's syntax.
    fn topic(run: &str) -> String;

    /// Subscribes to `topic` and waits until the broker confirms it.
    fn subscribe(&mut self, topic: &str) -> io::Result<()>;

    /// Appends the bytes that publish `payload` to `topic` to `out`.
    fn encode_publish(topic: &str, payload: &[u8], out: &mut Vec<u8>);

    /// Reads deliveries and hands each payload to `f` until it returns `false`.
    /// Everything else the broker sends is handled or skipped.
    fn read(&mut self, f: impl FnMut(&[u8]) -> bool) -> io::Result<()>;

    /// Called between reads, at least every few hundred milliseconds while subscribed:
    /// keepalives.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The buffered socket underneath.
    fn conn(&mut self) -> &mut Conn;

    /// Sends bytes made by [`Client::encode_publish`] (an encrypting client seals them
    /// into one record first).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn().write(bytes)
    }

    /// The socket alone (idle connections keep nothing else): a second descriptor of it,
    /// the client with its buffers dropped.
    fn into_stream(mut self) -> io::Result<TcpStream> {
        self.conn().s.try_clone()
    }
}
