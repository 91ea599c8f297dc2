//! The ledger's storage interface: what [`crate::Ledger`] needs of an embedded key-value
//! engine, and nothing of any engine in particular.
//!
//! A store is a [`Db`] of named [`Tree`]s (ordered maps from byte keys to byte values).
//! Outside a transaction a tree reads (get, forward range and prefix scans, length) and
//! writes (insert, remove, compare-and-swap, a [`Batch`] applied atomically). A
//! [`Db::transaction`] runs a closure over several trees at once: everything it writes
//! commits together or not at all. The closure may run more than once — an engine that
//! sees a conflict with another transaction runs it again ([`TxStop::Conflict`]) — so it
//! must not have effects outside the transaction; it ends the transaction without writing
//! anything by returning [`TxStop::Abort`] with the ledger's own error, which
//! [`Db::transaction`] returns. Transactions read and write single keys only (no scans).
//! [`Db::flush`] writes the engine's buffers; [`Db::sync`] makes everything written so far
//! durable (the group commit, [`crate::commit`], calls it).
//!
//! Errors are the ledger's own ([`LedgerError`]): an engine's failure is
//! [`LedgerError::Store`] with its message, a store held by another process
//! [`LedgerError::Locked`].
//!
//! The one engine today is behind `sled_adapter`, the only file that knows it. Another
//! engine is one more adapter implementing [`Engine`] (and [`EngineTx`]) that passes the
//! adapter suite (`suite`, run by the unit tests against every adapter).

mod sled_adapter;
#[cfg(test)]
mod suite;

use crate::error::LedgerError;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// A stored key or value.
pub type Value = Vec<u8>;

/// Entries of a tree in key order, read one at a time.
pub type Entries = Box<dyn Iterator<Item = Result<(Value, Value), LedgerError>> + Send>;

/// Why a transaction's closure stopped before it finished.
#[derive(Debug)]
pub enum TxStop {
    /// End the transaction without writing anything; [`Db::transaction`] returns the error.
    Abort(LedgerError),
    /// The engine saw a conflict with another transaction: it runs the closure again. Only
    /// the engine's own operations return this; a closure passes it on with `?`.
    Conflict,
}

impl From<LedgerError> for TxStop {
    fn from(e: LedgerError) -> Self {
        Self::Abort(e)
    }
}

/// What a transaction's closure and its operations return.
pub type TxResult<T> = Result<T, TxStop>;

/// How the engine is tuned when a node opens its store.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Bytes of the engine's page cache.
    pub cache_bytes: u64,
    /// How often the engine flushes on its own, in milliseconds; `None`: never (tests of
    /// durability only).
    pub flush_every_ms: Option<u64>,
}

/// What the durable flushes ([`Db::sync`]) of one handle have fsynced besides the engine's
/// data file: the files it keeps large values in (`blobs/` under the data directory) and
/// the directories naming them. For tests and operators ([`crate::Ledger::synced_blobs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncedBlobs {
    /// The blob files found by the last flush, each fsynced by that flush or an earlier one
    /// of this handle. Files the engine has removed since are forgotten.
    pub files: BTreeSet<String>,
    /// fsyncs of blob files so far: each file is fsynced once per handle (again only if it
    /// was still being written at its first).
    pub file_fsyncs: u64,
    /// fsyncs of `blobs/` and of the data directory so far: each runs only when a file or
    /// directory has appeared in it since its last fsync.
    pub dir_fsyncs: u64,
}

/// An engine, as an adapter implements it. Trees are named by the number
/// [`Engine::open_tree`] gave them.
pub trait Engine: Send + Sync {
    fn open_tree(&self, name: &[u8]) -> Result<usize, LedgerError>;
    /// The names of every tree the store holds (also ones not opened by this handle).
    fn tree_names(&self) -> Result<Vec<Value>, LedgerError>;
    fn get(&self, tree: usize, key: &[u8]) -> Result<Option<Value>, LedgerError>;
    /// Returns the value it replaced.
    fn insert(&self, tree: usize, key: &[u8], value: &[u8]) -> Result<Option<Value>, LedgerError>;
    /// Returns the value it removed.
    fn remove(&self, tree: usize, key: &[u8]) -> Result<Option<Value>, LedgerError>;
    /// Sets `key` to `new` (removes it for `None`) if it holds `old` (is absent for
    /// `None`), atomically; returns whether it did.
    fn compare_and_swap(
        &self,
        tree: usize,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, LedgerError>;
    /// Applies every write of `batch` to one tree, atomically.
    fn apply_batch(&self, tree: usize, batch: Batch) -> Result<(), LedgerError>;
    fn len(&self, tree: usize) -> Result<usize, LedgerError>;
    fn is_empty(&self, tree: usize) -> Result<bool, LedgerError>;
    /// The entries with keys between `low` and `high`, in ascending key order.
    fn range(&self, tree: usize, low: Bound<&[u8]>, high: Bound<&[u8]>) -> Entries;
    /// [`Engine::range`] in descending key order (newest first, for pages of a listing).
    fn range_rev(&self, tree: usize, low: Bound<&[u8]>, high: Bound<&[u8]>) -> Entries;
    /// Runs `body` in one transaction over `trees` (see the module doc).
    fn transaction(
        &self,
        trees: &[usize],
        body: &dyn Fn(&dyn EngineTx) -> TxResult<()>,
    ) -> Result<(), LedgerError>;
    /// A number never handed out before by this store (not transactional).
    fn generate_id(&self) -> Result<u64, LedgerError>;
    /// Writes the engine's buffers to its files.
    fn flush(&self) -> Result<(), LedgerError>;
    /// Makes everything written so far durable: [`Engine::flush`] and whatever fsyncs the
    /// engine's own flush leaves out. Blocking.
    fn sync(&self) -> Result<(), LedgerError>;
    /// What [`Engine::sync`] has fsynced besides the data file.
    fn synced_blobs(&self) -> SyncedBlobs;
    fn size_on_disk(&self) -> Result<u64, LedgerError>;
}

/// The operations inside a transaction, as an adapter implements them.
pub trait EngineTx {
    fn get(&self, tree: usize, key: &[u8]) -> TxResult<Option<Value>>;
    fn insert(&self, tree: usize, key: &[u8], value: &[u8]) -> TxResult<Option<Value>>;
    fn remove(&self, tree: usize, key: &[u8]) -> TxResult<Option<Value>>;
}

/// Opens (or creates) the store in `dir`: with a node's tuning, waiting up to a second for
/// a handle of this process that is still closing; with `None`, the engine's defaults and
/// no wait. A store held by another process is [`LedgerError::Locked`].
pub fn open(dir: &Path, tuning: Option<Tuning>) -> Result<Db, LedgerError> {
    Ok(Db(Arc::new(sled_adapter::SledEngine::open(dir, tuning)?)))
}

/// Whether a process holds the store in `dir` open (its engine's lock). `false` when there
/// is no store.
pub fn held_open(dir: &Path) -> Result<bool, LedgerError> {
    sled_adapter::held_open(dir)
}

/// Copies the stopped store in `dir` into the empty directory `to` without writing to it
/// (opening a store may write: recovery, a snapshot — so a read-only check opens a copy).
/// `Locked` while a node holds the store; `Io` naming the file otherwise.
pub fn copy_stopped(dir: &Path, to: &Path) -> Result<(), LedgerError> {
    sled_adapter::copy_stopped(dir, to)
}

/// An open store. Cheap to clone: every clone is the same store.
#[derive(Clone)]
pub struct Db(Arc<dyn Engine>);

/// One tree of a [`Db`]. Cheap to clone.
#[derive(Clone)]
pub struct Tree {
    engine: Arc<dyn Engine>,
    id: usize,
}

/// Writes to one tree, applied together by [`Tree::apply_batch`].
#[derive(Debug, Default)]
pub struct Batch {
    /// Each key with its new value (`None`: removed), in the order written.
    pub writes: Vec<(Value, Option<Value>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.writes
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.writes.push((key.as_ref().to_vec(), None));
    }
}

impl Db {
    /// Wraps an adapter (for the adapter suite and for adapters opened elsewhere).
    pub fn from_engine(engine: Arc<dyn Engine>) -> Self {
        Self(engine)
    }

    pub fn open_tree(&self, name: impl AsRef<[u8]>) -> Result<Tree, LedgerError> {
        Ok(Tree {
            id: self.0.open_tree(name.as_ref())?,
            engine: Arc::clone(&self.0),
        })
    }

    pub fn tree_names(&self) -> Result<Vec<Value>, LedgerError> {
        self.0.tree_names()
    }

    /// Runs `f` in one transaction over `trees`: all its writes commit together, or none
    /// (it returned [`TxStop::Abort`], whose error is returned, or the engine failed). `f`
    /// may run more than once (see the module doc). Every tree `f` touches must be in
    /// `trees`.
    pub fn transaction<R>(
        &self,
        trees: &[&Tree],
        f: impl Fn(&Transaction<'_>) -> TxResult<R>,
    ) -> Result<R, LedgerError> {
        let ids: Vec<usize> = trees.iter().map(|t| t.id).collect();
        let done: RefCell<Option<R>> = RefCell::new(None);
        self.0.transaction(&ids, &|tx| {
            let value = f(&Transaction { tx })?;
            *done.borrow_mut() = Some(value);
            Ok(())
        })?;
        done.into_inner()
            .ok_or_else(|| LedgerError::Store("a transaction committed without its result".into()))
    }

    pub fn generate_id(&self) -> Result<u64, LedgerError> {
        self.0.generate_id()
    }

    pub fn flush(&self) -> Result<(), LedgerError> {
        self.0.flush()
    }

    /// See [`Engine::sync`]. Blocking.
    pub fn sync(&self) -> Result<(), LedgerError> {
        self.0.sync()
    }

    pub fn synced_blobs(&self) -> SyncedBlobs {
        self.0.synced_blobs()
    }

    pub fn size_on_disk(&self) -> Result<u64, LedgerError> {
        self.0.size_on_disk()
    }
}

/// The smallest key after every key that starts with `prefix`; `None` if there is none
/// (the prefix is empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Value> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn bound_of<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, LedgerError> {
        self.engine.get(self.id, key.as_ref())
    }

    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, LedgerError> {
        Ok(self.get(key)?.is_some())
    }

    /// Returns the value it replaced.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Value>, LedgerError> {
        self.engine.insert(self.id, key.as_ref(), value.as_ref())
    }

    /// Returns the value it removed.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, LedgerError> {
        self.engine.remove(self.id, key.as_ref())
    }

    /// See [`Engine::compare_and_swap`].
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, LedgerError> {
        self.engine
            .compare_and_swap(self.id, key.as_ref(), old, new)
    }

    pub fn apply_batch(&self, batch: Batch) -> Result<(), LedgerError> {
        self.engine.apply_batch(self.id, batch)
    }

    /// How many entries the tree holds (a scan).
    pub fn len(&self) -> Result<usize, LedgerError> {
        self.engine.len(self.id)
    }

    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        self.engine.is_empty(self.id)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Entries {
        self.engine
            .range(self.id, Bound::Unbounded, Bound::Unbounded)
    }

    /// The entries with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>>(&self, range: impl std::ops::RangeBounds<K>) -> Entries {
        self.engine.range(
            self.id,
            bound_of(range.start_bound()),
            bound_of(range.end_bound()),
        )
    }

    /// The entries with keys in `range`, in descending key order.
    pub fn range_rev<K: AsRef<[u8]>>(&self, range: impl std::ops::RangeBounds<K>) -> Entries {
        self.engine.range_rev(
            self.id,
            bound_of(range.start_bound()),
            bound_of(range.end_bound()),
        )
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Entries {
        let prefix = prefix.as_ref();
        match prefix_end(prefix) {
            Some(end) => self.engine.range(
                self.id,
                Bound::Included(prefix),
                Bound::Excluded(end.as_slice()),
            ),
            None => self
                .engine
                .range(self.id, Bound::Included(prefix), Bound::Unbounded),
        }
    }
}

/// A running transaction (see [`Db::transaction`]).
pub struct Transaction<'a> {
    tx: &'a dyn EngineTx,
}

impl<'a> Transaction<'a> {
    /// `tree` as this transaction sees it (it must be one of the transaction's trees).
    pub fn on(&self, tree: &Tree) -> TxTree<'a> {
        TxTree {
            tx: self.tx,
            id: tree.id,
        }
    }
}

/// One tree inside a transaction.
#[derive(Clone, Copy)]
pub struct TxTree<'a> {
    tx: &'a dyn EngineTx,
    id: usize,
}

impl TxTree<'_> {
    pub fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<Value>> {
        self.tx.get(self.id, key.as_ref())
    }

    /// Returns the value it replaced.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> TxResult<Option<Value>> {
        self.tx.insert(self.id, key.as_ref(), value.as_ref())
    }

    /// Returns the value it removed.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> TxResult<Option<Value>> {
        self.tx.remove(self.id, key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
