//! The restored node's side: `Reconcile`, the pull of what a peer delivered since a time,
//! and the reconciliations a restored store still owes at start.

use super::*;

impl Reconciliation {
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

    pub(super) fn audit_unavailable(
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
