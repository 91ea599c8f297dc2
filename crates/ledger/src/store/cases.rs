//! The indexes of cases and persons (tree `cases`), for the console's Fälle and the access
//! report: which messages belong to which case, the cases by their latest activity, a
//! person's consents and the refusals citing a consent. A case is a consent's chain of
//! supersession (named by its root, see `lanes.rs`): one young person, as one controller
//! recorded them. Holds ids, times and keyed tags only (no personal data, not sealed).
//!
//! Keys: `m` ‖ root ‖ 0 ‖ message id → direction (`s` sent, `r` received), for every message
//! citing a consent; `a` ‖ root → latest activity (ms, u64 BE); `t` ‖ latest activity ‖ root
//! → nothing (newest first by a reverse scan); `p` ‖ person tag ‖ consent id → nothing (the
//! tag: HMAC-SHA256 of `consent::person_of` under a key derived from the data key, so the
//! index reveals no name); `r` ‖ consent id ‖ 0 ‖ audit seq (u64 BE) → nothing, for every
//! refusal audited with a consent. Each written in the transaction that stores what it
//! indexes. A store written before the indexes existed gets them built once at open
//! (`meta/cases_index`); a rekeyed store builds its person tags again.

use super::{tx::Tx, u64_from, Ledger};
use crate::consent::person_of;
use crate::db::TxResult;
use crate::error::LedgerError;
use kurzdraht_proto::v1::{ConsentRecord, Subject};

const MEMBER: u8 = b'm';
const PERSON: u8 = b'p';
const REFUSAL: u8 = b'r';
const ACTIVITY: u8 = b'a';
const BY_TIME: u8 = b't';
/// In `meta`: the index covers every message of the store.
pub(super) const BUILT: &[u8] = b"cases_index";

/// Which way a message of a case went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Self::Sent => b's',
            Self::Received => b'r',
        }
    }
}

/// A case in the index: its root consent's id and its latest activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRef {
    pub root: String,
    pub latest_ms: i64,
}

fn member_prefix(root: &str) -> Vec<u8> {
    let mut k = vec![MEMBER];
    k.extend_from_slice(root.as_bytes());
    k.push(0);
    k
}

fn member_key(root: &str, message_id: &str) -> Vec<u8> {
    let mut k = member_prefix(root);
    k.extend_from_slice(message_id.as_bytes());
    k
}

fn activity_key(root: &str) -> Vec<u8> {
    let mut k = vec![ACTIVITY];
    k.extend_from_slice(root.as_bytes());
    k
}

fn time_key(latest_ms: i64, root: &str) -> Vec<u8> {
    let mut k = vec![BY_TIME];
    k.extend_from_slice(&(latest_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(root.as_bytes());
    k
}

fn person_prefix(tag: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![PERSON];
    k.extend_from_slice(tag);
    k
}

fn refusal_prefix(consent_id: &str) -> Vec<u8> {
    let mut k = vec![REFUSAL];
    k.extend_from_slice(consent_id.as_bytes());
    k.push(0);
    k
}

impl Tx<'_> {
    /// Files consent `consent` under its person (nothing without the data key).
    pub(super) fn index_person(&self, consent: &ConsentRecord) -> TxResult<()> {
        let Some(subject) = &consent.subject else {
            return Ok(());
        };
        let Some(tag) = self.at_rest.person_tag(&person_of(subject)) else {
            return Ok(());
        };
        let mut k = person_prefix(&tag);
        k.extend_from_slice(consent.consent_id.as_bytes());
        self.cases.insert(k, [])?;
        Ok(())
    }

    /// Files the refusal audited as `seq` under the consent it cites.
    pub(super) fn index_refusal(&self, consent_id: &str, seq: u64) -> TxResult<()> {
        let mut k = refusal_prefix(consent_id);
        k.extend_from_slice(&seq.to_be_bytes());
        self.cases.insert(k, [])?;
        Ok(())
    }

    /// Files message `message_id` (citing `consent_id`) under its case and moves the case's
    /// latest activity to `at_ms` if that is later. Nothing for a message citing no consent.
    pub(super) fn index_case(
        &self,
        consent_id: &str,
        message_id: &str,
        direction: Direction,
        at_ms: i64,
    ) -> TxResult<()> {
        if consent_id.is_empty() {
            return Ok(());
        }
        let root = self.root_of(consent_id)?;
        self.cases
            .insert(member_key(&root, message_id), [direction.byte()])?;
        let latest = match self.cases.get(activity_key(&root))? {
            Some(v) => Some(u64_from("case activity", &v)? as i64),
            None => None,
        };
        if latest.is_some_and(|l| l >= at_ms) {
            return Ok(());
        }
        if let Some(l) = latest {
            self.cases.remove(time_key(l, &root))?;
        }
        self.cases.insert(time_key(at_ms, &root), [])?;
        self.cases
            .insert(activity_key(&root), (at_ms.max(0) as u64).to_be_bytes())?;
        Ok(())
    }
}

impl Ledger {
    /// Up to `limit` cases, latest activity first, before `before` (a case of the previous
    /// page: its root and latest activity).
    pub fn recent_cases(
        &self,
        before: Option<&CaseRef>,
        limit: usize,
    ) -> Result<Vec<CaseRef>, LedgerError> {
        let entries = match before {
            Some(c) => self
                .cases
                .range_rev(vec![BY_TIME]..time_key(c.latest_ms, &c.root)),
            None => self.cases.range_rev(vec![BY_TIME]..vec![BY_TIME + 1]),
        };
        let mut out = Vec::new();
        for kv in entries.take(limit) {
            let (k, _) = kv?;
            let latest = u64_from("case time", k.get(1..).unwrap_or_default())? as i64;
            let root = String::from_utf8(k.get(9..).unwrap_or_default().to_vec())
                .map_err(|e| LedgerError::corrupt("case root", e))?;
            out.push(CaseRef {
                root,
                latest_ms: latest,
            });
        }
        Ok(out)
    }

    /// The messages of the case whose root is `root`, sent and received, of every kind (the
    /// consent's notices too), in id order (UUIDv7: time order).
    pub fn case_messages(&self, root: &str) -> Result<Vec<(String, Direction)>, LedgerError> {
        let prefix = member_prefix(root);
        let mut out = Vec::new();
        for kv in self.cases.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let id = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|e| LedgerError::corrupt("case member", e))?;
            let direction = match v.first() {
                Some(b's') => Direction::Sent,
                Some(b'r') => Direction::Received,
                _ => return Err(LedgerError::corrupt("case member", "unknown direction")),
            };
            out.push((id, direction));
        }
        Ok(out)
    }

    /// The consents held about the person `subject` (as [`crate::consent::same_person`]
    /// compares them), by the person index.
    pub fn consents_of_person(
        &self,
        subject: &Subject,
    ) -> Result<Vec<crate::records::StoredConsent>, LedgerError> {
        let Some(tag) = self.at_rest.person_tag(&person_of(subject)) else {
            return Err(LedgerError::NoDataKey);
        };
        let prefix = person_prefix(&tag);
        let mut out = Vec::new();
        for kv in self.cases.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let id = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|e| LedgerError::corrupt("person index", e))?;
            if let Some(c) = self.consent(&id)? {
                let same = c
                    .record
                    .as_ref()
                    .and_then(|r| r.subject.as_ref())
                    .is_some_and(|s| crate::consent::same_person(s, subject));
                if same {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// The refusals audited citing `consent_id`, in the chain's order.
    pub fn refusals_citing(
        &self,
        consent_id: &str,
    ) -> Result<Vec<crate::records::AuditEntry>, LedgerError> {
        let prefix = refusal_prefix(consent_id);
        let mut out = Vec::new();
        for kv in self.cases.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let seq = u64_from("refusal index", &k[prefix.len()..])?;
            let bytes = self
                .audit
                .get(seq.to_be_bytes())?
                .ok_or_else(|| LedgerError::corrupt("refusal index", "points at no entry"))?;
            out.push(super::decode("audit entry", &bytes)?);
        }
        Ok(out)
    }

    /// The root of the case a message citing `consent_id` belongs to.
    pub fn case_of(&self, consent_id: &str) -> Result<String, LedgerError> {
        self.tx(|t| t.root_of(consent_id))
    }

    /// Builds the index from every sent and received message, once, for a store written
    /// before it existed (idempotent: a crash during it only means it runs again).
    pub(super) fn build_case_index(&self) -> Result<(), LedgerError> {
        if self.meta.get(BUILT)?.is_some() {
            return Ok(());
        }
        let mut filed = 0u64;
        for kv in self.messages.iter() {
            let (_, v) = kv?;
            let record: crate::records::MessageRecord = super::decode("message record", &v)?;
            if let Some(s) = record.status {
                self.tx(|t| {
                    t.index_case(
                        &s.consent_id,
                        &s.message_id,
                        Direction::Sent,
                        s.submitted_at_ms,
                    )
                })?;
                filed += 1;
            }
        }
        let received: Vec<(String, String, i64)> = self
            .inbox_iter()
            .filter_map(|r| match r {
                Ok(r) if r.notice.is_none() => {
                    Some(Ok((r.consent_id, r.message_id, r.received_at_ms)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        for (consent_id, message_id, at) in received {
            self.tx(|t| t.index_case(&consent_id, &message_id, Direction::Received, at))?;
            filed += 1;
        }
        self.build_person_index()?;
        for kv in self.audit.iter() {
            let (_, v) = kv?;
            let e: crate::records::AuditEntry = super::decode("audit entry", &v)?;
            let refusal = crate::audit::AuditEvent::REFUSALS
                .iter()
                .any(|r| r.as_str() == e.event);
            if refusal && !e.consent_id.is_empty() {
                self.tx(|t| t.index_refusal(&e.consent_id, e.seq))?;
            }
        }
        self.meta.insert(BUILT, [1u8])?;
        if filed > 0 {
            tracing::info!(messages = filed, "case index built");
        }
        Ok(())
    }
}

impl Ledger {
    /// Files every held consent under its person (idempotent; after a rekey the tags are
    /// new: [`Ledger::rekey`] drops the old ones and the next open builds these).
    pub(super) fn build_person_index(&self) -> Result<(), LedgerError> {
        for held in self.consents_iter() {
            let held = held?;
            if let Some(record) = held.record {
                self.tx(|t| t.index_person(&record))?;
            }
        }
        Ok(())
    }

    /// The person index's keys (for a rekey, which makes them stale).
    pub(super) fn person_index_keys(&self) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.cases
            .scan_prefix([PERSON])
            .map(|kv| kv.map(|(k, _)| k))
            .collect()
    }
}

/// Whether a message of `kind` belongs to a case (consent notices and withdrawals are the
/// consent's own, not the case's messages).
pub fn carries_case(kind: i32) -> bool {
    use kurzdraht_proto::v1::MessageKind as K;
    !matches!(
        K::try_from(kind).unwrap_or(K::Unspecified),
        K::ConsentNotice | K::ConsentWithdrawal | K::Unspecified
    )
}
