//! What this node sent, learned back from the peers that received it: the peer's side lists
//! the inbox records a caller sent ([`Ledger::received_from`]); the restored sender records
//! again what one of its own envelopes proves ([`Ledger::restore_sent`]): the message's
//! status (DELIVERED, with the peer's receipt), a consent it had recorded (from its notice)
//! and a withdrawal it had recorded (from the withdrawal's notice). Each in one transaction,
//! audited (`reconciliation.*`, ids only), and idempotent: what is held already is left as
//! it is.

use super::{abort, Ledger, Tx, TxResult};
use crate::{
    audit::{AuditEvent, AuditNote},
    error::LedgerError,
    records::{InboxRecord, MessageRecord, StoredConsent},
    store::Outgoing,
};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryState, MessageStatus, SignedEnvelope,
};
use prost::Message;

/// One page of [`Ledger::received_from`].
#[derive(Debug, Default)]
pub struct ReceivedPage {
    pub records: Vec<InboxRecord>,
    /// The arrival sequence number of the last inbox record looked at, if more may follow.
    pub next_after: Option<u64>,
}

/// A verified envelope this node sent, as a peer holds it, and what it proves.
#[derive(Debug, Clone)]
pub struct SentEnvelope {
    /// The message's status as it is to be held again (DELIVERED, the peer's receipt).
    pub status: MessageStatus,
    pub envelope_sha256: Vec<u8>,
    pub effect: SentEffect,
}

/// What a sent envelope recorded at this node when it was sent.
#[derive(Debug, Clone)]
pub enum SentEffect {
    /// A case message: nothing beyond its status.
    None,
    /// A consent notice: the consent record it carries.
    Consent(Box<ConsentRecord>, SignedEnvelope),
    /// A withdrawal notice: the withdrawal it carries.
    Withdrawal(ConsentWithdrawalRecord, SignedEnvelope),
}

/// What [`Ledger::restore_sent`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SentRestored {
    pub message: bool,
    pub consent: bool,
    pub withdrawal: bool,
    /// A withdrawal of a consent not held here (its notice went to another peer only, or
    /// was never answered): nothing to withdraw.
    pub unknown_consent: bool,
}

impl Ledger {
    /// Inbox records sent by `sender`, received at or after `since_ms`, with arrival
    /// numbers after `after_seq`, in arrival order: at most `limit` of them, about
    /// `max_bytes` of envelopes (at least one) and `scan_max` records looked at.
    pub fn received_from(
        &self,
        sender: &str,
        since_ms: i64,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
        scan_max: usize,
    ) -> Result<ReceivedPage, LedgerError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut page = ReceivedPage::default();
        let mut bytes = 0usize;
        let mut last = None;
        for (scanned, kv) in self.inbox_seq.range(start..).enumerate() {
            if scanned == scan_max || page.records.len() == limit {
                page.next_after = last;
                return Ok(page);
            }
            let (key, id) = kv?;
            let seq = u64::from_be_bytes(
                key.as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::corrupt("inbox index", "key not 8 bytes"))?,
            );
            let bytes_of = self
                .inbox
                .get(&id)?
                .ok_or_else(|| LedgerError::corrupt("inbox index", "points at no record"))?;
            let record: InboxRecord = self.open_sealed("inbox", &id, &bytes_of)?;
            if record.sender == sender && record.received_at_ms >= since_ms {
                let size = record.envelope.as_ref().map_or(0, |e| e.encoded_len());
                if !page.records.is_empty() && bytes + size > max_bytes {
                    page.next_after = last;
                    return Ok(page);
                }
                bytes += size;
                page.records.push(record);
            }
            last = Some(seq);
        }
        Ok(page)
    }

    /// Records again what `sent` proves, leaving alone what is held already; audits each
    /// change as learned from `peer`. When it records a withdrawal again, `notices` (of that
    /// withdrawal, to the consent's other recipients) are queued in the same transaction;
    /// else they are dropped.
    pub fn restore_sent(
        &self,
        peer: &str,
        sent: &SentEnvelope,
        notices: &[Outgoing],
        now_ms: i64,
    ) -> Result<SentRestored, LedgerError> {
        let seqs = self.outbox_seqs(notices.len())?;
        self.tx(|t| {
            let done = t.restore_sent(peer, sent, now_ms)?;
            if done.withdrawal {
                for (n, seq) in notices.iter().zip(&seqs) {
                    t.enqueue(n, *seq)?;
                }
            }
            Ok(done)
        })
    }
}

impl Tx<'_> {
    fn restore_sent(&self, peer: &str, sent: &SentEnvelope, now_ms: i64) -> TxResult<SentRestored> {
        let t = self;
        let mut done = SentRestored::default();
        let id = sent.status.message_id.as_bytes();
        // Effects first: a consent's notice before any message under it is held again.
        match &sent.effect {
            SentEffect::None => {}
            SentEffect::Consent(consent, notice) => {
                let cid = consent.consent_id.as_bytes();
                match t.get_sealed::<StoredConsent>(t.consents, "consents", cid)? {
                    Some(held) if held.record.as_ref() == Some(consent) => {}
                    Some(_) => {
                        return abort(LedgerError::ConsentExists {
                            consent_id: consent.consent_id.clone(),
                        })
                    }
                    None => {
                        let mut stored = StoredConsent::replicated(consent, Some(notice.clone()));
                        stored.chain_root = t.root_for_new(consent)?;
                        t.put_sealed(t.consents, "consents", cid, &stored)?;
                        if !consent.supersedes.is_empty() {
                            let old_id = consent.supersedes.as_bytes();
                            if let Some(mut old) =
                                t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                            {
                                if old.supersede_by(consent) {
                                    t.put_sealed(t.consents, "consents", old_id, &old)?;
                                }
                            }
                        }
                        t.append_audit(
                            AuditNote::new(AuditEvent::ReconciliationConsent)
                                .consent(&consent.consent_id)
                                .message(&sent.status.message_id)
                                .peer(peer),
                            now_ms,
                        )?;
                        done.consent = true;
                    }
                }
            }
            SentEffect::Withdrawal(w, notice) => {
                let cid = w.consent_id.as_bytes();
                match t.get_sealed::<StoredConsent>(t.consents, "consents", cid)? {
                    None => done.unknown_consent = true,
                    Some(mut held) => {
                        if held.withdraw(w, Some(notice.clone())) {
                            t.put_sealed(t.consents, "consents", cid, &held)?;
                            t.append_audit(
                                AuditNote::new(AuditEvent::ReconciliationWithdrawal)
                                    .consent(&w.consent_id)
                                    .message(&sent.status.message_id)
                                    .peer(peer),
                                now_ms,
                            )?;
                            done.withdrawal = true;
                        }
                    }
                }
            }
        }
        if t.messages.get(id)?.is_none() {
            let record = MessageRecord {
                status: Some(MessageStatus {
                    state: DeliveryState::Delivered as i32,
                    ..sent.status.clone()
                }),
                envelope_sha256: sent.envelope_sha256.clone(),
                ..Default::default()
            };
            t.messages.insert(id, record.encode_to_vec())?;
            t.index_case(
                &sent.status.consent_id,
                &sent.status.message_id,
                super::cases::Direction::Sent,
                sent.status.submitted_at_ms,
            )?;
            t.append_audit(
                AuditNote::new(AuditEvent::ReconciliationSent)
                    .message(&sent.status.message_id)
                    .consent(&sent.status.consent_id)
                    .peer(peer)
                    .kind(sent.status.kind)
                    .envelope(&sent.envelope_sha256),
                now_ms,
            )?;
            done.message = true;
        }
        Ok(done)
    }
}
