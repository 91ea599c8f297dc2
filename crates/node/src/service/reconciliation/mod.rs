//! Reconciliation: a node restored from a backup learns from each peer what that peer
//! delivered to it, and receives again what it no longer holds; and what that peer received
//! from it, and records again what it had sent and recorded after the backup.
//!
//! - Each node keeps what it delivered for `[delivery] keep_delivered_days` (the ledger's
//!   `store::kept`: envelope and receipt) and answers two PeerExchange calls about the
//!   deliveries made to the *calling* agency only (named by its client certificate):
//!   `ListDelivered` (pages of ids, envelope hashes and times) and `FetchDelivered` (the
//!   envelopes with the caller's own receipts). Both are bounded (at most 1,000 entries a
//!   page, 256 ids and about 1 MiB of envelopes a call) and count against the caller's
//!   rate like deliveries.
//! - The restored node pulls ([`Reconciliation::reconcile_with`]): it lists a peer's deliveries since
//!   a time, skips what it holds (same id and envelope hash), fetches the rest and hands it
//!   to reception (`Reception::receive_refetched`): verify-before-decode with the peer's pinned
//!   keys, recipient, policy and consent as for any delivery. An envelope that comes with
//!   this node's own receipt for exactly it keeps that receipt and may be older than the
//!   replay window, because the receipt proves this node accepted it once; its consent is
//!   judged at the receipt's time, and a withdrawal, replacement or erasure held here now
//!   refuses it (`reconciliation.refused`, the reason in the detail). A consent withdrawn
//!   after the message was delivered is not a reason: the withdrawal was delivered after
//!   the message, and comes back after it too.
//! - Pulling, not pushing, binds the replay-window exemption to a call this node made to
//!   the peer's endpoint (checked by TLS), holds no state between calls and needs no new
//!   queue at the sender.
//! - The other direction (`ListReceived`): a peer answers with the envelopes in its inbox
//!   whose sender is the calling agency, with its receipts (pages bounded in entries, bytes
//!   and inbox records looked at). The restored node trusts one only if it verifies with its
//!   own pinned evidence keys, names it as sender and the peer as recipient, and the peer's
//!   receipt for exactly it verifies with the peer's keys; then it records again, in one
//!   ledger transaction each (`Ledger::restore_sent`): a withdrawal (after the rounds in
//!   flight under the consent; queued messages are then stopped by the workers, and the
//!   consent's other recipients get a new notice of it), a consent (notices carry the whole
//!   record), and the message's status (DELIVERED, the peer's receipt). What is held is left
//!   alone. A peer that answers `UNIMPLEMENTED` (an older version) is skipped, logged.
//! - Started by `Reconcile` (AgencyApi, an admin token), or at start when the store was
//!   restored by `kurzdraht restore` (a marker in the store: every peer in turn, retried
//!   until each has answered). The audit chain records `reconciliation.started`, each
//!   `reconciliation.received` / `.refused` / `.unavailable`, and `.finished` with counts;
//!   the peer records `reconciliation.served`; the other direction adds
//!   `reconciliation.withdrawal` / `.consent` / `.sent` here and `.served-sent` at the peer
//!   (ids only everywhere).

use crate::peer_transport::GrpcTransport;
use crate::rpc::peer_exchange::{MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES};
use crate::service::reception::Reception;
use crate::service::reception::{Refetch, Refetched};
use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_envelope::{body::kind_of, ids, verify_and_open, verify_receipt, ExpectedReceipt};
use kurzdraht_ledger::{AuditEvent, AuditNote, Cursor, Outgoing, SentEffect, SentEnvelope};
use kurzdraht_proto::v1::{
    message_body::Body, ConsentRecord, ConsentWithdrawal, ConsentWithdrawalRecord, DeliveredEntry,
    DeliveryState, FetchDeliveredRequest, FetchDeliveredResponse, KeptEnvelope,
    ListDeliveredRequest, ListDeliveredResponse, ListReceivedRequest, ListReceivedResponse,
    MessageBody, MessageKind, MessageStatus, PeerReconciliation, ReceivedEnvelope,
    ReconcileRequest, ReconcileResponse,
};
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;

mod pull;
mod sent;
mod serve;

/// Entries of a `ListDelivered` page when the caller asks for none in particular.
pub const LIST_PAGE_DEFAULT: usize = 500;
/// The most entries a `ListDelivered` page may hold.
pub const LIST_PAGE_MAX: usize = 1_000;
/// The most ids one `FetchDelivered` may ask for.
pub const FETCH_MAX_IDS: usize = MAX_BATCH_ENVELOPES;
/// The most deliveries one reconciliation with one peer takes from its listing: a peer
/// cannot keep this node listing for ever.
pub const MAX_LISTED: u64 = 10_000_000;
/// How far before the backup's time a restored store asks its peers from: deliveries
/// are dated by the peer's clock, which may be off (a duplicate costs only a lookup).
pub const RESTORE_MARGIN: Duration = Duration::from_secs(3600);
/// Entries of a `ListReceived` page when the caller asks for none in particular.
pub const RECEIVED_PAGE_DEFAULT: usize = 100;
/// The most entries (envelopes) a `ListReceived` page may hold.
pub const RECEIVED_PAGE_MAX: usize = MAX_BATCH_ENVELOPES;
/// The most inbox records one `ListReceived` page looks at: the inbox has no index by
/// sender, so a page ends after this many even when it found none of the caller's.
pub const RECEIVED_SCAN_MAX: usize = 10_000;

fn encode_cursor((at, seq): Cursor) -> String {
    format!("{at:016x}{seq:016x}")
}

fn decode_seq(text: &str) -> Result<u64, NodeError> {
    if text.is_empty() {
        return Ok(0);
    }
    let bad = || NodeError::invalid("after", "is not a next_after this node gave");
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

fn decode_cursor(text: &str) -> Result<Option<Cursor>, NodeError> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || NodeError::invalid("after", "is not a next_after this node gave");
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let at = u64::from_str_radix(&text[..16], 16).map_err(|_| bad())?;
    let seq = u64::from_str_radix(&text[16..], 16).map_err(|_| bad())?;
    Ok(Some((at, seq)))
}

/// A peer's refusal or an unreachable peer, as the report states it.
fn peer_failed(peer: &str, status: &tonic::Status) -> NodeError {
    NodeError::Aborted(format!(
        "{peer} answered {:?} ({}): {}",
        status.code(),
        crate::error::reason_of(status).unwrap_or("no reason code"),
        status.message()
    ))
}

/// The cursor of a listing's next page (`None`: the listing ended), given the peer's
/// `next_after`, whether it decodes (`valid`) and how many entries were `listed` so far. A
/// cursor that does not advance would list for ever (cursors are fixed-width hex), and a
/// listing longer than one reconciliation takes is refused: both are the peer's fault.
fn next_page(
    peer: &str,
    after: &str,
    next_after: String,
    valid: bool,
    listed: u64,
    what: &str,
) -> Result<Option<String>, NodeError> {
    if next_after.is_empty() {
        return Ok(None);
    }
    if next_after.as_str() <= after || !valid {
        return Err(protocol(peer, "a next_after that does not advance"));
    }
    if listed >= MAX_LISTED {
        return Err(protocol(
            peer,
            &format!("more {what} than one reconciliation takes"),
        ));
    }
    Ok(Some(next_after))
}

/// The page size a listing call asks for (`limit`, 0: `default`, at most `max`), once its
/// `since_ms` is checked too; each refusal names its field.
fn page_request(limit: u32, since_ms: i64, default: usize, max: usize) -> Result<usize, NodeError> {
    let limit = match limit as usize {
        0 => default,
        n if n > max => {
            return Err(NodeError::invalid(
                "limit",
                format!("is {n}; at most {max} per page"),
            ))
        }
        n => n,
    };
    if since_ms < 0 {
        return Err(NodeError::invalid("since_ms", "must not be negative"));
    }
    Ok(limit)
}

fn protocol(peer: &str, what: &str) -> NodeError {
    NodeError::Aborted(format!("{peer} answered out of the contract: {what}"))
}

/// Receiving again what peers delivered since a restored backup, and answering peers that do so.
#[derive(Clone)]
pub struct Reconciliation {
    shared: Shared,
    reception: Reception,
}

impl Reconciliation {
    pub(crate) fn new(shared: Shared, reception: Reception) -> Self {
        Self { shared, reception }
    }

    /// The other agencies of the directory.
    pub(crate) fn peers(&self) -> Vec<String> {
        self.shared
            .directory()
            .agencies()
            .filter(|a| a.id != self.shared.agency())
            .map(|a| a.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused_naming_after() {
        let c = (1_795_950_777_743, 42);
        assert_eq!(
            decode_cursor(&encode_cursor(c)).expect("own cursor"),
            Some(c)
        );
        assert_eq!(decode_cursor("").expect("empty"), None);
        for bad in ["xyz", "0", &"g".repeat(32), &"0".repeat(33)] {
            match decode_cursor(bad) {
                Err(NodeError::Invalid { field, .. }) => assert_eq!(field, "after", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // fixed width: the text order is the cursor order
        assert!(encode_cursor((2, 0)) > encode_cursor((1, u64::MAX)));
    }

    #[test]
    fn a_next_page_must_advance_decode_and_stay_within_the_bound() {
        let next = |after: &str, next: &str, valid: bool, listed: u64| {
            next_page("p", after, next.to_string(), valid, listed, "entries")
        };
        assert_eq!(next("a", "", true, 5).expect("the end"), None);
        assert_eq!(next("a", "b", true, 5).expect("on"), Some("b".to_string()));
        assert_eq!(
            next("", "a", true, 0).expect("first"),
            Some("a".to_string())
        );
        for (after, cursor, valid, listed) in [
            ("b", "b", true, 5),
            ("b", "a", true, 5),
            ("a", "b", false, 5),
            ("a", "b", true, MAX_LISTED),
        ] {
            let e = next(after, cursor, valid, listed).expect_err("refused");
            assert!(
                matches!(e, NodeError::Aborted(ref m) if m.contains("answered out of the contract")),
                "{after:?} -> {cursor:?}: {e}"
            );
        }
    }
}
