//! The Fälle: one case per young person (a consent's chain of supersession), newest
//! activity first; a case's page shows its consents and, per purpose, the thread of its
//! messages — request → statement → decision, referral → response — with where each sent
//! message is, the deadline of each question, and what is overdue.

use super::html;
use crate::app::Console;
use crate::refusal;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use kurzdraht_ledger::{CaseRef, Direction};
use kurzdraht_node::service::cases::{CaseMessage, CaseView};
use kurzdraht_proto::v1::{DeliveryState, MessageKind, Purpose, Subject};
use serde::Deserialize;

/// Cases per page.
const PAGE: usize = 50;

fn person_of(s: Option<&Subject>) -> String {
    match s {
        Some(s) => format!("{} {}", s.given_name, s.family_name),
        None => "(Daten gelöscht)".into(),
    }
}

struct CaseRow {
    href: String,
    person: String,
    born: String,
    purposes: String,
    latest: String,
    messages: usize,
    overdue: usize,
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesPage {
    frame: Frame,
    rows: Vec<CaseRow>,
    older: Option<String>,
}

#[derive(Deserialize)]
pub struct CasesQuery {
    /// The last case of the previous page: `<latest ms>.<root>`.
    nach: Option<String>,
}

/// `GET /faelle?nach=`.
pub async fn list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<CasesQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Fälle")?;
    let before = match q.nach.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or(ConsoleError::Form {
            field: "nach",
            reason: "keine gültige Stelle in der Liste".into(),
        })?),
    };
    let cases = console.node.cases().recent(before.as_ref(), PAGE)?;
    let older = (cases.len() == PAGE)
        .then(|| {
            cases
                .last()
                .map(|c| format!("/faelle?nach={}.{}", c.latest_ms, c.root))
        })
        .flatten();
    let rows = cases
        .into_iter()
        .map(|c| CaseRow {
            href: format!("/fall/{}", c.root),
            person: person_of(c.person.as_ref()),
            born: c
                .person
                .as_ref()
                .map(|s| view::german_date(&s.date_of_birth))
                .unwrap_or_default(),
            purposes: view::purposes_text(&c.purposes),
            latest: view::german_datetime(c.latest_ms),
            messages: c.messages,
            overdue: c.overdue,
        })
        .collect();
    Ok(html(CasesPage {
        frame: signed_in.frame(&console, "/faelle"),
        rows,
        older,
    })?
    .into_response())
}

fn parse_cursor(cursor: &str) -> Option<CaseRef> {
    let (ms, root) = cursor.split_once('.')?;
    Some(CaseRef {
        latest_ms: ms.parse().ok()?,
        root: root.to_string(),
    })
}

struct ConsentRow {
    href: String,
    purposes: String,
    recipients: String,
    valid_until: String,
    state: &'static str,
}

struct MessageRow {
    href: String,
    at: String,
    direction: &'static str,
    kind: &'static str,
    counterpart: String,
    state: String,
    respond_by: String,
    overdue: bool,
}

struct Thread {
    title: &'static str,
    rows: Vec<MessageRow>,
}

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage {
    frame: Frame,
    person: String,
    born: String,
    consents: Vec<ConsentRow>,
    threads: Vec<Thread>,
    overdue: usize,
}

/// The purpose a message of `kind` serves.
fn purpose_of(kind: i32) -> Purpose {
    match MessageKind::try_from(kind).unwrap_or(MessageKind::Unspecified) {
        MessageKind::QualificationReferral | MessageKind::ReferralResponse => {
            Purpose::QualificationMeasure
        }
        _ => Purpose::U25MoveOut,
    }
}

fn state_of(m: &CaseMessage) -> String {
    match m.direction {
        Direction::Received if m.acknowledged => "erhalten, erledigt".into(),
        Direction::Received => "erhalten, offen".into(),
        Direction::Sent => {
            let label = view::delivery_state_label(m.state);
            let refused = [
                DeliveryState::Refused,
                DeliveryState::Rejected,
                DeliveryState::Expired,
            ]
            .iter()
            .any(|s| *s as i32 == m.state);
            match (refused, m.detail.split_whitespace().next()) {
                (true, Some(code))
                    if refusal::explain(code).title != refusal::explain("").title =>
                {
                    format!("{label} – {}", refusal::explain(code).what)
                }
                _ => label.to_string(),
            }
        }
    }
}

fn case_page(console: &Console, frame: Frame, case: CaseView) -> CasePage {
    let directory = console.node.directory();
    let name_of = |agency: &str| view::agency_name(&directory, agency);
    let consents = case
        .consents
        .iter()
        .filter_map(|c| {
            let r = c.record.as_ref()?;
            let state = if c.withdrawal.is_some() {
                "widerrufen"
            } else if !c.superseded_by.is_empty() {
                "durch eine neuere ersetzt"
            } else if c.erased_at_ms > 0 {
                "Daten gelöscht"
            } else if r.valid_until_ms > 0 && r.valid_until_ms < console.now_ms() {
                "abgelaufen"
            } else {
                "gültig"
            };
            Some(ConsentRow {
                href: format!("/einwilligung/{}", r.consent_id),
                purposes: view::purposes_text(&r.purposes),
                recipients: view::agency_names(&directory, &r.recipients),
                valid_until: view::german_datetime(r.valid_until_ms),
                state,
            })
        })
        .collect();
    let mut threads = Vec::new();
    for (purpose, title) in [
        (
            Purpose::U25MoveOut,
            "Auszug unter 25: Anfrage, Stellungnahme, Entscheidung",
        ),
        (
            Purpose::QualificationMeasure,
            "Qualifizierung: Zuweisung und Antwort",
        ),
    ] {
        let rows: Vec<MessageRow> = case
            .messages
            .iter()
            .filter(|m| purpose_of(m.kind) == purpose)
            .map(|m| MessageRow {
                href: match m.direction {
                    Direction::Received => format!("/nachricht/{}", m.message_id),
                    Direction::Sent => format!("/gesendet/{}", m.message_id),
                },
                at: view::german_datetime(m.at_ms),
                direction: match m.direction {
                    Direction::Sent => "gesendet an",
                    Direction::Received => "erhalten von",
                },
                kind: view::kind_label(m.kind),
                counterpart: name_of(&m.counterpart),
                state: state_of(m),
                respond_by: view::german_date(&m.respond_by),
                overdue: case.overdue.contains(&m.message_id),
            })
            .collect();
        if !rows.is_empty() {
            threads.push(Thread { title, rows });
        }
    }
    CasePage {
        frame,
        person: person_of(case.person.as_ref()),
        born: case
            .person
            .as_ref()
            .map(|s| view::german_date(&s.date_of_birth))
            .unwrap_or_default(),
        consents,
        threads,
        overdue: case.overdue.len(),
    }
}

/// `GET /fall/{root}`.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(root): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Fall")?;
    let case = console.node.cases().case(&root)?;
    let frame = signed_in.frame(&console, "/faelle");
    Ok(html(case_page(&console, frame, case))?.into_response())
}
