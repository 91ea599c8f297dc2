//! [`Ledger`]: the node's store, on the storage interface [`crate::db`]. Trees:
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
//! | `retention` | see `retention.rs`                   | closed cases, bodies held      |
//! | `requests`  | see `requests.rs`                    | first answers to keyed calls   |
//! | `delivered` | see `kept.rs`                        | delivered envelopes, kept      |
//! | `accounts`  | account name                         | [`StoredAccount`] (sealed)     |
//! | `cases`     | see `cases.rs`                       | the case index (ids, times)    |
//!
//! Every method that changes state runs one transaction over all trees, including the
//! audit entry that records the change. Callers make the change durable with
//! [`Ledger::flush`] before they acknowledge it to anyone. An online backup
//! ([`Ledger::export`]) holds every transaction back while it copies the trees, so the copy
//! is one consistent state.
//!
//! Who owns what: `open.rs` opening, format upgrades, flush and health; `tx.rs` the
//! transaction (`Tx`) and sealed values; `consents.rs`, `outbox.rs`, `inbox.rs`,
//! `audit.rs` one concern each (its [`Ledger`] methods and the `Tx` steps they share);
//! `lanes.rs`, `deadlines.rs` the outbox's lanes and deadlines; `retention.rs` the
//! retention index, the sweep and erasure; `requests.rs` idempotency keys; `kept.rs` and
//! `sent.rs` deliveries kept for and learned back from restored peers; `accounts.rs` the
//! console's accounts and their logins; `backup.rs`,
//! `rekey.rs` whole-store operations.

#[cfg(doc)]
use crate::records::{InboxRecord, MessageRecord, OutboxEntry, StoredAccount, StoredConsent};
use crate::{
    at_rest::AtRest,
    commit::{Durability, GroupCommit},
    db::{Db, Tree},
    error::LedgerError,
};
use kurzdraht_proto::v1::ConsentRecord;
use prost::Message;

const AUDIT_HEAD: &[u8] = b"audit_head";
const INBOX_SEQ: &[u8] = b"inbox_seq";
const KEY_CHECK: &[u8] = b"data_key_check";
/// The store's format version in `meta`: 1 = the first; 2 = with the retention index;
/// 3 = with delivery lanes in the outbox keys. The `requests` tree (idempotency keys) needs
/// no version of its own: an empty tree is a valid one, so a store of format 3 written
/// before it existed simply holds no answers yet, and an earlier version of kurzdraht
/// opening a store with the tree ignores it. The same holds for `accounts`.
const SCHEMA: &[u8] = b"schema";
/// Where sequence numbers begin in a store restored from a backup (see
/// [`Ledger::outbox_seqs`]).
const SEQ_FLOOR: &[u8] = b"seq_floor";
const SCHEMA_VERSION: u64 = 3;

mod accounts;
mod audit;
pub mod backup;
mod cases;
mod consents;
mod deadlines;
mod inbox;
mod kept;
mod lanes;
mod open;
mod outbox;
mod rekey;
mod requests;
mod retention;
mod sent;
mod tx;
pub use accounts::{AccountRole, FailedLogin, LockoutPolicy, Login};
pub use cases::{carries_case, CaseRef, Direction};
pub use deadlines::{Extension, QueueSummary};
pub use inbox::{Accepted, ConsentEffect};
pub use kept::{Cursor, DeliveredEntry};
pub use lanes::{lane_of_root, DELIVERY_LANES};
pub use outbox::{Finish, Finished, Outgoing, Queued};
pub use requests::{KeyedRequest, Once};
pub use retention::Swept;
pub use sent::{ReceivedPage, SentEffect, SentEnvelope, SentRestored};
use tx::{abort, tx_decode, Tx, TxResult};

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Bytes of the storage engine's page cache: the bulk of a node's memory, whatever the
    /// store's size.
    pub cache_bytes: u64,
    /// How often the engine's own background thread flushes, in milliseconds; `None`
    /// switches it off. For tests of durability only: with it off, only [`Ledger::flush`], a
    /// full write buffer (one 512 KiB segment) or closing the store writes the engine's log
    /// to the file, so a test that kills the process can see what a missing flush loses.
    /// Nodes keep the default, 500 ms.
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

/// The node's store. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    db: Db,
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
    accounts: Tree,
    cases: Tree,
    /// Added to the engine's id generator (see [`Ledger::outbox_seqs`]).
    seq_floor: u64,
    /// Every transaction holds this for reading; an online backup holds it for writing
    /// while it copies the trees (see [`Ledger::export`]).
    writes: std::sync::Arc<std::sync::RwLock<()>>,
    /// A full scan a test paused (see [`Ledger::pause_next_scan`]).
    scan_pause: std::sync::Arc<std::sync::Mutex<Option<crate::commit::PausePoint>>>,
    /// A flush failure a test injected (see [`Ledger::inject_flush_failure`]).
    injected_failure: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>>,
}

fn decode<T: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<T, LedgerError> {
    T::decode(bytes).map_err(|e| LedgerError::corrupt(what, e))
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
