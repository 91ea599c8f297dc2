//! Exactly once from the IT system to the node, on real nodes (gRPC over mutual TLS on
//! loopback, sled stores): a call repeated with its idempotency key — because its answer was
//! lost — changes nothing and gets the first answer, also after a restart; the key with
//! another request is refused (`FAILED_PRECONDITION`, `idempotency-key-reused`); concurrent
//! calls with one key make one message; a repeat waits for the first call's flush and
//! learns of its undo; keys have a limit and are forgotten after the delivery deadline.
//! (Killed processes: `tests/crash.rs`, test 6.)

use kurzdraht_client::AgencyClient;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::*;
use std::time::Duration;
use tonic::Code;

const U25: pb::Purpose = pb::Purpose::U25MoveOut;

fn lena() -> pb::Subject {
    subject("Lena", "Hansen", "2005-04-12")
}

fn request(consent: &str, reason: &str, key: &str) -> pb::SubmitRequest {
    pb::SubmitRequest {
        recipient: JA.into(),
        consent_id: consent.into(),
        in_reply_to: String::new(),
        body: Some(pb::MessageBody {
            body: Some(certification_request(&lena(), reason)),
        }),
        idempotency_key: key.into(),
    }
}

async fn submit_req(
    client: &mut AgencyClient,
    req: pb::SubmitRequest,
) -> Result<pb::SubmitResponse, tonic::Status> {
    client.submit(req).await.map(|r| r.into_inner())
}

/// A consent of Lena at the Jobcenter for the Kreis office, held there (its notice
/// DELIVERED at the Jobcenter, so that no delivery flush of it is still to come).
async fn consent_in_force(h: &Harness) -> String {
    let mut jc = h.client(JC).await;
    let recorded = record_consent(&mut jc, consent_request(&lena(), &[JA], &[U25])).await;
    let id = recorded.consent.expect("a consent").consent_id;
    for n in &recorded.notice_message_ids {
        wait_for_state(&jc, n, pb::DeliveryState::Delivered).await;
    }
    wait_for_consent_state(&h.client(JA).await, &id, pb::ConsentState::ConsentInForce).await;
    h.node(JC).ledger().flush().await.expect("flush");
    id
}

/// The certification requests in the Kreis office's inbox, by message id.
async fn requests_at_ja(h: &Harness) -> Vec<String> {
    let items = read_inbox(&mut h.client(JA).await, 0).await;
    items
        .iter()
        .filter(|i| i.kind == pb::MessageKind::CertificationRequest as i32)
        .map(|i| i.message_id.clone())
        .collect()
}

/// How many messages the Jobcenter's node has ever queued.
fn queued_at_jc(h: &Harness) -> usize {
    h.node(JC).ledger().message_records_iter().count()
}

fn reused(what: &str, r: Result<impl std::fmt::Debug, tonic::Status>) {
    let s = expect_refusal(what, r, Code::FailedPrecondition, "idempotency-key-reused");
    assert!(
        s.message().contains("idempotency key") && s.message().contains("another request"),
        "{what}: {}",
        s.message()
    );
}

/// The case: a Submit whose answer was lost is repeated with its key: one message,
/// one inbox entry, the same id — also after a restart of the node; the key with another
/// request (or another method) is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_repeated_with_its_key_is_one_message_also_after_a_restart() {
    let mut h = start().await;
    let consent = consent_in_force(&h).await;
    let mut jc = h.client(JC).await;
    let key = "it-7f3a-0001";
    let first = submit_req(&mut jc, request(&consent, "Antrag", key))
        .await
        .expect("first submission");
    assert_eq!(first.state, pb::DeliveryState::Queued as i32);
    let again = submit_req(&mut jc, request(&consent, "Antrag", key))
        .await
        .expect("the repeat is answered");
    assert_eq!(again, first, "the first answer: same id, QUEUED");
    wait_for_state(&jc, &first.message_id, pb::DeliveryState::Delivered).await;
    let after_delivery = submit_req(&mut jc, request(&consent, "Antrag", key))
        .await
        .expect("repeat after delivery");
    assert_eq!(
        after_delivery, first,
        "still the first answer (GetStatus says DELIVERED)"
    );
    // Positive control: the same content under another key is another message.
    let other = submit_req(&mut jc, request(&consent, "Antrag", "it-7f3a-0002"))
        .await
        .expect("another key");
    assert_ne!(other.message_id, first.message_id);
    wait_for_state(&jc, &other.message_id, pb::DeliveryState::Delivered).await;
    assert_eq!(
        requests_at_ja(&h).await,
        vec![first.message_id.clone(), other.message_id.clone()],
        "one inbox entry per key"
    );

    // The key with another request: refused, nothing queued.
    let queued = queued_at_jc(&h);
    reused(
        "another reason under the key",
        submit_req(&mut jc, request(&consent, "Antrag (geändert)", key)).await,
    );
    let mut as_consent = consent_request(&lena(), &[JA], &[U25]);
    as_consent.idempotency_key = key.into();
    reused(
        "the key of a Submit on RecordConsent",
        jc.record_consent(as_consent).await,
    );
    assert_eq!(queued_at_jc(&h), queued, "a refused reuse queues nothing");
    assert_eq!(
        list_consents(&mut jc).await.len(),
        1,
        "and records no consent"
    );

    // After a restart: the same answers, from the store.
    drop(jc);
    h.stop(JC).await;
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    let restarted = submit_req(&mut jc, request(&consent, "Antrag", key))
        .await
        .expect("repeat after the restart");
    assert_eq!(restarted, first);
    reused(
        "another request after the restart",
        submit_req(&mut jc, request(&consent, "Antrag (geändert)", key)).await,
    );
    assert_eq!(queued_at_jc(&h), queued);
    assert_eq!(
        requests_at_ja(&h).await,
        vec![first.message_id, other.message_id]
    );
}

/// A key has a limit (1 to 128 printable ASCII characters without spaces); a key over it
/// is refused naming the field, and nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_have_a_limit_named_in_the_refusal() {
    let h = start().await;
    let consent = consent_in_force(&h).await;
    let mut jc = h.client(JC).await;
    let queued = queued_at_jc(&h);
    for (bad, why) in [
        ("k".repeat(129), "at most 128"),
        ("with space".to_string(), "printable ASCII"),
        ("schlüssel".to_string(), "printable ASCII"),
        ("tab\tkey".to_string(), "printable ASCII"),
    ] {
        let s = expect_refusal(
            &format!("key {bad:?}"),
            submit_req(&mut jc, request(&consent, "Antrag", &bad)).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
        assert!(
            s.message().contains("idempotency_key") && s.message().contains(why),
            "{bad:?}: {}",
            s.message()
        );
    }
    assert_eq!(queued_at_jc(&h), queued, "a refused key queues nothing");
    // Positive controls: 128 characters, every printable character, and no key.
    for good in [
        "k".repeat(128),
        "!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~".to_string(),
    ] {
        submit_req(&mut jc, request(&consent, "Antrag", &good))
            .await
            .unwrap_or_else(|s| panic!("key {good:?}: {s:?}"));
    }
    let a = submit_req(&mut jc, request(&consent, "Antrag", ""))
        .await
        .expect("no key");
    let b = submit_req(&mut jc, request(&consent, "Antrag", ""))
        .await
        .expect("no key");
    assert_ne!(
        a.message_id, b.message_id,
        "without a key, each call is a new message"
    );
    assert_eq!(queued_at_jc(&h), queued + 4);
}

/// RecordConsent and WithdrawConsent repeated with their keys record once and answer the
/// first answer, also after a restart; a withdrawal repeated without its key is refused as
/// withdrawn (what the key spares the IT system). After the person's erasure a repeat is
/// still answered — with the consent as held now, without their data — and the store's
/// answers hold none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_and_withdrawals_repeated_with_their_keys_are_recorded_once() {
    let mut h = start().await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let mut grant = consent_request(&lena(), &[JA], &[U25]);
    grant.idempotency_key = "grant-0815".into();
    let first = record_consent(&mut jc, grant.clone()).await;
    let again = record_consent(&mut jc, grant.clone()).await;
    assert_eq!(again, first, "the same consent record and notice ids");
    let id = first.consent.clone().expect("a consent").consent_id;
    assert_eq!(
        list_consents(&mut jc).await.len(),
        1,
        "one consent recorded"
    );
    let mut changed = grant.clone();
    changed.recorded_by = "Frau Sievers".into();
    reused(
        "another consent under the key",
        jc.record_consent(changed).await,
    );
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;

    let withdraw = pb::WithdrawConsentRequest {
        consent_id: id.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: "withdraw-0815".into(),
    };
    let w1 = jc
        .withdraw_consent(withdraw.clone())
        .await
        .expect("withdraw")
        .into_inner();
    let w2 = jc
        .withdraw_consent(withdraw.clone())
        .await
        .expect("the repeat is answered")
        .into_inner();
    assert_eq!(w2, w1);
    // Without the key, the same call is refused: the consent is withdrawn already.
    expect_refusal(
        "a withdrawal repeated without its key",
        jc.withdraw_consent(pb::WithdrawConsentRequest {
            idempotency_key: String::new(),
            ..withdraw.clone()
        })
        .await,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentWithdrawn).await;
    for n in first
        .notice_message_ids
        .iter()
        .chain(&w1.notice_message_ids)
    {
        wait_for_state(&jc, n, pb::DeliveryState::Delivered).await;
    }
    let kinds: Vec<i32> = read_inbox(&mut ja.clone(), 0)
        .await
        .iter()
        .map(|i| i.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            pb::MessageKind::ConsentNotice as i32,
            pb::MessageKind::ConsentWithdrawal as i32
        ],
        "one notice, one withdrawal at the Kreis office"
    );

    drop(jc);
    h.stop(JC).await;
    h.restart(JC).await;
    let mut jc = h.client(JC).await;
    assert_eq!(record_consent(&mut jc, grant.clone()).await, first);
    let w3 = jc
        .withdraw_consent(withdraw.clone())
        .await
        .expect("repeat after restart")
        .into_inner();
    assert_eq!(w3, w1);
    assert_eq!(list_consents(&mut jc).await.len(), 1);

    // Erasure: a repeat still changes nothing, and is answered without the person's data.
    let l = lena();
    jc.erase_subject(pb::SubjectAccessRequest {
        given_name: l.given_name.clone(),
        family_name: l.family_name.clone(),
        date_of_birth: l.date_of_birth.clone(),
    })
    .await
    .expect("erase");
    let erased = record_consent(&mut jc, grant.clone()).await;
    assert_eq!(erased.notice_message_ids, first.notice_message_ids);
    let record = erased.consent.expect("the consent as held");
    assert_eq!(record.consent_id, id);
    assert!(record.subject.is_none(), "the answer keeps no erased data");
    assert_eq!(list_consents(&mut jc).await.len(), 1);
    // Offline: no stored answer holds her name or date of birth.
    let ledger = h.node(JC).ledger().clone();
    let mut answers = 0;
    for a in ledger.answered_requests_iter() {
        let bytes = prost::Message::encode_to_vec(&a.expect("an answer"));
        for personal in [&b"Hansen"[..], b"Lena", b"2005-04-12", b"Kurhaus"] {
            assert!(
                !bytes.windows(personal.len()).any(|w| w == personal),
                "a stored answer holds {:?}",
                String::from_utf8_lossy(personal)
            );
        }
        answers += 1;
    }
    assert_eq!(answers, 2, "the consent's and the withdrawal's");
}

/// Sixteen Submits with one key at once: one message, every caller gets its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_with_one_key_make_one_message() {
    const CALLERS: usize = 16;
    let h = start().await;
    let consent = consent_in_force(&h).await;
    let jc = h.client(JC).await;
    let queued = queued_at_jc(&h);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (mut jc, consent, start) = (jc.clone(), consent.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                submit_req(&mut jc, request(&consent, "Antrag", "concurrent-1")).await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for c in calls {
        let answer = c.await.expect("task").expect("every caller is answered");
        assert_eq!(answer.state, pb::DeliveryState::Queued as i32);
        ids.insert(answer.message_id);
    }
    assert_eq!(ids.len(), 1, "one message id for all: {ids:?}");
    assert_eq!(queued_at_jc(&h), queued + 1, "one message queued");
    let id = ids.into_iter().next().expect("an id");
    wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    assert_eq!(requests_at_ja(&h).await, vec![id]);
}

/// A repeat that comes while the first call waits for its flush waits with it and gets the
/// same answer; if that flush fails, the first call is undone, the repeat is told so
/// (`not-stored`), and the next repeat queues the message — which then arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_waits_for_the_first_calls_flush_and_learns_of_its_undo() {
    let h = start().await;
    let consent = consent_in_force(&h).await;
    let jc = h.client(JC).await;
    let ledger = h.node(JC).ledger().clone();
    let spawn_submit = |key: &'static str| {
        let (mut jc, consent) = (jc.clone(), consent.clone());
        tokio::spawn(async move { submit_req(&mut jc, request(&consent, "Antrag", key)).await })
    };
    let committed = |n: usize| {
        let ledger = ledger.clone();
        async move {
            wait_until("the first call is committed", || async {
                match ledger.outbox_len(JA) {
                    m if m == n => Ok(()),
                    m => Err(format!("{m} queued")),
                }
            })
            .await
        }
    };

    // 1. The first call's flush is paused: the repeat waits, then both get one answer.
    let pause = ledger.pause_next_flush();
    let first = spawn_submit("paused-1");
    committed(1).await;
    let mut repeat = spawn_submit("paused-1");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut repeat)
            .await
            .is_err(),
        "the repeat answered before the first call was on disk"
    );
    drop(pause);
    let first = first.await.expect("task").expect("first call");
    let repeat = repeat.await.expect("task").expect("the repeat");
    assert_eq!(repeat, first);
    wait_for_state(&jc, &first.message_id, pb::DeliveryState::Delivered).await;

    // 2. The first call's flush fails: it is undone, and so is the repeat's answer.
    let release = ledger.inject_flush_failure();
    let failing = spawn_submit("failing-1");
    committed(1).await;
    let mut repeat = spawn_submit("failing-1");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut repeat)
            .await
            .is_err(),
        "the repeat answered while the first call's flush was running"
    );
    release.notify_one();
    for (what, answer) in [("first call", failing.await), ("repeat", repeat.await)] {
        let s = expect_refusal(what, answer.expect("task"), Code::Unavailable, "not-stored");
        assert!(s.message().contains("nothing"), "{what}: {}", s.message());
    }
    assert_eq!(ledger.outbox_len(JA), 0, "undone");
    // The next repeat with the key queues it; it arrives once.
    let mut c = jc.clone();
    let third = submit_req(&mut c, request(&consent, "Antrag", "failing-1"))
        .await
        .expect("the repeat after the undo queues");
    wait_for_state(&jc, &third.message_id, pb::DeliveryState::Delivered).await;
    assert_eq!(
        requests_at_ja(&h).await,
        vec![first.message_id, third.message_id],
        "each key's message arrived once"
    );
}

/// Keys are kept the delivery deadline (default 7 days) after their first answer; the
/// retention sweep forgets older ones, and a call with a forgotten key is a new call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_forgotten_after_the_delivery_deadline() {
    let (h, clocks) = start_on_manual_clocks().await;
    let consent = consent_in_force(&h).await;
    let mut jc = h.client(JC).await;
    let deadline_ms = h.node(JC).delivery_settings().deadline.as_millis() as i64;
    assert_eq!(deadline_ms, 7 * 24 * 3600 * 1000, "the default deadline");
    let first = submit_req(&mut jc, request(&consent, "Antrag", "kept-7d"))
        .await
        .expect("first");
    wait_for_state(&jc, &first.message_id, pb::DeliveryState::Delivered).await;
    let step = |ms: i64| {
        for c in clocks.values() {
            c.advance(ms);
        }
    };
    // One minute before the deadline: still kept.
    step(deadline_ms - 60_000);
    h.node(JC)
        .retention()
        .apply_retention()
        .await
        .expect("sweep");
    let kept = submit_req(&mut jc, request(&consent, "Antrag", "kept-7d"))
        .await
        .expect("repeat before the deadline");
    assert_eq!(kept, first);
    // Past it: forgotten; the same call is a new message now.
    step(60_000);
    h.node(JC)
        .retention()
        .apply_retention()
        .await
        .expect("sweep");
    assert_eq!(
        h.node(JC).ledger().answered_requests_iter().count(),
        0,
        "forgotten"
    );
    let anew = submit_req(&mut jc, request(&consent, "Antrag", "kept-7d"))
        .await
        .expect("a call with a forgotten key");
    assert_ne!(anew.message_id, first.message_id);
}
