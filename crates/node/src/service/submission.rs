//! The sending side of a node, as the AgencyApi offers it: recording and withdrawing
//! consents, and submitting case messages. Each call validates, asks the policy and the
//! consent ledger, seals, and queues in one ledger transaction; it answers only after the
//! outbox is flushed to disk. A call with an idempotency key that answered an earlier call
//! gets that answer and changes nothing (see [`crate::service::idempotency`]).

use crate::service::idempotency::Answers;
use crate::service::idempotency::{answering, keyed};
use crate::shared::Shared;
use crate::{categories::categories_carried, consent_record, policy, NodeError};
use kurzdraht_envelope::{body::kind_of, ids};
use kurzdraht_ledger::{
    consent, AuditEvent, ConsentQuery, Finish, KeyedRequest, LedgerError, Once, Outgoing,
};
use kurzdraht_proto::v1::{
    message_body::Body, ConsentEntry, ConsentRecord, ConsentWithdrawal, ConsentWithdrawalRecord,
    DeliveryState, ListConsentsRequest, ListConsentsResponse, MessageBody, MessageKind,
    MessageStatus, RecordConsentRequest, RecordConsentResponse, SubmitRequest, SubmitResponse,
    WithdrawConsentRequest, WithdrawConsentResponse,
};
use std::collections::BTreeSet;

/// The reason a queued message is taken out again when its queueing could not be made
/// durable (the IT system was told to submit again).
const NOT_STORED: &str = "not-stored";
/// Consents per ListConsents page unless the caller asks for fewer or more.
const CONSENT_PAGE_DEFAULT: usize = 500;
/// The most consents one ListConsents page holds.
const CONSENT_PAGE_MAX: usize = 1000;

/// What an agency's IT systems submit: consents recorded, withdrawn or replaced, messages queued for delivery, and their status.
#[derive(Clone)]
pub struct Submission {
    shared: Shared,
    answers: Answers,
}

impl Submission {
    pub(crate) fn new(shared: Shared, answers: Answers) -> Self {
        Self { shared, answers }
    }

    /// Records a consent given at this agency and replicates it to the agencies it names.
    /// A consent that replaces an earlier one takes effect once answered: no message under
    /// the earlier one leaves this node after that.
    pub async fn record_consent(
        &self,
        client: &str,
        req: RecordConsentRequest,
    ) -> Result<RecordConsentResponse, NodeError> {
        let now = self.shared.now_ms();
        let mut keyed = keyed(client, &req, now)?;
        if let Some(earlier) = self.answers.earlier_answer(keyed.as_ref()).await? {
            return self.answers.consent_answer(&earlier);
        }
        let record = consent_record::from_request(
            req,
            self.shared.agency(),
            now,
            self.shared.limits().consent_default_validity,
        );
        consent_record::validate("", &record, &self.shared.directory())?;
        if record.valid_until_ms <= now {
            return Err(NodeError::invalid("valid_until_ms", "lies in the past"));
        }
        // A replacement waits for rounds in flight under the consent it replaces (same
        // lane: same chain), and holds them off until it is stored.
        let replaced = match record.supersedes.is_empty() {
            true => None,
            false => Some(self.check_replaceable(&record)?),
        };
        let _lanes = match &replaced {
            Some(old) => self.shared.close_lanes(self.shared.lanes_of(old)?).await,
            None => Vec::new(),
        };
        let body = consent_record::notice_body(&record);
        let mut notices = record
            .recipients
            .iter()
            .map(|r| {
                self.shared.seal_outgoing(
                    MessageKind::ConsentNotice,
                    r,
                    &record.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(old) = &replaced {
            notices.extend(self.tell_dropped_recipients(old, &record, now)?);
        }
        answering(
            &mut keyed,
            notices.iter().map(|n| n.message_id.clone()),
            &record.consent_id,
        );
        let stored = self
            .store_outgoing(&notices, keyed.as_ref(), Some(&record.consent_id), || {
                self.shared
                    .ledger()
                    .record_consent_once(&record, &notices, now, keyed.as_ref())
            })
            .await?;
        if let (Once::Repeat(earlier), Some(k)) = (stored, keyed.as_ref()) {
            // A concurrent call with the same key was first.
            return self
                .answers
                .consent_answer(&self.answers.repeated_answer(k, earlier).await?);
        }
        for n in &notices {
            self.shared.wake(&n.recipient);
        }
        tracing::info!(consent_id = %record.consent_id, recipients = record.recipients.len(), "consent recorded");
        Ok(RecordConsentResponse {
            notice_message_ids: notices.into_iter().map(|n| n.message_id).collect(),
            consent: Some(record),
        })
    }

    /// An agency the replaced consent named and its replacement does not learns that the
    /// replaced consent no longer covers it, as a withdrawal of it (its notice carries no
    /// personal data); the others learn of the replacement from its notice.
    fn tell_dropped_recipients(
        &self,
        old: &ConsentRecord,
        new: &ConsentRecord,
        now: i64,
    ) -> Result<Vec<Outgoing>, NodeError> {
        let withdrawal = ConsentWithdrawalRecord {
            consent_id: old.consent_id.clone(),
            withdrawn_at_ms: now,
            recorded_by: new.recorded_by.clone(),
            manner: format!(
                "ersetzt durch Einwilligung {}, die diese Stelle nicht nennt",
                new.consent_id
            ),
        };
        let body = MessageBody {
            body: Some(Body::ConsentWithdrawal(ConsentWithdrawal {
                withdrawal: Some(withdrawal),
            })),
        };
        old.recipients
            .iter()
            .filter(|r| !new.recipients.contains(r))
            .map(|r| {
                self.shared.seal_outgoing(
                    MessageKind::ConsentWithdrawal,
                    r,
                    &old.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect()
    }

    /// A consent may replace one recorded here, about the same person; returns that one.
    fn check_replaceable(&self, record: &ConsentRecord) -> Result<ConsentRecord, NodeError> {
        let old = self
            .shared
            .ledger()
            .consent(&record.supersedes)?
            .and_then(|c| c.record)
            .ok_or_else(|| NodeError::NotFound(format!("consent {}", record.supersedes)))?;
        if old.recording_agency != self.shared.agency() {
            return Err(NodeError::NotRecordingAgency(format!(
                "consent {} was recorded by {}; only it can replace it",
                old.consent_id, old.recording_agency
            )));
        }
        let same = match (&old.subject, &record.subject) {
            (Some(a), Some(b)) => consent::same_person(a, b),
            _ => false,
        };
        if !same {
            return Err(NodeError::invalid(
                "supersedes",
                "names a consent of another person",
            ));
        }
        Ok(old)
    }

    /// Records the withdrawal of a consent recorded here and replicates it. Effective for the
    /// future, and at once: it waits for a delivery round in flight under the consent, and
    /// once answered, no message under the consent leaves this node.
    pub async fn withdraw_consent(
        &self,
        client: &str,
        req: WithdrawConsentRequest,
    ) -> Result<WithdrawConsentResponse, NodeError> {
        let mut keyed = keyed(client, &req, self.shared.now_ms())?;
        if let Some(earlier) = self.answers.earlier_answer(keyed.as_ref()).await? {
            return self.answers.withdrawal_answer(&earlier);
        }
        ids::parse_id("consent_id", &req.consent_id)
            .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        consent_record::validate_withdrawal_texts("", &req.recorded_by, &req.manner)?;
        let stored = self
            .shared
            .ledger()
            .consent(&req.consent_id)?
            .ok_or_else(|| NodeError::NotFound(format!("consent {}", req.consent_id)))?;
        let record = stored
            .record
            .ok_or_else(|| NodeError::NotFound(format!("consent {}", req.consent_id)))?;
        if record.recording_agency != self.shared.agency() {
            return Err(NodeError::NotRecordingAgency(format!(
                "consent {} was recorded by {}; record the withdrawal there",
                record.consent_id, record.recording_agency
            )));
        }
        let _lanes = self
            .shared
            .close_lanes(self.shared.lanes_of(&record)?)
            .await;
        let now = self.shared.now_ms();
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
        // A recipient whose consent notice is still queued never held the consent: that
        // notice stays home (the worker stops it), and no withdrawal notice follows it.
        let never_told: BTreeSet<String> = self
            .shared
            .ledger()
            .queued_under(&BTreeSet::from([record.consent_id.clone()]))?
            .into_iter()
            .filter(|q| q.kind == MessageKind::ConsentNotice)
            .map(|q| q.recipient)
            .collect();
        let notices = record
            .recipients
            .iter()
            .filter(|r| !never_told.contains(*r))
            .map(|r| {
                self.shared.seal_outgoing(
                    MessageKind::ConsentWithdrawal,
                    r,
                    &record.consent_id,
                    "",
                    &body,
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        answering(
            &mut keyed,
            notices.iter().map(|n| n.message_id.clone()),
            &record.consent_id,
        );
        let stored = self.shared.ledger().record_withdrawal_once(
            &withdrawal,
            &notices,
            now,
            keyed.as_ref(),
        )?;
        if let (Once::Repeat(earlier), Some(k)) = (stored, keyed.as_ref()) {
            // A concurrent call with the same key was first.
            return self
                .answers
                .withdrawal_answer(&self.answers.repeated_answer(k, earlier).await?);
        }
        self.shared.ledger().flush().await?;
        // Queued messages citing the consent are stopped at their lane's next round.
        for n in &notices {
            self.shared.wake(&n.recipient);
        }
        tracing::info!(consent_id = %record.consent_id, "consent withdrawn");
        Ok(WithdrawConsentResponse {
            withdrawal: Some(withdrawal),
            notice_message_ids: notices.into_iter().map(|n| n.message_id).collect(),
        })
    }

    /// Stores queued messages with `store` (one ledger transaction) and makes them durable
    /// before the caller answers; delivery does not send them before that. If the flush
    /// fails, they are taken out of the outbox again (`REFUSED`, `not-stored`) so that an IT
    /// system that submits again does not send the data twice; if even that cannot be made
    /// durable, they stay held back in this process and the answer says to ask GetStatus.
    /// The answer recorded for a keyed call (`keyed`) is forgotten with the undo, in its
    /// transaction; when `store` finds that an earlier call with the key was answered
    /// (nothing stored), nothing is flushed or undone.
    /// Runs to its end even when the caller goes away meanwhile.
    async fn store_outgoing<T>(
        &self,
        outgoing: &[Outgoing],
        keyed: Option<&KeyedRequest>,
        recorded: Option<&str>,
        store: impl FnOnce() -> Result<Once<T>, LedgerError>,
    ) -> Result<Once<T>, NodeError> {
        let ids: Vec<String> = outgoing.iter().map(|o| o.message_id.clone()).collect();
        self.shared.hold_unconfirmed(ids.iter().map(String::as_str));
        let stored = match store() {
            Ok(Once::First(stored)) => stored,
            Ok(repeat @ Once::Repeat(_)) => {
                self.shared.confirm(ids.iter().map(String::as_str));
                return Ok(repeat);
            }
            Err(e) => {
                self.shared.confirm(ids.iter().map(String::as_str));
                return Err(e.into());
            }
        };
        let node = self.clone();
        let key_id = keyed.map(|k| k.key_id);
        let recorded = recorded.map(str::to_string);
        let settled =
            tokio::spawn(async move { node.confirm_or_undo(ids, key_id, recorded).await })
                .await
                .map_err(|e| NodeError::Task(format!("confirming a submission: {e}")))?;
        settled?;
        Ok(Once::First(stored))
    }

    /// Flushes; on success releases `ids` for delivery, on failure undoes their queueing
    /// (and forgets the answer recorded under `key_id`, in the same transaction, and undoes
    /// the recording of consent `recorded`, whose notices they are).
    async fn confirm_or_undo(
        &self,
        ids: Vec<String>,
        key_id: Option<[u8; 32]>,
        recorded: Option<String>,
    ) -> Result<(), NodeError> {
        let Err(failed) = self.shared.ledger().flush().await else {
            self.shared.confirm(ids.iter().map(String::as_str));
            return Ok(());
        };
        tracing::error!(error = %failed, "flush after queueing failed; taking the messages out again");
        let undo: Vec<(String, Finish)> = ids
            .iter()
            .map(|id| {
                let how = Finish::Refused {
                    reason: NOT_STORED.to_string(),
                };
                (id.clone(), how)
            })
            .collect();
        let now = self.shared.now_ms();
        let undone = self
            .shared
            .ledger()
            .undo_queued(&undo, key_id.as_ref(), now)
            .and_then(|_| match &recorded {
                Some(consent_id) => self.shared.ledger().unrecord_consent(consent_id, now),
                None => Ok(()),
            });
        let durable = match undone {
            Ok(()) => self.shared.ledger().flush().await,
            Err(e) => Err(e),
        };
        match durable {
            Ok(()) => {
                self.shared.confirm(ids.iter().map(String::as_str));
                Err(NodeError::NotStored(format!(
                    "the store could not confirm it on disk, so nothing was queued ({}); submit again",
                    ids.join(", ")
                )))
            }
            Err(e) => {
                tracing::error!(error = %e, "the store failed twice; held messages stay held in this process");
                Err(NodeError::StoreFailed(format!(
                    "the store failed; whether {} is queued is unknown: ask GetStatus, or repeat \
                     the call with the same idempotency key, before submitting again",
                    ids.join(", ")
                )))
            }
        }
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
        let now = self.shared.now_ms();
        // One more than asked tells whether another page follows.
        let mut page = self.shared.ledger().consents_after(&req.after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next_after = match (more, page.last()) {
            (true, Some((id, _))) => id.clone(),
            _ => String::new(),
        };
        let consents = page.into_iter().map(|(_, c)| entry(c, now)).collect();
        Ok(ListConsentsResponse {
            consents,
            next_after,
        })
    }

    /// One page of the consents held here, newest first: up to `limit` (at most
    /// [`CONSENT_PAGE_MAX`]) with ids before `before` (from the newest when empty), with
    /// their state now, and the id to pass as `before` for the next page (`None` when this
    /// page is the last). For the console's list; the AgencyApi pages oldest first.
    pub fn consents_newest_first(
        &self,
        before: &str,
        limit: usize,
    ) -> Result<(Vec<ConsentEntry>, Option<String>), NodeError> {
        if limit == 0 || limit > CONSENT_PAGE_MAX {
            return Err(NodeError::invalid(
                "limit",
                format!("is {limit}; 1 to {CONSENT_PAGE_MAX} per page"),
            ));
        }
        if !before.is_empty() {
            ids::parse_id("before", before)
                .map_err(|e| NodeError::invalid("before", e.to_string()))?;
        }
        let now = self.shared.now_ms();
        let mut page = self.shared.ledger().consents_before(before, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = match (more, page.last()) {
            (true, Some((id, _))) => Some(id.clone()),
            _ => None,
        };
        let entries = page.into_iter().map(|(_, c)| entry(c, now)).collect();
        Ok((entries, next))
    }

    /// The consent `consent_id` held here (recorded here or received in a notice), with its
    /// state now; `None` when there is none.
    pub fn consent(&self, consent_id: &str) -> Result<Option<ConsentEntry>, NodeError> {
        ids::parse_id("consent_id", consent_id)
            .map_err(|e| NodeError::invalid("consent_id", e.to_string()))?;
        let now = self.shared.now_ms();
        Ok(self
            .shared
            .ledger()
            .consent(consent_id)?
            .filter(|c| c.record.is_some())
            .map(|c| entry(c, now)))
    }

    /// Submits a case message. Acknowledged once durable in the outbox.
    pub async fn submit(
        &self,
        client: &str,
        req: SubmitRequest,
    ) -> Result<SubmitResponse, NodeError> {
        let now = self.shared.now_ms();
        let mut keyed = keyed(client, &req, now)?;
        if let Some(earlier) = self.answers.earlier_answer(keyed.as_ref()).await? {
            return self.answers.submit_answer(&earlier);
        }
        let directory = self.shared.directory();
        let recipient = directory.require("recipient", &req.recipient)?;
        if recipient.id == self.shared.agency() {
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
            self.shared.audit_refusal(
                AuditEvent::SubmissionRefused,
                kind,
                &req.recipient,
                &req.consent_id,
                &e,
            );
            e
        };
        let subject =
            policy::admit_case_message(kind, self.shared.role(), recipient.role, &body, now)
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
            self.shared.ledger().consent(&req.consent_id)?
        };
        let categories = categories_carried(&body);
        let query = ConsentQuery {
            subject,
            sender: self.shared.agency(),
            recipient: &recipient.id,
            purpose,
            categories: &categories,
            at_ms: now,
        };
        consent::evaluate(stored.as_ref(), &query).map_err(|r| refused(NodeError::Consent(r)))?;
        let out = self.shared.seal_outgoing(
            kind,
            &recipient.id,
            &req.consent_id,
            &req.in_reply_to,
            &body,
            now,
        )?;
        answering(&mut keyed, [out.message_id.clone()], "");
        let outgoing = [out];
        let lane = match self
            .store_outgoing(&outgoing, keyed.as_ref(), None, || {
                self.shared
                    .ledger()
                    .enqueue_once(&outgoing[0], keyed.as_ref())
            })
            .await?
        {
            Once::First(lane) => lane,
            Once::Repeat(earlier) => {
                // A concurrent call with the same key was first.
                let k = keyed.as_ref().ok_or_else(|| {
                    NodeError::Internal("an earlier answer found for a call without key".into())
                })?;
                return self
                    .answers
                    .submit_answer(&self.answers.repeated_answer(k, earlier).await?);
            }
        };
        let [out] = outgoing;
        self.shared.wake_lane(&out.recipient, lane);
        self.shared.metrics().submitted();
        tracing::info!(message_id = %out.message_id, kind = ?kind, recipient = %out.recipient, "message queued");
        Ok(SubmitResponse {
            message_id: out.message_id,
            state: DeliveryState::Queued as i32,
        })
    }

    /// The consents held here under which this agency may send `body` to `recipient` now:
    /// the decision [`Submission::submit`] makes (the kind's purpose, the categories the body
    /// carries, the ledger's [`consent::evaluate`]), newest first, at most `limit`. For a
    /// form that offers only the consents that cover its message; a body without a subject
    /// is covered by none. Reads every consent held (there is no index by person).
    pub fn covering_consents(
        &self,
        recipient: &str,
        body: &MessageBody,
        limit: usize,
    ) -> Result<Vec<ConsentRecord>, NodeError> {
        let (Some(kind), Some(subject)) =
            (kind_of(body), kurzdraht_envelope::body::subject_of(body))
        else {
            return Ok(Vec::new());
        };
        let Some(purpose) = policy::purpose_of(kind) else {
            return Ok(Vec::new());
        };
        let categories = categories_carried(body);
        let query = ConsentQuery {
            subject,
            sender: self.shared.agency(),
            recipient,
            purpose,
            categories: &categories,
            at_ms: self.shared.now_ms(),
        };
        // Only this person's consents can cover the message (the consent decision checks the
        // subject first): read them by the person index, not every consent held.
        let mut covering = Vec::new();
        for held in self.shared.ledger().consents_of_person(subject)? {
            if consent::evaluate(Some(&held), &query).is_ok() {
                covering.extend(held.record);
            }
        }
        covering.reverse();
        covering.truncate(limit);
        Ok(covering)
    }

    /// Where a submitted message is.
    pub fn status(&self, message_id: &str) -> Result<MessageStatus, NodeError> {
        ids::parse_id("message_id", message_id)
            .map_err(|e| NodeError::invalid("message_id", e.to_string()))?;
        self.shared
            .ledger()
            .message(message_id)?
            .and_then(|r| r.status)
            .ok_or_else(|| NodeError::NotFound(format!("message {message_id}")))
    }
}

/// A stored consent as the services show it, with its state at `now`.
fn entry(c: kurzdraht_ledger::StoredConsent, now: i64) -> ConsentEntry {
    ConsentEntry {
        state: consent::state_at(&c, now) as i32,
        consent: c.record,
        withdrawal: c.withdrawal,
        superseded_by: c.superseded_by,
    }
}
