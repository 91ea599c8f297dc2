//! Storage limitation and erasure (Art. 5(1)(e), Art. 17 GDPR).
//!
//! - A case is closed per consent at this agency (`CloseCase`). Once the retention period
//!   after closing has passed, the sweeper deletes the bodies of the messages received under
//!   it; ids, signed headers, hashes and receipts stay, so the audit chain stays verifiable
//!   and every transfer stays provable.
//! - `EraseSubject` removes a person's data from this node at once: the subject leaves the
//!   consent records, the consent notices keep only their signed headers, and the bodies of
//!   messages received under those consents are deleted. Each node is its own controller;
//!   erasure at one agency does not reach into another's records.
//!
//! Every deletion is audited (ids only).

use crate::{clock, node::Node, policy, NodeError};
use kurzdraht_envelope::ids;
use kurzdraht_ledger::{consent, AuditEvent};
use kurzdraht_proto::v1::{
    CloseCaseRequest, CloseCaseResponse, EraseSubjectResponse, Subject, SubjectAccessRequest,
};
use std::collections::BTreeSet;
use tokio::sync::watch;

/// Closed cases one retention step takes off the due list before it flushes.
const SWEEP_STEP: usize = 256;

impl Node {
    pub async fn close_case(&self, req: CloseCaseRequest) -> Result<CloseCaseResponse, NodeError> {
        ids::parse_id("consent_id", &req.consent_id)
            .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        let closed = self.ledger().close_case(&req.consent_id, clock::now_ms())?;
        self.ledger().flush().await?;
        Ok(CloseCaseResponse {
            closed_at_ms: closed,
            bodies_deleted_after_ms: closed
                .saturating_add(self.retention().body_retention.as_millis() as i64),
        })
    }

    /// Deletes the bodies whose retention period has run out. Returns how many. Works
    /// through the due cases in steps of [`SWEEP_STEP`], flushing after each, so a sweep
    /// of many cases neither holds them all in memory nor loses its progress on a crash.
    pub async fn apply_retention(&self) -> Result<u32, NodeError> {
        let now = clock::now_ms();
        let due_before = now.saturating_sub(self.retention().body_retention.as_millis() as i64);
        let mut bodies = 0;
        let mut cases = 0;
        loop {
            let swept = self
                .ledger()
                .sweep_closed_cases(due_before, now, SWEEP_STEP)?;
            if swept.cases > 0 {
                self.ledger().flush().await?;
            }
            bodies += swept.bodies;
            cases += swept.cases;
            if swept.cases < SWEEP_STEP {
                break;
            }
        }
        if cases > 0 {
            tracing::info!(cases, bodies, "retention: closed cases swept");
        }
        Ok(bodies)
    }

    pub async fn erase_subject(
        &self,
        req: SubjectAccessRequest,
    ) -> Result<EraseSubjectResponse, NodeError> {
        let subject = Subject {
            given_name: req.given_name,
            family_name: req.family_name,
            date_of_birth: req.date_of_birth,
            ..Default::default()
        };
        policy::validate_subject("subject", Some(&subject))?;
        let mut ids = BTreeSet::new();
        for held in self.ledger().consents_iter() {
            if let Some(r) = held?.record {
                if r.subject
                    .as_ref()
                    .is_some_and(|s| consent::same_person(s, &subject))
                {
                    ids.insert(r.consent_id);
                }
            }
        }
        let now = clock::now_ms();
        let erased = self
            .ledger()
            .delete_bodies(&ids, AuditEvent::SubjectErased, now)?;
        self.ledger().erase_consents(&ids, now)?;
        self.ledger().flush().await?;
        tracing::info!(consents = ids.len(), bodies = erased, "subject erased");
        Ok(EraseSubjectResponse {
            consent_ids: ids.into_iter().collect(),
            bodies_erased: erased,
        })
    }

    /// Runs retention every sweep interval until the node closes.
    pub(crate) fn spawn_retention(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        let mut closing: watch::Receiver<bool> = self.closing();
        tokio::spawn(async move {
            let every = node.retention().sweep_interval;
            loop {
                if let Err(e) = node.apply_retention().await {
                    tracing::error!(error = %e, "retention sweep failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
            }
        })
    }
}
