//! The Auskunft (Art. 15 GDPR): for one young person, everything this office holds about
//! them in kurzdraht — consents, messages sent and received, refused transfers — as a page a
//! young person can read and the office can print. Built by the node's report service (the
//! same report as the AgencyApi's, audited there without naming the person).

use super::html;
use crate::app::Console;
use crate::refusal;
use crate::signed_in::SignedIn;
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kurzdraht_ledger::AccountRole;
use kurzdraht_proto::v1::{SubjectAccessReport, SubjectAccessRequest};
use serde::Deserialize;

/// Who may produce an access report: caseworkers (the person asks at the counter) and the
/// data protection officer.
const REPORTERS: &[AccountRole] = &[AccountRole::Caseworker, AccountRole::DataProtection];

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    vorname: String,
    #[serde(default)]
    nachname: String,
    #[serde(default)]
    geburtsdatum: String,
}

/// A field's problem, shown beside it.
#[derive(Debug, Clone, Default)]
struct FieldErrors {
    vorname: Option<&'static str>,
    nachname: Option<&'static str>,
    geburtsdatum: Option<&'static str>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.vorname.is_some() || self.nachname.is_some() || self.geburtsdatum.is_some()
    }
}

#[derive(Template)]
#[template(path = "report_form.html")]
struct ReportForm {
    frame: Frame,
    q: ReportQuery,
    errors: FieldErrors,
}

struct ConsentLine {
    purposes: String,
    recipients: String,
    valid: String,
    state: &'static str,
    recorded: String,
}

struct MessageLine {
    at: String,
    kind: &'static str,
    direction: &'static str,
    counterpart: String,
    state: &'static str,
}

struct RefusalLine {
    at: String,
    kind: &'static str,
    counterpart: String,
    why: &'static str,
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    frame: Frame,
    person: String,
    born: String,
    office: String,
    generated: String,
    consents: Vec<ConsentLine>,
    messages: Vec<MessageLine>,
    refusals: Vec<RefusalLine>,
}

fn check(q: &ReportQuery) -> (FieldErrors, Option<String>) {
    let mut errors = FieldErrors::default();
    let limit = |s: &str| s.trim().is_empty() || s.chars().count() > 100;
    if limit(&q.vorname) {
        errors.vorname = Some("Bitte geben Sie den Vornamen ein (höchstens 100 Zeichen).");
    }
    if limit(&q.nachname) {
        errors.nachname = Some("Bitte geben Sie den Nachnamen ein (höchstens 100 Zeichen).");
    }
    let born = view::parse_date(&q.geburtsdatum);
    if born.is_none() {
        errors.geburtsdatum = Some("Bitte geben Sie das Geburtsdatum als TT.MM.JJJJ ein.");
    }
    (errors, born)
}

/// `GET /auskunft` — the form; with the person's name and date of birth, the report.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(REPORTERS, "Auskunft")?;
    let frame = signed_in.frame(&console, "/auskunft");
    let asked = !(q.vorname.is_empty() && q.nachname.is_empty() && q.geburtsdatum.is_empty());
    if !asked {
        let page = ReportForm {
            frame,
            q,
            errors: FieldErrors::default(),
        };
        return Ok(html(page)?.into_response());
    }
    let (errors, born) = check(&q);
    let Some(born) = born.filter(|_| !errors.any()) else {
        let page = ReportForm { frame, q, errors };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, html(page)?).into_response());
    };
    let report = console
        .node
        .reports()
        .subject_access_report(
            SubjectAccessRequest {
                given_name: q.vorname.trim().to_string(),
                family_name: q.nachname.trim().to_string(),
                date_of_birth: born.clone(),
            },
            &signed_in.client(),
        )
        .await?;
    let page = report_page(&console, frame, &q, &born, report);
    Ok(html(page)?.into_response())
}

fn report_page(
    console: &Console,
    frame: Frame,
    q: &ReportQuery,
    born: &str,
    report: SubjectAccessReport,
) -> ReportPage {
    let directory = console.node.directory();
    let name_of = |agency: &str| view::agency_name(&directory, agency);
    let consents = report
        .consents
        .iter()
        .filter_map(|entry| {
            let c = entry.consent.as_ref()?;
            Some(ConsentLine {
                purposes: view::purposes_text(&c.purposes),
                recipients: view::agency_names(&directory, &c.recipients),
                valid: format!(
                    "{} bis {}",
                    view::german_datetime(c.valid_from_ms),
                    view::german_datetime(c.valid_until_ms)
                ),
                state: view::consent_state_label(entry.state),
                recorded: format!(
                    "{} ({})",
                    name_of(&c.recording_agency),
                    view::german_datetime(c.recorded_at_ms)
                ),
            })
        })
        .collect();
    let messages = report
        .messages
        .iter()
        .map(|m| MessageLine {
            at: view::german_datetime(m.at_ms),
            kind: view::kind_label(m.kind),
            direction: if m.direction == "sent" {
                "gesendet an"
            } else {
                "erhalten von"
            },
            counterpart: name_of(&m.counterpart),
            state: if m.direction == "sent" {
                view::delivery_state_label(m.state)
            } else {
                "erhalten"
            },
        })
        .collect();
    let refusals = report
        .refusals
        .iter()
        .map(|r| RefusalLine {
            at: view::german_datetime(r.at_ms),
            kind: view::kind_label(r.kind),
            counterpart: name_of(&r.counterpart),
            why: refusal::explain(&r.reason).what,
        })
        .collect();
    ReportPage {
        frame,
        person: format!("{} {}", q.vorname.trim(), q.nachname.trim()),
        born: view::german_date(born),
        office: console.office(),
        generated: view::german_datetime(report.generated_at_ms),
        consents,
        messages,
        refusals,
    }
}
