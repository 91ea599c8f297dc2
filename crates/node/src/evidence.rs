//! Proof of consent: for any message this node sent or received (or any consent it holds),
//! the consent record with the recording agency's signed notice — kept after withdrawal and
//! expiry, so that the lawfulness of a past transfer can be shown (Art. 7(1) GDPR).

use crate::{node::Node, NodeError};
use kurzdraht_envelope::{body::kind_of, ids, verify_and_open, verify_header};
use kurzdraht_ledger::consent;
use kurzdraht_proto::v1::{
    get_consent_evidence_request::About, message_body::Body, ConsentEvidence,
    GetConsentEvidenceRequest, MessageKind, SignedEnvelope,
};

impl Node {
    /// The consent behind a message sent or received here, or a consent by id.
    pub fn consent_evidence(
        &self,
        req: GetConsentEvidenceRequest,
    ) -> Result<ConsentEvidence, NodeError> {
        let consent_id = match req.about {
            Some(About::ConsentId(id)) => {
                ids::parse_id("consent_id", &id)
                    .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
                id
            }
            Some(About::MessageId(id)) => {
                ids::parse_id("message_id", &id)
                    .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
                let sent = self
                    .ledger()
                    .message(&id)?
                    .and_then(|r| r.status)
                    .map(|s| s.consent_id);
                let received = || -> Result<Option<String>, NodeError> {
                    Ok(self.ledger().inbox_record(&id)?.map(|r| r.consent_id))
                };
                match sent {
                    Some(c) => c,
                    None => {
                        received()?.ok_or_else(|| NodeError::NotFound(format!("message {id}")))?
                    }
                }
            }
            None => {
                return Err(NodeError::invalid(
                    "about",
                    "give a message_id or a consent_id",
                ))
            }
        };
        if consent_id.is_empty() {
            return Err(NodeError::NotFound(
                "that message carries no personal data and cites no consent".into(),
            ));
        }
        let stored = self
            .ledger()
            .consent(&consent_id)?
            .ok_or_else(|| NodeError::NotFound(format!("consent {consent_id}")))?;
        let record = stored
            .record
            .clone()
            .ok_or_else(|| NodeError::NotFound(format!("consent {consent_id}")))?;
        let signature_verified = stored.notice.as_ref().is_some_and(|n| {
            if stored.erased_at_ms > 0 {
                self.header_proves(n, &record.recording_agency, &record.consent_id)
            } else {
                self.notice_proves(n, &record.recording_agency, &record)
            }
        });
        Ok(ConsentEvidence {
            state: consent::state_at(&stored, self.now_ms()) as i32,
            consent: Some(record),
            notice: stored.notice,
            withdrawal: stored.withdrawal,
            withdrawal_notice: stored.withdrawal_notice,
            superseded_by: stored.superseded_by,
            signature_verified,
        })
    }

    /// After erasure only the notice's header is left: it still proves that the recording
    /// agency issued a consent notice for this consent id.
    fn header_proves(
        &self,
        notice: &SignedEnvelope,
        recording_agency: &str,
        consent_id: &str,
    ) -> bool {
        let Some(agency) = self.directory().get(recording_agency) else {
            return false;
        };
        notice.signer == recording_agency
            && verify_header(notice, &agency.signing_keys, &self.limits().envelope).is_ok_and(|h| {
                h.consent_id == consent_id && h.kind == MessageKind::ConsentNotice as i32
            })
    }

    /// Whether `notice` is a ConsentNotice signed by `recording_agency`'s pinned key that
    /// carries exactly `record`.
    fn notice_proves(
        &self,
        notice: &SignedEnvelope,
        recording_agency: &str,
        record: &kurzdraht_proto::v1::ConsentRecord,
    ) -> bool {
        let Some(agency) = self.directory().get(recording_agency) else {
            return false;
        };
        if notice.signer != recording_agency {
            return false;
        }
        let Ok(opened) = verify_and_open(notice, &agency.signing_keys, &self.limits().envelope)
        else {
            return false;
        };
        kind_of(&opened.body) == Some(MessageKind::ConsentNotice)
            && matches!(&opened.body.body, Some(Body::ConsentNotice(n)) if n.consent.as_ref() == Some(record))
    }
}
