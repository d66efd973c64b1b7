//! A consistent copy of a data directory, taken while a broker runs on it.
//!
//! Why a plain copy in the right order is consistent: a segment is only ever appended to
//! (in whole batches, each with its CRC), and deleted whole; `meta` and the index files
//! are replaced atomically (written aside, then renamed). So the copy takes `meta` first,
//! then the segments oldest first, each followed by its index: a segment deleted meanwhile
//! is simply absent (its data was dead or copied forward into a newer segment, which is
//! copied after it), and the segment being appended to may end in a batch cut short,
//! which the next start cuts, exactly as after a crash. The lock is not copied.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::StoreError;
use super::io::{index_path, segment_path, sync_dir};
use super::segment;

/// What a backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Segments copied.
    pub segments: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Messages in the copy (the runs of its segments).
    pub messages: u64,
    /// Topics in the copy.
    pub topics: u64,
    /// Damaged regions in the copy (as a start would skip them), and bytes of a batch cut
    /// short at the end (which a start cuts).
    pub damaged: u64,
    /// See `damaged`.
    pub torn_bytes: u64,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| StoreError::Io(format!("{what}: {e}"))
}

/// Copies `from` into `to` (which must not exist, or be empty), syncs it, and checks it.
pub fn backup(from: &Path, to: &Path) -> Result<BackupReport, StoreError> {
    let (src, dst) = (from.join("log"), to.join("log"));
    if !src.is_dir() {
        return Err(StoreError::Io(format!(
            "{} is not a mote data directory (no log/ in it)",
            from.display()
        )));
    }
    if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(StoreError::Io(format!(
            "{} is not empty: back up into a new directory",
            to.display()
        )));
    }
    std::fs::create_dir_all(&dst).map_err(io_err(format!("cannot create {}", dst.display())))?;
    let mut report = BackupReport::default();
    copy(&from.join("meta"), &to.join("meta"))?;
    let mut names = std::collections::HashSet::new();
    // Segments are listed again after each pass: a compaction may copy live messages
    // forward into a new segment and delete the old one while we copy; the new one,
    // numbered above every segment listed before, is then found by the next pass.
    let mut last: Option<u64> = None;
    loop {
        let nos = list_segments(&src, last)?;
        if nos.is_empty() {
            break;
        }
        for no in nos {
            last = Some(no);
            let copied = match copy(&segment_path(&src, no), &segment_path(&dst, no)) {
                Ok(n) => n,
                // Deleted by retention or compaction while we copied: nothing of it
                // was live, or what was is in a newer segment.
                Err(StoreError::Io(m)) if m.contains("os error 2") => continue,
                Err(e) => return Err(e),
            };
            let _ = copy(&index_path(&src, no), &index_path(&dst, no));
            report.segments += 1;
            report.bytes += copied;
            // Check what was copied as a start would read it.
            let bytes = std::fs::read(segment_path(&dst, no))
                .map_err(io_err(format!("cannot read back segment {no}")))?;
            let s = segment::scan(no, &bytes);
            report.damaged += s.skipped;
            report.torn_bytes += bytes.len() as u64 - s.valid_len;
            for t in &s.info.topics {
                for r in &t.runs {
                    report.messages += r.last - r.first + 1;
                }
            }
            for (_, name) in s.info.names {
                names.insert(name);
            }
        }
    }
    report.topics = names.len() as u64;
    sync_dir(&dst).map_err(io_err(format!("cannot sync {}", dst.display())))?;
    sync_dir(to).map_err(io_err(format!("cannot sync {}", to.display())))?;
    Ok(report)
}

/// The segment numbers in `dir` above `after`, in order.
fn list_segments(dir: &Path, after: Option<u64>) -> Result<Vec<u64>, StoreError> {
    let mut nos: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_err(format!("cannot list {}", dir.display())))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".seg")?.parse().ok()
        })
        .filter(|&no| after.is_none_or(|a| no > a))
        .collect();
    nos.sort_unstable();
    Ok(nos)
}

/// Copies one file and syncs the copy; returns its length.
fn copy(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let mut src = File::open(from).map_err(io_err(format!("cannot read {}", from.display())))?;
    let mut dst = File::create(to).map_err(io_err(format!("cannot write {}", to.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = src
            .read(&mut buf)
            .map_err(io_err(format!("cannot read {}", from.display())))?;
        if k == 0 {
            break;
        }
        dst.write_all(&buf[..k])
            .map_err(io_err(format!("cannot write {}", to.display())))?;
        n += k as u64;
    }
    dst.sync_all()
        .map_err(io_err(format!("cannot sync {}", to.display())))?;
    Ok(n)
}
