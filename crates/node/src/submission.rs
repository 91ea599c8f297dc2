//! The sending side of a node, as the AgencyApi offers it: recording and withdrawing
//! consents, and submitting case messages. Each call validates, asks the policy and the
//! consent ledger, seals, and queues in one ledger transaction; it answers only after the
//! outbox is flushed to disk.

use crate::{categories::categories_carried, clock, node::Node, policy, NodeError};
use kurzdraht_envelope::{body::kind_of, ids};
use kurzdraht_ledger::{consent, AuditEvent, AuditNote, ConsentQuery};
use kurzdraht_proto::v1::{
    message_body::Body, ConsentEntry, ConsentForm, ConsentGiver, ConsentNotice, ConsentRecord,
    ConsentWithdrawal, ConsentWithdrawalRecord, DataCategory, DeliveryState, LegalBasis,
    ListConsentsRequest, ListConsentsResponse, MessageBody, MessageKind, MessageStatus, Purpose,
    RecordConsentRequest, RecordConsentResponse, SubmitRequest, SubmitResponse,
    WithdrawConsentRequest, WithdrawConsentResponse,
};
use std::collections::BTreeSet;

const MAX_RECIPIENTS: usize = 16;
/// Consents per ListConsents page unless the caller asks for fewer or more.
const CONSENT_PAGE_DEFAULT: usize = 500;
/// The most consents one ListConsents page holds.
const CONSENT_PAGE_MAX: usize = 1000;

impl Node {
    /// Records a consent given at this agency and replicates it to the agencies it names.
    pub async fn record_consent(
        &self,
        req: RecordConsentRequest,
    ) -> Result<RecordConsentResponse, NodeError> {
        let now = clock::now_ms();
        let dob = policy::validate_subject("subject", req.subject.as_ref())?;
        let given_by = ConsentGiver::try_from(req.given_by)
            .ok()
            .filter(|g| *g != ConsentGiver::Unspecified)
            .ok_or_else(|| NodeError::invalid("given_by", "must be PERSON or GUARDIAN"))?;
        let age = policy::age_on(dob, clock::date_of_ms(now)?);
        match given_by {
            ConsentGiver::Person if age < policy::CONSENT_AGE => {
                return Err(NodeError::invalid(
                    "given_by",
                    "the person is under 15; a guardian must give consent",
                ))
            }
            ConsentGiver::Guardian if req.guardian_name.trim().is_empty() => {
                return Err(NodeError::invalid(
                    "guardian_name",
                    "is required when a guardian gives consent",
                ))
            }
            _ => {}
        }
        if req.recipients.is_empty() {
            return Err(NodeError::invalid(
                "recipients",
                "name at least one agency (a blanket consent is invalid)",
            ));
        }
        if req.recipients.len() > MAX_RECIPIENTS {
            return Err(NodeError::invalid(
                "recipients",
                "names more than 16 agencies",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, r) in req.recipients.iter().enumerate() {
            let field = format!("recipients[{i}]");
            self.directory().require(&field, r)?;
            if r == self.agency() {
                return Err(NodeError::invalid(
                    field,
                    "is this agency, which records the consent",
                ));
            }
            if !seen.insert(r.as_str()) {
                return Err(NodeError::invalid(field, "is named twice"));
            }
        }
        if req.purposes.is_empty() {
            return Err(NodeError::invalid("purposes", "name at least one purpose"));
        }
        for (i, p) in req.purposes.iter().enumerate() {
            if Purpose::try_from(*p).map_or(true, |p| p == Purpose::Unspecified) {
                return Err(NodeError::invalid(
                    format!("purposes[{i}]"),
                    "is unspecified or unknown",
                ));
            }
        }
        let valid_from = if req.valid_from_ms == 0 {
            now
        } else {
            req.valid_from_ms
        };
        let valid_until = if req.valid_until_ms == 0 {
            valid_from.saturating_add(self.limits().consent_default_validity.as_millis() as i64)
        } else {
            req.valid_until_ms
        };
        if valid_until <= valid_from {
            return Err(NodeError::invalid(
                "valid_until_ms",
                "must lie after valid_from_ms",
            ));
        }
        if valid_until <= now {
            return Err(NodeError::invalid("valid_until_ms", "lies in the past"));
        }
        if req.categories.is_empty() {
            return Err(NodeError::invalid(
                "categories",
                "name the categories of data the consent covers",
            ));
        }
        for (i, c) in req.categories.iter().enumerate() {
            if DataCategory::try_from(*c).map_or(true, |c| c == DataCategory::Unspecified) {
                return Err(NodeError::invalid(
                    format!("categories[{i}]"),
                    "is unspecified or unknown",
                ));
            }
        }
        let legal_basis = LegalBasis::try_from(req.legal_basis)
            .ok()
            .filter(|b| *b != LegalBasis::Unspecified)
            .ok_or_else(|| NodeError::invalid("legal_basis", "is required"))?;
        if req.categories.contains(&(DataCategory::Health as i32))
            && legal_basis != LegalBasis::ExplicitConsentGdpr92A
        {
            return Err(NodeError::invalid(
                "legal_basis",
                "health data needs explicit consent under Art. 9(2)(a) GDPR",
            ));
        }
        if ConsentForm::try_from(req.form).map_or(true, |f| f == ConsentForm::Unspecified) {
            return Err(NodeError::invalid("form", "must be WRITTEN or ELECTRONIC"));
        }
        if req.evidence_sha256.len() != 32 {
            return Err(NodeError::invalid(
                "evidence_sha256",
                "must be the 32-byte SHA-256 of the signed consent form",
            ));
        }
        if !req.supersedes.is_empty() {
            ids::parse_id("supersedes", &req.supersedes)
                .map_err(|e| NodeError::invalid("supersedes", e.to_string()))?;
            let old = self
                .ledger()
                .consent(&req.supersedes)?
                .and_then(|c| c.record)
                .ok_or_else(|| NodeError::NotFound(format!("consent {}", req.supersedes)))?;
            if old.recording_agency != self.agency() {
                return Err(NodeError::FailedPrecondition(format!(
                    "consent {} was recorded by {}; only it can replace it",
                    old.consent_id, old.recording_agency
                )));
            }
            let same = match (&old.subject, &req.subject) {
                (Some(a), Some(b)) => consent::same_person(a, b),
                _ => false,
            };
            if !same {
                return Err(NodeError::invalid(
                    "supersedes",
                    "names a consent of another person",
                ));
            }
        }
        if req.evidence_reference.trim().is_empty() {
            return Err(NodeError::invalid(
                "evidence_reference",
                "is required: the reference of the signed consent form",
            ));
        }
        if req.recorded_by.trim().is_empty() {
            return Err(NodeError::invalid("recorded_by", "is required"));
        }
        let mut purposes = req.purposes.clone();
        purposes.sort_unstable();
        purposes.dedup();
        let mut categories = req.categories.clone();
        categories.sort_unstable();
        categories.dedup();
        let record = ConsentRecord {
            consent_id: ids::new_id(),
            subject: req.subject,
            given_by: given_by as i32,
            guardian_name: req.guardian_name,
            recording_agency: self.agency().to_string(),
            recipients: req.recipients,
            purposes,
            valid_from_ms: valid_from,
            valid_until_ms: valid_until,
            evidence_reference: req.evidence_reference,
            recorded_by: req.recorded_by,
            recorded_at_ms: now,
            categories,
            legal_basis: legal_basis as i32,
            form: req.form,
            evidence_sha256: req.evidence_sha256,
            supersedes: req.supersedes,
        };
        let body = MessageBody {
            body: Some(Body::ConsentNotice(ConsentNotice {
                consent: Some(record.clone()),
            })),
        };
        let notices: Vec<_> = record
            .recipients
            .iter()
            .map(|r| {
                self.seal_outgoing(
                    MessageKind::ConsentNotice,
                    r,
                    &record.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect();
        self.ledger().record_consent(&record, &notices, now)?;
        self.ledger().flush().await?;
        for n in &notices {
            self.wake(&n.recipient);
        }
        tracing::info!(consent_id = %record.consent_id, recipients = record.recipients.len(), "consent recorded");
        Ok(RecordConsentResponse {
            notice_message_ids: notices.into_iter().map(|n| n.message_id).collect(),
            consent: Some(record),
        })
    }

    /// Records the withdrawal of a consent recorded here and replicates it. Effective for the
    /// future: messages still queued under it are stopped at their next delivery attempt.
    pub async fn withdraw_consent(
        &self,
        req: WithdrawConsentRequest,
    ) -> Result<WithdrawConsentResponse, NodeError> {
        let now = clock::now_ms();
        ids::parse_id("consent_id", &req.consent_id)
            .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        if req.recorded_by.trim().is_empty() {
            return Err(NodeError::invalid("recorded_by", "is required"));
        }
        let stored = self
            .ledger()
            .consent(&req.consent_id)?
            .ok_or_else(|| NodeError::NotFound(format!("consent {}", req.consent_id)))?;
        let record = stored
            .record
            .ok_or_else(|| NodeError::NotFound(format!("consent {}", req.consent_id)))?;
        if record.recording_agency != self.agency() {
            return Err(NodeError::FailedPrecondition(format!(
                "consent {} was recorded by {}; record the withdrawal there",
                record.consent_id, record.recording_agency
            )));
        }
        let withdrawal = ConsentWithdrawalRecord {
            consent_id: record.consent_id.clone(),
            withdrawn_at_ms: now,
            recorded_by: req.recorded_by,
            manner: req.manner,
        };
        let body = MessageBody {
            body: Some(Body::ConsentWithdrawal(ConsentWithdrawal {
                withdrawal: Some(withdrawal.clone()),
            })),
        };
        let notices: Vec<_> = record
            .recipients
            .iter()
            .map(|r| {
                self.seal_outgoing(
                    MessageKind::ConsentWithdrawal,
                    r,
                    &record.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect();
        self.ledger()
            .record_withdrawal(&withdrawal, &notices, now)?;
        self.ledger().flush().await?;
        for n in &notices {
            self.wake(&n.recipient);
        }
        // Wake every worker: queued messages citing this consent must be stopped.
        for (peer, _) in self.outbox_signals() {
            self.wake(peer);
        }
        tracing::info!(consent_id = %record.consent_id, "consent withdrawn");
        Ok(WithdrawConsentResponse {
            withdrawal: Some(withdrawal),
            notice_message_ids: notices.into_iter().map(|n| n.message_id).collect(),
        })
    }

    /// One page of the consents held here, with their state now.
    pub fn list_consents(
        &self,
        req: &ListConsentsRequest,
    ) -> Result<ListConsentsResponse, NodeError> {
        let limit = match req.limit {
            0 => CONSENT_PAGE_DEFAULT,
            n if n as usize > CONSENT_PAGE_MAX => {
                return Err(NodeError::invalid(
                    "limit",
                    format!("is {n}; at most {CONSENT_PAGE_MAX} per page"),
                ))
            }
            n => n as usize,
        };
        if !req.after.is_empty() {
            ids::parse_id("after", &req.after)
                .map_err(|e| NodeError::invalid("after", e.to_string()))?;
        }
        let now = clock::now_ms();
        // One more than asked tells whether another page follows.
        let mut page = self.ledger().consents_after(&req.after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next_after = match (more, page.last()) {
            (true, Some((id, _))) => id.clone(),
            _ => String::new(),
        };
        let consents = page
            .into_iter()
            .map(|(_, c)| ConsentEntry {
                state: consent::state_at(&c, now) as i32,
                consent: c.record,
                withdrawal: c.withdrawal,
                superseded_by: c.superseded_by,
            })
            .collect();
        Ok(ListConsentsResponse {
            consents,
            next_after,
        })
    }

    /// Submits a case message. Acknowledged once durable in the outbox.
    pub async fn submit(&self, req: SubmitRequest) -> Result<SubmitResponse, NodeError> {
        let now = clock::now_ms();
        let recipient = self.directory().require("recipient", &req.recipient)?;
        if recipient.id == self.agency() {
            return Err(NodeError::invalid("recipient", "is this agency itself"));
        }
        let body = req
            .body
            .ok_or_else(|| NodeError::invalid("body", "is required"))?;
        let kind = kind_of(&body).ok_or_else(|| NodeError::invalid("body", "is empty"))?;
        if !req.in_reply_to.is_empty() {
            ids::parse_id("in_reply_to", &req.in_reply_to)
                .map_err(|e| NodeError::invalid("in_reply_to", e.to_string()))?;
        }
        let refused = |e: NodeError| {
            self.audit_refusal(
                AuditEvent::SubmissionRefused,
                kind,
                &req.recipient,
                &req.consent_id,
                &e,
            );
            e
        };
        let subject = policy::admit_case_message(kind, self.role(), recipient.role, &body, now)
            .map_err(refused)?;
        let purpose =
            policy::purpose_of(kind).ok_or_else(|| NodeError::invalid("body", "has no purpose"))?;
        if !req.consent_id.is_empty() {
            ids::parse_id("consent_id", &req.consent_id)
                .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        }
        let stored = if req.consent_id.is_empty() {
            None
        } else {
            self.ledger().consent(&req.consent_id)?
        };
        let categories = categories_carried(&body);
        let query = ConsentQuery {
            subject,
            sender: self.agency(),
            recipient: &recipient.id,
            purpose,
            categories: &categories,
            at_ms: now,
        };
        consent::evaluate(stored.as_ref(), &query).map_err(|r| refused(NodeError::Consent(r)))?;
        let out = self.seal_outgoing(
            kind,
            &recipient.id,
            &req.consent_id,
            &req.in_reply_to,
            &body,
            now,
        );
        let lane = self.ledger().enqueue(&out)?;
        self.ledger().flush().await?;
        self.wake_lane(&out.recipient, lane);
        self.metrics().submitted();
        tracing::info!(message_id = %out.message_id, kind = ?kind, recipient = %out.recipient, "message queued");
        Ok(SubmitResponse {
            message_id: out.message_id,
            state: DeliveryState::Queued as i32,
        })
    }

    /// Where a submitted message is.
    pub fn status(&self, message_id: &str) -> Result<MessageStatus, NodeError> {
        ids::parse_id("message_id", message_id)
            .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
        self.ledger()
            .message(message_id)?
            .and_then(|r| r.status)
            .ok_or_else(|| NodeError::NotFound(format!("message {message_id}")))
    }

    /// Records a refusal in the audit chain (codes only) and the log.
    pub(crate) fn audit_refusal(
        &self,
        event: AuditEvent,
        kind: MessageKind,
        peer: &str,
        consent_id: &str,
        e: &NodeError,
    ) {
        self.metrics().refused(e.reason_code());
        let note = AuditNote::new(event)
            .kind(kind as i32)
            .peer(peer)
            .consent(consent_id)
            .detail(e.reason_code());
        if let Err(err) = self.ledger().audit(note, clock::now_ms()) {
            tracing::error!(error = %err, "could not audit a refusal");
        }
        tracing::info!(reason = e.reason_code(), kind = ?kind, peer, "refused");
    }
}
