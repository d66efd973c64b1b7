//! The store's threads: a writer that appends batches, syncs and manages segment files,
//! and a reader that reads ranges of segments for cursors behind the memory ring. They
//! talk to the executor through channels: commands in, completions out; the executor is
//! woken by the completion channel and never waits for a disk.
//!
//! The writer takes every command that is waiting before it syncs, so one `fsync` covers
//! all the batches that arrived while the previous one ran (group commit).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format;

/// What the writer thread is asked to do, in order.
#[derive(Debug)]
pub(crate) enum WriteCmd {
    /// Creates segment `no` (its header included) and makes it the one appended to.
    Create { no: u64 },
    /// Appends `bytes` (whole batches) to the current segment; `upto` is the log
    /// position after them.
    Append {
        bytes: std::sync::Arc<Vec<u8>>,
        upto: u64,
    },
    /// Syncs what was appended (data, and the directory after a create).
    Sync { upto: u64 },
    /// Writes segment `no`'s index file (after its last append).
    Index { no: u64, bytes: Vec<u8> },
    /// Deletes segment `no` and its index.
    Delete { no: u64 },
    /// Appends `bytes` (whole batches) to the transaction file `tx.log`; `upto` is the
    /// log position after them (they take a place in the log's positions, so that a
    /// sync covering `upto` covers them).
    TxAppend {
        bytes: std::sync::Arc<Vec<u8>>,
        upto: u64,
    },
    /// Replaces the transaction file by one holding `bytes` (whole batches) after its
    /// header: written aside, synced, renamed over it.
    TxRewrite { bytes: Vec<u8> },
    /// Cuts segment `no` back to `len` bytes after a failure (the log position then
    /// being `upto`), makes it the one appended to, and lifts the failure.
    Truncate { no: u64, len: u64, upto: u64 },
}

/// What the reader thread is asked to do.
#[derive(Debug)]
pub(crate) struct ReadCmd {
    pub(crate) id: u64,
    pub(crate) no: u64,
    pub(crate) pos: u64,
    pub(crate) len: usize,
}

/// What the threads report back.
#[derive(Debug)]
pub(crate) enum Done {
    /// Everything up to log position `upto` is written (in the OS's cache).
    Written { upto: u64 },
    /// Everything up to `upto` is on disk.
    Synced { upto: u64 },
    /// A write, sync or file operation failed; `upto` is the position written before.
    Failed { upto: u64, error: std::io::Error },
    /// A read, with its bytes (fewer than asked at a segment's end).
    Read {
        id: u64,
        bytes: std::io::Result<Vec<u8>>,
    },
}

/// Segment and index file names.
pub(crate) fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.seg"))
}

pub(crate) fn index_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.idx"))
}

/// Syncs a directory, so that files created or removed in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    file: Option<(u64, File)>,
    written: u64,
    dir_dirty: bool,
    /// After a failure nothing is appended until the executor cut the segment back.
    failed: bool,
    /// The transaction file, once appended to, and whether it has unsynced bytes.
    tx: Option<File>,
    tx_dirty: bool,
}

impl Writer {
    fn run(mut self, cmds: async_channel::Receiver<WriteCmd>, done: async_channel::Sender<Done>) {
        while let Ok(first) = cmds.recv_blocking() {
            // Everything already waiting, then one sync and one report: group commit.
            let mut batch = vec![first];
            while let Ok(c) = cmds.try_recv() {
                batch.push(c);
            }
            let mut sync_upto = None;
            let mut failure = None;
            let before = self.written;
            for cmd in batch {
                if let WriteCmd::Sync { upto } = cmd {
                    sync_upto = sync_upto.max(Some(upto));
                    continue;
                }
                if let Err(e) = self.apply(cmd) {
                    self.failed = true;
                    failure.get_or_insert(e);
                }
            }
            // Written before the sync is asked: delivery of what was written waits for
            // the write, not for the sync (except under `--sync always`).
            if self.written != before && failure.is_none() {
                let _ = done.send_blocking(Done::Written { upto: self.written });
            }
            if failure.is_none() {
                if let Some(upto) = sync_upto {
                    match self.sync() {
                        Ok(()) => {}
                        Err(e) => {
                            self.failed = true;
                            failure = Some(e);
                        }
                    }
                    if failure.is_none() {
                        let _ = done.send_blocking(Done::Synced {
                            upto: upto.min(self.written),
                        });
                    }
                }
            }
            if let Some(error) = failure {
                let upto = self.written;
                if done.send_blocking(Done::Failed { upto, error }).is_err() {
                    return;
                }
            }
            if done.is_closed() {
                return;
            }
        }
        // The executor is gone (shutdown): make what was written durable.
        let _ = self.sync();
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if let Some((_, f)) = &self.file {
            f.sync_data()?;
        }
        if self.tx_dirty {
            if let Some(f) = &self.tx {
                f.sync_data()?;
            }
            self.tx_dirty = false;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn apply(&mut self, cmd: WriteCmd) -> std::io::Result<()> {
        match cmd {
            WriteCmd::Create { no } => {
                if self.failed {
                    return Ok(());
                }
                // What the previous segment holds is made durable before it is left.
                if let Some((_, old)) = self.file.take() {
                    old.sync_data()?;
                }
                let path = segment_path(&self.dir, no);
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                self.file = Some((no, f.try_clone()?));
                self.dir_dirty = true;
                f.write_all(&format::segment_header(format::VERSION))?;
                Ok(())
            }
            WriteCmd::Append { bytes, upto } => {
                if self.failed {
                    return Ok(());
                }
                let Some((_, f)) = self.file.as_mut() else {
                    return Err(std::io::Error::other("no segment to append to"));
                };
                f.write_all(&bytes)?;
                self.written = upto;
                Ok(())
            }
            WriteCmd::Sync { .. } => Ok(()),
            WriteCmd::TxAppend { bytes, upto } => {
                let f = match self.tx.as_mut() {
                    Some(f) => f,
                    None => {
                        let path = super::tx::tx_path(&self.dir);
                        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
                        if f.metadata()?.len() == 0 {
                            f.write_all(&super::tx::tx_header())?;
                            self.dir_dirty = true;
                        }
                        self.tx.insert(f)
                    }
                };
                f.write_all(&bytes)?;
                self.tx_dirty = true;
                if !self.failed {
                    self.written = self.written.max(upto);
                }
                Ok(())
            }
            WriteCmd::TxRewrite { bytes } => {
                let path = super::tx::tx_path(&self.dir);
                let tmp = path.with_extension("log.tmp");
                let mut f = File::create(&tmp)?;
                f.write_all(&super::tx::tx_header())?;
                f.write_all(&bytes)?;
                f.sync_data()?;
                drop(f);
                // What was appended to the old file is settled or in `bytes`.
                self.tx = None;
                std::fs::rename(&tmp, &path)?;
                self.dir_dirty = true;
                self.tx = Some(OpenOptions::new().append(true).open(&path)?);
                self.tx_dirty = false;
                Ok(())
            }
            WriteCmd::Index { no, bytes } => {
                // An index is only an aid: when it cannot be written, startup scans.
                let path = index_path(&self.dir, no);
                let tmp = path.with_extension("idx.tmp");
                let r = File::create(&tmp)
                    .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_data()))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                self.dir_dirty = true;
                Ok(())
            }
            WriteCmd::Delete { no } => {
                // What was appended before (copies of what this segment held, states
                // carried forward) is made durable first.
                self.sync()?;
                if self.file.as_ref().is_some_and(|(n, _)| *n == no) {
                    self.file = None;
                }
                let _ = std::fs::remove_file(index_path(&self.dir, no));
                match std::fs::remove_file(segment_path(&self.dir, no)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.dir_dirty = true;
                Ok(())
            }
            WriteCmd::Truncate { no, len, upto } => {
                // Back to what was written whole; a segment whose header did not make
                // it gets a new one.
                let path = segment_path(&self.dir, no);
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                let header = format::SEGMENT_HEADER as u64;
                if len < header {
                    f.set_len(0)?;
                    f.write_all(&format::segment_header(format::VERSION))?;
                } else {
                    f.set_len(len)?;
                    f.seek(SeekFrom::Start(len))?;
                }
                f.sync_data()?;
                self.file = Some((no, f));
                self.written = upto;
                self.failed = false;
                Ok(())
            }
        }
    }
}

/// Reads ranges of segments, one after another.
fn read_loop(
    dir: PathBuf,
    cmds: async_channel::Receiver<ReadCmd>,
    done: async_channel::Sender<Done>,
) {
    // The last segment opened, kept for the next read (cursors read one after another).
    let mut open: Option<(u64, File)> = None;
    while let Ok(c) = cmds.recv_blocking() {
        let bytes = (|| {
            if open.as_ref().is_none_or(|(n, _)| *n != c.no) {
                open = Some((c.no, File::open(segment_path(&dir, c.no))?));
            }
            let Some((_, f)) = open.as_mut() else {
                unreachable!("just opened")
            };
            f.seek(SeekFrom::Start(c.pos))?;
            let mut buf = Vec::with_capacity(c.len);
            f.take(c.len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        })();
        if bytes.is_err() {
            open = None;
        }
        if done.send_blocking(Done::Read { id: c.id, bytes }).is_err() {
            return;
        }
    }
}

/// The store's two threads and their channels.
pub(crate) struct Threads {
    pub(crate) write: async_channel::Sender<WriteCmd>,
    pub(crate) read: async_channel::Sender<ReadCmd>,
    pub(crate) done: async_channel::Receiver<Done>,
    writer: std::cell::RefCell<Option<std::thread::JoinHandle<()>>>,
    reader: std::cell::RefCell<Option<std::thread::JoinHandle<()>>>,
}

impl Threads {
    /// Starts the writer and the reader on the segments of `dir`, `written` bytes of the
    /// log being on disk already.
    pub(crate) fn start(dir: &Path, written: u64) -> std::io::Result<Threads> {
        // Bounded: the executor checks its own backlog before sending (see `Log`), and
        // completions are few (one per group of commands).
        let (write, wrx) = async_channel::unbounded();
        let (read, rrx) = async_channel::bounded(64);
        let (dtx, done) = async_channel::unbounded();
        let w = Writer {
            dir: dir.to_path_buf(),
            file: None,
            written,
            dir_dirty: false,
            failed: false,
            tx: None,
            tx_dirty: false,
        };
        let d2 = dtx.clone();
        let writer = std::thread::Builder::new()
            .name("mote-writer".into())
            .spawn(move || w.run(wrx, dtx))?;
        let rdir = dir.to_path_buf();
        let reader = std::thread::Builder::new()
            .name("mote-reader".into())
            .spawn(move || read_loop(rdir, rrx, d2))?;
        Ok(Threads {
            write,
            read,
            done,
            writer: std::cell::RefCell::new(Some(writer)),
            reader: std::cell::RefCell::new(Some(reader)),
        })
    }

    /// Stops the threads after the writer finished (and synced) what it was given.
    pub(crate) fn stop(&self) {
        self.write.close();
        self.read.close();
        if let Some(w) = self.writer.borrow_mut().take() {
            let _ = w.join();
        }
        if let Some(r) = self.reader.borrow_mut().take() {
            let _ = r.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.write.close();
        self.read.close();
    }
}
