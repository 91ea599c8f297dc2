//! The real-browser harness the console's tests stand on (`kurzdraht_testkit::browser`),
//! checked against small pages served here (axum over HTTP, and once over HTTPS with a
//! self-signed certificate) with the console's vendored KERN UX assets and the console's
//! strict Content-Security-Policy: axe-core finds nothing on a labelled KERN form and finds
//! the missing label on an unlabelled one; KERN's stylesheet and Fira Sans apply; the browser
//! asks for German; umlauts come back; a screenshot is a PNG of the fixed window size; and a
//! closed browser's or a panicking test's Chromium is gone.

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kurzdraht_testkit::browser::{
    assert_no_axe_violations, assert_no_csp_violations, axe, console_messages, screenshot, Browser,
    ConsoleMessage, ACCEPT_LANGUAGE, WINDOW,
};
use kurzdraht_testkit::wait_until;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// The console's Content-Security-Policy (no inline script, nothing from other origins).
const CSP: &str = "default-src 'none'; style-src 'self'; font-src 'self'; img-src 'self'; \
                   script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TITLE: &str = "Einwilligung für Jugendämter";

/// One request's path and its `Accept-Language`.
type Request = (String, Option<String>);

/// What the test server saw: each request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn record(&self, uri: &Uri, headers: &HeaderMap) {
        let lang = headers
            .get(header::ACCEPT_LANGUAGE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.0
            .lock()
            .expect("lock")
            .push((uri.path().to_string(), lang));
    }

    fn requests(&self) -> Vec<Request> {
        self.0.lock().expect("lock").clone()
    }
}

fn page(title: &str, main: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="de">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/kern/kern.min.css">
<link rel="stylesheet" href="/kern/fonts/fira-sans.css">
</head>
<body>
<main class="kern-container">
<h1 class="kern-heading-large">{title}</h1>
{main}
</main>
</body>
</html>
"#
    )
}

/// A KERN form, every field labelled.
fn kern_form() -> String {
    page(
        TITLE,
        r#"<p class="kern-body">Bitte erfassen Sie die Einwilligung der jungen Person.</p>
<form method="post" action="/einwilligung">
<div class="kern-form-input">
<label class="kern-label" for="vorname">Vorname</label>
<input class="kern-form-input__input" id="vorname" name="vorname" type="text" autocomplete="given-name">
</div>
<div class="kern-form-input">
<label class="kern-label" for="nachname">Nachname</label>
<input class="kern-form-input__input" id="nachname" name="nachname" type="text" autocomplete="family-name">
</div>
<div class="kern-form-input">
<label class="kern-label" for="geburtsdatum">Geburtsdatum</label>
<input class="kern-form-input__input" id="geburtsdatum" name="geburtsdatum" type="date">
</div>
<button class="kern-btn kern-btn--primary" type="submit"><span class="kern-label">Einwilligung speichern</span></button>
</form>"#,
    )
}

/// A KERN alert with its icon (a `data:` SVG mask in kern.min.css).
fn kern_alert() -> String {
    page(
        "Hinweis",
        r#"<div class="kern-alert kern-alert--info" role="status">
<div class="kern-alert__header">
<span class="kern-icon kern-icon--info" aria-hidden="true"></span>
<span class="kern-title">Die Einwilligung ist gespeichert.</span>
</div>
</div>"#,
    )
}

/// The positive control: an input without a label, and an inline script the CSP must block.
fn unlabelled() -> String {
    page(
        "Ohne Beschriftung",
        r#"<form method="post" action="/einwilligung">
<input class="kern-form-input__input" id="ohne-label" name="vorname" type="text">
</form>
<script>document.documentElement.dataset.inline = "lief";</script>"#,
    )
}

fn with_headers(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn serve_page(
    State(seen): State<Seen>,
    UrlPath(name): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    seen.record(&uri, &headers);
    match name.as_str() {
        "kern-form" => with_headers("text/html; charset=utf-8", kern_form()),
        "unlabelled" => with_headers("text/html; charset=utf-8", unlabelled()),
        "kern-alert" => with_headers("text/html; charset=utf-8", kern_alert()),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The console's vendored KERN files, as the console will serve them.
async fn serve_kern(
    State(seen): State<Seen>,
    UrlPath(path): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    seen.record(&uri, &headers);
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = kurzdraht_testkit::workspace()
        .join("crates/console/assets/kern")
        .join(&path);
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("css") => "text/css; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match std::fs::read(&file) {
        Ok(bytes) => with_headers(content_type, bytes),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn site(seen: Seen) -> Router {
    Router::new()
        .route("/page/{name}", get(serve_page))
        .route("/kern/{*path}", get(serve_kern))
        .with_state(seen)
}

/// The test site over plain HTTP on a loopback port bound before anything connects.
async fn start_site() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test site");
    let addr = listener.local_addr().expect("its address");
    let app = site(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// TLS over a bound listener for `axum::serve`: a failed handshake is dropped, the next
/// connection taken.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The test site over HTTPS with a self-signed certificate for 127.0.0.1 that no browser
/// trusts (as the console's certificate from the node's own CA).
async fn start_tls_site() -> (SocketAddr, Seen) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("the server certificate");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the TLS test site");
    let addr = tcp.local_addr().expect("its address");
    let seen = Seen::default();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let app = site(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn start_browser() -> Browser {
    Browser::start().await.expect("start a headless Chromium")
}

async fn eval(browser: &Browser, script: &str) -> serde_json::Value {
    browser
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_kern_form_passes_axe_in_german_with_kern_applied() {
    let (addr, seen) = start_site().await;
    let browser = start_browser().await;
    browser
        .goto(&format!("http://{addr}/page/kern-form"))
        .await
        .expect("open the form");

    // The umlauts come back as sent (title and heading).
    assert_eq!(browser.title().await.expect("title"), TITLE);
    let h1 = eval(&browser, "return document.querySelector('h1').textContent").await;
    assert_eq!(h1, TITLE);

    assert_no_axe_violations(&browser, "the labelled KERN form").await;
    assert_no_csp_violations(&browser, "the labelled KERN form").await;

    // KERN's stylesheet applied and Fira Sans was loaded from the vendored files.
    let font = eval(
        &browser,
        "return getComputedStyle(document.querySelector('label')).fontFamily",
    )
    .await;
    assert!(
        font.as_str()
            .is_some_and(|f| f.starts_with("\"Fira Sans\"")),
        "the label's font-family: {font}"
    );
    let loaded = eval(
        &browser,
        "return document.fonts.ready.then(() => [...document.fonts]\
         .filter(f => f.family.replaceAll('\"', '') === 'Fira Sans' && f.status === 'loaded')\
         .map(f => f.weight + ' ' + f.style))",
    )
    .await;
    let loaded: Vec<String> = serde_json::from_value(loaded).expect("a list of faces");
    assert!(
        loaded.iter().any(|f| f == "400 normal"),
        "Fira Sans faces loaded: {loaded:?}"
    );
    let requests = seen.requests();
    assert!(
        requests
            .iter()
            .any(|(path, _)| path == "/kern/fonts/fira-sans/FiraSans-Regular.woff2"),
        "the regular face came from the vendored file: {requests:?}"
    );

    // The browser asks for German first.
    let (_, lang) = requests
        .iter()
        .find(|(path, _)| path == "/page/kern-form")
        .expect("the page was requested");
    let lang = lang.as_deref().expect("an Accept-Language header");
    assert!(
        lang.starts_with("de-DE"),
        "Accept-Language {lang:?}, wanted {ACCEPT_LANGUAGE}"
    );

    // A screenshot: a PNG of the fixed window size.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("shots/kern-form.png");
    screenshot(&browser, &path).await.expect("screenshot");
    let png = std::fs::read(&path).expect("the PNG");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
    assert_eq!((width, height), WINDOW, "the screenshot's size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlabelled_input_is_a_critical_label_violation_under_the_csp() {
    let (addr, _seen) = start_site().await;
    let browser = start_browser().await;
    browser
        .goto(&format!("http://{addr}/page/unlabelled"))
        .await
        .expect("open the page");
    // The CSP is in force: the page's own inline script did not run …
    let inline = eval(
        &browser,
        "return document.documentElement.dataset.inline || null",
    )
    .await;
    assert_eq!(inline, serde_json::Value::Null, "the inline script ran");
    // … and axe, injected through WebDriver, still runs and finds the missing label.
    let violations = axe(&browser).await.expect("axe runs under the CSP");
    let label = violations
        .iter()
        .find(|v| v.id == "label")
        .unwrap_or_else(|| panic!("no `label` violation among {violations:#?}"));
    assert_eq!(label.impact.as_deref(), Some("critical"));
    assert_eq!(label.selectors, ["#ohne-label"]);
    assert!(!label.help.is_empty() && label.help_url.starts_with("https://"));
    // The refusal of the inline script is in the console.
    let refused = csp_refusals(&browser, "the inline script").await;
    assert!(
        refused
            .iter()
            .any(|m| m.message.contains("inline script") && m.message.contains("script-src")),
        "{refused:#?}"
    );
}

/// Waits until the console holds a refusal by the CSP; returns the refusals.
async fn csp_refusals(browser: &Browser, what: &str) -> Vec<ConsoleMessage> {
    // The log is drained by each read: keep what was read.
    let seen: Arc<Mutex<Vec<ConsoleMessage>>> = Arc::default();
    wait_until(&format!("the CSP's refusal of {what} is logged"), || {
        let seen = seen.clone();
        async move {
            let new = console_messages(browser).await.map_err(|e| e.to_string())?;
            let mut seen = seen.lock().expect("lock");
            seen.extend(new);
            let refused: Vec<ConsoleMessage> = seen
                .iter()
                .filter(|m| m.is_csp_violation())
                .cloned()
                .collect();
            if refused.is_empty() {
                Err(format!("console: {seen:?}"))
            } else {
                Ok(refused)
            }
        }
    })
    .await
}

/// KERN draws its icons as `data:` SVG masks, which `img-src 'self'` refuses (the icon is
/// then not drawn): the console's CSP needs `img-src 'self' data:` where it shows icons.
/// This test pins that down, and shows that [`assert_no_csp_violations`] catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kern_icons_are_data_urls_which_img_src_self_refuses() {
    let (addr, _seen) = start_site().await;
    let browser = start_browser().await;
    browser
        .goto(&format!("http://{addr}/page/kern-alert"))
        .await
        .expect("open the alert");
    let refused = csp_refusals(&browser, "the icon").await;
    assert!(
        refused
            .iter()
            .any(|m| m.message.contains("'data:image/svg+xml")
                && m.message.contains("\"img-src 'self'\"")),
        "{refused:#?}"
    );
    // The assertion the console's tests use fails on such a page (a page reloaded: the
    // refusal above was read already).
    browser.refresh().await.expect("reload");
    let check = tokio::spawn(async move {
        assert_no_csp_violations(&browser, "the KERN alert").await;
    });
    let panic = check.await.expect_err("the check fails").into_panic();
    let text = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        text.starts_with("the KERN alert: the Content-Security-Policy refused 1 thing(s):")
            && text.contains("img-src"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_https_site_is_accepted() {
    let (addr, seen) = start_tls_site().await;
    let browser = start_browser().await;
    browser
        .goto(&format!("https://{addr}/page/kern-form"))
        .await
        .expect("open the form over HTTPS");
    assert_eq!(browser.title().await.expect("title"), TITLE);
    let protocol = eval(&browser, "return location.protocol").await;
    assert_eq!(protocol, "https:");
    assert!(
        seen.requests().iter().any(|(p, _)| p == "/page/kern-form"),
        "the TLS site served the page"
    );
    assert_no_axe_violations(&browser, "the labelled KERN form over HTTPS").await;
}

/// The live processes whose command line names `needle` (zombies have none).
fn processes_naming(needle: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(needle) {
            continue;
        }
        // /proc/<pid>/stat: "pid (comm) state ppid pgrp …"
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(pgrp) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse().ok())
        else {
            continue;
        };
        found.push((pid, pgrp));
    }
    found
}

/// Chromium's processes of `browser` (their command lines name its profile directory): there
/// are some, and all are in the browser's process group.
fn chromium_of(browser: &Browser) -> (String, Vec<(u32, u32)>) {
    let profile = browser.user_data_dir().display().to_string();
    let procs = processes_naming(&profile);
    assert!(!procs.is_empty(), "no Chromium process names {profile}");
    for (pid, pgrp) in &procs {
        assert_eq!(
            *pgrp,
            browser.process_group(),
            "Chromium process {pid} left the process group"
        );
    }
    (profile, procs)
}

async fn wait_until_gone(profile: &str) {
    wait_until(&format!("no process names {profile}"), || async move {
        match processes_naming(profile) {
            procs if procs.is_empty() => Ok(()),
            procs => Err(format!("{procs:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_or_panicking_tests_browser_leaves_no_chromium_behind() {
    let (addr, _seen) = start_site().await;

    let browser = start_browser().await;
    browser
        .goto(&format!("http://{addr}/page/kern-form"))
        .await
        .expect("open the form");
    let (profile, procs) = chromium_of(&browser);
    assert!(procs.len() > 1, "Chromium and its helpers: {procs:?}");
    browser.close().await.expect("end the session");
    wait_until_gone(&profile).await;

    // A test that panics while its browser is open.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let browser = start_browser().await;
        browser
            .goto(&format!("http://{addr}/page/kern-form"))
            .await
            .expect("open the form");
        let _ = tx.send(chromium_of(&browser).0);
        panic!("a console test fails with its browser open");
    });
    assert!(test.await.expect_err("the test panicked").is_panic());
    let profile: String = rx.await.expect("the profile directory");
    wait_until_gone(&profile).await;
    assert!(
        !PathBuf::from(&profile).exists(),
        "the profile directory {profile} is removed"
    );
}

/// The WebDriver client stays light: its TLS features would pull aws-lc (rustls-tls) or
/// OpenSSL (the default native-tls); neither is anywhere in the build.
#[test]
fn the_browser_harness_brings_no_aws_lc_and_no_openssl() {
    let lock = std::fs::read_to_string(kurzdraht_testkit::workspace().join("Cargo.lock"))
        .expect("Cargo.lock");
    let packages: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .collect();
    assert!(
        packages.contains(&"fantoccini"),
        "fantoccini is in the build"
    );
    for banned in [
        "aws-lc-rs",
        "aws-lc-sys",
        "openssl",
        "openssl-sys",
        "native-tls",
    ] {
        assert!(
            !packages.contains(&banned),
            "{banned} is in Cargo.lock (cargo tree -i {banned})"
        );
    }
}
