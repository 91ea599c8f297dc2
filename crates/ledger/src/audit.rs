//! The audit chain: an append-only, hash-linked list of what the node decided. Entries hold
//! ids, kinds, agencies and reason codes; never names, dates of birth or message bodies.
//! Entry `n` stores the hash of entry `n-1`; the hash of an entry is SHA-256 over
//! `"kurzdraht/v1/audit\0"` and its stored bytes, so the chain verifies offline.

use crate::{error::LedgerError, records::AuditEntry};
use prost::Message;
use sha2::{Digest, Sha256};

pub(crate) const AUDIT_DOMAIN: &[u8] = b"kurzdraht/v1/audit\0";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    ConsentRecorded,
    /// A recording undone because it could not be made durable (the caller was told so).
    ConsentUnrecorded,
    ConsentWithdrawn,
    ConsentReplicated,
    WithdrawalReplicated,
    Submitted,
    SubmissionRefused,
    Delivered,
    DeliveryRefused,
    DeliveryRejected,
    DeliveryExpired,
    Received,
    ReceivedDuplicate,
    ReceptionRefused,
    InboxRead,
    InboxAcknowledged,
    SubjectAccessReport,
    CaseClosed,
    BodyDeleted,
    SubjectErased,
    /// An operator moved the delivery deadline of the messages queued for a peer.
    DeadlineExtended,
    /// Delivered envelopes kept longer than the keep window were dropped (one entry per
    /// step of the sweep, counting them).
    KeptPruned,
    /// An IT system with an admin token took a backup of the whole store.
    StoreBackup,
    /// This store was restored from a backup (written into the restored store).
    StoreRestored,
    /// A reconciliation with a peer began (this node asks what the peer delivered to it).
    ReconciliationStarted,
    /// An envelope a peer delivered earlier, no longer held here, was received again.
    ReconciliationReceived,
    /// Such an envelope was refused by reception (the reason code in `detail`).
    ReconciliationRefused,
    /// The peer listed a message delivered here that it can no longer hand over (erased
    /// there) or that is held here with another envelope.
    ReconciliationUnavailable,
    /// A reconciliation with a peer ended (counts in `detail`).
    ReconciliationFinished,
    /// This node handed a restored peer kept envelopes it had delivered to it.
    ReconciliationServed,
    /// A restored node recorded again the status of a message it had sent (DELIVERED, with
    /// the receipt its peer held).
    ReconciliationSent,
    /// A restored node recorded again a consent it had recorded, from its notice a peer held.
    ReconciliationConsent,
    /// A restored node recorded again a withdrawal it had recorded, from its notice a peer
    /// held.
    ReconciliationWithdrawal,
    /// This node handed a restored peer the envelopes it had received from it.
    ReconciliationServedSent,
    /// A console account was added (`detail`: account, role, by whom).
    AccountAdded,
    /// A console account's password was set anew (`detail`: account, by whom).
    AccountPasswordChanged,
    /// A console account's role changed (`detail`: account, from, to, by whom).
    AccountRoleChanged,
    /// A console account was disabled (`detail`: account, by whom).
    AccountDisabled,
    /// Someone logged in to the console (`detail`: the account).
    ConsoleLogin,
    /// A console login failed (`detail`: the account if it exists, else `unknown` — never
    /// the name as typed).
    ConsoleLoginFailed,
    /// A console account was locked after repeated failed logins (`detail`: account, until).
    ConsoleLocked,
}

impl AuditEvent {
    /// A transfer refused or rejected — what the access report lists for a person (the
    /// ledger indexes these by the consent they cite).
    pub fn is_refusal(self) -> bool {
        Self::REFUSALS.contains(&self)
    }

    /// The events that record a refused or rejected transfer.
    pub const REFUSALS: [AuditEvent; 5] = [
        Self::SubmissionRefused,
        Self::ReceptionRefused,
        Self::ReconciliationRefused,
        Self::DeliveryRefused,
        Self::DeliveryRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsentRecorded => "consent.recorded",
            Self::ConsentUnrecorded => "consent.unrecorded",
            Self::ConsentWithdrawn => "consent.withdrawn",
            Self::ConsentReplicated => "consent.replicated",
            Self::WithdrawalReplicated => "consent.withdrawal-replicated",
            Self::Submitted => "message.submitted",
            Self::SubmissionRefused => "message.submission-refused",
            Self::Delivered => "message.delivered",
            Self::DeliveryRefused => "message.delivery-refused",
            Self::DeliveryRejected => "message.delivery-rejected",
            Self::DeliveryExpired => "message.expired",
            Self::Received => "inbox.received",
            Self::ReceivedDuplicate => "inbox.duplicate",
            Self::ReceptionRefused => "inbox.refused",
            Self::InboxRead => "inbox.read",
            Self::InboxAcknowledged => "inbox.acknowledged",
            Self::SubjectAccessReport => "subject.access-report",
            Self::CaseClosed => "case.closed",
            Self::BodyDeleted => "retention.body-deleted",
            Self::SubjectErased => "subject.erased",
            Self::DeadlineExtended => "message.deadline-extended",
            Self::KeptPruned => "retention.kept-pruned",
            Self::StoreBackup => "store.backup",
            Self::StoreRestored => "store.restored",
            Self::ReconciliationStarted => "reconciliation.started",
            Self::ReconciliationReceived => "reconciliation.received",
            Self::ReconciliationRefused => "reconciliation.refused",
            Self::ReconciliationUnavailable => "reconciliation.unavailable",
            Self::ReconciliationFinished => "reconciliation.finished",
            Self::ReconciliationServed => "reconciliation.served",
            Self::ReconciliationSent => "reconciliation.sent",
            Self::ReconciliationConsent => "reconciliation.consent",
            Self::ReconciliationWithdrawal => "reconciliation.withdrawal",
            Self::ReconciliationServedSent => "reconciliation.served-sent",
            Self::AccountAdded => "account.added",
            Self::AccountPasswordChanged => "account.password-changed",
            Self::AccountRoleChanged => "account.role-changed",
            Self::AccountDisabled => "account.disabled",
            Self::ConsoleLogin => "console.login",
            Self::ConsoleLoginFailed => "console.login-failed",
            Self::ConsoleLocked => "console.locked",
        }
    }
}

/// An audit entry as the node states it; the ledger adds sequence, time and links.
/// `detail` must be a reason code or a message without personal data.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub event: Option<AuditEvent>,
    pub message_id: String,
    pub consent_id: String,
    pub peer: String,
    pub kind: i32,
    pub detail: String,
    pub envelope_sha256: Vec<u8>,
}

impl AuditNote {
    pub fn new(event: AuditEvent) -> Self {
        Self {
            event: Some(event),
            ..Default::default()
        }
    }
    pub fn message(mut self, id: &str) -> Self {
        self.message_id = id.to_string();
        self
    }
    pub fn consent(mut self, id: &str) -> Self {
        self.consent_id = id.to_string();
        self
    }
    pub fn peer(mut self, agency: &str) -> Self {
        self.peer = agency.to_string();
        self
    }
    pub fn kind(mut self, kind: i32) -> Self {
        self.kind = kind;
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
    pub fn envelope(mut self, hash: &[u8]) -> Self {
        self.envelope_sha256 = hash.to_vec();
        self
    }

    pub(crate) fn into_entry(self, seq: u64, prev_hash: [u8; 32], at_ms: i64) -> AuditEntry {
        AuditEntry {
            seq,
            prev_hash: prev_hash.to_vec(),
            at_ms,
            event: self.event.map(AuditEvent::as_str).unwrap_or("").to_string(),
            message_id: self.message_id,
            consent_id: self.consent_id,
            peer: self.peer,
            kind: self.kind,
            detail: self.detail,
            envelope_sha256: self.envelope_sha256,
        }
    }
}

pub(crate) fn entry_hash(stored: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(AUDIT_DOMAIN);
    h.update(stored);
    h.finalize().into()
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    pub entries: u64,
    pub head_hash: [u8; 32],
}

/// Verifies a chain given as `(key, stored bytes)` pairs in key order, ending at `head`
/// (`(last seq, last hash)` as recorded by the store, or `None` for an empty chain).
pub fn verify_chain<I>(
    entries: I,
    head: Option<(u64, [u8; 32])>,
) -> Result<AuditReport, LedgerError>
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), LedgerError>>,
{
    let mut prev = [0u8; 32];
    let mut expected_seq = 1u64;
    for item in entries {
        let (key_seq, bytes) = item?;
        let broken = |reason: String| LedgerError::AuditBroken {
            seq: key_seq,
            reason,
        };
        let entry = AuditEntry::decode(bytes.as_slice())
            .map_err(|e| broken(format!("does not decode: {e}")))?;
        if key_seq != expected_seq || entry.seq != expected_seq {
            return Err(broken(format!(
                "expected entry {expected_seq}, found key {key_seq} holding entry {}",
                entry.seq
            )));
        }
        if entry.prev_hash.as_slice() != prev.as_slice() {
            return Err(broken("does not link to the previous entry's hash".into()));
        }
        prev = entry_hash(&bytes);
        expected_seq += 1;
    }
    let count = expected_seq - 1;
    match head {
        None if count == 0 => {}
        Some((seq, hash)) if seq == count && hash == prev => {}
        _ => {
            return Err(LedgerError::AuditBroken {
                seq: count,
                reason: "the chain does not end at the recorded head (entries removed or added)"
                    .into(),
            })
        }
    }
    Ok(AuditReport {
        entries: count,
        head_hash: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chain = (Vec<(u64, Vec<u8>)>, (u64, [u8; 32]));

    fn chain(n: u64) -> Chain {
        let mut prev = [0u8; 32];
        let mut out = vec![];
        for seq in 1..=n {
            let e = AuditNote::new(AuditEvent::Submitted)
                .message(&format!("m{seq}"))
                .into_entry(seq, prev, seq as i64);
            let bytes = e.encode_to_vec();
            prev = entry_hash(&bytes);
            out.push((seq, bytes));
        }
        (out, (n, prev))
    }

    #[test]
    fn intact_chain_verifies() {
        let (entries, head) = chain(5);
        let r = verify_chain(entries.into_iter().map(Ok), Some(head)).expect("test");
        assert_eq!(r.entries, 5);
        assert!(verify_chain(std::iter::empty(), None).is_ok());
    }

    #[test]
    fn any_change_breaks_it() {
        let (entries, head) = chain(5);
        // altered entry
        let mut altered = entries.clone();
        let mut e = AuditEntry::decode(altered[2].1.as_slice()).expect("test");
        e.detail = "changed".into();
        altered[2].1 = e.encode_to_vec();
        assert!(verify_chain(altered.into_iter().map(Ok), Some(head)).is_err());
        // removed entry in the middle
        let mut removed = entries.clone();
        removed.remove(2);
        assert!(verify_chain(removed.into_iter().map(Ok), Some(head)).is_err());
        // truncated tail
        let mut truncated = entries.clone();
        truncated.pop();
        assert!(verify_chain(truncated.into_iter().map(Ok), Some(head)).is_err());
    }
}
