//! kurzdraht-envelope: what makes a message provable.
//!
//! Layout:
//! - [`agency`]: agency ids as the directory spells them.
//! - [`ids`]: UUIDv7 message and consent ids.
//! - [`keys`]: Ed25519 signing and verifying keys and their hex form in key files and the directory.
//! - [`body`]: facts read off a message body (its kind, its subject).
//! - [`seal`]: sealing an envelope and the verify-then-decode path that opens one.
//! - [`receipt`]: signed receipts over an envelope's hash, alone or one signature per batch.
//! - [`merkle`]: the RFC 9162 Merkle tree that lets one batch signature cover each receipt.
//! - [`directory`]: the federation operator's signature over the directory and its fingerprint.
//!
//! Architecture invariant: this crate is pure. It does no I/O, keeps no state and knows
//! neither tonic nor sled, so every decision in it can be tested exhaustively.

#![forbid(unsafe_code)]

pub mod agency;
pub mod body;
pub mod directory;
pub mod error;
pub mod ids;
pub mod keys;
pub mod merkle;
pub mod receipt;
pub mod seal;

pub use directory::{directory_fingerprint, sign_directory, verify_directory};
pub use error::EnvelopeError;
pub use keys::{SigningKey, VerifyingKey};
pub use receipt::{
    sign_receipt, sign_receipt_batch, verify_receipt, ExpectedReceipt, ReceiptVerifier,
};
pub use seal::{envelope_hash, seal, verify_and_open, verify_header, Limits, OpenedEnvelope};
