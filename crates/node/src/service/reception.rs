//! The receiving side: what a node does with an envelope a peer delivers.
//!
//! Order matters and is fixed, per envelope: bind the signer to the TLS identity → verify
//! the signature and only then decode → check recipient and clock → answer a duplicate with
//! its original receipt → policy → consent. Then, per delivered batch (a unary Deliver is a
//! batch of one): sign the receipts (one signature over the batch's Merkle root) → store
//! envelopes, receipts and audit entries in one transaction → one flush → answer. A refusal
//! stores nothing but an audit entry of codes; it does not refuse the batch's other envelopes,
//! and a later envelope sees the consent effects of the earlier ones.
//!
//! Envelopes a node fetches again in a reconciliation it started ([`Reception::receive_refetched`],
//! see `reconciliation`) take the same path, with two differences: one that comes with this
//! node's own original receipt for exactly that envelope (verified against this node's
//! pinned keys) is stored with that receipt, may be older than the replay window (the
//! receipt proves it was accepted here once, so it is no replay), and its consent is judged
//! at the time of that receipt (a withdrawal, replacement or erasure held now still
//! refuses it); every other one is decided as a delivery.

use crate::policy::Role;
use crate::shared::Shared;
use crate::{categories::categories_carried, consent_record, policy, NodeError};
use kurzdraht_envelope::{
    ids, sign_receipt, sign_receipt_batch, verify_receipt, ExpectedReceipt, OpenedEnvelope,
};
use kurzdraht_ledger::{
    consent, Accepted, AuditEvent, AuditNote, ConsentEffect, ConsentQuery, InboxRecord, Ledger,
    StoredConsent,
};
use kurzdraht_proto::v1::{
    message_body::Body, ConsentRecord, ConsentWithdrawal, EnvelopeHeader, MessageBody, MessageKind,
    Receipt, SignedEnvelope, SignedReceipt,
};
use std::collections::HashMap;

fn no_receipt() -> NodeError {
    kurzdraht_ledger::LedgerError::Corrupt {
        what: "inbox record",
        reason: "no receipt".into(),
    }
    .into()
}

/// An envelope fetched again from the peer that delivered it, in a reconciliation this node
/// started: the message id it asked for, and the peer's copy of this node's receipt.
#[derive(Debug, Clone)]
pub struct Refetched {
    pub message_id: String,
    pub envelope: SignedEnvelope,
    pub receipt: Option<SignedReceipt>,
}

/// How a refetched envelope was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// Stored now.
    Stored,
    /// Held already (the same envelope).
    Held,
}

/// The answer to one envelope: its receipt, and whether it was stored by this call.
type Answer = Result<(SignedReceipt, Refetch), NodeError>;

/// What reception decided for one envelope of a batch.
#[allow(clippy::large_enum_variant)] // one per envelope of a batch, moved once
enum Decision {
    /// Store it; the record's receipt is filled in once the batch's receipts are signed.
    Accept {
        record: Box<InboxRecord>,
        effect: ConsentEffect,
        kind: MessageKind,
    },
    /// The same envelope is held already: answer with its original receipt.
    Duplicate(Box<InboxRecord>),
    /// The same envelope came earlier in this batch (at this index): answer as for that one.
    SameAs { index: usize, message_id: String },
    /// Accepted, and moved into the batch's transaction as item `item`.
    Queued { item: usize },
}

/// One envelope's [`Decision`], with what the audit of a refusal names: its kind and
/// consent id, once the envelope is opened (unspecified and empty before).
struct Decided {
    kind: MessageKind,
    consent_id: String,
    decision: Result<Decision, NodeError>,
}

/// A case message being admitted: what [`Reception::admit_case_message`] judges.
struct Case<'a> {
    kind: MessageKind,
    sender_role: Role,
    header: &'a EnvelopeHeader,
    body: &'a MessageBody,
    decided_at: i64,
}

/// What this node asked a peer for in a reconciliation (see [`Refetched`]).
struct Asked {
    message_id: String,
    receipt: Option<SignedReceipt>,
}

/// What the batch's earlier envelopes change, as the later ones must see it: a consent
/// notice early in a batch allows a referral later in the same batch, a withdrawal stops it.
#[derive(Default)]
struct BatchView {
    consents: HashMap<String, StoredConsent>,
    /// Message ids accepted earlier in this batch: envelope hash and index.
    ids: HashMap<String, ([u8; 32], usize)>,
}

impl BatchView {
    fn consent(&self, ledger: &Ledger, id: &str) -> Result<Option<StoredConsent>, NodeError> {
        match self.consents.get(id) {
            Some(held) => Ok(Some(held.clone())),
            None => Ok(ledger.consent(id)?),
        }
    }

    /// Applies the consent effect of an accepted envelope, as the ledger will.
    fn apply(
        &mut self,
        ledger: &Ledger,
        effect: &ConsentEffect,
        notice: &SignedEnvelope,
    ) -> Result<(), NodeError> {
        match effect {
            ConsentEffect::None => {}
            ConsentEffect::Record(consent) => {
                if self.consent(ledger, &consent.consent_id)?.is_none() {
                    self.consents.insert(
                        consent.consent_id.clone(),
                        StoredConsent::replicated(consent, Some(notice.clone())),
                    );
                }
                if !consent.supersedes.is_empty() {
                    if let Some(mut old) = self.consent(ledger, &consent.supersedes)? {
                        if old.supersede_by(consent) {
                            self.consents.insert(consent.supersedes.clone(), old);
                        }
                    }
                }
            }
            ConsentEffect::Withdraw(w) => {
                if let Some(mut held) = self.consent(ledger, &w.consent_id)? {
                    if held.withdraw(w, Some(notice.clone())) {
                        self.consents.insert(w.consent_id.clone(), held);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Envelopes received from peers: verified, decided, stored and receipted.
#[derive(Clone)]
pub struct Reception {
    shared: Shared,
}

impl Reception {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Handles one delivered envelope from the agency `tls_agency` (named by the peer's
    /// verified client certificate).
    pub async fn receive(
        &self,
        tls_agency: &str,
        envelope: SignedEnvelope,
    ) -> Result<SignedReceipt, NodeError> {
        self.receive_batch(tls_agency, vec![envelope])
            .await
            .pop()
            .unwrap_or_else(|| Err(NodeError::invalid("envelope", "is missing")))
    }

    /// Handles the envelopes of one delivered batch from `tls_agency`, in order, as if they
    /// had come one by one: each is verified and decided on its own (seeing the consent
    /// effects of the earlier ones), the accepted ones get receipts under one signature,
    /// are stored in one transaction and made durable by one flush. One answer per envelope.
    pub async fn receive_batch(
        &self,
        tls_agency: &str,
        envelopes: Vec<SignedEnvelope>,
    ) -> Vec<Result<SignedReceipt, NodeError>> {
        let items = envelopes.into_iter().map(|e| (e, None)).collect();
        self.receive_items(tls_agency, items)
            .await
            .into_iter()
            .map(|a| a.map(|(receipt, _)| receipt))
            .collect()
    }

    /// Receives envelopes this node fetched again from `peer` in a reconciliation it
    /// started (see the module doc), as one batch; one answer per envelope, in order.
    /// Refusals are audited as `reconciliation.refused`, what is stored as
    /// `reconciliation.received`.
    pub async fn receive_refetched(
        &self,
        peer: &str,
        items: Vec<Refetched>,
    ) -> Vec<Result<Refetch, NodeError>> {
        let items = items
            .into_iter()
            .map(|r| {
                let asked = Asked {
                    message_id: r.message_id,
                    receipt: r.receipt,
                };
                (r.envelope, Some(asked))
            })
            .collect();
        self.receive_items(peer, items)
            .await
            .into_iter()
            .map(|a| a.map(|(_, how)| how))
            .collect()
    }

    async fn receive_items(
        &self,
        tls_agency: &str,
        items: Vec<(SignedEnvelope, Option<Asked>)>,
    ) -> Vec<Answer> {
        let now = self.shared.now_ms();
        let started = std::time::Instant::now();
        let envelopes_in = items.len();
        let reconciling = items.iter().any(|(_, asked)| asked.is_some());
        let mut view = BatchView::default();
        let mut decisions = Vec::with_capacity(items.len());
        for (index, (envelope, asked)) in items.into_iter().enumerate() {
            let Decided {
                kind,
                consent_id,
                decision,
            } = self.decide(tls_agency, envelope, asked.as_ref(), now, index, &mut view);
            if let Err(e) = &decision {
                match &asked {
                    None => self.shared.audit_refusal(
                        AuditEvent::ReceptionRefused,
                        kind,
                        tls_agency,
                        &consent_id,
                        e,
                    ),
                    Some(asked) => self.audit_refetch_refusal(
                        &asked.message_id,
                        kind,
                        tls_agency,
                        &consent_id,
                        e,
                    ),
                }
            }
            decisions.push(decision);
        }
        let decided = started.elapsed();
        let event = match reconciling {
            true => AuditEvent::ReconciliationReceived,
            false => AuditEvent::Received,
        };
        let answers = self.store_batch(tls_agency, decisions, now, event).await;
        tracing::debug!(
            peer = tls_agency,
            envelopes = envelopes_in,
            decide_us = decided.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "batch received"
        );
        answers
    }

    /// Signs the receipts of the accepted envelopes, stores them in one transaction, flushes
    /// once and answers each envelope.
    async fn store_batch(
        &self,
        tls_agency: &str,
        decisions: Vec<Result<Decision, NodeError>>,
        now: i64,
        event: AuditEvent,
    ) -> Vec<Answer> {
        // Those received again with their original receipt keep it; the others get one now.
        let receipts: Vec<Receipt> = decisions
            .iter()
            .filter_map(|d| match d {
                Ok(Decision::Accept { record, .. }) if record.receipt.is_none() => Some(Receipt {
                    message_id: record.message_id.clone(),
                    envelope_sha256: record.envelope_sha256.clone(),
                    sender: tls_agency.to_string(),
                    receiver: self.shared.agency().to_string(),
                    received_at_ms: now,
                }),
                _ => None,
            })
            .collect();
        // One envelope: a receipt signed alone; more: one signature over the batch.
        let signed = match receipts.as_slice() {
            [one] => vec![sign_receipt(one, self.shared.key())],
            many => sign_receipt_batch(
                many,
                tls_agency,
                self.shared.agency(),
                now,
                self.shared.key(),
            ),
        };
        // The accepted records move, with their receipts, into the batch's transaction.
        let mut signed = signed.into_iter();
        let mut items = Vec::with_capacity(receipts.len());
        let mut kinds = Vec::with_capacity(receipts.len());
        let decisions: Vec<_> = decisions
            .into_iter()
            .map(|d| match d {
                Ok(Decision::Accept {
                    mut record,
                    effect,
                    kind,
                }) => {
                    if record.receipt.is_none() {
                        record.receipt = signed.next();
                    }
                    items.push((*record, effect));
                    kinds.push(kind);
                    Ok(Decision::Queued {
                        item: items.len() - 1,
                    })
                }
                other => other,
            })
            .collect();
        let stored = if items.is_empty() {
            Ok(Vec::new())
        } else {
            self.shared
                .ledger()
                .accept_deliveries_as(&items, event, now)
        };
        let mut stored = match stored {
            Ok(stored) => stored.into_iter(),
            Err(e) => {
                // Nothing of the batch was stored and no receipt left: the sender tries again.
                tracing::warn!(peer = tls_agency, error = %e, "batch not stored; the sender will retry");
                let reason = format!("the batch could not be stored ({}); deliver it again", e);
                return decisions
                    .into_iter()
                    .map(|d| match d {
                        Err(e) => Err(e),
                        Ok(_) => Err(NodeError::Aborted(reason.clone())),
                    })
                    .collect();
            }
        };
        let mut answers: Vec<Answer> = Vec::with_capacity(decisions.len());
        let mut needs_flush = false;
        let mut last_seq = None;
        for d in decisions {
            let answer = match d {
                Err(e) => Err(e),
                // Not left after the loop above.
                Ok(Decision::Accept { .. }) => Err(no_receipt()),
                Ok(Decision::Queued { item }) => match stored.next() {
                    Some(Accepted::Stored { seq }) => {
                        needs_flush = true;
                        last_seq = Some(seq);
                        self.shared.metrics().received();
                        let (record, _) = &items[item];
                        tracing::info!(message_id = %record.message_id, kind = ?kinds[item], sender = tls_agency, seq, audit = event.as_str(), "envelope received");
                        record
                            .receipt
                            .clone()
                            .map(|r| (r, Refetch::Stored))
                            .ok_or_else(no_receipt)
                    }
                    // Stored meanwhile by a concurrent delivery of the same envelope (noted
                    // as a duplicate in the batch's transaction).
                    Some(Accepted::Duplicate(held)) => {
                        needs_flush = true;
                        self.shared.metrics().duplicate();
                        held.receipt
                            .map(|r| (r, Refetch::Held))
                            .ok_or_else(no_receipt)
                    }
                    None => Err(no_receipt()),
                },
                Ok(Decision::Duplicate(held)) => {
                    needs_flush = true;
                    tracing::info!(message_id = %held.message_id, "duplicate answered with the original receipt");
                    held.receipt
                        .map(|r| (r, Refetch::Held))
                        .ok_or_else(no_receipt)
                }
                Ok(Decision::SameAs { index, message_id }) => match answers.get(index) {
                    Some(Ok((receipt, _))) => {
                        let receipt = receipt.clone();
                        self.note_duplicate(&message_id, now)
                            .map(|()| (receipt, Refetch::Held))
                    }
                    _ => Err(NodeError::Aborted(
                        "an earlier copy of this envelope in the batch was not stored".into(),
                    )),
                },
            };
            answers.push(answer);
        }
        // A receipt leaves only for what is on disk (a duplicate's first flush may still run).
        if needs_flush {
            if let Err(e) = self.shared.ledger().flush().await {
                tracing::error!(error = %e, "flush after reception failed");
                let e = NodeError::from(e);
                let reason = format!("the store could not be made durable ({})", e.reason_code());
                return answers
                    .into_iter()
                    .map(|a| a.and(Err(NodeError::Aborted(reason.clone()))))
                    .collect();
            }
        }
        if let Some(seq) = last_seq {
            self.shared.inbox_changed(seq);
        }
        answers
    }

    /// Everything reception checks about one envelope, in the fixed order; nothing stored.
    /// Returns the decision with what the audit of a refusal names (the kind and consent id,
    /// known once the envelope is opened).
    fn decide(
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

    /// A refetched envelope refused: audited with the id this node asked for.
    fn audit_refetch_refusal(
        &self,
        message_id: &str,
        kind: MessageKind,
        peer: &str,
        consent_id: &str,
        e: &NodeError,
    ) {
        self.shared.metrics().refused(e.reason_code());
        let note = AuditNote::new(AuditEvent::ReconciliationRefused)
            .message(message_id)
            .kind(kind as i32)
            .peer(peer)
            .consent(consent_id)
            .detail(e.reason_code());
        if let Err(err) = self.shared.ledger().audit(note, self.shared.now_ms()) {
            tracing::error!(error = %err, "could not audit a refusal");
        }
        tracing::info!(
            message_id,
            reason = e.reason_code(),
            peer,
            "refetched envelope refused"
        );
    }

    /// A redelivery of a held envelope, answered with its original receipt: counted; the
    /// first per message is audited (the ledger marks it), so that a peer repeating itself
    /// cannot grow the audit chain.
    fn note_duplicate(&self, message_id: &str, now: i64) -> Result<(), NodeError> {
        self.shared.metrics().duplicate();
        self.shared.ledger().note_duplicate(message_id, now)?;
        Ok(())
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
