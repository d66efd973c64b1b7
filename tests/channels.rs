//! Peer channels end to end: real brokers on 127.0.0.1:0 (in a thread, or `mote serve`
//! as a process for kills and restarts), SDK clients and the `mote chan` binary over TCP.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Broker;
use common::served::{MOTE, Served};
use mote::auth::{Auth, Rules};
use mote::broker::Config;
use mote_sdk::blocking::{Channel, Client};
use mote_sdk::secure::Token;
use mote_sdk::{ChannelEvent, Error, ErrorCode, ManageOp, Options};

const WAIT: Duration = Duration::from_secs(5);

/// The next event within `WAIT` that is not a presence change.
fn next_message(ch: &mut Channel) -> String {
    loop {
        match ch.recv_timeout(WAIT) {
            Ok(Some(ChannelEvent::Message(m))) => return String::from_utf8(m.payload).unwrap(),
            Ok(Some(ChannelEvent::RemoteConnected | ChannelEvent::RemoteDisconnected)) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The next event within `WAIT`, whatever it is.
fn next_event(ch: &mut Channel) -> ChannelEvent {
    match ch.recv_timeout(WAIT) {
        Ok(Some(ev)) => ev,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Waits for [`ChannelEvent::Ended`], letting presence changes through.
fn until_ended(ch: &mut Channel) {
    loop {
        match next_event(ch) {
            ChannelEvent::Ended => return,
            ChannelEvent::RemoteConnected | ChannelEvent::RemoteDisconnected => {}
            other => panic!("expected the end, got {other:?}"),
        }
    }
}

/// Waits for [`ChannelEvent::RemoteDisconnected`], letting a late `RemoteConnected`
/// through (presence is not ordered with the messages).
fn until_disconnected(ch: &mut Channel) {
    loop {
        match next_event(ch) {
            ChannelEvent::RemoteDisconnected => return,
            ChannelEvent::RemoteConnected => {}
            other => panic!("expected the remote to go, got {other:?}"),
        }
    }
}

/// No message arrives within `d` (presence changes are let through).
fn no_message(ch: &mut Channel, d: Duration) {
    loop {
        match ch.recv_timeout(d) {
            Err(Error::Timeout) => return,
            Ok(Some(ChannelEvent::RemoteConnected | ChannelEvent::RemoteDisconnected)) => {}
            other => panic!("expected nothing more, got {other:?}"),
        }
    }
}

fn opts(addr: std::net::SocketAddr) -> Options {
    Options::new(addr.to_string())
}

#[test]
fn two_peers_exchange_both_ways_in_order_each_once() {
    let b = Broker::default();
    let (ca, cb) = (
        Client::connect(b.options()).unwrap(),
        Client::connect(b.options()).unwrap(),
    );
    let mut a = Channel::connect(&ca, "pair").unwrap();
    let mut l = Channel::listen(&cb, "pair").unwrap();
    for i in 0..200 {
        a.send(format!("a{i}")).unwrap();
        l.send(format!("l{i}")).unwrap();
    }
    for i in 0..200 {
        assert_eq!(next_message(&mut l), format!("a{i}"));
        assert_eq!(next_message(&mut a), format!("l{i}"));
    }
    no_message(&mut l, Duration::from_millis(300));
    no_message(&mut a, Duration::from_millis(300));
    // What the two sides are, on the broker: two topics and two durable groups.
    let groups = ca.manage(ManageOp::Groups).unwrap();
    assert!(groups.contains("chan:pair:local"), "{groups}");
    assert!(groups.contains("chan:pair:remote"), "{groups}");
}

#[test]
fn explicit_roles_pair_up_and_bad_names_are_refused_before_sending() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let mut cam = Channel::with_roles(&c, "feed", "camera", "viewer").unwrap();
    let mut view = Channel::with_roles(&c, "feed", "viewer", "camera").unwrap();
    cam.send("frame 1").unwrap();
    view.send("more light").unwrap();
    assert_eq!(next_message(&mut view), "frame 1");
    assert_eq!(next_message(&mut cam), "more light");
    for (name, mine, theirs) in [
        ("a/b", "local", "remote"),
        ("", "local", "remote"),
        ("#", "local", "remote"),
        (&"x".repeat(33) as &str, "local", "remote"),
        ("ok", "same", "same"),
        ("ok", "a+b", "remote"),
    ] {
        match Channel::with_roles(&c, name, mine, theirs) {
            Err(e @ Error::Channel { .. }) => {
                assert!(e.to_string().starts_with("bad channel"), "{e}");
            }
            other => panic!("{name:?} {mine:?} {theirs:?}: {other:?}"),
        }
    }
}

#[test]
fn presence_says_connected_also_when_the_remote_was_there_first_and_disconnected_when_it_leaves() {
    let b = Broker::default();
    let (ca, cb) = (
        Client::connect(b.options()).unwrap(),
        Client::connect(b.options()).unwrap(),
    );
    let mut a = Channel::connect(&ca, "p").unwrap();
    assert_eq!(a.as_async().remote_connected(), None);
    let mut l = Channel::listen(&cb, "p").unwrap();
    // `a` was there first: `l` hears it at once; `a` hears `l` join.
    assert_eq!(next_event(&mut l), ChannelEvent::RemoteConnected);
    assert_eq!(next_event(&mut a), ChannelEvent::RemoteConnected);
    drop(l);
    cb.close().unwrap();
    assert_eq!(next_event(&mut a), ChannelEvent::RemoteDisconnected);
    assert_eq!(a.as_async().remote_connected(), Some(false));
    // Back again.
    let cb = Client::connect(b.options()).unwrap();
    let _l = Channel::listen(&cb, "p").unwrap();
    assert_eq!(next_event(&mut a), ChannelEvent::RemoteConnected);
}

/// A `mote chan` child process: its stdout lines and stderr lines on channels.
struct ChanProc {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl ChanProc {
    fn start(port: &str, args: &[&str]) -> ChanProc {
        let mut cmd = Command::new(MOTE);
        cmd.args(["chan", "-p", port]).args(args);
        ChanProc::spawn(cmd)
    }

    /// `sh -c LINE` with `mote` on the `PATH`.
    fn shell(line: &str) -> ChanProc {
        ChanProc::spawn(shell(&format!("exec {line}")))
    }

    fn spawn(mut cmd: Command) -> ChanProc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        ChanProc { child, out, err }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn line(&self) -> String {
        self.out
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line from mote chan: {e}"))
    }

    /// Waits for `want` on stderr, passing over other lines.
    fn err_until(&self, want: &str) {
        loop {
            if self.err_line() == want {
                return;
            }
        }
    }

    fn err_line(&self) -> String {
        self.err
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("nothing on mote chan's stderr: {e}"))
    }

    /// Closes stdin and waits (bounded) for the exit status.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("mote chan did not exit after EOF on stdin");
    }
}

impl Drop for ChanProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh -c LINE` with the directory of the `mote` under test first on the `PATH`.
fn shell(line: &str) -> Command {
    let dir = std::path::Path::new(MOTE).parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", line]).env("PATH", path);
    cmd
}

#[test]
fn the_readme_channel_examples_work_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Peer channels\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let commands: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("mote chan") || l.starts_with("echo "))
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(
        commands,
        [
            "mote chan door --listen",
            "mote chan door",
            "echo 'lights off' | mote chan door --end"
        ]
    );
    let s = Served::start(&[]);
    let p = format!(" -p {}", s.port());
    let mut one = ChanProc::shell(&(commands[0].to_string() + &p));
    let mut two = ChanProc::shell(&(commands[1].to_string() + &p));
    one.say("hello from one");
    assert_eq!(two.line(), "hello from one");
    two.say("hello from two");
    assert_eq!(one.line(), "hello from two");
    one.err_until("remote connected");
    assert!(two.finish().success());
    one.err_until("remote disconnected");
    let status = shell(&(commands[2].to_string() + &p)).status().unwrap();
    assert!(status.success());
    assert_eq!(one.line(), "lights off");
    one.err_until("channel ended by the remote");
    assert!(one.finish().success());
}

#[test]
fn the_cli_talks_to_the_sdk_and_a_killed_peer_is_seen_as_gone() {
    let s = Served::start(&[]);
    let mut remote = ChanProc::start(&s.port(), &["door", "--listen"]);
    remote.say("from the cli");
    let c = Client::connect(opts(s.addr)).unwrap();
    let mut local = Channel::connect(&c, "door").unwrap();
    assert_eq!(next_message(&mut local), "from the cli");
    // The presence word may come after the message.
    if local.as_async().remote_connected() != Some(true) {
        assert_eq!(next_event(&mut local), ChannelEvent::RemoteConnected);
    }
    local.send("from the sdk").unwrap();
    assert_eq!(remote.line(), "from the sdk");
    assert_eq!(remote.err_line(), "remote connected");
    // Its ack is on the broker (a kill before would bring the message back: at least
    // once across a crash of the reader).
    common::eventually(WAIT, "the remote's ack", || {
        let info = c
            .manage(ManageOp::GroupInfo {
                group: "chan:door:remote",
            })
            .unwrap();
        info.contains("\"in_flight\":0")
    });
    // kill -9: no goodbye from the process; the broker says it.
    remote.child.kill().unwrap();
    remote.child.wait().unwrap();
    assert_eq!(next_event(&mut local), ChannelEvent::RemoteDisconnected);
    // What is sent meanwhile waits for the next `mote chan`.
    local.send("while you were out").unwrap();
    let back = ChanProc::start(&s.port(), &["door", "--listen"]);
    assert_eq!(back.line(), "while you were out");
    assert_eq!(next_event(&mut local), ChannelEvent::RemoteConnected);
    assert!(back.finish().success());
}

#[test]
fn the_cli_ends_the_channel_at_eof_with_end() {
    let s = Served::start(&[]);
    let c = Client::connect(opts(s.addr)).unwrap();
    let mut local = Channel::connect(&c, "bye").unwrap();
    let mut remote = ChanProc::start(&s.port(), &["bye", "--listen", "--end"]);
    remote.say("last words");
    assert!(remote.finish().success());
    assert_eq!(next_message(&mut local), "last words");
    until_ended(&mut local);
    assert!(matches!(local.send("anyone?"), Err(Error::ChannelEnded)));
    local.end().unwrap();
    // Both sides removed what they read: nothing of the channel is left.
    let topics = c
        .manage(ManageOp::Topics {
            filter: "$chan/#",
            from: 0,
        })
        .unwrap();
    assert!(!topics.contains("$chan/bye"), "{topics}");
    let groups = c.manage(ManageOp::Groups).unwrap();
    assert!(!groups.contains("chan:bye"), "{groups}");
}

#[test]
fn the_cli_without_end_leaves_the_channel_open() {
    let s = Served::start(&[]);
    let c = Client::connect(opts(s.addr)).unwrap();
    let mut local = Channel::connect(&c, "stay").unwrap();
    let mut remote = ChanProc::start(&s.port(), &["stay", "--listen"]);
    remote.say("one");
    assert_eq!(next_message(&mut local), "one");
    assert!(remote.finish().success());
    // The presence word and the messages come through two subscriptions: `up` may come
    // after "one" (CI saw it), before the `down` this waits for.
    until_disconnected(&mut local);
    local.send("still open").unwrap();
    let again = ChanProc::start(&s.port(), &["stay", "--listen"]);
    assert_eq!(again.line(), "still open");
}

#[test]
fn a_side_that_goes_away_gets_everything_in_order_exactly_once_when_back() {
    let b = Broker::default();
    let ca = Client::connect(b.options()).unwrap();
    let a = Channel::connect(&ca, "job").unwrap();
    {
        let cb = Client::connect(b.options()).unwrap();
        let mut l = Channel::listen(&cb, "job").unwrap();
        for i in 0..10 {
            a.send(format!("m{i}")).unwrap();
        }
        for i in 0..10 {
            assert_eq!(next_message(&mut l), format!("m{i}"));
        }
        // The process goes: its connection with it.
        drop(l);
        cb.close().unwrap();
    }
    for i in 10..30 {
        a.send(format!("m{i}")).unwrap();
    }
    let cb = Client::connect(b.options()).unwrap();
    let mut l = Channel::listen(&cb, "job").unwrap();
    for i in 10..30 {
        assert_eq!(next_message(&mut l), format!("m{i}"));
    }
    no_message(&mut l, Duration::from_millis(500));
}

#[test]
fn a_lost_connection_loses_and_repeats_nothing() {
    let b = Broker::default();
    let proxy = common::Proxy::start(b.addr);
    let ca = Client::connect(b.options()).unwrap();
    let a = Channel::connect(&ca, "flaky").unwrap();
    let cb = Client::connect(opts(proxy.addr)).unwrap();
    let mut l = Channel::listen(&cb, "flaky").unwrap();
    let mut got = Vec::new();
    for i in 0..300 {
        a.send(format!("m{i}")).unwrap();
        if i % 100 == 50 {
            // The SDK reconnects and joins the group again.
            proxy.cut();
        }
        if i % 10 == 0 {
            while let Ok(Some(ev)) = l.recv_timeout(Duration::from_millis(1)) {
                if let ChannelEvent::Message(m) = ev {
                    got.push(String::from_utf8(m.payload).unwrap());
                }
            }
        }
    }
    while got.len() < 300 {
        got.push(next_message(&mut l));
    }
    let want: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    no_message(&mut l, Duration::from_millis(500));
}

#[test]
fn end_is_seen_by_the_other_side_after_what_came_before_even_when_it_was_away() {
    let b = Broker::default();
    let ca = Client::connect(b.options()).unwrap();
    let a = Channel::connect(&ca, "done").unwrap();
    a.send("first").unwrap();
    a.send("second").unwrap();
    a.end().unwrap();
    // The listener comes after the end: it still gets both, then the end.
    let cb = Client::connect(b.options()).unwrap();
    let mut l = Channel::listen(&cb, "done").unwrap();
    assert_eq!(next_message(&mut l), "first");
    assert_eq!(next_message(&mut l), "second");
    until_ended(&mut l);
    assert!(matches!(l.send("late"), Err(Error::ChannelEnded)));
    // The stream is over; this call also removes the listener's part of the state.
    assert!(l.recv().is_none());
    let topics = cb
        .manage(ManageOp::Topics {
            filter: "$chan/#",
            from: 0,
        })
        .unwrap();
    assert!(!topics.contains("$chan/done"), "{topics}");
    let groups = cb.manage(ManageOp::Groups).unwrap();
    assert!(!groups.contains("chan:done"), "{groups}");
    // The name is free for a new channel.
    let a = Channel::connect(&ca, "done").unwrap();
    let mut l = Channel::listen(&cb, "done").unwrap();
    a.send("new").unwrap();
    assert_eq!(next_message(&mut l), "new");
}

#[test]
fn with_data_messages_wait_across_a_broker_kill_and_presence_is_right_after() {
    let dir = std::env::temp_dir().join(format!("mote-chan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let s = Served::start(&["--data", d, "--sync", "always"]);
    let port = s.port();
    {
        let ca = Client::connect(opts(s.addr)).unwrap();
        let a = Channel::connect(&ca, "safe").unwrap();
        for i in 0..5 {
            a.send(format!("m{i}")).unwrap();
        }
        // Killed with `a` still open: its last presence word on disk is `up`.
        let mut s = s;
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        drop(a);
        // Closed without a flush: there is no broker to flush to.
        drop(ca);
    }
    let s = Served::start_on(&format!("127.0.0.1:{port}"), &["--data", d]);
    let cb = Client::connect(opts(s.addr)).unwrap();
    let mut l = Channel::listen(&cb, "safe").unwrap();
    for i in 0..5 {
        match next_event(&mut l) {
            ChannelEvent::Message(m) => assert_eq!(m.payload, format!("m{i}").into_bytes()),
            other => panic!("expected m{i}, got {other:?}"),
        }
    }
    no_message(&mut l, Duration::from_millis(300));
    // The restart said the local side's reader is gone: no stale `up`.
    assert_eq!(l.as_async().remote_connected(), Some(false));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

const OWNER: &str = "owner-secret-0123456789";
const OTHER: &str = "other-secret-0123456789";

fn token_broker() -> Broker {
    Broker::with(|| {
        let mut auth = Auth::none();
        let rules = Rules::new(
            "owner",
            &["$chan/door/local".into(), "$chan/door/remote".into()],
            &["$chan/door/#".into()],
        )
        .unwrap();
        auth.insert("owner", Token::new(OWNER).unwrap(), rules)
            .unwrap();
        // `#` both ways: `$chan/` is not in it.
        let rules = Rules::new("other", &["#".into()], &["#".into()]).unwrap();
        auth.insert("other", Token::new(OTHER).unwrap(), rules)
            .unwrap();
        Config {
            auth,
            ..Default::default()
        }
    })
}

#[test]
fn token_rules_name_chan_topics_and_hash_does_not_reach_them() {
    let b = token_broker();
    let owner = Client::connect(b.options().with_token("owner", OWNER).unwrap()).unwrap();
    let other = Client::connect(b.options().with_token("other", OTHER).unwrap()).unwrap();
    let a = Channel::connect(&owner, "door").unwrap();
    let mut l = Channel::listen(&owner, "door").unwrap();
    a.send("hi").unwrap();
    assert_eq!(next_message(&mut l), "hi");
    // Not this channel, not its rules.
    match Channel::connect(&owner, "window") {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN), "{e}"),
        Ok(_) => panic!("opened a channel its rules do not name"),
    }
    match Channel::connect(&other, "door") {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN), "{e}"),
        Ok(_) => panic!("`#` rules opened a channel"),
    }
    let e = other
        .publish_confirmed("$chan/door/local", "x")
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FORBIDDEN), "{e}");
    // Ending without manage rights: the mark goes, the state stays to expire.
    a.end().unwrap();
    until_ended(&mut l);
}

#[test]
fn dead_letter_and_presence_topics_stay_unpublishable() {
    let b = Broker::default();
    let c = Client::connect(b.options()).unwrap();
    let _open = Channel::connect(&c, "x").unwrap();
    let raw = |topic: &str| {
        let mut r = common::Raw::connect(b.addr);
        r.publish(7, topic, b"forged");
        match r.next() {
            Some(common::Got::Error { code, req: 7, .. }) => ErrorCode(code),
            other => panic!("{topic}: expected a refusal, got {other:?}"),
        }
    };
    // The SDK refuses before sending; the broker refuses too, also a `$` topic that
    // exists (the presence topic the broker made when `_open` joined).
    for t in ["$dead/g/t", "$chan/x/remote/reader", "$chan", "$sys/x"] {
        let e = c.publish_confirmed(t, "forged").unwrap_err();
        assert!(matches!(e, Error::Topic { .. }), "{t}: {e}");
        assert_eq!(raw(t), ErrorCode::BAD_TOPIC, "{t}");
    }
}

#[test]
fn the_cli_says_what_is_wrong_with_a_name_or_roles_before_connecting() {
    // Port 1: nothing listens there, so an error about the name came first.
    for (args, want) in [
        (
            &["a/b"][..],
            "bad channel \"a/b\": a channel name is 1 to 32",
        ),
        (&[][..], "give the channel's NAME"),
        (
            &["door", "--role", "x"][..],
            "give --role and --remote-role together",
        ),
        (
            &["door", "--role", "x", "--remote-role", "x"][..],
            "must differ",
        ),
    ] {
        let out = Command::new(MOTE)
            .args(["chan", "-p", "1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
