//! Consent as the law sees it (Art. 7 GDPR, § 67b SGB X), on real nodes: categories of data,
//! the legal basis for health data, the form and the evidence hash, superseding records, and
//! the signed proof of the consent behind a message — also after it was withdrawn.

use kurzdraht_client::AgencyClient;
use kurzdraht_envelope::verify_and_open;
use kurzdraht_node::clock::Clock;
use kurzdraht_proto::v1::{self as pb, get_consent_evidence_request::About, message_body::Body};
use kurzdraht_testkit::*;
use tonic::Code;

/// Lena without an address: identity only.
fn lena() -> pb::Subject {
    pb::Subject {
        address: None,
        ..subject("Lena", "Hansen", "2005-04-12")
    }
}

fn u25_only(s: &pb::Subject, categories: &[pb::DataCategory]) -> pb::RecordConsentRequest {
    let mut r = consent_request(s, &[JA], &[pb::Purpose::U25MoveOut]);
    r.categories = categories.iter().map(|c| *c as i32).collect();
    r
}

fn with_health_note(s: &pb::Subject) -> Body {
    let mut b = move_out_certification(s);
    if let Body::MoveOutCertification(c) = &mut b {
        c.health_note = "Belastungsstörung, fachärztlich bestätigt.".into();
    }
    b
}

async fn evidence(client: &mut AgencyClient, about: About) -> pb::ConsentEvidence {
    client
        .get_consent_evidence(pb::GetConsentEvidenceRequest { about: Some(about) })
        .await
        .expect("consent evidence")
        .into_inner()
}

/// A message carrying a category the consent does not name is refused at submission by the
/// sending node (the Jobcenter's and the Jugendamt's), while covered ones are delivered.
/// Only `Submit` is called here: the receiver's own check of an envelope its sender should
/// not have sent is not exercised by this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncovered_categories_are_refused() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    use pb::DataCategory::*;
    let id = consent_id(
        &mut jc,
        u25_only(&lena, &[Identity, HousingSituation, FamilySituation]),
    )
    .await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;

    // The request carries identity and housing: covered.
    let ok = submit_ok(
        &mut jc,
        JA,
        &id,
        certification_request(&lena, "Stellungnahme"),
    )
    .await;
    wait_for_state(&jc, &ok, pb::DeliveryState::Delivered).await;
    // An address is a category of its own.
    let mut with_address = lena.clone();
    with_address.address = Some(pb::Address {
        street: "Kurhausstraße 7".into(),
        postal_code: "23795".into(),
        city: "Bad Segeberg".into(),
    });
    let r = submit(
        &mut jc,
        JA,
        &id,
        "",
        certification_request(&with_address, "x"),
    )
    .await;
    expect_refusal(
        "address not covered",
        r,
        Code::FailedPrecondition,
        "consent-category-not-covered",
    );
    // Health data is never covered unless named.
    let r = submit(&mut ja, JC, &id, "", with_health_note(&lena)).await;
    expect_refusal(
        "health note not covered",
        r,
        Code::FailedPrecondition,
        "consent-category-not-covered",
    );
    // Without it the certification passes.
    let cert = submit_ok(&mut ja, JC, &id, move_out_certification(&lena)).await;
    wait_for_state(&ja, &cert, pb::DeliveryState::Delivered).await;
}

/// Health data needs explicit consent (Art. 9(2)(a) GDPR); with it, it flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_data_needs_explicit_consent() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    use pb::DataCategory::*;
    let mut req = u25_only(&lena, &[Identity, FamilySituation, Health]);
    let r = jc.record_consent(req.clone()).await;
    let s = expect_refusal(
        "health without explicit basis",
        r,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("legal_basis"), "{}", s.message());
    req.legal_basis = pb::LegalBasis::ExplicitConsentGdpr92A as i32;
    let id = consent_id(&mut jc, req).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    let m = submit_ok(&mut ja, JC, &id, with_health_note(&lena)).await;
    wait_for_state(&ja, &m, pb::DeliveryState::Delivered).await;
}

/// What the law asks a consent record to carry is required, and the error names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_record_must_be_complete() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let lena = lena();
    let base = || consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]);
    let cases: Vec<(&str, pb::RecordConsentRequest)> = vec![
        (
            "categories",
            pb::RecordConsentRequest {
                categories: vec![],
                ..base()
            },
        ),
        (
            "categories[0]",
            pb::RecordConsentRequest {
                categories: vec![0],
                ..base()
            },
        ),
        (
            "legal_basis",
            pb::RecordConsentRequest {
                legal_basis: 0,
                ..base()
            },
        ),
        ("form", pb::RecordConsentRequest { form: 0, ..base() }),
        (
            "evidence_sha256",
            pb::RecordConsentRequest {
                evidence_sha256: vec![1; 31],
                ..base()
            },
        ),
        (
            "evidence_reference",
            pb::RecordConsentRequest {
                evidence_reference: " ".into(),
                ..base()
            },
        ),
        (
            "recipients",
            pb::RecordConsentRequest {
                recipients: vec![],
                ..base()
            },
        ),
        (
            "purposes",
            pb::RecordConsentRequest {
                purposes: vec![],
                ..base()
            },
        ),
        (
            "supersedes",
            pb::RecordConsentRequest {
                supersedes: "nope".into(),
                ..base()
            },
        ),
    ];
    for (field, req) in cases {
        let r = jc.record_consent(req).await;
        let s = expect_refusal(field, r, Code::InvalidArgument, "invalid-argument");
        assert!(s.message().contains(field), "{field}: {}", s.message());
    }
    assert!(
        list_consents(&mut jc).await.is_empty(),
        "nothing was recorded"
    );
}

/// A change is a new record that supersedes the old one, here and at the recipients; the
/// old one then refuses new messages, and it cannot be superseded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_record_supersedes_the_old() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena = lena();
    let old = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentInForce).await;

    let mut change = consent_request(
        &lena,
        &[JA],
        &[pb::Purpose::U25MoveOut, pb::Purpose::QualificationMeasure],
    );
    change.supersedes = old.clone();
    let new = consent_id(&mut jc, change.clone()).await;
    let entry = wait_for_consent_state(&jc, &old, pb::ConsentState::ConsentSuperseded).await;
    assert_eq!(entry.superseded_by, new);
    let there = wait_for_consent_state(&ja, &old, pb::ConsentState::ConsentSuperseded).await;
    assert_eq!(there.superseded_by, new);
    wait_for_consent_state(&ja, &new, pb::ConsentState::ConsentInForce).await;
    // the old record itself is unchanged
    assert_eq!(
        entry.consent.as_ref().unwrap().purposes,
        vec![pb::Purpose::U25MoveOut as i32]
    );

    let r = submit(&mut jc, JA, &old, "", certification_request(&lena, "x")).await;
    expect_refusal(
        "citing the superseded consent",
        r,
        Code::FailedPrecondition,
        "consent-superseded",
    );
    let m = submit_ok(&mut jc, JA, &new, certification_request(&lena, "x")).await;
    wait_for_state(&jc, &m, pb::DeliveryState::Delivered).await;

    let r = jc.record_consent(change).await;
    expect_refusal(
        "superseding twice",
        r,
        Code::FailedPrecondition,
        "consent-superseded",
    );
    let mut other = consent_request(
        &subject("Mia", "Carstens", "2006-02-03"),
        &[JA],
        &[pb::Purpose::U25MoveOut],
    );
    other.supersedes = new.clone();
    let r = jc.record_consent(other).await;
    expect_refusal(
        "another person's consent",
        r,
        Code::InvalidArgument,
        "invalid-argument",
    );
}

/// Each node can show, for a message it sent or received, the consent that allowed it with
/// the recording agency's signature — also after withdrawal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_behind_a_message_can_be_proven_after_withdrawal() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    let req = consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]);
    let id = consent_id(&mut jc, req.clone()).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    let m = submit_ok(&mut jc, JA, &id, certification_request(&lena, "x")).await;
    wait_for_state(&jc, &m, pb::DeliveryState::Delivered).await;
    jc.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: id.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .expect("withdraw");
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentWithdrawn).await;

    let jc_key = h
        .fed
        .config(JC)
        .unwrap()
        .directory
        .get(JC)
        .unwrap()
        .active_keys()
        .to_vec();
    for (who, client) in [(JC, &mut jc), (JA, &mut ja)] {
        let e = evidence(client, About::MessageId(m.clone())).await;
        assert!(e.signature_verified, "{who}");
        assert_eq!(e.state, pb::ConsentState::ConsentWithdrawn as i32, "{who}");
        let record = e.consent.clone().unwrap();
        assert_eq!(record.consent_id, id, "{who}");
        assert_eq!(record.evidence_sha256, req.evidence_sha256, "{who}");
        assert_eq!(record.form, pb::ConsentForm::Written as i32);
        // Independently: the notice is signed by the Jobcenter and carries exactly this record.
        let notice = e.notice.clone().unwrap();
        let opened = verify_and_open(&notice, &jc_key, &Default::default())
            .expect("signed by the Jobcenter");
        match opened.body.body {
            Some(Body::ConsentNotice(n)) => assert_eq!(n.consent, Some(record), "{who}"),
            other => panic!("{who}: not a consent notice: {other:?}"),
        }
        let withdrawal =
            verify_and_open(&e.withdrawal_notice.unwrap(), &jc_key, &Default::default())
                .expect("withdrawal signed by the Jobcenter");
        assert_eq!(withdrawal.kind, pb::MessageKind::ConsentWithdrawal);
        // The same by consent id.
        let by_id = evidence(client, About::ConsentId(id.clone())).await;
        assert_eq!(by_id.consent, e.consent);
    }
    let r = jc
        .get_consent_evidence(pb::GetConsentEvidenceRequest {
            about: Some(About::MessageId(kurzdraht_envelope::ids::new_id())),
        })
        .await;
    expect_refusal("unknown message", r, Code::NotFound, "not-found");
}

/// The access report (Art. 15 GDPR) lists exactly this person's consents, the messages sent
/// and received under them and the refusals that cited them — nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_report_covers_one_person_only() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    let mia = subject("Mia", "Carstens", "2006-02-03");
    let lena_c = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let mia_c = consent_id(
        &mut jc,
        consent_request(&mia, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &lena_c, pb::ConsentState::ConsentInForce).await;
    wait_for_consent_state(&ja, &mia_c, pb::ConsentState::ConsentInForce).await;
    let sent = submit_ok(&mut jc, JA, &lena_c, certification_request(&lena, "x")).await;
    wait_for_state(&jc, &sent, pb::DeliveryState::Delivered).await;
    let answer = submit_ok(&mut ja, JC, &lena_c, move_out_certification(&lena)).await;
    wait_for_state(&ja, &answer, pb::DeliveryState::Delivered).await;
    let mias = submit_ok(&mut jc, JA, &mia_c, certification_request(&mia, "y")).await;
    wait_for_state(&jc, &mias, pb::DeliveryState::Delivered).await;
    let r = submit(&mut jc, JN, &lena_c, "", certification_request(&lena, "z")).await;
    expect_refusal(
        "other office",
        r,
        Code::FailedPrecondition,
        "consent-other-recipient",
    );

    let report = jc
        .subject_access_report(pb::SubjectAccessRequest {
            given_name: " lena ".into(),
            family_name: "HANSEN".into(),
            date_of_birth: "2005-04-12".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.agency, JC);
    let consents: Vec<_> = report
        .consents
        .iter()
        .map(|c| c.consent.clone().unwrap().consent_id)
        .collect();
    assert_eq!(consents, vec![lena_c.clone()]);
    let messages: Vec<(String, String)> = report
        .messages
        .iter()
        .map(|m| (m.direction.clone(), m.message_id.clone()))
        .collect();
    assert!(
        messages.contains(&("sent".into(), sent.clone())),
        "{messages:?}"
    );
    assert!(
        messages.contains(&("received".into(), answer.clone())),
        "{messages:?}"
    );
    assert!(
        !messages.iter().any(|(_, id)| id == &mias),
        "Mia's message is not Lena's"
    );
    assert!(report.messages.iter().all(|m| m.consent_id == lena_c));
    assert_eq!(report.refusals.len(), 1);
    assert_eq!(report.refusals[0].reason, "consent-other-recipient");
    assert_eq!(report.refusals[0].counterpart, JN);

    let r = jc
        .subject_access_report(pb::SubjectAccessRequest {
            given_name: "Lena".into(),
            family_name: "Hansen".into(),
            date_of_birth: "12.04.2005".into(),
        })
        .await;
    let s = expect_refusal("bad date", r, Code::InvalidArgument, "invalid-argument");
    assert!(s.message().contains("subject.date_of_birth"));

    // The report is audited, without naming the person.
    let data_dir = h.fed.config(JC).unwrap().data_dir;
    let Harness { fed, dir: _dir } = h;
    fed.shutdown().await.unwrap();
    let ledger = kurzdraht_ledger::Ledger::open(&data_dir).unwrap();
    let entries = ledger.audit_entries().unwrap();
    let report_entry = entries
        .iter()
        .find(|e| e.event == "subject.access-report")
        .expect("the report is audited");
    for field in [
        &report_entry.detail,
        &report_entry.peer,
        &report_entry.message_id,
    ] {
        assert!(!field.contains("Lena") && !field.contains("Hansen") && !field.contains("2005"));
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Personal data is encrypted at rest: the raw files of every node's store hold no name,
/// date of birth or address; with the node's data key the store reads, with another or
/// none it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_store_alone_reveals_no_names() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = subject("Lena", "Hansen", "2005-04-12"); // with her address
    let id = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    let m = submit_ok(
        &mut jc,
        JA,
        &id,
        certification_request(&lena, "Konflikt im Elternhaus"),
    )
    .await;
    wait_for_state(&jc, &m, pb::DeliveryState::Delivered).await;
    let back = submit_ok(&mut ja, JC, &id, move_out_certification(&lena)).await;
    wait_for_state(&ja, &back, pb::DeliveryState::Delivered).await;

    let configs: Vec<_> = [JC, JA].iter().map(|a| h.fed.config(a).unwrap()).collect();
    let Harness { fed, dir: _dir } = h;
    fed.shutdown().await.unwrap();
    for c in &configs {
        let files = files_under(&c.data_dir);
        assert!(!files.is_empty());
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for needle in [
                "Hansen",
                "Lena",
                "2005-04-12",
                "Kurhausstra",
                "Bad Segeberg",
                "Elternhaus",
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} readable in {}",
                    f.display()
                );
            }
        }
        // With the node's key the data is there.
        {
            let l = kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &c.data_key).unwrap();
            let held = l.consent(&id).unwrap().unwrap();
            assert_eq!(held.record.unwrap().subject.unwrap().family_name, "Hansen");
        }
        // With another key the store refuses to open; without one, personal data is out of
        // reach but the audit chain still verifies.
        let other = kurzdraht_ledger::DataKey::generate().unwrap();
        assert!(matches!(
            kurzdraht_ledger::Ledger::open_encrypted(&c.data_dir, &other),
            Err(kurzdraht_ledger::LedgerError::BadDataKey { .. })
        ));
        let keyless = kurzdraht_ledger::Ledger::open(&c.data_dir).unwrap();
        assert!(matches!(
            keyless.consent(&id),
            Err(kurzdraht_ledger::LedgerError::NoDataKey)
        ));
        assert!(keyless.verify_audit().unwrap().entries > 0);
    }
}

/// The data key must not lie inside the data directory it protects.
#[test]
fn data_key_inside_the_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr = |p| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let files = kurzdraht_node::pki::init(
        dir.path(),
        &kurzdraht_node::pki::segeberg([
            (addr(1), addr(2)),
            (addr(3), addr(4)),
            (addr(5), addr(6)),
        ]),
    )
    .unwrap();
    let node = &files[0].node_config;
    let text = std::fs::read_to_string(node).unwrap();
    std::fs::write(
        node,
        text.replace(
            "data_key_file = \"data.key\"",
            "data_key_file = \"data/data.key\"",
        ),
    )
    .unwrap();
    let err = kurzdraht_node::config::NodeConfig::load(node)
        .unwrap_err()
        .to_string();
    assert!(err.contains("storage.data_key_file"), "{err}");
    assert!(err.contains("outside data_dir"), "{err}");
}

async fn inbox_item(client: &AgencyClient, id: &str) -> pb::InboxItem {
    read_inbox(&mut client.clone(), 0)
        .await
        .into_iter()
        .find(|i| i.message_id == id)
        .unwrap_or_else(|| panic!("{id} not in the inbox"))
}

/// Bodies are deleted once the retention period after the case's closing has run out; the
/// signed header, hash and receipt stay, so the transfer stays provable and the audit chain
/// verifiable. Messages of open cases are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_deleted_after_the_retention_period() {
    let mut h = start().await;
    // The Jugendamt keeps bodies 1 s after closing and sweeps every second.
    h.reconfigure(
        JA,
        &[
            ("body_retention_secs = 31536000", "body_retention_secs = 1"),
            ("sweep_interval_secs = 3600", "sweep_interval_secs = 1"),
        ],
    )
    .await;

    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    let mia = subject("Mia", "Carstens", "2006-02-03");
    let closed = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let open = consent_id(
        &mut jc,
        consent_request(&mia, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &open, pb::ConsentState::ConsentInForce).await;
    let m1 = submit_ok(&mut jc, JA, &closed, certification_request(&lena, "x")).await;
    let m2 = submit_ok(&mut jc, JA, &open, certification_request(&mia, "y")).await;
    wait_for_state(&jc, &m1, pb::DeliveryState::Delivered).await;
    wait_for_state(&jc, &m2, pb::DeliveryState::Delivered).await;
    assert!(inbox_item(&ja, &m1).await.body.is_some());

    let r = ja
        .close_case(pb::CloseCaseRequest {
            consent_id: closed.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.bodies_deleted_after_ms >= r.closed_at_ms + 1000);
    let item = wait_until("the closed case's body is deleted", || {
        let ja = ja.clone();
        let m1 = m1.clone();
        async move {
            let item = inbox_item(&ja, &m1).await;
            if item.body_erased {
                Ok(item)
            } else {
                Err("body still there".into())
            }
        }
    })
    .await;
    assert!(item.body.is_none());
    let env = item.envelope.unwrap();
    assert!(env.payload.is_empty());
    let jc_keys = h
        .fed
        .config(JC)
        .unwrap()
        .directory
        .get(JC)
        .unwrap()
        .active_keys()
        .to_vec();
    let header = kurzdraht_envelope::verify_header(&env, &jc_keys, &Default::default()).unwrap();
    assert_eq!(header.message_id, m1);
    // The open case's message is untouched, and the sender's receipt still holds.
    assert!(inbox_item(&ja, &m2).await.body.is_some());
    assert!(status(&mut jc, &m1).await.receipt.is_some());

    let data_dir = h.fed.config(JA).unwrap().data_dir;
    let Harness { fed, dir: _dir } = h;
    fed.shutdown().await.unwrap();
    let l = kurzdraht_ledger::Ledger::open(&data_dir).unwrap();
    l.verify_audit().unwrap();
    let deleted: Vec<_> = l
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "retention.body-deleted")
        .map(|e| e.message_id)
        .collect();
    // the case's consent notice (its copy in the inbox) and its message; the consent's proof
    // is kept with the consent record itself
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert_eq!(deleted[1], m1);
}

/// An erasure request removes the person's data at once and keeps the proof that consent
/// existed; other people's data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_the_person_and_keeps_the_proof() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = lena();
    let mia = subject("Mia", "Carstens", "2006-02-03");
    let lc = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let mc = consent_id(
        &mut jc,
        consent_request(&mia, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &mc, pb::ConsentState::ConsentInForce).await;
    let m1 = submit_ok(&mut jc, JA, &lc, certification_request(&lena, "x")).await;
    let m2 = submit_ok(&mut jc, JA, &mc, certification_request(&mia, "y")).await;
    wait_for_state(&jc, &m2, pb::DeliveryState::Delivered).await;
    wait_for_state(&jc, &m1, pb::DeliveryState::Delivered).await;

    let r = ja
        .erase_subject(pb::SubjectAccessRequest {
            given_name: "Lena".into(),
            family_name: "Hansen".into(),
            date_of_birth: "2005-04-12".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.consent_ids, vec![lc.clone()]);
    assert_eq!(
        r.bodies_erased, 2,
        "her consent notice's copy in the inbox and her message"
    );
    assert!(inbox_item(&ja, &m1).await.body_erased);
    assert!(
        inbox_item(&ja, &m2).await.body.is_some(),
        "Mia's message stays"
    );
    let e = evidence(&mut ja, About::ConsentId(lc.clone())).await;
    let record = e.consent.unwrap();
    assert!(record.subject.is_none(), "no subject left");
    assert!(
        e.signature_verified,
        "the signed header still proves the consent"
    );
    assert!(e.notice.unwrap().payload.is_empty());
    let report = ja
        .subject_access_report(pb::SubjectAccessRequest {
            given_name: "Lena".into(),
            family_name: "Hansen".into(),
            date_of_birth: "2005-04-12".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(report.consents.is_empty() && report.messages.is_empty());
    // The Jugendamt itself sends nothing more under it (Mia's consent is the control).
    let r = submit(&mut ja, JC, &lc, "", move_out_certification(&lena)).await;
    expect_refusal(
        "an answer under the erased consent",
        r,
        Code::FailedPrecondition,
        "consent-erased",
    );
    submit_ok(&mut ja, JC, &mc, move_out_certification(&mia)).await;
    // A new message about her citing that consent is refused at the Jugendamt.
    let m3 = submit_ok(&mut jc, JA, &lc, certification_request(&lena, "z")).await;
    let s = wait_for_state(&jc, &m3, pb::DeliveryState::Rejected).await;
    assert!(s.detail.contains("consent-erased"), "{}", s.detail);
}

/// Expiry stops a queued message at its next delivery attempt, like a withdrawal does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_that_expires_while_queued_stops_the_message() {
    let (mut h, clocks) = start_on_manual_clocks().await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena = lena();
    let mut req = consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]);
    req.valid_until_ms = clocks[JC].now_ms() + 60_000;
    let id = consent_id(&mut jc, req).await;
    wait_for_consent_state(&ja, &id, pb::ConsentState::ConsentInForce).await;
    h.stop(JA).await;
    let m = submit_ok(&mut jc, JA, &id, certification_request(&lena, "x")).await;
    // Two minutes pass: the consent has run out while the message waits.
    for c in clocks.values() {
        c.advance(120_000);
    }
    wait_for_consent_state(&jc, &id, pb::ConsentState::ConsentExpired).await;
    h.restart(JA).await;
    h.node(JC).wake_all();
    let s = wait_for_state(&jc, &m, pb::DeliveryState::Refused).await;
    assert_eq!(s.detail, "consent-expired");
    let inbox = read_inbox(&mut h.client(JA).await, 0).await;
    assert!(
        inbox.iter().all(|i| i.message_id != m),
        "nothing of it reached the Jugendamt"
    );
}

/// ListConsents hands out pages (a node may hold millions): in id order, with a cursor to
/// the next page, and clear refusals of a page too large or a cursor that is no id.
#[tokio::test]
async fn consents_are_listed_in_pages() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let mut recorded = Vec::new();
    for i in 0..5 {
        let s = subject("Lena", &format!("Muster{i}"), &birthday_years_ago(20));
        recorded.push(
            consent_id(
                &mut jc,
                consent_request(&s, &[JA], &[pb::Purpose::U25MoveOut]),
            )
            .await,
        );
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = jc
            .list_consents(pb::ListConsentsRequest {
                after: after.clone(),
                limit: 2,
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert!(page.consents.len() <= 2);
        seen.extend(
            page.consents
                .iter()
                .map(|e| e.consent.as_ref().expect("record").consent_id.clone()),
        );
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(seen, recorded, "every consent once, oldest first");
    assert_eq!(pages, 3);
    assert_eq!(
        list_consents(&mut jc).await.len(),
        5,
        "default page holds them all"
    );

    let too_many = jc
        .list_consents(pb::ListConsentsRequest {
            after: String::new(),
            limit: 1001,
        })
        .await;
    let s = expect_refusal(
        "limit 1001",
        too_many,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("limit"), "{}", s.message());
    let bad_cursor = jc
        .list_consents(pb::ListConsentsRequest {
            after: "Lena Muster".into(),
            limit: 0,
        })
        .await;
    let s = expect_refusal(
        "cursor",
        bad_cursor,
        Code::InvalidArgument,
        "invalid-argument",
    );
    assert!(s.message().contains("after"), "{}", s.message());
}

/// `Submission::covering_consents` (the console's consent select) offers exactly the consents
/// `Submit` accepts for the body: not one for another recipient, purpose or person, not a
/// withdrawn one, and none once the body carries a category the consent lacks (health data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covering_consents_are_the_ones_submit_accepts() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let u25 = [pb::Purpose::U25MoveOut];
    let covering = consent_id(&mut jc, consent_request(&lena, &[JA], &u25)).await;
    consent_id(&mut jc, consent_request(&lena, &[JN], &u25)).await;
    consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::QualificationMeasure]),
    )
    .await;
    consent_id(
        &mut jc,
        consent_request(&subject("Jonas", "Hansen", "2005-04-12"), &[JA], &u25),
    )
    .await;
    let withdrawn = consent_id(&mut jc, consent_request(&lena, &[JA], &u25)).await;
    jc.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: withdrawn.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "schriftlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .expect("withdraw");
    let offered = |body: Body| {
        h.node(JC)
            .submission()
            .covering_consents(JA, &pb::MessageBody { body: Some(body) }, 10)
            .expect("read")
            .into_iter()
            .map(|c| c.consent_id)
            .collect::<Vec<_>>()
    };
    let request = certification_request(&lena, "Antrag auf Zusicherung");
    assert_eq!(offered(request.clone()), std::slice::from_ref(&covering));
    // Submit agrees: the covering one is accepted, the withdrawn one refused.
    submit_ok(&mut jc, JA, &covering, request.clone()).await;
    let refused = submit(&mut jc, JA, &withdrawn, "", request).await;
    expect_refusal(
        "withdrawn",
        refused,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    // The Jugendamt's statement with a health note: its consent lacks health data.
    let ja = h.client(JA).await;
    wait_for_consent_state(&ja, &covering, pb::ConsentState::ConsentInForce).await;
    let statement = |note: &str| {
        let mut b = move_out_certification(&lena);
        if let Body::MoveOutCertification(m) = &mut b {
            m.health_note = note.into();
        }
        pb::MessageBody { body: Some(b) }
    };
    let at_ja = |body: pb::MessageBody| {
        h.node(JA)
            .submission()
            .covering_consents(JC, &body, 10)
            .expect("read")
            .into_iter()
            .map(|c| c.consent_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(at_ja(statement("")), std::slice::from_ref(&covering));
    assert!(at_ja(statement("Attest liegt vor.")).is_empty());
}
