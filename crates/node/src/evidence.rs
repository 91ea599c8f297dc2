//! Proof of consent: for any message this node sent or received (or any consent it holds),
//! the consent record with the recording agency's signed notice — kept after withdrawal and
//! expiry, so that the lawfulness of a past transfer can be shown (Art. 7(1) GDPR). The
//! notice is verified with the recording agency's active and retired keys (a retired key
//! still proves what it signed); a revoked key proves nothing, and the answer says why.

use crate::directory::{Agency, Directory};
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
        let problem = match stored.notice.as_ref() {
            None => Some("no signed notice is held for this consent".to_string()),
            Some(n) if stored.erased_at_ms > 0 => self
                .header_proves(n, &record.recording_agency, &record.consent_id)
                .err(),
            Some(n) => self
                .notice_proves(n, &record.recording_agency, &record)
                .err(),
        };
        Ok(ConsentEvidence {
            state: consent::state_at(&stored, self.now_ms()) as i32,
            consent: Some(record),
            notice: stored.notice,
            withdrawal: stored.withdrawal,
            withdrawal_notice: stored.withdrawal_notice,
            superseded_by: stored.superseded_by,
            signature_verified: problem.is_none(),
            signature_problem: problem.unwrap_or_default(),
        })
    }

    /// After erasure only the notice's header is left: it still proves that the recording
    /// agency issued a consent notice for this consent id. Verified with the keys that
    /// verify stored evidence (active and retired); why not, if not.
    fn header_proves(
        &self,
        notice: &SignedEnvelope,
        recording_agency: &str,
        consent_id: &str,
    ) -> Result<(), String> {
        let directory = self.directory();
        let agency = Self::signing_agency(&directory, notice, recording_agency)?;
        let limits = &self.limits().envelope;
        let header = verify_header(notice, agency.evidence_keys(), limits)
            .map_err(|_| agency.evidence_problem(notice, limits))?;
        if header.consent_id == consent_id && header.kind == MessageKind::ConsentNotice as i32 {
            Ok(())
        } else {
            Err("the signed notice is about another consent".into())
        }
    }

    /// Whether `notice` is a ConsentNotice signed by `recording_agency` with a key that
    /// verifies stored evidence (active or retired) and carries exactly `record`; why not,
    /// if not.
    fn notice_proves(
        &self,
        notice: &SignedEnvelope,
        recording_agency: &str,
        record: &kurzdraht_proto::v1::ConsentRecord,
    ) -> Result<(), String> {
        let directory = self.directory();
        let agency = Self::signing_agency(&directory, notice, recording_agency)?;
        let limits = &self.limits().envelope;
        let opened =
            verify_and_open(notice, agency.evidence_keys(), limits).map_err(|e| match e {
                kurzdraht_envelope::EnvelopeError::BadSignature { .. } => {
                    agency.evidence_problem(notice, limits)
                }
                other => format!("the signed notice does not open: {other}"),
            })?;
        if kind_of(&opened.body) == Some(MessageKind::ConsentNotice)
            && matches!(&opened.body.body, Some(Body::ConsentNotice(n)) if n.consent.as_ref() == Some(record))
        {
            Ok(())
        } else {
            Err("the signed notice does not carry this consent record".into())
        }
    }

    fn signing_agency<'d>(
        directory: &'d Directory,
        notice: &SignedEnvelope,
        recording_agency: &str,
    ) -> Result<&'d Agency, String> {
        if notice.signer != recording_agency {
            return Err(format!(
                "the notice is signed by {:?}, not by the recording agency",
                notice.signer
            ));
        }
        directory
            .get(recording_agency)
            .ok_or_else(|| format!("{recording_agency} is not in the directory"))
    }
}
