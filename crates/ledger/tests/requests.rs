//! The ledger's idempotency keys (tree `requests`) against real store directories: a repeat
//! changes nothing and gets the first answer (also after reopening), another request under
//! a key is refused, concurrent calls with one key change the store once, an undo forgets
//! its answer, old answers are forgotten through the time index, and no answer keeps
//! personal data (also not after an erasure).

// Helpers outside `#[test]` functions are test code too; `allow-unwrap-in-tests` does not see them.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{
    AnsweredRequest, Finish, KeyedRequest, Ledger, LedgerError, Once, Outgoing,
};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, DeliveryState, MessageKind, Purpose, SignedEnvelope,
    Subject,
};
use prost::Message;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";

fn open(dir: &std::path::Path) -> Ledger {
    let key = kurzdraht_ledger::DataKey::from_hex(&"4b".repeat(32)).unwrap();
    Ledger::open_encrypted(dir, &key).unwrap()
}

/// A queued withdrawal notice (queued whatever the consent's state, unlike a case message).
fn withdrawal_notice(id: &str, consent_id: &str, at_ms: i64) -> Outgoing {
    Outgoing {
        kind: MessageKind::ConsentWithdrawal,
        ..outgoing(id, consent_id, at_ms)
    }
}

fn outgoing(id: &str, consent_id: &str, at_ms: i64) -> Outgoing {
    let mut hash = [0u8; 32];
    for (i, b) in id.bytes().enumerate() {
        hash[i % 32] ^= b;
    }
    Outgoing {
        envelope: SignedEnvelope {
            header: format!("header of {id}").into_bytes(),
            payload: format!("payload of {id}: Lena Muster").into_bytes(),
            signature: vec![7; 64],
            signer: JC.into(),
        },
        message_id: id.into(),
        kind: MessageKind::CertificationRequest,
        recipient: JA.into(),
        consent_id: consent_id.into(),
        submitted_at_ms: at_ms,
        deadline_ms: at_ms + 86_400_000,
        envelope_sha256: hash,
    }
}

/// A keyed call: key `key` (already scoped, as the node's hash would be), a request whose
/// content is `content`, answering with `ids`.
fn keyed(
    method: &str,
    key: u8,
    content: u8,
    ids: &[&str],
    consent_id: &str,
    at_ms: i64,
) -> KeyedRequest {
    KeyedRequest {
        key_id: [key; 32],
        answer: AnsweredRequest {
            method: method.into(),
            request_sha256: vec![content; 32],
            answered_at_ms: at_ms,
            message_ids: ids.iter().map(|s| s.to_string()).collect(),
            consent_id: consent_id.into(),
        },
    }
}

fn lena_consent(id: &str) -> ConsentRecord {
    ConsentRecord {
        consent_id: id.into(),
        subject: Some(Subject {
            given_name: "Lena".into(),
            family_name: "Muster".into(),
            date_of_birth: "2004-03-01".into(),
            ..Default::default()
        }),
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![Purpose::U25MoveOut as i32],
        valid_from_ms: 1_000,
        valid_until_ms: 1_000_000,
        recorded_by: "caseworker-1".into(),
        recorded_at_ms: 1_000,
        ..Default::default()
    }
}

fn first<T: std::fmt::Debug>(r: Result<Once<T>, LedgerError>) -> T {
    match r.unwrap() {
        Once::First(t) => t,
        other => panic!("expected the first call, got {other:?}"),
    }
}

fn repeat<T: std::fmt::Debug>(r: Result<Once<T>, LedgerError>) -> AnsweredRequest {
    match r.unwrap() {
        Once::Repeat(a) => a,
        other => panic!("expected a repeat, got {other:?}"),
    }
}

fn reused<T: std::fmt::Debug>(r: Result<T, LedgerError>) -> (String, i64) {
    match r {
        Err(LedgerError::IdempotencyKeyReused {
            method,
            answered_at_ms,
        }) => (method, answered_at_ms),
        other => panic!("expected IdempotencyKeyReused, got {other:?}"),
    }
}

fn audit_len(l: &Ledger) -> u64 {
    l.verify_audit().unwrap().entries
}

#[tokio::test]
async fn a_repeat_changes_nothing_and_gets_the_first_answer_also_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let k = keyed("Submit", 1, 0xaa, &["m1"], "", 10);
    first(l.enqueue_once(&outgoing("m1", "c-1", 10), Some(&k)));
    assert_eq!(l.outbox_len(JA), 1);
    let entries = audit_len(&l);

    // The same key and request again (the node sealed it anew: another message id).
    let again = keyed("Submit", 1, 0xaa, &["m2"], "", 20);
    let answer = repeat(l.enqueue_once(&outgoing("m2", "c-1", 20), Some(&again)));
    assert_eq!(answer.message_ids, ["m1"]);
    assert_eq!(
        answer.answered_at_ms, 10,
        "the first answer, not the repeat's"
    );
    assert_eq!(l.outbox_len(JA), 1, "nothing more queued");
    assert!(l.message("m2").unwrap().is_none());
    assert_eq!(audit_len(&l), entries, "a repeat writes no audit entry");

    // The same key with another request, or another method: refused, nothing stored.
    let other = keyed("Submit", 1, 0xbb, &["m3"], "", 30);
    assert_eq!(
        reused(l.enqueue_once(&outgoing("m3", "c-1", 30), Some(&other))),
        ("Submit".to_string(), 10)
    );
    let as_consent = keyed("RecordConsent", 1, 0xaa, &["n1"], "c-9", 30);
    reused(l.record_consent_once(
        &lena_consent("c-9"),
        &[outgoing("n1", "c-9", 30)],
        30,
        Some(&as_consent),
    ));
    assert!(
        l.consent("c-9").unwrap().is_none(),
        "the refused consent is not stored"
    );
    assert!(l.message("m3").unwrap().is_none());
    assert_eq!(l.outbox_len(JA), 1);
    // Positive control: another key queues.
    let fresh = keyed("Submit", 2, 0xaa, &["m4"], "", 40);
    first(l.enqueue_once(&outgoing("m4", "c-1", 40), Some(&fresh)));
    assert_eq!(l.outbox_len(JA), 2);

    l.flush().await.unwrap();
    drop(l);
    let l = open(dir.path());
    assert_eq!(
        l.answered_request(&again).unwrap().unwrap().message_ids,
        ["m1"]
    );
    reused(l.answered_request(&other));
    let answer = repeat(l.enqueue_once(&outgoing("m5", "c-1", 50), Some(&again)));
    assert_eq!(answer.message_ids, ["m1"]);
    assert_eq!(l.outbox_len(JA), 2);
}

#[test]
fn consents_and_withdrawals_with_a_key_are_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let k = keyed("RecordConsent", 3, 0x01, &["n1"], "c-1", 10);
    first(l.record_consent_once(
        &lena_consent("c-1"),
        &[outgoing("n1", "c-1", 10)],
        10,
        Some(&k),
    ));
    // A repeat made a new consent id and notice: neither is stored.
    let again = keyed("RecordConsent", 3, 0x01, &["n2"], "c-2", 20);
    let answer = repeat(l.record_consent_once(
        &lena_consent("c-2"),
        &[outgoing("n2", "c-2", 20)],
        20,
        Some(&again),
    ));
    assert_eq!(
        (answer.consent_id.as_str(), answer.message_ids.as_slice()),
        ("c-1", &["n1".to_string()][..])
    );
    assert!(l.consent("c-2").unwrap().is_none());
    assert_eq!(l.outbox_len(JA), 1);

    let w = ConsentWithdrawalRecord {
        consent_id: "c-1".into(),
        withdrawn_at_ms: 30,
        recorded_by: "caseworker-2".into(),
        manner: "in writing".into(),
    };
    let kw = keyed("WithdrawConsent", 4, 0x02, &["w1"], "c-1", 30);
    first(l.record_withdrawal_once(&w, &[withdrawal_notice("w1", "c-1", 30)], 30, Some(&kw)));
    // Without the key a repeat is refused as already withdrawn; with it, it is answered.
    assert!(matches!(
        l.record_withdrawal(&w, &[withdrawal_notice("w2", "c-1", 40)], 40),
        Err(LedgerError::AlreadyWithdrawn { .. })
    ));
    let again = keyed("WithdrawConsent", 4, 0x02, &["w3"], "c-1", 40);
    let answer = repeat(l.record_withdrawal_once(
        &w,
        &[withdrawal_notice("w3", "c-1", 40)],
        40,
        Some(&again),
    ));
    assert_eq!(answer.message_ids, ["w1"]);
    assert_eq!(l.outbox_len(JA), 2, "the notice and one withdrawal notice");
}

/// Eight threads call at once with one key, each with the message it sealed: exactly one
/// is queued, and every other call gets its id.
#[test]
fn concurrent_calls_with_one_key_queue_one_message() {
    const CALLERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let start = Arc::new(Barrier::new(CALLERS));
    let outcomes: Vec<Once<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (l, start) = (l.clone(), start.clone());
                s.spawn(move || {
                    let id = format!("m{i}");
                    let k = keyed("Submit", 9, 0xcc, &[&id], "", 10);
                    start.wait();
                    l.enqueue_once(&outgoing(&id, "c-1", 10), Some(&k)).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let firsts = outcomes
        .iter()
        .filter(|o| matches!(o, Once::First(_)))
        .count();
    assert_eq!(firsts, 1, "exactly one call queues");
    assert_eq!(l.outbox_len(JA), 1);
    let queued = l.outbox_batch(JA, l.lane_of("c-1").unwrap(), 10).unwrap();
    let named: BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Once::Repeat(a) => a.message_ids.first().map(String::as_str),
            Once::First(_) => None,
        })
        .collect();
    assert_eq!(named, BTreeSet::from([queued[0].message_id.as_str()]));
}

#[test]
fn an_undone_call_forgets_its_answer_and_a_repeat_queues_anew() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let k = keyed("Submit", 5, 0xdd, &["m1"], "", 10);
    let kept = keyed("Submit", 6, 0xdd, &["m9"], "", 10);
    first(l.enqueue_once(&outgoing("m1", "c-1", 10), Some(&k)));
    first(l.enqueue_once(&outgoing("m9", "c-1", 10), Some(&kept)));
    let not_stored = Finish::Refused {
        reason: "not-stored".into(),
    };
    l.undo_queued(&[("m1".into(), not_stored)], Some(&k.key_id), 20)
        .unwrap();
    assert_eq!(
        l.message("m1").unwrap().unwrap().status.unwrap().state,
        DeliveryState::Refused as i32
    );
    assert!(
        l.answered_request(&k).unwrap().is_none(),
        "the answer is forgotten"
    );
    assert!(
        l.answered_request(&kept).unwrap().is_some(),
        "another call's stays"
    );
    assert_eq!(
        l.requests_tree().len().unwrap(),
        2,
        "its answer and its time index entry are gone"
    );
    let again = keyed("Submit", 5, 0xdd, &["m2"], "", 30);
    first(l.enqueue_once(&outgoing("m2", "c-1", 30), Some(&again)));
    assert_eq!(
        l.answered_request(&again).unwrap().unwrap().message_ids,
        ["m2"]
    );
}

#[tokio::test]
async fn answers_older_than_the_cut_off_are_forgotten_oldest_first_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    for (key, at) in [(1u8, 3_000), (2, 1_000), (3, 2_000), (4, 2_000), (5, 9_000)] {
        let id = format!("m{key}");
        let k = keyed("Submit", key, key, &[&id], "", at);
        first(l.enqueue_once(&outgoing(&id, "c-1", at), Some(&k)));
    }
    let held = |l: &Ledger| -> BTreeSet<String> {
        l.answered_requests_iter()
            .map(|a| a.unwrap().message_ids[0].clone())
            .collect()
    };
    assert_eq!(l.forget_answers(2_000, 1).unwrap(), 1, "one per step");
    assert!(!held(&l).contains("m2"), "the oldest went first");
    assert_eq!(l.forget_answers(2_000, 256).unwrap(), 2);
    assert_eq!(held(&l), BTreeSet::from(["m1".into(), "m5".into()]));
    assert_eq!(l.forget_answers(2_000, 256).unwrap(), 0);
    assert_eq!(
        l.requests_tree().len().unwrap(),
        4,
        "two answers with their index entries"
    );
    // A forgotten key is new again.
    let k = keyed("Submit", 2, 0x77, &["m6"], "", 10_000);
    first(l.enqueue_once(&outgoing("m6", "c-1", 10_000), Some(&k)));
    // Forgetting reads only the time index: it works without the data key.
    l.flush().await.unwrap();
    drop(l);
    let plain = Ledger::open(dir.path()).unwrap();
    assert_eq!(plain.forget_answers(3_000, 256).unwrap(), 1);
    assert_eq!(plain.requests_tree().len().unwrap(), 4);
}

/// An answer holds ids only: neither before nor after the person's erasure does the
/// `requests` tree hold their name or date of birth, sealed or opened.
#[test]
fn no_stored_answer_holds_personal_data_also_after_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let k = keyed("RecordConsent", 7, 0x01, &["n1"], "c-1", 10);
    first(l.record_consent_once(
        &lena_consent("c-1"),
        &[outgoing("n1", "c-1", 10)],
        10,
        Some(&k),
    ));
    let ks = keyed("Submit", 8, 0x02, &["m1"], "", 20);
    first(l.enqueue_once(&outgoing("m1", "c-1", 20), Some(&ks)));
    let personal: [&[u8]; 3] = [b"Lena", b"Muster", b"2004-03-01"];
    let check = |l: &Ledger, when: &str| {
        let mut n = 0;
        for a in l.answered_requests_iter() {
            let bytes = a.unwrap().encode_to_vec();
            for p in personal {
                assert!(
                    !bytes.windows(p.len()).any(|w| w == p),
                    "{when}: an answer holds {:?}",
                    String::from_utf8_lossy(p)
                );
            }
            n += 1;
        }
        for kv in l.requests_tree().iter() {
            let (k, v) = kv.unwrap();
            for p in personal {
                assert!(
                    !k.windows(p.len()).any(|w| w == p) && !v.windows(p.len()).any(|w| w == p),
                    "{when}: raw tree"
                );
            }
        }
        assert_eq!(n, 2);
    };
    check(&l, "before the erasure");
    l.erase_consents(&BTreeSet::from(["c-1".to_string()]), 30)
        .unwrap();
    check(&l, "after the erasure");
    // The consent a repeated RecordConsent is answered from is the erased one.
    let held = l.consent("c-1").unwrap().unwrap();
    assert!(held.record.unwrap().subject.is_none());
}
