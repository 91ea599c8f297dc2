//! The consent guarantee at its edges, on real nodes (gRPC over mutual TLS on loopback,
//! sled stores): a withdrawal answered while a batch under the consent is in flight, clocks
//! that disagree, a peer's `too-large`, a failed flush after commit, and erasure with
//! messages still queued. Each test was seen to fail against the code before its fix.

use kurzdraht_client::AgencyClient;
use kurzdraht_node::clock::{self, Clock};
use kurzdraht_node::service::delivery::IN_DOUBT;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::link::FrozenLink;
use kurzdraht_testkit::*;
use std::time::Duration;
use tonic::Code;

/// A person with an address, consenting at the Jobcenter to the Kreis office for the U25
/// flow.
fn lena() -> pb::Subject {
    subject("Lena", "Hansen", "2005-04-12")
}

fn u25_consent(s: &pb::Subject) -> pb::RecordConsentRequest {
    consent_request(s, &[JA], &[pb::Purpose::U25MoveOut])
}

fn withdrawal(consent_id: &str) -> pb::WithdrawConsentRequest {
    pb::WithdrawConsentRequest {
        consent_id: consent_id.into(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    }
}

/// What a frozen-receiver test stands on: Lena's consent in force at the Kreis office, the
/// Jobcenter reaching it through a [`FrozenLink`] (one message through first, so the
/// connection is up), then the link frozen and 20 messages submitted under the consent, a
/// batch of which is held in the link (the receiver is mid-batch).
struct FrozenMidBatch {
    h: Harness,
    jc: AgencyClient,
    link: FrozenLink,
    consent_id: String,
    sent: Vec<String>,
}

async fn frozen_mid_batch(jc_delivery: &[(&str, &str)]) -> FrozenMidBatch {
    let mut h = start().await;
    if !jc_delivery.is_empty() {
        h.reconfigure(JC, jc_delivery).await;
    }
    let lena = lena();
    let mut jc = h.client(JC).await;
    let id = consent_id(&mut jc, u25_consent(&lena)).await;
    let ja = h.client(JA).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    let peer = h.fed.config(JA).expect("JA config").peer_addr;
    let link = FrozenLink::start(peer).await;
    h.route_via(JC, JA, link.addr).await;
    let mut jc = h.client(JC).await;
    let first = submit_ok(&mut jc, JA, &id, certification_request(&lena, "Vorab")).await;
    wait_for_state(&jc, &first, pb::DeliveryState::Delivered).await;
    link.pause();
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = certification_request(&lena, &format!("Stellungnahme {i}"));
        sent.push(submit_ok(&mut jc, JA, &id, body).await);
    }
    wait_until("a batch is held in the frozen link", || async {
        match link.held() {
            n if n > 200 => Ok(()),
            n => Err(format!("{n} bytes held")),
        }
    })
    .await;
    FrozenMidBatch {
        h,
        jc,
        link,
        consent_id: id,
        sent,
    }
}

/// Once `WithdrawConsent` has answered OK, no message under the consent reaches the
/// receiver: a withdrawal waits for the delivery round in flight under it, so everything
/// the Jugendamt stores under the consent was received before the answer, and what was
/// still queued is stopped at the Jobcenter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_arrives_after_a_withdrawal_is_answered() {
    let FrozenMidBatch {
        h,
        jc,
        link,
        consent_id: id,
        sent,
    } = frozen_mid_batch(&[]).await;
    let mut withdrawing = {
        let mut jc = jc.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let answer = jc.withdraw_consent(withdrawal(&id)).await;
            (answer, clock::now_ms())
        })
    };
    // The withdrawal must wait for the batch in flight; give a wrong implementation the
    // chance to answer while the receiver is still frozen.
    let early = tokio::time::timeout(Duration::from_secs(2), &mut withdrawing).await;
    let answered_while_frozen = early.is_ok();
    link.resume();
    let (answer, answered_at_ms) = match early {
        Ok(done) => done,
        Err(_) => withdrawing.await,
    }
    .expect("withdrawal task");
    answer.expect("the withdrawal is recorded");

    let ja_ledger = h.node(JA).ledger().clone();
    let mut delivered = 0;
    let mut stopped = 0;
    for m in &sent {
        let s = settle(&jc, m).await;
        let held = ja_ledger.inbox_record(m).expect("read JA's inbox");
        match pb::DeliveryState::try_from(s.state) {
            Ok(pb::DeliveryState::Delivered) => {
                let r = held.unwrap_or_else(|| panic!("{m} delivered but not held"));
                assert!(
                    r.received_at_ms <= answered_at_ms,
                    "{m} was received {} ms after the withdrawal was answered (answered while frozen: {answered_while_frozen})",
                    r.received_at_ms - answered_at_ms
                );
                delivered += 1;
            }
            Ok(pb::DeliveryState::Refused) => {
                assert_eq!(s.detail, "consent-withdrawn", "{m}");
                assert!(
                    held.is_none(),
                    "{m} stopped at the Jobcenter but held by JA"
                );
                stopped += 1;
            }
            other => panic!("{m}: unexpected final state {other:?} ({})", s.detail),
        }
    }
    println!("delivered {delivered} (in flight at the withdrawal), stopped {stopped}");
    assert!(
        delivered >= 1,
        "no batch was in flight: the test tested nothing"
    );
    assert!(stopped >= 1, "nothing was left queued to stop");
    assert!(
        !answered_while_frozen,
        "the withdrawal was answered while a batch under it was in flight"
    );
}

/// A held withdrawal refuses whatever the clocks say: neither a recipient whose clock is
/// behind nor a controller whose clock was ahead when it recorded the withdrawal (and was
/// then corrected) lets a message through under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_holds_whatever_the_clocks_say() {
    let (h, clocks) = start_on_manual_clocks().await;
    // The Kreis office's clock is 4 minutes behind (within the 5-minute skew).
    clocks[JA].advance(-4 * 60 * 1000);
    let lena = lena();
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;

    // Valid from ten minutes ago, so that it is in force on every clock here.
    let since_before = |s: &pb::Subject| pb::RecordConsentRequest {
        valid_from_ms: clocks[JC].now_ms() - 10 * 60 * 1000,
        ..u25_consent(s)
    };
    let first = consent_id(&mut jc, since_before(&lena)).await;
    wait_for_consent_state(&ja, &first, pb::ConsentState::ConsentInForce).await;
    // Positive control: the Kreis office may answer under it.
    submit_ok(&mut ja, JC, &first, move_out_certification(&lena)).await;
    jc.withdraw_consent(withdrawal(&first))
        .await
        .expect("withdrawal");
    // The withdrawal is stamped in the Kreis office's future, yet it holds there at once.
    wait_for_consent_state(&ja, &first, pb::ConsentState::ConsentWithdrawn).await;
    let r = submit(&mut ja, JC, &first, "", move_out_certification(&lena)).await;
    expect_refusal(
        "the Kreis office answers under a consent withdrawn in its future",
        r,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );

    // The Jobcenter's clock runs 10 minutes ahead while it records a withdrawal, then
    // NTP steps it back.
    let second = consent_id(&mut jc, since_before(&lena)).await;
    submit_ok(
        &mut jc,
        JA,
        &second,
        certification_request(&lena, "Kontrolle"),
    )
    .await;
    clocks[JC].advance(10 * 60 * 1000);
    jc.withdraw_consent(withdrawal(&second))
        .await
        .expect("withdrawal");
    clocks[JC].advance(-10 * 60 * 1000);
    let r = submit(&mut jc, JA, &second, "", certification_request(&lena, "x")).await;
    expect_refusal(
        "a submission after the clock stepped back",
        r,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    wait_for_consent_state(&jc, &second, pb::ConsentState::ConsentWithdrawn).await;
}

/// A sender whose clock is ahead beyond the skew gets "try again" (UNAVAILABLE,
/// `clock-skew`), keeps its message queued and delivers it once the clocks agree: a clock
/// problem neither loses a consent notice nor blocks it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_delays_a_notice_but_does_not_lose_it() {
    let (h, clocks) = start_on_manual_clocks().await;
    clocks[JC].advance(10 * 60 * 1000);
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let recorded = record_consent(&mut jc, u25_consent(&lena())).await;
    let notice = recorded.notice_message_ids[0].clone();
    let id = recorded.consent.expect("the record").consent_id;
    wait_until("the Kreis office asked the Jobcenter to try again", || {
        let mut jc = jc.clone();
        let notice = notice.clone();
        async move {
            let s = status(&mut jc, &notice).await;
            if s.state != pb::DeliveryState::Queued as i32 {
                panic!(
                    "the notice was settled as {} ({})",
                    state_name(s.state),
                    s.detail
                );
            }
            if s.attempts >= 1 && s.detail.contains("clock-skew") {
                Ok(())
            } else {
                Err(format!("{} attempts, detail {:?}", s.attempts, s.detail))
            }
        }
    })
    .await;
    // The clocks come together: the Kreis office's reaches the Jobcenter's time.
    clocks[JA].advance(10 * 60 * 1000);
    clocks[JC].advance(60 * 1000); // the retry falls due
    h.node(JC).wake_all();
    wait_for_state(&jc, &notice, pb::DeliveryState::Delivered).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
}

/// Every text of a consent has a documented limit, checked at the API; the refusal names
/// the field. Beside each refusal, the longest allowed text is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_texts_have_limits() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let lena = lena();
    type Edit = fn(&mut pb::RecordConsentRequest, String);
    let cases: [(&str, usize, Edit); 3] = [
        ("evidence_reference", 200, |r, t| r.evidence_reference = t),
        ("recorded_by", 200, |r, t| r.recorded_by = t),
        ("guardian_name", 200, |r, t| {
            r.given_by = pb::ConsentGiver::Guardian as i32;
            r.categories.push(pb::DataCategory::FamilySituation as i32);
            r.guardian_name = t;
        }),
    ];
    for (field, limit, edit) in cases {
        let mut over = u25_consent(&lena);
        edit(&mut over, "ä".repeat(limit + 1));
        let s = expect_refusal(
            field,
            jc.record_consent(over).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
        assert!(s.message().contains(field), "{field}: {}", s.message());
        let mut at = u25_consent(&lena);
        edit(&mut at, "ä".repeat(limit));
        jc.record_consent(at)
            .await
            .unwrap_or_else(|s| panic!("{field} of {limit} characters refused: {s:?}"));
    }
    let id = consent_id(&mut jc, u25_consent(&lena)).await;
    let mut long = withdrawal(&id);
    long.manner = "x".repeat(501);
    let s = expect_refusal(
        "manner",
        jc.withdraw_consent(long).await,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("manner"), "{}", s.message());
    let mut at = withdrawal(&id);
    at.manner = "x".repeat(500);
    jc.withdraw_consent(at)
        .await
        .expect("a 500-character manner");
}

/// A consent notice discloses only what its own categories cover: an address (or case
/// references, or a guardian's name) the categories do not name is refused at
/// `RecordConsent`, naming the field; with the category named, it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_carries_only_covered_categories() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut with_refs = lena();
    with_refs.case_references.push(pb::CaseReference {
        agency: JC.into(),
        reference: "JC-SE-U25-0815".into(),
    });
    use pb::DataCategory::*;
    for (missing, field) in [
        (Address, "subject.address"),
        (CaseReferences, "subject.case_references"),
        (Identity, "categories"),
    ] {
        let mut req = u25_consent(&with_refs);
        req.categories.retain(|c| *c != missing as i32);
        let s = expect_refusal(
            field,
            jc.record_consent(req).await,
            Code::InvalidArgument,
            "invalid-argument",
        );
        assert!(s.message().contains(field), "{field}: {}", s.message());
    }
    let recorded = record_consent(&mut jc, u25_consent(&with_refs)).await;
    let ja = h.client(JA).await;
    let id = recorded.consent.expect("record").consent_id;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
}

/// A federation in which `agency` takes envelopes of at most 2 KiB of body, with Lena's
/// consent at the Jobcenter replicated to the Kreis office (its notice delivered).
async fn with_small_envelopes_at(agency: &str) -> (Harness, AgencyClient, String) {
    let mut h = start().await;
    h.reconfigure(
        agency,
        &[("[limits]\n", "[limits]\nmax_payload_bytes = 2048\n")],
    )
    .await;
    let mut jc = h.client(JC).await;
    let recorded = record_consent(&mut jc, u25_consent(&lena())).await;
    let id = recorded.consent.expect("record").consent_id;
    wait_for_state(
        &jc,
        &recorded.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    (h, jc, id)
}

/// A body of about 4 KiB: within the field limits, over a 2 KiB envelope limit.
fn large_request() -> pb::message_body::Body {
    certification_request(&lena(), &"ä".repeat(2_000))
}

/// A peer's `too-large` is final: the message is REJECTED at once, not retried for the
/// deadline, and the next message in the same lane (same consent) is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_at_the_peer_is_final_and_blocks_nothing() {
    // The Kreis office takes smaller envelopes than the Jobcenter seals.
    let (_h, mut jc, id) = with_small_envelopes_at(JA).await;
    let big = submit_ok(&mut jc, JA, &id, large_request()).await;
    let after = submit_ok(&mut jc, JA, &id, certification_request(&lena(), "kurz")).await;
    let s = wait_for_state(&jc, &big, pb::DeliveryState::Rejected).await;
    assert!(s.detail.contains("too-large"), "{}", s.detail);
    assert_eq!(s.attempts, 1, "retried a final refusal");
    wait_for_state(&jc, &after, pb::DeliveryState::Delivered).await;
}

/// Nothing is queued that the federation's envelope limits would refuse: a message whose
/// sealed body exceeds `[limits] max_payload_bytes` is refused at `Submit` (final,
/// `too-large`) and leaves no trace in the outbox; a smaller one under the same consent goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_queued_over_the_envelope_limits() {
    let (h, mut jc, id) = with_small_envelopes_at(JC).await;
    assert_eq!(h.node(JC).ledger().outbox_len(JA), 0);
    let r = submit(&mut jc, JA, &id, "", large_request()).await;
    let s = expect_refusal(
        "an oversized message",
        r,
        Code::ResourceExhausted,
        "too-large",
    );
    assert!(s.message().contains("body"), "{}", s.message());
    let queued = h.node(JC).ledger().outbox_len(JA);
    assert_eq!(queued, 0, "the refused message was queued");
    let ok = submit_ok(&mut jc, JA, &id, certification_request(&lena(), "kurz")).await;
    wait_for_state(&jc, &ok, pb::DeliveryState::Delivered).await;
}

/// When the flush after a submission's commit fails, the submission is undone: the IT
/// system is told nothing was queued (UNAVAILABLE, `not-stored`), the message never leaves
/// — also not while the failing flush was still running — and submitting again sends the
/// data once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_flush_sends_nothing_twice() {
    let h = start().await;
    let lena = lena();
    let mut jc = h.client(JC).await;
    let recorded = record_consent(&mut jc, u25_consent(&lena)).await;
    let id = recorded.consent.expect("record").consent_id;
    let ja = h.client(JA).await;
    // The notice's round has flushed at the Jobcenter too: the injected failure below is
    // taken by the submission's flush, not by that round's.
    wait_for_state(
        &jc,
        &recorded.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    let ledger = h.node(JC).ledger().clone();
    let release = ledger.inject_flush_failure();
    let submitting = {
        let mut jc = jc.clone();
        let (id, lena) = (id.clone(), lena.clone());
        tokio::spawn(async move {
            submit(&mut jc, JA, &id, "", certification_request(&lena, "einmal")).await
        })
    };
    // Committed, not yet flushed: the delivery worker looks at it meanwhile.
    wait_until("the submission is committed", || async {
        match ledger.outbox_len(JA) {
            1 => Ok(()),
            n => Err(format!("{n} queued")),
        }
    })
    .await;
    h.node(JC).wake_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    release.notify_one();
    let refused = submitting.await.expect("submission task");
    let s = expect_refusal(
        "a submission whose flush failed",
        refused,
        Code::Unavailable,
        "not-stored",
    );
    assert!(s.message().contains("submit again"), "{}", s.message());
    assert_eq!(
        ledger.outbox_len(JA),
        0,
        "the undone message is still queued"
    );
    // The IT system submits again: the data goes once.
    let again = submit_ok(&mut jc, JA, &id, certification_request(&lena, "einmal")).await;
    wait_for_state(&jc, &again, pb::DeliveryState::Delivered).await;
    let requests: Vec<_> = read_inbox(&mut ja.clone(), 0)
        .await
        .into_iter()
        .filter(|i| i.kind == pb::MessageKind::CertificationRequest as i32)
        .collect();
    assert_eq!(ids(&requests), vec![again], "the Kreis office's requests");
}

/// After `EraseSubject` has answered, nothing of the person is sent and no body of theirs
/// is left in the outbox: messages queued while the peer was down are stopped
/// (`subject-erased`), and the peer, back up, receives none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_stops_what_is_queued() {
    let mut h = start().await;
    let lena = lena();
    let mut jc = h.client(JC).await;
    let id = consent_id(&mut jc, u25_consent(&lena)).await;
    let ja = h.client(JA).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    // Another person's message is the positive control: it still goes.
    let other = subject("Mia", "Lorenzen", "2006-01-20");
    let other_id = consent_id(&mut jc, u25_consent(&other)).await;
    wait_for_consent_state(&ja, &other_id, pb::ConsentState::ConsentInForce).await;
    h.stop(JA).await;
    let queued: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            let body = certification_request(&lena, &format!("Anfrage {i}"));
            v.push(submit_ok(&mut jc, JA, &id, body).await);
        }
        v
    };
    let control = submit_ok(&mut jc, JA, &other_id, certification_request(&other, "Mia")).await;
    let ledger = h.node(JC).ledger().clone();
    assert_eq!(ledger.outbox_len(JA), 4);
    jc.erase_subject(pb::SubjectAccessRequest {
        given_name: lena.given_name.clone(),
        family_name: lena.family_name.clone(),
        date_of_birth: lena.date_of_birth.clone(),
    })
    .await
    .expect("erasure");
    // Answered: the person's queued messages are out of the outbox, bodies and all.
    assert_eq!(
        ledger.outbox_len(JA),
        1,
        "only the other person's message is queued"
    );
    for m in &queued {
        let s = status(&mut jc, m).await;
        assert_eq!(state_name(s.state), "REFUSED", "{m}");
        assert_eq!(s.detail, "subject-erased", "{m}");
    }
    h.restart(JA).await;
    wait_for_state(&jc, &control, pb::DeliveryState::Delivered).await;
    let ja_ledger = h.node(JA).ledger().clone();
    for m in &queued {
        assert!(
            ja_ledger
                .inbox_record(m)
                .expect("read JA's inbox")
                .is_none(),
            "{m} reached the Kreis office after the erasure"
        );
    }
}

/// A receiver frozen for longer than the sender's send bound (request timeout + connect
/// timeout): the withdrawal waits that long, then answers. The batch handed over before it
/// left before the withdrawal; if the receiver stores it once it thaws, the sender's record
/// says so — such a message is never reported as stopped outright, it is marked as sent
/// before and unanswered (`IN_DOUBT`). Everything else under the consent stays home.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_frozen_beyond_the_send_bound_leaves_no_false_record() {
    let FrozenMidBatch {
        h,
        mut jc,
        link,
        consent_id: id,
        sent,
    } = frozen_mid_batch(&[("[delivery]\n", "[delivery]\nrequest_timeout_ms = 1000\n")]).await;
    jc.withdraw_consent(withdrawal(&id))
        .await
        .expect("the withdrawal is recorded");
    let answered_at_ms = clock::now_ms();
    link.resume();
    // The thawed receiver may still store what was handed over before the answer.
    let ja_ledger = h.node(JA).ledger().clone();
    let mut in_doubt = 0;
    for m in &sent {
        let s = settle(&jc, m).await;
        let held = ja_ledger.inbox_record(m).expect("read JA's inbox");
        let state = pb::DeliveryState::try_from(s.state).expect("a state");
        match (state, held) {
            (pb::DeliveryState::Delivered, Some(r)) => {
                assert!(
                    r.received_at_ms <= answered_at_ms,
                    "{m} delivered after the answer"
                );
            }
            (pb::DeliveryState::Refused, held) if s.detail.ends_with(IN_DOUBT) => {
                assert!(s.detail.starts_with("consent-withdrawn"), "{}", s.detail);
                // Handed over before the answer; the receiver may or may not hold it.
                let _ = held;
                in_doubt += 1;
            }
            (pb::DeliveryState::Refused, None) => {
                assert_eq!(s.detail, "consent-withdrawn", "{m}");
            }
            (state, held) => panic!(
                "{m}: the sender says {state:?} ({}), the receiver holds it: {}",
                s.detail,
                held.is_some()
            ),
        }
    }
    assert!(in_doubt >= 1, "no batch was in flight beyond the bound");
}

/// After the person was erased at the Kreis office, a replacement of their old consent
/// (recorded at the Jobcenter) still reaches it, as a fresh consent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_reaches_a_recipient_that_erased_the_person() {
    let h = start().await;
    let lena = lena();
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let req = u25_consent(&lena);
    let old = consent_id(&mut jc, req.clone()).await;
    wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentInForce).await;
    ja.erase_subject(pb::SubjectAccessRequest {
        given_name: lena.given_name.clone(),
        family_name: lena.family_name.clone(),
        date_of_birth: lena.date_of_birth.clone(),
    })
    .await
    .expect("erasure at the Kreis office");
    let fresh = record_consent(&mut jc, req.clone()).await;
    wait_for_state(
        &jc,
        &fresh.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    let replacing = pb::RecordConsentRequest {
        supersedes: old.clone(),
        ..req
    };
    let r = record_consent(&mut jc, replacing).await;
    wait_for_state(&jc, &r.notice_message_ids[0], pb::DeliveryState::Delivered).await;
}

/// A replacement that no longer names an agency: that agency learns that the old consent
/// no longer covers it (a withdrawal of it), and its own submissions under it are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_dropped_by_a_replacement_learns_of_it() {
    let h = start().await;
    let lena = lena();
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let jn = h.client(JN).await;
    let req = u25_consent(&lena);
    let old = consent_id(&mut jc, req.clone()).await;
    wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentInForce).await;
    // Positive control: the Kreis office may answer under it.
    submit_ok(&mut ja, JC, &old, move_out_certification(&lena)).await;
    let replacing = pb::RecordConsentRequest {
        supersedes: old.clone(),
        recipients: vec![JN.into()],
        ..req
    };
    let new = consent_id(&mut jc, replacing).await;
    wait_for_consent_state(&jn, &new, pb::ConsentState::ConsentInForce).await;
    wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentWithdrawn).await;
    let r = submit(&mut ja, JC, &old, "", move_out_certification(&lena)).await;
    expect_refusal(
        "the Kreis office answers under the replaced consent",
        r,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
}

/// A consent notice still queued when its consent is withdrawn stays home: the person's
/// data does not reach the Kreis office after the withdrawal was answered, and no
/// withdrawal notice follows a notice that never went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_notice_of_a_withdrawn_consent_stays_home() {
    let mut h = start().await;
    let lena = lena();
    let mut jc = h.client(JC).await;
    h.stop(JA).await;
    let recorded = record_consent(&mut jc, u25_consent(&lena)).await;
    let id = recorded.consent.expect("record").consent_id;
    let notice = recorded.notice_message_ids[0].clone();
    let w = jc
        .withdraw_consent(withdrawal(&id))
        .await
        .expect("withdrawal")
        .into_inner();
    assert!(
        w.notice_message_ids.is_empty(),
        "{:?}",
        w.notice_message_ids
    );
    // Positive control: another person's consent, recorded now, still goes.
    let other = record_consent(
        &mut jc,
        u25_consent(&subject("Mia", "Lorenzen", "2006-01-20")),
    )
    .await;
    h.restart(JA).await;
    wait_for_state(
        &jc,
        &other.notice_message_ids[0],
        pb::DeliveryState::Delivered,
    )
    .await;
    let s = wait_for_state(&jc, &notice, pb::DeliveryState::Refused).await;
    assert_eq!(s.detail, "consent-withdrawn");
    let held = h.node(JA).ledger().inbox_record(&notice).expect("read");
    assert!(
        held.is_none(),
        "the person's consent notice reached the Kreis office"
    );
}
