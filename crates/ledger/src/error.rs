//! The one error type of the ledger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the data directory {path} is in use by another process (the store is locked)")]
    Locked { path: PathBuf },
    /// The storage engine failed (its own message; see [`crate::db`]).
    #[error("store error: {0}")]
    Store(String),
    /// A file operation the ledger runs itself, beside the engine's own, failed (an fsync after a flush).
    #[error("{what} of {path} failed: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A task the ledger ran on another thread panicked or was cancelled.
    #[error("the {what} task failed: {reason}")]
    Task { what: &'static str, reason: String },
    #[error("stored record {what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("consent {consent_id} already exists")]
    ConsentExists { consent_id: String },
    #[error("consent {consent_id} is not known here")]
    UnknownConsent { consent_id: String },
    #[error("consent {consent_id} is already withdrawn")]
    AlreadyWithdrawn { consent_id: String },
    #[error("consent {consent_id} has already been superseded")]
    AlreadySuperseded { consent_id: String },
    #[error("message id {message_id} was already used for a different envelope")]
    MessageIdConflict { message_id: String },
    /// An idempotency key came again with another request than the one it first answered.
    #[error("this idempotency key was used at {answered_at_ms} (ms since 1970) for another request ({method}); a new request needs a new key")]
    IdempotencyKeyReused { method: String, answered_at_ms: i64 },
    #[error("account {name} exists already")]
    AccountExists { name: String },
    #[error("account {name} is not known here")]
    UnknownAccount { name: String },
    #[error("message {message_id} is not known here")]
    UnknownMessage { message_id: String },
    /// The consent a message cites no longer allows it, found inside the transaction that
    /// would have queued it (a withdrawal, replacement or erasure committed meanwhile).
    #[error("{0}")]
    Refused(crate::consent::ConsentRefusal),
    #[error("this store keeps personal data encrypted; open it with the node's data key")]
    NoDataKey,
    #[error("data key: {reason}")]
    BadDataKey { reason: &'static str },
    #[error("audit chain broken at entry {seq}: {reason}")]
    AuditBroken { seq: u64, reason: String },
    #[error("this store was written by a later kurzdraht (store format {version}; this version reads formats up to {supported})")]
    NewerStore { version: u64, supported: u64 },
}

impl LedgerError {
    pub(crate) fn corrupt(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            what,
            reason: e.to_string(),
        }
    }
}
