//! The reading side of the AgencyApi: the inbox as a stream from a cursor (optionally
//! following new arrivals), and acknowledgement by the IT system. The first time an IT
//! system is given an item is audited (`inbox.read`, marked in the record); re-reads are not.

use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_ledger::InboxRecord;
use kurzdraht_proto::v1::{InboxItem, MessageBody, MessageKind, ReadInboxRequest};
use prost::Message;
use tokio::sync::mpsc;

const BATCH: usize = 64;

/// The most records one filtered page of [`Inbox::page`] looks at.
pub const PAGE_SCAN: usize = 4096;

/// A page of the inbox, newest first.
#[derive(Debug, Clone)]
pub struct InboxPage {
    pub items: Vec<InboxItem>,
    /// Where the next (older) page starts; `None`: this was the last.
    pub next_before: Option<u64>,
}

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

    /// A page of the inbox for a person reading it (the console), newest first: up to
    /// `limit` items before `before_seq`, only of `kind` when given. A filtered page looks
    /// at no more than [`PAGE_SCAN`] records; `next_before` continues where it stopped.
    /// Listing is not a read: [`Inbox::open`] is.
    pub fn page(
        &self,
        before_seq: Option<u64>,
        limit: usize,
        kind: Option<MessageKind>,
    ) -> Result<InboxPage, NodeError> {
        let limit = limit.clamp(1, BATCH);
        let mut items = Vec::new();
        let mut cursor = before_seq;
        let mut scanned = 0;
        let mut more = true;
        while items.len() < limit && scanned < PAGE_SCAN {
            let batch = self.shared.ledger().inbox_before(cursor, BATCH)?;
            more = batch.len() == BATCH;
            for record in batch {
                scanned += 1;
                cursor = Some(record.seq);
                if kind.is_some_and(|k| record.kind != k as i32) {
                    continue;
                }
                items.push(self.inbox_item(record)?);
                if items.len() == limit {
                    break;
                }
            }
            if !more {
                break;
            }
        }
        let next_before = match (items.len() == limit || scanned >= PAGE_SCAN) && more {
            true => cursor,
            false => None,
        };
        Ok(InboxPage { items, next_before })
    }

    /// One inbox item, as `client` opens it: the first opening by each client is audited
    /// (`inbox.read`), like an IT system's first read.
    pub fn open(&self, message_id: &str, client: &str) -> Result<InboxItem, NodeError> {
        kurzdraht_envelope::ids::parse_id("message_id", message_id)
            .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
        let ledger = self.shared.ledger();
        let record = ledger
            .inbox_record(message_id)?
            .ok_or_else(|| NodeError::NotFound(format!("no inbox message {message_id}")))?;
        if !record.read_by.iter().any(|c| c == client) {
            ledger.note_read(message_id, client, self.shared.now_ms())?;
        }
        self.inbox_item(record)
    }

    /// Records after `after_seq`, oldest first, only of `kind` when given — what arrived
    /// since a reader last looked (no more than [`PAGE_SCAN`] records are looked at) — and
    /// the sequence number the next look starts after. Not a read.
    pub fn since(
        &self,
        after_seq: u64,
        kind: Option<MessageKind>,
    ) -> Result<(Vec<InboxItem>, u64), NodeError> {
        let mut items = Vec::new();
        let mut cursor = after_seq;
        let mut scanned = 0;
        while scanned < PAGE_SCAN && items.len() < BATCH {
            let batch = self.shared.ledger().inbox_after(cursor, BATCH)?;
            let fetched = batch.len();
            for record in batch {
                scanned += 1;
                cursor = record.seq;
                if kind.is_none_or(|k| record.kind == k as i32) {
                    items.push(self.inbox_item(record)?);
                }
            }
            if fetched < BATCH {
                break;
            }
        }
        Ok((items, cursor))
    }

    /// The sequence number of the newest received message (0: none yet).
    pub fn newest_seq(&self) -> Result<u64, NodeError> {
        Ok(self.shared.ledger().newest_inbox_seq()?)
    }

    /// Marks an inbox message as taken over by `client` (an IT system or a console account).
    pub async fn acknowledge(&self, message_id: &str, client: &str) -> Result<(), NodeError> {
        kurzdraht_envelope::ids::parse_id("message_id", message_id)
            .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
        self.shared
            .ledger()
            .acknowledge(message_id, client, self.shared.now_ms())?;
        self.shared.ledger().flush().await?;
        Ok(())
    }
}
