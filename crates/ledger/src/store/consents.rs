//! Consents recorded at this agency: recording (and undoing a recording whose flush
//! failed), withdrawal, and reading them — one, a page, or all one at a time. Consents that
//! arrive from peers are stored by the inbox ([`Ledger::accept_delivery`]); erasure is in
//! `retention.rs`.

use super::{abort, supersedes_detail, KeyedRequest, Ledger, Once, Outgoing};
use crate::{
    audit::{AuditEvent, AuditNote},
    error::LedgerError,
    records::StoredConsent,
};
use kurzdraht_proto::v1::{ConsentRecord, ConsentWithdrawalRecord};

impl Ledger {
    /// Records a consent given at this agency and queues its notices, atomically. The first
    /// notice's signed envelope is kept with the record as proof of it. When the consent
    /// supersedes an earlier one held here, that one is marked superseded in the same
    /// transaction (it must be neither withdrawn nor superseded already).
    pub fn record_consent(
        &self,
        consent: &ConsentRecord,
        notices: &[Outgoing],
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.record_consent_once(consent, notices, now_ms, None)
            .map(|_| ())
    }

    /// [`Ledger::record_consent`] for a call with an idempotency key: unless the key
    /// answered an earlier call (then nothing changes and that answer is returned), the
    /// consent, its notices and the answer are stored in one transaction.
    pub fn record_consent_once(
        &self,
        consent: &ConsentRecord,
        notices: &[Outgoing],
        now_ms: i64,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<()>, LedgerError> {
        let seqs = self.outbox_seqs(notices.len())?;
        self.tx_once(request, |t| {
            let id = consent.consent_id.as_bytes();
            if t.consents.get(id)?.is_some() {
                return abort(LedgerError::ConsentExists {
                    consent_id: consent.consent_id.clone(),
                });
            }
            let stored = StoredConsent {
                record: Some(consent.clone()),
                notice: notices.first().map(|n| n.envelope.clone()),
                chain_root: t.root_for_new(consent)?,
                ..Default::default()
            };
            if !consent.supersedes.is_empty() {
                let old_id = consent.supersedes.as_bytes();
                let Some(mut old) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                else {
                    return abort(LedgerError::UnknownConsent {
                        consent_id: consent.supersedes.clone(),
                    });
                };
                if old.withdrawal.is_some() {
                    return abort(LedgerError::AlreadyWithdrawn {
                        consent_id: consent.supersedes.clone(),
                    });
                }
                if !old.superseded_by.is_empty() {
                    return abort(LedgerError::AlreadySuperseded {
                        consent_id: consent.supersedes.clone(),
                    });
                }
                old.superseded_by = consent.consent_id.clone();
                old.superseded_at_ms = consent.recorded_at_ms;
                t.put_sealed(t.consents, "consents", old_id, &old)?;
            }
            t.put_sealed(t.consents, "consents", id, &stored)?;
            t.index_person(consent)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentRecorded)
                    .consent(&consent.consent_id)
                    .detail(supersedes_detail(consent)),
                now_ms,
            )?;
            for (n, seq) in notices.iter().zip(&seqs) {
                t.enqueue(n, *seq)?;
            }
            Ok(())
        })
    }

    /// Undoes [`Ledger::record_consent`] whose flush failed (the caller was told nothing
    /// was recorded): the record goes, the consent it replaced is in force again. Its
    /// queued notices are taken out by the caller ([`Ledger::finish_all`]). Audited.
    pub fn unrecord_consent(&self, consent_id: &str, now_ms: i64) -> Result<(), LedgerError> {
        self.tx(|t| {
            let id = consent_id.as_bytes();
            let Some(held) = t.get_sealed::<StoredConsent>(t.consents, "consents", id)? else {
                return Ok(());
            };
            let supersedes = held.record.map(|r| r.supersedes).unwrap_or_default();
            if !supersedes.is_empty() {
                let old_id = supersedes.as_bytes();
                if let Some(mut old) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", old_id)?
                {
                    if old.superseded_by == consent_id {
                        old.superseded_by.clear();
                        old.superseded_at_ms = 0;
                        t.put_sealed(t.consents, "consents", old_id, &old)?;
                    }
                }
            }
            t.consents.remove(id)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentUnrecorded).consent(consent_id),
                now_ms,
            )
        })
    }

    /// Records a withdrawal of a consent held here and queues its notices, atomically.
    pub fn record_withdrawal(
        &self,
        withdrawal: &ConsentWithdrawalRecord,
        notices: &[Outgoing],
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.record_withdrawal_once(withdrawal, notices, now_ms, None)
            .map(|_| ())
    }

    /// [`Ledger::record_withdrawal`] for a call with an idempotency key (see
    /// [`Ledger::record_consent_once`]).
    pub fn record_withdrawal_once(
        &self,
        withdrawal: &ConsentWithdrawalRecord,
        notices: &[Outgoing],
        now_ms: i64,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<()>, LedgerError> {
        let seqs = self.outbox_seqs(notices.len())?;
        self.tx_once(request, |t| {
            let id = withdrawal.consent_id.as_bytes();
            let Some(mut stored) = t.get_sealed::<StoredConsent>(t.consents, "consents", id)?
            else {
                return abort(LedgerError::UnknownConsent {
                    consent_id: withdrawal.consent_id.clone(),
                });
            };
            if stored.withdrawal.is_some() {
                return abort(LedgerError::AlreadyWithdrawn {
                    consent_id: withdrawal.consent_id.clone(),
                });
            }
            stored.withdrawal = Some(withdrawal.clone());
            stored.withdrawal_notice = notices.first().map(|n| n.envelope.clone());
            t.put_sealed(t.consents, "consents", id, &stored)?;
            t.append_audit(
                AuditNote::new(AuditEvent::ConsentWithdrawn).consent(&withdrawal.consent_id),
                now_ms,
            )?;
            for (n, seq) in notices.iter().zip(&seqs) {
                t.enqueue(n, *seq)?;
            }
            Ok(())
        })
    }

    pub fn consent(&self, consent_id: &str) -> Result<Option<StoredConsent>, LedgerError> {
        self.get_sealed(&self.consents, "consents", consent_id.as_bytes())
    }

    /// Every consent held here, oldest first (consent ids are UUIDv7), one at a time: a
    /// node may hold millions, so nothing collects them all.
    pub fn consents_iter(&self) -> impl Iterator<Item = Result<StoredConsent, LedgerError>> + '_ {
        self.scan_starts();
        self.consents.iter().map(|kv| {
            let (k, v) = kv?;
            self.open_sealed("consents", &k, &v)
        })
    }

    /// Up to `limit` consents with ids after `after` (all from the first when empty), in id
    /// order, each with its id: one page of a listing.
    pub fn consents_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, StoredConsent)>, LedgerError> {
        let mut from = after.as_bytes().to_vec();
        if !from.is_empty() {
            from.push(0); // the smallest key after `after`
        }
        self.consents
            .range(from..)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let id = String::from_utf8(k.to_vec())
                    .map_err(|_| LedgerError::corrupt("consent key", "not UTF-8"))?;
                Ok((id, self.open_sealed("consents", &k, &v)?))
            })
            .collect()
    }

    /// Up to `limit` consents with ids before `before` (from the newest when empty), newest
    /// first (consent ids are UUIDv7), each with its id: one page of a newest-first listing.
    pub fn consents_before(
        &self,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, StoredConsent)>, LedgerError> {
        let entries = match before.is_empty() {
            true => self.consents.range_rev::<&[u8]>(..),
            false => self.consents.range_rev(..before.as_bytes()),
        };
        entries
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                let id = String::from_utf8(k.to_vec())
                    .map_err(|_| LedgerError::corrupt("consent key", "not UTF-8"))?;
                Ok((id, self.open_sealed("consents", &k, &v)?))
            })
            .collect()
    }
}
