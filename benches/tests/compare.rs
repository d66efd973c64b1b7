//! mote-bench's comparison as a user runs it: the latency runs (one connection publishing,
//! a second subscribed, one message in flight) are made of mosquitto as of mote, with the
//! broker's CPU per round trip for both, and ratios. Where mosquitto is not installed, the
//! report says so and how to install it.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::process::Command;

/// As in persisted.rs: the `mote` binary beside mote-bench is given when it is built.
const MOTE_BENCH: &str = env!("CARGO_BIN_EXE_mote-bench");

#[test]
fn latency_runs_compare_broker_cpu_per_round_trip_with_mosquitto() {
    let mut cmd = Command::new(MOTE_BENCH);
    let beside = std::path::Path::new(MOTE_BENCH).with_file_name("mote");
    if beside.is_file() {
        cmd.arg("--mote").arg(beside);
    }
    let o = cmd
        .args(["--compare", "mosquitto", "--only", "latency,latency-spin"])
        .args(["--latency-samples", "200", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let positive = |key: &str| {
        let x = j[key].as_f64();
        assert!(x.is_some_and(|x| x.is_finite() && x > 0.0), "{key} in {j}");
    };
    let figures = [
        "latency_p50_us",
        "latency_p99_us",
        "latency_broker_cpu_us_per_rt",
        "latency_client_cpu_us_per_rt",
        "latency_spin_p50_us",
        "latency_spin_broker_cpu_us_per_rt",
        "latency_spin_client_cpu_us_per_rt",
    ];
    for key in figures {
        positive(key);
    }
    if let Some(why) = j.get("mosquitto_skipped") {
        // Not installed here: said, with how to install it.
        assert!(
            why.as_str().unwrap().contains("apt-get install mosquitto"),
            "{j}"
        );
        return;
    }
    for key in figures {
        positive(&format!("mosquitto_{key}"));
        positive(&format!("ratio_{key}_vs_mosquitto"));
    }
    assert!(j.get("mosquitto_errors").is_none(), "{j}");
}
