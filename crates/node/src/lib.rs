//! kurzdraht-node: one agency's node.
//!
//! Layout:
//! - [`config`], [`directory`]: `node.toml` and the federation directory (signed by the
//!   federation operator, versioned, keys with their state), validated at load;
//!   [`directory_update`]: a newer directory taken while the node runs.
//! - [`policy`], [`clock`], [`categories`]: pure rules — who may send what to whom, the U25
//!   rule, field rules, and which field carries which category of personal data;
//!   [`consent_record`]: the rules of a consent record, local and replicated alike.
//! - [`node`]: [`Node`], the shared state of a running node.
//! - [`access_report`]: the Art. 15 report of everything held about one person.
//! - [`retention`]: closing cases, deleting bodies after the retention period, erasure.
//! - [`reconciliation`]: a node restored from a backup receives again what its peers
//!   delivered to it since (they keep it for a window); [`backup`]: online backups.
//! - [`evidence`]: the signed proof of the consent behind any message sent or received.
//! - [`submission`], [`reception`], [`inbox`], [`delivery`]: the node's work — accepting
//!   submissions from its IT systems, receiving envelopes from peers, serving the inbox,
//!   and delivering the outbox; [`idempotency`]: the idempotency keys that make a
//!   repeated submission, consent or withdrawal change nothing.
//! - [`agency_api`], [`peer_exchange`]: thin tonic services over the above;
//!   [`peer_limits`]: per-peer rate and concurrency limits.
//! - [`health`]: grpc.health.v1 (probing the store) and server reflection;
//!   [`reachability`]: probing the peers (mutual TLS and their health).
//! - [`metrics`]: counters and store gauges in the Prometheus text format on their own port.
//! - [`tls`], [`server`]: TLS configuration and running both listeners until shutdown;
//!   [`transport_refusals`]: what tonic refuses before the node sees it, answered as the
//!   contract says (`too-large`, `malformed`).
//!   [`connection_limits`]: what a caller can hold open on either port.
//! - [`pki`]: setting up a federation (a whole local federation for the demo and the tests
//!   is `kurzdraht-testkit`'s; an IT system's client is the `kurzdraht-client` crate).
//! - [`audit_check`]: verifying a stopped node's audit chain without writing to its store.
//! - [`error`]: [`NodeError`] and the one conversion of errors into gRPC statuses.
//!
//! Architecture invariants:
//! - Decisions (policy, consent) are made by pure functions; services only carry them out.
//! - Nothing is acknowledged (to an IT system or, as a receipt, to a peer) before the ledger
//!   has flushed it to disk.
//! - An envelope's signer must be the agency named by the TLS client certificate, and it is
//!   verified with that agency's pinned keys before any of it is decoded.

#![forbid(unsafe_code)]

pub mod access_report;
pub mod agency_api;
pub mod audit_check;
pub mod backup;
pub mod categories;
pub mod clock;
pub mod config;
pub mod connection_limits;
pub mod consent_record;
pub mod delivery;
pub mod directory;
pub mod directory_update;
pub mod error;
pub mod evidence;
pub mod health;
pub mod idempotency;
pub mod inbox;
pub mod metrics;
pub mod node;
pub mod peer_exchange;
pub mod peer_limits;
pub mod peer_transport;
pub mod pki;
pub mod policy;
pub mod reachability;
pub mod reception;
pub mod reconciliation;
pub mod retention;
pub mod server;
pub mod submission;
pub mod tls;
pub mod transport_refusals;

pub use error::NodeError;
pub use node::Node;
