//! The broker's steady-state path does not allocate per message: once a topic's ring is
//! full, each new message is copied once into the buffer of the message it evicts. Counted
//! by a global allocator on the broker's own thread while a publisher and a subscriber
//! stream messages through it over loopback.
#![allow(unsafe_code)] // The one `GlobalAlloc` impl, delegating every call to `System`.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mote::limits::Limits;
use mote_sdk::wire::{self, Decoded, Frame, Hello, Publish, Subscribe};

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&Frame::Hello(Hello::new("alloc")).to_vec())
        .unwrap();
    s
}

/// Reads until `n` messages (and the frames before them) arrived.
fn read_messages(s: &mut TcpStream, buf: &mut Vec<u8>, n: u64) {
    let mut seen = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while seen < n {
        let mut pos = 0;
        while let Ok(Decoded::Frame(f, used)) = wire::decode(&buf[pos..], usize::MAX) {
            pos += used;
            match f {
                Frame::Message(_) => seen += 1,
                Frame::Lag(l) => panic!("the subscriber lagged by {}", l.missed),
                _ => {}
            }
        }
        buf.drain(..pos);
        if seen < n {
            let got = s.read(&mut chunk).unwrap();
            assert!(got > 0, "the broker closed the connection");
            buf.extend_from_slice(&chunk[..got]);
        }
    }
}

#[test]
fn no_allocation_per_message_on_the_broker_thread() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let limits = Limits {
        ring_messages: 1000, // the ring wraps: eviction is on the measured path too
        ..Limits::default()
    };
    let broker = std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        mote::broker::serve(listener, limits, async move {
            let _ = stopped.recv().await;
        })
    });

    let mut sub = connect(addr);
    sub.write_all(
        &Frame::Subscribe(Subscribe {
            sub: 1,
            filter: "a",
            from: wire::Start::Latest,
            resume: Vec::new(),
        })
        .to_vec(),
    )
    .unwrap();
    let mut pub_ = connect(addr);
    let mut sub_buf = Vec::new();
    let mut frames = Vec::new();
    // Each round publishes a batch and waits until it is all delivered.
    let mut round = |n: u64| {
        frames.clear();
        for _ in 0..n {
            Frame::Publish(Publish {
                req: 0,
                topic: "a",
                key: None,
                payload: &[b'x'; 64],
            })
            .encode(&mut frames);
        }
        pub_.write_all(&frames).unwrap();
        read_messages(&mut sub, &mut sub_buf, n);
    };
    // Warm-up: connections, the topic, ring and queue capacities, buffers; the ring
    // (1000 messages) fills up.
    for _ in 0..20 {
        round(500);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let n = 200u64 * 500;
    for _ in 0..200 {
        round(500);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    drop(stop);
    let stats = broker.join().unwrap().unwrap();
    assert_eq!(stats.delivered, 220 * 500);
    eprintln!("{allocs} allocations on the broker thread for {n} messages published and delivered");
    // What remains is per read or write batch (a partial frame kept between reads), never
    // per message: fewer than one per 500-message round.
    assert!(
        allocs < 200,
        "{allocs} allocations for {n} messages: something allocates per message"
    );
}
