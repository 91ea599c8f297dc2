//! The Posteingang: the office's received messages, newest first, filtered by kind, in
//! pages; rows of newer messages for the page's script (live updates); one message opened
//! (an audited read, as `console:<account>`) and marked as done (acknowledged).

use super::html;
use crate::app::Console;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_proto::v1::{message_body::Body, InboxItem, MessageKind, Subject};
use serde::Deserialize;

/// Rows per page.
const PAGE: usize = 50;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub message_id: String,
    pub received: String,
    pub kind: &'static str,
    pub sender: String,
    pub person: String,
    pub done: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    frame: Frame,
    rows: Vec<InboxRow>,
    kinds: Vec<KindChoice>,
    kind: String,
    newest_seq: u64,
    older: Option<String>,
}

/// One choice of the kind filter.
#[derive(Debug, Clone)]
pub struct KindChoice {
    pub slug: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "inbox_rows.html")]
struct InboxRows {
    rows: Vec<InboxRow>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    art: Option<String>,
    vor: Option<u64>,
}

fn kind_filter(art: Option<&str>) -> Result<Option<MessageKind>, ConsoleError> {
    match art {
        None | Some("") => Ok(None),
        Some(slug) => view::kind_of_slug(slug)
            .map(Some)
            .ok_or(ConsoleError::Form {
                field: "art",
                reason: "keine bekannte Nachrichtenart".into(),
            }),
    }
}

/// The subject a message is about.
pub fn subject_of(item: &InboxItem) -> Option<&Subject> {
    match item.body.as_ref()?.body.as_ref()? {
        Body::CertificationRequest(m) => m.subject.as_ref(),
        Body::MoveOutCertification(m) => m.subject.as_ref(),
        Body::MoveOutDecision(m) => m.subject.as_ref(),
        Body::QualificationReferral(m) => m.subject.as_ref(),
        Body::ReferralResponse(m) => m.subject.as_ref(),
        Body::ConsentNotice(m) => m.consent.as_ref()?.subject.as_ref(),
        Body::ConsentWithdrawal(_) => None,
    }
}

fn row(console: &Console, item: &InboxItem) -> InboxRow {
    let person = match subject_of(item) {
        Some(s) => format!("{} {}", s.given_name, s.family_name),
        None if item.body_erased => "(gelöscht)".into(),
        None => "–".into(),
    };
    let sender = view::agency_name(&console.node.directory(), &item.sender);
    InboxRow {
        message_id: item.message_id.clone(),
        received: view::german_datetime(item.received_at_ms),
        kind: view::kind_label(item.kind),
        sender,
        person,
        done: item.acknowledged,
    }
}

/// `GET /posteingang?art=&vor=`.
pub async fn list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Posteingang")?;
    let kind = kind_filter(q.art.as_deref())?;
    let page = console.node.inbox().page(q.vor, PAGE, kind)?;
    let newest_seq = match q.vor {
        None => console.node.inbox().newest_seq()?,
        Some(_) => 0,
    };
    let slug = kind.map(view::kind_slug).unwrap_or_default();
    let older = page.next_before.map(|seq| {
        if slug.is_empty() {
            format!("/posteingang?vor={seq}")
        } else {
            format!("/posteingang?art={slug}&vor={seq}")
        }
    });
    let rows = page.items.iter().map(|i| row(&console, i)).collect();
    Ok(html(InboxPage {
        frame: signed_in.frame(&console, "/posteingang"),
        rows,
        kinds: view::kind_choices()
            .into_iter()
            .map(|(s, label)| KindChoice {
                slug: s,
                label,
                selected: s == slug,
            })
            .collect(),
        kind: slug.to_string(),
        newest_seq,
        older,
    })?
    .into_response())
}

#[derive(Deserialize)]
pub struct NewerQuery {
    nach: u64,
    art: Option<String>,
}

/// `GET /posteingang/neu?nach=&art=`: rows of messages after `nach` (newest first) for the
/// page's script; 204 when there are none. `x-newest-seq` is where the next poll starts.
pub async fn newer(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<NewerQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Posteingang")?;
    let kind = kind_filter(q.art.as_deref())?;
    let (items, newest) = console.node.inbox().since(q.nach, kind)?;
    if items.is_empty() && newest == q.nach {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let rows: Vec<InboxRow> = items.iter().rev().map(|i| row(&console, i)).collect();
    let count = rows.len();
    let mut response = html(InboxRows { rows })?.into_response();
    let headers = response.headers_mut();
    for (name, value) in [("x-newest-seq", newest), ("x-count", count as u64)] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    frame: Frame,
    row: InboxRow,
    fields: Vec<(&'static str, String)>,
    /// The answer form's path, when this office answers this kind.
    reply: Option<String>,
}

/// `GET /nachricht/{id}`: one message, opened (the first opening by this account is audited).
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Nachricht")?;
    let item = console.node.inbox().open(&id, &signed_in.client())?;
    let fields = view::body_fields(&item);
    let reply = super::reply::reply_href(&console, &item);
    Ok(html(MessagePage {
        frame: signed_in.frame(&console, "/posteingang"),
        row: row(&console, &item),
        fields,
        reply,
    })?
    .into_response())
}

#[derive(Deserialize)]
pub struct AcknowledgeForm {
    csrf: Option<String>,
}

/// `POST /nachricht/{id}/erledigt`.
pub async fn acknowledge(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AcknowledgeForm>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Nachricht")?;
    signed_in.check_form(form.csrf.as_deref())?;
    console
        .node
        .inbox()
        .acknowledge(&id, &signed_in.client())
        .await?;
    Ok(Redirect::to(&format!("/nachricht/{id}")).into_response())
}
