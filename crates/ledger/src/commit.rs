//! Group commit: many callers that each need "my writes are on disk" share one flush+fsync.
//!
//! A caller's writes are already committed in memory when it asks for durability. It takes a
//! ticket (the number of requests so far). One caller at a time runs a flush; that flush
//! covers every ticket taken before it started, and everyone whose ticket it covers returns
//! without a flush of their own. Callers that arrive during a flush wait for the next one,
//! which then covers all of them together.
//!
//! [`Durability::FsyncEach`] exists to measure what group commit saves: every caller runs its
//! own flush, one after another.

use crate::LedgerError;
use std::sync::Mutex;
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

/// Makes everything written so far durable, on a blocking thread: sled's own flush writes its
/// buffers and (on Linux) waits for them with `sync_file_range`, which neither flushes the
/// disk's write cache nor the file's metadata — so an `fsync` of the store's file follows.
/// The handle to the store is dropped before this returns, so a store closed right after its
/// last flush really is closed (its lock released).
async fn flush(db: &sled::Db, file: &std::path::Path) -> Result<(), LedgerError> {
    let db = db.clone();
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<(), LedgerError> {
        db.flush()?;
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|source| LedgerError::Io {
                what: "fsync",
                path: file.clone(),
                source,
            })?;
        Ok(())
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
    /// sled's data file, fsynced after each flush.
    file: std::path::PathBuf,
    state: Mutex<State>,
    done: Notify,
    serial: tokio::sync::Mutex<()>,
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
    pub(crate) fn new(mode: Durability, file: std::path::PathBuf) -> Self {
        Self {
            mode,
            file,
            state: Mutex::new(State::default()),
            done: Notify::new(),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (plain counters).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Returns once everything written before the call is durable.
    pub(crate) async fn commit(&self, db: &sled::Db) -> Result<(), LedgerError> {
        if self.mode == Durability::FsyncEach {
            let _one_at_a_time = self.serial.lock().await;
            flush(db, &self.file).await?;
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
            let result = flush(db, &self.file).await;
            running.ok = result.is_ok();
            drop(running);
            result?;
        }
    }
}
