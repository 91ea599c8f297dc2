//! The outbox: queueing a submitted message (with its status record and audit entry),
//! reading what is queued (per peer and lane), recording delivery attempts, and taking a
//! message out with its final state ([`Finish`]) — leaving a delivery notice in this node's
//! inbox when it will not be delivered, and keeping it for restored peers when it was
//! (`kept.rs`). Lanes are in `lanes.rs`, deadlines in `deadlines.rs`.

use super::{abort, lanes, outbox_prefix, tx_decode, KeyedRequest, Ledger, Once, Tx, TxResult};
use super::{decode, DELIVERY_LANES};
use crate::{
    audit::{AuditEvent, AuditNote},
    consent::ConsentRefusal,
    db::Value,
    error::LedgerError,
    records::{InboxRecord, MessageRecord, OutboxEntry, StoredConsent},
};
use kurzdraht_proto::v1::{
    DeliveryNotice, DeliveryState, MessageKind, MessageStatus, SignedEnvelope, SignedReceipt,
};
use prost::Message;
use std::collections::BTreeSet;

/// A message ready to be queued: sealed, with its delivery facts.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: SignedEnvelope,
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: String,
    pub consent_id: String,
    pub submitted_at_ms: i64,
    pub deadline_ms: i64,
    pub envelope_sha256: [u8; 32],
}

/// A message waiting in the outbox, as [`Ledger::queued_under`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: String,
}

/// How a queued message left the outbox.
#[derive(Debug, Clone)]
pub enum Finish {
    /// The receiver's receipt was verified.
    Delivered { receipt: SignedReceipt },
    /// This node stopped it (consent no longer valid); `reason` is a code without personal data.
    Refused { reason: String },
    /// The receiver refused it for good.
    Rejected { reason: String },
    /// Its deadline passed.
    Expired,
    /// Its deadline passed, but it is a consent withdrawal, which must still reach the peer:
    /// `renewal` (the same withdrawal in a new envelope, made now) is queued in the same
    /// transaction.
    ExpiredRenewed { renewal: Box<Outgoing> },
}

impl Finish {
    /// The final state it gives a message, its audit event and the detail of both.
    fn outcome(&self) -> (DeliveryState, AuditEvent, String) {
        match self {
            Finish::Delivered { .. } => (
                DeliveryState::Delivered,
                AuditEvent::Delivered,
                String::new(),
            ),
            Finish::Refused { reason } => (
                DeliveryState::Refused,
                AuditEvent::DeliveryRefused,
                reason.clone(),
            ),
            Finish::Rejected { reason } => (
                DeliveryState::Rejected,
                AuditEvent::DeliveryRejected,
                reason.clone(),
            ),
            Finish::Expired => (
                DeliveryState::Expired,
                AuditEvent::DeliveryExpired,
                "deadline passed".to_string(),
            ),
            Finish::ExpiredRenewed { renewal } => (
                DeliveryState::Expired,
                AuditEvent::DeliveryExpired,
                format!("deadline passed; renewed as {}", renewal.message_id),
            ),
        }
    }
}

/// What [`Ledger::finish`] did.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// The arrival sequence number of the delivery notice left in this node's inbox.
    pub notice_seq: Option<u64>,
    /// The message's new final status; `None` when it was final already (nothing changed).
    pub status: Option<MessageStatus>,
}

impl Tx<'_> {
    pub(super) fn enqueue(&self, out: &Outgoing, seq: u64) -> TxResult<u8> {
        let carries_case = !matches!(
            out.kind,
            MessageKind::ConsentNotice | MessageKind::ConsentWithdrawal
        );
        if carries_case && !out.consent_id.is_empty() {
            // Checked again where it is queued: a withdrawal, replacement or erasure that
            // committed since the submission's check wins.
            let cited = self.get_sealed::<StoredConsent>(
                self.consents,
                "consents",
                out.consent_id.as_bytes(),
            )?;
            if let Some(c) = cited {
                let refusal = if c.withdrawal.is_some() {
                    Some(ConsentRefusal::Withdrawn)
                } else if !c.superseded_by.is_empty() {
                    Some(ConsentRefusal::Superseded)
                } else if c.erased_at_ms > 0 {
                    Some(ConsentRefusal::Erased)
                } else {
                    None
                };
                if let Some(r) = refusal {
                    return abort(LedgerError::Refused(r));
                }
            }
        }
        let lane = self.lane_of(&out.consent_id)?;
        let key = &lanes::outbox_key(&out.recipient, lane, seq);
        let entry = OutboxEntry {
            message_id: out.message_id.clone(),
            recipient: out.recipient.clone(),
            envelope: Some(out.envelope.clone()),
            deadline_ms: out.deadline_ms,
        };
        let record = MessageRecord {
            status: Some(MessageStatus {
                message_id: out.message_id.clone(),
                kind: out.kind as i32,
                recipient: out.recipient.clone(),
                state: DeliveryState::Queued as i32,
                attempts: 0,
                detail: String::new(),
                submitted_at_ms: out.submitted_at_ms,
                updated_at_ms: out.submitted_at_ms,
                receipt: None,
                consent_id: out.consent_id.clone(),
            }),
            outbox_key: key.to_vec(),
            envelope_sha256: out.envelope_sha256.to_vec(),
            deadline_ms: out.deadline_ms,
            next_attempt_ms: out.submitted_at_ms,
            in_doubt: false,
        };
        self.put_sealed(self.outbox, "outbox", key, &entry)?;
        self.messages
            .insert(out.message_id.as_bytes(), record.encode_to_vec())?;
        self.index_case(
            &out.consent_id,
            &out.message_id,
            super::cases::Direction::Sent,
            out.submitted_at_ms,
        )?;
        self.append_audit(
            AuditNote::new(AuditEvent::Submitted)
                .message(&out.message_id)
                .consent(&out.consent_id)
                .peer(&out.recipient)
                .kind(out.kind as i32)
                .envelope(&out.envelope_sha256),
            out.submitted_at_ms,
        )?;
        Ok(lane)
    }
}

impl Tx<'_> {
    /// The body of [`Ledger::finish`], inside a transaction.
    pub(super) fn finish(
        &self,
        message_id: &str,
        how: &Finish,
        now_ms: i64,
        notice_id: &str,
        kept_seq: u64,
    ) -> TxResult<Finished> {
        let t = self;
        let Some(bytes) = t.messages.get(message_id.as_bytes())? else {
            return abort(LedgerError::UnknownMessage {
                message_id: message_id.to_string(),
            });
        };
        let mut record: MessageRecord = tx_decode("message record", &bytes)?;
        let Some(status) = record.status.as_mut() else {
            return abort(LedgerError::corrupt("message record", "no status"));
        };
        if status.state != DeliveryState::Queued as i32 {
            return Ok(Finished::default());
        }
        let (state, event, detail) = how.outcome();
        if matches!(how, Finish::Delivered { .. } | Finish::Rejected { .. }) {
            status.attempts += 1; // the attempt that ended it
        }
        status.state = state as i32;
        status.detail = detail.clone();
        status.updated_at_ms = now_ms;
        if let Finish::Delivered { receipt } = how {
            status.receipt = Some(receipt.clone());
        }
        let note = AuditNote::new(event)
            .message(message_id)
            .consent(&status.consent_id)
            .peer(&status.recipient)
            .kind(status.kind)
            .detail(detail.clone())
            .envelope(&record.envelope_sha256);
        let notice = match how {
            Finish::Delivered { .. } => None,
            _ => Some(InboxRecord {
                message_id: notice_id.to_string(),
                kind: status.kind,
                received_at_ms: now_ms,
                created_at_ms: now_ms,
                consent_id: status.consent_id.clone(),
                notice: Some(DeliveryNotice {
                    message_id: message_id.to_string(),
                    recipient: status.recipient.clone(),
                    state: state as i32,
                    detail: detail.clone(),
                }),
                ..Default::default()
            }),
        };
        if matches!(how, Finish::Delivered { .. }) {
            // Kept for the keep window, so that a peer restored from a backup can have it
            // again (`store::kept`).
            let queued: Option<OutboxEntry> =
                t.get_sealed(t.outbox, "outbox", record.outbox_key.as_slice())?;
            if let Some(envelope) = queued.and_then(|q| q.envelope) {
                t.keep_delivered(
                    message_id,
                    &status.recipient,
                    &status.consent_id,
                    status.kind,
                    envelope,
                    &record.envelope_sha256,
                    now_ms,
                    kept_seq,
                )?;
            }
        }
        t.outbox.remove(record.outbox_key.as_slice())?;
        record.outbox_key.clear();
        t.messages
            .insert(message_id.as_bytes(), record.encode_to_vec())?;
        t.append_audit(note, now_ms)?;
        let notice_seq = notice.map(|n| t.leave_notice(n)).transpose()?;
        Ok(Finished {
            notice_seq,
            status: record.status,
        })
    }
}

impl Tx<'_> {
    /// Leaves a delivery notice in this node's inbox; returns its arrival sequence number.
    fn leave_notice(&self, mut notice: InboxRecord) -> TxResult<u64> {
        let seq = self.next_inbox_seq()?;
        notice.seq = seq;
        self.put_sealed(self.inbox, "inbox", notice.message_id.as_bytes(), &notice)?;
        self.inbox_seq
            .insert(seq.to_be_bytes(), notice.message_id.as_bytes())?;
        Ok(seq)
    }
}

impl Ledger {
    /// Queues one submitted message (durable after the next [`Ledger::flush`]).
    /// Returns the delivery lane it was queued in.
    pub fn enqueue(&self, out: &Outgoing) -> Result<u8, LedgerError> {
        let seq = self.outbox_seqs(1)?[0];
        self.tx(|t| t.enqueue(out, seq))
    }

    /// [`Ledger::enqueue`] for a call with an idempotency key: unless the key answered an
    /// earlier call (then nothing is queued and that answer is returned), the message and
    /// the answer are stored in one transaction.
    pub fn enqueue_once(
        &self,
        out: &Outgoing,
        request: Option<&KeyedRequest>,
    ) -> Result<Once<u8>, LedgerError> {
        let seq = self.outbox_seqs(1)?[0];
        self.tx_once(request, |t| t.enqueue(out, seq))
    }

    /// The oldest queued message for `peer` (over all its lanes).
    pub fn outbox_head(&self, peer: &str) -> Result<Option<OutboxEntry>, LedgerError> {
        let mut oldest: Option<(Value, Value)> = None;
        for lane in 0..DELIVERY_LANES {
            if let Some(kv) = self
                .outbox
                .scan_prefix(lanes::lane_prefix(peer, lane))
                .next()
            {
                let (k, v) = kv?;
                let seq_of =
                    |key: &[u8]| key.get(key.len().saturating_sub(8)..).map(<[u8]>::to_vec);
                if oldest
                    .as_ref()
                    .is_none_or(|(ok, _)| seq_of(&k) < seq_of(ok))
                {
                    oldest = Some((k, v));
                }
            }
        }
        oldest
            .map(|(k, v)| self.open_sealed("outbox", &k, &v))
            .transpose()
    }

    /// Up to `limit` of the oldest queued messages in one lane of `peer`'s outbox, oldest
    /// first.
    pub fn outbox_batch(
        &self,
        peer: &str,
        lane: u8,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, LedgerError> {
        self.outbox
            .scan_prefix(lanes::lane_prefix(peer, lane))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                self.open_sealed("outbox", &k, &v)
            })
            .collect()
    }

    /// The queued messages (to any peer) that cite one of `consent_ids`, with their kind:
    /// reads only the lanes those consents' messages are queued in.
    pub fn queued_under(&self, consent_ids: &BTreeSet<String>) -> Result<Vec<Queued>, LedgerError> {
        let lanes: BTreeSet<u8> = consent_ids
            .iter()
            .map(|c| self.lane_of(c))
            .collect::<Result<_, _>>()?;
        let mut found = Vec::new();
        for peer in self.peers_with_queued()? {
            for lane in &lanes {
                for kv in self.outbox.scan_prefix(lanes::lane_prefix(&peer, *lane)) {
                    let (k, v) = kv?;
                    let entry: OutboxEntry = self.open_sealed("outbox", &k, &v)?;
                    let Some(status) = self.message(&entry.message_id)?.and_then(|r| r.status)
                    else {
                        continue;
                    };
                    if consent_ids.contains(&status.consent_id) {
                        let kind =
                            MessageKind::try_from(status.kind).unwrap_or(MessageKind::Unspecified);
                        found.push(Queued {
                            message_id: entry.message_id,
                            kind,
                            recipient: status.recipient,
                        });
                    }
                }
            }
        }
        Ok(found)
    }

    /// Number of messages queued for `peer` (counts them: a scan of the peer's outbox).
    pub fn outbox_len(&self, peer: &str) -> usize {
        self.scan_starts();
        self.outbox.scan_prefix(outbox_prefix(peer)).count()
    }

    /// The peers that have queued messages.
    pub fn peers_with_queued(&self) -> Result<BTreeSet<String>, LedgerError> {
        let mut peers = BTreeSet::new();
        let mut next: Option<Vec<u8>> = None;
        loop {
            let item = match &next {
                None => self.outbox.iter().next(),
                Some(from) => self.outbox.range(from.clone()..).next(),
            };
            let Some(kv) = item else { break };
            let key = kv?.0;
            let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            let peer = String::from_utf8_lossy(&key[..end]).into_owned();
            // skip past this peer's entries: the prefix followed by 0x01 sorts after them all
            let mut skip = key[..end].to_vec();
            skip.push(1);
            next = Some(skip);
            peers.insert(peer);
        }
        Ok(peers)
    }

    pub fn message(&self, message_id: &str) -> Result<Option<MessageRecord>, LedgerError> {
        self.messages
            .get(message_id.as_bytes())?
            .map(|b| decode("message record", &b))
            .transpose()
    }

    /// Every message record (sent messages), one at a time, for reports; a full scan.
    pub fn message_records_iter(
        &self,
    ) -> impl Iterator<Item = Result<MessageRecord, LedgerError>> + '_ {
        self.messages
            .iter()
            .map(|kv| decode("message record", &kv?.1))
    }

    /// Records a failed delivery attempt and when the next one is due.
    pub fn record_attempt(
        &self,
        message_id: &str,
        detail: &str,
        next_attempt_ms: i64,
        now_ms: i64,
        in_doubt: bool,
    ) -> Result<(), LedgerError> {
        self.tx(|t| {
            let Some(bytes) = t.messages.get(message_id.as_bytes())? else {
                return abort(LedgerError::UnknownMessage {
                    message_id: message_id.to_string(),
                });
            };
            let mut record: MessageRecord = tx_decode("message record", &bytes)?;
            let Some(s) = record.status.as_mut() else {
                return abort(LedgerError::corrupt("message record", "no status"));
            };
            if s.state != DeliveryState::Queued as i32 {
                return Ok(()); // final meanwhile (e.g. undone): an attempt changes nothing
            }
            s.attempts += 1;
            s.detail = detail.to_string();
            s.updated_at_ms = now_ms;
            record.next_attempt_ms = next_attempt_ms;
            record.in_doubt |= in_doubt;
            t.messages
                .insert(message_id.as_bytes(), record.encode_to_vec())?;
            Ok(())
        })
    }

    /// Takes a queued message out of the outbox with its final state. A message that is
    /// already final is left as it is. A message that will not be delivered (refused,
    /// rejected, expired) also leaves a [`DeliveryNotice`] in this node's inbox, so the
    /// submitting IT system learns of it; its arrival sequence number is returned.
    pub fn finish(
        &self,
        message_id: &str,
        how: &Finish,
        now_ms: i64,
    ) -> Result<Finished, LedgerError> {
        let finished = self.finish_all(&[(message_id.to_string(), how.clone())], now_ms)?;
        Ok(finished.into_iter().next().unwrap_or_default())
    }

    /// [`Ledger::finish`] for several messages (a delivered batch), in one transaction.
    pub fn finish_all(
        &self,
        items: &[(String, Finish)],
        now_ms: i64,
    ) -> Result<Vec<Finished>, LedgerError> {
        self.undo_queued(items, None, now_ms)
    }

    /// [`Ledger::finish_all`] for messages whose queueing is undone (their submission could
    /// not be made durable), forgetting in the same transaction the answer recorded for the
    /// call that queued them (`key_id`): a repeat of that call queues anew instead of
    /// getting an answer that names a message which was never sent.
    pub fn undo_queued(
        &self,
        items: &[(String, Finish)],
        key_id: Option<&[u8; 32]>,
        now_ms: i64,
    ) -> Result<Vec<Finished>, LedgerError> {
        let notice_ids: Vec<String> = items
            .iter()
            .map(|_| uuid::Uuid::now_v7().hyphenated().to_string())
            .collect();
        let seqs = self.outbox_seqs(items.len())?;
        let renewal_seqs = items
            .iter()
            .map(|(_, how)| match how {
                Finish::ExpiredRenewed { .. } => Ok(Some(self.outbox_seqs(1)?[0])),
                _ => Ok(None),
            })
            .collect::<Result<Vec<Option<u64>>, LedgerError>>()?;
        self.tx(|t| {
            if let Some(key_id) = key_id {
                t.forget(key_id)?;
            }
            items
                .iter()
                .zip(notice_ids.iter().zip(&seqs))
                .zip(&renewal_seqs)
                .map(|(((id, how), (notice_id, seq)), renewal_seq)| {
                    let finished = t.finish(id, how, now_ms, notice_id, *seq)?;
                    if let (Finish::ExpiredRenewed { renewal }, Some(seq)) = (how, renewal_seq) {
                        if finished.status.is_some() {
                            t.enqueue(renewal, *seq)?;
                        }
                    }
                    Ok(finished)
                })
                .collect()
        })
    }
}
