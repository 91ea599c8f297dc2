//! kurzdraht-client: what an agency's IT system links to call its node.
//!
//! Layout:
//! - [`config`]: `client.toml` — which agency, which endpoint, the CA certificate, the
//!   API token (read only from a file only its owner may read).
//! - [`connection`]: a connected `AgencyApi` client that sends the bearer token with every
//!   call over TLS, and paging helpers.
//! - [`status`]: reading a refusal — its reason code, and whether the same request is worth
//!   repeating (`retry_class`). The node's delivery worker and the CLI's exit codes use this
//!   one classification.
//! - [`error`]: the one error type, [`ClientError`].
//!
//! Architecture invariant: this crate depends on the wire contract (`kurzdraht-proto`) and
//! tonic only — never on the node or its store, so an IT system embedding it links no sled.

#![forbid(unsafe_code)]

pub mod config;
pub mod connection;
pub mod error;
pub mod status;

pub use config::ClientConfig;
pub use connection::{all_consents, connect, AgencyClient, BearerToken};
pub use error::ClientError;
