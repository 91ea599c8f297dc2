//! The case index (tree `cases`): which messages belong to which case, and the cases by
//! their latest activity — for the console's Fälle. A case is a consent's chain of
//! supersession (named by its root, see `lanes.rs`): one young person, as one controller
//! recorded them. Holds ids and times only (no personal data, not sealed).
//!
//! Keys: `m` ‖ root ‖ 0 ‖ message id → direction (`s` sent, `r` received); `a` ‖ root →
//! latest activity (ms, u64 BE); `t` ‖ latest activity ‖ root → nothing (newest first by a
//! reverse scan). Written in the transaction that queues or receives the message. A store
//! written before the index existed gets it built once at open (`meta/cases_index`).

use super::{tx::Tx, u64_from, Ledger};
use crate::db::TxResult;
use crate::error::LedgerError;

const MEMBER: u8 = b'm';
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

impl Tx<'_> {
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

    /// The messages of the case whose root is `root`, in id order (UUIDv7: time order).
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
                if carries_case(s.kind) {
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
        }
        let received: Vec<(String, String, i64)> = self
            .inbox_iter()
            .filter_map(|r| match r {
                Ok(r) if r.notice.is_none() && carries_case(r.kind) => {
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
        self.meta.insert(BUILT, [1u8])?;
        if filed > 0 {
            tracing::info!(messages = filed, "case index built");
        }
        Ok(())
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
