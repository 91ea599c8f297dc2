//! kurzdraht-node: one agency's node.
//!
//! Layout:
//! - [`config`], [`directory`]: `node.toml` and the federation directory (signed by the
//!   federation operator, versioned, keys with their state), validated at load;
//!   [`directory_update`]: a newer directory taken while the node runs.
//! - [`policy`], [`clock`], [`categories`]: pure rules — who may send what to whom, the U25
//!   rule, field rules, and which field carries which category of personal data;
//!   [`consent_record`]: the rules of a consent record, local and replicated alike.
//! - [`node`]: [`Node`], which opens the store, builds the shared handles ([`shared`]:
//!   identity, directory in force, keys, ledger, clock, metrics, the signals that wake
//!   workers and readers) and one service per concern over them, and holds them.
//! - [`service`]: the node's work, one type per concern — [`service::Submission`] (consents
//!   and submissions from the IT systems), [`service::Reception`] (envelopes from peers),
//!   [`service::Inbox`], [`service::delivery`] (the workers delivering the outbox),
//!   [`service::Retention`] (closing cases, deleting bodies, erasure), [`service::Reports`]
//!   (the Art. 15 report and consent evidence), [`service::Reconciliation`] (a restored node
//!   receives again what its peers delivered since), [`service::Backup`], and
//!   [`service::Answers`] (the idempotency keys that make a repeated call change nothing).
//! - [`rpc`]: the tonic layer — AgencyApi and PeerExchange, thin: decode, call a service,
//!   map the result; per-peer limits, connection limits, health and reflection, and the
//!   transport refusals (`too-large`, `malformed`) answered as the contract says on both
//!   ports.
//! - [`reachability`]: probing the peers (mutual TLS and their health);
//!   [`peer_transport`]: how delivery and reconciliation reach a peer.
//! - [`metrics`]: counters and store gauges in the Prometheus text format on their own port.
//! - [`tls`], [`server`]: TLS configuration and running both listeners until shutdown.
//! - [`pki`]: setting up a federation (a whole local federation for the demo and the tests
//!   is `kurzdraht-testkit`'s; an IT system's client is the `kurzdraht-client` crate);
//!   [`sealing`]: the one sealing of an outgoing message.
//! - [`audit_check`]: verifying a stopped node's audit chain without writing to its store.
//! - [`error`]: [`NodeError`] and the one conversion of errors into gRPC statuses
//!   (`From<NodeError> for Status`; nothing else in the node builds a status).
//!
//! Architecture invariants:
//! - Decisions (policy, consent) are made by pure functions; services only carry them out.
//! - Nothing is acknowledged (to an IT system or, as a receipt, to a peer) before the ledger
//!   has flushed it to disk.
//! - An envelope's signer must be the agency named by the TLS client certificate, and it is
//!   verified with that agency's pinned keys before any of it is decoded.

#![forbid(unsafe_code)]

pub mod audit_check;
pub mod categories;
pub mod clock;
pub mod config;
pub mod consent_record;
pub mod directory;
pub mod directory_update;
pub mod error;
pub mod metrics;
pub mod node;
pub mod peer_transport;
pub mod pki;
pub mod policy;
pub mod reachability;
pub mod rpc;
pub mod sealing;
pub mod server;
pub mod service;
pub mod shared;
pub mod tls;

pub use error::NodeError;
pub use node::Node;
