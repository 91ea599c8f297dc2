//! Reconciliation: a node restored from a backup learns from each peer what that peer
//! delivered to it, and receives again what it no longer holds.
//!
//! - Each node keeps what it delivered for `[delivery] keep_delivered_days` (the ledger's
//!   `store::kept`: envelope and receipt) and answers two PeerExchange calls about the
//!   deliveries made to the *calling* agency only (named by its client certificate):
//!   `ListDelivered` (pages of ids, envelope hashes and times) and `FetchDelivered` (the
//!   envelopes with the caller's own receipts). Both are bounded (at most 1,000 entries a
//!   page, 256 ids and about 1 MiB of envelopes a call) and count against the caller's
//!   rate like deliveries.
//! - The restored node pulls ([`Node::reconcile_with`]): it lists a peer's deliveries since
//!   a time, skips what it holds (same id and envelope hash), fetches the rest and hands it
//!   to reception (`Node::receive_refetched`): verify-before-decode with the peer's pinned
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
//! - Started by `Reconcile` (AgencyApi, an admin token), or at start when the store was
//!   restored by `kurzdraht restore` (a marker in the store: every peer in turn, retried
//!   until each has answered). The audit chain records `reconciliation.started`, each
//!   `reconciliation.received` / `.refused` / `.unavailable`, and `.finished` with counts;
//!   the peer records `reconciliation.served` (ids only everywhere).

use crate::peer_exchange::{MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES};
use crate::peer_transport::GrpcTransport;
use crate::reception::{Refetch, Refetched};
use crate::{node::Node, NodeError};
use kurzdraht_envelope::ids;
use kurzdraht_ledger::{AuditEvent, AuditNote, Cursor};
use kurzdraht_proto::v1::{
    DeliveredEntry, FetchDeliveredRequest, FetchDeliveredResponse, KeptEnvelope,
    ListDeliveredRequest, ListDeliveredResponse, PeerReconciliation, ReconcileRequest,
    ReconcileResponse,
};
use prost::Message;
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

fn encode_cursor((at, seq): Cursor) -> String {
    format!("{at:016x}{seq:016x}")
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

fn protocol(peer: &str, what: &str) -> NodeError {
    NodeError::Aborted(format!("{peer} answered out of the contract: {what}"))
}

impl Node {
    // ---- the peer's side: what it delivered to the caller ----

    /// One page of the deliveries this node made to `caller` (`ListDelivered`).
    pub fn list_delivered(
        &self,
        caller: &str,
        req: &ListDeliveredRequest,
    ) -> Result<ListDeliveredResponse, NodeError> {
        let limit = match req.limit as usize {
            0 => LIST_PAGE_DEFAULT,
            n if n > LIST_PAGE_MAX => {
                return Err(NodeError::invalid(
                    "limit",
                    format!("is {n}; at most {LIST_PAGE_MAX} per page"),
                ))
            }
            n => n,
        };
        if req.since_ms < 0 {
            return Err(NodeError::invalid("since_ms", "must not be negative"));
        }
        let after = decode_cursor(&req.after)?;
        let mut page = self
            .ledger()
            .delivered_to(caller, req.since_ms, after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next_after = match (more, page.last()) {
            (true, Some(last)) => encode_cursor(last.cursor),
            _ => String::new(),
        };
        let keep = self.delivery_settings().keep_delivered.as_millis() as i64;
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
            kept_since_ms: self.now_ms().saturating_sub(keep).max(0),
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
            self.ledger().audit(
                AuditNote::new(AuditEvent::ReconciliationServed)
                    .peer(caller)
                    .detail(format!("{served} kept envelopes handed over")),
                self.now_ms(),
            )?;
            self.ledger().flush().await?;
            tracing::info!(
                peer = caller,
                envelopes = served,
                "kept envelopes handed to a reconciling peer"
            );
        }
        Ok(FetchDeliveredResponse { envelopes: out })
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
        } else if req.peer == self.agency() || self.directory().get(&req.peer).is_none() {
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
        self.directory()
            .agencies()
            .filter(|a| a.id != self.agency())
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
        let started = self.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationStarted)
                .peer(peer)
                .detail(format!("since {since_ms}")),
            self.now_ms(),
        );
        let run = match started {
            Ok(()) => self.reconcile_pages(peer, since_ms, &mut report).await,
            Err(e) => Err(e.into()),
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
        if let Err(e) = run {
            detail.push_str(&format!("; stopped: {}", e.reason_code()));
            report.error = e.to_string();
            tracing::warn!(peer, error = %e, "reconciliation stopped");
        }
        let finished = self.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationFinished)
                .peer(peer)
                .detail(detail),
            self.now_ms(),
        );
        let flushed = match finished {
            Ok(()) => self.ledger().flush().await,
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
        self.ledger().audit(
            AuditNote::new(AuditEvent::ReconciliationUnavailable)
                .peer(peer)
                .message(message_id)
                .detail(detail),
            self.now_ms(),
        )?;
        Ok(())
    }

    async fn reconcile_pages(
        &self,
        peer: &str,
        since_ms: i64,
        report: &mut PeerReconciliation,
    ) -> Result<(), NodeError> {
        let transport = GrpcTransport::new(self.clone(), peer);
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
                match self.ledger().inbox_record(&e.message_id)? {
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
            if page.next_after.is_empty() {
                return Ok(());
            }
            // Cursors are fixed-width hex: one that does not advance would list for ever.
            if page.next_after <= after || decode_cursor(&page.next_after).is_err() {
                return Err(protocol(peer, "a next_after that does not advance"));
            }
            if report.listed >= MAX_LISTED {
                return Err(protocol(
                    peer,
                    "more deliveries than one reconciliation takes",
                ));
            }
            after = page.next_after;
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
            for outcome in self.receive_refetched(peer, items).await {
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

    /// At start: if the store was restored from a backup and still owes reconciliations,
    /// reconciles with each peer not yet done, retrying a peer that fails (backing off up
    /// to a minute) until every one is done or the node closes.
    pub(crate) fn spawn_pending_reconciliation(&self) -> Option<tokio::task::JoinHandle<()>> {
        let pending = match self.ledger().pending_reconciliation() {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read whether the store owes a reconciliation");
                return None;
            }
        };
        let node = self.clone();
        let mut closing = self.closing();
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
                    match node.ledger().note_reconciled(&peer, &peers) {
                        Ok(_) => {
                            if let Err(e) = node.ledger().flush().await {
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
}
