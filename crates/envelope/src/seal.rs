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

    // Random signature bytes never verify: this property shows that, and nothing after the
    // signature check. The properties further down sign with the key, so decoding runs.
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

/// Past the signature: header bytes signed with the pinned key, so that the signature holds
/// and header decoding, the payload hash, payload decoding and the kind check all run.
#[cfg(test)]
mod past_the_signature {
    use super::*;
    use crate::body::kind_of;
    use kurzdraht_proto::v1::{
        message_body::Body, CaseReference, CertificationRequest, ConsentNotice, ConsentRecord,
        ConsentWithdrawal, ConsentWithdrawalRecord, MoveOutCertification, MoveOutDecision,
        QualificationReferral, ReferralResponse, Subject,
    };
    use proptest::collection::vec;
    use proptest::prelude::*;

    const SIGNER: &str = "jobcenter-segeberg";
    const MAX_HEADER: usize = 4 * 1024;

    /// The one key of these properties (key generation is not under test).
    fn key() -> SigningKey {
        SigningKey::from_hex(&"5a".repeat(32)).expect("test fixture")
    }

    /// An envelope of exactly these header and payload bytes, signed as `seal` signs, for
    /// bytes that `seal` cannot make (they need not be an encoded header).
    fn signed_raw(key: &SigningKey, header: Vec<u8>, payload: Vec<u8>) -> SignedEnvelope {
        let signature = key.sign(&signing_input(&header)).to_vec();
        SignedEnvelope {
            header,
            payload,
            signature,
            signer: SIGNER.into(),
        }
    }

    /// What `verify_and_open` must answer, worked out independently in the documented order
    /// (size → signature, which holds here → header → sender → payload hash → kind → payload
    /// → kind = body): `Ok(kind)` or the refusal's variant and field.
    fn expected(env: &SignedEnvelope) -> Result<MessageKind, (&'static str, &'static str)> {
        if env.header.len() > MAX_HEADER {
            return Err(("too-large", "envelope.header"));
        }
        let header = EnvelopeHeader::decode(env.header.as_slice())
            .map_err(|_| ("malformed", "envelope.header"))?;
        if header.sender != env.signer {
            return Err(("sender-mismatch", ""));
        }
        if header.payload_sha256 != Sha256::digest(&env.payload).to_vec() {
            return Err(("payload-hash-mismatch", ""));
        }
        let kind = MessageKind::try_from(header.kind)
            .ok()
            .filter(|k| *k != MessageKind::Unspecified)
            .ok_or(("malformed", "header.kind"))?;
        let body = MessageBody::decode(env.payload.as_slice())
            .map_err(|_| ("malformed", "envelope.payload"))?;
        match kind_of(&body) {
            None => Err(("malformed", "envelope.payload")),
            Some(b) if b != kind => Err(("kind-mismatch", "")),
            Some(_) => Ok(kind),
        }
    }

    /// The outcome of `verify_and_open` in the terms of [`expected`], after checking that an
    /// opened envelope is what was signed.
    fn outcome(env: &SignedEnvelope) -> Result<MessageKind, (&'static str, &'static str)> {
        match verify_and_open(env, &[key().verifying_key()], &Limits::default()) {
            Ok(opened) => {
                assert_eq!(opened.header.sender, env.signer);
                assert_eq!(Some(opened.kind), kind_of(&opened.body));
                assert_eq!(opened.hash, envelope_hash(env));
                assert_eq!(
                    opened.header,
                    EnvelopeHeader::decode(env.header.as_slice()).expect("it opened")
                );
                Ok(opened.kind)
            }
            Err(e) => Err(match e {
                EnvelopeError::TooLarge { field, .. } => ("too-large", field),
                EnvelopeError::BadSignature { .. } => ("bad-signature", ""),
                EnvelopeError::Malformed { field, .. } => ("malformed", field),
                EnvelopeError::PayloadHashMismatch => ("payload-hash-mismatch", ""),
                EnvelopeError::SenderMismatch { .. } => ("sender-mismatch", ""),
                EnvelopeError::KindMismatch { .. } => ("kind-mismatch", ""),
                EnvelopeError::ReceiptMismatch { .. } => ("receipt-mismatch", ""),
            }),
        }
    }

    /// Text of any characters (control characters included), short ids, agency ids, and now
    /// and then text long enough to push a header past its limit.
    fn text() -> BoxedStrategy<String> {
        prop_oneof![
            6 => "[a-z0-9-]{0,40}",
            4 => vec(any::<char>(), 0..48).prop_map(String::from_iter),
            2 => Just(SIGNER.to_string()),
            1 => "[ -~]{0,1500}",
        ]
        .boxed()
    }

    /// UUIDv7 in canonical form (as ids should be) or any text.
    fn id() -> BoxedStrategy<String> {
        prop_oneof![
            3 => (0u64..1 << 48, any::<[u8; 10]>()).prop_map(|(ms, rand)| {
                uuid::Builder::from_unix_timestamp_millis(ms, &rand)
                    .into_uuid()
                    .hyphenated()
                    .to_string()
            }),
            1 => text(),
        ]
        .boxed()
    }

    /// Known kinds, zero, and any other value.
    fn enum_value() -> BoxedStrategy<i32> {
        prop_oneof![4 => 0i32..=8, 1 => any::<i32>()].boxed()
    }

    fn header() -> BoxedStrategy<EnvelopeHeader> {
        (
            (
                id(),
                enum_value(),
                prop_oneof![4 => Just(SIGNER.to_string()), 1 => text()],
            ),
            (text(), any::<i64>(), vec(any::<u8>(), 0..40)),
            (id(), prop_oneof![3 => Just(String::new()), 1 => id()]),
        )
            .prop_map(
                |(
                    (message_id, kind, sender),
                    (recipient, created_at_ms, payload_sha256),
                    (consent_id, in_reply_to),
                )| EnvelopeHeader {
                    message_id,
                    kind,
                    sender,
                    recipient,
                    created_at_ms,
                    payload_sha256,
                    consent_id,
                    in_reply_to,
                },
            )
            .boxed()
    }

    fn subject() -> BoxedStrategy<Option<Subject>> {
        proptest::option::weighted(
            0.9,
            (text(), text(), text(), vec((text(), text()), 0..3)).prop_map(
                |(given_name, family_name, date_of_birth, refs)| Subject {
                    given_name,
                    family_name,
                    date_of_birth,
                    address: None,
                    case_references: refs
                        .into_iter()
                        .map(|(agency, reference)| CaseReference { agency, reference })
                        .collect(),
                },
            ),
        )
        .boxed()
    }

    /// A body of every kind, with any field values; sometimes an empty one.
    fn body() -> BoxedStrategy<MessageBody> {
        let case = || {
            (
                subject(),
                text(),
                text(),
                text(),
                enum_value(),
                enum_value(),
            )
        };
        let body = prop_oneof![
            case().prop_map(|(subject, a, b, c, _, _)| Body::CertificationRequest(
                CertificationRequest {
                    subject,
                    reason: a,
                    respond_by: b,
                    caseworker: c
                }
            )),
            case().prop_map(|(subject, a, b, c, outcome, ground)| {
                Body::MoveOutCertification(MoveOutCertification {
                    subject,
                    outcome,
                    ground,
                    statement: a,
                    interview_date: b,
                    issuing_caseworker: c.clone(),
                    health_note: c,
                })
            }),
            case().prop_map(|(subject, a, b, c, outcome, ground)| {
                Body::MoveOutDecision(MoveOutDecision {
                    subject,
                    outcome,
                    ground,
                    decision_date: a,
                    tenancy_contract_date: b,
                    caseworker: c,
                })
            }),
            case().prop_map(|(subject, a, b, c, _, _)| Body::QualificationReferral(
                QualificationReferral {
                    subject,
                    reason: a,
                    measure: b.clone(),
                    contact: c,
                    respond_by: b,
                }
            )),
            case().prop_map(|(subject, a, _, c, outcome, _)| Body::ReferralResponse(
                ReferralResponse {
                    subject,
                    outcome,
                    note: a,
                    caseworker: c
                }
            )),
            (
                subject(),
                id(),
                vec(text(), 0..3),
                vec(enum_value(), 0..4),
                any::<(i64, i64)>()
            )
                .prop_map(
                    |(subject, consent_id, recipients, values, (from, until))| {
                        Body::ConsentNotice(ConsentNotice {
                            consent: Some(ConsentRecord {
                                consent_id,
                                subject,
                                recording_agency: SIGNER.into(),
                                recipients,
                                purposes: values.clone(),
                                categories: values,
                                valid_from_ms: from,
                                valid_until_ms: until,
                                ..Default::default()
                            }),
                        })
                    }
                ),
            (id(), any::<i64>(), text()).prop_map(|(consent_id, withdrawn_at_ms, manner)| {
                Body::ConsentWithdrawal(ConsentWithdrawal {
                    withdrawal: Some(ConsentWithdrawalRecord {
                        consent_id,
                        withdrawn_at_ms,
                        recorded_by: String::new(),
                        manner,
                    }),
                })
            }),
        ];
        proptest::option::weighted(0.95, body)
            .prop_map(|body| MessageBody { body })
            .boxed()
    }

    /// A damage to encoded bytes: flip a bit, cut off, or insert bytes (positions wrap).
    #[derive(Debug, Clone)]
    enum Damage {
        Flip(usize, u8),
        Cut(usize),
        Insert(usize, Vec<u8>),
    }

    fn damage() -> BoxedStrategy<Vec<Damage>> {
        vec(
            prop_oneof![
                3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
                1 => any::<usize>().prop_map(Damage::Cut),
                2 => (any::<usize>(), vec(any::<u8>(), 1..12)).prop_map(|(at, b)| Damage::Insert(at, b)),
            ],
            1..4,
        )
        .boxed()
    }

    fn damaged(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
        for d in damage {
            let at = |i: usize| if bytes.is_empty() { 0 } else { i % bytes.len() };
            match d {
                Damage::Flip(i, bit) => {
                    let i = at(*i);
                    if let Some(b) = bytes.get_mut(i) {
                        *b ^= 1 << bit;
                    }
                }
                Damage::Cut(i) => bytes.truncate(at(*i)),
                Damage::Insert(i, b) => {
                    let i = at(*i);
                    bytes.splice(i..i, b.iter().copied());
                }
            }
        }
        bytes
    }

    /// Header bytes: random bytes up to and just past the 4 KiB limit, encoded headers with
    /// an unknown field of up to 4 KiB appended (decodes; reaches the limit), and damaged
    /// encodings.
    fn header_bytes() -> BoxedStrategy<Vec<u8>> {
        prop_oneof![
            2 => vec(any::<u8>(), 0..=MAX_HEADER + 64),
            1 => (header(), 9u32..10_000, vec(any::<u8>(), 0..MAX_HEADER)).prop_map(
                |(h, field, filler)| {
                    let mut bytes = h.encode_to_vec();
                    prost::encoding::encode_key(
                        field,
                        prost::encoding::WireType::LengthDelimited,
                        &mut bytes,
                    );
                    prost::encoding::encode_varint(filler.len() as u64, &mut bytes);
                    bytes.extend(filler);
                    bytes
                }
            ),
            2 => (header(), damage()).prop_map(|(h, d)| damaged(h.encode_to_vec(), &d)),
        ]
        .boxed()
    }

    /// Payloads: random bytes, encoded bodies of any content, and damaged encodings.
    fn payload_bytes() -> BoxedStrategy<Vec<u8>> {
        prop_oneof![
            1 => vec(any::<u8>(), 0..2048),
            2 => body().prop_map(|b| b.encode_to_vec()),
            1 => (body(), damage()).prop_map(|(b, d)| damaged(b.encode_to_vec(), &d)),
        ]
        .boxed()
    }

    #[test]
    fn signed_empty_header_is_decoded_and_refused_for_its_sender() {
        // The empty message is a valid encoding of the default header: decoding runs.
        let env = signed_raw(&key(), Vec::new(), Vec::new());
        assert_eq!(outcome(&env), Err(("sender-mismatch", "")));
    }

    proptest! {
        /// Any header bytes, signed with the key: the signature holds, so every refusal
        /// comes from decoding and is the one the documented order predicts; an envelope
        /// that opens is what was signed.
        #[test]
        fn signed_header_bytes_are_decoded(header in header_bytes(), payload in payload_bytes()) {
            let env = signed_raw(&key(), header, payload);
            let got = outcome(&env);
            prop_assert_ne!(got, Err(("bad-signature", "")), "the signature holds");
            prop_assert_eq!(got, expected(&env));
        }

        /// A valid header that carries the SHA-256 of a random payload: the hash holds, so
        /// payload decoding and the kind check run.
        #[test]
        fn random_payload_under_a_valid_header(mut header in header(), payload in payload_bytes()) {
            header.sender = SIGNER.into();
            header.payload_sha256 = Sha256::digest(&payload).to_vec();
            let bytes = header.encode_to_vec();
            prop_assume!(bytes.len() <= MAX_HEADER);
            let env = signed_raw(&key(), bytes, payload);
            let got = outcome(&env);
            match got {
                Ok(kind) => prop_assert_eq!(kind as i32, header.kind),
                Err(refusal) => prop_assert!(
                    matches!(refusal, ("malformed", "header.kind" | "envelope.payload") | ("kind-mismatch", "")),
                    "refused before payload decoding: {:?}", refusal
                ),
            }
            prop_assert_eq!(got, expected(&env));
        }

        /// A header and a body of the same kind, sealed: it opens, with the body as sealed.
        #[test]
        fn valid_structure_opens(mut header in header(), body in body()) {
            let Some(kind) = kind_of(&body) else { return Ok(()) };
            header.sender = SIGNER.into();
            header.kind = kind as i32;
            let env = seal(header.clone(), &body, &key());
            prop_assume!(env.header.len() <= MAX_HEADER);
            let opened = verify_and_open(&env, &[key().verifying_key()], &Limits::default());
            let opened = opened.map_err(|e| TestCaseError::fail(format!("did not open: {e}")))?;
            header.payload_sha256 = Sha256::digest(&env.payload).to_vec();
            prop_assert_eq!(opened.header, header);
            prop_assert_eq!(opened.kind, kind);
            prop_assert_eq!(opened.body, body);
            prop_assert_eq!(opened.hash, envelope_hash(&env));
        }
    }
}
