//! Idempotency keys: the first answer to each call an IT system made with a key, so that
//! the same call repeated (its answer was lost) changes nothing and gets that answer again,
//! also after a restart.
//!
//! One tree, `requests`, under one-byte key prefixes:
//!
//! | key                                     | value                      | kept                    |
//! |-----------------------------------------|----------------------------|-------------------------|
//! | `a` key id (32 bytes)                   | sealed [`AnsweredRequest`] | until forgotten         |
//! | `t` answered at (u64 BE) key id         | empty                      | as long as its `a`      |
//!
//! The key id is a hash of the IT system's name and its key, made by the node
//! ([`KeyedRequest::key_id`]): the store holds neither the key nor the client's name. A
//! record is written in the same transaction as the state change it answers (so a crash
//! leaves both or neither) and the check for an earlier one runs in that transaction too
//! (the engine serialises transactions that touch one key — a conflict runs the later one
//! again — so of two concurrent calls with one key, exactly one changes anything). The `t` index lets [`Ledger::forget_answers`] find the old records
//! without reading the others. Values are sealed under the data key: the request hash is a
//! hash over personal data. Records hold ids only, never an answer's personal data.

use super::{abort, Ledger, Tx, TxResult};
use crate::{error::LedgerError, records::AnsweredRequest};

const ANSWER: u8 = b'a';
const TIME: u8 = b't';
/// The tree's name, also the associated data of its sealed values.
const TREE: &str = "requests";

/// A call that carries an idempotency key, with the answer it gives if it is the first.
#[derive(Debug, Clone)]
pub struct KeyedRequest {
    /// Identifies (IT system, key); see the module doc.
    pub key_id: [u8; 32],
    /// What is stored if this call is the first with the key.
    pub answer: AnsweredRequest,
}

/// What a state change with an idempotency key did.
#[derive(Debug, Clone)]
pub enum Once<T> {
    /// This call was the first with its key: the change was made (and its answer recorded).
    First(T),
    /// An earlier call with the same key and the same request was answered: nothing was
    /// changed; here is that earlier answer.
    Repeat(AnsweredRequest),
}

fn answer_key(key_id: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(ANSWER);
    key.extend_from_slice(key_id);
    key
}

fn time_key(answered_at_ms: i64, key_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(41);
    key.push(TIME);
    key.extend_from_slice(&(answered_at_ms.max(0) as u64).to_be_bytes());
    key.extend_from_slice(key_id);
    key
}

/// The earlier answer, if `request` is the same request as the one it answered; a refusal
/// if the key came with another request (another method or other content).
fn repeat_of(
    earlier: AnsweredRequest,
    request: &KeyedRequest,
) -> Result<AnsweredRequest, LedgerError> {
    if earlier.method == request.answer.method
        && earlier.request_sha256 == request.answer.request_sha256
    {
        Ok(earlier)
    } else {
        Err(LedgerError::IdempotencyKeyReused {
            method: earlier.method,
            answered_at_ms: earlier.answered_at_ms,
        })
    }
}

impl Tx<'_> {
    /// The earlier answer to `request`'s key, read inside the transaction of the state
    /// change (aborts if the key came with another request).
    pub(super) fn earlier_answer(
        &self,
        request: &KeyedRequest,
    ) -> TxResult<Option<AnsweredRequest>> {
        let earlier: Option<AnsweredRequest> =
            self.get_sealed(self.requests, TREE, &answer_key(&request.key_id))?;
        match earlier.map(|e| repeat_of(e, request)).transpose() {
            Ok(found) => Ok(found),
            Err(e) => abort(e),
        }
    }

    /// Records `request`'s answer (its key must be new).
    pub(super) fn remember(&self, request: &KeyedRequest) -> TxResult<()> {
        self.put_sealed(
            self.requests,
            TREE,
            &answer_key(&request.key_id),
            &request.answer,
        )?;
        self.requests
            .insert(time_key(request.answer.answered_at_ms, &request.key_id), [])?;
        Ok(())
    }

    /// Forgets the answer to `key_id` (its change was undone), if there is one.
    pub(super) fn forget(&self, key_id: &[u8; 32]) -> TxResult<()> {
        let key = answer_key(key_id);
        let held: Option<AnsweredRequest> = self.get_sealed(self.requests, TREE, &key)?;
        if let Some(held) = held {
            self.requests.remove(key)?;
            self.requests
                .remove(time_key(held.answered_at_ms, key_id))?;
        }
        Ok(())
    }
}

impl Ledger {
    /// Runs the state change `f` in one transaction unless `request`'s key answered an
    /// earlier call: then nothing is changed and that answer is returned (a refusal if the
    /// key came with another request). The first call's answer is recorded with its change.
    pub(super) fn tx_once<R>(
        &self,
        request: Option<&KeyedRequest>,
        f: impl Fn(&Tx<'_>) -> TxResult<R>,
    ) -> Result<Once<R>, LedgerError> {
        self.tx(|t| {
            if let Some(request) = request {
                if let Some(earlier) = t.earlier_answer(request)? {
                    return Ok(Once::Repeat(earlier));
                }
            }
            let done = f(t)?;
            if let Some(request) = request {
                t.remember(request)?;
            }
            Ok(Once::First(done))
        })
    }

    /// The answer an earlier call with `request`'s key got, if any: for an IT system that
    /// repeats a call. A refusal ([`LedgerError::IdempotencyKeyReused`]) if the key came
    /// with another request.
    pub fn answered_request(
        &self,
        request: &KeyedRequest,
    ) -> Result<Option<AnsweredRequest>, LedgerError> {
        let key = answer_key(&request.key_id);
        self.get_sealed::<AnsweredRequest>(&self.requests, TREE, &key)?
            .map(|earlier| repeat_of(earlier, request))
            .transpose()
    }

    /// Forgets up to `limit` answers given at or before `answered_before_ms`, oldest first
    /// (through the time index: nothing else is read). Returns how many; call again until
    /// fewer than `limit`, flush after. A call repeated after its key was forgotten is a new
    /// call.
    pub fn forget_answers(
        &self,
        answered_before_ms: i64,
        limit: usize,
    ) -> Result<usize, LedgerError> {
        let until = answered_before_ms.max(0) as u64;
        let mut due = Vec::new();
        for kv in self.requests.scan_prefix([TIME]).take(limit) {
            let (key, _) = kv?;
            let at = super::u64_from("requests time key", key.get(1..).unwrap_or_default())?;
            if at > until {
                break;
            }
            let key_id: [u8; 32] = key
                .get(9..)
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| LedgerError::corrupt("requests time key", "no key id"))?;
            due.push((key, key_id));
        }
        self.tx(|t| {
            for (key, key_id) in &due {
                t.requests.remove(key)?;
                t.requests.remove(answer_key(key_id))?;
            }
            Ok(())
        })?;
        Ok(due.len())
    }

    /// Every recorded answer, opened, one at a time (for tests and inspection; a full scan
    /// of this tree only).
    #[doc(hidden)]
    pub fn answered_requests_iter(
        &self,
    ) -> impl Iterator<Item = Result<AnsweredRequest, LedgerError>> + '_ {
        self.requests.scan_prefix([ANSWER]).map(|kv| {
            let (k, v) = kv?;
            self.open_sealed(TREE, &k, &v)
        })
    }

    /// The raw `requests` tree, for tests that look at what is stored on disk.
    #[doc(hidden)]
    pub fn requests_tree(&self) -> &crate::db::Tree {
        &self.requests
    }
}
