//! Opening a store: the engine (with the node's tuning), the data key check, the format
//! upgrade of a store written by an earlier version; and what keeps a store healthy and
//! durable afterwards: the flush (group commit), the health probe, and the pauses and
//! injected failures tests use.

use super::{u64_from, Ledger, StoreOptions, KEY_CHECK, SCHEMA, SCHEMA_VERSION, SEQ_FLOOR};
use crate::{
    at_rest::{AtRest, DataKey},
    commit::{FlushPause, GroupCommit},
    db::{self, SyncedBlobs, Tuning},
    error::LedgerError,
};
use std::path::{Path, PathBuf};

impl Ledger {
    /// Opens the store in `dir` without its data key: the audit chain and message status
    /// can be read (`kurzdraht audit verify`), personal data can be neither read nor written
    /// ([`LedgerError::NoDataKey`]). A second process opening the same directory gets
    /// [`LedgerError::Locked`].
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        Self::open_with(dir, None, StoreOptions::default())
    }

    /// Opens (or creates) the store with its data key, as a node does.
    pub fn open_encrypted(dir: &Path, key: &DataKey) -> Result<Self, LedgerError> {
        Self::open_with(dir, Some(key), StoreOptions::default())
    }

    /// Opens the store with an explicit data key and options (durability mode, cache size).
    /// A store is bound to the first data key it is opened with; another key is refused at
    /// open.
    pub fn open_with(
        dir: &Path,
        key: Option<&DataKey>,
        options: StoreOptions,
    ) -> Result<Self, LedgerError> {
        let StoreOptions {
            durability,
            cache_bytes,
            flush_every_ms,
        } = options;
        let tuning = Tuning {
            cache_bytes,
            flush_every_ms,
        };
        let db = db::open(dir, Some(tuning))?;
        Ok(Self {
            consents: db.open_tree("consents")?,
            outbox: db.open_tree("outbox")?,
            messages: db.open_tree("messages")?,
            inbox: db.open_tree("inbox")?,
            inbox_seq: db.open_tree("inbox_seq")?,
            audit: db.open_tree("audit")?,
            meta: db.open_tree("meta")?,
            retention: db.open_tree("retention")?,
            requests: db.open_tree("requests")?,
            delivered: db.open_tree("delivered")?,
            accounts: db.open_tree("accounts")?,
            cases: db.open_tree("cases")?,
            seq_floor: match db.open_tree("meta")?.get(SEQ_FLOOR)? {
                Some(v) => u64_from("seq floor", &v)?,
                None => 0,
            },
            writes: Default::default(),
            commit: std::sync::Arc::new(GroupCommit::new(durability)),
            injected_failure: Default::default(),
            scan_pause: Default::default(),
            at_rest: std::sync::Arc::new(AtRest::new(key)?),
            db,
        }
        .check_data_key())
        .and_then(|r| r)
        .and_then(|ledger| {
            if ledger.at_rest.has_key() {
                ledger.upgrade()?;
            }
            Ok(ledger)
        })
    }

    /// Brings a store written by an earlier version to the current format, once (each step
    /// idempotent, so a crash during it only means it runs again at the next open); refuses
    /// a store written by a later version. Going back to an earlier version after an
    /// upgrade is not supported (it would not keep the retention index).
    pub(super) fn upgrade(&self) -> Result<(), LedgerError> {
        let version = match self.meta.get(SCHEMA)? {
            Some(v) => u64_from("schema version", &v)?,
            None if self.holds_nothing()? => 0,
            None => 1,
        };
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerStore {
                version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 1 {
            self.build_retention_index()?;
        }
        // Once for a store written before the case index existed (marked in `meta`).
        self.build_case_index()?;
        // Every open, not only on the upgrade: entries without a lane (queued by an earlier
        // version, also one run against this store after an upgrade) are moved into theirs.
        let moved = self.move_outbox_into_lanes()?;
        if moved > 0 {
            tracing::info!(queued = moved, "queued messages moved into delivery lanes");
        }
        if version < SCHEMA_VERSION {
            self.meta.insert(SCHEMA, SCHEMA_VERSION.to_be_bytes())?;
        }
        if version < SCHEMA_VERSION || moved > 0 {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Whether the store holds no consent, inbox item or queued message (a new store).
    pub(super) fn holds_nothing(&self) -> Result<bool, LedgerError> {
        Ok(self.consents.is_empty()? && self.inbox.is_empty()? && self.outbox.is_empty()?)
    }

    /// Binds a new store to its data key, or checks that the key is the one it is bound to.
    pub(super) fn check_data_key(self) -> Result<Self, LedgerError> {
        if !self.at_rest.has_key() {
            return Ok(self);
        }
        match self.meta.get(KEY_CHECK)? {
            Some(sealed) => {
                self.at_rest.open("meta", KEY_CHECK, &sealed).map_err(|_| {
                    LedgerError::BadDataKey {
                        reason: "this store was sealed with another data key",
                    }
                })?;
            }
            None => {
                if !self.holds_nothing()? {
                    return Err(LedgerError::BadDataKey {
                        reason: "this store already holds data written without a data key",
                    });
                }
                let sealed = self
                    .at_rest
                    .seal("meta", KEY_CHECK, b"kurzdraht data key")?;
                self.meta.insert(KEY_CHECK, sealed)?;
            }
        }
        Ok(self)
    }

    /// Makes every change so far durable: the engine's flush, then fsyncs of its data file
    /// and of any new blob files ([`crate::db::Db::sync`]). Concurrent callers share one flush (see [`crate::commit`]).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let injected = self
            .injected_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(release) = injected {
            release.notified().await;
            return Err(LedgerError::Io {
                what: "flush",
                path: PathBuf::new(),
                source: std::io::Error::other("flush failure injected by a test"),
            });
        }
        self.commit.commit(&self.db).await
    }

    /// Fault injection for tests of what a node does when a flush fails after its
    /// transaction committed: the next [`Ledger::flush`] (of any handle of this store
    /// opened by this call's handle's clones) waits until the returned signal is notified,
    /// then fails without flushing. Later flushes work again.
    #[doc(hidden)]
    pub fn inject_flush_failure(&self) -> std::sync::Arc<tokio::sync::Notify> {
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        *self
            .injected_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(release.clone());
        release
    }

    /// How many flushes (fsyncs) this handle has run, for benchmarks.
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes()
    }

    /// The blob files (values the engine keeps in files of their own under `<dir>/blobs/`)
    /// that this handle's flushes have fsynced, with fsync counts: for tests, and for
    /// operators who want to see what a flush costs beyond the engine's data file. Waits
    /// while a flush is fsyncing them.
    pub fn synced_blobs(&self) -> SyncedBlobs {
        self.db.synced_blobs()
    }

    /// For tests: the next flush of this handle stops on its blocking thread before it starts
    /// and waits there until the returned pause is released or dropped, so a test can cancel
    /// a caller while its flush is certainly running.
    #[doc(hidden)]
    pub fn pause_next_flush(&self) -> FlushPause {
        self.commit.pause_next_flush()
    }

    /// For tests: the next full scan of this store (the consents for a report or an
    /// erasure, the outbox count of a metrics scrape) stops on the thread it runs on before
    /// it reads anything, until the returned pause is released or dropped — so a test can
    /// see that such work does not hold up the node's async threads.
    #[doc(hidden)]
    pub fn pause_next_scan(&self) -> FlushPause {
        let (point, handle) = crate::commit::pause();
        *self.scan_pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
        handle
    }

    /// Where a full scan starts: held here if a test paused it.
    pub(super) fn scan_starts(&self) {
        let paused = self
            .scan_pause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(point) = paused {
            point.hold();
        }
    }

    /// Checks that the store still reads and writes (for health checks): writes and reads
    /// back a probe value in `meta` (not flushed).
    pub fn probe(&self, now_ms: i64) -> Result<(), LedgerError> {
        let _writing = self.write_guard();
        self.meta.insert(b"health_probe", now_ms.to_be_bytes())?;
        match self.meta.get(b"health_probe")? {
            Some(v) if v.as_ref() == now_ms.to_be_bytes() => Ok(()),
            _ => Err(LedgerError::corrupt("health probe", "did not read back")),
        }
    }

    /// Bytes on disk, for operators.
    pub fn size_on_disk(&self) -> Result<u64, LedgerError> {
        self.db.size_on_disk()
    }
}
