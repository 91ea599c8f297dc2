//! Delivery workers: one task per peer takes the oldest queued message for that peer
//! (FIFO, so a consent notice always precedes what cites it), checks the consent again,
//! delivers it over mutual TLS, verifies the signed receipt and records the outcome.
//! Transient failures are retried with exponential backoff and jitter until the message's
//! deadline; a peer's refusal is final. One unreachable peer delays only its own queue.

use crate::{clock, node::Node, policy, tls, NodeError};
use kurzdraht_envelope::{body::subject_of, verify_receipt, ExpectedReceipt};
use kurzdraht_ledger::{consent, ConsentQuery, ConsentRefusal, Finish, OutboxEntry};
use kurzdraht_proto::v1::{
    peer_exchange_client::PeerExchangeClient, EnvelopeHeader, MessageBody, MessageKind,
    SignedEnvelope,
};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
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

/// Whether a peer's answer means "never" (true) or "try again later" (false).
pub fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::NotFound
            | Code::Unimplemented
            | Code::OutOfRange
    )
}

/// Starts one worker per peer; they stop when `shutdown` turns true.
pub fn spawn_workers(node: &Node, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    node.outbox_signals()
        .map(|(peer, signal)| {
            let worker = PeerWorker {
                node: node.clone(),
                peer: peer.clone(),
                signal: signal.clone(),
                shutdown: shutdown.clone(),
                client: None,
            };
            tokio::spawn(worker.run())
        })
        .collect()
}

struct PeerWorker {
    node: Node,
    peer: String,
    signal: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    client: Option<PeerExchangeClient<Channel>>,
}

enum Step {
    /// Go on with the next message at once.
    Next,
    /// Nothing to do until woken.
    Idle,
    /// Wait this long (or until woken) and look again.
    Wait(Duration),
}

impl PeerWorker {
    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let step = match self.step().await {
                Ok(step) => step,
                Err(e) => {
                    tracing::error!(peer = %self.peer, error = %e, "delivery worker error");
                    Step::Wait(Duration::from_secs(1))
                }
            };
            let wait = match step {
                Step::Next => continue,
                Step::Idle => Duration::from_secs(3600),
                Step::Wait(d) => d,
            };
            tokio::select! {
                _ = self.signal.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.changed() => {}
            }
        }
    }

    fn client(&mut self) -> Result<PeerExchangeClient<Channel>, NodeError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let agency = self
            .node
            .directory()
            .get(&self.peer)
            .ok_or_else(|| NodeError::config("directory", format!("{} vanished", self.peer)))?;
        let settings = self.node.delivery_settings();
        let channel = Endpoint::from_shared(agency.endpoint.clone())
            .map_err(|e| NodeError::config("directory.endpoint", e.to_string()))?
            .tls_config(tls::peer_client_tls(self.node.tls(), &self.peer))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(settings.request_timeout)
            .connect_lazy();
        let client = PeerExchangeClient::new(channel);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn step(&mut self) -> Result<Step, NodeError> {
        let ledger = self.node.ledger().clone();
        let Some(entry) = ledger.outbox_head(&self.peer)? else {
            return Ok(Step::Idle);
        };
        let record = ledger.message(&entry.message_id)?.ok_or_else(|| {
            NodeError::NotFound(format!("record of queued message {}", entry.message_id))
        })?;
        let now = clock::now_ms();
        let envelope = entry
            .envelope
            .clone()
            .ok_or_else(|| NodeError::NotFound(format!("envelope of {}", entry.message_id)))?;
        // The consent is checked again at every attempt: a withdrawal stops queued messages.
        let consent = self.consent_still_valid(&envelope, now);
        match next_action(now, entry.deadline_ms, record.next_attempt_ms, consent) {
            Action::Expire => {
                self.finish(&entry, Finish::Expired).await?;
                tracing::warn!(message_id = %entry.message_id, peer = %self.peer, "message expired undelivered");
                return Ok(Step::Next);
            }
            Action::Wait(d) => return Ok(Step::Wait(d)),
            Action::Refuse(refusal) => {
                self.node.metrics().refused(refusal.code());
                self.finish(
                    &entry,
                    Finish::Refused {
                        reason: refusal.code().to_string(),
                    },
                )
                .await?;
                tracing::info!(message_id = %entry.message_id, reason = refusal.code(), "queued message stopped");
                return Ok(Step::Next);
            }
            Action::Deliver => {}
        }
        let client = self.client()?;
        let outcome = client.clone().deliver(envelope).await;
        match outcome {
            Ok(resp) => {
                let receipt = resp.into_inner();
                let peer_keys = self
                    .node
                    .directory()
                    .get(&self.peer)
                    .map(|a| a.signing_keys.clone())
                    .unwrap_or_default();
                let hash: [u8; 32] =
                    record.envelope_sha256.as_slice().try_into().map_err(|_| {
                        NodeError::NotFound(format!("envelope hash of {}", entry.message_id))
                    })?;
                let expected = ExpectedReceipt {
                    message_id: &entry.message_id,
                    envelope_sha256: &hash,
                    sender: self.node.agency(),
                    receiver: &self.peer,
                };
                match verify_receipt(&receipt, &peer_keys, &expected) {
                    Ok(_) => {
                        self.finish(&entry, Finish::Delivered { receipt }).await?;
                        let submitted = record.status.as_ref().map(|s| s.submitted_at_ms);
                        self.node.metrics().delivered(submitted, clock::now_ms());
                        tracing::info!(message_id = %entry.message_id, peer = %self.peer, "delivered; receipt verified");
                        Ok(Step::Next)
                    }
                    Err(e) => self.retry(&entry, &format!("receipt refused: {e}")).await,
                }
            }
            Err(status) if is_permanent(status.code()) => {
                let reason = format!(
                    "{} refused it: {:?} ({})",
                    self.peer,
                    status.code(),
                    crate::error::reason_of(&status).unwrap_or("no reason code")
                );
                self.finish(&entry, Finish::Rejected { reason }).await?;
                tracing::warn!(message_id = %entry.message_id, peer = %self.peer, code = ?status.code(), "rejected by peer");
                Ok(Step::Next)
            }
            Err(status) => {
                let detail = format!("{:?}: {}", status.code(), status.message());
                self.retry(&entry, &detail).await
            }
        }
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
            return Ok(()); // consent notices and withdrawals carry their own authority
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

    async fn finish(&self, entry: &OutboxEntry, how: Finish) -> Result<(), NodeError> {
        let notice = self
            .node
            .ledger()
            .finish(&entry.message_id, &how, clock::now_ms())?;
        self.node.ledger().flush().await?;
        if let Some(seq) = notice {
            self.node.inbox_changed(seq);
        }
        Ok(())
    }

    async fn retry(&self, entry: &OutboxEntry, detail: &str) -> Result<Step, NodeError> {
        self.node.metrics().retried();
        let ledger = self.node.ledger();
        let attempts = ledger
            .message(&entry.message_id)?
            .and_then(|r| r.status)
            .map_or(0, |s| s.attempts)
            + 1;
        let s = self.node.delivery_settings();
        let delay = retry_delay(attempts, s.retry_initial, s.retry_max, jitter());
        let now = clock::now_ms();
        ledger.record_attempt(
            &entry.message_id,
            detail,
            now + delay.as_millis() as i64,
            now,
        )?;
        tracing::info!(message_id = %entry.message_id, peer = %self.peer, attempts, retry_in_ms = delay.as_millis() as u64, detail, "delivery failed; will retry");
        Ok(Step::Wait(delay))
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

    #[test]
    fn transient_and_permanent_codes() {
        assert!(!is_permanent(Code::Unavailable));
        assert!(!is_permanent(Code::DeadlineExceeded));
        assert!(!is_permanent(Code::ResourceExhausted));
        assert!(!is_permanent(Code::Internal));
        assert!(is_permanent(Code::FailedPrecondition));
        assert!(is_permanent(Code::PermissionDenied));
    }
}
