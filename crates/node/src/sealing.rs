//! The one sealing of an outgoing message: a new message id, the signed envelope, and its
//! description for the outbox. Checks no limits — `Shared::seal_outgoing` does, for what a
//! node sends; the benchmarks seal their stores' contents with this directly.

use kurzdraht_envelope::{seal, SigningKey};
use kurzdraht_ledger::Outgoing;
use kurzdraht_proto::v1::{EnvelopeHeader, MessageBody, MessageKind};

/// One message to seal: from whom to whom, of which kind, under which consent, in reply to
/// which message, when, and how long its delivery may take.
#[derive(Debug, Clone, Copy)]
pub struct Sealing<'a> {
    pub sender: &'a str,
    pub kind: MessageKind,
    pub recipient: &'a str,
    pub consent_id: &'a str,
    pub in_reply_to: &'a str,
    pub now_ms: i64,
    pub deadline: std::time::Duration,
}

/// Seals `body` with the sender's `key` under a new message id and describes it for the
/// outbox (deadline: `deadline` after `now_ms`).
pub fn seal_outgoing(key: &SigningKey, m: Sealing<'_>, body: &MessageBody) -> Outgoing {
    let message_id = kurzdraht_envelope::ids::new_id();
    let header = EnvelopeHeader {
        message_id: message_id.clone(),
        kind: m.kind as i32,
        sender: m.sender.to_string(),
        recipient: m.recipient.to_string(),
        created_at_ms: m.now_ms,
        payload_sha256: Vec::new(),
        consent_id: m.consent_id.to_string(),
        in_reply_to: m.in_reply_to.to_string(),
    };
    let envelope = seal(header, body, key);
    Outgoing {
        envelope_sha256: kurzdraht_envelope::envelope_hash(&envelope),
        envelope,
        message_id,
        kind: m.kind,
        recipient: m.recipient.to_string(),
        consent_id: m.consent_id.to_string(),
        submitted_at_ms: m.now_ms,
        deadline_ms: m.now_ms.saturating_add(m.deadline.as_millis() as i64),
    }
}
