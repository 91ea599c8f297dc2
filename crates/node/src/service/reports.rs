//! What the node reports and proves: the access report and the evidence of a consent.
//!
//! The access report (Art. 15 GDPR): for one person, every consent this node holds, every
//! message it sent or received under them, and every refusal that cited them.
//!
//! The audit chain holds no personal data, so a refusal is linked to a person only through
//! the consent it cited; a refused submission that cited no consent cannot be attributed
//! and is not listed. The report itself is audited (without naming the person).
//!
//! Proof of consent: for any message this node sent or received (or any consent it holds),
//! the consent record with the recording agency's signed notice — kept after withdrawal and
//! expiry, so that the lawfulness of a past transfer can be shown (Art. 7(1) GDPR). The
//! notice is verified with the recording agency's active and retired keys (a retired key
//! still proves what it signed); a revoked key proves nothing, and the answer says why.

use crate::directory::{Agency, Directory};
use crate::shared::Shared;
use crate::{policy, NodeError};
use kurzdraht_envelope::{body::kind_of, ids, verify_and_open, verify_header};
use kurzdraht_ledger::{consent, AuditEvent, AuditNote};
use kurzdraht_proto::v1::{
    get_consent_evidence_request::About, message_body::Body, ConsentEvidence,
    GetConsentEvidenceRequest, MessageKind, SignedEnvelope,
};
use kurzdraht_proto::v1::{
    ConsentEntry, DeliveryState, ReportedMessage, ReportedRefusal, Subject, SubjectAccessReport,
    SubjectAccessRequest,
};
use std::collections::BTreeSet;

/// Runs store work that reads the whole store on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Task(format!("a store scan: {e}")))?
}

/// What the node proves and reports: the Art. 15 access report and the evidence of a consent.
#[derive(Clone)]
pub struct Reports {
    shared: Shared,
    verification: std::sync::Arc<std::sync::Mutex<Verification>>,
}

/// The verification of the audit chain that runs in the background
/// ([`Reports::start_verification`]): whether one runs, and how the last one ended.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub running: bool,
    pub last: Option<VerificationResult>,
}

/// How a verification ended, and when (the node's clock).
#[derive(Debug, Clone)]
pub struct VerificationResult {
    pub finished_at_ms: i64,
    /// The chain's length and head, or why it does not verify.
    pub outcome: Result<kurzdraht_ledger::AuditReport, String>,
}

/// The most audit entries one page of [`Reports::audit_page`] looks at.
pub const AUDIT_PAGE_SCAN: usize = 10_000;

/// A page of the audit chain, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<kurzdraht_ledger::AuditEntry>,
    /// Where the next (older) page starts; `None`: the chain's first entry was reached.
    pub next_before: Option<u64>,
}

impl Reports {
    pub(crate) fn new(shared: Shared) -> Self {
        Self {
            shared,
            verification: Default::default(),
        }
    }

    /// The report for the person `req` names. It reads the whole store (every consent,
    /// message, inbox item and audit entry), so it runs on a blocking thread, never on the
    /// async threads that serve calls and deliver.
    pub async fn subject_access_report(
        &self,
        req: SubjectAccessRequest,
        client: &str,
    ) -> Result<SubjectAccessReport, NodeError> {
        let subject = Subject {
            given_name: req.given_name,
            family_name: req.family_name,
            date_of_birth: req.date_of_birth,
            ..Default::default()
        };
        policy::validate_subject("subject", Some(&subject))?;
        let node = self.clone();
        let client = client.to_string();
        blocking(move || node.build_access_report(&subject, &client)).await
    }

    /// A page of the audit chain for the data protection officer: up to `limit` entries
    /// before `before_seq` (from the newest for `None`), newest first, only events starting
    /// with `event_prefix` (all for ""). Looks at no more than [`AUDIT_PAGE_SCAN`] entries;
    /// the chain holds no personal data, so reading it is not audited.
    pub fn audit_page(
        &self,
        before_seq: Option<u64>,
        limit: usize,
        event_prefix: &str,
    ) -> Result<AuditPage, NodeError> {
        let (entries, next_before) = self.shared.ledger().audit_before(
            before_seq,
            limit.clamp(1, 500),
            AUDIT_PAGE_SCAN,
            |e| e.event.starts_with(event_prefix),
        )?;
        Ok(AuditPage {
            entries,
            next_before,
        })
    }

    /// Verifies the whole audit chain of the running node (sequence, links, head), on a
    /// blocking thread.
    pub async fn verify_audit(&self) -> Result<kurzdraht_ledger::AuditReport, NodeError> {
        let node = self.clone();
        blocking(move || Ok(node.shared.ledger().verify_audit()?)).await
    }

    fn verification_state(&self) -> std::sync::MutexGuard<'_, Verification> {
        self.verification
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts verifying the whole audit chain in the background (it takes about a second per
    /// 300,000 entries), unless a verification runs already; returns whether it started one.
    /// [`Reports::verification`] tells how it ended.
    pub fn start_verification(&self) -> bool {
        {
            let mut state = self.verification_state();
            if state.running {
                return false;
            }
            state.running = true;
        }
        let reports = self.clone();
        tokio::spawn(async move {
            let outcome = reports.verify_audit().await.map_err(|e| e.to_string());
            let finished_at_ms = reports.shared.now_ms();
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "the audit chain does not verify");
            }
            let mut state = reports.verification_state();
            state.running = false;
            state.last = Some(VerificationResult {
                finished_at_ms,
                outcome,
            });
        });
        true
    }

    /// Whether a verification runs, and how the last one ended.
    pub fn verification(&self) -> Verification {
        self.verification_state().clone()
    }

    fn build_access_report(
        &self,
        subject: &Subject,
        client: &str,
    ) -> Result<SubjectAccessReport, NodeError> {
        let now = self.shared.now_ms();
        let ledger = self.shared.ledger();
        // By the indexes (person → consents → their cases' messages; consent → refusals):
        // what a full scan of consents, messages, inbox and audit chain would find.
        let consents = ledger.consents_of_person(subject)?;
        let ids: BTreeSet<String> = consents
            .iter()
            .filter_map(|c| c.record.as_ref().map(|r| r.consent_id.clone()))
            .collect();
        let mut roots = BTreeSet::new();
        for id in &ids {
            roots.insert(ledger.case_of(id)?);
        }
        let mut messages = Vec::new();
        for root in &roots {
            for (id, direction) in ledger.case_messages(root)? {
                match direction {
                    kurzdraht_ledger::Direction::Sent => {
                        let Some(s) = ledger.message(&id)?.and_then(|r| r.status) else {
                            continue;
                        };
                        if ids.contains(&s.consent_id) {
                            messages.push(ReportedMessage {
                                message_id: s.message_id,
                                kind: s.kind,
                                direction: "sent".into(),
                                counterpart: s.recipient,
                                at_ms: s.submitted_at_ms,
                                consent_id: s.consent_id,
                                state: s.state,
                            });
                        }
                    }
                    kurzdraht_ledger::Direction::Received => {
                        let Some(r) = ledger.inbox_record(&id)? else {
                            continue;
                        };
                        if r.notice.is_none() && ids.contains(&r.consent_id) {
                            messages.push(ReportedMessage {
                                message_id: r.message_id,
                                kind: r.kind,
                                direction: "received".into(),
                                counterpart: r.sender,
                                at_ms: r.received_at_ms,
                                consent_id: r.consent_id,
                                state: DeliveryState::Unspecified as i32,
                            });
                        }
                    }
                }
            }
        }
        messages.sort_by_key(|m| m.at_ms);
        let mut refusals = Vec::new();
        for id in &ids {
            for e in ledger.refusals_citing(id)? {
                refusals.push(ReportedRefusal {
                    at_ms: e.at_ms,
                    event: e.event,
                    counterpart: e.peer,
                    kind: e.kind,
                    consent_id: e.consent_id,
                    reason: e.detail,
                });
            }
        }
        refusals.sort_by_key(|r| r.at_ms);
        let consents = consents
            .into_iter()
            .map(|c| ConsentEntry {
                state: consent::state_at(&c, now) as i32,
                consent: c.record,
                withdrawal: c.withdrawal,
                superseded_by: c.superseded_by,
            })
            .collect();
        ledger.audit(
            AuditNote::new(AuditEvent::SubjectAccessReport).detail(format!("client {client}")),
            now,
        )?;
        Ok(SubjectAccessReport {
            agency: self.shared.agency().to_string(),
            generated_at_ms: now,
            consents,
            messages,
            refusals,
        })
    }
}

// ---- The evidence of a consent ----

impl Reports {
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
                    .shared
                    .ledger()
                    .message(&id)?
                    .and_then(|r| r.status)
                    .map(|s| s.consent_id);
                let received = || -> Result<Option<String>, NodeError> {
                    Ok(self
                        .shared
                        .ledger()
                        .inbox_record(&id)?
                        .map(|r| r.consent_id))
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
            .shared
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
            state: consent::state_at(&stored, self.shared.now_ms()) as i32,
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
        let directory = self.shared.directory();
        let agency = Self::signing_agency(&directory, notice, recording_agency)?;
        let limits = &self.shared.limits().envelope;
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
        let directory = self.shared.directory();
        let agency = Self::signing_agency(&directory, notice, recording_agency)?;
        let limits = &self.shared.limits().envelope;
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
