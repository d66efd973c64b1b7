//! The broker binary as an unlucky Pi owner and a hostile peer meet it: config reloads
//! cut short, floods of HTTP connections and bodies, a hung executor under systemd's
//! watchdog. Memory, threads and file descriptors are read from `/proc`.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::{PATIENCE, connect, read_head, request};
use common::served::Served;

const TOKEN: &str = "reload-test-secret-0123456789";

/// A config file with one token, `a`.
fn config_with_token(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("mote.toml");
    std::fs::write(
        &file,
        format!("[tokens.a]\ntoken = \"{TOKEN}\"\npublish = [\"#\"]\nsubscribe = [\"#\"]\n"),
    )
    .unwrap();
    file
}

/// Whether an anonymous publish over HTTP is refused (401), as it must be with tokens.
fn anonymous_http_refused(s: &Served) -> bool {
    request(s.http.unwrap(), "POST", "/t/x", &[], b"anonymous").status == 401
}

/// Whether an anonymous TCP client is refused.
fn anonymous_tcp_refused(s: &Served) -> bool {
    let opts = mote_sdk::Options::new(s.addr.to_string());
    mote_sdk::blocking::Client::connect(opts).is_err()
}

#[test]
fn a_reload_that_would_leave_no_tokens_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("mote-reload-{}", std::process::id()));
    let file = config_with_token(&dir);
    let mut s = Served::start(&["-c", file.to_str().unwrap()]);
    assert!(anonymous_http_refused(&s) && anonymous_tcp_refused(&s));

    // A power cut during an edit: the file is empty.
    std::fs::write(&file, "").unwrap();
    s.signal("HUP");
    let line = s.wait_log("keeping the current configuration");
    assert!(line.contains("is empty"), "{line}");
    assert!(
        anonymous_http_refused(&s),
        "an empty config opened the HTTP edge"
    );
    assert!(
        anonymous_tcp_refused(&s),
        "an empty config opened the TCP side"
    );

    // Every token commented out, the rest of the file fine.
    std::fs::write(
        &file,
        format!("max-payload = \"64K\"\n# [tokens.a]\n# token = \"{TOKEN}\"\n"),
    )
    .unwrap();
    s.signal("HUP");
    let line = s.wait_log("never turns authentication off");
    assert!(line.contains("keeping the 1 current token"), "{line}");
    assert!(anonymous_http_refused(&s) && anonymous_tcp_refused(&s));

    // A file that does not parse, or is gone.
    std::fs::write(&file, "[tokens.a\n").unwrap();
    s.signal("HUP");
    s.wait_log("config file");
    std::fs::remove_file(&file).unwrap();
    s.signal("HUP");
    s.wait_log("cannot read config file");
    assert!(anonymous_http_refused(&s) && anonymous_tcp_refused(&s));

    // The token still works throughout.
    let opts = mote_sdk::Options::new(s.addr.to_string())
        .with_token("a", TOKEN)
        .unwrap();
    let c = mote_sdk::blocking::Client::connect(opts).unwrap();
    c.publish_confirmed("still/in", "yes").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Opens `n` connections to `addr` and sends each `prefix`.
fn open_many(addr: std::net::SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect(addr).unwrap();
            if !prefix.is_empty() {
                s.write_all(prefix).unwrap();
            }
            s
        })
        .collect()
}

/// Reads the status of the answer on `s`, or `None` if it closed without one.
fn status_of(s: &TcpStream) -> Option<u16> {
    read_head(&mut BufReader::new(s)).ok().map(|(st, _)| st)
}

#[test]
fn http_floods_cost_bounded_memory_threads_and_descriptors() {
    let s = Served::start(&[]);
    let http = s.http.unwrap();
    let tcp =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    assert_eq!(request(http, "GET", "/healthz", &[], b"").status, 200);
    let (rss0, threads0, fds0) = (s.rss_kib(), s.threads(), s.fds());

    // 64 bodies declaring 10 MB, 1 KiB sent, then silence: refused by their length.
    let head = b"POST /t/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    let mut bodies = open_many(http, 64, head);
    for b in &mut bodies {
        b.write_all(&[b'b'; 1024]).unwrap();
    }
    for b in &bodies {
        assert_eq!(status_of(b), Some(413));
    }
    drop(bodies);

    // 1,000 idle connections and 130 that trickle half a head (slowloris).
    let idle = open_many(http, 1000, b"");
    let slow = open_many(http, 130, b"GET /healthz HTTP/1.1\r\nX-Slow: ");
    // A 50 MB header line.
    let mut big = connect(http).unwrap();
    big.write_all(b"GET /healthz HTTP/1.1\r\nX-Big: ").unwrap();
    let _ = big.write_all(&vec![b'a'; 50 << 20]);
    // The broker has taken the idle ones it has room for (256) and refused the rest
    // with a 503 each: wait until every refusal has arrived.
    let all: Vec<&TcpStream> = idle.iter().chain(&slow).collect();
    for c in &all {
        c.set_nonblocking(true).unwrap();
    }
    let mut answered = vec![false; all.len()];
    let started = Instant::now();
    while answered.iter().filter(|a| **a).count() < all.len() - 256 {
        for (c, done) in all.iter().zip(answered.iter_mut()).filter(|(_, d)| !**d) {
            let mut b = [0u8; 12];
            if let Ok(12) = c.peek(&mut b) {
                assert_eq!(&b, b"HTTP/1.1 503");
                *done = true;
            }
        }
        assert!(started.elapsed() < PATIENCE, "refusals missing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (rss, threads, fds) = (s.rss_kib(), s.threads(), s.fds());
    eprintln!("rss {rss0} -> {rss} KiB, threads {threads0} -> {threads}, fds {fds0} -> {fds}");
    assert!(rss < rss0 + 8 * 1024, "RSS grew from {rss0} to {rss} KiB");
    assert!(threads <= 4, "{threads} threads");
    // The connections it holds (256), refusals still lingering (64), a few more.
    assert!(fds <= fds0 + 256 + 64 + 16, "{fds} file descriptors");
    // The TCP side answers all along.
    tcp.publish_confirmed("still", "here").unwrap();

    // Once they go, the HTTP edge serves again, and memory went back.
    drop((idle, slow, big));
    let started = Instant::now();
    loop {
        let ok = common::http::try_request(http, "GET", "/healthz", &[], b"")
            .is_ok_and(|r| r.status == 200);
        if ok {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the HTTP edge does not serve again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_watchdog_is_told_from_the_executor() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("mote-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _s = Served::start_with(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got = Vec::new();
    let started = Instant::now();
    while got.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 3 {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(got.contains(&"READY=1".to_string()), "{got:?}");
    // Every half of WatchdogSec (200 ms): three within about 300 ms, not bursts.
    assert!(started.elapsed() < Duration::from_secs(3), "{got:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_partial_frame_held_open_one_byte_at_a_time_is_cut() {
    let s = Served::start(&["--partial-timeout", "500ms", "--http", "off"]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Hello, then the start of a 1 MiB frame, kept alive a byte at a time.
    c.write_all(&mote_sdk::wire::Frame::Hello(mote_sdk::wire::Hello::new("slow")).to_vec())
        .unwrap();
    c.write_all(&[0x80, 0x80, 0x40]).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        let _ = c.write_all(b"z");
        let mut buf = [0u8; 1024];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        assert!(started.elapsed() < PATIENCE, "never cut");
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("--partial-timeout"), "{text:?}");
}
