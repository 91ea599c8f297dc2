//! `/` and `/konto`: where a signed-in account starts — the first page of its role — and
//! the page about the account itself (who is signed in, at which office, in which role, and
//! what that role does here).

use super::html;
use crate::app::Console;
use crate::signed_in::{home_of, role_label, SignedIn};
use crate::view::Frame;
use crate::ConsoleError;
use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_ledger::AccountRole;

/// `GET /`.
pub async fn home(signed_in: SignedIn) -> Redirect {
    Redirect::to(home_of(signed_in.account.role))
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    frame: Frame,
    name: String,
    display_name: String,
    role: &'static str,
    office: String,
    what: &'static str,
}

/// What a role does in the console, in one sentence.
fn what_the_role_does(role: AccountRole) -> &'static str {
    match role {
        AccountRole::Caseworker => {
            "Sie bearbeiten die Fälle: Posteingang, Einwilligungen und Nachrichten an die anderen Dienststellen."
        }
        AccountRole::DataProtection => {
            "Sie prüfen den Datenschutz: das Protokoll aller Vorgänge und Auskünfte nach Art. 15 DSGVO."
        }
        AccountRole::Admin => {
            "Sie verwalten die Konten dieses Knotens mit dem Befehl „kurzdraht user“; Fälle und Daten junger Menschen sehen Sie hier nicht."
        }
    }
}

/// `GET /konto`.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> Result<Response, ConsoleError> {
    let a = &signed_in.account;
    Ok(html(AccountPage {
        frame: signed_in.frame(&console, "/konto"),
        name: a.name.clone(),
        display_name: a.display_name.clone(),
        role: role_label(a.role),
        office: console.office(),
        what: what_the_role_does(a.role),
    })?
    .into_response())
}
