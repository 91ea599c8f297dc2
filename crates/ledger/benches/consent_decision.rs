//! The consent decision as a node makes it: look the cited consent up in an encrypted
//! store holding many consents (default 1,000,000; `KURZDRAHT_BENCH_CONSENTS` to change),
//! decrypt and decode it, and evaluate (lookup + decrypt + evaluate). Also the pure
//! evaluation alone.
//!
//! Each iteration looks up the next id of a sample drawn at random beforehand (a fixed seed,
//! so runs compare), and the figure is reported twice:
//! - hot: the store reopened with a page cache at least twice its size on disk, the ids
//!   cycled from a small sample (1,000) that was read once before;
//! - cold: the store reopened with a page cache much smaller than the store (1 MiB at
//!   most), the ids drawn uniformly over the whole store (100,000 of them), so most
//!   lookups miss the engine's cache. (The operating system's file cache is not dropped.)
//!
//! Run: `cargo bench -p kurzdraht-ledger --bench consent_decision` (filling the store with a
//! million consents takes a few minutes; progress on stderr). Run without `--bench` (as
//! `cargo test --all-targets` does, criterion's test mode) it uses a store of 2,000
//! consents, so that the bench is built and smoke-run cheaply.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use kurzdraht_ledger::{
    evaluate, ConsentQuery, DataKey, Ledger, StoreOptions, StoredConsent, DEFAULT_CACHE_BYTES,
};
use kurzdraht_proto::v1::{ConsentRecord, Purpose, Subject};
use std::hint::black_box;
use std::path::Path;

/// Consents in the store when criterion runs in test mode (no `--bench`).
const TEST_MODE_CONSENTS: usize = 2_000;
/// Ids cycled in the hot case.
const HOT_SAMPLE: usize = 1_000;
/// Ids cycled in the cold case.
const COLD_SAMPLE: usize = 100_000;

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

/// Whether criterion measures (`cargo bench`) rather than runs each bench once as a test.
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// splitmix64: a small deterministic generator for the samples.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `count` consents (id and subject) drawn uniformly from the `n` in the store.
fn sample(rng: &mut Rng, n: usize, count: usize) -> Vec<(String, Subject)> {
    (0..count)
        .map(|_| {
            let i = rng.below(n);
            (record(i).consent_id, subject(i))
        })
        .collect()
}

/// The decision for `id` about `who`, as the node makes it: lookup, decrypt, evaluate.
fn decide(ledger: &Ledger, id: &str, who: &Subject) -> StoredConsent {
    let stored = ledger.consent(black_box(id)).unwrap();
    let query = ConsentQuery {
        subject: who,
        sender: "jobcenter-segeberg",
        recipient: "jugendamt-kreis-segeberg",
        purpose: Purpose::U25MoveOut,
        categories: &[1, 4],
        at_ms: 1_000,
    };
    evaluate(stored.as_ref(), black_box(&query)).unwrap();
    stored.unwrap()
}

fn open(dir: &Path, key: &DataKey, cache_bytes: u64) -> Ledger {
    Ledger::open_with(
        dir,
        Some(key),
        StoreOptions {
            cache_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let n: usize = if benchmarking() {
        std::env::var("KURZDRAHT_BENCH_CONSENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    } else {
        TEST_MODE_CONSENTS
    };
    let dir = tempfile::tempdir().unwrap();
    let key = DataKey::generate().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let size = {
        let ledger = Ledger::open_encrypted(dir.path(), &key).unwrap();
        for i in 0..n {
            ledger.record_consent(&record(i), &[], 0).unwrap();
            if (i + 1) % 100_000 == 0 {
                eprintln!("{} consents recorded", i + 1);
            }
        }
        rt.block_on(ledger.flush()).unwrap();
        ledger.size_on_disk().unwrap()
    };
    let hot_cache = (2 * size).max(DEFAULT_CACHE_BYTES);
    let cold_cache = (size / 16).clamp(64 * 1024, 1024 * 1024);
    eprintln!(
        "store: {n} consents, {size} bytes on disk; cache hot {hot_cache} bytes, cold {cold_cache} bytes"
    );
    let mut rng = Rng(0x6b75_727a_6472_6168);

    // Hot: a cache bigger than the store, a small set of ids read before and again.
    let hot = sample(&mut rng, n, HOT_SAMPLE.min(n));
    {
        let ledger = open(dir.path(), &key, hot_cache);
        for (id, who) in &hot {
            decide(&ledger, id, who);
        }
        let mut next = hot.iter().cycle();
        c.bench_function(
            &format!(
                "consent decision, hot ({} ids cycled, cache {} MiB, {n} consents)",
                hot.len(),
                hot_cache >> 20
            ),
            |b| {
                b.iter(|| {
                    let (id, who) = next.next().unwrap();
                    decide(&ledger, id, who)
                })
            },
        );
    }

    // Cold: a cache much smaller than the store, ids drawn over the whole store.
    let cold = sample(&mut rng, n, COLD_SAMPLE);
    let ledger = open(dir.path(), &key, cold_cache);
    let mut next = cold.iter().cycle();
    c.bench_function(
        &format!(
            "consent decision, cold (random ids, cache {} KiB, {n} consents)",
            cold_cache >> 10
        ),
        |b| {
            b.iter(|| {
                let (id, who) = next.next().unwrap();
                decide(&ledger, id, who)
            })
        },
    );

    let (id, who) = &cold[0];
    let stored = decide(&ledger, id, who);
    let query = ConsentQuery {
        subject: who,
        sender: "jobcenter-segeberg",
        recipient: "jugendamt-kreis-segeberg",
        purpose: Purpose::U25MoveOut,
        categories: &[1, 4],
        at_ms: 1_000,
    };
    c.bench_function("consent decision: evaluate only", |b| {
        b.iter(|| evaluate(Some(black_box(&stored)), black_box(&query)).unwrap())
    });
}

criterion_group!(consent, benches);
criterion_main!(consent);
