//! The rules a consent record must satisfy — one function for the records this node
//! records (`RecordConsent`) and the records peers replicate to it (`ConsentNotice`), so
//! that a replicated consent is trusted exactly as far as a local one: § 67b SGB X and
//! Art. 7/9 GDPR as far as a record can show them, and that a notice discloses nothing its
//! own categories do not cover.
//!
//! Pure: the directory is the only context; the time is the record's own `recorded_at_ms`.

use crate::categories::categories_carried;
use crate::{clock, directory::Directory, policy, NodeError};
use kurzdraht_envelope::ids;
use kurzdraht_proto::v1::{
    message_body::Body, ConsentForm, ConsentGiver, ConsentNotice, ConsentRecord, DataCategory,
    LegalBasis, MessageBody, Purpose, RecordConsentRequest,
};
use std::collections::BTreeSet;

/// The most agencies one consent may name.
pub const MAX_RECIPIENTS: usize = 16;
/// The longest evidence reference (a file number with a short note), in characters.
pub const MAX_REFERENCE: usize = 200;
/// The longest description of how a person withdrew, in characters.
pub const MAX_MANNER: usize = 500;

/// What a notice of `record` carries, as the consent check sees a message.
pub fn notice_body(record: &ConsentRecord) -> MessageBody {
    MessageBody {
        body: Some(Body::ConsentNotice(ConsentNotice {
            consent: Some(record.clone()),
        })),
    }
}

/// The record a `RecordConsent` request asks for, as `agency` records it at `now` (not yet
/// validated): a new id; valid from now and for `default_validity` unless the request
/// says otherwise; purposes and categories sorted, each once.
pub fn from_request(
    req: RecordConsentRequest,
    agency: &str,
    now: i64,
    default_validity: std::time::Duration,
) -> ConsentRecord {
    let valid_from = if req.valid_from_ms == 0 {
        now
    } else {
        req.valid_from_ms
    };
    let valid_until = if req.valid_until_ms == 0 {
        valid_from.saturating_add(default_validity.as_millis() as i64)
    } else {
        req.valid_until_ms
    };
    let mut purposes = req.purposes;
    purposes.sort_unstable();
    purposes.dedup();
    let mut categories = req.categories;
    categories.sort_unstable();
    categories.dedup();
    ConsentRecord {
        consent_id: ids::new_id(),
        subject: req.subject,
        given_by: req.given_by,
        guardian_name: req.guardian_name,
        recording_agency: agency.to_string(),
        recipients: req.recipients,
        purposes,
        valid_from_ms: valid_from,
        valid_until_ms: valid_until,
        evidence_reference: req.evidence_reference,
        recorded_by: req.recorded_by,
        recorded_at_ms: now,
        categories,
        legal_basis: req.legal_basis,
        form: req.form,
        evidence_sha256: req.evidence_sha256,
        supersedes: req.supersedes,
    }
}

/// Checks a whole consent record. `prefix` is prepended to field names in errors (`""` for
/// a request's fields, `"body.consent."` for a replicated record).
pub fn validate(
    prefix: &str,
    record: &ConsentRecord,
    directory: &Directory,
) -> Result<(), NodeError> {
    let field = |name: &str| format!("{prefix}{name}");
    ids::parse_id("consent_id", &record.consent_id)
        .map_err(|e| NodeError::invalid(field("consent_id"), e.to_string()))?;
    let dob = policy::validate_subject(&field("subject"), record.subject.as_ref())?;
    let given_by = ConsentGiver::try_from(record.given_by)
        .ok()
        .filter(|g| *g != ConsentGiver::Unspecified)
        .ok_or_else(|| NodeError::invalid(field("given_by"), "must be PERSON or GUARDIAN"))?;
    policy::optional_name(
        &field("guardian_name"),
        &record.guardian_name,
        policy::MAX_NAME,
    )?;
    let recorded_on = clock::german_date_of_ms(record.recorded_at_ms)?;
    policy::check_date_of_birth(&field("subject.date_of_birth"), dob, recorded_on)?;
    let age = policy::age_on(dob, recorded_on);
    match given_by {
        ConsentGiver::Person if age < policy::CONSENT_AGE => {
            return Err(NodeError::invalid(
                field("given_by"),
                "the person is under 15; a guardian must give consent",
            ))
        }
        ConsentGiver::Guardian if record.guardian_name.trim().is_empty() => {
            return Err(NodeError::invalid(
                field("guardian_name"),
                "is required when a guardian gives consent",
            ))
        }
        _ => {}
    }
    directory.require(&field("recording_agency"), &record.recording_agency)?;
    validate_recipients(prefix, record, directory)?;
    if record.purposes.is_empty() {
        return Err(NodeError::invalid(
            field("purposes"),
            "name at least one purpose",
        ));
    }
    for (i, p) in record.purposes.iter().enumerate() {
        if Purpose::try_from(*p).map_or(true, |p| p == Purpose::Unspecified) {
            return Err(NodeError::invalid(
                field(&format!("purposes[{i}]")),
                "is unspecified or unknown",
            ));
        }
    }
    if record.valid_until_ms <= record.valid_from_ms {
        return Err(NodeError::invalid(
            field("valid_until_ms"),
            "must lie after valid_from_ms",
        ));
    }
    validate_categories(prefix, record)?;
    if ConsentForm::try_from(record.form).map_or(true, |f| f == ConsentForm::Unspecified) {
        return Err(NodeError::invalid(
            field("form"),
            "must be WRITTEN or ELECTRONIC",
        ));
    }
    if record.evidence_sha256.len() != 32 {
        return Err(NodeError::invalid(
            field("evidence_sha256"),
            "must be the 32-byte SHA-256 of the signed consent form",
        ));
    }
    if record.evidence_reference.trim().is_empty() {
        return Err(NodeError::invalid(
            field("evidence_reference"),
            "is required: the reference of the signed consent form",
        ));
    }
    policy::optional_name(
        &field("evidence_reference"),
        &record.evidence_reference,
        MAX_REFERENCE,
    )?;
    policy::required_name(&field("recorded_by"), &record.recorded_by, policy::MAX_NAME)?;
    if !record.supersedes.is_empty() {
        ids::parse_id("supersedes", &record.supersedes)
            .map_err(|e| NodeError::invalid(field("supersedes"), e.to_string()))?;
        if record.supersedes == record.consent_id {
            return Err(NodeError::invalid(
                field("supersedes"),
                "names the consent itself",
            ));
        }
    }
    validate_disclosure(prefix, record)
}

fn validate_recipients(
    prefix: &str,
    record: &ConsentRecord,
    directory: &Directory,
) -> Result<(), NodeError> {
    let field = format!("{prefix}recipients");
    if record.recipients.is_empty() {
        return Err(NodeError::invalid(
            field,
            "name at least one agency (a blanket consent is invalid)",
        ));
    }
    if record.recipients.len() > MAX_RECIPIENTS {
        return Err(NodeError::invalid(
            field,
            format!("names more than {MAX_RECIPIENTS} agencies"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, r) in record.recipients.iter().enumerate() {
        let field = format!("{prefix}recipients[{i}]");
        directory.require(&field, r)?;
        if *r == record.recording_agency {
            return Err(NodeError::invalid(
                field,
                "is the agency that records the consent",
            ));
        }
        if !seen.insert(r.as_str()) {
            return Err(NodeError::invalid(field, "is named twice"));
        }
    }
    Ok(())
}

fn validate_categories(prefix: &str, record: &ConsentRecord) -> Result<(), NodeError> {
    let field = format!("{prefix}categories");
    if record.categories.is_empty() {
        return Err(NodeError::invalid(
            field,
            "name the categories of data the consent covers",
        ));
    }
    for (i, c) in record.categories.iter().enumerate() {
        if DataCategory::try_from(*c).map_or(true, |c| c == DataCategory::Unspecified) {
            return Err(NodeError::invalid(
                format!("{field}[{i}]"),
                "is unspecified or unknown",
            ));
        }
    }
    let legal_basis = LegalBasis::try_from(record.legal_basis)
        .ok()
        .filter(|b| *b != LegalBasis::Unspecified)
        .ok_or_else(|| NodeError::invalid(format!("{prefix}legal_basis"), "is required"))?;
    if record.categories.contains(&(DataCategory::Health as i32))
        && legal_basis != LegalBasis::ExplicitConsentGdpr92A
    {
        return Err(NodeError::invalid(
            format!("{prefix}legal_basis"),
            "health data needs explicit consent under Art. 9(2)(a) GDPR",
        ));
    }
    Ok(())
}

/// A notice discloses only what its own categories cover (as any message must): the
/// person's identity always (so IDENTITY is required), the address only under ADDRESS, case
/// references only under CASE_REFERENCES, a guardian's name only under FAMILY_SITUATION.
fn validate_disclosure(prefix: &str, record: &ConsentRecord) -> Result<(), NodeError> {
    use DataCategory::*;
    for category in categories_carried(&notice_body(record)) {
        if record.categories.contains(&category) {
            continue;
        }
        let (field, what) = match DataCategory::try_from(category) {
            Ok(Identity) => ("categories", "IDENTITY: a consent names the person, and so does every message under it"),
            Ok(Address) => ("subject.address", "ADDRESS: name ADDRESS or leave the address out"),
            Ok(CaseReferences) => (
                "subject.case_references",
                "CASE_REFERENCES: name CASE_REFERENCES or leave the case references out",
            ),
            Ok(FamilySituation) => (
                "guardian_name",
                "FAMILY_SITUATION: the guardian's name tells about the family; name FAMILY_SITUATION",
            ),
            _ => ("categories", "every category of data the notice carries"),
        };
        return Err(NodeError::invalid(
            format!("{prefix}{field}"),
            format!("the consent notice would carry data its categories do not cover; they must include {what}"),
        ));
    }
    Ok(())
}

/// Checks a withdrawal record's texts. `prefix` as for [`validate`].
pub fn validate_withdrawal_texts(
    prefix: &str,
    recorded_by: &str,
    manner: &str,
) -> Result<(), NodeError> {
    policy::required_name(
        &format!("{prefix}recorded_by"),
        recorded_by,
        policy::MAX_NAME,
    )?;
    policy::optional_text(&format!("{prefix}manner"), manner, MAX_MANNER)
}
