//! Delivery workers: one task per delivery lane of each peer takes the oldest queued
//! messages of its lane (FIFO; a consent's chain, its notices and the messages citing it
//! share one lane, so a consent notice always precedes what cites it — see the ledger's
//! `store::lanes`), checks each consent again,
//! delivers them through the peer's transport (`peer_transport`: mutual TLS in a node) as
//! one batch (DeliverBatch; one by one to a peer that does not know it), verifies each signed receipt and records the outcomes with one flush.
//! Transient failures are retried with exponential backoff and jitter until the message's
//! deadline; a peer's refusal is final. One unreachable peer delays only its own queue.

use crate::error::{retry_class, Retry};
use crate::peer_transport::{GrpcTransport, PeerTransport, CONNECT_TIMEOUT};
use crate::rpc::peer_exchange::{MAX_BATCH_BYTES, MAX_BATCH_ENVELOPES};
use crate::{node::Node, policy, NodeError};
use kurzdraht_envelope::{body::subject_of, ExpectedReceipt, ReceiptVerifier};
use kurzdraht_ledger::{
    consent, ConsentQuery, ConsentRefusal, Finish, MessageRecord, OutboxEntry, Outgoing,
};
use kurzdraht_proto::v1::{
    delivery_outcome::Outcome, DeliveryOutcome, DeliveryState, EnvelopeBatch, EnvelopeHeader,
    MessageBody, MessageKind, MessageStatus, SignedEnvelope, SignedReceipt,
};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::Code;

/// Delay before retry number `attempt` (1-based): `initial · 2^(attempt-1)`, capped at `max`,
/// then scaled by `jitter` in [0.5, 1.0] so that retries of many nodes do not synchronise.
pub fn retry_delay(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped.mul_f64(jitter.clamp(0.5, 1.0))
}

fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.75;
    }
    0.5 + f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) / 2.0
}

/// What to do with the message at the head of a peer's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its deadline has passed: it becomes EXPIRED and is never sent.
    Expire,
    /// Its next attempt is not yet due.
    Wait(Duration),
    /// The consent no longer allows it: it becomes REFUSED and nothing of it leaves.
    Refuse(ConsentRefusal),
    /// Send it now.
    Deliver,
}

/// The decision before each delivery attempt. Expiry wins over everything, then consent
/// (a withdrawal stops a message even while it waits for its retry), then the retry time.
pub fn next_action(
    now_ms: i64,
    deadline_ms: i64,
    next_attempt_ms: i64,
    consent: Result<(), ConsentRefusal>,
) -> Action {
    if now_ms > deadline_ms {
        return Action::Expire;
    }
    if let Err(refusal) = consent {
        return Action::Refuse(refusal);
    }
    if next_attempt_ms > now_ms {
        let until = next_attempt_ms.min(deadline_ms.saturating_add(1));
        return Action::Wait(Duration::from_millis((until - now_ms).max(1) as u64));
    }
    Action::Deliver
}

/// When a queued message is next due. A starting node tries every peer at once: until an
/// attempt of this run failed, a retry time an earlier run set is not waited for — so a
/// restart (`systemctl restart kurzdraht`) is how an operator retries now, after a peer
/// came back from a long outage and the back-off had reached `delivery.retry_max_ms`.
pub fn due_at(next_attempt_ms: i64, now_ms: i64, failed_this_run: bool) -> i64 {
    match failed_this_run {
        true => next_attempt_ms,
        false => next_attempt_ms.min(now_ms),
    }
}

/// How long a round waits for a submission to be confirmed before it looks again (the
/// submission wakes the lane itself once it is answered; this is the fallback).
const UNCONFIRMED_WAIT: Duration = Duration::from_millis(200);

/// Starts one worker per lane of each peer; they stop when `shutdown` turns true. The
/// workers of one peer share one transport (one HTTP/2 connection to it).
pub fn spawn_workers(node: &Node, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    for (peer, signals) in node.outbox_signals() {
        let transport: Arc<dyn PeerTransport> = GrpcTransport::new(node.shared().clone(), peer);
        for (lane, signal) in signals.iter().enumerate() {
            let worker = LaneWorker::new(node.clone(), peer, lane as u8, transport.clone());
            let run = run(worker, signal.clone(), shutdown.clone());
            workers.push(tokio::spawn(run));
        }
    }
    workers
}

/// Runs a lane's rounds until `shutdown`: at once while there is more to do, else after the
/// wait a round asked for, or when woken.
async fn run(mut worker: LaneWorker, signal: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let step = match worker.step().await {
            Ok(step) => step,
            Err(e) => {
                tracing::error!(peer = %worker.peer, lane = worker.lane, error = %e, "delivery worker error");
                Step::Wait(Duration::from_secs(1))
            }
        };
        let wait = match step {
            Step::Next => continue,
            Step::Idle => Duration::from_secs(3600),
            Step::Wait(d) => d,
        };
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The delivery of one lane of one peer's outbox: each [`LaneWorker::step`] is one round.
/// A node runs one per lane and peer; tests drive one directly (with a transport and a
/// clock of their own).
pub struct LaneWorker {
    node: Node,
    peer: String,
    lane: u8,
    transport: Arc<dyn PeerTransport>,
    /// Whether the peer takes DeliverBatch (false once it answered UNIMPLEMENTED).
    batches: bool,
    /// Whether an attempt of this worker failed yet: until then, retry times set by an
    /// earlier run of the node are not waited for (see [`due_at`]).
    failed_this_run: std::sync::atomic::AtomicBool,
}

/// What a round asks of its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on with the next round at once.
    Next,
    /// Nothing to do until woken.
    Idle,
    /// Wait this long (or until woken) and look again.
    Wait(Duration),
}

impl LaneWorker {
    pub fn new(node: Node, peer: &str, lane: u8, transport: Arc<dyn PeerTransport>) -> Self {
        Self {
            node,
            peer: peer.to_string(),
            lane,
            transport,
            batches: true,
            failed_this_run: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// One round for this peer: takes the oldest queued messages (up to a batch), settles
    /// those that expired or lost their consent, delivers the rest that are due — in FIFO
    /// order, stopping at the first that must wait — as one batch, and records each outcome.
    /// Everything the round changed becomes durable with one flush.
    pub async fn step(&mut self) -> Result<Step, NodeError> {
        let ledger = self.node.ledger().clone();
        // Held from the consent check until the outcomes are stored: a withdrawal,
        // replacement or erasure waits for this round, and the next round sees it.
        let gate = self.node.lane_gate(&self.peer, self.lane);
        let _round = match &gate {
            Some(gate) => Some(gate.read().await),
            None => None,
        };
        let started = std::time::Instant::now();
        let entries = ledger.outbox_batch(&self.peer, self.lane, MAX_BATCH_ENVELOPES)?;
        if entries.is_empty() {
            return Ok(Step::Idle);
        }
        let now = self.node.now_ms();
        let mut round = Round::default();
        let due = self.select_due(&ledger, entries, now, &mut round)?;
        let sending = self.send_due(&mut round, &due).await?;
        if !round.finishes.is_empty() {
            let finishes = std::mem::take(&mut round.finishes);
            for finished in ledger.finish_all(&finishes, self.node.now_ms())? {
                round.notices.extend(finished.notice_seq);
                round.finished.extend(finished.status);
            }
            round.changed = true;
        }
        if round.changed {
            ledger.flush().await?;
        }
        tracing::debug!(
            peer = %self.peer,
            lane = self.lane,
            sent = due.len(),
            send_us = sending.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "delivery round"
        );
        let wait = round.wait;
        self.publish(round);
        Ok(match wait {
            Some(d) => Step::Wait(d),
            None => Step::Next,
        })
    }

    /// The round's messages in FIFO order up to the first that must wait: those due go
    /// into the batch (within its bytes), those expired or no longer allowed by their
    /// consent are finished in `round`.
    fn select_due(
        &self,
        ledger: &kurzdraht_ledger::Ledger,
        entries: Vec<OutboxEntry>,
        now: i64,
        round: &mut Round,
    ) -> Result<Vec<Due>, NodeError> {
        let mut due: Vec<Due> = Vec::new();
        let mut bytes = 0usize;
        for mut entry in entries {
            if self.node.is_unconfirmed(&entry.message_id) {
                // Its submission is not yet answered (the flush may still fail): nothing
                // leaves before the IT system was told it is queued. FIFO: the rest waits.
                if due.is_empty() {
                    round.wait = Some(UNCONFIRMED_WAIT);
                }
                break;
            }
            let record = ledger.message(&entry.message_id)?.ok_or_else(|| {
                NodeError::Internal(format!("no record of queued message {}", entry.message_id))
            })?;
            let queued = record
                .status
                .as_ref()
                .is_some_and(|s| s.state == DeliveryState::Queued as i32);
            if !queued {
                // Final since this round read the outbox (its submission undone): nothing
                // of it goes.
                continue;
            }
            let envelope = entry.envelope.take().ok_or_else(|| {
                NodeError::Internal(format!("no envelope of {}", entry.message_id))
            })?;
            // The consent is checked again at every attempt: a withdrawal stops queued messages.
            let consent = self.consent_still_valid(&envelope, now);
            let due_ms = due_at(
                record.next_attempt_ms,
                now,
                self.failed_this_run
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            // The record's deadline is the one in force (`kurzdraht outbox extend` moves it).
            match next_action(now, record.deadline_ms, due_ms, consent) {
                Action::Expire => {
                    let how = match record.status.as_ref().map(|s| s.kind) {
                        Some(k) if k == MessageKind::ConsentWithdrawal as i32 => {
                            Finish::ExpiredRenewed {
                                renewal: Box::new(
                                    self.renewed_withdrawal(&record, &envelope, now)?,
                                ),
                            }
                        }
                        _ => Finish::Expired,
                    };
                    Self::finish(round, &entry, how);
                    tracing::warn!(message_id = %entry.message_id, peer = %self.peer, "message expired undelivered");
                }
                Action::Refuse(refusal) => {
                    self.node.metrics().refused(refusal.code());
                    // An earlier attempt went unanswered: the peer may hold it from before.
                    let reason = match record.in_doubt {
                        true => format!("{}{IN_DOUBT}", refusal.code()),
                        false => refusal.code().to_string(),
                    };
                    let how = Finish::Refused { reason };
                    Self::finish(round, &entry, how);
                    tracing::info!(message_id = %entry.message_id, reason = refusal.code(), "queued message stopped");
                }
                Action::Wait(d) => {
                    if due.is_empty() {
                        round.wait = Some(d);
                    }
                    break; // FIFO: nothing behind it goes first
                }
                Action::Deliver => {
                    let size = envelope.encoded_len();
                    if !due.is_empty() && bytes + size > MAX_BATCH_BYTES {
                        break;
                    }
                    bytes += size;
                    due.push(Due {
                        entry,
                        record,
                        envelope,
                    });
                }
            }
        }
        Ok(due)
    }

    /// Sends the batch and settles its answers in `round`; how long sending took.
    async fn send_due(&mut self, round: &mut Round, due: &[Due]) -> Result<Duration, NodeError> {
        let mut sending = Duration::ZERO;
        if !due.is_empty() {
            let sent = std::time::Instant::now();
            // Bounded as a whole: tonic times a request out, but not a TLS handshake with a
            // peer that accepted the connection and then froze.
            let limit = self.node.delivery_settings().request_timeout + CONNECT_TIMEOUT;
            let answers = match tokio::time::timeout(limit, self.send(due)).await {
                Ok(answers) => answers,
                Err(_) => {
                    let detail = format!("no answer from {} within {limit:?}", self.peer);
                    // Handed over, unanswered: the peer may store it yet.
                    let answer = Answer::Transient {
                        detail,
                        in_doubt: true,
                    };
                    due.iter().map(|_| answer.clone()).collect()
                }
            };
            sending = sent.elapsed();
            self.settle(round, due, answers)?;
        }
        Ok(sending)
    }

    /// Tells inbox readers, status watchers and the metrics what the stored round changed.
    fn publish(&self, round: Round) {
        for seq in round.notices {
            self.node.inbox_changed(seq);
        }
        for status in round.finished {
            self.node.status_reached(status);
        }
        for (submitted, delivered_at) in round.delivered {
            self.node.metrics().delivered(submitted, delivered_at);
        }
    }

    /// Delivers `due` to the peer as one batch; one answer per message, in order. A peer
    /// that does not know DeliverBatch (an older version) gets them one by one.
    async fn send(&mut self, due: &[Due]) -> Vec<Answer> {
        if self.batches {
            let batch = EnvelopeBatch {
                envelopes: due.iter().map(|d| d.envelope.clone()).collect(),
            };
            match self.transport.deliver_batch(batch).await {
                Ok(resp) => {
                    let outcomes = resp.outcomes;
                    if outcomes.len() != due.len() {
                        let detail = format!(
                            "{} answered {} outcomes for {} envelopes",
                            self.peer,
                            outcomes.len(),
                            due.len()
                        );
                        return due
                            .iter()
                            .map(|_| Answer::transient(detail.clone()))
                            .collect();
                    }
                    return outcomes
                        .into_iter()
                        .map(|o| Answer::from_outcome(&self.peer, o))
                        .collect();
                }
                Err(status) if status.code() == Code::Unimplemented => {
                    tracing::info!(peer = %self.peer, "peer does not take batches; delivering one by one");
                    self.batches = false;
                }
                Err(status) => {
                    let answer = Answer::from_status(&self.peer, &status);
                    return due.iter().map(|_| answer.clone()).collect();
                }
            }
        }
        let mut answers = Vec::with_capacity(due.len());
        for d in due {
            let answer = match self.transport.deliver(d.envelope.clone()).await {
                Ok(receipt) => Answer::Receipt(receipt),
                Err(status) => Answer::from_status(&self.peer, &status),
            };
            let stop = matches!(answer, Answer::Transient { .. });
            answers.push(answer);
            if stop {
                // FIFO: what follows a message that must be retried waits for it.
                break;
            }
        }
        while answers.len() < due.len() {
            answers.push(Answer::transient(
                "an earlier message must be retried first".into(),
            ));
        }
        answers
    }

    /// Records each message's outcome (not yet flushed): a verified receipt delivers it, a
    /// permanent refusal rejects it, anything else schedules a retry.
    fn settle(
        &self,
        round: &mut Round,
        due: &[Due],
        answers: Vec<Answer>,
    ) -> Result<(), NodeError> {
        let peer_keys = self
            .node
            .directory()
            .get(&self.peer)
            .map(|a| a.active_keys().to_vec())
            .unwrap_or_default();
        let mut verifier = ReceiptVerifier::new(&peer_keys);
        let mut retry_at = None;
        for (d, answer) in due.iter().zip(answers) {
            let id = &d.entry.message_id;
            match answer {
                Answer::Receipt(receipt) => {
                    let hash: [u8; 32] =
                        d.record
                            .envelope_sha256
                            .as_slice()
                            .try_into()
                            .map_err(|_| {
                                NodeError::Internal(format!("stored envelope hash of {id}"))
                            })?;
                    let expected = ExpectedReceipt {
                        message_id: id,
                        envelope_sha256: &hash,
                        sender: self.node.agency(),
                        receiver: &self.peer,
                    };
                    match verifier.verify(&receipt, &expected) {
                        Ok(_) => {
                            Self::finish(round, &d.entry, Finish::Delivered { receipt });
                            let submitted = d.record.status.as_ref().map(|s| s.submitted_at_ms);
                            round.delivered.push((submitted, self.node.now_ms()));
                            tracing::info!(message_id = %id, peer = %self.peer, "delivered; receipt verified");
                        }
                        Err(e) => self.retry(
                            round,
                            &mut retry_at,
                            d,
                            &format!("receipt refused: {e}"),
                            true,
                        )?,
                    }
                }
                Answer::Rejected(reason) => {
                    tracing::warn!(message_id = %id, peer = %self.peer, reason = %reason, "rejected by peer");
                    Self::finish(round, &d.entry, Finish::Rejected { reason });
                }
                Answer::Transient { detail, in_doubt } => {
                    self.retry(round, &mut retry_at, d, &detail, in_doubt)?
                }
            }
        }
        Ok(())
    }

    fn consent_still_valid(
        &self,
        envelope: &SignedEnvelope,
        now: i64,
    ) -> Result<(), ConsentRefusal> {
        use ConsentRefusal::NoConsent;
        // Our own sealed envelope; decoding cannot fail unless the store is corrupt.
        let header = EnvelopeHeader::decode(envelope.header.as_slice()).map_err(|_| NoConsent)?;
        let kind = MessageKind::try_from(header.kind).map_err(|_| NoConsent)?;
        let Some(purpose) = policy::purpose_of(kind) else {
            // A withdrawal notice carries no personal data and always goes. A consent
            // notice carries the person's data: it stays home once its consent is
            // withdrawn, replaced or erased here.
            if kind != MessageKind::ConsentNotice {
                return Ok(());
            }
            let held = self
                .node
                .ledger()
                .consent(&header.consent_id)
                .map_err(|_| NoConsent)?
                .ok_or(NoConsent)?;
            return if held.withdrawal.is_some() {
                Err(ConsentRefusal::Withdrawn)
            } else if !held.superseded_by.is_empty() {
                Err(ConsentRefusal::Superseded)
            } else if held.erased_at_ms > 0 {
                Err(ConsentRefusal::Erased)
            } else {
                Ok(())
            };
        };
        let body = MessageBody::decode(envelope.payload.as_slice()).map_err(|_| NoConsent)?;
        let subject = subject_of(&body).ok_or(NoConsent)?;
        let stored = self
            .node
            .ledger()
            .consent(&header.consent_id)
            .map_err(|_| NoConsent)?;
        let categories = crate::categories::categories_carried(&body);
        consent::evaluate(
            stored.as_ref(),
            &ConsentQuery {
                subject,
                sender: self.node.agency(),
                recipient: &self.peer,
                purpose,
                categories: &categories,
                at_ms: now,
            },
        )
    }

    /// Gives a queued message its final state (stored with the round's others in one
    /// transaction, flushed at the end of the round).
    fn finish(round: &mut Round, entry: &OutboxEntry, how: Finish) {
        round.finishes.push((entry.message_id.clone(), how));
    }

    /// A consent withdrawal that expired undelivered, in a new envelope made now: the peer
    /// must learn of the withdrawal however long it was away (a withdrawal only narrows what
    /// it may do, and its old envelope would soon be too old for the peer's replay window).
    fn renewed_withdrawal(
        &self,
        record: &MessageRecord,
        envelope: &SignedEnvelope,
        now: i64,
    ) -> Result<Outgoing, NodeError> {
        let body = MessageBody::decode(envelope.payload.as_slice()).map_err(|e| {
            NodeError::Internal(format!(
                "a queued withdrawal's own envelope does not decode: {e}"
            ))
        })?;
        let consent_id = record.status.as_ref().map_or("", |s| s.consent_id.as_str());
        self.node.seal_outgoing(
            MessageKind::ConsentWithdrawal,
            &self.peer,
            consent_id,
            "",
            &body,
            now,
        )
    }

    /// Schedules another attempt. All messages of one failed batch share the delay of the
    /// first (they were sent together and will be sent together again).
    fn retry(
        &self,
        round: &mut Round,
        retry_at: &mut Option<(i64, Duration)>,
        d: &Due,
        detail: &str,
        in_doubt: bool,
    ) -> Result<(), NodeError> {
        let now = self.node.now_ms();
        let (next_attempt_ms, delay) = match *retry_at {
            Some(at) => at,
            None => {
                self.failed_this_run
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.node.metrics().retried();
                let attempts = d.record.status.as_ref().map_or(0, |s| s.attempts) + 1;
                let s = self.node.delivery_settings();
                let delay = retry_delay(attempts, s.retry_initial, s.retry_max, jitter());
                tracing::info!(message_id = %d.entry.message_id, peer = %self.peer, attempts, retry_in_ms = delay.as_millis() as u64, detail, "delivery failed; will retry");
                let at = (now + delay.as_millis() as i64, delay);
                *retry_at = Some(at);
                at
            }
        };
        self.node.ledger().record_attempt(
            &d.entry.message_id,
            detail,
            next_attempt_ms,
            now,
            in_doubt,
        )?;
        round.changed = true;
        round.wait = Some(round.wait.map_or(delay, |w| w.min(delay)));
        Ok(())
    }
}

/// A message of the current round that is due for delivery.
struct Due {
    entry: OutboxEntry,
    record: MessageRecord,
    envelope: SignedEnvelope,
}

/// What one round changed and what to do after it.
#[derive(Default)]
struct Round {
    /// Something was written: flush before the round ends.
    changed: bool,
    /// Final states to store, in queue order.
    finishes: Vec<(String, Finish)>,
    /// Inbox sequence numbers of delivery notices written.
    notices: Vec<u64>,
    /// The final statuses reached, for status watchers (after the flush).
    finished: Vec<MessageStatus>,
    /// Submission and delivery times of the messages delivered, for metrics.
    delivered: Vec<(Option<i64>, i64)>,
    /// Wait this long before the next round (the head must wait, or a retry is scheduled).
    wait: Option<Duration>,
}

/// Appended to the reason a queued message is stopped with when an earlier attempt of it
/// went unanswered, so that the peer may have stored it before the consent ended.
pub const IN_DOUBT: &str = "; sent-before-unanswered";

/// What a refusal without a reason code is recorded with.
const NO_REASON: &str = "no reason code";

/// The peer's answer for one message.
#[derive(Debug, Clone)]
enum Answer {
    Receipt(SignedReceipt),
    /// Refused for good, with the reason as the sender records it.
    Rejected(String),
    /// Try again later; `in_doubt` when the peer may have received it (no answer came).
    Transient {
        detail: String,
        in_doubt: bool,
    },
}

impl Answer {
    fn transient(detail: String) -> Self {
        Self::Transient {
            detail,
            in_doubt: false,
        }
    }

    fn from_status(peer: &str, status: &tonic::Status) -> Self {
        Self::classify(
            peer,
            status.code(),
            crate::error::reason_of(status).unwrap_or(NO_REASON),
            status.message(),
        )
    }

    fn from_outcome(peer: &str, outcome: DeliveryOutcome) -> Self {
        match outcome.outcome {
            Some(Outcome::Receipt(receipt)) => Self::Receipt(receipt),
            Some(Outcome::Refusal(r)) => Self::classify(
                peer,
                Code::from_i32(r.code),
                if r.reason.is_empty() {
                    NO_REASON
                } else {
                    &r.reason
                },
                &r.message,
            ),
            None => Self::transient("the peer's outcome was empty".into()),
        }
    }

    fn classify(peer: &str, code: Code, reason: &str, message: &str) -> Self {
        let known = (reason != NO_REASON).then_some(reason);
        match retry_class(code, known) {
            Retry::Final => Self::Rejected(format!("{peer} refused it: {code:?} ({reason})")),
            Retry::Transient => Self::Transient {
                detail: format!("{code:?} ({reason}): {message}"),
                // The request reached the peer, whose answer did not come back in time.
                in_doubt: matches!(code, Code::DeadlineExceeded | Code::Cancelled),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(10);
        assert_eq!(retry_delay(1, i, m, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(2, i, m, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(5, i, m, 1.0), Duration::from_millis(1600));
        assert_eq!(retry_delay(30, i, m, 1.0), m);
        assert_eq!(retry_delay(1, i, m, 0.5), Duration::from_millis(50));
    }

    proptest! {
        #[test]
        fn backoff_is_bounded_and_monotone(a in 1u32..100, j in 0.5f64..=1.0) {
            let i = Duration::from_millis(250);
            let m = Duration::from_secs(300);
            let d = retry_delay(a, i, m, j);
            prop_assert!(d <= m);
            prop_assert!(d >= i.mul_f64(0.5));
            prop_assert!(retry_delay(a + 1, i, m, 1.0) >= retry_delay(a, i, m, 1.0));
        }
    }

    #[test]
    fn a_starting_node_does_not_wait_for_an_earlier_runs_retry_time() {
        assert_eq!(due_at(5_000, 1_000, false), 1_000);
        assert_eq!(due_at(500, 1_000, false), 500);
        assert_eq!(due_at(5_000, 1_000, true), 5_000);
        assert_eq!(due_at(500, 1_000, true), 500);
        assert_eq!(
            next_action(1_000, 9_000, due_at(5_000, 1_000, false), Ok(())),
            Action::Deliver
        );
    }

    #[test]
    fn next_action_order() {
        let ok = Ok(());
        let gone = Err(ConsentRefusal::Withdrawn);
        assert_eq!(next_action(11, 10, 0, ok), Action::Expire);
        assert_eq!(next_action(11, 10, 0, gone), Action::Expire);
        assert_eq!(
            next_action(5, 10, 8, gone),
            Action::Refuse(ConsentRefusal::Withdrawn)
        );
        assert_eq!(
            next_action(5, 10, 8, ok),
            Action::Wait(Duration::from_millis(3))
        );
        assert_eq!(
            next_action(5, 10, 50, ok),
            Action::Wait(Duration::from_millis(6))
        );
        assert_eq!(next_action(5, 10, 5, ok), Action::Deliver);
    }

    /// A peer's `too-large` is final even though its code is also the one of the
    /// transient `rate-limited`: the reason decides, in the one classification.
    #[test]
    fn answers_are_classified_by_reason_then_code() {
        let final_ = |a: Answer| matches!(a, Answer::Rejected(_));
        let r = Code::ResourceExhausted;
        assert!(final_(Answer::classify("p", r, "too-large", "m")));
        assert!(!final_(Answer::classify("p", r, "rate-limited", "m")));
        assert!(!final_(Answer::classify("p", r, NO_REASON, "m")));
        assert!(!final_(Answer::classify(
            "p",
            Code::Unavailable,
            "clock-skew",
            "m"
        )));
        assert!(final_(Answer::classify(
            "p",
            Code::OutOfRange,
            NO_REASON,
            "m"
        )));
        assert!(final_(Answer::classify(
            "p",
            Code::FailedPrecondition,
            "consent-withdrawn",
            "m"
        )));
        assert!(!final_(Answer::classify(
            "p",
            Code::Unavailable,
            NO_REASON,
            "m"
        )));
    }
}
