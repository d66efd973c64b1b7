//! mote-bench's persisted runs as a user runs them: `--persist` and its options are this
//! tool's (the broker binary's `mote bench` has none), and a quick p64b run stores on disk,
//! reports its figures and removes what it made.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::process::Command;

/// mote-bench starts the `mote` binary beside it; run by cargo (which sets `CARGO` for the
/// test, and so for mote-bench), it builds that binary first, as `cargo run` does. Under
/// `cargo test --workspace` that binary is built already: it is given with `--mote`, which
/// spares a second build of the broker (without this crate's feature) in CI.
const MOTE_BENCH: &str = env!("CARGO_BIN_EXE_mote-bench");

#[test]
fn persisted_run_stores_on_disk_reports_and_cleans_up() {
    let data = std::env::temp_dir().join(format!("mote-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let mut cmd = Command::new(MOTE_BENCH);
    let beside = std::path::Path::new(MOTE_BENCH).with_file_name("mote");
    if beside.is_file() {
        cmd.arg("--mote").arg(beside);
    }
    let o = cmd
        .args(["--only", "p64b", "-n", "2000", "--sync", "200ms", "--data"])
        .arg(&data)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "persisted_msgs_per_sec_64b",
        "persisted_write_per_payload_64b",
        "persisted_broker_cpu_sec_per_million_64b",
    ] {
        assert!(j[key].as_f64().unwrap() > 0.0, "no {key} in {j}");
    }
    assert_eq!(j["persisted_sync"], "200ms", "{j}");
    // Every message's payload reached the file: at least one byte written per byte sent.
    assert!(
        j["persisted_write_per_payload_64b"].as_f64().unwrap() >= 1.0,
        "{j}"
    );
    // Only the persisted run was made.
    assert!(j.get("msgs_per_sec_64b").is_none(), "{j}");
    // Each run's data directory is removed after it.
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir(&data).unwrap();
}
