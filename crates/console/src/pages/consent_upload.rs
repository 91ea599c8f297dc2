//! The consent form's body, read and translated: the `multipart/form-data` stream with the
//! signed consent form hashed as it passes (SHA-256; its bytes are dropped, never stored or
//! logged; at most [`MAX_EVIDENCE_BYTES`]), text fields bounded; the filled form as the
//! node's `RecordConsentRequest`; and the node's refusals as the form's fields in German.

use super::consent_form::ConsentFormValues;
use super::consents::{CATEGORIES, FORMS, LEGAL_BASES, PURPOSES};
use crate::view;
use crate::ConsoleError;
use axum::extract::multipart::{Field, Multipart};
use axum::http::StatusCode;
use kurzdraht_node::NodeError;
use kurzdraht_proto::v1::{Address, ConsentGiver, RecordConsentRequest, Subject};
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

/// What the multipart body gave: the values, and the file's hash and size.
pub struct Submitted {
    pub v: ConsentFormValues,
    pub evidence: Option<([u8; 32], u64)>,
    pub too_large: bool,
}

pub fn unreadable(reason: impl ToString) -> ConsoleError {
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
pub async fn read_form(mut multipart: Multipart) -> Result<Submitted, ConsoleError> {
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
        ConsoleError::TooLarge {
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
pub fn request(
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
pub fn field_error(e: &NodeError) -> Option<(&'static str, String)> {
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
