//! Einwilligungen: the consents this node holds, newest first, in pages; one consent in
//! German (every field, the SHA-256 of its signed form, its state, who recorded it); its
//! withdrawal (`Widerrufen`). Recording and replacing are in [`super::consent_form`].
//! A consent another office recorded (received in a notice) is shown read-only: only the
//! recording office withdraws or replaces it (the node refuses it anyway).
//!
//! There is no search by name yet (the ledger's person index could serve one); the list
//! pages newest first.

use super::html;
use crate::app::Console;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::ConsoleError;
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1::{
    ConsentEntry, ConsentForm, ConsentGiver, ConsentRecord, ConsentState, DataCategory, LegalBasis,
    Purpose, WithdrawConsentRequest,
};
use serde::Deserialize;

/// Rows per page of the list.
const PAGE: usize = 50;

/// The purposes a consent may name: form value, purpose, German label.
pub const PURPOSES: &[(&str, Purpose, &str)] = &[
    ("auszug-u25", Purpose::U25MoveOut, "Auszug unter 25"),
    (
        "qualifizierung",
        Purpose::QualificationMeasure,
        "Qualifizierungsmaßnahme",
    ),
];

/// The categories of data: form value, category, German label, hint.
pub const CATEGORIES: &[(&str, DataCategory, &str, &str)] = &[
    ("identitaet", DataCategory::Identity, "Name und Geburtsdatum", "Immer nötig: jede Nachricht nennt die Person."),
    ("anschrift", DataCategory::Address, "Anschrift", ""),
    ("aktenzeichen", DataCategory::CaseReferences, "Aktenzeichen der Dienststellen", ""),
    ("wohnsituation", DataCategory::HousingSituation, "Wohnsituation (Anlass eines Auszugs)", ""),
    ("familie", DataCategory::FamilySituation, "Familiäre Situation", "Auch der Name einer sorgeberechtigten Person gehört dazu."),
    ("leistung", DataCategory::BenefitDecision, "Leistungsentscheidung (Zusicherung)", ""),
    ("bildung", DataCategory::EducationEmployment, "Schule, Ausbildung und Beschäftigung", ""),
    ("gesundheit", DataCategory::Health, "Gesundheitsdaten", "Besondere Kategorie (Art. 9 DSGVO): nur zulässig mit der ausdrücklichen Einwilligung als Rechtsgrundlage (Art. 9 Abs. 2 Buchst. a DSGVO)."),
];

/// The legal bases: form value, basis, German label.
pub const LEGAL_BASES: &[(&str, LegalBasis, &str)] = &[
    (
        "einwilligung",
        LegalBasis::ConsentGdpr61ASgbX67b,
        "Einwilligung (Art. 6 Abs. 1 Buchst. a DSGVO, § 67b Abs. 2 SGB X)",
    ),
    (
        "ausdruecklich",
        LegalBasis::ExplicitConsentGdpr92A,
        "Ausdrückliche Einwilligung, auch für Gesundheitsdaten (Art. 9 Abs. 2 Buchst. a DSGVO)",
    ),
];

/// The forms of a consent: form value, form, German label.
pub const FORMS: &[(&str, ConsentForm, &str)] = &[
    ("schriftlich", ConsentForm::Written, "schriftlich"),
    ("elektronisch", ConsentForm::Electronic, "elektronisch"),
];

/// How a person may withdraw: form value and the text the withdrawal records.
pub const MANNERS: &[(&str, &str)] = &[
    ("schriftlich", "schriftlich"),
    ("muendlich", "mündlich"),
    ("elektronisch", "elektronisch"),
];

/// The German word for a consent's state.
pub fn state_label(state: i32) -> &'static str {
    match ConsentState::try_from(state).unwrap_or(ConsentState::Unspecified) {
        ConsentState::ConsentInForce => "gültig",
        ConsentState::ConsentWithdrawn => "widerrufen",
        ConsentState::ConsentSuperseded => "ersetzt",
        ConsentState::ConsentExpired => "abgelaufen",
        ConsentState::ConsentNotYetValid => "noch nicht gültig",
        ConsentState::Unspecified => "unbekannt",
    }
}

fn label_of<T: Copy + Into<i32>>(table: &[(&str, T, &'static str)], value: i32) -> &'static str {
    table
        .iter()
        .find(|(_, v, _)| (*v).into() == value)
        .map(|(_, _, l)| *l)
        .unwrap_or("–")
}

fn category_label(value: i32) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(_, c, _, _)| *c as i32 == value)
        .map(|(_, _, l, _)| *l)
        .unwrap_or("–")
}

/// An agency's German name from the directory (its id when the directory lacks it).
pub fn agency_name(console: &Console, id: &str) -> String {
    console
        .node
        .directory()
        .get(id)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| id.to_string())
}

fn person(record: &ConsentRecord) -> String {
    match &record.subject {
        Some(s) => format!("{} {}", s.given_name, s.family_name),
        None => "(gelöscht)".into(),
    }
}

fn purposes(record: &ConsentRecord) -> String {
    let labels: Vec<&str> = record
        .purposes
        .iter()
        .map(|p| label_of(PURPOSES, *p))
        .collect();
    labels.join(", ")
}

fn recipients(console: &Console, record: &ConsentRecord) -> String {
    let names: Vec<String> = record
        .recipients
        .iter()
        .map(|r| agency_name(console, r))
        .collect();
    names.join(", ")
}

/// One row of the list.
pub struct ConsentRow {
    pub consent_id: String,
    pub person: String,
    pub purposes: String,
    pub recipients: String,
    pub validity: String,
    pub state: &'static str,
    pub recorded_at: String,
}

fn row(console: &Console, entry: &ConsentEntry) -> Option<ConsentRow> {
    let c = entry.consent.as_ref()?;
    let recorded_at = if c.recording_agency == console.node.agency() {
        "hier".to_string()
    } else {
        agency_name(console, &c.recording_agency)
    };
    Some(ConsentRow {
        consent_id: c.consent_id.clone(),
        person: person(c),
        purposes: purposes(c),
        recipients: recipients(console, c),
        validity: format!(
            "{} bis {}",
            view::german_datetime(c.valid_from_ms),
            view::german_datetime(c.valid_until_ms)
        ),
        state: state_label(entry.state),
        recorded_at,
    })
}

#[derive(Template)]
#[template(path = "consents.html")]
struct ListPage {
    frame: Frame,
    rows: Vec<ConsentRow>,
    older: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    vor: Option<String>,
}

/// `GET /einwilligungen?vor=`: the consents held here, newest first.
pub async fn list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligungen")?;
    let before = q.vor.unwrap_or_default();
    let (entries, next) = console
        .node
        .submission()
        .consents_newest_first(&before, PAGE)
        .map_err(|e| match e {
            NodeError::Invalid { .. } => ConsoleError::Form {
                field: "vor",
                reason: "keine gültige Kennung einer Einwilligung".into(),
            },
            e => e.into(),
        })?;
    Ok(html(ListPage {
        frame: signed_in.frame(&console, "/einwilligungen"),
        rows: entries.iter().filter_map(|e| row(&console, e)).collect(),
        older: next.map(|id| format!("/einwilligungen?vor={id}")),
    })?
    .into_response())
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    frame: Frame,
    consent_id: String,
    person: String,
    state: &'static str,
    fields: Vec<(&'static str, String)>,
    /// Recorded here: only then may this office withdraw or replace it.
    ours: bool,
    /// Withdrawable: recorded here, in force or not yet valid.
    may_withdraw: bool,
    /// Replaceable: recorded here, neither withdrawn nor replaced (an expired consent is
    /// renewed by a replacement).
    may_replace: bool,
    recording_office: String,
    manners: &'static [(&'static str, &'static str)],
}

/// The fields of a consent as label and value, in German.
fn consent_fields(console: &Console, entry: &ConsentEntry) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let Some(c) = &entry.consent else {
        return out;
    };
    let mut push = |label: &'static str, value: String| {
        if !value.is_empty() {
            out.push((label, value));
        }
    };
    if let Some(s) = &c.subject {
        push("Vorname", s.given_name.clone());
        push("Familienname", s.family_name.clone());
        push("Geburtsdatum", view::german_date(&s.date_of_birth));
        if let Some(a) = &s.address {
            push(
                "Anschrift",
                format!("{}, {} {}", a.street, a.postal_code, a.city),
            );
        }
    } else {
        push(
            "Junge Person",
            "Die Angaben zur Person wurden gelöscht.".into(),
        );
    }
    let giver = match ConsentGiver::try_from(c.given_by) {
        Ok(ConsentGiver::Guardian) => format!("die sorgeberechtigte Person {}", c.guardian_name),
        Ok(ConsentGiver::Person) => "die Person selbst".to_string(),
        _ => "–".to_string(),
    };
    push("Erteilt durch", giver);
    push("Zwecke", purposes(c));
    push("Empfangende Dienststellen", recipients(console, c));
    let categories: Vec<&str> = c.categories.iter().map(|v| category_label(*v)).collect();
    push("Datenkategorien", categories.join(", "));
    push(
        "Rechtsgrundlage",
        label_of(LEGAL_BASES, c.legal_basis).into(),
    );
    push("Form", label_of(FORMS, c.form).into());
    push("Gültig ab", view::german_datetime(c.valid_from_ms));
    push("Gültig bis", view::german_datetime(c.valid_until_ms));
    push(
        "Aktenzeichen des unterschriebenen Formulars",
        c.evidence_reference.clone(),
    );
    push(
        "SHA-256 des unterschriebenen Formulars",
        hex::encode(&c.evidence_sha256),
    );
    push("Erfasst bei", agency_name(console, &c.recording_agency));
    push("Erfasst von", c.recorded_by.clone());
    push("Erfasst am", view::german_datetime(c.recorded_at_ms));
    push("Ersetzt die Einwilligung", c.supersedes.clone());
    push("Ersetzt durch", entry.superseded_by.clone());
    if let Some(w) = &entry.withdrawal {
        push("Widerrufen am", view::german_datetime(w.withdrawn_at_ms));
        push("Art des Widerrufs", w.manner.clone());
        push("Widerruf erfasst von", w.recorded_by.clone());
    }
    push("Kennung", c.consent_id.clone());
    out
}

/// The consent `id` held here, or NotFound.
pub fn held(console: &Console, id: &str) -> Result<ConsentEntry, ConsoleError> {
    let not_found = || ConsoleError::NotFound(format!("consent {id}"));
    match console.node.submission().consent(id) {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) | Err(NodeError::Invalid { .. }) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /einwilligung/{id}`.
pub async fn show(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligung")?;
    let entry = held(&console, &id)?;
    let record = entry.consent.clone().unwrap_or_default();
    let ours = record.recording_agency == console.node.agency();
    let state = ConsentState::try_from(entry.state).unwrap_or(ConsentState::Unspecified);
    let may_withdraw = ours
        && matches!(
            state,
            ConsentState::ConsentInForce | ConsentState::ConsentNotYetValid
        );
    let may_replace = may_withdraw || (ours && state == ConsentState::ConsentExpired);
    Ok(html(ConsentPage {
        frame: signed_in.frame(&console, "/einwilligungen"),
        consent_id: record.consent_id.clone(),
        person: person(&record),
        state: state_label(entry.state),
        fields: consent_fields(&console, &entry),
        ours,
        may_withdraw,
        may_replace,
        recording_office: agency_name(&console, &record.recording_agency),
        manners: MANNERS,
    })?
    .into_response())
}

#[derive(Deserialize)]
pub struct WithdrawForm {
    csrf: Option<String>,
    #[serde(default)]
    manner: String,
}

/// `POST /einwilligung/{id}/widerrufen`: records the withdrawal as the signed-in account.
pub async fn withdraw(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<WithdrawForm>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligung")?;
    signed_in.check_form(form.csrf.as_deref())?;
    let manner = MANNERS
        .iter()
        .find(|(value, _)| *value == form.manner)
        .map(|(_, text)| *text)
        .ok_or(ConsoleError::Form {
            field: "Art des Widerrufs",
            reason: "bitte wählen Sie schriftlich, mündlich oder elektronisch".into(),
        })?;
    held(&console, &id)?;
    console
        .node
        .submission()
        .withdraw_consent(
            &signed_in.client(),
            WithdrawConsentRequest {
                consent_id: id.clone(),
                recorded_by: signed_in.account.display_name.clone(),
                manner: manner.to_string(),
                idempotency_key: String::new(),
            },
        )
        .await?;
    tracing::info!(account = %signed_in.account.name, consent_id = %id, "console: consent withdrawn");
    Ok(Redirect::to(&format!("/einwilligung/{id}")).into_response())
}
