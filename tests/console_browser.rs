//! The console in a real browser (headless Debian Chromium, `testkit::browser`): a
//! caseworker of the Kreis Jugendamt signs in (a wrong password first), reads the Posteingang,
//! sees a new message arrive without reloading, opens it and marks it done — keyboard first,
//! German throughout, axe-core finding no WCAG 2.1 AA violation and the browser reporting no
//! Content-Security-Policy violation on any page state. Screenshots of each page go to
//! `target/console-screenshots/` (`cargo test -p kurzdraht-tests --test console_browser`).

use fantoccini::{Client, Locator};
use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::browser::{
    assert_no_axe_violations, assert_no_csp_violations, click_to_next_page, screenshot, Browser,
};
use kurzdraht_testkit::*;
use std::time::Duration;

/// Checks a page state: no axe violation, no CSP violation; saves its screenshot.
async fn check(b: &Client, name: &str) {
    assert_no_axe_violations(b, name).await;
    assert_no_csp_violations(b, name).await;
    let dir = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    screenshot(b, &dir.join(format!("{name}.png")))
        .await
        .expect("screenshot");
}

async fn text(b: &Client) -> String {
    b.find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text")
}

async fn path(b: &Client) -> String {
    b.current_url().await.expect("url").path().to_string()
}

/// Waits (at most 10 s) until the page at `want` has loaded: a click that submits a form
/// returns before the browser has followed the answer.
async fn wait_for_path(b: &Client, want: &str) {
    for _ in 0..200 {
        let ready = b
            .execute("return document.readyState", vec![])
            .await
            .map(|v| v == "complete")
            .unwrap_or(false);
        if ready && path(b).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the browser did not reach {want}; it is at {}",
        path(b).await
    );
}

async fn eval(b: &Client, script: &str) -> serde_json::Value {
    b.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn sign_in(b: &Client, name: &str, password: &str) {
    let field = b.find(Locator::Id("name")).await.expect("name field");
    field.clear().await.expect("clear");
    field.send_keys(name).await.expect("type name");
    b.find(Locator::Id("password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type password");
    click_to_next_page(b, Locator::Css("form.console-form button[type=submit]")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caseworker_reads_the_inbox_and_marks_a_message_done_in_a_browser() {
    let h = start().await;
    h.add_console_account(JA, "schmidt", "Frau Schmidt", AccountRole::Caseworker)
        .await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let consent = consent_in_force_at(
        &mut jc,
        &ja,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let first = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Lena möchte ausziehen."),
    )
    .await;
    wait_for_inbox_len(&ja, 2).await;

    let b = Browser::start().await.expect("browser");
    let base = h.fed.console_url(JA).unwrap();
    b.goto(&format!("{base}/posteingang")).await.unwrap();
    assert_eq!(path(&b).await, "/anmelden", "not signed in: the login");
    assert_eq!(
        b.title().await.unwrap(),
        "Anmelden – kurzdraht Jugendamt Kreis Segeberg"
    );
    check(&b, "anmelden").await;

    // Keyboard first: the first Tab reaches the skip link, which leads to the content.
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys("\u{E004}")
        .await
        .unwrap();
    let focused = eval(&b, "return document.activeElement.textContent").await;
    assert_eq!(focused, "Zum Inhalt springen");
    let visible = eval(
        &b,
        "const r = document.activeElement.getBoundingClientRect(); \
         return r.left >= 0 && r.top >= 0 && r.width > 0 && r.right <= innerWidth",
    )
    .await;
    assert_eq!(visible, true, "the skip link shows when focused");

    sign_in(&b, "schmidt", "falsch-falsch-falsch").await;
    assert_eq!(path(&b).await, "/anmelden");
    assert!(text(&b)
        .await
        .contains("Benutzername oder Passwort ist falsch."));
    let described = eval(
        &b,
        "return document.getElementById('password').getAttribute('aria-describedby')",
    )
    .await;
    assert_eq!(
        described, "anmeldung-fehler",
        "the error is tied to the field"
    );
    check(&b, "anmelden-fehler").await;

    sign_in(&b, "schmidt", CONSOLE_PASSWORD).await;
    assert_eq!(path(&b).await, "/posteingang");
    let inbox = text(&b).await;
    assert!(
        inbox.contains("Anfrage zur Bescheinigung (Auszug U25)"),
        "{inbox}"
    );
    assert!(inbox.contains("Lena Hansen"));
    assert!(inbox.contains("Jobcenter Kreis Segeberg"));
    check(&b, "posteingang").await;

    // A second message arrives while the page is open: the page shows it without a reload.
    let marker = eval(&b, "window.kurzdrahtNotReloaded = true; return true").await;
    assert_eq!(marker, true);
    let second = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Nachtrag"),
    )
    .await;
    let mut shown = false;
    for _ in 0..100 {
        let rows = eval(
            &b,
            &format!("return !!document.querySelector('a[href=\"/nachricht/{second}\"]')"),
        )
        .await;
        if rows == true {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shown, "the new message did not appear without a reload");
    assert_eq!(
        eval(&b, "return window.kurzdrahtNotReloaded === true").await,
        true,
        "no reload happened"
    );
    let status = eval(
        &b,
        "return document.getElementById('posteingang-status').textContent",
    )
    .await;
    assert_eq!(status, "1 neue Nachricht eingegangen.");
    check(&b, "posteingang-live").await;

    // Open the first message and mark it done.
    click_to_next_page(&b, Locator::Css(&format!("a[href=\"/nachricht/{first}\"]"))).await;
    assert_eq!(path(&b).await, format!("/nachricht/{first}"));
    let page = text(&b).await;
    assert!(page.contains("Lena möchte ausziehen."), "{page}");
    assert!(page.contains("12.04.2005"));
    check(&b, "nachricht").await;
    click_to_next_page(
        &b,
        Locator::XPath("//button[normalize-space()='Als erledigt markieren']"),
    )
    .await;
    assert_eq!(path(&b).await, format!("/nachricht/{first}"));
    assert!(text(&b).await.contains("erledigt"));
    check(&b, "nachricht-erledigt").await;

    // The case: the person's consent and both requests in one thread.
    b.goto(&format!("{base}/faelle")).await.unwrap();
    assert!(text(&b).await.contains("Lena Hansen"));
    check(&b, "faelle").await;
    click_to_next_page(&b, Locator::LinkText("Lena Hansen")).await;
    assert_eq!(path(&b).await, format!("/fall/{consent}"));
    let case = text(&b).await;
    assert!(
        case.contains("Auszug unter 25: Anfrage, Stellungnahme, Entscheidung"),
        "{case}"
    );
    assert_eq!(
        case.matches("Anfrage zur Bescheinigung (Auszug U25)")
            .count(),
        2
    );
    check(&b, "fall").await;

    // An error page (a case that does not exist) is German and accessible too.
    b.goto(&format!("{base}/fall/0190a0a0-0000-7000-8000-000000000000"))
        .await
        .unwrap();
    assert!(text(&b).await.contains("Nicht gefunden"));
    check(&b, "fehlerseite").await;

    b.goto(&format!("{base}/konto")).await.unwrap();
    assert!(text(&b).await.contains("Sachbearbeitung"));
    check(&b, "konto").await;

    // Sign out with the header's button: back at the login, the inbox closed.
    click_to_next_page(&b, Locator::XPath("//button[normalize-space()='Abmelden']")).await;
    wait_for_path(&b, "/anmelden").await;
    b.goto(&format!("{base}/posteingang")).await.unwrap();
    assert_eq!(path(&b).await, "/anmelden");
    b.close().await.expect("close the browser");
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_report_and_the_protocol_in_a_browser() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "datenschutz", "Frau Dahl", AccountRole::DataProtection)
        .await;
    let mut jc = h.client(JC).await;
    let lena = subject("Lena", "Hansen", "2005-04-12");
    let consent = consent_id(
        &mut jc,
        consent_request(&lena, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let _ = submit(&mut jc, JN, &consent, "", certification_request(&lena, "x")).await;

    let b = Browser::start().await.expect("browser");
    let base = h.fed.console_url(JC).unwrap();
    b.goto(&format!("{base}/anmelden")).await.unwrap();
    sign_in(&b, "jensen", CONSOLE_PASSWORD).await;
    b.goto(&format!("{base}/auskunft")).await.unwrap();
    check(&b, "auskunft").await;
    for (id, value) in [
        ("vorname", "Lena"),
        ("nachname", "Hansen"),
        ("geburtsdatum", "31.02.2005"),
    ] {
        b.find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    click_to_next_page(
        &b,
        Locator::XPath("//button[normalize-space()='Auskunft erstellen']"),
    )
    .await;
    assert!(text(&b)
        .await
        .contains("Bitte geben Sie das Geburtsdatum als TT.MM.JJJJ ein."));
    check(&b, "auskunft-fehler").await;
    let date = b.find(Locator::Id("geburtsdatum")).await.unwrap();
    date.clear().await.unwrap();
    date.send_keys("12.04.2005").await.unwrap();
    click_to_next_page(
        &b,
        Locator::XPath("//button[normalize-space()='Auskunft erstellen']"),
    )
    .await;
    let report = text(&b).await;
    assert!(report.contains("Auskunft über Ihre Daten"), "{report}");
    assert!(report.contains("Die Einwilligung nennt diese Dienststelle nicht als Empfängerin."));
    check(&b, "auskunft-bericht").await;
    // Printed, the page is the report alone: no header, navigation or footer.
    let printed = eval(
        &b,
        "return [...document.styleSheets].some(s => [...s.cssRules].some(r => r.media && r.media.mediaText === 'print'))",
    )
    .await;
    assert_eq!(printed, true, "a print style sheet is in force");

    click_to_next_page(&b, Locator::XPath("//button[normalize-space()='Abmelden']")).await;
    wait_for_path(&b, "/anmelden").await;
    sign_in(&b, "datenschutz", CONSOLE_PASSWORD).await;
    assert_eq!(path(&b).await, "/protokoll");
    check(&b, "protokoll").await;
    click_to_next_page(
        &b,
        Locator::XPath("//button[normalize-space()='Protokoll prüfen']"),
    )
    .await;
    // It runs in the background: reload until it has ended.
    for _ in 0..100 {
        if !text(&b).await.contains("Prüfung läuft") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.goto(&format!("{base}/protokoll")).await.unwrap();
    }
    assert!(text(&b).await.contains("Prüfung bestanden"));
    check(&b, "protokoll-geprueft").await;
    b.close().await.expect("close the browser");
    h.fed.shutdown().await.unwrap();
}
