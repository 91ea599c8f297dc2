//! Envelope sealing (one Ed25519 signature) and opening (one verification plus decoding) of a
//! real certification request, and receipt signing/verification.
//! Run: `cargo bench -p kurzdraht-envelope --bench signatures`.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use kurzdraht_envelope::{
    envelope_hash, ids, seal, sign_receipt, verify_and_open, verify_receipt, ExpectedReceipt,
    Limits, SigningKey,
};
use kurzdraht_proto::v1::{
    message_body::Body, CertificationRequest, EnvelopeHeader, MessageBody, MessageKind, Receipt,
    Subject,
};
use std::hint::black_box;

fn body() -> MessageBody {
    MessageBody {
        body: Some(Body::CertificationRequest(CertificationRequest {
            subject: Some(Subject {
                given_name: "Lena".into(),
                family_name: "Hansen".into(),
                date_of_birth: "2005-04-12".into(),
                ..Default::default()
            }),
            reason: "Antrag auf Zusicherung nach § 22 Abs. 5 SGB II; Stellungnahme erbeten."
                .repeat(8),
            respond_by: "2026-12-15".into(),
            caseworker: "Herr Jensen".into(),
        })),
    }
}

fn header() -> EnvelopeHeader {
    EnvelopeHeader {
        message_id: ids::new_id(),
        kind: MessageKind::CertificationRequest as i32,
        sender: "jobcenter-segeberg".into(),
        recipient: "jugendamt-kreis-segeberg".into(),
        created_at_ms: 1_764_000_000_000,
        payload_sha256: vec![],
        consent_id: ids::new_id(),
        in_reply_to: String::new(),
    }
}

fn benches(c: &mut Criterion) {
    let key = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    let body = body();
    let header = header();
    let limits = Limits::default();
    c.bench_function("envelope seal (sign)", |b| {
        b.iter(|| seal(black_box(header.clone()), black_box(&body), &key))
    });
    let env = seal(header.clone(), &body, &key);
    c.bench_function("envelope verify_and_open", |b| {
        b.iter(|| verify_and_open(black_box(&env), &keys, &limits).unwrap())
    });
    let hash = envelope_hash(&env);
    let receipt = Receipt {
        message_id: header.message_id.clone(),
        envelope_sha256: hash.to_vec(),
        sender: "jobcenter-segeberg".into(),
        receiver: "jugendamt-kreis-segeberg".into(),
        received_at_ms: 1,
    };
    c.bench_function("receipt sign", |b| {
        b.iter(|| sign_receipt(black_box(&receipt), &key))
    });
    let signed = sign_receipt(&receipt, &key);
    let expected = ExpectedReceipt {
        message_id: &header.message_id,
        envelope_sha256: &hash,
        sender: "jobcenter-segeberg",
        receiver: "jugendamt-kreis-segeberg",
    };
    c.bench_function("receipt verify", |b| {
        b.iter(|| verify_receipt(black_box(&signed), &keys, &expected).unwrap())
    });
}

criterion_group!(signatures, benches);
criterion_main!(signatures);
