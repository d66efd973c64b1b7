//! `mote bench` as a user runs it: the JSON keys scripts read stay as they are, and the
//! comparison with other brokers and the persisted runs point to the tool that has them
//! (mote-bench; its persisted runs are tested in benches/tests/).
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::process::{Command, Output};

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
