//! Group commit: many callers that each need "my writes are on disk" share one flush+fsync.
//!
//! A caller's writes are already committed in memory when it asks for durability. It takes a
//! ticket (the number of requests so far). One caller at a time runs a flush; that flush
//! covers every ticket taken before it started, and everyone whose ticket it covers returns
//! without a flush of their own. Callers that arrive during a flush wait for the next one,
//! which then covers all of them together.
//!
//! A flush is [`Db::sync`]: the storage engine's flush and the fsyncs it leaves out (its
//! data file, the files it keeps large values in, the directories naming them: the
//! adapter's business; see [`crate::SyncedBlobs`]).
//!
//! [`Durability::FsyncEach`] exists to measure what group commit saves: every caller runs its
//! own flush, one after another.

use crate::db::Db;
use crate::LedgerError;
use std::sync::{Mutex, MutexGuard};
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

/// Makes everything written so far durable, on a blocking thread ([`Db::sync`]: the
/// engine's flush and the fsyncs it leaves out). The handle to the store is dropped before
/// this returns, so a store closed right after its last flush really is closed (its lock
/// released).
async fn flush(db: &Db, pause: Option<PausePoint>) -> Result<(), LedgerError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || -> Result<(), LedgerError> {
        if let Some(pause) = pause {
            pause.hold();
        }
        db.sync()
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
    state: Mutex<State>,
    done: Notify,
    serial: tokio::sync::Mutex<()>,
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
    pub(crate) fn new(mode: Durability) -> Self {
        Self {
            mode,
            state: Mutex::new(State::default()),
            done: Notify::new(),
            serial: tokio::sync::Mutex::new(()),
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

    pub(crate) fn pause_next_flush(&self) -> FlushPause {
        let (point, handle) = pause();
        *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = Some(point);
        handle
    }

    /// One flush: the engine's, then the fsyncs.
    async fn flush_once(&self, db: &Db) -> Result<(), LedgerError> {
        let pause = self.pause.lock().unwrap_or_else(|p| p.into_inner()).take();
        flush(db, pause).await
    }

    /// Returns once everything written before the call is durable.
    pub(crate) async fn commit(&self, db: &Db) -> Result<(), LedgerError> {
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
