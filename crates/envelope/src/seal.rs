//! Sealing an envelope, and the one path that opens a received one: check sizes, verify the
//! signature over the exact header bytes, then decode the header, check the payload hash,
//! then decode the payload. Nothing is decoded before the signature holds.

use crate::{body::kind_of, keys::SigningKey, EnvelopeError, VerifyingKey};
use kurzdraht_proto::v1::{EnvelopeHeader, MessageBody, MessageKind, SignedEnvelope};
use prost::Message;
use sha2::{Digest, Sha256};

/// Domain-separation prefix of envelope signatures.
pub const ENVELOPE_DOMAIN: &[u8] = b"kurzdraht/v1/envelope\0";
const ENVELOPE_HASH_DOMAIN: &[u8] = b"kurzdraht/v1/envelope-hash\0";

/// Size limits applied before any cryptography or decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 4 * 1024,
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// A verified, decoded envelope.
#[derive(Debug, Clone)]
pub struct OpenedEnvelope {
    pub header: EnvelopeHeader,
    pub kind: MessageKind,
    pub body: MessageBody,
    /// [`envelope_hash`] of the envelope as received.
    pub hash: [u8; 32],
}

/// Seals `body` under `header`: fills in `header.payload_sha256`, signs the encoded header
/// with `key`, and names `header.sender` as signer.
pub fn seal(mut header: EnvelopeHeader, body: &MessageBody, key: &SigningKey) -> SignedEnvelope {
    let payload = body.encode_to_vec();
    header.payload_sha256 = Sha256::digest(&payload).to_vec();
    let header_bytes = header.encode_to_vec();
    let signature = key.sign(&signing_input(&header_bytes));
    SignedEnvelope {
        header: header_bytes,
        payload,
        signature: signature.to_vec(),
        signer: header.sender,
    }
}

fn signing_input(header: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(ENVELOPE_DOMAIN.len() + header.len());
    input.extend_from_slice(ENVELOPE_DOMAIN);
    input.extend_from_slice(header);
    input
}

/// The SHA-256 that receipts and the audit chain refer to: over the length-prefixed header,
/// payload and signature bytes exactly as carried (the unsigned `signer` hint is not part of it).
pub fn envelope_hash(envelope: &SignedEnvelope) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ENVELOPE_HASH_DOMAIN);
    for part in [&envelope.header, &envelope.payload, &envelope.signature] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Verifies `envelope` against the pinned `keys` of `envelope.signer` (the caller has already
/// bound the signer to the TLS identity), then decodes it.
pub fn verify_and_open(
    envelope: &SignedEnvelope,
    keys: &[VerifyingKey],
    limits: &Limits,
) -> Result<OpenedEnvelope, EnvelopeError> {
    if envelope.payload.len() > limits.max_payload_bytes {
        return Err(EnvelopeError::TooLarge {
            field: "envelope.payload",
            size: envelope.payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    // Verified (header size, signature, signer = sender): now, and only now, decode.
    let header = verify_header(envelope, keys, limits)?;
    let digest: [u8; 32] = Sha256::digest(&envelope.payload).into();
    if header.payload_sha256.as_slice() != digest.as_slice() {
        return Err(EnvelopeError::PayloadHashMismatch);
    }
    let kind = MessageKind::try_from(header.kind)
        .ok()
        .filter(|k| *k != MessageKind::Unspecified)
        .ok_or_else(|| EnvelopeError::malformed("header.kind", "is not a known message kind"))?;
    let body = MessageBody::decode(envelope.payload.as_slice())
        .map_err(|e| EnvelopeError::malformed("envelope.payload", e.to_string()))?;
    let body_kind =
        kind_of(&body).ok_or_else(|| EnvelopeError::malformed("envelope.payload", "is empty"))?;
    if body_kind != kind {
        return Err(EnvelopeError::KindMismatch {
            header: kind,
            body: body_kind,
        });
    }
    Ok(OpenedEnvelope {
        header,
        kind,
        body,
        hash: envelope_hash(envelope),
    })
}

/// Verifies only the signed header of an envelope whose payload may have been deleted
/// (retention, erasure): the signature still proves that `signer` issued a message with this
/// id, kind, consent and payload hash.
pub fn verify_header(
    envelope: &SignedEnvelope,
    keys: &[VerifyingKey],
    limits: &Limits,
) -> Result<EnvelopeHeader, EnvelopeError> {
    if envelope.header.len() > limits.max_header_bytes {
        return Err(EnvelopeError::TooLarge {
            field: "envelope.header",
            size: envelope.header.len(),
            limit: limits.max_header_bytes,
        });
    }
    if !keys
        .iter()
        .any(|k| k.verify(&signing_input(&envelope.header), &envelope.signature))
    {
        return Err(EnvelopeError::BadSignature {
            signer: envelope.signer.clone(),
        });
    }
    let header = EnvelopeHeader::decode(envelope.header.as_slice())
        .map_err(|e| EnvelopeError::malformed("envelope.header", e.to_string()))?;
    if header.sender != envelope.signer {
        return Err(EnvelopeError::SenderMismatch {
            signer: envelope.signer.clone(),
            sender: header.sender,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kurzdraht_proto::v1::{message_body::Body, CertificationRequest, Subject};

    fn header(sender: &str) -> EnvelopeHeader {
        EnvelopeHeader {
            message_id: crate::ids::new_id(),
            kind: MessageKind::CertificationRequest as i32,
            sender: sender.into(),
            recipient: "jugendamt-kreis-segeberg".into(),
            created_at_ms: 1_700_000_000_000,
            payload_sha256: vec![],
            consent_id: crate::ids::new_id(),
            in_reply_to: String::new(),
        }
    }

    fn body() -> MessageBody {
        MessageBody {
            body: Some(Body::CertificationRequest(CertificationRequest {
                subject: Some(Subject {
                    given_name: "Lena".into(),
                    family_name: "Muster".into(),
                    date_of_birth: "2004-03-01".into(),
                    ..Default::default()
                }),
                reason: "Konflikt im Elternhaus".into(),
                respond_by: "2026-12-15".into(),
                caseworker: "Frau Berg".into(),
            })),
        }
    }

    #[test]
    fn sealed_envelope_opens() {
        let key = SigningKey::generate().expect("test fixture");
        let env = seal(header("jobcenter-segeberg"), &body(), &key);
        let opened = verify_and_open(&env, &[key.verifying_key()], &Limits::default())
            .expect("test fixture");
        assert_eq!(opened.kind, MessageKind::CertificationRequest);
        assert_eq!(opened.body, body());
        assert_eq!(opened.hash, envelope_hash(&env));
    }

    #[test]
    fn a_header_stays_provable_without_its_payload() {
        let key = SigningKey::generate().expect("test fixture");
        let mut env = seal(header("jobcenter-segeberg"), &body(), &key);
        let id = EnvelopeHeader::decode(env.header.as_slice())
            .expect("test fixture")
            .message_id;
        env.payload.clear();
        assert!(verify_and_open(&env, &[key.verifying_key()], &Limits::default()).is_err());
        let h =
            verify_header(&env, &[key.verifying_key()], &Limits::default()).expect("test fixture");
        assert_eq!(h.message_id, id);
        let other = SigningKey::generate().expect("test fixture");
        assert!(verify_header(&env, &[other.verifying_key()], &Limits::default()).is_err());
    }

    #[test]
    fn wrong_key_is_refused() {
        let key = SigningKey::generate().expect("test fixture");
        let other = SigningKey::generate().expect("test fixture");
        let env = seal(header("jobcenter-segeberg"), &body(), &key);
        let err = verify_and_open(&env, &[other.verifying_key()], &Limits::default());
        assert!(matches!(err, Err(EnvelopeError::BadSignature { .. })));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = SigningKey::generate().expect("test fixture");
        let mut env = seal(header("jobcenter-segeberg"), &body(), &key);
        let last = env.payload.len() - 1;
        env.payload[last] ^= 1;
        let err = verify_and_open(&env, &[key.verifying_key()], &Limits::default());
        assert_eq!(err.unwrap_err(), EnvelopeError::PayloadHashMismatch);
    }

    #[test]
    fn tampered_header_is_refused() {
        let key = SigningKey::generate().expect("test fixture");
        let mut env = seal(header("jobcenter-segeberg"), &body(), &key);
        env.header[3] ^= 1;
        let err = verify_and_open(&env, &[key.verifying_key()], &Limits::default());
        assert!(matches!(err, Err(EnvelopeError::BadSignature { .. })));
    }

    #[test]
    fn signer_hint_must_match_the_signed_sender() {
        let key = SigningKey::generate().expect("test fixture");
        let mut env = seal(header("jobcenter-segeberg"), &body(), &key);
        env.signer = "jugendamt-norderstedt".into();
        let err = verify_and_open(&env, &[key.verifying_key()], &Limits::default());
        assert!(matches!(err, Err(EnvelopeError::SenderMismatch { .. })));
    }

    #[test]
    fn kind_must_match_body() {
        let key = SigningKey::generate().expect("test fixture");
        let mut h = header("jobcenter-segeberg");
        h.kind = MessageKind::MoveOutDecision as i32;
        let env = seal(h, &body(), &key);
        let err = verify_and_open(&env, &[key.verifying_key()], &Limits::default());
        assert!(matches!(err, Err(EnvelopeError::KindMismatch { .. })));
    }

    #[test]
    fn oversize_is_refused_before_verification() {
        let key = SigningKey::generate().expect("test fixture");
        let env = seal(header("jobcenter-segeberg"), &body(), &key);
        let limits = Limits {
            max_header_bytes: 4096,
            max_payload_bytes: 8,
        };
        let err = verify_and_open(&env, &[key.verifying_key()], &limits);
        assert!(matches!(
            err,
            Err(EnvelopeError::TooLarge {
                field: "envelope.payload",
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_open(header in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                      payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                      signature in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let key = SigningKey::generate().expect("test fixture");
            let env = SignedEnvelope { header, payload, signature, signer: "jobcenter-segeberg".into() };
            proptest::prop_assert!(verify_and_open(&env, &[key.verifying_key()], &Limits::default()).is_err());
        }

        #[test]
        fn any_single_bit_flip_is_refused(pos in 0usize..10_000, bit in 0u8..8) {
            let key = SigningKey::generate().expect("test fixture");
            let env = seal(header("jobcenter-segeberg"), &body(), &key);
            let total = env.header.len() + env.payload.len() + env.signature.len();
            let pos = pos % total;
            let mut bad = env.clone();
            if pos < bad.header.len() { bad.header[pos] ^= 1 << bit; }
            else if pos < bad.header.len() + bad.payload.len() { bad.payload[pos - env.header.len()] ^= 1 << bit; }
            else { bad.signature[pos - env.header.len() - env.payload.len()] ^= 1 << bit; }
            proptest::prop_assert!(verify_and_open(&bad, &[key.verifying_key()], &Limits::default()).is_err());
        }
    }
}
