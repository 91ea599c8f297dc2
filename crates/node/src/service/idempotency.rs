//! Idempotency keys of the AgencyApi's state-changing calls (`Submit`, `RecordConsent`,
//! `WithdrawConsent`): exactly once from the IT system to the node.
//!
//! An IT system that lost an answer (its connection or the node died mid-call) repeats the
//! call with the same key. The same key with the same request gets the first answer and
//! changes nothing — also after a restart of the node; the same key with another request is
//! refused (`FAILED_PRECONDITION`, `idempotency-key-reused`).
//!
//! - Scope: keys are per IT system (the API client its bearer token names); two IT systems
//!   may use the same key for different calls.
//! - Limit: 1 to [`KEY_MAX_CHARS`] printable ASCII characters without spaces; empty means
//!   no key (the call is not idempotent).
//! - "The same request": SHA-256 over the method and the request's encoding without its
//!   key. Defaults the node fills in (`valid_from_ms` 0 = now) are part of neither, so a
//!   repeat matches.
//! - Only calls that changed something are remembered (with their change, in one ledger
//!   transaction; `kurzdraht_ledger::store::requests`): a refused call leaves no answer, and
//!   its repeat is decided anew.
//! - The answer is rebuilt from ids: a `Submit` gets its message id and `QUEUED` (where the
//!   message is now, `GetStatus` says); `RecordConsent` and `WithdrawConsent` get the
//!   consent as held now (after an erasure, without the person's data) with the same notice
//!   ids. So no answer keeps personal data of its own.
//! - A repeat is answered only once what the first call stored is durable: while the first
//!   call still waits for its flush, the repeat waits with it; if that flush failed and the
//!   first call was undone, the repeat is told so (`not-stored`) and a further repeat
//!   queues anew.
//! - Keys are kept at least the delivery deadline (`[delivery] deadline_secs`) after their
//!   first answer; the retention sweep forgets older ones.

use crate::shared::Shared;
use crate::NodeError;
use kurzdraht_ledger::{AnsweredRequest, KeyedRequest};
use kurzdraht_proto::v1::{
    DeliveryState, RecordConsentRequest, RecordConsentResponse, SubmitRequest, SubmitResponse,
    WithdrawConsentRequest, WithdrawConsentResponse,
};
use prost::Message;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The most characters an idempotency key has.
pub const KEY_MAX_CHARS: usize = 128;

/// How long a repeated call waits for the first call with its key to be confirmed on disk
/// (or undone) before it answers `store-failed`.
const FIRST_CALL_WAIT: Duration = Duration::from_secs(10);

/// A state-changing AgencyApi request that may carry an idempotency key.
pub(crate) trait KeyedCall: Message + Clone {
    /// The method's name, part of what makes two requests the same.
    const METHOD: &'static str;
    fn idempotency_key(&self) -> &str;
    /// The request as it is compared: without its key.
    fn without_key(&self) -> Self;
}

/// The three requests carry their key in a field of the same name.
macro_rules! keyed_call {
    ($request:ty, $method:literal) => {
        impl KeyedCall for $request {
            const METHOD: &'static str = $method;
            fn idempotency_key(&self) -> &str {
                &self.idempotency_key
            }
            fn without_key(&self) -> Self {
                Self {
                    idempotency_key: String::new(),
                    ..self.clone()
                }
            }
        }
    };
}

keyed_call!(SubmitRequest, "Submit");
keyed_call!(RecordConsentRequest, "RecordConsent");
keyed_call!(WithdrawConsentRequest, "WithdrawConsent");

/// Checks an idempotency key against its limit (empty: no key).
pub fn validate_key(key: &str) -> Result<(), NodeError> {
    const FIELD: &str = "idempotency_key";
    if key.len() > KEY_MAX_CHARS {
        return Err(NodeError::invalid(
            FIELD,
            format!("is {} bytes long; at most {KEY_MAX_CHARS}", key.len()),
        ));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(NodeError::invalid(
            FIELD,
            format!(
                "contains {:?}; only printable ASCII without spaces (0x21-0x7E) is allowed",
                bad
            ),
        ));
    }
    Ok(())
}

/// The keyed form of a call by IT system `client` (`None` without a key), with the answer
/// it records if it is the first; its ids are filled in once known.
pub(crate) fn keyed<R: KeyedCall>(
    client: &str,
    request: &R,
    now_ms: i64,
) -> Result<Option<KeyedRequest>, NodeError> {
    let key = request.idempotency_key();
    validate_key(key)?;
    if key.is_empty() {
        return Ok(None);
    }
    let key_id: [u8; 32] = Sha256::new()
        .chain_update(b"kurzdraht/v1/idempotency-key\0")
        .chain_update(client.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize()
        .into();
    let request_sha256 = Sha256::new()
        .chain_update(b"kurzdraht/v1/request\0")
        .chain_update(R::METHOD.as_bytes())
        .chain_update([0])
        .chain_update(request.without_key().encode_to_vec())
        .finalize()
        .to_vec();
    Ok(Some(KeyedRequest {
        key_id,
        answer: AnsweredRequest {
            method: R::METHOD.to_string(),
            request_sha256,
            answered_at_ms: now_ms,
            message_ids: Vec::new(),
            consent_id: String::new(),
        },
    }))
}

/// Sets the ids the answer of a keyed call names.
pub(crate) fn answering(
    keyed: &mut Option<KeyedRequest>,
    message_ids: impl IntoIterator<Item = String>,
    consent_id: &str,
) {
    if let Some(k) = keyed.as_mut() {
        k.answer.message_ids = message_ids.into_iter().collect();
        k.answer.consent_id = consent_id.to_string();
    }
}

/// The recorded answers of keyed calls: a repeated submission, consent or withdrawal is answered as the first was.
#[derive(Clone)]
pub struct Answers {
    shared: Shared,
}

impl Answers {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// The answer for a call whose key answered an earlier call (once that answer is
    /// durable), or `None` when the call is new (or carries no key). A refusal if the key
    /// came with another request.
    pub(crate) async fn earlier_answer(
        &self,
        keyed: Option<&KeyedRequest>,
    ) -> Result<Option<AnsweredRequest>, NodeError> {
        let Some(keyed) = keyed else {
            return Ok(None);
        };
        match self.shared.ledger().answered_request(keyed)? {
            None => Ok(None),
            Some(earlier) => self.repeated_answer(keyed, earlier).await.map(Some),
        }
    }

    /// `earlier`, the answer found for `keyed`'s key, once durable: waits while the first
    /// call's messages are held for their flush; if that call was undone meanwhile (its
    /// answer forgotten with it), says so.
    pub(crate) async fn repeated_answer(
        &self,
        keyed: &KeyedRequest,
        earlier: AnsweredRequest,
    ) -> Result<AnsweredRequest, NodeError> {
        if !self
            .shared
            .wait_confirmed(&earlier.message_ids, FIRST_CALL_WAIT)
            .await
        {
            return Err(NodeError::StoreFailed(format!(
                "the first call with this idempotency key ({}) is not confirmed on disk after {} s; \
                 repeat it with the same key later",
                earlier.method,
                FIRST_CALL_WAIT.as_secs()
            )));
        }
        // Read again: an undo forgets the answer in its transaction, before it releases.
        let Some(answer) = self.shared.ledger().answered_request(keyed)? else {
            return Err(NodeError::NotStored(format!(
                "the first call with this idempotency key ({}) could not be made durable and was \
                 undone, so nothing was stored; repeat it",
                earlier.method
            )));
        };
        // What a first call committed is durable once a flush after it returned.
        self.shared.ledger().flush().await?;
        tracing::info!(method = %answer.method, "repeated call answered with its first answer");
        Ok(answer)
    }

    /// The answer of `Submit` from its record.
    pub(crate) fn submit_answer(&self, a: &AnsweredRequest) -> Result<SubmitResponse, NodeError> {
        let message_id = a
            .message_ids
            .first()
            .ok_or_else(|| NodeError::Internal("a recorded Submit answer names no message".into()))?
            .clone();
        Ok(SubmitResponse {
            message_id,
            state: DeliveryState::Queued as i32,
        })
    }

    /// The answer of `RecordConsent` from its record: the consent as held now.
    pub(crate) fn consent_answer(
        &self,
        a: &AnsweredRequest,
    ) -> Result<RecordConsentResponse, NodeError> {
        let record = self
            .shared
            .ledger()
            .consent(&a.consent_id)?
            .and_then(|c| c.record)
            .ok_or_else(|| {
                NodeError::Internal(format!(
                    "the consent {} answered earlier is gone",
                    a.consent_id
                ))
            })?;
        Ok(RecordConsentResponse {
            consent: Some(record),
            notice_message_ids: a.message_ids.clone(),
        })
    }

    /// The answer of `WithdrawConsent` from its record: the withdrawal as held.
    pub(crate) fn withdrawal_answer(
        &self,
        a: &AnsweredRequest,
    ) -> Result<WithdrawConsentResponse, NodeError> {
        let withdrawal = self
            .shared
            .ledger()
            .consent(&a.consent_id)?
            .and_then(|c| c.withdrawal)
            .ok_or_else(|| {
                NodeError::Internal(format!(
                    "the withdrawal of {} answered earlier is gone",
                    a.consent_id
                ))
            })?;
        Ok(WithdrawConsentResponse {
            withdrawal: Some(withdrawal),
            notice_message_ids: a.message_ids.clone(),
        })
    }

    /// Forgets the answers to keyed calls older than the delivery deadline, in steps of
    /// `step`, flushing after each. Returns how many.
    pub async fn forget_old_answers(&self, step: usize) -> Result<usize, NodeError> {
        let keep = self.shared.delivery_settings().deadline.as_millis() as i64;
        let before = self.shared.now_ms().saturating_sub(keep);
        let mut forgotten = 0;
        loop {
            let n = self.shared.ledger().forget_answers(before, step)?;
            if n > 0 {
                self.shared.ledger().flush().await?;
            }
            forgotten += n;
            if n < step {
                break;
            }
        }
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "idempotency keys older than the delivery deadline forgotten"
            );
        }
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_within_their_limit_pass_and_others_name_the_field() {
        for ok in [
            "",
            "a",
            "0192f3a4-7b1c-7def-8000-0123456789ab",
            &"k".repeat(128),
            "!~",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok:?}");
        }
        for bad in [&"k".repeat(129), "with space", "tab\t", "ümlaut", "nul\0"] {
            match validate_key(bad) {
                Err(NodeError::Invalid { field, .. }) => assert_eq!(field, "idempotency_key"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_same_request_without_its_key_hashes_alike_and_another_does_not() {
        let req = |reason: &str, key: &str| SubmitRequest {
            recipient: "jugendamt-kreis-segeberg".into(),
            consent_id: reason.into(),
            idempotency_key: key.into(),
            ..Default::default()
        };
        let a = keyed("it", &req("x", "k1"), 1)
            .expect("test")
            .expect("test");
        let b = keyed("it", &req("x", "k1"), 2)
            .expect("test")
            .expect("test");
        let c = keyed("it", &req("y", "k1"), 1)
            .expect("test")
            .expect("test");
        let d = keyed("other-it", &req("x", "k1"), 1)
            .expect("test")
            .expect("test");
        assert_eq!(a.answer.request_sha256, b.answer.request_sha256);
        assert_eq!(a.key_id, b.key_id);
        assert_ne!(a.answer.request_sha256, c.answer.request_sha256);
        assert_ne!(a.key_id, d.key_id, "keys are scoped per IT system");
        assert!(keyed("it", &req("x", ""), 1).expect("test").is_none());
        // The same bytes under another method are another request.
        let w = WithdrawConsentRequest {
            consent_id: "x".into(),
            idempotency_key: "k1".into(),
            ..Default::default()
        };
        let w = keyed("it", &w, 1).expect("test").expect("test");
        assert_eq!(w.key_id, a.key_id);
        assert_ne!(w.answer.request_sha256, a.answer.request_sha256);
    }
}
