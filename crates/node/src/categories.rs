//! Which field of which message carries which category of personal data — one table.
//!
//! A message carries a category when one of the table's fields for its kind is set. Fields
//! not in the table are administrative (caseworker, dates of the procedure, contact of the
//! sending office) and belong to no category. A test checks, against the compiled protobuf
//! descriptors, that every field of every case message is either in the table or listed as
//! administrative, so a new field cannot slip past the consent check.

use kurzdraht_proto::v1::{message_body::Body, DataCategory, MessageBody, Subject};
use std::collections::BTreeSet;

use DataCategory::*;

/// `(message, field, category)`: `message` is the protobuf message name, `field` its field.
pub const FIELD_CATEGORIES: &[(&str, &str, DataCategory)] = &[
    ("Subject", "given_name", Identity),
    ("Subject", "family_name", Identity),
    ("Subject", "date_of_birth", Identity),
    ("Subject", "address", Address),
    ("Subject", "case_references", CaseReferences),
    ("CertificationRequest", "reason", HousingSituation),
    ("MoveOutCertification", "outcome", FamilySituation),
    ("MoveOutCertification", "ground", FamilySituation),
    ("MoveOutCertification", "statement", FamilySituation),
    ("MoveOutCertification", "interview_date", FamilySituation),
    ("MoveOutCertification", "health_note", Health),
    ("MoveOutDecision", "outcome", BenefitDecision),
    ("MoveOutDecision", "ground", BenefitDecision),
    ("MoveOutDecision", "tenancy_contract_date", BenefitDecision),
    ("QualificationReferral", "reason", EducationEmployment),
    ("QualificationReferral", "measure", EducationEmployment),
    ("ReferralResponse", "outcome", EducationEmployment),
    ("ReferralResponse", "note", EducationEmployment),
    // A consent notice carries its record: the subject (above) and who gave the consent.
    ("ConsentRecord", "guardian_name", FamilySituation),
];

/// Fields that carry no personal data of the subject beyond the procedure itself.
pub const ADMINISTRATIVE_FIELDS: &[(&str, &str)] = &[
    ("CertificationRequest", "subject"),
    ("CertificationRequest", "respond_by"),
    ("CertificationRequest", "caseworker"),
    ("MoveOutCertification", "subject"),
    ("MoveOutCertification", "issuing_caseworker"),
    ("MoveOutDecision", "subject"),
    ("MoveOutDecision", "decision_date"),
    ("MoveOutDecision", "caseworker"),
    ("QualificationReferral", "subject"),
    ("QualificationReferral", "contact"),
    ("QualificationReferral", "respond_by"),
    ("ReferralResponse", "subject"),
    ("ReferralResponse", "caseworker"),
    ("ConsentRecord", "consent_id"),
    ("ConsentRecord", "subject"),
    ("ConsentRecord", "given_by"),
    ("ConsentRecord", "recording_agency"),
    ("ConsentRecord", "recipients"),
    ("ConsentRecord", "purposes"),
    ("ConsentRecord", "valid_from_ms"),
    ("ConsentRecord", "valid_until_ms"),
    ("ConsentRecord", "evidence_reference"),
    ("ConsentRecord", "recorded_by"),
    ("ConsentRecord", "recorded_at_ms"),
    ("ConsentRecord", "categories"),
    ("ConsentRecord", "legal_basis"),
    ("ConsentRecord", "form"),
    ("ConsentRecord", "evidence_sha256"),
    ("ConsentRecord", "supersedes"),
];

/// Whether `field` of `message` is set in `body`. Every table entry has an arm here; an
/// entry without one would count as always set (so it is refused rather than let through).
fn is_set(body: &Body, subject: Option<&Subject>, message: &str, field: &str) -> bool {
    let text = |s: &str| !s.trim().is_empty();
    if message == "Subject" {
        let Some(s) = subject else { return false };
        return match field {
            "given_name" => text(&s.given_name),
            "family_name" => text(&s.family_name),
            "date_of_birth" => text(&s.date_of_birth),
            "address" => s
                .address
                .as_ref()
                .is_some_and(|a| text(&a.street) || text(&a.postal_code) || text(&a.city)),
            "case_references" => !s.case_references.is_empty(),
            _ => true,
        };
    }
    match (body, message, field) {
        (Body::CertificationRequest(m), "CertificationRequest", "reason") => text(&m.reason),
        (Body::MoveOutCertification(m), "MoveOutCertification", f) => match f {
            "outcome" => m.outcome != 0,
            "ground" => m.ground != 0,
            "statement" => text(&m.statement),
            "interview_date" => text(&m.interview_date),
            "health_note" => text(&m.health_note),
            _ => true,
        },
        (Body::MoveOutDecision(m), "MoveOutDecision", f) => match f {
            "outcome" => m.outcome != 0,
            "ground" => m.ground != 0,
            "tenancy_contract_date" => text(&m.tenancy_contract_date),
            _ => true,
        },
        (Body::QualificationReferral(m), "QualificationReferral", f) => match f {
            "reason" => text(&m.reason),
            "measure" => text(&m.measure),
            _ => true,
        },
        (Body::ReferralResponse(m), "ReferralResponse", f) => match f {
            "outcome" => m.outcome != 0,
            "note" => text(&m.note),
            _ => true,
        },
        (Body::ConsentNotice(n), "ConsentRecord", f) => {
            let Some(r) = &n.consent else { return false };
            match f {
                "guardian_name" => text(&r.guardian_name),
                _ => true,
            }
        }
        _ => false, // the entry is about another kind of message
    }
}

fn message_name(body: &Body) -> &'static str {
    match body {
        Body::CertificationRequest(_) => "CertificationRequest",
        Body::MoveOutCertification(_) => "MoveOutCertification",
        Body::MoveOutDecision(_) => "MoveOutDecision",
        Body::QualificationReferral(_) => "QualificationReferral",
        Body::ReferralResponse(_) => "ReferralResponse",
        Body::ConsentNotice(_) => "ConsentRecord",
        Body::ConsentWithdrawal(_) => "ConsentWithdrawal",
    }
}

/// The categories of personal data `body` carries (as `DataCategory` values, sorted).
pub fn categories_carried(body: &MessageBody) -> Vec<i32> {
    let Some(b) = &body.body else {
        return Vec::new();
    };
    let subject = kurzdraht_envelope::body::subject_of(body);
    let name = message_name(b);
    let mut out = BTreeSet::new();
    for (message, field, category) in FIELD_CATEGORIES {
        let relevant = *message == "Subject" || *message == name;
        if relevant && is_set(b, subject, message, field) {
            out.insert(*category as i32);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurzdraht_proto::v1::{Address, CertificationRequest, MoveOutCertification};
    use prost::Message;

    fn subject() -> Subject {
        Subject {
            given_name: "Lena".into(),
            family_name: "Hansen".into(),
            date_of_birth: "2005-04-12".into(),
            address: None,
            case_references: vec![],
        }
    }

    #[test]
    fn a_request_carries_identity_and_housing() {
        let body = MessageBody {
            body: Some(Body::CertificationRequest(CertificationRequest {
                subject: Some(subject()),
                reason: "Konflikt".into(),
                respond_by: "2026-12-01".into(),
                caseworker: "Herr Jensen".into(),
            })),
        };
        assert_eq!(
            categories_carried(&body),
            vec![Identity as i32, HousingSituation as i32]
        );
    }

    #[test]
    fn an_address_and_a_health_note_add_their_categories() {
        let mut s = subject();
        s.address = Some(Address {
            city: "Norderstedt".into(),
            ..Default::default()
        });
        let body = MessageBody {
            body: Some(Body::MoveOutCertification(MoveOutCertification {
                subject: Some(s),
                outcome: 1,
                statement: "x".into(),
                health_note: "y".into(),
                ..Default::default()
            })),
        };
        let c = categories_carried(&body);
        assert!(c.contains(&(Address as i32)));
        assert!(c.contains(&(FamilySituation as i32)));
        assert!(c.contains(&(Health as i32)));
        assert!(!c.contains(&(CaseReferences as i32)));
    }

    /// A consent notice carries its subject (identity, and address and case references
    /// when given) and, when a guardian gave the consent, the guardian's name.
    #[test]
    fn a_notice_carries_its_subject_and_guardian() {
        use kurzdraht_proto::v1::{CaseReference, ConsentNotice, ConsentRecord};
        let mut record = ConsentRecord {
            subject: Some(subject()),
            ..Default::default()
        };
        let notice = |r: &ConsentRecord| MessageBody {
            body: Some(Body::ConsentNotice(ConsentNotice {
                consent: Some(r.clone()),
            })),
        };
        assert_eq!(categories_carried(&notice(&record)), vec![Identity as i32]);
        record.guardian_name = "Maria Hansen".into();
        if let Some(s) = record.subject.as_mut() {
            s.case_references.push(CaseReference::default());
            s.address = Some(Address {
                street: "Rathausallee 1".into(),
                ..Default::default()
            });
        }
        assert_eq!(
            categories_carried(&notice(&record)),
            vec![
                Identity as i32,
                Address as i32,
                CaseReferences as i32,
                FamilySituation as i32
            ]
        );
    }

    /// Every field of every case message and of Subject is classified: in the table or
    /// administrative, never both, never neither.
    #[test]
    fn every_field_is_classified() {
        let fds = prost_types_lite::decode(kurzdraht_proto::FILE_DESCRIPTOR_SET);
        let case_messages = [
            "Subject",
            "CertificationRequest",
            "MoveOutCertification",
            "MoveOutDecision",
            "QualificationReferral",
            "ReferralResponse",
            "ConsentRecord",
        ];
        let mut checked = 0;
        for (message, fields) in fds {
            if !case_messages.contains(&message.as_str()) {
                continue;
            }
            for field in fields {
                let in_table = FIELD_CATEGORIES
                    .iter()
                    .any(|(m, f, _)| *m == message && *f == field);
                let admin = ADMINISTRATIVE_FIELDS
                    .iter()
                    .any(|(m, f)| *m == message && *f == field);
                assert!(
                    in_table ^ admin,
                    "{message}.{field} must be in exactly one of FIELD_CATEGORIES and ADMINISTRATIVE_FIELDS"
                );
                checked += 1;
            }
        }
        assert!(checked >= 42, "only {checked} fields seen");
        let _ = MessageBody::default().encode_to_vec();
    }

    /// Just enough of descriptor.proto to list message and field names.
    mod prost_types_lite {
        use prost::Message;

        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptorSet {
            #[prost(message, repeated, tag = "1")]
            file: Vec<FileDescriptorProto>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct FileDescriptorProto {
            #[prost(message, repeated, tag = "4")]
            message_type: Vec<DescriptorProto>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct DescriptorProto {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
            #[prost(message, repeated, tag = "2")]
            field: Vec<FieldDescriptorProto>,
        }
        #[derive(Clone, PartialEq, Message)]
        struct FieldDescriptorProto {
            #[prost(string, optional, tag = "1")]
            name: Option<String>,
        }

        pub fn decode(bytes: &[u8]) -> Vec<(String, Vec<String>)> {
            let set = FileDescriptorSet::decode(bytes).expect("descriptor set");
            set.file
                .into_iter()
                .flat_map(|f| f.message_type)
                .map(|m| {
                    (
                        m.name.unwrap_or_default(),
                        m.field.into_iter().filter_map(|f| f.name).collect(),
                    )
                })
                .collect()
        }
    }
}
