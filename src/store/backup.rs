//! A consistent copy of a data directory, taken while a broker runs on it.
//!
//! Why a plain copy in the right order is consistent: a segment is only ever appended to
//! (in whole batches, each with its CRC), and deleted whole; `meta` and the index files
//! are replaced atomically (written aside, then renamed). So the copy takes `meta` first,
//! then the segments oldest first, each followed by its index: a segment deleted meanwhile
//! is simply absent (its data was dead or copied forward into a newer segment, which is
//! copied after it), and the segment being appended to may end in a batch cut short,
//! which the next start cuts, exactly as after a crash. A segment that was being
//! appended to when it was copied is copied again once a newer one appears (the broker
//! starts the next segment only after the last write to the one before): else the copy
//! would miss what was appended to it meanwhile, and hold what came after. The lock is
//! not copied.

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
    backup_passes(from, to, &mut || {})
}

/// [`backup`], calling `between` after each pass over the segments (for tests: what a
/// broker does meanwhile).
fn backup_passes(
    from: &Path,
    to: &Path,
    between: &mut dyn FnMut(),
) -> Result<BackupReport, StoreError> {
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
    // Segments are listed again after each pass: a compaction may copy live messages
    // forward into a new segment and delete the old one while we copy; the new one,
    // numbered above every segment listed before, is then found by the next pass.
    let mut copied = Vec::new();
    loop {
        let nos = list_segments(&src, copied.last().copied())?;
        if nos.is_empty() {
            break;
        }
        // The newest segment copied so far may have been written to while it was
        // copied; a newer one exists now, so it is complete: copy it whole again.
        if let Some(&no) = copied.last() {
            if !copy_segment(&src, &dst, no)? {
                copied.pop();
            }
        }
        for no in nos {
            if copy_segment(&src, &dst, no)? {
                copied.push(no);
            }
        }
        between();
    }
    // Pending transactions: appended to, or replaced whole by a rename; a copy is a
    // prefix of it, whose torn end (if any) the next start cuts.
    match copy(&super::tx::tx_path(&src), &super::tx::tx_path(&dst)) {
        Ok(_) => {}
        Err(StoreError::Io(m)) if m.contains("os error 2") => {
            let _ = std::fs::remove_file(super::tx::tx_path(&dst));
        }
        Err(e) => return Err(e),
    }
    let mut infos = Vec::with_capacity(copied.len());
    for no in copied {
        // Check what was copied as a start would read it.
        let bytes = std::fs::read(segment_path(&dst, no))
            .map_err(io_err(format!("cannot read back segment {no}")))?;
        let s = segment::scan(no, &bytes);
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        report.damaged += s.skipped;
        report.torn_bytes += bytes.len() as u64 - s.valid_len;
        infos.push(s.info);
    }
    // What a start would find: removed topics (deleted, expired) left out.
    let retired: std::collections::HashSet<u64> = infos
        .iter()
        .flat_map(|i| &i.removed)
        .map(|&(id, _, _)| id)
        .collect();
    let mut names = std::collections::HashSet::new();
    for info in &infos {
        for t in info.topics.iter().filter(|t| !retired.contains(&t.id)) {
            for r in &t.runs {
                report.messages += r.last - r.first + 1;
            }
        }
        for (id, name) in &info.names {
            if !retired.contains(id) {
                names.insert(name.as_str());
            }
        }
    }
    report.topics = names.len() as u64;
    sync_dir(&dst).map_err(io_err(format!("cannot sync {}", dst.display())))?;
    sync_dir(to).map_err(io_err(format!("cannot sync {}", to.display())))?;
    Ok(report)
}

/// Copies segment `no` of `src` into `dst` with its index; `false` when it was deleted
/// meanwhile (nothing of it was live, or what was is in a newer segment), and then
/// neither is in the copy.
fn copy_segment(src: &Path, dst: &Path, no: u64) -> Result<bool, StoreError> {
    match copy(&segment_path(src, no), &segment_path(dst, no)) {
        Ok(_) => {}
        Err(StoreError::Io(m)) if m.contains("os error 2") => {
            let _ = std::fs::remove_file(segment_path(dst, no));
            let _ = std::fs::remove_file(index_path(dst, no));
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let _ = copy(&index_path(src, no), &index_path(dst, no));
    Ok(true)
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
    crate::sort::sort(&mut nos);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::super::tests::{TempDir, settle};
    use super::super::{Log, LogConfig, SyncPolicy, io};
    use super::*;

    /// A segment rolls while the backup copies it: the broker appends to it, then
    /// starts the next one, between two passes of the backup.
    #[test]
    fn a_segment_that_grows_while_it_is_copied_is_copied_whole() {
        let src = TempDir::new("backup-src");
        let cfg = LogConfig {
            sync: SyncPolicy::Always,
            ..LogConfig::default()
        };
        // Segment 1: messages 0..20 in batches of 5; segment 2 (the next start's):
        // 20..30.
        let (mut log, _) = Log::open(&src.0, cfg.clone(), 7).unwrap();
        let threads = io::Threads::start(log.dir(), 0).unwrap();
        let mut half = 0;
        for i in 0..20u64 {
            log.append_message("x", i, i + 1, 1000, None, b"m");
            if i % 5 == 4 {
                settle(&mut log, &threads, 0);
            }
            if i == 9 {
                half = std::fs::metadata(segment_path(log.dir(), 1)).unwrap().len();
            }
        }
        drop(log);
        threads.stop();
        let (mut log, _) = Log::open(&src.0, cfg, 7).unwrap();
        let threads = io::Threads::start(log.dir(), 0).unwrap();
        for i in 20..30u64 {
            log.append_message("x", i, i + 1, 1000, None, b"m");
        }
        settle(&mut log, &threads, 0);
        drop(log);
        threads.stop();
        // What the first pass sees: segment 1 up to message 10, being written.
        let logdir = src.0.join("log");
        let (seg1, seg2) = (segment_path(&logdir, 1), segment_path(&logdir, 2));
        let (whole1, whole2) = (std::fs::read(&seg1).unwrap(), std::fs::read(&seg2).unwrap());
        std::fs::write(&seg1, &whole1[..half as usize]).unwrap();
        std::fs::remove_file(&seg2).unwrap();
        let dst = TempDir::new("backup-dst");
        let mut rolled = false;
        let report = backup_passes(&src.0, &dst.0, &mut || {
            if !rolled {
                rolled = true;
                std::fs::write(&seg1, &whole1).unwrap();
                std::fs::write(&seg2, &whole2).unwrap();
            }
        })
        .unwrap();
        let copy1 = std::fs::read(segment_path(&dst.0.join("log"), 1)).unwrap();
        assert!(
            copy1 == whole1,
            "segment 1 in the copy: {} bytes of {}",
            copy1.len(),
            whole1.len()
        );
        assert_eq!((report.segments, report.messages), (2, 30));
    }
}
