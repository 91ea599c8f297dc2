//! [`Ledger`]: the node's sled database. Trees:
//!
//! | tree        | key                                  | value                          |
//! |-------------|--------------------------------------|--------------------------------|
//! | `consents`  | consent id                           | [`StoredConsent`]              |
//! | `outbox`    | recipient, `0x00`, lane, u64 BE seq  | [`OutboxEntry`] (FIFO per lane)|
//! | `messages`  | message id                           | [`MessageRecord`] (status)     |
//! | `inbox`     | message id                           | [`InboxRecord`]                |
//! | `inbox_seq` | u64 BE arrival sequence              | message id                     |
//! | `audit`     | u64 BE sequence                      | audit entry bytes              |
//! | `meta`      | `audit_head`, `inbox_seq`, `schema`  | counters and the chain head    |
//! | `retention` | see [`retention`]                    | closed cases, bodies held      |
//! | `requests`  | see [`requests`]                     | first answers to keyed calls   |
//! | `delivered` | see [`kept`]                         | delivered envelopes, kept      |
//!
//! Every method that changes state runs one sled transaction over all trees, including the
//! audit entry that records the change. Callers make the change durable with
//! [`Ledger::flush`] before they acknowledge it to anyone. An online backup
//! ([`Ledger::export`]) holds every transaction back while it copies the trees, so the copy
//! is one consistent state.

use crate::{
    at_rest::{AtRest, DataKey},
    audit::{entry_hash, verify_chain, AuditEvent, AuditNote, AuditReport},
    commit::{Durability, FlushPause, GroupCommit, SyncedBlobs},
    consent::ConsentRefusal,
    error::LedgerError,
    records::{InboxRecord, MessageRecord, OutboxEntry, StoredConsent},
};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryNotice, DeliveryState, MessageKind,
    MessageStatus, SignedEnvelope, SignedReceipt,
};
use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const AUDIT_HEAD: &[u8] = b"audit_head";
const INBOX_SEQ: &[u8] = b"inbox_seq";
const KEY_CHECK: &[u8] = b"data_key_check";
/// The store's format version in `meta`: 1 = the first; 2 = with the retention index;
/// 3 = with delivery lanes in the outbox keys. The `requests` tree (idempotency keys) needs
/// no version of its own: an empty tree is a valid one, so a store of format 3 written
/// before it existed simply holds no answers yet, and an earlier version of kurzdraht
/// opening a store with the tree ignores it.
const SCHEMA: &[u8] = b"schema";
/// Where sequence numbers begin in a store restored from a backup (see
/// [`Ledger::outbox_seqs`]).
const SEQ_FLOOR: &[u8] = b"seq_floor";
const SCHEMA_VERSION: u64 = 3;

pub mod backup;
mod deadlines;
mod kept;
mod lanes;
mod rekey;
mod requests;
mod retention;
mod sent;
pub use deadlines::{Extension, QueueSummary};
pub use kept::{Cursor, DeliveredEntry};
pub use lanes::{lane_of_root, DELIVERY_LANES};
pub use requests::{KeyedRequest, Once};
pub use retention::Swept;
pub use sent::{ReceivedPage, SentEffect, SentEnvelope, SentRestored};

type TxResult<T> = Result<T, ConflictableTransactionError<LedgerError>>;

fn abort<T>(e: LedgerError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Bytes of sled's page cache: the bulk of a node's memory, whatever the store's size.
    pub cache_bytes: u64,
    /// How often sled's own background thread flushes, in milliseconds; `None` switches it
    /// off. For tests of durability only: with it off, only [`Ledger::flush`], a full write
    /// buffer (one 512 KiB segment) or closing the store writes sled's log to the file, so a
    /// test that kills the process can see what a missing flush loses. Nodes keep the
    /// default, sled's 500 ms.
    pub flush_every_ms: Option<u64>,
}

/// The page cache a node uses unless configured otherwise (`[storage] cache_mb`).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::GroupCommit,
            cache_bytes: DEFAULT_CACHE_BYTES,
            flush_every_ms: Some(500),
        }
    }
}

/// A message ready to be queued: sealed, with its delivery facts.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: SignedEnvelope,
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: String,
    pub consent_id: String,
    pub submitted_at_ms: i64,
    pub deadline_ms: i64,
    pub envelope_sha256: [u8; 32],
}

/// A message waiting in the outbox, as [`Ledger::queued_under`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: String,
}

/// How a queued message left the outbox.
#[derive(Debug, Clone)]
pub enum Finish {
    /// The receiver's receipt was verified.
    Delivered { receipt: SignedReceipt },
    /// This node stopped it (consent no longer valid); `reason` is a code without personal data.
    Refused { reason: String },
    /// The receiver refused it for good.
    Rejected { reason: String },
    /// Its deadline passed.
    Expired,
    /// Its deadline passed, but it is a consent withdrawal, which must still reach the peer:
    /// `renewal` (the same withdrawal in a new envelope, made now) is queued in the same
    /// transaction.
    ExpiredRenewed { renewal: Box<Outgoing> },
}

/// What [`Ledger::finish`] did.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// The arrival sequence number of the delivery notice left in this node's inbox.
    pub notice_seq: Option<u64>,
    /// The message's new final status; `None` when it was final already (nothing changed).
    pub status: Option<MessageStatus>,
}

/// What a received envelope changes besides the inbox.
#[allow(clippy::large_enum_variant)] // built once per delivery; boxing buys nothing
#[derive(Debug, Clone)]
pub enum ConsentEffect {
    None,
    Record(ConsentRecord),
    Withdraw(ConsentWithdrawalRecord),
}

/// The outcome of [`Ledger::accept_delivery`].
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Newly stored with this arrival sequence number.
    Stored { seq: u64 },
    /// The same envelope was stored before; here is that record (with its original receipt).
    Duplicate(Box<InboxRecord>),
}

/// The node's store. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    db: sled::Db,
    commit: std::sync::Arc<GroupCommit>,
    at_rest: std::sync::Arc<AtRest>,
    consents: Tree,
    outbox: Tree,
    messages: Tree,
    inbox: Tree,
    inbox_seq: Tree,
    audit: Tree,
    meta: Tree,
    retention: Tree,
    requests: Tree,
    delivered: Tree,
    /// Added to sled's id generator (see [`Ledger::outbox_seqs`]).
    seq_floor: u64,
    /// Every transaction holds this for reading; an online backup holds it for writing
    /// while it copies the trees (see [`Ledger::export`]).
    writes: std::sync::Arc<std::sync::RwLock<()>>,
    /// A full scan a test paused (see [`Ledger::pause_next_scan`]).
    scan_pause: std::sync::Arc<std::sync::Mutex<Option<crate::commit::PausePoint>>>,
    /// A flush failure a test injected (see [`Ledger::inject_flush_failure`]).
    injected_failure: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>>,
}

struct Tx<'a> {
    at_rest: &'a AtRest,
    consents: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    messages: &'a TransactionalTree,
    inbox: &'a TransactionalTree,
    inbox_seq: &'a TransactionalTree,
    audit: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    retention: &'a TransactionalTree,
    requests: &'a TransactionalTree,
    delivered: &'a TransactionalTree,
}

fn decode<T: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T, LedgerError> {
    T::decode(bytes).map_err(|e| LedgerError::corrupt(what, e))
}

fn tx_decode<T: Message + Default>(what: &'static str, bytes: &[u8]) -> TxResult<T> {
    decode(what, bytes).map_err(ConflictableTransactionError::Abort)
}

fn u64_from(what: &'static str, bytes: &[u8]) -> Result<u64, LedgerError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| LedgerError::corrupt(what, "shorter than 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

/// The audit detail of a consent record: which consent it replaces, if any (ids only).
fn supersedes_detail(consent: &ConsentRecord) -> String {
    if consent.supersedes.is_empty() {
        String::new()
    } else {
        format!("supersedes {}", consent.supersedes)
    }
}

fn outbox_prefix(peer: &str) -> Vec<u8> {
    let mut key = peer.as_bytes().to_vec();
    key.push(0);
    key
}

impl Tx<'_> {
    /// Reads and opens a sealed value of `tree` (named `name`).
    fn get_sealed<T: Message + Default>(
        &self,
        tree: &TransactionalTree,
        name: &'static str,
        key: &[u8],
    ) -> TxResult<Option<T>> {
        match tree.get(key)? {
            None => Ok(None),
            Some(v) => {
                let plain = self
                    .at_rest
                    .open(name, key, &v)
                    .map_err(ConflictableTransactionError::Abort)?;
                tx_decode(name, &plain).map(Some)
            }
        }
    }

    /// Seals and writes a value of `tree` (named `name`).
    fn put_sealed<T: Message>(
        &self,
        tree: &TransactionalTree,
        name: &'static str,
        key: &[u8],
        value: &T,
    ) -> TxResult<()> {
        let sealed = self
            .at_rest
            .seal(name, key, &value.encode_to_vec())
            .map_err(ConflictableTransactionError::Abort)?;
        tree.insert(key, sealed)?;
        Ok(())
    }

    fn next_inbox_seq(&self) -> TxResult<u64> {
        let seq = match self.meta.get(INBOX_SEQ)? {
            Some(v) => u64_from("inbox seq", &v).map_err(ConflictableTransactionError::Abort)?,
            None => 0,
        } + 1;
        self.meta.insert(INBOX_SEQ, &seq.to_be_bytes())?;
        Ok(seq)
    }

    fn append_audit(&self, note: AuditNote, at_ms: i64) -> TxResult<()> {
        let (seq, prev) = match self.meta.get(AUDIT_HEAD)? {
            Some(v) if v.len() == 40 => {
                let seq =
                    u64_from("audit head", &v).map_err(ConflictableTransactionError::Abort)?;
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&v[8..40]);
                (seq, hash)
            }
            Some(_) => return abort(LedgerError::corrupt("audit head", "wrong length")),
            None => (0, [0u8; 32]),
        };
        let seq = seq + 1;
        let bytes = note.into_entry(seq, prev, at_ms).encode_to_vec();
        let hash = entry_hash(&bytes);
        self.audit.insert(&seq.to_be_bytes(), bytes)?;
        let mut head = seq.to_be_bytes().to_vec();
        head.extend_from_slice(&hash);
        self.meta.insert(AUDIT_HEAD, head)?;
        Ok(())
    }

    fn enqueue(&self, out: &Outgoing, seq: u64) -> TxResult<u8> {
        let carries_case = !matches!(
            out.kind,
            MessageKind::ConsentNotice | MessageKind::ConsentWithdrawal
        );
        if carries_case && !out.consent_id.is_empty() {
            // Checked again where it is queued: a withdrawal, replacement or erasure that
            // committed since the submission's check wins.
            let cited = self.get_sealed::<StoredConsent>(
                self.consents,
                "consents",
                out.consent_id.as_bytes(),
            )?;
            if let Some(c) = cited {
                let refusal = if c.withdrawal.is_some() {
                    Some(ConsentRefusal::Withdrawn)
                } else if !c.superseded_by.is_empty() {
                    Some(ConsentRefusal::Superseded)
                } else if c.erased_at_ms > 0 {
                    Some(ConsentRefusal::Erased)
                } else {
                    None
                };
                if let Some(r) = refusal {
                    return abort(LedgerError::Refused(r));
                }
            }
        }
        let lane = self.lane_of(&out.consent_id)?;
        let key = &lanes::outbox_key(&out.recipient, lane, seq);
        let entry = OutboxEntry {
            message_id: out.message_id.clone(),
            recipient: out.recipient.clone(),
            envelope: Some(out.envelope.clone()),
            deadline_ms: out.deadline_ms,
        };
        let record = MessageRecord {
            status: Some(MessageStatus {
                message_id: out.message_id.clone(),
                kind: out.kind as i32,
                recipient: out.recipient.clone(),
                state: DeliveryState::Queued as i32,
                attempts: 0,
                detail: String::new(),
                submitted_at_ms: out.submitted_at_ms,
                updated_at_ms: out.submitted_at_ms,
                receipt: None,
                consent_id: out.consent_id.clone(),
            }),
            outbox_key: key.to_vec(),
            envelope_sha256: out.envelope_sha256.to_vec(),
            deadline_ms: out.deadline_ms,
            next_attempt_ms: out.submitted_at_ms,
            in_doubt: false,
        };
        self.put_sealed(self.outbox, "outbox", key, &entry)?;
        self.messages
            .insert(out.message_id.as_bytes(), record.encode_to_vec())?;
        self.append_audit(
            AuditNote::new(AuditEvent::Submitted)
                .message(&out.message_id)
                .consent(&out.consent_id)
                .peer(&out.recipient)
                .kind(out.kind as i32)
                .envelope(&out.envelope_sha256),
            out.submitted_at_ms,
        )?;
        Ok(lane)
    }
}

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
        // A handle of this process dropped an instant ago (a node restarted in place, sled's
        // background flusher finishing) may still hold the lock briefly: wait up to a second
        // for it. Another process holding it gets the clear error after that.
        let started = std::time::Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(cache_bytes)
                .flush_every_ms(flush_every_ms)
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    if started.elapsed() > std::time::Duration::from_secs(1) {
                        return Err(LedgerError::Locked {
                            path: PathBuf::from(dir),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(other) => return Err(LedgerError::Store(other)),
            }
        };
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
            seq_floor: match db.open_tree("meta")?.get(SEQ_FLOOR)? {
                Some(v) => u64_from("seq floor", &v)?,
                None => 0,
            },
            writes: Default::default(),
            commit: std::sync::Arc::new(GroupCommit::new(durability, dir.to_path_buf())),
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
    fn upgrade(&self) -> Result<(), LedgerError> {
        let version = match self.meta.get(SCHEMA)? {
            Some(v) => u64_from("schema version", &v)?,
            None if self.consents.is_empty() && self.inbox.is_empty() && self.outbox.is_empty() => {
                0
            }
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
        // Every open, not only on the upgrade: entries without a lane (queued by an earlier
        // version, also one run against this store after an upgrade) are moved into theirs.
        let moved = self.move_outbox_into_lanes()?;
        if moved > 0 {
            tracing::info!(queued = moved, "queued messages moved into delivery lanes");
        }
        if version < SCHEMA_VERSION {
            self.meta.insert(SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        }
        if version < SCHEMA_VERSION || moved > 0 {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Binds a new store to its data key, or checks that the key is the one it is bound to.
    fn check_data_key(self) -> Result<Self, LedgerError> {
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
                if !(self.consents.is_empty() && self.inbox.is_empty() && self.outbox.is_empty()) {
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

    fn open_sealed<T: Message + Default>(
        &self,
        name: &'static str,
        key: &[u8],
        stored: &[u8],
    ) -> Result<T, LedgerError> {
        decode(name, &self.at_rest.open(name, key, stored)?)
    }

    fn get_sealed<T: Message + Default>(
        &self,
        tree: &Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, LedgerError> {
        tree.get(key)?
            .map(|v| self.open_sealed(name, key, &v))
            .transpose()
    }

    /// Makes every change so far durable: sled's flush, then fsyncs of its data file and of
    /// any new blob files. Concurrent callers share one flush (see [`crate::commit`]).
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

    /// The blob files (values sled keeps in files of their own under `<dir>/blobs/`) that this
    /// handle's flushes have fsynced, with fsync counts: for tests, and for operators who want
    /// to see what a flush costs beyond sled's data file. Waits while a flush is fsyncing them.
    pub fn synced_blobs(&self) -> SyncedBlobs {
        self.commit.synced_blobs()
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
    fn scan_starts(&self) {
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
        self.meta.insert(b"health_probe", &now_ms.to_be_bytes())?;
        match self.meta.get(b"health_probe")? {
            Some(v) if v.as_ref() == now_ms.to_be_bytes() => Ok(()),
            _ => Err(LedgerError::corrupt("health probe", "did not read back")),
        }
    }

    /// Bytes on disk, for operators.
    pub fn size_on_disk(&self) -> Result<u64, LedgerError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Held by every write for reading: an online backup waits for writes in progress and
    /// holds new ones back while it copies.
    fn write_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        // A panic while holding it leaves no state of its own behind.
        self.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tx<R>(&self, f: impl Fn(&Tx<'_>) -> TxResult<R>) -> Result<R, LedgerError> {
        let _writing = self.write_guard();
        (
            &self.consents,
            &self.outbox,
            &self.messages,
            &self.inbox,
            &self.inbox_seq,
            &self.audit,
            &self.meta,
            &self.retention,
            &self.requests,
            &self.delivered,
        )
            .transaction(
                |(
                    consents,
                    outbox,
                    messages,
                    inbox,
                    inbox_seq,
                    audit,
                    meta,
                    retention,
                    requests,
                    delivered,
                )| {
                    f(&Tx {
                        at_rest: &self.at_rest,
                        consents,
                        outbox,
                        messages,
                        inbox,
                        inbox_seq,
                        audit,
                        meta,
                        retention,
                        requests,
                        delivered,
                    })
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => LedgerError::Store(e),
            })
    }

    /// Outbox sequence numbers for `n` messages (taken outside the transaction: sled's id
    /// generator is not transactional; a retried transaction keeps them). Also order the
    /// kept deliveries of one millisecond. A store restored from a backup starts sled's
    /// generator anew, so they begin above every number the backup held (`meta/seq_floor`,
    /// written by the restore).
    fn outbox_seqs(&self, n: usize) -> Result<Vec<u64>, LedgerError> {
        (0..n)
            .map(|_| Ok(self.db.generate_id()?.saturating_add(self.seq_floor)))
            .collect()
    }

    // ---- consents ----

    /// Records a consent given at this agency and queues its notices, atomically. The first
    /// notice's signed envelope is kept with the record as proof of it. When the consent
    /// supersedes an earlier one held here, that one is marked superseded in the same
    /// transaction (it must be neither withdrawn nor superseded already).
    pub fn record_consent(
        &self,
        consent: &ConsentRecord,
        notices: &[Outgoing],
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.record_consent_once(consent, notices, now_ms, None)
            .map(|_| ())
    }

    /// [`Ledger::record_consent`] for a call with an idempotency key: unless the key
    /// answered an earlier call (then nothing changes and that answer is returned), the
    /// consent, its notices and the answer are stored in one transaction.
    pub fn record_consent_once(
        &self,
        consent: &ConsentRecord,
        notices: &[Outgoing],
        now_ms: i64,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<()>, LedgerError> {
        let seqs = self.outbox_seqs(notices.len())?;
        self.tx_once(request, |t| {
            let id = consent.consent_id.as_bytes();
            if t.consents.get(id)?.is_some() {
                return abort(LedgerError::ConsentExists {
                    consent_id: consent.consent_id.clone(),
                });
            }
            let stored = StoredConsent {
                record: Some(consent.clone()),
                notice: notices.first().map(|n| n.envelope.clone()),
                chain_root: t.root_for_new(consent)?,
                ..Default::default()
            };
            if !consent.supersedes.is_empty() {
                let old_id = consent.supersedes.as_bytes();
                let Some(mut old) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                else {
                    return abort(LedgerError::UnknownConsent {
                        consent_id: consent.supersedes.clone(),
                    });
                };
                if old.withdrawal.is_some() {
                    return abort(LedgerError::AlreadyWithdrawn {
                        consent_id: consent.supersedes.clone(),
                    });
                }
                if !old.superseded_by.is_empty() {
                    return abort(LedgerError::AlreadySuperseded {
                        consent_id: consent.supersedes.clone(),
                    });
                }
                old.superseded_by = consent.consent_id.clone();
                old.superseded_at_ms = consent.recorded_at_ms;
                t.put_sealed(t.consents, "consents", old_id, &old)?;
            }
            t.put_sealed(t.consents, "consents", id, &stored)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentRecorded)
                    .consent(&consent.consent_id)
                    .detail(supersedes_detail(consent)),
                now_ms,
            )?;
            for (n, seq) in notices.iter().zip(&seqs) {
                t.enqueue(n, *seq)?;
            }
            Ok(())
        })
    }

    /// Undoes [`Ledger::record_consent`] whose flush failed (the caller was told nothing
    /// was recorded): the record goes, the consent it replaced is in force again. Its
    /// queued notices are taken out by the caller ([`Ledger::finish_all`]). Audited.
    pub fn unrecord_consent(&self, consent_id: &str, now_ms: i64) -> Result<(), LedgerError> {
        self.tx(|t| {
            let id = consent_id.as_bytes();
            let Some(held) = t.get_sealed::<StoredConsent>(t.consents, "consents", id)? else {
                return Ok(());
            };
            let supersedes = held.record.map(|r| r.supersedes).unwrap_or_default();
            if !supersedes.is_empty() {
                let old_id = supersedes.as_bytes();
                if let Some(mut old) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                {
                    if old.superseded_by == consent_id {
                        old.superseded_by.clear();
                        old.superseded_at_ms = 0;
                        t.put_sealed(t.consents, "consents", old_id, &old)?;
                    }
                }
            }
            t.consents.remove(id)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentUnrecorded).consent(consent_id),
                now_ms,
            )
        })
    }

    /// Records a withdrawal of a consent held here and queues its notices, atomically.
    pub fn record_withdrawal(
        &self,
        withdrawal: &ConsentWithdrawalRecord,
        notices: &[Outgoing],
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.record_withdrawal_once(withdrawal, notices, now_ms, None)
            .map(|_| ())
    }

    /// [`Ledger::record_withdrawal`] for a call with an idempotency key (see
    /// [`Ledger::record_consent_once`]).
    pub fn record_withdrawal_once(
        &self,
        withdrawal: &ConsentWithdrawalRecord,
        notices: &[Outgoing],
        now_ms: i64,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<()>, LedgerError> {
        let seqs = self.outbox_seqs(notices.len())?;
        self.tx_once(request, |t| {
            let id = withdrawal.consent_id.as_bytes();
            let Some(mut stored) = t.get_sealed::<StoredConsent>(t.consents, "consents", id)?
            else {
                return abort(LedgerError::UnknownConsent {
                    consent_id: withdrawal.consent_id.clone(),
                });
            };
            if stored.withdrawal.is_some() {
                return abort(LedgerError::AlreadyWithdrawn {
                    consent_id: withdrawal.consent_id.clone(),
                });
            }
            stored.withdrawal = Some(withdrawal.clone());
            stored.withdrawal_notice = notices.first().map(|n| n.envelope.clone());
            t.put_sealed(t.consents, "consents", id, &stored)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentWithdrawn).consent(&withdrawal.consent_id),
                now_ms,
            )?;
            for (n, seq) in notices.iter().zip(&seqs) {
                t.enqueue(n, *seq)?;
            }
            Ok(())
        })
    }

    pub fn consent(&self, consent_id: &str) -> Result<Option<StoredConsent>, LedgerError> {
        self.get_sealed(&self.consents, "consents", consent_id.as_bytes())
    }

    /// Every consent held here, oldest first (consent ids are UUIDv7), one at a time: a
    /// node may hold millions, so nothing collects them all.
    pub fn consents_iter(&self) -> impl Iterator<Item = Result<StoredConsent, LedgerError>> + '_ {
        self.scan_starts();
        self.consents.iter().map(|kv| {
            let (k, v) = kv?;
            self.open_sealed("consents", &k, &v)
        })
    }

    /// Up to `limit` consents with ids after `after` (all from the first when empty), in id
    /// order, each with its id: one page of a listing.
    pub fn consents_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, StoredConsent)>, LedgerError> {
        let mut from = after.as_bytes().to_vec();
        if !from.is_empty() {
            from.push(0); // the smallest key after `after`
        }
        self.consents
            .range(from..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let id = String::from_utf8(k.to_vec())
                    .map_err(|_| LedgerError::corrupt("consent key", "not UTF-8"))?;
                Ok((id, self.open_sealed("consents", &k, &v)?))
            })
            .collect()
    }

    // ---- outbox ----

    /// Queues one submitted message (durable after the next [`Ledger::flush`]).
    /// Returns the delivery lane it was queued in.
    pub fn enqueue(&self, out: &Outgoing) -> Result<u8, LedgerError> {
        let seq = self.outbox_seqs(1)?[0];
        self.tx(|t| t.enqueue(out, seq))
    }

    /// [`Ledger::enqueue`] for a call with an idempotency key: unless the key answered an
    /// earlier call (then nothing is queued and that answer is returned), the message and
    /// the answer are stored in one transaction.
    pub fn enqueue_once(
        &self,
        out: &Outgoing,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<u8>, LedgerError> {
        let seq = self.outbox_seqs(1)?[0];
        self.tx_once(request, |t| t.enqueue(out, seq))
    }

    /// The oldest queued message for `peer` (over all its lanes).
    pub fn outbox_head(&self, peer: &str) -> Result<Option<OutboxEntry>, LedgerError> {
        let mut oldest: Option<(sled::IVec, sled::IVec)> = None;
        for lane in 0..DELIVERY_LANES {
            if let Some(kv) = self
                .outbox
                .scan_prefix(lanes::lane_prefix(peer, lane))
                .next()
            {
                let (k, v) = kv?;
                let seq_of =
                    |key: &[u8]| key.get(key.len().saturating_sub(8)..).map(<[u8]>::to_vec);
                if oldest
                    .as_ref()
                    .is_none_or(|(ok, _)| seq_of(&k) < seq_of(ok))
                {
                    oldest = Some((k, v));
                }
            }
        }
        oldest
            .map(|(k, v)| self.open_sealed("outbox", &k, &v))
            .transpose()
    }

    /// Up to `limit` of the oldest queued messages in one lane of `peer`'s outbox, oldest
    /// first.
    pub fn outbox_batch(
        &self,
        peer: &str,
        lane: u8,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        self.outbox
            .scan_prefix(lanes::lane_prefix(peer, lane))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                self.open_sealed("outbox", &k, &v)
            })
            .collect()
    }

    /// The queued messages (to any peer) that cite one of `consent_ids`, with their kind:
    /// reads only the lanes those consents' messages are queued in.
    pub fn queued_under(&self, consent_ids: &BTreeSet<String>) -> Result<Vec<Queued>, LedgerError> {
        let lanes: BTreeSet<u8> = consent_ids
            .iter()
            .map(|c| self.lane_of(c))
            .collect::<Result<_, _>>()?;
        let mut found = Vec::new();
        for peer in self.peers_with_queued()? {
            for lane in &lanes {
                for kv in self.outbox.scan_prefix(lanes::lane_prefix(&peer, *lane)) {
                    let (k, v) = kv?;
                    let entry: OutboxEntry = self.open_sealed("outbox", &k, &v)?;
                    let Some(status) = self.message(&entry.message_id)?.and_then(|r| r.status)
                    else {
                        continue;
                    };
                    if consent_ids.contains(&status.consent_id) {
                        let kind =
                            MessageKind::try_from(status.kind).unwrap_or(MessageKind::Unspecified);
                        found.push(Queued {
                            message_id: entry.message_id,
                            kind,
                            recipient: status.recipient,
                        });
                    }
                }
            }
        }
        Ok(found)
    }

    /// Number of messages queued for `peer` (counts them: a scan of the peer's outbox).
    pub fn outbox_len(&self, peer: &str) -> usize {
        self.scan_starts();
        self.outbox.scan_prefix(outbox_prefix(peer)).count()
    }

    /// The peers that have queued messages.
    pub fn peers_with_queued(&self) -> Result<BTreeSet<String>, LedgerError> {
        let mut peers = BTreeSet::new();
        let mut next: Option<Vec<u8>> = None;
        loop {
            let item = match &next {
                None => self.outbox.iter().next(),
                Some(from) => self.outbox.range(from.clone()..).next(),
            };
            let Some(kv) = item else { break };
            let key = kv?.0;
            let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            let peer = String::from_utf8_lossy(&key[..end]).into_owned();
            // skip past this peer's entries: the prefix followed by 0x01 sorts after them all
            let mut skip = key[..end].to_vec();
            skip.push(1);
            next = Some(skip);
            peers.insert(peer);
        }
        Ok(peers)
    }

    pub fn message(&self, message_id: &str) -> Result<Option<MessageRecord>, LedgerError> {
        self.messages
            .get(message_id.as_bytes())?
            .map(|b| decode("message record", &b))
            .transpose()
    }

    /// Records a failed delivery attempt and when the next one is due.
    pub fn record_attempt(
        &self,
        message_id: &str,
        detail: &str,
        next_attempt_ms: i64,
        now_ms: i64,
        in_doubt: bool,
    ) -> Result<(), LedgerError> {
        self.tx(|t| {
            let Some(bytes) = t.messages.get(message_id.as_bytes())? else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            let mut record: MessageRecord = tx_decode("message record", &bytes)?;
            let Some(s) = record.status.as_mut() else {
                return abort(LedgerError::corrupt("message record", "no status"));
            };
            if s.state != DeliveryState::Queued as i32 {
                return Ok(()); // final meanwhile (e.g. undone): an attempt changes nothing
            }
            s.attempts += 1;
            s.detail = detail.to_string();
            s.updated_at_ms = now_ms;
            record.next_attempt_ms = next_attempt_ms;
            record.in_doubt |= in_doubt;
            t.messages
                .insert(message_id.as_bytes(), record.encode_to_vec())?;
            Ok(())
        })
    }

    /// Takes a queued message out of the outbox with its final state. A message that is
    /// already final is left as it is. A message that will not be delivered (refused,
    /// rejected, expired) also leaves a [`DeliveryNotice`] in this node's inbox, so the
    /// submitting IT system learns of it; its arrival sequence number is returned.
    pub fn finish(
        &self,
        message_id: &str,
        how: &Finish,
        now_ms: i64,
    ) -> Result<Finished, LedgerError> {
        let finished = self.finish_all(&[(message_id.to_string(), how.clone())], now_ms)?;
        Ok(finished.into_iter().next().unwrap_or_default())
    }

    /// [`Ledger::finish`] for several messages (a delivered batch), in one transaction.
    pub fn finish_all(
        &self,
        items: &[(String, Finish)],
        now_ms: i64,
    ) -> Result<Vec<Finished>, LedgerError> {
        self.undo_queued(items, None, now_ms)
    }

    /// [`Ledger::finish_all`] for messages whose queueing is undone (their submission could
    /// not be made durable), forgetting in the same transaction the answer recorded for the
    /// call that queued them (`key_id`): a repeat of that call queues anew instead of
    /// getting an answer that names a message which was never sent.
    pub fn undo_queued(
        &self,
        items: &[(String, Finish)],
        key_id: Option<&[u8; 32]>,
        now_ms: i64,
    ) -> Result<Vec<Finished>, LedgerError> {
        let notice_ids: Vec<String> = items
            .iter()
            .map(|_| uuid::Uuid::now_v7().hyphenated().to_string())
            .collect();
        let seqs = self.outbox_seqs(items.len())?;
        let renewal_seqs = items
            .iter()
            .map(|(_, how)| match how {
                Finish::ExpiredRenewed { .. } => Ok(Some(self.outbox_seqs(1)?[0])),
                _ => Ok(None),
            })
            .collect::<Result<Vec<Option<u64>>, LedgerError>>()?;
        self.tx(|t| {
            if let Some(key_id) = key_id {
                t.forget(key_id)?;
            }
            items
                .iter()
                .zip(notice_ids.iter().zip(&seqs))
                .zip(&renewal_seqs)
                .map(|(((id, how), (notice_id, seq)), renewal_seq)| {
                    let finished = t.finish(id, how, now_ms, notice_id, *seq)?;
                    if let (Finish::ExpiredRenewed { renewal }, Some(seq)) = (how, renewal_seq) {
                        if finished.status.is_some() {
                            t.enqueue(renewal, *seq)?;
                        }
                    }
                    Ok(finished)
                })
                .collect()
        })
    }

    // ---- inbox ----

    /// Stores a verified, allowed envelope (with the receipt that will answer it) and applies
    /// its consent effect, atomically; or finds that the same envelope is already here.
    pub fn accept_delivery(
        &self,
        record: &InboxRecord,
        effect: &ConsentEffect,
        now_ms: i64,
    ) -> Result<Accepted, LedgerError> {
        self.tx(|t| t.accept(record, effect, AuditEvent::Received, now_ms))
    }

    /// Stores the envelopes of one delivered batch, in order, each as
    /// [`Ledger::accept_delivery`] would, all in one transaction: either all of them are
    /// stored or (on an error) none.
    pub fn accept_deliveries(
        &self,
        items: &[(InboxRecord, ConsentEffect)],
        now_ms: i64,
    ) -> Result<Vec<Accepted>, LedgerError> {
        self.accept_deliveries_as(items, AuditEvent::Received, now_ms)
    }

    /// [`Ledger::accept_deliveries`], each stored envelope audited as `event` (envelopes
    /// received again in a reconciliation: `reconciliation.received`).
    pub fn accept_deliveries_as(
        &self,
        items: &[(InboxRecord, ConsentEffect)],
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<Vec<Accepted>, LedgerError> {
        self.tx(|t| {
            items
                .iter()
                .map(|(record, effect)| t.accept(record, effect, event, now_ms))
                .collect()
        })
    }

    pub fn inbox_record(&self, message_id: &str) -> Result<Option<InboxRecord>, LedgerError> {
        self.get_sealed(&self.inbox, "inbox", message_id.as_bytes())
    }

    /// Up to `limit` inbox records with sequence numbers after `after_seq`, in arrival order.
    pub fn inbox_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<InboxRecord>, LedgerError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for kv in self.inbox_seq.range(start..).take(limit) {
            let (_, id) = kv?;
            let bytes = self
                .inbox
                .get(&id)?
                .ok_or_else(|| LedgerError::corrupt("inbox index", "points at no record"))?;
            out.push(self.open_sealed("inbox", &id, &bytes)?);
        }
        Ok(out)
    }

    /// Every message record (sent messages), one at a time, for reports; a full scan.
    pub fn message_records_iter(
        &self,
    ) -> impl Iterator<Item = Result<MessageRecord, LedgerError>> + '_ {
        self.messages
            .iter()
            .map(|kv| decode("message record", &kv?.1))
    }

    /// Every inbox record (in message id order), one at a time, for reports; a full scan.
    pub fn inbox_iter(&self) -> impl Iterator<Item = Result<InboxRecord, LedgerError>> + '_ {
        self.inbox.iter().map(|kv| {
            let (k, v) = kv?;
            self.open_sealed("inbox", &k, &v)
        })
    }

    /// A redelivery of the held envelope `message_id` was answered with its original
    /// receipt: the first is audited (`inbox.duplicate`) and marked in the record, later ones
    /// are not (the caller counts them). Returns whether it audited.
    pub fn note_duplicate(&self, message_id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        self.tx(
            |t| match t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())? {
                Some(held) => t.note_duplicate(held, now_ms),
                None => abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                }),
            },
        )
    }

    /// The IT system `client` was given inbox item `message_id`: its first read by that
    /// client is audited (`inbox.read`) and marked in the record; a re-read is neither
    /// audited nor written. Returns whether it audited.
    pub fn note_read(
        &self,
        message_id: &str,
        client: &str,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.tx(|t| {
            let Some(mut record) =
                t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())?
            else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            if record.read_by.iter().any(|c| c == client) {
                return Ok(false);
            }
            record.read_by.push(client.to_string());
            t.put_sealed(t.inbox, "inbox", message_id.as_bytes(), &record)?;
            t.append_audit(
                AuditNote::new(AuditEvent::InboxRead)
                    .message(message_id)
                    .peer(&record.sender)
                    .kind(record.kind)
                    .detail(format!("client {client}")),
                now_ms,
            )?;
            Ok(true)
        })
    }

    /// Marks an inbox message as taken over by the IT system.
    pub fn acknowledge(&self, message_id: &str, now_ms: i64) -> Result<(), LedgerError> {
        self.tx(|t| {
            let Some(mut record) =
                t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())?
            else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            if record.acknowledged {
                return Ok(());
            }
            record.acknowledged = true;
            t.put_sealed(t.inbox, "inbox", message_id.as_bytes(), &record)?;
            t.append_audit(
                AuditNote::new(AuditEvent::InboxAcknowledged)
                    .message(message_id)
                    .peer(&record.sender)
                    .kind(record.kind),
                now_ms,
            )
        })
    }

    // ---- retention and erasure ----

    /// Erases the person from these consents: the record keeps no subject or guardian, the
    /// notice keeps only its signed header (which still proves that the recording agency
    /// issued this consent). Each erasure is audited.
    pub fn erase_consents(
        &self,
        consent_ids: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        for cid in consent_ids {
            self.tx(|t| {
                let Some(mut held) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", cid.as_bytes())?
                else {
                    return Ok(());
                };
                if let Some(r) = held.record.as_mut() {
                    r.subject = None;
                    r.guardian_name.clear();
                }
                if let Some(w) = held.withdrawal.as_mut() {
                    w.manner.clear(); // free text, which may name the person
                }
                if let Some(n) = held.notice.as_mut() {
                    n.payload.clear();
                }
                held.erased_at_ms = now_ms;
                t.put_sealed(t.consents, "consents", cid.as_bytes(), &held)?;
                t.append_audit(
                    AuditNote::new(AuditEvent::SubjectErased).consent(cid),
                    now_ms,
                )
            })?;
        }
        Ok(())
    }

    // ---- audit ----

    /// Appends one audit entry on its own (refusals, reads).
    pub fn audit(&self, note: AuditNote, now_ms: i64) -> Result<(), LedgerError> {
        self.tx(|t| t.append_audit(note.clone(), now_ms))
    }

    /// Every audit entry, decoded, in order, one at a time.
    pub fn audit_iter(
        &self,
    ) -> impl Iterator<Item = Result<crate::records::AuditEntry, LedgerError>> + '_ {
        self.audit.iter().map(|kv| decode("audit entry", &kv?.1))
    }

    /// Every audit entry, decoded, in order, collected (for tests and small stores; use
    /// [`Ledger::audit_iter`] on a node's store).
    pub fn audit_entries(&self) -> Result<Vec<crate::records::AuditEntry>, LedgerError> {
        self.audit_iter().collect()
    }

    /// Checks the whole chain: sequence, links, and that it ends at the recorded head.
    pub fn verify_audit(&self) -> Result<AuditReport, LedgerError> {
        let head = match self.meta.get(AUDIT_HEAD)? {
            Some(v) if v.len() == 40 => {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&v[8..40]);
                Some((u64_from("audit head", &v)?, hash))
            }
            Some(_) => return Err(LedgerError::corrupt("audit head", "wrong length")),
            None => None,
        };
        let entries = self.audit.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((u64_from("audit key", &k)?, v.to_vec()))
        });
        verify_chain(entries, head)
    }

    /// For tests of the verifier: the raw audit tree.
    #[doc(hidden)]
    pub fn audit_tree(&self) -> &Tree {
        &self.audit
    }
}

impl Tx<'_> {
    /// The body of [`Ledger::accept_delivery`], inside a transaction.
    fn accept(
        &self,
        record: &InboxRecord,
        effect: &ConsentEffect,
        event: AuditEvent,
        now_ms: i64,
    ) -> TxResult<Accepted> {
        let t = self;
        let id = record.message_id.as_bytes();
        if let Some(existing) = t.get_sealed::<InboxRecord>(t.inbox, "inbox", id)? {
            if existing.envelope_sha256 != record.envelope_sha256 {
                return abort(LedgerError::MessageIdConflict {
                    message_id: record.message_id.clone(),
                });
            }
            t.note_duplicate(existing.clone(), now_ms)?;
            return Ok(Accepted::Duplicate(Box::new(existing)));
        }
        let seq = t.next_inbox_seq()?;
        let mut stored = record.clone();
        stored.seq = seq;
        t.put_sealed(t.inbox, "inbox", id, &stored)?;
        t.inbox_seq.insert(&seq.to_be_bytes(), id)?;
        t.index_body(&stored)?;
        t.append_audit(
            AuditNote::new(event)
                .message(&record.message_id)
                .consent(&record.consent_id)
                .peer(&record.sender)
                .kind(record.kind)
                .envelope(&record.envelope_sha256),
            now_ms,
        )?;
        // Decided before the person was erased here, stored after: the body goes at once,
        // as erasure would have taken it (the receipt still proves the transfer).
        if matches!(effect, ConsentEffect::None) && !record.consent_id.is_empty() {
            let cited = t.get_sealed::<StoredConsent>(
                t.consents,
                "consents",
                record.consent_id.as_bytes(),
            )?;
            if cited.is_some_and(|c| c.erased_at_ms > 0) {
                t.delete_body(
                    &record.consent_id,
                    &record.message_id,
                    AuditEvent::SubjectErased,
                    now_ms,
                )?;
            }
        }
        match effect {
            ConsentEffect::None => {}
            ConsentEffect::Record(consent) => {
                let cid = consent.consent_id.as_bytes();
                if let Some(held) = t.get_sealed::<StoredConsent>(t.consents, "consents", cid)? {
                    if held.record.as_ref() != Some(consent) {
                        return abort(LedgerError::ConsentExists {
                            consent_id: consent.consent_id.clone(),
                        });
                    }
                } else {
                    let mut stored = StoredConsent::replicated(consent, record.envelope.clone());
                    stored.chain_root = t.root_for_new(consent)?;
                    t.put_sealed(t.consents, "consents", cid, &stored)?;
                }
                // A replacement supersedes the earlier consent here too, if we hold it.
                if !consent.supersedes.is_empty() {
                    let old_id = consent.supersedes.as_bytes();
                    if let Some(mut old) =
                        t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                    {
                        if old.supersede_by(consent) {
                            t.put_sealed(t.consents, "consents", old_id, &old)?;
                        }
                    }
                }
                t.append_audit(
                    AuditNote::new(AuditEvent::ConsentReplicated)
                        .consent(&consent.consent_id)
                        .message(&record.message_id)
                        .peer(&record.sender)
                        .detail(supersedes_detail(consent)),
                    now_ms,
                )?;
            }
            ConsentEffect::Withdraw(w) => {
                let cid = w.consent_id.as_bytes();
                let Some(mut held) = t.get_sealed::<StoredConsent>(t.consents, "consents", cid)?
                else {
                    return abort(LedgerError::UnknownConsent {
                        consent_id: w.consent_id.clone(),
                    });
                };
                if held.withdraw(w, record.envelope.clone()) {
                    t.put_sealed(t.consents, "consents", cid, &held)?;
                }
                t.append_audit(
                    AuditNote::new(AuditEvent::WithdrawalReplicated)
                        .consent(&w.consent_id)
                        .message(&record.message_id)
                        .peer(&record.sender),
                    now_ms,
                )?;
            }
        }
        Ok(Accepted::Stored { seq })
    }

    /// Audits the first redelivery of a held envelope (`inbox.duplicate`) and marks the
    /// record, so that later ones are not audited. Returns whether it audited.
    fn note_duplicate(&self, mut held: InboxRecord, now_ms: i64) -> TxResult<bool> {
        if held.duplicate_audited {
            return Ok(false);
        }
        held.duplicate_audited = true;
        self.put_sealed(self.inbox, "inbox", held.message_id.as_bytes(), &held)?;
        self.append_audit(
            AuditNote::new(AuditEvent::ReceivedDuplicate)
                .message(&held.message_id)
                .peer(&held.sender)
                .kind(held.kind)
                .envelope(&held.envelope_sha256),
            now_ms,
        )?;
        Ok(true)
    }

    /// The body of [`Ledger::finish`], inside a transaction.
    fn finish(
        &self,
        message_id: &str,
        how: &Finish,
        now_ms: i64,
        notice_id: &str,
        kept_seq: u64,
    ) -> TxResult<Finished> {
        let t = self;
        let Some(bytes) = t.messages.get(message_id.as_bytes())? else {
            return abort(LedgerError::UnknownMessage {
                message_id: message_id.to_string(),
            });
        };
        let mut record: MessageRecord = tx_decode("message record", &bytes)?;
        let Some(status) = record.status.as_mut() else {
            return abort(LedgerError::corrupt("message record", "no status"));
        };
        if status.state != DeliveryState::Queued as i32 {
            return Ok(Finished::default());
        }
        let (state, event, detail) = match how {
            Finish::Delivered { .. } => (
                DeliveryState::Delivered,
                AuditEvent::Delivered,
                String::new(),
            ),
            Finish::Refused { reason } => (
                DeliveryState::Refused,
                AuditEvent::DeliveryRefused,
                reason.clone(),
            ),
            Finish::Rejected { reason } => (
                DeliveryState::Rejected,
                AuditEvent::DeliveryRejected,
                reason.clone(),
            ),
            Finish::Expired => (
                DeliveryState::Expired,
                AuditEvent::DeliveryExpired,
                "deadline passed".to_string(),
            ),
            Finish::ExpiredRenewed { renewal } => (
                DeliveryState::Expired,
                AuditEvent::DeliveryExpired,
                format!("deadline passed; renewed as {}", renewal.message_id),
            ),
        };
        if matches!(how, Finish::Delivered { .. } | Finish::Rejected { .. }) {
            status.attempts += 1; // the attempt that ended it
        }
        status.state = state as i32;
        status.detail = detail.clone();
        status.updated_at_ms = now_ms;
        if let Finish::Delivered { receipt } = how {
            status.receipt = Some(receipt.clone());
        }
        let note = AuditNote::new(event)
            .message(message_id)
            .consent(&status.consent_id)
            .peer(&status.recipient)
            .kind(status.kind)
            .detail(detail.clone())
            .envelope(&record.envelope_sha256);
        let notice = match how {
            Finish::Delivered { .. } => None,
            _ => Some(InboxRecord {
                message_id: notice_id.to_string(),
                kind: status.kind,
                received_at_ms: now_ms,
                created_at_ms: now_ms,
                consent_id: status.consent_id.clone(),
                notice: Some(DeliveryNotice {
                    message_id: message_id.to_string(),
                    recipient: status.recipient.clone(),
                    state: state as i32,
                    detail: detail.clone(),
                }),
                ..Default::default()
            }),
        };
        if matches!(how, Finish::Delivered { .. }) {
            // Kept for the keep window, so that a peer restored from a backup can have it
            // again (`store::kept`).
            let queued: Option<OutboxEntry> =
                t.get_sealed(t.outbox, "outbox", record.outbox_key.as_slice())?;
            if let Some(envelope) = queued.and_then(|q| q.envelope) {
                t.keep_delivered(
                    message_id,
                    &status.recipient,
                    &status.consent_id,
                    status.kind,
                    envelope,
                    &record.envelope_sha256,
                    now_ms,
                    kept_seq,
                )?;
            }
        }
        t.outbox.remove(record.outbox_key.as_slice())?;
        record.outbox_key.clear();
        t.messages
            .insert(message_id.as_bytes(), record.encode_to_vec())?;
        t.append_audit(note, now_ms)?;
        let notice_seq = match notice {
            Some(mut n) => {
                let seq = t.next_inbox_seq()?;
                n.seq = seq;
                t.put_sealed(t.inbox, "inbox", n.message_id.as_bytes(), &n)?;
                t.inbox_seq
                    .insert(&seq.to_be_bytes(), n.message_id.as_bytes())?;
                Some(seq)
            }
            None => None,
        };
        Ok(Finished {
            notice_seq,
            status: record.status,
        })
    }
}
