//! Integration tests of the ledger against real store directories.

// Helpers outside `#[test]` functions are test code too; `allow-unwrap-in-tests` does not see them.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::db;
use kurzdraht_ledger::records::AuditEntry;
use kurzdraht_ledger::{
    Accepted, ConsentEffect, ConsentRefusal, Direction, Finish, InboxRecord, Ledger, LedgerError,
    Outgoing,
};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryState, MessageKind, Purpose, SignedEnvelope,
    SignedReceipt, Subject,
};
use proptest::prelude::*;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// The data key every test store is sealed with.
fn test_key() -> kurzdraht_ledger::DataKey {
    kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap()
}

fn open_keyed(dir: impl AsRef<std::path::Path>) -> Result<Ledger, kurzdraht_ledger::LedgerError> {
    Ledger::open_encrypted(dir.as_ref(), &test_key())
}

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";
const JN: &str = "jugendamt-norderstedt";

fn envelope(id: &str) -> SignedEnvelope {
    SignedEnvelope {
        header: format!("header of {id}").into_bytes(),
        payload: format!("payload of {id}").into_bytes(),
        signature: vec![7; 64],
        signer: JC.into(),
    }
}

fn hash_of(id: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in id.bytes().enumerate() {
        h[i % 32] ^= b;
        h[(i + 1) % 32] = h[(i + 1) % 32].wrapping_add(b);
    }
    h
}

fn outgoing(id: &str, recipient: &str, consent_id: &str, at_ms: i64) -> Outgoing {
    Outgoing {
        envelope: envelope(id),
        message_id: id.into(),
        kind: MessageKind::CertificationRequest,
        recipient: recipient.into(),
        consent_id: consent_id.into(),
        submitted_at_ms: at_ms,
        deadline_ms: at_ms + 86_400_000,
        envelope_sha256: hash_of(id),
    }
}

/// A queued withdrawal notice (not a case message: queued whatever the consent's state).
fn withdrawal_notice(id: &str, recipient: &str, consent_id: &str, at_ms: i64) -> Outgoing {
    Outgoing {
        kind: MessageKind::ConsentWithdrawal,
        ..outgoing(id, recipient, consent_id, at_ms)
    }
}

fn consent(id: &str) -> ConsentRecord {
    ConsentRecord {
        consent_id: id.into(),
        subject: Some(Subject {
            given_name: "Lena".into(),
            family_name: "Muster".into(),
            date_of_birth: "2004-03-01".into(),
            ..Default::default()
        }),
        recording_agency: JC.into(),
        recipients: vec![JA.into(), JN.into()],
        purposes: vec![Purpose::U25MoveOut as i32],
        valid_from_ms: 1_000,
        valid_until_ms: 1_000_000,
        recorded_by: "caseworker-1".into(),
        recorded_at_ms: 1_000,
        ..Default::default()
    }
}

fn withdrawal(id: &str, at_ms: i64) -> ConsentWithdrawalRecord {
    ConsentWithdrawalRecord {
        consent_id: id.into(),
        withdrawn_at_ms: at_ms,
        recorded_by: "caseworker-2".into(),
        manner: "in writing".into(),
    }
}

fn receipt(tag: u8) -> SignedReceipt {
    SignedReceipt {
        receipt: vec![tag; 40],
        signature: vec![tag.wrapping_add(1); 64],
        batch: None,
    }
}

fn inbox(id: &str, hash_tag: u8, receipt_tag: u8) -> InboxRecord {
    InboxRecord {
        seq: 0,
        message_id: id.into(),
        sender: JC.into(),
        kind: MessageKind::CertificationRequest as i32,
        envelope: Some(envelope(id)),
        receipt: Some(receipt(receipt_tag)),
        envelope_sha256: vec![hash_tag; 32],
        received_at_ms: 5_000,
        created_at_ms: 4_000,
        consent_id: "c-1".into(),
        in_reply_to: String::new(),
        acknowledged: false,
        notice: None,
        body_erased_at_ms: 0,
        read_by: Vec::new(),
        duplicate_audited: false,
    }
}

fn audit_count(l: &Ledger) -> u64 {
    l.verify_audit().unwrap().entries
}

fn events(l: &Ledger) -> Vec<String> {
    l.audit_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn state(l: &Ledger, id: &str) -> i32 {
    l.message(id).unwrap().unwrap().status.unwrap().state
}

fn ids_of(records: &[InboxRecord]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| (r.seq, r.message_id.clone()))
        .collect()
}

// 1. ---------------------------------------------------------------------------------------

#[tokio::test]
async fn consent_with_notices_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let c = consent("c-1");
    let n1 = outgoing("m-ja", JA, "c-1", 2_000);
    let n2 = outgoing("m-jn", JN, "c-1", 2_000);
    {
        let l = open_keyed(dir.path()).unwrap();
        l.record_consent(&c, &[n1.clone(), n2.clone()], 2_000)
            .unwrap();
        l.flush().await.unwrap();
    }

    let l = open_keyed(dir.path()).unwrap();
    let stored = l.consent("c-1").unwrap().expect("consent survives reopen");
    assert_eq!(stored.record.as_ref(), Some(&c));
    assert!(stored.withdrawal.is_none());
    assert_eq!(l.consents_iter().count(), 1);

    for n in [&n1, &n2] {
        let head = l.outbox_head(&n.recipient).unwrap().expect("notice queued");
        assert_eq!(head.message_id, n.message_id);
        assert_eq!(head.recipient, n.recipient);
        assert_eq!(head.envelope.as_ref(), Some(&n.envelope));
        assert_eq!(head.deadline_ms, n.deadline_ms);
        assert_eq!(l.outbox_len(&n.recipient), 1);

        let rec = l.message(&n.message_id).unwrap().expect("message record");
        let st = rec.status.as_ref().unwrap();
        assert_eq!(st.state, DeliveryState::Queued as i32);
        assert_eq!(st.message_id, n.message_id);
        assert_eq!(st.recipient, n.recipient);
        assert_eq!(st.consent_id, "c-1");
        assert_eq!(st.kind, MessageKind::CertificationRequest as i32);
        assert_eq!(st.attempts, 0);
        assert_eq!(st.submitted_at_ms, 2_000);
        assert_eq!(rec.envelope_sha256, n.envelope_sha256.to_vec());
        assert_eq!(rec.deadline_ms, n.deadline_ms);
        assert!(!rec.outbox_key.is_empty());
    }
    assert_eq!(
        l.peers_with_queued()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![JA.to_string(), JN.to_string()]
    );

    let report = l.verify_audit().unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(
        events(&l),
        ["consent.recorded", "message.submitted", "message.submitted"]
    );
    let entries = l.audit_entries().unwrap();
    assert_eq!(entries[0].consent_id, "c-1");
    assert_eq!(entries[1].message_id, "m-ja");
    assert_eq!(entries[1].peer, JA);
    assert_eq!(entries[2].message_id, "m-jn");
    assert_eq!(entries[2].envelope_sha256, n2.envelope_sha256.to_vec());
}

#[tokio::test]
async fn fifo_order_and_chain_continue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_keyed(dir.path()).unwrap();
        l.enqueue(&outgoing("m1", JA, "c", 1)).unwrap();
        l.enqueue(&outgoing("m2", JA, "c", 2)).unwrap();
        l.flush().await.unwrap();
    }
    {
        let l = open_keyed(dir.path()).unwrap();
        l.enqueue(&outgoing("m3", JA, "c", 3)).unwrap();
        l.finish("m1", &Finish::Expired, 4).unwrap();
        l.flush().await.unwrap();
    }
    let l = open_keyed(dir.path()).unwrap();
    let mut order = vec![];
    while let Some(head) = l.outbox_head(JA).unwrap() {
        order.push(head.message_id.clone());
        l.finish(
            &head.message_id,
            &Finish::Delivered {
                receipt: receipt(1),
            },
            5,
        )
        .unwrap();
        assert!(
            order.len() <= 2,
            "finish did not take {order:?} out of the outbox"
        );
    }
    assert_eq!(order, ["m2", "m3"]);
    assert_eq!(l.verify_audit().unwrap().entries, 6);
}

// 2. ---------------------------------------------------------------------------------------

#[test]
fn second_open_of_same_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_keyed(dir.path()).unwrap();
    match open_keyed(dir.path()) {
        Err(LedgerError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("a second open of a locked directory succeeded"),
    }
    // the first handle is unaffected
    first.enqueue(&outgoing("m", JA, "c", 1)).unwrap();
    assert_eq!(first.outbox_len(JA), 1);
}

// 3. ---------------------------------------------------------------------------------------

#[test]
fn outbox_is_fifo_per_peer() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    assert!(l.peers_with_queued().unwrap().is_empty());
    assert!(l.outbox_head(JA).unwrap().is_none());

    // interleaved: A A B A B A B A
    let plan = [JA, JA, JN, JA, JN, JA, JN, JA];
    let mut a_ids = vec![];
    let mut b_ids = vec![];
    for (i, peer) in plan.iter().enumerate() {
        let id = format!("m-{i:02}");
        l.enqueue(&outgoing(&id, peer, "c", 100 + i as i64))
            .unwrap();
        if *peer == JA {
            a_ids.push(id)
        } else {
            b_ids.push(id)
        }
    }
    assert_eq!(l.outbox_len(JA), 5);
    assert_eq!(l.outbox_len(JN), 3);
    assert_eq!(l.outbox_len(JC), 0);
    assert_eq!(
        l.peers_with_queued()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![JA.to_string(), JN.to_string()]
    );

    let mut out = vec![];
    while let Some(head) = l.outbox_head(JA).unwrap() {
        assert_eq!(head.recipient, JA);
        out.push(head.message_id.clone());
        l.finish(
            &head.message_id,
            &Finish::Delivered {
                receipt: receipt(9),
            },
            500,
        )
        .unwrap();
        assert_eq!(l.outbox_len(JA), 5 - out.len());
        // B is untouched
        assert_eq!(l.outbox_len(JN), 3);
        assert_eq!(l.outbox_head(JN).unwrap().unwrap().message_id, b_ids[0]);
        assert!(out.len() <= 5, "outbox head never empties");
    }
    assert_eq!(out, a_ids);
    for id in &a_ids {
        let st = l.message(id).unwrap().unwrap().status.unwrap();
        assert_eq!(st.state, DeliveryState::Delivered as i32);
        assert_eq!(st.receipt, Some(receipt(9)));
    }
    for id in &b_ids {
        assert_eq!(state(&l, id), DeliveryState::Queued as i32);
    }
    assert_eq!(
        l.peers_with_queued()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![JN.to_string()]
    );
    assert_eq!(l.verify_audit().unwrap().entries, 8 + 5);
}

#[test]
fn peers_sharing_a_name_prefix_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for (i, peer) in ["a", "a-b", "ab", "a", "b"].iter().enumerate() {
        l.enqueue(&outgoing(&format!("m{i}"), peer, "c", i as i64))
            .unwrap();
    }
    assert_eq!(l.outbox_len("a"), 2);
    assert_eq!(l.outbox_len("a-b"), 1);
    assert_eq!(l.outbox_len("ab"), 1);
    assert_eq!(l.outbox_head("a").unwrap().unwrap().message_id, "m0");
    assert_eq!(l.outbox_head("ab").unwrap().unwrap().message_id, "m2");
    assert_eq!(
        l.peers_with_queued()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["a", "a-b", "ab", "b"]
    );
}

#[test]
fn concurrent_writers_keep_one_chain_and_per_thread_order() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    // every thread writes to the shared peer and to its own one
                    let id = format!("t{t}-{i:02}");
                    l.enqueue(&outgoing(&id, JA, "c", i)).unwrap();
                    l.enqueue(&outgoing(
                        &format!("{id}-own"),
                        &format!("peer-{t}"),
                        "c",
                        i,
                    ))
                    .unwrap();
                    l.audit(
                        kurzdraht_ledger::AuditNote::new(kurzdraht_ledger::AuditEvent::InboxRead)
                            .peer(JA),
                        i,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = l.verify_audit().unwrap();
    assert_eq!(report.entries, 4 * 25 * 3);
    assert_eq!(l.outbox_len(JA), 100);
    // the shared queue keeps each writer's messages in the order it submitted them
    let mut seen: Vec<Vec<String>> = vec![vec![]; 4];
    while let Some(head) = l.outbox_head(JA).unwrap() {
        let t: usize = head.message_id[1..2].parse().unwrap();
        seen[t].push(head.message_id.clone());
        l.finish(&head.message_id, &Finish::Expired, 1_000).unwrap();
        assert!(seen.iter().map(Vec::len).sum::<usize>() <= 100);
    }
    for (t, ids) in seen.iter().enumerate() {
        let expect: Vec<String> = (0..25).map(|i| format!("t{t}-{i:02}")).collect();
        assert_eq!(ids, &expect);
        assert_eq!(l.outbox_len(&format!("peer-{t}")), 25);
    }
    assert_eq!(l.verify_audit().unwrap().entries, 300 + 100);
}

// 4. ---------------------------------------------------------------------------------------

#[test]
fn finish_sets_final_state_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for id in ["ref", "rej", "exp", "del"] {
        l.enqueue(&outgoing(id, JA, "c", 10)).unwrap();
    }
    assert_eq!(audit_count(&l), 4);

    // attempts
    l.record_attempt("ref", "connection refused", 5_000, 20, false)
        .unwrap();
    l.record_attempt("ref", "timeout", 9_000, 30, false)
        .unwrap();
    let rec = l.message("ref").unwrap().unwrap();
    let st = rec.status.as_ref().unwrap();
    assert_eq!(st.attempts, 2);
    assert_eq!(st.detail, "timeout");
    assert_eq!(st.updated_at_ms, 30);
    assert_eq!(st.state, DeliveryState::Queued as i32);
    assert_eq!(rec.next_attempt_ms, 9_000);
    assert_eq!(l.outbox_len(JA), 4, "an attempt leaves the message queued");
    assert_eq!(audit_count(&l), 4, "attempts are not audited");

    l.finish(
        "ref",
        &Finish::Refused {
            reason: "consent-withdrawn".into(),
        },
        40,
    )
    .unwrap();
    l.finish(
        "rej",
        &Finish::Rejected {
            reason: "unknown-subject".into(),
        },
        41,
    )
    .unwrap();
    l.finish("exp", &Finish::Expired, 42).unwrap();
    assert_eq!(l.outbox_len(JA), 1);
    assert_eq!(l.outbox_head(JA).unwrap().unwrap().message_id, "del");

    let check = |id: &str, state: DeliveryState, detail: &str, at: i64| {
        let rec = l.message(id).unwrap().unwrap();
        let st = rec.status.unwrap();
        assert_eq!(st.state, state as i32, "{id}");
        assert_eq!(st.detail, detail, "{id}");
        assert_eq!(st.updated_at_ms, at, "{id}");
        assert!(st.receipt.is_none(), "{id}");
        assert!(rec.outbox_key.is_empty(), "{id}");
    };
    check("ref", DeliveryState::Refused, "consent-withdrawn", 40);
    check("rej", DeliveryState::Rejected, "unknown-subject", 41);
    check("exp", DeliveryState::Expired, "deadline passed", 42);
    assert_eq!(
        l.message("ref").unwrap().unwrap().status.unwrap().attempts,
        2
    );
    assert_eq!(audit_count(&l), 7);
    let entries = l.audit_entries().unwrap();
    assert_eq!(entries[4].event, "message.delivery-refused");
    assert_eq!(entries[4].detail, "consent-withdrawn");
    assert_eq!(entries[4].message_id, "ref");
    assert_eq!(entries[5].event, "message.delivery-rejected");
    assert_eq!(entries[6].event, "message.expired");

    // finishing a final message again changes nothing, whatever the new outcome
    let before = l.message("ref").unwrap().unwrap();
    l.finish(
        "ref",
        &Finish::Delivered {
            receipt: receipt(3),
        },
        99,
    )
    .unwrap();
    l.finish("ref", &Finish::Expired, 99).unwrap();
    l.finish(
        "exp",
        &Finish::Rejected {
            reason: "late".into(),
        },
        99,
    )
    .unwrap();
    assert_eq!(l.message("ref").unwrap().unwrap(), before);
    check("exp", DeliveryState::Expired, "deadline passed", 42);
    assert_eq!(audit_count(&l), 7);
    assert_eq!(l.outbox_len(JA), 1, "the queued message is still there");

    l.finish(
        "del",
        &Finish::Delivered {
            receipt: receipt(5),
        },
        50,
    )
    .unwrap();
    let st = l.message("del").unwrap().unwrap().status.unwrap();
    assert_eq!(st.state, DeliveryState::Delivered as i32);
    assert_eq!(st.receipt, Some(receipt(5)));
    assert_eq!(l.outbox_len(JA), 0);
    assert!(l.peers_with_queued().unwrap().is_empty());
    assert_eq!(audit_count(&l), 8);

    // unknown ids
    assert!(matches!(
        l.finish("nope", &Finish::Expired, 1),
        Err(LedgerError::UnknownMessage { message_id }) if message_id == "nope"
    ));
    assert!(matches!(
        l.record_attempt("nope", "x", 1, 1, false),
        Err(LedgerError::UnknownMessage { .. })
    ));
    assert_eq!(audit_count(&l), 8);
}

// 5. ---------------------------------------------------------------------------------------

#[test]
fn consent_errors_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    let c = consent("c-1");
    l.record_consent(&c, &[outgoing("n1", JA, "c-1", 1)], 1)
        .unwrap();
    assert_eq!(audit_count(&l), 2);

    // the same id again, with a different record and a notice to another peer
    let mut other = consent("c-1");
    other.recipients = vec![JN.into()];
    let err = l
        .record_consent(&other, &[outgoing("n2", JN, "c-1", 2)], 2)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::ConsentExists { consent_id } if consent_id == "c-1"),
        "{err:?}"
    );
    assert_eq!(l.consent("c-1").unwrap().unwrap().record, Some(c.clone()));
    assert!(l.message("n2").unwrap().is_none());
    assert_eq!(l.outbox_len(JN), 0);
    assert_eq!(l.outbox_len(JA), 1);
    assert_eq!(audit_count(&l), 2);

    // withdrawal of an unknown consent
    let err = l
        .record_withdrawal(
            &withdrawal("c-x", 3),
            &[withdrawal_notice("n3", JA, "c-x", 3)],
            3,
        )
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownConsent { consent_id } if consent_id == "c-x"),
        "{err:?}"
    );
    assert!(l.consent("c-x").unwrap().is_none());
    assert!(l.message("n3").unwrap().is_none());
    assert_eq!(l.outbox_len(JA), 1);
    assert_eq!(audit_count(&l), 2);

    // a real withdrawal, then a second one
    l.record_withdrawal(
        &withdrawal("c-1", 4),
        &[withdrawal_notice("n4", JA, "c-1", 4)],
        4,
    )
    .unwrap();
    assert_eq!(
        l.consent("c-1").unwrap().unwrap().withdrawal,
        Some(withdrawal("c-1", 4))
    );
    assert_eq!(l.outbox_len(JA), 2);
    assert_eq!(audit_count(&l), 4);
    let err = l
        .record_withdrawal(
            &withdrawal("c-1", 5),
            &[withdrawal_notice("n5", JA, "c-1", 5)],
            5,
        )
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::AlreadyWithdrawn { consent_id } if consent_id == "c-1"),
        "{err:?}"
    );
    assert_eq!(
        l.consent("c-1").unwrap().unwrap().withdrawal,
        Some(withdrawal("c-1", 4)),
        "the first withdrawal is kept"
    );
    assert!(l.message("n5").unwrap().is_none());
    assert_eq!(l.outbox_len(JA), 2);
    assert_eq!(audit_count(&l), 4);
    assert_eq!(
        events(&l),
        [
            "consent.recorded",
            "message.submitted",
            "consent.withdrawn",
            "message.submitted"
        ]
    );
}

// 6. ---------------------------------------------------------------------------------------

#[test]
fn accept_delivery_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();

    let a = inbox("in-a", 1, 11);
    let got = l.accept_delivery(&a, &ConsentEffect::None, 10).unwrap();
    assert!(matches!(got, Accepted::Stored { seq: 1 }), "{got:?}");
    let got = l
        .accept_delivery(&inbox("in-b", 2, 22), &ConsentEffect::None, 11)
        .unwrap();
    assert!(matches!(got, Accepted::Stored { seq: 2 }), "{got:?}");
    let stored_a = l.inbox_record("in-a").unwrap().unwrap();
    assert_eq!(stored_a.seq, 1);
    assert_eq!(
        stored_a,
        InboxRecord {
            seq: 1,
            ..a.clone()
        }
    );
    assert_eq!(audit_count(&l), 2);

    // the same envelope again, with a freshly signed receipt: the original comes back
    let again = inbox("in-a", 1, 99);
    match l.accept_delivery(&again, &ConsentEffect::None, 12).unwrap() {
        Accepted::Duplicate(orig) => {
            assert_eq!(*orig, stored_a);
            assert_eq!(orig.receipt, Some(receipt(11)));
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(
        l.inbox_record("in-a").unwrap().unwrap(),
        InboxRecord {
            duplicate_audited: true,
            ..stored_a.clone()
        },
        "kept as it was, marked as audited once redelivered"
    );
    assert_eq!(audit_count(&l), 3);
    assert_eq!(events(&l).last().unwrap(), "inbox.duplicate");
    // the same id with another envelope
    let before = ids_of(&l.inbox_after(0, 100).unwrap());
    let err = l
        .accept_delivery(&inbox("in-a", 3, 33), &ConsentEffect::None, 13)
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::MessageIdConflict { message_id } if message_id == "in-a"),
        "{err:?}"
    );
    assert_eq!(
        l.inbox_record("in-a").unwrap().unwrap(),
        InboxRecord {
            duplicate_audited: true,
            ..stored_a.clone()
        }
    );
    assert_eq!(ids_of(&l.inbox_after(0, 100).unwrap()), before);
    assert_eq!(audit_count(&l), 3);

    // a consent notice stores the consent
    let c = consent("c-9");
    let got = l
        .accept_delivery(&inbox("in-c", 4, 44), &ConsentEffect::Record(c.clone()), 14)
        .unwrap();
    assert!(matches!(got, Accepted::Stored { seq: 3 }), "{got:?}");
    let held = l.consent("c-9").unwrap().unwrap();
    assert_eq!(held.record, Some(c.clone()));
    assert!(held.withdrawal.is_none());
    assert_eq!(audit_count(&l), 5);
    assert_eq!(events(&l)[3..], ["inbox.received", "consent.replicated"]);

    // a withdrawal of an unknown consent aborts everything
    let before = ids_of(&l.inbox_after(0, 100).unwrap());
    let err = l
        .accept_delivery(
            &inbox("in-d", 5, 55),
            &ConsentEffect::Withdraw(withdrawal("c-unknown", 15)),
            15,
        )
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownConsent { consent_id } if consent_id == "c-unknown"),
        "{err:?}"
    );
    assert!(l.inbox_record("in-d").unwrap().is_none());
    assert_eq!(ids_of(&l.inbox_after(0, 100).unwrap()), before);
    assert_eq!(audit_count(&l), 5);

    // a withdrawal of a known consent applies; the aborted delivery used no sequence number
    let got = l
        .accept_delivery(
            &inbox("in-e", 6, 66),
            &ConsentEffect::Withdraw(withdrawal("c-9", 16)),
            16,
        )
        .unwrap();
    assert!(matches!(got, Accepted::Stored { seq: 4 }), "{got:?}");
    assert_eq!(
        l.consent("c-9").unwrap().unwrap().withdrawal,
        Some(withdrawal("c-9", 16))
    );
    assert_eq!(audit_count(&l), 7);
    assert_eq!(
        events(&l)[5..],
        ["inbox.received", "consent.withdrawal-replicated"]
    );

    // a different consent under a held id aborts too
    let mut changed = consent("c-9");
    changed.recipients.clear();
    let err = l
        .accept_delivery(&inbox("in-f", 7, 77), &ConsentEffect::Record(changed), 17)
        .unwrap_err();
    assert!(matches!(err, LedgerError::ConsentExists { .. }), "{err:?}");
    assert!(l.inbox_record("in-f").unwrap().is_none());
    assert_eq!(l.consent("c-9").unwrap().unwrap().record, Some(c));
    assert_eq!(audit_count(&l), 7);
    assert_eq!(
        ids_of(&l.inbox_after(0, 100).unwrap()),
        [
            (1, "in-a".to_string()),
            (2, "in-b".to_string()),
            (3, "in-c".to_string()),
            (4, "in-e".to_string())
        ]
    );
}

/// The audit is a record of decisions, not of noise: a redelivery is audited once per
/// message (through either path), an inbox item's first read once per IT system.
#[test]
fn redeliveries_and_reads_are_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for (id, tag) in [("in-a", 1), ("in-b", 2)] {
        l.accept_delivery(&inbox(id, tag, tag), &ConsentEffect::None, 10)
            .unwrap();
    }
    assert_eq!(audit_count(&l), 2);
    for at in 11..15 {
        assert!(matches!(
            l.accept_delivery(&inbox("in-a", 1, 99), &ConsentEffect::None, at)
                .unwrap(),
            Accepted::Duplicate(_)
        ));
    }
    assert!(!l.note_duplicate("in-a", 15).unwrap());
    assert_eq!(
        audit_count(&l),
        3,
        "one inbox.duplicate for four redeliveries"
    );
    // the first redelivery of another message is audited
    assert!(l.note_duplicate("in-b", 16).unwrap());
    assert!(!l.note_duplicate("in-b", 17).unwrap());
    assert_eq!(audit_count(&l), 4);
    assert!(l.note_duplicate("unknown", 18).is_err());
    assert_eq!(events(&l)[2..], ["inbox.duplicate", "inbox.duplicate"]);

    // reads: the first by each IT system is audited, a re-read is not
    assert!(l.note_read("in-a", "it-1", 19).unwrap());
    for at in 20..25 {
        assert!(!l.note_read("in-a", "it-1", at).unwrap());
    }
    assert!(l.note_read("in-a", "it-2", 25).unwrap());
    assert!(l.note_read("unknown", "it-1", 26).is_err());
    assert_eq!(audit_count(&l), 6);
    let held = l.inbox_record("in-a").unwrap().unwrap();
    assert_eq!(held.read_by, ["it-1", "it-2"]);
    assert!(held.duplicate_audited);
    let reads: Vec<_> = l
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "inbox.read")
        .map(|e| (e.message_id, e.detail))
        .collect();
    assert_eq!(
        reads,
        [
            ("in-a".to_string(), "client it-1".to_string()),
            ("in-a".to_string(), "client it-2".to_string())
        ]
    );
}

// 7. ---------------------------------------------------------------------------------------

#[test]
fn inbox_cursor_and_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    assert!(l.inbox_after(0, 10).unwrap().is_empty());
    // ids deliberately not in key order, so that arrival order is what is tested
    let ids = ["m-e", "m-a", "m-d", "m-b", "m-c"];
    for (i, id) in ids.iter().enumerate() {
        l.accept_delivery(&inbox(id, i as u8, 0), &ConsentEffect::None, i as i64)
            .unwrap();
    }
    let all = l.inbox_after(0, 100).unwrap();
    assert_eq!(
        ids_of(&all),
        ids.iter()
            .enumerate()
            .map(|(i, id)| (i as u64 + 1, id.to_string()))
            .collect::<Vec<_>>()
    );
    let page = |after, limit| {
        l.inbox_after(after, limit)
            .unwrap()
            .into_iter()
            .map(|r| r.message_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(0, 2), ["m-e", "m-a"]);
    assert_eq!(page(2, 2), ["m-d", "m-b"]);
    assert_eq!(page(4, 2), ["m-c"]);
    assert!(page(5, 2).is_empty());
    assert!(page(0, 0).is_empty());
    assert!(page(u64::MAX, 10).is_empty());

    assert_eq!(audit_count(&l), 5);
    l.acknowledge("m-d", "it", 100).unwrap();
    assert!(l.inbox_record("m-d").unwrap().unwrap().acknowledged);
    assert!(!l.inbox_record("m-a").unwrap().unwrap().acknowledged);
    assert_eq!(audit_count(&l), 6);
    assert_eq!(events(&l).last().unwrap(), "inbox.acknowledged");
    // idempotent
    l.acknowledge("m-d", "it", 101).unwrap();
    assert!(l.inbox_record("m-d").unwrap().unwrap().acknowledged);
    assert_eq!(audit_count(&l), 6);
    // the cursor view shows it, in place
    let acked: Vec<_> = l
        .inbox_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|r| (r.message_id, r.acknowledged))
        .collect();
    assert_eq!(
        acked,
        [
            ("m-e".to_string(), false),
            ("m-a".to_string(), false),
            ("m-d".to_string(), true),
            ("m-b".to_string(), false),
            ("m-c".to_string(), false)
        ]
    );
    let err = l.acknowledge("m-zz", "it", 102).unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownMessage { message_id } if message_id == "m-zz"),
        "{err:?}"
    );
    assert_eq!(audit_count(&l), 6);
}

// 8. ---------------------------------------------------------------------------------------

async fn populated_store(dir: &Path) -> u64 {
    let l = open_keyed(dir).unwrap();
    l.record_consent(&consent("c-1"), &[outgoing("n1", JA, "c-1", 1)], 1)
        .unwrap();
    l.enqueue(&outgoing("m2", JN, "c-1", 2)).unwrap();
    l.finish(
        "n1",
        &Finish::Refused {
            reason: "consent-withdrawn".into(),
        },
        3,
    )
    .unwrap();
    l.accept_delivery(&inbox("in-1", 1, 1), &ConsentEffect::None, 4)
        .unwrap();
    l.acknowledge("in-1", "it", 5).unwrap();
    l.flush().await.unwrap();
    l.verify_audit().unwrap().entries
}

async fn tamper(dir: &Path, f: impl FnOnce(&db::Tree)) {
    let db = db::open(dir, None).unwrap();
    let audit = db.open_tree("audit").unwrap();
    f(&audit);
    db.flush().unwrap();
}

fn assert_broken(dir: &Path, expect_seq: u64) {
    let l = open_keyed(dir).unwrap();
    match l.verify_audit() {
        Err(LedgerError::AuditBroken { seq, .. }) => assert_eq!(seq, expect_seq),
        other => panic!("expected AuditBroken, got {other:?}"),
    }
}

#[tokio::test]
async fn tampering_with_the_stored_chain_is_detected() {
    // (a) one entry altered in the middle
    let dir = tempfile::tempdir().unwrap();
    let n = populated_store(dir.path()).await;
    assert_eq!(n, 6);
    tamper(dir.path(), |audit| {
        let key = 3u64.to_be_bytes();
        let bytes = audit.get(key).unwrap().unwrap();
        let mut e = AuditEntry::decode(bytes.as_ref()).unwrap();
        assert_eq!(e.seq, 3);
        e.detail = "nothing to see here".into();
        audit.insert(key, e.encode_to_vec()).unwrap();
    })
    .await;
    // the next entry no longer links to it
    assert_broken(dir.path(), 4);

    // (a') the last entry altered: only the recorded head can tell
    let dir = tempfile::tempdir().unwrap();
    let n = populated_store(dir.path()).await;
    tamper(dir.path(), |audit| {
        let key = n.to_be_bytes();
        let mut e = AuditEntry::decode(audit.get(key).unwrap().unwrap().as_ref()).unwrap();
        e.peer = "someone-else".into();
        audit.insert(key, e.encode_to_vec()).unwrap();
    })
    .await;
    assert_broken(dir.path(), n);

    // (b) the last entry removed
    let dir = tempfile::tempdir().unwrap();
    let n = populated_store(dir.path()).await;
    tamper(dir.path(), |audit| {
        assert!(audit.remove(n.to_be_bytes()).unwrap().is_some());
    })
    .await;
    assert_broken(dir.path(), n - 1);

    // (b') an entry removed in the middle
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    tamper(dir.path(), |audit| {
        assert!(audit.remove(2u64.to_be_bytes()).unwrap().is_some());
    })
    .await;
    assert_broken(dir.path(), 3);

    // control: an untouched store opened the same way still verifies
    let dir = tempfile::tempdir().unwrap();
    let n = populated_store(dir.path()).await;
    tamper(dir.path(), |_| {}).await;
    let l = open_keyed(dir.path()).unwrap();
    assert_eq!(l.verify_audit().unwrap().entries, n);
}

// 9. ---------------------------------------------------------------------------------------

const PEERS: [&str; 3] = ["a", "a-b", "b"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue(usize),
    FinishHead(usize, u8),
    Attempt(usize),
    /// Finish a message that already left the outbox (index into the finished ones).
    FinishAgain(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize).prop_map(Op::Enqueue),
        2 => (0..3usize, 0..4u8).prop_map(|(p, f)| Op::FinishHead(p, f)),
        1 => (0..3usize).prop_map(Op::Attempt),
        1 => (0..64usize, 0..4u8).prop_map(|(i, f)| Op::FinishAgain(i, f)),
    ]
}

fn finish_of(f: u8) -> (Finish, DeliveryState) {
    match f {
        0 => (
            Finish::Delivered {
                receipt: receipt(1),
            },
            DeliveryState::Delivered,
        ),
        1 => (
            Finish::Refused { reason: "r".into() },
            DeliveryState::Refused,
        ),
        2 => (
            Finish::Rejected { reason: "j".into() },
            DeliveryState::Rejected,
        ),
        _ => (Finish::Expired, DeliveryState::Expired),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn outbox_matches_a_fifo_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let l = open_keyed(dir.path()).unwrap();
        let mut model: Vec<VecDeque<String>> = vec![VecDeque::new(); 3];
        let mut finished: Vec<(String, DeliveryState)> = vec![];
        let mut attempts: HashMap<String, u32> = HashMap::new();
        let mut audited = 0u64;
        for (step, op) in ops.iter().enumerate() {
            let now = step as i64 + 1;
            match *op {
                Op::Enqueue(p) => {
                    let id = format!("m{step:03}");
                    l.enqueue(&outgoing(&id, PEERS[p], "c", now)).unwrap();
                    model[p].push_back(id);
                    audited += 1;
                }
                Op::FinishHead(p, f) => {
                    let head = l.outbox_head(PEERS[p]).unwrap().map(|e| e.message_id);
                    prop_assert_eq!(head.as_ref(), model[p].front());
                    if let Some(id) = head {
                        let (how, st) = finish_of(f);
                        l.finish(&id, &how, now).unwrap();
                        model[p].pop_front();
                        prop_assert_eq!(state(&l, &id), st as i32);
                        finished.push((id, st));
                        audited += 1;
                    }
                }
                Op::Attempt(p) => {
                    if let Some(id) = model[p].front() {
                        l.record_attempt(id, "timeout", now + 1_000, now, false).unwrap();
                        let n = attempts.entry(id.clone()).or_default();
                        *n += 1;
                        let st = l.message(id).unwrap().unwrap().status.unwrap();
                        prop_assert_eq!(st.attempts, *n);
                        prop_assert_eq!(st.state, DeliveryState::Queued as i32);
                    }
                }
                Op::FinishAgain(i, f) => {
                    if !finished.is_empty() {
                        let (id, st) = finished[i % finished.len()].clone();
                        let before = l.message(&id).unwrap().unwrap();
                        l.finish(&id, &finish_of(f).0, now).unwrap();
                        prop_assert_eq!(l.message(&id).unwrap().unwrap(), before);
                        prop_assert_eq!(state(&l, &id), st as i32);
                    }
                }
            }
            for (p, peer) in PEERS.iter().enumerate() {
                let head = l.outbox_head(peer).unwrap().map(|e| e.message_id);
                prop_assert_eq!(head.as_ref(), model[p].front(), "head of {} after {:?}", peer, op);
                prop_assert_eq!(l.outbox_len(peer), model[p].len());
            }
            let queued: Vec<String> = PEERS
                .iter()
                .zip(&model)
                .filter(|(_, q)| !q.is_empty())
                .map(|(p, _)| p.to_string())
                .collect();
            prop_assert_eq!(l.peers_with_queued().unwrap().into_iter().collect::<Vec<_>>(), queued);
            prop_assert_eq!(l.verify_audit().unwrap().entries, audited);
        }
        // everything still queued is QUEUED, in model order
        for (p, q) in model.iter().enumerate() {
            for id in q {
                prop_assert_eq!(state(&l, id), DeliveryState::Queued as i32);
                prop_assert_eq!(
                    l.message(id).unwrap().unwrap().status.unwrap().recipient,
                    PEERS[p]
                );
            }
        }
    }
}

// 10. retention index ---------------------------------------------------------------------

fn received_under(id: &str, consent_id: &str) -> InboxRecord {
    InboxRecord {
        consent_id: consent_id.into(),
        ..inbox(id, 5, 5)
    }
}

fn body_of(l: &Ledger, id: &str) -> (Vec<u8>, i64) {
    let r = l.inbox_record(id).unwrap().unwrap();
    (r.envelope.unwrap().payload, r.body_erased_at_ms)
}

fn deletions(l: &Ledger) -> usize {
    events(l)
        .iter()
        .filter(|e| *e == "retention.body-deleted")
        .count()
}

#[tokio::test]
async fn sweep_deletes_bodies_of_due_closed_cases_and_late_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
    l.record_consent(&consent("c-2"), &[], 1_000).unwrap();
    for (m, c) in [("m1", "c-1"), ("m2", "c-1"), ("m3", "c-2")] {
        l.accept_delivery(&received_under(m, c), &ConsentEffect::None, 2_000)
            .unwrap();
    }
    assert_eq!(l.close_case("c-1", 10_000).unwrap(), 10_000);
    assert_eq!(
        l.close_case("c-1", 11_000).unwrap(),
        10_000,
        "closing again keeps the first time"
    );

    // not yet due: nothing happens
    let swept = l.sweep_closed_cases(9_999, 20_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (0, 0));
    assert_eq!(body_of(&l, "m1"), (b"payload of m1".to_vec(), 0));

    let swept = l.sweep_closed_cases(10_000, 20_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (1, 2));
    assert_eq!(body_of(&l, "m1"), (Vec::new(), 20_000));
    assert_eq!(body_of(&l, "m2"), (Vec::new(), 20_000));
    assert_eq!(
        body_of(&l, "m3"),
        (b"payload of m3".to_vec(), 0),
        "another case's message keeps its body"
    );
    let kept = l.inbox_record("m1").unwrap().unwrap();
    assert!(kept.receipt.is_some() && !kept.envelope.unwrap().header.is_empty());
    assert_eq!(deletions(&l), 2);

    // swept cases leave the due list: the next sweep touches nothing
    let swept = l.sweep_closed_cases(i64::MAX, 21_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (0, 0));

    // a message that arrives under the closed case puts it back on the list
    l.accept_delivery(&received_under("m4", "c-1"), &ConsentEffect::None, 22_000)
        .unwrap();
    let swept = l.sweep_closed_cases(10_000, 23_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (1, 1));
    assert_eq!(body_of(&l, "m4"), (Vec::new(), 23_000));
    assert_eq!(deletions(&l), 3);
    l.flush().await.unwrap();
    l.verify_audit().unwrap();
}

#[test]
fn sweep_works_through_many_cases_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for i in 0..5 {
        let c = format!("c-{i}");
        l.record_consent(&consent(&c), &[], 1_000).unwrap();
        l.accept_delivery(
            &received_under(&format!("m-{i}"), &c),
            &ConsentEffect::None,
            2_000,
        )
        .unwrap();
        l.close_case(&c, 3_000 + i).unwrap();
    }
    let steps: Vec<(usize, u32)> = (0..4)
        .map(|_| {
            let s = l.sweep_closed_cases(10_000, 20_000, 2).unwrap();
            (s.cases, s.bodies)
        })
        .collect();
    assert_eq!(steps, vec![(2, 2), (2, 2), (1, 1), (0, 0)]);
}

#[test]
fn erasure_finds_bodies_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
    l.accept_delivery(&received_under("m1", "c-1"), &ConsentEffect::None, 2_000)
        .unwrap();
    l.accept_delivery(&received_under("m2", "c-2"), &ConsentEffect::None, 2_000)
        .unwrap();
    let ids = ["c-1".to_string()].into_iter().collect();
    let n = l
        .delete_bodies(&ids, kurzdraht_ledger::AuditEvent::SubjectErased, 3_000)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(body_of(&l, "m1"), (Vec::new(), 3_000));
    assert_eq!(body_of(&l, "m2").1, 0);
    // nothing left to delete the second time
    assert_eq!(
        l.delete_bodies(&ids, kurzdraht_ledger::AuditEvent::SubjectErased, 4_000)
            .unwrap(),
        0
    );
}

/// A reception decided before a person was erased here and stored after it keeps no body:
/// erasure marks the consents first, and storing a message under an erased consent drops
/// its body in the same transaction (the receipt and signed header stay).
#[test]
fn a_message_stored_after_its_consent_was_erased_keeps_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
    l.record_consent(&consent("c-2"), &[], 1_000).unwrap();
    let ids = ["c-1".to_string()].into_iter().collect();
    l.erase_consents(&ids, 2_000).unwrap();
    // The reception of m1 (under the erased c-1) commits only now.
    l.accept_delivery(&received_under("m1", "c-1"), &ConsentEffect::None, 3_000)
        .unwrap();
    assert_eq!(body_of(&l, "m1"), (Vec::new(), 3_000));
    let held = l.inbox_record("m1").unwrap().unwrap();
    assert!(held.receipt.is_some(), "the receipt stays");
    assert!(
        !held.envelope.unwrap().header.is_empty(),
        "the signed header stays"
    );
    // Nothing left for a later erasure or sweep to find.
    assert_eq!(
        l.delete_bodies(&ids, kurzdraht_ledger::AuditEvent::SubjectErased, 4_000)
            .unwrap(),
        0
    );
    // Positive control: under a consent that was not erased, the body stays.
    l.accept_delivery(&received_under("m2", "c-2"), &ConsentEffect::None, 3_000)
        .unwrap();
    assert_eq!(body_of(&l, "m2").1, 0);
    assert!(!body_of(&l, "m2").0.is_empty());
}

/// Where a message is queued, its consent is checked once more, inside the transaction: a
/// withdrawal, replacement or erasure that committed since the submission's own check wins
/// (nothing is queued, the refusal names why). Consent notices and withdrawals are not
/// case messages and are queued whatever the state.
#[test]
fn a_case_message_is_not_queued_under_a_consent_ended_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for c in ["c-ok", "c-w", "c-e", "c-old"] {
        l.record_consent(&consent(c), &[], 1_000).unwrap();
    }
    l.record_withdrawal(&withdrawal("c-w", 2_000), &[], 2_000)
        .unwrap();
    l.erase_consents(&["c-e".to_string()].into_iter().collect(), 2_000)
        .unwrap();
    l.record_consent(
        &ConsentRecord {
            supersedes: "c-old".into(),
            ..consent("c-new")
        },
        &[],
        2_000,
    )
    .unwrap();
    l.enqueue(&outgoing("m-ok", JA, "c-ok", 3_000)).unwrap();
    for (consent_id, refusal) in [
        ("c-w", ConsentRefusal::Withdrawn),
        ("c-e", ConsentRefusal::Erased),
        ("c-old", ConsentRefusal::Superseded),
    ] {
        match l.enqueue(&outgoing(&format!("m-{consent_id}"), JA, consent_id, 3_000)) {
            Err(LedgerError::Refused(r)) => assert_eq!(r, refusal, "{consent_id}"),
            other => panic!("{consent_id}: queued anyway: {other:?}"),
        }
        assert!(l.message(&format!("m-{consent_id}")).unwrap().is_none());
    }
    l.enqueue(&withdrawal_notice("n-w", JA, "c-w", 3_000))
        .unwrap();
    assert_eq!(l.outbox_len(JA), 2);
}

/// A consent chain never crosses controllers: another agency's notice naming the
/// Jobcenter's consent as the one it replaces leaves that consent's lane where it was.
#[test]
fn a_foreign_supersedes_does_not_move_a_lane() {
    assert_ne!(
        kurzdraht_ledger::lane_of_root("c-jn"),
        kurzdraht_ledger::lane_of_root("c-jc"),
        "test set-up: ids in different lanes"
    );
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    let foreign = ConsentRecord {
        recording_agency: JN.into(),
        supersedes: "c-jc".into(),
        ..consent("c-jn")
    };
    let receive = |id: &str, c: &ConsentRecord| {
        let record = InboxRecord {
            kind: MessageKind::ConsentNotice as i32,
            consent_id: c.consent_id.clone(),
            ..received_under(id, &c.consent_id)
        };
        l.accept_delivery(&record, &ConsentEffect::Record(c.clone()), 2_000)
            .unwrap();
    };
    receive("n-jn", &foreign);
    receive("n-jc", &consent("c-jc"));
    assert_eq!(
        l.lane_of("c-jn").unwrap(),
        kurzdraht_ledger::lane_of_root("c-jn"),
        "the foreign consent's lane followed another controller's chain"
    );
    assert_eq!(
        l.lane_of("c-jc").unwrap(),
        kurzdraht_ledger::lane_of_root("c-jc")
    );
    // Positive control: a replacement by the same controller keeps its predecessor's lane.
    let same = ConsentRecord {
        supersedes: "c-jc".into(),
        ..consent("c-jc2")
    };
    receive("n-jc2", &same);
    assert_eq!(
        l.lane_of("c-jc2").unwrap(),
        kurzdraht_ledger::lane_of_root("c-jc")
    );
}

#[tokio::test]
async fn the_retention_index_is_built_for_a_store_of_the_earlier_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_keyed(dir.path()).unwrap();
        l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
        l.accept_delivery(&received_under("m1", "c-1"), &ConsentEffect::None, 2_000)
            .unwrap();
        l.accept_delivery(&received_under("m2", "c-3"), &ConsentEffect::None, 2_000)
            .unwrap();
        l.close_case("c-1", 10_000).unwrap();
        l.flush().await.unwrap();
    }
    {
        // what a store written before the index looks like: no index, no schema mark
        let db = db::open(dir.path(), None).unwrap();
        let retention = db.open_tree("retention").unwrap();
        let index: Vec<_> = retention.iter().map(|kv| kv.unwrap().0).collect();
        assert!(!index.is_empty());
        for key in index {
            retention.remove(key).unwrap();
        }
        db.open_tree("meta").unwrap().remove("schema").unwrap();
        db.flush().unwrap();
    }
    let l = open_keyed(dir.path()).unwrap();
    let swept = l.sweep_closed_cases(10_000, 20_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (1, 1));
    assert_eq!(body_of(&l, "m1"), (Vec::new(), 20_000));
    assert_eq!(body_of(&l, "m2").1, 0);
    // built once: a reopen does not put the swept case back
    drop(l);
    let l = open_keyed(dir.path()).unwrap();
    let swept = l.sweep_closed_cases(i64::MAX, 30_000, 10).unwrap();
    assert_eq!((swept.cases, swept.bodies), (0, 0));
}

#[test]
fn consents_page_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    for i in 0..7 {
        l.record_consent(&consent(&format!("c-{i}")), &[], 1_000)
            .unwrap();
    }
    let page = |after: &str, limit| -> Vec<String> {
        l.consents_after(after, limit)
            .unwrap()
            .into_iter()
            .map(|(id, c)| {
                assert_eq!(c.record.unwrap().consent_id, id);
                id
            })
            .collect()
    };
    assert_eq!(page("", 3), ["c-0", "c-1", "c-2"]);
    assert_eq!(page("c-2", 3), ["c-3", "c-4", "c-5"]);
    assert_eq!(page("c-5", 3), ["c-6"]);
    assert!(page("c-6", 3).is_empty());
    assert_eq!(l.consents_iter().count(), 7);
}

#[test]
fn a_store_of_a_later_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_keyed(dir.path()).unwrap();
        l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
    }
    {
        let db = db::open(dir.path(), None).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", 99u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    match open_keyed(dir.path()) {
        Err(e @ LedgerError::NewerStore { version: 99, .. }) => {
            assert!(e.to_string().contains("later kurzdraht"), "{e}");
        }
        Err(other) => panic!("expected NewerStore, got {other:?}"),
        Ok(_) => panic!("a store of format 99 was opened"),
    }
}

/// The case index: a consent's chain is one case; its sent and received messages (the
/// consent's notices too) are filed under the chain's root in the transaction that stores
/// them; cases come newest activity first; a store without the index gets it at open.
#[test]
fn cases_are_filed_by_chain_and_listed_by_latest_activity() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    l.record_consent(&consent("c-1"), &[], 1_000).unwrap();
    let mut other = consent("c-2");
    other.subject.as_mut().unwrap().given_name = "Jonas".into();
    l.record_consent(&other, &[], 1_001).unwrap();
    l.enqueue(&outgoing("m-1", JA, "c-1", 2_000)).unwrap();
    let mut replacing = consent("c-3");
    replacing.supersedes = "c-1".into();
    l.record_consent(&replacing, &[], 2_001).unwrap();

    l.enqueue(&outgoing("m-2", JA, "c-2", 3_000)).unwrap();
    l.enqueue(&withdrawal_notice("n-1", JA, "c-2", 3_500))
        .unwrap();
    l.accept_delivery(&received_under("m-3", "c-3"), &ConsentEffect::None, 4_000)
        .unwrap();

    let cases = l.recent_cases(None, 10).unwrap();
    let roots: Vec<(&str, i64)> = cases
        .iter()
        .map(|c| (c.root.as_str(), c.latest_ms))
        .collect();
    // c-3 replaces c-1: one case, named by c-1; the received m-3 (5,000) is its latest.
    assert_eq!(roots, [("c-1", 5_000), ("c-2", 3_500)]);
    assert_eq!(
        l.case_messages("c-1").unwrap(),
        [
            ("m-1".to_string(), Direction::Sent),
            ("m-3".to_string(), Direction::Received)
        ]
    );
    assert_eq!(
        l.case_messages("c-2").unwrap(),
        [
            ("m-2".to_string(), Direction::Sent),
            ("n-1".to_string(), Direction::Sent)
        ],
        "the withdrawal notice is filed too (the Fälle leave it out, the report does not)"
    );
    assert_eq!(l.case_of("c-3").unwrap(), "c-1");
    // Pages: after the first case, the second.
    assert_eq!(
        l.recent_cases(Some(&cases[0]), 10).unwrap(),
        cases[1..].to_vec()
    );
    assert!(l.recent_cases(Some(&cases[1]), 10).unwrap().is_empty());
    // An older message does not move a case's latest activity back.
    l.enqueue(&outgoing("m-4", JA, "c-2", 1_500)).unwrap();
    assert_eq!(l.recent_cases(None, 10).unwrap(), cases);
    drop(l);

    // Reopened: the same (the index is stored, not rebuilt).
    let l = open_keyed(dir.path()).unwrap();
    let with_m4 = l.case_messages("c-2").unwrap();
    assert_eq!(l.recent_cases(None, 10).unwrap(), cases);
    drop(l);

    // A store of a version without the index (no tree entries, no mark): built at open.
    {
        let db = db::open(dir.path(), None).unwrap();
        let index = db.open_tree("cases").unwrap();
        let keys: Vec<Vec<u8>> = index.iter().map(|kv| kv.unwrap().0).collect();
        assert!(!keys.is_empty());
        for k in keys {
            index.remove(k).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .remove(b"cases_index")
            .unwrap();
        db.flush().unwrap();
    }
    let l = open_keyed(dir.path()).unwrap();
    assert_eq!(l.recent_cases(None, 10).unwrap(), cases);
    assert_eq!(l.case_messages("c-2").unwrap(), with_m4);
    assert_eq!(l.case_messages("c-1").unwrap().len(), 2);
}

/// The person index finds a person's consents as `same_person` compares them (white space
/// and case aside, the same date of birth), and nothing else; the refusal index finds the
/// refusals citing a consent and nothing else; the index holds no name in clear; after a
/// rekey the person's consents are found under the new key.
#[test]
fn a_persons_consents_and_the_refusals_citing_them_are_found_by_their_indexes() {
    use kurzdraht_ledger::{AuditEvent, AuditNote};
    let dir = tempfile::tempdir().unwrap();
    let l = open_keyed(dir.path()).unwrap();
    let with = |id: &str, given: &str, family: &str, born: &str| {
        let mut c = consent(id);
        let s = c.subject.as_mut().unwrap();
        s.given_name = given.into();
        s.family_name = family.into();
        s.date_of_birth = born.into();
        c
    };
    l.record_consent(&with("c-1", "Lena", "Muster", "2004-03-01"), &[], 1)
        .unwrap();
    l.record_consent(&with("c-2", "Jonas", "Muster", "2004-03-01"), &[], 2)
        .unwrap();
    l.record_consent(&with("c-3", "  lena ", "MUSTER", "2004-03-01"), &[], 3)
        .unwrap();
    l.record_consent(&with("c-4", "Lena", "Muster", "2004-03-02"), &[], 4)
        .unwrap();
    let asked = Subject {
        given_name: "LENA".into(),
        family_name: "muster".into(),
        date_of_birth: "2004-03-01".into(),
        ..Default::default()
    };
    let ids = |l: &Ledger| {
        let mut v: Vec<String> = l
            .consents_of_person(&asked)
            .unwrap()
            .into_iter()
            .map(|c| c.record.unwrap().consent_id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&l), ["c-1", "c-3"]);

    l.audit(
        AuditNote::new(AuditEvent::SubmissionRefused)
            .consent("c-1")
            .detail("consent-other-recipient"),
        10,
    )
    .unwrap();
    l.audit(AuditNote::new(AuditEvent::InboxRead).consent("c-1"), 11)
        .unwrap();
    l.audit(
        AuditNote::new(AuditEvent::DeliveryRejected).consent("c-2"),
        12,
    )
    .unwrap();
    let refusals = l.refusals_citing("c-1").unwrap();
    let events: Vec<(&str, &str)> = refusals
        .iter()
        .map(|e| (e.event.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        events,
        [("message.submission-refused", "consent-other-recipient")]
    );
    assert!(l.refusals_citing("c-3").unwrap().is_empty());
    assert_eq!(l.refusals_citing("c-2").unwrap().len(), 1);

    let new_key = kurzdraht_ledger::DataKey::from_hex(&"5c".repeat(32)).unwrap();
    l.rekey(&new_key).unwrap();
    {
        let raw = db::open(dir.path(), None).unwrap();
        for kv in raw.open_tree("cases").unwrap().iter() {
            let (k, _) = kv.unwrap();
            let text = String::from_utf8_lossy(&k).to_lowercase();
            assert!(!text.contains("lena") && !text.contains("muster"), "{text}");
        }
    }
    let l = Ledger::open_encrypted(dir.path(), &new_key).unwrap();
    assert_eq!(ids(&l), ["c-1", "c-3"], "found again under the new key");
    assert_eq!(l.refusals_citing("c-1").unwrap().len(), 1);
}
