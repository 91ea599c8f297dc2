//! The delivery deadline of queued messages, as an operator sees and moves it. A message
//! expires undelivered at its record's `deadline_ms` (submission + `delivery.deadline_secs`);
//! while a peer is down longer than that, the operator of the sending node can hold its
//! queued messages longer instead (`kurzdraht outbox extend`, with the node stopped). A
//! deadline is never moved past the latest time the peer still accepts the envelope (its
//! creation + the replay window − the clock skew allowance): the caller passes that bound.

use super::{abort, tx_decode, Ledger};
use crate::records::MessageRecord;
use crate::{AuditEvent, AuditNote, LedgerError};
use kurzdraht_proto::v1::DeliveryState;
use prost::Message;
use std::collections::BTreeMap;

/// What is queued for one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    pub messages: u64,
    /// Submission time of the oldest queued message.
    pub oldest_submitted_ms: i64,
    /// The earliest deadline among them: when the first would expire.
    pub earliest_deadline_ms: i64,
}

/// What [`Ledger::extend_deadlines`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extension {
    /// Queued messages whose deadline moved later.
    pub extended: u64,
    /// Of those, the ones that got less than asked: their envelope would be too old for the
    /// peer by then, so they hold until that bound only.
    pub capped: u64,
    /// Queued messages whose deadline already was at or after the new one (left as they were).
    pub unchanged: u64,
}

impl Ledger {
    /// Per peer, what is queued for it (peers with nothing queued are not listed).
    pub fn queued_by_peer(&self) -> Result<BTreeMap<String, QueueSummary>, LedgerError> {
        let mut out = BTreeMap::new();
        for peer in self.peers_with_queued()? {
            let mut summary = QueueSummary {
                oldest_submitted_ms: i64::MAX,
                earliest_deadline_ms: i64::MAX,
                ..Default::default()
            };
            for record in self.queued_records(&peer)? {
                let submitted = record.status.as_ref().map_or(0, |s| s.submitted_at_ms);
                summary.messages += 1;
                summary.oldest_submitted_ms = summary.oldest_submitted_ms.min(submitted);
                summary.earliest_deadline_ms = summary.earliest_deadline_ms.min(record.deadline_ms);
            }
            if summary.messages > 0 {
                out.insert(peer, summary);
            }
        }
        Ok(out)
    }

    /// Moves the deadline of every message queued for `peer` to `until_ms`, but for each no
    /// later than `latest(submitted_at_ms)`; never earlier than it was. One transaction with
    /// one audit entry (`message.deadline-extended`, the peer and the counts); flush after.
    pub fn extend_deadlines(
        &self,
        peer: &str,
        until_ms: i64,
        latest: impl Fn(i64) -> i64,
        now_ms: i64,
    ) -> Result<Extension, LedgerError> {
        let ids: Vec<String> = self
            .queued_records(peer)?
            .into_iter()
            .filter_map(|r| r.status.map(|s| s.message_id))
            .collect();
        self.tx(|t| {
            let mut done = Extension::default();
            for id in &ids {
                let Some(bytes) = t.messages.get(id.as_bytes())? else {
                    continue; // gone meanwhile (erased)
                };
                let mut record: MessageRecord = tx_decode("message record", &bytes)?;
                let Some(status) = record.status.as_ref() else {
                    return abort(LedgerError::corrupt("message record", "no status"));
                };
                if status.state != DeliveryState::Queued as i32 {
                    continue;
                }
                let bound = latest(status.submitted_at_ms);
                let target = until_ms.min(bound);
                if target <= record.deadline_ms {
                    done.unchanged += 1;
                    continue;
                }
                done.extended += 1;
                if target < until_ms {
                    done.capped += 1;
                }
                record.deadline_ms = target;
                t.messages.insert(id.as_bytes(), record.encode_to_vec())?;
            }
            t.append_audit(
                AuditNote::new(AuditEvent::DeadlineExtended)
                    .peer(peer)
                    .detail(format!(
                        "until {until_ms}: {} extended ({} capped), {} unchanged",
                        done.extended, done.capped, done.unchanged
                    )),
                now_ms,
            )?;
            Ok(done)
        })
    }

    /// The records of the messages queued for `peer` (all lanes), in outbox order per lane.
    fn queued_records(&self, peer: &str) -> Result<Vec<MessageRecord>, LedgerError> {
        let mut records = Vec::new();
        for kv in self.outbox.scan_prefix(super::outbox_prefix(peer)) {
            let (k, v) = kv?;
            let entry: crate::records::OutboxEntry = self.open_sealed("outbox", &k, &v)?;
            if let Some(record) = self.message(&entry.message_id)? {
                if record
                    .status
                    .as_ref()
                    .is_some_and(|s| s.state == DeliveryState::Queued as i32)
                {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }
}
