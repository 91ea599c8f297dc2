//! Everything reception checks about one envelope, in the fixed order (see the parent
//! module): bind the signer to the TLS identity, verify and only then decode, header and
//! clock, duplicates, then the consent effect of a notice or withdrawal, or policy and
//! consent for a case message. Nothing is stored here.

use super::*;

/// A case message being admitted: what [`Reception::admit_case_message`] judges.
struct Case<'a> {
    kind: MessageKind,
    sender_role: Role,
    header: &'a EnvelopeHeader,
    body: &'a MessageBody,
    decided_at: i64,
}

impl Reception {
    /// Everything reception checks about one envelope, in the fixed order; nothing stored.
    /// Returns the decision with what the audit of a refusal names (the kind and consent id,
    /// known once the envelope is opened).
    pub(super) fn decide(
        &self,
        tls_agency: &str,
        envelope: SignedEnvelope,
        asked: Option<&Asked>,
        now: i64,
        index: usize,
        view: &mut BatchView,
    ) -> Decided {
        let (opened, sender_role) = match self.open_from(tls_agency, &envelope) {
            Ok(opened) => opened,
            Err(e) => {
                return Decided {
                    kind: MessageKind::Unspecified,
                    consent_id: String::new(),
                    decision: Err(e),
                }
            }
        };
        let kind = opened.kind;
        let consent_id = opened.header.consent_id.clone();
        let decision = self.decide_opened(
            tls_agency,
            sender_role,
            envelope,
            opened,
            asked,
            now,
            index,
            view,
        );
        Decided {
            kind,
            consent_id,
            decision,
        }
    }

    /// Binds the signer to the TLS identity, then verifies the envelope with the sender's
    /// pinned keys and only then decodes it. The opened envelope and the sender's role.
    fn open_from(
        &self,
        tls_agency: &str,
        envelope: &SignedEnvelope,
    ) -> Result<(OpenedEnvelope, Role), NodeError> {
        if envelope.signer != tls_agency {
            return Err(NodeError::PermissionDenied(format!(
                "the TLS certificate names {tls_agency}, but the envelope claims to be signed by {:?}",
                envelope.signer
            )));
        }
        let directory = self.shared.directory();
        let sender = directory.get(tls_agency).ok_or_else(|| {
            NodeError::PermissionDenied(format!("{tls_agency} is not in the directory"))
        })?;
        let opened = sender.open_envelope(envelope, &self.shared.limits().envelope)?;
        Ok((opened, sender.role))
    }

    /// [`Self::decide`] once the envelope is opened: header, duplicates, policy, consent.
    #[allow(clippy::too_many_arguments)]
    fn decide_opened(
        &self,
        tls_agency: &str,
        sender_role: Role,
        envelope: SignedEnvelope,
        opened: OpenedEnvelope,
        asked: Option<&Asked>,
        now: i64,
        index: usize,
        view: &mut BatchView,
    ) -> Result<Decision, NodeError> {
        let OpenedEnvelope {
            header,
            kind,
            body,
            hash,
        } = opened;
        let original = self.check_header(tls_agency, &header, &hash, asked, now)?;
        // When the consent is judged: now, or when the original receipt was signed.
        let decided_at = original.as_ref().map_or(now, |(_, at)| *at);
        if let Some(earlier) = self.earlier_copy(&header.message_id, &hash, view, now)? {
            return Ok(earlier);
        }
        if !header.in_reply_to.is_empty() {
            ids::parse_id("header.in_reply_to", &header.in_reply_to)
                .map_err(|e| NodeError::invalid("header.in_reply_to", e.to_string()))?;
        }
        let ledger = self.shared.ledger();
        let effect = match &body.body {
            Some(Body::ConsentNotice(n)) => {
                let record = self.admit_consent_notice(
                    tls_agency,
                    &header.consent_id,
                    n.consent.as_ref(),
                    header.created_at_ms,
                    view,
                )?;
                if let Some(held) = view.consent(ledger, &record.consent_id)? {
                    if held.record.as_ref() != Some(&record) {
                        return Err(kurzdraht_ledger::LedgerError::ConsentExists {
                            consent_id: record.consent_id,
                        }
                        .into());
                    }
                }
                ConsentEffect::Record(record)
            }
            Some(Body::ConsentWithdrawal(w)) => {
                self.admit_withdrawal(tls_agency, &header.consent_id, w, view)?
            }
            _ => {
                let case = Case {
                    kind,
                    sender_role,
                    header: &header,
                    body: &body,
                    decided_at,
                };
                self.admit_case_message(tls_agency, case, view)?;
                ConsentEffect::None
            }
        };
        view.apply(ledger, &effect, &envelope)?;
        view.ids.insert(header.message_id.clone(), (hash, index));
        let record = InboxRecord {
            seq: 0,
            message_id: header.message_id,
            sender: tls_agency.to_string(),
            kind: kind as i32,
            envelope: Some(envelope),
            receipt: original.map(|(receipt, _)| receipt),
            envelope_sha256: hash.to_vec(),
            received_at_ms: decided_at,
            created_at_ms: header.created_at_ms,
            consent_id: header.consent_id,
            in_reply_to: header.in_reply_to,
            acknowledged: false,
            notice: None,
            body_erased_at_ms: 0,
            read_by: Vec::new(),
            duplicate_audited: false,
        };
        Ok(Decision::Accept {
            record: Box::new(record),
            effect,
            kind,
        })
    }

    /// The header's recipient, message id and time. In a reconciliation, this node's own
    /// receipt for exactly this envelope, with when it was signed (it proves the envelope
    /// was accepted here once, so it may be older than the replay window).
    fn check_header(
        &self,
        tls_agency: &str,
        header: &EnvelopeHeader,
        hash: &[u8; 32],
        asked: Option<&Asked>,
        now: i64,
    ) -> Result<Option<(SignedReceipt, i64)>, NodeError> {
        if header.recipient != self.shared.agency() {
            return Err(NodeError::PermissionDenied(format!(
                "the envelope is addressed to {:?}, not to this node ({})",
                header.recipient,
                self.shared.agency()
            )));
        }
        ids::parse_id("header.message_id", &header.message_id)
            .map_err(|e| NodeError::invalid("header.message_id", e.to_string()))?;
        // Received again in a reconciliation: this node's own receipt for exactly this
        // envelope proves it was accepted here once (when, the receipt says).
        let original = match asked {
            None => None,
            Some(asked) => {
                if header.message_id != asked.message_id {
                    return Err(NodeError::invalid(
                        "header.message_id",
                        "is not the message asked for",
                    ));
                }
                self.own_receipt(tls_agency, &header.message_id, hash, asked.receipt.as_ref())
            }
        };
        let window = self.shared.limits().replay_window.as_millis() as i64;
        let skew = self.shared.limits().clock_skew.as_millis() as i64;
        if original.is_none() && header.created_at_ms < now.saturating_sub(window) {
            return Err(NodeError::invalid(
                "header.created_at_ms",
                "is older than the replay window",
            ));
        }
        if header.created_at_ms > now.saturating_add(window) {
            return Err(NodeError::invalid(
                "header.created_at_ms",
                "lies further in the future than the replay window; no clock is that far off",
            ));
        }
        if header.created_at_ms > now.saturating_add(skew) {
            // The sender's clock is ahead: the same envelope is welcome once the clocks
            // agree, so this is "try again", never a final refusal (that would lose it).
            return Err(NodeError::ClockSkew(
                "header.created_at_ms lies in the future beyond the allowed clock skew".into(),
            ));
        }
        Ok(original)
    }

    /// A copy of an envelope seen before, earlier in this batch or held already: how it is
    /// answered. The same id with other content is a conflict.
    fn earlier_copy(
        &self,
        message_id: &str,
        hash: &[u8; 32],
        view: &BatchView,
        now: i64,
    ) -> Result<Option<Decision>, NodeError> {
        let conflict = || -> NodeError {
            kurzdraht_ledger::LedgerError::MessageIdConflict {
                message_id: message_id.to_string(),
            }
            .into()
        };
        if let Some((earlier, at)) = view.ids.get(message_id) {
            if earlier != hash {
                return Err(conflict());
            }
            // A duplicate, as if the copies had come one by one: noted once the first is
            // stored (see `store_batch`).
            return Ok(Some(Decision::SameAs {
                index: *at,
                message_id: message_id.to_string(),
            }));
        }
        // A duplicate of what we already hold is answered with the original receipt, even if
        // the consent has changed since: the message was lawfully received then.
        if let Some(held) = self.shared.ledger().inbox_record(message_id)? {
            if held.envelope_sha256.as_slice() == hash.as_slice() {
                self.note_duplicate(&held.message_id, now)?;
                return Ok(Some(Decision::Duplicate(Box::new(held))));
            }
            return Err(conflict());
        }
        Ok(None)
    }

    /// A withdrawal from a peer: of the consent the header names, with valid texts, of a
    /// consent held here (or earlier in the batch) that the sender recorded.
    fn admit_withdrawal(
        &self,
        tls_agency: &str,
        header_consent_id: &str,
        w: &ConsentWithdrawal,
        view: &mut BatchView,
    ) -> Result<ConsentEffect, NodeError> {
        let w = w
            .withdrawal
            .as_ref()
            .ok_or_else(|| NodeError::invalid("body.withdrawal", "is required"))?;
        if w.consent_id != header_consent_id {
            return Err(NodeError::invalid(
                "body.withdrawal.consent_id",
                "differs from header.consent_id",
            ));
        }
        consent_record::validate_withdrawal_texts("body.withdrawal.", &w.recorded_by, &w.manner)?;
        let held = view
            .consent(self.shared.ledger(), &w.consent_id)?
            .and_then(|c| c.record)
            .ok_or(NodeError::Consent(
                kurzdraht_ledger::ConsentRefusal::NoConsent,
            ))?;
        if held.recording_agency != tls_agency {
            return Err(NodeError::PermissionDenied(
                "only the agency that recorded a consent may withdraw it".into(),
            ));
        }
        Ok(ConsentEffect::Withdraw(w.clone()))
    }

    /// A case message: the policy admits it from this sender to this node, and the consent
    /// it names covers it at `decided_at`.
    fn admit_case_message(
        &self,
        tls_agency: &str,
        case: Case<'_>,
        view: &mut BatchView,
    ) -> Result<(), NodeError> {
        let Case {
            kind,
            sender_role,
            header,
            body,
            decided_at,
        } = case;
        let subject = policy::admit_case_message(
            kind,
            sender_role,
            self.shared.role(),
            body,
            header.created_at_ms,
        )?;
        let purpose = policy::purpose_of(kind)
            .ok_or_else(|| NodeError::invalid("header.kind", "has no purpose"))?;
        let stored = if header.consent_id.is_empty() {
            None
        } else {
            view.consent(self.shared.ledger(), &header.consent_id)?
        };
        let categories = categories_carried(body);
        let query = ConsentQuery {
            subject,
            sender: tls_agency,
            recipient: self.shared.agency(),
            purpose,
            categories: &categories,
            at_ms: decided_at,
        };
        consent::evaluate(stored.as_ref(), &query).map_err(NodeError::Consent)?;
        Ok(())
    }

    /// This node's own receipt for the envelope `message_id` with `hash` from `sender`, with
    /// the time it names, if `receipt` is one (verified against this node's pinned keys).
    fn own_receipt(
        &self,
        sender: &str,
        message_id: &str,
        hash: &[u8; 32],
        receipt: Option<&SignedReceipt>,
    ) -> Option<(SignedReceipt, i64)> {
        let receipt = receipt?;
        let directory = self.shared.directory();
        // Signed when it was given: a key retired since still verifies it.
        let own_keys = directory.get(self.shared.agency())?.evidence_keys();
        let expected = ExpectedReceipt {
            message_id,
            envelope_sha256: hash,
            sender,
            receiver: self.shared.agency(),
        };
        match verify_receipt(receipt, own_keys, &expected) {
            Ok(verified) => Some((receipt.clone(), verified.received_at_ms)),
            Err(e) => {
                tracing::warn!(message_id, peer = sender, error = %e, "the peer's copy of this node's receipt does not verify; deciding as a new delivery");
                None
            }
        }
    }

    /// A replicated consent must come from the agency that recorded it, name this node, and
    /// pass the same validation as a consent recorded here (one function for both); a
    /// replacement must replace a consent of the same controller about the same person.
    fn admit_consent_notice(
        &self,
        sender: &str,
        header_consent_id: &str,
        record: Option<&ConsentRecord>,
        created_at_ms: i64,
        view: &BatchView,
    ) -> Result<ConsentRecord, NodeError> {
        let record = record.ok_or_else(|| NodeError::invalid("body.consent", "is required"))?;
        if record.recording_agency != sender {
            return Err(NodeError::PermissionDenied(
                "a consent notice must come from the agency that recorded the consent".into(),
            ));
        }
        if !record.recipients.iter().any(|r| r == self.shared.agency()) {
            return Err(NodeError::PermissionDenied(
                "the consent does not name this agency; it must not be sent here".into(),
            ));
        }
        consent_record::validate("body.consent.", record, &self.shared.directory())?;
        if record.consent_id != header_consent_id {
            return Err(NodeError::invalid(
                "body.consent.consent_id",
                "differs from header.consent_id",
            ));
        }
        // Recorded when its notice was sealed (give or take the clock skew): a record
        // dated later would have its age rules checked on a date of the sender's choosing.
        let skew = self.shared.limits().clock_skew.as_millis() as i64;
        if record.recorded_at_ms > created_at_ms.saturating_add(skew) {
            return Err(NodeError::invalid(
                "body.consent.recorded_at_ms",
                "lies after the notice was sealed",
            ));
        }
        if !record.supersedes.is_empty() {
            if let Some(held) = view.consent(self.shared.ledger(), &record.supersedes)? {
                let old = held.record.unwrap_or_default();
                if old.recording_agency != record.recording_agency {
                    return Err(NodeError::PermissionDenied(
                        "body.consent.supersedes names a consent another agency recorded".into(),
                    ));
                }
                // After an erasure here the old record names no one: nothing to compare.
                let same = held.erased_at_ms > 0
                    || match (&old.subject, &record.subject) {
                        (Some(a), Some(b)) => consent::same_person(a, b),
                        _ => false,
                    };
                if !same {
                    return Err(NodeError::invalid(
                        "body.consent.supersedes",
                        "names a consent of another person",
                    ));
                }
            }
        }
        Ok(record.clone())
    }
}
