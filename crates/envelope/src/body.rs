//! Facts read off a message body: which kind it is and whom it is about.

use kurzdraht_proto::v1::{message_body::Body, MessageBody, MessageKind, Subject};

/// The kind a body is, or `None` when the body is empty.
pub fn kind_of(body: &MessageBody) -> Option<MessageKind> {
    Some(match body.body.as_ref()? {
        Body::CertificationRequest(_) => MessageKind::CertificationRequest,
        Body::MoveOutCertification(_) => MessageKind::MoveOutCertification,
        Body::MoveOutDecision(_) => MessageKind::MoveOutDecision,
        Body::QualificationReferral(_) => MessageKind::QualificationReferral,
        Body::ReferralResponse(_) => MessageKind::ReferralResponse,
        Body::ConsentNotice(_) => MessageKind::ConsentNotice,
        Body::ConsentWithdrawal(_) => MessageKind::ConsentWithdrawal,
    })
}

/// The person a case message is about. Consent notices carry their subject inside the
/// consent record; withdrawals carry none.
pub fn subject_of(body: &MessageBody) -> Option<&Subject> {
    match body.body.as_ref()? {
        Body::CertificationRequest(m) => m.subject.as_ref(),
        Body::MoveOutCertification(m) => m.subject.as_ref(),
        Body::MoveOutDecision(m) => m.subject.as_ref(),
        Body::QualificationReferral(m) => m.subject.as_ref(),
        Body::ReferralResponse(m) => m.subject.as_ref(),
        Body::ConsentNotice(m) => m.consent.as_ref().and_then(|c| c.subject.as_ref()),
        Body::ConsentWithdrawal(_) => None,
    }
}
