//! The audit chain as the store keeps it: appending an entry inside a transaction (linked
//! to the one before by its hash, the head in `meta`), a single entry on its own, reading
//! the entries, and checking the whole chain. What an entry is, and the check itself, are
//! `crate::audit`.

use super::{abort, decode, u64_from, Ledger, Tx, TxResult, AUDIT_HEAD};
use crate::{
    audit::{entry_hash, verify_chain, AuditNote, AuditReport},
    error::LedgerError,
};
use prost::Message;

impl Tx<'_> {
    pub(super) fn append_audit(&self, note: AuditNote, at_ms: i64) -> TxResult<()> {
        let (seq, prev) = match self.meta.get(AUDIT_HEAD)? {
            Some(v) if v.len() == 40 => {
                let seq = u64_from("audit head", &v)?;
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&v[8..40]);
                (seq, hash)
            }
            Some(_) => return abort(LedgerError::corrupt("audit head", "wrong length")),
            None => (0, [0u8; 32]),
        };
        let seq = seq + 1;
        if note.event.is_some_and(|e| e.is_refusal()) && !note.consent_id.is_empty() {
            self.index_refusal(&note.consent_id, seq)?;
        }
        let bytes = note.into_entry(seq, prev, at_ms).encode_to_vec();
        let hash = entry_hash(&bytes);
        self.audit.insert(seq.to_be_bytes(), bytes)?;
        let mut head = seq.to_be_bytes().to_vec();
        head.extend_from_slice(&hash);
        self.meta.insert(AUDIT_HEAD, head)?;
        Ok(())
    }
}

impl Ledger {
    /// Appends one audit entry on its own (refusals, reads).
    pub fn audit(&self, note: AuditNote, now_ms: i64) -> Result<(), LedgerError> {
        self.tx(|t| t.append_audit(note.clone(), now_ms))
    }

    /// Every audit entry, decoded, in order, one at a time.
    pub fn audit_iter(
        &self,
    ) -> impl Iterator<Item = Result<crate::records::AuditEntry, LedgerError>> + '_ {
        self.audit.iter().map(|kv| decode("audit entry", &kv?.1))
    }

    /// Up to `limit` audit entries before sequence number `before_seq` (from the newest,
    /// for `None`), newest first, looking at no more than `scan` entries: only those `keep`
    /// accepts are returned. Also returns the sequence number of the last entry looked at
    /// (where a next page continues), `None` when the chain's start was reached.
    pub fn audit_before(
        &self,
        before_seq: Option<u64>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&crate::records::AuditEntry) -> bool,
    ) -> Result<(Vec<crate::records::AuditEntry>, Option<u64>), LedgerError> {
        let entries = match before_seq {
            Some(seq) => self.audit.range_rev(..seq.to_be_bytes()),
            None => self.audit.range_rev::<[u8; 8]>(..),
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut exhausted = true;
        for (looked, kv) in entries.enumerate() {
            if looked == scan || out.len() == limit {
                exhausted = false;
                break;
            }
            let (_, v) = kv?;
            let entry: crate::records::AuditEntry = decode("audit entry", &v)?;
            last = Some(entry.seq);
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok((out, if exhausted { None } else { last }))
    }

    /// Every audit entry, decoded, in order, collected (for tests and small stores; use
    /// [`Ledger::audit_iter`] on a node's store).
    pub fn audit_entries(&self) -> Result<Vec<crate::records::AuditEntry>, LedgerError> {
        self.audit_iter().collect()
    }

    /// Checks the whole chain: sequence, links, and that it ends at the recorded head.
    pub fn verify_audit(&self) -> Result<AuditReport, LedgerError> {
        let head = match self.meta.get(AUDIT_HEAD)? {
            Some(v) if v.len() == 40 => {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&v[8..40]);
                Some((u64_from("audit head", &v)?, hash))
            }
            Some(_) => return Err(LedgerError::corrupt("audit head", "wrong length")),
            None => None,
        };
        let entries = self.audit.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((u64_from("audit key", &k)?, v.to_vec()))
        });
        verify_chain(entries, head)
    }
}
