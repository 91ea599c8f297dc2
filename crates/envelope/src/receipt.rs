//! Receipts: the receiver's signature over an envelope's hash (non-repudiation of receipt).

use crate::{keys::SigningKey, EnvelopeError, VerifyingKey};
use kurzdraht_proto::v1::{Receipt, SignedReceipt};
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
    }
}

/// What the sender expects a receipt to state.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedReceipt<'a> {
    pub message_id: &'a str,
    pub envelope_sha256: &'a [u8; 32],
    pub sender: &'a str,
    pub receiver: &'a str,
}

/// Verifies a receipt against the receiver's pinned keys, then checks that it is about the
/// envelope the sender delivered.
pub fn verify_receipt(
    signed: &SignedReceipt,
    receiver_keys: &[VerifyingKey],
    expected: &ExpectedReceipt<'_>,
) -> Result<Receipt, EnvelopeError> {
    if signed.receipt.len() > 4096 {
        return Err(EnvelopeError::TooLarge {
            field: "receipt",
            size: signed.receipt.len(),
            limit: 4096,
        });
    }
    let input = signing_input(&signed.receipt);
    if !receiver_keys
        .iter()
        .any(|k| k.verify(&input, &signed.signature))
    {
        return Err(EnvelopeError::BadSignature {
            signer: expected.receiver.to_string(),
        });
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
}
