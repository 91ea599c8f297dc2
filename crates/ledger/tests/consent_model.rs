//! No sequence of grant, supersede, withdraw, expire (time passing) and erase ever lets a
//! message through that the latest consent state forbids. Drives a real (encrypted) ledger
//! and the real decision; the model is the law's reading of the latest state.
#![allow(clippy::unwrap_used)]

use kurzdraht_ledger::{evaluate, ConsentQuery, DataKey, Ledger, Outgoing};
use kurzdraht_proto::v1::{
    ConsentRecord, ConsentWithdrawalRecord, MessageKind, Purpose, SignedEnvelope, Subject,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

const JC: &str = "jobcenter-segeberg";
const JA: &str = "jugendamt-kreis-segeberg";

#[derive(Debug, Clone)]
enum Op {
    Grant { valid_for: i64 },
    Supersede { which: usize, valid_for: i64 },
    Withdraw(usize),
    Erase(usize),
    Tick(i64),
    Ask(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1i64..5_000).prop_map(|v| Op::Grant { valid_for: v }),
        2 => (0usize..8, 1i64..5_000).prop_map(|(w, v)| Op::Supersede { which: w, valid_for: v }),
        2 => (0usize..8).prop_map(Op::Withdraw),
        1 => (0usize..8).prop_map(Op::Erase),
        2 => (1i64..3_000).prop_map(Op::Tick),
        6 => (0usize..8).prop_map(Op::Ask),
    ]
}

fn lena() -> Subject {
    Subject {
        given_name: "Lena".into(),
        family_name: "Hansen".into(),
        date_of_birth: "2005-04-12".into(),
        ..Default::default()
    }
}

/// What the law says about one consent, from the operations alone.
#[derive(Debug, Clone)]
struct Model {
    id: String,
    until: i64,
    withdrawn: bool,
    superseded: bool,
    erased: bool,
}

fn notice(id: &str) -> Outgoing {
    Outgoing {
        envelope: SignedEnvelope::default(),
        message_id: format!("n-{id}"),
        kind: MessageKind::ConsentNotice,
        recipient: JA.into(),
        consent_id: id.into(),
        submitted_at_ms: 0,
        deadline_ms: i64::MAX,
        envelope_sha256: [0; 32],
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open_encrypted(dir.path(), &DataKey::generate().unwrap()).unwrap();
    let mut now = 1_000_000i64;
    let mut models: Vec<Model> = vec![];
    let mut n = 0;
    let record = |id: &str, now: i64, valid_for: i64, supersedes: String| ConsentRecord {
        consent_id: id.into(),
        subject: Some(lena()),
        recording_agency: JC.into(),
        recipients: vec![JA.into()],
        purposes: vec![Purpose::U25MoveOut as i32],
        categories: vec![1],
        valid_from_ms: now,
        valid_until_ms: now + valid_for,
        recorded_at_ms: now,
        supersedes,
        ..Default::default()
    };
    for op in ops {
        match op {
            Op::Grant { valid_for } => {
                n += 1;
                let id = format!("c{n}");
                l.record_consent(
                    &record(&id, now, valid_for, String::new()),
                    &[notice(&id)],
                    now,
                )
                .unwrap();
                models.push(Model {
                    id,
                    until: now + valid_for,
                    withdrawn: false,
                    superseded: false,
                    erased: false,
                });
            }
            Op::Supersede { which, valid_for } => {
                if models.is_empty() {
                    continue;
                }
                let i = which % models.len();
                n += 1;
                let id = format!("c{n}");
                let r = l.record_consent(
                    &record(&id, now, valid_for, models[i].id.clone()),
                    &[notice(&id)],
                    now,
                );
                let allowed = !models[i].withdrawn && !models[i].superseded;
                prop_assert_eq!(r.is_ok(), allowed, "supersede {:?}", models[i]);
                if allowed {
                    models[i].superseded = true;
                    models.push(Model {
                        id,
                        until: now + valid_for,
                        withdrawn: false,
                        superseded: false,
                        erased: false,
                    });
                }
            }
            Op::Withdraw(which) => {
                if models.is_empty() {
                    continue;
                }
                let i = which % models.len();
                let w = ConsentWithdrawalRecord {
                    consent_id: models[i].id.clone(),
                    withdrawn_at_ms: now,
                    ..Default::default()
                };
                let r = l.record_withdrawal(&w, &[], now);
                prop_assert_eq!(r.is_ok(), !models[i].withdrawn);
                models[i].withdrawn = true;
            }
            Op::Erase(which) => {
                if models.is_empty() {
                    continue;
                }
                let i = which % models.len();
                l.erase_consents(&BTreeSet::from([models[i].id.clone()]), now)
                    .unwrap();
                models[i].erased = true;
            }
            Op::Tick(ms) => now += ms,
            Op::Ask(which) => {
                if models.is_empty() {
                    continue;
                }
                let m = &models[which % models.len()];
                let stored = l.consent(&m.id).unwrap();
                let subject = lena();
                let q = ConsentQuery {
                    subject: &subject,
                    sender: JC,
                    recipient: JA,
                    purpose: Purpose::U25MoveOut,
                    categories: &[1],
                    at_ms: now,
                };
                let allowed_by_law = !m.withdrawn && !m.superseded && !m.erased && now <= m.until;
                prop_assert_eq!(
                    evaluate(stored.as_ref(), &q).is_ok(),
                    allowed_by_law,
                    "{:?} at {}",
                    m,
                    now
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn nothing_passes_that_the_latest_consent_state_forbids(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
