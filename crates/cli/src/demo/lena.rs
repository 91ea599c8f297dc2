//! Lena's story in `kurzdraht demo`: she asks to move out; the Jugendamt certifies it, the
//! Jobcenter decides.

use super::*;

/// Scenes 1–3: a statement refused before Lena's consent, her consent, the Jobcenter's request.
pub(super) async fn lena_asks_to_move_out(d: &mut Demo, cast: &Cast) -> anyhow::Result<LenaCase> {
    let mut jobcenter = cast.jobcenter.clone();
    let mut kreis = cast.kreis.clone();
    let mut norderstedt = cast.norderstedt.clone();
    let lena = cast.lena.clone();
    let today = cast.today.clone();
    d.story.scene("Lena Hansen (21) cannot stay at her parents'. The Jugendamt Kreis Segeberg tries to send its statement before she has consented");
    let certification = Body::MoveOutCertification(pb::MoveOutCertification {
        subject: Some(with_ref(lena.clone(), JA, "JA-SE-2026-0412")),
        outcome: pb::CertificationOutcome::Supported as i32,
        ground: pb::MoveOutGround::SeriousSocialReasons as i32,
        statement: "Rückverweis in das Elternhaus nicht zumutbar; Auszug aus schwerwiegenden sozialen Gründen erforderlich.".into(),
        interview_date: today.clone(),
        issuing_caseworker: "Frau Sievers".into(),
        health_note: String::new(),
    });
    let r = submit(&mut kreis, JC, "", "", certification.clone()).await;
    d.story.expect_refusal(
        "certification without consent refused",
        r,
        Code::FailedPrecondition,
        "no-consent",
    );

    d.story.scene("At the Jobcenter Lena signs a consent: purpose u25-move-out, recipient Jugendamt Kreis Segeberg");
    let consent = jobcenter
        .record_consent(pb::RecordConsentRequest {
            subject: Some(with_ref(lena.clone(), JC, "JC-SE-U25-0815")),
            given_by: pb::ConsentGiver::Person as i32,
            recipients: vec![JA.into()],
            purposes: vec![pb::Purpose::U25MoveOut as i32],
            categories: categories(&[
                pb::DataCategory::Identity,
                pb::DataCategory::Address,
                pb::DataCategory::CaseReferences,
                pb::DataCategory::HousingSituation,
                pb::DataCategory::FamilySituation,
                pb::DataCategory::BenefitDecision,
            ]),
            legal_basis: pb::LegalBasis::ConsentGdpr61ASgbX67b as i32,
            form: pb::ConsentForm::Written as i32,
            evidence_sha256: form_hash("JC-SE/Einwilligung/2026/0815"),
            evidence_reference: "JC-SE/Einwilligung/2026/0815 (unterschriebenes Formular)".into(),
            recorded_by: "Herr Jensen".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let lena_consent = consent.consent.map(|c| c.consent_id).unwrap_or_default();
    d.story.expect(
        "consent recorded at the Jobcenter",
        !lena_consent.is_empty(),
        format!("consent {lena_consent}"),
    );
    let replicated =
        consent_state(&mut kreis, &lena_consent, pb::ConsentState::ConsentInForce).await?;
    d.story.expect(
        "consent replicated to the Jugendamt Kreis Segeberg as a signed ConsentNotice",
        replicated,
        "in force there",
    );
    let held = norderstedt
        .list_consents(pb::ListConsentsRequest::default())
        .await?
        .into_inner();
    let copy = held.consents.iter().any(|c| {
        c.consent
            .as_ref()
            .is_some_and(|r| r.consent_id == lena_consent)
    });
    d.story.expect(
        "not replicated to Norderstedt, which it does not name",
        !copy,
        "Norderstedt holds no copy",
    );

    d.story.scene(
        "The Jobcenter asks the Jugendamt Kreis Segeberg for its statement (CertificationRequest)",
    );
    let request = submit(&mut jobcenter, JA, &lena_consent, "", Body::CertificationRequest(pb::CertificationRequest {
        subject: Some(with_ref(lena.clone(), JC, "JC-SE-U25-0815")),
        reason: "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II; Stellungnahme zur Notwendigkeit des Auszugs erbeten.".into(),
        respond_by: today.clone(),
        caseworker: "Herr Jensen".into(),
    }))
    .await?;
    d.delivered(JC, JA, &request.message_id, "CertificationRequest")
        .await?;

    Ok(LenaCase {
        lena_consent,
        certification,
        request,
    })
}

/// Scenes 4–5: the Jugendamt's certification and the Jobcenter's decision.
pub(super) async fn lena_is_certified(
    d: &mut Demo,
    cast: &Cast,
    case: &LenaCase,
) -> anyhow::Result<()> {
    let LenaCase {
        lena_consent,
        certification,
        request,
    } = case.clone();
    let mut jobcenter = cast.jobcenter.clone();
    let mut kreis = cast.kreis.clone();
    let lena = cast.lena.clone();
    let today = cast.today.clone();
    d.story.scene("The Jugendamt interviews Lena and certifies: moving out is necessary (§ 22 Abs. 5 Satz 2 Nr. 1 SGB II)");
    let mut with_health = certification.clone();
    if let Body::MoveOutCertification(c) = &mut with_health {
        c.health_note = "Psychische Belastung durch die Situation im Elternhaus.".into();
    }
    let r = submit(
        &mut kreis,
        JC,
        &lena_consent,
        &request.message_id,
        with_health,
    )
    .await;
    d.story.expect_refusal(
        "a draft with a health note refused: Lena's consent does not cover health data",
        r,
        Code::FailedPrecondition,
        "consent-category-not-covered",
    );
    let cert = submit(
        &mut kreis,
        JC,
        &lena_consent,
        &request.message_id,
        certification,
    )
    .await?;
    d.delivered(JA, JC, &cert.message_id, "MoveOutCertification")
        .await?;

    d.story.scene(
        "The Jobcenter decides: the assurance (Zusicherung) is granted, and tells the Jugendamt",
    );
    let decision = submit(
        &mut jobcenter,
        JA,
        &lena_consent,
        &cert.message_id,
        Body::MoveOutDecision(pb::MoveOutDecision {
            subject: Some(lena.clone()),
            outcome: pb::DecisionOutcome::AssuranceGranted as i32,
            ground: pb::MoveOutGround::SeriousSocialReasons as i32,
            decision_date: today.clone(),
            tenancy_contract_date: String::new(),
            caseworker: "Herr Jensen".into(),
        }),
    )
    .await?;
    d.delivered(JC, JA, &decision.message_id, "MoveOutDecision")
        .await?;

    Ok(())
}
