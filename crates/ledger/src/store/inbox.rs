//! The inbox: storing delivered envelopes (with their receipts) in arrival order and
//! applying what they change — a replicated consent or withdrawal — in the same
//! transaction; duplicates; reading the inbox (by arrival, by id, all); and what IT
//! systems do with an item (first read, acknowledgement), audited.

use super::u64_from;
use super::{abort, supersedes_detail, Ledger, Tx, TxResult, INBOX_SEQ};
use crate::{
    audit::{AuditEvent, AuditNote},
    error::LedgerError,
    records::{InboxRecord, StoredConsent},
};
use kurzdraht_proto::v1::{ConsentRecord, ConsentWithdrawalRecord};

/// What a received envelope changes besides the inbox.
#[allow(clippy::large_enum_variant)] // built once per delivery; boxing buys nothing
#[derive(Debug, Clone)]
pub enum ConsentEffect {
    None,
    Record(ConsentRecord),
    Withdraw(ConsentWithdrawalRecord),
}

/// The outcome of [`Ledger::accept_delivery`].
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Newly stored with this arrival sequence number.
    Stored { seq: u64 },
    /// The same envelope was stored before; here is that record (with its original receipt).
    Duplicate(Box<InboxRecord>),
}

impl Tx<'_> {
    pub(super) fn next_inbox_seq(&self) -> TxResult<u64> {
        let seq = match self.meta.get(INBOX_SEQ)? {
            Some(v) => u64_from("inbox seq", &v)?,
            None => 0,
        } + 1;
        self.meta.insert(INBOX_SEQ, seq.to_be_bytes())?;
        Ok(seq)
    }
}

impl Tx<'_> {
    /// The body of [`Ledger::accept_delivery`], inside a transaction.
    pub(super) fn accept(
        &self,
        record: &InboxRecord,
        effect: &ConsentEffect,
        event: AuditEvent,
        now_ms: i64,
    ) -> TxResult<Accepted> {
        let t = self;
        let id = record.message_id.as_bytes();
        if let Some(existing) = t.get_sealed::<InboxRecord>(t.inbox, "inbox", id)? {
            if existing.envelope_sha256 != record.envelope_sha256 {
                return abort(LedgerError::MessageIdConflict {
                    message_id: record.message_id.clone(),
                });
            }
            t.note_duplicate(existing.clone(), now_ms)?;
            return Ok(Accepted::Duplicate(Box::new(existing)));
        }
        let seq = t.next_inbox_seq()?;
        let mut stored = record.clone();
        stored.seq = seq;
        t.put_sealed(t.inbox, "inbox", id, &stored)?;
        t.inbox_seq.insert(seq.to_be_bytes(), id)?;
        t.index_body(&stored)?;
        if stored.notice.is_none() {
            t.index_case(
                &stored.consent_id,
                &stored.message_id,
                super::cases::Direction::Received,
                stored.received_at_ms,
            )?;
        }
        t.append_audit(
            AuditNote::new(event)
                .message(&record.message_id)
                .consent(&record.consent_id)
                .peer(&record.sender)
                .kind(record.kind)
                .envelope(&record.envelope_sha256),
            now_ms,
        )?;
        // Decided before the person was erased here, stored after: the body goes at once,
        // as erasure would have taken it (the receipt still proves the transfer).
        if matches!(effect, ConsentEffect::None) && !record.consent_id.is_empty() {
            let cited = t.get_sealed::<StoredConsent>(
                t.consents,
                "consents",
                record.consent_id.as_bytes(),
            )?;
            if cited.is_some_and(|c| c.erased_at_ms > 0) {
                t.delete_body(
                    &record.consent_id,
                    &record.message_id,
                    AuditEvent::SubjectErased,
                    now_ms,
                )?;
            }
        }
        t.apply_effect(record, effect, now_ms)?;
        Ok(Accepted::Stored { seq })
    }

    /// What a newly stored envelope changes besides the inbox (inside [`Tx::accept`]): a
    /// replicated consent or withdrawal, audited.
    fn apply_effect(
        &self,
        record: &InboxRecord,
        effect: &ConsentEffect,
        now_ms: i64,
    ) -> TxResult<()> {
        let t = self;
        match effect {
            ConsentEffect::None => {}
            ConsentEffect::Record(consent) => {
                let cid = consent.consent_id.as_bytes();
                if let Some(held) = t.get_sealed::<StoredConsent>(t.consents, "consents", cid)? {
                    if held.record.as_ref() != Some(consent) {
                        return abort(LedgerError::ConsentExists {
                            consent_id: consent.consent_id.clone(),
                        });
                    }
                } else {
                    let mut stored = StoredConsent::replicated(consent, record.envelope.clone());
                    stored.chain_root = t.root_for_new(consent)?;
                    t.put_sealed(t.consents, "consents", cid, &stored)?;
                    t.index_person(consent)?;
                }
                // A replacement supersedes the earlier consent here too, if we hold it.
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
                    AuditNote::new(AuditEvent::ConsentReplicated)
                        .consent(&consent.consent_id)
                        .message(&record.message_id)
                        .peer(&record.sender)
                        .detail(supersedes_detail(consent)),
                    now_ms,
                )?;
            }
            ConsentEffect::Withdraw(w) => {
                let cid = w.consent_id.as_bytes();
                let Some(mut held) = t.get_sealed::<StoredConsent>(t.consents, "consents", cid)?
                else {
                    return abort(LedgerError::UnknownConsent {
                        consent_id: w.consent_id.clone(),
                    });
                };
                if held.withdraw(w, record.envelope.clone()) {
                    t.put_sealed(t.consents, "consents", cid, &held)?;
                }
                t.append_audit(
                    AuditNote::new(AuditEvent::WithdrawalReplicated)
                        .consent(&w.consent_id)
                        .message(&record.message_id)
                        .peer(&record.sender),
                    now_ms,
                )?;
            }
        }
        Ok(())
    }

    /// Audits the first redelivery of a held envelope (`inbox.duplicate`) and marks the
    /// record, so that later ones are not audited. Returns whether it audited.
    pub(super) fn note_duplicate(&self, mut held: InboxRecord, now_ms: i64) -> TxResult<bool> {
        if held.duplicate_audited {
            return Ok(false);
        }
        held.duplicate_audited = true;
        self.put_sealed(self.inbox, "inbox", held.message_id.as_bytes(), &held)?;
        self.append_audit(
            AuditNote::new(AuditEvent::ReceivedDuplicate)
                .message(&held.message_id)
                .peer(&held.sender)
                .kind(held.kind)
                .envelope(&held.envelope_sha256),
            now_ms,
        )?;
        Ok(true)
    }
}

impl Ledger {
    /// Stores a verified, allowed envelope (with the receipt that will answer it) and applies
    /// its consent effect, atomically; or finds that the same envelope is already here.
    pub fn accept_delivery(
        &self,
        record: &InboxRecord,
        effect: &ConsentEffect,
        now_ms: i64,
    ) -> Result<Accepted, LedgerError> {
        self.tx(|t| t.accept(record, effect, AuditEvent::Received, now_ms))
    }

    /// Stores the envelopes of one delivered batch, in order, each as
    /// [`Ledger::accept_delivery`] would, all in one transaction: either all of them are
    /// stored or (on an error) none.
    pub fn accept_deliveries(
        &self,
        items: &[(InboxRecord, ConsentEffect)],
        now_ms: i64,
    ) -> Result<Vec<Accepted>, LedgerError> {
        self.accept_deliveries_as(items, AuditEvent::Received, now_ms)
    }

    /// [`Ledger::accept_deliveries`], each stored envelope audited as `event` (envelopes
    /// received again in a reconciliation: `reconciliation.received`).
    pub fn accept_deliveries_as(
        &self,
        items: &[(InboxRecord, ConsentEffect)],
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<Vec<Accepted>, LedgerError> {
        self.tx(|t| {
            items
                .iter()
                .map(|(record, effect)| t.accept(record, effect, event, now_ms))
                .collect()
        })
    }

    pub fn inbox_record(&self, message_id: &str) -> Result<Option<InboxRecord>, LedgerError> {
        self.get_sealed(&self.inbox, "inbox", message_id.as_bytes())
    }

    /// Up to `limit` inbox records with sequence numbers after `after_seq`, in arrival order.
    pub fn inbox_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<InboxRecord>, LedgerError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for kv in self.inbox_seq.range(start..).take(limit) {
            let (_, id) = kv?;
            let bytes = self
                .inbox
                .get(&id)?
                .ok_or_else(|| LedgerError::corrupt("inbox index", "points at no record"))?;
            out.push(self.open_sealed("inbox", &id, &bytes)?);
        }
        Ok(out)
    }

    /// Up to `limit` inbox records with sequence numbers before `before_seq` (all, for
    /// `None`), newest first: a page of the console's Posteingang.
    pub fn inbox_before(
        &self,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<InboxRecord>, LedgerError> {
        let entries = match before_seq {
            Some(seq) => self.inbox_seq.range_rev(..seq.to_be_bytes()),
            None => self.inbox_seq.range_rev::<[u8; 8]>(..),
        };
        let mut out = Vec::new();
        for kv in entries.take(limit) {
            let (_, id) = kv?;
            let bytes = self
                .inbox
                .get(&id)?
                .ok_or_else(|| LedgerError::corrupt("inbox index", "points at no record"))?;
            out.push(self.open_sealed("inbox", &id, &bytes)?);
        }
        Ok(out)
    }

    /// The sequence number of the newest inbox record (0: none).
    pub fn newest_inbox_seq(&self) -> Result<u64, LedgerError> {
        match self.inbox_seq.range_rev::<[u8; 8]>(..).next() {
            Some(kv) => {
                let (k, _) = kv?;
                let bytes: [u8; 8] = k
                    .as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::corrupt("inbox index", "key is not 8 bytes"))?;
                Ok(u64::from_be_bytes(bytes))
            }
            None => Ok(0),
        }
    }

    /// Every inbox record (in message id order), one at a time, for reports; a full scan.
    pub fn inbox_iter(&self) -> impl Iterator<Item = Result<InboxRecord, LedgerError>> + '_ {
        self.inbox.iter().map(|kv| {
            let (k, v) = kv?;
            self.open_sealed("inbox", &k, &v)
        })
    }

    /// A redelivery of the held envelope `message_id` was answered with its original
    /// receipt: the first is audited (`inbox.duplicate`) and marked in the record, later ones
    /// are not (the caller counts them). Returns whether it audited.
    pub fn note_duplicate(&self, message_id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        self.tx(
            |t| match t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())? {
                Some(held) => t.note_duplicate(held, now_ms),
                None => abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                }),
            },
        )
    }

    /// The IT system `client` was given inbox item `message_id`: its first read by that
    /// client is audited (`inbox.read`) and marked in the record; a re-read is neither
    /// audited nor written. Returns whether it audited.
    pub fn note_read(
        &self,
        message_id: &str,
        client: &str,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.tx(|t| {
            let Some(mut record) =
                t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())?
            else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            if record.read_by.iter().any(|c| c == client) {
                return Ok(false);
            }
            record.read_by.push(client.to_string());
            t.put_sealed(t.inbox, "inbox", message_id.as_bytes(), &record)?;
            t.append_audit(
                AuditNote::new(AuditEvent::InboxRead)
                    .message(message_id)
                    .peer(&record.sender)
                    .kind(record.kind)
                    .detail(format!("client {client}")),
                now_ms,
            )?;
            Ok(true)
        })
    }

    /// Marks an inbox message as taken over, by `client` (an IT system, or
    /// `console:<account>`), who is named in the audit entry.
    pub fn acknowledge(
        &self,
        message_id: &str,
        client: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.tx(|t| {
            let Some(mut record) =
                t.get_sealed::<InboxRecord>(t.inbox, "inbox", message_id.as_bytes())?
            else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            if record.acknowledged {
                return Ok(());
            }
            record.acknowledged = true;
            t.put_sealed(t.inbox, "inbox", message_id.as_bytes(), &record)?;
            t.append_audit(
                AuditNote::new(AuditEvent::InboxAcknowledged)
                    .message(message_id)
                    .peer(&record.sender)
                    .kind(record.kind)
                    .detail(format!("client {client}")),
                now_ms,
            )
        })
    }
}
