//! kurzdraht-ledger: everything a node keeps, in one embedded database per node.
//!
//! Layout:
//! - [`consent`]: the consent decision, a pure function over a stored consent (no I/O).
//! - [`records`]: the records kept in the store (prost-encoded).
//! - [`db`]: the storage interface (trees, transactions, scans, flush) and its one adapter,
//!   the only code that knows the engine.
//! - [`store`]: [`Ledger`], on that interface: consents, outbox, message status, inbox,
//!   receipts and the audit chain, each change one transaction with its audit entry.
//! - [`at_rest`]: encryption of the trees that hold personal data under the node's data key.
//! - [`audit`]: audit events and offline verification of the hash chain.
//! - [`commit`]: group commit — concurrent callers share one flush (the engine's, then the
//!   fsyncs it leaves out).
//!
//! Architecture invariants:
//! - Nothing outside this crate touches the engine, and nothing outside [`db`] names it.
//!   Every state change and the audit entry that
//!   records it commit in one transaction: a crash leaves the old state or the new one.
//! - The audit chain holds ids, kinds, agencies and reason codes, never personal data.
//! - This crate knows neither tonic nor the network; it stores what the node has decided.

#![forbid(unsafe_code)]

pub mod at_rest;
pub mod audit;
pub mod commit;
pub mod consent;
pub mod db;
pub mod error;
pub mod records;
pub mod store;

pub use at_rest::DataKey;
pub use audit::{AuditEvent, AuditNote, AuditReport};
pub use commit::{Durability, FlushPause};
pub use consent::{evaluate, ConsentQuery, ConsentRefusal};
pub use db::SyncedBlobs;
pub use error::LedgerError;
pub use records::{
    AnsweredRequest, AuditEntry, BackupManifest, InboxRecord, KeptDelivery, MessageRecord,
    OutboxEntry, PendingReconciliation, StoredAccount, StoredConsent,
};
pub use store::{
    backup, carries_case, lane_of_root, Accepted, AccountRole, CaseRef, ConsentEffect, Cursor,
    DeliveredEntry, Direction, Extension, FailedLogin, Finish, Finished, KeyedRequest, Ledger,
    LockoutPolicy, Login, Once, Outgoing, QueueSummary, Queued, ReceivedPage, SentEffect,
    SentEnvelope, SentRestored, StoreOptions, Swept, DEFAULT_CACHE_BYTES, DELIVERY_LANES,
};
