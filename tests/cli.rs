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
    // The accept backlog may still hold connections this test dropped: the broker takes
    // each (the one slot, for a moment) and sees it closed. A ping gets through within
    // a bounded wait once they are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let o = loop {
        let o = mote(
            &["ping", "-p", &addr.port().to_string(), "--timeout", "5s"],
            b"",
        );
        if o.status.success()
            || Instant::now() > deadline
            || !stderr(&o).contains("connection_limit")
        {
            break o;
        }
    };
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

// ---- Issue 13 (everyday use): `mote sub --exec`, the README's group examples as written,
// ---- `mote pub -l` naming the refused line and `--skip-bad`.

/// A directory of its own for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Issue 13, item 1: exit 0 acks, any other exit nacks (the message comes back, attempt 2,
/// after --nack-delay), a command running into the ack timeout is killed with everything it
/// started and nacked, and the environment and stdin carry the message.
#[test]
fn sub_exec_acks_on_success_and_redelivers_failures_and_timeouts() {
    let s = Served::start(&[]);
    let p = s.port();
    let o = mote(
        &["pub", "-p", &p, "-t", "jobs/x", "-m", "ok", "-k", "k1"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(&["pub", "-p", &p, "-t", "jobs/x", "-l"], b"fail\nslow\n");
    assert!(o.status.success(), "{}", stderr(&o));
    // `fail` exits 3 on its first attempt; `slow` starts a `sleep` that would hold mote's
    // stdout open for 60 s, so mote's exit within the bound shows the whole process group
    // was killed, not only `sh`.
    let cmd = r#"p=$(cat); echo "$MOTE_TOPIC|$MOTE_OFFSET|${MOTE_KEY-none}|$MOTE_ATTEMPT|$p|$(date +%s%N)"
if [ "$MOTE_ATTEMPT" = 1 ]; then
  [ "$p" = fail ] && exit 3
  [ "$p" = slow ] && { sleep 60; exit 0; }
fi
exit 0"#;
    let t0 = Instant::now();
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/#",
            "--group",
            "w",
            "--durable",
            "--from",
            "earliest",
            "--ack-timeout",
            "2s",
            "--nack-delay",
            "700ms",
            "-C",
            "5",
            "-W",
            "30",
            "--exec",
            cmd,
        ],
        b"",
    );
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let mut seen: Vec<String> = Vec::new();
    let mut fail_times = Vec::new();
    for line in stdout(&o).lines() {
        let (what, ns) = line.rsplit_once('|').unwrap();
        if what.contains("|fail") {
            fail_times.push(ns.parse::<u128>().unwrap());
        }
        seen.push(what.to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "jobs/x|0|k1|1|ok",
            "jobs/x|1|none|1|fail",
            "jobs/x|1|none|2|fail",
            "jobs/x|2|none|1|slow",
            "jobs/x|2|none|2|slow",
        ],
        "{}",
        stderr(&o)
    );
    // Nacked with --nack-delay 700ms: the second attempt came no sooner.
    assert_eq!(fail_times.len(), 2);
    assert!(
        fail_times[1] - fail_times[0] >= 650_000_000,
        "{fail_times:?}"
    );
    let err = stderr(&o);
    assert!(
        err.contains("jobs/x offset 1 (attempt 1) exited with 3; nacked"),
        "{err}"
    );
    assert!(
        err.contains(
            "jobs/x offset 2 (attempt 1) ran into the ack timeout (2.0 s) and was killed; nacked"
        ),
        "{err}"
    );
    // Everything was acked: nothing comes back to the (durable) group.
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "w", "-W", "3", "--exec", "cat",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "an acked message came back");
}

/// Issue 13, item 1: `-j 2` runs two commands at once: each waits (bounded) for the file
/// the other creates, which one at a time could never see.
#[test]
fn sub_exec_jobs_run_at_once() {
    let s = Served::start(&[]);
    let p = s.port();
    let dir = scratch("exec-jobs");
    let o = mote(&["pub", "-p", &p, "-t", "jobs/x", "-l"], b"A\nB\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let cmd = format!(
        r#"me=$(cat); touch "{d}/$me"; other=A; [ "$me" = A ] && other=B
i=0; while [ ! -e "{d}/$other" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -e "{d}/$other" ]; then echo "$me $MOTE_ATTEMPT saw $other"; else echo "$me $MOTE_ATTEMPT alone"; exit 1; fi"#,
        d = dir.display()
    );
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "w", "--from", "earliest", "-j", "2", "-C",
            "2", "-W", "30", "--exec", &cmd,
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["A 1 saw B", "B 1 saw A"], "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13, item 1: SIGTERM stops taking messages but lets the running command finish,
/// whose message is then acked; plain subscriptions run commands too (attempt 1); usage
/// errors exit 2 and a command that cannot run is an error naming it.
#[test]
fn sub_exec_sigterm_lets_the_running_command_finish() {
    let s = Served::start(&[]);
    let p = s.port();
    let dir = scratch("exec-term");
    let go = dir.join("go");
    let o = mote(&["pub", "-p", &p, "-t", "jobs/x", "-l"], b"first\nsecond\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let cmd = format!(
        r#"p=$(cat); echo "started $p"; i=0; while [ ! -e "{}" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo "done $p""#,
        go.display()
    );
    let mut sub = Running::start(&[
        "sub",
        "-p",
        &p,
        "-t",
        "jobs/#",
        "--group",
        "w",
        "--durable",
        "--from",
        "earliest",
        "--exec",
        &cmd,
    ]);
    assert_eq!(sub.out_line(), "started first");
    let pid = rustix::process::Pid::from_raw(i32::try_from(sub.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(
        sub.err_line()
            .contains("stopping: waiting for 1 running command"),
    );
    assert!(sub.child.try_wait().unwrap().is_none(), "left mid-command");
    std::fs::write(&go, b"").unwrap();
    assert_eq!(sub.out_line(), "done first");
    let st = sub.exit_within(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let (out, err) = sub.rest();
    assert!(
        out.is_empty(),
        "took a message after the signal: {out:?} {err:?}"
    );
    // `first` was acked, `second` never taken: it is all the durable group has left.
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "jobs/#", "--group", "w", "-C", "1", "-W", "10", "--exec", "cat",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "second");
    // A plain subscription: every message, attempt 1, nothing to ack.
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/x",
            "--from",
            "earliest",
            "-C",
            "2",
            "-W",
            "10",
            "--exec",
            r#"echo "$MOTE_ATTEMPT $MOTE_OFFSET $(cat)""#,
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "1 0 first\n1 1 second\n");
    // A command that cannot run: said, exit 1, and the message is given back.
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/#",
            "--group",
            "w2",
            "--from",
            "earliest",
            "-W",
            "10",
            "--exec",
            "no-such-command-here",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sh -c \"no-such-command-here\" exited with 127 (command not found)"),
        "{}",
        stderr(&o)
    );
    for (args, says) in [
        (&["-j", "2"][..], "--jobs needs --exec CMD"),
        (&["--nack-delay", "1s"][..], "--nack-delay needs --exec CMD"),
        (
            &["--exec", "cat", "--nack-delay", "1s"][..],
            "--nack-delay needs --group NAME",
        ),
        (&["--exec", "cat", "-j", "0"][..], "must be at least 1"),
        (
            &["--exec", "cat", "--group", "g", "--no-ack"][..],
            "drop --no-ack",
        ),
        (&["--exec", "cat", "--json"][..], "--json is for printing"),
    ] {
        let mut a = vec!["sub", "-p", &p, "-t", "jobs/x"];
        a.extend_from_slice(args);
        let o = mote(&a, b"");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let o = mote(&["sub", "--help"], b"");
    let help = stdout(&o);
    assert!(help.contains("acked once printed"), "{help}");
    assert!(help.contains("acked only after CMD exits 0"), "{help}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13, item 2: the README's `--no-ack` and `$dead` examples, as written (with `-p`,
/// and `-C` / `-W` so that they end): the message comes back after 2 s, and after
/// --max-deliveries 2 it is in `$dead`.
#[test]
fn readme_no_ack_and_dead_letter_examples_as_written() {
    let s = Served::start(&[]);
    let p = s.port();
    let o = mote(
        &["pub", "-p", &p, "-t", "jobs/resize", "-m", "img-17.jpg"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t0 = Instant::now();
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/#",
            "--group",
            "flaky",
            "--from",
            "earliest",
            "--no-ack",
            "--ack-timeout",
            "2s",
            "--max-deliveries",
            "2",
            "-C",
            "2",
            "-W",
            "20",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "img-17.jpg\nimg-17.jpg\n");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "$dead/#", "-v", "--from", "earliest", "-C", "1", "-W", "20",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "$dead/flaky/jobs/resize img-17.jpg\n");
    // The README's two --exec examples, with -C 1 so that they end.
    let dir = scratch("readme-exec");
    let o = mote(&["pub", "-p", &p, "-t", "jobs/resize", "-l"], b"x\nhello\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/#",
            "--group",
            "workers",
            "--from",
            "earliest",
            "-C",
            "1",
            "-W",
            "10",
            "--exec",
            r#"echo "job $MOTE_OFFSET (attempt $MOTE_ATTEMPT): $(cat)""#,
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "job 0 (attempt 1): img-17.jpg\n");
    let cmd = format!(r#"gzip > "{}/job-$MOTE_OFFSET.gz""#, dir.display());
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "jobs/#",
            "--group",
            "workers",
            "--from",
            "earliest",
            "-j",
            "4",
            "--nack-delay",
            "5s",
            "-C",
            "2",
            "-W",
            "10",
            "--exec",
            &cmd,
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Groups are durable by default: this member continues after the job acked above.
    assert!(!dir.join("job-0.gz").exists(), "job 0 was done already");
    for n in 1..3 {
        assert!(dir.join(format!("job-{n}.gz")).exists(), "job-{n}.gz");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13, item 6: `mote pub -l` names the line over --max-payload and still sends the
/// lines before it; `--skip-bad` goes on past it, and exits 1 with the count.
#[test]
fn pub_lines_name_the_refused_line_and_skip_bad_goes_on() {
    let s = Served::start(&["--max-payload", "1K"]);
    let p = s.port();
    let big = "x".repeat(2000);
    let input = format!("a\n{big}\nb\n{big}\nc\n");
    let o = mote(&["pub", "-p", &p, "-t", "t", "-l"], input.as_bytes());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 2: payload is 2000 bytes, the broker's limit is 1024"),
        "{}",
        stderr(&o)
    );
    for confirm in [false, true] {
        let mut args = vec!["pub", "-p", &p, "-t", "t", "-l", "--skip-bad"];
        if confirm {
            args.push("--confirm");
        }
        let o = mote(&args, input.as_bytes());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("line 2: payload is 2000 bytes"), "{err}");
        assert!(err.contains("line 4: payload is 2000 bytes"), "{err}");
        assert!(
            err.contains("skipped 2 lines the broker refused (--skip-bad)"),
            "{err}"
        );
        if confirm {
            assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
        }
    }
    // What reached the broker: `a` of the first run (sent before the line that ended
    // it), then a, b, c twice.
    let o = mote(
        &[
            "sub", "-p", &p, "-t", "t", "--from", "earliest", "-C", "7", "-W", "10",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "a\na\nb\nc\na\nb\nc\n");
    let o = mote(&["pub", "-p", &p, "-t", "t", "-m", "x", "--skip-bad"], b"");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = mote(&["pub", "--help"], b"");
    assert!(stdout(&o).contains("--skip-bad"), "{}", stdout(&o));
}

// ---- Issue 13, items 7, 8 and 11: mosquitto habits, sizes derived from those given,
// ---- where listeners bind.

/// `mote ARGS` (with `env`) that must exit on its own: within 10 s, or it is killed and
/// the test fails (a `mote serve` that started instead of refusing would run forever).
fn mote_exits(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(MOTE)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("mote {args:?} did not exit: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn mosquitto_options_map_or_say_what_to_use() {
    let s = Served::start(&[]);
    let hp = format!("127.0.0.1:{}", s.port());
    // -h HOST:PORT; -q 1 is --confirm (the offset printed), -q 0 sends and forgets.
    let o = mote(
        &[
            "pub", "-h", &hp, "-t", "m/a", "-m", "one", "-q", "1", "-i", "s-1",
        ],
        b"",
    );
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "0\n"),
        "{}",
        stderr(&o)
    );
    let o = mote(
        &["pub", "-h", &hp, "-t", "m/a", "-m", "two", "-q", "0"],
        b"",
    );
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), ""),
        "{}",
        stderr(&o)
    );
    // mote sub takes -q 0 and -q 1 and changes nothing, silently.
    for q in ["0", "1"] {
        let o = mote(
            &[
                "sub", "-h", &hp, "-q", q, "-t", "m/#", "-v", "--from", "earliest", "-C", "2",
            ],
            b"",
        );
        assert_eq!(stdout(&o), "m/a one\nm/a two\n", "{}", stderr(&o));
        assert_eq!(stderr(&o), "");
    }
    let o = mote(&["ping", "-h", &hp], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    // The same port twice is no conflict; MOTE_PORT gives way to -h HOST:PORT.
    let o = mote_env(&["ping", "-h", &hp, "-p", &s.port()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote_env(&["ping", "-h", &hp], &[("MOTE_PORT", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(s);
    // -h [::1]:PORT, where this machine has IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let s = Served::start_on("[::1]:0", &[]);
        let o = mote(&["ping", "-h", &format!("[::1]:{}", s.port())], b"");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // What does not map: one line saying what to use instead, exit 2, before connecting.
    let cases: [(&[&str], &str); 9] = [
        (
            &["pub", "-u", "me", "-P", "pw", "-t", "a", "-m", "x"],
            "mote pub: -u: mote has no user names and passwords: use --token NAME:SECRET",
        ),
        (
            &["sub", "-t", "a", "-P", "pw"],
            "mote sub: -P: mote has no user names",
        ),
        (
            &["ping", "--username", "me"],
            "mote ping: --username: mote has no user names",
        ),
        (
            &["pub", "-r", "-t", "a", "-m", "x"],
            "mote pub: -r: mote has no retained messages and needs none: every topic keeps its last messages; read the latest with mote sub -t TOPIC --from last:1",
        ),
        (
            &["pub", "-t", "a", "-m", "x", "-q", "2"],
            "mote pub: -q 2: mote has no exactly-once delivery; -q 1 (--confirm)",
        ),
        (
            &["sub", "-t", "a", "-q", "2"],
            "mote sub: -q 2: mote has no exactly-once delivery",
        ),
        (
            &["pub", "-t", "/home/temp", "-m", "x"],
            "mote pub: topic \"/home/temp\" starts with '/': mote topics have no leading slash (no empty levels): write \"home/temp\"",
        ),
        (
            &["sub", "-t", "ok/#", "-t", "/home/#"],
            "mote sub: filter \"/home/#\" starts with '/'",
        ),
        (
            &[
                "pub",
                "-h",
                "pi.local:7300",
                "-p",
                "7400",
                "-t",
                "a",
                "-m",
                "x",
            ],
            "mote pub: --host says port 7300 and --port says 7400: give the port once",
        ),
    ];
    for (args, start) in cases {
        let o = mote_exits(args, &[]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.starts_with(start), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // The help says what -h and -q take.
    let help = stdout(&mote(&["pub", "--help"], b""));
    assert!(
        help.contains("-h, --host HOST[:PORT]") && help.contains("-q, --qos 0|1"),
        "{help}"
    );
}

#[test]
fn sizes_not_given_are_derived_and_conflicts_come_together() {
    // Shrinking the memory alone is enough: the ring and the payload limit follow.
    let mut s = Served::start(&["--memory", "1M"]);
    let line = s.wait_log("sizes (those not given derived from those given)");
    assert!(
        line.contains("memory 1M, ring-bytes 128K, max-payload 16K"),
        "{line}"
    );
    let p = s.port();
    let big = "x".repeat(16 * 1024);
    let o = mote(&["pub", "-p", &p, "-t", "a", "-m", &big], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mote(&["pub", "-p", &p, "-t", "a", "-m", &format!("{big}x")], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the broker's limit is 16384"),
        "{}",
        stderr(&o)
    );
    drop(s);
    // Nothing given: no line about derived sizes (the defaults are today's).
    let mut s = Served::start(&["--max-topics", "5"]);
    s.wait_log("(tcp)");
    assert!(
        !s.seen.iter().any(|l| l.contains("sizes (")),
        "{:?}",
        s.seen
    );
    drop(s);
    // Every conflict among values given, from flags, variables or the config file, in one
    // message, each named as it was given.
    let o = mote_exits(
        &[
            "serve",
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "off",
            "--ring-bytes",
            "2M",
            "--max-payload",
            "4M",
        ],
        &[("MOTE_MEMORY", "1M")],
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.starts_with("mote: sizes that do not fit together:\n"),
        "{e}"
    );
    assert!(
        e.contains("\n  - --max-payload 4M must fit in --ring-bytes 2M with "),
        "{e}"
    );
    assert!(
        e.contains("\n  - --ring-bytes 2M must not exceed MOTE_MEMORY=1M\n"),
        "{e}"
    );
    let dir = scratch("sizes");
    let file = dir.join("mote.toml");
    std::fs::write(&file, "memory = \"1M\"\n").unwrap();
    let o = mote_exits(
        &[
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "off",
            "--max-payload",
            "2M",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(
            "mote: --max-payload 2M must fit in memory = \"1M\" in the config file with "
        ),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let help = stdout(&mote(&["serve", "--help"], b""));
    assert!(help.contains("at most an eighth of --memory"), "{help}");
}

#[test]
fn every_listener_binds_to_loopback_unless_told_and_needs_a_token_beyond() {
    // The HTTP edge follows the same rule as TCP, named as it was given.
    let o = mote_exits(
        &["serve", "--tcp", "127.0.0.1:0", "--http", "0.0.0.0:0"],
        &[],
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.starts_with("mote: refusing to listen on 0.0.0.0:0 without a token (--http)"),
        "{e}"
    );
    assert!(
        e.contains("mote token new") && e.contains("--insecure"),
        "{e}"
    );
    let o = mote_exits(
        &["serve", "--tcp", "127.0.0.1:0"],
        &[("MOTE_HTTP", "0.0.0.0:0")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("without a token (MOTE_HTTP)"),
        "{}",
        stderr(&o)
    );
    // --insecure from the variable or the config file opens it, with a warning.
    let mut s = Served::start_with(&["--http", "0.0.0.0:0"], &[("MOTE_INSECURE", "1")]);
    let w = s.wait_log("without a token (--insecure)");
    assert!(w.contains("WARN") && w.contains("(--http)"), "{w}");
    assert!(s.http.unwrap().ip().is_unspecified());
    drop(s);
    let dir = scratch("insecure");
    let file = dir.join("mote.toml");
    std::fs::write(&file, "insecure = true\n").unwrap();
    let mut s = Served::start_on(
        "0.0.0.0:0",
        &["--config", file.to_str().unwrap(), "--http", "off"],
    );
    let w = s.wait_log("(--tcp) is open without a token (--insecure)");
    assert!(!w.contains("listening on"), "{w}");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
    // A token opens both; plain HTTP beyond loopback is warned about (the token in clear).
    let token = stdout(&mote(&["token", "new"], b"")).trim().to_string();
    let mut s = Served::start_on("0.0.0.0:0", &["--token", &token, "--http", "0.0.0.0:0"]);
    let w = s.wait_log("carries the token in clear");
    assert!(
        w.contains("WARN") && w.contains("TLS proxy") && w.contains("--http 0.0.0.0:"),
        "{w}"
    );
    assert!(
        !s.seen
            .iter()
            .any(|l| l.contains("--tcp") && l.contains("in clear")),
        "{:?}",
        s.seen
    );
    drop(s);
    // With a token and no --http the edge stays on loopback (it used to open 0.0.0.0:7271).
    // Port 7271 may be taken on this machine: either way the line names the address chosen.
    let mut child = Command::new(MOTE)
        .args(["serve", "--tcp", "127.0.0.1:0", "--token", &token])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains(":7271") => break l,
            Ok(_) => {}
            Err(e) => panic!("no line about :7271: {e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("http listening on 127.0.0.1:7271")
            || line.contains("cannot listen on 127.0.0.1:7271 (--http)"),
        "{line}"
    );
    assert!(!line.contains("in clear"), "{line}");
}

// ---------------------------------------------------------------------------------------
// Issue 13 (items 3, 4, 5, 9, 10): what a new user tripped over.

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
    lost_and_back(s1, &[&sub], &[&hushed], "back");
}

/// The same for a group member: `mote sub --group` says when it lost the broker and when
/// it is back.
#[test]
fn sub_group_says_when_the_connection_is_lost_and_back() {
    let s1 = Served::start(&[]);
    let p = s1.port();
    let sub = Running::start(&[
        "sub", "-p", &p, "-t", "t", "--group", "g", "--from", "earliest",
    ]);
    let o = mote(&["pub", "-p", &p, "-t", "t", "-m", "a", "--confirm"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sub.out_line(), "a");
    // The group is new to the broker that comes back: it starts from the earliest.
    lost_and_back(s1, &[&sub], &[], "group-back");
}

/// And for a worker: `mote sub --exec` says it too.
#[test]
fn sub_exec_says_when_the_connection_is_lost_and_back() {
    let s1 = Served::start(&[]);
    let p = s1.port();
    let sub = Running::start(&[
        "sub",
        "-p",
        &p,
        "-t",
        "t",
        "--from",
        "earliest",
        "--exec",
        "cat; echo",
    ]);
    let o = mote(&["pub", "-p", &p, "-t", "t", "-m", "a", "--confirm"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sub.out_line(), "a");
    lost_and_back(s1, &[&sub], &[], "exec-back");
}

/// Replaces broker `s1` with one on its port that already holds two messages `b` and `c`
/// of topic `t` (stored, and synced, by a broker the subscribers never saw), and checks
/// that `loud` say they lost the connection, read both and say they are back having
/// replayed 2, and that `hushed` (`--quiet`) read both and say nothing.
fn lost_and_back(s1: Served, loud: &[&Running], hushed: &[&Running], name: &str) {
    let p = s1.port();
    let data = scratch(name);
    let d = data.to_str().unwrap();
    let s2 = Served::start(&["--data", d, "--sync", "always"]);
    let o = mote(
        &["pub", "-p", &s2.port(), "-t", "t", "-l", "--confirm"],
        b"b\nc\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(s2);
    drop(s1);
    for sub in loud {
        let lost = sub.err_line();
        assert!(
            lost.starts_with(&format!("mote sub: lost the connection to 127.0.0.1:{p} (")),
            "{lost}"
        );
    }
    let _s3 = Served::start_on(&format!("127.0.0.1:{p}"), &["--data", d]);
    // A new broker: everything it holds is new to the subscribers.
    for sub in loud {
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
    }
    for sub in hushed {
        assert_eq!(sub.out_line(), "b");
        assert_eq!(sub.out_line(), "c");
        // --quiet: not a word on stderr.
        assert!(
            sub.err.recv_timeout(Duration::from_secs(1)).is_err(),
            "--quiet printed something"
        );
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn sub_exits_1_when_the_broker_refuses_its_subscriptions_after_a_reconnect() {
    let dir = scratch("refused");
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

// ---- Issue 12: managing topics and groups from the command line (`mote topics`,
// `mote topic ...`, `mote groups`, `mote group ...`) and `mote sub --from` by time.
// Tests marked "needs the engine" exercise purge, delete, metadata, seek and starts by
// time, which the engine's admin functions implement.

/// Runs `mote ARGS`, expecting exit 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = mote(args, b"");
    assert!(
        o.status.success(),
        "mote {args:?}: {:?} {}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `mote ARGS`, expecting exit `code`; returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = mote(args, b"");
    assert_eq!(
        o.status.code(),
        Some(code),
        "mote {args:?}: {} {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// Publishes each of `lines` to `topic` (`mote pub -l`, which returns once the broker has
/// them).
fn publish_lines(p: &str, topic: &str, lines: &str) {
    let o = mote(&["pub", "-p", p, "-t", topic, "-l"], lines.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The words of the line of `table` that starts with `first`.
fn row<'t>(table: &'t str, first: &str) -> Vec<&'t str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
        .unwrap_or_else(|| panic!("no line for {first} in\n{table}"))
}

#[test]
fn topics_and_topic_info_show_what_the_broker_holds() {
    let s = Served::start(&[]);
    let p = s.port();
    publish_lines(&p, "sensors/kitchen", "1\n2\n3\n");
    publish_lines(&p, "sensors/hall", "x\n");
    publish_lines(&p, "logs", "y\n");
    // mote topics
    let t = ok(&["topics", "-p", &p]);
    assert_eq!(
        row(&t, "TOPIC"),
        [
            "TOPIC", "STORED", "OFFSETS", "BYTES", "IN/S", "SUBS", "SETTINGS"
        ]
    );
    let k = row(&t, "sensors/kitchen");
    assert_eq!(
        (k[1], k[2], k[k.len() - 1]),
        ("3", "0..3", "default"),
        "{t}"
    );
    assert_eq!(t.lines().count(), 4, "{t}");
    // Columns line up: every row is as wide as the head up to the last column.
    let at = t.lines().next().unwrap().find("SETTINGS").unwrap();
    assert!(t.lines().all(|l| l.len() >= at), "{t}");
    // mote topics 'sensors/#' --json
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["topics", "sensors/#", "-p", &p, "--json"])).unwrap();
    let names: Vec<&str> = j["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sensors/kitchen", "sensors/hall"]);
    // mote topic info sensors/kitchen
    let info = ok(&["topic", "info", "sensors/kitchen", "-p", &p]);
    assert_eq!(row(&info, "topic"), ["topic", "sensors/kitchen"]);
    assert_eq!(row(&info, "offsets"), ["offsets", "0..3"]);
    assert_eq!(row(&info, "stored")[..3], ["stored", "3", "messages,"]);
    assert_eq!(row(&info, "persist"), ["persist", "false", "default"]);
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "topic",
        "info",
        "sensors/kitchen",
        "-p",
        &p,
        "--json",
    ]))
    .unwrap();
    assert_eq!((&j["stored"], &j["next"]), (&3.into(), &3.into()));
    // Refusals: the broker's message, exit 1; usage errors exit 2.
    assert_eq!(
        fails(&["topic", "info", "sensors/attic", "-p", &p], 1),
        "mote topic: no topic \"sensors/attic\"\n"
    );
    assert!(fails(&["topic", "info", "-p", &p], 2).contains("give the topic"));
    assert!(fails(&["topic", "info", "a/+", "-p", &p], 2).contains("bad topic"));
    assert!(fails(&["topic"], 2).contains("Usage: mote topic <COMMAND>"));
    assert!(fails(&["topic", "frob", "x"], 2).contains("unknown command \"frob\""));
    assert!(fails(&["topics", "a", "b", "-p", &p], 2).contains("one filter at most"));
    assert!(fails(&["topics", "a/#/b", "-p", &p], 2).contains("bad filter"));
    let help = ok(&["--help"]);
    for cmd in ["topics", "topic ", "groups", "group "] {
        assert!(help.contains(&format!("\n  {cmd}")), "{help}");
    }
    assert!(ok(&["topic", "show", "--help"]).contains("--from WHERE"));
}

#[test]
fn topic_show_prints_the_stored_messages_and_stops() {
    let s = Served::start(&[]);
    let p = s.port();
    publish_lines(&p, "lines", "1\n2\n3\n4\n5\n");
    assert_eq!(
        ok(&["topic", "show", "lines", "-p", &p, "-n", "2"]),
        "4\n5\n"
    );
    assert_eq!(
        ok(&["topic", "show", "lines", "-p", &p, "--from", "1", "-n", "2"]),
        "2\n3\n"
    );
    assert_eq!(
        ok(&[
            "topic", "show", "lines", "-p", &p, "--from", "earliest", "-v"
        ]),
        "lines 1\nlines 2\nlines 3\nlines 4\nlines 5\n"
    );
    assert_eq!(
        ok(&["topic", "show", "lines", "-p", &p, "--from", "last:1"]),
        "5\n"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "topic", "show", "lines", "-p", &p, "-n", "1", "--json",
    ]))
    .unwrap();
    assert_eq!((&j["offset"], &j["payload"]), (&4.into(), &"5".into()));
    // Nothing after the end: nothing printed, no wait.
    assert_eq!(
        ok(&["topic", "show", "lines", "-p", &p, "--from", "latest"]),
        ""
    );
    assert_eq!(ok(&["topic", "show", "lines", "-p", &p, "--from", "9"]), "");
    assert_eq!(
        fails(&["topic", "show", "nothing", "-p", &p], 1),
        "mote topic: no topic \"nothing\"\n"
    );
}

#[test]
fn groups_and_group_info_show_the_groups() {
    let s = Served::start(&[]);
    let p = s.port();
    assert_eq!(ok(&["groups", "-p", &p]), "no groups\n");
    // A durable group that keeps its position with no member connected.
    let c =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    let g = c
        .subscribe_group(
            "jobs/#",
            mote_sdk::Group::new("workers")
                .durable(true)
                .from(mote_sdk::Start::Earliest),
        )
        .unwrap();
    c.publish_confirmed("jobs/a", "1").unwrap();
    let t = ok(&["groups", "-p", &p]);
    assert_eq!(
        row(&t, "GROUP"),
        [
            "GROUP",
            "FILTER",
            "MEMBERS",
            "IN-FLIGHT",
            "BACKLOG",
            "DURABLE",
            "AGE"
        ]
    );
    let w = row(&t, "workers");
    assert_eq!((w[1], w[2], w[5]), ("jobs/#", "1", "yes"), "{t}");
    let info = ok(&["group", "info", "workers", "-p", &p]);
    assert_eq!(row(&info, "group"), ["group", "workers"]);
    assert_eq!(row(&info, "filter"), ["filter", "jobs/#"]);
    assert_eq!(row(&info, "members"), ["members", "1"]);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["group", "info", "workers", "-p", &p, "--json"])).unwrap();
    assert_eq!(
        (&j["name"], &j["settings"]["durable"]),
        (&"workers".into(), &true.into())
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&["groups", "-p", &p, "--json"])).unwrap();
    assert_eq!(j["groups"][0]["name"], "workers");
    drop(g);
    assert_eq!(
        fails(&["group", "info", "nobody", "-p", &p], 1),
        "mote group: no group \"nobody\"\n"
    );
    assert!(fails(&["group", "seek", "workers", "-p", &p], 2).contains("give where to with --to"));
    assert!(
        fails(&["group", "seek", "workers", "--to", "soon", "-p", &p], 2)
            .contains("invalid value \"soon\" for --to")
    );
    assert!(fails(&["group"], 2).contains("Usage: mote group <COMMAND>"));
    assert!(fails(&["groups", "x", "-p", &p], 2).contains("unexpected argument"));
}

/// A config file with two tokens on the `sensors/` topics: `reader` without a manage
/// rule, `ops` with `manage = ["sensors/#"]`. Returns the served broker and both tokens
/// as `--token` takes them.
fn manage_tokens(name: &str) -> (Served, String, String) {
    let dir = scratch(name);
    let file = dir.join("mote.toml");
    let reader = "reader-secret-0123456789";
    let ops = "ops-secret-0123456789abcdef";
    std::fs::write(
        &file,
        format!(
            "[tokens.reader]\ntoken = \"{reader}\"\npublish = [\"sensors/#\"]\nsubscribe = [\"sensors/#\"]\n\n\
             [tokens.ops]\ntoken = \"{ops}\"\npublish = [\"sensors/#\"]\nsubscribe = [\"sensors/#\"]\nmanage = [\"sensors/#\"]\n"
        ),
    )
    .unwrap();
    let s = Served::start(&["--config", file.to_str().unwrap()]);
    (s, format!("reader:{reader}"), format!("ops:{ops}"))
}

#[test]
fn changes_without_the_manage_right_are_refused_naming_the_rule() {
    let (s, reader, ops) = manage_tokens("manage-refused");
    let p = s.port();
    let o = mote(
        &["pub", "-p", &p, "--token", &reader, "-t", "sensors/a", "-l"],
        b"1\n2\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for cmd in [&["topic", "purge"][..], &["topic", "delete"][..]] {
        let mut args = cmd.to_vec();
        args.extend(["sensors/a", "-p", &p, "--token", &reader]);
        assert_eq!(
            fails(&args, 1),
            "mote topic: token \"reader\" may not manage \"sensors/a\" (its manage rules: none)\n"
        );
    }
    assert_eq!(
        fails(
            &[
                "topic",
                "meta",
                "sensors/a",
                "k=v",
                "-p",
                &p,
                "--token",
                &reader
            ],
            1
        ),
        "mote topic: token \"reader\" may not manage \"sensors/a\" (its manage rules: none)\n"
    );
    // Reading needs only the subscribe right.
    let t = ok(&["topics", "-p", &p, "--token", &reader]);
    assert_eq!(row(&t, "sensors/a")[1], "2");
    ok(&["topic", "info", "sensors/a", "-p", &p, "--token", &reader]);
    // A manage rule covers only its topics.
    assert_eq!(
        fails(
            &["topic", "purge", "garage/door", "-p", &p, "--token", &ops],
            1
        ),
        "mote topic: token \"ops\" may not manage \"garage/door\" (its manage rules: sensors/#)\n"
    );
    // Without a token at all, a broker with tokens says so.
    assert!(fails(&["topics", "-p", &p], 1).contains("token"));
}

/// Needs the engine (`purge_topic`).
#[test]
fn the_manage_rule_allows_purge() {
    let (s, _, ops) = manage_tokens("manage-allowed");
    let p = s.port();
    let o = mote(
        &["pub", "-p", &p, "--token", &ops, "-t", "sensors/a", "-l"],
        b"1\n2\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        ok(&["topic", "purge", "sensors/a", "-p", &p, "--token", &ops]),
        "purged sensors/a: 2 messages dropped\n"
    );
}

/// Needs the engine (`purge_topic`, `delete_topic`, `set_topic_meta`).
#[test]
fn purge_delete_and_meta_from_the_cli() {
    let s = Served::start(&[]);
    let p = s.port();
    publish_lines(&p, "sensors/a", "1\n2\n3\n");
    assert_eq!(
        ok(&["topic", "purge", "sensors/a", "-p", &p]),
        "purged sensors/a: 3 messages dropped\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["topic", "info", "sensors/a", "-p", &p, "--json"])).unwrap();
    assert_eq!(
        (&j["stored"], &j["first"], &j["next"]),
        (&0.into(), &3.into(), &3.into())
    );
    assert_eq!(ok(&["topic", "show", "sensors/a", "-p", &p]), "");
    // mote topic meta sensors/a owner=kitchen-pi
    assert_eq!(
        ok(&[
            "topic",
            "meta",
            "sensors/a",
            "owner=kitchen-pi",
            "room=hall",
            "-p",
            &p
        ]),
        "owner=kitchen-pi\nroom=hall\n"
    );
    assert_eq!(
        ok(&["topic", "meta", "sensors/a", "room=", "-p", &p]),
        "owner=kitchen-pi\n"
    );
    assert_eq!(
        ok(&["topic", "meta", "sensors/a", "-p", &p]),
        "owner=kitchen-pi\n"
    );
    assert!(ok(&["topic", "info", "sensors/a", "-p", &p]).contains("\n  owner=kitchen-pi\n"));
    assert!(fails(&["topic", "meta", "sensors/a", "owner", "-p", &p], 2).contains("KEY=VALUE"));
    let o = mote(
        &["pub", "-p", &p, "-t", "sensors/a", "-m", "4", "--confirm"],
        b"",
    );
    assert_eq!(stdout(&o), "3\n", "offsets go on after a purge");
    assert_eq!(
        ok(&["topic", "delete", "sensors/a", "-p", &p]),
        "deleted sensors/a: 1 message dropped\n"
    );
    assert_eq!(
        fails(&["topic", "info", "sensors/a", "-p", &p], 1),
        "mote topic: no topic \"sensors/a\"\n"
    );
    assert_eq!(
        fails(&["topic", "delete", "sensors/a", "-p", &p], 1),
        "mote topic: no topic \"sensors/a\"\n"
    );
    assert_eq!(ok(&["topics", "-p", &p]), "no topics\n");
    let o = mote(
        &["pub", "-p", &p, "-t", "sensors/a", "-m", "5", "--confirm"],
        b"",
    );
    assert_eq!(stdout(&o), "4\n", "a re-created topic continues above");
    // Its metadata went with it.
    assert_eq!(ok(&["topic", "meta", "sensors/a", "-p", &p]), "");
}

/// Needs the engine (`offset_at_time`).
#[test]
fn sub_from_ago_and_time() {
    let s = Served::start(&[]);
    let p = s.port();
    publish_lines(&p, "logs", "a\nb\nc\n");
    for from in ["ago:10m", "10m", "time:2020-01-01T00:00:00Z"] {
        let o = mote(
            &[
                "sub", "-p", &p, "-t", "logs", "--from", from, "-C", "3", "-W", "10",
            ],
            b"",
        );
        assert_eq!(stdout(&o), "a\nb\nc\n", "--from {from}: {}", stderr(&o));
    }
    // Nothing stored since then: nothing comes (until something is published).
    let o = mote(
        &[
            "sub",
            "-p",
            &p,
            "-t",
            "logs",
            "--from",
            "time:2100-01-01T00:00:00Z",
            "-C",
            "1",
            "-W",
            "300ms",
        ],
        b"",
    );
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(1), ""));
    assert_eq!(
        ok(&["topic", "show", "logs", "-p", &p, "--from", "ago:10m"]),
        "a\nb\nc\n"
    );
    assert_eq!(
        ok(&[
            "topic",
            "show",
            "logs",
            "-p",
            &p,
            "--from",
            "time:2100-01-01T00:00:00Z"
        ]),
        ""
    );
}

/// Needs the engine (`delete_topic`, `Delivery::Removed`, offsets above a removed topic's).
/// A publisher keeps publishing, fire-and-forget and confirmed, while `mote topic delete`
/// runs; a subscriber reads along. No panic, the subscriber is told, and the publisher's
/// next publishes re-create the topic above its old offsets (a publish never fails for it).
#[test]
fn a_delete_racing_a_publisher_and_a_subscriber() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let s = Served::start(&[]);
    let p = s.port();
    let sub = Running::start(&["sub", "-p", &p, "-t", "race/#", "-v"]);
    // The subscriber is in once it prints a message published after it started.
    let c =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.publish_confirmed("race/t", "hello").unwrap();
        if let Ok(l) = sub.out.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(l, "race/t hello");
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber never started");
    }
    while sub.out.try_recv().is_ok() {}
    let stop = Arc::new(AtomicBool::new(false));
    // The publisher stops when the test ends, passed or not.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop.clone());
    let offsets = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (stop, offsets, c) = (stop.clone(), offsets.clone(), c.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.publish("race/t", i.to_string()).unwrap();
                let o = c.publish_confirmed("race/t", i.to_string()).unwrap();
                offsets.lock().unwrap().push(o);
                i += 1;
            }
            c.flush().unwrap();
        })
    };
    // Let a few go by, then delete while they keep coming.
    let deadline = Instant::now() + Duration::from_secs(10);
    while offsets.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "the publisher is stuck");
        std::thread::yield_now();
    }
    let out = ok(&["topic", "delete", "race/t", "-p", &p]);
    assert!(out.starts_with("deleted race/t: "), "{out}");
    let notice = sub.err_line();
    assert!(
        notice.starts_with("mote sub: topic race/t was deleted on the broker"),
        "{notice}"
    );
    // Published after the delete: the publisher re-created the topic.
    let after = offsets.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while offsets.lock().unwrap().len() < after + 20 {
        assert!(
            Instant::now() < deadline,
            "the publisher stopped after the delete"
        );
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let offsets = offsets.lock().unwrap().clone();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets never repeat nor go back: {offsets:?}"
    );
    // The subscriber still reads the re-created topic.
    let line = sub.out_line();
    assert!(line.starts_with("race/t "), "{line}");
    ok(&["ping", "-p", &p]);
}

/// Needs the engine (`seek_group`). A member holds deliveries unacked while the group is
/// moved back: its acks of the old tags are refused and the messages come again.
#[test]
fn seek_of_a_durable_group_with_deliveries_in_flight() {
    let s = Served::start(&[]);
    let p = s.port();
    let c =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    for i in 0..5 {
        c.publish_confirmed("jobs/a", i.to_string()).unwrap();
    }
    let mut member = c
        .subscribe_group(
            "jobs/#",
            mote_sdk::Group::new("workers")
                .durable(true)
                .from(mote_sdk::Start::Earliest)
                .prefetch(10),
        )
        .unwrap();
    let mut held = Vec::new();
    while held.len() < 5 {
        match member.recv_timeout(Duration::from_secs(10)).unwrap() {
            Some(mote_sdk::GroupEvent::Message(d)) => held.push(d),
            other => panic!("{other:?}"),
        }
    }
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["group", "info", "workers", "-p", &p, "--json"])).unwrap();
    assert_eq!(j["in_flight"], 5);
    let out = ok(&["group", "seek", "workers", "--to", "earliest", "-p", &p]);
    assert!(
        out.starts_with("moved group workers to earliest: "),
        "{out}"
    );
    for d in held {
        d.ack().unwrap();
    }
    let e = c.flush().unwrap_err();
    assert_eq!(e.code(), Some(mote_sdk::ErrorCode::UNKNOWN_DELIVERY), "{e}");
    let mut again = Vec::new();
    while again.len() < 5 {
        match member.recv_timeout(Duration::from_secs(10)).unwrap() {
            Some(mote_sdk::GroupEvent::Message(d)) => {
                again.push(d.message().offset);
                d.ack().unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(again, [0, 1, 2, 3, 4]);
    c.flush().unwrap();
    // Seek by time, then delete.
    ok(&[
        "group",
        "seek",
        "workers",
        "--to",
        "time:2020-01-01T00:00:00Z",
        "-p",
        &p,
    ]);
    drop(member);
    assert_eq!(
        ok(&["group", "delete", "workers", "-p", &p]),
        "deleted group workers\n"
    );
    assert_eq!(
        fails(&["group", "info", "workers", "-p", &p], 1),
        "mote group: no group \"workers\"\n"
    );
    assert_eq!(ok(&["groups", "-p", &p]), "no groups\n");
}

/// Needs the engine (`delete_topic` frees the name).
#[test]
fn max_topics_3_and_a_delete_makes_room() {
    let s = Served::start(&["--max-topics", "3"]);
    let p = s.port();
    for t in ["a", "b", "c"] {
        publish_lines(&p, t, "x\n");
    }
    let o = mote(&["pub", "-p", &p, "-t", "d", "-m", "x", "--confirm"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("topic_limit") || stderr(&o).contains("topics"),
        "{}",
        stderr(&o)
    );
    ok(&["topic", "delete", "a", "-p", &p]);
    let o = mote(&["pub", "-p", &p, "-t", "d", "-m", "x", "--confirm"], b"");
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
}

/// Needs the engine (purge, delete, seek, --from by time). The README's "Managing topics and
/// groups" examples, as written (with `-p`, and `-C 1` so that the last one ends).
#[test]
fn readme_managing_topics_and_groups() {
    let s = Served::start(&[]);
    let p = s.port();
    publish_lines(&p, "sensors/kitchen", "21.5\n21.6\n");
    publish_lines(&p, "logs", "started\n");
    let c =
        mote_sdk::blocking::Client::connect(mote_sdk::Options::new(s.addr.to_string())).unwrap();
    drop(
        c.subscribe_group("jobs/#", mote_sdk::Group::new("workers").durable(true))
            .unwrap(),
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Managing topics and groups")
        .nth(1)
        .unwrap()
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut ran = 0;
    for line in section.lines() {
        let cmd = line.split(" # ").next().unwrap().trim();
        let mut args: Vec<String> = cmd
            .split_whitespace()
            .skip(1)
            .map(|a| a.trim_matches('\'').to_string())
            .collect();
        args.extend(["-p".to_string(), p.clone()]);
        if args[0] == "sub" {
            args.extend(["-C", "1", "-W", "10"].map(String::from));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
        ran += 1;
    }
    assert_eq!(ran, 12);
}

// ---- Issue 12: `mote sub --group NAME --ephemeral | --group-expiry`, and a removed topic
// under `--exec`.

/// `mote group info NAME --json`, or `None` when the broker has no such group.
fn group_info(p: &str, name: &str) -> Option<serde_json::Value> {
    let o = mote(&["group", "info", name, "-p", p, "--json"], b"");
    if !o.status.success() {
        assert!(stderr(&o).contains("no group"), "{}", stderr(&o));
        return None;
    }
    Some(serde_json::from_str(&stdout(&o)).unwrap())
}

/// Polls `cond` until it holds, for at most 10 s (each poll runs a `mote` command).
fn within_10s(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
    }
}

#[test]
fn sub_group_ephemeral_goes_with_its_member_and_group_expiry_is_kept() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut w = Running::start(&[
        "sub",
        "-p",
        &p,
        "-t",
        "jobs/#",
        "--group",
        "scratch",
        "--ephemeral",
        "-C",
        "1",
    ]);
    within_10s("the ephemeral group", || {
        group_info(&p, "scratch").is_some()
    });
    let i = group_info(&p, "scratch").unwrap();
    assert_eq!(i["settings"]["durable"], false, "{i}");
    assert_eq!(i["expiry_ms"], serde_json::Value::Null, "{i}");
    let o = mote(&["pub", "-p", &p, "-t", "jobs/a", "-m", "one"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(w.out_line(), "one");
    assert!(w.exit_within(Duration::from_secs(10)).success());
    within_10s("the group gone with its member", || {
        group_info(&p, "scratch").is_none()
    });

    let mut n = Running::start(&[
        "sub",
        "-p",
        &p,
        "-t",
        "jobs/#",
        "--group",
        "nightly",
        "--group-expiry",
        "90s",
        "-C",
        "1",
    ]);
    within_10s("the durable group", || group_info(&p, "nightly").is_some());
    let i = group_info(&p, "nightly").unwrap();
    assert_eq!(i["settings"]["durable"], true, "{i}");
    assert_eq!(i["expiry_ms"], 90_000, "{i}");
    let o = mote(&["pub", "-p", &p, "-t", "jobs/a", "-m", "two"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(n.out_line(), "two");
    assert!(n.exit_within(Duration::from_secs(10)).success());
    within_10s("the durable group without members", || {
        group_info(&p, "nightly").is_some_and(|i| i["members"] == 0)
    });

    for (args, says) in [
        (
            &["--group", "g", "--ephemeral", "--durable"][..],
            "--ephemeral and --durable contradict each other",
        ),
        (
            &["--group", "g", "--ephemeral", "--group-expiry", "1h"][..],
            "--group-expiry is for a durable group",
        ),
        (&["--ephemeral"][..], "--ephemeral needs --group NAME"),
        (
            &["--group-expiry", "1h"][..],
            "--group-expiry needs --group NAME",
        ),
    ] {
        let mut argv = vec!["sub", "-p", &p, "-t", "jobs/#"];
        argv.extend_from_slice(args);
        let o = mote(&argv, b"");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn sub_exec_reports_a_deleted_topic_and_keeps_working() {
    let s = Served::start(&[]);
    let p = s.port();
    for group in [None, Some("w")] {
        let topic = format!("logs/{}", group.unwrap_or("plain"));
        let o = mote(&["pub", "-p", &p, "-t", &topic, "-m", "first"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let mut argv = vec![
            "sub",
            "-p",
            &p,
            "-t",
            &topic,
            "--from",
            "earliest",
            "-C",
            "2",
            "--exec",
            "cat; echo",
        ];
        if let Some(g) = group {
            argv.extend_from_slice(&["--group", g]);
        }
        let mut x = Running::start(&argv);
        assert_eq!(x.out_line(), "first");
        let o = mote(&["topic", "delete", &topic, "-p", &p], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        let said = x.err_line();
        assert!(
            said.contains(&format!("topic {topic} was deleted on the broker")),
            "{said}"
        );
        let o = mote(&["pub", "-p", &p, "-t", &topic, "-m", "second"], b"");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(x.out_line(), "second", "the worker goes on");
        assert!(x.exit_within(Duration::from_secs(10)).success());
    }
}

#[test]
fn sub_exec_stops_on_sigterm_while_the_broker_is_away() {
    let s = Served::start(&[]);
    let p = s.port();
    let mut sub = Running::start(&[
        "sub", "-p", &p, "-t", "jobs/#", "--group", "w", "--exec", "cat",
    ]);
    within_10s("the member", || group_info(&p, "w").is_some());
    drop(s);
    assert!(sub.err_line().contains("lost the connection"));
    let pid = rustix::process::Pid::from_raw(i32::try_from(sub.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let st = sub.exit_within(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
}
