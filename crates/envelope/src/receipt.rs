//! Receipts: the receiver's signature over an envelope's hash (non-repudiation of receipt),
//! one per envelope or one per delivered batch (a signed Merkle root over the batch's
//! receipts, with an inclusion path per receipt — see [`crate::merkle`]).

use crate::{keys::SigningKey, merkle, EnvelopeError, VerifyingKey};
use kurzdraht_proto::v1::{BatchReceiptHead, BatchReceiptProof, Receipt, SignedReceipt};
use prost::Message;

/// Domain-separation prefix of receipt signatures.
pub const RECEIPT_DOMAIN: &[u8] = b"kurzdraht/v1/receipt\0";

fn signing_input(receipt: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(RECEIPT_DOMAIN.len() + receipt.len());
    input.extend_from_slice(RECEIPT_DOMAIN);
    input.extend_from_slice(receipt);
    input
}

/// Signs `receipt` with the receiver's key.
pub fn sign_receipt(receipt: &Receipt, key: &SigningKey) -> SignedReceipt {
    let bytes = receipt.encode_to_vec();
    let signature = key.sign(&signing_input(&bytes)).to_vec();
    SignedReceipt {
        receipt: bytes,
        signature,
        batch: None,
    }
}

/// Domain-separation prefix of the signature over a batch's receipt head.
pub const BATCH_RECEIPT_DOMAIN: &[u8] = b"kurzdraht/v1/receipt-batch\0";

/// The most receipts one batch head may cover (a bound on what a verifier accepts).
pub const MAX_BATCH_RECEIPTS: u32 = 1 << 16;

fn batch_signing_input(head: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(BATCH_RECEIPT_DOMAIN.len() + head.len());
    input.extend_from_slice(BATCH_RECEIPT_DOMAIN);
    input.extend_from_slice(head);
    input
}

/// Signs the receipts of one delivered batch with one signature: over the head that holds
/// the Merkle root of all receipts. Each returned receipt carries the signed head and its
/// own inclusion path, so it verifies alone ([`verify_receipt`]). All receipts must name
/// `sender` and `receiver`; the batch must not be larger than [`MAX_BATCH_RECEIPTS`].
pub fn sign_receipt_batch(
    receipts: &[Receipt],
    sender: &str,
    receiver: &str,
    received_at_ms: i64,
    key: &SigningKey,
) -> Vec<SignedReceipt> {
    let encoded: Vec<Vec<u8>> = receipts.iter().map(Message::encode_to_vec).collect();
    let Some(tree) = merkle::Tree::build(encoded.iter().map(|r| merkle::leaf_hash(r)).collect())
    else {
        return Vec::new();
    };
    let head = BatchReceiptHead {
        sender: sender.to_string(),
        receiver: receiver.to_string(),
        received_at_ms,
        count: u32::try_from(tree.len()).unwrap_or(u32::MAX),
        root: tree.root().to_vec(),
    }
    .encode_to_vec();
    let signature = key.sign(&batch_signing_input(&head)).to_vec();
    encoded
        .into_iter()
        .enumerate()
        .map(|(index, receipt)| SignedReceipt {
            receipt,
            signature: Vec::new(),
            batch: Some(BatchReceiptProof {
                head: head.clone(),
                signature: signature.clone(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
                path: tree.path(index).into_iter().map(|h| h.to_vec()).collect(),
            }),
        })
        .collect()
}

/// What the sender expects a receipt to state.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedReceipt<'a> {
    pub message_id: &'a str,
    pub envelope_sha256: &'a [u8; 32],
    pub sender: &'a str,
    pub receiver: &'a str,
}

/// Verifies a receipt — signed alone or as part of a batch — against the receiver's pinned
/// keys, then checks that it is about the envelope the sender delivered.
pub fn verify_receipt(
    signed: &SignedReceipt,
    receiver_keys: &[VerifyingKey],
    expected: &ExpectedReceipt<'_>,
) -> Result<Receipt, EnvelopeError> {
    ReceiptVerifier::new(receiver_keys).verify(signed, expected)
}

/// Verifies many receipts of one receiver, checking the signature of each batch head only
/// once (the delivery worker verifies a whole batch's receipts with one signature check).
/// Every receipt is still checked in full: its fields, and its inclusion in the head.
#[derive(Debug)]
pub struct ReceiptVerifier<'k> {
    keys: &'k [VerifyingKey],
    /// The last batch head (bytes and signature) whose signature held.
    verified: Option<(Vec<u8>, Vec<u8>)>,
}

impl<'k> ReceiptVerifier<'k> {
    pub fn new(receiver_keys: &'k [VerifyingKey]) -> Self {
        Self {
            keys: receiver_keys,
            verified: None,
        }
    }

    pub fn verify(
        &mut self,
        signed: &SignedReceipt,
        expected: &ExpectedReceipt<'_>,
    ) -> Result<Receipt, EnvelopeError> {
        if signed.receipt.len() > 4096 {
            return Err(EnvelopeError::TooLarge {
                field: "receipt",
                size: signed.receipt.len(),
                limit: 4096,
            });
        }
        let bad_signature = || EnvelopeError::BadSignature {
            signer: expected.receiver.to_string(),
        };
        match &signed.batch {
            None => {
                let input = signing_input(&signed.receipt);
                if !self
                    .keys
                    .iter()
                    .any(|k| k.verify(&input, &signed.signature))
                {
                    return Err(bad_signature());
                }
            }
            Some(batch) => {
                if batch.head.len() > 4096 {
                    return Err(EnvelopeError::TooLarge {
                        field: "receipt.batch.head",
                        size: batch.head.len(),
                        limit: 4096,
                    });
                }
                let known = self
                    .verified
                    .as_ref()
                    .is_some_and(|(h, s)| *h == batch.head && *s == batch.signature);
                if !known {
                    let input = batch_signing_input(&batch.head);
                    if !self.keys.iter().any(|k| k.verify(&input, &batch.signature)) {
                        return Err(bad_signature());
                    }
                    self.verified = Some((batch.head.clone(), batch.signature.clone()));
                }
                let head = BatchReceiptHead::decode(batch.head.as_slice())
                    .map_err(|e| EnvelopeError::malformed("receipt.batch.head", e.to_string()))?;
                if head.sender != expected.sender {
                    return Err(EnvelopeError::ReceiptMismatch {
                        field: "batch.sender",
                    });
                }
                if head.receiver != expected.receiver {
                    return Err(EnvelopeError::ReceiptMismatch {
                        field: "batch.receiver",
                    });
                }
                if head.count == 0 || head.count > MAX_BATCH_RECEIPTS || batch.path.len() > 32 {
                    return Err(EnvelopeError::malformed(
                        "receipt.batch",
                        "count or path length out of range",
                    ));
                }
                let root: merkle::Hash = head.root.as_slice().try_into().map_err(|_| {
                    EnvelopeError::malformed("receipt.batch.head.root", "is not 32 bytes")
                })?;
                let path = batch
                    .path
                    .iter()
                    .map(|h| merkle::Hash::try_from(h.as_slice()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        EnvelopeError::malformed("receipt.batch.path", "holds a hash not 32 bytes")
                    })?;
                let leaf = merkle::leaf_hash(&signed.receipt);
                if !merkle::verify_inclusion(
                    &leaf,
                    u64::from(batch.index),
                    u64::from(head.count),
                    &path,
                    &root,
                ) {
                    return Err(EnvelopeError::ReceiptMismatch {
                        field: "batch.path",
                    });
                }
            }
        }
        let receipt = Receipt::decode(signed.receipt.as_slice())
            .map_err(|e| EnvelopeError::malformed("receipt", e.to_string()))?;
        if receipt.message_id != expected.message_id {
            return Err(EnvelopeError::ReceiptMismatch {
                field: "message_id",
            });
        }
        if receipt.envelope_sha256.as_slice() != expected.envelope_sha256.as_slice() {
            return Err(EnvelopeError::ReceiptMismatch {
                field: "envelope_sha256",
            });
        }
        if receipt.sender != expected.sender {
            return Err(EnvelopeError::ReceiptMismatch { field: "sender" });
        }
        if receipt.receiver != expected.receiver {
            return Err(EnvelopeError::ReceiptMismatch { field: "receiver" });
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(hash: [u8; 32]) -> Receipt {
        Receipt {
            message_id: "m1".into(),
            envelope_sha256: hash.to_vec(),
            sender: "jobcenter-segeberg".into(),
            receiver: "jugendamt-norderstedt".into(),
            received_at_ms: 5,
        }
    }

    fn expected(hash: &[u8; 32]) -> ExpectedReceipt<'_> {
        ExpectedReceipt {
            message_id: "m1",
            envelope_sha256: hash,
            sender: "jobcenter-segeberg",
            receiver: "jugendamt-norderstedt",
        }
    }

    #[test]
    fn receipt_round_trip() {
        let key = SigningKey::generate().expect("test fixture");
        let hash = [7u8; 32];
        let signed = sign_receipt(&receipt(hash), &key);
        let r = verify_receipt(&signed, &[key.verifying_key()], &expected(&hash))
            .expect("test fixture");
        assert_eq!(r.received_at_ms, 5);
    }

    #[test]
    fn receipt_for_another_envelope_is_refused() {
        let key = SigningKey::generate().expect("test fixture");
        let signed = sign_receipt(&receipt([7u8; 32]), &key);
        let err = verify_receipt(&signed, &[key.verifying_key()], &expected(&[8u8; 32]));
        assert_eq!(
            err.unwrap_err(),
            EnvelopeError::ReceiptMismatch {
                field: "envelope_sha256"
            }
        );
    }

    #[test]
    fn receipt_by_another_key_is_refused() {
        let key = SigningKey::generate().expect("test fixture");
        let other = SigningKey::generate().expect("test fixture");
        let hash = [7u8; 32];
        let signed = sign_receipt(&receipt(hash), &key);
        let err = verify_receipt(&signed, &[other.verifying_key()], &expected(&hash));
        assert!(matches!(err, Err(EnvelopeError::BadSignature { .. })));
    }

    fn batch(n: usize, key: &SigningKey) -> (Vec<[u8; 32]>, Vec<SignedReceipt>) {
        let hashes: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
        let receipts: Vec<Receipt> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| Receipt {
                message_id: format!("m{i}"),
                ..receipt(*h)
            })
            .collect();
        let signed = sign_receipt_batch(
            &receipts,
            "jobcenter-segeberg",
            "jugendamt-norderstedt",
            5,
            key,
        );
        (hashes, signed)
    }

    #[test]
    fn every_receipt_of_a_batch_verifies_alone() {
        let key = SigningKey::generate().expect("test fixture");
        for n in [1, 2, 3, 7, 64, 100] {
            let (hashes, signed) = batch(n, &key);
            assert_eq!(signed.len(), n);
            for (i, s) in signed.iter().enumerate() {
                let id = format!("m{i}");
                let exp = ExpectedReceipt {
                    message_id: &id,
                    ..expected(&hashes[i])
                };
                let r = verify_receipt(s, &[key.verifying_key()], &exp).expect("verifies alone");
                assert_eq!(r.message_id, id);
            }
        }
    }

    #[test]
    fn a_batched_receipt_cannot_stand_for_another_message() {
        let key = SigningKey::generate().expect("test fixture");
        let (hashes, signed) = batch(8, &key);
        let exp = ExpectedReceipt {
            message_id: "m3",
            ..expected(&hashes[3])
        };
        // receipt 2's bytes with receipt 3's proof position
        let mut forged = signed[3].clone();
        forged.receipt = signed[2].receipt.clone();
        let err = verify_receipt(&forged, &[key.verifying_key()], &exp).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::ReceiptMismatch {
                field: "batch.path"
            }
        );
        // a proper receipt of the batch, but for another message
        let err = verify_receipt(&signed[2], &[key.verifying_key()], &exp).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::ReceiptMismatch {
                field: "message_id"
            }
        );
        // a head signed by another key
        let other = SigningKey::generate().expect("test fixture");
        let err = verify_receipt(&signed[3], &[other.verifying_key()], &exp).unwrap_err();
        assert!(matches!(err, EnvelopeError::BadSignature { .. }));
        // a head altered after signing
        let mut altered = signed[3].clone();
        if let Some(b) = altered.batch.as_mut() {
            b.head.push(0);
        }
        let err = verify_receipt(&altered, &[key.verifying_key()], &exp).unwrap_err();
        assert!(matches!(err, EnvelopeError::BadSignature { .. }));
    }

    #[test]
    fn the_verifier_checks_each_head_signature_once_but_every_proof() {
        let key = SigningKey::generate().expect("test fixture");
        let keys = [key.verifying_key()];
        let (hashes, signed) = batch(4, &key);
        let mut verifier = ReceiptVerifier::new(&keys);
        for (i, s) in signed.iter().enumerate() {
            let id = format!("m{i}");
            let exp = ExpectedReceipt {
                message_id: &id,
                ..expected(&hashes[i])
            };
            verifier.verify(s, &exp).expect("verifies");
        }
        // a cached head does not excuse a wrong path
        let mut bad = signed[1].clone();
        if let Some(b) = bad.batch.as_mut() {
            b.index = 2;
        }
        let exp = ExpectedReceipt {
            message_id: "m1",
            ..expected(&hashes[1])
        };
        assert!(verifier.verify(&bad, &exp).is_err());
    }
}
