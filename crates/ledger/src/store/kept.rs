//! What this node delivered, kept for a window after delivery: each delivered message's
//! sealed envelope (its receipt stays in the message's status), so that a peer restored
//! from a backup can ask for what it no longer holds ([`Ledger::delivered_to`],
//! [`Ledger::kept_delivery`]) and nothing depends on one node's disk alone.
//!
//! One tree, `delivered`, under one-byte key prefixes:
//!
//! | key                                                   | value                       |
//! |-------------------------------------------------------|-----------------------------|
//! | `e` message id                                        | sealed [`KeptDelivery`]     |
//! | `r` recipient `0x00` delivered at (u64 BE) seq (u64)  | envelope hash ‖ message id  |
//! | `t` delivered at (u64 BE) seq (u64 BE)                | [`KeptRef`] (ids only)      |
//! | `c` consent id `0x00` message id                      | empty                       |
//!
//! `r` lists what was delivered to one peer in delivery order, from a time on; `t` lets the
//! retention sweep prune what is older than the window without reading anything else; `c`
//! lets an erasure find the envelopes about a person. Erasure drops the envelope (`e`) but
//! keeps the listing entry, so a restored peer learns that the message existed and that it
//! cannot be had again; a pruned delivery leaves no entry. Written in the transaction that
//! marks the message delivered ([`Tx::finish`]).

use super::{Ledger, Tx, TxResult};
use crate::{
    audit::{AuditEvent, AuditNote},
    error::LedgerError,
    records::{KeptDelivery, KeptRef},
};
use kurzdraht_proto::v1::{MessageKind, SignedEnvelope};
use prost::Message;
use std::collections::BTreeSet;

const ENVELOPE: u8 = b'e';
const BY_RECIPIENT: u8 = b'r';
const BY_TIME: u8 = b't';
const BY_CONSENT: u8 = b'c';
/// The tree's name, also the associated data of its sealed values.
pub(super) const TREE: &str = "delivered";

/// Where a listing of deliveries to one peer goes on: after this delivery (time, seq).
pub type Cursor = (u64, u64);

/// One delivery to a peer, as [`Ledger::delivered_to`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredEntry {
    pub message_id: String,
    pub envelope_sha256: Vec<u8>,
    pub delivered_at_ms: i64,
    /// Whether its envelope is still kept (false once an erasure dropped it).
    pub envelope_kept: bool,
    /// Pass as `after` to list the deliveries after this one.
    pub cursor: Cursor,
}

fn envelope_key(message_id: &str) -> Vec<u8> {
    let mut key = vec![ENVELOPE];
    key.extend_from_slice(message_id.as_bytes());
    key
}

fn recipient_prefix(recipient: &str) -> Vec<u8> {
    let mut key = vec![BY_RECIPIENT];
    key.extend_from_slice(recipient.as_bytes());
    key.push(0);
    key
}

fn at_seq(at_ms: i64, seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(at_ms.max(0) as u64).to_be_bytes());
    b[8..].copy_from_slice(&seq.to_be_bytes());
    b
}

fn recipient_key(recipient: &str, at_ms: i64, seq: u64) -> Vec<u8> {
    let mut key = recipient_prefix(recipient);
    key.extend_from_slice(&at_seq(at_ms, seq));
    key
}

fn time_key(at_ms: i64, seq: u64) -> Vec<u8> {
    let mut key = vec![BY_TIME];
    key.extend_from_slice(&at_seq(at_ms, seq));
    key
}

fn consent_prefix(consent_id: &str) -> Vec<u8> {
    let mut key = vec![BY_CONSENT];
    key.extend_from_slice(consent_id.as_bytes());
    key.push(0);
    key
}

fn consent_key(consent_id: &str, message_id: &str) -> Vec<u8> {
    let mut key = consent_prefix(consent_id);
    key.extend_from_slice(message_id.as_bytes());
    key
}

fn cursor_of(key: &[u8], prefix_len: usize) -> Result<Cursor, LedgerError> {
    let tail = key.get(prefix_len..).unwrap_or_default();
    Ok((
        super::u64_from("kept delivery key", tail)?,
        super::u64_from("kept delivery key", tail.get(8..).unwrap_or_default())?,
    ))
}

impl Tx<'_> {
    /// Keeps a message just delivered (inside [`Tx::finish`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep_delivered(
        &self,
        message_id: &str,
        recipient: &str,
        consent_id: &str,
        kind: i32,
        envelope: SignedEnvelope,
        envelope_sha256: &[u8],
        now_ms: i64,
        seq: u64,
    ) -> TxResult<()> {
        let kept = KeptDelivery {
            message_id: message_id.to_string(),
            recipient: recipient.to_string(),
            consent_id: consent_id.to_string(),
            kind,
            delivered_at_ms: now_ms,
            seq,
            envelope: Some(envelope),
        };
        self.put_sealed(self.delivered, TREE, &envelope_key(message_id), &kept)?;
        let mut listed = envelope_sha256.to_vec();
        listed.extend_from_slice(message_id.as_bytes());
        self.delivered
            .insert(recipient_key(recipient, now_ms, seq), listed)?;
        let reference = KeptRef {
            message_id: message_id.to_string(),
            recipient: recipient.to_string(),
            consent_id: consent_id.to_string(),
        };
        self.delivered
            .insert(time_key(now_ms, seq), reference.encode_to_vec())?;
        if !consent_id.is_empty() {
            self.delivered
                .insert(consent_key(consent_id, message_id), [])?;
        }
        Ok(())
    }
}

impl Ledger {
    /// Up to `limit` deliveries to `recipient` made at or after `since_ms` (this node's
    /// clock) and after `after`, in delivery order: one page of what a restored peer asks
    /// for. Reads only the entries it returns.
    pub fn delivered_to(
        &self,
        recipient: &str,
        since_ms: i64,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<DeliveredEntry>, LedgerError> {
        let prefix = recipient_prefix(recipient);
        let mut from = recipient_key(recipient, since_ms, 0);
        if let Some((at, seq)) = after {
            let mut next = prefix.clone();
            next.extend_from_slice(&at.to_be_bytes());
            next.extend_from_slice(&seq.to_be_bytes());
            next.push(0); // the smallest key after the cursor's
            from = from.max(next);
        }
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1; // recipient ‖ 0x01 sorts after every key of the recipient
        }
        let mut page = Vec::new();
        for kv in self.delivered.range(from..end).take(limit) {
            let (key, value) = kv?;
            let cursor = cursor_of(&key, prefix.len())?;
            if value.len() < 32 {
                return Err(LedgerError::corrupt("kept delivery listing", "too short"));
            }
            let message_id = String::from_utf8(value[32..].to_vec())
                .map_err(|_| LedgerError::corrupt("kept delivery listing", "id not UTF-8"))?;
            page.push(DeliveredEntry {
                envelope_kept: self.delivered.contains_key(envelope_key(&message_id))?,
                envelope_sha256: value[..32].to_vec(),
                delivered_at_ms: cursor.0 as i64,
                message_id,
                cursor,
            });
        }
        Ok(page)
    }

    /// The kept delivery of `message_id`, if it is still kept.
    pub fn kept_delivery(&self, message_id: &str) -> Result<Option<KeptDelivery>, LedgerError> {
        self.get_sealed(&self.delivered, TREE, &envelope_key(message_id))
    }

    /// The oldest delivery still listed (its time), if any: what a restored peer can still
    /// reconcile from.
    pub fn oldest_kept_ms(&self) -> Result<Option<i64>, LedgerError> {
        match self.delivered.scan_prefix([BY_TIME]).next() {
            Some(kv) => Ok(Some(cursor_of(&kv?.0, 1)?.0 as i64)),
            None => Ok(None),
        }
    }

    /// Forgets up to `limit` deliveries made before `delivered_before_ms`, oldest first
    /// (through the time index; nothing else is read), each with every entry it has.
    /// Returns how many; call again until fewer than `limit`, flush after. Audited as one
    /// entry per call that pruned any (ids only: how many, up to when).
    pub fn prune_kept(
        &self,
        delivered_before_ms: i64,
        now_ms: i64,
        limit: usize,
    ) -> Result<usize, LedgerError> {
        let until = delivered_before_ms.max(0) as u64;
        let mut due = Vec::new();
        for kv in self.delivered.scan_prefix([BY_TIME]).take(limit) {
            let (key, value) = kv?;
            let (at, seq) = cursor_of(&key, 1)?;
            if at >= until {
                break;
            }
            let reference: KeptRef = super::decode("kept delivery reference", &value)?;
            due.push((at as i64, seq, reference));
        }
        if due.is_empty() {
            return Ok(0);
        }
        self.tx(|t| {
            for (at, seq, r) in &due {
                t.delivered.remove(time_key(*at, *seq))?;
                t.delivered.remove(recipient_key(&r.recipient, *at, *seq))?;
                t.delivered.remove(envelope_key(&r.message_id))?;
                if !r.consent_id.is_empty() {
                    t.delivered
                        .remove(consent_key(&r.consent_id, &r.message_id))?;
                }
            }
            t.append_audit(
                AuditNote::new(AuditEvent::KeptPruned).detail(format!(
                    "{} delivered envelopes kept since before {delivered_before_ms}",
                    due.len()
                )),
                now_ms,
            )
        })?;
        Ok(due.len())
    }

    /// Drops the kept envelopes of the messages sent under `consent_ids` (an erasure): the
    /// listing entries stay (ids and hash), the receipts stay in the messages' status.
    /// Withdrawal notices carry no personal data and are kept, so that a restored peer
    /// still learns of the withdrawal. Each drop is audited as `event`. Returns how many.
    pub fn drop_kept_under(
        &self,
        consent_ids: &BTreeSet<String>,
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<u32, LedgerError> {
        let mut dropped = 0;
        for cid in consent_ids {
            let prefix = consent_prefix(cid);
            let ids = self
                .delivered
                .scan_prefix(&prefix)
                .map(|kv| {
                    let (key, _) = kv?;
                    String::from_utf8(key[prefix.len()..].to_vec())
                        .map_err(|_| LedgerError::corrupt("kept delivery key", "id not UTF-8"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for id in ids {
                let done = self.tx(|t| {
                    let key = envelope_key(&id);
                    let Some(kept) = t.get_sealed::<KeptDelivery>(t.delivered, TREE, &key)? else {
                        t.delivered.remove(consent_key(cid, &id))?;
                        return Ok(false);
                    };
                    if kept.kind == MessageKind::ConsentWithdrawal as i32 {
                        return Ok(false);
                    }
                    t.delivered.remove(key)?;
                    t.delivered.remove(consent_key(cid, &id))?;
                    t.append_audit(
                        AuditNote::new(event)
                            .message(&id)
                            .consent(cid)
                            .peer(&kept.recipient)
                            .kind(kept.kind)
                            .detail("kept delivered envelope dropped"),
                        now_ms,
                    )?;
                    Ok(true)
                })?;
                dropped += u32::from(done);
            }
        }
        Ok(dropped)
    }
}
