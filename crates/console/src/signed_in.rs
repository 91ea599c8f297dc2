//! [`SignedIn`]: the extractor of a page only a signed-in account reaches. It takes the
//! session from its cookie, marks it used, and looks the account up in the node again on
//! every request — a disabled account is signed out at once, a changed role counts at once.
//! What the account may do is its role's ([`SignedIn::require`]).

use crate::app::Console;
use crate::view::{Frame, FrameAccount, NavItem};
use crate::{csrf, session, ConsoleError};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use kurzdraht_ledger::AccountRole;
use kurzdraht_node::service::accounts::AccountView;

/// A request of a signed-in account.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub account: AccountView,
    pub session: session::Session,
    /// The session's token (the cookie's value).
    pub token: String,
    /// The request's `Sec-Fetch-Site`, for the CSRF check of a form.
    fetch_site: Option<String>,
}

/// The German name of a role.
pub fn role_label(role: AccountRole) -> &'static str {
    match role {
        AccountRole::Caseworker => "Sachbearbeitung",
        AccountRole::DataProtection => "Datenschutz",
        AccountRole::Admin => "Administration",
    }
}

impl SignedIn {
    /// The client name under which the node's services record what this account does.
    pub fn client(&self) -> String {
        format!("console:{}", self.account.name)
    }

    /// Refuses unless the account's role is one of `roles`.
    pub fn require(&self, roles: &[AccountRole], page: &'static str) -> Result<(), ConsoleError> {
        if roles.contains(&self.account.role) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden {
                role: role_label(self.account.role),
                page,
            })
        }
    }

    /// Checks a submitted form's CSRF token against the session's.
    pub fn check_form(&self, presented: Option<&str>) -> Result<(), ConsoleError> {
        csrf::check(&self.session.csrf, presented, self.fetch_site.as_deref())
    }

    /// The frame of a page, with `current` marked in the navigation (the pages of the
    /// account's role, [`pages_of`]).
    pub fn frame(&self, console: &Console, current: &str) -> Frame {
        Frame {
            office: console.office(),
            account: Some(FrameAccount {
                display_name: self.account.display_name.clone(),
                role_label: role_label(self.account.role),
            }),
            nav: pages_of(self.account.role)
                .iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: *href == current,
                })
                .collect(),
            csrf: self.session.csrf.clone(),
        }
    }
}

/// The roles that work with cases: the Posteingang, consents, messages.
pub const CASEWORK: &[AccountRole] = &[AccountRole::Caseworker];

/// The pages in the navigation of a role: (path, label). A caseworker works with the cases;
/// the data protection officer sees the audit chain; the administration manages accounts
/// with `kurzdraht user` and sees no young person's data here.
pub fn pages_of(role: AccountRole) -> &'static [(&'static str, &'static str)] {
    match role {
        AccountRole::Caseworker => &[
            ("/posteingang", "Posteingang"),
            ("/faelle", "Fälle"),
            ("/einwilligungen", "Einwilligungen"),
            ("/nachricht/neu", "Nachricht senden"),
            ("/auskunft", "Auskunft"),
        ],
        AccountRole::DataProtection => &[("/protokoll", "Protokoll"), ("/auskunft", "Auskunft")],
        AccountRole::Admin => &[],
    }
}

/// Where an account lands after signing in: the first page of its role.
pub fn home_of(role: AccountRole) -> &'static str {
    pages_of(role)
        .first()
        .map(|(href, _)| *href)
        .unwrap_or("/konto")
}

/// The request's `Sec-Fetch-Site` header.
pub fn fetch_site(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The value of cookie `name` in the request.
pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie_value(h, name).map(str::to_string))
}

impl FromRequestParts<Console> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, ConsoleError> {
        let token = cookie(parts, &console.cookie).ok_or(ConsoleError::NotSignedIn)?;
        let session = console
            .sessions
            .touch(&token, console.now_ms())
            .ok_or(ConsoleError::NotSignedIn)?;
        let account = match console.node.accounts().get(&session.account)? {
            Some(a) if !a.disabled => a,
            _ => {
                console.sessions.end_all_of(&session.account);
                return Err(ConsoleError::NotSignedIn);
            }
        };
        Ok(Self {
            account,
            session,
            token,
            fetch_site: fetch_site(parts),
        })
    }
}

impl axum::extract::OptionalFromRequestParts<Console> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Option<Self>, ConsoleError> {
        match <Self as FromRequestParts<Console>>::from_request_parts(parts, console).await {
            Ok(s) => Ok(Some(s)),
            Err(ConsoleError::NotSignedIn) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
