//! The consent decision as a node makes it: look the cited consent up in an encrypted sled
//! store holding many consents (default 1,000,000; `KURZDRAHT_BENCH_CONSENTS` to change),
//! decrypt and decode it, and evaluate. Also the pure evaluation alone.
//! Run: `cargo bench -p kurzdraht-ledger --bench consent_decision` (filling the store with a
//! million consents takes a few minutes; progress on stderr).
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use kurzdraht_ledger::{evaluate, ConsentQuery, DataKey, Ledger, StoredConsent};
use kurzdraht_proto::v1::{ConsentRecord, Purpose, Subject};
use std::hint::black_box;

fn subject(i: usize) -> Subject {
    Subject {
        given_name: format!("Person{i}"),
        family_name: "Muster".into(),
        date_of_birth: "2005-04-12".into(),
        ..Default::default()
    }
}

fn record(i: usize) -> ConsentRecord {
    ConsentRecord {
        consent_id: format!("01a2{i:028}"),
        subject: Some(subject(i)),
        recording_agency: "jobcenter-segeberg".into(),
        recipients: vec!["jugendamt-kreis-segeberg".into()],
        purposes: vec![Purpose::U25MoveOut as i32],
        categories: vec![1, 4],
        valid_from_ms: 0,
        valid_until_ms: i64::MAX,
        recorded_at_ms: 0,
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let n: usize = std::env::var("KURZDRAHT_BENCH_CONSENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_encrypted(dir.path(), &DataKey::generate().unwrap()).unwrap();
    for i in 0..n {
        ledger.record_consent(&record(i), &[], 0).unwrap();
        if (i + 1) % 100_000 == 0 {
            eprintln!("{} consents recorded", i + 1);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(ledger.flush()).unwrap();
    eprintln!(
        "store: {} consents, {} bytes on disk",
        n,
        ledger.size_on_disk().unwrap()
    );

    let probe = n / 2;
    let id = record(probe).consent_id;
    let who = subject(probe);
    let query = ConsentQuery {
        subject: &who,
        sender: "jobcenter-segeberg",
        recipient: "jugendamt-kreis-segeberg",
        purpose: Purpose::U25MoveOut,
        categories: &[1, 4],
        at_ms: 1_000,
    };
    c.bench_function(
        &format!("consent decision: lookup + decrypt + evaluate ({n} consents)"),
        |b| {
            b.iter(|| {
                let stored = ledger.consent(black_box(&id)).unwrap();
                evaluate(stored.as_ref(), black_box(&query)).unwrap()
            })
        },
    );
    let stored: StoredConsent = ledger.consent(&id).unwrap().unwrap();
    c.bench_function("consent decision: evaluate only", |b| {
        b.iter(|| evaluate(Some(black_box(&stored)), black_box(&query)).unwrap())
    });
}

criterion_group!(consent, benches);
criterion_main!(consent);
