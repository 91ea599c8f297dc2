//! Signing in and out. The login form carries a CSRF token that a `__Host-` cookie set with
//! the form must match (there is no session yet). A failed login counts against the client's
//! address ([`crate::login_throttle`]) and, in the node, against the account (locked after
//! repeated failures; audited there without the typed name of an unknown account).

use super::html;
use crate::app::Console;
use crate::signed_in::{cookie, fetch_site, home_of, SignedIn};
use crate::view::Frame;
use crate::{csrf, https::ClientAddr, session, ConsoleError};
use askama::Template;
use axum::extract::{Form, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    frame: Frame,
    login_token: String,
    name: String,
    problem: Option<String>,
}

/// The longest user name and password the form takes (the node's limits).
const MAX_NAME: usize = 64;
const MAX_PASSWORD: usize = 256;

fn login_page(
    console: &Console,
    name: &str,
    problem: Option<String>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let token = session::random_token();
    let page = LoginPage {
        frame: Frame::anonymous(&console.office()),
        login_token: token.clone(),
        name: name.chars().take(MAX_NAME).collect(),
        problem,
    };
    let mut response = (status, html(page)?).into_response();
    set_cookie(
        response.headers_mut(),
        &session::set_cookie(&console.login_cookie, &token),
    );
    Ok(response)
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// `GET /anmelden`.
pub async fn form(
    State(console): State<Console>,
    signed_in: Option<SignedIn>,
) -> Result<Response, ConsoleError> {
    if let Some(s) = signed_in {
        return Ok(Redirect::to(home_of(s.account.role)).into_response());
    }
    login_page(&console, "", None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// `POST /anmelden`.
pub async fn submit(
    State(console): State<Console>,
    client: axum::Extension<ClientAddr>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    let expected = cookie(&parts, &console.login_cookie).unwrap_or_default();
    csrf::check(
        &expected,
        form.csrf.as_deref(),
        fetch_site(&parts).as_deref(),
    )?;
    let ip = client.0 .0.ip();
    let now = console.now_ms();
    console
        .throttle
        .admit(ip, now)
        .map_err(|retry_after_secs| ConsoleError::Throttled { retry_after_secs })?;
    let name = form.name.trim();
    if name.is_empty() || form.password.is_empty() {
        return login_page(
            &console,
            name,
            Some("Bitte geben Sie Benutzername und Passwort ein.".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    if name.chars().count() > MAX_NAME || form.password.chars().count() > MAX_PASSWORD {
        console.throttle.failed(ip, now);
        return login_page(
            &console,
            "",
            Some("Benutzername oder Passwort ist falsch.".into()),
            StatusCode::UNAUTHORIZED,
        );
    }
    match console
        .node
        .accounts()
        .authenticate(name, &form.password)
        .await
    {
        Ok(account) => {
            let (token, _) = console.sessions.start(&account.name, console.now_ms());
            tracing::info!(account = %account.name, "console: signed in");
            let mut response = Redirect::to(home_of(account.role)).into_response();
            set_cookie(
                response.headers_mut(),
                &session::set_cookie(&console.cookie, &token),
            );
            set_cookie(
                response.headers_mut(),
                &session::clear_cookie(&console.login_cookie),
            );
            Ok(response)
        }
        Err(e) if e.reason_code() == "unauthenticated" => {
            console.throttle.failed(ip, now);
            login_page(
                &console,
                name,
                Some("Benutzername oder Passwort ist falsch.".into()),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(e) if e.reason_code() == "account-locked" => {
            console.throttle.failed(ip, now);
            login_page(
                &console,
                name,
                Some(format!(
                    "Nach mehreren falschen Passwörtern ist dieses Konto vorübergehend gesperrt. {}",
                    crate::refusal::explain("account-locked").next
                )),
                StatusCode::TOO_MANY_REQUESTS,
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: Option<String>,
}

/// `POST /abmelden`.
pub async fn sign_out(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(form): Form<SignOutForm>,
) -> Result<Response, ConsoleError> {
    signed_in.check_form(form.csrf.as_deref())?;
    console.sessions.end(&signed_in.token);
    tracing::info!(account = %signed_in.account.name, "console: signed out");
    let mut response = Redirect::to("/anmelden").into_response();
    set_cookie(
        response.headers_mut(),
        &session::clear_cookie(&console.cookie),
    );
    Ok(response)
}
