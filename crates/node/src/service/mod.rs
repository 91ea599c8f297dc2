//! The node's work, one service per concern. Each service is its own type holding the
//! shared handles it needs ([`crate::shared::Shared`]: ledger, directory, clock, metrics,
//! signals) and the few other services it calls; [`crate::Node`] builds and holds them.
//! Services make no decisions of their own: policy and consent are pure functions
//! ([`crate::policy`], [`crate::consent_record`], the ledger's consent check).
//!
//! - [`submission`]: [`Submission`] — consents recorded, withdrawn or replaced, messages
//!   submitted, their status.
//! - [`idempotency`]: [`Answers`] — the recorded answers that make a repeated keyed call
//!   change nothing.
//! - [`reception`]: [`Reception`] — envelopes received from peers.
//! - [`inbox`]: [`Inbox`] — what the IT systems read and acknowledge.
//! - [`delivery`]: the delivery workers, one per peer and lane, delivering the outbox.
//! - [`retention`]: [`Retention`] — closing cases, deleting bodies, erasure.
//! - [`reports`]: [`Reports`] — the Art. 15 access report and the evidence of a consent.
//! - [`reconciliation`]: [`Reconciliation`] — a restored node receives again what its
//!   peers delivered since; [`backup`]: [`Backup`] — online backups.
//! - [`accounts`]: [`Accounts`] — the console's local accounts and the login check.
//! - [`cases`]: [`Cases`] — the cases (a person's consent chain and its messages) for the
//!   console's Fälle.

pub mod accounts;
pub mod backup;
pub mod cases;
pub mod delivery;
pub mod idempotency;
pub mod inbox;
pub mod reception;
pub mod reconciliation;
pub mod reports;
pub mod retention;
pub mod submission;

pub use accounts::{AccountView, Accounts};
pub use backup::Backup;
pub use cases::Cases;
pub use idempotency::Answers;
pub use inbox::Inbox;
pub use reception::Reception;
pub use reconciliation::Reconciliation;
pub use reports::Reports;
pub use retention::Retention;
pub use submission::Submission;
