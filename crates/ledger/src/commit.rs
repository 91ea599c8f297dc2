//! Group commit: many callers that each need "my writes are on disk" share one flush+fsync.
//!
//! A caller's writes are already committed in memory when it asks for durability. It takes a
//! ticket (the number of requests so far). One caller at a time runs a flush; that flush
//! covers every ticket taken before it started, and everyone whose ticket it covers returns
//! without a flush of their own. Callers that arrive during a flush wait for the next one,
//! which then covers all of them together.
//!
//! A flush is sled's flush, an fsync of sled's data file, and fsyncs of the blob files sled
//! keeps beside it (large values) and of the directories naming them; see [`SyncedBlobs`].
//!
//! [`Durability::FsyncEach`] exists to measure what group commit saves: every caller runs its
//! own flush, one after another.

use crate::LedgerError;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// How [`crate::Ledger::flush`] makes writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Concurrent callers share flushes (the default).
    #[default]
    GroupCommit,
    /// Every caller flushes on its own, serialised (for comparison in benchmarks).
    FsyncEach,
}

/// What the flushes of one [`crate::Ledger`] handle have fsynced besides sled's data file:
/// the blob files in `<data_dir>/blobs/` and the directories that name them. For tests and
/// operators (see [`crate::Ledger::synced_blobs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedBlobs {
    /// The blob files found by the last flush, each fsynced by that flush or an earlier one
    /// of this handle. Files sled has removed since are forgotten.
    pub files: BTreeSet<String>,
    /// fsyncs of blob files so far: each file is fsynced once per handle (again only if it
    /// was still being written at its first).
    pub file_fsyncs: u64,
    /// fsyncs of `blobs/` and of the data directory so far: each runs only when a file or
    /// directory has appeared in it since its last fsync.
    pub dir_fsyncs: u64,
}

/// The files a flush fsyncs besides sled's data file, and what it has fsynced so far.
///
/// sled 0.34 writes every log item larger than a quarter segment (about 128 KiB with the
/// default 512 KiB segment) to its own file `<data_dir>/blobs/<lsn>` with `write_all`, and
/// fsyncs neither that file nor `blobs/` (`pagecache/blob_io.rs`, `Config::blob_path`). The
/// log record that points to the blob is made durable by sled's flush, so without this an
/// acknowledged write could point at a blob that a power loss took away.
///
/// A blob is written once, front to back, and never changed. One that a writer is still
/// writing while a flush lists `blobs/` (a write the flush does not cover) is fsynced at a
/// shorter length than it will have; so each blob is remembered with the length it had
/// before its fsync, and fsynced again when its length has changed since.
#[derive(Default)]
struct Files {
    /// Blob files fsynced and still present at the last flush, with their length before
    /// the fsync.
    blobs: BTreeMap<OsString, u64>,
    /// A blob file was fsynced since the last fsync of `blobs/`.
    blob_dir_dirty: bool,
    /// The data directory's entries at its last fsync; `None` before the first.
    dir_entries: Option<BTreeSet<OsString>>,
    file_fsyncs: u64,
    dir_fsyncs: u64,
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> LedgerError {
    LedgerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn entries(dir: &Path) -> Result<BTreeSet<OsString>, LedgerError> {
    let listing = |dir: &Path| -> std::io::Result<BTreeSet<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    };
    listing(dir).map_err(|e| io_error("listing", dir, e))
}

/// The files in `dir` with their lengths; a file removed while listing is left out.
fn lengths(dir: &Path) -> Result<BTreeMap<OsString, u64>, LedgerError> {
    let listing = |dir: &Path| -> std::io::Result<BTreeMap<OsString, u64>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            match entry.metadata() {
                Ok(meta) => {
                    files.insert(entry.file_name(), meta.len());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    };
    listing(dir).map_err(|e| io_error("listing", dir, e))
}

fn fsync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// fsyncs a directory, which makes the names in it durable. Only Unix can open a directory
/// as a file; elsewhere this does nothing.
fn fsync_dir(path: &Path) -> Result<(), LedgerError> {
    #[cfg(unix)]
    fsync_file(path).map_err(|e| io_error("fsync", path, e))?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Files {
    /// fsyncs every blob file not fsynced yet (or grown since), then `blobs/` and the data
    /// directory if a name appeared in them. Runs after sled's flush, which has written every
    /// blob it covers (sled writes a blob when the item is reserved, before the log record
    /// that points to it).
    fn sync(&mut self, dir: &Path) -> Result<(), LedgerError> {
        let blob_dir = dir.join("blobs");
        let present = lengths(&blob_dir)?;
        for (name, len) in &present {
            if self.blobs.get(name) == Some(len) {
                continue;
            }
            let path = blob_dir.join(name);
            match fsync_file(&path) {
                Ok(()) => {
                    self.file_fsyncs += 1;
                    // A new name in `blobs/`: the directory needs an fsync too.
                    if self.blobs.insert(name.clone(), *len).is_none() {
                        self.blob_dir_dirty = true;
                    }
                }
                // sled removed it meanwhile (its blob GC): nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("fsync", &path, e)),
            }
        }
        self.blobs.retain(|name, _| present.contains_key(name));
        if self.blob_dir_dirty {
            fsync_dir(&blob_dir)?;
            self.dir_fsyncs += 1;
            self.blob_dir_dirty = false;
        }
        let now = entries(dir)?;
        let appeared = match &self.dir_entries {
            None => true,
            Some(before) => now.difference(before).next().is_some(),
        };
        if appeared {
            fsync_dir(dir)?;
            self.dir_fsyncs += 1;
        }
        self.dir_entries = Some(now);
        Ok(())
    }

    fn report(&self) -> SyncedBlobs {
        SyncedBlobs {
            files: self
                .blobs
                .keys()
                .map(|n| n.to_string_lossy().into_owned())
                .collect(),
            file_fsyncs: self.file_fsyncs,
            dir_fsyncs: self.dir_fsyncs,
        }
    }
}

/// For tests: holds the next flush of a ledger on its blocking thread before it starts, as a
/// slow disk would (see [`crate::Ledger::pause_next_flush`]), or the next full scan on the
/// thread it runs on ([`crate::Ledger::pause_next_scan`]). Dropping it releases it.
#[doc(hidden)]
pub struct FlushPause {
    reached: tokio::sync::oneshot::Receiver<()>,
    // A message on it, or dropping it (and every releaser), lets the held work go on.
    release: std::sync::mpsc::Sender<()>,
}

impl FlushPause {
    /// Waits until a flush is held at the pause; it stays there until the pause is released
    /// or dropped. `false` if no flush will come (the ledger was dropped).
    pub async fn reached(&mut self) -> bool {
        (&mut self.reached).await.is_ok()
    }

    /// Lets the held flush go on (dropping the pause does the same, unless a
    /// [`FlushPause::releaser`] is still held).
    pub fn release(self) {
        let _ = self.release.send(());
    }

    /// Something that can release the held work from another thread (a test's watchdog).
    pub fn releaser(&self) -> impl Fn() + Send + 'static {
        let release = self.release.clone();
        move || {
            let _ = release.send(());
        }
    }
}

/// The paused side of a [`FlushPause`].
pub(crate) struct PausePoint {
    reached: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

/// A pause point and the test's handle on it.
pub(crate) fn pause() -> (PausePoint, FlushPause) {
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    (
        PausePoint {
            reached: reached_tx,
            release: release_rx,
        },
        FlushPause {
            reached: reached_rx,
            release: release_tx,
        },
    )
}

impl PausePoint {
    /// Blocks the calling thread until the pause is released.
    pub(crate) fn hold(self) {
        let _ = self.reached.send(());
        // Returns when the pause is released: its sender dropped.
        let _ = self.release.recv();
    }
}

/// Makes everything written so far durable, on a blocking thread: sled's own flush writes its
/// buffers and (on Linux) waits for them with `sync_file_range`, which neither flushes the
/// disk's write cache nor the file's metadata — so an `fsync` of the store's file follows, and
/// then the fsyncs of new blob files and directories ([`Files::sync`]).
/// The handle to the store is dropped before this returns, so a store closed right after its
/// last flush really is closed (its lock released).
async fn flush(
    db: &sled::Db,
    dir: &Path,
    files: &Arc<Mutex<Files>>,
    pause: Option<PausePoint>,
) -> Result<(), LedgerError> {
    let db = db.clone();
    let dir = dir.to_path_buf();
    let files = Arc::clone(files);
    tokio::task::spawn_blocking(move || -> Result<(), LedgerError> {
        if let Some(pause) = pause {
            pause.hold();
        }
        db.flush()?;
        let file = dir.join("db");
        fsync_file(&file).map_err(|e| io_error("fsync", &file, e))?;
        // One flush at a time fsyncs blobs: a flush whose caller was cancelled may still run.
        files.lock().unwrap_or_else(|p| p.into_inner()).sync(&dir)
    })
    .await
    .map_err(|e| LedgerError::Task {
        what: "flush",
        reason: e.to_string(),
    })?
}

#[derive(Default)]
struct State {
    /// Tickets handed out so far.
    requested: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is running.
    flushing: bool,
    /// Flushes run so far (for benchmarks and tests).
    flushes: u64,
}

pub(crate) struct GroupCommit {
    mode: Durability,
    /// The store's directory: sled's data file `db` and its `blobs/`, fsynced by each flush.
    dir: PathBuf,
    state: Mutex<State>,
    done: Notify,
    serial: tokio::sync::Mutex<()>,
    files: Arc<Mutex<Files>>,
    /// Set by [`GroupCommit::pause_next_flush`] (tests only), taken by the next flush.
    pause: Mutex<Option<PausePoint>>,
}

/// A running flush. Dropping it — after the flush, or when the caller's future is dropped
/// mid-flush — records the outcome, clears `flushing` and wakes the waiters.
struct Running<'a> {
    commit: &'a GroupCommit,
    target: u64,
    ok: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.commit.lock();
            s.flushing = false;
            s.flushes += 1;
            if self.ok {
                s.durable = s.durable.max(self.target);
            }
        }
        self.commit.done.notify_waiters();
    }
}

impl GroupCommit {
    pub(crate) fn new(mode: Durability, dir: PathBuf) -> Self {
        Self {
            mode,
            dir,
            state: Mutex::new(State::default()),
            done: Notify::new(),
            serial: tokio::sync::Mutex::new(()),
            files: Arc::default(),
            pause: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (plain counters).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    pub(crate) fn synced_blobs(&self) -> SyncedBlobs {
        // Files holds sets and counters; a panic while it was held leaves at worst a file
        // fsynced but not yet listed, which the next flush fsyncs again.
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report()
    }

    pub(crate) fn pause_next_flush(&self) -> FlushPause {
        let (point, handle) = pause();
        *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
        handle
    }

    /// One flush: sled's, then the fsyncs.
    async fn flush_once(&self, db: &sled::Db) -> Result<(), LedgerError> {
        let pause = self.pause.lock().unwrap_or_else(|p| p.into_inner()).take();
        flush(db, &self.dir, &self.files, pause).await
    }

    /// Returns once everything written before the call is durable.
    pub(crate) async fn commit(&self, db: &sled::Db) -> Result<(), LedgerError> {
        if self.mode == Durability::FsyncEach {
            let _one_at_a_time = self.serial.lock().await;
            self.flush_once(db).await?;
            self.lock().flushes += 1;
            return Ok(());
        }
        let ticket = {
            let mut s = self.lock();
            s.requested += 1;
            s.requested
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // Register for the wake-up before looking, so that none is lost.
            notified.as_mut().enable();
            let target = {
                let mut s = self.lock();
                if s.durable >= ticket {
                    return Ok(());
                }
                if s.flushing {
                    None
                } else {
                    s.flushing = true;
                    Some(s.requested)
                }
            };
            let Some(target) = target else {
                notified.await;
                continue;
            };
            // The guard ends the flush however this future ends: also when it is dropped
            // mid-flush (a cancelled gRPC call), which would otherwise leave `flushing` set
            // for ever and every later commit waiting.
            let mut running = Running {
                commit: self,
                target,
                ok: false,
            };
            let result = self.flush_once(db).await;
            running.ok = result.is_ok();
            drop(running);
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    /// A blob fsynced while still being written is fsynced again once it has grown; one
    /// that sled removed is forgotten; an unchanged one is not fsynced again.
    #[test]
    fn blobs_are_fsynced_once_unless_they_grew_and_forgotten_when_gone() {
        let dir = tempfile::tempdir().expect("test");
        std::fs::create_dir(dir.path().join("blobs")).expect("test");
        let blob = dir.path().join("blobs").join("17");
        let mut f = std::fs::File::create(&blob).expect("test");
        f.write_all(b"crc!").expect("test");
        let mut files = Files::default();
        files.sync(dir.path()).expect("test");
        assert_eq!(files.report().files, BTreeSet::from(["17".to_string()]));
        assert_eq!(files.file_fsyncs, 1);
        assert_eq!(files.dir_fsyncs, 2, "blobs/ and the data directory");

        files.sync(dir.path()).expect("test");
        assert_eq!((files.file_fsyncs, files.dir_fsyncs), (1, 2), "nothing new");

        f.write_all(b"kind and data").expect("test");
        files.sync(dir.path()).expect("test");
        assert_eq!(files.file_fsyncs, 2, "grown since its fsync");
        assert_eq!(files.dir_fsyncs, 2, "no new name");

        std::fs::remove_file(&blob).expect("test");
        files.sync(dir.path()).expect("test");
        assert!(files.report().files.is_empty());
        assert_eq!(files.file_fsyncs, 2);
    }
}
