//! The records the ledger keeps, prost-encoded so that old records stay readable when
//! fields are added.

use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryNotice, MessageStatus, SignedEnvelope,
    SignedReceipt,
};

/// A consent as held by a node: the record and, once withdrawn, the withdrawal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredConsent {
    #[prost(message, optional, tag = "1")]
    pub record: Option<ConsentRecord>,
    #[prost(message, optional, tag = "2")]
    pub withdrawal: Option<ConsentWithdrawalRecord>,
    /// The consent that replaced this one, and since when.
    #[prost(string, tag = "3")]
    pub superseded_by: String,
    #[prost(int64, tag = "4")]
    pub superseded_at_ms: i64,
    /// The recording agency's signed ConsentNotice carrying `record`: proof of the consent
    /// that outlives withdrawal and expiry.
    #[prost(message, optional, tag = "5")]
    pub notice: Option<SignedEnvelope>,
    /// The recording agency's signed ConsentWithdrawal, once withdrawn.
    #[prost(message, optional, tag = "6")]
    pub withdrawal_notice: Option<SignedEnvelope>,
    /// When this agency closed the case the consent belongs to (0: open).
    #[prost(int64, tag = "7")]
    pub case_closed_at_ms: i64,
    /// When the person's data was erased from this record (0: not erased). The record then
    /// keeps no subject, and the notices keep only their signed headers.
    #[prost(int64, tag = "8")]
    pub erased_at_ms: i64,
    /// The first consent of this consent's chain of supersession, as held here when this
    /// consent was stored (its own id when it replaces none held here): its delivery lane's
    /// key, so that queueing a message reads one consent, not the whole chain. Never
    /// changes. Empty in stores written before it was kept: then the chain is walked.
    #[prost(string, tag = "9")]
    pub chain_root: String,
}

impl StoredConsent {
    /// A consent as a receiving node holds it once its notice arrived.
    pub fn replicated(record: &ConsentRecord, notice: Option<SignedEnvelope>) -> Self {
        Self {
            record: Some(record.clone()),
            notice,
            ..Default::default()
        }
    }

    /// Marks this consent replaced by `by`, if the same agency recorded both and it is not
    /// superseded yet. Returns whether it changed.
    pub fn supersede_by(&mut self, by: &ConsentRecord) -> bool {
        let same_controller =
            self.record.as_ref().map(|r| &r.recording_agency) == Some(&by.recording_agency);
        if !same_controller || !self.superseded_by.is_empty() {
            return false;
        }
        self.superseded_by = by.consent_id.clone();
        self.superseded_at_ms = by.recorded_at_ms;
        true
    }

    /// Records the withdrawal, unless one is recorded already. Returns whether it changed.
    pub fn withdraw(
        &mut self,
        withdrawal: &ConsentWithdrawalRecord,
        notice: Option<SignedEnvelope>,
    ) -> bool {
        if self.withdrawal.is_some() {
            return false;
        }
        self.withdrawal = Some(withdrawal.clone());
        self.withdrawal_notice = notice;
        true
    }
}

/// A message waiting in the outbox for delivery to one peer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxEntry {
    #[prost(string, tag = "1")]
    pub message_id: String,
    #[prost(string, tag = "2")]
    pub recipient: String,
    #[prost(message, optional, tag = "3")]
    pub envelope: Option<SignedEnvelope>,
    #[prost(int64, tag = "4")]
    pub deadline_ms: i64,
}

/// Everything known about a submitted message, from submission to its final state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageRecord {
    #[prost(message, optional, tag = "1")]
    pub status: Option<MessageStatus>,
    /// Key of the outbox entry while the message is queued.
    #[prost(bytes = "vec", tag = "2")]
    pub outbox_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub envelope_sha256: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub deadline_ms: i64,
    #[prost(int64, tag = "5")]
    pub next_attempt_ms: i64,
    /// An attempt handed it to the peer and got no answer (a timeout): the peer may hold it.
    #[prost(bool, tag = "6")]
    pub in_doubt: bool,
}

/// A received envelope, durable before its receipt was signed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRecord {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub message_id: String,
    #[prost(string, tag = "3")]
    pub sender: String,
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(message, optional, tag = "5")]
    pub envelope: Option<SignedEnvelope>,
    #[prost(message, optional, tag = "6")]
    pub receipt: Option<SignedReceipt>,
    #[prost(bytes = "vec", tag = "7")]
    pub envelope_sha256: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub received_at_ms: i64,
    #[prost(int64, tag = "9")]
    pub created_at_ms: i64,
    #[prost(string, tag = "10")]
    pub consent_id: String,
    #[prost(string, tag = "11")]
    pub in_reply_to: String,
    #[prost(bool, tag = "12")]
    pub acknowledged: bool,
    /// Set for this node's own notice that a message it sent will not be delivered; such a
    /// record has no envelope and no receipt.
    #[prost(message, optional, tag = "13")]
    pub notice: Option<DeliveryNotice>,
    /// When the body (envelope payload) was deleted by retention or erasure (0: kept).
    #[prost(int64, tag = "14")]
    pub body_erased_at_ms: i64,
    /// The IT systems (API clients) that have read this item: the first read by each is
    /// audited, a re-read is not.
    #[prost(string, repeated, tag = "15")]
    pub read_by: Vec<String>,
    /// A redelivery of this envelope was audited (`inbox.duplicate`); later ones are only
    /// counted.
    #[prost(bool, tag = "16")]
    pub duplicate_audited: bool,
}

/// The first answer to an IT system's call with an idempotency key (tree `requests`): what
/// identifies the request, and the ids the answer is rebuilt from. Ids and a hash only:
/// the answer's personal data (a consent record) is read from the consent it names, so an
/// erasure reaches a repeated answer too.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnsweredRequest {
    /// The AgencyApi method answered (`Submit`, `RecordConsent`, `WithdrawConsent`).
    #[prost(string, tag = "1")]
    pub method: String,
    /// SHA-256 of the request without its key: a repeated call must carry the same.
    #[prost(bytes = "vec", tag = "2")]
    pub request_sha256: Vec<u8>,
    /// When the first call was answered (node clock); the key is kept from then on at
    /// least for the delivery deadline.
    #[prost(int64, tag = "3")]
    pub answered_at_ms: i64,
    /// The messages the call queued, in the answer's order.
    #[prost(string, repeated, tag = "4")]
    pub message_ids: Vec<String>,
    /// The consent the call recorded or withdrew (empty for Submit).
    #[prost(string, tag = "5")]
    pub consent_id: String,
}

/// One link of the audit chain. Its hash is SHA-256 over a domain prefix and the stored bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditEntry {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub prev_hash: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub at_ms: i64,
    #[prost(string, tag = "4")]
    pub event: String,
    #[prost(string, tag = "5")]
    pub message_id: String,
    #[prost(string, tag = "6")]
    pub consent_id: String,
    #[prost(string, tag = "7")]
    pub peer: String,
    #[prost(int32, tag = "8")]
    pub kind: i32,
    #[prost(string, tag = "9")]
    pub detail: String,
    #[prost(bytes = "vec", tag = "10")]
    pub envelope_sha256: Vec<u8>,
}

/// A message this node delivered, kept after delivery for the keep window (`[delivery]
/// keep_delivered_days`) so that a peer restored from a backup can ask for it again
/// (tree `delivered`, sealed: the envelope carries personal data).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeptDelivery {
    #[prost(string, tag = "1")]
    pub message_id: String,
    #[prost(string, tag = "2")]
    pub recipient: String,
    #[prost(string, tag = "3")]
    pub consent_id: String,
    #[prost(int32, tag = "4")]
    pub kind: i32,
    /// When its receipt was stored here (this node's clock).
    #[prost(int64, tag = "5")]
    pub delivered_at_ms: i64,
    /// Orders deliveries of one millisecond.
    #[prost(uint64, tag = "6")]
    pub seq: u64,
    /// The sealed envelope exactly as delivered.
    #[prost(message, optional, tag = "7")]
    pub envelope: Option<SignedEnvelope>,
}

/// The ids of a kept delivery, in its time index (not sealed: ids only), so that pruning
/// finds every entry of it without opening the envelope, also after erasure dropped it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeptRef {
    #[prost(string, tag = "1")]
    pub message_id: String,
    #[prost(string, tag = "2")]
    pub recipient: String,
    #[prost(string, tag = "3")]
    pub consent_id: String,
}

/// A store restored from a backup that has not yet reconciled with every peer (in `meta`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingReconciliation {
    /// Ask each peer for what it delivered since then (the backup's time less a margin).
    #[prost(int64, tag = "1")]
    pub since_ms: i64,
    /// When the store was restored.
    #[prost(int64, tag = "2")]
    pub restored_at_ms: i64,
    /// The peers reconciled with so far.
    #[prost(string, repeated, tag = "3")]
    pub peers_done: Vec<String>,
}

/// What a backup archive says about itself (see `store::backup`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BackupManifest {
    /// The agency whose store it is.
    #[prost(string, tag = "1")]
    pub agency: String,
    /// When the copy was taken (the node's clock): everything acknowledged before is in it.
    #[prost(int64, tag = "2")]
    pub taken_at_ms: i64,
    /// The store's format version.
    #[prost(uint64, tag = "3")]
    pub schema: u64,
}

/// A console account of this node (tree `accounts`, sealed). The password is kept only as
/// an Argon2id hash in PHC form, and never shown: `Debug` leaves it out.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct StoredAccount {
    /// The login name (the key), `[a-z0-9][a-z0-9._-]{0,63}`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// The role's stable name (`caseworker`, `data-protection`, `admin`; see
    /// [`crate::AccountRole`]).
    #[prost(string, tag = "3")]
    pub role: String,
    /// The Argon2id hash of the password, a PHC string (`$argon2id$v=19$m=…`).
    #[prost(string, tag = "4")]
    pub password_hash: String,
    #[prost(bool, tag = "5")]
    pub disabled: bool,
    /// Failed logins since the last success (or the last lock).
    #[prost(uint32, tag = "6")]
    pub failed_logins: u32,
    /// Refused until this time (seconds since 1970, the node's clock); 0: not locked.
    #[prost(int64, tag = "7")]
    pub locked_until_secs: i64,
    #[prost(int64, tag = "8")]
    pub created_at_ms: i64,
    #[prost(int64, tag = "9")]
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for StoredAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccount")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("disabled", &self.disabled)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until_secs", &self.locked_until_secs)
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}
