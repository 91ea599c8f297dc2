//! Storage limitation and erasure (Art. 5(1)(e), Art. 17 GDPR).
//!
//! - A case is closed per consent at this agency (`CloseCase`). Once the retention period
//!   after closing has passed, the sweeper deletes the bodies of the messages received under
//!   it; ids, signed headers, hashes and receipts stay, so the audit chain stays verifiable
//!   and every transfer stays provable.
//! - `EraseSubject` removes a person's data from this node at once: the subject leaves the
//!   consent records, the consent notices keep only their signed headers, the bodies of
//!   messages received under those consents are deleted, and messages about the person
//!   still queued leave the outbox (`REFUSED`, `subject-erased`; queued withdrawal notices,
//!   which carry no personal data, still go). Once it has answered, no body of the person is
//!   left in the store and nothing of theirs is sent. Each node is its own controller;
//!   erasure at one agency does not reach into another's records.
//!
//!   Envelopes this node delivered under those consents and keeps for peers restored from
//!   a backup are dropped too (their receipts stay; withdrawal notices stay).
//! - Delivered envelopes are kept `[delivery] keep_delivered_days`; the sweep drops older
//!   ones through the ledger's time index.
//!
//! Every deletion is audited (ids only).

use crate::service::idempotency::Answers;
use crate::shared::Shared;
use crate::{policy, NodeError};
use kurzdraht_envelope::ids;
use kurzdraht_ledger::{consent, AuditEvent, Finish};
use kurzdraht_proto::v1::{
    CloseCaseRequest, CloseCaseResponse, EraseSubjectResponse, MessageKind, Subject,
    SubjectAccessRequest,
};
use std::collections::BTreeSet;
use tokio::sync::watch;

/// The reason queued messages about an erased person are stopped with.
const SUBJECT_ERASED: &str = "subject-erased";

/// Closed cases one retention step takes off the due list before it flushes.
const SWEEP_STEP: usize = 256;

/// Closing cases, deleting bodies after the retention period, erasure.
#[derive(Clone)]
pub struct Retention {
    shared: Shared,
    answers: Answers,
}

impl Retention {
    pub(crate) fn new(shared: Shared, answers: Answers) -> Self {
        Self { shared, answers }
    }

    pub async fn close_case(&self, req: CloseCaseRequest) -> Result<CloseCaseResponse, NodeError> {
        ids::parse_id("consent_id", &req.consent_id)
            .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        let closed = self
            .shared
            .ledger()
            .close_case(&req.consent_id, self.shared.now_ms())?;
        self.shared.ledger().flush().await?;
        Ok(CloseCaseResponse {
            closed_at_ms: closed,
            bodies_deleted_after_ms: closed
                .saturating_add(self.shared.retention_settings().body_retention.as_millis() as i64),
        })
    }

    /// Deletes the bodies whose retention period has run out, and forgets the idempotency
    /// keys answered longer ago than the delivery deadline. Returns how many bodies. Works
    /// through the due cases in steps of `SWEEP_STEP`, flushing after each, so a sweep
    /// of many cases neither holds them all in memory nor loses its progress on a crash.
    pub async fn apply_retention(&self) -> Result<u32, NodeError> {
        let now = self.shared.now_ms();
        let due_before =
            now.saturating_sub(self.shared.retention_settings().body_retention.as_millis() as i64);
        let mut bodies = 0;
        let mut cases = 0;
        loop {
            let swept = self
                .shared
                .ledger()
                .sweep_closed_cases(due_before, now, SWEEP_STEP)?;
            if swept.cases > 0 {
                self.shared.ledger().flush().await?;
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
        // Idempotency keys are kept the delivery deadline; older ones go in the same sweep.
        self.answers.forget_old_answers(SWEEP_STEP).await?;
        self.prune_kept_deliveries().await?;
        Ok(bodies)
    }

    /// Drops the delivered envelopes kept longer than the keep window, in steps of
    /// `SWEEP_STEP`, flushing after each. Returns how many.
    pub async fn prune_kept_deliveries(&self) -> Result<usize, NodeError> {
        let now = self.shared.now_ms();
        let keep = self.shared.delivery_settings().keep_delivered.as_millis() as i64;
        let mut pruned = 0;
        loop {
            let n = self
                .shared
                .ledger()
                .prune_kept(now.saturating_sub(keep), now, SWEEP_STEP)?;
            if n > 0 {
                self.shared.ledger().flush().await?;
            }
            pruned += n;
            if n < SWEEP_STEP {
                break;
            }
        }
        if pruned > 0 {
            tracing::info!(
                envelopes = pruned,
                "retention: delivered envelopes past the keep window dropped"
            );
        }
        Ok(pruned)
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
        // Finding the person's consents reads every consent: on a blocking thread.
        let node = self.clone();
        let (ids, lanes) = crate::service::reports::blocking(move || {
            let mut ids = BTreeSet::new();
            let mut lanes = Vec::new();
            for held in node.shared.ledger().consents_iter() {
                if let Some(r) = held?.record {
                    if r.subject
                        .as_ref()
                        .is_some_and(|s| consent::same_person(s, &subject))
                    {
                        lanes.extend(node.shared.lanes_of(&r)?);
                        ids.insert(r.consent_id);
                    }
                }
            }
            Ok((ids, lanes))
        })
        .await?;
        // No delivery round may be in flight under these consents while they are erased,
        // and none may start before the erasure is stored.
        let _lanes = self.shared.close_lanes(lanes).await;
        let now = self.shared.now_ms();
        // Consents first: a reception deciding meanwhile stores no body under them.
        self.shared.ledger().erase_consents(&ids, now)?;
        // Queued messages about the person leave the outbox with their bodies; withdrawal
        // notices carry no personal data and still go, so the recipients stop too.
        let stopped: Vec<(String, Finish)> = self
            .shared
            .ledger()
            .queued_under(&ids)?
            .into_iter()
            .filter(|q| q.kind != MessageKind::ConsentWithdrawal)
            .map(|q| {
                let how = Finish::Refused {
                    reason: SUBJECT_ERASED.to_string(),
                };
                (q.message_id, how)
            })
            .collect();
        let finished = self.shared.ledger().finish_all(&stopped, now)?;
        let erased = self
            .shared
            .ledger()
            .delete_bodies(&ids, AuditEvent::SubjectErased, now)?;
        // What this node delivered about the person and kept for restored peers goes too.
        let kept = self
            .shared
            .ledger()
            .drop_kept_under(&ids, AuditEvent::SubjectErased, now)?;
        self.shared.ledger().flush().await?;
        for f in finished {
            if let Some(seq) = f.notice_seq {
                self.shared.inbox_changed(seq);
            }
            if let Some(status) = f.status {
                self.shared.status_reached(status);
            }
        }
        tracing::info!(
            consents = ids.len(),
            bodies = erased,
            queued = stopped.len(),
            kept_envelopes = kept,
            "subject erased"
        );
        Ok(EraseSubjectResponse {
            consent_ids: ids.into_iter().collect(),
            bodies_erased: erased,
        })
    }

    /// Runs retention every sweep interval until the node closes.
    pub(crate) fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        let mut closing: watch::Receiver<bool> = self.shared.closing();
        tokio::spawn(async move {
            let every = node.shared.retention_settings().sweep_interval;
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
