//! Nachricht senden and Antworten in the console, over real HTTPS against three real nodes:
//! only the kinds of the office's role; the competent Jugendamt proposed from the postal
//! code; only consents that cover the message offered (each refusal beside the covering
//! one); a refusal explained in German at its field with nothing queued; a withdrawn
//! consent's next message refused; a reply prefilled from the request it answers and sent;
//! a double submit sent once; CSRF and role refusals. One flow in a real Chromium with
//! axe-core on every page state and screenshots.

use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::browser::{assert_no_axe_violations, screenshot, Browser};
use kurzdraht_testkit::console_client::{ConsoleClient, Page};
use kurzdraht_testkit::*;

const LENA_DOB: &str = "2005-04-12";

/// The person fields of Lena Hansen at `postal_code`.
fn lena(postal_code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("vorname", "Lena".into()),
        ("nachname", "Hansen".into()),
        ("geburtsdatum", LENA_DOB.into()),
        ("strasse", "Kurhausstraße 7".into()),
        ("plz", postal_code.into()),
        ("ort", "Bad Segeberg".into()),
    ]
}

async fn post(c: &mut ConsoleClient, path: &str, fields: &[(&str, String)]) -> Page {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.post(path, &pairs).await
}

/// The options of select `name` as (value, selected).
fn options(page: &Page, name: &str) -> Vec<(String, bool)> {
    let start = page
        .body
        .find(&format!("id=\"{name}\" name=\"{name}\""))
        .unwrap_or_else(|| panic!("no select {name} in {}", page.body));
    let end = start + page.body[start..].find("</select>").expect("select ends");
    page.body[start..end]
        .split("<option value=\"")
        .skip(1)
        .map(|o| {
            let value = o[..o.find('"').expect("value ends")].to_string();
            (
                value,
                o.split('>').next().unwrap_or("").contains("selected"),
            )
        })
        .collect()
}

fn selected(page: &Page, name: &str) -> Option<String> {
    options(page, name)
        .into_iter()
        .find(|(_, s)| *s)
        .map(|(v, _)| v)
}

fn offered(page: &Page, name: &str) -> Vec<String> {
    options(page, name)
        .into_iter()
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty())
        .collect()
}

/// The message records of `agency`'s store (every queued or sent message).
fn message_count(h: &Harness, agency: &str) -> usize {
    h.node(agency)
        .shared()
        .ledger()
        .message_records_iter()
        .count()
}

fn form_of(
    page: &Page,
    art: &str,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("csrf", page.field("csrf").expect("csrf")),
        ("schluessel", page.field("schluessel").expect("key")),
        ("art", art.to_string()),
        ("antwort_auf", page.field("antwort_auf").unwrap_or_default()),
    ];
    f.extend(extra.iter().cloned());
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobcenter_sends_a_request_under_the_one_covering_consent() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "dsb", "Frau Datenschutz", AccountRole::DataProtection)
        .await;
    let mut api = h.client(JC).await;
    let lena_subject = subject("Lena", "Hansen", LENA_DOB);
    let u25 = [pb::Purpose::U25MoveOut];
    let covering = consent_id(&mut api, consent_request(&lena_subject, &[JA], &u25)).await;
    let to_norderstedt = consent_id(&mut api, consent_request(&lena_subject, &[JN], &u25)).await;
    let other_purpose = consent_id(
        &mut api,
        consent_request(&lena_subject, &[JA], &[pb::Purpose::QualificationMeasure]),
    )
    .await;
    let other_person = consent_id(
        &mut api,
        consent_request(&subject("Jonas", "Hansen", LENA_DOB), &[JA], &u25),
    )
    .await;

    let mut c = h.console_signed_in(JC, "jensen").await;
    // The navigation has the page; the choice lists the Jobcenter's kinds only.
    let choice = c.get("/nachricht/neu").await;
    assert_eq!(choice.status, 200, "{}", choice.body);
    assert!(choice.body.contains(
        "<a class=\"kern-link\" href=\"/nachricht/neu\" aria-current=\"page\">Nachricht senden</a>"
    ));
    for slug in ["anfrage", "entscheidung", "zuweisung"] {
        assert!(
            choice
                .body
                .contains(&format!("/nachricht/neu?art={slug}\"")),
            "{slug}"
        );
    }
    for slug in ["stellungnahme", "zuweisungsantwort"] {
        assert!(
            !choice
                .body
                .contains(&format!("/nachricht/neu?art={slug}\"")),
            "{slug}"
        );
        assert_eq!(
            c.get(&format!("/nachricht/neu?art={slug}")).await.status,
            400
        );
    }

    let empty = c.get("/nachricht/neu?art=anfrage").await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(empty
        .body
        .contains("Sachbearbeitung: <strong id=\"sachbearbeitung\">Herr Jensen</strong>"));
    assert!(!empty.body.contains("name=\"caseworker\""), "not editable");
    let key = empty.field("schluessel").expect("an idempotency key");
    assert_eq!(key.len(), 64);
    assert_ne!(
        c.get("/nachricht/neu?art=anfrage")
            .await
            .field("schluessel"),
        Some(key.clone()),
        "a key per rendering"
    );

    // Proposal from a Bad Segeberg postal code: the Kreis office, and the covering consent.
    let mut fields = form_of(&empty, "anfrage", &lena("23795"));
    fields.push(("aktion", "vorschlagen".into()));
    let proposed = post(&mut c, "/nachricht/neu", &fields).await;
    assert_eq!(proposed.status, 200, "{}", proposed.body);
    assert!(proposed
        .body
        .contains("Für die Postleitzahl 23795 ist zuständig: Jugendamt Kreis Segeberg."));
    assert_eq!(selected(&proposed, "empfaenger").as_deref(), Some(JA));
    assert_eq!(
        offered(&proposed, "einwilligung"),
        std::slice::from_ref(&covering)
    );
    for not in [&to_norderstedt, &other_purpose, &other_person] {
        assert!(!proposed.body.contains(not.as_str()), "{not} is offered");
    }
    assert_eq!(
        proposed.field("vorname").as_deref(),
        Some("Lena"),
        "values kept"
    );

    // From a Norderstedt postal code: the city office, and the consent that names it.
    let mut fields = form_of(&empty, "anfrage", &lena("22846"));
    fields.push(("aktion", "vorschlagen".into()));
    let proposed_n = post(&mut c, "/nachricht/neu", &fields).await;
    assert_eq!(selected(&proposed_n, "empfaenger").as_deref(), Some(JN));
    assert_eq!(
        offered(&proposed_n, "einwilligung"),
        std::slice::from_ref(&to_norderstedt)
    );

    // Send, without the CSRF token: refused, nothing queued.
    let before = message_count(&h, JC);
    let mut send = form_of(&proposed, "anfrage", &lena("23795"));
    send.extend([
        ("empfaenger", JA.to_string()),
        ("einwilligung", covering.clone()),
        ("anlass", "Antrag auf Zusicherung zum Auszug".into()),
        ("antwort_bis", "".into()),
        ("aktion", "senden".into()),
    ]);
    let no_csrf: Vec<(&str, String)> = send.iter().filter(|(k, _)| *k != "csrf").cloned().collect();
    let refused = post(&mut c, "/nachricht/neu", &no_csrf).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(message_count(&h, JC), before);

    // Positive control, and the double click: both answers name the one message.
    let first = post(&mut c, "/nachricht/neu", &send).await;
    assert_eq!(first.status, 303, "{}", first.body);
    let location = first.location().expect("to the status page").to_string();
    let second = post(&mut c, "/nachricht/neu", &send).await;
    assert_eq!(second.location(), Some(location.as_str()), "sent once");
    assert_eq!(message_count(&h, JC), before + 1);
    let message_id = location.trim_start_matches("/gesendet/").to_string();
    let s = wait_for_state(&api, &message_id, pb::DeliveryState::Delivered).await;
    assert_eq!(s.consent_id, covering);
    let status = c.get(&location).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(status
        .body
        .contains("Zugestellt mit Empfangsbestätigung, Empfang bestätigt am "));
    assert!(status.body.contains("Jugendamt Kreis Segeberg"));
    assert!(status.body.contains(&format!(
        "<a class=\"kern-link\" href=\"/einwilligung/{covering}\">"
    )));

    // Withdrawn: the next message under it is refused, explained, nothing queued.
    api.withdraw_consent(pb::WithdrawConsentRequest {
        consent_id: covering.clone(),
        recorded_by: "Herr Jensen".into(),
        manner: "mündlich".into(),
        idempotency_key: String::new(),
    })
    .await
    .expect("withdraw");
    let fresh = c.get("/nachricht/neu?art=anfrage").await;
    let mut again = send.clone();
    again[1].1 = fresh.field("schluessel").expect("key");
    let before = message_count(&h, JC);
    let withdrawn = post(&mut c, "/nachricht/neu", &again).await;
    assert_eq!(withdrawn.status, 422, "{}", withdrawn.body);
    assert!(withdrawn
        .body
        .contains("<span class=\"kern-title\">Einwilligung widerrufen</span>"));
    assert!(withdrawn
        .body
        .contains("Nur mit einer neuen Einwilligung der Person geht es weiter."));
    assert!(withdrawn
        .body
        .contains("aria-invalid=\"true\" aria-describedby=\"einwilligung-error\""));
    assert!(
        withdrawn.body.contains("Antrag auf Zusicherung zum Auszug"),
        "values kept"
    );
    assert_eq!(message_count(&h, JC), before, "nothing queued");

    // A data protection officer may not use the pages.
    let mut dsb = h.console_signed_in(JC, "dsb").await;
    for path in [
        "/nachricht/neu",
        "/nachricht/neu?art=anfrage",
        location.as_str(),
    ] {
        let page = dsb.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        assert!(page.body.contains("Keine Berechtigung"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jugendamt_answers_a_request_prefilled_and_a_health_note_is_explained_at_its_field() {
    let h = start().await;
    h.add_console_account(JA, "sievers", "Frau Sievers", AccountRole::Caseworker)
        .await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena_subject = subject("Lena", "Hansen", LENA_DOB);
    let consent = consent_id(
        &mut jc,
        consent_request(&lena_subject, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &consent, pb::ConsentState::ConsentInForce).await;
    let request = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena_subject, "Antrag auf Zusicherung"),
    )
    .await;
    wait_for_state(&jc, &request, pb::DeliveryState::Delivered).await;

    let mut c = h.console_signed_in(JA, "sievers").await;
    let message = c.get(&format!("/nachricht/{request}")).await;
    assert_eq!(message.status, 200, "{}", message.body);
    let href = format!("/nachricht/{request}/antworten");
    assert!(
        message.body.contains(&format!("href=\"{href}\"")),
        "{}",
        message.body
    );

    // A consent notice has no answer: no button, no form (beside the request's).
    let mut ja_api = ja.clone();
    let notice = read_inbox(&mut ja_api, 0)
        .await
        .into_iter()
        .find(|i| i.kind == pb::MessageKind::ConsentNotice as i32)
        .expect("the consent notice");
    let page = c.get(&format!("/nachricht/{}", notice.message_id)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("/antworten"), "{}", page.body);
    let none = c
        .get(&format!("/nachricht/{}/antworten", notice.message_id))
        .await;
    assert_eq!(none.status, 404, "{}", none.body);

    let reply = c.get(&href).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply
        .body
        .contains("<input type=\"hidden\" name=\"art\" value=\"stellungnahme\">"));
    assert_eq!(
        reply.field("antwort_auf").as_deref(),
        Some(request.as_str())
    );
    assert_eq!(reply.field("vorname").as_deref(), Some("Lena"));
    assert_eq!(reply.field("geburtsdatum").as_deref(), Some(LENA_DOB));
    assert_eq!(selected(&reply, "empfaenger").as_deref(), Some(JC));
    assert_eq!(
        selected(&reply, "einwilligung").as_deref(),
        Some(consent.as_str())
    );

    // A health note the consent does not cover: explained at the field, nothing queued.
    let mut send = form_of(&reply, "stellungnahme", &lena("23795"));
    send.extend([
        ("empfaenger", JC.to_string()),
        ("einwilligung", consent.clone()),
        (
            "ergebnis",
            (pb::CertificationOutcome::Supported as i32).to_string(),
        ),
        (
            "grund",
            (pb::MoveOutGround::SeriousSocialReasons as i32).to_string(),
        ),
        (
            "stellungnahme",
            "Rückverweis in das Elternhaus nicht zumutbar.".into(),
        ),
        ("gespraech_am", today()),
        ("gesundheit", "Attest liegt vor.".into()),
        ("aktion", "senden".into()),
    ]);
    let before = message_count(&h, JA);
    let refused = post(&mut c, "/nachricht/neu", &send).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused
        .body
        .contains("<span class=\"kern-title\">Datenart nicht abgedeckt</span>"));
    assert!(refused.body.contains(
        "<p class=\"kern-error\" id=\"gesundheit-error\">Leeren Sie das Feld „Hinweis zur Gesundheit“ oder erfassen Sie eine neue Einwilligung"
    ));
    assert!(refused.body.contains("href=\"#gesundheit\""));
    assert!(
        refused.body.contains(">Attest liegt vor.</textarea>"),
        "values kept"
    );
    assert_eq!(message_count(&h, JA), before, "nothing queued");

    // Positive control: the field cleared, the answer goes out under the same consent.
    let cleared: Vec<(&str, String)> = send
        .iter()
        .map(|(k, v)| match *k {
            "gesundheit" => (*k, String::new()),
            _ => (*k, v.clone()),
        })
        .collect();
    let sent = post(&mut c, "/nachricht/neu", &cleared).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let id = sent
        .location()
        .expect("status page")
        .trim_start_matches("/gesendet/")
        .to_string();
    let got = wait_until("the answer arrives at the Jobcenter", || {
        let mut jc = jc.clone();
        let id = id.clone();
        async move {
            read_inbox(&mut jc, 0)
                .await
                .into_iter()
                .find(|i| i.message_id == id)
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
    assert_eq!(got.in_reply_to, request);
    assert_eq!(got.consent_id, consent);
    assert_eq!(got.kind, pb::MessageKind::MoveOutCertification as i32);
    let Some(pb::message_body::Body::MoveOutCertification(m)) = got.body.and_then(|b| b.body)
    else {
        panic!("not a statement");
    };
    assert_eq!(m.issuing_caseworker, "Frau Sievers", "from the account");
    assert!(m.health_note.is_empty());
}

async fn fill(browser: &Browser, id: &str, value: &str) {
    let el = browser
        .find(fantoccini::Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("field {id}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(value).await.expect("type");
}

/// Clicks the element `id` (scrolled to first without KERN's smooth scrolling, which
/// would move it under the pointer) and waits until the next page has loaded (the old
/// page's marker is gone).
async fn click(browser: &Browser, id: &str) {
    browser
        .execute(
            &format!("window.kurzdrahtOld = true; document.getElementById('{id}').scrollIntoView({{block: 'center', behavior: 'instant'}})"),
            vec![],
        )
        .await
        .expect("scroll");
    browser
        .find(fantoccini::Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("button {id}: {e}"))
        .click()
        .await
        .expect("click");
    wait_until(&format!("the page after clicking {id}"), || async {
        let old = browser
            .execute(
                "return document.readyState === 'complete' && !window.kurzdrahtOld",
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        match old.as_bool() {
            Some(true) => Ok(()),
            _ => Err("still the old page".to_string()),
        }
    })
    .await;
}

async fn select_value(browser: &Browser, id: &str) -> String {
    browser
        .execute(
            &format!("return document.getElementById('{id}').value"),
            vec![],
        )
        .await
        .expect("read")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn body_text(browser: &Browser) -> String {
    browser
        .execute("return document.body.innerText", vec![])
        .await
        .expect("text")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_jugendamt_is_proposed_a_refusal_shown_and_a_request_sent() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let mut api = h.client(JC).await;
    let lena_subject = subject("Lena", "Hansen", LENA_DOB);
    let covering = consent_id(
        &mut api,
        consent_request(&lena_subject, &[JA, JN], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    let shots = workspace().join("target/console-screenshots");
    let url = h.fed.console_url(JC).expect("console");
    let browser = Browser::start().await.expect("a headless Chromium");
    browser
        .goto(&format!("{url}/anmelden"))
        .await
        .expect("login");
    fill(&browser, "name", "jensen").await;
    fill(&browser, "password", CONSOLE_PASSWORD).await;
    browser
        .find(fantoccini::Locator::Css("button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");

    browser
        .goto(&format!("{url}/nachricht/neu?art=anfrage"))
        .await
        .expect("the form");
    assert_no_axe_violations(&browser, "the empty form").await;
    for (id, v) in [
        ("vorname", "Lena"),
        ("nachname", "Hansen"),
        ("strasse", "Rathausallee 50"),
        ("plz", "22846"),
        ("ort", "Norderstedt"),
        ("anlass", "Antrag auf Zusicherung zum Auszug"),
    ] {
        fill(&browser, id, v).await;
    }
    // a date input takes the date in the browser's locale order; set it directly
    browser
        .execute(
            &format!("document.getElementById('geburtsdatum').value = '{LENA_DOB}'"),
            vec![],
        )
        .await
        .expect("date");
    click(&browser, "vorschlagen").await;
    assert_eq!(select_value(&browser, "empfaenger").await, JN);
    assert!(body_text(&browser)
        .await
        .contains("ist zuständig: Jugendamt der Stadt Norderstedt"));
    assert_no_axe_violations(&browser, "the form with the proposal").await;

    fill(&browser, "plz", "23795").await;
    fill(&browser, "ort", "Bad Segeberg").await;
    click(&browser, "vorschlagen").await;
    assert_eq!(select_value(&browser, "empfaenger").await, JA);
    // the covering consent is offered; choose it
    browser
        .execute(
            &format!("document.getElementById('einwilligung').value = '{covering}'"),
            vec![],
        )
        .await
        .expect("choose");
    assert_eq!(select_value(&browser, "einwilligung").await, covering);
    screenshot(&browser, &shots.join("send-filled.png"))
        .await
        .expect("screenshot");

    // A date of birth 25 years back today: refused (over-age) at the field.
    browser
        .execute(
            &format!(
                "document.getElementById('geburtsdatum').value = '{}'",
                birthday_years_ago(25)
            ),
            vec![],
        )
        .await
        .expect("date");
    let before = message_count(&h, JC);
    click(&browser, "senden").await;
    let text = body_text(&browser).await;
    assert!(text.contains("Nicht unter 25"), "{text}");
    assert!(text.contains("Prüfen Sie das Geburtsdatum."), "{text}");
    assert_eq!(message_count(&h, JC), before, "nothing queued");
    assert_no_axe_violations(&browser, "the form with a refusal").await;
    screenshot(&browser, &shots.join("send-refused.png"))
        .await
        .expect("screenshot");

    browser
        .execute(
            &format!("document.getElementById('geburtsdatum').value = '{LENA_DOB}'"),
            vec![],
        )
        .await
        .expect("date");
    click(&browser, "senden").await;
    let path = browser.current_url().await.expect("url").path().to_string();
    assert!(path.starts_with("/gesendet/"), "{path}");
    let text = body_text(&browser).await;
    assert!(text.contains("Jugendamt Kreis Segeberg"), "{text}");
    assert_no_axe_violations(&browser, "the status page").await;
    assert_eq!(message_count(&h, JC), before + 1);

    for shot in ["send-filled.png", "send-refused.png"] {
        let png = std::fs::read(shots.join(shot)).expect("the PNG");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{shot}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_reply_form_is_prefilled_and_accessible() {
    let h = start().await;
    h.add_console_account(JA, "sievers", "Frau Sievers", AccountRole::Caseworker)
        .await;
    let mut jc = h.client(JC).await;
    let ja = h.client(JA).await;
    let lena_subject = subject("Lena", "Hansen", LENA_DOB);
    let consent = consent_id(
        &mut jc,
        consent_request(&lena_subject, &[JA], &[pb::Purpose::U25MoveOut]),
    )
    .await;
    wait_for_consent_state(&ja, &consent, pb::ConsentState::ConsentInForce).await;
    let request = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena_subject, "Antrag auf Zusicherung"),
    )
    .await;
    wait_for_state(&jc, &request, pb::DeliveryState::Delivered).await;
    let url = h.fed.console_url(JA).expect("console");
    let browser = Browser::start().await.expect("a headless Chromium");
    browser
        .goto(&format!("{url}/anmelden"))
        .await
        .expect("login");
    fill(&browser, "name", "sievers").await;
    fill(&browser, "password", CONSOLE_PASSWORD).await;
    browser
        .find(fantoccini::Locator::Css("button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    browser
        .goto(&format!("{url}/nachricht/{request}"))
        .await
        .expect("the message");
    click(&browser, "antworten").await;
    assert_eq!(select_value(&browser, "einwilligung").await, consent);
    assert_eq!(select_value(&browser, "empfaenger").await, JC);
    assert_no_axe_violations(&browser, "the reply form").await;
}
