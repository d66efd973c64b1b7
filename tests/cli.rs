//! The `mote` binary as a user runs it: `serve`, `pub`, `sub`, `ping`, their help and
//! their errors. The README's examples are here.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::served::{MOTE, Served};

fn mote(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(MOTE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Lines a child writes to one of its pipes, on a channel (closed at end of file).
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A client command running as a child: its stdin is ours to write, its stdout and
/// stderr lines come on channels.
struct Running {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(MOTE)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running {
            stdin: child.stdin.take(),
            out: lines_of(child.stdout.take().unwrap()),
            err: lines_of(child.stderr.take().unwrap()),
            child,
        }
    }

    fn write(&mut self, s: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The next line of stdout, within 10 s.
    fn out_line(&self) -> String {
        self.out
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no line on stdout: {e}"))
    }

    /// The next line of stderr, within 10 s.
    fn err_line(&self) -> String {
        self.err
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no line on stderr: {e}"))
    }

    /// Waits for the exit, failing after `limit`.
    fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything left on stdout and stderr, once the child has exited.
    fn rest(&self) -> (Vec<String>, Vec<String>) {
        let drain = |rx: &mpsc::Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
                v.push(l);
            }
            v
        };
        (drain(&self.out), drain(&self.err))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn readme_publish_and_subscribe() {
    let s = Served::start(&[]);
    let p = s.port();
    // mote sub -t 'home/+/temp' -v: it only sees what is published after it subscribed,
    // so publish until it has printed two messages and exited (-C 2).
    let mut sub = Command::new(MOTE)
        .args([
            "sub",
            "-p",
            &p,
            "-t",
            "home/+/temp",
            "-v",
            "-C",
            "2",
            "-W",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut offsets = Vec::new();
    while sub.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the subscriber never got two messages"
        );
        let o = mote(
            &[
                "pub",
                "-p",
                &p,
                "-t",
                "home/kitchen/temp",
                "-m",
                "21.5",
                "--confirm",
            ],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        offsets.push(stdout(&o).trim().parse::<u64>().unwrap());
        let o = mote(
            &["pub", "-p", &p, "-t", "home/kitchen/temp", "-m", "21.5"],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "", "fire and forget prints nothing");
    }
    assert_eq!(
        offsets,
        (0..offsets.len() as u64).map(|i| 2 * i).collect::<Vec<_>>()
    );
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "home/kitchen/temp 21.5\nhome/kitchen/temp 21.5\n"
    );
}

#[test]
fn readme_lines_and_replay() {
    let s = Served::start(&[]);
    let p = s.port();
    let lines: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let o = mote(&["pub", "-p", &p, "-t", "lines", "-l"], lines.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "lines", "--from", "earliest", "-C", "1000",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), lines);
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "lines", "--from", "last:2", "-C", "2", "--json",
        ],
        b"",
    );
    let json: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[0]["payload"], "999");
    assert_eq!(json[1]["offset"], 999);
    assert_eq!(json[1]["topic"], "lines");
    assert!(json[1]["time"].as_u64().unwrap() > 1_600_000_000_000);
    // --confirm with -l prints every offset, in order.
    let o = mote(
        &["pub", "-p", &p, "-t", "lines", "-l", "--confirm"],
        b"a\nb\nc\n",
    );
    assert_eq!(stdout(&o), "1000\n1001\n1002\n");
}

#[test]
fn binary_payloads_and_files() {
    let s = Served::start(&[]);
    let p = s.port();
    let dir = std::env::temp_dir().join(format!("mote-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("blob");
    std::fs::write(&file, [0u8, 159, 146, 150]).unwrap();
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "-t",
            "bin",
            "-f",
            file.to_str().unwrap(),
            "--confirm",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    let o = mote(
        &["pub", "-p", &p, "-t", "bin", "-s", "-k", "id-7"],
        b"all\nof it",
    );
    assert!(o.status.success());
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "bin", "--from", "earliest", "-C", "2", "--json",
        ],
        b"",
    );
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["encoding"], "base64");
    assert_eq!(lines[0]["payload"], "AJ+Slg==");
    assert_eq!(lines[1]["payload"], "all\nof it");
    assert_eq!(lines[1]["key"], "id-7");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_errors_are_one_line_and_exit_non_zero() {
    let s = Served::start(&["--max-payload", "16"]);
    let p = s.port();
    let o = mote(&["pub", "-p", &p, "-t", "a/+", "-m", "x"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("a publish topic cannot contain '+'"),
        "{}",
        stderr(&o)
    );
    let o = mote(
        &["pub", "-p", &p, "-t", "a", "-m", "seventeen bytes!!"],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "mote pub: payload is 17 bytes, the broker's limit is 16"
    );
    let o = mote(&["pub", "-p", &p, "-t", "a"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("one of -m, -f, -l, -s or -n"));
    drop(s);
    let o = mote(&["pub", "-p", &p, "-t", "a", "-m", "x"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("mote pub: cannot connect to 127.0.0.1:"),
        "{}",
        stderr(&o)
    );
    let o = mote(&["ping", "-p", &p, "-q"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "");
    let o = mote(&["sub", "-t", "x", "--from", "soon"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value \"soon\" for --from"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_help_shows_defaults_and_bad_values_exit_non_zero() {
    let o = mote(&["serve", "--help"], b"");
    assert!(o.status.success());
    let help = stdout(&o);
    for needle in [
        "--tcp ADDR",
        "[default: 127.0.0.1:7270, env: MOTE_TCP]",
        "--max-payload SIZE",
        "[default: 1M, env: MOTE_MAX_PAYLOAD]",
        "--keepalive DURATION",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in\n{help}");
    }
    let o = mote(&["serve", "--tcp", "nowhere"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value \"nowhere\" for --tcp"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(MOTE)
        .args(["serve"])
        .env("MOTE_MEMORY", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value \"lots\" for MOTE_MEMORY (--memory)"),
        "{}",
        stderr(&o)
    );
    let o = mote(&["serve", "--bogus"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown option --bogus"));
    // `-h` is the host for pub/sub/ping, as with mosquitto; `--help` is help.
    let o = mote(&["pub", "--help"], b"");
    assert!(stdout(&o).contains("-h, --host HOST"), "{}", stdout(&o));
    let o = mote(&["--version"], b"");
    assert_eq!(
        stdout(&o).trim(),
        concat!("mote ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_file_and_environment() {
    let dir = std::env::temp_dir().join(format!("mote-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mote.toml");
    std::fs::write(&file, "# a comment\nmax-payload = \"8\"\n").unwrap();
    let s = Served::start(&["--config", file.to_str().unwrap()]);
    let o = mote(&["pub", "-p", &s.port(), "-t", "a", "-m", "123456789"], b"");
    assert!(stderr(&o).contains("limit is 8"), "{}", stderr(&o));
    std::fs::write(&file, "max-payloads = 8\n").unwrap();
    let o = mote(&["serve", "--config", file.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown key \"max-payloads\""),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ping_answers_and_sigterm_shuts_down_gracefully() {
    let mut s = Served::start(&[]);
    let o = mote(&["ping", "-p", &s.port()], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(": ok ("), "{}", stdout(&o));
    let pid = rustix::process::Pid::from_raw(s.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    s.wait_log("shutting down");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the broker did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn no_token_means_loopback_only_unless_insecure() {
    let o = mote(&["serve", "--tcp", "0.0.0.0:0", "--http", "off"], b"");
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{e}"
    );
    assert!(
        e.contains("--insecure") && e.contains("mote token new"),
        "{e}"
    );
    let mut s = Served::start_on("0.0.0.0:0", &["--insecure", "--http", "off"]);
    s.wait_log("without a token (--insecure)");
    let token = stdout(&mote(&["token", "new"], b"")).trim().to_string();
    let mut s2 = Served::start_on("0.0.0.0:0", &["--token", &token, "--http", "127.0.0.1:0"]);
    s2.wait_log("authenticated and encrypted");
    drop((s, s2));
}

#[test]
fn tokens_from_the_cli_and_one_line_failures() {
    let t1 = stdout(&mote(&["token", "new"], b"")).trim().to_string();
    let t2 = stdout(&mote(&["token", "new"], b"")).trim().to_string();
    assert_eq!(t1.len(), 43, "256 bits in base64url: {t1}");
    assert_ne!(t1, t2);
    let s = Served::start(&["--token", &t1]);
    let p = s.port();
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "--token",
            &t1,
            "-t",
            "a",
            "-m",
            "x",
            "--confirm",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    let url = format!("mote://default:{t1}@127.0.0.1:{p}");
    let o = mote(
        &[
            "sub", "-L", &url, "-t", "a", "--from", "earliest", "-C", "1",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "x\n", "{}", stderr(&o));
    for args in [
        vec!["pub", "-p", &p, "--token", &t2, "-t", "a", "-m", "x"],
        vec!["pub", "-p", &p, "-t", "a", "-m", "x"],
    ] {
        let t0 = Instant::now();
        let o = mote(&args, b"");
        assert_eq!(o.status.code(), Some(1));
        assert!(t0.elapsed() < Duration::from_secs(3), "no hang");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("(unauthorized)"), "{e}");
    }
    let o = mote(
        &["pub", "-p", &p, "--token", "short", "-t", "a", "-m", "x"],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at least 16"), "{}", stderr(&o));
}

#[test]
fn sighup_reloads_tokens_and_keeps_sessions() {
    let dir = std::env::temp_dir().join(format!("mote-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mote.toml");
    let old = "old-token-0123456789abcdef";
    let new = "new-token-0123456789abcdef";
    let tokens = |t: &str| {
        format!(
            "[tokens.sensor]\ntoken = \"{t}\"\npublish = [\"sensors/{{name}}/#\"]\nsubscribe = [\"sensors/#\"]\n"
        )
    };
    std::fs::write(&file, tokens(old)).unwrap();
    let mut s = Served::start(&["--config", file.to_str().unwrap()]);
    let p = s.port();
    let sensor = |t: &str| format!("sensor:{t}");
    // A session opened with the old token, kept open across the reload.
    let opts = mote_sdk::Options::new(s.addr.to_string())
        .with_token("sensor", old)
        .unwrap();
    let kept = mote_sdk::blocking::Client::connect(opts).unwrap();
    let mut sub = kept
        .subscribe("sensors/#", mote_sdk::Start::Latest)
        .unwrap();
    std::fs::write(&file, tokens(new)).unwrap();
    let pid = rustix::process::Pid::from_raw(s.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    s.wait_log("token table reloaded: 1 token");
    let o = mote(&["ping", "-p", &p, "--token", &sensor(old)], b"");
    assert_eq!(
        o.status.code(),
        Some(1),
        "the old token no longer opens a session"
    );
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "--token",
            &sensor(new),
            "-t",
            "sensors/sensor/t",
            "-m",
            "1",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "--token",
            &sensor(new),
            "-t",
            "sensors/other/t",
            "-m",
            "1",
        ],
        b"",
    );
    assert!(stderr(&o).contains("may not publish"), "{}", stderr(&o));
    // The session from before the reload kept its rights and got the message.
    match sub.recv_timeout(Duration::from_secs(5)).unwrap() {
        Some(mote_sdk::Event::Message(m)) => assert_eq!(m.payload, b"1"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert_eq!(kept.publish_confirmed("sensors/sensor/t", "2").unwrap(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn readme_consumer_groups() {
    let dir = std::env::temp_dir().join(format!("mote-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mote.toml");
    std::fs::write(
        &file,
        "[groups.workers]\nfilter = \"jobs/#\"\nack-timeout = \"300ms\"\nmax-deliveries = 2\nprefetch = 16\ndurable = true\n",
    )
    .unwrap();
    let s = Served::start(&["--config", file.to_str().unwrap()]);
    let p = s.port();
    // The configured durable group exists before any member: it keeps these.
    let o = mote(&["pub", "-p", &p, "-t", "jobs/resize", "-l"], b"a\nb\nc\n");
    assert!(o.status.success(), "{}", stderr(&o));
    // --no-ack: the member prints them and never acks; after the ack timeout they come
    // back (attempt 2), and past max-deliveries they go to $dead/workers/jobs/resize.
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "workers", "--no-ack", "--json", "-C", "6",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let attempts: Vec<(String, u64)> = lines
        .iter()
        .map(|v| {
            (
                v["payload"].as_str().unwrap().to_string(),
                v["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    for m in ["a", "b", "c"] {
        assert!(attempts.contains(&(m.into(), 1)), "{attempts:?}");
        assert!(attempts.contains(&(m.into(), 2)), "{attempts:?}");
    }
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "$dead/#", "-v", "--from", "earliest", "-C", "3", "-W", "5",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut dead: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            "$dead/workers/jobs/resize a",
            "$dead/workers/jobs/resize b",
            "$dead/workers/jobs/resize c"
        ]
    );
    // A member that acks: each message printed once, and nothing comes back.
    let o = mote(&["pub", "-p", &p, "-t", "jobs/x", "-m", "done-once"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "workers", "-C", "1",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "done-once\n", "{}", stderr(&o));
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "workers", "-W", "1",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "an acked message came back");
    // Usage errors.
    let o = mote(
        &["sub", "-p", &p, "-t", "a", "-t", "b", "--group", "w"],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("a group reads one filter"),
        "{}",
        stderr(&o)
    );
    let o = mote(&["sub", "-p", &p, "-t", "a", "--no-ack"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--no-ack needs --group"),
        "{}",
        stderr(&o)
    );
    let o = mote(&["sub", "-p", &p, "-t", "other", "--group", "workers"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("reads jobs/#"), "{}", stderr(&o));
    std::fs::write(&file, "[groups.w]\nprefetch = 0\n").unwrap();
    let o = mote(
        &["serve", "--config", file.to_str().unwrap(), "--http", "off"],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("[groups.w] prefetch must be a whole number from 1"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 10, item 4: a broker whose stderr nobody reads (journald under pressure, a stuck
/// docker log driver) keeps serving. Each refused connection logs a warning; 2,000 of them
/// are several times what a pipe holds, and the broker used to block writing them.
#[test]
fn a_broker_whose_stderr_is_not_read_keeps_answering() {
    use std::io::Read;
    use std::net::TcpStream;
    let mut child = Command::new(MOTE)
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "off"])
        .args(["--max-connections", "1", "--handshake-timeout", "1m"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Read up to the line with the address, then never again (the reader is kept open).
    let (tx, rx) = mpsc::channel();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let child = Kill(child);
    std::thread::spawn(move || {
        let mut line = String::new();
        while log.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some((_, rest)) = line.split_once("listening on ") {
                let addr: SocketAddr = rest.split(' ').next().unwrap().parse().unwrap();
                let _ = tx.send((addr, log));
                return;
            }
            line.clear();
        }
    });
    let (addr, mut unread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let mut held = TcpStream::connect(addr).unwrap();
    let mut refused = 0;
    while refused < 2000 {
        // A broker that stopped accepting fills its backlog, then connects time out.
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => refused += 1,
            Err(_) => break,
        }
    }
    // Give the slot back, and wait until the broker has noticed.
    held.shutdown(std::net::Shutdown::Write).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let noticed = held.read(&mut [0; 64]);
    assert!(
        matches!(noticed, Ok(0)),
        "the broker stopped after {refused} refused connections with its stderr unread: \
         a closed connection was not noticed ({noticed:?})"
    );
    let o = mote(
        &["ping", "-p", &addr.port().to_string(), "--timeout", "5s"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(refused, 2000);

    // A normal exit writes the last lines, and how many warnings were left out.
    let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = unread.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let rest = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(rest.contains("] stopped: "), "{rest}");
    assert!(
        rest.contains("WARN  mote::server] ") && rest.contains(" similar lines suppressed ("),
        "{rest}"
    );
}

/// Sends `signal` to the broker process.
fn signal(s: &Served, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(s.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[test]
fn pub_confirm_says_so_and_gives_up_when_the_broker_dies_mid_stream() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut publ = Running::start(&[
        "pub",
        "-p",
        &p,
        "-t",
        "t",
        "-l",
        "--confirm",
        "--timeout",
        "1s",
    ]);
    // Each offset is printed as soon as it is confirmed, while stdin stays open.
    publ.write("a\n");
    assert_eq!(publ.out_line(), "0");
    publ.write("b\n");
    assert_eq!(publ.out_line(), "1");
    let killed = Instant::now();
    drop(s);
    publ.write("c\n");
    let lost = publ.err_line();
    assert!(
        lost.starts_with(&format!("mote pub: lost the connection to 127.0.0.1:{p} ("))
            && lost.ends_with("reconnecting for up to 1.0 s (--timeout)"),
        "{lost}"
    );
    let status = publ.exit_within(Duration::from_secs(10));
    let took = killed.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(took >= Duration::from_secs(1), "gave up early: {took:?}");
    let (out, err) = publ.rest();
    assert_eq!(
        out,
        Vec::<String>::new(),
        "only confirmed offsets are printed"
    );
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with(&format!(
            "mote pub: no connection to 127.0.0.1:{p} for 1.0 s (cannot connect to"
        )) && err[0].ends_with(
            "1 message not confirmed; giving up (wait longer with --timeout, or for ever with --retry-forever)"
        ),
        "{err:?}"
    );
}

#[test]
fn pub_confirm_stream_longer_than_the_timeout_succeeds() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut publ = Running::start(&[
        "pub",
        "-p",
        &p,
        "-t",
        "t",
        "-l",
        "--confirm",
        "--timeout",
        "300ms",
    ]);
    let t0 = Instant::now();
    for i in 0..8 {
        publ.write(&format!("{i}\n"));
        assert_eq!(publ.out_line(), i.to_string());
        // The pace of a sensor: the run lasts several timeouts, and one pause with
        // nothing waiting for an answer is longer than the timeout.
        let pause = if i == 4 { 600 } else { 100 };
        std::thread::sleep(Duration::from_millis(pause));
    }
    assert!(t0.elapsed() > Duration::from_millis(1200));
    drop(publ.stdin.take());
    assert!(publ.exit_within(Duration::from_secs(10)).success());
    assert_eq!(publ.rest(), (vec![], vec![]));
}

#[test]
fn pub_retry_forever_waits_for_the_broker_to_come_back() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut publ = Running::start(&[
        "pub",
        "-p",
        &p,
        "-t",
        "t",
        "-l",
        "--confirm",
        "--retry-forever",
        "--timeout",
        "200ms",
    ]);
    publ.write("a\n");
    assert_eq!(publ.out_line(), "0");
    drop(s);
    // The first handshake may take longer than the 200 ms --timeout (under qemu on a busy
    // machine it does, about one run in 20): pub then says it is trying again, and that it
    // connected. Those two lines are about the start, not about the broker going away.
    let lost = loop {
        let line = publ.err_line();
        if !(line.starts_with(&format!("mote pub: cannot connect to 127.0.0.1:{p}: "))
            || line == format!("mote pub: connected to 127.0.0.1:{p}"))
        {
            break line;
        }
    };
    assert!(
        lost.ends_with("reconnecting until it is back (--retry-forever)"),
        "{lost}"
    );
    publ.write("b\n");
    // Five timeouts without a broker: still waiting, nothing printed.
    assert!(
        publ.out.recv_timeout(Duration::from_secs(1)).is_err(),
        "an offset without a broker"
    );
    assert!(publ.child.try_wait().unwrap().is_none(), "gave up");
    // A broker on the same port: "b" is published there (a new broker starts at 0).
    let _s2 = Served::start_on(&format!("127.0.0.1:{p}"), &[]);
    assert_eq!(publ.out_line(), "0");
    let back = publ.err_line();
    assert!(
        back.starts_with(&format!("mote pub: reconnected to 127.0.0.1:{p} after ")),
        "{back}"
    );
    drop(publ.stdin.take());
    assert!(publ.exit_within(Duration::from_secs(10)).success());
    assert_eq!(publ.rest(), (vec![], vec![]));
}

#[test]
fn pub_retry_forever_waits_for_a_broker_not_started_yet() {
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut publ = Running::start(&[
        "pub",
        "-p",
        &port,
        "-t",
        "t",
        "-m",
        "early",
        "--confirm",
        "--retry-forever",
    ]);
    let waiting = publ.err_line();
    assert!(
        waiting.starts_with(&format!("mote pub: cannot connect to 127.0.0.1:{port}: "))
            && waiting.ends_with("; trying again until it answers (--retry-forever)"),
        "{waiting}"
    );
    let s = Served::start_on(&format!("127.0.0.1:{port}"), &[]);
    assert_eq!(publ.out_line(), "0");
    assert!(publ.exit_within(Duration::from_secs(10)).success());
    assert_eq!(
        publ.rest(),
        (
            vec![],
            vec![format!("mote pub: connected to 127.0.0.1:{port}")]
        )
    );
    // Without --retry-forever the first failure is the answer, at once.
    drop(s);
    let o = mote(
        &["pub", "-p", &port, "-t", "t", "-m", "x", "--confirm"],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("mote pub: cannot connect to"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plain_pub_gives_up_when_the_broker_dies() {
    let s = Served::start(&[]);
    let p = s.port();
    let sub =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    let mut events = sub.subscribe("t", mote_sdk::Start::Latest).unwrap();
    let mut publ = Running::start(&["pub", "-p", &p, "-t", "t", "-l", "--timeout", "1s"]);
    publ.write("a\n");
    match events.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(mote_sdk::Event::Message(m)) => assert_eq!(m.payload, b"a"),
        other => panic!("expected the message, got {other:?}"),
    }
    drop((events, sub, s));
    publ.write("b\n");
    let lost = publ.err_line();
    assert!(
        lost.starts_with(&format!("mote pub: lost the connection to 127.0.0.1:{p} (")),
        "{lost}"
    );
    assert_eq!(publ.exit_within(Duration::from_secs(10)).code(), Some(1));
    let (out, err) = publ.rest();
    assert_eq!(out, Vec::<String>::new(), "fire and forget prints nothing");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with(&format!(
            "mote pub: no connection to 127.0.0.1:{p} for 1.0 s ("
        )) && err[0].ends_with(
            "; giving up (wait longer with --timeout, or for ever with --retry-forever)"
        ),
        "{err:?}"
    );
}

#[test]
fn pub_gives_up_on_a_broker_that_stops_answering() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut publ = Running::start(&[
        "pub",
        "-p",
        &p,
        "-t",
        "t",
        "-l",
        "--confirm",
        "--timeout",
        "1s",
    ]);
    publ.write("a\n");
    assert_eq!(publ.out_line(), "0");
    // Frozen: the connection stays up, nothing is answered.
    signal(&s, rustix::process::Signal::STOP);
    let frozen = Instant::now();
    publ.write("b\n");
    let status = publ.exit_within(Duration::from_secs(10));
    signal(&s, rustix::process::Signal::CONT);
    assert_eq!(status.code(), Some(1));
    assert!(frozen.elapsed() >= Duration::from_secs(1));
    let (out, err) = publ.rest();
    assert_eq!(out, Vec::<String>::new());
    assert_eq!(
        err,
        [format!(
            "mote pub: the broker at 127.0.0.1:{p} answered nothing for 1.0 s; 1 message not confirmed; giving up (wait longer with --timeout, or for ever with --retry-forever)"
        )]
    );
    // The same bound for one message: -m with --confirm.
    signal(&s, rustix::process::Signal::STOP);
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "-t",
            "t",
            "-m",
            "c",
            "--confirm",
            "--timeout",
            "500ms",
        ],
        b"",
    );
    signal(&s, rustix::process::Signal::CONT);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mote pub: cannot connect to"),
        "{}",
        stderr(&o)
    );
    let o = mote(
        &["pub", "-p", &p, "-t", "t", "-m", "x", "--timeout", "0"],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be more than 0"), "{}", stderr(&o));
}

/// `mote ARGS` with extra environment variables.
fn mote_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(MOTE)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn readme_token_files() {
    let dir = std::env::temp_dir().join(format!("mote-token-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // (umask 077; mote token new > ~/.mote-token): the file as `mote token new` writes it.
    let token = stdout(&mote(&["token", "new"], b""));
    assert!(token.ends_with('\n'));
    let token_file = path("mote-token");
    std::fs::write(&token_file, &token).unwrap();
    let token = token.trim();
    let mut s = Served::start(&["--token-file", &token_file]);
    s.wait_log("authenticated and encrypted");
    let p = s.port();
    // mote pub -h pi.local --token-file ~/.mote-token -t home/kitchen/temp -m 21.5
    let o = mote(
        &[
            "pub",
            "-p",
            &p,
            "--token-file",
            &token_file,
            "-t",
            "home/kitchen/temp",
            "-m",
            "21.5",
            "--confirm",
        ],
        b"",
    );
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    // MOTE_TOKEN_FILE=~/.mote-token mote sub -h pi.local -t 'home/#' -v, with a named
    // token and whitespace around it.
    let named = path("named");
    std::fs::write(&named, format!("  default:{token}\r\n\n")).unwrap();
    let o = mote_env(
        &[
            "sub", "-p", &p, "-t", "home/#", "-v", "--from", "earliest", "-C", "1",
        ],
        &[("MOTE_TOKEN_FILE", &named)],
    );
    assert_eq!(stdout(&o), "home/kitchen/temp 21.5\n", "{}", stderr(&o));
    let o = mote(&["ping", "-p", &p, "--token-file", &named], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    // Errors: one line, exit 2 for what the command line got wrong, never the token.
    let empty = path("empty");
    std::fs::write(&empty, " \n").unwrap();
    let wrong = path("wrong");
    std::fs::write(&wrong, "wrong-secret-0123456789\n").unwrap();
    let missing = path("missing");
    // Arguments, environment, exit code, how stderr starts.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, String);
    let cases: [Case<'_>; 6] = [
        (
            vec!["pub", "-p", &p, "--token-file", &missing, "-t", "a", "-m", "x"],
            vec![],
            2,
            format!("mote pub: cannot read the token file {missing} (--token-file): "),
        ),
        (
            vec!["sub", "-p", &p, "-t", "a"],
            vec![("MOTE_TOKEN_FILE", empty.as_str())],
            2,
            format!(
                "mote sub: the token file {empty} (MOTE_TOKEN_FILE) is empty: write the token in it (make one with `mote token new`)"
            ),
        ),
        (
            vec!["ping", "-p", &p, "--token-file", &token_file, "--token", token],
            vec![],
            2,
            "mote ping: --token and --token-file are both set: give the token one way (--token-file keeps it out of ps)".into(),
        ),
        (
            vec!["pub", "-p", &p, "--token-file", &token_file, "-t", "a", "-m", "x"],
            vec![("MOTE_TOKEN", token)],
            2,
            "mote pub: MOTE_TOKEN and --token-file are both set".into(),
        ),
        (
            vec!["serve", "--token-file", &missing, "--http", "off"],
            vec![],
            2,
            format!("mote: cannot read the token file {missing} (--token-file): "),
        ),
        (
            vec!["pub", "-p", &p, "--token-file", &wrong, "-t", "a", "-m", "x"],
            vec![],
            1,
            // A token file without a name: the hint that brokers may want one.
            "mote pub: authentication failed: the token went under the name `default`".into(),
        ),
    ];
    for (args, env, code, start) in cases {
        let o = mote_env(&args, &env);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
        assert!(e.starts_with(&start), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(!e.contains(token) && !e.contains("wrong-secret"), "{e}");
    }
    // SIGHUP reads the file again: the new token opens sessions, the old one no longer.
    let new = stdout(&mote(&["token", "new"], b""));
    std::fs::write(&token_file, &new).unwrap();
    signal(&s, rustix::process::Signal::HUP);
    s.wait_log("token table reloaded: 1 token");
    let o = mote_env(&["ping", "-p", &p], &[("MOTE_TOKEN_FILE", &token_file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(&["ping", "-p", &p, "-q", "--token-file", &named], b"");
    assert_eq!(o.status.code(), Some(1));
    // An empty file on reload keeps the table, and says why without the token.
    std::fs::write(&token_file, "").unwrap();
    signal(&s, rustix::process::Signal::HUP);
    let line = s.wait_log("SIGHUP: keeping the current");
    assert!(
        line.contains(&format!(
            "the token file {token_file} (--token-file) is empty"
        )),
        "{line}"
    );
    std::fs::write(&token_file, &new).unwrap();
    let o = mote(&["ping", "-p", &p, "--token-file", &token_file], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    // The help shows the file and the variable first.
    for cmd in ["serve", "pub", "sub", "ping"] {
        let help = stdout(&mote(&[cmd, "--help"], b""));
        let file = help
            .find("--token-file FILE")
            .unwrap_or_else(|| panic!("{help}"));
        let flag = help.find("--token ").unwrap_or_else(|| panic!("{help}"));
        assert!(file < flag, "{help}");
        assert!(help.contains("env: MOTE_TOKEN_FILE"), "{help}");
        assert!(help.contains("every local user sees it in ps"), "{help}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Issue 13 (items 3, 4, 5, 9, 10): what a new user tripped over.

/// A fresh directory under the temporary directory, named after `what` and this process.
fn fresh_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mote-i13-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sub_says_when_the_connection_is_lost_and_back_unless_quiet() {
    let s1 = Served::start(&[]);
    let p = s1.port();
    let args = |quiet: bool| {
        let mut a = vec!["sub", "-p", &p, "-t", "t", "--from", "earliest"];
        if quiet {
            a.push("--quiet");
        }
        Running::start(&a)
    };
    let (sub, hushed) = (args(false), args(true));
    let o = mote(&["pub", "-p", &p, "-t", "t", "-m", "a", "--confirm"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sub.out_line(), "a");
    assert_eq!(hushed.out_line(), "a");
    // Two messages stored, and synced, by a broker the subscribers have not seen yet: the
    // broker that comes back on their port holds them before they reconnect.
    let data = fresh_dir("back");
    let d = data.to_str().unwrap();
    let s2 = Served::start(&["--data", d, "--sync", "always"]);
    let o = mote(
        &["pub", "-p", &s2.port(), "-t", "t", "-l", "--confirm"],
        b"b\nc\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(s2);
    drop(s1);
    let lost = sub.err_line();
    assert!(
        lost.starts_with(&format!("mote sub: lost the connection to 127.0.0.1:{p} (")),
        "{lost}"
    );
    let _s3 = Served::start_on(&format!("127.0.0.1:{p}"), &["--data", d]);
    // A new broker: everything it holds is new to the subscribers.
    assert_eq!(sub.out_line(), "b");
    assert_eq!(sub.out_line(), "c");
    let back = sub.err_line();
    assert!(
        back.starts_with(&format!("mote sub: reconnected to 127.0.0.1:{p} after ")),
        "{back}"
    );
    assert!(
        back.ends_with("; replayed 2 messages stored meanwhile"),
        "{back}"
    );
    assert_eq!(hushed.out_line(), "b");
    assert_eq!(hushed.out_line(), "c");
    // --quiet: not a word on stderr.
    assert!(
        hushed.err.recv_timeout(Duration::from_secs(1)).is_err(),
        "--quiet printed something"
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn sub_exits_1_when_the_broker_refuses_its_subscriptions_after_a_reconnect() {
    let dir = fresh_dir("refused");
    let file = dir.join("mote.toml");
    let secret = "sensor-token-0123456789abcdef";
    let config = |subscribe: &str| {
        format!(
            "[tokens.sensor]\ntoken = \"{secret}\"\npublish = [\"sensors/#\"]\nsubscribe = [{subscribe}]\n"
        )
    };
    std::fs::write(&file, config("\"sensors/#\", \"lights/#\"")).unwrap();
    let cfg = file.to_str().unwrap();
    let s1 = Served::start(&["--config", cfg]);
    let p = s1.port();
    let token = format!("sensor:{secret}");
    let base = ["sub", "-p", &p, "--token", &token, "--from", "earliest"];
    let mut both = Running::start(&[&base[..], &["-t", "sensors/#", "-t", "lights/#"]].concat());
    let mut one = Running::start(&[&base[..], &["-t", "sensors/#"]].concat());
    // Both subscribed: a message reaches them.
    let publish = |port: &str, m: &str| {
        let o = mote(
            &[
                "pub",
                "-p",
                port,
                "--token",
                &token,
                "-t",
                "sensors/a",
                "-m",
                m,
            ],
            b"",
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    publish(&p, "1");
    assert_eq!(both.out_line(), "1");
    assert_eq!(one.out_line(), "1");
    // The broker comes back with the token allowed to read lights/# only.
    std::fs::write(&file, config("\"lights/#\"")).unwrap();
    drop(s1);
    let _s2 = Served::start_on(&format!("127.0.0.1:{p}"), &["--config", cfg]);
    for sub in [&one, &both] {
        assert!(sub.err_line().starts_with("mote sub: lost the connection"));
        let refused = sub.err_line();
        assert!(
            refused.starts_with(
                "mote sub: after reconnecting, the broker refused a subscription: token \"sensor\" may not subscribe to \"sensors/#\""
            ),
            "{refused}"
        );
    }
    // Nothing left: exit 1, saying why.
    assert_eq!(one.exit_within(Duration::from_secs(10)).code(), Some(1));
    let (_, err) = one.rest();
    assert_eq!(
        err.last().map(String::as_str),
        Some("mote sub: no subscription is left (the broker refused them); exiting"),
        "{err:?}"
    );
    // One left: it carries on.
    assert!(
        both.child.try_wait().unwrap().is_none(),
        "gave up too early"
    );
    let _ = both.child.kill();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pub_lines_note_what_the_retention_no_longer_keeps_and_sub_says_evicted() {
    let s = Served::start(&["--ring-messages", "10"]);
    let p = s.port();
    let lines: String = (1..=100).map(|i| format!("{i}\n")).collect();
    let o = mote(&["pub", "-p", &p, "-t", "big", "-l"], lines.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let note = stderr(&o);
    assert!(
        note.starts_with(
            "mote pub: note: 90 of the 100 messages published in this run are no longer kept: big's retention holds fewer (its oldest is now offset 90;"
        ),
        "{note}"
    );
    assert_eq!(note.lines().count(), 1, "{note}");
    // What fits says nothing; confirmed runs know their first offset.
    let o = mote(
        &["pub", "-p", &p, "-t", "big", "-l", "--confirm"],
        b"x\ny\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        (stdout(&o).as_str(), stderr(&o).as_str()),
        ("100\n101\n", "")
    );
    let o = mote(
        &["pub", "-p", &p, "-t", "big", "-l", "--confirm"],
        (1..=12)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    assert!(
        stderr(&o).starts_with(
            "mote pub: note: 2 of the 12 messages published in this run are no longer kept"
        ),
        "{}",
        stderr(&o)
    );
    // A reader asking for offset 0 is told the messages were gone before it asked,
    // not that it fell behind.
    let o = mote(
        &["sub", "-p", &p, "-t", "big", "--from", "0", "-C", "1"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "3\n");
    assert_eq!(
        stderr(&o),
        "mote sub: 104 messages of big from where this subscriber asked to start were evicted by the topic's retention before it asked; starting at offset 104, the oldest kept\n"
    );
}

#[test]
fn token_without_a_subcommand_exits_2_and_counts_of_one_are_singular() {
    let o = mote(&["token"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("Usage: mote token new"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    let o = mote(&["token", "--help"], b"");
    assert_eq!(o.status.code(), Some(0));
    let s = Served::start(&[]);
    let o = mote(
        &[
            "sub",
            "-p",
            &s.port(),
            "-t",
            "quiet",
            "-C",
            "1",
            "-W",
            "300ms",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with("before receiving 1 message\n"),
        "{}",
        stderr(&o)
    );
}
