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

mod decide;

/// The batch's accepted records with their receipts, moved out of their decisions into the
/// batch's one transaction (`items`), and the kind of each (for the log).
struct Staged {
    items: Vec<(InboxRecord, ConsentEffect)>,
    kinds: Vec<MessageKind>,
}

/// A stored batch's answers, in order, and what making them durable needs.
struct Answered {
    answers: Vec<Answer>,
    needs_flush: bool,
    last_seq: Option<u64>,
}

/// Gives each accepted record without a receipt the next of `signed` (in order) and moves it
/// into [`Staged`]; its decision becomes [`Decision::Queued`] with its index there.
fn stage(
    decisions: Vec<Result<Decision, NodeError>>,
    signed: Vec<SignedReceipt>,
) -> (Vec<Result<Decision, NodeError>>, Staged) {
    let mut signed = signed.into_iter();
    let mut staged = Staged {
        items: Vec::with_capacity(decisions.len()),
        kinds: Vec::with_capacity(decisions.len()),
    };
    let decisions = decisions
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
                staged.items.push((*record, effect));
                staged.kinds.push(kind);
                Ok(Decision::Queued {
                    item: staged.items.len() - 1,
                })
            }
            other => other,
        })
        .collect();
    (decisions, staged)
}

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
        let signed = self.sign_new_receipts(tls_agency, &decisions, now);
        let (decisions, staged) = stage(decisions, signed);
        let stored = if staged.items.is_empty() {
            Ok(Vec::new())
        } else {
            self.shared
                .ledger()
                .accept_deliveries_as(&staged.items, event, now)
        };
        let stored = match stored {
            Ok(stored) => stored,
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
        let answered = self.answer_each(tls_agency, decisions, stored, &staged, now, event);
        self.make_durable(answered).await
    }

    /// The receipts of the accepted envelopes that hold none yet (those received again with
    /// their original receipt keep it), in order: one envelope's receipt signed alone, more
    /// under one signature over the batch.
    fn sign_new_receipts(
        &self,
        tls_agency: &str,
        decisions: &[Result<Decision, NodeError>],
        now: i64,
    ) -> Vec<SignedReceipt> {
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
        match receipts.as_slice() {
            [one] => vec![sign_receipt(one, self.shared.key())],
            many => sign_receipt_batch(
                many,
                tls_agency,
                self.shared.agency(),
                now,
                self.shared.key(),
            ),
        }
    }

    /// Answers each envelope of a stored batch in order: its receipt, or why not. Notes
    /// whether anything needs the flush and the last inbox sequence number stored.
    fn answer_each(
        &self,
        tls_agency: &str,
        decisions: Vec<Result<Decision, NodeError>>,
        stored: Vec<Accepted>,
        staged: &Staged,
        now: i64,
        event: AuditEvent,
    ) -> Answered {
        let mut stored = stored.into_iter();
        let mut out = Answered {
            answers: Vec::with_capacity(decisions.len()),
            needs_flush: false,
            last_seq: None,
        };
        for d in decisions {
            let answer = match d {
                Err(e) => Err(e),
                // Not left after staging.
                Ok(Decision::Accept { .. }) => Err(no_receipt()),
                Ok(Decision::Queued { item }) => match stored.next() {
                    Some(Accepted::Stored { seq }) => {
                        out.needs_flush = true;
                        out.last_seq = Some(seq);
                        self.shared.metrics().received();
                        let (record, _) = &staged.items[item];
                        tracing::info!(message_id = %record.message_id, kind = ?staged.kinds[item], sender = tls_agency, seq, audit = event.as_str(), "envelope received");
                        record
                            .receipt
                            .clone()
                            .map(|r| (r, Refetch::Stored))
                            .ok_or_else(no_receipt)
                    }
                    // Stored meanwhile by a concurrent delivery of the same envelope (noted
                    // as a duplicate in the batch's transaction).
                    Some(Accepted::Duplicate(held)) => {
                        out.needs_flush = true;
                        self.shared.metrics().duplicate();
                        held.receipt
                            .map(|r| (r, Refetch::Held))
                            .ok_or_else(no_receipt)
                    }
                    None => Err(no_receipt()),
                },
                Ok(Decision::Duplicate(held)) => {
                    out.needs_flush = true;
                    tracing::info!(message_id = %held.message_id, "duplicate answered with the original receipt");
                    held.receipt
                        .map(|r| (r, Refetch::Held))
                        .ok_or_else(no_receipt)
                }
                Ok(Decision::SameAs { index, message_id }) => match out.answers.get(index) {
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
            out.answers.push(answer);
        }
        out
    }

    /// A receipt leaves only for what is on disk (a duplicate's first flush may still run):
    /// flushes once, then tells the inbox's readers.
    async fn make_durable(&self, answered: Answered) -> Vec<Answer> {
        if answered.needs_flush {
            if let Err(e) = self.shared.ledger().flush().await {
                tracing::error!(error = %e, "flush after reception failed");
                let e = NodeError::from(e);
                let reason = format!("the store could not be made durable ({})", e.reason_code());
                return answered
                    .answers
                    .into_iter()
                    .map(|a| a.and(Err(NodeError::Aborted(reason.clone()))))
                    .collect();
            }
        }
        if let Some(seq) = answered.last_seq {
            self.shared.inbox_changed(seq);
        }
        answered.answers
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
}
