//! Einwilligung erfassen / ersetzen: the form of a new consent (empty, or prefilled from the
//! consent it replaces), read as `multipart/form-data` because it carries the signed consent
//! form as a file ([`super::consent_upload`] reads it: the file is streamed through SHA-256
//! and dropped; the node keeps only the hash, the document stays in the office's records,
//! `evidence_reference` names it). `recorded_by` is the signed-in account's display name,
//! never a form field.

use super::consent_upload::{field_error, read_form, request, unreadable, MAX_EVIDENCE_BYTES};
use super::consents::{held, CATEGORIES, FORMS, LEGAL_BASES, PURPOSES};
use super::html;
use crate::app::Console;
use crate::signed_in::{SignedIn, CASEWORK};
use crate::view::Frame;
use crate::{refusal, ConsoleError};
use askama::Template;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1::{ConsentGiver, ConsentRecord};

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
