//! The receiving side: what a node does with an envelope a peer delivers.
//!
//! Order matters and is fixed: bind the signer to the TLS identity → verify the signature
//! and only then decode → check recipient and clock → answer a duplicate with its original
//! receipt → policy → consent → sign a receipt → store envelope, receipt and audit entry in
//! one transaction → flush → answer. A refusal stores nothing but an audit entry of codes.

use crate::{categories::categories_carried, clock, node::Node, policy, NodeError};
use kurzdraht_envelope::{ids, sign_receipt, verify_and_open, OpenedEnvelope};
use kurzdraht_ledger::{
    consent, Accepted, AuditEvent, AuditNote, ConsentEffect, ConsentQuery, InboxRecord,
};
use kurzdraht_proto::v1::{
    message_body::Body, ConsentRecord, MessageKind, Receipt, SignedEnvelope, SignedReceipt,
};

impl Node {
    /// Handles one delivered envelope from the agency `tls_agency` (named by the peer's
    /// verified client certificate).
    pub async fn receive(
        &self,
        tls_agency: &str,
        envelope: SignedEnvelope,
    ) -> Result<SignedReceipt, NodeError> {
        let mut kind = MessageKind::Unspecified;
        let mut consent_id = String::new();
        let result = self
            .receive_checked(tls_agency, &envelope, &mut kind, &mut consent_id)
            .await;
        if let Err(e) = &result {
            self.audit_refusal(
                AuditEvent::ReceptionRefused,
                kind,
                tls_agency,
                &consent_id,
                e,
            );
        }
        result
    }

    async fn receive_checked(
        &self,
        tls_agency: &str,
        envelope: &SignedEnvelope,
        kind_out: &mut MessageKind,
        consent_out: &mut String,
    ) -> Result<SignedReceipt, NodeError> {
        if envelope.signer != tls_agency {
            return Err(NodeError::PermissionDenied(format!(
                "the TLS certificate names {tls_agency}, but the envelope claims to be signed by {:?}",
                envelope.signer
            )));
        }
        let sender = self.directory().get(tls_agency).ok_or_else(|| {
            NodeError::PermissionDenied(format!("{tls_agency} is not in the directory"))
        })?;
        let opened = verify_and_open(envelope, &sender.signing_keys, &self.limits().envelope)?;
        let OpenedEnvelope {
            header,
            kind,
            body,
            hash,
        } = opened;
        *kind_out = kind;
        *consent_out = header.consent_id.clone();
        if header.recipient != self.agency() {
            return Err(NodeError::PermissionDenied(format!(
                "the envelope is addressed to {:?}, not to this node ({})",
                header.recipient,
                self.agency()
            )));
        }
        ids::parse_id("header.message_id", &header.message_id)
            .map_err(|e| NodeError::invalid("header.message_id", e.to_string()))?;
        let now = clock::now_ms();
        let window = self.limits().replay_window.as_millis() as i64;
        let skew = self.limits().clock_skew.as_millis() as i64;
        if header.created_at_ms < now.saturating_sub(window) {
            return Err(NodeError::invalid(
                "header.created_at_ms",
                "is older than the replay window",
            ));
        }
        if header.created_at_ms > now.saturating_add(skew) {
            return Err(NodeError::invalid(
                "header.created_at_ms",
                "lies in the future beyond the allowed clock skew",
            ));
        }
        // A duplicate of what we already hold is answered with the original receipt, even if
        // the consent has changed since: the message was lawfully received then.
        if let Some(held) = self.ledger().inbox_record(&header.message_id)? {
            if held.envelope_sha256.as_slice() == hash.as_slice() {
                // Audited as the transactional duplicate path in `accept_delivery` does.
                self.ledger().audit(
                    AuditNote::new(AuditEvent::ReceivedDuplicate)
                        .message(&held.message_id)
                        .peer(&held.sender)
                        .kind(held.kind)
                        .envelope(&held.envelope_sha256),
                    now,
                )?;
                return self.answer_duplicate(held).await;
            }
            return Err(kurzdraht_ledger::LedgerError::MessageIdConflict {
                message_id: header.message_id,
            }
            .into());
        }
        if !header.in_reply_to.is_empty() {
            ids::parse_id("header.in_reply_to", &header.in_reply_to)
                .map_err(|e| NodeError::invalid("header.in_reply_to", e.to_string()))?;
        }
        let effect = match &body.body {
            Some(Body::ConsentNotice(n)) => ConsentEffect::Record(self.admit_consent_notice(
                tls_agency,
                &header.consent_id,
                n.consent.as_ref(),
            )?),
            Some(Body::ConsentWithdrawal(w)) => {
                let w = w
                    .withdrawal
                    .as_ref()
                    .ok_or_else(|| NodeError::invalid("body.withdrawal", "is required"))?;
                if w.consent_id != header.consent_id {
                    return Err(NodeError::invalid(
                        "body.withdrawal.consent_id",
                        "differs from header.consent_id",
                    ));
                }
                let held = self
                    .ledger()
                    .consent(&w.consent_id)?
                    .and_then(|c| c.record)
                    .ok_or(NodeError::Consent(
                        kurzdraht_ledger::ConsentRefusal::NoConsent,
                    ))?;
                if held.recording_agency != tls_agency {
                    return Err(NodeError::PermissionDenied(
                        "only the agency that recorded a consent may withdraw it".into(),
                    ));
                }
                ConsentEffect::Withdraw(w.clone())
            }
            _ => {
                let sender_role = sender.role;
                let subject = policy::admit_case_message(
                    kind,
                    sender_role,
                    self.role(),
                    &body,
                    header.created_at_ms,
                )?;
                let purpose = policy::purpose_of(kind)
                    .ok_or_else(|| NodeError::invalid("header.kind", "has no purpose"))?;
                let stored = if header.consent_id.is_empty() {
                    None
                } else {
                    self.ledger().consent(&header.consent_id)?
                };
                let categories = categories_carried(&body);
                let query = ConsentQuery {
                    subject,
                    sender: tls_agency,
                    recipient: self.agency(),
                    purpose,
                    categories: &categories,
                    at_ms: now,
                };
                consent::evaluate(stored.as_ref(), &query).map_err(NodeError::Consent)?;
                ConsentEffect::None
            }
        };
        let receipt = sign_receipt(
            &Receipt {
                message_id: header.message_id.clone(),
                envelope_sha256: hash.to_vec(),
                sender: tls_agency.to_string(),
                receiver: self.agency().to_string(),
                received_at_ms: now,
            },
            self.key(),
        );
        let record = InboxRecord {
            seq: 0,
            message_id: header.message_id.clone(),
            sender: tls_agency.to_string(),
            kind: kind as i32,
            envelope: Some(envelope.clone()),
            receipt: Some(receipt.clone()),
            envelope_sha256: hash.to_vec(),
            received_at_ms: now,
            created_at_ms: header.created_at_ms,
            consent_id: header.consent_id.clone(),
            in_reply_to: header.in_reply_to.clone(),
            acknowledged: false,
            notice: None,
            body_erased_at_ms: 0,
        };
        match self.ledger().accept_delivery(&record, &effect, now)? {
            Accepted::Stored { seq } => {
                self.ledger().flush().await?;
                self.inbox_changed(seq);
                self.metrics().received();
                tracing::info!(message_id = %header.message_id, kind = ?kind, sender = tls_agency, seq, "envelope received");
                Ok(receipt)
            }
            Accepted::Duplicate(held) => self.answer_duplicate(*held).await,
        }
    }

    /// The original receipt for a repeated delivery — after a flush, because the first
    /// attempt's flush may still be running: a receipt leaves only for what is on disk.
    async fn answer_duplicate(&self, held: InboxRecord) -> Result<SignedReceipt, NodeError> {
        self.ledger().flush().await?;
        tracing::info!(message_id = %held.message_id, "duplicate answered with the original receipt");
        held.receipt.ok_or_else(|| {
            kurzdraht_ledger::LedgerError::Corrupt {
                what: "inbox record",
                reason: "no receipt".into(),
            }
            .into()
        })
    }

    /// A replicated consent must come from the agency that recorded it, name this node,
    /// and be a well-formed record.
    fn admit_consent_notice(
        &self,
        sender: &str,
        header_consent_id: &str,
        record: Option<&ConsentRecord>,
    ) -> Result<ConsentRecord, NodeError> {
        let record = record.ok_or_else(|| NodeError::invalid("body.consent", "is required"))?;
        ids::parse_id("body.consent.consent_id", &record.consent_id)
            .map_err(|e| NodeError::invalid("body.consent.consent_id", e.to_string()))?;
        if record.consent_id != header_consent_id {
            return Err(NodeError::invalid(
                "body.consent.consent_id",
                "differs from header.consent_id",
            ));
        }
        if record.recording_agency != sender {
            return Err(NodeError::PermissionDenied(
                "a consent notice must come from the agency that recorded the consent".into(),
            ));
        }
        if !record.recipients.iter().any(|r| r == self.agency()) {
            return Err(NodeError::PermissionDenied(
                "the consent does not name this agency; it must not be sent here".into(),
            ));
        }
        policy::validate_subject("body.consent.subject", record.subject.as_ref())?;
        if record.valid_until_ms <= record.valid_from_ms {
            return Err(NodeError::invalid(
                "body.consent.valid_until_ms",
                "must lie after valid_from_ms",
            ));
        }
        if record.purposes.is_empty() {
            return Err(NodeError::invalid(
                "body.consent.purposes",
                "name no purpose",
            ));
        }
        Ok(record.clone())
    }
}
