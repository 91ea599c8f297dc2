//! The console's Auskunft (Art. 15 GDPR, for caseworkers and the data protection officer)
//! and Protokoll (the audit chain, for the data protection officer only), over real HTTPS
//! against the three real nodes, compared with what the AgencyApi reports.

use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::console_client::ConsoleClient;
use kurzdraht_testkit::*;

/// Lena's consent at the Jobcenter (for the Kreis Jugendamt), one request sent under it and
/// one refused (to Norderstedt, which the consent does not name).
async fn lenas_case(h: &Harness) -> String {
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let consent = consent_in_force_at(
        &mut jc,
        &ja,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Auszug"),
    )
    .await;
    let refused = submit(&mut jc, JN, &consent, "", certification_request(&lena, "x")).await;
    assert!(refused.is_err(), "Norderstedt is not named by the consent");
    consent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_report_shows_what_the_api_reports_in_plain_german() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "admin", "Administration", AccountRole::Admin)
        .await;
    lenas_case(&h).await;
    let mut c = ConsoleClient::of(&h.fed, JC);
    assert_eq!(c.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);

    let form = c.get("/auskunft").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("Auskunft nach Art. 15 DSGVO"));

    let page = c
        .get("/auskunft?vorname=Lena&nachname=Hansen&geburtsdatum=12.04.2005")
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("für <strong>Lena Hansen</strong>, geboren am 12.04.2005"));
    // The oracle: the AgencyApi's report for the same person.
    let mut api = h.client(JC).await;
    let report = api
        .subject_access_report(pb::SubjectAccessRequest {
            given_name: "Lena".into(),
            family_name: "Hansen".into(),
            date_of_birth: "2005-04-12".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.consents.len(), 1);
    assert_eq!(report.refusals.len(), 1);
    let rows = |section: &str| {
        let start = body.find(section).unwrap_or_else(|| panic!("no {section}"));
        let rest = &body[start..];
        let end = rest.find("</table>").unwrap_or(rest.len());
        rest[..end]
            .matches("<tr class=\"kern-table__row\"><td")
            .count()
    };
    assert_eq!(
        rows("<caption class=\"console-sr-only\">Einwilligungen"),
        report.consents.len()
    );
    assert_eq!(
        rows("<caption class=\"console-sr-only\">Gesendete und empfangene Nachrichten"),
        report.messages.len()
    );
    assert_eq!(
        rows("<caption class=\"console-sr-only\">Abgelehnte Übermittlungen"),
        1
    );
    assert!(body.contains("Auszug unter 25 (§ 22 Abs. 5 SGB II)"));
    assert!(body.contains("gesendet an"));
    assert!(body.contains("Jugendamt Kreis Segeberg"));
    assert!(body.contains("Die Einwilligung nennt diese Dienststelle nicht als Empfängerin."));

    // Another person: nothing held.
    let other = c
        .get("/auskunft?vorname=Jonas&nachname=Berg&geburtsdatum=2003-01-02")
        .await;
    assert_eq!(other.status, 200);
    assert!(other
        .body
        .contains("Wir haben keine Einwilligung von Ihnen gespeichert."));

    // A date that does not exist: the form again, the error at its field.
    let bad = c
        .get("/auskunft?vorname=Lena&nachname=Hansen&geburtsdatum=31.02.2005")
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("id=\"geburtsdatum-error\""));
    assert!(bad.body.contains(
        "aria-describedby=\"geburtsdatum-hint geburtsdatum-error\" aria-invalid=\"true\""
    ));
    assert!(bad.body.contains("value=\"Lena\""), "the values are kept");

    let mut admin = ConsoleClient::of(&h.fed, JC);
    assert_eq!(admin.sign_in("admin", CONSOLE_PASSWORD).await.status, 303);
    assert_eq!(
        admin
            .get("/auskunft?vorname=Lena&nachname=Hansen&geburtsdatum=12.04.2005")
            .await
            .status,
        403
    );
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_is_the_data_protection_officers_and_verifies() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "datenschutz", "Frau Dahl", AccountRole::DataProtection)
        .await;
    let consent = lenas_case(&h).await;

    let mut caseworker = ConsoleClient::of(&h.fed, JC);
    assert_eq!(
        caseworker.sign_in("jensen", CONSOLE_PASSWORD).await.status,
        303
    );
    assert_eq!(caseworker.get("/protokoll").await.status, 403);

    let mut dpo = ConsoleClient::of(&h.fed, JC);
    let landed = dpo.sign_in("datenschutz", CONSOLE_PASSWORD).await;
    assert_eq!(landed.location(), Some("/protokoll"));
    let page = dpo.get("/protokoll").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&consent), "the consent's id is named");
    assert!(page.body.contains("message.submission-refused"));
    assert!(
        !page.body.contains("Hansen"),
        "no young person's data in the protocol"
    );

    // Only the console's logins, newest first: the officer's, then the caseworker's.
    let logins = dpo.get("/protokoll?bereich=console.").await;
    let events: Vec<&str> = logins
        .body
        .match_indices("<td class=\"kern-table__cell\">console.")
        .map(|(i, _)| {
            let rest = &logins.body[i + "<td class=\"kern-table__cell\">".len()..];
            &rest[..rest.find('<').unwrap()]
        })
        .collect();
    assert_eq!(
        events,
        ["console.login", "console.login"],
        "{}",
        logins.body
    );
    assert!(!logins.body.contains("message.submission-refused"));
    assert_eq!(dpo.get("/protokoll?bereich=quatsch").await.status, 400);

    // The verification runs in the background, started by a form (with its CSRF token), and
    // agrees with the ledger's own (the oracle: the chain's length).
    assert!(
        !page.body.contains("Prüfung bestanden"),
        "not before it ran"
    );
    assert_eq!(
        dpo.post("/protokoll/pruefen", &[]).await.status,
        403,
        "no token"
    );
    let csrf = page.field("csrf").unwrap();
    let started = dpo.post("/protokoll/pruefen", &[("csrf", &csrf)]).await;
    assert_eq!(started.location(), Some("/protokoll"));
    let mut checked = dpo.get("/protokoll").await;
    for _ in 0..300 {
        if !checked.body.contains("Prüfung läuft") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        checked = dpo.get("/protokoll").await;
    }
    assert!(
        checked.body.contains("Prüfung bestanden"),
        "{}",
        checked.body
    );
    let entries = h
        .fed
        .node(JC)
        .unwrap()
        .ledger()
        .verify_audit()
        .unwrap()
        .entries;
    assert!(
        checked
            .body
            .contains(&format!("vollständig und unverändert: {entries} Einträge"))
            || checked.body.contains(&format!(
                "vollständig und unverändert: {} Einträge",
                entries - 1
            )),
        "{entries}: {}",
        checked.body
    );
    h.fed.shutdown().await.unwrap();
}
