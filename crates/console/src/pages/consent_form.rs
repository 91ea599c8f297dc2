//! Einwilligung erfassen / ersetzen: the form of a new consent (empty, or prefilled from the
//! consent it replaces), read as `multipart/form-data` because it carries the signed consent
//! form as a file. The file is streamed through SHA-256 and dropped: the node keeps only the
//! hash (the document stays in the office's records, `evidence_reference` names it); it is
//! never stored or logged. At most [`MAX_EVIDENCE_BYTES`] (20 MiB) per file.
//! `recorded_by` is the signed-in account's display name, never a form field.

use super::consents::{held, CATEGORIES, FORMS, LEGAL_BASES, PURPOSES};
use super::html;
use crate::app::Console;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::{self, Frame};
use crate::{refusal, ConsoleError};
use askama::Template;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1::{Address, ConsentGiver, ConsentRecord, RecordConsentRequest, Subject};
use sha2::{Digest, Sha256};
use time::{Date, Month, OffsetDateTime};

/// The largest signed consent form the console takes (20 MiB): a scanned form of a few
/// pages. A larger file is refused with a German message; nothing is recorded.
pub const MAX_EVIDENCE_BYTES: u64 = 20 * 1024 * 1024;
/// The longest text field in bytes (the node's limits are lower; this bounds what the
/// console reads before the node checks it).
const MAX_FIELD_BYTES: usize = 4096;
/// The most text fields one form may carry (checkboxes count one each).
const MAX_FIELDS: usize = 200;
/// The body limit of the form's POST: the file and the text fields around it.
pub const MAX_BODY_BYTES: usize = MAX_EVIDENCE_BYTES as usize + 1024 * 1024;

/// What the form holds (as typed; re-shown after a refusal).
#[derive(Debug, Clone, Default)]
pub struct ConsentFormValues {
    pub csrf: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: String,
    pub street: String,
    pub postal_code: String,
    pub city: String,
    pub given_by: String,
    pub guardian_name: String,
    pub recipients: Vec<String>,
    pub purposes: Vec<String>,
    pub categories: Vec<String>,
    pub legal_basis: String,
    pub form: String,
    pub valid_from: String,
    pub valid_until: String,
    pub evidence_reference: String,
    pub supersedes: String,
}

/// One checkbox or radio button.
pub struct Choice {
    pub id: String,
    pub value: String,
    pub label: String,
    pub hint: &'static str,
    pub checked: bool,
}

fn choices<'a>(
    field: &str,
    options: impl Iterator<Item = (&'a str, String, &'static str)>,
    selected: &[String],
) -> Vec<Choice> {
    options
        .enumerate()
        .map(|(i, (value, label, hint))| Choice {
            id: if i == 0 {
                field.to_string()
            } else {
                format!("{field}-{i}")
            },
            checked: selected.iter().any(|s| s == value),
            value: value.to_string(),
            label,
            hint,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "consent_form.html")]
struct FormPage {
    frame: Frame,
    title: &'static str,
    v: ConsentFormValues,
    errors: Vec<(&'static str, String)>,
    given_by: Vec<Choice>,
    recipients: Vec<Choice>,
    purposes: Vec<Choice>,
    categories: Vec<Choice>,
    legal_bases: Vec<Choice>,
    forms: Vec<Choice>,
    max_mib: u64,
    recorded_by: String,
}

impl FormPage {
    /// The message of the field `id`, if it was refused.
    fn error(&self, id: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == id)
            .map(|(_, m)| m.as_str())
    }
}

fn render_form(
    console: &Console,
    signed_in: &SignedIn,
    v: ConsentFormValues,
    errors: Vec<(&'static str, String)>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let own = console.node.agency().to_string();
    let directory = console.node.directory();
    let others: Vec<(String, String)> = directory
        .agencies()
        .filter(|a| a.id != own)
        .map(|a| (a.id.clone(), a.name.clone()))
        .collect();
    let one = |s: &str| vec![s.to_string()];
    let page = FormPage {
        frame: signed_in.frame(console, "/einwilligungen"),
        title: if v.supersedes.is_empty() {
            "Einwilligung erfassen"
        } else {
            "Einwilligung ersetzen"
        },
        given_by: choices(
            "given_by",
            [
                ("person", "die Person selbst".to_string(), ""),
                (
                    "sorgeberechtigt",
                    "eine sorgeberechtigte Person".to_string(),
                    "Unter 15 Jahren gibt die Einwilligung eine sorgeberechtigte Person.",
                ),
            ]
            .into_iter(),
            &one(&v.given_by),
        ),
        recipients: choices(
            "recipients",
            others
                .iter()
                .map(|(id, name)| (id.as_str(), name.clone(), "")),
            &v.recipients,
        ),
        purposes: choices(
            "purposes",
            PURPOSES.iter().map(|(s, _, l)| (*s, l.to_string(), "")),
            &v.purposes,
        ),
        categories: choices(
            "categories",
            CATEGORIES
                .iter()
                .map(|(s, _, l, h)| (*s, l.to_string(), *h)),
            &v.categories,
        ),
        legal_bases: choices(
            "legal_basis",
            LEGAL_BASES.iter().map(|(s, _, l)| (*s, l.to_string(), "")),
            &one(&v.legal_basis),
        ),
        forms: choices(
            "form",
            FORMS.iter().map(|(s, _, l)| (*s, l.to_string(), "")),
            &one(&v.form),
        ),
        v,
        errors,
        max_mib: MAX_EVIDENCE_BYTES / (1024 * 1024),
        recorded_by: signed_in.account.display_name.clone(),
    };
    Ok((status, html(page)?).into_response())
}

/// `GET /einwilligung/neu`.
pub async fn new(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligung erfassen")?;
    let v = ConsentFormValues {
        given_by: "person".into(),
        categories: vec!["identitaet".into()],
        legal_basis: "einwilligung".into(),
        form: "schriftlich".into(),
        ..Default::default()
    };
    render_form(&console, &signed_in, v, vec![], StatusCode::OK)
}

/// `GET /einwilligung/{id}/ersetzen`: the form prefilled from consent `id` (not its validity
/// or evidence: a replacement is a newly signed form).
pub async fn replace(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligung ersetzen")?;
    let entry = held(&console, &id)?;
    let c = entry.consent.unwrap_or_default();
    if c.recording_agency != console.node.agency() {
        return Err(NodeError::NotRecordingAgency(format!("consent {id}")).into());
    }
    render_form(&console, &signed_in, prefilled(&c), vec![], StatusCode::OK)
}

fn prefilled(c: &ConsentRecord) -> ConsentFormValues {
    let s = c.subject.clone().unwrap_or_default();
    let a = s.address.clone().unwrap_or_default();
    let slug = |table: &[(&'static str, i32)], v: i32| {
        table
            .iter()
            .find(|(_, x)| *x == v)
            .map(|(s, _)| s.to_string())
            .unwrap_or_default()
    };
    let purposes: Vec<(&str, i32)> = PURPOSES.iter().map(|(s, p, _)| (*s, *p as i32)).collect();
    let categories: Vec<(&str, i32)> = CATEGORIES
        .iter()
        .map(|(s, p, _, _)| (*s, *p as i32))
        .collect();
    let bases: Vec<(&str, i32)> = LEGAL_BASES
        .iter()
        .map(|(s, p, _)| (*s, *p as i32))
        .collect();
    let forms: Vec<(&str, i32)> = FORMS.iter().map(|(s, p, _)| (*s, *p as i32)).collect();
    ConsentFormValues {
        csrf: None,
        given_name: s.given_name,
        family_name: s.family_name,
        date_of_birth: s.date_of_birth,
        street: a.street,
        postal_code: a.postal_code,
        city: a.city,
        given_by: match ConsentGiver::try_from(c.given_by) {
            Ok(ConsentGiver::Guardian) => "sorgeberechtigt".into(),
            _ => "person".into(),
        },
        guardian_name: c.guardian_name.clone(),
        recipients: c.recipients.clone(),
        purposes: c.purposes.iter().map(|p| slug(&purposes, *p)).collect(),
        categories: c.categories.iter().map(|p| slug(&categories, *p)).collect(),
        legal_basis: slug(&bases, c.legal_basis),
        form: slug(&forms, c.form),
        valid_from: String::new(),
        valid_until: String::new(),
        evidence_reference: String::new(),
        supersedes: c.consent_id.clone(),
    }
}

/// What the multipart body gave: the values, and the file's hash and size.
struct Submitted {
    v: ConsentFormValues,
    evidence: Option<([u8; 32], u64)>,
    too_large: bool,
}

fn unreadable(reason: impl ToString) -> ConsoleError {
    ConsoleError::Form {
        field: "Formular",
        reason: reason.to_string(),
    }
}

async fn text(field: &mut Field<'_>) -> Result<String, ConsoleError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(unreadable(format!(
                "ein Feld ist länger als {MAX_FIELD_BYTES} Bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| unreadable("kein gültiger Text (UTF-8)"))
}

/// Reads the form, hashing the file as it streams by (its bytes are not kept).
async fn read_form(mut multipart: Multipart) -> Result<Submitted, ConsoleError> {
    let mut s = Submitted {
        v: ConsentFormValues::default(),
        evidence: None,
        too_large: false,
    };
    let mut fields = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(body_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "evidence_file" {
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = field.chunk().await.map_err(body_error)? {
                size += chunk.len() as u64;
                if size > MAX_EVIDENCE_BYTES {
                    s.too_large = true;
                } else {
                    hasher.update(&chunk);
                }
            }
            if size > 0 && !s.too_large {
                s.evidence = Some((hasher.finalize().into(), size));
            }
            continue;
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(unreadable("zu viele Felder"));
        }
        let value = text(&mut field).await?;
        let v = &mut s.v;
        match name.as_str() {
            "csrf" => v.csrf = Some(value),
            "given_name" => v.given_name = value,
            "family_name" => v.family_name = value,
            "date_of_birth" => v.date_of_birth = value,
            "street" => v.street = value,
            "postal_code" => v.postal_code = value,
            "city" => v.city = value,
            "given_by" => v.given_by = value,
            "guardian_name" => v.guardian_name = value,
            "recipients" => v.recipients.push(value),
            "purposes" => v.purposes.push(value),
            "categories" => v.categories.push(value),
            "legal_basis" => v.legal_basis = value,
            "form" => v.form = value,
            "valid_from" => v.valid_from = value,
            "valid_until" => v.valid_until = value,
            "evidence_reference" => v.evidence_reference = value,
            "supersedes" => v.supersedes = value,
            // anything else (e.g. a `recorded_by` someone added) is ignored
            _ => {}
        }
    }
    Ok(s)
}

/// A body that ends early or exceeds the body limit: the file was larger than allowed.
fn body_error(e: axum::extract::multipart::MultipartError) -> ConsoleError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ConsoleError::Form {
            field: "Unterschriebenes Einwilligungsformular",
            reason: format!(
                "Die Datei ist größer als {} MiB.",
                MAX_EVIDENCE_BYTES / (1024 * 1024)
            ),
        }
    } else {
        unreadable(e.body_text())
    }
}

/// The start (00:00) of a German calendar day `YYYY-MM-DD`, in ms since the epoch.
fn german_day_start_ms(iso: &str) -> Option<i64> {
    let mut parts = iso.split('-');
    let y: i32 = parts.next()?.parse().ok()?;
    let m: u8 = parts.next()?.parse().ok()?;
    let d: u8 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
    let midnight_utc: OffsetDateTime = date.midnight().assume_utc();
    let local = midnight_utc
        - time::Duration::seconds(i64::from(view::german_offset(midnight_utc).whole_seconds()));
    Some((local.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn lookup<T: Copy>(table: impl Iterator<Item = (&'static str, T)>, value: &str) -> Option<T> {
    table.into_iter().find(|(s, _)| *s == value).map(|(_, t)| t)
}

/// The request a filled form asks for, or the form's own refusals (fields the node does
/// not see: dates, the file).
fn request(
    s: &Submitted,
    recorded_by: &str,
) -> Result<RecordConsentRequest, Vec<(&'static str, String)>> {
    let v = &s.v;
    let mut errors = Vec::new();
    let date = |value: &str, field: &'static str, end: bool, errors: &mut Vec<_>| -> i64 {
        if value.trim().is_empty() {
            return 0;
        }
        match german_day_start_ms(value.trim()) {
            Some(ms) if end => ms + 24 * 3600 * 1000 - 1,
            Some(ms) => ms,
            None => {
                errors.push((
                    field,
                    "Bitte geben Sie ein Datum an (TT.MM.JJJJ).".to_string(),
                ));
                0
            }
        }
    };
    let valid_from_ms = date(&v.valid_from, "valid_from", false, &mut errors);
    let valid_until_ms = date(&v.valid_until, "valid_until", true, &mut errors);
    let evidence_sha256 = match (s.too_large, s.evidence) {
        (true, _) => {
            errors.push((
                "evidence_file",
                format!(
                    "Die Datei ist größer als {} MiB. Laden Sie eine kleinere Fassung hoch (z. B. als PDF mit geringerer Auflösung gescannt).",
                    MAX_EVIDENCE_BYTES / (1024 * 1024)
                ),
            ));
            vec![]
        }
        (false, None) => {
            errors.push((
                "evidence_file",
                "Bitte wählen Sie die Datei des unterschriebenen Einwilligungsformulars aus."
                    .to_string(),
            ));
            vec![]
        }
        (false, Some((hash, _))) => hash.to_vec(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let given_by = match v.given_by.as_str() {
        "sorgeberechtigt" => ConsentGiver::Guardian,
        "person" => ConsentGiver::Person,
        _ => ConsentGiver::Unspecified,
    };
    let any_address = [&v.street, &v.postal_code, &v.city]
        .iter()
        .any(|x| !x.trim().is_empty());
    Ok(RecordConsentRequest {
        subject: Some(Subject {
            given_name: v.given_name.trim().to_string(),
            family_name: v.family_name.trim().to_string(),
            date_of_birth: v.date_of_birth.trim().to_string(),
            address: any_address.then(|| Address {
                street: v.street.trim().to_string(),
                postal_code: v.postal_code.trim().to_string(),
                city: v.city.trim().to_string(),
            }),
            case_references: vec![],
        }),
        given_by: given_by as i32,
        guardian_name: match given_by {
            ConsentGiver::Guardian => v.guardian_name.trim().to_string(),
            _ => String::new(),
        },
        recipients: v.recipients.clone(),
        purposes: v
            .purposes
            .iter()
            .map(|p| lookup(PURPOSES.iter().map(|(s, x, _)| (*s, *x as i32)), p).unwrap_or(0))
            .collect(),
        categories: v
            .categories
            .iter()
            .map(|p| lookup(CATEGORIES.iter().map(|(s, x, _, _)| (*s, *x as i32)), p).unwrap_or(0))
            .collect(),
        legal_basis: lookup(
            LEGAL_BASES.iter().map(|(s, x, _)| (*s, *x as i32)),
            &v.legal_basis,
        )
        .unwrap_or(0),
        form: lookup(FORMS.iter().map(|(s, x, _)| (*s, *x as i32)), &v.form).unwrap_or(0),
        evidence_sha256,
        supersedes: v.supersedes.trim().to_string(),
        valid_from_ms,
        valid_until_ms,
        evidence_reference: v.evidence_reference.trim().to_string(),
        recorded_by: recorded_by.to_string(),
        idempotency_key: String::new(),
    })
}

/// The form field a refusal of the node names (its proto field), and the German message.
fn field_error(e: &NodeError) -> Option<(&'static str, String)> {
    let NodeError::Invalid { field, reason } = e else {
        return None;
    };
    let f = field.as_str();
    let starts =
        |p: &str| f == p || f.starts_with(&format!("{p}[")) || f.starts_with(&format!("{p}."));
    let (id, message) = if f == "given_by" && reason.contains("under 15") {
        ("given_by", "Die Person ist jünger als 15 Jahre: Die Einwilligung muss eine sorgeberechtigte Person geben. Wählen Sie „eine sorgeberechtigte Person“ und tragen Sie ihren Namen ein.")
    } else if f == "given_by" {
        (
            "given_by",
            "Bitte wählen Sie, wer die Einwilligung gegeben hat.",
        )
    } else if f == "guardian_name" && reason.contains("FAMILY_SITUATION") {
        ("guardian_name", "Der Name der sorgeberechtigten Person gehört zur familiären Situation: Wählen Sie bei den Datenkategorien „Familiäre Situation“ aus.")
    } else if f == "guardian_name" {
        (
            "guardian_name",
            "Bitte geben Sie den Namen der sorgeberechtigten Person an.",
        )
    } else if f == "subject.given_name" {
        ("given_name", "Bitte geben Sie den Vornamen an.")
    } else if f == "subject.family_name" || f == "subject" {
        ("family_name", "Bitte geben Sie den Familiennamen an.")
    } else if f == "subject.date_of_birth" {
        (
            "date_of_birth",
            "Bitte geben Sie ein gültiges Geburtsdatum an (nicht in der Zukunft).",
        )
    } else if f == "subject.address" {
        ("street", "Eine Anschrift wird nur mit der Datenkategorie „Anschrift“ übermittelt: Wählen Sie sie aus oder lassen Sie die Anschrift leer.")
    } else if f == "subject.address.street" {
        ("street", "Die Straße ist zu lang.")
    } else if f == "subject.address.postal_code" {
        ("postal_code", "Die Postleitzahl ist zu lang.")
    } else if f == "subject.address.city" {
        ("city", "Der Ort ist zu lang.")
    } else if starts("recipients") {
        ("recipients", "Bitte wählen Sie mindestens eine empfangende Dienststelle aus (eine pauschale Einwilligung ist unwirksam).")
    } else if starts("purposes") {
        ("purposes", "Bitte wählen Sie mindestens einen Zweck aus.")
    } else if starts("categories") && reason.contains("IDENTITY") {
        (
            "categories",
            "„Name und Geburtsdatum“ ist immer nötig: Jede Nachricht nennt die Person.",
        )
    } else if starts("categories") {
        (
            "categories",
            "Bitte wählen Sie die Datenkategorien aus, die die Einwilligung umfasst.",
        )
    } else if f == "legal_basis" && reason.contains("health") {
        ("legal_basis", "Gesundheitsdaten brauchen die ausdrückliche Einwilligung (Art. 9 Abs. 2 Buchst. a DSGVO) als Rechtsgrundlage.")
    } else if f == "legal_basis" {
        ("legal_basis", "Bitte wählen Sie die Rechtsgrundlage.")
    } else if f == "form" {
        (
            "form",
            "Bitte wählen Sie, ob die Einwilligung schriftlich oder elektronisch gegeben wurde.",
        )
    } else if f == "valid_from_ms" {
        ("valid_from", "Bitte prüfen Sie den Beginn der Gültigkeit.")
    } else if f == "valid_until_ms" {
        (
            "valid_until",
            "Das Ende der Gültigkeit muss nach ihrem Beginn und in der Zukunft liegen.",
        )
    } else if f == "evidence_sha256" {
        (
            "evidence_file",
            "Bitte wählen Sie die Datei des unterschriebenen Einwilligungsformulars aus.",
        )
    } else if f == "evidence_reference" {
        ("evidence_reference", "Bitte geben Sie das Aktenzeichen des unterschriebenen Formulars an (höchstens 200 Zeichen).")
    } else {
        return None;
    };
    Some((id, message.to_string()))
}

/// `POST /einwilligung/neu` (multipart): records the consent as the signed-in account and
/// shows it; a refusal re-renders the form with the message at its field.
pub async fn submit(
    State(console): State<Console>,
    signed_in: SignedIn,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ConsoleError> {
    signed_in.require(CASEWORK, "Einwilligung erfassen")?;
    let multipart = multipart.map_err(|e| unreadable(e.body_text()))?;
    let submitted = read_form(multipart).await;
    let submitted = match submitted {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    signed_in.check_form(submitted.v.csrf.as_deref())?;
    let req = match request(&submitted, &signed_in.account.display_name) {
        Ok(req) => req,
        Err(errors) => {
            let status = if submitted.too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            return render_form(&console, &signed_in, submitted.v, errors, status);
        }
    };
    match console
        .node
        .submission()
        .record_consent(&signed_in.client(), req)
        .await
    {
        Ok(answer) => {
            let id = answer.consent.map(|c| c.consent_id).unwrap_or_default();
            tracing::info!(account = %signed_in.account.name, consent_id = %id, "console: consent recorded");
            Ok(Redirect::to(&format!("/einwilligung/{id}")).into_response())
        }
        Err(e) if e.reason_code().starts_with("store") || e.reason_code() == "not-stored" => {
            Err(e.into())
        }
        Err(e) => {
            let error = field_error(&e).unwrap_or_else(|| {
                let x = refusal::explain(e.reason_code());
                ("", format!("{} {}", x.what, x.next))
            });
            let mut errors = vec![error];
            if submitted.evidence.is_some() {
                errors.push((
                    "evidence_file",
                    "Aus Sicherheitsgründen behält der Browser die Datei nicht: Bitte wählen Sie sie erneut aus.".into(),
                ));
            }
            let mut v = submitted.v;
            v.csrf = None;
            render_form(
                &console,
                &signed_in,
                v,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_days_start_at_german_midnight() {
        // winter: CET (UTC+1); summer: CEST (UTC+2)
        assert_eq!(german_day_start_ms("2026-12-24"), Some(1_798_066_800_000));
        assert_eq!(german_day_start_ms("2026-07-01"), Some(1_782_856_800_000));
        assert_eq!(german_day_start_ms("2026-02-30"), None);
        assert_eq!(german_day_start_ms("24.12.2026"), None);
        assert_eq!(german_day_start_ms("2026-12-24-1"), None);
    }

    #[test]
    fn a_refusal_names_the_forms_field() {
        let e = NodeError::invalid(
            "given_by",
            "the person is under 15; a guardian must give consent",
        );
        assert_eq!(field_error(&e).map(|(f, _)| f), Some("given_by"));
        let e = NodeError::invalid("recipients[1]", "is named twice");
        assert_eq!(field_error(&e).map(|(f, _)| f), Some("recipients"));
        let e = NodeError::invalid("evidence_sha256", "must be 32 bytes");
        assert_eq!(field_error(&e).map(|(f, _)| f), Some("evidence_file"));
        assert_eq!(field_error(&NodeError::NotFound("x".into())), None);
    }
}
