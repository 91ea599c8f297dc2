//! Delivery lanes: each peer's outbox is split into [`DELIVERY_LANES`] FIFO queues, so that
//! several batches to one peer can be in flight at once, while everything that must keep
//! its order stays in one lane.
//!
//! What must keep its order is a consent and what depends on it: its notice before the
//! messages that cite it, a withdrawal after them, and a superseding consent after the
//! consent it replaces and that one's messages. So a message's lane is a function of the
//! *root* of its consent's chain of supersession (the first consent of the chain held
//! here): every consent of a chain, its notices, withdrawals and messages share one lane.
//! Messages about unrelated consents have no order between them to keep.
//!
//! The root is kept with each consent when it is stored ([`StoredConsent::chain_root`]: its
//! predecessor's root if that is held here, else its own id), so queueing reads one consent;
//! a consent stored by an earlier version has none, and its chain is walked (stopping at the
//! first consent on it that has one).
//!
//! Outbox key: recipient ‖ `0x00` ‖ lane ‖ u64 BE sequence. Stores written before lanes
//! (recipient ‖ `0x00` ‖ sequence) get their queued entries moved into their lanes once at
//! open, keeping their sequence numbers and so their order ([`Ledger::move_outbox_into_lanes`]).

use super::{outbox_prefix, Ledger, Tx, TxResult};
use crate::{
    error::LedgerError,
    records::{MessageRecord, StoredConsent},
};
use kurzdraht_proto::v1::ConsentRecord;
use prost::Message;
use sha2::{Digest, Sha256};

/// How many FIFO lanes each peer's outbox has. Part of the store's format: changing it
/// needs a migration of queued entries.
pub const DELIVERY_LANES: u8 = 8;

/// The lane of a chain of consents whose first consent (held here) is `root_consent_id`.
pub fn lane_of_root(root_consent_id: &str) -> u8 {
    Sha256::digest(root_consent_id.as_bytes())[0] % DELIVERY_LANES
}

/// The outbox key of a queued message.
pub(super) fn outbox_key(recipient: &str, lane: u8, seq: u64) -> Vec<u8> {
    let mut key = outbox_prefix(recipient);
    key.push(lane);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix of one lane of a peer's outbox.
pub(super) fn lane_prefix(recipient: &str, lane: u8) -> Vec<u8> {
    let mut key = outbox_prefix(recipient);
    key.push(lane);
    key
}

/// Follows `supersedes` from `consent_id` back to the first consent held, with `get`
/// reading a held consent; returns that root's id. The whole chain is followed, however
/// long (a cut-off would give the later consents another lane than the earlier ones);
/// a cycle — which only a peer's crafted notices could make — ends at the consent whose
/// predecessor was already seen, the same one from every starting point of the cycle
/// (the smallest id on it).
fn chain_root<E>(
    consent_id: &str,
    mut get: impl FnMut(&str) -> Result<Option<StoredConsent>, E>,
) -> Result<String, E> {
    let mut root = consent_id.to_string();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        seen.insert(root.clone());
        let Some(held) = get(&root)? else { break };
        if !held.chain_root.is_empty() {
            return Ok(held.chain_root);
        }
        match held.record {
            Some(r) if !r.supersedes.is_empty() => {
                if seen.contains(&r.supersedes) {
                    // a cycle: name it by its smallest id, whichever consent we started at
                    let on_cycle = cycle_from(&r.supersedes, &mut get)?;
                    return Ok(on_cycle.into_iter().min().unwrap_or(root));
                }
                // A chain never crosses from one controller to another (a peer's notice
                // naming another agency's consent must not move that consent's lane).
                let same_controller = get(&r.supersedes)?
                    .and_then(|p| p.record)
                    .is_some_and(|p| p.recording_agency == r.recording_agency);
                if !same_controller {
                    break;
                }
                root = r.supersedes;
            }
            _ => break,
        }
    }
    Ok(root)
}

/// The ids on the cycle of supersession that `start` lies on.
fn cycle_from<E>(
    start: &str,
    get: &mut impl FnMut(&str) -> Result<Option<StoredConsent>, E>,
) -> Result<Vec<String>, E> {
    let mut ids = vec![start.to_string()];
    let mut at = start.to_string();
    loop {
        let next = get(&at)?
            .and_then(|h| h.record)
            .map(|r| r.supersedes)
            .unwrap_or_default();
        if next.is_empty() || next == start || ids.contains(&next) {
            return Ok(ids);
        }
        ids.push(next.clone());
        at = next;
    }
}

impl Tx<'_> {
    /// The root of the chain `consent_id` lies on, as this transaction sees the consents.
    pub(super) fn root_of(&self, consent_id: &str) -> TxResult<String> {
        chain_root(consent_id, |id| {
            self.get_sealed::<StoredConsent>(self.consents, "consents", id.as_bytes())
        })
    }

    /// The lane of messages citing `consent_id`, as this transaction sees the consents.
    pub(super) fn lane_of(&self, consent_id: &str) -> TxResult<u8> {
        Ok(lane_of_root(&self.root_of(consent_id)?))
    }

    /// The chain root a consent about to be stored gets: its predecessor's, if that is
    /// held here and was recorded by the same agency (a chain never crosses controllers),
    /// else its own id.
    pub(super) fn root_for_new(&self, consent: &ConsentRecord) -> TxResult<String> {
        if consent.supersedes.is_empty() {
            return Ok(consent.consent_id.clone());
        }
        let predecessor = self.get_sealed::<StoredConsent>(
            self.consents,
            "consents",
            consent.supersedes.as_bytes(),
        )?;
        let same_controller = predecessor
            .and_then(|p| p.record)
            .is_some_and(|p| p.recording_agency == consent.recording_agency);
        if same_controller {
            return self.root_of(&consent.supersedes);
        }
        Ok(consent.consent_id.clone())
    }
}

impl Ledger {
    /// The lane of messages citing `consent_id` (see the module doc).
    pub fn lane_of(&self, consent_id: &str) -> Result<u8, LedgerError> {
        let root = chain_root(consent_id, |id| self.consent(id))?;
        Ok(lane_of_root(&root))
    }

    /// Moves entries queued by a version without lanes into their lanes (at every open
    /// with the data key; the scan reads keys of queued messages only): each keeps its
    /// sequence number, so the order within a lane is the order they were queued in. Each
    /// move is one transaction (entry and its status record). Returns how many moved.
    pub(super) fn move_outbox_into_lanes(&self) -> Result<usize, LedgerError> {
        let mut old = Vec::new();
        for kv in self.outbox.iter() {
            let (key, _) = kv?;
            let Some(end) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            if key.len() == end + 1 + 8 {
                old.push(key);
            }
        }
        let mut moved = 0;
        for key in &old {
            let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            let recipient = String::from_utf8_lossy(&key[..end]).into_owned();
            let seq = super::u64_from("outbox key", &key[end + 1..])?;
            let done = self.tx(|t| {
                let Some(entry) =
                    t.get_sealed::<crate::records::OutboxEntry>(t.outbox, "outbox", key)?
                else {
                    return Ok(false);
                };
                let Some(bytes) = t.messages.get(entry.message_id.as_bytes())? else {
                    // A queued entry without its status record cannot be delivered in any
                    // lane (the worker needs the record): it stays where it is, reported.
                    tracing::error!(message_id = %entry.message_id, "queued message without a status record; not moved into a lane");
                    return Ok(false);
                };
                let mut record: MessageRecord = super::tx_decode("message record", &bytes)?;
                let consent_id = record
                    .status
                    .as_ref()
                    .map(|s| s.consent_id.clone())
                    .unwrap_or_default();
                let new_key = outbox_key(&recipient, t.lane_of(&consent_id)?, seq);
                t.outbox.remove(key)?;
                t.put_sealed(t.outbox, "outbox", &new_key, &entry)?;
                record.outbox_key = new_key;
                t.messages
                    .insert(entry.message_id.as_bytes(), record.encode_to_vec())?;
                Ok(true)
            })?;
            moved += usize::from(done);
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{at_rest::DataKey, records::OutboxEntry, Finish, Outgoing};
    use kurzdraht_proto::v1::{ConsentRecord, MessageKind, SignedEnvelope, SignedReceipt};
    use std::collections::HashMap;

    const JA: &str = "jugendamt-kreis-segeberg";

    fn key() -> DataKey {
        DataKey::from_hex(&"4b".repeat(32)).expect("test")
    }

    fn consent(id: &str, supersedes: &str) -> ConsentRecord {
        ConsentRecord {
            consent_id: id.into(),
            supersedes: supersedes.into(),
            recorded_at_ms: 1,
            ..Default::default()
        }
    }

    fn out(id: &str, consent_id: &str) -> Outgoing {
        Outgoing {
            envelope: SignedEnvelope {
                header: id.as_bytes().to_vec(),
                ..Default::default()
            },
            message_id: id.into(),
            kind: MessageKind::CertificationRequest,
            recipient: JA.into(),
            consent_id: consent_id.into(),
            submitted_at_ms: 1,
            deadline_ms: i64::MAX,
            envelope_sha256: [1; 32],
        }
    }

    fn lane_ids(l: &Ledger, lane: u8) -> Vec<String> {
        l.outbox_batch(JA, lane, 100)
            .expect("test")
            .into_iter()
            .map(|e| e.message_id)
            .collect()
    }

    /// Two unrelated consents whose roots fall into different lanes.
    fn two_lanes() -> (String, String) {
        let a = "consent-a".to_string();
        let b = (0..)
            .map(|i| format!("consent-b{i}"))
            .find(|b| lane_of_root(b) != lane_of_root(&a))
            .expect("test");
        (a, b)
    }

    #[test]
    fn a_chain_queues_in_one_lane_in_order() {
        let dir = tempfile::tempdir().expect("test");
        let l = Ledger::open_encrypted(dir.path(), &key()).expect("test");
        let (a, b) = two_lanes();
        l.record_consent(&consent(&a, ""), &[out("n-a", &a)], 1)
            .expect("test");
        l.record_consent(&consent(&b, ""), &[out("n-b", &b)], 1)
            .expect("test");
        assert_eq!(l.enqueue(&out("m1", &a)).expect("test"), lane_of_root(&a));
        l.enqueue(&out("m2", &b)).expect("test");
        // a consent replacing `a` and a message under it follow `a`'s lane
        l.record_consent(&consent("a2", &a), &[out("n-a2", "a2")], 1)
            .expect("test");
        assert_eq!(l.enqueue(&out("m3", "a2")).expect("test"), lane_of_root(&a));
        assert_eq!(lane_ids(&l, lane_of_root(&a)), ["n-a", "m1", "n-a2", "m3"]);
        assert_eq!(lane_ids(&l, lane_of_root(&b)), ["n-b", "m2"]);
        assert_eq!(l.outbox_len(JA), 6);
        assert_eq!(
            l.outbox_head(JA).expect("test").expect("test").message_id,
            "n-a",
            "the head over all lanes is the oldest"
        );
    }

    /// A store of format 2 (before lanes), and one of format 3 that a version without
    /// lanes wrote to after all (a downgrade): their queued entries move into their lanes.
    #[tokio::test]
    async fn entries_queued_without_a_lane_move_into_theirs_at_open() {
        for marked in [2u64, 3] {
            entries_without_a_lane_move(marked).await;
        }
    }

    async fn entries_without_a_lane_move(marked: u64) {
        let dir = tempfile::tempdir().expect("test");
        let (a, b) = two_lanes();
        {
            let l = Ledger::open_encrypted(dir.path(), &key()).expect("test");
            l.record_consent(&consent(&a, ""), &[out("n-a", &a)], 1)
                .expect("test");
            l.record_consent(&consent(&b, ""), &[out("n-b", &b)], 1)
                .expect("test");
            for (m, c) in [("m1", &a), ("m2", &b), ("m3", &a)] {
                l.enqueue(&out(m, c)).expect("test");
            }
            // rewrite the queue as a version without lanes wrote it
            let entries: Vec<_> = l.outbox.iter().map(|kv| kv.expect("test")).collect();
            for (k, v) in entries {
                let end = k.iter().position(|b| *b == 0).expect("test");
                let mut old_key = k[..=end].to_vec();
                old_key.extend_from_slice(&k[end + 2..]);
                let entry: OutboxEntry = l.open_sealed("outbox", &k, &v).expect("test");
                let sealed = l
                    .at_rest
                    .seal("outbox", &old_key, &entry.encode_to_vec())
                    .expect("test");
                l.outbox.remove(&k).expect("test");
                l.outbox.insert(&old_key, sealed).expect("test");
                let mut record = l.message(&entry.message_id).expect("test").expect("test");
                record.outbox_key = old_key;
                l.messages
                    .insert(entry.message_id.as_bytes(), record.encode_to_vec())
                    .expect("test");
            }
            l.meta
                .insert(super::super::SCHEMA, marked.to_be_bytes())
                .expect("test");
            l.flush().await.expect("test");
        }
        let l = Ledger::open_encrypted(dir.path(), &key()).expect("test");
        assert_eq!(lane_ids(&l, lane_of_root(&a)), ["n-a", "m1", "m3"]);
        assert_eq!(lane_ids(&l, lane_of_root(&b)), ["n-b", "m2"]);
        // the status records point at the new keys: finishing takes the entry off the queue
        let receipt = SignedReceipt::default();
        l.finish("m1", &Finish::Delivered { receipt }, 2)
            .expect("test");
        assert_eq!(lane_ids(&l, lane_of_root(&a)), ["n-a", "m3"]);
        assert_eq!(l.outbox_len(JA), 4);
    }

    fn held(id: &str, supersedes: &str) -> StoredConsent {
        StoredConsent {
            record: Some(ConsentRecord {
                consent_id: id.into(),
                supersedes: supersedes.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn root_in(store: &HashMap<&str, StoredConsent>, id: &str) -> String {
        chain_root::<()>(id, |k| Ok(store.get(k).cloned())).unwrap_or_default()
    }

    #[test]
    fn a_chain_shares_the_lane_of_its_first_consent() {
        let store: HashMap<&str, StoredConsent> = [
            ("a", held("a", "")),
            ("b", held("b", "a")),
            ("c", held("c", "b")),
            ("x", held("x", "not-held")),
        ]
        .into_iter()
        .collect();
        assert_eq!(root_in(&store, "c"), "a");
        assert_eq!(root_in(&store, "b"), "a");
        assert_eq!(root_in(&store, "a"), "a");
        assert_eq!(
            root_in(&store, "x"),
            "x",
            "a predecessor not held ends the chain"
        );
        assert_eq!(root_in(&store, "unknown"), "unknown");
    }

    #[test]
    fn a_cycle_is_named_by_its_smallest_id_from_every_start() {
        let store: HashMap<&str, StoredConsent> = [("p", held("p", "q")), ("q", held("q", "p"))]
            .into_iter()
            .collect();
        assert_eq!(root_in(&store, "p"), "p");
        assert_eq!(root_in(&store, "q"), "p");
        // a longer cycle, its smallest id neither first nor last, and a consent leading
        // into it
        let store: HashMap<&str, StoredConsent> = [
            ("r", held("r", "k")),
            ("k", held("k", "t")),
            ("t", held("t", "r")),
            ("z", held("z", "t")),
        ]
        .into_iter()
        .collect();
        for start in ["r", "k", "t", "z"] {
            assert_eq!(root_in(&store, start), "k", "from {start}");
        }
    }

    /// An id (other than `prev`) whose own lane differs from the lane of `root`, so that a
    /// consent with it shows whether its lane follows its root or its id.
    fn replacing(prev: &str, root: &str, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|c| lane_of_root(c) != lane_of_root(root) && *c != prev)
            .expect("test")
    }

    /// The stored notice of a replicated consent `id`.
    fn replicated(id: &str) -> crate::records::InboxRecord {
        crate::records::InboxRecord {
            message_id: format!("notice-{id}"),
            sender: "jobcenter-segeberg".into(),
            envelope_sha256: Sha256::digest(id.as_bytes()).to_vec(),
            consent_id: id.into(),
            envelope: Some(SignedEnvelope {
                header: id.as_bytes().to_vec(),
                ..Default::default()
            }),
            receipt: Some(SignedReceipt::default()),
            ..Default::default()
        }
    }

    /// Queueing under a consent reads the root kept with it, not the chain: with a consent
    /// in the middle of the chain gone from the store (so that a walk would stop short, at
    /// a consent of another lane), messages under the later ones still go to the lane of
    /// the first. Local and replicated consents alike keep the root they had when stored.
    #[test]
    fn the_root_is_kept_with_each_consent_and_queueing_reads_no_chain() {
        let dir = tempfile::tempdir().expect("test");
        let l = Ledger::open_encrypted(dir.path(), &key()).expect("test");
        let a = "consent-a".to_string();
        l.record_consent(&consent(&a, ""), &[], 1).expect("test");
        let b = replacing(&a, &a, "consent-b");
        l.record_consent(&consent(&b, &a), &[], 1).expect("test");
        let c = replacing(&b, &a, "consent-c");
        l.record_consent(&consent(&c, &b), &[], 1).expect("test");
        // a replacement arriving from the agency that recorded it
        let d = replacing(&c, &a, "consent-d");
        l.accept_delivery(
            &replicated(&d),
            &crate::ConsentEffect::Record(consent(&d, &c)),
            2,
        )
        .expect("test");
        // an unrelated consent, and one replacing a consent not held here
        let x = "consent-x".to_string();
        l.record_consent(&consent(&x, ""), &[], 1).expect("test");
        let y = "consent-y".to_string();
        l.accept_delivery(
            &replicated(&y),
            &crate::ConsentEffect::Record(consent(&y, "not-held")),
            2,
        )
        .expect("test");
        for (id, root) in [(&a, &a), (&b, &a), (&c, &a), (&d, &a), (&x, &x), (&y, &y)] {
            assert_eq!(
                &l.consent(id).expect("test").expect("test").chain_root,
                root,
                "{id}"
            );
        }
        // Take `b` out of the store: a walk from `c` or `d` would end at `c`.
        l.consents.remove(b.as_bytes()).expect("test");
        assert_ne!(lane_of_root(&c), lane_of_root(&a));
        for id in [&c, &d] {
            assert_eq!(l.lane_of(id).expect("test"), lane_of_root(&a), "{id}");
        }
        assert_eq!(l.enqueue(&out("m-d", &d)).expect("test"), lane_of_root(&a));
        assert_eq!(lane_ids(&l, lane_of_root(&a)), ["m-d"]);
    }

    /// Consents stored by a version that kept no root: their chain is walked, as before.
    #[test]
    fn consents_stored_without_a_root_fall_back_to_the_walk() {
        let dir = tempfile::tempdir().expect("test");
        let l = Ledger::open_encrypted(dir.path(), &key()).expect("test");
        let a = "consent-a".to_string();
        l.record_consent(&consent(&a, ""), &[], 1).expect("test");
        let b = replacing(&a, &a, "consent-b");
        l.record_consent(&consent(&b, &a), &[], 1).expect("test");
        let c = replacing(&b, &a, "consent-c");
        l.record_consent(&consent(&c, &b), &[], 1).expect("test");
        // as an earlier version wrote them: no root
        for id in [&a, &b, &c] {
            let mut held = l.consent(id).expect("test").expect("test");
            held.chain_root.clear();
            let sealed = l
                .at_rest
                .seal("consents", id.as_bytes(), &held.encode_to_vec())
                .expect("test");
            l.consents.insert(id.as_bytes(), sealed).expect("test");
        }
        assert_eq!(l.lane_of(&c).expect("test"), lane_of_root(&a));
        assert_eq!(l.enqueue(&out("m-c", &c)).expect("test"), lane_of_root(&a));
        // a consent replacing one of them gets the walked root kept
        let d = replacing(&c, &a, "consent-d");
        l.record_consent(&consent(&d, &c), &[], 1).expect("test");
        assert_eq!(l.consent(&d).expect("test").expect("test").chain_root, a);
        assert_eq!(l.enqueue(&out("m-d", &d)).expect("test"), lane_of_root(&a));
        assert_eq!(lane_ids(&l, lane_of_root(&a)), ["m-c", "m-d"]);
    }

    #[test]
    fn lanes_spread_over_all_of_them() {
        let mut seen = [0u32; DELIVERY_LANES as usize];
        for i in 0..4000 {
            seen[lane_of_root(&format!("0190c0de-0000-7000-8000-{i:012}")) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 300), "{seen:?}");
    }
}
