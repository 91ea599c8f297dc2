//! The peer's side of reconciliation: what this node delivered to the calling agency
//! (`ListDelivered`, `FetchDelivered`) and what it received from it (`ListReceived`).

use super::*;

impl Reconciliation {
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
}
