//! The other direction: what a peer received from this node (`ListReceived`) is verified
//! and recorded again here (withdrawals, consents, messages' statuses).

use super::*;

impl Reconciliation {
    /// The other direction: lists what `peer` received from this node since `since_ms`
    /// and records again what those envelopes prove (a withdrawal, a consent, a message's
    /// status). A peer without `ListReceived` (an older version) is skipped, logged.
    pub(super) async fn reconcile_sent(
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
}
