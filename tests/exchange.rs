//! End-to-end exchange tests: the three Segeberg nodes as real gRPC servers on loopback
//! (mutual TLS between nodes, TLS + bearer token for the IT systems, sled stores on disk),
//! driven only through the AgencyApi, stopped and restarted like an operator would.
//!
//! Each test starts its own federation in its own temporary directory, so tests run in
//! parallel. Waiting is by polling ([`kurzdraht_testkit::wait_until`]), never by fixed sleeps; the only
//! bounded waits are the short windows in which a test checks that something does *not*
//! happen ([`kurzdraht_testkit::assert_stays`]).

use kurzdraht_client::connect;
use kurzdraht_envelope::{envelope_hash, ids::new_id, verify_and_open, verify_receipt};
use kurzdraht_ledger::Ledger;
use kurzdraht_node::clock;
use kurzdraht_node::clock::Clock;
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use kurzdraht_testkit::*;
use std::time::Duration;
use tonic::Code;

const U25: pb::Purpose = pb::Purpose::U25MoveOut;
const QUALI: pb::Purpose = pb::Purpose::QualificationMeasure;

fn lena() -> pb::Subject {
    subject("Lena", "Hansen", "2005-04-12")
}

fn mia() -> pb::Subject {
    subject("Mia", "Carstens", "2006-02-03")
}

/// Records a consent at the Jobcenter and waits until every named recipient holds it.
async fn replicated_consent(
    h: &Harness,
    subject: &pb::Subject,
    recipients: &[&str],
    purposes: &[pb::Purpose],
) -> String {
    let mut jc = h.client(JC).await;
    let id = consent_id(&mut jc, consent_request(subject, recipients, purposes)).await;
    for r in recipients {
        let c = h.client(r).await;
        wait_for_consent_state(&c, &id, pb::ConsentState::ConsentInForce).await;
    }
    id
}

/// 1. Every consent refusal the API can produce, with FAILED_PRECONDITION and its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_consent_refusal_at_submission_has_its_code() {
    let (h, clocks) = start_on_manual_clocks().await;
    let mut jc = h.client(JC).await;
    let mut jn = h.client(JN).await;
    let lena = lena();
    let request = || certification_request(&lena, "Stellungnahme erbeten.");
    let refused = |what: &str, r, reason: &str| {
        let s = expect_refusal(what, r, Code::FailedPrecondition, reason);
        assert!(s.message().contains(reason), "{what}: {:?}", s.message());
        for personal in ["Lena", "Hansen", "2005-04-12"] {
            assert!(!s.message().contains(personal), "{what}: {:?}", s.message());
        }
    };

    // no consent at all, and a well-formed id that no node holds
    refused(
        "no consent cited",
        submit(&mut jc, JA, "", "", request()).await,
        "no-consent",
    );
    refused(
        "unknown consent id",
        submit(&mut jc, JA, &new_id(), "", request()).await,
        "no-consent",
    );

    // the consent used for the positive control and the subject/recipient/purpose cases
    let u25 = consent_id(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    submit_ok(&mut jc, JA, &u25, request()).await;

    // withdrawn
    let withdrawn = consent_id(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    submit_ok(&mut jc, JA, &withdrawn, request()).await;
    jc.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: withdrawn.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .expect("withdraw");
    refused(
        "withdrawn consent",
        submit(&mut jc, JA, &withdrawn, "", request()).await,
        "consent-withdrawn",
    );

    // expired: valid for one minute, then two minutes pass
    let mut short = consent_request(&lena, &[JA], &[U25]);
    short.valid_until_ms = clocks[JC].now_ms() + 60_000;
    let expiring = consent_id(&mut jc, short).await;
    clocks[JC].advance(120_000);
    wait_for_consent_state(&jc, &expiring, pb::ConsentState::ConsentExpired).await;
    refused(
        "expired consent",
        submit(&mut jc, JA, &expiring, "", request()).await,
        "consent-expired",
    );

    // not yet valid: in force from tomorrow
    let mut later = consent_request(&lena, &[JA], &[U25]);
    later.valid_from_ms = clock::now_ms() + clock::DAY_MS;
    let future = consent_id(&mut jc, later).await;
    refused(
        "consent not yet in force",
        submit(&mut jc, JA, &future, "", request()).await,
        "consent-not-yet-valid",
    );

    // the consent names the Kreis office, not Norderstedt
    refused(
        "consent for another recipient",
        submit(&mut jc, JN, &u25, "", request()).await,
        "consent-other-recipient",
    );
    // the consent covers the move-out, not a qualification measure
    refused(
        "consent for another purpose",
        submit(&mut jc, JA, &u25, "", qualification_referral(&lena)).await,
        "consent-other-purpose",
    );
    // the consent is Lena's; the message is about Mia
    refused(
        "consent for another person",
        submit(
            &mut jc,
            JA,
            &u25,
            "",
            certification_request(&mia(), "Stellungnahme erbeten."),
        )
        .await,
        "consent-other-subject",
    );

    // consent-other-sender cannot be produced through the AgencyApi: a node evaluates a
    // submission only against a consent it holds, and it holds one only if it recorded it or
    // is named in it, and either way the consent covers it as a sender. The nearest case, a
    // Jugendamt not named in the consent citing it, is refused as no-consent.
    let mut kreis = h.client(JA).await;
    wait_for_consent_state(&kreis, &u25, pb::ConsentState::ConsentInForce).await;
    refused(
        "Norderstedt cites a consent that names only the Kreis office",
        submit(&mut jn, JC, &u25, "", move_out_certification(&lena)).await,
        "no-consent",
    );
    // while the office it names may answer the recording Jobcenter under it
    submit_ok(&mut kreis, JC, &u25, move_out_certification(&lena)).await;
}

/// 2. A refused submission stores nothing and sends nothing: the recipient's inbox and both
/// consent lists are unchanged, the next accepted message is the next one delivered, and the
/// offline stores show an empty outbox and only the accepted submissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_submission_leaves_no_trace() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut kreis = h.client(JA).await;
    let lena = lena();
    let consent = consent_id(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    wait_for_consent_state(&kreis, &consent, pb::ConsentState::ConsentInForce).await;
    let inbox_before = wait_for_inbox_len(&kreis, 1).await;
    let consents_jc = list_consents(&mut jc).await;
    let consents_ja = list_consents(&mut kreis).await;

    let mut bad_date = lena.clone();
    bad_date.date_of_birth = "31.02.2004".into();
    let refusals = [
        (
            submit(&mut jc, JA, "", "", certification_request(&lena, "x")).await,
            Code::FailedPrecondition,
            "no-consent",
        ),
        (
            submit(
                &mut jc,
                JA,
                &consent,
                "",
                certification_request(&mia(), "x"),
            )
            .await,
            Code::FailedPrecondition,
            "consent-other-subject",
        ),
        (
            submit(&mut jc, JA, &consent, "", qualification_referral(&lena)).await,
            Code::FailedPrecondition,
            "consent-other-purpose",
        ),
        (
            submit(&mut jc, JA, &consent, "", move_out_certification(&lena)).await,
            Code::PermissionDenied,
            "permission-denied",
        ),
        (
            submit(
                &mut jc,
                JA,
                &consent,
                "",
                certification_request(&bad_date, "x"),
            )
            .await,
            Code::InvalidArgument,
            "invalid-argument",
        ),
    ];
    let mut codes = Vec::new();
    for (i, (r, code, reason)) in refusals.into_iter().enumerate() {
        expect_refusal(&format!("refusal {i}"), r, code, reason);
        codes.push(reason.to_string());
    }

    // nothing reaches the Jugendamt while we look …
    assert_stays(
        "the Kreis inbox unchanged",
        Duration::from_millis(400),
        || {
            let mut c = kreis.clone();
            let before = ids(&inbox_before);
            async move {
                let now = ids(&read_inbox(&mut c, 0).await);
                if now == before {
                    Ok(())
                } else {
                    Err(format!("inbox now {now:?}"))
                }
            }
        },
    )
    .await;
    // … no consent changed on either side …
    assert_eq!(list_consents(&mut jc).await, consents_jc);
    assert_eq!(list_consents(&mut kreis).await, consents_ja);
    // … and the next accepted message is the next one the Jugendamt receives (anything
    // queued by a refusal in the probe's lane would have come first; that nothing was queued
    // in any lane is checked offline below: the Jobcenter's outbox is empty).
    let probe = submit_ok(&mut jc, JA, &consent, certification_request(&lena, "probe")).await;
    wait_for_state(&jc, &probe, pb::DeliveryState::Delivered).await;
    let after = read_inbox(&mut kreis, 0).await;
    let mut expected = ids(&inbox_before);
    expected.push(probe.clone());
    assert_eq!(ids(&after), expected);

    // Offline: the Jobcenter's outbox is empty, every submission it audited is one it
    // accepted, and each refusal is audited by its code only.
    let notices: Vec<String> = inbox_before.iter().map(|i| i.message_id.clone()).collect();
    let (jc_dir, ja_dir) = (h.data_dir(JC), h.data_dir(JA));
    drop((jc, kreis));
    let Harness { fed, dir: _dir } = h;
    fed.shutdown().await.expect("shutdown");
    let ledger = Ledger::open(&jc_dir).expect("open the Jobcenter's store");
    for peer in [JA, JN] {
        assert_eq!(ledger.outbox_len(peer), 0, "outbox to {peer}");
    }
    let entries = ledger.audit_entries().expect("audit");
    let submitted: Vec<&str> = entries
        .iter()
        .filter(|e| e.event == "message.submitted")
        .map(|e| e.message_id.as_str())
        .collect();
    let mut accepted: Vec<&str> = notices.iter().map(String::as_str).collect();
    accepted.push(&probe);
    assert_eq!(
        submitted, accepted,
        "only accepted submissions are audited as submitted"
    );
    let refused: Vec<String> = entries
        .iter()
        .filter(|e| e.event == "message.submission-refused")
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(refused, codes);
    assert!(entries
        .iter()
        .filter(|e| e.event == "message.submission-refused")
        .all(|e| e.message_id.is_empty() && e.peer == JA));
    drop(ledger);
    let ledger = Ledger::open(&ja_dir).expect("open the Jugendamt's store");
    let received: Vec<String> = ledger
        .audit_entries()
        .expect("audit")
        .into_iter()
        .filter(|e| e.event.starts_with("inbox.received") || e.event == "inbox.refused")
        .map(|e| e.message_id)
        .collect();
    assert_eq!(
        received, expected,
        "the Jugendamt saw exactly the accepted messages"
    );
}

/// 3. Policy: roles, the U25 rule, field rules and the directory, each with its code and
/// the field named in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refuses_wrong_roles_age_and_malformed_bodies() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut kreis = h.client(JA).await;
    let lena = lena();
    // A consent both ways for both purposes, so every refusal below is the policy's.
    let consent = replicated_consent(&h, &lena, &[JA], &[U25, QUALI]).await;

    for (what, body) in [
        ("MoveOutDecision", move_out_decision(&lena)),
        ("CertificationRequest", certification_request(&lena, "x")),
        ("QualificationReferral", qualification_referral(&lena)),
    ] {
        let s = expect_refusal(
            &format!("a Jugendamt sends {what}"),
            submit(&mut kreis, JC, &consent, "", body).await,
            Code::PermissionDenied,
            "permission-denied",
        );
        assert!(s.message().contains("only a jobcenter"), "{}", s.message());
    }
    for (what, body) in [
        ("MoveOutCertification", move_out_certification(&lena)),
        ("ReferralResponse", referral_response(&lena)),
    ] {
        let s = expect_refusal(
            &format!("the Jobcenter sends {what}"),
            submit(&mut jc, JA, &consent, "", body).await,
            Code::PermissionDenied,
            "permission-denied",
        );
        assert!(s.message().contains("only a jugendamt"), "{}", s.message());
    }
    let s = expect_refusal(
        "a Jugendamt certifies to another Jugendamt",
        submit(&mut kreis, JN, &consent, "", move_out_certification(&lena)).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    assert!(
        s.message().contains("goes to a jobcenter"),
        "{}",
        s.message()
    );
    // the controls: the allowed directions pass under the same consent
    submit_ok(&mut kreis, JC, &consent, move_out_certification(&lena)).await;
    submit_ok(&mut jc, JA, &consent, move_out_decision(&lena)).await;

    // U25: 25 today is refused; 25 tomorrow passes the policy (and then needs a consent)
    let turns_25_today = subject("Kai", "Lorenzen", &birthday_years_ago(25));
    let s = expect_refusal(
        "a subject 25 today",
        submit(
            &mut jc,
            JA,
            "",
            "",
            certification_request(&turns_25_today, "x"),
        )
        .await,
        Code::InvalidArgument,
        "over-age",
    );
    assert!(
        s.message().contains("subject.date_of_birth"),
        "{}",
        s.message()
    );
    assert!(s.message().contains("25 or older"), "{}", s.message());
    let turns_25_tomorrow = subject("Kai", "Lorenzen", &day_after(&birthday_years_ago(25)));
    expect_refusal(
        "a subject 24 who turns 25 tomorrow passes the U25 rule",
        submit(
            &mut jc,
            JA,
            "",
            "",
            certification_request(&turns_25_tomorrow, "x"),
        )
        .await,
        Code::FailedPrecondition,
        "no-consent",
    );
    let unborn = subject("Kai", "Lorenzen", &day_after(&today()));
    let s = expect_refusal(
        "a subject born after the message date",
        submit(&mut jc, JA, "", "", certification_request(&unborn, "x")).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(
        s.message().contains("subject.date_of_birth"),
        "{}",
        s.message()
    );

    // malformed bodies name the field
    let mut bad_date = lena.clone();
    bad_date.date_of_birth = "31.02.2004".into();
    let mut no_name = lena.clone();
    no_name.given_name = "  ".into();
    let no_subject = Body::CertificationRequest(pb::CertificationRequest {
        subject: None,
        reason: "x".into(),
        respond_by: String::new(),
        caseworker: "Herr Jensen".into(),
    });
    let no_caseworker = Body::CertificationRequest(pb::CertificationRequest {
        subject: Some(lena.clone()),
        reason: "x".into(),
        respond_by: String::new(),
        caseworker: String::new(),
    });
    let bad_respond_by = Body::CertificationRequest(pb::CertificationRequest {
        subject: Some(lena.clone()),
        reason: "x".into(),
        respond_by: "2026-13-01".into(),
        caseworker: "Herr Jensen".into(),
    });
    let no_measure = Body::QualificationReferral(pb::QualificationReferral {
        subject: Some(lena.clone()),
        reason: "x".into(),
        measure: String::new(),
        contact: "Frau Brandt".into(),
        respond_by: String::new(),
    });
    for (body, field) in [
        (no_subject, "body.subject"),
        (
            certification_request(&bad_date, "x"),
            "body.subject.date_of_birth",
        ),
        (
            certification_request(&no_name, "x"),
            "body.subject.given_name",
        ),
        (no_caseworker, "body.caseworker"),
        (bad_respond_by, "body.respond_by"),
        (no_measure, "body.measure"),
    ] {
        let s = expect_refusal(
            field,
            submit(&mut jc, JA, &consent, "", body).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
        assert!(
            s.message().contains(&format!("invalid {field}:")),
            "{field}: {}",
            s.message()
        );
    }
    let s = expect_refusal(
        "an empty body",
        submit_body(&mut jc, JA, &consent, "", pb::MessageBody { body: None }).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("body"), "{}", s.message());
    let s = expect_refusal(
        "a malformed in_reply_to",
        submit(&mut jc, JA, &consent, "not-an-id", move_out_decision(&lena)).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("in_reply_to"), "{}", s.message());

    // recipients
    let s = expect_refusal(
        "a recipient not in the directory",
        submit(
            &mut jc,
            "jugendamt-hamburg",
            &consent,
            "",
            certification_request(&lena, "x"),
        )
        .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("recipient"), "{}", s.message());
    assert!(
        s.message().contains("not an agency in the directory"),
        "{}",
        s.message()
    );
    let s = expect_refusal(
        "the agency itself as recipient",
        submit(&mut jc, JC, &consent, "", certification_request(&lena, "x")).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("recipient"), "{}", s.message());
}

/// 4. The whole move-out exchange with receipts the test verifies itself: the consent is
/// replicated to exactly the agency it names, the request and the answer are delivered, the
/// inbox shows body, sender, consent and in_reply_to, each envelope verifies against its
/// sender's pinned key, and each receipt against the receiver's pinned key and the hash of
/// the envelope the receiver holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_delivers_with_verifiable_receipts() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut kreis = h.client(JA).await;
    let mut jn = h.client(JN).await;
    let lena = lena();

    let recorded = record_consent(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    let record = recorded.consent.expect("record");
    assert_eq!(record.recording_agency, JC);
    assert_eq!(
        recorded.notice_message_ids.len(),
        1,
        "one notice per recipient"
    );
    let held =
        wait_for_consent_state(&kreis, &record.consent_id, pb::ConsentState::ConsentInForce).await;
    assert_eq!(
        held.consent.as_ref(),
        Some(&record),
        "the replicated record is the same"
    );
    let notice = wait_for_state(
        &jc,
        &recorded.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(notice.kind, pb::MessageKind::ConsentNotice as i32);
    assert!(
        list_consents(&mut jn).await.is_empty(),
        "Norderstedt, which the consent does not name, holds no copy"
    );

    // the request
    let body = certification_request(&lena, "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II.");
    let request = submit_ok(&mut jc, JA, &record.consent_id, body.clone()).await;
    let status = wait_for_state(&jc, &request, pb::DeliveryState::Delivered).await;
    assert_eq!(status.recipient, JA);
    assert_eq!(status.consent_id, record.consent_id);
    assert_eq!(status.kind, pb::MessageKind::CertificationRequest as i32);
    assert!(status.attempts >= 1);
    let inbox = read_inbox(&mut kreis, 0).await;
    assert_eq!(
        ids(&inbox),
        vec![recorded.notice_message_ids[0].clone(), request.clone()]
    );
    let item = inbox[1].clone();
    assert!(inbox[0].seq < item.seq);
    assert_eq!(item.sender, JC);
    assert_eq!(item.kind, pb::MessageKind::CertificationRequest as i32);
    assert_eq!(item.consent_id, record.consent_id);
    assert_eq!(item.in_reply_to, "");
    assert!(!item.acknowledged);
    assert_eq!(item.body, Some(pb::MessageBody { body: Some(body) }));

    let receipt = verify_delivery(&h, JC, JA, &status, &item);
    assert_eq!(
        (receipt.sender.as_str(), receipt.receiver.as_str()),
        (JC, JA)
    );
    assert_eq!(receipt.message_id, request);
    // The check can fail: not with Norderstedt's key, not over another envelope.
    let dir = h.fed.config(JC).expect("config").directory;
    let jn_keys = dir.get(JN).expect("JN").active_keys().to_vec();
    let hash = envelope_hash(item.envelope.as_ref().expect("envelope"));
    let expected = kurzdraht_envelope::ExpectedReceipt {
        message_id: &request,
        envelope_sha256: &hash,
        sender: JC,
        receiver: JA,
    };
    let receipt_bytes = status.receipt.clone().expect("receipt");
    assert!(verify_receipt(&receipt_bytes, &jn_keys, &expected).is_err());
    let other_hash = envelope_hash(inbox[0].envelope.as_ref().expect("envelope"));
    let ja_keys = dir.get(JA).expect("JA").active_keys().to_vec();
    assert!(verify_receipt(
        &receipt_bytes,
        &ja_keys,
        &kurzdraht_envelope::ExpectedReceipt {
            envelope_sha256: &other_hash,
            ..expected
        }
    )
    .is_err());
    // The envelope the Jugendamt keeps proves its origin: the Jobcenter's pinned key.
    let ja_config = h.fed.config(JA).expect("config");
    let jc_keys = ja_config
        .directory
        .get(JC)
        .expect("JC")
        .active_keys()
        .to_vec();
    let opened = verify_and_open(
        item.envelope.as_ref().expect("envelope"),
        &jc_keys,
        &ja_config.limits.envelope,
    )
    .expect("the stored envelope verifies against the Jobcenter's key");
    assert_eq!(opened.header.message_id, request);
    assert_eq!(opened.header.sender, JC);
    assert_eq!(opened.header.recipient, JA);
    assert!(verify_and_open(
        item.envelope.as_ref().expect("envelope"),
        &ja_keys,
        &ja_config.limits.envelope
    )
    .is_err());

    // the answer, citing the request
    let answer = submit(
        &mut kreis,
        JC,
        &record.consent_id,
        &request,
        move_out_certification(&lena),
    )
    .await
    .expect("certification accepted")
    .message_id;
    let status = wait_for_state(&kreis, &answer, pb::DeliveryState::Delivered).await;
    let inbox = read_inbox(&mut jc, 0).await;
    assert_eq!(ids(&inbox), vec![answer.clone()]);
    assert_eq!(inbox[0].sender, JA);
    assert_eq!(inbox[0].in_reply_to, request);
    assert_eq!(inbox[0].kind, pb::MessageKind::MoveOutCertification as i32);
    assert_eq!(
        inbox[0].body,
        Some(pb::MessageBody {
            body: Some(move_out_certification(&lena))
        })
    );
    verify_delivery(&h, JA, JC, &status, &inbox[0]);
}

/// 5. A withdrawal stops messages still queued under the consent: with the Jugendamt down,
/// three requests wait; the consent is withdrawn; all three end REFUSED (consent-withdrawn)
/// and the Jugendamt, once back, receives the withdrawal but none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_stops_queued_messages() {
    let mut h = start().await;
    let mut jc = h.client(JC).await;
    let lena = lena();
    let recorded = record_consent(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    let consent = recorded.consent.expect("record").consent_id;
    {
        let kreis = h.client(JA).await;
        wait_for_consent_state(&kreis, &consent, pb::ConsentState::ConsentInForce).await;
    }
    h.stop(JA).await;

    let mut queued = Vec::new();
    for i in 0..3 {
        let body = certification_request(&lena, &format!("Anfrage {i}"));
        queued.push(submit_ok(&mut jc, JA, &consent, body).await);
    }
    // The head is tried and retried; the others go in the same batches and never ahead of it
    // (FIFO): none is delivered while the head is not.
    let head = wait_until("the first request has failed twice", || {
        let mut c = jc.clone();
        let id = queued[0].clone();
        async move {
            let s = status(&mut c, &id).await;
            if s.state == pb::DeliveryState::Queued as i32 && s.attempts >= 2 {
                Ok(s)
            } else {
                Err(format!(
                    "{} after {} attempts",
                    state_name(s.state),
                    s.attempts
                ))
            }
        }
    })
    .await;
    assert!(!head.detail.is_empty(), "the transient error is shown");
    for id in &queued[1..] {
        let s = status(&mut jc, id).await;
        assert_eq!(s.state, pb::DeliveryState::Queued as i32);
        assert!(
            s.attempts <= head.attempts,
            "a message behind the head is tried only with it ({} > {})",
            s.attempts,
            head.attempts
        );
    }

    let withdrawal = jc
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
            recorded_by: "Herr Jensen".into(),
            manner: "schriftlich".into(),
            idempotency_key: String::new(),
        })
        .await
        .expect("withdraw")
        .into_inner();
    assert_eq!(withdrawal.notice_message_ids.len(), 1);
    h.restart(JA).await;

    for id in &queued {
        let s = wait_for_state(&jc, id, pb::DeliveryState::Refused).await;
        assert_eq!(s.detail, "consent-withdrawn", "{id}");
        assert!(s.receipt.is_none());
    }
    wait_for_state(
        &jc,
        &withdrawal.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    let kreis = h.client(JA).await;
    wait_for_consent_state(&kreis, &consent, pb::ConsentState::ConsentWithdrawn).await;
    let inbox = read_inbox(&mut kreis.clone(), 0).await;
    assert_eq!(
        ids(&inbox),
        vec![
            recorded.notice_message_ids[0].clone(),
            withdrawal.notice_message_ids[0].clone()
        ],
        "the notice and the withdrawal, and none of the stopped requests"
    );
    assert_eq!(inbox[0].kind, pb::MessageKind::ConsentNotice as i32);
    assert_eq!(inbox[1].kind, pb::MessageKind::ConsentWithdrawal as i32);

    // The Jobcenter's IT system learns of each stopped message from its own inbox.
    let own = read_inbox(&mut jc.clone(), 0).await;
    let notices: Vec<_> = own.iter().filter_map(|i| i.notice.clone()).collect();
    assert_eq!(
        notices
            .iter()
            .map(|n| n.message_id.clone())
            .collect::<Vec<_>>(),
        queued.clone(),
        "one notice per stopped message, in the order they were stopped"
    );
    for n in &notices {
        assert_eq!(n.state, pb::DeliveryState::Refused as i32);
        assert_eq!(n.detail, "consent-withdrawn");
        assert_eq!(n.recipient, JA);
    }
    for item in own.iter().filter(|i| i.notice.is_some()) {
        assert!(item.body.is_none() && item.envelope.is_none());
        assert_eq!(item.sender, JC);
    }
    // A delivery notice is acknowledged like any item, by its own id.
    let first = own
        .iter()
        .find(|i| i.notice.is_some())
        .expect("a notice")
        .message_id
        .clone();
    jc.acknowledge(pb::AcknowledgeRequest {
        message_id: first.clone(),
    })
    .await
    .expect("acknowledge a notice");
    let unacknowledged = read_inbox_with(
        &mut jc.clone(),
        pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            unacknowledged_only: true,
        },
    )
    .await;
    assert_eq!(unacknowledged.len(), own.len() - 1);
    assert!(!ids(&unacknowledged).contains(&first));
}

/// 6. A queued message survives a graceful restart of its sender and is delivered exactly
/// once when the recipient comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_survives_sender_restart_and_arrives_once() {
    let mut h = start().await;
    let lena = lena();
    let consent = replicated_consent(&h, &lena, &[JA], &[U25]).await;
    h.stop(JA).await;

    let mut jc = h.client(JC).await;
    let id = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "nach Neustart"),
    )
    .await;
    wait_until("the Jobcenter has tried once", || {
        let mut c = jc.clone();
        let id = id.clone();
        async move {
            let s = status(&mut c, &id).await;
            if s.attempts >= 1 {
                Ok(())
            } else {
                Err(format!("{} attempts", s.attempts))
            }
        }
    })
    .await;
    drop(jc);
    h.stop(JC).await;
    h.restart(JC).await;
    let jc = h.client(JC).await;
    let s = status(&mut jc.clone(), &id).await;
    assert_eq!(
        s.state,
        pb::DeliveryState::Queued as i32,
        "still queued after the restart"
    );
    assert!(s.attempts >= 1, "the attempts survived the restart");

    h.restart(JA).await;
    let s = wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
    let mut kreis = h.client(JA).await;
    let inbox = read_inbox(&mut kreis, 0).await;
    let copies: Vec<_> = inbox.iter().filter(|i| i.message_id == id).collect();
    assert_eq!(copies.len(), 1, "delivered exactly once: {:?}", ids(&inbox));
    verify_delivery(&h, JC, JA, &s, copies[0]);
    assert_eq!(inbox.len(), 2, "the consent notice and the message");
}

/// 7. Per-peer FIFO: a consent notice and 20 messages queued while the Jugendamt is down
/// arrive in submission order, notice first; meanwhile the other Jugendamt's queue is not
/// blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_peer_fifo_and_independent_queues() {
    let mut h = start().await;
    let mut jc = h.client(JC).await;
    let lena = lena();
    h.stop(JA).await;

    let recorded = record_consent(&mut jc, consent_request(&lena, &[JA], &[U25])).await;
    let consent = recorded.consent.expect("record").consent_id;
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = certification_request(&lena, &format!("Anfrage Nr. {i:02}"));
        sent.push(submit_ok(&mut jc, JA, &consent, body).await);
    }

    // Norderstedt is reachable and its queue moves while the Kreis office is down.
    let jonas = subject("Jonas", "Petersen", "2006-09-03");
    let jonas_consent = replicated_consent(&h, &jonas, &[JN], &[QUALI]).await;
    let referral = submit_ok(&mut jc, JN, &jonas_consent, qualification_referral(&jonas)).await;
    wait_for_state(&jc, &referral, pb::DeliveryState::Delivered).await;
    for id in sent.iter().chain(&recorded.notice_message_ids) {
        let s = status(&mut jc, id).await;
        assert_eq!(
            s.state,
            pb::DeliveryState::Queued as i32,
            "{id} waits for the Kreis office"
        );
    }

    h.restart(JA).await;
    for id in &sent {
        wait_for_state(&jc, id, pb::DeliveryState::Delivered).await;
    }
    let mut kreis = h.client(JA).await;
    let inbox = read_inbox(&mut kreis, 0).await;
    let mut expected = recorded.notice_message_ids.clone();
    expected.extend(sent.iter().cloned());
    assert_eq!(
        ids(&inbox),
        expected,
        "notice first, then the 20 in submission order"
    );
    assert!(inbox.windows(2).all(|w| w[0].seq < w[1].seq));
    for (i, item) in inbox[1..].iter().enumerate() {
        let Some(pb::MessageBody {
            body: Some(Body::CertificationRequest(r)),
        }) = &item.body
        else {
            panic!("item {i} is not a certification request");
        };
        assert_eq!(r.reason, format!("Anfrage Nr. {i:02}"));
    }
}

/// 8. The inbox: resuming after a cursor, following new arrivals, hiding acknowledged
/// items, and acknowledging an unknown message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_cursor_follow_and_acknowledge() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut kreis = h.client(JA).await;
    let lena = lena();
    let consent = replicated_consent(&h, &lena, &[JA], &[U25]).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let id = submit_ok(
            &mut jc,
            JA,
            &consent,
            certification_request(&lena, &format!("{i}")),
        )
        .await;
        wait_for_state(&jc, &id, pb::DeliveryState::Delivered).await;
        sent.push(id);
    }
    let all = read_inbox(&mut kreis, 0).await;
    assert_eq!(all.len(), 4);
    assert_eq!(ids(&all[1..]), sent);

    // resume after a cursor: only what came after it
    let after_first = read_inbox(&mut kreis, all[1].seq).await;
    assert_eq!(ids(&after_first), sent[1..].to_vec());
    assert!(read_inbox(&mut kreis, all[3].seq).await.is_empty());

    // follow: a message that arrives after the stream was opened
    let mut stream = kreis
        .read_inbox(pb::ReadInboxRequest {
            after_seq: all[3].seq,
            follow: true,
            unacknowledged_only: false,
        })
        .await
        .expect("open a following stream")
        .into_inner();
    let late = submit_ok(&mut jc, JA, &consent, certification_request(&lena, "spät")).await;
    let item = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("the following stream delivers the new message in time")
        .expect("stream ok")
        .expect("stream still open");
    assert_eq!(item.message_id, late);
    assert!(item.seq > all[3].seq);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.message())
            .await
            .is_err(),
        "the following stream stays open and carries nothing else"
    );
    drop(stream);

    // acknowledge two; unacknowledged_only hides them
    for id in &sent[..2] {
        kreis
            .acknowledge(pb::AcknowledgeRequest {
                message_id: id.clone(),
            })
            .await
            .expect("acknowledge");
    }
    kreis
        .acknowledge(pb::AcknowledgeRequest {
            message_id: sent[0].clone(),
        })
        .await
        .expect("acknowledging twice is harmless");
    let open = read_inbox_with(
        &mut kreis,
        pb::ReadInboxRequest {
            after_seq: 0,
            follow: false,
            unacknowledged_only: true,
        },
    )
    .await;
    assert_eq!(
        ids(&open),
        vec![all[0].message_id.clone(), sent[2].clone(), late.clone()]
    );
    let everything = read_inbox(&mut kreis, 0).await;
    assert_eq!(everything.len(), 5);
    let acked: Vec<bool> = everything.iter().map(|i| i.acknowledged).collect();
    assert_eq!(acked, vec![false, true, true, false, false]);

    // unknown and malformed ids; a sent message is not in the sender's inbox
    let unknown = new_id();
    let s = expect_refusal(
        "acknowledge an unknown id",
        kreis
            .acknowledge(pb::AcknowledgeRequest {
                message_id: unknown.clone(),
            })
            .await,
        Code::NotFound,
        "not-found",
    );
    assert!(s.message().contains(&unknown), "{}", s.message());
    expect_refusal(
        "acknowledge at the sender what it sent",
        jc.acknowledge(pb::AcknowledgeRequest {
            message_id: sent[2].clone(),
        })
        .await,
        Code::NotFound,
        "not-found",
    );
    expect_refusal(
        "acknowledge a malformed id",
        kreis
            .acknowledge(pb::AcknowledgeRequest {
                message_id: "nope".into(),
            })
            .await,
        Code::InvalidArgument,
        "invalid-argument",
    );
}

/// 9. The AgencyApi takes only its own IT system's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_api_refuses_wrong_tokens() {
    let h = start().await;
    let jc_config = h.fed.client_config(JC).expect("client config");
    let ja_config = h.fed.client_config(JA).expect("client config");
    let jc_token = h.token(JC);
    assert!(!jc_token.is_empty());
    assert_ne!(jc_token, h.token(JA));

    // controls: each token works at its own node
    for config in [
        jc_config.with_token(&jc_token),
        ja_config.with_token(&h.token(JA)),
    ] {
        let mut c = connect(&config).await.expect("connect");
        c.list_consents(pb::ListConsentsRequest::default())
            .await
            .expect("the right token is accepted");
    }

    let mut wrong = connect(&jc_config.with_token("wrong"))
        .await
        .expect("TLS connects");
    let s = expect_refusal(
        "a wrong token",
        wrong
            .list_consents(pb::ListConsentsRequest::default())
            .await,
        Code::Unauthenticated,
        "unauthenticated",
    );
    assert!(
        !s.message().contains("wrong"),
        "the token is not echoed: {}",
        s.message()
    );
    expect_refusal(
        "a wrong token submitting",
        submit(&mut wrong, JA, "", "", certification_request(&lena(), "x")).await,
        Code::Unauthenticated,
        "unauthenticated",
    );
    expect_refusal(
        "a wrong token reading the inbox",
        wrong
            .read_inbox(pb::ReadInboxRequest {
                after_seq: 0,
                follow: true,
                unacknowledged_only: false,
            })
            .await,
        Code::Unauthenticated,
        "unauthenticated",
    );
    let mut empty = connect(&jc_config.with_token(""))
        .await
        .expect("TLS connects");
    expect_refusal(
        "an empty token",
        empty
            .list_consents(pb::ListConsentsRequest::default())
            .await,
        Code::Unauthenticated,
        "unauthenticated",
    );

    // the Jobcenter's own token at the Kreis Jugendamt's node
    let mut borrowed = connect(&ja_config.with_token(&jc_token))
        .await
        .expect("TLS connects");
    expect_refusal(
        "the Jobcenter's token at the Jugendamt",
        borrowed
            .list_consents(pb::ListConsentsRequest::default())
            .await,
        Code::Unauthenticated,
        "unauthenticated",
    );
    expect_refusal(
        "the Jobcenter's token acknowledging at the Jugendamt",
        borrowed
            .acknowledge(pb::AcknowledgeRequest {
                message_id: new_id(),
            })
            .await,
        Code::Unauthenticated,
        "unauthenticated",
    );
}

/// 10. After a flow with refusals, reads, acknowledgements and a withdrawal, every node's
/// audit chain verifies offline and none of its entries holds a name, date of birth,
/// address or case reference used in the flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chains_verify_and_hold_no_personal_data() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut kreis = h.client(JA).await;
    let mut zofia = subject("Zofia", "Wrzesniewski", "2006-11-23");
    zofia.address = Some(pb::Address {
        street: "Quellenweg 9".into(),
        postal_code: "23812".into(),
        city: "Wahlstedt".into(),
    });
    zofia.case_references = vec![pb::CaseReference {
        agency: JC.into(),
        reference: "AZ-JC-4711-ZW".into(),
    }];
    let theodor = subject("Theodor", "Klabunde", "2007-01-30");
    let personal = [
        "Zofia",
        "Wrzesniewski",
        "2006-11-23",
        "Quellenweg",
        "Wahlstedt",
        "AZ-JC-4711-ZW",
        "Theodor",
        "Klabunde",
        "2007-01-30",
    ];

    let consent = replicated_consent(&h, &zofia, &[JA], &[U25]).await;
    let request = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&zofia, "Anfrage"),
    )
    .await;
    wait_for_state(&jc, &request, pb::DeliveryState::Delivered).await;
    expect_refusal(
        "a message about another person",
        submit(
            &mut jc,
            JA,
            &consent,
            "",
            certification_request(&theodor, "x"),
        )
        .await,
        Code::FailedPrecondition,
        "consent-other-subject",
    );
    expect_refusal(
        "a Jugendamt deciding",
        submit(&mut kreis, JC, &consent, "", move_out_decision(&zofia)).await,
        Code::PermissionDenied,
        "permission-denied",
    );
    let answer = submit(
        &mut kreis,
        JC,
        &consent,
        &request,
        move_out_certification(&zofia),
    )
    .await
    .expect("answer")
    .message_id;
    wait_for_state(&kreis, &answer, pb::DeliveryState::Delivered).await;
    read_inbox(&mut kreis, 0).await;
    kreis
        .acknowledge(pb::AcknowledgeRequest {
            message_id: request.clone(),
        })
        .await
        .expect("acknowledge");
    jc.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: consent.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .expect("withdraw");
    wait_for_consent_state(&kreis, &consent, pb::ConsentState::ConsentWithdrawn).await;
    expect_refusal(
        "after the withdrawal",
        submit(
            &mut kreis,
            JC,
            &consent,
            &request,
            move_out_certification(&zofia),
        )
        .await,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );

    let dirs: Vec<(String, std::path::PathBuf)> = [JC, JA, JN]
        .iter()
        .map(|a| (a.to_string(), h.data_dir(a)))
        .collect();
    drop((jc, kreis));
    let Harness { fed, dir: _dir } = h;
    fed.shutdown().await.expect("shutdown");

    let mut events = std::collections::BTreeMap::new();
    for (agency, data_dir) in &dirs {
        let ledger = Ledger::open(data_dir).expect("open the store offline");
        let report = ledger.verify_audit().expect("the audit chain verifies");
        let entries = ledger.audit_entries().expect("audit entries");
        assert_eq!(report.entries, entries.len() as u64, "{agency}");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "{agency}: sequence");
            for field in [&e.event, &e.detail, &e.peer, &e.message_id, &e.consent_id] {
                for p in personal {
                    assert!(
                        !field.to_lowercase().contains(&p.to_lowercase()),
                        "{agency}: audit entry {} holds personal data {p:?}: {e:?}",
                        e.seq
                    );
                }
            }
        }
        events.insert(
            agency.clone(),
            entries
                .iter()
                .map(|e| format!("{} {}", e.event, e.detail))
                .collect::<Vec<_>>(),
        );
    }
    let has = |agency: &str, what: &str| {
        assert!(
            events[agency]
                .iter()
                .any(|e| e.trim() == what || e.starts_with(what)),
            "{agency} audit lacks {what:?}: {:?}",
            events[agency]
        )
    };
    has(JC, "consent.recorded");
    has(JC, "message.submission-refused consent-other-subject");
    has(JC, "message.delivered");
    has(JC, "consent.withdrawn");
    has(JC, "inbox.received");
    has(JA, "consent.replicated");
    has(JA, "inbox.received");
    has(JA, "inbox.read");
    has(JA, "inbox.acknowledged");
    has(JA, "message.submission-refused permission-denied");
    has(JA, "message.submission-refused consent-withdrawn");
    has(JA, "consent.withdrawal-replicated");
    assert!(
        events[JN].is_empty(),
        "Norderstedt took part in nothing: {:?}",
        events[JN]
    );
}

/// 11. A message that cannot be delivered before its deadline becomes EXPIRED: its status
/// says so, the submitting IT system finds a notice in its inbox, and it is never delivered
/// afterwards, not even when the peer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_message_expires_and_is_never_sent() {
    let mut h = start().await;
    let lena = lena();
    let consent = replicated_consent(&h, &lena, &[JA], &[U25]).await;
    // The Jobcenter's deadline becomes 2 seconds (it is stamped at submission).
    h.reconfigure(JC, &[("deadline_secs = 604800", "deadline_secs = 2")])
        .await;
    h.stop(JA).await;

    let mut jc = h.client(JC).await;
    let id = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "zu spät"),
    )
    .await;
    let s = wait_for_state(&jc, &id, pb::DeliveryState::Expired).await;
    assert_eq!(s.detail, "deadline passed");
    assert!(s.receipt.is_none());
    let own = read_inbox(&mut jc.clone(), 0).await;
    let notice = own
        .iter()
        .find_map(|i| i.notice.clone().filter(|n| n.message_id == id))
        .expect("an expiry notice in the Jobcenter's inbox");
    assert_eq!(notice.state, pb::DeliveryState::Expired as i32);

    h.restart(JA).await;
    let kreis = h.client(JA).await;
    assert_stays(
        "the expired message never reaches the Jugendamt",
        Duration::from_millis(600),
        || {
            let mut k = kreis.clone();
            let id = id.clone();
            async move {
                let inbox = read_inbox(&mut k, 0).await;
                if inbox.iter().any(|i| i.message_id == id) {
                    Err("delivered after expiry".to_string())
                } else {
                    Ok(())
                }
            }
        },
    )
    .await;
    assert_eq!(
        status(&mut jc, &id).await.state,
        pb::DeliveryState::Expired as i32
    );
}
