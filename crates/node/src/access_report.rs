//! The access report (Art. 15 GDPR): for one person, every consent this node holds, every
//! message it sent or received under them, and every refusal that cited them.
//!
//! The audit chain holds no personal data, so a refusal is linked to a person only through
//! the consent it cited; a refused submission that cited no consent cannot be attributed
//! and is not listed. The report itself is audited (without naming the person).

use crate::{node::Node, policy, NodeError};
use kurzdraht_ledger::{consent, AuditEvent, AuditNote};
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

const REFUSAL_EVENTS: [AuditEvent; 5] = [
    AuditEvent::SubmissionRefused,
    AuditEvent::ReceptionRefused,
    AuditEvent::ReconciliationRefused,
    AuditEvent::DeliveryRefused,
    AuditEvent::DeliveryRejected,
];

impl Node {
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

    fn build_access_report(
        &self,
        subject: &Subject,
        client: &str,
    ) -> Result<SubjectAccessReport, NodeError> {
        let now = self.now_ms();
        let ledger = self.ledger();
        let mut consents = Vec::new();
        for held in ledger.consents_iter() {
            let held = held?;
            if held
                .record
                .as_ref()
                .and_then(|r| r.subject.as_ref())
                .is_some_and(|s| consent::same_person(s, subject))
            {
                consents.push(held);
            }
        }
        let ids: BTreeSet<String> = consents
            .iter()
            .filter_map(|c| c.record.as_ref().map(|r| r.consent_id.clone()))
            .collect();
        let mut messages = Vec::new();
        for r in ledger.message_records_iter() {
            let Some(s) = r?.status else { continue };
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
        for r in ledger.inbox_iter() {
            let r = r?;
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
        messages.sort_by_key(|m| m.at_ms);
        let refusal_events: Vec<&str> = REFUSAL_EVENTS.iter().map(|e| e.as_str()).collect();
        let mut refusals = Vec::new();
        for e in ledger.audit_iter() {
            let e = e?;
            if refusal_events.contains(&e.event.as_str()) && ids.contains(&e.consent_id) {
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
            agency: self.agency().to_string(),
            generated_at_ms: now,
            consents,
            messages,
            refusals,
        })
    }
}
