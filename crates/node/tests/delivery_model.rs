//! A property test of store-and-forward: any interleaving of submit, attempt (with lost
//! replies), peer outage, crash and restart of either store, duplicate delivery, withdrawal and
//! the passing of time ends — once the peer is back and the queue drained — with every message
//! delivered exactly once, refused or expired: never lost, never twice in the inbox.
//!
//! It drives the real pieces: two sled ledgers (reopened on "crash"), the delivery decision
//! `next_action`, the consent decision `evaluate`, and the real backoff.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{
    consent::evaluate, Accepted, ConsentEffect, ConsentQuery, Finish, InboxRecord, Ledger,
    Outgoing, StoredConsent,
};
use kurzdraht_node::delivery::{next_action, retry_delay, Action};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryState, MessageKind, Purpose, SignedEnvelope,
    SignedReceipt, Subject,
};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

/// The data key every test store is sealed with.
fn test_key() -> kurzdraht_ledger::DataKey {
    kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap()
}

fn open_keyed(dir: impl AsRef<std::path::Path>) -> Result<Ledger, kurzdraht_ledger::LedgerError> {
    Ledger::open_encrypted(dir.as_ref(), &test_key())
}

const FROM: &str = "jobcenter-segeberg";
const TO: &str = "jugendamt-kreis-segeberg";
const DEADLINE_MS: i64 = 60_000;

#[derive(Debug, Clone)]
enum Op {
    Submit,
    Attempt { lose_reply: bool },
    Peer { up: bool },
    CrashSender,
    CrashReceiver,
    Duplicate(usize),
    Withdraw,
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Submit),
        6 => any::<bool>().prop_map(|l| Op::Attempt { lose_reply: l }),
        2 => any::<bool>().prop_map(|up| Op::Peer { up }),
        1 => Just(Op::CrashSender),
        1 => Just(Op::CrashReceiver),
        1 => (0usize..50).prop_map(Op::Duplicate),
        1 => Just(Op::Withdraw),
        2 => (1i64..30_000).prop_map(Op::Tick),
    ]
}

fn subject() -> Subject {
    Subject {
        given_name: "Lena".into(),
        family_name: "Hansen".into(),
        date_of_birth: "2005-04-12".into(),
        ..Default::default()
    }
}

struct World {
    sender_dir: PathBuf,
    receiver_dir: PathBuf,
    sender: Option<Ledger>,
    receiver: Option<Ledger>,
    now: i64,
    peer_up: bool,
    withdrawn_at: Option<i64>,
    submitted: Vec<String>,
    seen: Vec<InboxRecord>,
}

impl World {
    fn sender(&self) -> &Ledger {
        self.sender.as_ref().unwrap()
    }
    fn receiver(&self) -> &Ledger {
        self.receiver.as_ref().unwrap()
    }

    fn consent(&self) -> StoredConsent {
        StoredConsent {
            record: Some(ConsentRecord {
                consent_id: "c".into(),
                subject: Some(subject()),
                recording_agency: FROM.into(),
                recipients: vec![TO.into()],
                purposes: vec![Purpose::U25MoveOut as i32],
                valid_from_ms: 0,
                valid_until_ms: i64::MAX,
                ..Default::default()
            }),
            withdrawal: self.withdrawn_at.map(|t| ConsentWithdrawalRecord {
                consent_id: "c".into(),
                withdrawn_at_ms: t,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn submit(&mut self) {
        let id = format!("m{:04}", self.submitted.len());
        // Submission checks consent too: after a withdrawal nothing new is queued.
        let subject = subject();
        let q = query(&subject, self.now);
        if evaluate(Some(&self.consent()), &q).is_err() {
            return;
        }
        let envelope = SignedEnvelope {
            header: id.as_bytes().to_vec(),
            payload: b"body".to_vec(),
            signature: vec![1; 64],
            signer: FROM.into(),
        };
        self.sender()
            .enqueue(&Outgoing {
                envelope_sha256: kurzdraht_envelope::envelope_hash(&envelope),
                envelope,
                message_id: id.clone(),
                kind: MessageKind::CertificationRequest,
                recipient: TO.into(),
                consent_id: "c".into(),
                submitted_at_ms: self.now,
                deadline_ms: self.now + DEADLINE_MS,
            })
            .unwrap();
        self.sender().flush().await.unwrap();
        self.submitted.push(id);
    }

    /// One step of the delivery worker, as `delivery.rs` takes it.
    async fn attempt(&mut self, lose_reply: bool) {
        let Some(entry) = self.sender().outbox_head(TO).unwrap() else {
            return;
        };
        let record = self.sender().message(&entry.message_id).unwrap().unwrap();
        let subject = subject();
        let consent = evaluate(Some(&self.consent()), &query(&subject, self.now));
        let how = match next_action(self.now, entry.deadline_ms, record.next_attempt_ms, consent) {
            Action::Expire => Finish::Expired,
            Action::Refuse(r) => Finish::Refused {
                reason: r.code().into(),
            },
            Action::Wait(_) => return,
            Action::Deliver => {
                let receipt = if self.peer_up {
                    Some(self.receive(entry.envelope.clone().unwrap()).await)
                } else {
                    None
                };
                match receipt {
                    Some(receipt) if !lose_reply => Finish::Delivered { receipt },
                    _ => {
                        let attempts = record.status.unwrap().attempts + 1;
                        let delay = retry_delay(
                            attempts,
                            Duration::from_millis(250),
                            Duration::from_secs(20),
                            0.75,
                        );
                        self.sender()
                            .record_attempt(
                                &entry.message_id,
                                "unavailable",
                                self.now + delay.as_millis() as i64,
                                self.now,
                            )
                            .unwrap();
                        return;
                    }
                }
            }
        };
        self.sender()
            .finish(&entry.message_id, &how, self.now)
            .unwrap();
        self.sender().flush().await.unwrap();
    }

    /// The receiver's side: store with a receipt, or find the duplicate and its receipt.
    async fn receive(&mut self, envelope: SignedEnvelope) -> SignedReceipt {
        let hash = kurzdraht_envelope::envelope_hash(&envelope);
        let id = String::from_utf8(envelope.header.clone()).unwrap();
        let record = InboxRecord {
            message_id: id,
            sender: FROM.into(),
            kind: MessageKind::CertificationRequest as i32,
            receipt: Some(SignedReceipt {
                receipt: hash.to_vec(),
                signature: self.now.to_be_bytes().to_vec(),
                batch: None,
            }),
            envelope: Some(envelope),
            envelope_sha256: hash.to_vec(),
            received_at_ms: self.now,
            ..Default::default()
        };
        let receipt = match self
            .receiver()
            .accept_delivery(&record, &ConsentEffect::None, self.now)
            .unwrap()
        {
            Accepted::Stored { .. } => record.receipt.clone().unwrap(),
            Accepted::Duplicate(held) => held.receipt.unwrap(),
        };
        self.receiver().flush().await.unwrap();
        self.seen.push(record);
        receipt
    }
}

fn query(subject: &Subject, at_ms: i64) -> ConsentQuery<'_> {
    ConsentQuery {
        subject,
        sender: FROM,
        recipient: TO,
        purpose: Purpose::U25MoveOut,
        categories: &[],
        at_ms,
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sd = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let mut w = World {
        sender: Some(open_keyed(sd.path()).unwrap()),
        receiver: Some(open_keyed(rd.path()).unwrap()),
        sender_dir: sd.path().to_path_buf(),
        receiver_dir: rd.path().to_path_buf(),
        now: 1_000_000,
        peer_up: true,
        withdrawn_at: None,
        submitted: vec![],
        seen: vec![],
    };
    for op in ops {
        match op {
            Op::Submit => w.submit().await,
            Op::Attempt { lose_reply } => w.attempt(lose_reply).await,
            Op::Peer { up } => w.peer_up = up,
            Op::CrashSender => {
                w.sender = None;
                w.sender = Some(open_keyed(&w.sender_dir).unwrap());
            }
            Op::CrashReceiver => {
                w.receiver = None;
                w.receiver = Some(open_keyed(&w.receiver_dir).unwrap());
            }
            Op::Duplicate(i) => {
                if !w.seen.is_empty() && w.peer_up {
                    let env = w.seen[i % w.seen.len()].envelope.clone().unwrap();
                    w.receive(env).await;
                }
            }
            Op::Withdraw => {
                w.withdrawn_at.get_or_insert(w.now);
            }
            Op::Tick(ms) => w.now += ms,
        }
    }
    // The peer comes back; the worker drains the queue, waiting out each retry time.
    w.peer_up = true;
    for _ in 0..10_000 {
        let Some(head) = w.sender().outbox_head(TO).unwrap() else {
            break;
        };
        let due = w
            .sender()
            .message(&head.message_id)
            .unwrap()
            .unwrap()
            .next_attempt_ms;
        w.now = w.now.max(due);
        w.attempt(false).await;
    }
    prop_assert_eq!(w.sender().outbox_len(TO), 0, "queue not drained");
    let inbox = w.receiver().inbox_after(0, 100_000).unwrap();
    for id in &w.submitted {
        let copies: Vec<_> = inbox.iter().filter(|r| &r.message_id == id).collect();
        prop_assert!(
            copies.len() <= 1,
            "{} is in the inbox {} times",
            id,
            copies.len()
        );
        let status = w.sender().message(id).unwrap().unwrap().status.unwrap();
        let state = DeliveryState::try_from(status.state).unwrap();
        match state {
            DeliveryState::Delivered => {
                prop_assert_eq!(copies.len(), 1, "{} delivered but not in the inbox", id);
                prop_assert_eq!(
                    status.receipt.as_ref(),
                    copies[0].receipt.as_ref(),
                    "receipt differs for {}",
                    id
                );
            }
            DeliveryState::Refused => prop_assert!(w.withdrawn_at.is_some()),
            DeliveryState::Expired => {}
            other => prop_assert!(false, "{} ended {:?}", id, other),
        }
    }
    prop_assert!(w.sender().verify_audit().is_ok());
    prop_assert!(w.receiver().verify_audit().is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_message_ends_delivered_once_refused_or_expired(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
