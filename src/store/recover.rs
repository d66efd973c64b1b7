//! Opening a data directory: the lock that keeps a second broker out, the `meta` file
//! (format, broker id, sequence epoch), and recovery of every segment — from its index
//! file when that checks out, else by a scan that cuts a torn tail and skips damage.
//! Damage never stops startup: an unreadable segment is moved aside as `.bad`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::format::{self, HeaderError};
use super::io::{index_path, segment_path, sync_dir};
use super::segment::{self, SegmentInfo};

/// The lock on a data directory, held while the broker runs (an `flock`, which the
/// kernel drops with the process, so a killed broker never leaves it behind).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

pub(crate) fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
    use rustix::fs::{FlockOperation, flock};
    flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            StoreError::Locked(dir.display().to_string())
        } else {
            StoreError::Io(format!("cannot lock {}: {e}", path.display()))
        }
    })?;
    Ok(DirLock { _file: file })
}

/// What `meta` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) format: u32,
    pub(crate) broker_id: u64,
    /// Raised at every start: broker-wide sequence numbers of this run begin at
    /// `epoch << 40`, above every number an earlier run gave out.
    pub(crate) epoch: u64,
}

fn parse_meta(text: &str) -> Option<Meta> {
    let mut m = Meta {
        format: 0,
        broker_id: 0,
        epoch: 0,
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=')?;
        match k.trim() {
            "format" => m.format = v.trim().parse().ok()?,
            "broker_id" => m.broker_id = u64::from_str_radix(v.trim(), 16).ok()?,
            "epoch" => m.epoch = v.trim().parse().ok()?,
            _ => {}
        }
    }
    (m.format > 0).then_some(m)
}

/// Writes `meta` so that a power cut leaves the old or the new file, whole.
pub(crate) fn write_meta(dir: &Path, m: &Meta) -> std::io::Result<()> {
    let path = dir.join("meta");
    let tmp = dir.join("meta.tmp");
    let text = format!(
        "# mote data directory: do not edit\nformat = {}\nbroker_id = {:016x}\nepoch = {}\n",
        m.format, m.broker_id, m.epoch
    );
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

/// Reads `meta` (a damaged or missing one is replaced, with `fresh_id` as the broker
/// id), refuses a newer format, and raises the epoch for this run.
pub(crate) fn meta(dir: &Path, fresh_id: u64, notes: &mut Vec<String>) -> Result<Meta, StoreError> {
    let path = dir.join("meta");
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => match parse_meta(&text) {
            Some(m) => Some(m),
            None => {
                notes.push(format!(
                    "{} is damaged: a new broker id is made (bridges will see a new broker)",
                    path.display()
                ));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            notes.push(format!(
                "cannot read {}: {e}; a new broker id is made",
                path.display()
            ));
            None
        }
    };
    if let Some(m) = &old {
        if m.format > format::VERSION {
            return Err(StoreError::Newer {
                dir: dir.display().to_string(),
                version: m.format,
            });
        }
    }
    let m = Meta {
        format: format::VERSION,
        broker_id: old.as_ref().map_or(fresh_id, |m| m.broker_id),
        epoch: old.as_ref().map_or(1, |m| m.epoch + 1),
    };
    write_meta(dir, &m)
        .map_err(|e| StoreError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(m)
}

/// The segment numbers in `log`, ascending.
fn segment_numbers(log: &Path) -> Result<Vec<u64>, StoreError> {
    let mut nos = Vec::new();
    let entries = std::fs::read_dir(log)
        .map_err(|e| StoreError::Io(format!("cannot list {}: {e}", log.display())))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(no) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            nos.push(no);
        }
        // Leftovers of an index write cut short.
        if name.ends_with(".idx.tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    crate::sort::sort(&mut nos);
    Ok(nos)
}

/// What recovery found and did, for the log.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub(crate) segments: Vec<SegmentInfo>,
    /// Damaged regions skipped, and their bytes.
    pub(crate) skipped: u64,
    pub(crate) skipped_bytes: u64,
    /// Bytes of torn tails cut.
    pub(crate) truncated: u64,
    /// Segments moved aside as `.bad`.
    pub(crate) bad: u64,
    /// Segments scanned because their index was missing or damaged.
    pub(crate) scanned: u64,
    /// What to say once in the log.
    pub(crate) notes: Vec<String>,
}

/// Moves an unreadable segment (and its index) aside.
fn set_aside(path: &Path, notes: &mut Vec<String>, why: &str) {
    let bad = PathBuf::from(format!("{}.bad", path.display()));
    match std::fs::rename(path, &bad) {
        Ok(()) => notes.push(format!(
            "{}: {why}; moved aside as {}",
            path.display(),
            bad.display()
        )),
        Err(e) => notes.push(format!(
            "{}: {why}; cannot move it aside ({e}), it is ignored",
            path.display()
        )),
    }
}

/// Recovers the segments of `log`. A newer segment format refuses startup (an older
/// mote must not misread a newer one's data); everything else is repaired or set aside.
pub(crate) fn segments(log: &Path) -> Result<Recovery, StoreError> {
    let mut r = Recovery::default();
    for no in segment_numbers(log)? {
        let path = segment_path(log, no);
        // The header and the length first: a segment whose index checks out is not read
        // at all (startup reads indexes, not gigabytes); damage in it is found, skipped
        // and counted when a cursor reads there.
        let mut head = Vec::with_capacity(format::SEGMENT_HEADER);
        let opened = File::open(&path).and_then(|f| {
            let len = f.metadata()?.len();
            f.take(format::SEGMENT_HEADER as u64)
                .read_to_end(&mut head)?;
            Ok(len)
        });
        let len = match opened {
            Ok(len) => len,
            Err(e) => {
                set_aside(&path, &mut r.notes, &format!("cannot be read ({e})"));
                let _ = std::fs::remove_file(index_path(log, no));
                r.bad += 1;
                continue;
            }
        };
        match format::parse_segment_header(&head) {
            Ok(_) => {}
            Err(HeaderError::Newer(v)) => {
                return Err(StoreError::Newer {
                    dir: log.display().to_string(),
                    version: v,
                });
            }
            Err(HeaderError::NotASegment) if len < format::SEGMENT_HEADER as u64 => {
                // Created and never written (a crash right after the roll): nothing lost.
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(index_path(log, no));
                continue;
            }
            Err(HeaderError::NotASegment) => {
                set_aside(&path, &mut r.notes, "its header is damaged");
                let _ = std::fs::remove_file(index_path(log, no));
                r.bad += 1;
                continue;
            }
        }
        let idx = std::fs::read(index_path(log, no))
            .ok()
            .and_then(|b| segment::decode_idx(no, len, &b));
        let info = match idx {
            Some(info) => info,
            None => {
                let mut bytes = Vec::new();
                let read = File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes));
                if let Err(e) = read {
                    set_aside(&path, &mut r.notes, &format!("cannot be read ({e})"));
                    let _ = std::fs::remove_file(index_path(log, no));
                    r.bad += 1;
                    continue;
                }
                r.scanned += 1;
                let s = segment::scan(no, &bytes);
                if s.skipped > 0 {
                    r.notes.push(format!(
                        "{}: skipped {} damaged region(s), {} bytes",
                        path.display(),
                        s.skipped,
                        s.skipped_bytes
                    ));
                }
                r.skipped += s.skipped;
                r.skipped_bytes += s.skipped_bytes;
                if s.valid_len < bytes.len() as u64 {
                    let cut = bytes.len() as u64 - s.valid_len;
                    let cut_ok = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(s.valid_len).and_then(|()| f.sync_all()));
                    match cut_ok {
                        Ok(()) => {
                            r.truncated += cut;
                            r.notes.push(format!(
                                "{}: cut a torn tail of {cut} bytes",
                                path.display()
                            ));
                        }
                        Err(e) => r.notes.push(format!(
                            "{}: cannot cut a torn tail of {cut} bytes ({e}); it is ignored",
                            path.display()
                        )),
                    }
                }
                // Every segment found is sealed now (a new one is started for this run):
                // its index spares the next start a scan.
                let _ = std::fs::write(index_path(log, no), segment::encode_idx(&s.info));
                s.info
            }
        };
        r.segments.push(info);
    }
    Ok(r)
}
