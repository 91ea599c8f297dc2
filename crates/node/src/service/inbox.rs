//! The reading side of the AgencyApi: the inbox as a stream from a cursor (optionally
//! following new arrivals), and acknowledgement by the IT system. The first time an IT
//! system is given an item is audited (`inbox.read`, marked in the record); re-reads are not.

use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_ledger::InboxRecord;
use kurzdraht_proto::v1::{InboxItem, MessageBody, ReadInboxRequest};
use prost::Message;
use tokio::sync::mpsc;

const BATCH: usize = 64;

/// The inbox the IT systems read and acknowledge.
#[derive(Clone)]
pub struct Inbox {
    shared: Shared,
}

impl Inbox {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn inbox_item(&self, r: InboxRecord) -> Result<InboxItem, NodeError> {
        if r.notice.is_some() {
            return Ok(InboxItem {
                seq: r.seq,
                message_id: r.message_id,
                kind: r.kind,
                sender: self.shared.agency().to_string(),
                created_at_ms: r.created_at_ms,
                received_at_ms: r.received_at_ms,
                consent_id: r.consent_id,
                acknowledged: r.acknowledged,
                notice: r.notice,
                ..Default::default()
            });
        }
        let envelope = r.envelope.unwrap_or_default();
        if r.body_erased_at_ms > 0 {
            return Ok(InboxItem {
                seq: r.seq,
                message_id: r.message_id,
                kind: r.kind,
                sender: r.sender,
                created_at_ms: r.created_at_ms,
                received_at_ms: r.received_at_ms,
                consent_id: r.consent_id,
                in_reply_to: r.in_reply_to,
                body: None,
                acknowledged: r.acknowledged,
                envelope: Some(envelope),
                notice: None,
                body_erased: true,
            });
        }
        // Verified when it was received; decoding the stored bytes again cannot fail unless
        // the store is corrupt.
        let body = MessageBody::decode(envelope.payload.as_slice()).map_err(|e| {
            kurzdraht_ledger::LedgerError::Corrupt {
                what: "inbox envelope",
                reason: e.to_string(),
            }
        })?;
        Ok(InboxItem {
            seq: r.seq,
            message_id: r.message_id,
            kind: r.kind,
            sender: r.sender,
            created_at_ms: r.created_at_ms,
            received_at_ms: r.received_at_ms,
            consent_id: r.consent_id,
            in_reply_to: r.in_reply_to,
            body: Some(body),
            acknowledged: r.acknowledged,
            envelope: Some(envelope),
            notice: None,
            body_erased: false,
        })
    }

    /// Streams inbox items after `req.after_seq` into a channel; with `follow` it waits for
    /// new arrivals until the reader goes away.
    pub fn read_inbox(
        &self,
        req: ReadInboxRequest,
        client: String,
    ) -> mpsc::Receiver<Result<InboxItem, NodeError>> {
        let (tx, rx) = mpsc::channel(BATCH);
        let node = self.clone();
        tokio::spawn(async move {
            let mut cursor = req.after_seq;
            let mut changes = node.shared.inbox_watch();
            let mut closing = node.shared.closing();
            loop {
                changes.borrow_and_update();
                let batch = match node.shared.ledger().inbox_after(cursor, BATCH) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let fetched = batch.len();
                for record in batch {
                    cursor = record.seq;
                    if req.unacknowledged_only && record.acknowledged {
                        continue;
                    }
                    // The first read by each IT system is audited, a re-read is not.
                    if !record.read_by.contains(&client) {
                        if let Err(e) = node.shared.ledger().note_read(
                            &record.message_id,
                            &client,
                            node.shared.now_ms(),
                        ) {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                    if tx.send(node.inbox_item(record)).await.is_err() {
                        return; // reader went away
                    }
                }
                if fetched == BATCH {
                    continue;
                }
                if !req.follow {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = closing.wait_for(|c| *c) => return,
                }
            }
        });
        rx
    }

    /// Marks an inbox message as taken over by the IT system.
    pub async fn acknowledge(&self, message_id: &str) -> Result<(), NodeError> {
        kurzdraht_envelope::ids::parse_id("message_id", message_id)
            .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
        self.shared
            .ledger()
            .acknowledge(message_id, self.shared.now_ms())?;
        self.shared.ledger().flush().await?;
        Ok(())
    }
}
