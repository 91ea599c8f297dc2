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

    // ---- the peer's side: what it delivered to the caller ----

    /// One page of the deliveries this node made to `caller` (`ListDelivered`).
    pub fn list_delivered(
        &self,
        caller: &str,
        req: &ListDeliveredRequest,
    ) -> Result<ListDeliveredResponse, NodeError> {
        let limit = page_request(req.limit, req.since_ms, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)?;
        let after = decode_cursor(&req.after)?;
        let mut page = self
            .shared
            .ledger()
            .delivered_to(caller, req.since_ms, after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next_after = match (more, page.last()) {
            (true, Some(last)) => encode_cursor(last.cursor),
            _ => String::new(),
        };
        let keep = self.shared.delivery_settings().keep_delivered.as_millis() as i64;
        Ok(ListDeliveredResponse {
            entries: page
                .into_iter()
                .map(|e| DeliveredEntry {
                    message_id: e.message_id,
                    envelope_sha256: e.envelope_sha256,
                    delivered_at_ms: e.delivered_at_ms,
                    envelope_kept: e.envelope_kept,
                })
                .collect(),
            next_after,
            kept_since_ms: self.shared.now_ms().saturating_sub(keep).max(0),
        })
    }

    /// The kept envelopes of deliveries this node made to `caller`, for a prefix of the
    /// ids asked for within about 1 MiB (`FetchDelivered`). An id not delivered to the
    /// caller is answered as one no longer kept: nothing tells another agency's message
    /// from an unknown id. What is handed over is audited (`reconciliation.served`) and
    /// flushed before the answer.
    pub async fn fetch_delivered(
        &self,
        caller: &str,
        req: &FetchDeliveredRequest,
    ) -> Result<FetchDeliveredResponse, NodeError> {
        if req.message_ids.len() > FETCH_MAX_IDS {
            return Err(NodeError::invalid(
                "message_ids",
                format!(
                    "holds {} ids, over the limit of {FETCH_MAX_IDS}",
                    req.message_ids.len()
                ),
            ));
        }
        for (i, id) in req.message_ids.iter().enumerate() {
            ids::parse_id("message_ids", id)
                .map_err(|e| NodeError::invalid(format!("message_ids[{i}]"), e.to_string()))?;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut served = 0u32;
        for id in &req.message_ids {
            let kept = self
                .shared
                .ledger()
                .kept_delivery(id)?
                .filter(|k| k.recipient == caller);
            let Some(envelope) = kept.and_then(|k| k.envelope) else {
                out.push(KeptEnvelope {
                    message_id: id.clone(),
                    envelope: None,
                    receipt: None,
                });
                continue;
            };
            let size = envelope.encoded_len();
            if !out.is_empty() && bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            let receipt = self
                .shared
                .ledger()
                .message(id)?
                .and_then(|r| r.status)
                .and_then(|s| s.receipt);
            out.push(KeptEnvelope {
                message_id: id.clone(),
                envelope: Some(envelope),
                receipt,
            });
            served += 1;
        }
        if served > 0 {
            self.shared.ledger().audit(
                AuditNote::new(AuditEvent::ReconciliationServed)
                    .peer(caller)
                    .detail(format!("{served} kept envelopes handed over")),
                self.shared.now_ms(),
            )?;
            self.shared.ledger().flush().await?;
            tracing::info!(
                peer = caller,
                envelopes = served,
                "kept envelopes handed to a reconciling peer"
            );
        }
        Ok(FetchDeliveredResponse { envelopes: out })
    }

    /// One page of the envelopes this node received from `caller` (`ListReceived`): the
    /// caller's own envelopes with this node's receipts, for a caller restored from a
    /// backup. Bounded in entries, bytes and inbox records looked at; what is handed over
    /// is audited (`reconciliation.served-sent`) and flushed before the answer.
    pub async fn list_received(
        &self,
        caller: &str,
        req: &ListReceivedRequest,
    ) -> Result<ListReceivedResponse, NodeError> {
        let limit = page_request(
            req.limit,
            req.since_ms,
            RECEIVED_PAGE_DEFAULT,
            RECEIVED_PAGE_MAX,
        )?;
        let after = decode_seq(&req.after)?;
        let page = self.shared.ledger().received_from(
            caller,
            req.since_ms,
            after,
            limit,
            MAX_BATCH_BYTES,
            RECEIVED_SCAN_MAX,
        )?;
        let entries: Vec<ReceivedEnvelope> = page
            .records
            .into_iter()
            .map(|r| ReceivedEnvelope {
                envelope: r.envelope.filter(|_| r.body_erased_at_ms == 0),
                message_id: r.message_id,
                receipt: r.receipt,
                received_at_ms: r.received_at_ms,
            })
            .collect();
        if !entries.is_empty() {
            self.shared.ledger().audit(
                AuditNote::new(AuditEvent::ReconciliationServedSent)
                    .peer(caller)
                    .detail(format!("{} received envelopes handed back", entries.len())),
                self.shared.now_ms(),
            )?;
            self.shared.ledger().flush().await?;
        }
        Ok(ListReceivedResponse {
            entries,
            next_after: page
                .next_after
                .map(|s| format!("{s:016x}"))
                .unwrap_or_default(),
        })
    }

    // ---- the restored node's side ----

    /// `Reconcile`: reconciles with one peer or every peer in the directory, one after
    /// another; a peer that fails is reported, the others still run.
    pub async fn reconcile(&self, req: ReconcileRequest) -> Result<ReconcileResponse, NodeError> {
        if req.since_ms < 0 {
            return Err(NodeError::invalid("since_ms", "must not be negative"));
        }
        let peers = if req.peer.is_empty() {
            self.peers()
        } else if req.peer == self.shared.agency()
            || self.shared.directory().get(&req.peer).is_none()
        {
            return Err(NodeError::invalid(
                "peer",
                "must name another agency of the directory",
            ));
        } else {
            vec![req.peer.clone()]
        };
        let mut reports = Vec::with_capacity(peers.len());
        for peer in peers {
            reports.push(self.reconcile_with(&peer, req.since_ms).await);
        }
        Ok(ReconcileResponse { peers: reports })
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

    /// Reconciles with `peer` from `since_ms` (the peer's clock) on; never fails as a
    /// whole: what went wrong is in the report's `error` (and audited with the counts).
    pub async fn reconcile_with(&self, peer: &str, since_ms: i64) -> PeerReconciliation {
        let mut report = PeerReconciliation {
            peer: peer.to_string(),
            ..Default::default()
        };
        let started = self.shared.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationStarted)
                .peer(peer)
                .detail(format!("since {since_ms}")),
            self.shared.now_ms(),
        );
        let run = match started {
            Ok(()) => self.reconcile_pages(peer, since_ms, &mut report).await,
            Err(e) => Err(e.into()),
        };
        let run = match run {
            Ok(()) => self.reconcile_sent(peer, since_ms, &mut report).await,
            Err(e) => Err(e),
        };
        let mut detail = format!(
            "listed {}, held {}, received {}, refused {}, unavailable {}",
            report.listed, report.held, report.received, report.refused, report.unavailable
        );
        if since_ms < report.kept_since_ms {
            detail.push_str(&format!(
                "; the peer keeps deliveries since {} only",
                report.kept_since_ms
            ));
        }
        if report.sent_listed > 0 {
            detail.push_str(&format!(
                "; sent: listed {}, withdrawals {}, consents {}, messages {}, unavailable {}",
                report.sent_listed,
                report.withdrawals_restored,
                report.consents_restored,
                report.messages_restored,
                report.sent_unavailable
            ));
        }
        if let Err(e) = run {
            detail.push_str(&format!("; stopped: {}", e.reason_code()));
            report.error = e.to_string();
            tracing::warn!(peer, error = %e, "reconciliation stopped");
        }
        let finished = self.shared.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationFinished)
                .peer(peer)
                .detail(detail),
            self.shared.now_ms(),
        );
        let flushed = match finished {
            Ok(()) => self.shared.ledger().flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = flushed {
            tracing::error!(peer, error = %e, "could not record the end of a reconciliation");
            if report.error.is_empty() {
                report.error = NodeError::from(e).to_string();
            }
        }
        tracing::info!(
            peer,
            listed = report.listed,
            held = report.held,
            received = report.received,
            refused = report.refused,
            unavailable = report.unavailable,
            "reconciliation with a peer ended"
        );
        report
    }

    fn audit_unavailable(
        &self,
        peer: &str,
        message_id: &str,
        detail: &str,
    ) -> Result<(), NodeError> {
        self.shared.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationUnavailable)
                .peer(peer)
                .message(message_id)
                .detail(detail),
            self.shared.now_ms(),
        )?;
        Ok(())
    }

    async fn reconcile_pages(
        &self,
        peer: &str,
        since_ms: i64,
        report: &mut PeerReconciliation,
    ) -> Result<(), NodeError> {
        let transport = GrpcTransport::new(self.shared.clone(), peer);
        let mut after = String::new();
        loop {
            let page = transport
                .list_delivered(ListDeliveredRequest {
                    since_ms,
                    after: after.clone(),
                    limit: LIST_PAGE_MAX as u32,
                })
                .await
                .map_err(|s| peer_failed(peer, &s))?;
            report.kept_since_ms = page.kept_since_ms;
            if page.entries.len() > LIST_PAGE_MAX {
                return Err(protocol(peer, "a page over 1,000 entries"));
            }
            let mut wanted = Vec::new();
            for e in page.entries {
                report.listed += 1;
                match self.shared.ledger().inbox_record(&e.message_id)? {
                    Some(held) if held.envelope_sha256 == e.envelope_sha256 => report.held += 1,
                    Some(_) => {
                        report.unavailable += 1;
                        self.audit_unavailable(
                            peer,
                            &e.message_id,
                            "held here with another envelope",
                        )?;
                    }
                    None if !e.envelope_kept => {
                        report.unavailable += 1;
                        self.audit_unavailable(peer, &e.message_id, "no longer kept by the peer")?;
                    }
                    None => wanted.push(e.message_id),
                }
            }
            self.refetch(&transport, peer, &wanted, report).await?;
            let valid = decode_cursor(&page.next_after).is_ok();
            match next_page(
                peer,
                &after,
                page.next_after,
                valid,
                report.listed,
                "deliveries",
            )? {
                Some(next) => after = next,
                None => return Ok(()),
            }
        }
    }

    /// Fetches `wanted` from `peer` (as many calls as the peer's answers need) and receives
    /// each batch.
    async fn refetch(
        &self,
        transport: &GrpcTransport,
        peer: &str,
        wanted: &[String],
        report: &mut PeerReconciliation,
    ) -> Result<(), NodeError> {
        let mut rest = wanted;
        while !rest.is_empty() {
            let ask = &rest[..rest.len().min(FETCH_MAX_IDS)];
            let answer = transport
                .fetch_delivered(FetchDeliveredRequest {
                    message_ids: ask.to_vec(),
                })
                .await
                .map_err(|s| peer_failed(peer, &s))?;
            let got = answer.envelopes;
            if got.is_empty() || got.len() > ask.len() {
                return Err(protocol(
                    peer,
                    "no answer or more answers than ids asked for",
                ));
            }
            let mut items = Vec::with_capacity(got.len());
            for (asked, kept) in ask.iter().zip(&got) {
                if kept.message_id != *asked {
                    return Err(protocol(peer, "answers out of the order asked"));
                }
                match &kept.envelope {
                    None => {
                        report.unavailable += 1;
                        self.audit_unavailable(peer, asked, "no longer kept by the peer")?;
                    }
                    Some(envelope) => items.push(Refetched {
                        message_id: asked.clone(),
                        envelope: envelope.clone(),
                        receipt: kept.receipt.clone(),
                    }),
                }
            }
            for outcome in self.reception.receive_refetched(peer, items).await {
                match outcome {
                    Ok(Refetch::Stored) => report.received += 1,
                    Ok(Refetch::Held) => report.held += 1,
                    // Not stored this time (the store failed): the run stops, to be repeated.
                    Err(e @ NodeError::Aborted(_)) => return Err(e),
                    Err(_) => report.refused += 1, // audited by reception
                }
            }
            rest = &rest[got.len()..];
        }
        Ok(())
    }

    /// The other direction: lists what `peer` received from this node since `since_ms`
    /// and records again what those envelopes prove (a withdrawal, a consent, a message's
    /// status). A peer without `ListReceived` (an older version) is skipped, logged.
    async fn reconcile_sent(
        &self,
        peer: &str,
        since_ms: i64,
        report: &mut PeerReconciliation,
    ) -> Result<(), NodeError> {
        let transport = GrpcTransport::new(self.shared.clone(), peer);
        let mut after = String::new();
        loop {
            let page = match transport
                .list_received(ListReceivedRequest {
                    since_ms,
                    after: after.clone(),
                    limit: RECEIVED_PAGE_MAX as u32,
                })
                .await
            {
                Ok(page) => page,
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::warn!(
                        peer,
                        "the peer does not list what it received from this node (an older version): what this node sent after its backup is not learned from it"
                    );
                    return Ok(());
                }
                Err(s) => return Err(peer_failed(peer, &s)),
            };
            if page.entries.len() > RECEIVED_PAGE_MAX {
                return Err(protocol(peer, "a page over 256 entries"));
            }
            for entry in page.entries {
                report.sent_listed += 1;
                self.restore_sent(peer, entry, report).await?;
            }
            let valid = decode_seq(&page.next_after).is_ok();
            match next_page(
                peer,
                &after,
                page.next_after,
                valid,
                report.sent_listed,
                "envelopes",
            )? {
                Some(next) => after = next,
                None => return Ok(()),
            }
        }
    }

    /// Verifies one envelope this node sent, as `peer` holds it (this node's own pinned
    /// keys for the envelope, the peer's for its receipt), and records again what it proves.
    /// What cannot be used is counted and audited as unavailable.
    async fn restore_sent(
        &self,
        peer: &str,
        entry: ReceivedEnvelope,
        report: &mut PeerReconciliation,
    ) -> Result<(), NodeError> {
        let sent = match self.verify_sent(peer, &entry) {
            Ok(sent) => sent,
            Err(why) => {
                report.sent_unavailable += 1;
                tracing::warn!(peer, message_id = %entry.message_id, why, "an envelope the peer holds from this node cannot be used");
                return self.audit_unavailable(peer, &entry.message_id, why);
            }
        };
        // A withdrawal takes effect as a local one does: after the delivery rounds in flight
        // under the consent, and once recorded no message under it leaves (the workers stop
        // the queued ones at their next round).
        let withdrawn = match &sent.effect {
            SentEffect::Withdrawal(w, _) => self
                .shared
                .ledger()
                .consent(&w.consent_id)?
                .filter(|c| c.withdrawal.is_none())
                .and_then(|c| c.record),
            _ => None,
        };
        let _lanes = match &withdrawn {
            Some(record) => self.shared.close_lanes(self.shared.lanes_of(record)?).await,
            None => Vec::new(),
        };
        // The consent's other recipients may not hold the withdrawal (its notice to them
        // may have been queued still when the store was lost): each gets it again, as a new
        // notice of the same withdrawal (one that holds it already changes nothing).
        let notices = match (&withdrawn, &sent.effect) {
            (Some(record), SentEffect::Withdrawal(w, _)) => {
                self.renotify_withdrawal(record, w, peer)?
            }
            _ => Vec::new(),
        };
        let done =
            self.shared
                .ledger()
                .restore_sent(peer, &sent, &notices, self.shared.now_ms())?;
        self.shared.ledger().flush().await?;
        drop(_lanes);
        if done.withdrawal {
            report.withdrawals_restored += 1;
            if let Some(record) = &withdrawn {
                for r in &record.recipients {
                    self.shared.wake(r);
                }
            }
        }
        if done.consent {
            report.consents_restored += 1;
        }
        if done.message {
            report.messages_restored += 1;
        }
        if done.unknown_consent {
            report.sent_unavailable += 1;
            self.audit_unavailable(
                peer,
                &entry.message_id,
                "a withdrawal of a consent not held here",
            )?;
        }
        Ok(())
    }

    /// Notices of withdrawal `w` of `record` to its recipients other than `peer` (which
    /// holds it), except those whose notice of the consent is still queued here (they never
    /// held the consent; the worker stops that notice).
    fn renotify_withdrawal(
        &self,
        record: &ConsentRecord,
        w: &ConsentWithdrawalRecord,
        peer: &str,
    ) -> Result<Vec<Outgoing>, NodeError> {
        let never_told: BTreeSet<String> = self
            .shared
            .ledger()
            .queued_under(&BTreeSet::from([record.consent_id.clone()]))?
            .into_iter()
            .filter(|q| q.kind == MessageKind::ConsentNotice)
            .map(|q| q.recipient)
            .collect();
        let body = MessageBody {
            body: Some(Body::ConsentWithdrawal(ConsentWithdrawal {
                withdrawal: Some(w.clone()),
            })),
        };
        let now = self.shared.now_ms();
        record
            .recipients
            .iter()
            .filter(|r| r.as_str() != peer && !never_told.contains(*r))
            .map(|r| {
                self.shared.seal_outgoing(
                    MessageKind::ConsentWithdrawal,
                    r,
                    &record.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect()
    }

    /// What `entry` proves, if its envelope verifies with this node's own keys and was sent
    /// by this node to `peer`, and the peer's receipt for exactly it verifies with the
    /// peer's keys; why not, if not (no personal data).
    fn verify_sent(
        &self,
        peer: &str,
        entry: &ReceivedEnvelope,
    ) -> Result<SentEnvelope, &'static str> {
        let envelope = entry
            .envelope
            .as_ref()
            .ok_or("the peer no longer holds the body")?;
        if envelope.signer != self.shared.agency() {
            return Err("signed by another agency");
        }
        let directory = self.shared.directory();
        let own = directory
            .get(self.shared.agency())
            .ok_or("this agency is not in the directory")?;
        let opened = verify_and_open(
            envelope,
            own.evidence_keys(),
            &self.shared.limits().envelope,
        )
        .map_err(|_| "does not verify with this agency's keys")?;
        let header = &opened.header;
        if header.sender != self.shared.agency() || header.recipient != peer {
            return Err("not sent by this agency to the peer");
        }
        if header.message_id != entry.message_id {
            return Err("listed under another message id");
        }
        if kind_of(&opened.body) != Some(opened.kind) {
            return Err("a body of another kind than its header");
        }
        let peer_keys = directory
            .get(peer)
            .ok_or("the peer is not in the directory")?
            .evidence_keys();
        let signed = entry.receipt.as_ref().ok_or("no receipt")?;
        let expected = ExpectedReceipt {
            message_id: &header.message_id,
            envelope_sha256: &opened.hash,
            sender: self.shared.agency(),
            receiver: peer,
        };
        let receipt = verify_receipt(signed, peer_keys, &expected)
            .map_err(|_| "the peer's receipt does not verify")?;
        let effect = match opened.body.body {
            Some(Body::ConsentNotice(n)) => {
                let record = n.consent.ok_or("a consent notice without its record")?;
                if record.recording_agency != self.shared.agency()
                    || record.consent_id != header.consent_id
                {
                    return Err("a consent notice about another consent");
                }
                SentEffect::Consent(Box::new(record), envelope.clone())
            }
            Some(Body::ConsentWithdrawal(w)) => {
                let withdrawal = w
                    .withdrawal
                    .ok_or("a withdrawal notice without its record")?;
                if withdrawal.consent_id != header.consent_id {
                    return Err("a withdrawal notice about another consent");
                }
                SentEffect::Withdrawal(withdrawal, envelope.clone())
            }
            _ => SentEffect::None,
        };
        Ok(SentEnvelope {
            status: MessageStatus {
                message_id: header.message_id.clone(),
                kind: opened.kind as i32,
                recipient: peer.to_string(),
                state: DeliveryState::Delivered as i32,
                attempts: 1,
                detail: String::new(),
                submitted_at_ms: header.created_at_ms,
                updated_at_ms: receipt.received_at_ms,
                receipt: Some(signed.clone()),
                consent_id: header.consent_id.clone(),
            },
            envelope_sha256: opened.hash.to_vec(),
            effect,
        })
    }

    /// At start: if the store was restored from a backup and still owes reconciliations,
    /// reconciles with each peer not yet done, retrying a peer that fails (backing off up
    /// to a minute) until every one is done or the node closes.
    pub(crate) fn spawn_pending(&self) -> Option<tokio::task::JoinHandle<()>> {
        let pending = match self.shared.ledger().pending_reconciliation() {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read whether the store owes a reconciliation");
                return None;
            }
        };
        let node = self.clone();
        let mut closing = self.shared.closing();
        Some(tokio::spawn(async move {
            let peers = node.peers();
            let mut owed: Vec<String> = peers
                .iter()
                .filter(|p| !pending.peers_done.contains(p))
                .cloned()
                .collect();
            tracing::info!(since_ms = pending.since_ms, peers = ?owed, "the store was restored from a backup: reconciling with the peers");
            let mut wait = Duration::from_secs(1);
            while !owed.is_empty() {
                let mut failed = Vec::new();
                for peer in owed {
                    if *closing.borrow() {
                        return;
                    }
                    let report = tokio::select! {
                        r = node.reconcile_with(&peer, pending.since_ms) => r,
                        _ = closing.wait_for(|c| *c) => return,
                    };
                    if !report.error.is_empty() {
                        failed.push(peer);
                        continue;
                    }
                    match node.shared.ledger().note_reconciled(&peer, &peers) {
                        Ok(_) => {
                            if let Err(e) = node.shared.ledger().flush().await {
                                tracing::error!(error = %e, "could not note a reconciliation done");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not note a reconciliation done");
                            failed.push(peer);
                        }
                    }
                }
                owed = failed;
                if owed.is_empty() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            tracing::info!("reconciled with every peer after the restore");
        }))
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
