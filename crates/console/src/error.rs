//! [`ConsoleError`], and the one place an error becomes an HTTP answer: a German page that
//! says what happened and what to do next, with the status that fits. A person's mistake is
//! never a 500.

use crate::refusal;
use crate::view::ErrorPage;
use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_node::NodeError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, or it ended (idle too long, signed out, account disabled).
    #[error("not signed in")]
    NotSignedIn,
    /// The account's role may not use this page.
    #[error("the role {role} may not use {page}")]
    Forbidden {
        role: &'static str,
        page: &'static str,
    },
    /// A form without the session's CSRF token (or with another), or a cross-site request.
    #[error("CSRF check failed: {0}")]
    Csrf(&'static str),
    /// Too many failed logins from this address.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// A form field that cannot be read (not the node's validation: that is `Node`).
    #[error("{field}: {reason}")]
    Form { field: &'static str, reason: String },
    /// A request body over the console's limit (an upload too large to read).
    #[error("{field}: {reason}")]
    TooLarge { field: &'static str, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    /// What the node's services answered.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The listener's TLS configuration (the node's certificate or key).
    #[error("console TLS: {0}")]
    Tls(String),
    #[error("rendering a page: {0}")]
    Render(#[from] askama::Error),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotSignedIn => StatusCode::SEE_OTHER,
            Self::Forbidden { .. } | Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Form { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Node(e) => node_status(e),
            Self::Render(_) | Self::Tls(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Title and text of the German page.
    fn page(&self) -> ErrorPage {
        match self {
            Self::NotSignedIn => ErrorPage::new("Bitte melden Sie sich an", "", ""),
            Self::Forbidden { .. } => ErrorPage::new(
                "Keine Berechtigung",
                "Ihre Rolle darf diese Seite nicht verwenden.",
                "Wenden Sie sich an die Administration Ihrer Dienststelle, wenn Sie diese Seite brauchen.",
            ),
            Self::Csrf(_) => ErrorPage::new(
                "Das Formular ist nicht mehr gültig",
                "Die Anfrage kam nicht aus einem aktuellen Formular dieser Konsole und wurde nicht ausgeführt.",
                "Laden Sie die Seite neu und senden Sie das Formular noch einmal.",
            ),
            Self::Throttled { retry_after_secs } => ErrorPage::new(
                "Zu viele Fehlversuche",
                "Von Ihrem Rechner gab es zu viele fehlgeschlagene Anmeldungen.",
                &format!(
                    "Versuchen Sie es in {} Minuten noch einmal.",
                    retry_after_secs.div_ceil(60)
                ),
            ),
            Self::TooLarge { field, reason } => ErrorPage::new(
                "Datei zu groß",
                &format!("Das Feld „{field}“ wurde nicht angenommen: {reason}"),
                "Wählen Sie eine kleinere Datei (zum Beispiel mit geringerer Scan-Auflösung) und senden Sie das Formular noch einmal.",
            ),
            Self::Form { field, reason } => ErrorPage::new(
                "Eingabe nicht lesbar",
                &format!("Das Feld „{field}“ konnte nicht gelesen werden: {reason}"),
                "Prüfen Sie die Eingabe und senden Sie das Formular noch einmal.",
            ),
            Self::NotFound(_) => ErrorPage::new(
                "Nicht gefunden",
                "Diese Seite oder dieser Eintrag existiert nicht (mehr).",
                "Gehen Sie zurück zum Posteingang.",
            ),
            Self::Node(e) => {
                let x = refusal::explain(e.reason_code());
                ErrorPage::new(x.title, x.what, x.next)
            }
            Self::Render(_) | Self::Tls(_) => ErrorPage::new(
                "Interner Fehler",
                "Die Seite konnte nicht erzeugt werden.",
                "Bitte melden Sie das der Administration Ihrer Dienststelle.",
            ),
        }
    }
}

/// A person's mistake (4xx) or the node's trouble (5xx), by the node's reason.
fn node_status(e: &NodeError) -> StatusCode {
    match e.reason_code() {
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission-denied" | "not-recording-agency" => StatusCode::FORBIDDEN,
        "not-found" => StatusCode::NOT_FOUND,
        "rate-limited" | "account-locked" => StatusCode::TOO_MANY_REQUESTS,
        "too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        "store-failed" | "not-stored" | "store" | "store-locked" | "retry" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "internal" | "config" | "listen" | "tls" | "io" | "transport" => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // consent refusals, invalid input, over-age, conflicts: the person can act on them
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let Self::NotSignedIn = self {
            return Redirect::to("/anmelden").into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        } else {
            tracing::debug!(error = %self, "console request refused");
        }
        let mut response = match self.page().render() {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, "Fehler").into_response(),
        };
        if let Self::Throttled { retry_after_secs } = self {
            if let Ok(v) = retry_after_secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
