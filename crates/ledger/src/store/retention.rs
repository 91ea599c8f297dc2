//! Retention and erasure. Erasure ([`Ledger::erase_consents`]) takes the person out of
//! their consents at once.
//!
//! The retention index: which cases are closed, which are due for the retention sweep, and
//! which received messages still hold a body — so that the sweep and erasure touch only
//! what they delete and never scan (or decode) the whole store.
//!
//! All three live in one tree, `retention`, under one-byte key prefixes:
//!
//! | key                                          | value           | kept                 |
//! |----------------------------------------------|-----------------|----------------------|
//! | `c` consent id                               | closed at (ms)  | for good             |
//! | `d` closed at (u64 BE) consent id            | empty           | until swept          |
//! | `b` consent id `0x00` message id             | empty           | until body deleted   |
//!
//! A message that arrives under a case already closed here puts its case back on the `d`
//! list, so the next sweep deletes its body too. The index holds ids and times, never
//! personal data. Stores written before the index existed get it built once at open
//! ([`Ledger::build_retention_index`]).

use super::{abort, Ledger, Tx, TxResult};
use crate::{
    audit::{AuditEvent, AuditNote},
    db::{Batch, Value},
    error::LedgerError,
    records::{InboxRecord, StoredConsent},
};
use std::collections::BTreeSet;

const CLOSED: u8 = b'c';
const DUE: u8 = b'd';
const BODY: u8 = b'b';

fn closed_key(consent_id: &str) -> Vec<u8> {
    let mut key = vec![CLOSED];
    key.extend_from_slice(consent_id.as_bytes());
    key
}

fn due_key(closed_at_ms: i64, consent_id: &str) -> Vec<u8> {
    let mut key = vec![DUE];
    key.extend_from_slice(&(closed_at_ms.max(0) as u64).to_be_bytes());
    key.extend_from_slice(consent_id.as_bytes());
    key
}

fn body_prefix(consent_id: &str) -> Vec<u8> {
    let mut key = vec![BODY];
    key.extend_from_slice(consent_id.as_bytes());
    key.push(0);
    key
}

fn body_key(consent_id: &str, message_id: &str) -> Vec<u8> {
    let mut key = body_prefix(consent_id);
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// Whether a stored inbox record has a body the retention rules apply to: a received
/// message (or consent notice) under a consent, not yet deleted. Delivery notices are this
/// node's own and cite no one's data.
fn holds_body(record: &InboxRecord) -> bool {
    record.notice.is_none() && !record.consent_id.is_empty() && record.body_erased_at_ms == 0
}

/// One due case read from the index.
struct DueCase {
    key: Value,
    /// The entry's value when read: empty at closing, the id of the latest message that
    /// arrived under the closed case after that.
    stamp: Value,
    consent_id: String,
}

/// What one [`Ledger::sweep_closed_cases`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Cases taken off the due list.
    pub cases: usize,
    /// Bodies deleted.
    pub bodies: u32,
}

impl Tx<'_> {
    /// Indexes a newly stored inbox record (inside [`Tx::accept`]).
    pub(super) fn index_body(&self, record: &InboxRecord) -> TxResult<()> {
        if !holds_body(record) {
            return Ok(());
        }
        let t = self;
        t.retention
            .insert(body_key(&record.consent_id, &record.message_id), [])?;
        if let Some(closed) = t.retention.get(closed_key(&record.consent_id))? {
            let at = super::u64_from("case closed at", &closed)?;
            t.retention.insert(
                due_key(at as i64, &record.consent_id),
                record.message_id.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Deletes the body of one inbox message and audits it as `event`; false when it had
    /// none left.
    pub(super) fn delete_body(
        &self,
        consent_id: &str,
        message_id: &str,
        event: AuditEvent,
        now_ms: i64,
    ) -> TxResult<bool> {
        let t = self;
        t.retention.remove(body_key(consent_id, message_id))?;
        let id = message_id.as_bytes();
        let Some(mut r) = t.get_sealed::<InboxRecord>(t.inbox, "inbox", id)? else {
            return Ok(false);
        };
        if r.body_erased_at_ms > 0 {
            return Ok(false);
        }
        if let Some(env) = r.envelope.as_mut() {
            env.payload.clear();
        }
        r.body_erased_at_ms = now_ms;
        t.put_sealed(t.inbox, "inbox", id, &r)?;
        t.append_audit(
            AuditNote::new(event)
                .message(&r.message_id)
                .consent(&r.consent_id)
                .peer(&r.sender)
                .kind(r.kind)
                .envelope(&r.envelope_sha256),
            now_ms,
        )?;
        Ok(true)
    }
}

impl Ledger {
    /// Erases the person from these consents: the record keeps no subject or guardian, the
    /// notice keeps only its signed header (which still proves that the recording agency
    /// issued this consent). Each erasure is audited.
    pub fn erase_consents(
        &self,
        consent_ids: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        for cid in consent_ids {
            self.tx(|t| {
                let Some(mut held) =
                    t.get_sealed::<StoredConsent>(t.consents, "consents", cid.as_bytes())?
                else {
                    return Ok(());
                };
                if let Some(r) = held.record.as_mut() {
                    r.subject = None;
                    r.guardian_name.clear();
                }
                if let Some(w) = held.withdrawal.as_mut() {
                    w.manner.clear(); // free text, which may name the person
                }
                if let Some(n) = held.notice.as_mut() {
                    n.payload.clear();
                }
                held.erased_at_ms = now_ms;
                t.put_sealed(t.consents, "consents", cid.as_bytes(), &held)?;
                t.append_audit(
                    AuditNote::new(AuditEvent::SubjectErased).consent(cid),
                    now_ms,
                )
            })?;
        }
        Ok(())
    }

    /// Closes the case of a consent at this node; closing again keeps the first time.
    /// Returns when it was closed.
    pub fn close_case(&self, consent_id: &str, now_ms: i64) -> Result<i64, LedgerError> {
        self.tx(|t| {
            let id = consent_id.as_bytes();
            let Some(mut held) = t.get_sealed::<StoredConsent>(t.consents, "consents", id)? else {
                return abort(LedgerError::UnknownConsent {
                    consent_id: consent_id.to_string(),
                });
            };
            if held.case_closed_at_ms > 0 {
                return Ok(held.case_closed_at_ms);
            }
            held.case_closed_at_ms = now_ms;
            t.put_sealed(t.consents, "consents", id, &held)?;
            t.retention
                .insert(closed_key(consent_id), (now_ms.max(0) as u64).to_be_bytes())?;
            t.retention.insert(due_key(now_ms, consent_id), [])?;
            t.append_audit(
                AuditNote::new(AuditEvent::CaseClosed).consent(consent_id),
                now_ms,
            )?;
            Ok(now_ms)
        })
    }

    /// Up to `limit` cases on the due list closed at or before `closed_before_ms`, oldest
    /// first.
    fn due_cases(&self, closed_before_ms: i64, limit: usize) -> Result<Vec<DueCase>, LedgerError> {
        let mut due = Vec::new();
        for kv in self.retention.scan_prefix([DUE]).take(limit) {
            let (key, stamp) = kv?;
            let closed_at = super::u64_from("retention due key", key.get(1..).unwrap_or_default())?;
            if closed_at > closed_before_ms.max(0) as u64 {
                break;
            }
            let consent_id = String::from_utf8(key.get(9..).unwrap_or_default().to_vec())
                .map_err(|_| LedgerError::corrupt("retention due key", "consent id not UTF-8"))?;
            due.push(DueCase {
                key,
                stamp,
                consent_id,
            });
        }
        Ok(due)
    }

    /// The ids of the received messages under `consent_id` whose body is still held.
    fn bodies_held(&self, consent_id: &str) -> Result<Vec<String>, LedgerError> {
        let prefix = body_prefix(consent_id);
        self.retention
            .scan_prefix(&prefix)
            .map(|kv| {
                let (key, _) = kv?;
                String::from_utf8(key[prefix.len()..].to_vec())
                    .map_err(|_| LedgerError::corrupt("retention body key", "message id not UTF-8"))
            })
            .collect()
    }

    /// One step of the retention sweep: takes up to `limit` cases closed at or before
    /// `closed_before_ms` off the due list and deletes the bodies of the messages received
    /// under them (each deletion audited as `retention.body-deleted`). Call again until it
    /// sweeps fewer than `limit` cases; flush after.
    pub fn sweep_closed_cases(
        &self,
        closed_before_ms: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<Swept, LedgerError> {
        let mut swept = Swept::default();
        for case in self.due_cases(closed_before_ms, limit)? {
            swept.bodies +=
                self.delete_bodies_of(&case.consent_id, AuditEvent::BodyDeleted, now_ms)?;
            // Off the list only if no message arrived under the case since it was read: an
            // arrival rewrites the entry's value (with its message id), and then the entry
            // stays for the next sweep.
            let _unchanged_or_kept = {
                let _writing = self.write_guard();
                self.retention
                    .compare_and_swap(&case.key, Some(case.stamp.as_slice()), None)?
            };
            swept.cases += 1;
        }
        Ok(swept)
    }

    /// Deletes the bodies of the received messages under one consent; returns how many.
    fn delete_bodies_of(
        &self,
        consent_id: &str,
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<u32, LedgerError> {
        let mut deleted = 0;
        for message_id in self.bodies_held(consent_id)? {
            let done = self.tx(|t| t.delete_body(consent_id, &message_id, event, now_ms))?;
            deleted += u32::from(done);
        }
        Ok(deleted)
    }

    /// Deletes the bodies (envelope payloads) of the inbox messages that cite one of
    /// `consent_ids`, keeping id, signed header, signature, hash and receipt; each deletion is
    /// audited as `event`. Returns how many bodies were deleted.
    pub fn delete_bodies(
        &self,
        consent_ids: &BTreeSet<String>,
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<u32, LedgerError> {
        let mut deleted = 0;
        for cid in consent_ids {
            deleted += self.delete_bodies_of(cid, event, now_ms)?;
        }
        Ok(deleted)
    }

    /// Builds the retention index of a store written before it existed (schema 1), once:
    /// one pass over consents and inbox, in batches. Idempotent, so a crash during the
    /// build only means it runs again at the next open.
    pub(super) fn build_retention_index(&self) -> Result<(), LedgerError> {
        let started = std::time::Instant::now();
        let mut batch = Batch::default();
        let mut pending = 0usize;
        let mut cases = 0usize;
        let mut bodies = 0usize;
        for held in self.consents_iter() {
            let held = held?;
            let Some(record) = held.record.as_ref() else {
                continue;
            };
            if held.case_closed_at_ms > 0 {
                let at = held.case_closed_at_ms;
                batch.insert(closed_key(&record.consent_id), (at as u64).to_be_bytes());
                batch.insert(due_key(at, &record.consent_id), []);
                cases += 1;
                pending += 2;
            }
            if pending >= 10_000 {
                self.retention.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        for record in self.inbox_iter() {
            let record = record?;
            if holds_body(&record) {
                batch.insert(body_key(&record.consent_id, &record.message_id), []);
                bodies += 1;
                pending += 1;
            }
            if pending >= 10_000 {
                self.retention.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.retention.apply_batch(batch)?;
        tracing::info!(
            closed_cases = cases,
            bodies,
            ms = started.elapsed().as_millis() as u64,
            "retention index built for a store written by an earlier version"
        );
        Ok(())
    }
}
