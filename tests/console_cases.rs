//! The console's Fälle over real HTTPS against three real nodes on manual clocks: a case is
//! a young person's consent chain with every message sent and received under it; a request's
//! deadline becomes overdue on the Jobcenter's clock and stops being overdue when the
//! Jugendamt's statement arrives; a replacing consent stays in the same case.

use kurzdraht_ledger::AccountRole;
use kurzdraht_node::clock::Clock;
use kurzdraht_proto::v1::{self as pb, message_body::Body};
use kurzdraht_testkit::console_client::ConsoleClient;
use kurzdraht_testkit::*;

const DAY: i64 = 86_400_000;

fn date_in(clock_ms: i64, days: i64) -> String {
    let d = kurzdraht_node::clock::german_date_of_ms(clock_ms + days * DAY).unwrap();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn german(iso: &str) -> String {
    let p: Vec<&str> = iso.split('-').collect();
    format!("{}.{}.{}", p[2], p[1], p[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_shows_its_thread_and_what_is_overdue_on_the_nodes_clock() {
    let (h, clocks) = start_on_manual_clocks().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "dahl", "Frau Dahl", AccountRole::DataProtection)
        .await;
    let mut jc = h.client(JC).await;
    let mut ja = h.client(JA).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let consent = consent_in_force_at(
        &mut jc,
        &ja,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let now = clocks[JC].now_ms();
    let respond_by = date_in(now, 3);
    let mut request = certification_request(&lena, "Auszug");
    if let Body::CertificationRequest(r) = &mut request {
        r.respond_by = respond_by.clone();
    }
    let asked = submit_ok(&mut jc, JA, &consent, request).await;
    wait_for_state(&jc, &asked, pb::DeliveryState::Delivered).await;

    let mut c = ConsoleClient::of(&h.fed, JC);
    assert_eq!(c.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    let list = c.get("/faelle").await;
    assert_eq!(list.status, 200);
    assert!(
        list.body
            .contains(&format!("href=\"/fall/{consent}\">Lena Hansen</a>")),
        "{}",
        list.body
    );
    assert!(!list.body.contains("überfällig"));
    let case = c.get(&format!("/fall/{consent}")).await;
    assert_eq!(case.status, 200);
    for expected in [
        "Fall Lena Hansen",
        "Auszug unter 25: Anfrage, Stellungnahme, Entscheidung",
        &format!("href=\"/gesendet/{asked}\">Anfrage zur Bescheinigung (Auszug U25)</a>"),
        "gesendet an",
        "Jugendamt Kreis Segeberg",
        "zugestellt (Empfang bestätigt)",
        &german(&respond_by),
    ] {
        assert!(case.body.contains(expected), "{expected}: {}", case.body);
    }
    assert!(!case.body.contains("überfällig"), "not before its date");

    // Five days later on the Jobcenter's clock (the session ended meanwhile): overdue.
    clocks[JC].advance(5 * DAY);
    assert_eq!(
        c.get("/faelle").await.status,
        303,
        "idle for days: signed out"
    );
    assert_eq!(c.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    let list = c.get("/faelle").await;
    assert!(list.body.contains("1 überfällig"), "{}", list.body);
    let case = c.get(&format!("/fall/{consent}")).await;
    assert!(case.body.contains("Eine Frist ist überschritten"));
    assert_eq!(case.body.matches(">überfällig<").count(), 1);

    // The Jugendamt's statement arrives: answered, nothing overdue; two messages.
    clocks[JA].advance(5 * DAY);
    let answer = submit_ok(&mut ja, JC, &consent, move_out_certification(&lena)).await;
    wait_for_state(&ja, &answer, pb::DeliveryState::Delivered).await;
    let case = c.get(&format!("/fall/{consent}")).await;
    assert!(case.body.contains(&format!(
        "href=\"/nachricht/{answer}\">Stellungnahme des Jugendamts (Auszug U25)</a>"
    )));
    assert!(case.body.contains("erhalten von"));
    assert!(!case.body.contains("überfällig"), "answered");
    let list = c.get("/faelle").await;
    assert!(!list.body.contains("überfällig"));

    // A replacing consent belongs to the same case.
    let mut replacing = consent_request(&lena, &[JA, JN], &[pb::Purpose::U25MoveOut]);
    replacing.supersedes = consent.clone();
    let new = consent_id(&mut jc, replacing).await;
    let case = c.get(&format!("/fall/{consent}")).await;
    assert!(case.body.contains(&format!("href=\"/einwilligung/{new}\"")));
    assert!(case.body.contains("durch eine neuere ersetzt"));
    let list = c.get("/faelle").await;
    assert_eq!(list.body.matches("href=\"/fall/").count(), 1, "one case");

    // Refusals: no such case; not a case id; another role.
    assert_eq!(
        c.get("/fall/0190a0a0-0000-7000-8000-000000000000")
            .await
            .status,
        404
    );
    assert_eq!(c.get("/fall/kein-fall").await.status, 422);
    assert_eq!(c.get("/faelle?nach=quatsch").await.status, 400);
    let mut dpo = ConsoleClient::of(&h.fed, JC);
    assert_eq!(dpo.sign_in("dahl", CONSOLE_PASSWORD).await.status, 303);
    assert_eq!(dpo.get("/faelle").await.status, 403);
    h.fed.shutdown().await.unwrap();
}
