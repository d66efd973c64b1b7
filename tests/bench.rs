//! `mote bench` as a user runs it: the JSON keys scripts read stay as they are, the latency
//! runs give the broker's CPU per round trip whenever its process is known, and the
//! comparison with other brokers and the persisted runs point to the tool that has them
//! (mote-bench; its persisted runs are tested in benches/tests/).
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::process::{Command, Output};

mod common;

const MOTE: &str = env!("CARGO_BIN_EXE_mote");

fn bench(args: &[&str]) -> Output {
    Command::new(MOTE).arg("bench").args(args).output().unwrap()
}

fn json(o: &Output) -> serde_json::Map<String, serde_json::Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_object().unwrap().clone()
}

#[test]
fn json_keys_of_mote_bench_are_unchanged() {
    let o = bench(&[
        "--only",
        "64b,group,idle",
        "-n",
        "5000",
        "--idle-connections",
        "20",
        "--json",
    ]);
    let j = json(&o);
    for key in [
        "repeat",
        "broker",
        "msgs_per_sec_64b",
        "mbytes_per_sec_64b",
        "messages_64b",
        "broker_cpu_sec_per_million_64b",
        "msgs_per_sec_group3",
        "broker_cpu_sec_per_million_group3",
        "group3_fraction_of_1to1",
        "startup_ms",
        "idle_rss_kib",
        "peak_rss_kib",
        "rss_bytes_per_idle_subscriber",
        "idle_subscribers",
        "missed_messages",
    ] {
        assert!(j.contains_key(key), "no {key} in {j:?}");
    }
    assert_eq!(j["messages_64b"], 5000, "{j:?}");
    assert!(j["msgs_per_sec_64b"].as_f64().unwrap() > 0.0, "{j:?}");
    // Nothing but mote's own figures.
    assert!(!j.keys().any(|k| k.starts_with("ratio_")), "{j:?}");
}

#[test]
fn token_new_adds_an_encrypted_broker() {
    // Few messages: an unoptimised build (or qemu) seals and opens slowly, and a run
    // whose deliveries stop for 2 s counts the rest as missed.
    let o = bench(&["--only", "64b", "-n", "200", "--token", "new", "--json"]);
    let j = json(&o);
    for key in [
        "msgs_per_sec_64b",
        "encrypted_broker",
        "encrypted_startup_ms",
        "encrypted_idle_rss_kib",
        "encrypted_messages_64b",
        "ratio_startup_ms_vs_encrypted",
    ] {
        assert!(j.contains_key(key), "no {key} in {j:?}");
    }
}

#[test]
fn compare_points_to_mote_bench() {
    let o = bench(&["--compare", "nats"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cargo run -p mote-bench --release -- --compare"),
        "{err}"
    );
}

#[test]
fn persisted_runs_are_not_in_the_broker_binary() {
    // They are mote-bench's (the `bench-persist` feature); the help points there.
    let o = bench(&["--help"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(!help.contains("--persist"), "{help}");
    assert!(
        help.contains("cargo run -p mote-bench --release -- --help"),
        "{help}"
    );
    let o = bench(&["--persist"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The figures of the latency run whose JSON names start with `prefix`, each checked to
/// be a positive finite number; the broker's CPU only when `broker_cpu`.
fn latency_figures(
    j: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    broker_cpu: bool,
) -> Vec<f64> {
    let mut keys = vec![
        format!("{prefix}_p50_us"),
        format!("{prefix}_p99_us"),
        format!("{prefix}_p999_us"),
        format!("{prefix}_client_cpu_us_per_rt"),
    ];
    if broker_cpu {
        keys.push(format!("{prefix}_broker_cpu_us_per_rt"));
    }
    keys.iter()
        .map(|k| {
            let x = j.get(k).and_then(|v| v.as_f64());
            let x = x.unwrap_or_else(|| panic!("no {k} in {j:?}"));
            assert!(x.is_finite() && x > 0.0, "{k} = {x} in {j:?}");
            x
        })
        .collect()
}

#[test]
fn latency_runs_report_percentiles_and_cpu_per_round_trip() {
    let o = bench(&[
        "--only",
        "latency,latency-spin",
        "--latency-samples",
        "200",
        "--json",
    ]);
    let j = json(&o);
    for prefix in ["latency", "latency_spin"] {
        // The bench started the broker: it knows its process, so its CPU is given.
        let f = latency_figures(&j, prefix, true);
        assert!(f[0] <= f[1] && f[1] <= f[2], "{prefix}: {f:?} in {j:?}");
    }
    // Nothing but the latency runs (and the broker's memory) was measured.
    assert!(!j.contains_key("msgs_per_sec_64b"), "{j:?}");
    // The spinning client is a run on request: not made when --only does not name it.
    let o = bench(&["--only", "latency", "--latency-samples", "100", "--json"]);
    let j = json(&o);
    latency_figures(&j, "latency", true);
    assert!(!j.contains_key("latency_spin_p50_us"), "{j:?}");
}

#[test]
fn a_running_broker_has_cpu_figures_only_with_its_pid() {
    let served = common::served::Served::start(&[]);
    let port = served.port();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--only",
            "latency",
            "--latency-samples",
            "200",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&bench(&args))
    };
    // Without its process, the broker's CPU is not given rather than a wrong one.
    let j = run(&[]);
    latency_figures(&j, "latency", false);
    assert!(!j.contains_key("latency_broker_cpu_us_per_rt"), "{j:?}");
    let pid = served.child.id().to_string();
    let j = run(&["--pid", &pid]);
    latency_figures(&j, "latency", true);
}

#[test]
fn pid_and_pin_options_say_when_they_do_not_apply() {
    let o = bench(&["--pid", "1", "--only", "latency"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--pid is for a running broker (-h/-p)"),
        "{err}"
    );
    let o = bench(&["-h", "127.0.0.1", "-p", "1", "--pin"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--pin is for brokers the bench starts"),
        "{err}"
    );
}

#[test]
fn pin_puts_the_broker_and_the_bench_on_cpus_of_their_own() {
    let o = bench(&[
        "--only",
        "latency",
        "--latency-samples",
        "200",
        "--pin",
        "--json",
    ]);
    if !may_run_on(0) || !may_run_on(1) {
        // Refused, saying why.
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--pin needs CPUs 0 and 1"), "{err}");
        return;
    }
    latency_figures(&json(&o), "latency", true);
}

/// Whether this process may run on CPU `cpu` (`Cpus_allowed_list`: `0-1,4`).
fn may_run_on(cpu: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    list.trim().split(',').any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        (lo.parse().unwrap()..=hi.parse().unwrap()).contains(&cpu)
    })
}
