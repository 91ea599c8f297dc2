//! The console's security, checked over real HTTPS against the three real nodes: sessions in
//! `__Host-` cookies with Secure, HttpOnly and SameSite=Strict; CSRF tokens on every form;
//! lockout of an account and throttling of an address after failed logins; the idle timeout
//! on the node's clock; a disabled account signed out at once; markup in a name shown as
//! text; one office's account refused at another's console; the security headers. Each
//! refusal beside its positive control.

use kurzdraht_ledger::AccountRole;
use kurzdraht_node::clock::{Clock, ManualClock};
use kurzdraht_proto::v1 as pb;
use kurzdraht_testkit::console_client::{ConsoleClient, Page};
use kurzdraht_testkit::*;
use std::sync::Arc;

const MINUTE: i64 = 60_000;

fn session_cookie(agency: &str) -> String {
    format!("__Host-kurzdraht-{agency}")
}

fn assert_signed_out(page: &Page, what: &str) {
    assert_eq!(page.status, 303, "{what}: {}", page.body);
    assert_eq!(page.location(), Some("/anmelden"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_a_strict_host_cookie_and_sign_out_needs_the_forms_token() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let mut c = ConsoleClient::of(&h.fed, JC);

    // Not signed in: every page sends to the login.
    assert_signed_out(&c.get("/posteingang").await, "before sign-in");

    // The login form sets its own token cookie; without the form's token: refused.
    let form = c.get("/anmelden").await;
    assert_eq!(form.status, 200);
    assert!(form
        .body
        .contains("<h1 class=\"kern-heading-large\">Anmelden</h1>"));
    let no_token = c
        .post(
            "/anmelden",
            &[("name", "jensen"), ("password", CONSOLE_PASSWORD)],
        )
        .await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(no_token.body.contains("Das Formular ist nicht mehr gültig"));
    assert!(c.cookie(&session_cookie(JC)).is_none());

    // Positive control: the form's token signs in.
    let signed_in = c.sign_in("jensen", CONSOLE_PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location(), Some("/posteingang"));
    let set = signed_in
        .set_cookies()
        .into_iter()
        .find(|s| s.starts_with(&format!("{}=", session_cookie(JC))))
        .expect("a session cookie");
    let token = c.cookie(&session_cookie(JC)).expect("held").to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(
        set,
        format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            session_cookie(JC)
        )
    );
    let inbox = c.get("/posteingang").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox
        .body
        .contains("Angemeldet: Herr Jensen (Sachbearbeitung)"));
    let csrf = inbox.field("csrf").expect("the sign-out form's token");

    // Sign-out without the token, with another, or from another site: refused, still in.
    for (fields, site) in [
        (vec![], None),
        (vec![("csrf", "0".repeat(64))], None),
        (vec![("csrf", csrf.clone())], Some("cross-site")),
    ] {
        c.fetch_site = site.map(str::to_string);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = c.post("/abmelden", &fields).await;
        assert_eq!(refused.status, 403, "{fields:?} {site:?}");
        c.fetch_site = None;
        assert_eq!(c.get("/posteingang").await.status, 200, "still signed in");
    }
    c.fetch_site = Some("same-origin".into());
    let out = c.post("/abmelden", &[("csrf", &csrf)]).await;
    assert_signed_out(&out, "sign-out");
    // The old token is dead even when presented again.
    c.set_cookie(&session_cookie(JC), &token);
    assert_signed_out(&c.get("/posteingang").await, "after sign-out");
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_locked_after_five_wrong_passwords_for_fifteen_minutes() {
    let (h, clocks) = start_on_manual_clocks().await;
    let clock = clocks[JC].clone();
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let mut c = ConsoleClient::of(&h.fed, JC);
    // Positive control: the right password works, and resets nothing that matters.
    assert_eq!(c.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    c.clear_cookies();
    for i in 1..=4 {
        let wrong = c.sign_in("jensen", "falsch-falsch-falsch").await;
        assert_eq!(wrong.status, 401, "attempt {i}");
        assert!(wrong
            .body
            .contains("Benutzername oder Passwort ist falsch."));
        assert!(
            wrong.body.contains("aria-invalid=\"true\""),
            "the error is tied to the fields"
        );
    }
    // The fifth failure locks the account, and says so.
    let fifth = c.sign_in("jensen", "falsch-falsch-falsch").await;
    assert_eq!(fifth.status, 429);
    assert!(fifth.body.contains("vorübergehend gesperrt"));
    let locked = c.sign_in("jensen", CONSOLE_PASSWORD).await;
    assert_eq!(locked.status, 429, "the right password while locked");
    assert!(
        locked.body.contains("vorübergehend gesperrt"),
        "{}",
        locked.body
    );
    assert!(c.cookie(&session_cookie(JC)).is_none());
    clock.advance(14 * MINUTE);
    assert_eq!(
        c.sign_in("jensen", CONSOLE_PASSWORD).await.status,
        429,
        "at +14 min"
    );
    clock.advance(MINUTE);
    assert_eq!(
        c.sign_in("jensen", CONSOLE_PASSWORD).await.status,
        303,
        "at +15 min"
    );
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_throttled_after_twenty_failed_logins() {
    let (h, clocks) = start_on_manual_clocks().await;
    let clock = clocks[JC].clone();
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let mut c = ConsoleClient::of(&h.fed, JC);
    // Twenty unknown names (no account is locked by this).
    for i in 0..20 {
        let name = format!("unbekannt{i}");
        assert_eq!(
            c.sign_in(&name, "falsch-falsch-falsch").await.status,
            401,
            "{i}"
        );
    }
    let throttled = c.sign_in("jensen", CONSOLE_PASSWORD).await;
    assert_eq!(throttled.status, 429);
    assert!(throttled.body.contains("Zu viele Fehlversuche"));
    assert_eq!(
        throttled
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("600")
    );
    clock.advance(10 * MINUTE);
    assert_eq!(
        c.sign_in("jensen", CONSOLE_PASSWORD).await.status,
        303,
        "window over"
    );
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_and_a_disabled_account_is_signed_out_at_once() {
    let (h, clocks) = start_on_manual_clocks().await;
    let clock: Arc<ManualClock> = clocks[JC].clone();
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    h.add_console_account(JC, "petersen", "Frau Petersen", AccountRole::Caseworker)
        .await;
    let mut a = ConsoleClient::of(&h.fed, JC);
    assert_eq!(a.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    clock.advance(14 * MINUTE);
    assert_eq!(a.get("/posteingang").await.status, 200, "used after 14 min");
    clock.advance(14 * MINUTE);
    assert_eq!(
        a.get("/posteingang").await.status,
        200,
        "again 14 min later"
    );
    clock.advance(15 * MINUTE);
    assert_signed_out(&a.get("/posteingang").await, "idle 15 min");

    let mut b = ConsoleClient::of(&h.fed, JC);
    assert_eq!(b.sign_in("petersen", CONSOLE_PASSWORD).await.status, 303);
    assert_eq!(b.get("/posteingang").await.status, 200);
    h.fed
        .node(JC)
        .unwrap()
        .accounts()
        .disable("test", "petersen")
        .await
        .unwrap();
    assert_signed_out(&b.get("/posteingang").await, "disabled");
    assert_eq!(b.sign_in("petersen", CONSOLE_PASSWORD).await.status, 401);
    let _ = clock.now_ms();
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_offices_account_and_session_are_nothing_at_another_office() {
    let h = start().await;
    h.add_console_account(JC, "jensen", "Herr Jensen", AccountRole::Caseworker)
        .await;
    let mut at_jc = ConsoleClient::of(&h.fed, JC);
    assert_eq!(at_jc.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    let token = at_jc.cookie(&session_cookie(JC)).unwrap().to_string();

    let mut at_ja = ConsoleClient::of(&h.fed, JA);
    let refused = at_ja.sign_in("jensen", CONSOLE_PASSWORD).await;
    assert_eq!(
        refused.status, 401,
        "the Jobcenter's account at the Jugendamt"
    );
    // The Jobcenter's session token under either cookie name: not a session there.
    for name in [session_cookie(JC), session_cookie(JA)] {
        at_ja.set_cookie(&name, &token);
        assert_signed_out(&at_ja.get("/posteingang").await, &name);
    }
    // Positive control: the Jugendamt's own account.
    h.add_console_account(
        JA,
        "jensen",
        "Frau Jensen (Jugendamt)",
        AccountRole::Caseworker,
    )
    .await;
    assert_eq!(at_ja.sign_in("jensen", CONSOLE_PASSWORD).await.status, 303);
    assert!(at_ja
        .get("/posteingang")
        .await
        .body
        .contains("Frau Jensen (Jugendamt)"));
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_name_is_shown_as_text_and_every_answer_carries_the_security_headers() {
    let h = start().await;
    h.add_console_account(
        JC,
        "mallory",
        "<script>alert(1)</script> Müller",
        AccountRole::Caseworker,
    )
    .await;
    let mut c = ConsoleClient::of(&h.fed, JC);
    let login = c.get("/anmelden").await;
    assert_eq!(c.sign_in("mallory", CONSOLE_PASSWORD).await.status, 303);
    let inbox = c.get("/posteingang").await;
    assert!(
        inbox
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62; Müller"),
        "{}",
        inbox.body
    );
    assert!(!inbox.body.contains("<script>alert(1)"));
    let css = c.get("/assets/kern/kern.min.css").await;
    assert_eq!(css.status, 200);
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    for (what, page) in [("login", &login), ("inbox", &inbox), ("asset", &css)] {
        let header = |n: &str| page.headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(header("content-security-policy"), Some(csp), "{what}");
        assert_eq!(header("x-frame-options"), Some("DENY"), "{what}");
        assert_eq!(header("x-content-type-options"), Some("nosniff"), "{what}");
        assert_eq!(header("referrer-policy"), Some("no-referrer"), "{what}");
    }
    assert_eq!(
        inbox
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "pages are not cached"
    );
    // Nothing is loaded from another origin, and no script is inline.
    for page in [&login, &inbox] {
        for attr in ["src=\"", "href=\""] {
            for (i, _) in page.body.match_indices(attr) {
                let v = &page.body[i + attr.len()..];
                assert!(
                    v.starts_with('/') || v.starts_with('#'),
                    "{attr}{}",
                    &v[..40.min(v.len())]
                );
            }
        }
        assert!(!page.body.contains("<script>"), "no inline script");
        assert!(!page.body.contains("style=\""), "no inline style");
    }
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_lists_a_message_and_opening_it_is_a_read_by_the_account() {
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
    let id = submit_ok(
        &mut jc,
        JA,
        &consent,
        certification_request(&lena, "Stellungnahme"),
    )
    .await;
    wait_for_inbox_len(&ja, 2).await;

    let mut c = ConsoleClient::of(&h.fed, JA);
    assert_eq!(c.sign_in("schmidt", CONSOLE_PASSWORD).await.status, 303);
    let inbox = c.get("/posteingang").await;
    assert_eq!(inbox.status, 200);
    assert!(
        inbox.body.contains(&format!("/nachricht/{id}")),
        "{}",
        inbox.body
    );
    assert!(inbox
        .body
        .contains("Anfrage zur Bescheinigung (Auszug U25)"));
    assert!(inbox.body.contains("Lena Hansen"));
    assert!(inbox.body.contains("Jobcenter Kreis Segeberg"));
    let only_decisions = c.get("/posteingang?art=entscheidung").await;
    assert!(!only_decisions.body.contains(&id), "filtered out");
    assert!(c.get("/posteingang?art=anfrage").await.body.contains(&id));
    assert_eq!(c.get("/posteingang?art=quatsch").await.status, 400);

    let page = c.get(&format!("/nachricht/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Stellungnahme"));
    assert!(page.body.contains("12.04.2005"));
    let csrf = page.field("csrf").unwrap();
    let none = c.post(&format!("/nachricht/{id}/erledigt"), &[]).await;
    assert_eq!(none.status, 403, "no token");
    let done = c
        .post(&format!("/nachricht/{id}/erledigt"), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, 303);
    assert!(c
        .get(&format!("/nachricht/{id}"))
        .await
        .body
        .contains("erledigt"));
    assert_eq!(c.get("/nachricht/kein-id").await.status, 422);

    // The audit chain names the account for the read and the acknowledgement.
    let node = h.fed.node(JA).unwrap();
    let entries = node.ledger().audit_entries().unwrap();
    let by_console: Vec<_> = entries
        .iter()
        .filter(|e| e.detail.contains("client console:schmidt"))
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(
        by_console,
        ["inbox.read", "inbox.acknowledged"],
        "{entries:?}"
    );
    h.fed.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_sees_only_its_pages() {
    let h = start().await;
    h.add_console_account(JA, "schmidt", "Frau Schmidt", AccountRole::Caseworker)
        .await;
    h.add_console_account(JA, "admin", "Administration", AccountRole::Admin)
        .await;
    let mut caseworker = ConsoleClient::of(&h.fed, JA);
    let landed = caseworker.sign_in("schmidt", CONSOLE_PASSWORD).await;
    assert_eq!(landed.location(), Some("/posteingang"));
    assert_eq!(caseworker.get("/posteingang").await.status, 200);

    let mut admin = ConsoleClient::of(&h.fed, JA);
    let landed = admin.sign_in("admin", CONSOLE_PASSWORD).await;
    assert_eq!(
        landed.location(),
        Some("/konto"),
        "the administration has no case pages"
    );
    let account = admin.get("/konto").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("kurzdraht user"));
    let refused = admin.get("/posteingang").await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("Keine Berechtigung"));
    assert_eq!(
        refused
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8"),
        "an error page is a page"
    );
    assert!(
        !refused.body.contains("href=\"/posteingang\""),
        "not in its navigation"
    );
    h.fed.shutdown().await.unwrap();
}
