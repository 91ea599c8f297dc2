//! The console's consent pages over real HTTPS against the three real nodes: recording a
//! consent with the signed form uploaded (the node keeps its SHA-256, never the file; the
//! account is `recorded_by`, whatever the form says), the guardian rule shown at its field,
//! the upload bound, the CSRF check, withdrawal (and the AgencyApi refusing a message under
//! it), replacement, another office's consent read-only, the role check; and once in a real
//! Chromium, with axe-core on every page state and screenshots of the form and a consent.

use fantoccini::Locator;
use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::browser::{assert_no_axe_violations, screenshot, Browser};
use kurzdraht_testkit::console_client::{ConsoleClient, Page};
use kurzdraht_testkit::*;
use prost::Message as _;
use sha2::{Digest, Sha256};
use std::path::Path;
use tonic::Code;

/// The console's bound on the signed form (crates/console: `MAX_EVIDENCE_BYTES`).
const MAX_EVIDENCE_BYTES: usize = 20 * 1024 * 1024;

async fn caseworker(h: &Harness, agency: &str, name: &str, display: &str) -> ConsoleClient {
    h.add_console_account(agency, name, display, AccountRole::Caseworker)
        .await;
    h.console_signed_in(agency, name).await
}

/// A scanned form: a recognisable marker (to look for in the store) among other bytes.
fn signed_form(marker: &str, len: usize) -> Vec<u8> {
    let mut bytes = format!("%PDF-1.4\n{marker}\n").into_bytes();
    let mut x: u32 = 0x9e37_79b9;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push((x & 0xff) as u8);
    }
    bytes.truncate(len);
    bytes
}

/// The form of Lena's consent, given by herself, to the Kreis Jugendamt.
fn lena_fields<'a>(csrf: &'a str, date_of_birth: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("given_name", "Lena"),
        ("family_name", "Petersen"),
        ("date_of_birth", date_of_birth),
        ("given_by", "person"),
        ("recipients", JA),
        ("purposes", "auszug-u25"),
        ("categories", "identitaet"),
        ("categories", "wohnsituation"),
        ("categories", "familie"),
        ("categories", "leistung"),
        ("legal_basis", "einwilligung"),
        ("form", "schriftlich"),
        ("evidence_reference", "EW-2026/0815"),
    ]
}

fn lena(date_of_birth: &str) -> pb::Subject {
    pb::Subject {
        given_name: "Lena".into(),
        family_name: "Petersen".into(),
        date_of_birth: date_of_birth.into(),
        address: None,
        case_references: vec![],
    }
}

async fn csrf_of_form(c: &mut ConsoleClient) -> String {
    let form = c.get("/einwilligung/neu").await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.field("csrf").expect("the form's token")
}

/// The consent id a successful POST redirected to.
fn recorded(page: &Page) -> String {
    assert_eq!(page.status, 303, "{}", page.body);
    page.location()
        .and_then(|l| l.strip_prefix("/einwilligung/"))
        .expect("redirect to the consent")
        .to_string()
}

async fn consents(h: &Harness, agency: &str) -> Vec<pb::ConsentEntry> {
    list_consents(&mut h.client(agency).await).await
}

fn entry<'a>(all: &'a [pb::ConsentEntry], id: &str) -> &'a pb::ConsentEntry {
    all.iter()
        .find(|e| e.consent.as_ref().map(|c| c.consent_id.as_str()) == Some(id))
        .unwrap_or_else(|| panic!("consent {id} listed"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, read.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("read the store directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p.display().to_string(), bytes));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_consent_keeps_the_forms_hash_and_the_accounts_name_never_the_file() {
    let mut h = start().await;
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(19);
    let marker = "KURZDRAHT-UNTERSCHRIEBEN-4711-Petersen";
    let file = signed_form(marker, 300 * 1024);
    let csrf = csrf_of_form(&mut c).await;

    // Without the form's token: refused, nothing recorded.
    let mut fields = lena_fields(&csrf, &dob);
    fields.remove(0);
    let no_token = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &file)],
        )
        .await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(no_token.body.contains("Das Formular ist nicht mehr gültig"));
    assert!(consents(&h, JC).await.is_empty(), "nothing recorded");

    // With it, and with a `recorded_by` field slipped in: recorded as the account.
    let mut fields = lena_fields(&csrf, &dob);
    fields.push(("recorded_by", "Jemand anderes"));
    let page = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &file)],
        )
        .await;
    let id = recorded(&page);
    let all = consents(&h, JC).await;
    assert_eq!(all.len(), 1);
    let e = entry(&all, &id);
    let record = e.consent.as_ref().expect("record");
    let expected: [u8; 32] = Sha256::digest(&file).into();
    assert_eq!(record.evidence_sha256, expected.to_vec());
    assert_eq!(record.recorded_by, "Herr Jensen");
    assert_eq!(record.evidence_reference, "EW-2026/0815");
    assert_eq!(record.recipients, vec![JA.to_string()]);
    assert_eq!(record.purposes, vec![pb::Purpose::U25MoveOut as i32]);
    assert_eq!(record.given_by, pb::ConsentGiver::Person as i32);
    assert_eq!(e.state, pb::ConsentState::ConsentInForce as i32);
    // Nothing the node answers about the consent carries the file's bytes (every field of
    // every listed consent, encoded; the positive control: the reference is found there).
    let wire: Vec<u8> = all.iter().flat_map(|e| e.encode_to_vec()).collect();
    assert!(contains(&wire, b"EW-2026/0815"), "positive control");
    assert!(
        !contains(&wire, marker.as_bytes()),
        "the form's bytes in a record"
    );

    // The consent's page, in German, with the hash in hex.
    let shown = c.get(&format!("/einwilligung/{id}")).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    for text in [
        "Einwilligung von Lena Petersen",
        "Stand: <strong>gültig</strong>",
        &hex(&expected),
        "Herr Jensen",
        "Auszug unter 25",
        "EW-2026/0815",
        "action=\"/einwilligung/",
    ] {
        assert!(shown.body.contains(text), "consent page shows {text}");
    }
    assert!(!shown.body.contains("Jemand anderes"));
    // The list shows it.
    let list = c.get("/einwilligungen").await;
    assert_eq!(list.status, 200);
    assert!(list
        .body
        .contains(&format!("/einwilligung/{id}\">Lena Petersen</a>")));
    assert!(list
        .body
        .contains("<td class=\"kern-table__cell\">gültig</td>"));

    // Offline, no file of the store holds the file's bytes (no unsealed copy: the store
    // seals its values, so this guards only against a copy beside them; the records are
    // checked above). Its consent ids are plaintext keys: the scan sees the store.
    h.stop(JC).await;
    let files = files_under(&h.data_dir(JC));
    assert!(
        files.iter().any(|(_, b)| contains(b, id.as_bytes())),
        "positive control: the consent's id is in the store files"
    );
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, marker.as_bytes()),
            "the form's bytes in {path}"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_15_needs_a_guardian_shown_at_the_field() {
    let h = start().await;
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(14);
    let file = signed_form("form", 4096);
    let csrf = csrf_of_form(&mut c).await;

    let refused = c
        .post_multipart(
            "/einwilligung/neu",
            &lena_fields(&csrf, &dob),
            &[("evidence_file", "form.pdf", &file)],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains(
        "<p class=\"kern-error\" id=\"given_by-error\">Die Person ist jünger als 15 Jahre"
    ));
    assert!(refused
        .body
        .contains("<fieldset class=\"kern-fieldset kern-fieldset--error\" aria-describedby=\"given_by-error\">"));
    assert!(refused
        .body
        .contains("<a class=\"kern-link\" href=\"#given_by\">"));
    // The values are kept.
    assert!(refused.body.contains("value=\"Petersen\""));
    assert!(refused.body.contains("value=\"EW-2026/0815\""));
    assert!(consents(&h, JC).await.is_empty(), "nothing recorded");

    // Positive control: a guardian gives it.
    let mut fields = lena_fields(&csrf, &dob);
    fields.retain(|(k, _)| *k != "given_by");
    fields.push(("given_by", "sorgeberechtigt"));
    fields.push(("guardian_name", "Maren Petersen"));
    let page = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &file)],
        )
        .await;
    let id = recorded(&page);
    let all = consents(&h, JC).await;
    let record = entry(&all, &id).consent.clone().expect("record");
    assert_eq!(record.given_by, pb::ConsentGiver::Guardian as i32);
    assert_eq!(record.guardian_name, "Maren Petersen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_larger_than_20_mib_is_refused_and_nothing_is_recorded() {
    let h = start().await;
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(19);
    let csrf = csrf_of_form(&mut c).await;
    let fields = lena_fields(&csrf, &dob);

    let big = signed_form("gross", MAX_EVIDENCE_BYTES + 1);
    let refused = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &big)],
        )
        .await;
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body.contains(
        "<p class=\"kern-error\" id=\"evidence_file-error\">Die Datei ist größer als 20 MiB."
    ));
    assert!(consents(&h, JC).await.is_empty(), "nothing recorded");

    // A body beyond the console's limit (20 MiB + 1 MiB for the other fields) is cut off
    // while it is read: the same answer in German, 413, nothing recorded.
    let huge = signed_form("riesig", MAX_EVIDENCE_BYTES + 2 * 1024 * 1024);
    let cut = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &huge)],
        )
        .await;
    assert_eq!(cut.status, 413, "{}", cut.body);
    assert!(cut.body.contains("Datei zu groß"), "{}", cut.body);
    assert!(cut.body.contains("Die Datei ist größer als 20 MiB."));
    assert!(consents(&h, JC).await.is_empty(), "nothing recorded");

    // Positive control: exactly 20 MiB is taken.
    let fits = signed_form("passt", MAX_EVIDENCE_BYTES);
    let page = c
        .post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &fits)],
        )
        .await;
    let id = recorded(&page);
    let all = consents(&h, JC).await;
    let expected: [u8; 32] = Sha256::digest(&fits).into();
    assert_eq!(
        entry(&all, &id)
            .consent
            .as_ref()
            .expect("record")
            .evidence_sha256,
        expected.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_then_replaced_and_the_api_refuses_a_message_under_the_withdrawn_one() {
    let h = start().await;
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(19);
    let csrf = csrf_of_form(&mut c).await;
    let file = signed_form("erste", 2048);
    let first = recorded(
        &c.post_multipart(
            "/einwilligung/neu",
            &lena_fields(&csrf, &dob),
            &[("evidence_file", "form.pdf", &file)],
        )
        .await,
    );

    // Replace it: the form comes prefilled and names the consent it replaces.
    let form = c.get(&format!("/einwilligung/{first}/ersetzen")).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form
        .body
        .contains(&format!("name=\"supersedes\" value=\"{first}\"")));
    assert!(form.body.contains("value=\"Petersen\""));
    assert!(form.body.contains(&format!("value=\"{JA}\" checked")));
    let mut fields = lena_fields(&csrf, &dob);
    fields.push(("recipients", JN));
    fields.push(("supersedes", &first));
    let second_file = signed_form("zweite", 2048);
    let second = recorded(
        &c.post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form2.pdf", &second_file)],
        )
        .await,
    );
    let all = consents(&h, JC).await;
    assert_eq!(
        entry(&all, &first).state,
        pb::ConsentState::ConsentSuperseded as i32
    );
    let new = entry(&all, &second);
    assert_eq!(new.state, pb::ConsentState::ConsentInForce as i32);
    assert_eq!(new.consent.as_ref().expect("record").supersedes, first);
    let old_page = c.get(&format!("/einwilligung/{first}")).await;
    assert!(old_page.body.contains("Stand: <strong>ersetzt</strong>"));
    assert!(
        !old_page.body.contains("/widerrufen\""),
        "no withdrawal of a replaced one"
    );

    // Positive control: a message under the new consent is accepted.
    let mut jc = h.client(JC).await;
    submit(
        &mut jc,
        JA,
        &second,
        "",
        certification_request(&lena(&dob), "Auszug gewünscht."),
    )
    .await
    .expect("accepted under a consent in force");

    // Withdraw it: without the token refused, with it recorded as the account.
    let no_token = c
        .post(
            &format!("/einwilligung/{second}/widerrufen"),
            &[("manner", "muendlich")],
        )
        .await;
    assert_eq!(no_token.status, 403);
    assert_eq!(
        entry(&consents(&h, JC).await, &second).state,
        pb::ConsentState::ConsentInForce as i32
    );
    let done = c
        .post(
            &format!("/einwilligung/{second}/widerrufen"),
            &[
                ("csrf", &csrf),
                ("manner", "muendlich"),
                ("recorded_by", "X"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let all = consents(&h, JC).await;
    let w = entry(&all, &second);
    assert_eq!(w.state, pb::ConsentState::ConsentWithdrawn as i32);
    let withdrawal = w.withdrawal.as_ref().expect("withdrawal");
    assert_eq!(withdrawal.recorded_by, "Herr Jensen");
    assert_eq!(withdrawal.manner, "mündlich");
    let page = c.get(&format!("/einwilligung/{second}")).await;
    assert!(page.body.contains("Stand: <strong>widerrufen</strong>"));

    let r = submit(
        &mut jc,
        JA,
        &second,
        "",
        certification_request(&lena(&dob), "Auszug gewünscht."),
    )
    .await;
    expect_refusal(
        "a message under the withdrawn consent",
        r,
        Code::FailedPrecondition,
        "consent-withdrawn",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_offices_consent_is_read_only_and_data_protection_gets_no_consent_pages() {
    let h = start().await;
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(19);
    let csrf = csrf_of_form(&mut c).await;
    let id = recorded(
        &c.post_multipart(
            "/einwilligung/neu",
            &lena_fields(&csrf, &dob),
            &[("evidence_file", "form.pdf", &signed_form("x", 1000))],
        )
        .await,
    );
    // Positive control: the recording office may withdraw and replace.
    let own = c.get(&format!("/einwilligung/{id}")).await;
    assert!(own
        .body
        .contains(&format!("action=\"/einwilligung/{id}/widerrufen\"")));
    assert!(!own.body.contains("Nur zur Ansicht"));

    let wanted = id.clone();
    let h_ref = &h;
    wait_until("the notice reached the Kreis Jugendamt", || {
        let wanted = wanted.clone();
        async move {
            let all = consents(h_ref, JA).await;
            match all
                .iter()
                .any(|e| e.consent.as_ref().map(|c| c.consent_id.as_str()) == Some(&wanted))
            {
                true => Ok(()),
                false => Err("not yet".to_string()),
            }
        }
    })
    .await;
    let mut ja = caseworker(&h, JA, "sievers", "Frau Sievers").await;
    let page = ja.get(&format!("/einwilligung/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Nur zur Ansicht"));
    assert!(page
        .body
        .contains("Nur sie kann die Einwilligung widerrufen oder ersetzen."));
    assert!(!page.body.contains("/widerrufen\""));
    assert!(!page.body.contains("/ersetzen\""));
    let ja_csrf = page.field("csrf").expect("token");
    let refused = ja
        .post(
            &format!("/einwilligung/{id}/widerrufen"),
            &[("csrf", &ja_csrf), ("manner", "schriftlich")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        ja.get(&format!("/einwilligung/{id}/ersetzen")).await.status,
        403
    );
    assert_eq!(
        entry(&consents(&h, JC).await, &id).state,
        pb::ConsentState::ConsentInForce as i32
    );

    h.add_console_account(JC, "datenschutz", "Frau Lund", AccountRole::DataProtection)
        .await;
    let mut dp = ConsoleClient::of(&h.fed, JC);
    assert_eq!(
        dp.sign_in("datenschutz", CONSOLE_PASSWORD).await.status,
        303
    );
    for path in [
        "/einwilligungen".to_string(),
        "/einwilligung/neu".to_string(),
        format!("/einwilligung/{id}"),
    ] {
        let p = dp.get(&path).await;
        assert_eq!(p.status, 403, "{path}");
        assert!(p.body.contains("Keine Berechtigung"), "{path}");
    }
}

/// Presses `key` on the element, as a keyboard user does (Enter on a button submits its
/// form; Space checks a checkbox).
async fn press(b: &Browser, locator: Locator<'_>, key: &str) {
    b.find(locator)
        .await
        .expect("the element")
        .send_keys(key)
        .await
        .expect("press a key");
}

const ENTER: &str = "\u{E007}";

/// Waits until the page's HTML contains `text` (a form's answer arrived); returns the HTML.
async fn wait_for_text(b: &Browser, text: &str) -> String {
    wait_until(text, || async {
        match b.source().await {
            Ok(html) if html.contains(text) => Ok(html),
            other => Err(format!("{:?}", other.map(|h| h.len()))),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_consent_pages_work_and_pass_axe() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let base = h.fed.console_url(JC).expect("console url");
    let b = Browser::start().await.expect("a browser");
    let shots = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    b.goto(&format!("{base}/anmelden"))
        .await
        .expect("login page");
    b.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys("jensen")
        .await
        .expect("type");
    b.find(Locator::Id("password"))
        .await
        .expect("password")
        .send_keys(CONSOLE_PASSWORD)
        .await
        .expect("type");
    b.find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("sign in");
    wait_until("signed in", || async {
        match b.current_url().await.map(|u| u.path().to_string()) {
            Ok(p) if p == "/posteingang" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    b.goto(&format!("{base}/einwilligungen"))
        .await
        .expect("list");
    assert!(b
        .source()
        .await
        .expect("html")
        .contains("Keine Einwilligungen."));
    assert_no_axe_violations(&b, "Einwilligungen (leer)").await;
    b.find(Locator::LinkText("Einwilligung erfassen"))
        .await
        .expect("link")
        .click()
        .await
        .expect("open the form");
    assert_no_axe_violations(&b, "Einwilligung erfassen (leer)").await;
    screenshot(&b, &shots.join("einwilligung-erfassen.png"))
        .await
        .expect("screenshot");

    // Submitted without a file and without a recipient: the errors at their fields.
    let fill = |id: &'static str, value: String| {
        let b = &b;
        async move {
            b.find(Locator::Id(id))
                .await
                .expect(id)
                .send_keys(&value)
                .await
                .expect("type");
        }
    };
    fill("given_name", "Lena".into()).await;
    fill("family_name", "Petersen".into()).await;
    let dob = birthday_years_ago(19);
    b.execute(
        "document.getElementById('date_of_birth').value = arguments[0];",
        vec![serde_json::json!(dob)],
    )
    .await
    .expect("set the date of birth");
    fill("evidence_reference", "EW-2026/0816".into()).await;
    let save = Locator::Css("form.console-form button[type=submit]");
    press(&b, save, ENTER).await;
    let html = wait_for_text(&b, "id=\"evidence_file-error\"").await;
    assert!(html
        .contains("Bitte wählen Sie die Datei des unterschriebenen Einwilligungsformulars aus."));
    assert_no_axe_violations(&b, "Einwilligung erfassen (Fehler)").await;

    // Fill in the rest, upload the form.
    let file = std::env::temp_dir().join(format!("kurzdraht-form-{}.pdf", std::process::id()));
    let bytes = signed_form("browser", 50_000);
    std::fs::write(&file, &bytes).expect("write the form");
    for css in [
        "#recipients".to_string(),
        "#purposes".to_string(),
        "#categories-3".to_string(),
    ] {
        press(&b, Locator::Css(&css), " ").await;
    }
    b.find(Locator::Id("evidence_file"))
        .await
        .expect("file input")
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    press(&b, save, ENTER).await;
    wait_for_text(&b, "Stand: <strong>").await;
    let url = b.current_url().await.expect("url");
    let id = url
        .path()
        .strip_prefix("/einwilligung/")
        .expect("on the consent's page")
        .to_string();
    let html = b.source().await.expect("html");
    let expected: [u8; 32] = Sha256::digest(&bytes).into();
    assert!(html.contains(&hex(&expected)), "the hash shown");
    assert!(html.contains("Stand: <strong>gültig</strong>"));
    assert_no_axe_violations(&b, "Einwilligung").await;
    screenshot(&b, &shots.join("einwilligung.png"))
        .await
        .expect("screenshot");
    let _ = std::fs::remove_file(&file);

    let href = b
        .find(Locator::LinkText("Einwilligung ersetzen"))
        .await
        .expect("replace link")
        .attr("href")
        .await
        .expect("href")
        .expect("a link");
    assert_eq!(href, format!("/einwilligung/{id}/ersetzen"));
    b.goto(&format!("{base}{href}"))
        .await
        .expect("the replace form");
    let html = b.source().await.expect("html");
    assert!(html.contains(&format!("name=\"supersedes\" value=\"{id}\"")));
    assert_no_axe_violations(&b, "Einwilligung ersetzen").await;

    b.goto(&format!("{base}/einwilligungen"))
        .await
        .expect("list");
    assert!(b.source().await.expect("html").contains("Lena Petersen"));
    assert_no_axe_violations(&b, "Einwilligungen").await;

    for name in ["einwilligung-erfassen.png", "einwilligung.png"] {
        let png = std::fs::read(shots.join(name)).expect("screenshot file");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
    }
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submission_service_pages_consents_newest_first_and_finds_one() {
    let h = start().await;
    let mut jc = h.client(JC).await;
    let dob = birthday_years_ago(19);
    let mut ids = Vec::new();
    for given in ["Anna", "Ben", "Cem"] {
        let s = subject(given, "Petersen", &dob);
        let r = jc
            .record_consent(consent_request(&s, &[JA], &[pb::Purpose::U25MoveOut]))
            .await
            .expect("recorded")
            .into_inner();
        ids.push(r.consent.expect("record").consent_id);
    }
    let service = h.node(JC).submission();
    let (first, next) = service.consents_newest_first("", 2).expect("page");
    let got: Vec<&str> = first
        .iter()
        .map(|e| e.consent.as_ref().expect("record").consent_id.as_str())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(next.as_deref(), Some(ids[1].as_str()));
    let (last, next) = service
        .consents_newest_first(&ids[1], 2)
        .expect("next page");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].consent.as_ref().expect("record").consent_id, ids[0]);
    assert_eq!(next, None);
    assert_eq!(
        last[0].state,
        pb::ConsentState::ConsentInForce as i32,
        "with its state"
    );

    let one = service.consent(&ids[1]).expect("read").expect("held");
    assert_eq!(
        one.consent
            .expect("record")
            .subject
            .expect("subject")
            .given_name,
        "Ben"
    );
    // An id nobody recorded: none; not an id: refused, naming the field.
    let unknown = kurzdraht_envelope::ids::new_id();
    assert!(service.consent(&unknown).expect("read").is_none());
    let e = service.consent("../x").expect_err("not an id");
    assert_eq!(e.reason_code(), "invalid-argument");
    assert!(e.to_string().contains("consent_id"), "{e}");
    let e = service
        .consents_newest_first("x", 2)
        .expect_err("not an id");
    assert!(e.to_string().contains("before"), "{e}");
    let e = service
        .consents_newest_first("", 1001)
        .expect_err("too many");
    assert!(e.to_string().contains("limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_consent_may_be_replaced_but_not_withdrawn() {
    let (h, clocks) = start_on_manual_clocks().await;
    let clock = clocks[JC].clone();
    let mut c = caseworker(&h, JC, "jensen", "Herr Jensen").await;
    let dob = birthday_years_ago(19);
    let csrf = csrf_of_form(&mut c).await;
    let tomorrow = day_after(&today());
    let mut fields = lena_fields(&csrf, &dob);
    fields.push(("valid_until", &tomorrow));
    let id = recorded(
        &c.post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "form.pdf", &signed_form("kurz", 1000))],
        )
        .await,
    );
    // Positive control: in force, it may be withdrawn and replaced.
    let page = c.get(&format!("/einwilligung/{id}")).await;
    assert!(page.body.contains("Stand: <strong>gültig</strong>"));
    assert!(page.body.contains("/widerrufen\""));
    assert!(page.body.contains("/ersetzen\""));

    clock.advance(3 * 24 * 3600 * 1000);
    let mut c = ConsoleClient::of(&h.fed, JC);
    assert_eq!(c.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    let page = c.get(&format!("/einwilligung/{id}")).await;
    assert!(
        page.body.contains("Stand: <strong>abgelaufen</strong>"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("/widerrufen\""),
        "no withdrawal of an expired one"
    );
    assert!(page
        .body
        .contains(&format!("href=\"/einwilligung/{id}/ersetzen\"")));
    let list = c.get("/einwilligungen").await;
    assert!(list
        .body
        .contains("<td class=\"kern-table__cell\">abgelaufen</td>"));

    let csrf = csrf_of_form(&mut c).await;
    let mut fields = lena_fields(&csrf, &dob);
    fields.push(("supersedes", &id));
    let new = recorded(
        &c.post_multipart(
            "/einwilligung/neu",
            &fields,
            &[("evidence_file", "neu.pdf", &signed_form("neu", 1000))],
        )
        .await,
    );
    let all = consents(&h, JC).await;
    assert_eq!(
        entry(&all, &new).state,
        pb::ConsentState::ConsentInForce as i32
    );
    assert_eq!(
        entry(&all, &id).state,
        pb::ConsentState::ConsentSuperseded as i32
    );
}
