//! The sled adapter: the ledger's storage interface ([`super::Engine`]) on sled 0.34, and
//! everything that knows sled — its configuration, its error type (reported as
//! [`LedgerError::Store`]), its lock on the data file `<dir>/db` (recognised by the text of
//! sled's error, the only sign sled gives), and the fsyncs its flush leaves out (its data
//! file, and the blob files it keeps large values in beside it).

use super::{Batch, Engine, EngineTx, Entries, SyncedBlobs, Tuning, TxResult, TxStop, Value};
use crate::error::LedgerError;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::Transactional;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// sled's data file in the store's directory, which sled also locks while it is open.
const DATA_FILE: &str = "db";

fn store_err(e: sled::Error) -> LedgerError {
    LedgerError::Store(e.to_string())
}

fn tx_err(e: UnabortableTransactionError) -> TxStop {
    match e {
        UnabortableTransactionError::Conflict => TxStop::Conflict,
        UnabortableTransactionError::Storage(e) => TxStop::Abort(store_err(e)),
    }
}

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> LedgerError {
    LedgerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(super) struct SledEngine {
    db: sled::Db,
    dir: PathBuf,
    /// The trees opened through this handle; a tree's number is its index.
    trees: RwLock<Vec<(Value, sled::Tree)>>,
    /// What [`Engine::sync`] has fsynced besides the data file. One sync at a time.
    files: Mutex<Files>,
}

/// Whether a process holds the store in `dir` open: sled holds a lock on its data file.
pub(super) fn held_open(dir: &Path) -> Result<bool, LedgerError> {
    let lock_file = dir.join(DATA_FILE);
    if !lock_file.exists() {
        return Ok(false);
    }
    use fs2::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .open(&lock_file)
        .map_err(|e| io_error("open", &lock_file, e))?;
    // released when `file` is dropped
    Ok(file.try_lock_exclusive().is_err())
}

/// Copies the stopped store in `dir` into the empty directory `to`, holding the store's
/// lock meanwhile so that no node opens it: the store itself is only read. `Locked` while a
/// node holds it.
pub(super) fn copy_stopped(dir: &Path, to: &Path) -> Result<(), LedgerError> {
    use fs2::FileExt;
    let lock_file = dir.join(DATA_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .open(&lock_file)
        .map_err(|e| io_error("opening the store (is there one?)", &lock_file, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
            return Err(LedgerError::Locked {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error("locking the store", &lock_file, e)),
    }
    copy_tree(dir, to)
    // the lock is released when `file` is dropped
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), LedgerError> {
    let entries = std::fs::read_dir(from).map_err(|e| io_error("copying", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("copying", from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| io_error("copying", &path, e))?;
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| io_error("copying", &path, e))?;
            copy_tree(&path, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&path, &target).map_err(|e| io_error("copying", &path, e))?;
        }
    }
    Ok(())
}

impl SledEngine {
    pub(super) fn open(dir: &Path, tuning: Option<Tuning>) -> Result<Self, LedgerError> {
        let db = match tuning {
            None => sled::Config::new().path(dir).open().map_err(store_err)?,
            Some(tuning) => open_tuned(dir, tuning)?,
        };
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            trees: RwLock::default(),
            files: Mutex::default(),
        })
    }

    fn tree(&self, id: usize) -> Result<sled::Tree, LedgerError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| LedgerError::Store(format!("no tree number {id} is open")))
    }
}

/// Opens with a node's tuning. A handle of this process dropped an instant ago (a node
/// restarted in place, sled's background flusher finishing) may still hold the lock
/// briefly: waits up to a second for it. Another process holding it gets
/// [`LedgerError::Locked`] after that.
fn open_tuned(dir: &Path, tuning: Tuning) -> Result<sled::Db, LedgerError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(tuning.cache_bytes)
            .flush_every_ms(tuning.flush_every_ms)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() > std::time::Duration::from_secs(1) {
                    return Err(LedgerError::Locked {
                        path: PathBuf::from(dir),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(other) => return Err(store_err(other)),
        }
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<sled::IVec> {
    match b {
        Bound::Included(k) => Bound::Included(k.into()),
        Bound::Excluded(k) => Bound::Excluded(k.into()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> (Value, Value) {
    (k.to_vec(), v.to_vec())
}

impl Engine for SledEngine {
    fn open_tree(&self, name: &[u8]) -> Result<usize, LedgerError> {
        let mut trees = self.trees.write().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = trees.iter().position(|(n, _)| n.as_slice() == name) {
            return Ok(id);
        }
        let tree = self.db.open_tree(name).map_err(store_err)?;
        trees.push((name.to_vec(), tree));
        Ok(trees.len() - 1)
    }

    fn tree_names(&self) -> Result<Vec<Value>, LedgerError> {
        Ok(self.db.tree_names().iter().map(|n| n.to_vec()).collect())
    }

    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Value>, LedgerError> {
        let v = self.tree(tree)?.get(key).map_err(store_err)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: usize, key: &[u8], value: &[u8]) -> Result<Option<Value>, LedgerError> {
        let old = self.tree(tree)?.insert(key, value).map_err(store_err)?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn remove(&self, tree: usize, key: &[u8]) -> Result<Option<Value>, LedgerError> {
        let old = self.tree(tree)?.remove(key).map_err(store_err)?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn compare_and_swap(
        &self,
        tree: usize,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, LedgerError> {
        let swapped = self
            .tree(tree)?
            .compare_and_swap(key, old, new)
            .map_err(store_err)?;
        Ok(swapped.is_ok())
    }

    fn apply_batch(&self, tree: usize, batch: Batch) -> Result<(), LedgerError> {
        let mut b = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        self.tree(tree)?.apply_batch(b).map_err(store_err)
    }

    fn len(&self, tree: usize) -> Result<usize, LedgerError> {
        Ok(self.tree(tree)?.len())
    }

    fn is_empty(&self, tree: usize) -> Result<bool, LedgerError> {
        Ok(self.tree(tree)?.is_empty())
    }

    fn range(&self, tree: usize, low: Bound<&[u8]>, high: Bound<&[u8]>) -> Entries {
        match self.tree(tree) {
            Ok(t) => Box::new(
                t.range((owned(low), owned(high)))
                    .map(|kv| kv.map(pair).map_err(store_err)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn range_rev(&self, tree: usize, low: Bound<&[u8]>, high: Bound<&[u8]>) -> Entries {
        match self.tree(tree) {
            Ok(t) => Box::new(
                t.range((owned(low), owned(high)))
                    .rev()
                    .map(|kv| kv.map(pair).map_err(store_err)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn transaction(
        &self,
        trees: &[usize],
        body: &dyn Fn(&dyn EngineTx) -> TxResult<()>,
    ) -> Result<(), LedgerError> {
        let selected = trees
            .iter()
            .map(|id| self.tree(*id))
            .collect::<Result<Vec<_>, _>>()?;
        let done = selected[..].transaction(|views: &Vec<TransactionalTree>| {
            body(&SledTx { ids: trees, views }).map_err(|stop| match stop {
                TxStop::Abort(e) => ConflictableTransactionError::Abort(e),
                // sled runs the closure again
                TxStop::Conflict => ConflictableTransactionError::Conflict,
            })
        });
        match done {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(store_err(e)),
        }
    }

    fn generate_id(&self) -> Result<u64, LedgerError> {
        self.db.generate_id().map_err(store_err)
    }

    fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush().map(|_| ()).map_err(store_err)
    }

    /// sled's own flush writes its buffers and (on Linux) waits for them with
    /// `sync_file_range`, which neither flushes the disk's write cache nor the file's
    /// metadata — so an `fsync` of the data file follows, and then the fsyncs of new blob
    /// files and directories ([`Files::sync`]).
    fn sync(&self) -> Result<(), LedgerError> {
        self.flush()?;
        let file = self.dir.join(DATA_FILE);
        fsync_file(&file).map_err(|e| io_error("fsync", &file, e))?;
        // One sync at a time fsyncs blobs: a flush whose caller was cancelled may still run.
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync(&self.dir)
    }

    fn synced_blobs(&self) -> SyncedBlobs {
        // Files holds sets and counters; a panic while it was held leaves at worst a file
        // fsynced but not yet listed, which the next sync fsyncs again.
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report()
    }

    fn size_on_disk(&self) -> Result<u64, LedgerError> {
        self.db.size_on_disk().map_err(store_err)
    }
}

/// The trees of one running sled transaction.
struct SledTx<'a> {
    ids: &'a [usize],
    views: &'a [TransactionalTree],
}

impl SledTx<'_> {
    fn view(&self, tree: usize) -> TxResult<&TransactionalTree> {
        self.ids
            .iter()
            .position(|id| *id == tree)
            .and_then(|at| self.views.get(at))
            .ok_or_else(|| {
                TxStop::Abort(LedgerError::Store(format!(
                    "tree number {tree} is not part of this transaction"
                )))
            })
    }
}

impl EngineTx for SledTx<'_> {
    fn get(&self, tree: usize, key: &[u8]) -> TxResult<Option<Value>> {
        let v = self.view(tree)?.get(key).map_err(tx_err)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: usize, key: &[u8], value: &[u8]) -> TxResult<Option<Value>> {
        let old = self.view(tree)?.insert(key, value).map_err(tx_err)?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn remove(&self, tree: usize, key: &[u8]) -> TxResult<Option<Value>> {
        let old = self.view(tree)?.remove(key).map_err(tx_err)?;
        Ok(old.map(|v| v.to_vec()))
    }
}

/// The files a sync fsyncs besides sled's data file, and what it has fsynced so far.
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
    /// Blob files fsynced and still present at the last sync, with their length before
    /// the fsync.
    blobs: BTreeMap<OsString, u64>,
    /// A blob file was fsynced since the last fsync of `blobs/`.
    blob_dir_dirty: bool,
    /// The data directory's entries at its last fsync; `None` before the first.
    dir_entries: Option<BTreeSet<OsString>>,
    file_fsyncs: u64,
    dir_fsyncs: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The adapter suite against sled, on real files.
    fn open_sled(dir: &Path) -> Result<super::super::Db, LedgerError> {
        super::super::open(
            dir,
            Some(Tuning {
                cache_bytes: 8 * 1024 * 1024,
                flush_every_ms: Some(500),
            }),
        )
    }
    crate::adapter_suite!(open_sled);

    /// A second handle on a store held open is refused as locked, naming the directory.
    #[test]
    fn a_store_held_open_is_locked() {
        let dir = tempfile::tempdir().expect("test");
        let _held = open_sled(dir.path()).expect("test");
        assert!(held_open(dir.path()).expect("test"));
        let path = match open_sled(dir.path()) {
            Err(LedgerError::Locked { path }) => path,
            Err(other) => panic!("expected Locked, got {other:?}"),
            Ok(_) => panic!("opened twice"),
        };
        assert_eq!(path, dir.path());
    }

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
