//! The mote binary that mote-bench starts: `--mote PATH`, or the `mote` beside this program.
//! Under `cargo run` that one is built first, as `cargo run` built this program, so the
//! broker measured is always the source tree's and never a stale build.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mote binary to start: `given`, or the one beside this program.
pub(crate) fn mote_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("--mote {}: no such file", p.display()))
        };
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = me
        .parent()
        .ok_or_else(|| format!("{} has no directory", me.display()))?;
    // `cargo run` tells the program it runs which cargo it is.
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(&cargo, dir)?;
    }
    let mote = dir.join("mote");
    if mote.is_file() {
        Ok(mote)
    } else {
        Err(format!(
            "there is no mote binary at {}: build it (cargo build --release) or give --mote PATH",
            mote.display()
        ))
    }
}

/// Builds the mote binary into `dir`, a profile's directory (`release`, `debug`...) in a
/// target directory, as `cargo build` would for that profile.
fn build(cargo: &OsStr, dir: &Path) -> Result<(), String> {
    let (Some(profile), Some(target_dir)) = (dir.file_name().and_then(OsStr::to_str), dir.parent())
    else {
        return Ok(());
    };
    let profile = if profile == "debug" { "dev" } else { profile };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--package",
            "mote",
            "--bin",
            "mote",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| format!("cannot run cargo to build the mote binary: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo could not build the mote binary ({status})"))
    }
}

/// A fresh token for the encrypted runs, made by `mote token new` (`mote` is `None` when
/// the bench starts no broker).
pub(crate) fn new_token(mote: Option<&Path>) -> Result<String, String> {
    let mote = mote.ok_or(
        "--token new is for brokers started here; with -h/-p, give the running broker's token",
    )?;
    let out = Command::new(mote)
        .args(["token", "new"])
        .output()
        .map_err(|e| format!("cannot run {} token new: {e}", mote.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} token new failed: {}",
            mote.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
