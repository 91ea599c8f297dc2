//! kurzdraht-ledger: everything a node keeps, in one sled database per node.
//!
//! Layout:
//! - [`consent`]: the consent decision, a pure function over a stored consent (no I/O).
//! - [`records`]: the records kept in the store (prost-encoded).
//! - [`store`]: [`Ledger`], the only owner of sled: consents, outbox, message status, inbox,
//!   receipts and the audit chain, each change one sled transaction with its audit entry.
//! - [`at_rest`]: encryption of the trees that hold personal data under the node's data key.
//! - [`audit`]: audit events and offline verification of the hash chain.
//! - [`commit`]: group commit — concurrent callers share one flush (sled's, then fsyncs of
//!   its data file and of the blob files it keeps beside it).
//!
//! Architecture invariants:
//! - Nothing outside this crate touches sled. Every state change and the audit entry that
//!   records it commit in one transaction: a crash leaves the old state or the new one.
//! - The audit chain holds ids, kinds, agencies and reason codes, never personal data.
//! - This crate knows neither tonic nor the network; it stores what the node has decided.

#![forbid(unsafe_code)]

pub mod at_rest;
pub mod audit;
pub mod commit;
pub mod consent;
pub mod error;
pub mod records;
pub mod store;

pub use at_rest::DataKey;
pub use audit::{AuditEvent, AuditNote, AuditReport};
pub use commit::{Durability, FlushPause, SyncedBlobs};
pub use consent::{evaluate, ConsentQuery, ConsentRefusal};
pub use error::LedgerError;
pub use records::{
    AnsweredRequest, BackupManifest, InboxRecord, KeptDelivery, MessageRecord, OutboxEntry,
    PendingReconciliation, StoredConsent,
};
pub use store::{
    backup, lane_of_root, Accepted, ConsentEffect, Cursor, DeliveredEntry, Extension, Finish,
    Finished, KeyedRequest, Ledger, Once, Outgoing, QueueSummary, Queued, ReceivedPage, SentEffect,
    SentEnvelope, SentRestored, StoreOptions, Swept, DEFAULT_CACHE_BYTES, DELIVERY_LANES,
};
