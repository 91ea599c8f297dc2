//! The Protokoll, for the data protection officer only: the node's audit chain, newest
//! first, filtered by area, in pages — and its verification (every link of the hash chain
//! from the first entry to the recorded head), started here and run in the background. The chain holds no young person's data; a
//! message or consent is named by its id.

use super::html;
use crate::app::Console;
use crate::signed_in::SignedIn;
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_ledger::AccountRole;
use kurzdraht_node::service::reports::Verification;
use serde::Deserialize;

const AUDITORS: &[AccountRole] = &[AccountRole::DataProtection];

/// Entries per page.
const PAGE: usize = 100;

/// The areas of the chain a person can filter by: (event prefix, German label).
const AREAS: [(&str, &str); 10] = [
    ("message.", "Nachrichten (Senden, Zustellen, Ablehnen)"),
    ("inbox.", "Posteingang (Empfang, Lesen, Erledigen)"),
    ("consent.", "Einwilligungen"),
    ("case.", "Fallabschluss"),
    ("retention.", "Aufbewahrung und Löschung"),
    ("subject.", "Auskünfte und Löschungen"),
    ("account.", "Konten der Konsole"),
    ("console.", "Anmeldungen an der Konsole"),
    ("reconciliation.", "Abgleich nach Wiederherstellung"),
    ("store.", "Speicher (Sicherung, Wiederherstellung)"),
];

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    bereich: String,
    vor: Option<u64>,
}

struct AreaChoice {
    prefix: &'static str,
    label: &'static str,
    selected: bool,
}

struct Line {
    seq: u64,
    at: String,
    event: String,
    kind: &'static str,
    peer: String,
    message_id: String,
    consent_id: String,
    detail: String,
}

/// The state of the chain's verification, as shown.
struct Verdict {
    /// `running`, `ok` or `broken`.
    state: &'static str,
    text: String,
}

fn verdict_of(v: Verification) -> Option<Verdict> {
    if v.running {
        return Some(Verdict {
            state: "running",
            text: "Die Prüfung des ganzen Protokolls läuft. Laden Sie die Seite in einigen Sekunden neu, um das Ergebnis zu sehen.".into(),
        });
    }
    let last = v.last?;
    let at = view::german_datetime(last.finished_at_ms);
    Some(match last.outcome {
        Ok(r) => Verdict {
            state: "ok",
            text: format!(
                "Geprüft am {at}: Das Protokoll ist vollständig und unverändert: {} Einträge, jeder mit dem vorigen verkettet bis zum gespeicherten Endwert {}….",
                r.entries,
                hex::encode(&r.head_hash[..8])
            ),
        },
        Err(e) => Verdict {
            state: "broken",
            text: format!("Geprüft am {at}: Das Protokoll ist NICHT in Ordnung: {e}. Melden Sie das sofort der Administration und sichern Sie den Speicher."),
        },
    })
}

#[derive(Deserialize)]
pub struct StartForm {
    csrf: Option<String>,
}

/// `POST /protokoll/pruefen`: starts verifying the whole chain in the background (a chain of
/// 300,000 entries takes about a second), then back to the Protokoll, which shows the state.
pub async fn start_verification(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(form): Form<StartForm>,
) -> Result<Response, ConsoleError> {
    signed_in.require(AUDITORS, "Protokoll")?;
    signed_in.check_form(form.csrf.as_deref())?;
    console.node.reports().start_verification();
    Ok(Redirect::to("/protokoll").into_response())
}

#[derive(Template)]
#[template(path = "audit_log.html")]
struct AuditLogPage {
    frame: Frame,
    areas: Vec<AreaChoice>,
    area: String,
    lines: Vec<Line>,
    older: Option<String>,
    verdict: Option<Verdict>,
}

/// `GET /protokoll?bereich=&vor=`.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(AUDITORS, "Protokoll")?;
    let area = match AREAS.iter().find(|(p, _)| *p == q.bereich) {
        Some((p, _)) => *p,
        None if q.bereich.is_empty() => "",
        None => {
            return Err(ConsoleError::Form {
                field: "bereich",
                reason: "kein bekannter Bereich".into(),
            })
        }
    };
    let reports = console.node.reports();
    let page = reports.audit_page(q.vor, PAGE, area)?;
    let verdict = verdict_of(reports.verification());
    let directory = console.node.directory();
    let lines = page
        .entries
        .into_iter()
        .map(|e| Line {
            seq: e.seq,
            at: view::german_datetime(e.at_ms),
            kind: if e.kind == 0 {
                ""
            } else {
                view::kind_label(e.kind)
            },
            peer: view::agency_name(&directory, &e.peer),
            event: e.event,
            message_id: e.message_id,
            consent_id: e.consent_id,
            detail: e.detail,
        })
        .collect();
    let older = page.next_before.map(|seq| {
        if area.is_empty() {
            format!("/protokoll?vor={seq}")
        } else {
            format!("/protokoll?bereich={area}&vor={seq}")
        }
    });
    Ok(html(AuditLogPage {
        frame: signed_in.frame(&console, "/protokoll"),
        areas: AREAS
            .iter()
            .map(|(prefix, label)| AreaChoice {
                prefix,
                label,
                selected: *prefix == area,
            })
            .collect(),
        area: area.to_string(),
        lines,
        older,
        verdict,
    })?
    .into_response())
}
