//! The Segeberg story in a real browser, across the three consoles, with nothing but the
//! pages a caseworker uses: Lena's consent is recorded at the Jobcenter (the signed form
//! uploaded), the Jobcenter asks the Kreis Jugendamt (proposed from her postal code), the
//! Jugendamt reads the request and certifies, the Jobcenter decides; a send the node refuses
//! shows its German explanation; after Lena withdraws, the next message is refused; the
//! access report prints. axe-core runs on every page the story passes.

use fantoccini::{Client, Locator};
use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::browser::{
    assert_no_axe_violations, click_to_next_page, fill, main_text, screenshot, set_value, tick,
    Browser,
};
use kurzdraht_testkit::*;

const LENA_BORN: &str = "2005-04-12";

async fn path(b: &Client) -> String {
    b.current_url().await.expect("url").path().to_string()
}

async fn sign_in(b: &Client, base: &str, name: &str) {
    b.goto(&format!("{base}/anmelden"))
        .await
        .expect("login page");
    fill(b, "name", name).await;
    fill(b, "password", CONSOLE_PASSWORD).await;
    click_to_next_page(b, Locator::Css("form.console-form button[type=submit]")).await;
    assert_ne!(path(b).await, "/anmelden", "{name} signed in");
}

async fn sign_out(b: &Client) {
    click_to_next_page(b, Locator::XPath("//button[normalize-space()='Abmelden']")).await;
}

/// Opens the Jobcenter's request form, fills in Lena (born `born`, living in Bad Segeberg)
/// and `reason`, and has the competent Jugendamt proposed.
async fn request_for_lena(b: &Client, jobcenter: &str, born: &str, reason: &str) {
    b.goto(&format!("{jobcenter}/nachricht/neu?art=anfrage"))
        .await
        .expect("the request form");
    fill(b, "vorname", "Lena").await;
    fill(b, "nachname", "Hansen").await;
    set_value(b, "geburtsdatum", born).await;
    fill(b, "strasse", "Kurhausstraße 7").await;
    fill(b, "plz", "23795").await;
    fill(b, "ort", "Bad Segeberg").await;
    fill(b, "anlass", reason).await;
    click_to_next_page(b, Locator::Id("vorschlagen")).await;
}

/// The page passes axe; its screenshot is kept for the note.
async fn check(b: &Client, name: &str) {
    assert_no_axe_violations(b, name).await;
    let dir = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    screenshot(b, &dir.join(format!("story-{name}.png")))
        .await
        .expect("screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segeberg_story_across_three_consoles_in_a_browser() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JA, "schmidt", "Frau Schmidt", AccountRole::Caseworker)
        .await;
    let jobcenter = h.fed.console_url(JC).unwrap();
    let jugendamt = h.fed.console_url(JA).unwrap();
    let b = Browser::start().await.expect("a headless Chromium");

    // 1. The Jobcenter records Lena's consent, uploading the signed form.
    sign_in(&b, &jobcenter, "jensen").await;
    b.goto(&format!("{jobcenter}/einwilligung/neu"))
        .await
        .unwrap();
    fill(&b, "given_name", "Lena").await;
    fill(&b, "family_name", "Hansen").await;
    set_value(&b, "date_of_birth", LENA_BORN).await;
    fill(&b, "evidence_reference", "EW-2026/0815").await;
    tick(&b, "recipients").await; // the first other office: the Kreis Jugendamt
    tick(&b, "purposes").await; // Auszug unter 25
    for i in 0..7 {
        let id = if i == 0 {
            "categories".to_string()
        } else {
            format!("categories-{i}")
        };
        tick(&b, &id).await; // every category but health (the last)
    }
    let form = std::env::temp_dir().join(format!("lena-einwilligung-{}.pdf", std::process::id()));
    std::fs::write(&form, b"%PDF-1.4 Lena Hansen, Einwilligung, unterschrieben").unwrap();
    b.find(Locator::Id("evidence_file"))
        .await
        .unwrap()
        .send_keys(&form.display().to_string())
        .await
        .unwrap();
    check(&b, "einwilligung-erfassen").await;
    click_to_next_page(&b, Locator::Css("form.console-form button[type=submit]")).await;
    let consent_page = path(&b).await;
    let shown = main_text(&b).await;
    let consent = consent_page
        .strip_prefix("/einwilligung/")
        .unwrap_or_else(|| panic!("on the consent's page, not {consent_page}: {shown}"))
        .to_string();
    assert!(main_text(&b).await.contains("gültig"));
    check(&b, "einwilligung").await;
    let mut ja_api = h.client(JA).await;
    wait_for_consent_state(&ja_api, &consent, pb::ConsentState::ConsentInForce).await;

    // 2. The Jobcenter asks: the competent Jugendamt is proposed from the postal code.
    request_for_lena(
        &b,
        &jobcenter,
        LENA_BORN,
        "Lena möchte ausziehen; die Lage zu Hause ist angespannt.",
    )
    .await;
    assert!(main_text(&b)
        .await
        .contains("ist zuständig: Jugendamt Kreis Segeberg"));
    set_value(&b, "einwilligung", &consent).await;
    check(&b, "anfrage").await;
    click_to_next_page(&b, Locator::Id("senden")).await;
    let sent = path(&b).await;
    assert!(
        sent.starts_with("/gesendet/"),
        "{sent}: {}",
        main_text(&b).await
    );
    let request = sent.trim_start_matches("/gesendet/").to_string();
    check(&b, "gesendet").await;
    let jc_api = h.client(JC).await;
    wait_for_state(&jc_api, &request, pb::DeliveryState::Delivered).await;
    sign_out(&b).await;

    // 3. The Jugendamt reads the request and certifies, answering it prefilled.
    sign_in(&b, &jugendamt, "schmidt").await;
    assert!(main_text(&b).await.contains("Lena Hansen"));
    check(&b, "jugendamt-posteingang").await;
    click_to_next_page(
        &b,
        Locator::Css(&format!("a[href=\"/nachricht/{request}\"]")),
    )
    .await;
    assert!(main_text(&b).await.contains("Lena möchte ausziehen"));
    check(&b, "jugendamt-anfrage").await;
    click_to_next_page(&b, Locator::Id("antworten")).await;
    set_value(
        &b,
        "ergebnis",
        &(pb::CertificationOutcome::Supported as i32).to_string(),
    )
    .await;
    set_value(
        &b,
        "grund",
        &(pb::MoveOutGround::SeriousSocialReasons as i32).to_string(),
    )
    .await;
    fill(
        &b,
        "stellungnahme",
        "Ein Verbleib im Elternhaus ist nicht zumutbar.",
    )
    .await;
    set_value(&b, "gespraech_am", &today()).await;
    check(&b, "stellungnahme").await;
    click_to_next_page(&b, Locator::Id("senden")).await;
    let statement_page = path(&b).await;
    assert!(
        statement_page.starts_with("/gesendet/"),
        "{}",
        main_text(&b).await
    );
    let statement = statement_page.trim_start_matches("/gesendet/").to_string();
    wait_for_state(&ja_api, &statement, pb::DeliveryState::Delivered).await;
    sign_out(&b).await;

    // 4. The Jobcenter decides, answering the statement.
    sign_in(&b, &jobcenter, "jensen").await;
    click_to_next_page(
        &b,
        Locator::Css(&format!("a[href=\"/nachricht/{statement}\"]")),
    )
    .await;
    assert!(main_text(&b)
        .await
        .contains("Ein Verbleib im Elternhaus ist nicht zumutbar."));
    click_to_next_page(&b, Locator::Id("antworten")).await;
    set_value(
        &b,
        "ergebnis",
        &(pb::DecisionOutcome::AssuranceGranted as i32).to_string(),
    )
    .await;
    set_value(&b, "entschieden_am", &today()).await;
    check(&b, "entscheidung").await;
    click_to_next_page(&b, Locator::Id("senden")).await;
    let decision_page = path(&b).await;
    assert!(
        decision_page.starts_with("/gesendet/"),
        "{}",
        main_text(&b).await
    );
    let decision = decision_page.trim_start_matches("/gesendet/").to_string();
    wait_for_state(&jc_api, &decision, pb::DeliveryState::Delivered).await;

    // The case holds the whole thread.
    b.goto(&format!("{jobcenter}/fall/{consent}"))
        .await
        .unwrap();
    let case = main_text(&b).await;
    for kind in [
        "Anfrage zur Bescheinigung (Auszug U25)",
        "Stellungnahme des Jugendamts (Auszug U25)",
        "Entscheidung über die Zusicherung (Auszug U25)",
    ] {
        assert!(case.contains(kind), "{kind}: {case}");
    }
    check(&b, "fall").await;

    // 5. A send the node refuses: its German explanation, nothing queued.
    request_for_lena(&b, &jobcenter, &birthday_years_ago(25), "Nachfrage").await;
    set_value(&b, "einwilligung", &consent).await;
    click_to_next_page(&b, Locator::Id("senden")).await;
    let refused = main_text(&b).await;
    assert!(refused.contains("Nicht unter 25"), "{refused}");
    assert!(
        refused.contains("Prüfen Sie das Geburtsdatum."),
        "{refused}"
    );
    check(&b, "abgelehnt").await;

    // 6. Lena withdraws; the next message under her consent is refused.
    b.goto(&format!("{jobcenter}/einwilligung/{consent}"))
        .await
        .unwrap();
    click_to_next_page(
        &b,
        Locator::XPath("//button[normalize-space()='Widerrufen']"),
    )
    .await;
    assert!(
        main_text(&b).await.contains("widerrufen"),
        "{}",
        main_text(&b).await
    );
    request_for_lena(&b, &jobcenter, LENA_BORN, "Noch eine Frage").await;
    let offered = b
        .execute(
            "return [...document.getElementById('einwilligung').options].map(o => o.value)",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        !offered.to_string().contains(&consent),
        "a withdrawn consent is not offered: {offered}"
    );
    // Sent anyway with the withdrawn consent (as a stale form would): refused, explained.
    b.execute(
        "const s = document.getElementById('einwilligung'); const o = document.createElement('option'); o.value = arguments[0]; o.text = 'alt'; s.add(o); s.value = arguments[0]; return true",
        vec![serde_json::json!(consent)],
    )
    .await
    .unwrap();
    click_to_next_page(&b, Locator::Id("senden")).await;
    let stopped = main_text(&b).await;
    assert!(stopped.contains("Einwilligung widerrufen"), "{stopped}");
    check(&b, "widerrufen-abgelehnt").await;

    // 7. The access report, printable.
    b.goto(&format!(
        "{jobcenter}/auskunft?vorname=Lena&nachname=Hansen&geburtsdatum=12.04.2005"
    ))
    .await
    .unwrap();
    let report = main_text(&b).await;
    assert!(report.contains("Auskunft über Ihre Daten"));
    assert!(report.contains("widerrufen"));
    assert!(report.contains("gesendet an"));
    assert!(report.contains("erhalten von"));
    check(&b, "auskunft").await;
    let printed = b.print(Default::default()).await.expect("print to PDF");
    assert!(printed.starts_with(b"%PDF"), "the report prints");
    std::fs::write(
        workspace().join("target/console-screenshots/story-auskunft.pdf"),
        &printed,
    )
    .unwrap();
    let _ = std::fs::remove_file(&form);
    let _ = ja_api
        .list_consents(pb::ListConsentsRequest::default())
        .await;
    b.close().await.expect("close the browser");
    h.fed.shutdown().await.unwrap();
}
