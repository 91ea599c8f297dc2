//! The console's pages, one file per page: each reads its form or query, calls one of the
//! node's services as the signed-in account, and renders its template.

pub mod account;
pub mod audit_log;
pub mod cases;
pub mod consent_form;
pub mod consent_upload;
pub mod consents;
pub mod inbox;
pub mod login;
pub mod reply;
pub mod report;
pub mod send;
pub mod sent;

use crate::ConsoleError;
use askama::Template;
use axum::response::Html;

/// A rendered template as an HTML answer.
pub fn html(page: impl Template) -> Result<Html<String>, ConsoleError> {
    Ok(Html(page.render()?))
}
