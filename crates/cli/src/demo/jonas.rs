//! Jonas's story in `kurzdraht demo`: his referral to the Jugendamt Norderstedt, his
//! withdrawal and what it stops, his access report.

use super::*;

/// Jonas's consent, the referral to the Jugendamt Norderstedt and its response.
pub(super) async fn jonas_is_referred(d: &mut Demo, cast: &Cast) -> anyhow::Result<JonasCase> {
    let mut jobcenter = cast.jobcenter.clone();
    let mut norderstedt = cast.norderstedt.clone();
    let jonas = cast.jonas.clone();
    d.story.scene("Jonas Petersen (20) lives in Norderstedt. He consents to the Jobcenter contacting the Jugendamt Norderstedt about a qualification measure");
    let consent = jobcenter
        .record_consent(pb::RecordConsentRequest {
            subject: Some(jonas.clone()),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JN.into()],
            purposes: vec![pb::Purpose::QualificationMeasure as i32],
            categories: categories(&[
                pb::DataCategory::Identity,
                pb::DataCategory::Address,
                pb::DataCategory::EducationEmployment,
            ]),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Electronic as i32,
            evidence_sha256: form_hash("JC-SE/Einwilligung/2026/0921"),
            evidence_reference: "JC-SE/Einwilligung/2026/0921".into(),
            recorded_by: "Frau Brandt".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let jonas_consent = consent.consent.map(|c| c.consent_id).unwrap_or_default();
    let replicated = consent_state(
        &mut norderstedt,
        &jonas_consent,
        pb::ConsentState::ConsentInForce,
    )
    .await?;
    d.story.expect(
        "consent recorded and replicated to the Jugendamt Norderstedt",
        replicated,
        format!("consent {jonas_consent}"),
    );
    let referral = submit(
        &mut jobcenter,
        JN,
        &jonas_consent,
        "",
        Body::QualificationReferral(pb::QualificationReferral {
            subject: Some(jonas.clone()),
            reason: "Ausbildungsabbruch; Unterstützung bei Berufsorientierung gewünscht.".into(),
            measure: "Berufsvorbereitende Bildungsmaßnahme".into(),
            contact: "Frau Brandt, Jobcenter Kreis Segeberg".into(),
            respond_by: String::new(),
        }),
    )
    .await?;
    d.delivered(JC, JN, &referral.message_id, "QualificationReferral")
        .await?;
    let wrong_office = submit(
        &mut jobcenter,
        JA,
        &jonas_consent,
        "",
        Body::QualificationReferral(pb::QualificationReferral {
            subject: Some(jonas.clone()),
            reason: "Doppelte Anfrage".into(),
            measure: "Berufsvorbereitende Bildungsmaßnahme".into(),
            contact: "Frau Brandt".into(),
            respond_by: String::new(),
        }),
    )
    .await;
    d.story.expect_refusal(
        "the same referral to the Kreis office, which the consent does not name, is refused",
        wrong_office,
        Code::FailedPrecondition,
        "consent-other-recipient",
    );

    d.story
        .scene("The Jugendamt Norderstedt responds: the referral is accepted");
    let response = submit(
        &mut norderstedt,
        JC,
        &jonas_consent,
        &referral.message_id,
        Body::ReferralResponse(pb::ReferralResponse {
            subject: Some(jonas.clone()),
            outcome: pb::ReferralOutcome::Accepted as i32,
            note: "Erstgespräch vereinbart.".into(),
            caseworker: "Herr Ohlsen".into(),
        }),
    )
    .await?;
    d.delivered(JN, JC, &response.message_id, "ReferralResponse")
        .await?;

    Ok(JonasCase {
        jonas_consent,
        referral,
    })
}

/// Jonas withdraws his consent: what that stops, and what Norderstedt can still prove.
pub(super) async fn jonas_withdraws(
    d: &mut Demo,
    cast: &Cast,
    case: &JonasCase,
) -> anyhow::Result<()> {
    let JonasCase {
        jonas_consent,
        referral,
    } = case.clone();
    let mut jobcenter = cast.jobcenter.clone();
    let mut norderstedt = cast.norderstedt.clone();
    let jonas = cast.jonas.clone();
    d.story.scene(
        "Jonas withdraws his consent at the Jobcenter; the withdrawal stops the next message",
    );
    jobcenter
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: jonas_consent.clone(),
            recorded_by: "Frau Brandt".into(),
            manner: "schriftlich".into(),
            idempotency_key: kurzdraht_envelope::ids::new_id(),
        })
        .await?;
    let replicated = consent_state(
        &mut norderstedt,
        &jonas_consent,
        pb::ConsentState::ConsentWithdrawn,
    )
    .await?;
    d.story.expect(
        "withdrawal replicated to the Jugendamt Norderstedt",
        replicated,
        "withdrawn there",
    );
    let next = submit(
        &mut norderstedt,
        JC,
        &jonas_consent,
        &referral.message_id,
        Body::ReferralResponse(pb::ReferralResponse {
            subject: Some(jonas.clone()),
            outcome: pb::ReferralOutcome::InProgress as i32,
            note: String::new(),
            caseworker: "Herr Ohlsen".into(),
        }),
    )
    .await;
    d.story.expect_refusal(
        "Norderstedt's next message refused",
        next,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    let next = submit(
        &mut jobcenter,
        JN,
        &jonas_consent,
        "",
        Body::QualificationReferral(pb::QualificationReferral {
            subject: Some(jonas.clone()),
            reason: "Nachfrage".into(),
            measure: "Berufsvorbereitende Bildungsmaßnahme".into(),
            contact: "Frau Brandt".into(),
            respond_by: String::new(),
        }),
    )
    .await;
    d.story.expect_refusal(
        "the Jobcenter's next referral refused",
        next,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
    let evidence = norderstedt
        .get_consent_evidence(pb::GetConsentEvidenceRequest {
            about: Some(pb::get_consent_evidence_request::About::MessageId(
                referral.message_id.clone(),
            )),
        })
        .await?
        .into_inner();
    d.story.expect(
        "Norderstedt can still prove the consent its earlier referral came under",
        evidence.signature_verified
            && evidence
                .consent
                .as_ref()
                .is_some_and(|c| c.consent_id == jonas_consent)
            && evidence.state == pb::ConsentState::ConsentWithdrawn as i32
            && evidence.withdrawal_notice.is_some(),
        "record and withdrawal, signed by jobcenter-segeberg, verified against its pinned key",
    );
    Ok(())
}

/// Jonas asks the Jobcenter what it holds about him: his access report.
pub(super) async fn jonas_asks_what_is_held(d: &mut Demo, cast: &Cast) -> anyhow::Result<()> {
    let mut jobcenter = cast.jobcenter.clone();
    let jonas = cast.jonas.clone();
    d.story
        .scene("Jonas asks the Jobcenter what it holds about him (Art. 15 GDPR)");
    let report = jobcenter
        .subject_access_report(pb::SubjectAccessRequest {
            given_name: jonas.given_name.clone(),
            family_name: jonas.family_name.clone(),
            date_of_birth: jonas.date_of_birth.clone(),
        })
        .await?
        .into_inner();
    for line in crate::output::render_report(&report).lines() {
        println!("   │ {line}");
    }
    let sent = report
        .messages
        .iter()
        .filter(|m| m.direction == "sent")
        .count();
    let received = report
        .messages
        .iter()
        .filter(|m| m.direction == "received")
        .count();
    let reasons: Vec<&str> = report.refusals.iter().map(|r| r.reason.as_str()).collect();
    d.story.expect(
        "the report lists his consent, what was sent (notice, referral, withdrawal), the response received and both refusals",
        report.consents.len() == 1
            && sent == 3
            && received == 1
            && reasons == ["consent-other-recipient", "consent-withdrawn"],
        format!(
            "{} consent, {sent} sent, {received} received, refusals {reasons:?}",
            report.consents.len()
        ),
    );

    Ok(())
}
